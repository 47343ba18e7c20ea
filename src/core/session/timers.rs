//! The session's timers, as a list: each [`Timer`] with the guard under which it runs and
//! its deadline ([`Session::deadline`]), in one place, read by both
//! [`Session::poll_timeout`] (the earliest) and [`Session::handle_timeout`] (those due), so
//! that the two cannot disagree about when a timer runs.

use std::time::Instant;

use super::{Role, Session};
use crate::core::control::ControlKind;
use crate::core::counter::to_wire;
use crate::core::earliest;
use crate::error::Error;

/// One of a session's timers. [`Timer::ALL`] lists them in the order `handle_timeout`
/// runs them: each one's guard and deadline are read just before it runs, after the ones
/// before it ran (a silence that fails the connection changes whether a heartbeat is due).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Timer {
    /// A connected client has heard no datagram from its server for two heartbeat
    /// intervals: its datagrams do not get through (see `Session::datagrams_missing`).
    DatagramsMissing,
    /// The peer has been silent for `dead_after`: the connection in use fails.
    Silence,
    /// This end has been quiet for a heartbeat interval (or a client without heartbeats
    /// probes): a REQ_ACK that the peer answers at once.
    Heartbeat,
    /// Bytes read and not acknowledged since the reads paused: an ACK.
    IdleAck,
    /// A grown send buffer empty for a while goes back to its initial size.
    Shrink,
    /// A control message awaiting confirmation is sent again, or a farewell given up on.
    Retransmit,
    /// An acknowledgement that a blocked writer, a lingering close or a passivation needs
    /// is asked for again.
    ReqAck,
    /// The session has been disconnected for `give_up_after`: it resets.
    GiveUp,
    /// A closed session has lingered for its limit: it resets.
    Linger,
    /// Written bytes held for a batch must go out. The engine sends them: it calls
    /// [`Session::release_held`] after `handle_timeout`, which leaves this one alone.
    Release,
}

impl Timer {
    /// Every timer, in the order `handle_timeout` runs them.
    pub(super) const ALL: [Timer; 10] = [
        Timer::DatagramsMissing,
        Timer::Silence,
        Timer::Heartbeat,
        Timer::IdleAck,
        Timer::Shrink,
        Timer::Retransmit,
        Timer::ReqAck,
        Timer::GiveUp,
        Timer::Linger,
        Timer::Release,
    ];
}

impl Session {
    /// When `timer` is due, if it runs now: its guard and its deadline, the one place
    /// that says either.
    pub(super) fn deadline(&self, timer: Timer) -> Option<Instant> {
        let alive = self.fatal.is_none();
        // The server's datagrams are watched, and its silence limited, only once the
        // opening is answered: until then the handshake timeout bounds the wait.
        let listening = self.link.connected() && !self.is_opening();
        match timer {
            Timer::DatagramsMissing => {
                let watches =
                    self.role == Role::Client && listening && alive && !self.datagrams_missing;
                watches.then(|| self.liveness.datagrams_missing_at())?
            }
            Timer::Silence => listening.then(|| self.liveness.dead_at())?,
            Timer::Heartbeat => self
                .wants_heartbeat()
                .then(|| self.liveness.next_heartbeat())?,
            Timer::IdleAck => alive.then(|| self.recv.idle_ack_at())?,
            Timer::Shrink => alive.then(|| self.send.shrink_at(self.limits.send_buffer))?,
            Timer::Retransmit => self.reliable.next_due(),
            Timer::ReqAck => self.wants_ack().then_some(self.send.next_req_ack)?,
            Timer::GiveUp if !alive || self.resting() => None,
            Timer::GiveUp => self.link.give_up_at(self.limits.give_up_after),
            Timer::Linger => self.linger_ends(),
            Timer::Release => self.send.coalescing.release_at(),
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next run, if ever: the earliest
    /// [`deadline`](Self::deadline). An idle session whose buffer has its initial size
    /// has no deadline but its heartbeats'.
    ///
    /// The application's reads and writes move deadlines later (the silence limit, the
    /// acknowledgement of bytes read once the reads pause) far more often than earlier:
    /// an engine may sleep until a deadline it was given and then ask again, rather than
    /// be told of every move.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Every read and write asks (twice): a loop over a fixed array, no allocation.
        let mut at = None;
        for timer in Timer::ALL {
            at = earliest(at, self.deadline(timer));
        }
        at
    }

    /// Runs the timers due at `now` (see [`Timer`]): the peer's datagrams found missing,
    /// the peer's silence (which fails the connection in use), heartbeats,
    /// acknowledgements of bytes read before the reads paused, the return of a grown send
    /// buffer to its initial size once it has been empty for a while, retransmissions,
    /// acknowledgement requests, giving up (which fails the session with
    /// [`Error::GaveUp`] and resets it) and the end of lingering. Bytes held for a batch
    /// are the caller's to send: see [`release_held`](Self::release_held).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.run_due(now, |_| {});
    }

