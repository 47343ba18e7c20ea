//! robust-tcp against `std::net::TcpStream` over an emulated wide-area path, in paired
//! rounds (issue 19). Linux, root (network namespaces and TUN devices).
//!
//! ```text
//! cargo run --release --example wan                        # every benchmark, 5 rounds
//! cargo run --release --example wan -- --quick             # 2 rounds, an eighth of the work
//! cargo run --release --example wan -- up_40ms down_40ms   # names containing a filter
//! cargo run --release --example wan -- --rounds 9 --verbose
//! ```
//!
//! It is an example, not a `[[bench]]`: Cargo cannot leave a bench target out of a plain
//! `cargo bench` (the loopback suite) and still build it with `--all-targets` (`bench =
//! false` drops it from both, a required feature too), and this one needs root.
//!
//! # The path
//!
//! Two network namespaces, the server's and the client's, each with a TUN device in
//! 10.a.b.0/24, and between the devices a delay line in this process (`path.rs`): a
//! one-way delay, a bottleneck rate with a drop-tail queue of one bandwidth-delay product,
//! optional random loss from a seeded generator (`ROBUST_TCP_SEED` replays it), and a
//! blackhole. The same both ways. No netem: this kernel may not have it.
//!
//! The server is a child process of this binary in the server's namespace (`server.rs`);
//! the client is this process, whose main thread enters the client's namespace (and with
//! it the robust-tcp engine thread it starts). Both sides use their defaults
//! (`Config::default()`, std's socket options; Nagle off on both in RR only).
//!
//! # What is measured
//!
//! - `crr`: connect, a 64 B request, an 8 KiB reply read to end of stream, close; the
//!   median of N transactions per run, until end of stream (`crr`) and until the reply's
//!   last byte (`crr_last_byte`). Milliseconds.
//! - `rr_1k`: a 1 KiB message echoed, every reply checked. Milliseconds per round trip.
//! - `up_*` / `down_*`: 32 MiB client to server / server to client in 64 KiB writes,
//!   sampled content checked, timed from the first write (or the request) until the
//!   server's count of what it read arrives (or end of stream): each includes one one-way
//!   delay beyond the transfer. Mbit/s, at 40 ms / 100 Mbit/s and 100 ms / 50 Mbit/s.
//! - `loss_1pct`: an upload with 1% random loss each way, 40 ms / 50 Mbit/s.
//! - `blackhole`: a download at 40 ms / 100 Mbit/s, the path dropping everything for 10 s
//!   from a quarter of the way; the seconds from the path's return until the next byte.
//! - `tunnel_crr`: `crr` at 40 ms through a relay at each end with TLS between them:
//!   two socats with OpenSSL over TCP (the tables' "TCP") against `rtcp client` and
//!   `rtcp server` (their "robust"); see `tunnels.rs`. Needs `rtcp` built first
//!   (`cargo build --release -p robust-tcp-cli`), socat and openssl.
//!
//! Rounds, ratios, tables and the watchdog are the loopback bench's (the test kit's
//! `paired` module). The CPU ratio is this process's (the client's side, the delay line's
//! threads subtracted); the server's is not counted.
//!
//! Namespaces are named after the process and deleted on every exit path: the `Path`
//! guard's drop (panics included), a handler for SIGINT, SIGTERM and SIGHUP, and the
//! watchdog. A namespace left by a killed run is removed by the next run.

mod path;
mod server;
mod tunnels;
mod workloads;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use robust_tcp_testkit::child::Peer;
use robust_tcp_testkit::netns;
use robust_tcp_testkit::paired::report::{print_tables, record, sorted_list};
use robust_tcp_testkit::paired::watchdog::start_watchdog;
use robust_tcp_testkit::paired::{paired_rounds, Options, Robust, Row, Side, Tcp};
use robust_tcp_testkit::rng::fresh_seed;

use path::{enter_namespace, Path, Shape, CLIENT, SERVER};

