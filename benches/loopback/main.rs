//! robust-tcp against `std::net::TcpStream` on loopback, in the same run, modelled on the
//! paper's measurements (IBM SockPerf, section 5): STREAM, RR and CRR.
//!
//! ```text
//! cargo bench --bench loopback                   # every benchmark, 11 rounds each
//! cargo bench --bench loopback -- --quick        # 3 rounds, a sixteenth of the work
//! cargo bench --bench loopback -- stream_8k rr   # only names containing a filter
//! cargo bench --bench loopback -- --rounds 21    # more rounds
//! LOOPBACK_KEY_AGREEMENT=0 cargo bench --bench loopback -- crr   # the lightweight opening
//! ```
//!
//! # What is measured
//!
//! - `stream_64`, `stream_1k`, `stream_8k`, `stream_64k`: one connected pair; a writer
//!   sends N bytes one way in writes of 64 B, 1 KiB, 8 KiB or 64 KiB, then shuts down its
//!   write side. The clock runs from the first write until the receiver (another thread,
//!   reading into a 256 KiB buffer) has read end of stream, so it covers every byte
//!   delivered, not just handed to the send buffer. The receiver checks the byte count
//!   exactly and the content on a sample: every write starts with its sequence number
//!   (checked whenever those 8 bytes fall within one read) and the last byte of every read
//!   must be the filler. Figure: MiB/s.
//! - `rr_1`, `rr_1k`: one pre-opened pair with Nagle off on both ends (`set_nodelay(true)`
//!   for TCP, `Config::nodelay(true)` for robust-tcp); the client writes a 1 B or 1 KiB
//!   message, the server reads exactly that many bytes and echoes them, K times (after a
//!   few untimed round trips). The client checks every reply. Figure: round trips per
//!   second.
//! - `crr`: a server thread accepts in a loop; per transaction the client connects, writes
//!   a 64 B request, and reads an 8 KiB reply until end of stream; the server reads the
//!   whole request, writes the reply and closes; the client then closes too. T
//!   transactions per round, one after the other. Figure: microseconds per transaction.
//!   A robust session lingers in the background after its last handle is dropped, until
//!   the peer has acknowledged every byte and confirmed the close; that background work
//!   is part of what is paid here (its CPU time in particular), but the clock stops when
//!   the client has its last reply and has dropped its socket.
//!
//! Both sides use their defaults and nothing else: `Config::default()` for robust-tcp
//! (a send buffer that starts at 16 KiB and grows while the path takes everything, as
//! Linux's own TCP buffers do: up to 1 MiB here, up to 4 MiB over a round trip of 1 ms or
//! more), std's socket defaults for TCP, no
//! socket buffer sizes set on either; Nagle is turned off on both in RR only. The message
//! sizes, the reader's buffer and the checks are the same code for both.
//!
//! # How it is measured, and why not criterion or divan
//!
//! Each benchmark runs R rounds; a round runs TCP and robust-tcp back to back, alternating
//! which goes first, and yields one ratio robust / TCP. The machine's state (other load,
//! frequency scaling, caches) drifts over seconds; pairing the two runs of a round cancels
//! most of that drift out of the ratio, and the spread of the per-round ratios shows how
//! much is left. Criterion and divan measure one function at a time and report its own
//! distribution; they cannot pair two implementations round by round and report the
//! distribution of the ratio, which is the figure wanted here, hence this small harness
//! (`harness = false`).
//!
//! For every run the harness also takes the process's CPU time (user + system, from
//! `getrusage(RUSAGE_SELF)`) before and after: robust-tcp's engine thread lives in the
//! process and is counted, as are both ends of the connection (the kernel's loopback work
//! is mostly charged to the sending and receiving threads). The CPU ratio is robust / TCP
//! for the same work.
//!
//! Loopback has no wire to wait on, so the session layer's own costs (the copy into the
//! send buffer, the UDP acknowledgements, the locks, the handshakes) weigh far more here
//! than on a real network: these ratios are a floor, not what an application on a network
//! sees. Absolute figures depend on the machine and on what else runs on it; the ratios of
//! a paired round are the figures to compare.
//!
//! RR and CRR stop a run after 20 s at the next round trip or transaction and take its
//! figures from the work done (the round's line and the table say so): a pathologically
//! slow run is measured and reported, and the bench goes on. Every figure and ratio is per
//! unit of work (byte, round trip, transaction), so a run cut short compares fairly.
//!
//! Every loop ends by itself, and a watchdog aborts the process if one run (one side of a
//! round) takes more than a minute, so a hung (or pathologically slow) library cannot hang
//! the bench; it says how far the run got and prints the tables of the benchmarks finished
//! so far. A filter selects the benchmarks whose names contain it, as `cargo test` does.
//!
//! The workloads are in `workloads.rs`; the paired rounds, the tables and the watchdog
//! are the test kit's (`testkit/src/paired/`), shared with the WAN example.

