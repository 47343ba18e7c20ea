//! The engine's table of handshakes in progress, client and server alike: each under one
//! deadline, advanced when its socket is ready, abandoned when the deadline passes or a
//! crowded listener evicts it, dropped when its session is gone.

use std::time::Instant;

use mio::Token;

use super::client::Dial;
use super::server::ServerHandshake;
use super::Engine;
use crate::core::endpoint::redial::Failure;

/// A handshake in progress on a non-blocking connection.
// A dial carries its opening request's `Config`, about 200 bytes more than a server's
// handshake: at most `max_handshakes` entries per listener, a few dozen KiB, not worth a
// box (and an allocation) per dial.
#[allow(clippy::large_enum_variant)]
pub(super) enum Handshake {
    Server(ServerHandshake),
    Client(Box<Dial>),
}

impl Engine {
    /// Starts tracking a handshake with its deadline.
    pub(super) fn add_handshake(&mut self, token: Token, handshake: Handshake, deadline: Instant) {
        self.handshakes.insert(token, handshake);
        self.timers.set(token, Some(deadline));
        self.advance_handshake(token);
    }

    /// Reads and writes what a handshake can now.
    pub(super) fn advance_handshake(&mut self, token: Token) {
        match self.handshakes.remove(&token) {
            Some(Handshake::Server(hs)) => self.advance_server_handshake(token, hs),
            Some(Handshake::Client(dial)) => self.advance_dial(token, *dial),
            None => {}
        }
        if !self.handshakes.contains_key(&token) {
            self.timers.set(token, None);
        }
    }

    /// A handshake's deadline passed: a client's ends; a server's asks its endpoint, which
    /// may hand a silent ordinary client over, or wait on for its next deadline.
    pub(super) fn handshake_due(&mut self, token: Token) {
        self.timers.set(token, None);
        match self.handshakes.remove(&token) {
            Some(Handshake::Server(hs)) => self.server_handshake_due(hs),
            Some(Handshake::Client(dial)) => self.dial_failed(*dial, Failure::Timeout),
            None => {}
        }
    }

    /// Drops a handshake without reporting anything (its session is gone).
    pub(super) fn drop_handshake(&mut self, token: Token) {
        self.timers.set(token, None);
        match self.handshakes.remove(&token) {
            Some(Handshake::Server(mut hs)) => self.deregister(&mut hs.stream),
            Some(Handshake::Client(dial)) => self.drop_dial(*dial),
            None => {}
        }
    }

    pub(super) fn deregister(&self, stream: &mut mio::net::TcpStream) {
        let _ = self.poll.registry().deregister(stream);
    }
}
