//! A server handshake on a non-blocking socket: the engine reads each frame the listener's
//! endpoint expects, hands it over, and carries out the [`Action`] it gets back: a new
//! session made and answered at its HELLO (and handed to `accept`), a resumption's barrier
//! and answer ([`super::resume`]), a refusal, a control connection, or a peer that does
//! not speak robust-tcp turned away and drained. The phases and every decision are the
//! endpoint's (`core::endpoint::server`).

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Token};

use crate::core::auth::{ChallengeKey, HandshakeKeys};
use crate::core::endpoint::server::{Action, Host, Opening, Presence, ServerEndpoint};
use crate::core::endpoint::stranger::GREETING;
use crate::core::handshake::{Answer, FrameKind, RefusalCode, MAGIC};
use crate::core::session::{End, Role, Session};
use crate::engine::control::{RouteKey, Routes};
use crate::engine::frames::{write_frame, FrameError, FrameRead, FrameReader};
use crate::engine::handshakes::Handshake;
use crate::engine::server::Arrival;
use crate::engine::session::{SessionSpec, SharedSession};
use crate::engine::tcp_control::{TcpControl, TcpRoute};
use crate::engine::token_map::TokenMap;
use crate::engine::{into_std, Engine, Entry, Side};
use crate::RSocket;

/// The server side of one handshake: its connection and the frame being read.
pub(crate) struct ServerHandshake {
    /// Its token in the engine (and in its listener's endpoint).
    pub(super) id: Token,
    pub(crate) stream: TcpStream,
    pub(crate) listener: Token,
    pub(super) client: SocketAddr,
    /// When the connection was accepted: its deadlines count from then.
    accepted: Instant,
    /// The frame being read, of a kind the endpoint expects.
    pub(super) reader: FrameReader,
}

/// What the endpoint's handshakes see of the engine: its sessions, its routes (for unique
/// CIDs), the listener's control port and the operating system's randomness.
pub(super) struct EngineHost<'a> {
    sessions: &'a TokenMap<Entry>,
    routes: &'a Routes,
    port: u16,
}

impl Host<Token> for EngineHost<'_> {
    fn handshake_keys(&self, s: Token) -> Option<HandshakeKeys> {
        self.sessions.get(&s).map(|e| e.shared.handshake_keys())
    }

    fn presence(&self, s: Token, now: Instant) -> Presence {
        self.sessions
            .get(&s)
            .map_or_else(Default::default, |e| e.shared.presence(now))
    }

    fn with_session<R>(&mut self, s: Token, f: impl FnOnce(&mut Session) -> R) -> Option<R> {
        self.sessions.get(&s).map(|e| e.shared.with_core(f))
    }

    fn cid_taken(&self, cid: u32) -> bool {
        let role = Role::Server;
        self.routes.contains(&RouteKey { role, cid })
    }

    fn control_port(&self) -> u16 {
        self.port
    }

    fn random(&mut self, buf: &mut [u8]) -> bool {
        getrandom::getrandom(buf).is_ok()
    }
}

