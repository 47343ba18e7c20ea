//! What a session shows: the getters, which change nothing, and the status snapshot for
//! the application.

use std::net::SocketAddr;
use std::time::Instant;

use super::{ReadGate, Role, Session};
use crate::core::counter::from_wire;
use crate::error::Error;
use crate::status::{SessionState, Status};

impl Session {
    /// Which end of the session this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Number of the TCP connection in use (or last used).
    pub fn epoch(&self) -> u32 {
        self.link.epoch
    }

    /// Whether a TCP connection carries the session.
    pub fn is_connected(&self) -> bool {
        self.link.connected()
    }

    /// Whether this is a client session whose opening the server has not answered yet:
    /// it has no CID and nowhere to send datagrams (what it would send is dropped, as if
    /// lost), and no silence limit (the handshake timeout bounds the wait). See
    /// [`opened`](Self::opened).
    pub fn is_opening(&self) -> bool {
        self.reliable.cid() == 0
    }

    /// Whether the peer has shown that it knows the session's CID: an authentic datagram
    /// from it arrived (it carries the CID under the peer's key), or a HELLO that named
    /// the CID proved itself ([`handle_cid_named`](Self::handle_cid_named)). A server
    /// whose client never did cannot know whether the client received its opening answer.
    pub fn peer_knows_cid(&self) -> bool {
        self.peer_named_cid || self.replay.any_accepted()
    }

    /// How many control messages await the peer's confirmation, to be sent again until
    /// it comes: at most [`MAX_AWAITING_CONFIRMATION`] whatever the peer does (one CLOSE or
    /// HALF_CLOSE, one RESET, one PASSIVATE, and a server's RECONNECTs for its connection
    /// and its newest failed offer).
    pub fn awaiting_confirmation(&self) -> usize {
        self.reliable.awaiting()
    }

    /// Bytes the application has read, which is what the peer may stop keeping.
    pub fn received(&self) -> u64 {
        self.recv.received
    }

    /// Bytes the application has written.
    pub fn written(&self) -> u64 {
        self.send.buf.end()
    }

    /// How many bytes a write may append now: the room in the send buffer, or, when it is
    /// full, the room it has once [`write`](Self::write) has doubled it (up to
    /// `Limits::send_buffer_max`) when `SendSide::may_grow` allows. A writer blocked in
    /// the kernel, without a connection, or writing to a peer that does not read, finds no
    /// room until the peer acknowledges some.
    ///
    /// # Errors
    ///
    /// The session's failure, or [`Error::WriteShutDown`] once writing was shut down here,
    /// or [`Error::PeerClosed`] once the peer closed the session.
    pub fn write_space(&self) -> Result<usize, Error> {
        if let Some(e) = &self.fatal {
            return Err(e.clone());
        }
        if self.send.closing.write_shut().is_some() {
            return Err(Error::WriteShutDown);
        }
        if self.recv.peer_closed {
            return Err(Error::PeerClosed);
        }
        if self.may_grow() {
            let buf = &self.send.buf;
            return Ok(buf.next_capacity(self.limits.send_buffer_max) - buf.len());
        }
        Ok(self.send.buf.space())
    }

    /// The outgoing bytes that the current connection still lacks, as stream positions
    /// `[from, to)`, or `None` while disconnected.
    pub fn unsent(&self) -> Option<(u64, u64)> {
        // After the peer's CLOSE nothing is sent: nobody would read it.
        let sending = self.link.connected() && self.fatal.is_none() && !self.recv.peer_closed;
        sending.then_some((self.send.tcp_sent, self.send.buf.end()))
    }

    /// Whether the peer closed the session: a failed write then means nothing.
    pub fn peer_closed(&self) -> bool {
        self.recv.peer_closed
    }

    /// A copy of at most `max` buffered bytes from stream position `from` on.
    pub fn buffered_from(&self, from: u64, max: usize) -> Vec<u8> {
        self.send.buf.copy_from(from, max)
    }

