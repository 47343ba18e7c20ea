//! The link: which TCP connection carries the session, and its history of failures.
//!
//! Whether a connection carries the session is one [`LinkState`]: connected, disconnected
//! since a time (the outage that `give_up_after` counts), or dropped (the session failed
//! while connected). See `lifecycle.rs` for how it moves with the rest of the session.
//!
//! Invariants:
//! - `epoch` names the connection in use while `Connected`, else the last one used; it
//!   only changes when the session resumes on a new connection.
//! - `reconnections` counts the resumptions, never decreases.
//! - `passivate_sent_on` and `peer_passivated` name connections by epoch: each matters
//!   only while that connection is the one in use.

use std::time::{Duration, Instant};

/// Whether a TCP connection carries the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LinkState {
    /// Connection `Link::epoch` carries it.
    Connected,
    /// The connection in use failed at `since`, and none carries the session yet.
    Disconnected { since: Instant },
    /// The session failed while connected: its connection is given up, and no outage is
    /// timed (a failed session never resumes).
    Dropped,
}

/// The session's TCP connection, as the core sees it (see the module doc).
#[derive(Debug)]
pub(super) struct Link {
    /// Number of the TCP connection in use (the server counts; the client adopts).
    pub(super) epoch: u32,
    /// Whether a TCP connection carries the session.
    state: LinkState,
    pub(super) reconnections: u64,
    /// How long the session went without a connection before the latest resumption.
    pub(super) last_outage: Option<Duration>,
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
            state: LinkState::Connected,
            reconnections: 0,
            last_outage: None,
            last_failure: None,
            passive: false,
            passivate_sent_on: None,
            peer_passivated: None,
        }
    }

    /// When the session lost its connection, while it has none.
    pub(super) fn disconnected_since(&self) -> Option<Instant> {
        match self.state {
            LinkState::Disconnected { since } => Some(since),
            LinkState::Connected | LinkState::Dropped => None,
        }
    }

    /// Whether a TCP connection carries the session.
    pub(super) fn connected(&self) -> bool {
        self.state == LinkState::Connected
    }

    /// The connection in use, if any.
    pub(super) fn current(&self) -> Option<u32> {
        self.connected().then_some(self.epoch)
    }

    /// Connection `epoch` failed for `reason`; returns whether it was the one in use (a
    /// report about an older connection changes nothing).
    pub(super) fn failed(&mut self, epoch: u32, reason: &str, now: Instant) -> bool {
        if self.current() != Some(epoch) {
            return false;
        }
        self.state = LinkState::Disconnected { since: now };
        self.last_failure = Some(reason.to_owned());
        true
    }

    /// The session failed: no connection carries it any more.
    pub(super) fn lost(&mut self) {
        if self.state == LinkState::Connected {
            self.state = LinkState::Dropped;
        }
    }

    /// The session moved to connection `epoch` at `now`.
    pub(super) fn resumed(&mut self, epoch: u32, now: Instant) {
        if let Some(since) = self.disconnected_since() {
            self.last_outage = Some(now.saturating_duration_since(since));
        }
        self.epoch = epoch;
        self.state = LinkState::Connected;
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
        self.connected() && self.passivate_sent_on == Some(self.epoch)
    }

    /// When a session disconnected for `limit` gives up (a time too far in the future to
    /// represent is never).
    pub(super) fn give_up_at(&self, limit: Option<Duration>) -> Option<Instant> {
        self.disconnected_since()?.checked_add(limit?)
    }
}
