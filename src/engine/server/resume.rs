//! A resumption on the server: the client's count checked loosely before the live
//! connection is touched, the old connection aborted and the barrier passed, the count
//! checked exactly, the signed ANSWER written; then the connection installed only once
//! the client's CONFIRM verifies (and no later reconnection has proved itself meanwhile).

use std::sync::Arc;

use mio::Token;

use super::handshake::{Phase, ServerHandshake};
use crate::core::counter::to_wire;
use crate::core::handshake::{Accepted, Answer, Confirm, FrameKind, Hello, RefusalCode};
use crate::engine::frames::{write_frame, FrameError, FrameRead, FrameReader};
use crate::engine::{into_std, random, Engine};

/// A reconnection answered, waiting for its CONFIRM: the exchange the CONFIRM must cover.
pub(super) struct Confirming {
    reader: FrameReader,
    session: Token,
    cid: u32,
    hello: Hello,
    answer: Accepted,
    /// What installs the connection once confirmed.
    resume: Resume,
}

/// A reconnection answered: the session moves to the new connection once the client
/// confirms.
#[derive(Clone, Copy)]
struct Resume {
    attempt: u64,
    epoch: u32,
    peer_received: u64,
}

impl Engine {
    /// Reads the client's CONFIRM of a resumption; moves the session to the connection
    /// once it verifies. `None` once the handshake is over.
    pub(super) fn read_confirm(&mut self, mut hs: ServerHandshake) -> Option<ServerHandshake> {
        let Phase::Confirm(confirming) = &mut hs.phase else {
            return Some(hs);
        };
        let body = match confirming.reader.poll(&hs.stream) {
            Ok(FrameRead::Pending) => return Some(hs),
            Ok(FrameRead::Done(body)) => body,
            Err(FrameError::Wire(_)) => {
                self.confirm_failed(hs, "a malformed confirmation");
                return None;
            }
            Err(FrameError::Io(e)) => {
                self.confirm_failed(hs, &e.to_string());
                return None;
            }
        };
        let c = &**confirming;
        let proven = self.sessions.get(&c.session).is_some_and(|e| {
            let key = &e.shared.handshake_keys().client;
            Confirm::parse(&body).is_ok_and(|cf| cf.verify(&c.hello, &c.answer, key))
        });
        let resume = c.resume;
        if proven {
            self.complete_resume(hs, resume);
        } else {
            self.confirm_failed(hs, "a confirmation that does not verify");
        }
        None
    }

    /// Resumes session `id` on this connection: its HELLO proved itself (see
    /// [`ServerEndpoint::on_hello`]); the count it carries must check out too.
    pub(super) fn resume_session(
        &mut self,
        mut hs: ServerHandshake,
        hello: Hello,
        id: Token,
    ) -> Option<ServerHandshake> {
        let Some(shared) = self.sessions.get(&id).map(|e| Arc::clone(&e.shared)) else {
            return self.refuse(hs, RefusalCode::UnknownSession);
        };
        if !hello.is_opening() {
            shared.cid_named();
        }
        // Check before touching the live connection: a count outside what was ever written
        // leaves it alone. (One that passes this but fails the exact check after the
        // barrier costs the live connection; only the client, which holds the key, can
        // send it, and an honest one does not.)
        if !shared.may_resume(hello.received) {
            return self.refuse(hs, RefusalCode::BadRequest);
        }
        shared.abort_current("the client reconnected");
        shared.barrier();
        let Some(peer_received) = shared.check_resume(hello.received) else {
            return self.refuse(hs, RefusalCode::BadRequest);
        };
        let Ok(server_nonce) = random() else {
            self.close_handshake(hs);
            return None;
        };
        let answer = Accepted::accepting(
            &hello,
            shared.cid(),
            false,
            shared.control_port(),
            to_wire(shared.received()),
            server_nonce,
            &shared.handshake_keys().server,
        );
        let epoch = answer.epoch;
        if let Err(e) = write_frame(&hs.stream, &Answer::Accepted(answer).encode()) {
            // Nothing changed but the old connection, which the client gave up already.
            log::debug!("handshake with {}: {e}", hs.client);
            self.close_handshake(hs);
            return None;
        }
        let resume = Resume {
            attempt: hello.attempt,
            epoch,
            peer_received,
        };
        if let Some(listener) = self.listeners.get_mut(&hs.listener) {
            listener.endpoint.handshake_confirming(hs.id);
        }
        // Nothing is resent before the client proves, with its CONFIRM, that it is the
        // one that sent this HELLO now, not someone replaying it.
        hs.phase = Phase::Confirm(Box::new(Confirming {
            reader: FrameReader::new(FrameKind::Confirm),
            session: id,
            cid: shared.cid(),
            hello,
            answer,
            resume,
        }));
        self.server_step(hs)
    }

    /// The confirmation of a reconnection did not arrive, or did not verify: the session
    /// stays without a connection until the next one. A client whose CONFIRM was lost on
    /// the way installed the connection offered, which the server never took: it is told
    /// that this connection failed, and reconnects.
    pub(super) fn confirm_failed(&mut self, hs: ServerHandshake, why: &str) {
        log::debug!("handshake with {}: {why}", hs.client);
        let offered = match &hs.phase {
            Phase::Confirm(c) => Some((c.session, c.resume.epoch)),
            _ => None,
        };
        self.close_handshake(hs);
        if let Some((session, epoch)) = offered {
            if let Some(entry) = self.sessions.get(&session) {
                entry.shared.offer_failed(epoch);
            }
            self.service(session);
        }
    }

    /// The client confirmed a reconnection: the session moves to this connection, unless
    /// a later reconnection has proved itself meanwhile.
    fn complete_resume(&mut self, hs: ServerHandshake, resume: Resume) {
        let Phase::Confirm(confirming) = &hs.phase else {
            return;
        };
        let id = confirming.session;
        let latest = self
            .listeners
            .get(&hs.listener)
            .is_some_and(|l| l.endpoint.confirmed(confirming.cid, resume.attempt));
        let current = latest
            .then(|| self.sessions.get(&id))
            .flatten()
            .map(|entry| Arc::clone(&entry.shared));
        let Some(shared) = current else {
            self.close_handshake(hs);
            return;
        };
        let stream = into_std(&self.poll, hs.stream);
        shared.resume(stream, resume.epoch, resume.peer_received);
        self.service(id);
        self.flush(id);
    }
}
