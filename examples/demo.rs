//! A server, a client and a proxy between them that keeps cutting the TCP connection.
//! The client streams data to an echo server and checks every byte that comes back.
//!
//! Run with `cargo run --release --example demo`. Set `ROBUST_TCP_SEED` to replay the
//! proxy's cuts; pass a size in MiB as the first argument to move more or less.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use robust_tcp::{RServerSocket, RSocket};
use robust_tcp_testkit::payload::Payload;
use robust_tcp_testkit::proxy::{CutPlan, FaultProxy};

const MIB: u64 = 1 << 20;
/// Cuts the proxy makes at most; afterwards it forwards faithfully.
const MAX_CUTS: usize = 200;
/// Each TCP connection is cut after a random number of bytes up to this (both directions).
const MAX_BYTES_PER_CONNECTION: u64 = 4 * MIB;
const CHUNK: usize = 64 * 1024;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> io::Result<()> {
    let mib = match std::env::args().nth(1) {
        Some(arg) => arg.parse::<u64>().map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "the argument is a size in MiB")
        })?,
        None => 256,
    };
    let total = mib * MIB;

    let server = RServerSocket::bind("127.0.0.1:0")?;
    let plan = CutPlan::random(MAX_CUTS, MAX_BYTES_PER_CONNECTION);
    let proxy = FaultProxy::start(server.local_addr()?, plan)?;
    println!("robust-tcp demo");
    println!(
        "  echo server on {}, client connects through a proxy on {}",
        server.local_addr()?,
        proxy.local_addr()
    );
    println!(
        "  the proxy cuts every TCP connection after a random 0..{} MiB (up to {MAX_CUTS} cuts, seed {})",
        MAX_BYTES_PER_CONNECTION / MIB,
        proxy.seed()
    );
    println!("  sending {mib} MiB and checking every byte of the echo\n");

    let echo = thread::spawn(move || -> io::Result<()> {
        let (sock, peer) = server.accept()?;
        println!(
            "  server: accepted session {} from {peer}",
            sock.session_id()
        );
        // Echo until the client's end of stream, then end ours.
        io::copy(&mut &sock, &mut &sock)?;
        sock.shutdown(Shutdown::Write)
    });

    let started = Instant::now();
    let client = RSocket::connect(proxy.local_addr())?;
    let payload = Payload::new(proxy.seed(), total);
    let writer = {
        let sock = client.try_clone()?;
        thread::spawn(move || -> io::Result<()> {
            let mut buf = vec![0; CHUNK];
            let mut sent = 0;
            while sent < total {
                let n = CHUNK.min((total - sent) as usize);
                payload.fill(sent, &mut buf[..n]);
                (&sock).write_all(&buf[..n])?;
                sent += n as u64;
            }
            sock.shutdown(Shutdown::Write)
        })
    };

    let received = check_echo(&client, &payload, &proxy, started)?;
    writer.join().expect("the writer thread panicked")?;
    echo.join().expect("the echo thread panicked")?;

    let status = client.status();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "\ndone: {} MiB sent and {} MiB echoed back through {} cuts ({} reconnections) in {secs:.1} s",
        total / MIB,
        received / MIB,
        proxy.cuts(),
        status.reconnections
    );
    println!("every byte arrived exactly once and in order.");
    Ok(())
}

/// Reads the echo to its end, compares it with what was sent, and shows progress.
fn check_echo(
    client: &RSocket,
    payload: &Payload,
    proxy: &FaultProxy,
    started: Instant,
) -> io::Result<u64> {
    let mut got = vec![0; CHUNK];
    let mut want = vec![0; CHUNK];
    let mut received = 0u64;
    let mut next_report = Instant::now();
    loop {
        let n = (&*client).read(&mut got)?;
        if n == 0 {
            break;
        }
        if received + n as u64 > payload.len() {
            return Err(mismatch("more bytes came back than were sent"));
        }
        payload.fill(received, &mut want[..n]);
        if let Some(i) = (0..n).find(|&i| got[i] != want[i]) {
            return Err(mismatch(&format!("byte {} differs", received + i as u64)));
        }
        received += n as u64;
        if Instant::now() >= next_report {
            next_report += Duration::from_millis(500);
            let status = client.status();
            println!(
                "  {:>6.1} s  {:>6.1} MiB echoed back  {:>4} cuts  {:>4} reconnections",
                started.elapsed().as_secs_f64(),
                received as f64 / MIB as f64,
                proxy.cuts(),
                status.reconnections
            );
        }
    }
    if received != payload.len() {
        return Err(mismatch(&format!(
            "the echo ended after {received} of {} bytes",
            payload.len()
        )));
    }
    Ok(received)
}

fn mismatch(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("data mismatch: {what}"))
}
