//! The session's lifecycle: which states it moves through, and which fields hold them.
//!
//! A session's state is four parts that change independently of each other, each held
//! once:
//!
//! | part | where | states |
//! |---|---|---|
//! | the opening | the CID (`Reliable::cid`) | a client with CID 0 is opening: the server has not answered; any other CID is open |
//! | the link | `Link::state` ([`LinkState`](super::link::LinkState)) | `Connected`, `Disconnected { since }`, `Dropped` |
//! | the application's close | `SendSide::closing` ([`Closing`]) | `Open`, `WriteShut`, `Closed`, `Ended`, each with how far its announcement got |
//! | failure | `Session::fatal` | `None`, or the error every later call reports |
//!
//! and, beside them, passivation (`Link::passive`, with the PASSIVATE sent and the peer's
//! awaiting confirmation, each naming its connection), which a session asks for while
//! connected, carries across a new connection while it still delivers its bytes, and
//! rests in without one.
//!
//! Why four parts and not one enum: each moves on its own. A client reconnects while
//! opening (a retried opening), while closing (to deliver its last bytes) and even once
//! failed (an opening aborted before its answer retries only to learn where its RESET
//! goes); a session fails in any phase; a closing session loses and regains connections.
//! One enum would have to be their product.
//!
//! How they move:
//!
//! ```text
//! opening:  CID 0 --opened--> CID
//! link:     Connected --failed--> Disconnected{since} --resumed--> Connected
//!           Connected --the session fails--> Dropped (never resumed)
//! closing:  Open --shutdown_write--> WriteShut{total, HALF_CLOSE: due, sent, confirmed}
//!           Open | WriteShut --close--> Closed{total, at, CLOSE: due, sent, confirmed}
//!           WriteShut | Closed, all delivered and read, reconnection refused --> Ended
//! failure:  None --fail, reset, the peer's RESET--> Some(error)
//! ```
//!
//! What the application sees (`Session::status`) comes from these, first match wins:
//! failed or finished: `Closed`; closed or write shut down: `Closing`; opening (connected
//! or not): `Connecting`; disconnected and resting passive: `Passive`; disconnected:
//! `Reconnecting`; else `Connected`.

use std::time::Instant;

/// How far the announcement of our end of stream (a HALF_CLOSE or a CLOSE) got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Announcement {
    /// Not sent yet: a HALF_CLOSE waits for every byte to be acknowledged (a CLOSE goes at
    /// once, save on a failed session, which announces nothing).
    Due,
    /// Sent, and retransmitted until confirmed.
    Sent,
    /// Confirmed by the peer (or given up on: see `Session::handle_timeout`).
    Confirmed,
}

/// How far the application closed its side of the session (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Closing {
    /// The application may write.
    Open,
    /// The application shut down writing after `total` bytes: the peer reads up to there,
    /// then end of stream.
    WriteShut {
        total: u64,
        half_close: Announcement,
    },
    /// The application dropped its last handle at `at`, after `total` bytes: it reads and
    /// writes nothing more; the session lingers until its bytes are delivered.
    Closed {
        total: u64,
        at: Instant,
        close: Announcement,
    },
    /// Both directions were complete when the server refused a reconnection: the session
    /// ended there while this end lingered, and nothing is left to do.
    Ended { total: u64 },
}

impl Closing {
    /// The total the application wrote before it shut down writing, once it has.
    pub(super) fn write_shut(self) -> Option<u64> {
        match self {
            Closing::Open => None,
            Closing::WriteShut { total, .. }
            | Closing::Closed { total, .. }
            | Closing::Ended { total } => Some(total),
        }
    }

    /// Shuts writing down after `total` bytes, unless it was already.
    pub(super) fn shut_writing(&mut self, total: u64) {
        if *self == Closing::Open {
            *self = Closing::WriteShut {
                total,
                half_close: Announcement::Due,
            };
        }
    }

    /// The application closed at `now`, after shutting writing down: a CLOSE is due. A
    /// second close changes nothing.
    pub(super) fn close(&mut self, now: Instant) {
        if let Closing::WriteShut { total, .. } = *self {
            *self = Closing::Closed {
                total,
                at: now,
                close: Announcement::Due,
            };
        }
    }

    /// When the application closed the session, if it did and the session did not end.
    pub(super) fn closed_at(self) -> Option<Instant> {
        match self {
            Closing::Closed { at, .. } => Some(at),
            _ => None,
        }
    }

    /// Whether our end of stream was announced and confirmed.
    pub(super) fn end_confirmed(self) -> bool {
        matches!(
            self,
            Closing::WriteShut {
                half_close: Announcement::Confirmed,
                ..
            } | Closing::Closed {
                close: Announcement::Confirmed,
                ..
            } | Closing::Ended { .. }
        )
    }

    /// Whether our CLOSE was confirmed (or the session ended anyway).
    pub(super) fn close_confirmed(self) -> bool {
        matches!(
            self,
            Closing::Closed {
                close: Announcement::Confirmed,
                ..
            } | Closing::Ended { .. }
        )
    }

    /// Whether a HALF_CLOSE is out and not confirmed.
    pub(super) fn half_close_unconfirmed(self) -> bool {
        matches!(
            self,
            Closing::WriteShut {
                half_close: Announcement::Sent,
                ..
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_moves_forward_only() {
        let t0 = Instant::now();
        let mut c = Closing::Open;
        c.close(t0);
        assert_eq!(c, Closing::Open, "closing needs writing shut down first");
        c.shut_writing(7);
        c.shut_writing(9);
        assert_eq!(c.write_shut(), Some(7), "the first total stands");
        assert!(c.closed_at().is_none() && !c.end_confirmed());
        c.close(t0);
        c.close(t0 + std::time::Duration::from_secs(1));
        assert_eq!(c.closed_at(), Some(t0), "the first close stands");
        assert_eq!(c.write_shut(), Some(7));
        assert!(!c.close_confirmed());
        let ended = Closing::Ended { total: 7 };
        assert!(ended.end_confirmed() && ended.close_confirmed());
        assert_eq!(ended.closed_at(), None, "an ended session does not linger");
    }
}
