//! Passivation (issue 8, item 6; the paper's future work): a session without a TCP
//! connection, on purpose, until one side writes.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use robust_tcp::{RServerSocket, RSocket, SessionState};
use robust_tcp_testkit::bounded::{run_bounded, wait_until};
use robust_tcp_testkit::session::{bind, connect_pair, fast_config, server_addr};

const LIMIT: Duration = Duration::from_secs(30);

fn passive(sock: &RSocket) -> bool {
    let status = sock.status();
    status.state == SessionState::Passive && status.passive
}

/// `(sleeper, other)`: the client first if `by_client`, else the accepted session first.
fn sides<'a>(
    client: &'a RSocket,
    accepted: &'a RSocket,
    by_client: bool,
) -> (&'a RSocket, &'a RSocket) {
    if by_client {
        (client, accepted)
    } else {
        (accepted, client)
    }
}

fn wait_until_both_passive(a: &RSocket, b: &RSocket) {
    wait_until(LIMIT / 2, "both ends to be passive", || {
        passive(a) && passive(b)
    });
}

/// Passivates through `sleeper`, waits until both ends are passive, then has `waker` write
/// and `reader` read: the session comes back on a new connection, and it works both ways.
fn sleep_and_wake(by_client: bool, woken_by_client: bool) {
    let server = bind();
    let (client, accepted) = connect_pair(&server, server_addr(&server), fast_config());
    let (sleeper, other) = sides(&client, &accepted, by_client);
    sleeper.passivate().expect("passivate");
    wait_until_both_passive(sleeper, other);
    assert_eq!(client.status().reconnections, 0);
    let (mut waker, mut reader) = if woken_by_client {
        (&client, &accepted)
    } else {
        (&accepted, &client)
    };
    waker.write_all(b"wake up").expect("write");
    let mut got = [0u8; 7];
    reader.read_exact(&mut got).expect("read");
    assert_eq!(&got, b"wake up");
    reader.write_all(b"awake").expect("write back");
    let mut back = [0u8; 5];
    waker.read_exact(&mut back).expect("read back");
    assert_eq!(&back, b"awake");
    for sock in [&client, &accepted] {
        assert_eq!(sock.status().state, SessionState::Connected);
        assert!(!sock.status().passive);
    }
    assert_eq!(client.status().reconnections, 1, "one new connection");
}

// Proves: a client passivates; the client's own write wakes the session.
#[test]
fn passivated_by_the_client_and_woken_by_the_client() {
    run_bounded(LIMIT, || sleep_and_wake(true, true));
}

// Proves: a client passivates; the server's write wakes it (the server asks the client
// to reconnect over the control path).
#[test]
fn passivated_by_the_client_and_woken_by_the_server() {
    run_bounded(LIMIT, || sleep_and_wake(true, false));
}

// Proves: a server passivates; either side's write wakes it.
#[test]
fn passivated_by_the_server_and_woken_by_either() {
    run_bounded(LIMIT, || {
        sleep_and_wake(false, true);
        sleep_and_wake(false, false);
    });
}

/// How long a read may wait for bytes that were written before a passivation: they are
/// on their way, so far less than this; the old code stranded them until a write.
const READ_BOUND: Duration = Duration::from_secs(8);

/// Reads exactly `expected.len()` bytes from `sock` within [`READ_BOUND`] and compares
/// every one; `what` names the read in the failure.
fn read_all_within_bound(sock: &RSocket, expected: &[u8], what: &str) {
    sock.set_read_timeout(Some(READ_BOUND))
        .expect("set_read_timeout");
    let mut got = vec![0u8; expected.len()];
    let mut have = 0;
    while have < got.len() {
        match (&*sock).read(&mut got[have..]) {
            Ok(0) => panic!("{what}: end of stream after {have} of {} bytes", got.len()),
            Ok(n) => have += n,
            Err(e) => panic!(
                "{what}: read {have} of {} bytes, then {e} ({:?}); status {:?}",
                got.len(),
                e.kind(),
                sock.status()
            ),
        }
    }
    assert!(got == expected, "{what}: the bytes differ");
    sock.set_read_timeout(None).expect("set_read_timeout");
}

