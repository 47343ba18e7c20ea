//! The receive side of a session: what the application read, what we acknowledged, and
//! where the peer said its stream ends.
//!
//! Invariants:
//! - `ack_sent <= received`: an acknowledgement never claims more than was read.
//! - `peer_final`, once set, is at least `received` when set and never changes; the
//!   application reads up to it and then sees end of stream.
//! - `peer_closed` implies that the peer announced CLOSE, whose total set `peer_final`
//!   if it was plausible.
//! - `asked` holds the positions the peer asked for an acknowledgement at, each above
//!   `received`, strictly increasing, at most `MAX_ASKED` of them.

use std::time::{Duration, Instant};

use crate::core::counter::{from_wire, to_wire};

/// How long bytes read may stay unacknowledged once the application has stopped reading
/// them (it reads nothing more, or waits for more): TCP's shortest delayed ACK (Linux's
/// 40 ms). Long against the time an application takes to answer a request and read the
/// next, so a busy request/response session sends no datagram per round trip (its
/// acknowledgements come from the thresholds); short against the sender's 200 ms
/// requests, so an idle peer's send buffer empties soon.
pub(super) const IDLE_ACK_DELAY: Duration = Duration::from_millis(40);

/// How far from what we have read an acknowledgement request's position may lie: the
/// largest send buffer (the peer cannot have more unacknowledged), so that the 32 bits on
/// the wire stand for one position.
const REQUEST_WINDOW: u64 = 1 << 30;

/// How many requested positions are remembered. A sender asks at each half of its buffer
/// (each quarter over a long path), so up to five are pending at a time; past this, the
/// two highest merge into the higher, which costs an acknowledgement, never correctness.
const MAX_ASKED: usize = 6;

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
    /// Where the peer asked for acknowledgements, lowest first: `asked[..asked_len]`.
    asked: [u64; MAX_ASKED],
    asked_len: usize,
    /// When the application last read bytes.
    last_read: Option<Instant>,
    /// The connection on which a reader blocked in the kernel was woken because the stream
    /// had ended (see `Session::poll_end_of_stream`).
    end_woken_on: Option<u32>,
}

impl RecvSide {
    /// The application read `n` bytes at `now`; returns whether an acknowledgement is due:
    /// `threshold` bytes were read since the last one, or the reads reached the position
    /// the peer asked for one at.
    pub(super) fn read(&mut self, n: usize, threshold: usize, now: Instant) -> bool {
        if n == 0 {
            return false;
        }
        self.received += n as u64;
        self.last_read = Some(now);
        let reached = self.asked[..self.asked_len]
            .iter()
            .take_while(|&&at| at <= self.received)
            .count();
        self.asked.copy_within(reached..self.asked_len, 0);
        self.asked_len -= reached;
        reached > 0 || self.received - self.ack_sent >= threshold as u64
    }

    /// The peer asks for an acknowledgement once we have read up to `sent` (32 bits of
    /// it); returns whether to send it now. A position we have read, or one that cannot
    /// be the peer's (outside what it could hold unacknowledged), is answered at once;
    /// a later one when the reads reach it.
    pub(super) fn asked(&mut self, sent: u32) -> bool {
        let low = self.received.saturating_sub(REQUEST_WINDOW);
        let high = self.received.saturating_add(REQUEST_WINDOW);
        match from_wire(sent, low, high) {
            Some(at) if at > self.received => {
                self.remember_asked(at);
                false
            }
            _ => true,
        }
    }

    /// Adds `at` (above `received`) to the positions asked for, in order.
    fn remember_asked(&mut self, at: u64) {
        let pending = &self.asked[..self.asked_len];
        let i = pending.partition_point(|&p| p < at);
        if pending.get(i) == Some(&at) {
            return;
        }
        if self.asked_len == MAX_ASKED {
            // Full: the two highest positions, `at` among them, merge into the higher.
            let last = MAX_ASKED - 1;
            if i >= last {
                self.asked[last] = self.asked[last].max(at);
                return;
            }
            self.asked[last - 1] = self.asked[last];
            self.asked_len -= 1;
        }
        self.asked.copy_within(i..self.asked_len, i + 1);
        self.asked[i] = at;
        self.asked_len += 1;
    }

