//! Edge cases at the boundaries of the contract: strangers on either side of the
//! handshake (a robust client reaching a plain TCP server, a plain client reaching a
//! robust server), a client that gives up, a close with unread data, large send buffers
//! reconnecting both ways at once, a dropped server's port, a read timeout while
//! reconnecting, a half-close through a cut, and zero-length calls.
//!
//! Everything runs on loopback, every test is bounded by a watchdog, and waits poll real
//! conditions (a blocked call, a session state, a refused port) rather than sleeping.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use robust_tcp::{Config, Error, NotRobustReason, RServerSocket, RSocket, Refusal, SessionState};
use robust_tcp_testkit::bounded::{join, run_bounded, wait_until};
use robust_tcp_testkit::check::{assert_kind, carried, expect_ok, session_error};
use robust_tcp_testkit::payload::{expect_eof, Payload};
use robust_tcp_testkit::proxy::{CutPlan, FaultProxy};
use robust_tcp_testkit::session::{bind, connect_pair, exchange_seeded, fast_config, server_addr};

/// The watchdog of the small tests.
const LIMIT: Duration = Duration::from_secs(20);
/// The watchdog of the 32 MiB both-ways transfer.
const BULK_LIMIT: Duration = Duration::from_secs(60);
/// How long a `wait_until` in these tests may poll.
const WAIT: Duration = Duration::from_secs(10);

/// Writes `payload` on a clone of `sock` from a new thread, without shutting down after.
fn spawn_open_writer(sock: &RSocket, payload: Payload) -> JoinHandle<io::Result<()>> {
    let sock = sock.try_clone().expect("try_clone for the writer thread");
    thread::spawn(move || payload.write_to(&sock))
}

/// Moves `len` bytes from `from` to `to` and checks them; both stay open.
fn transfer(from: &RSocket, to: &RSocket, len: u64, seed: u64) {
    let payload = Payload::new(seed, len);
    let writer = spawn_open_writer(from, payload);
    expect_ok(seed, "reading", payload.verify_range(to, 0..len));
    expect_ok(seed, "writing", join(writer));
}

/// A read on a clone of `sock` from a new thread, with the result's byte count.
fn spawn_read(sock: &RSocket) -> JoinHandle<io::Result<usize>> {
    let sock = sock.try_clone().expect("try_clone for the reader thread");
    thread::spawn(move || (&sock).read(&mut [0u8; 64]))
}

// ------------------------------------------------------------------ plain TCP servers

/// What a [`PlainServer`] does with each connection.
#[derive(Clone, Copy, Debug)]
enum Plain {
    /// Sends back every byte it receives, until the client hangs up.
    Echo,
    /// Sends these bytes at once, then keeps the connection open and reads nothing.
    Banner(&'static [u8]),
    /// Keeps the connection open and neither reads nor writes.
    Silent,
}

/// A server that does not speak robust-tcp: a std `TcpListener` on loopback whose
/// acceptor thread stops (closing every connection it holds) when this is dropped.
struct PlainServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
    acceptor: Option<JoinHandle<()>>,
}

