//! The client side, driven as the engine drives it (`src/engine/client/`): the opening
//! on the session's first connection, then the core's `Redial` schedule for every later
//! attempt; each attempt a HELLO, an ANSWER and, for a resumption, a CONFIRM.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use robust_tcp::protocol::auth::SessionKeys;
use robust_tcp::protocol::early;
use robust_tcp::protocol::endpoint::{
    on_answer, Answered, Failure, OpeningKey, Plan, Redial, Unrouted,
};
use robust_tcp::protocol::handshake::{FrameKind, Hello};
use robust_tcp::protocol::session::{End, ReadGate, Role, Session};
use robust_tcp::{Config, Error};

use crate::frames::{self, Front};
use crate::net::{Conn, CONNECT_TIME};
use crate::world::{limits, Stream, World, SERVER_CONTROL, SERVER_TCP};

/// One client application and its session.
pub struct Client {
    pub session: Session,
    /// The session's handshake keys (the control keys are the session's).
    pub keys: SessionKeys,
    pub redial: Redial<usize>,
    /// Where its datagrams and connections come from now (it may move).
    pub addr: SocketAddr,
    /// The connection the session uses, if any.
    pub conn: Option<usize>,
    pub dial: Option<Dial>,
    pub config: Config,
    /// The byte streams: what it writes, and what its server session writes to it.
    pub out: Stream,
    pub back: Stream,
    /// Why the session failed, if it did.
    pub failed: Option<Error>,
    /// The session's CID, once the server answered.
    pub cid: u32,
    /// Datagrams from the server that came before the CID did (`Engine::dispatch`).
    pub unrouted: Unrouted,
    /// The application shut down writing; then closed.
    pub shut: bool,
    pub closed: bool,
    /// The session ended (closed on both sides): the engine freed it.
    pub finished: bool,
    /// An attacker holding its own session's keys, not an application.
    pub attacker: bool,
    /// When the application aborted the session, if it did.
    pub aborted_at: Option<Instant>,
}

/// An attempt in progress.
pub struct Dial {
    pub conn: usize,
    /// When the TCP connect completes.
    pub connected_at: Instant,
    pub deadline: Instant,
    /// The HELLO, once sent.
    pub hello: Option<Hello>,
    /// Whether this is the session's own first connection (the application's bytes
    /// follow the HELLO on it).
    pub on_session: bool,
}

impl World {
    /// A new client at `addr`: its caller's thread connects and writes the opening HELLO
    /// (`open_once`), then the session is the engine's.
    pub fn add_client(&mut self, addr: SocketAddr, config: Config, out: Stream, back: Stream) {
        let now = self.now;
        let secret = self.rng.bytes();
        let opening_nonce = self.rng.bytes();
        let nonce = self.rng.bytes();
        // With the key agreement, keys only this client holds until the ANSWER.
        let keys = SessionKeys::derive(&secret, &opening_nonce, Role::Client);
        let control = keys.control.clone();
        let (key, half) = if config.key_agreement_value() {
            let (key, half) =
                OpeningKey::agreement(self.rng.bytes(), &opening_nonce).expect("an agreement");
            (key, Some(half))
        } else {
            (OpeningKey::Secret(secret), None)
        };
        let hello = key.hello(nonce, 0, opening_nonce, &keys.handshake.client);
        // The caller's thread made the TCP connect before the session existed.
        let conn = self.connect(self.clients.len(), addr, Duration::ZERO);
        self.conns[conn].send_up(self.now, &hello.encode());
        // Right behind it, the EARLY datagram (the engine sends one where it knows the
        // server's control address from an earlier session: here, always).
        let early = early::encode(&opening_nonce);
        self.datagrams
            .send(&mut self.rng, now, addr, SERVER_CONTROL, &early);
        let session = Session::new(End::Client(None), 0, 0, limits(&config), control, now);
        let timeout = config.handshake_timeout_value();
        let mut redial = Redial::new(SERVER_TCP, &config, timeout, opening_nonce, key, now);
        if let Some(half) = half {
            redial.agreement_started(half);
        }
        redial.started(conn, now);
        self.clients.push(Client {
            session,
            keys,
            redial,
            addr,
            conn: Some(conn),
            dial: Some(Dial {
                conn,
                connected_at: now,
                deadline: now + timeout,
                hello: Some(hello),
                on_session: true,
            }),
            config,
            out,
            back,
            failed: None,
            cid: 0,
            unrouted: Unrouted::default(),
            shut: false,
            closed: false,
            finished: false,
            attacker: false,
            aborted_at: None,
        });
        self.oracle
            .openings
            .insert(opening_nonce, self.clients.len() - 1);
    }

