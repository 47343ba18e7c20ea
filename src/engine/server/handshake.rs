//! A server handshake on a non-blocking socket: the HELLO read, the listener's endpoint
//! asked for its verdict, and the verdict carried out: a new session made and answered at
//! its HELLO (and handed to `accept`), a resumption answered ([`super::resume`]), a
//! refusal, a control connection, or a peer that does not speak robust-tcp turned away.

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Token};

use super::resume::Confirming;
use crate::core::auth::{ChallengeKey, SessionKeys};
use crate::core::endpoint::server::Verdict;
use crate::core::handshake::{Accepted, Answer, FrameKind, Hello, RefusalCode};
use crate::core::session::{End, Role};
use crate::engine::control::RouteKey;
use crate::engine::frames::{write_frame, FrameError, FrameRead, FrameReader};
use crate::engine::handshakes::Handshake;
use crate::engine::session::{SessionSpec, SharedSession};
use crate::engine::tcp_control::{TcpControl, TcpRoute};
use crate::engine::{into_std, random, Engine, Entry, Side};

/// The most a peer that does not speak robust-tcp may send while it is turned away.
const TURN_AWAY_DRAIN: usize = 64 * 1024;

/// The server side of one handshake.
pub(crate) struct ServerHandshake {
    /// Its token in the engine (and in its listener's endpoint).
    pub(super) id: Token,
    pub(crate) stream: TcpStream,
    pub(crate) listener: Token,
    pub(super) client: SocketAddr,
    pub(super) phase: Phase,
}

/// Where a server handshake stands.
pub(super) enum Phase {
    /// Waiting for the client's HELLO.
    Hello(FrameReader),
    /// Session `session` was resumed and answered; waiting for the client's CONFIRM,
    /// which proves it holds the keys and received this answer.
    Confirm(Box<Confirming>),
    /// The peer does not speak robust-tcp: it was told so, and what it still sends is
    /// read and dropped until it hangs up, so that closing does not reset the connection
    /// before it read the answer.
    TurningAway(usize),
}

impl Engine {
    pub(super) fn start_handshake(&mut self, id: Token, mut stream: TcpStream, client: SocketAddr) {
        let token = self.new_token();
        let Some(listener) = self.listeners.get(&id) else {
            return;
        };
        let timeout = listener.config.handshake_timeout_value();
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
        let crowded = self
            .listeners
            .get_mut(&id)
            .and_then(|l| l.endpoint.handshake_started(token));
        if let Some(victim) = crowded {
            self.abandon_handshake(victim, "too many handshakes in progress");
        }
        let deadline = Instant::now() + timeout;
        let hs = ServerHandshake {
            id: token,
            stream,
            listener: id,
            client,
            phase: Phase::Hello(FrameReader::first()),
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
            None => self.forget_handshake(listener, token),
        }
    }

