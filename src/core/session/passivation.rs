//! Passivation (PROTOCOL.md section 5, "Passivation"): a session that goes without a
//! connection on purpose, once neither side has a byte on it that the other has not read,
//! and wakes when one side has something to send.

use std::time::Instant;

use super::{Role, Session};
use crate::core::control::ControlKind;

impl Session {
    /// The application asked for the session to go passive (paper section 6): no TCP
    /// connection, and nobody reconnects until one side writes. Nothing written before is
    /// stranded: the connection closes only once neither side has a byte on it that the
    /// other has not read.
    ///
    /// So the PASSIVATE goes out once every byte written here is acknowledged (read by
    /// the peer's application; until then it asks for acknowledgements); the peer confirms
    /// it, and closes its side, once every byte it wrote is acknowledged in turn; this
    /// side closes at the confirmation. A cut meanwhile strands nothing either: a side with
    /// unacknowledged bytes reconnects (a server asks its client to) to deliver them. A
    /// side still delivering its own bytes stays passive across the new connection and
    /// goes on; otherwise the new connection wakes the session. A write here before the
    /// connection closed ends the request (see `wake`). Without a connection and with
    /// nothing to deliver, the session just stops reconnecting.
    pub fn passivate(&mut self, now: Instant) {
        if self.fatal.is_some() || self.link.passive {
            return;
        }
        self.link.passive = true;
        self.advance_passivation(now);
    }

    /// Whether the session is passive with nothing of its own left to deliver: it rests
    /// without a connection, on purpose. A passive session whose bytes are not all
    /// acknowledged still needs a connection to deliver them (after a cut, say), and stays
    /// passive across it.
    pub(super) fn resting(&self) -> bool {
        self.link.passive && self.send.buf.is_empty()
    }

    /// Whether the connection in use is to close for a passivation, asked for here or by
    /// the peer, once every byte sent on it is acknowledged.
    pub(super) fn passivating(&self) -> bool {
        self.link.connected() && (self.link.passive || self.link.peer_passivation().is_some())
    }

    /// Moves a passivation on, as far as the acknowledgements allow: the connection closes
    /// only once neither side has a byte on it that the other has not read. Each side
    /// first has every byte it wrote acknowledged (asking for it; the timer asks again),
    /// then: the side that asked sends PASSIVATE; the side that received it confirms it
    /// and closes its connection; the asking side closes at the confirmation. Neither
    /// writes on that connection after its step (a write here wakes the session first).
    pub(super) fn advance_passivation(&mut self, now: Instant) {
        if self.fatal.is_some() || !self.passivating() {
            return;
        }
        let Some(epoch) = self.link.current() else {
            return;
        };
        let asked = self.link.peer_passivation();
        if asked.is_none() && self.link.passivate_sent() {
            return; // Ours is out: the peer's confirmation closes the connection.
        }
        if !self.send.buf.is_empty() {
            if !self.send.asked_for_all_sent() {
                self.request_ack(now);
            }
            return;
        }
        match asked {
            Some(id) => {
                self.link.peer_passivated = None;
                self.link.passive = true;
                self.reliable.send_once(ControlKind::Conf, id);
                self.handle_connection_failed(epoch, "the peer passivated the session", now);
            }
            None => {
                self.link.passivate_sent_on = Some(epoch);
                self.reliable.send(ControlKind::Passivate(epoch), now);
            }
        }
    }

    /// The session has something to send: a passive one wakes. A client then reconnects;
    /// a server without a connection asks its client to, with a RECONNECT.
    ///
    /// A session whose PASSIVATE named the connection in use gives that connection up:
    /// the peer may be closing it on our request (it confirms by closing), and bytes
    /// written to it now would be lost with it, with nobody reconnecting. It fails it
    /// instead, and reconnects (or asks its client to) as after a cut.
    pub(super) fn wake(&mut self, now: Instant) {
        if !self.link.passive || self.fatal.is_some() {
            return;
        }
        self.link.passive = false;
        self.reliable
            .forget(|kind| matches!(kind, ControlKind::Passivate(_)));
        if self.link.passivate_sent() {
            let reason = "woken while the peer may close the connection it was asked to";
            self.handle_connection_failed(self.link.epoch, reason, now);
            return;
        }
        if self.role == Role::Server && !self.link.connected() {
            self.ask_to_reconnect(self.link.epoch, now);
        }
    }
}
