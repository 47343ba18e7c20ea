//! Paired rounds of TCP against robust-tcp, shared by the loopback bench
//! (`benches/loopback/`) and the WAN example (`examples/wan/`): the two implementations
//! behind one trait ([`Net`]), the stream payload and its checks, the rounds that run both
//! back to back and yield per-round ratios ([`paired_rounds`]), the tables
//! ([`report`]) and the watchdog ([`watchdog`]).
//!
//! Why pairs: the machine's state (other load, frequency scaling, caches) drifts over
//! seconds; running TCP and robust-tcp back to back in each round, alternating which goes
//! first, cancels most of that drift out of the ratio, and the spread of the per-round
//! ratios shows how much is left.

pub mod report;
pub mod watchdog;

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use robust_tcp::{Config, RServerSocket, RSocket};

// ---------------------------------------------------------------- the two implementations

/// What a benchmark needs of a stream implementation.
pub trait Net {
    /// The name in the round lines and tables.
    const NAME: &'static str;
    /// A connected stream.
    type Stream: Read + Write + Send + 'static;
    /// A listener.
    type Listener: Send + 'static;

    /// A listener on `addr`, whose accepted streams have Nagle off if `nodelay`.
    fn listen(addr: SocketAddr, nodelay: bool) -> io::Result<(Self::Listener, SocketAddr)>;
    /// The next connection.
    fn accept(listener: &Self::Listener) -> io::Result<Self::Stream>;
    /// A connection to `addr`, with Nagle off if `nodelay`.
    fn connect(addr: SocketAddr, nodelay: bool) -> io::Result<Self::Stream>;
    /// Turns Nagle off or on.
    fn set_nodelay(stream: &Self::Stream, nodelay: bool) -> io::Result<()>;
    /// Ends the write side: the peer reads end of stream.
    fn shutdown_write(stream: &Self::Stream) -> io::Result<()>;
}

/// `std::net` with its defaults.
pub struct Tcp;

impl Net for Tcp {
    const NAME: &'static str = "TCP";
    type Stream = TcpStream;
    /// The listener and whether accepted streams get `set_nodelay(true)`.
    type Listener = (TcpListener, bool);

    fn listen(addr: SocketAddr, nodelay: bool) -> io::Result<(Self::Listener, SocketAddr)> {
        let listener = TcpListener::bind(addr)?;
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

    fn set_nodelay(stream: &TcpStream, nodelay: bool) -> io::Result<()> {
        stream.set_nodelay(nodelay)
    }

    fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
        stream.shutdown(Shutdown::Write)
    }
}

/// robust-tcp with `Config::default()` (plus `nodelay(true)` where TCP gets it).
pub struct Robust;

/// Set to `0` to measure the lightweight opening (`Config::key_agreement(false)`) instead
/// of the default key agreement.
pub const KEY_AGREEMENT_ENV: &str = "LOOPBACK_KEY_AGREEMENT";

fn robust_config(nodelay: bool) -> Config {
    let agreement = std::env::var(KEY_AGREEMENT_ENV).map_or(true, |v| v != "0");
    Config::default().nodelay(nodelay).key_agreement(agreement)
}

impl Net for Robust {
    const NAME: &'static str = "robust";
    type Stream = RSocket;
    type Listener = RServerSocket;

    fn listen(addr: SocketAddr, nodelay: bool) -> io::Result<(RServerSocket, SocketAddr)> {
        let server = RServerSocket::bind_with(addr, robust_config(nodelay))?;
        let addr = server.local_addr()?;
        Ok((server, addr))
    }

    fn accept(listener: &RServerSocket) -> io::Result<RSocket> {
        listener.accept().map(|(stream, _)| stream)
    }

    fn connect(addr: SocketAddr, nodelay: bool) -> io::Result<RSocket> {
        RSocket::connect_with(addr, robust_config(nodelay))
    }

    fn set_nodelay(stream: &RSocket, nodelay: bool) -> io::Result<()> {
        stream.set_nodelay(nodelay)
    }

    fn shutdown_write(stream: &RSocket) -> io::Result<()> {
        stream.shutdown(Shutdown::Write)
    }
}

// ---------------------------------------------------------------- the stream payload

/// Every byte of a stream write after its 8-byte sequence number.
pub const FILL: u8 = 0x5a;

/// The receiver's buffer.
const READ_BUF: usize = 256 * 1024;

/// Writes `writes` writes of `write` bytes, each starting with its sequence number (then
/// [`FILL`]), calling `progress` with the count written after each.
///
/// # Errors
///
/// The first write that fails.
pub fn send_numbered(
    stream: &mut impl Write,
    write: usize,
    writes: u64,
    mut progress: impl FnMut(u64),
) -> io::Result<()> {
    assert!(write >= 8, "a write carries an 8-byte sequence number");
    let mut message = vec![FILL; write];
    for seq in 0..writes {
        message[..8].copy_from_slice(&seq.to_le_bytes());
        stream.write_all(&message)?;
        progress(seq + 1);
    }
    Ok(())
}