impl PlainServer {
    fn start(behaviour: Plain) -> PlainServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the plain server");
        let addr = listener.local_addr().expect("plain server address");
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let acceptor = {
            let (stop, connections) = (Arc::clone(&stop), Arc::clone(&connections));
            thread::spawn(move || {
                // Held open until the server stops.
                let mut held = Vec::new();
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut stream) = stream else { continue };
                    // Counted before answering, so a client that saw the answer sees the count.
                    connections.fetch_add(1, Ordering::SeqCst);
                    match behaviour {
                        Plain::Echo => {
                            // Ends when the client hangs up.
                            thread::spawn(move || {
                                let mut input = stream.try_clone()?;
                                io::copy(&mut input, &mut stream)
                            });
                        }
                        Plain::Banner(banner) => {
                            let _ = stream.write_all(banner);
                            held.push(stream);
                        }
                        Plain::Silent => held.push(stream),
                    }
                }
            })
        };
        PlainServer {
            addr,
            stop,
            connections,
            acceptor: Some(acceptor),
        }
    }

    /// Connections accepted so far.
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for PlainServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The acceptor blocks in accept(); a connection of our own wakes it to see the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Connects a robust client to `server` (`connect` returns once the TCP connection is up,
/// and a write may go into the send buffer before the server answers) and checks that the
/// session's first read fails with `kind`, carrying [`Error::NotRobust`] for `reason`, and
/// (for `InvalidData`) says that the peer is not a robust-tcp server; a write then fails
/// the same way, and the session never got an id.
fn robust_connect_fails(
    server: &PlainServer,
    config: Config,
    kind: io::ErrorKind,
    reason: NotRobustReason,
) {
    let sock = RSocket::connect_with(server.addr, config)
        .expect("connect returns once the TCP connection is up");
    // Buffered, or already failed as below: the engine may have read the stranger's
    // bytes by now.
    let _ = (&sock).write_all(b"first bytes");
    for (what, result) in [
        ("the first read", (&sock).read(&mut [0u8; 16])),
        ("a write after it", (&sock).write(b"x")),
    ] {
        let err = assert_kind(what, result, kind);
        assert_eq!(carried(what, &err), &Error::NotRobust { reason });
        if kind == io::ErrorKind::InvalidData {
            assert!(
                err.to_string().contains("not a robust-tcp server"),
                "the message does not say the peer is not a robust-tcp server: {err}"
            );
        }
    }
    assert_eq!(sock.session_id(), 0, "a session id from a plain server");
}

// Proves: a plain server that echoes the client's hello back (its kind is HELLO, not
// ANSWER) is recognised as a stranger: the session fails with InvalidData saying so, after
// a single connection (no retries).
#[test]
fn a_robust_client_rejects_an_echoing_plain_server() {
    run_bounded(LIMIT, || {
        let server = PlainServer::start(Plain::Echo);
        // A robust-tcp frame, but not the one expected: malformed as an answer.
        robust_connect_fails(
            &server,
            Config::default(),
            io::ErrorKind::InvalidData,
            NotRobustReason::Malformed,
        );
        assert_eq!(server.connections(), 1, "the client retried a stranger");
    });
}

// Proves: a plain server that speaks first (an SSH banner, no RTCP magic) is recognised
// as a stranger: the session fails with InvalidData saying so, after a single connection.
#[test]
fn a_robust_client_rejects_a_plain_server_that_sends_a_banner() {
    run_bounded(LIMIT, || {
        let server = PlainServer::start(Plain::Banner(b"SSH-2.0-x\r\n"));
        robust_connect_fails(
            &server,
            Config::default(),
            io::ErrorKind::InvalidData,
            NotRobustReason::ForeignBytes,
        );
        assert_eq!(server.connections(), 1, "the client retried a stranger");
    });
}

// Proves: a plain server that accepts and then says nothing (nor hangs up) makes the
// session fail with TimedOut (within the watchdog), rather than retry the silent peer or
// report another kind such as ConnectionAborted.
#[test]
fn a_robust_client_times_out_on_a_silent_plain_server() {
    run_bounded(LIMIT, || {
        let server = PlainServer::start(Plain::Silent);
        let config = Config::default().handshake_timeout(Duration::from_millis(300));
        robust_connect_fails(
            &server,
            config,
            io::ErrorKind::TimedOut,
            NotRobustReason::Silent,
        );
        assert!(
            server.connections() >= 1,
            "the client never reached the server"
        );
    });
}

// ------------------------------------------------------------------ a plain client

// Proves: a plain TCP client (an HTTP request) reaching a robust server gets a reply that
// starts with the RTCP magic, then a clean end of stream (the server closes); and that
// connection never comes out of accept: the first accepted session is a robust sentinel
// client's, opened afterwards.
#[test]
fn a_plain_client_gets_an_rtcp_reply_and_is_never_accepted() {
    run_bounded(LIMIT, || {
        let server = bind();
        let addr = server_addr(&server);

        let mut plain = TcpStream::connect(addr).expect("plain connect");
        plain
            .write_all(b"GET / HTTP/1.0\r\n\r\n")
            .expect("plain request");
        let mut reply = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match plain.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!(
                    "the plain client's read failed instead of ending the stream, after \
                     {reply:02x?}: {e} (kind {:?})",
                    e.kind()
                ),
            }
        }
        assert!(
            reply.starts_with(b"RTCP"),
            "the reply to a plain client does not start with RTCP: {reply:02x?}"
        );
        drop(plain);

        let client = thread::spawn(move || RSocket::connect_with(addr, fast_config()));
        let (mut accepted, _peer) = server.accept().expect("accept");
        let mut sentinel = join(client).expect("the sentinel's connect");
        assert_eq!(
            accepted.session_id(),
            sentinel.session_id(),
            "accept returned another session than the sentinel's (the plain client's?)"
        );
        sentinel.write_all(b"sentinel").expect("sentinel write");
        let mut marker = [0u8; 8];
        accepted.read_exact(&mut marker).expect("sentinel read");
        assert_eq!(&marker, b"sentinel");
    });
}

