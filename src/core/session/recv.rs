//! The receive side of a session: what the application read, what we acknowledged, and
//! where the peer said its stream ends.
//!
//! Invariants:
//! - `ack_sent <= received`: an acknowledgement never claims more than was read.
//! - `peer_final`, once set, is at least `received` when set and never changes; the
//!   application reads up to it and then sees end of stream.
//! - `peer_closed` implies that the peer announced CLOSE, whose total set `peer_final`
//!   if it was plausible.

use std::time::Instant;

use crate::core::counter::{from_wire, to_wire};

/// The incoming half of a session (see the module doc for its invariants).
#[derive(Debug, Default)]
pub(super) struct RecvSide {
    /// Bytes the application has read.
    pub(super) received: u64,
    /// The count carried by our last acknowledgement.
    ack_sent: u64,
    /// The peer's total, once it announced HALF_CLOSE or CLOSE.
    pub(super) peer_final: Option<u64>,
    /// The peer sent CLOSE: it reads nothing more.
    pub(super) peer_closed: bool,
    /// The application shut down reading.
    pub(super) read_shut: bool,
    pub(super) reader_blocked_since: Option<Instant>,
}

impl RecvSide {
    /// The application read `n` bytes; returns whether an acknowledgement is due, that is
    /// whether `threshold` bytes were read since the last one.
    pub(super) fn read(&mut self, n: usize, threshold: usize) -> bool {
        self.received += n as u64;
        self.received - self.ack_sent >= threshold as u64
    }

    /// The count for an acknowledgement about to be sent, recorded as sent.
    pub(super) fn ack_count(&mut self) -> u32 {
        self.ack_sent = self.received;
        to_wire(self.received)
    }

    /// Whether every byte the peer will ever send has been read.
    pub(super) fn all_read(&self) -> bool {
        self.peer_final == Some(self.received)
    }

    /// The peer announced the end of its stream at `total` (32 bits of it).
    pub(super) fn peer_end(&mut self, total: u32) {
        // The peer cannot have sent less than we read, nor 4 GiB beyond it unacknowledged.
        let window_end = self.received.saturating_add(u64::from(u32::MAX));
        if let Some(total) = from_wire(total, self.received, window_end) {
            self.peer_final.get_or_insert(total);
        }
    }
}
