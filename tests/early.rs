//! The EARLY datagram (issue 19 item 1): a client that opened a session with a server
//! before tells the next opening's server where its datagrams come from, right behind the
//! HELLO, so that the server's CLOSE needs nothing else from the client.
//!
//! The server announces a UDP relay of the test's as its control address. In the second
//! session the relay passes nothing from the client to the server but EARLY datagrams: the
//! server hears no authenticated datagram of that session at all, so the client's end of
//! stream can only come from a CLOSE sent on the EARLY's word (or over a TCP control
//! connection, which the test rules out). Another test holds the ANSWER back until the
//! server's CLOSE has reached the client, then lets nothing more of the server's through:
//! the client must keep what it could not route yet.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use robust_tcp::protocol::early;
use robust_tcp::protocol::handshake::Control;
use robust_tcp::{RServerSocket, RSocket};
use robust_tcp_testkit::bounded::{join, run_bounded, wait_until};
use robust_tcp_testkit::payload::{expect_eof, Payload};
use robust_tcp_testkit::proxy::{CutPlan, FaultProxy};
use robust_tcp_testkit::session::{connect_pair, control_port, fast_config, server_addr};

const LIMIT: Duration = Duration::from_secs(60);
/// The EARLY datagram's type byte (PROTOCOL.md section 5).
const EARLY: u8 = 11;
/// A CLOSE's type byte (PROTOCOL.md section 4).
const CLOSE: u8 = 3;

/// A UDP relay between clients and a server's control socket.
struct Relay {
    addr: SocketAddr,
    /// Whether a client's datagrams other than EARLY ones pass: all of them, or (once a
    /// session's CID is set here) only those of that session.
    pass_all: Arc<AtomicBool>,
    pass_cid: Arc<AtomicU32>,
    /// EARLY datagrams passed to the server.
    earlies: Arc<AtomicU64>,
    /// The CID of each CLOSE datagram of the server's passed to the client.
    closes_down: Arc<Mutex<Vec<u32>>>,
    /// The server's datagrams of sessions other than `pass_cid`'s are dropped.
    block_down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    fn start(server: SocketAddr) -> Relay {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the relay");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("a read timeout");
        let addr = socket.local_addr().expect("the relay's address");
        let pass_all = Arc::new(AtomicBool::new(true));
        let pass_cid = Arc::new(AtomicU32::new(0));
        let earlies = Arc::new(AtomicU64::new(0));
        let closes_down = Arc::new(Mutex::new(Vec::new()));
        let block_down = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (all, cid, early, stopped) = (
            pass_all.clone(),
            pass_cid.clone(),
            earlies.clone(),
            stop.clone(),
        );
        let (closes, blocked) = (closes_down.clone(), block_down.clone());
        let thread = thread::spawn(move || {
            let mut client = None;
            let mut buf = [0u8; 2048];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let datagram = &buf[..n];
                let of_cid =
                    datagram.get(..4) == Some(&cid.load(Ordering::Relaxed).to_be_bytes()[..]);
                if from == server {
                    if !of_cid && blocked.load(Ordering::Relaxed) {
                        continue;
                    }
                    if let Some(to) = client {
                        if let (Some(cid), Some(&CLOSE)) = (datagram.get(..4), datagram.get(4)) {
                            let cid = u32::from_be_bytes(cid.try_into().expect("4 bytes"));
                            closes.lock().expect("not poisoned").push(cid);
                        }
                        let _ = socket.send_to(datagram, to);
                    }
                    continue;
                }
                client = Some(from);
                let is_early = datagram.get(4) == Some(&EARLY);
                if is_early {
                    early.fetch_add(1, Ordering::Relaxed);
                }
                if is_early || of_cid || all.load(Ordering::Relaxed) {
                    let _ = socket.send_to(datagram, server);
                }
            }
        });
        Relay {
            addr,
            pass_all,
            pass_cid,
            earlies,
            closes_down,
            block_down,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            join(thread);
        }
    }
}

/// The server's side of a short exchange: reads the whole `request`, writes `reply` and
/// closes.
fn serve(server: &RServerSocket, request: &Payload, reply: &Payload) {
    let len = usize::try_from(request.len()).expect("small");
    let (accepted, _) = server.accept().expect("accept");
    let mut got = vec![0u8; len];
    (&accepted).read_exact(&mut got).expect("read the request");
    assert_eq!(got, request.bytes(0..request.len()), "the request");
    reply.write_to(&accepted).expect("write the reply");
    drop(accepted);
}

/// A client of the server at `addr` that wrote `request`.
fn client_with_request(addr: SocketAddr, request: &Payload) -> RSocket {
    let client = RSocket::connect_with(addr, fast_config()).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("a read timeout");
    (&client)
        .write_all(&request.bytes(0..request.len()))
        .expect("write the request");
    client
}

/// A server whose control socket is behind a relay, which its ANSWERs announce.
fn relayed_server() -> (Relay, RServerSocket) {
    let probe = UdpSocket::bind("127.0.0.1:0").expect("a free UDP port");
    let port = probe.local_addr().expect("its port").port();
    drop(probe);
    let relay = Relay::start(SocketAddr::from(([127, 0, 0, 1], port)));
    let config = fast_config()
        .control_port(Some(port))
        .announce_control_addr(Some(relay.addr));
    let server = RServerSocket::bind_with("127.0.0.1:0", config).expect("bind");
    assert_eq!(control_port(&server), port);
    (relay, server)
}

