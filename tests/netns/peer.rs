//! A peer process: this test binary started again as `<exe> peer <server|client>
//! key=value...` inside a namespace (one process per end, since robust-tcp has one engine
//! and one UDP socket per process, bound in the namespace the process is in).
//!
//! Every session it holds (a client one, a server any number) has a reader thread that
//! reads until end of stream and checks every byte against the deterministic stream of the
//! other end, and a writer thread that writes its own stream when told to. The harness
//! drives it with commands on stdin, one per line, for every session or for session
//! `s=<index>` alone:
//!
//! - `stream`: write continuously (paced at `rate` bytes per second) until `stop`;
//! - `write <n>`: write the next `n` bytes (paced), then report `@wrote`;
//! - `stop`: finish what was asked, then shut down writing and report `@shutdown`;
//! - `mark id=<k> bytes=<n>`: report `@flow id=<k>` once `n` more bytes have been read;
//! - `status`: report the session's status and addresses;
//! - `passivate`: passivate the session (issue 8, item 6);
//! - `drop`: drop every handle on the session (it closes and lingers on its own).
//!
//! End of stdin (or `exit`) ends the process at once: the harness has what it needs, or
//! is gone. The process reports on stdout in the format of `events.rs`: `@connected`,
//! `@accepted`, `@progress` (every 100 ms while counts move), `@state` (whenever the state,
//! the reconnection count or the last failure changes, polled every 10 ms), `@eof`, and
//! errors. A byte that differs from the expected stream exits at once with status 1.
//!
//! The session's threads are in `streams.rs`.

mod streams;

use std::io::{self, BufRead, Write};
use std::net::{Shutdown, SocketAddr};
use std::process;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use robust_tcp::{Config, RServerSocket, RSocket, Status};
use robust_tcp_testkit::payload::Payload;
use robust_tcp_testkit::rng::Rng;

use crate::events;

use streams::{read_all, spawn_monitor, write_all};

/// Largest single write; sizes vary from 1 byte up to this, drawn from the seed.
const MAX_WRITE: usize = 64 * 1024;
/// How far ahead of its pace a writer may get after it was held up (a blocked write, a
/// fault): enough for bursts to happen, little enough that the pace holds.
const BURST: f64 = 256.0 * 1024.0;
/// How often the monitor looks at each session's status: the resolution of the
/// detection times the harness measures.
const STATUS_POLL: Duration = Duration::from_millis(10);
/// How often progress is reported while it moves.
const PROGRESS_EVERY: u32 = 10;

/// What the command line says.
struct Options {
    listen: Option<SocketAddr>,
    connect: Option<SocketAddr>,
    seed: u64,
    rate: u64,
    config: Config,
}

/// A writer's orders.
enum WriteCmd {
    Stream,
    Bytes(u64),
    Stop,
    /// End the thread without shutting down writing (the session is being dropped).
    Quit,
}

/// Where a reader stands after a `mark`.
struct Mark {
    id: u64,
    need: u64,
    from: u64,
    at: Instant,
}

/// One session and the handles its threads share.
struct Session {
    index: usize,
    sock: RSocket,
    writer: Mutex<Sender<WriteCmd>>,
    read: AtomicU64,
    written: AtomicU64,
    mark: Mutex<Option<Mark>>,
}

/// Every session of the process, by index (the order of `@connected`/`@accepted`).
type Sessions = Arc<Mutex<Vec<Arc<Session>>>>;

