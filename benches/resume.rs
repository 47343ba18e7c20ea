//! Resume latency: after an abrupt cut (a reset) of the TCP connection under a session in
//! the middle of a stream, how long until data flows again. Loopback, `Config::default()`
//! on both ends.
//!
//! ```text
//! cargo bench --bench resume                 # 200 cuts
//! cargo bench --bench resume -- --quick      # 20 cuts
//! cargo bench --bench resume -- --cuts 1000
//! cargo bench --bench resume -- --nodelay    # Config::default().nodelay(true) instead
//! ```
//!
//! # Setup
//!
//! A robust server and client, the client connected through the test suite's fault proxy
//! (`robust_tcp_testkit::proxy`) with a plan that never cuts by itself and
//! resets every connection it is told to cut (`CutPlan::never().reset_percent(100)`):
//! [`FaultProxy::cut_all`] then closes both of the proxy's sockets with `SO_LINGER` 0, so
//! the client and the server each get an RST, as a middlebox that drops its state would
//! give them. Only TCP goes through the proxy; the control datagrams (UDP) go directly, as
//! they would over a cut cable.
//!
//! A writer thread streams client → server without pause, in 8 KiB writes of a
//! deterministic pseudo-random payload (`robust_tcp_testkit::payload`); a reader thread reads
//! into a 64 KiB buffer and checks every byte against the payload, so a lost, duplicated
//! or reordered byte anywhere fails the run.
//!
//! # What is measured
//!
//! For each cut: the main thread waits until data flows (the reader has read at least
//! 256 KiB since the previous resume), then a random 0–5 ms more so that cuts land
//! anywhere in the stream. It notes the server socket's `status().reconnections` (r0),
//! arms the reader with it, reads the clock (t0) and calls `cut_all`. While armed, the
//! reader reads the clock as soon as each `read` returns and then looks at the server's
//! `status().reconnections`; the first read after which it exceeds r0 gives t1. The figure
//! is t1 − t0.
//!
//! That is the time from the cut until the receiving application holds bytes that came
//! over the new connection: the RST reaching both ends, the client redialling (the proxy
//! accepting and connecting on to the server), the reconnection handshake (HELLO, ANSWER,
//! CONFIRM), the server installing the connection, the client resending what the server
//! lacks, and the reader's thread waking with them. The server counts a reconnection
//! exactly when it installs the new connection, under the same lock, and a read waits
//! while no connection is installed, so a read that returns after the count has grown
//! returns bytes of the new connection. (The one way to be wrong: a read returning the
//! old connection's last bytes and its thread then descheduled for the whole reconnection
//! before it looks at the status; that would shorten the sample, never lengthen it.)
//!
//! A second row splits that time: the main thread polls the server's reconnection count
//! every 50 µs after the cut (while the reader waits), which times the moment the server
//! installs the new connection to within about that period.
//!
//! The proxy is part of the path: it accepts the new connection, connects to the server
//! and forwards each direction with a thread of its own (no Nagle delay; its blocked
//! writes poll its cut flag every 10 ms, but a write blocks only when the server is not
//! reading, and a session never has more than its send buffer in flight). Everything
//! shares the machine's cores with the stream itself, which keeps both threads busy: the
//! tail of the distribution is sensitive to other load.
//!
//! At the end the writer stops and shuts down its side; the reader must see end of stream
//! exactly after every byte written, and both ends must count one reconnection per cut.
//! Nothing here asserts a time: the figures are printed, with the goal (p99 < 5 ms) beside
//! them.
//!
//! `--nodelay` runs the same with `Config::default().nodelay(true)` on both ends, to show
//! how much of the resume waits on Nagle's algorithm: with it on (the default), the
//! client's first resent bytes after the CONFIRM can wait for the peer's delayed ACK of
//! the CONFIRM.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use robust_tcp::{Config, RServerSocket, RSocket};
use robust_tcp_testkit::payload::Payload;
use robust_tcp_testkit::proxy::{CutPlan, FaultProxy};
use robust_tcp_testkit::rng::Rng;

