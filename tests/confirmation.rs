//! The CONFIRM of reconnections, and sessions accepted at their HELLO.
//!
//! A session is accepted as soon as its opening HELLO arrives (the client drew the secret,
//! so it can always come back), and its first bytes follow the HELLO. Every later
//! connection of the session is installed only once the client's CONFIRM proves it holds
//! the keys and received the server's answer: a reconnection by CID, and a retried opening
//! that the server finds by its opening nonce (the client never got the first ANSWER).
//!
//! A raw client speaks the handshake with std `TcpStream` and the protocol's own frame
//! encoders (`robust_tcp_testkit::raw`). To make the server's ANSWER write fail, a failing attempt
//! sends its HELLO but the last byte, pauses, then sends that byte and at once closes with
//! `SO_LINGER` 0: the RST follows the last byte within microseconds on loopback, before the
//! server can write its ANSWER; the server still reads the whole HELLO (Linux keeps
//! received bytes readable after a reset), then its write fails. The pause is fault
//! injection, not synchronisation: the test is correct whatever the timing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use robust_tcp::protocol::handshake::{Answer, Confirm, Hello, RefusalCode};
use robust_tcp::RSocket;
use robust_tcp_testkit::bounded::{join, run_bounded};
use robust_tcp_testkit::raw::{self, RawOpening};
use robust_tcp_testkit::rng::{fresh_seed, Rng};
use robust_tcp_testkit::session::{bind, fast_config, server_addr};

const LIMIT: Duration = Duration::from_secs(30);
/// How long `accept` may take to return a session once its HELLO was sent.
const ACCEPT_BOUND: Duration = Duration::from_secs(10);
/// Sessions opened in turn, each through the whole story.
const SESSIONS: usize = 3;
/// Reconnections reset before the server's ANSWER, per session.
const FAILED_ATTEMPTS: usize = 5;
/// Between the HELLO's bytes of a failing attempt (see the file's doc).
const PAUSE: Duration = Duration::from_millis(50);

/// Sends `hello` but its last byte, pauses, then the last byte and a reset, so that the
/// server's ANSWER fails.
fn reset_after_hello(server: SocketAddr, hello: &Hello) {
    let frame = hello.encode();
    let mut stream = raw::connect(server);
    let (head, last) = frame.split_at(frame.len() - 1);
    stream
        .write_all(head)
        .expect("send the hello but its last byte");
    thread::sleep(PAUSE);
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    stream.write_all(last).expect("send the hello's last byte");
    drop(stream);
}

/// Sends `hello`, reads the acceptance (which must resume session `cid` without opening
/// it), confirms it, and returns the connection and the server's received count.
fn resume(server: SocketAddr, hello: &Hello, opening: &RawOpening, cid: u32) -> (TcpStream, u32) {
    let mut stream = raw::connect(server);
    stream.write_all(&hello.encode()).expect("send the hello");
    let answer = raw::read_acceptance(&mut stream, hello, opening);
    assert_eq!(answer.cid, cid, "another session");
    assert!(!answer.opened, "the server opened a second session");
    let confirm = Confirm::new(hello, &answer, &opening.keys.handshake.client);
    stream
        .write_all(&confirm.encode())
        .expect("send the confirm");
    (stream, answer.received)
}

/// Accepts in a helper thread, so that an `accept` that never returns fails a bound
/// rather than the watchdog.
fn acceptor(server: robust_tcp::RServerSocket, n: usize) -> mpsc::Receiver<RSocket> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for _ in 0..n {
            let Ok((sock, _)) = server.accept() else {
                return;
            };
            if tx.send(sock).is_err() {
                return;
            }
        }
        // Held until the test ends: nothing else may come out of accept.
        if let Ok((sock, _)) = server.accept() {
            let _ = tx.send(sock);
        }
    });
    rx
}

fn next_session(accepted: &mpsc::Receiver<RSocket>, what: &str) -> RSocket {
    accepted
        .recv_timeout(ACCEPT_BOUND)
        .unwrap_or_else(|_| panic!("{what}: accept returned nothing within {ACCEPT_BOUND:?}"))
}

// Proves: a session is accepted at its opening HELLO, with the bytes that follow it, before
// any CONFIRM; when its connection fails and the client's reconnections are reset before
// the server can answer them, the first reconnection that completes (CONFIRM) moves the
// session to its connection, and the bytes sent there arrive; `accept` returns nothing
// else. For each of SESSIONS sessions in turn.
#[test]
fn a_session_accepted_at_its_hello_resumes_after_failed_reconnections() {
    run_bounded(LIMIT, || {
        let server = bind();
        let addr = server_addr(&server);
        let accepted = acceptor(server, SESSIONS);
        let mut rng = Rng::new(fresh_seed());
        for round in 0..SESSIONS {
            let opening = RawOpening::new(&mut rng);
            let first = format!("round {round}: first bytes");
            let mut conn = raw::connect(addr);
            let answer = raw::open(&mut conn, &opening, first.as_bytes(), &mut rng);
            assert!(answer.opened && answer.epoch == 0, "{answer:?}");
            let mut session = next_session(&accepted, "the opening");
            assert_eq!(session.session_id(), answer.cid, "round {round}");
            let mut got = vec![0u8; first.len()];
            session.read_exact(&mut got).expect("read the first bytes");
            assert_eq!(got, first.as_bytes(), "round {round}");
            drop(conn);

            let mut attempt = 0;
            for _ in 0..FAILED_ATTEMPTS {
                attempt += 1;
                let hello = opening.resume_hello(answer.cid, attempt, 0, &mut rng);
                reset_after_hello(addr, &hello);
            }
            attempt += 1;
            let hello = opening.resume_hello(answer.cid, attempt, 0, &mut rng);
            let (mut resumed, received) = resume(addr, &hello, &opening, answer.cid);
            assert_eq!(received as usize, first.len(), "round {round}");
            let message = format!("round {round}: after the reconnection");
            resumed
                .write_all(message.as_bytes())
                .expect("write on the resumed connection");
            let mut got = vec![0u8; message.len()];
            session.read_exact(&mut got).expect("read the later bytes");
            assert_eq!(got, message.as_bytes(), "round {round}");
        }
        assert!(
            accepted.try_recv().is_err(),
            "accept returned a session nobody opened"
        );
    });
}

