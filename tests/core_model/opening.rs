//! An opening aborted before the server answered.

use std::time::{Duration, Instant};

use robust_tcp::protocol::auth::{SessionKeys, NONCE_LEN};
use robust_tcp::protocol::control::{ControlKind, ControlMessage, MAX_LEN};
use robust_tcp::protocol::session::{End, Limits, ReadGate, Role, Session};

use crate::pair::{CID, DEAD_AFTER, SECRET, SERVER_ADDR};

/// A client session whose opening the server has not answered yet.
fn opening_client(now: Instant) -> Session {
    let limits = Limits {
        send_buffer: 16 << 10,
        send_buffer_max: 16 << 10,
        ack_threshold: 8 << 10,
        give_up_after: None,
        dead_after: Some(DEAD_AFTER),
        linger: Duration::from_secs(3600),
    };
    let keys = SessionKeys::derive(&SECRET, &[9; NONCE_LEN], Role::Client).control;
    Session::new(End::Client(None), 0, 0, limits, keys, now)
}

/// The kinds of the datagrams `end` sends now, as the server reads them.
fn client_sends(end: &mut Session, now: Instant) -> Vec<ControlKind> {
    let keys = SessionKeys::derive(&SECRET, &[9; NONCE_LEN], Role::Server).control;
    let mut out = [0; MAX_LEN];
    let mut kinds = Vec::new();
    while let Some((n, to)) = end.poll_datagram(&mut out, now) {
        assert_eq!(to, SERVER_ADDR);
        kinds.push(
            ControlMessage::open(&out[..n], &keys.recv)
                .expect("genuine")
                .1
                .kind,
        );
    }
    kinds
}

#[test]
fn an_aborted_opening_retries_until_its_reset_can_go_and_takes_no_connection() {
    // Issue 18, item 5: the server may have accepted the session at the HELLO; only its
    // answer names the CID the RESET needs.
    let now = Instant::now();
    let mut client = opening_client(now);
    client.reset(robust_tcp::Error::Aborted, now);
    assert!(
        client_sends(&mut client, now).is_empty(),
        "nowhere to send yet"
    );
    assert!(
        client.needs_connection(),
        "retries its opening to deliver the RESET"
    );
    assert!(!client.is_finished());
    // The retried opening is answered: the RESET goes at once; the connection is not used.
    client.opened(CID, SERVER_ADDR, now);
    client.handle_resume(0, 1, now);
    assert!(!client.is_connected());
    assert!(!client.needs_connection());
    assert_eq!(client_sends(&mut client, now), [ControlKind::Reset]);
    assert!(matches!(client.read_gate(), ReadGate::Failed(_)));
}

#[test]
fn an_aborted_opening_stops_retrying_once_the_opening_fails_or_the_reset_lapses() {
    let now = Instant::now();
    // Refused (the session ended on the server), or given up: nobody to tell.
    let mut refused = opening_client(now);
    refused.reset(robust_tcp::Error::Aborted, now);
    refused.fail(robust_tcp::Error::UnknownSession);
    assert!(!refused.needs_connection());
    assert!(refused.is_finished());
    // No answer ever: the RESET's own tries bound it (about 20 s).
    let mut unanswered = opening_client(now);
    unanswered.reset(robust_tcp::Error::Aborted, now);
    let mut t = now;
    while !unanswered.is_finished() {
        assert!(unanswered.needs_connection());
        t = unanswered
            .poll_timeout()
            .expect("a deadline while it retries");
        unanswered.handle_timeout(t);
        assert!(
            t - now < Duration::from_secs(30),
            "retried past its RESET's tries"
        );
    }
    assert!(!unanswered.needs_connection());
    assert!(t - now > Duration::from_secs(10));
}
