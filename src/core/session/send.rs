//! The send side of a session: the bytes the application wrote, how far each connection
//! carried them, and how our end of the stream is announced.
//!
//! Invariants:
//! - `buf` holds the stream bytes `[acked, end)`; `acked <= tcp_sent <= end` while the
//!   session is connected, and `high_water` is the most ever handed to any connection, so
//!   `acked <= high_water <= end`: an acknowledgement beyond `high_water` is a lie.
//! - `unacked_since` holds `(end position, time)` of writes not yet acknowledged, oldest
//!   first, with strictly increasing positions all above `acked`.
//! - `closing` only moves forward (see `lifecycle.rs`); once writing is shut down, its
//!   total is the total ever written: `end` never grows past it.
//! - `asked_upto <= high_water`: the position our last acknowledgement request named.
//! - `emptied_at` is `Some` exactly while `buf` is empty.
//! - `acked_at_resize <= buf.acked()`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::coalesce::Coalescing;
use super::lifecycle::{Announcement, Closing};
use crate::core::control::ControlKind;
use crate::core::counter::to_wire;
use crate::core::send_buffer::{
    SendBuffer, ACK_STEPS, GROWS_FREELY_UPTO, LONG_PATH_ACK_STEPS, LONG_PATH_START,
    LONG_ROUND_TRIP, SHRINK_AFTER,
};

/// How often a sender that waits for acknowledgements asks for one again (the REQ_ACK or
/// the answering ACK may be lost).
const REQ_ACK_INTERVAL: Duration = Duration::from_millis(200);
/// Writes within this span share one entry in the unacknowledged-age queue, which keeps
/// that queue short however small the writes are.
const AGE_GRANULARITY: Duration = Duration::from_millis(1);

/// The outgoing half of a session (see the module doc for its invariants).
#[derive(Debug)]
pub(super) struct SendSide {
    /// Bytes written and not yet acknowledged: `[acked, end)` of the outgoing stream.
    pub(super) buf: SendBuffer,
    /// Outgoing stream position up to which the current connection has been written.
    pub(super) tcp_sent: u64,
    /// The most ever written to any connection: an acknowledgement beyond it is a lie.
    pub(super) high_water: u64,
    /// `(end position, time)` of writes not yet acknowledged, oldest first.
    unacked_since: VecDeque<(u64, Instant)>,
    /// How far the application closed its side, and how far its announcement got.
    pub(super) closing: Closing,
    /// Our FIN has been sent on this connection number.
    fin_sent_on: Option<u32>,
    pub(super) writer_blocked_since: Option<Instant>,
    /// When to ask for an acknowledgement again, while one is wanted.
    pub(super) next_req_ack: Option<Instant>,
    /// The position our last acknowledgement request asked the peer to read up to.
    asked_upto: u64,
    /// When the buffer last became empty, while it is.
    emptied_at: Option<Instant>,
    /// The acknowledged position when the buffer last changed size.
    acked_at_resize: u64,
    /// The path's round trip as last measured, if it has been (see
    /// `Session::handle_round_trip`).
    pub(super) round_trip: Option<Duration>,
    /// Whether small writes wait in the buffer for a batch.
    pub(super) coalescing: Coalescing,
    /// The capacity the buffer started with.
    initial: usize,
}

impl SendSide {
    /// An empty send side at `now`, whose buffer holds `capacity` bytes at first.
    pub(super) fn new(capacity: usize, now: Instant) -> Self {
        SendSide {
            buf: SendBuffer::new(capacity),
            tcp_sent: 0,
            high_water: 0,
            unacked_since: VecDeque::new(),
            closing: Closing::Open,
            fin_sent_on: None,
            writer_blocked_since: None,
            next_req_ack: None,
            asked_upto: 0,
            emptied_at: Some(now),
            acked_at_resize: 0,
            round_trip: None,
            coalescing: Coalescing::default(),
            initial: capacity,
        }
    }