/// Rounds per benchmark, and in `--quick` mode.
const ROUNDS: usize = 5;
const QUICK_ROUNDS: usize = 2;
/// `--quick` divides the work of each run by this.
const QUICK_DIVISOR: u64 = 8;
/// A run taking longer than this aborts the process (after cleaning up).
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// Pause between runs: the previous run's packets leave the queues (at most a
/// bandwidth-delay product and a one-way delay), its lingering sessions finish.
const SETTLE: Duration = Duration::from_millis(500);
/// How long the server may take to say it is ready.
const SERVER_START: Duration = Duration::from_secs(10);
/// The size of every stream write, both ways.
const WRITE: usize = 64 * 1024;
const MIB: u64 = 1 << 20;

/// 40 ms round trip, 100 Mbit/s.
const PATH_40MS: Shape = Shape {
    one_way: Duration::from_millis(20),
    rate: 100_000_000,
    loss_percent: 0,
};
/// 100 ms round trip, 50 Mbit/s.
const PATH_100MS: Shape = Shape {
    one_way: Duration::from_millis(50),
    rate: 50_000_000,
    loss_percent: 0,
};
/// 40 ms round trip, 50 Mbit/s, 1% loss each way.
const PATH_LOSSY: Shape = Shape {
    one_way: Duration::from_millis(20),
    rate: 50_000_000,
    loss_percent: 1,
};

/// What the server does with a connection; it has one listener per workload and side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    /// Reads to end of stream, then writes the count read.
    Sink,
    /// Reads a count of writes, sends them, ends the stream.
    Source,
    /// Echoes (Nagle off).
    Echo,
    /// One CRR transaction.
    Crr,
}

impl Workload {
    const ALL: [Workload; 4] = [
        Workload::Sink,
        Workload::Source,
        Workload::Echo,
        Workload::Crr,
    ];
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Crr { transactions: u64 },
    Rr { message: usize, round_trips: u64 },
    Up { bytes: u64 },
    Down { bytes: u64 },
    Blackhole { outage: Duration, bytes: u64 },
}

impl Kind {
    fn workload(self) -> Workload {
        match self {
            Kind::Crr { .. } => Workload::Crr,
            Kind::Rr { .. } => Workload::Echo,
            Kind::Up { .. } => Workload::Sink,
            Kind::Down { .. } | Kind::Blackhole { .. } => Workload::Source,
        }
    }

    /// The same benchmark with a `divisor`-th of the work (the outage stays as long).
    fn scaled_down(self, divisor: u64) -> Kind {
        let bytes = |b: u64| (b / divisor).max(WRITE as u64);
        match self {
            Kind::Crr { transactions } => Kind::Crr {
                transactions: (transactions / divisor).max(3),
            },
            Kind::Rr {
                message,
                round_trips,
            } => Kind::Rr {
                message,
                round_trips: (round_trips / divisor).max(5),
            },
            Kind::Up { bytes: b } => Kind::Up { bytes: bytes(b) },
            Kind::Down { bytes: b } => Kind::Down { bytes: bytes(b) },
            Kind::Blackhole { outage, bytes: b } => Kind::Blackhole {
                outage,
                bytes: bytes(b),
            },
        }
    }

    /// Transactions, round trips or writes.
    fn work(self) -> u64 {
        match self {
            Kind::Crr { transactions } => transactions,
            Kind::Rr { round_trips, .. } => round_trips,
            Kind::Up { bytes } | Kind::Down { bytes } | Kind::Blackhole { bytes, .. } => {
                bytes / WRITE as u64
            }
        }
    }

    /// The figures of a run, one row each.
    fn rows(self, name: &str) -> Vec<Row> {
        let row = |name: String, unit, is_time| Row {
            name,
            unit,
            is_time,
        };
        match self {
            Kind::Crr { .. } => vec![
                row(name.into(), "ms", true),
                row(format!("{name}_last_byte"), "ms", true),
            ],
            Kind::Rr { .. } => vec![row(name.into(), "ms/rt", true)],
            Kind::Up { .. } | Kind::Down { .. } => vec![row(name.into(), "Mbit/s", false)],
            Kind::Blackhole { .. } => vec![row(name.into(), "s", true)],
        }
    }