// ------------------------------------------------------------------ sessions that end

// Proves: a client with give_up_after whose server becomes unreachable (its connection
// cut, every reconnection refused) fails its blocked read with TimedOut; and it tells
// the server over UDP, whose blocked read fails with ConnectionReset instead of waiting
// for a reconnection forever.
#[test]
fn give_up_after_times_out_the_client_and_resets_the_server() {
    run_bounded(LIMIT, || {
        let server = bind();
        let proxy = FaultProxy::start(server_addr(&server), CutPlan::never()).unwrap();
        let seed = proxy.seed();
        let config = fast_config().give_up_after(Some(Duration::from_millis(500)));
        let (client, accepted) = connect_pair(&server, proxy.local_addr(), config);
        transfer(&client, &accepted, 64 << 10, seed);
        transfer(&accepted, &client, 64 << 10, seed ^ 1);

        let client_read = spawn_read(&client);
        let server_read = spawn_read(&accepted);
        wait_until(WAIT, "both reads to block", || {
            client.status().blocked_read.is_some() && accepted.status().blocked_read.is_some()
        });
        proxy.cut_all();
        // No proxy, no port: every reconnection is refused.
        drop(proxy);

        let e = assert_kind(
            "the client's read",
            join(client_read),
            io::ErrorKind::TimedOut,
        );
        let gave_up = carried("the client's read", &e);
        assert!(matches!(gave_up, Error::GaveUp { .. }), "{gave_up:?}");
        let e = assert_kind(
            "the server's read",
            join(server_read),
            io::ErrorKind::ConnectionReset,
        );
        assert_eq!(carried("the server's read", &e), &Error::PeerReset);
    });
}

// Proves: a client that drops its socket with the server's bytes unread does not leave
// the server's writer blocked forever: the write fails with BrokenPipe, and the server
// still reads the client's 100 bytes then end of stream.
#[test]
fn closing_with_unread_data_breaks_the_peers_writer_instead_of_hanging() {
    run_bounded(LIMIT, || {
        let server = bind();
        let (mut client, accepted) = connect_pair(&server, server_addr(&server), fast_config());
        let upstream = Payload::new(0x4A, 100);
        client
            .write_all(&upstream.bytes(0..upstream.len()))
            .expect("client write");

        // Far more than the send buffer and the socket buffers: it cannot all fit.
        let downstream = Payload::new(0x4B, 8 << 20);
        let writer = spawn_open_writer(&accepted, downstream);
        downstream
            .verify_range(&client, 0..10)
            .expect("the client reads the first 10 bytes");
        drop(client);

        let what = "the server's 8 MiB write to a closed peer";
        let e = assert_kind(what, join(writer), io::ErrorKind::BrokenPipe);
        assert_eq!(carried(what, &e), &Error::PeerClosed);
        upstream
            .verify_from(&accepted)
            .expect("the server reads the client's 100 bytes then end of stream");
    });
}

// ------------------------------------------------------------------ large buffers

// Proves: with an 8 MiB send buffer acknowledged every 1 MiB on both sides, 32 MiB each
// way at once survive at least 5 cuts (each reconnection resending up to megabytes in both
// directions): every byte arrives exactly once, in order, and both ends see end of stream.
#[test]
fn large_send_buffers_reconnect_both_ways_at_once() {
    run_bounded(BULK_LIMIT, || {
        const LEN: u64 = 32 << 20;
        let config = fast_config()
            .send_buffer_size(8 << 20)
            .ack_threshold(1 << 20);
        let server = RServerSocket::bind_with("127.0.0.1:0", config.clone()).expect("bind");
        let proxy = FaultProxy::start(server_addr(&server), CutPlan::random(20, 16 << 20)).unwrap();
        let seed = proxy.seed();
        let (client, accepted) = connect_pair(&server, proxy.local_addr(), config);

        exchange_seeded(&client, &accepted, LEN, seed);
        let cuts = proxy.cuts();
        assert!(cuts >= 5, "seed {seed}: only {cuts} cuts happened");
        let (c, s) = (client.status(), accepted.status());
        assert_eq!((c.bytes_written, c.bytes_read), (LEN, LEN), "seed {seed}");
        assert_eq!((s.bytes_written, s.bytes_read), (LEN, LEN), "seed {seed}");
    });
}

