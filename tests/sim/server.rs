//! The server side, driven as the engine drives it (`src/engine/server/`): the real
//! `ServerEndpoint` runs each handshake's phases and decides what each frame gets; this
//! reads the frames, holds the sessions and carries its actions out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use robust_tcp::protocol::auth::{ChallengeKey, HandshakeKeys, SessionKeys};
use robust_tcp::protocol::early;
use robust_tcp::protocol::endpoint::{
    Action, Host, Opening, Presence, ServerEndpoint, ServerLimits, Unclaimed,
};
use robust_tcp::protocol::handshake::{Answer, RefusalCode};
use robust_tcp::protocol::session::{End, ReadGate, Session};
use robust_tcp::{Config, Error};

use crate::frames::{self, Front};
use crate::rng::Rng;
use crate::world::{limits, Stream, World, SERVER_CONTROL, VICTIM};

/// The server process: one listener.
pub struct Server {
    pub endpoint: ServerEndpoint<usize, usize>,
    pub config: Config,
    pub sessions: Vec<ServerSession>,
    /// Live sessions by CID (the engine's routes).
    pub by_cid: HashMap<u32, usize>,
    /// Handshakes in progress, by connection, with their deadlines.
    pub handshakes: HashMap<usize, Instant>,
    /// EARLY datagrams that came before their HELLO was read.
    pub unclaimed: Unclaimed,
}

/// A server session and its application.
pub struct ServerSession {
    pub session: Session,
    pub keys: HandshakeKeys,
    pub cid: u32,
    pub conn: Option<usize>,
    /// The client it belongs to (the oracle's knowledge, not the server's).
    pub client: usize,
    /// What it writes to its client, and what it reads from it.
    pub out: Stream,
    pub back: Stream,
    /// Ended: freed by the engine.
    pub finished: bool,
    /// The application shut down writing; then closed.
    pub shut: bool,
    pub closed: bool,
}

impl Server {
    pub fn new(config: Config) -> Self {
        Server {
            endpoint: ServerEndpoint::new(ServerLimits::new(&config)),
            config,
            sessions: Vec::new(),
            by_cid: HashMap::new(),
            handshakes: HashMap::new(),
            unclaimed: Unclaimed::default(),
        }
    }
}

/// What the endpoint's handshakes see of the simulated server (`EngineHost`).
struct SimHost<'a> {
    sessions: &'a mut [ServerSession],
    by_cid: &'a HashMap<u32, usize>,
    rng: &'a mut Rng,
}

impl Host<usize> for SimHost<'_> {
    fn handshake_keys(&self, s: usize) -> Option<HandshakeKeys> {
        let ss = self.sessions.get(s).filter(|ss| !ss.finished)?;
        Some(ss.keys.clone())
    }

    fn presence(&self, s: usize, now: Instant) -> Presence {
        let ss = self.sessions.get(s).filter(|ss| !ss.finished);
        ss.map_or_else(Default::default, |ss| Presence::of(&ss.session, now))
    }

    fn with_session<R>(&mut self, s: usize, f: impl FnOnce(&mut Session) -> R) -> Option<R> {
        let ss = self.sessions.get_mut(s).filter(|ss| !ss.finished)?;
        Some(f(&mut ss.session))
    }

    fn cid_taken(&self, cid: u32) -> bool {
        self.by_cid.contains_key(&cid)
    }

    fn control_port(&self) -> u16 {
        SERVER_CONTROL.port()
    }

    fn random(&mut self, buf: &mut [u8]) -> bool {
        for b in buf {
            *b = self.rng.next_u64() as u8;
        }
        true
    }
}

impl World {
    /// The server accepts the connections whose TCP handshake completed by now.
    pub fn accept_due(&mut self) {
        for conn in self.live.clone() {
            let due = self.conns[conn].accept_at.is_some_and(|at| at <= self.now);
            if due {
                self.conns[conn].accept_at = None;
                if !self.conns[conn].broken {
                    self.server_accept(conn);
                }
            }
        }
    }