const CUTS: usize = 200;
const QUICK_CUTS: usize = 20;
/// Bytes the reader must read after a resume before the next cut: data flows again at
/// full speed, the send buffer has filled and drained many times over.
const FLOW_BYTES: u64 = 256 * 1024;
/// The longest random pause added before a cut, in microseconds.
const MAX_EXTRA_PAUSE_US: u64 = 5_000;
const WRITE_SIZE: usize = 8 * 1024;
const READ_SIZE: usize = 64 * 1024;
/// Any one wait (for flow, for a resume, for the end) longer than this aborts the process:
/// a hung library must not hang the bench.
const LIMIT: Duration = Duration::from_secs(60);
const PAYLOAD_SEED: u64 = 0x7265_7375_6d65;
const PROXY_SEED: u64 = 1;
/// The reader is not armed.
const DISARMED: u64 = u64::MAX;
/// How often the main thread looks at the server's reconnection count after a cut.
const POLL: Duration = Duration::from_micros(50);

/// What the reader and the main thread share.
struct Shared {
    /// Bytes read and checked so far.
    received: AtomicU64,
    /// The server's reconnection count before the pending cut, or [`DISARMED`].
    armed: AtomicU64,
}

fn main() {
    let options = Options::parse();
    if let Err(e) = run(&options) {
        eprintln!("resume bench failed: {e}");
        std::process::exit(1);
    }
}

