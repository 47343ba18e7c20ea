//! Coalescing of small writes: while the application writes back to back with Nagle on,
//! its bytes wait in the send buffer and go to TCP in one system call per batch.
//!
//! A system call per small write is what a byte stream over TCP costs most: at 64-byte
//! writes on loopback the call is about all of it, and the session's own work per write
//! (the copy into the send buffer, the locks, the clock) would add half as much again.
//! Nagle's algorithm already lets TCP hold small segments back while earlier bytes are in
//! flight; this holds them one step earlier, in the send buffer, where they are anyway,
//! and the same way: only for an application that has Nagle on, and never the first
//! write after a pause, which goes out at once as it would on TCP.
//!
//! Invariants:
//! - `held_since` is `Some` only while some of the written bytes have not been handed to
//!   the connection because a write chose to hold them, and names when the oldest did.
//! - Bytes are never held past `held_since + HOLD_AT_MOST`: then the engine sends them.
//! - `last_held` is `Some` only while nothing is held, for at most `HOLD_AT_MOST` after
//!   the start of the last hold.

use std::time::{Duration, Instant};

/// Writes that come within this span of the previous write call's end (or of the last
/// send) count as back to back: the application is streaming. Of the order of a loopback
/// round trip, within which Nagle would hold a small segment too; an application that
/// pauses longer between writes gets a system call per write, as without coalescing.
const BACK_TO_BACK: Duration = Duration::from_micros(50);
/// The longest bytes are held when no further write, read, flush or shutdown sends them:
/// the latency the tail of a burst may gain. Far below Nagle's own worst case (a delayed
/// acknowledgement, 40 ms on Linux), and long enough that the engine's timer, which sends
/// them then, wakes rarely while a stream goes on (once per this span at most).
pub(super) const HOLD_AT_MOST: Duration = Duration::from_millis(1);
/// A batch goes out once it reaches this size: from 64 KiB on, a write costs TCP hardly
/// more per byte than a larger one.
const BATCH: usize = 64 * 1024;

/// Whether, and since when, written bytes wait in the send buffer (see the module doc).
#[derive(Debug, Default)]
pub(super) struct Coalescing {
    /// When the application's last write call, or the last send to TCP, happened.
    last_active: Option<Instant>,
    /// Whether the latest write came back to back with the activity before it.
    back_to_back: bool,
    /// When the oldest held bytes were written, while bytes are held.
    held_since: Option<Instant>,
    /// When the last hold began, while none is on and its deadline has not come: the
    /// engine's timer is still armed for it (see [`release_at`](Self::release_at)).
    last_held: Option<Instant>,
}

impl Coalescing {
    /// A write call is made at `now`.
    pub(super) fn on_write(&mut self, now: Instant) {
        self.back_to_back = self
            .last_active
            .is_some_and(|t| now.saturating_duration_since(t) < BACK_TO_BACK);
        self.last_active = Some(now);
    }

    /// Bytes went to TCP at `now`; `all_sent` if the connection now has every byte.
    pub(super) fn on_sent(&mut self, all_sent: bool, now: Instant) {
        self.last_active = Some(now);
        if all_sent {
            self.end_hold();
        }
    }

    fn end_hold(&mut self) {
        if let Some(t) = self.held_since.take() {
            self.last_held = Some(t);
        }
    }

    /// Whether the latest write may leave the `unsent` bytes in the buffer, given the
    /// application's Nagle setting and the buffer's `capacity` and free `space`; records
    /// the hold. A batch is sent at [`BATCH`], or at a quarter of the capacity if that is
    /// less (acknowledgements must keep coming while the buffer fills), and before the
    /// buffer is full (a writer must never wait for room behind bytes nobody sends).
    pub(super) fn hold(
        &mut self,
        nagle: bool,
        unsent: usize,
        capacity: usize,
        space: usize,
        now: Instant,
    ) -> bool {
        let limit = BATCH.min(capacity / 4);
        let hold = nagle && self.back_to_back && unsent > 0 && unsent < limit && space > 0;
        if hold {
            if self.held_since.is_none() {
                self.held_since = Some(now);
                self.last_held = None;
            }
        } else {
            // The caller sends every unsent byte now.
            self.end_hold();
        }
        hold
    }

    /// Whether bytes are held.
    pub(super) fn holding(&self) -> bool {
        self.held_since.is_some()
    }

    /// When the engine must look: when the held bytes must go out. With none held, the
    /// deadline a hold that ended lately had: a stream holds batch after batch, and each
    /// new hold then finds the engine's timer armed already (a deadline no later than its
    /// own), instead of waking the engine thread to arm it, once per batch.
    pub(super) fn release_at(&self) -> Option<Instant> {
        self.held_since.or(self.last_held).map(|t| t + HOLD_AT_MOST)
    }