/// Calls `passivate()` on `sleeper`, then waits until `other` has heard a control
/// datagram sent after it (the PASSIVATE itself, or a request for an acknowledgement of
/// the bytes it waits for), so that the passivation has reached `other` before the test
/// reads: a read that came first would not show bytes stranded by it.
fn passivate_and_wait_until_heard(sleeper: &RSocket, other: &RSocket) {
    let start = Instant::now();
    sleeper.passivate().expect("passivate");
    wait_until(LIMIT / 2, "the peer to hear from the sleeper", || {
        let since = start.elapsed();
        other.status().last_heard < since
    });
}

/// Opens a session with `server`, has the server write `down` and the client `up`, and
/// passivates the client (see [`passivate_and_wait_until_heard`]): `(client, accepted)`.
fn write_both_then_passivate(server: &RServerSocket, up: &[u8], down: &[u8]) -> (RSocket, RSocket) {
    let (client, accepted) = connect_pair(server, server_addr(server), fast_config());
    (&accepted).write_all(down).expect("the server writes");
    (&client).write_all(up).expect("the client writes");
    passivate_and_wait_until_heard(&client, &accepted);
    (client, accepted)
}

/// `len` bytes of a pattern that `tag` makes differ from another's.
fn pattern(len: usize, tag: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ tag).collect()
}

/// Writes 8 KiB through `sleeper` and passivates it at once: the other end reads every
/// byte, and then both ends go passive, without a reconnection.
fn write_then_passivate(by_client: bool) {
    let server = bind();
    let (client, accepted) = connect_pair(&server, server_addr(&server), fast_config());
    let (sleeper, other) = sides(&client, &accepted, by_client);
    let data = pattern(8192, 0x5a);
    (&*sleeper).write_all(&data).expect("write");
    passivate_and_wait_until_heard(sleeper, other);
    read_all_within_bound(other, &data, "the bytes written before passivate()");
    wait_until_both_passive(sleeper, other);
    assert_eq!(client.status().reconnections, 0, "no new connection");
    for sock in [&client, &accepted] {
        assert_eq!(sock.status().unacknowledged, 0);
    }
}

// Proves (issue 18, item 4): bytes written just before `passivate()` are not stranded in
// the receiver's kernel buffer: the receiver reads all of them, and only then does the
// session go passive. (Before the fix the receiver closed its connection with the bytes
// unread, and its read waited until someone wrote again.)
#[test]
fn bytes_written_before_passivate_are_all_read_by_the_peer() {
    run_bounded(LIMIT, || {
        write_then_passivate(true);
        write_then_passivate(false);
    });
}

// Proves: a request followed by `passivate()` gets its response: the server reads the
// request and replies, and the client reads the reply, whichever comes first, the reply
// or the passivation's arrival at the server.
#[test]
fn a_request_followed_by_passivate_gets_its_response() {
    run_bounded(LIMIT, || {
        let server = bind();
        let (request, response) = (pattern(8192, 0x11), pattern(12_000, 0x22));
        let (client, accepted) = write_both_then_passivate(&server, &request, &[]);
        read_all_within_bound(&accepted, &request, "the request");
        (&accepted)
            .write_all(&response)
            .expect("write the response");
        read_all_within_bound(&client, &response, "the response");
    });
}

// Proves: bytes in flight both ways when one side passivates are all read: the side that
// receives the passivation keeps its connection until its own bytes are acknowledged.
// Here the passivating client's bytes are read (so it asks the server to go passive)
// while the server's are still unread at the client; the client then reads them all.
#[test]
fn bytes_in_flight_both_ways_at_passivation_are_all_read() {
    run_bounded(LIMIT, || {
        let server = bind();
        let (up, down) = (pattern(8192, 0x33), pattern(8192, 0x44));
        let (client, accepted) = write_both_then_passivate(&server, &up, &down);
        read_all_within_bound(&accepted, &up, "the client's bytes");
        // The client's bytes are acknowledged: its passivation is on its way to the server,
        // whose own bytes the client has not read yet.
        wait_until(LIMIT / 2, "the client's bytes to be acknowledged", || {
            client.status().unacknowledged == 0
        });
        read_all_within_bound(&client, &down, "the server's bytes");
        wait_until_both_passive(&client, &accepted);
        assert_eq!(client.status().reconnections, 0, "no new connection");
    });
}
