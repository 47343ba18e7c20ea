//! The server side, run by the engine: listeners, and the handshake of every incoming TCP
//! connection, new session (paper Fig. 3) or reconnection (Fig. 4), on non-blocking
//! sockets. What each HELLO gets, the caps, eviction and tombstones are the I/O-free
//! [`ServerEndpoint`]'s decisions; this file reads and writes the frames, makes the
//! sessions and carries the verdicts out.
//!
//! A listener outlives its `RServerSocket`: while any of its sessions lives,
//! reconnections must still find the port open. New sessions are refused once the
//! `RServerSocket` is gone; the listener closes with the last session.

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};

use super::control::{canonical, ControlSocket, RouteKey};
use super::frames::{write_frame, FrameError, FrameRead, FrameReader};
use super::session::{SessionSpec, SharedSession};
use super::tcp_control::{TcpControl, TcpRoute};
use super::{into_std, random, Engine, Entry, Handshake, Side};
use crate::core::auth::{ChallengeKey, SessionKeys, TAG_LEN};
use crate::core::counter::to_wire;
use crate::core::endpoint::server::{ServerEndpoint, ServerLimits, Verdict};
use crate::core::handshake::{Accepted, Answer, Confirm, FrameKind, Hello, RefusalCode};
use crate::core::session::{End, Role};
use crate::{Config, RSocket};

/// How long a listener pauses after an accept error that retrying at once cannot fix (no
/// descriptors or memory left, say).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// The most a peer that does not speak robust-tcp may send while it is turned away.
const TURN_AWAY_DRAIN: usize = 64 * 1024;

/// A new session for `accept`.
pub(crate) struct Arrival {
    /// The session: an `RSocket`, so that a session nobody accepts closes when the queue
    /// is dropped.
    pub(crate) socket: RSocket,
    /// The client's address.
    pub(crate) client: SocketAddr,
}

/// A listening socket and the sessions it opened.
pub(crate) struct Listener {
    pub(crate) id: Token,
    pub(crate) socket: TcpListener,
    pub(crate) local_addr: SocketAddr,
    pub(crate) config: Config,
    pub(crate) accepted: Sender<Arrival>,
    /// The UDP socket its sessions' control datagrams use (its port is in every ANSWER).
    pub(crate) control: Arc<ControlSocket>,
    /// Whether the `RServerSocket` still exists (new sessions are welcome). Its drop
    /// clears it at once, before the engine hears of the drop: a HELLO the engine reads
    /// after the drop returned is refused even if it came before that command.
    open: Arc<AtomicBool>,
    /// Its sessions and handshakes, and every decision about them.
    endpoint: ServerEndpoint<Token, Token>,
    /// Set while accepting is paused after a resource error.
    paused_until: Option<Instant>,
}

impl Listener {
    /// The flag its `RServerSocket` clears when dropped.
    pub(crate) fn open_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.open)
    }

    fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    /// A listener for the engine, from a bound non-blocking socket.
    pub(crate) fn new(
        id: Token,
        socket: TcpListener,
        config: Config,
        accepted: Sender<Arrival>,
        control: Arc<ControlSocket>,
    ) -> io::Result<Self> {
        Ok(Listener {
            id,
            local_addr: socket.local_addr()?,
            socket,
            accepted,
            control,
            open: Arc::new(AtomicBool::new(true)),
            endpoint: ServerEndpoint::new(ServerLimits::new(&config)),
            paused_until: None,
            config,
        })
    }
}

/// A reconnection answered, waiting for its CONFIRM: the exchange the CONFIRM must cover.
struct Confirming {
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

/// The server side of one handshake.
pub(crate) struct ServerHandshake {
    /// Its token in the engine (and in its listener's endpoint).
    id: Token,
    pub(crate) stream: TcpStream,
    pub(crate) listener: Token,
    client: SocketAddr,
    phase: Phase,
}

enum Phase {
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
    /// Serves a new listener.
    pub(super) fn listen(&mut self, mut listener: Listener) {
        let id = listener.id;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut listener.socket, id, Interest::READABLE)
        {
            log::error!("cannot serve {}: {e}", listener.local_addr);
            return;
        }
        self.listeners.insert(id, listener);
        // Connections may have queued before the registration.
        self.accept(id);
    }

    /// The `RServerSocket` was dropped: refuse new sessions; close once none is left.
    pub(super) fn unlisten(&mut self, id: Token) {
        self.close_if_done(id);
    }

    /// A session of listener `id` ended: free its slot (see [`ServerEndpoint::ended`]).
    pub(super) fn forget_session(&mut self, id: Token, cid: u32, client_knows_cid: bool) {
        if let Some(listener) = self.listeners.get_mut(&id) {
            listener
                .endpoint
                .ended(cid, client_knows_cid, Instant::now());
        }
        self.close_if_done(id);
    }

