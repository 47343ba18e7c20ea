//! robust-tcp against `std::net::TcpStream` on loopback, in the same run, modelled on the
//! paper's measurements (IBM SockPerf, section 5): STREAM, RR and CRR.
//!
//! ```text
//! cargo bench --bench loopback                   # every benchmark, 11 rounds each
//! cargo bench --bench loopback -- --quick        # 3 rounds, a sixteenth of the work
//! cargo bench --bench loopback -- stream_8k rr   # only names containing a filter
//! cargo bench --bench loopback -- --rounds 21    # more rounds
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

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use robust_tcp::{Config, RServerSocket, RSocket};

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
/// The receiver's buffer in STREAM.
const READ_BUF: usize = 256 * 1024;
/// Untimed round trips before RR's clock starts.
const RR_WARMUP: u64 = 50;
const CRR_REQUEST: usize = 64;
const CRR_REPLY: usize = 8 * 1024;
/// Every byte of a STREAM write after its 8-byte sequence number, and of a CRR reply.
const FILL: u8 = 0x5a;
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

// ---------------------------------------------------------------- the two implementations

/// What a benchmark needs of a stream implementation.
trait Net {
    const NAME: &'static str;
    type Stream: Read + Write + Send + 'static;
    type Listener: Send + 'static;

    fn listen(nodelay: bool) -> io::Result<(Self::Listener, SocketAddr)>;
    fn accept(listener: &Self::Listener) -> io::Result<Self::Stream>;
    fn connect(addr: SocketAddr, nodelay: bool) -> io::Result<Self::Stream>;
    fn shutdown_write(stream: &Self::Stream) -> io::Result<()>;
}

/// `std::net` with its defaults.
struct Tcp;

impl Net for Tcp {
    const NAME: &'static str = "TCP";
    type Stream = TcpStream;
    /// The listener and whether accepted streams get `set_nodelay(true)`.
    type Listener = (TcpListener, bool);

    fn listen(nodelay: bool) -> io::Result<(Self::Listener, SocketAddr)> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        Ok(((listener, nodelay), addr))
    }

    fn accept((listener, nodelay): &Self::Listener) -> io::Result<TcpStream> {
        let (stream, _) = listener.accept()?;
        if *nodelay {
            stream.set_nodelay(true)?;
        }
        Ok(stream)
    }

    fn connect(addr: SocketAddr, nodelay: bool) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(addr)?;
        if nodelay {
            stream.set_nodelay(true)?;
        }
        Ok(stream)
    }

    fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
        stream.shutdown(Shutdown::Write)
    }
}

/// robust-tcp with `Config::default()` (plus `nodelay(true)` where TCP gets it).
struct Robust;

fn robust_config(nodelay: bool) -> Config {
    let config = Config::default();
    if nodelay {
        config.nodelay(true)
    } else {
        config
    }
}

impl Net for Robust {
    const NAME: &'static str = "robust";
    type Stream = RSocket;
    type Listener = RServerSocket;

    fn listen(nodelay: bool) -> io::Result<(RServerSocket, SocketAddr)> {
        let server = RServerSocket::bind_with("127.0.0.1:0", robust_config(nodelay))?;
        let addr = server.local_addr()?;
        Ok((server, addr))
    }

    fn accept(listener: &RServerSocket) -> io::Result<RSocket> {
        listener.accept().map(|(stream, _)| stream)
    }

    fn connect(addr: SocketAddr, nodelay: bool) -> io::Result<RSocket> {
        RSocket::connect_with(addr, robust_config(nodelay))
    }

    fn shutdown_write(stream: &RSocket) -> io::Result<()> {
        stream.shutdown(Shutdown::Write)
    }
}

/// A connected pair: (client, server).
fn pair<N: Net>(nodelay: bool) -> io::Result<(N::Stream, N::Stream)> {
    let (listener, addr) = N::listen(nodelay)?;
    let client = N::connect(addr, nodelay)?;
    let server = N::accept(&listener)?;
    Ok((client, server))
}

// ---------------------------------------------------------------- the benchmarks