    /// What a read call may do now.
    pub fn read_gate(&self) -> ReadGate {
        if self.recv.read_shut || self.recv.all_read() {
            return ReadGate::Eof;
        }
        match &self.fatal {
            Some(e) => ReadGate::Failed(e.clone()),
            None => ReadGate::Proceed,
        }
    }

    /// Whether the session needs a TCP connection it does not have. Not once the peer has
    /// closed and everything it sent was read: nothing can move in either direction; nor
    /// while it rests passive (see [`passivate`](Self::passivate)).
    ///
    /// A failed session needs none, with one exception: a client whose opening the server
    /// has not answered, with a RESET to deliver (it was aborted). The server may have
    /// accepted the session already, and only its answer names the CID the RESET needs:
    /// the client retries its opening to learn it, as after a cut, until the RESET can go
    /// (or its tries run out, or the opening itself fails: see [`fail`](Self::fail)).
    /// Without it, the server's session would wait forever for a client that is gone.
    pub fn needs_connection(&self) -> bool {
        if self.link.connected() || self.is_finished() {
            return false;
        }
        if self.fatal.is_some() {
            return self.is_opening() && self.reliable.resetting();
        }
        let spent = self.recv.peer_closed && self.recv.all_read();
        !self.resting() && !spent
    }

    /// Why the session failed, if it did (it may still be telling the peer, with a RESET).
    pub fn failure(&self) -> Option<&Error> {
        self.fatal.as_ref()
    }

    /// Whether nothing is left to do: the session can free its state. A closed session
    /// waits for the confirmation of its CLOSE and for the acknowledgement of every byte it
    /// wrote (unless the peer closed too: then nobody reads them).
    pub fn is_finished(&self) -> bool {
        if self.fatal.is_some() {
            return !self.reliable.resetting();
        }
        self.send.closing.close_confirmed() && (self.send.buf.is_empty() || self.recv.peer_closed)
    }

    /// A client's control datagrams do not get through: connected, it has heard none from
    /// the server for two heartbeat intervals (a network that drops UDP, or a server
    /// reachable only through one forwarded TCP port). The engine then carries them over
    /// TCP. Cleared by the next datagram.
    pub fn datagrams_missing(&self) -> bool {
        self.datagrams_missing
    }

    /// Where this end's control datagrams go now, if anywhere.
    pub fn control_peer(&self) -> Option<SocketAddr> {
        self.path.current()
    }

    /// Since when the session has had no connection, while it has none.
    pub fn disconnected_since(&self) -> Option<Instant> {
        self.link.disconnected_since()
    }

    /// When the peer was last heard from: an authentic datagram, bytes read from TCP, or
    /// a new connection.
    pub fn last_heard(&self) -> Instant {
        self.liveness.last_heard()
    }

    /// While the session has no connection: when the peer was heard from since it lost
    /// it, if it was. The path works again, so a client should reconnect at once rather
    /// than wait out its backoff.
    pub fn heard_since_disconnected(&self) -> Option<Instant> {
        let since = self.disconnected_since()?;
        let heard = self.liveness.last_heard();
        (heard > since).then_some(heard)
    }

    /// A first, loose check of the peer's received count, for a server before it aborts
    /// the live connection: the count must lie within what was ever written. The exact
    /// check ([`check_resume`](Self::check_resume)) needs the I/O locks, since a write in
    /// flight may not be counted yet.
    pub fn may_resume(&self, peer_received: u32) -> bool {
        from_wire(peer_received, self.send.buf.acked(), self.send.buf.end()).is_some()
    }

    /// Checks the peer's received count from a reconnection handshake: the absolute
    /// position it stands for, or `None` if it lies outside what we could have sent
    /// (acknowledged bytes are gone; unsent ones cannot have arrived).
    pub fn check_resume(&self, peer_received: u32) -> Option<u64> {
        from_wire(peer_received, self.send.buf.acked(), self.send.high_water)
    }

