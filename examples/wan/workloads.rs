//! The client's side of each benchmark, over `TcpStream` and `RSocket` alike (`Net`), in
//! the client's namespace; the server's side is `server.rs`.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use robust_tcp_testkit::paired::report::median;
use robust_tcp_testkit::paired::watchdog::progress;
use robust_tcp_testkit::paired::{
    cpu_time, crr_transaction, invalid, receive_checked, send_numbered, Net, Sample, FILL,
};

use super::path::Path;
use super::{Kind, WRITE};

/// Round trips before RR's clock starts: the first ones also open TCP's window.
const RR_WARMUP: u64 = 5;

/// One run of `kind` with `N`, against the server's listener for it at `addr`.
pub(super) fn run<N: Net>(kind: Kind, addr: SocketAddr, path: &Path) -> io::Result<Sample> {
    let cpu = (cpu_time(), path.cpu_time());
    let figures = match kind {
        Kind::Crr { transactions } => connect_request_response::<N>(addr, transactions)?,
        Kind::Rr {
            message,
            round_trips,
        } => vec![request_response::<N>(addr, message, round_trips)?],
        Kind::Up { bytes } => vec![upload::<N>(addr, bytes)?],
        Kind::Down { bytes } => vec![download::<N>(addr, bytes, |_| {})?],
        Kind::Blackhole { outage, bytes } => vec![blackhole::<N>(addr, bytes, outage, path)?],
    };
    // The line's threads share the process: their CPU time is the path's, not the side's.
    let spent = (cpu_time() - cpu.0).saturating_sub(path.cpu_time() - cpu.1);
    Ok(Sample {
        figures,
        cpu_per_unit: spent.as_secs_f64() / kind.work().max(1) as f64,
        cut_short: None,
    })
}

/// Median milliseconds per transaction until end of stream and until the reply's last
/// byte.
fn connect_request_response<N: Net>(addr: SocketAddr, transactions: u64) -> io::Result<Vec<f64>> {
    let (mut whole, mut last_byte) = (Vec::new(), Vec::new());
    for i in 0..transactions {
        let started = Instant::now();
        let last = crr_transaction::<N>(addr, i)?;
        whole.push(millis(started.elapsed()));
        last_byte.push(millis(last - started));
        progress(i + 1);
    }
    Ok(vec![median(&whole), median(&last_byte)])
}

/// Milliseconds per round trip of a `message`-byte message echoed, every reply checked.
fn request_response<N: Net>(addr: SocketAddr, message: usize, round_trips: u64) -> io::Result<f64> {
    let mut stream = N::connect(addr, true)?;
    let mut request = vec![FILL; message];
    let mut reply = vec![0; message];
    let mut started = Instant::now();
    for i in 0..RR_WARMUP + round_trips {
        if i == RR_WARMUP {
            started = Instant::now();
        }
        request[..8].copy_from_slice(&i.to_le_bytes());
        stream.write_all(&request)?;
        stream.read_exact(&mut reply)?;
        if reply != request {
            return Err(invalid(format!("round trip {i}: the echo differs")));
        }
        progress((i + 1).saturating_sub(RR_WARMUP));
    }
    Ok(millis(started.elapsed()) / round_trips.max(1) as f64)
}

/// Mbit/s of `bytes` sent to the server, until it has said it read them all (one one-way
/// delay after its last byte arrived).
fn upload<N: Net>(addr: SocketAddr, bytes: u64) -> io::Result<f64> {
    let mut stream = N::connect(addr, false)?;
    let writes = bytes / WRITE as u64;
    let started = Instant::now();
    send_numbered(&mut stream, WRITE, writes, progress)?;
    N::shutdown_write(&stream)?;
    let mut count = [0; 8];
    stream.read_exact(&mut count)?;
    let elapsed = started.elapsed();
    expect_bytes(u64::from_le_bytes(count), writes)?;
    Ok(megabits_per_second(writes, elapsed))
}

/// Mbit/s of `bytes` from the server, from the request (one one-way delay before its
/// first byte leaves) until end of stream; `on_read` sees the count after each read.
fn download<N: Net>(addr: SocketAddr, bytes: u64, mut on_read: impl FnMut(u64)) -> io::Result<f64> {
    let mut stream = N::connect(addr, false)?;
    let writes = bytes / WRITE as u64;
    let started = Instant::now();
    stream.write_all(&writes.to_le_bytes())?;
    let received = receive_checked(&mut stream, WRITE, |n| {
        progress(n / WRITE as u64);
        on_read(n);
    })?;
    let elapsed = started.elapsed();
    expect_bytes(received, writes)?;
    Ok(megabits_per_second(writes, elapsed))
}

/// Seconds from the end of an `outage` (every packet dropped, both ways) until the next
/// byte reaches the client, during a download of `bytes` that the outage starts a quarter
/// of the way through.
fn blackhole<N: Net>(
    addr: SocketAddr,
    bytes: u64,
    outage: Duration,
    path: &Path,
) -> io::Result<f64> {
    // When the path came back, and how long after it the first byte came.
    let restored: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut first_after = None;
    let mut started_outage = false;
    thread::scope(|scope| -> io::Result<()> {
        download::<N>(addr, bytes, |n| {
            let now = Instant::now();
            if !started_outage && n >= bytes / 4 {
                started_outage = true;
                path.set_blackhole(true);
                let restored = restored.clone();
                scope.spawn(move || {
                    // The outage's length, not a synchronisation.
                    thread::sleep(outage);
                    path.set_blackhole(false);
                    *restored.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                });
            }
            if first_after.is_none() {
                if let Some(at) = *restored.lock().unwrap_or_else(|e| e.into_inner()) {
                    first_after = Some(now.saturating_duration_since(at));
                }
            }
        })?;
        Ok(())
    })?;
    first_after
        .map(|d| d.as_secs_f64())
        .ok_or_else(|| io::Error::other("the stream ended before the path came back"))
}

fn expect_bytes(received: u64, writes: u64) -> io::Result<()> {
    let sent = writes * WRITE as u64;
    if received != sent {
        return Err(invalid(format!("{received} bytes arrived of {sent}")));
    }
    Ok(())
}

fn megabits_per_second(writes: u64, elapsed: Duration) -> f64 {
    (writes * WRITE as u64 * 8) as f64 / elapsed.as_secs_f64() / 1e6
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