impl Engine {
    pub(super) fn start_handshake(&mut self, id: Token, mut stream: TcpStream, client: SocketAddr) {
        let token = self.new_token();
        if !self.listeners.contains_key(&id) {
            return;
        }
        // The handshake's frames go out at once rather than wait on Nagle for an ACK.
        let _ = stream.set_nodelay(true);
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE)
        {
            log::warn!("cannot watch a connection from {client}: {e}");
            return;
        }
        let Some(listener) = self.listeners.get_mut(&id) else {
            return;
        };
        let crowded = listener.endpoint.handshake_started(token);
        if crowded.as_ref().is_some_and(|(victim, _)| *victim == token) {
            // Every slot holds an answered resumption: this connection is the one dropped
            // (closing the stream takes it out of the poll).
            log::debug!("handshake with {client}: too many in progress");
            return;
        }
        let reader = FrameReader::new(listener.endpoint.expected(token));
        let accepted = Instant::now();
        let deadline = listener.endpoint.deadline(token, accepted);
        if let Some((victim, action)) = crowded {
            self.timers.set(victim, None);
            if let Some(Handshake::Server(hs)) = self.handshakes.remove(&victim) {
                log::debug!("handshake with {}: too many in progress", hs.client);
                self.carry_out(hs, action);
            }
        }
        let hs = ServerHandshake {
            id: token,
            stream,
            listener: id,
            client,
            accepted,
            reader,
        };
        self.add_handshake(token, Handshake::Server(hs), deadline);
    }

    /// Advances a server handshake as far as the bytes that arrived allow.
    pub(in crate::engine) fn advance_server_handshake(
        &mut self,
        token: Token,
        hs: ServerHandshake,
    ) {
        let listener = hs.listener;
        match self.server_step(hs) {
            Some(hs) => {
                self.handshakes.insert(token, Handshake::Server(hs));
            }
            // The endpoint ended it already unless the engine closed it (a write failed).
            None => self.forget_handshake(listener, token),
        }
    }

    /// One step of a server handshake: the handshake back while it waits for bytes,
    /// `None` once it is over (its stream handed to a session, or closed).
    pub(super) fn server_step(&mut self, mut hs: ServerHandshake) -> Option<ServerHandshake> {
        let id = hs.id;
        if self.sniffing(&hs) {
            let action = self.sniff(&hs);
            if !matches!(action, Action::Wait) || self.sniffing(&hs) {
                return self.carry_out(hs, action);
            }
            hs.reader = FrameReader::new(self.expected(&hs));
        }
        if self.expected(&hs).is_empty() {
            return self.drain(hs);
        }
        let action = match hs.reader.poll(&hs.stream) {
            Ok(FrameRead::Pending) => return Some(hs),
            Ok(FrameRead::Done(body)) => {
                let (Some(kind), client) = (hs.reader.kind(), hs.client.ip()) else {
                    return self.carry_out(hs, Action::Close);
                };
                let welcome = self
                    .listeners
                    .get(&hs.listener)
                    .is_some_and(|l| l.is_open());
                let now = Instant::now();
                self.ask(&hs, |ep, host| {
                    ep.on_frame(id, kind, &body, client, welcome, host, now)
                })
            }
            Err(FrameError::Wire(_)) => self.ask(&hs, |ep, _| ep.on_garbage(id)),
            Err(FrameError::Io(e)) => {
                log::debug!("handshake with {}: {e}", hs.client);
                self.ask(&hs, |ep, _| ep.handshake_failed(id))
            }
        };
        self.carry_out(hs, action)
    }

    /// Whether the endpoint waits for `hs`'s first bytes to tell what its peer is.
    fn sniffing(&self, hs: &ServerHandshake) -> bool {
        let listener = self.listeners.get(&hs.listener);
        listener.is_some_and(|l| l.endpoint.sniffing(hs.id))
    }

    /// Shows the endpoint the peer's first bytes, leaving them in the stream (`MSG_PEEK`):
    /// an ordinary client's application reads them first.
    fn sniff(&mut self, hs: &ServerHandshake) -> Action<Token> {
        let id = hs.id;
        let mut first = [0u8; MAGIC.len()];
        loop {
            return match hs.stream.peek(&mut first) {
                // Peeking returns 0 only at the end of a stream that has no byte.
                Ok(n) => {
                    let first = first.get(..n).unwrap_or_default();
                    self.ask(hs, |ep, _| ep.on_first_bytes(id, first, n == 0))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Action::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("handshake with {}: {e}", hs.client);
                    self.ask(hs, |ep, _| ep.handshake_failed(id))
                }
            };
        }
    }

    /// The frame kinds the endpoint expects on `hs` next (none while it turns the peer
    /// away, or once its listener is gone).
    fn expected(&self, hs: &ServerHandshake) -> &'static [FrameKind] {
        let listener = self.listeners.get(&hs.listener);
        listener.map_or(&[], |l| l.endpoint.expected(hs.id))
    }

    /// Asks handshake `hs`'s listener's endpoint; a handshake whose listener is gone is
    /// closed.
    pub(super) fn ask(
        &mut self,
        hs: &ServerHandshake,
        f: impl FnOnce(&mut ServerEndpoint<Token, Token>, &mut EngineHost) -> Action<Token>,
    ) -> Action<Token> {
        let Some(listener) = self.listeners.get_mut(&hs.listener) else {
            return Action::Close;
        };
        let mut host = EngineHost {
            sessions: &self.sessions,
            routes: &self.routes,
            port: listener.control.port(),
        };
        f(&mut listener.endpoint, &mut host)
    }

    /// Carries out what the endpoint decided for a handshake: the handshake back while it
    /// waits for bytes, `None` once it is over.
    pub(super) fn carry_out(
        &mut self,
        mut hs: ServerHandshake,
        action: Action<Token>,
    ) -> Option<ServerHandshake> {
        match action {
            Action::Wait => return Some(hs),
            Action::Control => self.control_connection(hs),
            Action::Refuse(reason) => {
                log::debug!("refusing {}: {reason:?}", hs.client);
                if reason == RefusalCode::TooManySessions {
                    if let Some(listener) = self.listeners.get(&hs.listener) {
                        listener.count_refused_full();
                    }
                }
                self.answer_and_close(hs, Answer::Refused(reason));
            }
            Action::Known(answer) => self.answer_and_close(hs, Answer::Accepted(*answer)),
            Action::TurnAway => return self.turn_away(hs),
            Action::Open(opening) => self.open_session(hs, *opening),
            Action::Barrier(session) => return self.barrier(hs, session),
            Action::Answer(answer) => {
                if let Err(e) = write_frame(&hs.stream, &Answer::Accepted(*answer).encode()) {
                    // Nothing changed but the old connection, which the client gave up.
                    log::debug!("handshake with {}: {e}", hs.client);
                    self.close_handshake(hs);
                    return None;
                }
                hs.reader = FrameReader::new(self.expected(&hs));
                return self.server_step(hs);
            }
            Action::Install {
                session,
                epoch,
                peer_received,
            } => self.complete_resume(hs, session, epoch, peer_received),
            Action::OfferFailed { session, epoch } => self.offer_failed(hs, session, epoch),
            Action::Close => self.close_handshake(hs),
            Action::Plain => self.hand_over_plain(hs),
            Action::Greet => {
                log::debug!("greeting the probe of {}", hs.client);
                let _ = write_frame(&hs.stream, &GREETING);
                self.close_handshake(hs);
            }
        }
        None
    }

    /// Ends a handshake with `answer` (which, like the connection, may be lost).
    fn answer_and_close(&mut self, hs: ServerHandshake, answer: Answer) {
        let _ = write_frame(&hs.stream, &answer.encode());
        self.close_handshake(hs);
    }

    /// Hands an ordinary TCP client's connection to `accept` as it is, with every byte
    /// it sent still unread in it.
    fn hand_over_plain(&mut self, hs: ServerHandshake) {
        let Some(listener) = self.listeners.get(&hs.listener) else {
            return self.close_handshake(hs);
        };
        log::debug!("{}: an ordinary TCP client", hs.client);
        let nodelay = listener.config.nodelay_value();
        let stream = into_std(&self.poll, hs.stream);
        if let Err(e) = stream.set_nodelay(nodelay) {
            log::debug!("{}: {e}", hs.client);
            return;
        }
        let socket = RSocket::from_plain(stream);
        // If the server socket is gone, the connection is dropped here and closes.
        listener.accepted.send(Arrival {
            socket,
            client: hs.client,
        });
    }

    /// A client opened a control connection: its datagrams come and go on it from now on.
    fn control_connection(&mut self, hs: ServerHandshake) {
        let token = self.new_token();
        let ServerHandshake {
            mut stream,
            listener,
            client,
            ..
        } = hs;
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .reregister(&mut stream, token, interest)
        {
            log::debug!("control connection from {client}: {e}");
            return;
        }
        let now = Instant::now();
        let route = TcpRoute {
            role: Role::Server,
            peer: client,
        };
        let control = TcpControl::new(stream, client, route, Some(listener), &[], now);
        self.adopt_tcp_control(token, control);
    }

    /// The handshake's timer fired: a silent ordinary client is handed over, a handshake
    /// past its deadline ends, and one whose deadline moved on waits for it.
    pub(in crate::engine) fn server_handshake_due(&mut self, hs: ServerHandshake) {
        let (id, accepted, now) = (hs.id, hs.accepted, Instant::now());
        let action = self.ask(&hs, |ep, _| ep.on_deadline(id, accepted, now));
        if matches!(action, Action::Wait) {
            let deadline = self
                .listeners
                .get(&hs.listener)
                .map(|l| l.endpoint.deadline(id, accepted));
            self.handshakes.insert(id, Handshake::Server(hs));
            self.timers.set(id, deadline);
            return;
        }
        if !matches!(action, Action::Plain) {
            log::debug!("handshake with {}: the handshake timed out", hs.client);
        }
        self.carry_out(hs, action);
    }

    /// Closes a handshake's connection.
    pub(super) fn close_handshake(&self, mut hs: ServerHandshake) {
        self.deregister(&mut hs.stream);
    }

    /// Removes a handshake from its listener's count.
    pub(in crate::engine) fn forget_handshake(&mut self, listener: Token, token: Token) {
        if let Some(l) = self.listeners.get_mut(&listener) {
            l.endpoint.handshake_ended(token);
        }
    }

    /// Opens a new session for the client, answers it (with the listener's part of the
    /// key agreement, if the HELLO ran one), and hands it to `accept` at once: the client
    /// holds the opening nonce and the keys (it drew the secret, or completes the
    /// agreement from this ANSWER, or from the answer to a retry if this one is lost), so
    /// it can always come back to the session, and its first bytes follow the HELLO.
    fn open_session(&mut self, hs: ServerHandshake, opening: Opening<Token>) {
        if let Some(evicted) = opening.evict {
            if let Some(entry) = self.sessions.get(&evicted.session) {
                log::debug!(
                    "session {}: evicted after its client was gone for {:?}",
                    evicted.cid,
                    evicted.waited
                );
                entry.shared.reset(crate::Error::Evicted {
                    waited: evicted.waited,
                });
            }
            self.finish(evicted.session);
        }
        let Some(listener) = self.listeners.get(&hs.listener) else {
            return self.close_handshake(hs);
        };
        let config = listener.config.clone();
        let control = Arc::clone(&listener.control);
        let Opening {
            cid,
            keys,
            agreement,
            answer,
            challenge_key,
            hello,
            ..
        } = opening;
        if let Err(e) = write_frame(&hs.stream, &Answer::Accepted(answer).encode()) {
            // Nothing was made: the client's next attempt opens the session.
            log::debug!("handshake with {}: {e}", hs.client);
            return self.close_handshake(hs);
        }
        let id = self.new_token();
        let route = RouteKey {
            role: Role::Server,
            cid,
        };
        self.routes.insert(route, id);
        let spec = SessionSpec {
            id,
            // A server learns its client's control address from its datagrams, and checks
            // each with challenges nobody else can predict.
            end: End::Server(ChallengeKey::new(&challenge_key)),
            cid,
            keys,
            epoch: answer.epoch,
            control,
            config,
        };
        let shared = SharedSession::new(spec, Arc::clone(&self.handle));
        if let Some(listener) = self.listeners.get_mut(&hs.listener) {
            listener
                .endpoint
                .opened(cid, id, hs.client.ip(), &hello, agreement);
        }
        if let Some((from, len)) = self.unclaimed.claim(&hello.opening_nonce, Instant::now()) {
            shared.handle_early(from, len);
        }
        // The client's first bytes follow the HELLO in the stream, which the frame reader
        // read exactly: they are the application's to read.
        shared.attach_first(into_std(&self.poll, hs.stream));
        let entry = Entry {
            shared,
            route,
            flush_watch: None,
            side: Side::Server {
                listener: hs.listener,
            },
        };
        self.adopt(id, entry);
        self.deliver(hs.listener, id, hs.client);
    }

    /// Tells a peer that does not speak robust-tcp what it reached, then drains it.
    fn turn_away(&mut self, hs: ServerHandshake) -> Option<ServerHandshake> {
        log::debug!("turning away {}: not robust-tcp", hs.client);
        let refused = write_frame(
            &hs.stream,
            &Answer::Refused(RefusalCode::BadRequest).encode(),
        );
        if refused.is_err() || hs.stream.shutdown(Shutdown::Write).is_err() {
            self.close_handshake(hs);
            return None;
        }
        self.drain(hs)
    }

    /// Reads and drops what a turned-away peer sends, for as long as the endpoint says.
    fn drain(&mut self, hs: ServerHandshake) -> Option<ServerHandshake> {
        let id = hs.id;
        let mut sink = [0u8; 1024];
        loop {
            let action = match (&hs.stream).read(&mut sink) {
                Ok(n) => self.ask(&hs, |ep, _| ep.on_drained(id, n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(hs),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => self.ask(&hs, |ep, _| ep.handshake_failed(id)),
            };
            if !matches!(action, Action::Wait) {
                return self.carry_out(hs, action);
            }
        }
    }
}