    fn close_if_done(&mut self, id: Token) {
        let done = self
            .listeners
            .get(&id)
            .is_some_and(|l| !l.is_open() && l.endpoint.session_count() == 0);
        if !done {
            return;
        }
        if let Some(mut listener) = self.listeners.remove(&id) {
            self.timers.set(id, None);
            let _ = self.poll.registry().deregister(&mut listener.socket);
            for token in listener.endpoint.take_handshakes() {
                self.drop_handshake(token);
            }
            log::debug!("server on {} stopped listening", listener.local_addr);
        }
    }

    /// Accepts the connections waiting on listener `id`, up to the round's budget.
    pub(super) fn accept(&mut self, id: Token) {
        for _ in 0..super::ROUND_BUDGET {
            let Some(listener) = self.listeners.get_mut(&id) else {
                return;
            };
            if listener.paused_until.is_some() {
                return;
            }
            match listener.socket.accept() {
                Ok((stream, peer)) => self.start_handshake(id, stream, canonical(peer)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // The connection died in the backlog: the next one is fine.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                    ) =>
                {
                    log::debug!("accept on {}: {e}", listener.local_addr)
                }
                Err(e) => {
                    // Out of descriptors or memory, or worse: the connection stays
                    // queued in the kernel, and an edge-triggered poll will not report it
                    // again. Come back after a pause instead of spinning on the error.
                    log::warn!("accept on {}: {e}; pausing", listener.local_addr);
                    let until = Instant::now() + ACCEPT_PAUSE;
                    listener.paused_until = Some(until);
                    self.timers.set(id, Some(until));
                    return;
                }
            }
        }
        self.backlog.push(id);
    }

    /// A listener's pause is over.
    pub(super) fn resume_listening(&mut self, id: Token) {
        if let Some(listener) = self.listeners.get_mut(&id) {
            listener.paused_until = None;
            self.accept(id);
        }
    }

    fn start_handshake(&mut self, id: Token, mut stream: TcpStream, client: SocketAddr) {
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
    pub(super) fn advance_server_handshake(&mut self, token: Token, hs: ServerHandshake) {
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
    fn server_step(&mut self, mut hs: ServerHandshake) -> Option<ServerHandshake> {
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
            Phase::Confirm(confirming) => {
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
    pub(super) fn server_handshake_failed(&mut self, hs: ServerHandshake, why: &str) {
        match hs.phase {
            Phase::Confirm(_) => self.confirm_failed(hs, why),
            _ => {
                log::debug!("handshake with {}: {why}", hs.client);
                self.close_handshake(hs);
            }
        }
    }

    /// Closes a handshake's connection.
    fn close_handshake(&self, mut hs: ServerHandshake) {
        self.deregister(&mut hs.stream);
    }

    /// Removes a handshake from its listener's count.
    pub(super) fn forget_handshake(&mut self, listener: Token, token: Token) {
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
        // The number of the attempt, so that a session opened by a retried opening never
        // reuses a connection number the client gave an earlier connection (a stale
        // failure report about it must not fail this one). Attempts of an honest client
        // stay far below 2^32.
        let epoch = hello.attempt as u32;
        let answer = Accepted {
            cid,
            opened: true,
            control_port: control.port(),
            client_nonce: hello.nonce,
            received: 0,
            epoch,
            server_nonce,
            tag: [0; TAG_LEN],
        }
        .sign(&hello, &keys.handshake.server);
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

    /// The confirmation of a reconnection did not arrive, or did not verify: the session
    /// stays without a connection until the next one. A client whose CONFIRM was lost on
    /// the way installed the connection offered, which the server never took: it is told
    /// that this connection failed, and reconnects.
    fn confirm_failed(&mut self, hs: ServerHandshake, why: &str) {
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

    /// Resumes session `id` on this connection: its HELLO proved itself (see
    /// [`ServerEndpoint::on_hello`]); the count it carries must check out too.
    fn resume_session(
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
        // The connection is numbered by the attempt that made it: above every number
        // offered before, so that no two connections the client may have installed share
        // a number (a RECONNECT about one never fails another).
        let epoch = hello.attempt as u32;
        let answer = Accepted {
            cid: shared.cid(),
            opened: false,
            control_port: shared.control_port(),
            client_nonce: hello.nonce,
            received: to_wire(shared.received()),
            epoch,
            server_nonce,
            tag: [0; TAG_LEN],
        }
        .sign(&hello, &shared.handshake_keys().server);
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

    /// Hands a new session to `accept`.
    fn deliver(&mut self, listener: Token, session: Token, client: SocketAddr) {
        let (Some(l), Some(entry)) = (self.listeners.get(&listener), self.sessions.get(&session))
        else {
            return;
        };
        let socket = RSocket::from_shared(std::sync::Arc::clone(&entry.shared));
        // If the server socket is gone, the returned session is dropped here and closes.
        drop(l.accepted.send(Arrival { socket, client }));
        self.service(session);
    }

    /// Answers a hello with a refusal; the client reads it and hangs up.
    fn refuse(&mut self, hs: ServerHandshake, reason: RefusalCode) -> Option<ServerHandshake> {
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