    /// A new TCP connection from client `client` at `addr`, which the server accepts.
    /// A new TCP connection from client `client` at `addr`, up (and accepted by the
    /// server) after `delay`, or once the partition in force ends.
    pub fn connect(&mut self, client: usize, addr: SocketAddr, delay: Duration) -> usize {
        let id = self.conns.len();
        self.live.push(id);
        let up = self.partition_end().unwrap_or(self.now) + delay;
        let mut conn = Conn::new(client, addr, up, self.tcp_latency);
        conn.frozen = self.partition_end().map(|_| self.now);
        self.conns.push(conn);
        self.accept_due();
        id
    }

    /// Everything client `i`'s engine does now: notice failed connections, advance its
    /// dial, plan the next, run its timers, send its datagrams.
    pub fn service_client(&mut self, i: usize) {
        let now = self.now;
        if self.clients[i].finished {
            return;
        }
        self.client_conn_check(i);
        self.advance_dial(i);
        let c = &mut self.clients[i];
        if c.dial.is_none() && c.session.needs_connection() {
            let heard = c.session.heard_since_disconnected();
            match c.redial.plan(heard, c.session.last_heard(), now, |_| false) {
                Plan::Dial => self.start_dial(i),
                Plan::Restart(_) | Plan::Wait(_) => {}
            }
        }
        let c = &mut self.clients[i];
        if c.session.poll_timeout().is_some_and(|t| t <= now) {
            c.session.handle_timeout(now);
        }
        self.client_conn_check(i);
        self.flush_client(i);
        // The engine's FIN and the reader's wake-up: what they tell is in the datagrams.
        let c = &mut self.clients[i];
        c.session.poll_fin();
        c.session.poll_end_of_stream();
        let from = self.clients[i].addr;
        let mut buf = [0; robust_tcp::protocol::control::MAX_LEN];
        while let Some((n, to)) = self.clients[i].session.poll_datagram(&mut buf, now) {
            self.datagrams.send(&mut self.rng, now, from, to, &buf[..n]);
        }
        let c = &mut self.clients[i];
        if c.failed.is_none() {
            // The core failed the session itself (its give-up limit, say).
            c.failed = c.session.failure().cloned();
        }
        if self.clients[i].session.is_finished() {
            self.clients[i].finished = true;
            self.drop_client_conns(i);
        }
    }

    /// Client `i`'s application aborts its session (`RSocket::abort`: `Shared::reset`).
    pub fn client_abort(&mut self, i: usize) {
        let now = self.now;
        let c = &mut self.clients[i];
        if c.failed.is_some() || c.finished || c.attacker {
            return;
        }
        c.session.reset(Error::Aborted, now);
        c.failed = Some(Error::Aborted);
        c.aborted_at = Some(now);
    }

    /// Client `i`'s application shuts down writing once it wrote everything, and closes
    /// once it also read everything.
    pub fn client_close(&mut self, i: usize) {
        let now = self.now;
        let c = &mut self.clients[i];
        if c.failed.is_some() || c.finished || c.attacker {
            return;
        }
        if c.out.left() == 0 && !c.shut {
            c.session.shutdown_write(now);
            c.shut = true;
        }
        if c.shut && !c.closed && matches!(c.session.read_gate(), ReadGate::Eof) {
            assert!(
                c.back.is_done(),
                "client {i}: end of stream before every byte"
            );
            c.session.close(now);
            c.closed = true;
        }
    }

    /// The session's connection: a broken one fails; one the core gave up is aborted.
    fn client_conn_check(&mut self, i: usize) {
        let now = self.now;
        let Some(conn) = self.clients[i].conn else {
            return;
        };
        let c = &mut self.clients[i];
        let epoch = c.session.epoch();
        if self.conns[conn].broken {
            c.session.handle_connection_failed(epoch, "cut", now);
        }
        if !c.session.is_connected() || self.conns[conn].broken {
            c.conn = None;
            self.conns[conn].abort_from_client();
        }
    }

