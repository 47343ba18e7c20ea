//! Control messages awaiting confirmation stay bounded: failed offers, passivations.

use std::collections::VecDeque;
use std::time::Duration;

use robust_tcp::protocol::control::ControlKind;

use crate::pair::{messages_sent, run_for, Pair};

/// The messages the server sent since `since` (an index into `captured`) that await
/// confirmation, each once, as (message id, kind): those pending, if the window spans a
/// retransmission interval.
fn pending_at_server(pair: &Pair, since: usize) -> Vec<(u16, ControlKind)> {
    let mut pending: Vec<(u16, ControlKind)> = messages_sent(pair, 1, since)
        .into_iter()
        .filter(|msg| msg.kind.needs_conf())
        .map(|msg| (msg.id, msg.kind))
        .collect();
    pending.sort_unstable_by_key(|&(id, _)| id);
    pending.dedup();
    pending
}

#[test]
fn failed_offers_leave_a_bounded_number_of_reconnects_pending() {
    // A peer that holds the session's keys (anyone may open a session) sends resuming
    // HELLOs with rising attempt numbers and never CONFIRMs: the first one aborts the live
    // connection, every one leaves a failed offer. However many there are, the server
    // keeps a constant number of RECONNECTs pending, and so sends a constant number of
    // datagrams per retransmission interval.
    let mut pair = Pair::opened(4096, 1024);
    let now = pair.now;
    assert!(pair.ends[1].handle_connection_failed(0, "aborted for a HELLO", now));
    const OFFERS: u32 = 2000;
    for epoch in 1..=OFFERS {
        pair.now += Duration::from_millis(1);
        let now = pair.now;
        pair.ends[1].handle_offer_failed(epoch, now);
        pair.transmit();
        pair.datagrams.iter_mut().for_each(VecDeque::clear);
    }
    // Past the first retransmissions, every pending RECONNECT goes out once per 2 s: over
    // 4 s, each pending one shows its id twice.
    run_for(&mut pair, Duration::from_secs(10), false);
    let since = pair.captured.len();
    let sent = run_for(&mut pair, Duration::from_secs(4), false);
    let pending = pending_at_server(&pair, since);
    assert!(
        pending.len() <= 2 && sent[1] <= 6,
        "{} RECONNECTs pending, {} datagrams sent in 4 s",
        pending.len(),
        sent[1]
    );
    // The ones kept are the ones a client may still use: the live connection that was
    // aborted, and the newest offer.
    let kinds: Vec<ControlKind> = pending.iter().map(|&(_, kind)| kind).collect();
    assert!(
        kinds.contains(&ControlKind::Reconnect(0))
            && kinds.contains(&ControlKind::Reconnect(OFFERS)),
        "{kinds:?}"
    );
}

#[test]
fn a_client_that_installed_the_newest_failed_offer_learns_that_it_failed() {
    // The client reconnected with attempt 5 after earlier attempts of its own failed:
    // it sent the CONFIRM for offer 5 and installed the connection, but the CONFIRM never
    // arrived. The server's RECONNECT for offer 5 must reach it, whatever older offers
    // failed before.
    let mut pair = Pair::opened(4096, 1024);
    pair.cut();
    let now = pair.now;
    for epoch in 1..=5 {
        pair.ends[1].handle_offer_failed(epoch, now);
    }
    let at = pair.ends[0]
        .check_resume(0)
        .expect("the server has sent nothing");
    pair.ends[0].handle_resume(at, 5, now);
    assert!(pair.ends[0].is_connected());
    run_for(&mut pair, Duration::from_secs(3), true);
    assert!(
        pair.ends[0].needs_connection(),
        "the client still uses a connection the server never took"
    );
}

#[test]
fn passivations_never_confirmed_leave_one_pending() {
    // The server's application passivates again and again; its client never confirms,
    // and reconnects each time (its connection was cut). A PASSIVATE for a connection
    // that is gone is moot: only the newest may stay pending.
    let mut pair = Pair::opened(4096, 1024);
    for _ in 0..50 {
        let now = pair.now;
        pair.ends[1].passivate(now);
        pair.transmit();
        pair.datagrams.iter_mut().for_each(VecDeque::clear);
        pair.cut();
        pair.reconnect();
    }
    run_for(&mut pair, Duration::from_secs(10), false);
    let since = pair.captured.len();
    run_for(&mut pair, Duration::from_secs(4), false);
    let pending = pending_at_server(&pair, since);
    // At most one: the RECONNECT for the last connection, which the silent client lost.
    assert!(pending.len() <= 1, "{} pending: {pending:?}", pending.len());
}