    fn describe(self) -> String {
        match self {
            Kind::Crr { transactions } => {
                format!("{transactions} x (connect, 64 B, 8 KiB, close), medians")
            }
            Kind::Rr {
                message,
                round_trips,
            } => format!("{round_trips} round trips of {message} B"),
            Kind::Up { bytes } => format!("{} MiB client to server", bytes / MIB),
            Kind::Down { bytes } => format!("{} MiB server to client", bytes / MIB),
            Kind::Blackhole { outage, bytes } => format!(
                "{} MiB server to client, {outage:?} blackhole from a quarter of the way",
                bytes / MIB
            ),
        }
    }
}

struct Bench {
    name: &'static str,
    shape: Shape,
    kind: Kind,
    /// Through the relays of `tunnels.rs` rather than to the server child directly.
    tunneled: bool,
}

fn benches() -> Vec<Bench> {
    let bench = |name, shape, kind| Bench {
        name,
        shape,
        kind,
        tunneled: false,
    };
    vec![
        bench("crr", PATH_40MS, Kind::Crr { transactions: 20 }),
        Bench {
            tunneled: true,
            ..bench("tunnel_crr", PATH_40MS, Kind::Crr { transactions: 20 })
        },
        bench(
            "rr_1k",
            PATH_40MS,
            Kind::Rr {
                message: 1024,
                round_trips: 50,
            },
        ),
        bench("up_40ms", PATH_40MS, Kind::Up { bytes: 32 * MIB }),
        bench("down_40ms", PATH_40MS, Kind::Down { bytes: 32 * MIB }),
        bench("up_100ms", PATH_100MS, Kind::Up { bytes: 32 * MIB }),
        bench("down_100ms", PATH_100MS, Kind::Down { bytes: 32 * MIB }),
        bench("loss_1pct", PATH_LOSSY, Kind::Up { bytes: 32 * MIB }),
        bench(
            "blackhole",
            PATH_40MS,
            Kind::Blackhole {
                outage: Duration::from_secs(10),
                bytes: 32 * MIB,
            },
        ),
    ]
}