    /// A snapshot for the application.
    pub fn status(&self, now: Instant) -> Status {
        let state = if self.fatal.is_some() || self.is_finished() {
            SessionState::Closed
        } else if self.send.closing.write_shut().is_some() {
            SessionState::Closing
        } else if self.is_opening() {
            SessionState::Connecting
        } else if !self.link.connected() && self.resting() {
            SessionState::Passive
        } else if !self.link.connected() {
            SessionState::Reconnecting
        } else {
            SessionState::Connected
        };
        let age = |since: Option<Instant>| since.map(|t| now.saturating_duration_since(t));
        Status {
            state,
            bytes_written: self.send.buf.end(),
            bytes_read: self.recv.received,
            unacknowledged: self.send.buf.len() as u64,
            oldest_unacknowledged: age(self.send.oldest_unacknowledged()),
            blocked_read: age(self.recv.reader_blocked_since),
            blocked_write: age(self.send.writer_blocked_since),
            reconnections: self.link.reconnections,
            last_outage: self.link.last_outage,
            last_failure: self.link.last_failure.clone(),
            last_heard: now.saturating_duration_since(self.liveness.last_heard()),
            control_peer: self.control_peer(),
            // Which carrier takes the datagrams is the engine's to say.
            control_over_tcp: false,
            // The connection's addresses are the engine's to fill in.
            local_addr: None,
            peer_addr: None,
            passive: self.link.passive,
            send_buffer_capacity: self.send.buf.capacity(),
            round_trip: self.send.round_trip,
            plain: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::core::session::testing::session;

    fn state(s: &Session, now: Instant) -> SessionState {
        s.status(now).state
    }

    #[test]
    fn every_state_is_shown() {
        let t0 = Instant::now();
        let addr = ([127, 0, 0, 1], 9000).into();
        // A client whose opening is unanswered: connected or retrying, it is connecting.
        let mut s = session(Role::Client, 0, None, t0);
        assert_eq!(state(&s, t0), SessionState::Connecting);
        s.handle_connection_failed(0, "cut", t0);
        assert_eq!(state(&s, t0), SessionState::Connecting);
        s.handle_resume(0, 1, t0);
        s.opened(7, addr, t0);
        assert_eq!(state(&s, t0), SessionState::Connected);
        s.handle_connection_failed(1, "cut", t0);
        assert_eq!(state(&s, t0), SessionState::Reconnecting);
        s.passivate(t0);
        assert_eq!(state(&s, t0), SessionState::Passive);
        s.write(b"wakes it", t0);
        assert_eq!(state(&s, t0), SessionState::Reconnecting);
        s.shutdown_write(t0);
        assert_eq!(state(&s, t0), SessionState::Closing);
        s.close(t0);
        assert_eq!(state(&s, t0), SessionState::Closing);
        s.handle_timeout(t0 + Duration::from_secs(1));
        assert_eq!(state(&s, t0), SessionState::Closed, "it lingered its limit");
        // A server is never connecting; a closing opening is closing.
        let server = session(Role::Server, 7, None, t0);
        assert_eq!(state(&server, t0), SessionState::Connected);
        let mut s = session(Role::Client, 0, None, t0);
        s.shutdown_write(t0);
        assert_eq!(state(&s, t0), SessionState::Closing);
    }

    #[test]
    fn the_last_outage_is_the_time_from_the_failure_to_the_resumption() {
        let t0 = Instant::now();
        let mut s = session(Role::Server, 7, None, t0);
        assert_eq!(s.status(t0).last_outage, None);
        s.handle_connection_failed(0, "cut", t0 + Duration::from_secs(1));
        s.handle_resume(0, 1, t0 + Duration::from_millis(3500));
        let status = s.status(t0 + Duration::from_secs(9));
        assert_eq!(status.last_outage, Some(Duration::from_millis(2500)));
        assert_eq!(status.reconnections, 1);
    }
}