    /// Whether the buffer is full and may grow up to `max` before a writer has to wait:
    /// what holds the writer back is the acknowledgements' round trip, not the path nor
    /// the reading application. The current connection took every byte written (the
    /// kernel has room: not while a writer is blocked in the kernel, nor without a
    /// connection), and the peer acknowledged at least a step of it ([`ack_step`]: half,
    /// or a quarter over a long path) since it last changed size (its application reads
    /// at the buffer's pace: one that reads slowly, or not at all, would only see its
    /// kernel's buffers fill, and a TCP window that stays closed for `TCP_USER_TIMEOUT`
    /// fails the connection on Linux). Over a path measured long, a buffer under
    /// [`LONG_PATH_START`] needs no acknowledgement: that much never closes a window.
    ///
    /// [`ack_step`]: Self::ack_step
    ///
    /// Past [`GROWS_FREELY_UPTO`], the path's round trip must also be long, or not known:
    /// the kernel's room alone does not show that the round trip holds the stream back,
    /// since a loopback connection's kernel buffers take megabytes while the reader lags,
    /// and a short round trip is covered already. (The round trip comes from a handshake
    /// or a path check, when nothing of the stream queues ahead of it: the time an
    /// acknowledgement takes during a stream is mostly the queue.)
    pub(super) fn may_grow(&self, connected: bool, max: usize) -> bool {
        let read_since = self.buf.acked() - self.acked_at_resize;
        let capacity = self.buf.capacity();
        connected
            && self.buf.space() == 0
            && self.tcp_sent == self.buf.end()
            && capacity < max
            && (read_since >= self.ack_step(max)
                || (self.long_path() && capacity < LONG_PATH_START))
            && (capacity < GROWS_FREELY_UPTO
                || self.round_trip.is_none_or(|rtt| rtt >= LONG_ROUND_TRIP))
    }

    /// Whether the path's round trip was measured, and is long.
    fn long_path(&self) -> bool {
        self.round_trip.is_some_and(|rtt| rtt >= LONG_ROUND_TRIP)
    }

    /// How many bytes apart acknowledgement requests go, and how many the peer must have
    /// acknowledged since the buffer last changed size for it to grow: half the
    /// capacity; a quarter over a path measured long while a stream grows the buffer,
    /// from its first growth until it reaches `max` ([`LONG_PATH_ACK_STEPS`] says why).
    /// Exchanges that never fill the initial buffer (requests and replies) keep halves,
    /// and so does a buffer at its maximum, the paper's fixed one among them.
    fn ack_step(&self, max: usize) -> u64 {
        let capacity = self.buf.capacity();
        let growing = self.initial < capacity && capacity < max;
        let steps = if growing && self.long_path() {
            LONG_PATH_ACK_STEPS
        } else {
            ACK_STEPS
        };
        (self.buf.capacity() as u64 / steps).max(1)
    }

    /// Doubles the buffer, up to `max`.
    pub(super) fn grow(&mut self, max: usize) {
        if self.buf.grow(max) {
            self.acked_at_resize = self.buf.acked();
        }
    }

    /// Appends as much of `data` as fits, recording when for the age queue.
    pub(super) fn write(&mut self, data: &[u8], now: Instant) -> usize {
        let n = self.buf.push(data);
        if n > 0 {
            self.emptied_at = None;
            let end = self.buf.end();
            match self.unacked_since.back_mut() {
                Some((last_end, at)) if now.saturating_duration_since(*at) < AGE_GRANULARITY => {
                    *last_end = end
                }
                _ => self.unacked_since.push_back((end, now)),
            }
        }
        n
    }

    /// The bytes `[from, from + n)` went out on connection `epoch` at `now`; `current` is
    /// the connection in use, if any.
    pub(super) fn sent(
        &mut self,
        epoch: u32,
        from: u64,
        n: usize,
        current: Option<u32>,
        now: Instant,
    ) {
        let end = (from + n as u64).min(self.buf.end());
        self.high_water = self.high_water.max(end);
        if current == Some(epoch) && from == self.tcp_sent {
            self.tcp_sent = end;
        }
        self.coalescing
            .on_sent(self.tcp_sent == self.buf.end(), now);
    }

    /// Drops the bytes before `upto`, acknowledged at `now`; returns whether that
    /// acknowledged anything new.
    pub(super) fn acknowledged(&mut self, upto: u64, now: Instant) -> bool {
        if !self.buf.ack(upto) {
            return false;
        }
        if self.buf.is_empty() {
            self.emptied_at = Some(now);
        }
        while self
            .unacked_since
            .front()
            .is_some_and(|&(end, _)| end <= upto)
        {
            self.unacked_since.pop_front();
        }
        true
    }

    /// The peer closed: whatever we still buffer will never be read, so it has no age.
    pub(super) fn forget_ages(&mut self) {
        self.unacked_since.clear();
    }