    /// Runs each timer due at `now`, in [`Timer::ALL`]'s order, and tells `ran` which.
    fn run_due(&mut self, now: Instant, mut ran: impl FnMut(Timer)) {
        for timer in Timer::ALL {
            if self.deadline(timer).is_some_and(|t| t <= now) && self.run(timer, now) {
                ran(timer);
            }
        }
    }

    /// Does what `timer` is for, now that it is due; returns whether it did (the engine
    /// sends held bytes: see [`Timer::Release`]).
    fn run(&mut self, timer: Timer, now: Instant) -> bool {
        match timer {
            Timer::DatagramsMissing => self.datagrams_missing = true,
            Timer::Silence => {
                let after = self.liveness.dead_after().unwrap_or_default();
                let reason = format!("heard nothing from the peer for {after:?}");
                self.handle_connection_failed(self.link.epoch, &reason, now);
            }
            Timer::Heartbeat => {
                // A REQ_ACK: the peer answers with an ACK at once, whatever its own
                // settings, since it asks for nothing the peer has not read (our
                // acknowledged count). It also tells a server where its client is; and a
                // reconnecting client that hears the answer knows the path is back, and
                // starts its next attempt at once.
                let received = self.recv.ack_count();
                let sent = to_wire(self.send.buf.acked());
                self.reliable
                    .send_once(ControlKind::ReqAck { received, sent }, 0);
                // Counted as sent even where nothing goes out (a server that does not
                // know its client's address yet): the next one is due an interval later.
                self.liveness.heartbeat_sent(now);
            }
            Timer::IdleAck => self.send_ack(),
            Timer::Shrink => self.send.shrink(self.limits.send_buffer),
            Timer::Retransmit => {
                let dropped = self.reliable.retransmit(now, self.farewell_tries());
                for kind in dropped {
                    // Nobody will confirm it: count it as confirmed, so the session can end.
                    self.send.confirmed(kind);
                }
            }
            Timer::ReqAck => self.request_ack(now),
            Timer::GiveUp => {
                let after = self.limits.give_up_after.unwrap_or_default();
                self.reset(Error::GaveUp { after }, now);
            }
            Timer::Linger => {
                // Nobody holds the session any more: the peer learns from the RESET that
                // the rest will not come, and the state is freed.
                log::debug!(
                    "session {}: still undelivered after lingering {:?}; abandoned",
                    self.reliable.cid(),
                    self.limits.linger
                );
                self.reset(Error::Aborted, now);
            }
            Timer::Release => return false,
        }
        true
    }

    /// Whether heartbeats are due on this session: while it is connected, and, on a
    /// client, while it reconnects. A server without a connection waits in silence: its
    /// client may be gone for good.
    ///
    /// Except a closed server that lingers for the acknowledgement of its last bytes: its
    /// client may have read them all and acknowledged them in a datagram that was lost,
    /// then lost the connection; having read everything the server will ever send, that
    /// client needs no connection and never reconnects, so nothing would carry its count
    /// again. A heartbeat asks for it (the client answers at once), an interval at a time,
    /// until the linger limit.
    fn wants_heartbeat(&self) -> bool {
        if self.fatal.is_some() {
            return false;
        }
        if self.link.connected() {
            return true;
        }
        match self.role {
            Role::Client => self.needs_connection() || self.link.passive,
            Role::Server => self.linger_ends().is_some() && !self.send.buf.is_empty(),
        }
    }

    /// Whether the REQ_ACK timer runs: bytes wait for an acknowledgement that a blocked
    /// writer or a lingering close needs. Not without a connection: the peer then has
    /// nothing new to acknowledge, and the heartbeats probe the path once an interval.
    pub(super) fn wants_ack(&self) -> bool {
        !self.send.buf.is_empty()
            && self.link.connected()
            && !self.recv.peer_closed
            && self.fatal.is_none()
            && (self.send.writer_blocked_since.is_some()
                || self.send.closing.write_shut().is_some()
                || self.passivating())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::core::control::MAX_LEN;
    use crate::core::session::testing;
    use crate::status::SessionState;

    const DEAD: Duration = Duration::from_secs(3);

    fn session(role: Role, dead_after: Option<Duration>, now: Instant) -> Session {
        testing::session(role, 7, dead_after, now)
    }

    /// The timers `handle_timeout` runs at `now` as the session stands.
    fn due(s: &Session, now: Instant) -> Vec<Timer> {
        let due = |t: Timer| t != Timer::Release && s.deadline(t).is_some_and(|d| d <= now);
        Timer::ALL.into_iter().filter(|&t| due(t)).collect()
    }

    /// Moves to the session's next deadline, which must be the earliest of its timers',
    /// and runs what is due there; returns when that was, what was due and what ran.
    fn step(s: &mut Session) -> (Instant, Vec<Timer>, Vec<Timer>) {
        let earliest = Timer::ALL.into_iter().filter_map(|t| s.deadline(t)).min();
        let now = s.poll_timeout().expect("a deadline");
        assert_eq!(Some(now), earliest);
        let expected = due(s, now);
        let mut ran = Vec::new();
        s.run_due(now, |t| ran.push(t));
        let mut out = [0; MAX_LEN];
        while s.poll_datagram(&mut out, now).is_some() {}
        (now, expected, ran)
    }

    #[test]
    fn poll_timeout_is_the_earliest_deadline() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        // Without heartbeats, an idle session has no deadline.
        assert_eq!(session(Role::Client, None, t0).poll_timeout(), None);
        let mut s = session(Role::Client, Some(DEAD), t0);
        assert_eq!(s.poll_timeout(), Some(ms(1000)), "the heartbeat");
        assert_eq!(s.deadline(Timer::DatagramsMissing), Some(ms(2000)));
        assert_eq!(s.deadline(Timer::Silence), Some(ms(3000)));
        // Bytes sent and a blocked writer: the REQ_ACK is asked again in 200 ms.
        assert_eq!(s.write(&[9; 100], t0), 100);
        s.handle_sent(0, 0, 100, t0);
        s.writer_blocked(t0);
        assert_eq!(s.poll_timeout(), Some(ms(200)));
        // Closed: its CLOSE is retransmitted after 100 ms; it lingers 1 s at most.
        s.close(ms(10));
        assert_eq!(s.poll_timeout(), Some(ms(110)));
        assert_eq!(s.deadline(Timer::Retransmit), Some(ms(110)));
        assert_eq!(s.deadline(Timer::Linger), Some(ms(1010)));
        // A server's bytes read: acknowledged 40 ms after the reads paused.
        let mut server = session(Role::Server, None, t0);
        server.handle_read(10, ms(5));
        assert_eq!(server.poll_timeout(), Some(ms(45)));
        assert_eq!(due(&server, ms(45)), [Timer::IdleAck]);
    }

