//! The workloads, each run over `TcpStream` and over `RSocket` alike (`Net`): one-way
//! streams checked by sample, request-response, connect-request-response.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Instant;

use robust_tcp::{Config, RServerSocket, RSocket};

use super::watchdog::progress;
use super::{
    cpu_time, invalid, join, Kind, Run, CRR_REPLY, CRR_REQUEST, FILL, READ_BUF, RR_WARMUP,
    SOFT_LIMIT,
};

// ---------------------------------------------------------------- the two implementations

/// What a benchmark needs of a stream implementation.
pub(super) trait Net {
    const NAME: &'static str;
    type Stream: Read + Write + Send + 'static;
    type Listener: Send + 'static;

    fn listen(nodelay: bool) -> io::Result<(Self::Listener, SocketAddr)>;
    fn accept(listener: &Self::Listener) -> io::Result<Self::Stream>;
    fn connect(addr: SocketAddr, nodelay: bool) -> io::Result<Self::Stream>;
    fn shutdown_write(stream: &Self::Stream) -> io::Result<()>;
}

/// `std::net` with its defaults.
pub(super) struct Tcp;

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
pub(super) struct Robust;

/// Set to `0` to measure the lightweight opening (`Config::key_agreement(false)`) instead
/// of the default key agreement.
const KEY_AGREEMENT_ENV: &str = "LOOPBACK_KEY_AGREEMENT";

pub(super) fn robust_config(nodelay: bool) -> Config {
    let agreement = std::env::var(KEY_AGREEMENT_ENV).map_or(true, |v| v != "0");
    let config = Config::default().key_agreement(agreement);
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
pub(super) fn pair<N: Net>(nodelay: bool) -> io::Result<(N::Stream, N::Stream)> {
    let (listener, addr) = N::listen(nodelay)?;
    let client = N::connect(addr, nodelay)?;
    let server = N::accept(&listener)?;
    Ok((client, server))
}

// ---------------------------------------------------------------- the benchmarks

pub(super) fn run<N: Net>(kind: Kind) -> io::Result<Run> {
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
pub(super) fn stream<N: Net>(write: usize, bytes: u64) -> io::Result<Run> {
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
pub(super) fn receive_checked(stream: &mut impl Read, write: usize) -> io::Result<(u64, Instant)> {
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
pub(super) fn check_sample(chunk: &[u8], pos: u64, write: u64) -> io::Result<()> {
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
pub(super) fn request_response<N: Net>(message: usize, round_trips: u64) -> io::Result<Run> {
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
pub(super) fn connect_request_response<N: Net>(transactions: u64) -> io::Result<Run> {
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
