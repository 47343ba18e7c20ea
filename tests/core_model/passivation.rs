//! Passivation: the connection closes once neither side has unread bytes.

use std::time::Duration;

use robust_tcp::protocol::control::ControlKind;
use robust_tcp::protocol::session::Session;

use crate::pair::{kinds_sent, run_for, Pair};

/// Whether end `i` rests passive: no connection, on purpose, and none wanted.
fn resting(pair: &Pair, i: usize) -> bool {
    let end = &pair.ends[i];
    let status = end.status(pair.now);
    !end.is_connected() && status.passive && !end.needs_connection()
}

#[test]
fn a_passivation_closes_the_connection_only_once_neither_side_has_unread_bytes() {
    // Issue 18, item 4: bytes in flight both ways when the client passivates. Neither end
    // may close its connection while the other has not read what it sent: those bytes
    // would be lost with the connection, and nobody reconnects while passive.
    let mut pair = Pair::opened(16 << 10, 8 << 10);
    let since = pair.captured.len();
    pair.write(0, 3000);
    pair.write(1, 2000);
    let now = pair.now;
    pair.ends[0].passivate(now);
    pair.deliver_control(|| false);
    assert!(
        pair.ends.iter().all(Session::is_connected),
        "nothing read yet"
    );
    assert!(
        !kinds_sent(&pair, 0, since).contains(&ControlKind::Passivate(0)),
        "PASSIVATE before the client's bytes were read"
    );
    // The server reads the client's bytes: the client asks it to go passive, but its own
    // bytes are unread at the client, so it keeps the connection and does not confirm.
    pair.read(1, usize::MAX);
    pair.deliver_control(|| false);
    assert!(kinds_sent(&pair, 0, since).contains(&ControlKind::Passivate(0)));
    assert!(
        pair.ends.iter().all(Session::is_connected),
        "the server's bytes are unread"
    );
    assert!(!kinds_sent(&pair, 1, since).contains(&ControlKind::Conf));
    // The client reads them: the server confirms and closes, the client closes too.
    pair.read(0, usize::MAX);
    pair.deliver_control(|| false);
    assert_eq!(pair.read[0], pair.written[1]);
    assert_eq!(pair.read[1], pair.written[0]);
    assert!(resting(&pair, 0) && resting(&pair, 1));
    // And they stay so: heartbeats only, no reconnection, no giving up.
    run_for(&mut pair, Duration::from_secs(30), true);
    assert!(resting(&pair, 0) && resting(&pair, 1));
    // A write wakes the session: the client reconnects and the bytes arrive.
    pair.write(1, 100);
    pair.deliver_control(|| false);
    assert!(pair.ends[0].needs_connection());
    pair.cut();
    pair.settle();
    assert_eq!(pair.read[0], pair.written[1]);
}

#[test]
fn a_passive_client_cut_before_its_bytes_were_read_reconnects_to_deliver_them() {
    // The cut loses the bytes in flight; the passivation stands: the client reconnects,
    // resends, and goes passive once the server has read them.
    let mut pair = Pair::opened(16 << 10, 8 << 10);
    pair.write(0, 3000);
    pair.ends[0].passivate(pair.now);
    pair.cut();
    assert!(pair.ends[0].needs_connection(), "its bytes are undelivered");
    pair.reconnect();
    pair.read(1, usize::MAX);
    pair.deliver_control(|| false);
    assert_eq!(pair.read[1], pair.written[0]);
    assert!(resting(&pair, 0) && resting(&pair, 1));
}

#[test]
fn a_write_after_the_passivate_went_out_gives_that_connection_up() {
    // The server may close the connection on the PASSIVATE at any time: bytes written to
    // it would be lost there. The client reconnects instead, and they arrive.
    let mut pair = Pair::opened(16 << 10, 8 << 10);
    let now = pair.now;
    pair.ends[0].passivate(now); // nothing unacknowledged: the PASSIVATE goes at once
    pair.transmit();
    pair.write(0, 100);
    assert!(!pair.ends[0].is_connected());
    assert!(pair.ends[0].needs_connection());
    pair.deliver_control(|| false); // the PASSIVATE arrives now: the server closes
    pair.cut();
    pair.settle();
    assert_eq!(pair.read[1], pair.written[0]);
    assert!(!pair.ends[0].status(pair.now).passive);
}
