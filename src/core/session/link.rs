//! The link: which TCP connection carries the session, and its history of failures.
//!
//! Invariants:
//! - `disconnected_since` is `Some` only while not `connected`: set when the connection
//!   in use fails, cleared when the session resumes.
//! - `epoch` names the connection in use while `connected`, else the last one used; it
//!   only changes when the session resumes on a new connection.
//! - `reconnections` counts the resumptions, never decreases.
//! - `passivate_sent_on` and `peer_passivated` name connections by epoch: each matters
//!   only while that connection is the one in use.

use std::time::{Duration, Instant};

/// The session's TCP connection, as the core sees it (see the module doc).
#[derive(Debug)]
pub(super) struct Link {
    /// Number of the TCP connection in use (the server counts; the client adopts).
    pub(super) epoch: u32,
    /// Whether a TCP connection currently carries the session.
    pub(super) connected: bool,
    /// When the session lost its connection, while it has none.
    disconnected_since: Option<Instant>,
    pub(super) reconnections: u64,
    pub(super) last_failure: Option<String>,
    /// Passive: the session goes (or went) without a connection on purpose, and nobody
    /// reconnects until one side has something to send.
    pub(super) passive: bool,
    /// The connection our PASSIVATE named: the peer may close it any time from then on.
    pub(super) passivate_sent_on: Option<u32>,
    /// The peer's PASSIVATE of connection `.0`, message id `.1`, not yet confirmed: we
    /// confirm it, and close, once every byte we sent is acknowledged.
    pub(super) peer_passivated: Option<(u32, u16)>,
}

impl Link {
    /// A link whose first connection, number `epoch`, is up.
    pub(super) fn new(epoch: u32) -> Self {
        Link {
            epoch,
            connected: true,
            disconnected_since: None,
            reconnections: 0,
            last_failure: None,
            passive: false,
            passivate_sent_on: None,
            peer_passivated: None,
        }
    }

    /// When the session lost its connection, while it has none.
    pub(super) fn disconnected_since(&self) -> Option<Instant> {
        self.disconnected_since
    }

    /// The connection in use, if any.
    pub(super) fn current(&self) -> Option<u32> {
        self.connected.then_some(self.epoch)
    }

    /// Connection `epoch` failed for `reason`; returns whether it was the one in use (a
    /// report about an older connection changes nothing).
    pub(super) fn failed(&mut self, epoch: u32, reason: &str, now: Instant) -> bool {
        if self.current() != Some(epoch) {
            return false;
        }
        self.connected = false;
        self.disconnected_since = Some(now);
        self.last_failure = Some(reason.to_owned());
        true
    }

    /// The session failed: no connection carries it any more.
    pub(super) fn lost(&mut self) {
        self.connected = false;
    }

    /// The session moved to connection `epoch`.
    pub(super) fn resumed(&mut self, epoch: u32) {
        self.epoch = epoch;
        self.connected = true;
        self.disconnected_since = None;
        self.reconnections += 1;
        self.peer_passivated = None;
    }

    /// The peer's PASSIVATE of the connection in use awaiting our confirmation: its id.
    pub(super) fn peer_passivation(&self) -> Option<u16> {
        let (epoch, id) = self.peer_passivated?;
        (self.current() == Some(epoch)).then_some(id)
    }

    /// Whether our PASSIVATE named the connection in use.
    pub(super) fn passivate_sent(&self) -> bool {
        self.connected && self.passivate_sent_on == Some(self.epoch)
    }

    /// When a session disconnected for `limit` gives up (a time too far in the future to
    /// represent is never).
    pub(super) fn give_up_at(&self, limit: Option<Duration>) -> Option<Instant> {
        self.disconnected_since?.checked_add(limit?)
    }
}