    /// When the oldest unacknowledged write was made.
    pub(super) fn oldest_unacknowledged(&self) -> Option<Instant> {
        self.unacked_since.front().map(|&(_, t)| t)
    }

    /// Records a request at `now` for an acknowledgement once the peer has read up to
    /// `upto` (the caller sends it), and when to repeat it.
    pub(super) fn requested_ack(&mut self, upto: u64, now: Instant) {
        self.next_req_ack = Some(now + REQ_ACK_INTERVAL);
        self.asked_upto = self.asked_upto.max(upto);
    }

    /// Whether our last acknowledgement request named every byte sent so far.
    pub(super) fn asked_for_all_sent(&self) -> bool {
        self.asked_upto >= self.high_water
    }

    /// The position to ask the peer to acknowledge at, now that more bytes went out, if
    /// one is due, for a buffer that grows up to `max`: the mark a step
    /// ([`ack_step`](Self::ack_step)) past the last request
    /// (or the last acknowledgement, if later), once it went out, so that a request goes
    /// at each step however the writes are cut (the caller asks again until this says no
    /// more); or, once writing was shut down and the last bytes went out after the last
    /// request, every byte.
    pub(super) fn next_ask(&self, max: usize) -> Option<u64> {
        if self.buf.is_empty() {
            return None;
        }
        let mark = self.asked_upto.max(self.buf.acked()) + self.ack_step(max);
        if self.high_water >= mark {
            return Some(mark);
        }
        let last_out = self.closing.write_shut() == Some(self.high_water);
        (last_out && self.asked_upto < self.high_water).then_some(self.high_water)
    }

    /// When the buffer goes back to `initial` bytes: once it has been empty for
    /// [`SHRINK_AFTER`], if it has grown. Never otherwise, so a buffer of the initial size
    /// costs no timer.
    pub(super) fn shrink_at(&self, initial: usize) -> Option<Instant> {
        if self.buf.capacity() <= initial {
            return None;
        }
        self.emptied_at?.checked_add(SHRINK_AFTER)
    }

    /// Gives the memory of a grown buffer back: the buffer goes back to `initial` bytes
    /// (its timer, [`shrink_at`](Self::shrink_at), is due).
    pub(super) fn shrink(&mut self, initial: usize) {
        if self.buf.shrink(initial) {
            self.acked_at_resize = self.buf.acked();
        }
    }

    /// Whether a FIN is due on connection `epoch` now (see `Session::poll_fin`), and if
    /// so, records it as sent.
    pub(super) fn take_fin(&mut self, epoch: u32, peer_closed: bool) -> bool {
        let done_sending = peer_closed
            || (self.closing.end_confirmed() && Some(self.tcp_sent) == self.closing.write_shut());
        let due = done_sending && self.fin_sent_on != Some(epoch);
        if due {
            self.fin_sent_on = Some(epoch);
        }
        due
    }

    /// The announcement our end of stream needs now, if any, already recorded as made:
    /// HALF_CLOSE once every byte is acknowledged (unless the peer closed: then nobody
    /// reads it), CLOSE at once after the application closed, superseding a HALF_CLOSE.
    pub(super) fn next_announcement(&mut self, peer_closed: bool) -> Option<ControlKind> {
        let all_acked = self.buf.is_empty();
        match &mut self.closing {
            Closing::WriteShut { total, half_close } => {
                let due = *half_close == Announcement::Due && all_acked && !peer_closed;
                due.then(|| {
                    *half_close = Announcement::Sent;
                    ControlKind::HalfClose(to_wire(*total))
                })
            }
            Closing::Closed { total, close, .. } => (*close == Announcement::Due).then(|| {
                *close = Announcement::Sent;
                ControlKind::Close(to_wire(*total))
            }),
            Closing::Open | Closing::Ended { .. } => None,
        }
    }

    /// The peer confirmed our `kind` (or we stopped waiting for it to).
    pub(super) fn confirmed(&mut self, kind: ControlKind) {
        match (kind, &mut self.closing) {
            (ControlKind::HalfClose(_), Closing::WriteShut { half_close, .. }) => {
                *half_close = Announcement::Confirmed;
            }
            (ControlKind::Close(_), Closing::Closed { close, .. }) => {
                *close = Announcement::Confirmed;
            }
            _ => {}
        }
    }
}