/// The peer's entry point; never returns.
pub fn main(args: &[String]) -> ! {
    die_with_parent();
    emit("hello", &[("pid", process::id().to_string())], None);
    let (role, rest) = match args.split_first() {
        Some((role, rest)) => (role.as_str(), rest),
        None => fatal("usage: peer <server|client> key=value..."),
    };
    let options = Options::parse(rest).unwrap_or_else(|e| fatal(&e));
    let sessions: Sessions = Arc::new(Mutex::new(Vec::new()));
    let commands = spawn_stdin();
    spawn_monitor(Arc::clone(&sessions));
    match role {
        "server" => serve(&options, &sessions),
        "client" => dial(&options, &sessions),
        other => fatal(&format!("unknown role {other:?}")),
    }
    for line in commands {
        if line.trim() == "exit" {
            break;
        }
        command(&line, &sessions);
    }
    // The harness closed stdin: it has what it needs, or it is gone.
    process::exit(0);
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options {
            listen: None,
            connect: None,
            seed: 0,
            rate: 0,
            config: Config::default(),
        };
        for arg in args {
            let (k, v) = arg
                .split_once('=')
                .ok_or_else(|| format!("argument {arg:?} is not key=value"))?;
            let c = o.config.clone();
            match k {
                "listen" => o.listen = Some(parse(k, v)?),
                "connect" => o.connect = Some(parse(k, v)?),
                "seed" => o.seed = parse(k, v)?,
                "rate" => o.rate = parse(k, v)?,
                "buffer" => o.config = c.send_buffer_size(parse(k, v)?),
                "ack" => o.config = c.ack_threshold(parse(k, v)?),
                "max_sessions" => o.config = c.max_sessions(parse(k, v)?),
                "dead_after_ms" => {
                    let d = (v != "none").then(|| parse(k, v).map(Duration::from_millis));
                    o.config = c.dead_after(d.transpose()?);
                }
                "give_up_ms" => o.config = c.give_up_after(Some(millis(k, v)?)),
                "linger_ms" => o.config = c.linger_limit(millis(k, v)?),
                "control_port" => o.config = c.control_port(Some(parse(k, v)?)),
                "instance_id" => o.config = c.instance_id(Some(parse(k, v)?)),
                "announce" => o.config = c.announce_control_addr(Some(parse(k, v)?)),
                "handshake_ms" => o.config = c.handshake_timeout(millis(k, v)?),
                "backoff_ms" => {
                    let (a, b) = v
                        .split_once(',')
                        .ok_or_else(|| format!("{k}={v}: want initial,max"))?;
                    o.config = c.reconnect_backoff(millis(k, a)?, millis(k, b)?);
                }
                _ => return Err(format!("unknown option {k:?}")),
            }
        }
        o.config.validate().map_err(|e| format!("config: {e}"))?;
        Ok(o)
    }

    /// The stream this end writes: the client's seed upwards, its complement downwards.
    fn payloads(&self, client: bool) -> (Payload, Payload) {
        let up = Payload::new(self.seed, u64::MAX);
        let down = Payload::new(self.seed ^ 1, u64::MAX);
        if client {
            (up, down)
        } else {
            (down, up)
        }
    }
}

/// Parses option `k`'s value `v`.
fn parse<T: FromStr>(k: &str, v: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.parse().map_err(|e| format!("{k}={v}: {e}"))
}

/// Parses option `k`'s value `v` as milliseconds.
fn millis(k: &str, v: &str) -> Result<Duration, String> {
    parse(k, v).map(Duration::from_millis)
}

/// Binds, reports `@listening`, and accepts sessions on a thread for as long as it lives.
fn serve(options: &Options, sessions: &Sessions) {
    let Some(listen) = options.listen else {
        fatal("server: listen= missing")
    };
    let server = RServerSocket::bind_with(listen, options.config.clone())
        .unwrap_or_else(|e| fatal(&format!("bind {listen}: {e}")));
    let addr = server.local_addr().map_or("?".into(), |a| a.to_string());
    emit("listening", &[("addr", addr)], None);
    let (write_with, read_with) = options.payloads(false);
    // The server's writers draw their sizes from another seed than the client's.
    let (sessions, rate, seed) = (Arc::clone(sessions), options.rate, !options.seed);
    thread::spawn(move || loop {
        match server.accept() {
            // The peer's address is among the fields every new session reports.
            Ok((sock, _peer)) => {
                let fields = [];
                start(
                    &sessions,
                    sock,
                    "accepted",
                    &fields,
                    (write_with, read_with),
                    rate,
                    seed,
                );
            }
            Err(e) => {
                // Not expected from a live listener; report it and stop accepting rather
                // than spin on a persistent error.
                emit(
                    "accept_error",
                    &[("kind", format!("{:?}", e.kind()))],
                    Some(&e.to_string()),
                );
                return;
            }
        }
    });
}

/// Opens the client's session and reports `@connected`, or exits with status 2.
fn dial(options: &Options, sessions: &Sessions) {
    let Some(addr) = options.connect else {
        fatal("client: connect= missing")
    };
    let started = Instant::now();
    match RSocket::connect_with(addr, options.config.clone()) {
        Ok(sock) => {
            let fields = [("ms", millis_since(started))];
            let payloads = options.payloads(true);
            start(
                sessions,
                sock,
                "connected",
                &fields,
                payloads,
                options.rate,
                options.seed,
            );
        }
        Err(e) => {
            emit(
                "connect_failed",
                &[
                    ("kind", format!("{:?}", e.kind())),
                    ("ms", millis_since(started)),
                ],
                Some(&e.to_string()),
            );
            process::exit(2);
        }
    }
}

/// Registers a new session, reports it as `event`, and starts its reader and writer.
fn start(
    sessions: &Sessions,
    sock: RSocket,
    event: &str,
    fields: &[(&str, String)],
    (write_with, read_with): (Payload, Payload),
    rate: u64,
    seed: u64,
) {
    static NEXT_INDEX: AtomicUsize = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel();
    let mut list = lock(sessions);
    let session = Arc::new(Session {
        // Indexes are never reused, so that a dropped session's cannot name another.
        index: NEXT_INDEX.fetch_add(1, Ordering::Relaxed),
        sock,
        writer: Mutex::new(tx),
        read: AtomicU64::new(0),
        written: AtomicU64::new(0),
        mark: Mutex::new(None),
    });
    list.push(Arc::clone(&session));
    drop(list);
    let mut all = vec![
        ("s", session.index.to_string()),
        ("session", session.sock.session_id().to_string()),
    ];
    all.extend(fields.iter().map(|(k, v)| (*k, v.clone())));
    all.extend(addresses(&session.sock));
    emit(event, &all, None);
    let reader = Arc::clone(&session);
    thread::spawn(move || read_all(&reader, read_with));
    let sizes = Rng::new(seed ^ session.index as u64 ^ 0x5752_4954);
    thread::spawn(move || write_all(&session, &rx, write_with, rate, sizes));
}