    /// The server accepts connection `conn` (`Engine::start_handshake`).
    fn server_accept(&mut self, conn: usize) {
        let deadline = self.now + self.server.config.handshake_timeout_value();
        if let Some((victim, action)) = self.server.endpoint.handshake_started(conn) {
            self.carry_out(victim, action);
            if victim == conn {
                // Every slot holds an answered resumption: the new connection is dropped.
                return;
            }
        }
        self.server.handshakes.insert(conn, deadline);
    }

    /// Everything the server's engine does now.
    pub fn service_server(&mut self) {
        self.accept_due();
        let mut conns: Vec<usize> = self.server.handshakes.keys().copied().collect();
        conns.sort_unstable();
        for conn in conns {
            self.advance_handshake(conn);
        }
        for s in 0..self.server.sessions.len() {
            self.service_server_session(s);
        }
    }

    /// Reads what handshake `conn` expects and hands it to the endpoint
    /// (`Engine::server_step`).
    fn advance_handshake(&mut self, conn: usize) {
        let now = self.now;
        let Some(&deadline) = self.server.handshakes.get(&conn) else {
            return;
        };
        if self.conns[conn].broken || now >= deadline {
            let action = self.server.endpoint.handshake_failed(conn);
            return self.carry_out(conn, action);
        }
        let turning_away = self.server.endpoint.expected(conn).is_empty();
        let Some(pipe) = self.conns[conn].at_server() else {
            return;
        };
        let action = if turning_away {
            let n = pipe.len();
            pipe.clear();
            if n == 0 {
                return;
            }
            self.server.endpoint.on_drained(conn, n)
        } else {
            match frames::take(pipe) {
                Front::Partial => return,
                Front::Garbage => self.server.endpoint.on_garbage(conn),
                Front::Frame(kind, body) => {
                    let client = self.conns[conn].from.ip();
                    let mut host = SimHost {
                        sessions: &mut self.server.sessions,
                        by_cid: &self.server.by_cid,
                        rng: &mut self.rng,
                    };
                    let ep = &mut self.server.endpoint;
                    ep.on_frame(conn, kind, &body, client, true, &mut host, now)
                }
            }
        };
        self.carry_out(conn, action);
    }

    /// Carries out what the endpoint decided for handshake `conn` (`Engine::carry_out`).
    fn carry_out(&mut self, conn: usize, action: Action<usize>) {
        let now = self.now;
        match action {
            Action::Wait => return,
            Action::Refuse(code) => {
                self.conns[conn].send_down(now, &Answer::Refused(code).encode());
                self.conns[conn].server_done = true;
            }
            Action::Known(answer) => {
                self.conns[conn].send_down(now, &Answer::Accepted(*answer).encode());
                self.conns[conn].server_done = true;
            }
            Action::TurnAway => {
                let refusal = Answer::Refused(RefusalCode::BadRequest).encode();
                self.conns[conn].send_down(now, &refusal);
                return;
            }
            Action::Open(opening) => self.open(conn, *opening),
            Action::Barrier(s) => {
                let ss = &mut self.server.sessions[s];
                if let Some(old) = ss.conn.take() {
                    let epoch = ss.session.epoch();
                    ss.session
                        .handle_connection_failed(epoch, "the client reconnected", now);
                    self.conns[old].abort_from_server();
                }
                let mut host = SimHost {
                    sessions: &mut self.server.sessions,
                    by_cid: &self.server.by_cid,
                    rng: &mut self.rng,
                };
                let action = self.server.endpoint.after_barrier(conn, &mut host);
                return self.carry_out(conn, action);
            }
            Action::Answer(answer) => {
                self.conns[conn].send_down(now, &Answer::Accepted(*answer).encode());
                return;
            }
            Action::Install {
                session,
                epoch,
                peer_received,
            } => {
                let ss = &mut self.server.sessions[session];
                assert!(!ss.finished, "an ended session's resumption confirmed");
                ss.session.handle_resume(peer_received, epoch, now);
                ss.conn = Some(conn);
            }
            Action::OfferFailed { session, epoch } => {
                let ss = &mut self.server.sessions[session];
                if !ss.finished {
                    ss.session.handle_offer_failed(epoch, now);
                }
                self.conns[conn].abort_from_server();
            }
            // The simulation's clients open no control connection, and its handshakes read
            // frames at once, past the first bytes' sniffing.
            Action::Control | Action::Close | Action::Plain | Action::Greet => {
                self.conns[conn].abort_from_server()
            }
        }
        self.server.handshakes.remove(&conn);
    }