    /// Starts an attempt: a TCP connect that completes after [`CONNECT_TIME`].
    fn start_dial(&mut self, i: usize) {
        let now = self.now;
        let addr = self.clients[i].addr;
        let conn = self.connect(i, addr, CONNECT_TIME);
        let connected_at = self.conns[conn].accept_at.unwrap_or(now);
        let c = &mut self.clients[i];
        c.redial.started(conn, now);
        c.dial = Some(Dial {
            conn,
            connected_at,
            deadline: now + c.redial.attempt_timeout(),
            hello: None,
            on_session: false,
        });
    }

    /// Moves client `i`'s dial on as far as its connection allows.
    fn advance_dial(&mut self, i: usize) {
        let now = self.now;
        let Some(dial) = self.clients[i].dial.as_mut() else {
            return;
        };
        let conn = dial.conn;
        if dial.hello.is_none() {
            if now < dial.connected_at {
                return self.dial_deadline(i);
            }
            if self.conns[conn].broken {
                return self.dial_failed(i, Failure::Cut(cut()));
            }
            let c = &mut self.clients[i];
            let hello = match c.redial.next_hello(now) {
                Ok(next) => {
                    let (cid, received) = (c.cid, c.session.received());
                    next.hello(self.rng.bytes(), cid, received, &c.keys.handshake.client)
                }
                Err(e) => {
                    c.failed = Some(e.clone());
                    c.session.fail(e);
                    return self.drop_dial(i);
                }
            };
            self.conns[conn].send_up(self.now, &hello.encode());
            if let Some(d) = self.clients[i].dial.as_mut() {
                d.hello = Some(hello);
            }
        }
        if self.conns[conn].broken {
            return self.dial_failed(i, Failure::Cut(cut()));
        }
        let Some(pipe) = self.conns[conn].at_client() else {
            return self.dial_deadline(i);
        };
        match frames::take(pipe) {
            Front::Partial => self.dial_deadline(i),
            Front::Frame(FrameKind::Answer, body) => self.answered(i, &body),
            Front::Frame(..) | Front::Garbage => panic!("client {i}: the server sent no answer"),
        }
    }

    fn dial_deadline(&mut self, i: usize) {
        let Some(dial) = &self.clients[i].dial else {
            return;
        };
        if self.now >= dial.deadline {
            let failure = if dial.hello.is_none() {
                Failure::Connect(io::Error::new(io::ErrorKind::TimedOut, "connect"))
            } else {
                Failure::Timeout
            };
            self.dial_failed(i, failure);
        }
    }

    /// The server answered client `i`'s HELLO with the frame `body`: what the core makes
    /// of it, carried out (`Engine::answered`).
    fn answered(&mut self, i: usize, body: &[u8]) {
        let now = self.now;
        let Some(dial) = self.clients[i].dial.as_ref() else {
            return;
        };
        let (conn, on_session) = (dial.conn, dial.on_session);
        let Some(hello) = dial.hello else {
            return;
        };
        let c = &mut self.clients[i];
        let (session, redial) = (&c.session, &mut c.redial);
        let check = |n| session.check_resume(n);
        let agree = |answer: &_| redial.agreed_keys(answer);
        let answered = on_answer(
            &hello,
            Ok(body),
            &c.keys.handshake,
            on_session,
            check,
            agree,
        );
        if answered.heard() {
            c.redial.heard_answer();
        }
        let (answer, peer_received, agreed) = match answered {
            Answered::Failed {
                failure: Failure::Cut(_),
                heard: false,
            } => {
                panic!("client {i}: the honest server's answer does not prove itself")
            }
            Answered::Failed { failure, .. } => return self.dial_failed(i, failure),
            Answered::Violation(why) => panic!("client {i}: {why}"),
            Answered::Refused(error) => return self.refused(i, error),
            Answered::Install {
                answer,
                confirm,
                peer_received,
                agreed,
            } => {
                if let Some(confirm) = confirm {
                    self.conns[conn].send_up(self.now, &confirm.encode());
                }
                (answer, Some(peer_received), agreed)
            }
            // The session learns its CID and keys below, and resumes by its CID on a new
            // connection.
            Answered::Learn { answer, keys } => (answer, None, Some(keys)),
        };
        let c = &mut self.clients[i];
        if hello.is_opening() {
            if let Some(keys) = agreed {
                c.session.agreed(keys.control.clone());
                c.keys = *keys;
            }
            let control = SocketAddr::new(SERVER_CONTROL.ip(), answer.control_port);
            c.session.opened(answer.cid, control, now);
            c.cid = answer.cid;
            // What came before the CID, as `Engine::learned_cid` hands it over.
            for held in c.unrouted.take(answer.cid, now) {
                let _ = c.session.handle_datagram(held.bytes(), held.from, now);
            }
        }
        let Some(peer_received) = peer_received else {
            c.redial.learned();
            return self.drop_dial(i);
        };
        c.redial.connected(now);
        c.dial = None;
        if !on_session {
            c.session.handle_resume(peer_received, answer.epoch, now);
            c.conn = Some(conn);
        }
    }

