//! Scale benchmark: what N idle sessions cost one server process.
//!
//! One server process holds N sessions (default 10,000) whose clients live in another
//! process; the parent process measures, from outside:
//!
//! - the time to open the sessions one after another (each: `connect` plus a 16-byte
//!   request and its 16-byte reply), in total and per session;
//! - the server's resident memory per idle session: `VmRSS` once every session is open and
//!   idle, minus `VmRSS` before the first session, divided by N;
//! - the server's threads before and with the N sessions, counting only the library's: the
//!   server's own threads (its main thread, which holds every accepted `RSocket` in a `Vec`,
//!   and the thread that watches stdin) are subtracted;
//! - the server's CPU time (`utime + stime` of `/proc/<pid>/stat`) over a 5-second idle
//!   window, as a percentage of one core;
//! - the same threads and memory for the client process, for information.
//!
//! Run with `cargo run --release --example scale -- [--sessions N] [--open-timeout SECS]`.
//! Linux only (it reads `/proc`). Everything stays on 127.0.0.1.
//!
//! The example re-executes itself as `scale server --sessions N` and
//! `scale client --server ADDR --sessions N`; the parent talks to them through their stdin
//! and stdout. A child exits when its stdin reaches end of file, so closing stdin ends it,
//! and so does the death of the parent.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use robust_tcp::{Config, RServerSocket, RSocket, SessionState};

const DEFAULT_SESSIONS: usize = 10_000;
/// Bytes of the request and of the reply exchanged on every session.
const MESSAGE: usize = 16;
/// The idle window over which the server's CPU time is measured.
const IDLE_WINDOW: Duration = Duration::from_secs(5);
/// A pause between "all open" and the idle window, so that the last handshakes' stragglers
/// (threads finishing, buffers freed) are not counted as idle work.
const SETTLE: Duration = Duration::from_secs(1);
/// How long the children may take to exit once their stdin is closed.
const EXIT_GRACE: Duration = Duration::from_secs(30);
/// How long a child may take to start and bind.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one request/reply exchange; on loopback it takes well under a millisecond.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client gives up opening one session after this long (busy server, lost handshakes).
const CONNECT_LIMIT: Duration = Duration::from_secs(60);
/// Threads of each child that belong to the application, not to the library: the main
/// thread and the stdin watcher.
const APP_THREADS: u64 = 2;
/// How often the client reports progress on stderr.
const PROGRESS_EVERY: usize = 1_000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("server") => run_server(&args[1..]),
        Some("client") => run_client(&args[1..]),
        _ => run_parent(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let role = match args.first().map(String::as_str) {
                Some(role @ ("server" | "client")) => format!("scale {role}"),
                _ => "scale".to_owned(),
            };
            eprintln!("{role}: {e}");
            ExitCode::FAILURE
        }
    }
}

// ------------------------------------------------------------------ arguments

struct Options {
    sessions: usize,
    server: Option<SocketAddr>,
    open_timeout: Duration,
}

fn parse_options(args: &[String]) -> io::Result<Options> {
    let mut options = Options {
        sessions: DEFAULT_SESSIONS,
        server: None,
        open_timeout: Duration::from_secs(600),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| invalid(format!("{flag} needs a value")))?;
        match flag.as_str() {
            "--sessions" => {
                options.sessions =
                    value.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                        invalid(format!("--sessions: not a positive count: {value}"))
                    })?;
            }
            "--server" => {
                let addr = value
                    .parse()
                    .map_err(|_| invalid(format!("--server: not an address: {value}")))?;
                options.server = Some(addr);
            }
            "--open-timeout" => {
                let secs: u64 = value
                    .parse()
                    .map_err(|_| invalid(format!("--open-timeout: not seconds: {value}")))?;
                options.open_timeout = Duration::from_secs(secs);
            }
            _ => return Err(invalid(format!("unknown argument {flag}"))),
        }
    }
    Ok(options)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

// ------------------------------------------------------------------ children

/// Exits the process when stdin reaches end of file (or fails): that is how the parent
/// ends a child, and a parent that died closes it too, so no child outlives a run. The
/// main thread may be blocked in `accept` or `connect` meanwhile, hence a thread.
fn exit_on_stdin_eof() -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name("stdin-watcher".into())
        .spawn(|| {
            let mut sink = [0u8; 64];
            let mut stdin = io::stdin();
            // Each read either returns data (ignored), or 0 / an error, which ends the loop.
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            // Exit without dropping the sessions: the benchmark measures idle cost, and
            // closing thousands of sessions gracefully would only slow the exit down.
            std::process::exit(0);
        })
        .expect("spawn the stdin watcher")
}