fn run<N: Net>(kind: Kind) -> io::Result<Run> {
    match kind {
        Kind::Stream { write, bytes } => stream::<N>(write, bytes),
        Kind::Rr {
            message,
            round_trips,
        } => request_response::<N>(message, round_trips),
        Kind::Crr { transactions } => connect_request_response::<N>(transactions),
    }
}

/// STREAM: `bytes` (rounded down to whole writes) in `write`-byte writes, timed until the
/// receiver has read end of stream.
fn stream<N: Net>(write: usize, bytes: u64) -> io::Result<Run> {
    assert!(write >= 8, "a write carries an 8-byte sequence number");
    let (mut client, mut server) = pair::<N>(false)?;
    let writes = bytes / write as u64;
    let receiver = thread::Builder::new()
        .name("stream-receiver".into())
        .spawn(move || receive_checked(&mut server, write))?;
    let mut message = vec![FILL; write];
    let cpu = cpu_time();
    let started = Instant::now();
    for seq in 0..writes {
        message[..8].copy_from_slice(&seq.to_le_bytes());
        client.write_all(&message)?;
        progress(seq + 1);
    }
    N::shutdown_write(&client)?;
    let (received, ended) = join(receiver)?;
    let run = Run {
        wall: ended - started,
        cpu: cpu_time() - cpu,
        done: writes,
        cut_short: false,
    };
    if received != writes * write as u64 {
        return Err(invalid(format!(
            "{}: the receiver got {received} bytes of {}",
            N::NAME,
            writes * write as u64
        )));
    }
    Ok(run)
}

/// Reads to end of stream, checking a sample of the content; returns the byte count and
/// when end of stream was read.
fn receive_checked(stream: &mut impl Read, write: usize) -> io::Result<(u64, Instant)> {
    let mut buf = vec![0; READ_BUF];
    let mut pos = 0u64;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok((pos, Instant::now())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        check_sample(&buf[..n], pos, write as u64)?;
        pos += n as u64;
    }
}

/// Checks the sequence number of every write whose first 8 bytes lie in `chunk` (stream
/// offset `pos`), and that the chunk's last byte is the filler unless it is part of a
/// sequence number.
fn check_sample(chunk: &[u8], pos: u64, write: u64) -> io::Result<()> {
    let end = pos + chunk.len() as u64;
    let mut start = pos.div_ceil(write) * write;
    while start + 8 <= end {
        let at = (start - pos) as usize;
        let seq = u64::from_le_bytes(chunk[at..at + 8].try_into().expect("8 bytes"));
        if seq != start / write {
            return Err(invalid(format!(
                "the write at offset {start} carries number {seq}, expected {}",
                start / write
            )));
        }
        start += write;
    }
    let last = end - 1;
    if last % write >= 8 && chunk[chunk.len() - 1] != FILL {
        return Err(invalid(format!("byte {last} is not the filler")));
    }
    Ok(())
}

/// RR: round trips per second of a `message`-byte message echoed back.
fn request_response<N: Net>(message: usize, round_trips: u64) -> io::Result<Run> {
    let (mut client, mut server) = pair::<N>(true)?;
    let total = RR_WARMUP + round_trips;
    let echo = thread::Builder::new()
        .name("rr-echo".into())
        .spawn(move || -> io::Result<()> {
            let mut buf = vec![0; message];
            for _ in 0..total {
                server.read_exact(&mut buf)?;
                server.write_all(&buf)?;
            }
            Ok(())
        })?;
    let mut request = vec![FILL; message];
    let mut reply = vec![0; message];
    let mut started = (Instant::now(), cpu_time());
    let mut done = round_trips;
    for i in 0..total {
        if i == RR_WARMUP {
            started = (Instant::now(), cpu_time());
        }
        if i > RR_WARMUP && started.0.elapsed() > SOFT_LIMIT {
            done = i - RR_WARMUP;
            break;
        }
        request[0] = i as u8;
        client.write_all(&request)?;
        client.read_exact(&mut reply)?;
        if reply != request {
            return Err(invalid(format!("round trip {i}: the echo differs")));
        }
        progress((i + 1).saturating_sub(RR_WARMUP));
    }
    let run = Run {
        wall: started.0.elapsed(),
        cpu: cpu_time() - started.1,
        done,
        cut_short: done < round_trips,
    };
    if !run.cut_short {
        // (Cut short, the echo thread waits for the rest: it is left behind.)
        join(echo)?;
    }
    Ok(run)
}