/// Carries out one command line from the harness.
fn command(line: &str, sessions: &Sessions) {
    let mut words = line.split_whitespace();
    let Some(verb) = words.next() else { return };
    let (mut target, mut number, mut keys) = (None, None, Vec::new());
    for w in words {
        match w.split_once('=') {
            Some(("s", v)) => target = v.parse::<usize>().ok(),
            Some((k, v)) => keys.push((k, v.parse::<u64>().unwrap_or(0))),
            None => number = w.parse::<u64>().ok(),
        }
    }
    let key = |name: &str| keys.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let list: Vec<Arc<Session>> = lock(sessions)
        .iter()
        .filter(|s| target.is_none_or(|t| t == s.index))
        .cloned()
        .collect();
    if list.is_empty() {
        emit(
            "command_error",
            &[],
            Some(&format!("no such session: {line}")),
        );
    }
    for session in list {
        let s = ("s", session.index.to_string());
        let order = |cmd| {
            // The writer is gone only after an error it reported already.
            let _ = lock(&session.writer).send(cmd);
        };
        match verb {
            "stream" => order(WriteCmd::Stream),
            "write" => order(WriteCmd::Bytes(number.unwrap_or(0))),
            "stop" => order(WriteCmd::Stop),
            "mark" => {
                *lock(&session.mark) = Some(Mark {
                    id: key("id").unwrap_or(0),
                    need: key("bytes").unwrap_or(1),
                    from: session.read.load(Ordering::Relaxed),
                    at: Instant::now(),
                });
            }
            "status" => {
                let status = session.sock.status();
                let mut fields = vec![s];
                fields.extend(status_fields(&status));
                fields.extend(addresses(&session.sock));
                emit("status", &fields, Some(&format!("{status:?}")));
            }
            "passivate" => match session.sock.passivate() {
                Ok(()) => emit("passivated", &[s], None),
                Err(e) => emit("passivate_error", &[s], Some(&e.to_string())),
            },
            "drop" => {
                // Every handle goes: the writer's thread ends, the reader's sees the end of
                // its stream (Shutdown::Read), and the list forgets the session; the last
                // of them to go closes it, and it lingers on its own.
                order(WriteCmd::Quit);
                let _ = session.sock.shutdown(Shutdown::Read);
                lock(sessions).retain(|other| other.index != session.index);
                emit("dropped", &[s], None);
            }
            _ => emit(
                "command_error",
                &[],
                Some(&format!("unknown command: {line}")),
            ),
        }
    }
}

fn status_fields(status: &Status) -> Vec<(&'static str, String)> {
    vec![
        ("state", format!("{:?}", status.state)),
        ("reconnections", status.reconnections.to_string()),
        ("read", status.bytes_read.to_string()),
        ("written", status.bytes_written.to_string()),
        ("unacked", status.unacknowledged.to_string()),
        ("passive", status.passive.to_string()),
        ("last_heard_ms", status.last_heard.as_millis().to_string()),
        (
            "control_peer",
            status.control_peer.map_or("none".into(), |a| a.to_string()),
        ),
        ("control_over_tcp", status.control_over_tcp.to_string()),
    ]
}

/// The session's current (or last) TCP addresses, as event fields.
fn addresses(sock: &RSocket) -> Vec<(&'static str, String)> {
    let show = |a: io::Result<SocketAddr>| a.map_or("none".into(), |a| a.to_string());
    vec![
        ("local", show(sock.local_addr())),
        ("peer", show(sock.peer_addr())),
    ]
}

/// Stdin's lines, read on a thread; the iterator ends with stdin.
fn spawn_stdin() -> impl Iterator<Item = String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx.into_iter()
}

/// Asks the kernel to kill this process when the harness (its parent thread) dies, so that
/// no peer outlives a harness that was killed. (Linux's; elsewhere the namespaces this test
/// needs do not exist either, and it fails before it starts a peer.)
fn die_with_parent() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
}

/// Writes one event line; a harness that stopped listening ends the process.
fn emit(name: &str, fields: &[(&str, String)], msg: Option<&str>) {
    let line = events::line(name, fields, msg);
    let mut out = io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        process::exit(3);
    }
}

/// Reports a setup error and exits with status 2.
fn fatal(msg: &str) -> ! {
    emit("fatal", &[], Some(msg));
    process::exit(2);
}

/// Milliseconds since `t`, to the microsecond.
fn millis_since(t: Instant) -> String {
    format!("{:.3}", t.elapsed().as_secs_f64() * 1000.0)
}

/// Locks `m`; a thread that panicked holding it left data still good for reporting.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