    /// Stops holding if it is due at `now`, or `on_demand`; returns whether held bytes
    /// are to be sent now.
    pub(super) fn release(&mut self, now: Instant, on_demand: bool) -> bool {
        let released = self.held_since.is_some();
        if self.release_at().is_some_and(|t| t <= now) {
            // The engine's timer for it has run: nothing to keep armed.
            self.held_since = None;
            self.last_held = None;
        } else if on_demand {
            self.end_hold();
        } else {
            return false;
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAGLE: bool = true;
    const ROOMY: usize = 1 << 20;

    fn streaming(t0: Instant) -> Coalescing {
        let mut c = Coalescing::default();
        c.on_write(t0);
        c.on_write(t0 + Duration::from_micros(1));
        c
    }

    #[test]
    fn the_first_write_after_a_pause_goes_out_at_once() {
        let t0 = Instant::now();
        let mut c = Coalescing::default();
        c.on_write(t0);
        assert!(!c.hold(NAGLE, 64, ROOMY, ROOMY, t0));
        c.on_sent(true, t0);
        c.on_write(t0 + BACK_TO_BACK);
        assert!(!c.hold(NAGLE, 64, ROOMY, ROOMY, t0 + BACK_TO_BACK));
        assert!(!c.holding());
    }

    #[test]
    fn back_to_back_writes_are_held_until_a_batch_is_full() {
        let t0 = Instant::now();
        let mut c = streaming(t0);
        assert!(c.hold(NAGLE, 64, ROOMY, ROOMY, t0));
        assert!(c.hold(NAGLE, BATCH - 1, ROOMY, ROOMY, t0));
        assert_eq!(c.release_at(), Some(t0 + HOLD_AT_MOST));
        assert!(!c.hold(NAGLE, BATCH, ROOMY, ROOMY, t0));
        assert!(!c.holding());
    }

    #[test]
    fn nothing_is_held_without_nagle_or_when_the_buffer_is_small_or_full() {
        let t0 = Instant::now();
        let mut c = streaming(t0);
        assert!(!c.hold(false, 64, ROOMY, ROOMY, t0));
        assert!(
            !c.hold(NAGLE, 4096, 16384, 8192, t0),
            "a quarter of capacity"
        );
        assert!(c.hold(NAGLE, 4095, 16384, 8192, t0));
        assert!(!c.hold(NAGLE, 64, ROOMY, 0, t0), "a full buffer");
        assert!(
            !c.hold(NAGLE, 64, 3, 3, t0),
            "a buffer too small to batch in"
        );
    }

    #[test]
    fn held_bytes_are_released_when_due_and_once() {
        let t0 = Instant::now();
        let mut c = streaming(t0);
        assert!(c.hold(NAGLE, 64, ROOMY, ROOMY, t0));
        let due = t0 + HOLD_AT_MOST;
        assert!(!c.release(due - Duration::from_nanos(1), false));
        assert!(c.release(due, false));
        assert_eq!(c.release_at(), None, "no deadline in the past is left");
        assert!(!c.release(due, false));
        assert!(c.hold(NAGLE, 64, ROOMY, ROOMY, due));
        assert!(c.release(due, true), "released on demand");
        assert!(!c.release(due, true));
    }

    #[test]
    fn the_timer_of_a_hold_that_ended_runs_out_before_it_goes() {
        let t0 = Instant::now();
        let mut c = streaming(t0);
        assert!(c.hold(NAGLE, 64, ROOMY, ROOMY, t0));
        let later = t0 + Duration::from_micros(300);
        c.on_sent(true, later);
        assert!(!c.holding());
        assert_eq!(c.release_at(), Some(t0 + HOLD_AT_MOST), "still armed");
        // The next hold of the stream: its own, later deadline.
        c.on_write(later);
        assert!(c.hold(NAGLE, 64, ROOMY, ROOMY, later));
        assert_eq!(c.release_at(), Some(later + HOLD_AT_MOST));
        c.on_sent(true, later);
        // Nothing held when the timer fires: it is not armed again.
        assert!(!c.release(later + HOLD_AT_MOST, false));
        assert_eq!(c.release_at(), None);
    }

    #[test]
    fn a_send_that_leaves_nothing_unsent_ends_the_hold() {
        let t0 = Instant::now();
        let mut c = streaming(t0);
        assert!(c.hold(NAGLE, 64, ROOMY, ROOMY, t0));
        c.on_sent(false, t0);
        assert!(c.holding());
        c.on_sent(true, t0);
        assert!(!c.holding());
    }
}
