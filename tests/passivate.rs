//! Passivation (issue 8, item 6; the paper's future work): a session without a TCP
//! connection, on purpose, until one side writes.

use std::io::{Read, Write};
use std::time::Duration;

use robust_tcp::{RSocket, SessionState};
use robust_tcp_testkit::bounded::{run_bounded, wait_until};
use robust_tcp_testkit::session::{bind, connect_pair, fast_config, server_addr};

const LIMIT: Duration = Duration::from_secs(30);

fn passive(sock: &RSocket) -> bool {
    let status = sock.status();
    status.state == SessionState::Passive && status.passive
}

/// Passivates through `sleeper`, waits until both ends are passive, then has `waker` write
/// and `reader` read: the session comes back on a new connection, and it works both ways.
fn sleep_and_wake(by_client: bool, woken_by_client: bool) {
    let server = bind();
    let (client, accepted) = connect_pair(&server, server_addr(&server), fast_config());
    let (sleeper, other) = if by_client {
        (&client, &accepted)
    } else {
        (&accepted, &client)
    };
    sleeper.passivate().expect("passivate");
    wait_until(LIMIT / 2, "both ends to be passive", || {
        passive(sleeper) && passive(other)
    });
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
