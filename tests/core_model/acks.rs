//! When acknowledgements are asked for and sent.

use std::time::Duration;

use robust_tcp::protocol::control::ControlKind;
use robust_tcp::protocol::session::{ReadGate, Session};

use crate::pair::{kinds_sent, requests_sent, run_for, Pair};

#[test]
fn a_small_request_and_half_close_are_acknowledged_without_waiting_for_a_timer() {
    // A 64-byte request, then shutdown(Write): the REQ_ACK that shutdown sends overtakes
    // the bytes (UDP against TCP), so when it arrives nothing has been read yet. The
    // acknowledgement must still come as soon as the server has read the request, not
    // at the next REQ_ACK 200 ms later: the virtual clock never moves in this test.
    let mut pair = Pair::opened(16 << 10, 8 << 10);
    let start = pair.now;
    pair.write(0, 64);
    let now = pair.now;
    pair.ends[0].shutdown_write(now);
    pair.deliver_control(|| false); // the REQ_ACK, ahead of the bytes
    pair.read(1, usize::MAX);
    pair.deliver_control(|| false); // the ACK, the HALF_CLOSE and its CONF
    assert_eq!(pair.read[1], pair.written[0]);
    assert_eq!(pair.unacknowledged(0), 0);
    assert!(matches!(pair.ends[1].read_gate(), ReadGate::Eof));
    // The server replies and drops its end; the client reads the reply to its end.
    pair.write(1, 300);
    let now = pair.now;
    pair.ends[1].close(now);
    pair.deliver_control(|| false);
    pair.read(0, usize::MAX);
    pair.deliver_control(|| false);
    assert_eq!(pair.read[0], pair.written[1]);
    assert!(matches!(pair.ends[0].read_gate(), ReadGate::Eof));
    assert_eq!(pair.unacknowledged(1), 0);
    assert!(pair.ends[1].is_finished(), "the server's session is done");
    assert_eq!(pair.now, start, "a timer had to run");
}

#[test]
fn a_writer_asks_for_an_acknowledgement_at_half_its_buffer() {
    // The receiver's own threshold is the whole buffer: it would acknowledge only once
    // the writer is full. The writer asks when half its buffer is unacknowledged, and the
    // receiver answers once it has read that far, with no timer.
    let mut pair = Pair::opened(16 << 10, 16 << 10);
    let start = pair.now;
    let since = pair.captured.len();
    pair.write(0, 4 << 10);
    pair.transmit();
    assert_eq!(
        requests_sent(&pair, 0, since),
        0,
        "asked before half the buffer"
    );
    pair.write(0, 4 << 10);
    pair.transmit();
    assert_eq!(
        requests_sent(&pair, 0, since),
        1,
        "one request at half the buffer"
    );
    pair.deliver_control(|| false);
    assert_eq!(pair.unacknowledged(0), 8 << 10);
    pair.read(1, usize::MAX);
    pair.deliver_control(|| false);
    assert_eq!(pair.unacknowledged(0), 0);
    assert_eq!(pair.now, start);
}

#[test]
fn a_reader_that_goes_idle_acknowledges_after_a_short_delay() {
    // 100 bytes, far below every threshold, and nobody asks: the reader acknowledges
    // them once it has read nothing more for a while (40 ms), not at once and not never.
    let mut pair = Pair::opened(16 << 10, 8 << 10);
    pair.write(0, 100);
    pair.deliver_control(|| false);
    pair.read(1, usize::MAX);
    pair.deliver_control(|| false);
    assert_eq!(pair.unacknowledged(0), 100, "not at once");
    pair.tick(30);
    pair.deliver_control(|| false);
    assert_eq!(pair.unacknowledged(0), 100, "not before 40 ms");
    pair.tick(10);
    pair.deliver_control(|| false);
    assert_eq!(pair.unacknowledged(0), 0, "at 40 ms");
}

