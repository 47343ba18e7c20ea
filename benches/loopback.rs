//! Throughput and request/response latency of `RSocket` against `std::net::TcpStream`, on
//! loopback, in the same run (the paper's TCP_STREAM and TCP_RR, section 5).
//!
//! `cargo bench` prints each figure for both and the ratio robust / std. Loopback has no
//! wire to wait on, so the session layer's own costs (the copy into the send buffer, the
//! UDP acknowledgements, the locks) weigh far more here than on a real network.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::Instant;

use robust_tcp::{Config, RServerSocket, RSocket};

const STREAM_BYTES: u64 = 512 << 20;
const RR_ROUNDS: u32 = 20_000;
const REPEATS: usize = 3;

/// A connected pair of some stream type: (client, server).
trait Pair: Sized + Send + 'static {
    fn pair(config: &Config) -> io::Result<(Self, Self)>;
    fn finish_writing(&self) -> io::Result<()>;
}

impl Pair for TcpStream {
    fn pair(config: &Config) -> io::Result<(Self, Self)> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let client = TcpStream::connect(listener.local_addr()?)?;
        let (server, _) = listener.accept()?;
        client.set_nodelay(config.nodelay_value())?;
        server.set_nodelay(config.nodelay_value())?;
        Ok((client, server))
    }
    fn finish_writing(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl Pair for RSocket {
    fn pair(config: &Config) -> io::Result<(Self, Self)> {
        let server = RServerSocket::bind_with("127.0.0.1:0", config.clone())?;
        let client = RSocket::connect_with(server.local_addr()?, config.clone())?;
        let (accepted, _) = server.accept()?;
        Ok((client, accepted))
    }
    fn finish_writing(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// MiB/s moving `STREAM_BYTES` one way in `message`-byte writes.
fn stream<S: Pair + Read + Write>(config: &Config, message: usize) -> io::Result<f64> {
    let (mut client, mut server) = S::pair(config)?;
    let reader = thread::spawn(move || -> io::Result<u64> {
        let mut buf = vec![0; 256 * 1024];
        let mut total = 0;
        loop {
            match server.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    });
    let data = vec![0x5a; message];
    let started = Instant::now();
    let mut sent = 0;
    while sent < STREAM_BYTES {
        client.write_all(&data)?;
        sent += message as u64;
    }
    client.finish_writing()?;
    let received = reader.join().expect("reader panicked")?;
    assert_eq!(received, sent);
    Ok(sent as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64())
}

/// Round trips per second of a `message`-byte request echoed back.
fn request_response<S: Pair + Read + Write>(config: &Config, message: usize) -> io::Result<f64> {
    let (mut client, mut server) = S::pair(config)?;
    let echo = thread::spawn(move || -> io::Result<()> {
        let mut buf = vec![0; message];
        for _ in 0..RR_ROUNDS {
            server.read_exact(&mut buf)?;
            server.write_all(&buf)?;
        }
        Ok(())
    });
    let mut buf = vec![1; message];
    let started = Instant::now();
    for _ in 0..RR_ROUNDS {
        client.write_all(&buf)?;
        client.read_exact(&mut buf)?;
    }
    let elapsed = started.elapsed();
    echo.join().expect("echo panicked")?;
    Ok(f64::from(RR_ROUNDS) / elapsed.as_secs_f64())
}

/// The best of `REPEATS` runs (the least disturbed by the rest of the machine).
fn best(mut run: impl FnMut() -> io::Result<f64>) -> io::Result<f64> {
    let mut best = 0f64;
    for _ in 0..REPEATS {
        best = best.max(run()?);
    }
    Ok(best)
}

fn report(name: &str, unit: &str, std: f64, robust: f64) {
    println!(
        "{name:<34} std {std:>10.1} {unit:<6} robust {robust:>10.1} {unit:<6} ratio {:.2}",
        robust / std
    );
}

fn main() -> io::Result<()> {
    let default = Config::default();
    let nodelay = Config::default().nodelay(true);
    let big = Config::default()
        .send_buffer_size(1 << 20)
        .ack_threshold(256 << 10);
    println!("loopback, best of {REPEATS}; ratio = robust / std (higher is better)\n");
    for (label, config) in [("16 KiB buffer", &default), ("1 MiB buffer", &big)] {
        for message in [64usize, 8192, 65536] {
            let std = best(|| stream::<TcpStream>(config, message))?;
            let robust = best(|| stream::<RSocket>(config, message))?;
            report(
                &format!("stream {message} B writes, {label}"),
                "MiB/s",
                std,
                robust,
            );
        }
    }
    for message in [1usize, 1024] {
        let std = best(|| request_response::<TcpStream>(&nodelay, message))?;
        let robust = best(|| request_response::<RSocket>(&nodelay, message))?;
        report(
            &format!("request/response {message} B"),
            "rt/s",
            std,
            robust,
        );
    }
    Ok(())
}
