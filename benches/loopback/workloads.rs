//! The workloads, each run over `TcpStream` and over `RSocket` alike (`Net`): one-way
//! streams checked by sample, request-response, connect-request-response.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::thread;
use std::time::Instant;

use robust_tcp_testkit::paired::watchdog::progress;
use robust_tcp_testkit::paired::{
    cpu_time, crr_serve, crr_transaction, invalid, join, receive_checked, send_numbered, Net, FILL,
};

use super::{Kind, Run, RR_WARMUP, SOFT_LIMIT};

/// Where every listener binds: loopback, a port of the system's choice.
const LOCAL: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// A connected pair: (client, server).
pub(super) fn pair<N: Net>(nodelay: bool) -> io::Result<(N::Stream, N::Stream)> {
    let (listener, addr) = N::listen(LOCAL, nodelay)?;
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
    let (mut client, mut server) = pair::<N>(false)?;
    let writes = bytes / write as u64;
    let receiver = thread::Builder::new()
        .name("stream-receiver".into())
        .spawn(move || {
            let received = receive_checked(&mut server, write, |_| {})?;
            Ok((received, Instant::now()))
        })?;
    let cpu = cpu_time();
    let started = Instant::now();
    send_numbered(&mut client, write, writes, progress)?;
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
    let (listener, addr) = N::listen(LOCAL, false)?;
    let server =
        thread::Builder::new()
            .name("crr-server".into())
            .spawn(move || -> io::Result<()> {
                for _ in 0..transactions {
                    crr_serve(N::accept(&listener)?)?;
                }
                Ok(())
            })?;
    let cpu = cpu_time();
    let started = Instant::now();
    let mut done = transactions;
    for i in 0..transactions {
        if started.elapsed() > SOFT_LIMIT {
            done = i;
            break;
        }
        crr_transaction::<N>(addr, i)?;
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
