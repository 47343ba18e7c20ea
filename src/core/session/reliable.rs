//! Control messages on their way out: the outbox of datagrams to send, and the messages
//! that need the peer's confirmation with their retransmission timers.
//!
//! This is the one place where a [`ControlMessage`] is built, so every datagram of a
//! session carries its CID and its side the same way.
//!
//! Invariants:
//! - every entry of `awaiting_conf` has a kind that needs confirmation and a distinct id;
//!   ids come from `next_id`, which wraps (far more messages than are ever outstanding).
//! - an entry's `interval` lies in `[RETRANSMIT_INITIAL, RETRANSMIT_MAX]` and its `due` is
//!   at most `interval` after its last (re)transmission.
//! - `outbox` holds datagrams in the order they are to be sent; the engine drains it after
//!   every call into the session.
//! - `awaiting_conf` stays small whatever a peer does: the session keeps one entry of each
//!   kind at most (a HALF_CLOSE gives way to the CLOSE), save RECONNECT, of which it keeps
//!   two (see `Session::ask_to_reconnect`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::core::control::{ControlKind, ControlMessage};

/// First retransmission delay of a message that needs confirmation.
const RETRANSMIT_INITIAL: Duration = Duration::from_millis(100);
/// Retransmission delays double up to this.
const RETRANSMIT_MAX: Duration = Duration::from_secs(2);

/// A message sent until the peer confirms it.
#[derive(Clone, Copy, Debug)]
struct AwaitingConf {
    id: u16,
    kind: ControlKind,
    due: Instant,
    interval: Duration,
    attempts: u32,
}

/// The session's outgoing control messages (see the module doc for its invariants).
#[derive(Debug)]
pub(super) struct Reliable {
    cid: u32,
    from_server: bool,
    next_id: u16,
    awaiting_conf: Vec<AwaitingConf>,
    outbox: VecDeque<ControlMessage>,
}

impl Reliable {
    /// Messages of session `cid`, sent by its server side if `from_server`.
    pub(super) fn new(cid: u32, from_server: bool) -> Self {
        Reliable {
            cid,
            from_server,
            next_id: 0,
            awaiting_conf: Vec::new(),
            outbox: VecDeque::new(),
        }
    }

    /// The session's CID (0 on a client until its opening is answered).
    pub(super) fn cid(&self) -> u32 {
        self.cid
    }

    /// The session's CID is `cid` from now on: every message built later carries it.
    pub(super) fn set_cid(&mut self, cid: u32) {
        self.cid = cid;
    }

    /// Queues a message that is sent once: an ACK or a REQ_ACK (id 0), or a CONF (the id
    /// of the message it confirms).
    pub(super) fn send_once(&mut self, kind: ControlKind, id: u16) {
        let msg = self.message(kind, id);
        self.outbox.push_back(msg);
    }

    /// A message of this session. Every datagram of the session is built here.
    pub(super) fn message(&self, kind: ControlKind, id: u16) -> ControlMessage {
        ControlMessage {
            cid: self.cid,
            from_server: self.from_server,
            id,
            kind,
        }
    }

    /// Queues a message that is retransmitted until confirmed.
    pub(super) fn send(&mut self, kind: ControlKind, now: Instant) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.awaiting_conf.push(AwaitingConf {
            id,
            kind,
            due: now + RETRANSMIT_INITIAL,
            interval: RETRANSMIT_INITIAL,
            attempts: 0,
        });
        self.send_once(kind, id);
    }

    /// The peer confirmed message `id`: returns its kind, unless it was not awaited.
    pub(super) fn confirm(&mut self, id: u16) -> Option<ControlKind> {
        let i = self.awaiting_conf.iter().position(|m| m.id == id)?;
        Some(self.awaiting_conf.swap_remove(i).kind)
    }

    /// Stops retransmitting the messages `which` selects.
    pub(super) fn forget(&mut self, which: impl Fn(ControlKind) -> bool) {
        self.awaiting_conf.retain(|m| !which(m.kind));
    }

    /// Whether a RESET still waits for its confirmation.
    /// How many messages await the peer's confirmation.
    pub(super) fn awaiting(&self) -> usize {
        self.awaiting_conf.len()
    }

    pub(super) fn resetting(&self) -> bool {
        self.awaiting_conf
            .iter()
            .any(|m| m.kind == ControlKind::Reset)
    }

    /// The peer is reachable again: what it has not confirmed goes out now, with fresh
    /// retransmission timers and a fresh count of attempts.
    pub(super) fn rewind(&mut self, now: Instant) {
        for i in 0..self.awaiting_conf.len() {
            let Some(m) = self.awaiting_conf.get_mut(i) else {
                break;
            };
            m.due = now + RETRANSMIT_INITIAL;
            m.attempts = 0;
            m.interval = RETRANSMIT_INITIAL;
            let (id, kind) = (m.id, m.kind);
            self.send_once(kind, id);
        }
    }

    /// When the next retransmission is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.awaiting_conf.iter().map(|m| m.due).min()
    }

    /// Retransmits what is due at `now`, doubling each delay. A farewell (a message for
    /// which `farewell` gives a number of tries) that went unconfirmed that many times is
    /// dropped instead; the kinds dropped are returned.
    pub(super) fn retransmit(
        &mut self,
        now: Instant,
        farewell: impl Fn(ControlKind) -> Option<u32>,
    ) -> Vec<ControlKind> {
        let mut dropped = Vec::new();
        let mut i = 0;
        while let Some(m) = self.awaiting_conf.get_mut(i) {
            if m.due > now {
                i += 1;
                continue;
            }
            if farewell(m.kind).is_some_and(|tries| m.attempts >= tries) {
                let kind = self.awaiting_conf.swap_remove(i).kind;
                log::debug!("session {}: {kind:?} never confirmed; giving up", self.cid);
                dropped.push(kind);
                continue;
            }
            m.attempts += 1;
            m.interval = (m.interval * 2).min(RETRANSMIT_MAX);
            m.due = now + m.interval;
            let (id, kind) = (m.id, m.kind);
            self.send_once(kind, id);
            i += 1;
        }
        dropped
    }

    /// The next datagram to send, if any.
    pub(super) fn poll_transmit(&mut self) -> Option<ControlMessage> {
        self.outbox.pop_front()
    }
}
