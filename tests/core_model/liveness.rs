//! Heartbeats, a silent peer, and the probes of an end without a connection.

use std::collections::VecDeque;
use std::time::Duration;

use robust_tcp::protocol::auth::{SessionKeys, NONCE_LEN};
use robust_tcp::protocol::control::{ControlKind, ControlMessage};
use robust_tcp::protocol::session::{Role, Session};

use crate::pair::{run_for, Pair, DEAD_AFTER, SECRET};

#[test]
fn heartbeats_keep_an_idle_session_alive_at_one_datagram_per_second() {
    let mut pair = Pair::new(4096, 1024);
    pair.deliver_control(|| false);
    let sent = run_for(&mut pair, Duration::from_secs(60), true);
    assert!(pair.ends.iter().all(Session::is_connected));
    for n in sent {
        // One heartbeat per third of `dead_after`: about 60 in a minute.
        assert!((55..=65).contains(&n), "{sent:?} datagrams in 60 s");
    }
}

#[test]
fn a_silent_peer_fails_the_connection_after_dead_after_and_no_sooner() {
    let mut pair = Pair::new(4096, 1024);
    pair.write(0, 1000);
    pair.deliver_control(|| false);
    let start = pair.now;
    // Everything is lost from now on: no datagram, no TCP byte gets through.
    while pair.ends.iter().all(Session::is_connected) {
        pair.tick(100);
        pair.transmit();
        pair.datagrams.iter_mut().for_each(VecDeque::clear);
        assert!(
            pair.now - start <= DEAD_AFTER,
            "still connected after {DEAD_AFTER:?}"
        );
    }
    assert_eq!(pair.now - start, DEAD_AFTER);
    assert!(pair.ends.iter().all(|end| !end.is_connected()));
    let status = pair.ends[0].status(pair.now);
    assert!(
        status
            .last_failure
            .as_deref()
            .is_some_and(|f| f.contains("heard nothing")),
        "{status:?}"
    );
}

#[test]
fn a_reconnecting_client_probes_and_learns_when_the_server_answers() {
    let mut pair = Pair::new(4096, 1024);
    pair.cut();
    // An outage: the client keeps probing, once a second, and nobody answers.
    let start = pair.captured.len();
    let sent = run_for(&mut pair, Duration::from_secs(30), false);
    assert!((28..=32).contains(&sent[0]), "client probes {sent:?}");
    // A server without a connection sends no heartbeats: only its RECONNECT, with its
    // retransmissions backing off.
    let client_keys = SessionKeys::derive(&SECRET, &[9; NONCE_LEN], Role::Client).control;
    for (from, d) in &pair.captured[start..] {
        if *from == 1 {
            let (_, msg) = ControlMessage::open(d, &client_keys.recv).expect("genuine");
            assert!(matches!(msg.kind, ControlKind::Reconnect(_)), "{msg:?}");
        }
    }
    assert_eq!(pair.ends[0].heard_since_disconnected(), None);
    // The path is back: the next probe is answered.
    run_for(&mut pair, Duration::from_millis(1100), true);
    let heard = pair.ends[0].heard_since_disconnected();
    assert!(heard.is_some_and(|t| t <= pair.now), "{heard:?}");
    pair.reconnect();
    assert_eq!(pair.ends[0].heard_since_disconnected(), None);
    pair.write(1, 700);
    pair.settle();
    assert_eq!(pair.read[0], pair.written[1]);
}

#[test]
fn either_end_keeps_an_idle_session_alive_when_only_it_has_heartbeats() {
    for dead_after in [[Some(DEAD_AFTER), None], [None, Some(DEAD_AFTER)]] {
        let mut pair = Pair::with_dead_after(4096, 1024, dead_after);
        pair.deliver_control(|| false);
        let sent = run_for(&mut pair, Duration::from_secs(60), true);
        assert!(
            pair.ends.iter().all(Session::is_connected),
            "{dead_after:?}"
        );
        for n in sent {
            // One heartbeat an interval from the end that has them, one answer from the
            // other.
            assert!(
                (35..=65).contains(&n),
                "{dead_after:?}: {sent:?} datagrams in 60 s"
            );
        }
        assert!(!pair.ends[0].datagrams_missing());
    }
}

#[test]
fn a_client_that_hears_no_datagram_for_two_intervals_finds_them_missing() {
    let mut pair = Pair::new(4096, 1024);
    pair.deliver_control(|| false);
    // The server's datagrams are lost (UDP dropped one way); TCP bytes still flow.
    let start = pair.now;
    while !pair.ends[0].datagrams_missing() {
        pair.tick(100);
        pair.write(1, 10);
        pair.read(0, usize::MAX);
        pair.transmit();
        pair.datagrams[1].clear();
        assert!(pair.now - start <= DEAD_AFTER, "never found missing");
    }
    assert!(
        pair.now - start < DEAD_AFTER,
        "found missing only at the silence limit"
    );
    assert!(
        pair.ends.iter().all(Session::is_connected),
        "the bytes keep it alive"
    );
    // One datagram from the server clears it.
    run_for(&mut pair, Duration::from_millis(1100), true);
    assert!(!pair.ends[0].datagrams_missing());
}

#[test]
fn a_closed_session_without_a_connection_probes_once_an_interval() {
    // The server is gone: the client's REQ_ACKs for its unacknowledged bytes would be
    // asked of nobody. Only its heartbeat probes and its CLOSE's backing-off
    // retransmissions go out.
    let mut pair = Pair::new(4096, 1024);
    pair.write(0, 3000);
    let now = pair.now;
    pair.ends[0].close(now);
    pair.cut();
    let sent = run_for(&mut pair, Duration::from_secs(20), false);
    // 20 probes and the CLOSE's retransmissions (100 ms doubling to 2 s, 15 in 20 s):
    // 36 here; a REQ_ACK every 200 ms on top made it 136.
    assert!(sent[0] <= 40, "{sent:?} datagrams in 20 s");
}