fn run(options: &Options) -> io::Result<()> {
    let cuts = options.cuts;
    let config = if options.nodelay {
        Config::default().nodelay(true)
    } else {
        Config::default()
    };
    let (backoff_initial, backoff_max) = config.reconnect_backoff_value();
    println!(
        "resume latency after a reset cut during a client → server stream, loopback, {cuts} cuts"
    );
    println!(
        "{} on both ends: send buffer {} KiB growing up to {} KiB, ACK at least every {} KiB; a client \
         reconnects at once after a failure, then after {backoff_initial:?} doubling up to \
         {backoff_max:?} while attempts fail; dead_after {:?} (not involved: an RST is seen at \
         once)",
        if options.nodelay {
            "Config::default().nodelay(true) (--nodelay)"
        } else {
            "Config::default()"
        },
        config.send_buffer_size_value() >> 10,
        config.send_buffer_max_value() >> 10,
        config.ack_threshold_value() >> 10,
        config.dead_after_value(),
    );
    println!(
        "TCP through the test suite's fault proxy (a thread per direction); control datagrams \
         direct; the cut: SO_LINGER 0 close of both proxy sockets (an RST to each end)\n"
    );

    let server = RServerSocket::bind_with("127.0.0.1:0", config.clone())?;
    let plan = CutPlan::never().reset_percent(100).seed(PROXY_SEED);
    let proxy = FaultProxy::start(server.local_addr()?, plan)?;
    let client = RSocket::connect_with(proxy.local_addr(), config)?;
    let (accepted, _) = server.accept()?;
    let accepted = Arc::new(accepted);
    let payload = Payload::new(PAYLOAD_SEED, u64::MAX);
    let shared = Arc::new(Shared {
        received: AtomicU64::new(0),
        armed: AtomicU64::new(DISARMED),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (resumed_tx, resumed_rx) = mpsc::channel::<Instant>();

    let writer = {
        let stop = Arc::clone(&stop);
        let client = client.try_clone()?;
        thread::Builder::new()
            .name("writer".into())
            .spawn(move || write_stream(client, payload, &stop))?
    };
    let reader = {
        let (shared, sock) = (Arc::clone(&shared), Arc::clone(&accepted));
        thread::Builder::new()
            .name("reader".into())
            .spawn(move || read_stream(&sock, payload, &shared, &resumed_tx))?
    };

    let mut rng = Rng::new(PROXY_SEED);
    let mut latencies = Vec::with_capacity(cuts);
    let mut handshakes = Vec::with_capacity(cuts);
    let mut flowing_from = 0;
    let started = Instant::now();
    for cut in 1..=cuts {
        wait_for(&format!("data to flow before cut {cut}"), || {
            shared.received.load(Ordering::SeqCst) >= flowing_from + FLOW_BYTES
        });
        thread::sleep(Duration::from_micros(rng.range(0, MAX_EXTRA_PAUSE_US)));
        let before = accepted.status().reconnections;
        shared.armed.store(before, Ordering::SeqCst);
        let t0 = Instant::now();
        let cut_now = proxy.cut_all();
        if cut_now != 1 {
            return Err(io::Error::other(format!(
                "cut {cut}: cut_all cut {cut_now} connections, expected 1"
            )));
        }
        // Until the server installs the new connection, poll its count to time that
        // step too (to within the polling period); a report from the reader ends it.
        let mut installed = None;
        let mut report = None;
        while installed.is_none() && report.is_none() {
            match resumed_rx.try_recv() {
                Ok(t1) => report = Some(Ok(t1)),
                Err(TryRecvError::Disconnected) => {
                    report = Some(Err(RecvTimeoutError::Disconnected))
                }
                Err(TryRecvError::Empty) if accepted.status().reconnections > before => {
                    installed = Some(Instant::now());
                }
                Err(TryRecvError::Empty) if t0.elapsed() > LIMIT => {
                    report = Some(Err(RecvTimeoutError::Timeout));
                }
                Err(TryRecvError::Empty) => thread::sleep(POLL),
            }
        }
        let t1 = match report.unwrap_or_else(|| resumed_rx.recv_timeout(LIMIT)) {
            Ok(t1) => t1,
            Err(RecvTimeoutError::Timeout) => hung(&format!(
                "no data over a new connection {LIMIT:?} after cut {cut}; client {:?}; server {:?}",
                client.status(),
                accepted.status()
            )),
            // The reader failed: its result says why.
            Err(RecvTimeoutError::Disconnected) => break,
        };
        latencies.push(t1.saturating_duration_since(t0));
        let installed = installed.map_or(t1, |at| at.min(t1));
        handshakes.push(installed.saturating_duration_since(t0));
        flowing_from = shared.received.load(Ordering::SeqCst);
    }
    let cutting = started.elapsed();
    if latencies.len() != cuts {
        // The reader ended early: its error says why.
        join_bounded("the reader", reader)?;
        return Err(io::Error::other(format!(
            "the reader ended after {} of {cuts} resumes",
            latencies.len()
        )));
    }

    stop.store(true, Ordering::SeqCst);
    let written = join_bounded("the writer", writer)?;
    let read = join_bounded("the reader", reader)?;
    if read != written {
        return Err(io::Error::other(format!(
            "the reader saw end of stream after {read} bytes of {written}"
        )));
    }
    let (client_reconnections, server_reconnections) = (
        client.status().reconnections,
        accepted.status().reconnections,
    );

    println!(
        "{cuts} cuts in {:.1} s; {written} bytes written, every one read back and checked, \
         then end of stream",
        cutting.as_secs_f64(),
    );
    println!(
        "reconnections: client {client_reconnections}, server {server_reconnections}; TCP \
         connections accepted by the proxy: {} (1 + one per successful redial, more if a redial \
         failed)\n",
        proxy.connections()
    );
    let resume = Spread::of(latencies);
    let install = Spread::of(handshakes);
    println!(
        "{:<44} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "ms after the cut", "min", "p50", "p90", "p99", "max", "mean"
    );
    install.print_row("server installs the new connection (±0.05)");
    resume.print_row("reader holds bytes of the new connection");
    println!(
        "goal p99 < 5 ms: {}",
        if resume.p99 < Duration::from_millis(5) {
            "met"
        } else {
            "MISSED"
        }
    );
    let slowest: Vec<String> = resume
        .sorted
        .iter()
        .rev()
        .take(5)
        .map(|&d| format!("{:.3}", ms(d)))
        .collect();
    println!("slowest five resumes (ms): {}", slowest.join(" "));
    println!();
    println!("| cuts | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | bytes checked |");
    println!("|--:|--:|--:|--:|--:|--:|");
    println!(
        "| {cuts} | {:.3} | {:.3} | {:.3} | {:.3} | {written} |",
        ms(resume.p50),
        ms(resume.p90),
        ms(resume.p99),
        ms(resume.max()),
    );
    // The proxy goes first: it holds connections to the server.
    drop(proxy);
    Ok(())
}

/// Writes the payload in 8 KiB writes until told to stop, then shuts down the write side;
/// returns the bytes written.
fn write_stream(mut sock: RSocket, payload: Payload, stop: &AtomicBool) -> io::Result<u64> {
    let mut buf = vec![0; WRITE_SIZE];
    let mut pos = 0u64;
    while !stop.load(Ordering::Relaxed) {
        payload.fill(pos, &mut buf);
        sock.write_all(&buf)?;
        pos += WRITE_SIZE as u64;
    }
    sock.shutdown(Shutdown::Write)?;
    Ok(pos)
}

/// Reads to end of stream checking every byte, and reports each resume (see the module
/// doc); returns the bytes read.
fn read_stream(
    sock: &RSocket,
    payload: Payload,
    shared: &Shared,
    resumed: &mpsc::Sender<Instant>,
) -> io::Result<u64> {
    let mut got = vec![0; READ_SIZE];
    let mut want = vec![0; READ_SIZE];
    let mut pos = 0u64;
    loop {
        let n = match (&*sock).read(&mut got) {
            Ok(0) => return Ok(pos),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let returned = Instant::now();
        let before = shared.armed.load(Ordering::SeqCst);
        if before != DISARMED && sock.status().reconnections > before {
            shared.armed.store(DISARMED, Ordering::SeqCst);
            let _ = resumed.send(returned);
        }
        payload.fill(pos, &mut want[..n]);
        if let Some(i) = got[..n].iter().zip(&want[..n]).position(|(g, w)| g != w) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "byte {} is {:#04x}, expected {:#04x} (lost, duplicated or reordered data)",
                    pos + i as u64,
                    got[i],
                    want[i]
                ),
            ));
        }
        pos += n as u64;
        shared.received.store(pos, Ordering::SeqCst);
    }
}