/// One short exchange, with the server at `addr` (`server`'s address, or a proxy's): the
/// client writes `request`, the server reads it, writes `reply` and closes; the client
/// reads the reply and its end of stream.
fn short_exchange(
    server: &RServerSocket,
    addr: SocketAddr,
    request: &Payload,
    reply: &Payload,
) -> RSocket {
    let client = thread::scope(|s| {
        let serving = s.spawn(|| serve(server, request, reply));
        let client = client_with_request(addr, request);
        reply
            .verify_range(&client, 0..reply.len())
            .expect("every byte of the reply");
        expect_eof(&client, reply.len()).expect("end of stream");
        serving.join().expect("the server's side");
        client
    });
    client
}

// Proves: the second opening of a server sends an EARLY datagram to the control address the
// first one learned, and the server sends its CLOSE to where it came from: end of stream
// reaches the client though the server never hears an authenticated datagram of that
// session, and not over TCP.
#[test]
fn the_early_datagram_carries_end_of_stream_before_the_client_speaks() {
    run_bounded(LIMIT, || {
        let (relay, server) = relayed_server();
        let addr = server_addr(&server);
        let (request, reply) = (Payload::new(1, 64), Payload::new(2, 8 << 10));

        // The first session: the client learns the control address; no EARLY yet.
        let first = short_exchange(&server, addr, &request, &reply);
        assert_eq!(first.status().control_peer, Some(relay.addr));
        assert_eq!(
            relay.earlies.load(Ordering::Relaxed),
            0,
            "nothing known yet"
        );
        // The first session's datagrams still pass while it closes.
        relay.pass_cid.store(first.session_id(), Ordering::Relaxed);
        drop(first);

        // The second: only its EARLY reaches the server.
        relay.pass_all.store(false, Ordering::Relaxed);
        let second = short_exchange(&server, addr, &request, &reply);
        assert!(
            !second.status().control_over_tcp,
            "end of stream came over UDP"
        );
        assert_eq!(relay.earlies.load(Ordering::Relaxed), 1, "one EARLY");
    });
}

// Proves: the server's first datagrams of a session, read before the ANSWER that gives it
// its CID, are kept and handed to it once it has it. The ANSWER is held back until the
// server's CLOSE has reached the client; from then on nothing of the server's reaches it
// over UDP, so end of stream can only come from the CLOSE read early. Fails with the client
// dropping what it cannot route yet: end of stream then comes over a TCP control
// connection, seconds later.
#[test]
fn datagrams_read_before_the_answer_reach_their_session() {
    run_bounded(LIMIT, || {
        let (relay, server) = relayed_server();
        let proxy =
            FaultProxy::start(server_addr(&server), CutPlan::never()).expect("start the proxy");
        let (request, reply) = (Payload::new(3, 64), Payload::new(4, 8 << 10));
        // The client learns the control address of the server at the proxy's address.
        let first = short_exchange(&server, proxy.local_addr(), &request, &reply);
        relay.pass_cid.store(first.session_id(), Ordering::Relaxed);
        drop(first);

        proxy.hold_downstream();
        let second = thread::scope(|s| {
            let serving = s.spawn(|| serve(&server, &request, &reply));
            let client = client_with_request(proxy.local_addr(), &request);
            // The server replied and closed: its CLOSE goes to the EARLY's source.
            serving.join().expect("the server's side");
            let first_cid = relay.pass_cid.load(Ordering::Relaxed);
            wait_until(
                Duration::from_secs(10),
                "the server's CLOSE at the client",
                || {
                    let closes = relay.closes_down.lock().expect("not poisoned");
                    closes.iter().any(|&cid| cid != first_cid)
                },
            );
            relay.block_down.store(true, Ordering::Relaxed);
            proxy.release_downstream();
            reply
                .verify_range(&client, 0..reply.len())
                .expect("every byte of the reply");
            expect_eof(&client, reply.len()).expect("end of stream");
            client
        });
        assert!(
            !second.status().control_over_tcp,
            "end of stream came from the CLOSE read before the ANSWER"
        );
    });
}

// Proves: an EARLY datagram authenticates nothing, so a TCP control connection that carries
// only EARLY datagrams is closed as one that carries nothing authentic (within 5 s of its
// CONTROL frame), however many come.
#[test]
fn early_datagrams_do_not_keep_a_tcp_control_connection_alive() {
    run_bounded(LIMIT, || {
        let server = RServerSocket::bind_with("127.0.0.1:0", fast_config()).expect("bind");
        let addr = server_addr(&server);
        let (client, _accepted) = connect_pair(&server, addr, fast_config());
        let mut control = TcpStream::connect(addr).expect("connect a control connection");
        control
            .write_all(
                &Control {
                    cid: client.session_id(),
                }
                .encode(),
            )
            .expect("the CONTROL frame");
        control
            .set_read_timeout(Some(Duration::from_millis(250)))
            .expect("a read timeout");
        let started = Instant::now();
        let mut nonce = [0u8; 16];
        let closed = loop {
            if started.elapsed() > Duration::from_secs(9) {
                break false;
            }
            nonce[0] = nonce[0].wrapping_add(1);
            let datagram = early::encode(&nonce);
            let mut framed = u16::try_from(datagram.len())
                .expect("short")
                .to_be_bytes()
                .to_vec();
            framed.extend_from_slice(&datagram);
            if control.write_all(&framed).is_err() {
                break true;
            }
            match (&control).read(&mut [0u8; 64]) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break true,
            }
        };
        assert!(
            closed,
            "still open after {:?} of EARLY datagrams",
            started.elapsed()
        );
    });
}