    /// The server refused client `i`'s session for good (`Engine::refused`).
    fn refused(&mut self, i: usize, error: Error) {
        assert!(
            !matches!(error, Error::ProtocolViolation(_)),
            "client {i}: the server found a bad request"
        );
        let conn = self.clients[i].dial.as_ref().map(|d| d.conn);
        self.first_connection_failed(i);
        let c = &mut self.clients[i];
        c.redial.abandoned();
        c.dial = None;
        c.session.handle_resume_refused(error.clone());
        if matches!(c.session.read_gate(), ReadGate::Failed(_)) {
            c.failed = Some(error);
        }
        if let Some(conn) = conn {
            self.conns[conn].abort_from_client();
        }
    }

    /// Client `i`'s dial failed (`Engine::dial_failed`).
    fn dial_failed(&mut self, i: usize, failure: Failure) {
        let now = self.now;
        self.first_connection_failed(i);
        self.drop_dial(i);
        let c = &mut self.clients[i];
        if let Some(e) = c.redial.failed(failure, now) {
            c.failed = Some(e.clone());
            c.session.fail(e);
        }
    }

    /// The first opening's dial ended without opening the session on its connection.
    fn first_connection_failed(&mut self, i: usize) {
        let now = self.now;
        let c = &mut self.clients[i];
        if c.dial.as_ref().is_some_and(|d| d.on_session) {
            c.session
                .handle_connection_failed(0, "the opening failed", now);
            if let Some(conn) = c.conn.take() {
                self.conns[conn].abort_from_client();
            }
        }
    }

    fn drop_dial(&mut self, i: usize) {
        if let Some(dial) = self.clients[i].dial.take() {
            self.conns[dial.conn].abort_from_client();
        }
    }

    fn drop_client_conns(&mut self, i: usize) {
        self.drop_dial(i);
        if let Some(conn) = self.clients[i].conn.take() {
            self.conns[conn].abort_from_client();
        }
    }

    /// The client's writer sends what its connection lacks.
    fn flush_client(&mut self, i: usize) {
        let now = self.now;
        let Some(conn) = self.clients[i].conn else {
            return;
        };
        let c = &mut self.clients[i];
        if let Some((from, to)) = c.session.unsent() {
            assert!(from <= to, "the session would send [{from}, {to})");
            let n = (to - from) as usize;
            let bytes = c.session.buffered_from(from, n);
            self.conns[conn].send_up(now, &bytes[..n]);
            let epoch = c.session.epoch();
            c.session.handle_sent(epoch, from, n, now);
        }
    }

    /// Client `i`'s application writes up to `n` more bytes of its stream.
    pub fn client_write(&mut self, i: usize, n: usize) {
        let now = self.now;
        let c = &mut self.clients[i];
        let Ok(space) = c.session.write_space() else {
            return;
        };
        if c.out.left() == 0 {
            return;
        }
        if space == 0 {
            // A writer that finds the buffer full asks for an acknowledgement and waits.
            c.session.writer_blocked(now);
            return;
        }
        let n = n.min(space).min(c.out.left());
        let data = c.out.next_bytes(n);
        assert_eq!(c.session.write(&data, now), n);
        c.session.writer_unblocked();
        self.flush_client(i);
    }

    /// Client `i`'s application reads up to `n` bytes, and checks each against what its
    /// server session wrote at that position.
    pub fn client_read(&mut self, i: usize, n: usize) {
        let now = self.now;
        let c = &mut self.clients[i];
        let opening = c.dial.as_ref().is_some_and(|d| d.on_session);
        let (Some(conn), false) = (c.conn, opening) else {
            return;
        };
        if !matches!(c.session.read_gate(), ReadGate::Proceed) || self.conns[conn].broken {
            return;
        }
        let Some(pipe) = self.conns[conn].at_client() else {
            return;
        };
        let n = n.min(pipe.len());
        let bytes: Vec<u8> = pipe.drain(..n).collect();
        c.back.check_read(&bytes, &format!("client {i}"));
        c.session.handle_read(n, now);
    }
}

fn cut() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "cut")
}