    /// One step of a server handshake: the handshake back while it waits for bytes,
    /// `None` once it is over (its stream handed to a session, or closed).
    pub(super) fn server_step(&mut self, mut hs: ServerHandshake) -> Option<ServerHandshake> {
        match &mut hs.phase {
            Phase::Hello(reader) => match reader.poll(&hs.stream) {
                Ok(FrameRead::Pending) => Some(hs),
                Ok(FrameRead::Done(body)) if reader.kind() == Some(FrameKind::Control) => {
                    if !body.is_empty() {
                        // This version's CONTROL has no body.
                        return self.turn_away(hs);
                    }
                    self.control_connection(hs);
                    None
                }
                Ok(FrameRead::Done(body)) => match Hello::parse(&body) {
                    Ok(hello) => self.answer_hello(hs, hello),
                    Err(_) => self.turn_away(hs),
                },
                Err(FrameError::Wire(_)) => self.turn_away(hs),
                Err(FrameError::Io(e)) => {
                    log::debug!("handshake with {}: {e}", hs.client);
                    self.close_handshake(hs);
                    None
                }
            },
            Phase::Confirm(_) => self.read_confirm(hs),
            Phase::TurningAway(drained) => {
                let drained = *drained;
                self.drain(hs, drained)
            }
        }
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

    /// The handshake ended before completing: its deadline passed, or it was evicted.
    pub(in crate::engine) fn server_handshake_failed(&mut self, hs: ServerHandshake, why: &str) {
        match hs.phase {
            Phase::Confirm(_) => self.confirm_failed(hs, why),
            _ => {
                log::debug!("handshake with {}: {why}", hs.client);
                self.close_handshake(hs);
            }
        }
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

    /// A HELLO: carries out what the listener's endpoint decides for it.
    fn answer_hello(&mut self, hs: ServerHandshake, hello: Hello) -> Option<ServerHandshake> {
        let Some(listener) = self.listeners.get_mut(&hs.listener) else {
            return self.refuse(hs, RefusalCode::Closed);
        };
        let welcome = listener.is_open();
        let sessions = &self.sessions;
        let now = Instant::now();
        let verdict = listener.endpoint.on_hello(
            &hello,
            hs.client.ip(),
            welcome,
            now,
            |id, hello| {
                sessions
                    .get(&id)
                    .is_some_and(|e| hello.verify(&e.shared.handshake_keys().client))
            },
            |id| {
                sessions
                    .get(&id)
                    .map_or_else(Default::default, |e| e.shared.presence(now))
            },
        );
        if matches!(verdict, Verdict::Refuse(RefusalCode::TooManySessions)) {
            listener.count_refused_full();
        }
        match verdict {
            Verdict::Refuse(code) => self.refuse(hs, code),
            Verdict::Resume(id) => self.resume_session(hs, hello, id),
            Verdict::Open { keys, evict } => {
                if let Some(evicted) = evict {
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
                self.open_session(hs, hello, *keys)
            }
        }
    }

    /// Opens a new session for the client, answers it, and hands it to `accept` at once:
    /// the client holds the keys (it drew the secret) and the opening nonce, so it can
    /// always come back to the session, and its first bytes follow the HELLO.
    fn open_session(
        &mut self,
        hs: ServerHandshake,
        hello: Hello,
        keys: SessionKeys,
    ) -> Option<ServerHandshake> {
        let Some(listener) = self.listeners.get(&hs.listener) else {
            return self.refuse(hs, RefusalCode::Closed);
        };
        let config = listener.config.clone();
        let control = Arc::clone(&listener.control);
        let (Some(cid), Ok(server_nonce), Ok(challenge_key)) = (self.new_cid(), random(), random())
        else {
            return self.refuse(hs, RefusalCode::TooManySessions);
        };
        let answer = Accepted::accepting(
            &hello,
            cid,
            true,
            control.port(),
            0,
            server_nonce,
            &keys.handshake.server,
        );
        let epoch = answer.epoch;
        if let Err(e) = write_frame(&hs.stream, &Answer::Accepted(answer).encode()) {
            // Nothing was made: the client's next attempt opens the session.
            log::debug!("handshake with {}: {e}", hs.client);
            self.close_handshake(hs);
            return None;
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
            epoch,
            control: Arc::clone(&control),
            config,
        };
        let shared = SharedSession::new(spec, Arc::clone(&self.handle));
        if let Some(listener) = self.listeners.get_mut(&hs.listener) {
            listener.endpoint.opened(cid, id, hs.client.ip(), &hello);
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
        None
    }

    /// A random CID that no server session of this process has, never 0: random, so that
    /// one session's CID tells nothing of its neighbours', and unique, so that a datagram
    /// for a server session is looked up in one step.
    fn new_cid(&self) -> Option<u32> {
        (0..64).find_map(|_| {
            let cid = u32::from_be_bytes(random().ok()?);
            let route = RouteKey {
                role: Role::Server,
                cid,
            };
            (cid != 0 && !self.routes.contains(&route)).then_some(cid)
        })
    }

    /// Answers a hello with a refusal; the client reads it and hangs up.
    pub(super) fn refuse(
        &mut self,
        hs: ServerHandshake,
        reason: RefusalCode,
    ) -> Option<ServerHandshake> {
        log::debug!("refusing {}: {reason:?}", hs.client);
        let _ = write_frame(&hs.stream, &Answer::Refused(reason).encode());
        self.close_handshake(hs);
        None
    }

    /// Tells a peer that does not speak robust-tcp what it reached, then drains it.
    fn turn_away(&mut self, mut hs: ServerHandshake) -> Option<ServerHandshake> {
        log::debug!("turning away {}: not robust-tcp", hs.client);
        let refused = write_frame(
            &hs.stream,
            &Answer::Refused(RefusalCode::BadRequest).encode(),
        );
        if refused.is_err() || hs.stream.shutdown(Shutdown::Write).is_err() {
            self.close_handshake(hs);
            return None;
        }
        hs.phase = Phase::TurningAway(0);
        self.drain(hs, 0)
    }

    /// Reads and drops what a turned-away peer sends, up to a bound, until it hangs up.
    fn drain(&mut self, mut hs: ServerHandshake, mut drained: usize) -> Option<ServerHandshake> {
        let mut sink = [0u8; 1024];
        loop {
            match (&hs.stream).read(&mut sink) {
                Ok(n) if n > 0 && drained + n <= TURN_AWAY_DRAIN => drained += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    hs.phase = Phase::TurningAway(drained);
                    return Some(hs);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => {
                    self.close_handshake(hs);
                    return None;
                }
            }
        }
    }
}