mod workloads;

use std::time::Duration;

use robust_tcp_testkit::paired::report::{print_tables, record, sorted_list};
use robust_tcp_testkit::paired::watchdog::start_watchdog;
use robust_tcp_testkit::paired::{
    paired_rounds, Options, Robust, Row, Sample, Side, Tcp, CRR_REPLY, CRR_REQUEST,
};
use workloads::run;

/// Rounds per benchmark, and in `--quick` mode.
const ROUNDS: usize = 11;
const QUICK_ROUNDS: usize = 3;
/// `--quick` divides the work of each run by this.
const QUICK_DIVISOR: u64 = 16;
/// A run (one side of one round) taking longer than this aborts the process.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// RR and CRR stop a run at the next round trip or transaction after this long, and the
/// figures of that run are taken from the work it did: a pathologically slow run is
/// measured and reported, and the bench goes on.
const SOFT_LIMIT: Duration = Duration::from_secs(20);
/// Pause between runs, so that what one run leaves behind (closing sockets, lingering
/// sessions, exiting threads) is mostly done before the next one's clocks start.
const SETTLE: Duration = Duration::from_millis(50);
/// Untimed round trips before RR's clock starts.
const RR_WARMUP: u64 = 50;
const MIB: f64 = (1 << 20) as f64;

#[derive(Clone, Copy)]
enum Kind {
    /// `bytes` one way in `write`-byte writes.
    Stream { write: usize, bytes: u64 },
    /// `round_trips` echoes of a `message`-byte message.
    Rr { message: usize, round_trips: u64 },
    /// `transactions` connect / request / reply / close.
    Crr { transactions: u64 },
}

struct Bench {
    name: &'static str,
    kind: Kind,
}

/// The benchmarks, with the work of one run: sized so that a TCP run takes roughly
/// 0.2–1 s on an ordinary machine's loopback.
fn benches() -> Vec<Bench> {
    let stream = |name, write, mib: u64| Bench {
        name,
        kind: Kind::Stream {
            write,
            bytes: mib << 20,
        },
    };
    vec![
        Bench {
            name: "rr_1",
            kind: Kind::Rr {
                message: 1,
                round_trips: 50_000,
            },
        },
        Bench {
            name: "rr_1k",
            kind: Kind::Rr {
                message: 1024,
                round_trips: 50_000,
            },
        },
        stream("stream_64", 64, 32),
        stream("stream_1k", 1024, 512),
        stream("stream_8k", 8 * 1024, 1024),
        stream("stream_64k", 64 * 1024, 1024),
        Bench {
            name: "crr",
            kind: Kind::Crr {
                transactions: 5_000,
            },
        },
    ]
}

impl Kind {
    /// The same benchmark with a `divisor`-th of the work.
    fn scaled_down(self, divisor: u64) -> Kind {
        match self {
            Kind::Stream { write, bytes } => Kind::Stream {
                write,
                bytes: (bytes / divisor).max(write as u64),
            },
            Kind::Rr {
                message,
                round_trips,
            } => Kind::Rr {
                message,
                round_trips: (round_trips / divisor).max(1),
            },
            Kind::Crr { transactions } => Kind::Crr {
                transactions: (transactions / divisor).max(1),
            },
        }
    }

    /// The writes, round trips or transactions of one run.
    fn work(self) -> u64 {
        match self {
            Kind::Stream { write, bytes } => bytes / write as u64,
            Kind::Rr { round_trips, .. } => round_trips,
            Kind::Crr { transactions } => transactions,
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Kind::Stream { .. } => "MiB/s",
            Kind::Rr { .. } => "rt/s",
            Kind::Crr { .. } => "µs/tx",
        }
    }

    /// Whether the figure is a time (lower is better) rather than a rate.
    fn is_time(self) -> bool {
        matches!(self, Kind::Crr { .. })
    }