/// CRR: `transactions` times connect, a 64 B request, an 8 KiB reply read to end of
/// stream, close.
fn connect_request_response<N: Net>(transactions: u64) -> io::Result<Run> {
    let (listener, addr) = N::listen(false)?;
    let server =
        thread::Builder::new()
            .name("crr-server".into())
            .spawn(move || -> io::Result<()> {
                let mut request = [0; CRR_REQUEST];
                let mut reply = vec![FILL; CRR_REPLY];
                for _ in 0..transactions {
                    let mut stream = N::accept(&listener)?;
                    stream.read_exact(&mut request)?;
                    reply[..8].copy_from_slice(&request[..8]);
                    stream.write_all(&reply)?;
                    // Dropped here: the server closes first, as a web server would.
                }
                Ok(())
            })?;
    let mut request = [FILL; CRR_REQUEST];
    let mut reply = vec![0; CRR_REPLY + 1];
    let cpu = cpu_time();
    let started = Instant::now();
    let mut done = transactions;
    for i in 0..transactions {
        if started.elapsed() > SOFT_LIMIT {
            done = i;
            break;
        }
        let mut stream = N::connect(addr, false)?;
        request[..8].copy_from_slice(&i.to_le_bytes());
        stream.write_all(&request)?;
        let mut got = 0;
        loop {
            match stream.read(&mut reply[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if got > CRR_REPLY {
                return Err(invalid(format!("transaction {i}: reply too long")));
            }
        }
        if got != CRR_REPLY || reply[..8] != request[..8] || reply[got - 1] != FILL {
            return Err(invalid(format!(
                "transaction {i}: a wrong reply ({got} bytes)"
            )));
        }
        progress(i + 1);
    }
    let run = Run {
        wall: started.elapsed(),
        cpu: cpu_time() - cpu,
        done,
        cut_short: done < transactions,
    };
    if !run.cut_short {
        // (Cut short, the server thread waits in accept for the rest: it is left behind.)
        join(server)?;
    }
    Ok(run)
}

// ---------------------------------------------------------------- the harness

/// The per-round results of one benchmark.
struct Rounds {
    tcp: Vec<f64>,
    robust: Vec<f64>,
    ratio: Vec<f64>,
    cpu_ratio: Vec<f64>,
    /// Runs cut short at [`SOFT_LIMIT`].
    cut_short: usize,
}

fn bench(bench: &Bench, kind: Kind, rounds: usize) -> io::Result<Rounds> {
    let mut out = Rounds {
        tcp: Vec::new(),
        robust: Vec::new(),
        ratio: Vec::new(),
        cpu_ratio: Vec::new(),
        cut_short: 0,
    };
    for round in 0..rounds {
        let robust_first = round % 2 == 1;
        let (mut tcp, mut robust) = (None, None);
        for robust_turn in [robust_first, !robust_first] {
            thread::sleep(SETTLE);
            let side = if robust_turn { Robust::NAME } else { Tcp::NAME };
            watch(
                format!("{} round {} ({side})", bench.name, round + 1),
                kind.work(),
            );
            let result = if robust_turn {
                run::<Robust>(kind)
            } else {
                run::<Tcp>(kind)
            };
            unwatch();
            let result = result.map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("{} round {} ({side}): {e}", bench.name, round + 1),
                )
            })?;
            if robust_turn {
                robust = Some(result);
            } else {
                tcp = Some(result);
            }
        }
        let (tcp, robust) = (tcp.expect("ran"), robust.expect("ran"));
        let (tcp_figure, robust_figure) = (kind.figure(&tcp), kind.figure(&robust));
        // Per unit of work, since a run may be cut short. A rate ratio robust / TCP is
        // TCP's time over robust's; a time ratio the reverse.
        let time_ratio = robust.wall_per_unit() / tcp.wall_per_unit();
        let ratio = if kind.is_time() {
            time_ratio
        } else {
            1.0 / time_ratio
        };
        let cpu_ratio = robust.cpu_per_unit() / tcp.cpu_per_unit().max(1e-12);
        let mut notes = String::new();
        for (name, run) in [(Tcp::NAME, &tcp), (Robust::NAME, &robust)] {
            if run.cut_short {
                let _ = write!(
                    notes,
                    "; {name} cut short at {SOFT_LIMIT:?}: {} of {} done",
                    run.done,
                    kind.work()
                );
                out.cut_short += 1;
            }
        }
        println!(
            "  round {:>2} ({} first): TCP {:>9} {unit}  robust {:>9} {unit}  ratio {ratio:>6.2}  \
             cpu {cpu_ratio:>6.2}{notes}",
            round + 1,
            if robust_first { "robust" } else { "TCP" },
            figure(tcp_figure),
            figure(robust_figure),
            unit = kind.unit(),
        );
        out.ratio.push(ratio);
        out.cpu_ratio.push(cpu_ratio);
        out.tcp.push(tcp_figure);
        out.robust.push(robust_figure);
    }
    Ok(out)
}