/// The server child's process id, for the cleanup after a signal or the watchdog.
static SERVER_PID: AtomicU32 = AtomicU32::new(0);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        return match server::main(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wan server: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let options = Options::parse(args, ROUNDS, QUICK_ROUNDS, usage);
    match parent(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("wan: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The whole bench; whether every benchmark succeeded. The path and the server are
/// dropped (the namespaces deleted, the child killed) on every return, and on a panic.
fn parent(options: &Options) -> io::Result<bool> {
    let selected: Vec<Bench> = benches()
        .into_iter()
        .filter(|b| options.selects(b.name))
        .collect();
    if selected.is_empty() {
        usage(&format!("no benchmark matches {:?}", options.filters));
    }
    if let Some(why) = netns::missing_prerequisites() {
        return Err(io::Error::other(format!("cannot run: {why}")));
    }
    if let Ok(stale) = netns::remove_stale() {
        if !stale.is_empty() {
            eprintln!("wan: removed namespaces of killed runs: {stale:?}");
        }
    }
    netns::on_signal(kill_children);
    start_watchdog(RUN_LIMIT, || {
        kill_children();
        netns::remove_live();
    });
    let seed = fresh_seed();
    let path = Path::new(selected[0].shape, seed)?;
    let server_ip = IpAddr::V4(path.addr(SERVER.1));
    let server = Peer::start(
        "server",
        &[
            "serve".into(),
            path.namespace(SERVER.0).into(),
            server_ip.to_string(),
        ],
    )?;
    SERVER_PID.store(server.pid(), Ordering::SeqCst);
    let ports: Vec<u16> = server
        .expect_line("ready", Instant::now() + SERVER_START)?
        .iter()
        .map(|p| p.parse().map_err(io::Error::other))
        .collect::<io::Result<_>>()?;
    if ports.len() != 2 * Workload::ALL.len() {
        return Err(io::Error::other(format!("the server's ports: {ports:?}")));
    }
    // Every client socket from here on, and the engine thread, live in the client's
    // namespace.
    enter_namespace(path.namespace(CLIENT.0))?;
    let addr = |side: Side, workload: Workload| {
        let i = Workload::ALL
            .iter()
            .position(|w| *w == workload)
            .expect("every workload has a listener");
        let offset = if side == Side::Robust {
            Workload::ALL.len()
        } else {
            0
        };
        SocketAddr::new(server_ip, ports[offset + i])
    };
    println!(
        "robust-tcp vs std TcpStream over an emulated WAN path (TUN devices and a delay line, \
         seed {seed:#x}): {} rounds per benchmark{}; each round runs both back to back, \
         alternating which goes first",
        options.rounds,
        if options.quick { " (quick mode)" } else { "" }
    );
    println!(
        "ratio = robust / TCP per round: Mbit/s (higher is better) or time (lower is better); \
         cpu = this process's CPU time robust / TCP (the client's side only)\n"
    );
    let mut ok = true;
    // Started for the first benchmark through them.
    let mut tunnels: Option<tunnels::Tunnels> = None;
    for b in &selected {
        let kind = if options.quick {
            b.kind.scaled_down(QUICK_DIVISOR)
        } else {
            b.kind
        };
        let s = b.shape;
        println!(
            "{}: {} over {:?} round trip, {} Mbit/s, {}% loss",
            b.name,
            kind.describe(),
            2 * s.one_way,
            s.rate / 1_000_000,
            s.loss_percent
        );
        path.set_shape(s);
        let rows = kind.rows(b.name);
        if b.tunneled && tunnels.is_none() {
            println!(
                "  TCP: two socats, TLS (OpenSSL) between them; robust: rtcp client and server"
            );
            let target = addr(Side::Tcp, Workload::Crr);
            let started = tunnels::Tunnels::start(
                path.namespace(SERVER.0),
                path.namespace(CLIENT.0),
                path.addr(SERVER.1),
                target,
            );
            match started {
                Ok(started) => tunnels = Some(started),
                Err(e) => {
                    println!("  FAILED: cannot start the relays: {e}");
                    ok = false;
                    record(&rows, &Err(e.to_string()));
                    continue;
                }
            }
        }
        let result = paired_rounds(b.name, &rows, kind.work(), options.rounds, SETTLE, |side| {
            let before = path.counts();
            let sample = match (side, tunnels.as_ref().filter(|_| b.tunneled)) {
                // Plain TCP to the relay of either side: the relays make the difference.
                (_, Some(relays)) => workloads::run::<Tcp>(kind, relays.entry(side), &path),
                (Side::Tcp, None) => {
                    workloads::run::<Tcp>(kind, addr(side, kind.workload()), &path)
                }
                (Side::Robust, None) => {
                    workloads::run::<Robust>(kind, addr(side, kind.workload()), &path)
                }
            };
            if options.verbose {
                let c = path.counts();
                println!(
                    "    {}: path delivered {} packets, dropped {} at the queue's tail, {} at \
                     random, {} in the blackhole",
                    side.name(),
                    c.delivered - before.delivered,
                    c.tail_drops - before.tail_drops,
                    c.random_drops - before.random_drops,
                    c.blackholed - before.blackholed
                );
            }
            sample
        })
        .map_err(|e| e.to_string());
        match &result {
            Ok(rounds) => {
                for (row, series) in rows.iter().zip(&rounds.series) {
                    println!(
                        "  {} ratios sorted: {}",
                        row.name,
                        sorted_list(&series.ratio)
                    );
                }
            }
            Err(e) => println!("  FAILED: {e}"),
        }
        ok &= result.is_ok();
        record(&rows, &result);
    }
    print_tables();
    drop(tunnels);
    drop(server);
    SERVER_PID.store(0, Ordering::SeqCst);
    Ok(ok)
}

/// Kills the server child and the relays: for the watchdog and signals, when drops will
/// not run.
fn kill_children() {
    tunnels::kill_all();
    let pid = SERVER_PID.swap(0, Ordering::SeqCst);
    if pid != 0 {
        // SAFETY: kill has no memory effects; the pid is our own child's, not yet reaped
        // (it is reaped only by the `Peer`'s drop, which resets SERVER_PID first).
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("{problem}");
    }
    let names: Vec<&str> = benches().iter().map(|b| b.name).collect();
    eprintln!(
        "usage: cargo run --release --example wan -- [--quick] [--rounds N] [--verbose] \
         [FILTER...]\nbenchmarks: {}",
        names.join(" ")
    );
    std::process::exit(if problem.is_empty() { 0 } else { 2 });
}