    /// The figure of a run: a rate, or for CRR microseconds per transaction.
    fn figure(self, run: &Run) -> f64 {
        let per_unit = run.wall_per_unit();
        match self {
            Kind::Stream { write, .. } => write as f64 / MIB / per_unit,
            Kind::Rr { .. } => 1.0 / per_unit,
            Kind::Crr { .. } => per_unit * 1e6,
        }
    }

    fn describe(self) -> String {
        match self {
            Kind::Stream { write, bytes } => {
                format!("{} MiB in {write} B writes", bytes >> 20)
            }
            Kind::Rr {
                message,
                round_trips,
            } => format!("{round_trips} round trips of {message} B"),
            Kind::Crr { transactions } => {
                format!("{transactions} x (connect, {CRR_REQUEST} B, {CRR_REPLY} B, close)")
            }
        }
    }
}

/// One side's measurement: wall-clock time of the timed part and the process CPU time
/// spent meanwhile.
struct Run {
    wall: Duration,
    cpu: Duration,
    /// The writes, round trips or transactions done: all of them, unless the run was cut
    /// short at [`SOFT_LIMIT`].
    done: u64,
    cut_short: bool,
}

impl Run {
    /// Wall-clock seconds per unit of work.
    fn wall_per_unit(&self) -> f64 {
        self.wall.as_secs_f64() / self.done.max(1) as f64
    }

    /// CPU seconds per unit of work.
    fn cpu_per_unit(&self) -> f64 {
        self.cpu.as_secs_f64() / self.done.max(1) as f64
    }
}

// ---------------------------------------------------------------- the harness

/// One side's run of `kind`, as the paired rounds take it.
fn sample(kind: Kind, side: Side) -> std::io::Result<Sample> {
    let run = match side {
        Side::Tcp => run::<Tcp>(kind),
        Side::Robust => run::<Robust>(kind),
    }?;
    Ok(Sample {
        figures: vec![kind.figure(&run)],
        cpu_per_unit: run.cpu_per_unit(),
        cut_short: run.cut_short.then(|| {
            format!(
                "cut short at {SOFT_LIMIT:?}: {} of {} done",
                run.done,
                kind.work()
            )
        }),
    })
}

fn main() {
    let options = Options::parse(std::env::args().skip(1), ROUNDS, QUICK_ROUNDS, usage);
    let selected: Vec<Bench> = benches()
        .into_iter()
        .filter(|b| options.selects(b.name))
        .collect();
    if selected.is_empty() {
        eprintln!("no benchmark matches {:?}", options.filters);
        std::process::exit(2);
    }
    start_watchdog(RUN_LIMIT, || {});
    println!(
        "robust-tcp vs std TcpStream on loopback: {} rounds per benchmark{}; each round runs both \
         back to back, alternating which goes first",
        options.rounds,
        if options.quick { " (quick mode)" } else { "" }
    );
    println!(
        "ratio = robust / TCP per round: throughput for rr and stream (higher is better, 1.00 is \
         parity), time per transaction for crr (lower is better); cpu = process CPU time robust / \
         TCP for the same work (lower is better)\n"
    );
    let mut failed = false;
    for b in &selected {
        let kind = if options.quick {
            b.kind.scaled_down(QUICK_DIVISOR)
        } else {
            b.kind
        };
        println!("{}: {}", b.name, kind.describe());
        let rows = [Row {
            name: b.name.to_string(),
            unit: kind.unit(),
            is_time: kind.is_time(),
        }];
        let result = paired_rounds(b.name, &rows, kind.work(), options.rounds, SETTLE, |side| {
            sample(kind, side)
        })
        .map_err(|e| e.to_string());
        match &result {
            Ok(rounds) => {
                println!(
                    "  ratios sorted:   {}",
                    sorted_list(&rounds.series[0].ratio)
                );
            }
            Err(e) => println!("  FAILED: {e}"),
        }
        failed |= result.is_err();
        record(&rows, &result);
    }
    print_tables();
    if failed {
        std::process::exit(1);
    }
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("{problem}");
    }
    let names: Vec<&str> = benches().iter().map(|b| b.name).collect();
    eprintln!(
        "usage: cargo bench --bench loopback -- [--quick] [--rounds N] [FILTER...]\n\
         benchmarks: {}",
        names.join(" ")
    );
    std::process::exit(if problem.is_empty() { 0 } else { 2 });
}