/// Reads to end of stream what [`send_numbered`] wrote, checking a sample of the content;
/// calls `on_read` with the count read so far after each read, and returns the count.
///
/// # Errors
///
/// A read that fails, or content that is not what [`send_numbered`] writes.
pub fn receive_checked(
    stream: &mut impl Read,
    write: usize,
    mut on_read: impl FnMut(u64),
) -> io::Result<u64> {
    let mut buf = vec![0; READ_BUF];
    let mut pos = 0u64;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(pos),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        check_sample(&buf[..n], pos, write as u64)?;
        pos += n as u64;
        on_read(pos);
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

// ---------------------------------------------------------------- CRR

/// A CRR request: its sequence number, then [`FILL`].
pub const CRR_REQUEST: usize = 64;
/// A CRR reply: the request's sequence number, then [`FILL`].
pub const CRR_REPLY: usize = 8 * 1024;

/// The server's side of one CRR transaction: reads the whole request, writes the reply
/// and closes first, as a web server would.
///
/// # Errors
///
/// A read or write that fails.
pub fn crr_serve(mut stream: impl Read + Write) -> io::Result<()> {
    let mut request = [0; CRR_REQUEST];
    let mut reply = vec![FILL; CRR_REPLY];
    stream.read_exact(&mut request)?;
    reply[..8].copy_from_slice(&request[..8]);
    stream.write_all(&reply)
}

/// One CRR transaction, number `seq`: connects to `addr`, writes the request, reads the
/// reply to end of stream, checks it and closes. Returns when the reply's last byte was
/// read (end of stream comes after it, and the return after that).
///
/// # Errors
///
/// A connect, read or write that fails, or a wrong reply.
pub fn crr_transaction<N: Net>(addr: SocketAddr, seq: u64) -> io::Result<Instant> {
    let mut request = [FILL; CRR_REQUEST];
    let mut reply = vec![0; CRR_REPLY + 1];
    let mut stream = N::connect(addr, false)?;
    request[..8].copy_from_slice(&seq.to_le_bytes());
    stream.write_all(&request)?;
    let mut got = 0;
    let mut last_byte = Instant::now();
    loop {
        match stream.read(&mut reply[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if got == CRR_REPLY {
            last_byte = Instant::now();
        }
        if got > CRR_REPLY {
            return Err(invalid(format!("transaction {seq}: reply too long")));
        }
    }
    if got != CRR_REPLY || reply[..8] != request[..8] || reply[got - 1] != FILL {
        return Err(invalid(format!(
            "transaction {seq}: a wrong reply ({got} bytes)"
        )));
    }
    Ok(last_byte)
}

/// An `InvalidData` error: what was read is not what was sent.
pub fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// A benchmark thread's result; a panic in it is an error.
pub fn join<T>(handle: thread::JoinHandle<io::Result<T>>) -> io::Result<T> {
    handle
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("a benchmark thread panicked")))
}

/// The process's CPU time so far, user plus system, all threads.
pub fn cpu_time() -> Duration {
    // SAFETY: `rusage` is plain old data, for which all zero bytes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only into the struct it is given, which outlives the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", io::Error::last_os_error());
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

// ---------------------------------------------------------------- the rounds

/// One figure a benchmark reports (most report one; a run may yield several, each its own
/// row in the tables).
#[derive(Clone, Debug)]
pub struct Row {
    /// The row's name in the tables.
    pub name: String,
    /// The figure's unit.
    pub unit: &'static str,
    /// Whether the figure is a time (lower is better) rather than a rate.
    pub is_time: bool,
}

/// One side's measurement in one round.
pub struct Sample {
    /// One figure per [`Row`] of the benchmark.
    pub figures: Vec<f64>,
    /// Process CPU seconds per unit of work.
    pub cpu_per_unit: f64,
    /// Why the run does not count all its work (cut short at a time limit), if so.
    pub cut_short: Option<String>,
}

/// The per-round results of one row.
#[derive(Default)]
pub struct Series {
    /// TCP's figures.
    pub tcp: Vec<f64>,
    /// robust-tcp's figures.
    pub robust: Vec<f64>,
    /// robust / TCP, per round.
    pub ratio: Vec<f64>,
}

/// The per-round results of one benchmark.
pub struct Rounds {
    /// One per [`Row`].
    pub series: Vec<Series>,
    /// robust / TCP CPU time for the same work, per round.
    pub cpu_ratio: Vec<f64>,
    /// Runs cut short.
    pub cut_short: usize,
}

/// Which implementation a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `std::net` ([`Tcp`]).
    Tcp,
    /// robust-tcp ([`Robust`]).
    Robust,
}

impl Side {
    /// The name in the round lines.
    pub fn name(self) -> &'static str {
        match self {
            Side::Tcp => Tcp::NAME,
            Side::Robust => Robust::NAME,
        }
    }
}

