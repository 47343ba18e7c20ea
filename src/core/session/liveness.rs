//! Liveness: heartbeats while the session is quiet, and the silence after which the
//! connection in use counts as failed.
//!
//! TCP reports a path that died silently (a blackhole, a NAT that forgot its mapping, a
//! peer that vanished) only after minutes; rocks (seed 002) showed that heartbeats on the
//! control path detect it in seconds. Each end sends a datagram when it has sent none for
//! a third of `dead_after`, so an idle session costs one small datagram per interval each
//! way, and a live peer is heard at least that often; it also keeps NAT mappings for the
//! control path alive. An end that has heard nothing from its peer (no authentic datagram,
//! no byte read from TCP, no new connection) for `dead_after` treats the connection as
//! failed.

use std::time::{Duration, Instant};

/// How many heartbeats fit in `dead_after`: losing two in a row is not yet a failure.
const HEARTBEATS_PER_SILENCE: u32 = 3;

/// What one end knows about its peer's signs of life (see the module doc).
#[derive(Debug)]
pub(super) struct Liveness {
    /// The silence that fails a connection; `None`: no heartbeats and no silence limit,
    /// the paper's behaviour (only TCP reports failures).
    dead_after: Option<Duration>,
    /// When the peer was last heard from.
    last_heard: Instant,
    /// When this end last sent a datagram.
    last_sent: Instant,
}

impl Liveness {
    /// The peer was just heard from (the session opened at `now`).
    pub(super) fn new(dead_after: Option<Duration>, now: Instant) -> Self {
        Liveness {
            dead_after,
            last_heard: now,
            last_sent: now,
        }
    }

    /// The peer showed a sign of life at `now`.
    pub(super) fn heard(&mut self, now: Instant) {
        self.last_heard = self.last_heard.max(now);
    }

    /// This end sent a datagram at `now`.
    pub(super) fn sent(&mut self, now: Instant) {
        self.last_sent = self.last_sent.max(now);
    }

    /// When the peer was last heard from.
    pub(super) fn last_heard(&self) -> Instant {
        self.last_heard
    }

    /// When the next heartbeat is due, if heartbeats are on.
    pub(super) fn next_heartbeat(&self) -> Option<Instant> {
        let interval = self.dead_after? / HEARTBEATS_PER_SILENCE;
        self.last_sent.checked_add(interval)
    }

    /// When the peer's silence fails the connection in use, if ever.
    pub(super) fn dead_at(&self) -> Option<Instant> {
        self.last_heard.checked_add(self.dead_after?)
    }

    /// The silence limit, for the failure's description.
    pub(super) fn dead_after(&self) -> Option<Duration> {
        self.dead_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_come_three_times_per_silence() {
        let t0 = Instant::now();
        let mut l = Liveness::new(Some(Duration::from_secs(3)), t0);
        assert_eq!(l.next_heartbeat(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(l.dead_at(), Some(t0 + Duration::from_secs(3)));
        l.sent(t0 + Duration::from_millis(500));
        l.heard(t0 + Duration::from_secs(2));
        // An earlier report never moves a time back.
        l.heard(t0 + Duration::from_secs(1));
        assert_eq!(l.next_heartbeat(), Some(t0 + Duration::from_millis(1500)));
        assert_eq!(l.dead_at(), Some(t0 + Duration::from_secs(5)));
    }

    #[test]
    fn without_a_limit_nothing_is_due() {
        let l = Liveness::new(None, Instant::now());
        assert_eq!((l.next_heartbeat(), l.dead_at()), (None, None));
    }
}