#[test]
fn a_writer_asks_once_per_half_buffer_however_small_its_writes() {
    let mut pair = Pair::opened(16 << 10, 16 << 10);
    let since = pair.captured.len();
    for _ in 0..16 {
        pair.write(0, 1024);
        pair.transmit();
    }
    assert_eq!(pair.ends[0].write_space(), Ok(0));
    assert_eq!(requests_sent(&pair, 0, since), 2, "at 8 KiB and at 16 KiB");
    // The reader reads it all: one acknowledgement answers both.
    pair.deliver_control(|| false);
    pair.read(1, usize::MAX);
    pair.transmit();
    let acks = kinds_sent(&pair, 1, since);
    assert_eq!(acks, [ControlKind::Ack(16 << 10)], "{acks:?}");
}

#[test]
fn a_request_is_answered_when_the_reads_reach_it_and_not_before() {
    let mut pair = Pair::opened(16 << 10, 16 << 10);
    pair.write(0, 10_000); // one request, at 8192: half the buffer
    pair.deliver_control(|| false);
    let since = pair.captured.len();
    pair.read(1, 6000);
    pair.transmit();
    assert_eq!(
        kinds_sent(&pair, 1, since),
        [],
        "answered before the reads reached it"
    );
    pair.read(1, 2191);
    pair.transmit();
    assert_eq!(kinds_sent(&pair, 1, since), []);
    pair.read(1, 1);
    pair.transmit();
    assert_eq!(kinds_sent(&pair, 1, since), [ControlKind::Ack(8192)]);
    // A blocked writer asks for every byte it sent.
    let now = pair.now;
    pair.ends[0].writer_blocked(now);
    pair.deliver_control(|| false);
    pair.read(1, 1807);
    pair.transmit();
    assert_eq!(kinds_sent(&pair, 1, since), [ControlKind::Ack(8192)]);
    pair.read(1, 1);
    pair.transmit();
    let answers = [ControlKind::Ack(8192), ControlKind::Ack(10_000)];
    assert_eq!(kinds_sent(&pair, 1, since), answers);
    // A request for what was read already is answered at once.
    pair.ends[0].writer_unblocked();
    pair.ends[0].writer_blocked(now);
    pair.deliver_control(|| false);
    let answers = [
        ControlKind::Ack(8192),
        ControlKind::Ack(10_000),
        ControlKind::Ack(10_000),
    ];
    assert_eq!(kinds_sent(&pair, 1, since), answers);
}

#[test]
fn a_writer_asks_at_each_half_buffer_however_its_writes_are_cut() {
    // One write of the whole buffer: the requests still mark each half, so the reader
    // acknowledges the first half while it reads the second (a sliding window, not a
    // stop and wait per buffer).
    let mut pair = Pair::opened(16 << 10, 1 << 20);
    let since = pair.captured.len();
    pair.write(0, 16 << 10);
    pair.deliver_control(|| false);
    let asked: Vec<_> = kinds_sent(&pair, 0, since)
        .into_iter()
        .filter_map(|k| match k {
            ControlKind::ReqAck { sent, .. } => Some(sent),
            _ => None,
        })
        .collect();
    assert_eq!(asked, [8 << 10, 16 << 10]);
    pair.read(1, 8 << 10);
    pair.deliver_control(|| false);
    assert_eq!(pair.unacknowledged(0), 8 << 10);
    assert_eq!(pair.ends[0].write_space(), Ok(8 << 10));
}

#[test]
fn a_heartbeat_is_answered_at_once_even_with_bytes_unread() {
    // The server reads nothing; the client's heartbeats must still be answered, or it
    // would take its peer for silent.
    let mut pair = Pair::opened(16 << 10, 16 << 10);
    pair.write(0, 10_000);
    pair.deliver_control(|| false);
    let since = pair.captured.len();
    run_for(&mut pair, Duration::from_secs(10), true);
    let answers = kinds_sent(&pair, 1, since)
        .into_iter()
        .filter(|k| *k == ControlKind::Ack(0))
        .count();
    assert!(answers >= 9, "{answers} answers in 10 s");
    assert!(pair.ends.iter().all(Session::is_connected));
    assert!(!pair.ends[0].datagrams_missing());
}
