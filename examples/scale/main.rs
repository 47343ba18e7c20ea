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
//!
//! The child processes are in `children.rs`, the parent's handle on them in the test kit (`testkit/src/child.rs`), what
//! it measures in `measure.rs`.

mod children;
mod measure;

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use children::{run_client, run_server};
use measure::{clock_ticks, field, sample, Sample};
use robust_tcp_testkit::child::Peer;

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

// ------------------------------------------------------------------ the parent

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