    #[test]
    fn handle_timeout_runs_exactly_the_timers_due() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut s = session(Role::Client, Some(DEAD), t0);
        let mut seen = Vec::new();
        while !s.is_finished() {
            let (now, expected, ran) = step(&mut s);
            assert_eq!(ran, expected, "at {:?}", now - t0);
            seen.push((now, ran));
        }
        use Timer::*;
        assert_eq!(
            seen[..5],
            [
                (ms(1000), vec![Heartbeat]),
                (ms(2000), vec![DatagramsMissing, Heartbeat]),
                (ms(3000), vec![Silence, Heartbeat]),
                (ms(4000), vec![Heartbeat]),
                (ms(5000), vec![Heartbeat]),
            ]
        );
        // Disconnected at 3 s, it gives up 10 s later, and its RESET has its tries.
        let gave_up = seen.iter().position(|(_, ran)| ran.contains(&GiveUp));
        assert_eq!(gave_up.map(|i| seen[i].0), Some(ms(13_000)));
        assert!(seen
            .iter()
            .skip(gave_up.unwrap_or(0) + 1)
            .all(|(_, r)| r == &[Retransmit]));
        assert_eq!(s.status(s.last_heard()).state, SessionState::Closed);

        // A closed client asks for its acknowledgement and retransmits its CLOSE until
        // its linger limit.
        let mut s = session(Role::Client, None, t0);
        s.write(&[9; 100], t0);
        s.handle_sent(0, 0, 100, t0);
        s.close(t0);
        loop {
            let (now, expected, ran) = step(&mut s);
            assert_eq!(ran, expected, "at {:?}", now - t0);
            if ran.contains(&Linger) {
                assert_eq!(now, ms(1000));
                break;
            }
            assert!(
                ran.iter().all(|t| [Retransmit, ReqAck].contains(t)),
                "{ran:?}"
            );
        }
    }

    #[test]
    fn a_timer_is_checked_when_its_turn_comes() {
        // A server's silence fails its connection: the heartbeat due at the same time no
        // longer runs (a server without a connection waits in silence).
        let t0 = Instant::now();
        let mut s = session(Role::Server, Some(DEAD), t0);
        let (_, _, ran) = step(&mut s);
        assert_eq!(ran, [Timer::Heartbeat]);
        let (now, expected, ran) = step(&mut s);
        assert_eq!(now, t0 + DEAD);
        assert_eq!(expected, [Timer::Silence, Timer::Heartbeat]);
        assert_eq!(ran, [Timer::Silence]);
        assert!(!s.is_connected());
    }

    #[test]
    fn held_bytes_are_the_engines_to_release() {
        let t0 = Instant::now();
        let mut s = session(Role::Client, None, t0);
        let mut out = [0; MAX_LEN];
        while s.poll_datagram(&mut out, t0).is_some() {}
        s.write(&[1; 10], t0);
        assert!(!s.hold_unsent(true, t0), "the first write goes out");
        s.handle_sent(0, 0, 10, t0);
        s.write(&[2; 10], t0);
        assert!(s.hold_unsent(true, t0), "back to back: held");
        let at = s.poll_timeout().expect("the release");
        assert_eq!(s.deadline(Timer::Release), Some(at));
        let mut ran = Vec::new();
        s.run_due(at, |t| ran.push(t));
        assert_eq!(ran, [], "nothing for handle_timeout to do");
        assert!(s.release_held(at, false), "the engine sends them");
    }
}
