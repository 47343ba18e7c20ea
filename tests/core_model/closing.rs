//! Closing: what a server says before it knows its client's address, confirmations, the
//! reader woken at the end, a shutdown's request, a closed server's last acknowledgement,
//! a spent client's CLOSE.

use std::collections::VecDeque;
use std::time::Duration;

use robust_tcp::protocol::session::ReadGate;

use crate::pair::{requests_sent, run_for, Pair};

#[test]
fn what_a_server_says_before_it_knows_its_client_address_goes_out_once_it_does() {
    // Connect, request, response, close, all before the server has heard from its
    // client's control address (the client's first datagram is still on its way): the
    // server's acknowledgement of the request and its CLOSE had nowhere to go. They must
    // go out as soon as that datagram arrives (within the allowance), not at a
    // retransmission timer; and the client, which would otherwise wait for an
    // acknowledgement from a server session that has ended, must finish too. The
    // virtual clock never moves.
    let mut pair = Pair::new(16 << 10, 8 << 10);
    let start = pair.now;
    request_reply_and_server_close(&mut pair);
    let now = pair.now;
    pair.ends[0].close(now);
    pair.deliver_control(|| false);
    assert_eq!(pair.read[1], pair.written[0]);
    assert_eq!(pair.read[0], pair.written[1]);
    assert_eq!(pair.unacknowledged(0), 0, "the request was acknowledged");
    assert!(pair.ends[1].is_finished(), "the server's session is done");
    assert!(pair.ends[0].is_finished(), "the client's session is done");
    assert_eq!(pair.now, start, "a timer had to run");
}

#[test]
fn a_session_closed_after_its_peer_closed_does_not_wait_long_for_a_confirmation() {
    // A server answers and hangs up; its session ends as soon as the client has
    // acknowledged every byte and confirmed the server's CLOSE, often before the client's
    // own CLOSE arrives, which nobody then confirms. The client must not linger through
    // the 20 s of tries a CLOSE gets otherwise: under a load of such exchanges, thousands
    // of lingering sessions would fill the engine.
    let mut pair = Pair::opened(16 << 10, 8 << 10);
    request_reply_and_server_close(&mut pair);
    pair.deliver_control(|| false);
    assert!(pair.ends[1].is_finished(), "the server's session is done");
    // The server's session is gone: nothing the client sends is answered any more.
    let now = pair.now;
    pair.ends[0].close(now);
    let start = pair.now;
    while !pair.ends[0].is_finished() {
        assert!(
            pair.now - start < Duration::from_secs(1),
            "the client still lingers after {:?}",
            pair.now - start
        );
        pair.tick(50);
        pair.transmit();
        pair.datagrams = [VecDeque::new(), VecDeque::new()];
    }
}

/// Connect-request-response up to the client's last read: a 64-byte request read by the
/// server, an 8 KiB reply, the server's close, the datagrams of both delivered, the
/// reply read.
fn request_reply_and_server_close(pair: &mut Pair) {
    pair.write(0, 64);
    pair.read(1, usize::MAX);
    pair.write(1, 8 << 10);
    let now = pair.now;
    pair.ends[1].close(now);
    pair.deliver_control(|| false);
    pair.read(0, usize::MAX);
}

#[test]
fn a_reader_is_woken_once_when_the_peer_closes_after_it_read_everything() {
    // A read blocked in the kernel when the peer's CLOSE arrives would otherwise wait
    // for the peer's FIN, which follows our confirmation: a round trip.
    let mut pair = Pair::opened(16 << 10, 8 << 10);
    pair.write(1, 300);
    pair.read(0, usize::MAX);
    assert!(!pair.ends[0].poll_end_of_stream(), "the stream goes on");
    let now = pair.now;
    pair.ends[1].close(now);
    pair.deliver_control(|| false);
    assert!(pair.ends[0].poll_end_of_stream(), "the CLOSE ends it");
    assert!(!pair.ends[0].poll_end_of_stream(), "once per connection");
    assert!(matches!(pair.ends[0].read_gate(), ReadGate::Eof));

    // Bytes still unread when the CLOSE comes: the reader gets them first, and its next
    // read sees the end without blocking; the wake comes once they are read.
    let mut pair = Pair::opened(16 << 10, 8 << 10);
    pair.write(1, 300);
    let now = pair.now;
    pair.ends[1].close(now);
    pair.deliver_control(|| false);
    assert!(!pair.ends[0].poll_end_of_stream(), "300 bytes to read");
    pair.read(0, 100);
    assert!(!pair.ends[0].poll_end_of_stream(), "200 bytes to read");
    pair.read(0, usize::MAX);
    assert!(pair.ends[0].poll_end_of_stream());
}