/// Prints one line for the parent and flushes it at once: the parent waits for it.
fn tell_parent(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

fn run_server(args: &[String]) -> io::Result<()> {
    let options = parse_options(args)?;
    let n = options.sessions;
    let watcher = exit_on_stdin_eof();
    // The default session limits (1024, and 256 per client address) would refuse most of
    // the sessions, which all come from 127.0.0.1.
    let config = Config::default()
        .max_sessions(n)
        .max_sessions_per_address(n);
    let server = RServerSocket::bind_with("127.0.0.1:0", config)?;
    tell_parent(&format!("listening {}", server.local_addr()?))?;

    // No thread per session: the main thread accepts, answers the request and keeps the
    // socket, which is exactly what makes the library's own threads visible.
    let mut sessions = Vec::with_capacity(n);
    let started = Instant::now();
    let mut buf = [0u8; MESSAGE];
    for i in 0..n {
        let (mut sock, peer) = server.accept()?;
        sock.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
        sock.set_write_timeout(Some(EXCHANGE_TIMEOUT))?;
        sock.read_exact(&mut buf)
            .and_then(|()| sock.write_all(&buf))
            .and_then(|()| sock.flush())
            .map_err(|e| io::Error::other(format!("session {i} from {peer}: {e}")))?;
        sessions.push(sock);
    }
    let open = sessions
        .iter()
        .filter(|s| s.status().state == SessionState::Connected)
        .count();
    tell_parent(&format!(
        "all-open {n} {:.6} {open}",
        started.elapsed().as_secs_f64()
    ))?;
    // Idle until the watcher ends the process; it never returns normally.
    let _ = watcher.join();
    drop(sessions);
    Ok(())
}

fn run_client(args: &[String]) -> io::Result<()> {
    let options = parse_options(args)?;
    let n = options.sessions;
    let server = options
        .server
        .ok_or_else(|| invalid("client needs --server ADDR".into()))?;
    let watcher = exit_on_stdin_eof();
    let config = Config::default().give_up_after(Some(CONNECT_LIMIT));

    let mut sessions = Vec::with_capacity(n);
    let mut connect_times = Vec::with_capacity(n);
    let mut exchange_total = Duration::ZERO;
    let started = Instant::now();
    let mut reply = [0u8; MESSAGE];
    for i in 0..n {
        let t0 = Instant::now();
        let mut sock = RSocket::connect_with(server, config.clone())
            .map_err(|e| io::Error::other(format!("connect session {i}: {e}")))?;
        let t1 = Instant::now();
        connect_times.push(t1 - t0);
        sock.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
        sock.set_write_timeout(Some(EXCHANGE_TIMEOUT))?;
        let mut request = [0u8; MESSAGE];
        request[..8].copy_from_slice(&(i as u64).to_le_bytes());
        request[8..].copy_from_slice(b"scale-rq");
        sock.write_all(&request)
            .and_then(|()| sock.flush())
            .and_then(|()| sock.read_exact(&mut reply))
            .map_err(|e| io::Error::other(format!("exchange on session {i}: {e}")))?;
        if reply != request {
            return Err(io::Error::other(format!(
                "session {i}: the reply differs from the request"
            )));
        }
        exchange_total += t1.elapsed();
        sessions.push(sock);
        if (i + 1) % PROGRESS_EVERY == 0 && i + 1 < n {
            eprintln!(
                "  client: {}/{n} sessions open after {:.1} s",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let total = started.elapsed();
    connect_times.sort_unstable();
    let quantile = |q: f64| {
        // n > 0, so the index is in range.
        let index = ((connect_times.len() - 1) as f64 * q).round() as usize;
        connect_times[index].as_secs_f64()
    };
    let connect_sum: Duration = connect_times.iter().sum();
    tell_parent(&format!(
        "all-open {n} {:.6} {:.6} {:.6} {:.6} {:.6} {:.6}",
        total.as_secs_f64(),
        connect_sum.as_secs_f64(),
        exchange_total.as_secs_f64(),
        quantile(0.5),
        quantile(0.99),
        quantile(1.0),
    ))?;
    let _ = watcher.join();
    drop(sessions);
    Ok(())
}

// ------------------------------------------------------------------ the parent

/// A child process with its stdin (closing it ends the child) and its stdout lines.
struct Peer {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Peer {
    /// Starts `current_exe args...` through `sh`, which first raises the soft open-file
    /// limit to the hard one: each session holds at least one socket.
    fn start(name: &'static str, args: &[String]) -> io::Result<Peer> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"ulimit -S -n "$(ulimit -H -n)" && exec "$0" "$@""#)
            .arg(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        // A reader thread, so that the parent can wait for a line with a timeout. It ends
        // when the child's stdout closes, which disconnects the channel.
        thread::Builder::new()
            .name(format!("{name}-stdout"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Peer {
            name,
            child,
            stdin,
            lines,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line starting with `prefix`, split into its words after the prefix.
    fn expect_line(&self, prefix: &str, deadline: Instant) -> io::Result<Vec<String>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let mut words = line.split_whitespace();
                    if words.next() == Some(prefix) {
                        return Ok(words.map(str::to_owned).collect());
                    }
                    eprintln!("  {}: unexpected line: {line}", self.name);
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(io::Error::other(format!(
                        "the {} printed no '{prefix}' line in time",
                        self.name
                    )))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(io::Error::other(format!(
                        "the {} exited before printing '{prefix}'",
                        self.name
                    )))
                }
            }
        }
    }

    /// Closes stdin and waits, for at most `grace`, for the child to exit; kills it after.
    /// Returns whether it exited by itself.
    fn finish(&mut self, grace: Duration) -> bool {
        self.stdin = None;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) => return true,
                Ok(None) => thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Peer {
    /// On any error path the child is killed, so that no child outlives the parent's run.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What `/proc` says about a process at one moment.
#[derive(Clone, Copy)]
struct Sample {
    rss_kib: u64,
    threads: u64,
    fds: u64,
    cpu_ticks: u64,
}

fn sample(pid: u32) -> io::Result<Sample> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let fields: HashMap<&str, &str> = status
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k, v.trim()))
        .collect();
    let number = |key: &str| -> io::Result<u64> {
        fields
            .get(key)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| io::Error::other(format!("no {key} in /proc/{pid}/status")))
    };
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces and parentheses; the fields after its
    // closing parenthesis start with field 3, so utime (14) and stime (15) are 11 and 12.
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| io::Error::other(format!("malformed /proc/{pid}/stat")))?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> io::Result<u64> {
        words
            .get(i)
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| io::Error::other(format!("malformed /proc/{pid}/stat")))
    };
    Ok(Sample {
        rss_kib: number("VmRSS")?,
        threads: number("Threads")?,
        fds: fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64,
        cpu_ticks: tick(11)? + tick(12)?,
    })
}

/// Clock ticks per second of `/proc/<pid>/stat`; asked of `getconf` once, since reading
/// `sysconf` directly would need `unsafe`. 100 on every common Linux.
fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

fn field(words: &[String], i: usize, what: &str) -> io::Result<f64> {
    words
        .get(i)
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| io::Error::other(format!("malformed '{what}' line: {words:?}")))
}

fn run_parent(args: &[String]) -> io::Result<()> {
    let options = parse_options(args)?;
    let n = options.sessions;
    let ticks_per_second = clock_ticks();
    let sessions_arg = ["--sessions".to_owned(), n.to_string()];

    println!("robust-tcp scale benchmark: {n} sessions, server and client in two processes");
    let mut server = Peer::start(
        "server",
        &[&["server".to_owned()], &sessions_arg[..]].concat(),
    )?;
    let words = server.expect_line("listening", Instant::now() + START_TIMEOUT)?;
    let addr = words
        .first()
        .cloned()
        .ok_or_else(|| io::Error::other("the server printed no address"))?;
    // Before any session, but after the bind: the listener and its threads exist already.
    let server_before = sample(server.pid())?;

    let client_args = [
        &["client".to_owned(), "--server".to_owned(), addr.clone()],
        &sessions_arg[..],
    ]
    .concat();
    let mut client = Peer::start("client", &client_args)?;
    let open_deadline = Instant::now() + options.open_timeout;
    let client_open = client.expect_line("all-open", open_deadline)?;
    let server_open = server.expect_line("all-open", open_deadline)?;

    thread::sleep(SETTLE);
    let server_idle_start = sample(server.pid())?;
    let client_idle_start = sample(client.pid())?;
    thread::sleep(IDLE_WINDOW);
    let server_idle_end = sample(server.pid())?;
    let client_idle_end = sample(client.pid())?;

    // Shutdown: both children at once, so that neither waits on the other's sessions.
    let exit_started = Instant::now();
    client.stdin = None;
    let server_exited = server.finish(EXIT_GRACE);
    let client_exited = client.finish(EXIT_GRACE);
    let exit_time = exit_started.elapsed();

    let total = field(&client_open, 1, "all-open")?;
    let connect_sum = field(&client_open, 2, "all-open")?;
    let exchange_sum = field(&client_open, 3, "all-open")?;
    let p50 = field(&client_open, 4, "all-open")?;
    let p99 = field(&client_open, 5, "all-open")?;
    let max = field(&client_open, 6, "all-open")?;
    let server_accept_time = field(&server_open, 1, "all-open")?;
    let server_connected = field(&server_open, 2, "all-open")?;

    let nf = n as f64;
    let cpu = |a: &Sample, b: &Sample| {
        let ticks = b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64;
        let window = IDLE_WINDOW.as_secs_f64();
        100.0 * ticks / ticks_per_second as f64 / window
    };
    let per_session_kib = |before: u64, after: u64| (after as f64 - before as f64) / nf;
    let library_threads = |s: &Sample| s.threads.saturating_sub(APP_THREADS);
    let ms = |s: f64| s * 1e3;
    let us = |s: f64| s * 1e6;

    let server_cpu_ticks = server_idle_end
        .cpu_ticks
        .saturating_sub(server_idle_start.cpu_ticks);
    let idle_secs = IDLE_WINDOW.as_secs_f64();
    let rows: Vec<(String, String)> = vec![
        (
            "open all, one after another (client)".into(),
            format!("{total:.3} s"),
        ),
        (
            "per session (connect + 16 B exchange)".into(),
            format!("{:.1} us", us(total / nf)),
        ),
        (
            "  of which connect (sum, per session)".into(),
            format!("{connect_sum:.3} s, {:.1} us", us(connect_sum / nf)),
        ),
        (
            "  of which exchange (sum, per session)".into(),
            format!("{exchange_sum:.3} s, {:.1} us", us(exchange_sum / nf)),
        ),
        (
            "connect latency p50 / p99 / max".into(),
            format!("{:.3} / {:.3} / {:.3} ms", ms(p50), ms(p99), ms(max)),
        ),
        (
            "server: accept loop time".into(),
            format!("{server_accept_time:.3} s"),
        ),
        (
            "server: sessions Connected when all open".into(),
            format!("{server_connected:.0} of {n}"),
        ),
        (
            "server RSS before / with sessions".into(),
            format!(
                "{} KiB / {} KiB",
                server_before.rss_kib, server_idle_end.rss_kib
            ),
        ),
        (
            "server RSS per idle session".into(),
            format!(
                "{:.2} KiB",
                per_session_kib(server_before.rss_kib, server_idle_end.rss_kib)
            ),
        ),
        (
            "server library threads before / with".into(),
            format!(
                "{} / {}  (total {} / {}, minus {APP_THREADS} app threads)",
                library_threads(&server_before),
                library_threads(&server_idle_end),
                server_before.threads,
                server_idle_end.threads
            ),
        ),
        (
            "server open fds before / with".into(),
            format!("{} / {}", server_before.fds, server_idle_end.fds),
        ),
        (
            format!("server CPU over {idle_secs:.0} s idle"),
            format!(
                "{:.2} % of one core ({server_cpu_ticks} ticks at {ticks_per_second}/s)",
                cpu(&server_idle_start, &server_idle_end)
            ),
        ),
        (
            "client RSS with sessions".into(),
            format!(
                "{} KiB ({:.2} KiB per session, all included)",
                client_idle_end.rss_kib,
                client_idle_end.rss_kib as f64 / nf
            ),
        ),
        (
            "client library threads with sessions".into(),
            format!(
                "{}  (total {}, minus {APP_THREADS} app threads)",
                library_threads(&client_idle_end),
                client_idle_end.threads
            ),
        ),
        (
            "client open fds with sessions".into(),
            client_idle_end.fds.to_string(),
        ),
        (
            format!("client CPU over {idle_secs:.0} s idle"),
            format!(
                "{:.2} % of one core",
                cpu(&client_idle_start, &client_idle_end)
            ),
        ),
        (
            "children exit after stdin closed".into(),
            format!(
                "{:.2} s (server {}, client {})",
                exit_time.as_secs_f64(),
                if server_exited { "exited" } else { "killed" },
                if client_exited { "exited" } else { "killed" }
            ),
        ),
    ];
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    println!();
    println!("| {:<width$} | value", format!("measure ({n} sessions)"));
    println!("|-{}-|-{}", "-".repeat(width), "-".repeat(40));
    for (label, value) in rows {
        println!("| {label:<width$} | {value}");
    }
    Ok(())
}
