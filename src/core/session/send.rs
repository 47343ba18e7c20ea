//! The send side of a session: the bytes the application wrote, how far each connection
//! carried them, and how our end of the stream is announced.
//!
//! Invariants:
//! - `buf` holds the stream bytes `[acked, end)`; `acked <= tcp_sent <= end` while the
//!   session is connected, and `high_water` is the most ever handed to any connection, so
//!   `acked <= high_water <= end`: an acknowledgement beyond `high_water` is a lie.
//! - `unacked_since` holds `(end position, time)` of writes not yet acknowledged, oldest
//!   first, with strictly increasing positions all above `acked`.
//! - `write_shut`, once set, is the total ever written: `end` never grows past it.
//! - `announced` only moves forward: `Nothing`, then `HalfClose`, then `Close`, and
//!   `confirmed` goes from `false` to `true` only.
//! - `closed` implies `write_shut`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::core::control::ControlKind;
use crate::core::counter::to_wire;
use crate::core::send_buffer::SendBuffer;

/// How often a sender that waits for acknowledgements asks for one again (the REQ_ACK or
/// the answering ACK may be lost).
const REQ_ACK_INTERVAL: Duration = Duration::from_millis(200);
/// Writes within this span share one entry in the unacknowledged-age queue, which keeps
/// that queue short however small the writes are.
const AGE_GRANULARITY: Duration = Duration::from_millis(1);

/// How far our own close announcement got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Announced {
    Nothing,
    HalfClose { confirmed: bool },
    Close { confirmed: bool },
}

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
    /// The total the application wrote before shutting down writing, once it has.
    pub(super) write_shut: Option<u64>,
    /// The application dropped every handle.
    pub(super) closed: bool,
    /// Our FIN has been sent on this connection number.
    fin_sent_on: Option<u32>,
    pub(super) announced: Announced,
    pub(super) writer_blocked_since: Option<Instant>,
    /// When to ask for an acknowledgement again, while one is wanted.
    pub(super) next_req_ack: Option<Instant>,
}

impl SendSide {
    pub(super) fn new(capacity: usize) -> Self {
        SendSide {
            buf: SendBuffer::new(capacity),
            tcp_sent: 0,
            high_water: 0,
            unacked_since: VecDeque::new(),
            write_shut: None,
            closed: false,
            fin_sent_on: None,
            announced: Announced::Nothing,
            writer_blocked_since: None,
            next_req_ack: None,
        }
    }

    /// Appends as much of `data` as fits, recording when for the age queue.
    pub(super) fn write(&mut self, data: &[u8], now: Instant) -> usize {
        let n = self.buf.push(data);
        if n > 0 {
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

    /// The bytes `[from, from + n)` went out on connection `epoch`; `current` is the
    /// connection in use, if any.
    pub(super) fn sent(&mut self, epoch: u32, from: u64, n: usize, current: Option<u32>) {
        let end = (from + n as u64).min(self.buf.end());
        self.high_water = self.high_water.max(end);
        if current == Some(epoch) && from == self.tcp_sent {
            self.tcp_sent = end;
        }
    }

    /// Drops the bytes before `upto`; returns whether that acknowledged anything new.
    pub(super) fn acknowledged(&mut self, upto: u64) -> bool {
        if !self.buf.ack(upto) {
            return false;
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

    /// Records an acknowledgement request at `now` (the caller sends it) and when to
    /// repeat it.
    pub(super) fn requested_ack(&mut self, now: Instant) {
        self.next_req_ack = Some(now + REQ_ACK_INTERVAL);
    }

    /// Whether the session's end has been announced and the announcement confirmed.
    fn end_confirmed(&self) -> bool {
        matches!(
            self.announced,
            Announced::HalfClose { confirmed: true } | Announced::Close { confirmed: true }
        )
    }

    /// Whether a FIN is due on connection `epoch` now (see `Session::poll_fin`), and if
    /// so, records it as sent.
    pub(super) fn take_fin(&mut self, epoch: u32, peer_closed: bool) -> bool {
        let done_sending =
            peer_closed || (self.end_confirmed() && Some(self.tcp_sent) == self.write_shut);
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
        let total = to_wire(self.write_shut?);
        let announce = match self.announced {
            Announced::Nothing if self.closed => true,
            Announced::Nothing => self.buf.is_empty() && !peer_closed,
            Announced::HalfClose { .. } => self.closed,
            Announced::Close { .. } => false,
        };
        if !announce {
            None
        } else if self.closed {
            self.announced = Announced::Close { confirmed: false };
            Some(ControlKind::Close(total))
        } else {
            self.announced = Announced::HalfClose { confirmed: false };
            Some(ControlKind::HalfClose(total))
        }
    }

    /// The peer confirmed our `kind` (or we stopped waiting for it to).
    pub(super) fn confirmed(&mut self, kind: ControlKind) {
        self.announced = match (kind, self.announced) {
            (ControlKind::HalfClose(_), Announced::HalfClose { .. }) => {
                Announced::HalfClose { confirmed: true }
            }
            (ControlKind::Close(_), _) => Announced::Close { confirmed: true },
            (_, announced) => announced,
        };
    }
}