// ------------------------------------------------------------------ a dropped server

// Proves: a dropped RServerSocket refuses new sessions (their first read fails with
// ConnectionRefused) while its last session lives, and its listening port closes once that session has ended on both sides
// (a plain TCP connect is then refused by the kernel).
#[test]
fn a_dropped_servers_port_closes_after_its_last_session() {
    run_bounded(LIMIT, || {
        let server = bind();
        let addr = server_addr(&server);
        let (mut client, mut accepted) = connect_pair(&server, addr, fast_config());
        client.write_all(b"ping").expect("client write");
        let mut got = [0u8; 4];
        accepted.read_exact(&mut got).expect("server read");
        assert_eq!(&got, b"ping");
        accepted.write_all(b"pong").expect("server write");
        client.read_exact(&mut got).expect("client read");
        assert_eq!(&got, b"pong");

        drop(server);
        // Bounded, so that a client that retries instead of failing fails the assertion
        // (with TimedOut) rather than the watchdog.
        let config = fast_config().give_up_after(Some(Duration::from_secs(5)));
        let what = "a new session with a dropped server";
        let refused = RSocket::connect_with(addr, config).expect("the TCP connect");
        let e = assert_kind(
            what,
            (&refused).read(&mut [0u8; 8]),
            io::ErrorKind::ConnectionRefused,
        );
        assert_eq!(carried(what, &e), &Error::Refused(Refusal::ServerClosed));

        drop(client);
        drop(accepted);
        // A connect that still succeeds is dropped at once: the server sees it hang up.
        wait_until(WAIT, "the dropped server's port to close", || {
            matches!(
                TcpStream::connect(addr),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
            )
        });
    });
}

// ------------------------------------------------------------------ timeouts

// Proves: a read timeout also bounds a read that finds the connection cut and then waits
// for a reconnection that cannot happen: the read fails with WouldBlock (std's kind for
// socket timeouts on Unix) and the session is Reconnecting, not failed.
#[test]
fn a_read_timeout_applies_while_reconnecting() {
    run_bounded(LIMIT, || {
        let server = bind();
        let proxy = FaultProxy::start(server_addr(&server), CutPlan::never()).unwrap();
        let (client, accepted) = connect_pair(&server, proxy.local_addr(), fast_config());
        client
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("set_read_timeout");
        (&accepted).write_all(b"hi").expect("server write");
        let mut got = [0u8; 2];
        (&client).read_exact(&mut got).expect("client read");
        assert_eq!(&got, b"hi");

        proxy.cut_all();
        // No proxy, no port: every reconnection is refused. Once the drop returns, the
        // proxy's sockets are closed, so the read below finds the connection dead (the
        // library has no heartbeat: nothing notices an idle connection's failure before a
        // read or write on it).
        drop(proxy);

        let e = assert_kind(
            "a read while reconnecting",
            (&client).read(&mut [0u8; 16]),
            io::ErrorKind::WouldBlock,
        );
        // A timeout is not a failure of the session.
        assert_eq!(session_error(&e), None, "a timeout carries a session error");
        let status = client.status();
        assert_eq!(status.state, SessionState::Reconnecting, "{status:?}");
        assert!(status.last_failure.is_some(), "{status:?}");
    });
}

// ------------------------------------------------------------------ closing

// Proves: a half-close survives cuts: one while the 5 bytes written before shutdown(Write)
// are still unacknowledged, and one once the writer has nothing left to acknowledge; the
// server reads exactly those 5 bytes, then end of stream.
#[test]
fn half_close_with_nothing_left_to_acknowledge_survives_a_cut() {
    run_bounded(LIMIT, || {
        let server = bind();
        let proxy = FaultProxy::start(server_addr(&server), CutPlan::never()).unwrap();
        let seed = proxy.seed();
        let (mut client, mut accepted) = connect_pair(&server, proxy.local_addr(), fast_config());
        client.write_all(b"hello").expect("client write");
        client.shutdown(Shutdown::Write).expect("shutdown(Write)");
        assert_eq!(proxy.cut_all(), 1, "seed {seed}: no live connection to cut");

        let mut got = [0u8; 5];
        accepted
            .read_exact(&mut got)
            .unwrap_or_else(|e| panic!("seed {seed}: server read: {e}"));
        assert_eq!(&got, b"hello", "seed {seed}");
        wait_until(WAIT, "the client's 5 bytes to be acknowledged", || {
            client.status().unacknowledged == 0
        });
        proxy.cut_all();
        expect_ok(
            seed,
            "end of stream after the cut",
            expect_eof(&accepted, 5),
        );
        // End of stream is sticky, as on TCP.
        expect_ok(seed, "a second read at the end", expect_eof(&accepted, 5));
    });
}