    /// A new session (`Engine::open_session`).
    fn open(&mut self, conn: usize, opening: Opening<usize>) {
        let now = self.now;
        if let Some(evicted) = opening.evict {
            let s = &mut self.server.sessions[evicted.session];
            let waited = evicted.waited;
            s.session.reset(Error::Evicted { waited }, now);
            self.end_server_session(evicted.session);
        }
        let (hello, answer, cid) = (opening.hello, opening.answer, opening.cid);
        let client = self.oracle.openings.get(&hello.opening_nonce).copied();
        let Some(client) = client else {
            panic!("an opening no client made was accepted");
        };
        assert!(
            self.oracle.opened.insert(hello.opening_nonce),
            "client {client}'s opening opened a second session (attempt {}): its first bytes \
             are delivered twice",
            hello.attempt
        );
        self.conns[conn].send_down(self.now, &Answer::Accepted(answer).encode());
        let SessionKeys { handshake, control } = opening.keys;
        let limits = limits(&self.server.config);
        let end = End::Server(ChallengeKey::new(&opening.challenge_key));
        let session = Session::new(end, cid, answer.epoch, limits, control, now);
        let s = self.server.sessions.len();
        let (out, back) = (
            self.clients[client].back.fresh(),
            self.clients[client].out.fresh(),
        );
        self.server.sessions.push(ServerSession {
            session,
            keys: handshake,
            cid,
            conn: Some(conn),
            client,
            out,
            back,
            finished: false,
            shut: false,
            closed: false,
        });
        self.server.by_cid.insert(cid, s);
        self.server.endpoint.opened(
            cid,
            s,
            self.conns[conn].from.ip(),
            &hello,
            opening.agreement,
        );
        if let Some((from, len)) = self.server.unclaimed.claim(&hello.opening_nonce, now) {
            self.server_early(s, from, len);
        }
        self.opening_answered(conn, client);
    }

    /// The server session's duties: failed connections, timers, datagrams, the end.
    fn service_server_session(&mut self, s: usize) {
        let now = self.now;
        if self.server.sessions[s].finished {
            return;
        }
        self.server_conn_check(s);
        let ss = &mut self.server.sessions[s];
        if ss.session.poll_timeout().is_some_and(|t| t <= now) {
            ss.session.handle_timeout(now);
        }
        self.server_conn_check(s);
        self.flush_server(s);
        let ss = &mut self.server.sessions[s];
        ss.session.poll_fin();
        ss.session.poll_end_of_stream();
        let mut buf = [0; robust_tcp::protocol::control::MAX_LEN];
        while let Some((n, to)) = self.server.sessions[s].session.poll_datagram(&mut buf, now) {
            let validated = self.server.sessions[s].session.control_peer() == Some(to);
            if !validated || to.ip() == VICTIM {
                *self.oracle.unvalidated_to.entry(to).or_default() += n as u64;
            }
            self.datagrams
                .send(&mut self.rng, now, SERVER_CONTROL, to, &buf[..n]);
        }
        if self.server.sessions[s].session.is_finished() {
            self.end_server_session(s);
        }
    }

    fn server_conn_check(&mut self, s: usize) {
        let now = self.now;
        let ss = &mut self.server.sessions[s];
        let Some(conn) = ss.conn else {
            return;
        };
        let epoch = ss.session.epoch();
        if self.conns[conn].broken {
            ss.session.handle_connection_failed(epoch, "cut", now);
        }
        if !ss.session.is_connected() || self.conns[conn].broken {
            ss.conn = None;
            self.conns[conn].abort_from_server();
        }
    }

    /// The engine frees an ended session (`Engine::finish`).
    fn end_server_session(&mut self, s: usize) {
        let now = self.now;
        let ss = &mut self.server.sessions[s];
        if ss.finished {
            return;
        }
        ss.finished = true;
        if let Some(conn) = ss.conn.take() {
            self.conns[conn].abort_from_server();
        }
        let knows = ss.session.peer_knows_cid();
        self.server.by_cid.remove(&ss.cid);
        self.server.endpoint.ended(ss.cid, knows, now);
    }