/// Runs `rounds` rounds of `name`; each runs both sides back to back (alternating which
/// goes first, after a pause of `settle` so that what the previous run left behind is
/// mostly done) under the watchdog, and prints its line. The ratio of a row is robust /
/// TCP of its figure: for a rate higher is better, for a time lower.
///
/// # Errors
///
/// The first run that fails, named by benchmark, round and side.
pub fn paired_rounds(
    name: &str,
    rows: &[Row],
    work: u64,
    rounds: usize,
    settle: Duration,
    mut run: impl FnMut(Side) -> io::Result<Sample>,
) -> io::Result<Rounds> {
    let mut out = Rounds {
        series: rows.iter().map(|_| Series::default()).collect(),
        cpu_ratio: Vec::new(),
        cut_short: 0,
    };
    for round in 0..rounds {
        let robust_first = round % 2 == 1;
        let (mut tcp, mut robust) = (None, None);
        let order = if robust_first {
            [Side::Robust, Side::Tcp]
        } else {
            [Side::Tcp, Side::Robust]
        };
        for side in order {
            thread::sleep(settle);
            let what = format!("{name} round {} ({})", round + 1, side.name());
            watchdog::watch(what.clone(), work);
            let result = run(side);
            watchdog::unwatch();
            let sample = result.map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))?;
            if sample.figures.len() != rows.len() {
                return Err(io::Error::other(format!(
                    "{what}: {} figures for {} rows",
                    sample.figures.len(),
                    rows.len()
                )));
            }
            match side {
                Side::Tcp => tcp = Some(sample),
                Side::Robust => robust = Some(sample),
            }
        }
        let (tcp, robust) = (tcp.expect("ran"), robust.expect("ran"));
        let cpu_ratio = robust.cpu_per_unit / tcp.cpu_per_unit.max(1e-12);
        let mut line = format!(
            "  round {:>2} ({} first):",
            round + 1,
            if robust_first { "robust" } else { "TCP" }
        );
        for ((row, series), (t, r)) in rows
            .iter()
            .zip(&mut out.series)
            .zip(tcp.figures.iter().zip(&robust.figures))
        {
            let ratio = r / t;
            let _ = write!(
                line,
                "{}TCP {:>9} {unit}  robust {:>9} {unit}  ratio {ratio:>6.2}",
                if rows.len() > 1 {
                    format!(" [{}] ", row.name)
                } else {
                    " ".into()
                },
                report::figure(*t),
                report::figure(*r),
                unit = row.unit,
            );
            series.tcp.push(*t);
            series.robust.push(*r);
            series.ratio.push(ratio);
        }
        let _ = write!(line, "  cpu {cpu_ratio:>6.2}");
        for (side, sample) in [(Side::Tcp, &tcp), (Side::Robust, &robust)] {
            if let Some(why) = &sample.cut_short {
                let _ = write!(line, "; {} {why}", side.name());
                out.cut_short += 1;
            }
        }
        println!("{line}");
        out.cpu_ratio.push(cpu_ratio);
    }
    Ok(out)
}

// ---------------------------------------------------------------- the command line

/// The command line of a paired bench: `[--quick] [--rounds N] [--verbose] [FILTER...]`.
pub struct Options {
    /// Fewer rounds, less work per run.
    pub quick: bool,
    /// Details per run, where the bench has them.
    pub verbose: bool,
    /// Rounds per benchmark.
    pub rounds: usize,
    /// Only benchmarks whose names contain one of these (all if none).
    pub filters: Vec<String>,
}

impl Options {
    /// Parses `args` (without the program's name); `rounds` and `quick_rounds` are the
    /// defaults; `usage` prints the bench's usage with a problem and exits.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        rounds: usize,
        quick_rounds: usize,
        usage: fn(&str) -> !,
    ) -> Options {
        let mut options = Options {
            quick: false,
            verbose: false,
            rounds: 0,
            filters: Vec::new(),
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                // `cargo bench` passes `--bench` to every bench binary.
                "--bench" => {}
                "--quick" => options.quick = true,
                "--verbose" => options.verbose = true,
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
            options.rounds = if options.quick { quick_rounds } else { rounds };
        }
        options
    }

    /// Whether the benchmark `name` is selected.
    pub fn selects(&self, name: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }
}