// Proves: an opening retried after its ANSWER was lost (the first connection reset as soon
// as the HELLO and the first bytes were out) resumes the session the server opened, found
// by its opening nonce, after a CONFIRM, with the server's count of the first bytes; the
// retry sends the rest and it arrives once. A copy of an opening HELLO (attempt 0, or one
// not above the last) is refused, and `accept` returns one session in all.
#[test]
fn a_retried_opening_resumes_the_session_found_by_its_nonce() {
    run_bounded(LIMIT, || {
        let server = bind();
        let addr = server_addr(&server);
        let accepted = acceptor(server, 1);
        let mut rng = Rng::new(fresh_seed());
        let opening = RawOpening::new(&mut rng);
        let first = b"first bytes, sent behind the hello";
        let hello = opening.hello(0, &mut rng);
        {
            let mut conn = raw::connect(addr);
            let mut bytes = hello.encode().to_vec();
            bytes.extend_from_slice(first);
            conn.write_all(&bytes)
                .expect("send the hello and the first bytes");
            // Held until the server has the session, then reset without reading the
            // ANSWER: as far as the client knows, it never came.
            let mut session = next_session(&accepted, "the opening");
            let mut got = vec![0u8; first.len()];
            session.read_exact(&mut got).expect("read the first bytes");
            assert_eq!(&got, first);
            socket2::SockRef::from(&conn)
                .set_linger(Some(Duration::ZERO))
                .expect("SO_LINGER 0");
            drop(conn);
            let cid = session.session_id();

            let retry = opening.hello(1, &mut rng);
            let (mut resumed, received) = resume(addr, &retry, &opening, cid);
            assert_eq!(received as usize, first.len());
            resumed.write_all(b" and the rest").expect("write the rest");
            let mut got = [0u8; 13];
            session.read_exact(&mut got).expect("read the rest");
            assert_eq!(&got, b" and the rest");

            for copy in [
                hello,
                opening.hello(0, &mut rng),
                opening.hello(1, &mut rng),
            ] {
                let mut conn = raw::connect(addr);
                conn.write_all(&copy.encode()).expect("send a copy");
                match raw::read_answer(&mut conn) {
                    Answer::Refused(RefusalCode::UnknownSession) => {}
                    other => panic!("a copy of an opening got {other:?}"),
                }
            }
            let mut reply = [0u8; 4];
            session.write_all(b"pong").expect("server write");
            resumed
                .read_exact(&mut reply)
                .expect("read the server's bytes");
            assert_eq!(&reply, b"pong");
        }
        assert!(
            accepted.try_recv().is_err(),
            "the retried opening came out of accept again"
        );
    });
}

// Proves: peers that open sessions and vanish (HELLO, read the ANSWER, hang up) cannot
// fill a server for good: their sessions come out of `accept` at once, and once their
// clients have been gone for the silence limit a real client takes the place of the
// oldest, and its first bytes arrive.
#[test]
fn sessions_of_vanished_openers_do_not_lock_out_real_clients() {
    run_bounded(LIMIT, || {
        const SLOTS: usize = 4;
        let config = fast_config()
            .max_sessions(SLOTS)
            .dead_after(Some(Duration::from_millis(300)));
        let server = robust_tcp::RServerSocket::bind_with("127.0.0.1:0", config).expect("bind");
        let addr = server_addr(&server);
        let mut rng = Rng::new(fresh_seed());
        let mut vanished = Vec::new();
        for _ in 0..SLOTS {
            let opening = RawOpening::new(&mut rng);
            let mut conn = raw::connect(addr);
            raw::open(&mut conn, &opening, b"", &mut rng);
            let (session, _) = server.accept().expect("accept a raw opening");
            vanished.push(session);
        }
        let client = thread::spawn(move || -> std::io::Result<()> {
            let mut sock = RSocket::connect_with(addr, fast_config())?;
            sock.write_all(b"real")?;
            let mut got = [0u8; 2];
            sock.read_exact(&mut got)?;
            assert_eq!(&got, b"ok");
            Ok(())
        });
        let (mut accepted, _) = server.accept().expect("accept the real client");
        let mut got = [0u8; 4];
        accepted.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"real");
        accepted.write_all(b"ok").expect("write");
        join(client).expect("the real client");
    });
}