// Proves: zero-length reads and writes return Ok(0) at once, even when a real call would
// block (nothing to read; a full send buffer). Each socket has a timeout, so a blocking
// implementation fails the assertion with WouldBlock instead of stalling the test.
#[test]
fn zero_length_reads_and_writes_return_at_once() {
    run_bounded(LIMIT, || {
        let server = bind();
        // A buffer that cannot grow: once full, a write must wait whatever the kernel takes.
        let config = fast_config();
        let config = config
            .clone()
            .send_buffer_max(config.send_buffer_size_value());
        let buffer = config.send_buffer_size_value() as u64;
        let (mut client, mut accepted) = connect_pair(&server, server_addr(&server), config);
        client
            .set_write_timeout(Some(Duration::from_millis(200)))
            .expect("set_write_timeout");
        client
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("set_read_timeout");
        accepted
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("set_read_timeout");

        // Nothing to read yet on either side.
        assert_eq!(accepted.read(&mut []).expect("empty read, server"), 0);
        assert_eq!(client.read(&mut []).expect("empty read, client"), 0);

        // Fill the client's send buffer: the server reads nothing, so nothing is
        // acknowledged and a non-empty write must wait.
        let payload = Payload::new(0x2E, buffer);
        payload.write_to(&client).expect("fill the send buffer");
        assert_eq!(client.status().unacknowledged, buffer);
        assert_kind(
            "a 1-byte write into a full send buffer",
            client.write(b"x"),
            io::ErrorKind::WouldBlock,
        );
        assert_eq!(client.write(&[]).expect("empty write, full buffer"), 0);
        assert_eq!(accepted.write(&[]).expect("empty write, server"), 0);

        // The session is unharmed: the bytes arrive, then end of stream.
        accepted.set_read_timeout(None).expect("clear the timeout");
        client.shutdown(Shutdown::Write).expect("shutdown(Write)");
        payload
            .verify_from(&accepted)
            .expect("the server reads the buffer then end of stream");
    });
}

// Proves: abort resets the session like a TCP reset, from either end: a peer blocked in
// read wakes with ConnectionReset carrying PeerReset, its writes fail the same way, and
// the aborting side's own later calls fail with ConnectionAborted carrying Aborted.
#[test]
fn abort_resets_the_peer_and_fails_local_calls() {
    run_bounded(LIMIT, || {
        let server = bind();
        for client_aborts in [true, false] {
            let (client, accepted) = connect_pair(&server, server_addr(&server), fast_config());
            let (aborting, peer) = if client_aborts {
                (&client, &accepted)
            } else {
                (&accepted, &client)
            };
            let blocked = spawn_read(peer);
            wait_until(WAIT, "the peer's read to block", || {
                peer.status().blocked_read.is_some()
            });
            aborting.abort().expect("abort");
            let e = assert_kind(
                "the peer's blocked read",
                join(blocked),
                io::ErrorKind::ConnectionReset,
            );
            assert_eq!(carried("the peer's read", &e), &Error::PeerReset);
            let e = assert_kind(
                "the peer's write",
                (&*peer).write(b"x"),
                io::ErrorKind::ConnectionReset,
            );
            assert_eq!(carried("the peer's write", &e), &Error::PeerReset);
            let e = assert_kind(
                "a write after abort",
                (&*aborting).write(b"x"),
                io::ErrorKind::ConnectionAborted,
            );
            assert_eq!(carried("the aborted write", &e), &Error::Aborted);
            let e = assert_kind(
                "a read after abort",
                (&*aborting).read(&mut [0u8; 8]),
                io::ErrorKind::ConnectionAborted,
            );
            assert_eq!(carried("the aborted read", &e), &Error::Aborted);
        }
    });
}
