//! The library's threads do not grow with its work: no thread per session, none per
//! handshake in progress, whatever the number of sessions or of stalled handshakes.
//!
//! One `#[test]` running its cases in sequence, alone in its binary: the harness runs the
//! tests of a binary on parallel threads, which would disturb the count.
#![cfg(target_os = "linux")]

use std::fs;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use robust_tcp::{RServerSocket, RSocket};
use robust_tcp_testkit::bounded::{poll_until, run_bounded, wait_until};
use robust_tcp_testkit::rng::{fresh_seed, Rng};
use robust_tcp_testkit::session::{bind, connect_pair, fast_config, server_addr};

const LIMIT: Duration = Duration::from_secs(120);
/// Sessions held at once, both ends in this process.
const SESSIONS: usize = 300;
/// Raw connections of each kind (dribbling, silent, junk) in the handshake flood.
const FLOOD: usize = 300;
/// The pace of the dribbling connections: one HELLO byte each per round.
const DRIBBLE_EVERY: Duration = Duration::from_millis(1500);
/// Dribble rounds: 4 of the 48 body bytes, so no dribbler ever completes its HELLO.
const DRIBBLE_ROUNDS: usize = 4;
/// How long a thread that ended may still be counted (the kernel reaps it just after a
/// join returns), and how long closing sessions may take to end.
const SETTLE: Duration = Duration::from_secs(2);
const CLOSE_WAIT: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The header of a HELLO announcing an 18-byte body (`docs/PROTOCOL.md`, section 2).
const HELLO_HEADER: &[u8; 8] = b"RTCP\x02\x01\x00\x30";

/// The process's thread count, from the `Threads:` line of `/proc/self/status`.
fn threads() -> usize {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .expect("a Threads: line");
    line.trim().parse().expect("a thread count")
}

/// Panics unless the thread count is `baseline` within `limit`; `what` names the moment.
fn assert_threads(baseline: usize, limit: Duration, what: &str) {
    if !poll_until(limit, || threads() == baseline) {
        panic!(
            "{what}: {} threads, {baseline} before (the library's own); waited {limit:?}",
            threads()
        );
    }
}

/// Sends `message` from `from` and checks that `to` reads exactly it.
fn pass(mut from: &RSocket, mut to: &RSocket, message: &[u8]) {
    from.write_all(message).expect("write a message");
    let mut got = vec![0u8; message.len()];
    to.read_exact(&mut got).expect("read the message");
    assert_eq!(got, message);
}

/// Opens a session on a server of its own, moves a message each way, and closes it all;
/// returns once that server's port is closed, which it is once its sessions have ended.
/// Whatever threads the library keeps for the process then exist, and no other.
fn warm_up() {
    let server = bind();
    let addr = server_addr(&server);
    let (client, accepted) = connect_pair(&server, addr, fast_config());
    pass(&client, &accepted, b"warm");
    pass(&accepted, &client, b"up");
    drop((server, client, accepted));
    wait_until(CLOSE_WAIT, "the warm-up server's port to close", || {
        matches!(
            TcpStream::connect(addr),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
        )
    });
}

/// Case (i): SESSIONS sessions held at once with no application thread add no thread.
fn many_sessions(server: &RServerSocket, baseline: usize) {
    let addr = server_addr(server);
    let mut held = Vec::with_capacity(SESSIONS);
    for i in 0..SESSIONS {
        let (client, accepted) = connect_pair(server, addr, fast_config());
        pass(&client, &accepted, format!("up {i}").as_bytes());
        pass(&accepted, &client, format!("down {i}").as_bytes());
        held.push((client, accepted));
    }
    assert_threads(baseline, SETTLE, "with 300 sessions open");
    drop(held);
    assert_threads(baseline, CLOSE_WAIT, "after closing 300 sessions");
}

/// Case (ii): a flood of stalled and foreign handshakes adds no thread and keeps no real
/// client out, even past any cap on handshakes in progress.
fn handshake_flood(server: &RServerSocket, baseline: usize) {
    let addr = server_addr(server);
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let connect = || TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).expect("raw connect");
    let mut dribblers = Vec::with_capacity(FLOOD);
    let mut silent = Vec::with_capacity(FLOOD);
    let mut junk = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        let mut d = connect();
        d.write_all(HELLO_HEADER).expect("send a HELLO header");
        dribblers.push(d);
        silent.push(connect());
        let mut j = connect();
        let bytes: Vec<u8> = (0..64).map(|_| rng.next_u64() as u8).collect();
        j.write_all(&bytes).expect("send junk");
        junk.push(j);
    }
    assert_threads(baseline, SETTLE, "with 900 handshakes in progress");

    // The newest handshake must get through: a server at its cap on handshakes in
    // progress evicts the oldest rather than refuse the newest.
    let client = RSocket::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("seed {seed}: connect through the flood: {e}"));
    let (accepted, _peer) = server.accept().expect("accept through the flood");
    assert_eq!(client.session_id(), accepted.session_id());
    pass(&client, &accepted, b"through the flood");
    pass(&accepted, &client, b"and back");

    for round in 0..DRIBBLE_ROUNDS {
        // The pace of the dribble is the test's input, not a wait for anything.
        thread::sleep(DRIBBLE_EVERY);
        for d in &mut dribblers {
            // The server may have closed a dribbler whose handshake took too long, as it
            // should: only the server's threads and its sessions are under test here.
            let _ = d.write_all(&[round as u8]);
        }
        assert_threads(baseline, SETTLE, "while handshakes dribble");
    }
    pass(&client, &accepted, b"after the dribble");
    drop((dribblers, silent, junk, client, accepted));
    assert_threads(baseline, CLOSE_WAIT, "after the flood closed");
}

// Proves: after a warm-up, the process's thread count stays exactly at its baseline with
// 300 sessions open (both ends here, no application thread per session) and after they
// close; and with 300 dribbling, 300 silent and 300 junk handshakes open, while a real
// client still opens a session through them and exchanges messages.
#[test]
fn the_library_adds_no_thread_per_session_or_handshake() {
    run_bounded(LIMIT, || {
        warm_up();
        // Every session comes from 127.0.0.1: allow them all.
        let config = fast_config().max_sessions_per_address(SESSIONS + 1);
        let server = RServerSocket::bind_with("127.0.0.1:0", config).expect("bind");
        let baseline = threads();
        many_sessions(&server, baseline);
        handshake_flood(&server, baseline);
    });
}
