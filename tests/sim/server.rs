//! The server side, driven as the engine drives it (`src/engine/server/`): the real
//! `ServerEndpoint` decides what each HELLO gets; this carries the verdicts out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use robust_tcp::protocol::auth::{ChallengeKey, HandshakeKeys, SessionKeys};
use robust_tcp::protocol::counter::to_wire;
use robust_tcp::protocol::endpoint::{Presence, ServerEndpoint, ServerLimits, Verdict};
use robust_tcp::protocol::handshake::{Accepted, Answer, Confirm, FrameKind, Hello, RefusalCode};
use robust_tcp::protocol::session::{End, ReadGate, Session};
use robust_tcp::{Config, Error};

use crate::frames::{self, Front};
use crate::world::{limits, Stream, World, SERVER_CONTROL, VICTIM};

/// The server process: one listener.
pub struct Server {
    pub endpoint: ServerEndpoint<usize, usize>,
    pub config: Config,
    pub sessions: Vec<ServerSession>,
    /// Live sessions by CID (the engine's routes).
    pub by_cid: HashMap<u32, usize>,
    /// Handshakes in progress, by connection.
    pub handshakes: HashMap<usize, Handshake>,
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

/// The server's side of one connection's handshake.
pub enum Handshake {
    Hello {
        deadline: Instant,
    },
    Confirm {
        deadline: Instant,
        session: usize,
        hello: Hello,
        answer: Accepted,
        epoch: u32,
        peer_received: u64,
    },
}

impl Server {
    pub fn new(config: Config) -> Self {
        Server {
            endpoint: ServerEndpoint::new(ServerLimits::new(&config)),
            config,
            sessions: Vec::new(),
            by_cid: HashMap::new(),
            handshakes: HashMap::new(),
        }
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

    /// The server accepts connection `conn`.
    fn server_accept(&mut self, conn: usize) {
        let deadline = self.now + self.server.config.handshake_timeout_value();
        if let Some(victim) = self.server.endpoint.handshake_started(conn) {
            self.server_handshake_failed(victim);
        }
        self.server
            .handshakes
            .insert(conn, Handshake::Hello { deadline });
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

    fn advance_handshake(&mut self, conn: usize) {
        let now = self.now;
        let Some(hs) = self.server.handshakes.get(&conn) else {
            return;
        };
        let deadline = match hs {
            Handshake::Hello { deadline } | Handshake::Confirm { deadline, .. } => *deadline,
        };
        if self.conns[conn].broken || now >= deadline {
            return self.server_handshake_failed(conn);
        }
        let Some(pipe) = self.conns[conn].at_server() else {
            return;
        };
        let front = frames::take(pipe);
        match (front, self.server.handshakes.get(&conn)) {
            (Front::Partial, _) => {}
            (Front::Frame(FrameKind::Hello, body), Some(Handshake::Hello { .. })) => {
                match Hello::parse(&body) {
                    Ok(hello) => self.answer_hello(conn, hello),
                    Err(_) => self.refuse(conn, RefusalCode::BadRequest),
                }
            }
            (Front::Frame(FrameKind::Confirm, body), Some(Handshake::Confirm { .. })) => {
                self.confirmed(conn, &body)
            }
            _ => self.refuse(conn, RefusalCode::BadRequest),
        }
    }

    /// The endpoint's verdict on `hello`, carried out (`Engine::answer_hello`).
    fn answer_hello(&mut self, conn: usize, hello: Hello) {
        let now = self.now;
        let client_ip = self.conns[conn].from.ip();
        let sessions = &self.server.sessions;
        let verdict = self.server.endpoint.on_hello(
            &hello,
            client_ip,
            true,
            now,
            |s, hello| hello.verify(&sessions[s].keys.client),
            |s| Presence::of(&sessions[s].session, now),
        );
        match verdict {
            Verdict::Refuse(code) => self.refuse(conn, code),
            Verdict::Resume(s) => self.resume(conn, hello, s),
            Verdict::Open { keys, evict } => {
                if let Some(evicted) = evict {
                    let s = &mut self.server.sessions[evicted.session];
                    s.session.reset(
                        Error::Evicted {
                            waited: evicted.waited,
                        },
                        now,
                    );
                    self.end_server_session(evicted.session);
                }
                self.open(conn, hello, *keys);
            }
        }
    }

    /// A new session (`Engine::open_session`).
    fn open(&mut self, conn: usize, hello: Hello, keys: SessionKeys) {
        let now = self.now;
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
        let cid = loop {
            let cid = self.rng.next_u64() as u32;
            if cid != 0 && !self.server.by_cid.contains_key(&cid) {
                break cid;
            }
        };
        let nonce = self.rng.bytes();
        let port = SERVER_CONTROL.port();
        let answer = Accepted::accepting(&hello, cid, true, port, 0, nonce, &keys.handshake.server);
        let epoch = answer.epoch;
        self.conns[conn].send_down(self.now, &Answer::Accepted(answer).encode());
        let SessionKeys { handshake, control } = keys;
        let limits = limits(&self.server.config);
        let challenges = ChallengeKey::new(&self.rng.bytes());
        let end = End::Server(challenges);
        let session = Session::new(end, cid, epoch, limits, control, now);
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
        self.server
            .endpoint
            .opened(cid, s, self.conns[conn].from.ip(), &hello);
        self.server.endpoint.handshake_ended(conn);
        self.server.handshakes.remove(&conn);
        self.opening_answered(conn, client);
    }

    /// A resumption whose HELLO proved itself (`Engine::resume_session`).
    fn resume(&mut self, conn: usize, hello: Hello, s: usize) {
        let now = self.now;
        let ss = &mut self.server.sessions[s];
        if !hello.is_opening() {
            ss.session.handle_cid_named();
        }
        if !ss.session.may_resume(hello.received) {
            return self.refuse(conn, RefusalCode::BadRequest);
        }
        if let Some(old) = ss.conn.take() {
            let epoch = ss.session.epoch();
            ss.session
                .handle_connection_failed(epoch, "the client reconnected", now);
            self.conns[old].abort_from_server();
        }
        let Some(peer_received) = ss.session.check_resume(hello.received) else {
            return self.refuse(conn, RefusalCode::BadRequest);
        };
        let received = to_wire(ss.session.received());
        let (nonce, port) = (self.rng.bytes(), SERVER_CONTROL.port());
        let answer = Accepted::accepting(
            &hello,
            ss.cid,
            false,
            port,
            received,
            nonce,
            &ss.keys.server,
        );
        let epoch = answer.epoch;
        self.conns[conn].send_down(self.now, &Answer::Accepted(answer).encode());
        self.server.endpoint.handshake_confirming(conn);
        let deadline = now + self.server.config.handshake_timeout_value();
        self.server.handshakes.insert(
            conn,
            Handshake::Confirm {
                deadline,
                session: s,
                hello,
                answer,
                epoch,
                peer_received,
            },
        );
    }

    /// A CONFIRM arrived (`Engine::complete_resume`).
    fn confirmed(&mut self, conn: usize, body: &[u8]) {
        let now = self.now;
        let Some(Handshake::Confirm {
            session: s,
            hello,
            answer,
            epoch,
            peer_received,
            ..
        }) = self.server.handshakes.get(&conn)
        else {
            return;
        };
        let (s, hello, answer, epoch, peer_received) =
            (*s, *hello, *answer, *epoch, *peer_received);
        let ss = &self.server.sessions[s];
        let proven = Confirm::parse(body).is_ok_and(|c| c.verify(&hello, &answer, &ss.keys.client));
        if !proven {
            return self.server_handshake_failed(conn);
        }
        self.server.handshakes.remove(&conn);
        self.server.endpoint.handshake_ended(conn);
        let latest = self.server.endpoint.confirmed(ss.cid, hello.attempt);
        let ss = &mut self.server.sessions[s];
        if !latest || ss.finished {
            self.conns[conn].abort_from_server();
            return;
        }
        ss.session.handle_resume(peer_received, epoch, now);
        ss.conn = Some(conn);
    }

    /// A handshake ended without completing (`Engine::server_handshake_failed`).
    fn server_handshake_failed(&mut self, conn: usize) {
        let now = self.now;
        self.server.endpoint.handshake_ended(conn);
        if let Some(Handshake::Confirm { session, epoch, .. }) =
            self.server.handshakes.remove(&conn)
        {
            let ss = &mut self.server.sessions[session];
            if !ss.finished {
                ss.session.handle_offer_failed(epoch, now);
            }
        }
        self.conns[conn].abort_from_server();
    }

    /// Answers with a refusal and closes (the refusal still reaches the client).
    fn refuse(&mut self, conn: usize, code: RefusalCode) {
        self.server.endpoint.handshake_ended(conn);
        self.server.handshakes.remove(&conn);
        self.conns[conn].send_down(self.now, &Answer::Refused(code).encode());
        self.conns[conn].server_done = true;
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
            if to.ip() == VICTIM {
                self.oracle.to_victim += 1;
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
        if from.ip() == VICTIM {
            self.oracle.from_victim += 1;
        }
        let Some(route) = robust_tcp::protocol::control::ControlMessage::route(bytes) else {
            return;
        };
        if route.from_server {
            return;
        }
        if let Some(&s) = self.server.by_cid.get(&route.cid) {
            let _ = self.server.sessions[s]
                .session
                .handle_datagram(bytes, from, now);
        }
    }
}
