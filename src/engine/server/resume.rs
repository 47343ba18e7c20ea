//! A resumption on the server, as the listener's endpoint sequences it: the live
//! connection aborted and the barrier passed before the endpoint checks the count exactly
//! and answers; the connection installed once the CONFIRM verifies (and no later
//! reconnection has proved itself meanwhile), or the session told that its offer failed.

use std::sync::Arc;

use mio::Token;

use super::handshake::ServerHandshake;
use crate::engine::{into_std, Engine};

impl Engine {
    /// Aborts session `session`'s live connection and waits until no application thread
    /// is inside a read or write on it, so that its counts stay put; then asks the
    /// endpoint to answer.
    pub(super) fn barrier(
        &mut self,
        hs: ServerHandshake,
        session: Token,
    ) -> Option<ServerHandshake> {
        if let Some(entry) = self.sessions.get(&session) {
            entry.shared.abort_current("the client reconnected");
            entry.shared.barrier();
        }
        let id = hs.id;
        let action = self.ask(&hs, |ep, host| ep.after_barrier(id, host));
        self.carry_out(hs, action)
    }

    /// The confirmation of a reconnection did not arrive, or did not verify: the session
    /// stays without a connection until the next one. A client whose CONFIRM was lost on
    /// the way installed the connection offered, which the server never took: it is told
    /// that this connection failed, and reconnects.
    pub(super) fn offer_failed(&mut self, hs: ServerHandshake, session: Token, epoch: u32) {
        log::debug!("handshake with {}: no confirmation", hs.client);
        self.close_handshake(hs);
        if let Some(entry) = self.sessions.get(&session) {
            entry.shared.offer_failed(epoch);
        }
        self.service(session);
    }

    /// The client confirmed a reconnection: the session moves to this connection.
    pub(super) fn complete_resume(
        &mut self,
        hs: ServerHandshake,
        session: Token,
        epoch: u32,
        peer_received: u64,
    ) {
        let Some(shared) = self.sessions.get(&session).map(|e| Arc::clone(&e.shared)) else {
            return self.close_handshake(hs);
        };
        let stream = into_std(&self.poll, hs.stream);
        shared.resume(stream, epoch, peer_received);
        self.service(session);
        self.flush(session);
    }
}