/// Polls `condition` until it holds; aborts the process after [`LIMIT`].
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !condition() {
        if Instant::now() > deadline {
            hung(&format!("waited {LIMIT:?} for {what}"));
        }
        thread::sleep(Duration::from_micros(200));
    }
}

/// Joins a thread, aborting the process if it has not finished within [`LIMIT`].
fn join_bounded(what: &str, handle: thread::JoinHandle<io::Result<u64>>) -> io::Result<u64> {
    wait_for(&format!("{what} to finish"), || handle.is_finished());
    handle
        .join()
        .unwrap_or_else(|_| Err(io::Error::other(format!("{what} panicked"))))
        .map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))
}

fn hung(what: &str) -> ! {
    eprintln!("watchdog: {what}; something hangs. Aborting.");
    std::process::abort();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A sorted sample of durations and its quantiles.
struct Spread {
    sorted: Vec<Duration>,
    p50: Duration,
    p90: Duration,
    p99: Duration,
}

impl Spread {
    fn of(mut values: Vec<Duration>) -> Spread {
        values.sort();
        Spread {
            p50: quantile(&values, 0.5),
            p90: quantile(&values, 0.9),
            p99: quantile(&values, 0.99),
            sorted: values,
        }
    }

    fn max(&self) -> Duration {
        self.sorted[self.sorted.len() - 1]
    }

    fn print_row(&self, label: &str) {
        let mean = self.sorted.iter().sum::<Duration>() / self.sorted.len() as u32;
        println!(
            "{label:<44} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>7.3}",
            ms(self.sorted[0]),
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max()),
            ms(mean),
        );
    }
}

/// The `q` quantile of sorted values, by the nearest rank.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Options {
    cuts: usize,
    nodelay: bool,
}

impl Options {
    fn parse() -> Options {
        let mut options = Options {
            cuts: CUTS,
            nodelay: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                // `cargo bench` passes `--bench` to every bench binary.
                "--bench" => {}
                "--quick" => options.cuts = QUICK_CUTS,
                "--cuts" => {
                    options.cuts = args
                        .next()
                        .and_then(|n| n.parse().ok())
                        .filter(|&n| n > 0)
                        .unwrap_or_else(|| usage("--cuts needs a positive number"));
                }
                "--nodelay" => options.nodelay = true,
                "-h" | "--help" => usage(""),
                other => usage(&format!("unknown argument {other}")),
            }
        }
        options
    }
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("{problem}");
    }
    eprintln!("usage: cargo bench --bench resume -- [--quick] [--cuts N] [--nodelay]");
    std::process::exit(if problem.is_empty() { 0 } else { 2 });
}