/// One line of the final tables.
struct Summary {
    name: &'static str,
    kind: Kind,
    result: Result<Rounds, String>,
}

fn main() {
    let options = Options::parse();
    let selected: Vec<Bench> = benches()
        .into_iter()
        .filter(|b| {
            options.filters.is_empty()
                || options.filters.iter().any(|f| b.name.contains(f.as_str()))
        })
        .collect();
    if selected.is_empty() {
        eprintln!("no benchmark matches {:?}", options.filters);
        std::process::exit(2);
    }
    start_watchdog();
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
        let result = bench(b, kind, options.rounds).map_err(|e| e.to_string());
        match &result {
            Ok(rounds) => {
                println!("  ratios sorted:   {}", sorted_list(&rounds.ratio));
            }
            Err(e) => println!("  FAILED: {e}"),
        }
        failed |= result.is_err();
        let summary = Summary {
            name: b.name,
            kind,
            result,
        };
        FINISHED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(rows(&summary));
    }
    print_tables();
    if failed {
        std::process::exit(1);
    }
}

/// The two table rows of a finished benchmark: plain text and markdown.
fn rows(s: &Summary) -> (String, String) {
    match &s.result {
        Ok(r) => {
            let note = match r.cut_short {
                0 => String::new(),
                n => format!(
                    " ({n} of {} runs cut short at {SOFT_LIMIT:?})",
                    2 * r.ratio.len()
                ),
            };
            rows_of(s, r, &note)
        }
        Err(e) => (
            format!("{:<11} FAILED: {e}", s.name),
            format!("| {} | {} | failed: {e} | | | | | |", s.name, s.kind.unit()),
        ),
    }
}

fn rows_of(s: &Summary, r: &Rounds, note: &str) -> (String, String) {
    (
        format!(
            "{:<11} {:>6} {:>11} {:>11} {:>7.2} {:>13} {:>13} {:>6.2}{note}",
            s.name,
            s.kind.unit(),
            figure(median(&r.tcp)),
            figure(median(&r.robust)),
            median(&r.ratio),
            format!(
                "{:.2}-{:.2}",
                quantile(&r.ratio, 0.25),
                quantile(&r.ratio, 0.75)
            ),
            format!(
                "{:.2}-{:.2}",
                quantile(&r.ratio, 0.0),
                quantile(&r.ratio, 1.0)
            ),
            median(&r.cpu_ratio),
        ),
        format!(
            "| {}{note} | {} | {} | {} | {:.2}{} | {:.2}–{:.2} | {:.2}–{:.2} | {:.2} |",
            s.name,
            s.kind.unit(),
            figure(median(&r.tcp)),
            figure(median(&r.robust)),
            median(&r.ratio),
            if s.kind.is_time() { " (time)" } else { "" },
            quantile(&r.ratio, 0.25),
            quantile(&r.ratio, 0.75),
            quantile(&r.ratio, 0.0),
            quantile(&r.ratio, 1.0),
            median(&r.cpu_ratio),
        ),
    )
}

