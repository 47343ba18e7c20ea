//! TLS over a robust session: a server and a client in one process talk TLS 1.3 (rustls)
//! while a proxy between them keeps cutting the TCP connection.
//!
//! Run with `cargo run --example tls`. Set `ROBUST_TCP_SEED` to replay the proxy's cuts.
//!
//! # Why TLS survives the cuts
//!
//! TLS needs a byte stream that loses, repeats and reorders nothing: its records are
//! numbered implicitly, so a missing or repeated byte fails the next record's
//! authentication and kills the TLS connection. Over plain TCP, a cut ends the TCP
//! connection and TLS with it, and a new connection means a new handshake.
//!
//! An `RSocket` is such a stream for the whole session, not for one TCP connection: when
//! the TCP connection is cut, robust-tcp reconnects and resends what the peer has not
//! received, so every byte arrives exactly once and in order. The TLS records ride on that
//! stream, so rustls never sees the cut, not even during its handshake; a call only takes a
//! little longer. Nothing needs adapting: `RSocket` is `Read + Write`, which is all that
//! `rustls::StreamOwned` asks of its transport, exactly as for a `TcpStream`.
//!
//! TLS then gives what robust-tcp does not: the data is encrypted and authenticated end to
//! end, and the client knows it talks to the holder of the certificate.
//!
//! The certificate is self-signed and made at run time (`robust_tcp_testkit::tls`,
//! shared with the TLS test), and the client trusts it alone; a real client would trust the usual roots
//! (webpki-roots or the platform's) and a real server would load its certificate.

use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::thread;

use robust_tcp::{Config, RServerSocket, RSocket};
use robust_tcp_testkit::proxy::{CutPlan, FaultProxy};
use robust_tcp_testkit::tls as tls_support;
use rustls::{ClientConnection, ServerConnection, StreamOwned};

/// Messages the client sends; the server echoes each one back.
const MESSAGES: usize = 200;
/// Bytes in each message: as much as one TLS record carries.
const MESSAGE_LEN: usize = 16 * 1024;
/// Cuts the proxy makes at most; afterwards it forwards faithfully.
const MAX_CUTS: usize = 20;
/// Each TCP connection is cut after a random number of bytes up to this (both directions):
/// the 6 MiB or so that cross the proxy leave room for all the cuts.
const MAX_BYTES_PER_CONNECTION: u64 = 256 * 1024;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tls example failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> io::Result<()> {
    let (server_config, client_config) = tls_support::configs()?;
    // No Nagle delay, as for any request/response protocol over TCP: with it, the tail of
    // each message waits for the acknowledgement of its head, which the peer delays by
    // some 40 ms, and each round trip takes that long.
    let config = Config::default().nodelay(true);
    let server = RServerSocket::bind_with("127.0.0.1:0", config.clone())?;
    // The proxy stands for a flaky network; real code connects to the server directly.
    let plan = CutPlan::random(MAX_CUTS, MAX_BYTES_PER_CONNECTION);
    let proxy = FaultProxy::start(server.local_addr()?, plan)?;
    println!(
        "TLS over robust-tcp: server {}, client through a proxy that cuts up to {MAX_CUTS} times",
        server.local_addr()?
    );

    let echo = thread::spawn(move || -> io::Result<()> {
        let (sock, _peer) = server.accept()?;
        // Exactly what one does with an accepted TcpStream.
        let mut tls = StreamOwned::new(
            ServerConnection::new(server_config).map_err(io::Error::other)?,
            sock,
        );
        // The handshake runs within the first read. Echo until the client's close_notify,
        // which rustls reports as the end of the stream (read returns 0).
        let mut buf = vec![0; MESSAGE_LEN];
        loop {
            let n = tls.read(&mut buf)?;
            if n == 0 {
                break;
            }
            tls.write_all(&buf[..n])?;
            tls.flush()?;
        }
        // Our end: close_notify, then the end of the session's stream.
        tls_support::close(&mut tls.conn, &mut tls.sock)
    });

    let sock = RSocket::connect_with(proxy.local_addr(), config)?;
    let conn = ClientConnection::new(client_config, tls_support::server_name())
        .map_err(io::Error::other)?;
    let mut tls = StreamOwned::new(conn, sock);
    let mut echoed = vec![0; MESSAGE_LEN];
    for i in 0..MESSAGES {
        let sent = message(i);
        tls.write_all(&sent)?;
        tls.flush()?;
        tls.read_exact(&mut echoed)?;
        if echoed != sent {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("message {i} came back changed"),
            ));
        }
    }
    let negotiated = tls_support::negotiated(&tls.conn);
    // The client's end: close_notify, which tells the server's rustls that the data ends
    // here on purpose, then the end of the session's stream.
    tls_support::close(&mut tls.conn, &mut tls.sock)?;
    // The server's close_notify: a clean end of the TLS stream with nothing after it. Had
    // the stream ended without it, rustls would report UnexpectedEof (a truncation).
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest)?;
    if !rest.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} unexpected bytes after the last echo", rest.len()),
        ));
    }
    echo.join()
        .map_err(|_| io::Error::other("the server thread panicked"))??;

    // A cut that hits a reconnection's own handshake is retried within that reconnection,
    // so there may be fewer reconnections than cuts.
    let status = tls.sock.status();
    println!(
        "echoed {MESSAGES} messages of {} KiB over {negotiated}: every byte back, through {} cuts \
         and {} reconnections ({} bytes of TLS records sent by the client)",
        MESSAGE_LEN / 1024,
        proxy.cuts(),
        status.reconnections,
        status.bytes_written,
    );
    Ok(())
}

/// Message `i`: its bytes depend on `i`, so a lost, repeated or misplaced message shows.
fn message(i: usize) -> Vec<u8> {
    (0..MESSAGE_LEN).map(|j| (i * 31 + j) as u8).collect()
}