    fn flush_server(&mut self, s: usize) {
        let now = self.now;
        let ss = &mut self.server.sessions[s];
        let Some(conn) = ss.conn else {
            return;
        };
        if let Some((from, to)) = ss.session.unsent() {
            assert!(from <= to, "the session would send [{from}, {to})");
            let n = (to - from) as usize;
            let bytes = ss.session.buffered_from(from, n);
            self.conns[conn].send_down(now, &bytes[..n]);
            let epoch = ss.session.epoch();
            ss.session.handle_sent(epoch, from, n, now);
        }
    }

    /// Server session `s`'s application writes up to `n` more bytes.
    pub fn server_write(&mut self, s: usize, n: usize) {
        let now = self.now;
        let ss = &mut self.server.sessions[s];
        if ss.finished {
            return;
        }
        let Ok(space) = ss.session.write_space() else {
            return;
        };
        if ss.out.left() == 0 {
            return;
        }
        if space == 0 {
            // A writer that finds the buffer full asks for an acknowledgement and waits.
            ss.session.writer_blocked(now);
            return;
        }
        let n = n.min(space).min(ss.out.left());
        let data = ss.out.next_bytes(n);
        assert_eq!(ss.session.write(&data, now), n);
        ss.session.writer_unblocked();
        self.flush_server(s);
    }

    /// Server session `s`'s application shuts down writing once it wrote everything, and
    /// closes once it also read everything.
    pub fn server_close(&mut self, s: usize) {
        let now = self.now;
        let ss = &mut self.server.sessions[s];
        if ss.finished {
            return;
        }
        if ss.out.left() == 0 && !ss.shut {
            ss.session.shutdown_write(now);
            ss.shut = true;
        }
        if ss.shut && !ss.closed && matches!(ss.session.read_gate(), ReadGate::Eof) {
            assert!(
                ss.back.is_done(),
                "server session {s}: end of stream before every byte"
            );
            ss.session.close(now);
            ss.closed = true;
        }
    }

    /// Server session `s`'s application reads up to `n` bytes, checking each.
    pub fn server_read(&mut self, s: usize, n: usize) {
        let now = self.now;
        let ss = &mut self.server.sessions[s];
        let Some(conn) = ss.conn else {
            return;
        };
        if ss.finished
            || !matches!(ss.session.read_gate(), ReadGate::Proceed)
            || self.conns[conn].broken
        {
            return;
        }
        let Some(pipe) = self.conns[conn].at_server() else {
            return;
        };
        let n = n.min(pipe.len());
        let bytes: Vec<u8> = pipe.drain(..n).collect();
        ss.back.check_read(
            &bytes,
            &format!("server session {s} (client {})", ss.client),
        );
        ss.session.handle_read(n, now);
    }

    /// Hands a datagram that arrived at the server's control address to its session.
    pub fn server_datagram(&mut self, from: SocketAddr, bytes: &[u8]) {
        let now = self.now;
        if let Some(opening_nonce) = early::parse(bytes) {
            match self.server.endpoint.opened_by(&opening_nonce) {
                Some(s) => self.server_early(s, from, bytes.len()),
                None => self
                    .server
                    .unclaimed
                    .keep(opening_nonce, from, bytes.len(), now),
            }
            return;
        }
        let Some(route) = robust_tcp::protocol::control::ControlMessage::route(bytes) else {
            return;
        };
        if route.from_server {
            return;
        }
        if let Some(&s) = self.server.by_cid.get(&route.cid) {
            let session = &mut self.server.sessions[s].session;
            if session.handle_datagram(bytes, from, now).is_ok() {
                *self.oracle.accepted_from.entry(from).or_default() += bytes.len() as u64;
            }
        }
    }

    /// Server session `s` gets its client's EARLY datagram of `len` bytes from `from`
    /// (`Engine::early`); the bytes count for the allowance only if the session took it.
    fn server_early(&mut self, s: usize, from: SocketAddr, len: usize) {
        let ss = &mut self.server.sessions[s];
        if !ss.finished && ss.session.handle_early(from, len, self.now) {
            *self.oracle.accepted_from.entry(from).or_default() += len as u64;
        }
    }
}