/// Rows of the benchmarks finished so far, for the final tables (and the watchdog's).
static FINISHED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn print_tables() {
    let finished = FINISHED.lock().unwrap_or_else(|e| e.into_inner());
    println!();
    println!(
        "{:<11} {:>6} {:>11} {:>11} {:>7} {:>13} {:>13} {:>6}",
        "bench", "unit", "TCP", "robust", "ratio", "p25-p75", "min-max", "cpu"
    );
    for (text, _) in finished.iter() {
        println!("{text}");
    }
    println!();
    println!(
        "| bench | unit | TCP (median) | robust (median) | ratio robust/TCP (median) | \
         ratio p25–p75 | ratio min–max | CPU ratio robust/TCP (median) |"
    );
    println!("|---|---|--:|--:|--:|--:|--:|--:|");
    for (_, markdown) in finished.iter() {
        println!("{markdown}");
    }
}

fn figure(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn sorted_list(values: &[f64]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut out = String::new();
    for v in &sorted {
        let _ = write!(out, "{v:.2} ");
    }
    out.trim_end().to_string()
}

fn median(values: &[f64]) -> f64 {
    quantile(values, 0.5)
}

/// The `q` quantile by linear interpolation between the sorted values.
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo as f64)
}

struct Options {
    quick: bool,
    rounds: usize,
    filters: Vec<String>,
}

impl Options {
    fn parse() -> Options {
        let mut options = Options {
            quick: false,
            rounds: 0,
            filters: Vec::new(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                // `cargo bench` passes `--bench` to every bench binary.
                "--bench" => {}
                "--quick" => options.quick = true,
                "--rounds" => {
                    options.rounds = args
                        .next()
                        .and_then(|n| n.parse().ok())
                        .filter(|&n| n > 0)
                        .unwrap_or_else(|| usage("--rounds needs a positive number"));
                }
                "-h" | "--help" => usage(""),
                flag if flag.starts_with('-') => usage(&format!("unknown option {flag}")),
                filter => options.filters.push(filter.to_string()),
            }
        }
        if options.rounds == 0 {
            options.rounds = if options.quick { QUICK_ROUNDS } else { ROUNDS };
        }
        options
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

// ---------------------------------------------------------------- helpers

/// The process's CPU time so far, user plus system, all threads.
fn cpu_time() -> Duration {
    // SAFETY: `rusage` is plain old data, for which all zero bytes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only into the struct it is given, which outlives the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", io::Error::last_os_error());
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn join<T>(handle: thread::JoinHandle<io::Result<T>>) -> io::Result<T> {
    handle
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("a benchmark thread panicked")))
}

/// What runs now, since when, and how much work it has (for the watchdog).
static RUNNING: Mutex<Option<(String, Instant, u64)>> = Mutex::new(None);
/// How much of its work the current run has done: writes, round trips or transactions.
static PROGRESS: AtomicU64 = AtomicU64::new(0);

fn watch(what: String, work: u64) {
    PROGRESS.store(0, Ordering::Relaxed);
    *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = Some((what, Instant::now(), work));
}

fn unwatch() {
    *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

fn progress(done: u64) {
    PROGRESS.store(done, Ordering::Relaxed);
}

/// Aborts the process if a run takes longer than [`RUN_LIMIT`]: a hang in the library (or
/// in this harness) must end the bench with a message, not stall it forever.
fn start_watchdog() {
    thread::Builder::new()
        .name("watchdog".into())
        .spawn(|| loop {
            thread::sleep(Duration::from_millis(500));
            let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((what, since, work)) = &*running {
                if since.elapsed() > RUN_LIMIT {
                    let done = PROGRESS.load(Ordering::Relaxed);
                    println!(
                        "\nwatchdog: {what} has run for more than {RUN_LIMIT:?} and done {done} of \
                         {work} (writes, round trips or transactions): it hangs or is \
                         pathologically slow. Aborting; the benchmarks finished so far:"
                    );
                    print_tables();
                    std::process::abort();
                }
            }
        })
        .expect("spawn the watchdog");
}