    /// Whether bytes were read since the last acknowledgement.
    pub(super) fn unacknowledged(&self) -> bool {
        self.received > self.ack_sent
    }

    /// When to acknowledge the bytes read and not yet acknowledged, if there are any: once
    /// the application has read nothing more for [`IDLE_ACK_DELAY`].
    pub(super) fn idle_ack_at(&self) -> Option<Instant> {
        if self.received == self.ack_sent {
            return None;
        }
        self.last_read?.checked_add(IDLE_ACK_DELAY)
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

    /// Whether a reader blocked on connection `epoch` must be woken (see
    /// `Session::poll_end_of_stream`); records that it is.
    pub(super) fn take_end_wake(&mut self, epoch: u32) -> bool {
        let due = self.all_read() && self.end_woken_on != Some(epoch);
        if due {
            self.end_woken_on = Some(epoch);
        }
        due
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_position_asked_for_is_answered_when_the_reads_reach_it() {
        let now = Instant::now();
        let mut r = RecvSide::default();
        assert!(!r.asked(8));
        assert!(!r.asked(16));
        assert!(!r.asked(12), "out of order");
        assert!(!r.asked(16), "again");
        assert!(!r.read(4, 1000, now));
        assert!(r.read(4, 1000, now), "at 8");
        assert!(!r.read(2, 1000, now));
        assert!(r.read(3, 1000, now), "past 12");
        assert!(!r.read(2, 1000, now));
        assert!(r.read(1, 1000, now), "at 16");
        assert!(r.asked(16), "read already: at once");
        assert!(r.asked(3), "read already: at once");
        assert!(!r.read(100, 1000, now), "nothing left to answer");
    }

    #[test]
    fn positions_asked_for_are_bounded_and_never_lost_entirely() {
        let now = Instant::now();
        let mut r = RecvSide::default();
        for at in 1..=100u64 {
            assert!(!r.asked(to_wire(at * 10)));
        }
        assert_eq!(r.asked_len, MAX_ASKED);
        assert_eq!(r.asked[..MAX_ASKED], [10, 20, 30, 40, 50, 1000]);
        assert!(!r.asked(25), "between: kept, the two highest below merge");
        assert_eq!(r.asked[..MAX_ASKED], [10, 20, 25, 30, 40, 1000]);
        assert!(
            !r.asked(500),
            "among the two highest: merged into the higher"
        );
        assert_eq!(r.asked[..MAX_ASKED], [10, 20, 25, 30, 40, 1000]);
        // The highest is kept: reading to it is answered.
        assert!(r.read(10, 1 << 20, now));
        assert!(r.read(20, 1 << 20, now));
        assert!(r.read(10, 1 << 20, now));
        assert!(!r.read(900, 1 << 20, now));
        assert_eq!(r.asked_len, 1);
        assert!(r.read(70, 1 << 20, now));
        assert_eq!(r.asked_len, 0);
    }

    #[test]
    fn a_position_that_cannot_be_the_peers_is_answered_at_once() {
        let now = Instant::now();
        let mut r = RecvSide::default();
        r.read(5000, usize::MAX, now);
        // 2 GiB ahead of what was read: beyond any send buffer.
        assert!(r.asked(to_wire(5000 + (2 << 30))));
        assert_eq!(r.asked_len, 0);
        // Just behind what was read: read already.
        assert!(r.asked(to_wire(4000)));
        // Ahead within the window: remembered.
        assert!(!r.asked(to_wire(5000 + (1 << 29))));
        assert_eq!(r.asked_len, 1);
    }
}
