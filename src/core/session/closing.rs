//! Closing and failing a session (PROTOCOL.md section 7): the application's shutdown and
//! close, the announcement of our end of stream, lingering, and failure with or without a
//! RESET. The states these move through are in `lifecycle.rs`.

use std::time::Instant;

use super::lifecycle::Closing;
use super::Session;
use crate::core::control::ControlKind;
use crate::error::Error;

/// How often a farewell (a CLOSE once every byte is acknowledged, a RESET) is
/// retransmitted before the sender stops waiting for its confirmation: about 20 s of
/// tries. The peer has all the data; it learns of the end when it next reconnects (and is
/// refused).
const FAREWELL_TRIES: u32 = 14;
/// The same for a CLOSE sent after the peer's own CLOSE: about 300 ms of tries.
const PEER_GONE_CLOSE_TRIES: u32 = 2;

impl Session {
    /// The application shut down writing: the peer reads up to here, then end of stream.
    pub fn shutdown_write(&mut self, now: Instant) {
        self.shut_writing(now);
        self.advance_close(now);
    }

    /// Shuts writing down (wakes a passive session), unless it was already, and asks for
    /// the acknowledgement of the bytes the peer was not asked for yet.
    fn shut_writing(&mut self, now: Instant) {
        self.wake(now);
        if self.send.closing.write_shut().is_none() {
            self.send.closing.shut_writing(self.send.buf.end());
            if !self.send.buf.is_empty() && !self.send.asked_for_all_sent() {
                // The receiver acknowledges only every `ack_threshold` bytes: ask for the
                // rest, and keep asking while lingering. (Not again for what the last
                // request named: a write that reached half the buffer asked for it just
                // now, and the timer repeats that request.)
                self.request_ack(now);
            }
        }
    }

    /// The application shut down reading: reads return end of stream from now on.
    pub fn shutdown_read(&mut self) {
        self.recv.read_shut = true;
    }

    /// The application dropped its last handle.
    pub fn close(&mut self, now: Instant) {
        self.recv.read_shut = true;
        self.shut_writing(now);
        self.send.closing.close(now);
        self.advance_close(now);
        if self.recv.unacknowledged() && self.fatal.is_none() {
            // Nothing here reads any more: the peer learns at once how much was read, so
            // that its session can end without asking.
            self.send_ack();
        }
    }

    /// Fails the session for good, telling nobody; every later call reports `error`.
    ///
    /// On a session that failed already and is still opening, it says that the opening
    /// retried to deliver its RESET failed too (refused, or given up: see
    /// [`needs_connection`](Self::needs_connection)): nobody can be told, so the RESET is
    /// dropped and the session can end.
    pub fn fail(&mut self, error: Error) {
        if self.fatal.is_none() {
            self.fatal = Some(error);
        } else if self.is_opening() {
            self.reliable.forget(|kind| kind == ControlKind::Reset);
        }
        self.link.lost();
        self.reliable
            .forget(|kind| matches!(kind, ControlKind::Reconnect(_)));
    }

    /// Fails the session and tells the peer with a RESET.
    pub fn reset(&mut self, error: Error, now: Instant) {
        if self.fatal.is_none() {
            self.fail(error);
            self.reliable.send(ControlKind::Reset, now);
        }
    }

    /// The server refused to resume the session (it does not know it: it restarted, or
    /// the session ended there; or it found our count impossible). `error` says which.
    pub fn handle_resume_refused(&mut self, error: Error) {
        if let Some(total) = self.send.closing.write_shut() {
            if self.send.buf.is_empty() && self.recv.all_read() {
                // Both directions were complete: the session ended there while we lingered.
                self.send.closing = Closing::Ended { total };
                return;
            }
        }
        self.fail(error);
    }

    /// Announces the end of our stream: HALF_CLOSE once every byte written is
    /// acknowledged; CLOSE at once when the application closed, because from then on
    /// nothing here reads, and a peer blocked writing to us must learn it (as TCP's RST
    /// tells it) instead of waiting for acknowledgements that never come.
    pub(super) fn advance_close(&mut self, now: Instant) {
        if self.fatal.is_some() {
            return;
        }
        let Some(kind) = self.send.next_announcement(self.recv.peer_closed) else {
            return;
        };
        if matches!(kind, ControlKind::Close(_)) {
            // A CLOSE carries the same total and supersedes a pending HALF_CLOSE.
            self.reliable
                .forget(|kind| matches!(kind, ControlKind::HalfClose(_)));
        }
        self.reliable.send(kind, now);
    }

    /// When a closed session that has not finished stops lingering.
    pub(super) fn linger_ends(&self) -> Option<Instant> {
        if self.fatal.is_some() || self.is_finished() {
            return None;
        }
        self.send
            .closing
            .closed_at()?
            .checked_add(self.limits.linger)
    }

    /// How many tries each farewell gets before the session stops waiting for its
    /// confirmation: a RESET's, and a CLOSE's, if it is a farewell now.
    ///
    /// A CLOSE is given up on only once the session is connected and every byte is
    /// acknowledged (or the peer closed too, and reads none of them): until then the peer
    /// still needs its total. Without a connection too, once the peer closed and every
    /// byte both ways is through: such a session reconnects no more (see
    /// `needs_connection`), so its CLOSE is all it has left to say, and it must not wait
    /// out its linger limit for a confirmation from a peer that most likely ended.
    ///
    /// After the peer's own CLOSE it lapses after a few tries: the peer's application is
    /// gone, and its session, which needs nothing more from us once our final ACK came,
    /// has most likely ended already; nobody would confirm it, and a session that waited
    /// out every try would linger some 20 s after each exchange in which the peer closed
    /// first (a server that answers and hangs up), thousands of them under load.
    pub(super) fn farewell_tries(&self) -> impl Fn(ControlKind) -> Option<u32> {
        let spent = self.recv.peer_closed && self.send.buf.is_empty();
        let close_tries = if !self.link.connected() {
            spent.then_some(FAREWELL_TRIES)
        } else if self.recv.peer_closed {
            Some(PEER_GONE_CLOSE_TRIES)
        } else {
            self.send.buf.is_empty().then_some(FAREWELL_TRIES)
        };
        move |kind| match kind {
            ControlKind::Close(_) => close_tries,
            ControlKind::Reset => Some(FAREWELL_TRIES),
            _ => None,
        }
    }
}