#[test]
fn a_shutdown_asks_again_only_for_bytes_the_last_request_did_not_name() {
    // An 8 KiB reply in a 16 KiB buffer reaches the half-buffer mark, which asks for an
    // acknowledgement of all of it; the shutdown right after has nothing more to ask for
    // (the timer repeats the request if its answer is lost).
    let mut pair = Pair::opened(16 << 10, 16 << 10);
    let since = pair.captured.len();
    pair.write(1, 8 << 10);
    pair.transmit();
    assert_eq!(
        requests_sent(&pair, 1, since),
        1,
        "asked at half the buffer"
    );
    let now = pair.now;
    pair.ends[1].shutdown_write(now);
    pair.transmit();
    assert_eq!(requests_sent(&pair, 1, since), 1, "no second request");

    // Bytes beyond the last request: the shutdown asks for them.
    pair.write(0, 100);
    pair.transmit();
    let since = pair.captured.len();
    let now = pair.now;
    pair.ends[0].shutdown_write(now);
    pair.transmit();
    assert_eq!(requests_sent(&pair, 0, since), 1);
    // And the receiver reads everything and acknowledges it, the writer's timer repeating
    // nothing meanwhile.
    pair.read(0, usize::MAX);
    pair.read(1, usize::MAX);
    pair.deliver_control(|| false);
    assert_eq!(pair.unacknowledged(1), 0);
    assert_eq!(pair.unacknowledged(0), 0);
}

#[test]
fn a_closed_server_whose_last_acknowledgement_was_lost_with_the_connection_ends_soon() {
    // Issue 18, suspected: the server closes; its client reads every byte (it is spent:
    // nothing can move either way, so it never reconnects) and acknowledges, but the ACK
    // is lost and the connection fails. The server must not linger for its whole limit
    // (an hour here) for an acknowledgement its client would give if asked.
    let mut pair = Pair::opened(16 << 10, 8 << 10);
    pair.write(1, 3000);
    pair.ends[1].close(pair.now);
    pair.deliver_control(|| false); // the CLOSE and the REQ_ACK, and the CONF back
    pair.read(0, usize::MAX);
    assert_eq!(pair.read[0], pair.written[1]);
    pair.deliver_control(|| true); // the client's ACK is lost
    pair.cut();
    assert!(!pair.ends[0].needs_connection(), "the client is spent");
    assert!(matches!(pair.ends[0].read_gate(), ReadGate::Eof));
    run_for(&mut pair, Duration::from_secs(10), true);
    assert_eq!(pair.unacknowledged(1), 0);
    assert!(pair.ends[1].is_finished(), "the server still lingers");
}

#[test]
fn a_spent_client_without_a_connection_does_not_linger_for_a_close_nobody_confirms() {
    // Found by the simulation: the server answers and closes, and its session ends once
    // the client has acknowledged everything; then the client's connection fails, and its
    // own CLOSE goes to a session that is gone. The client is spent (nothing to send or
    // read: it never reconnects), and a CLOSE without a connection never lapsed: it
    // lingered its whole limit (an hour here), then gave the session up with a RESET.
    let mut pair = Pair::opened(16 << 10, 8 << 10);
    request_reply_and_server_close(&mut pair);
    pair.deliver_control(|| false);
    assert!(pair.ends[1].is_finished(), "the server's session is done");
    pair.cut();
    let now = pair.now;
    pair.ends[0].close(now);
    let start = pair.now;
    while !pair.ends[0].is_finished() {
        let waited = pair.now - start;
        assert!(
            waited < Duration::from_secs(30),
            "the client still lingers after {waited:?}"
        );
        pair.tick(250);
        pair.transmit();
        pair.datagrams = [VecDeque::new(), VecDeque::new()];
    }
    assert!(
        pair.ends[0].failure().is_none(),
        "{:?}",
        pair.ends[0].failure()
    );
}
