//! A listener's decisions, driven directly: one `ServerEndpoint` and the server `Session`s
//! it opens, in-process, with no socket and no thread, under a virtual clock. The harness
//! plays the engine (`src/engine/server.rs`; `tests/sim/server.rs` is the same driver
//! under a simulated network): it asks the endpoint about each HELLO, carries the verdict
//! out, and reports sessions opened and ended and handshakes started and ended.
//!
//! Input: 5 bytes of limits (sessions in all, per address, handshakes, the handshake
//! timeout and the eviction age), then operations, each an opcode byte and its operands
//! (see [`Op`]; an input that ends mid-operation ends there). HELLOs are built and tagged
//! by the harness from small key and session numbers, then one byte of their body may be
//! flipped, so that the fuzzer reaches both HELLOs that prove themselves and near misses;
//! raw HELLO bodies and replays of earlier HELLOs come in too. After each operation the
//! sessions' timers run, their datagrams are taken, and finished sessions are reported.
//!
//! What must hold, whatever the operations:
//! - nothing panics, in the endpoint or a session;
//! - sessions at most `max_sessions` in all and `max_sessions_per_address` per address,
//!   and the endpoint counts the sessions the harness holds;
//! - handshakes at most `max_handshakes`, the endpoint counting those the harness holds;
//!   a handshake it drops was in progress and is not the new one;
//! - a HELLO opens a session only if it is an opening HELLO whose tag is right for the
//!   keys it carries (or, a key-agreement opening, that carries no tag), with no session
//!   open for its opening nonce, and having received nothing; it resumes only the
//!   session it names (by CID, or by the opening nonce of a lightweight retried
//!   opening), only if its tag is right for that session, with a higher attempt than any
//!   before; so a replayed HELLO never resumes, and no HELLO resumes a session twice;
//! - a HELLO gets a session's KNOWN answer only if it is a key-agreement opening with
//!   that session's opening nonce, whose client has not shown that it knows the CID; and
//!   it changes nothing;
//! - a session is evicted only if it is open and its client has been gone for at least
//!   the eviction age;
//! - the tombstones are at most `max_sessions`.
//!
//! Protocol API used: `ServerEndpoint` (`new`, `on_hello`, `opened`, `confirmed`,
//! `ended`, `handshake_started`, `handshake_confirming`, `handshake_ended`,
//! `session_count`, `handshake_count`, `tombstone_count`), `ServerLimits`,
//! `Presence::of`, `Verdict`; `Hello` (`opening`, `resume`, `signed`, `encode`, `parse`,
//! `verify`, `is_opening`), `Accepted::accepting`, `Confirm` (`new`, `encode`, `parse`,
//! `verify`), `ControlKeys`,
//! `verify`), `HEADER_LEN`; `SessionKeys::derive`, `ChallengeKey::new`, `MacKey::tag`;
//! `Session` (`new`, `handle_cid_named`, `may_resume`, `check_resume`,
//! `handle_resume`, `handle_offer_failed`, `handle_connection_failed`, `handle_datagram`,
//! `handle_timeout`, `poll_timeout`, `poll_datagram`, `reset`, `is_finished`,
//! `peer_knows_cid`, `epoch`), `End`, `Limits`, `Role`; `control::MAX_LEN`.
#![no_main]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use robust_tcp::protocol::agreement::AnswerPart;
use robust_tcp::protocol::auth::{ChallengeKey, ControlKeys, HandshakeKeys, SessionKeys};
use robust_tcp::protocol::control::MAX_LEN;
use robust_tcp::protocol::endpoint::{Presence, ServerEndpoint, ServerLimits, Verdict};
use robust_tcp::protocol::handshake::{Accepted, Confirm, Hello, HEADER_LEN};
use robust_tcp::protocol::session::{End, Limits, Role, Session};
use robust_tcp::Error;

use ops::{Flip, Input, Op};

mod ops;

/// How many client addresses the input chooses from.
const ADDRESSES: u8 = 4;
/// How many distinct openings (secret and opening nonce) the input chooses from.
const OPENINGS: u8 = 8;
/// The HELLOs kept for replays, the newest.
const HISTORY: usize = 32;
/// The resumptions kept waiting for their CONFIRM, the newest.
const PENDING: usize = 8;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let limits = ServerLimits {
        max_sessions: 1 + usize::from(input.byte() % 8),
        max_sessions_per_address: 1 + usize::from(input.byte() % 4),
        max_handshakes: 1 + usize::from(input.byte() % 4),
        handshake_timeout: Duration::from_secs(1 + u64::from(input.byte() % 16)),
        evictable_after: Duration::from_millis(1 + u64::from(input.byte()) * 100),
    };
    let mut server = Server::new(limits);
    while let Some(op) = Op::decode(&mut input) {
        server.apply(op);
        server.service();
        server.check();
    }
});

/// The secret and opening nonce of opening number `n`.
fn opening_of(n: u8) -> ([u8; 32], [u8; 16]) {
    let n = n % OPENINGS;
    ([0x50 + n; 32], [0x10 + n; 16])
}

fn address(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, n % ADDRESSES))
}

/// A session the harness opened, as the engine holds it.
struct Open {
    session: Session,
    cid: u32,
    client: IpAddr,
    opening: [u8; 16],
    /// The client's keys: the server's handshake keys are the same, and the client's
    /// control send key tags the datagrams the harness makes.
    keys: SessionKeys,
    /// The highest attempt that resumed it (the opening's at first).
    last_attempt: u64,
    /// Ended, and forgotten by the endpoint.
    ended: bool,
}

/// A resumption answered and waiting for its CONFIRM.
struct Pending {
    session: usize,
    hello: Hello,
    answer: Accepted,
    peer_received: u64,
}

/// The engine's side: the endpoint and what it was told.
struct Server {
    limits: ServerLimits,
    endpoint: ServerEndpoint<usize, u32>,
    now: Instant,
    sessions: Vec<Open>,
    /// The handshakes in progress, as the harness counts them.
    handshakes: Vec<u32>,
    next_handshake: u32,
    /// Encoded HELLOs sent, the newest last.
    history: Vec<[u8; Hello::FRAME_LEN]>,
    /// Every HELLO that resumed a session, encoded, with the session. One HELLO may
    /// resume two sessions: a replayed opening opens a new session once its nonce is
    /// forgotten (SECURITY.md, "A recorded opening, replayed"), and its replayed retry
    /// then resumes that one.
    resumed: HashSet<(usize, [u8; Hello::FRAME_LEN])>,
    pending: Vec<Pending>,
}

impl Server {
    fn new(limits: ServerLimits) -> Self {
        Server {
            limits,
            endpoint: ServerEndpoint::new(limits),
            now: Instant::now(),
            sessions: Vec::new(),
            handshakes: Vec::new(),
            next_handshake: 0,
            history: Vec::new(),
            resumed: HashSet::new(),
            pending: Vec::new(),
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Open {
                from,
                opening,
                attempt,
                received,
                welcome,
                flip,
            } => {
                let (secret, nonce) = opening_of(opening);
                let keys = SessionKeys::derive(&secret, &nonce, Role::Client);
                let mut hello = Hello::opening(
                    [attempt; 16],
                    attempt.into(),
                    nonce,
                    secret,
                    &keys.handshake.client,
                );
                if received != 0 {
                    hello.received = received.into();
                    hello = hello.signed(&keys.handshake.client);
                }
                self.hello(from, &hello.encode(), flip, welcome);
            }
            Op::Resume {
                from,
                session,
                attempt,
                received,
                flip,
            } => {
                let (cid, key) = match self.sessions.get(usize::from(session)) {
                    Some(s) => (s.cid, s.keys.handshake.client.clone()),
                    None => (session.into(), opening_keys(session).client),
                };
                let nonce = [attempt ^ 0xa5; 16];
                let hello = Hello::resume(cid, nonce, attempt.into(), received.into(), &key);
                self.hello(from, &hello.encode(), flip, true);
            }
            Op::RawHello { from, body } => {
                if let Ok(hello) = Hello::parse(&body) {
                    self.decide(from, hello, true);
                }
            }
            Op::Replay { from, which } => {
                if let Some(frame) = pick(&self.history, which).copied() {
                    let no_flip = Flip { at: 0, xor: 0 };
                    self.hello(from, &frame, no_flip, true);
                }
            }
            Op::Confirm { which, flip } => self.confirm(which, flip),
            Op::Datagram {
                session,
                tagged,
                port,
                body,
            } => {
                let Some(s) = self.live(session) else {
                    return;
                };
                let mut datagram = body;
                if tagged {
                    let tag = self.sessions[s].keys.control.send.tag(&[&datagram]);
                    datagram.extend_from_slice(&tag);
                }
                let from = SocketAddr::new(self.sessions[s].client, 40_000 + u16::from(port));
                let now = self.now;
                let _ = self.sessions[s]
                    .session
                    .handle_datagram(&datagram, from, now);
            }
            Op::Cut { session } => {
                if let Some(s) = self.live(session) {
                    let (now, session) = (self.now, &mut self.sessions[s].session);
                    let epoch = session.epoch();
                    session.handle_connection_failed(epoch, "cut", now);
                }
            }
            Op::Reset { session } => {
                if let Some(s) = self.live(session) {
                    let now = self.now;
                    self.sessions[s].session.reset(Error::Aborted, now);
                }
            }
            Op::HandshakeStarted => {
                let id = self.next_handshake;
                self.next_handshake += 1;
                if let Some(victim) = self.endpoint.handshake_started(id) {
                    let at = self.handshakes.iter().position(|&h| h == victim);
                    let Some(at) = at else {
                        panic!("dropped handshake {victim}, which was not in progress");
                    };
                    self.handshakes.remove(at);
                }
                self.handshakes.push(id);
            }
            Op::HandshakeConfirming { which } => {
                if let Some(&h) = pick(&self.handshakes, which) {
                    self.endpoint.handshake_confirming(h);
                }
            }
            Op::HandshakeEnded { which } => {
                if let Some(&h) = pick(&self.handshakes, which) {
                    self.endpoint.handshake_ended(h);
                    self.handshakes.retain(|&x| x != h);
                }
            }
            Op::Advance { ms } => self.now += Duration::from_millis(u64::from(ms) * 10),
        }
    }

    /// Index of live session `n`, if there is one.
    fn live(&self, n: u8) -> Option<usize> {
        let s = usize::from(n);
        self.sessions.get(s).filter(|o| !o.ended).map(|_| s)
    }

    /// A HELLO frame, with `flip` applied to its body, arrives from address `from`.
    fn hello(&mut self, from: u8, frame: &[u8; Hello::FRAME_LEN], flip: Flip, welcome: bool) {
        let mut frame = *frame;
        flip.apply(&mut frame[HEADER_LEN..]);
        if let Ok(hello) = Hello::parse(&frame[HEADER_LEN..]) {
            self.decide(from, hello, welcome);
        }
    }

    /// The endpoint's verdict on `hello`, checked and carried out.
    fn decide(&mut self, from: u8, hello: Hello, welcome: bool) {
        let frame = hello.encode();
        self.history.push(frame);
        if self.history.len() > HISTORY {
            self.history.remove(0);
        }
        let (client, now) = (address(from), self.now);
        let sessions = &self.sessions;
        let verdict = self.endpoint.on_hello(
            &hello,
            client,
            welcome,
            now,
            &[0x77; 32],
            |s, hello| hello.verify(&sessions[s].keys.handshake.client),
            |s| Presence::of(&sessions[s].session, now),
        );
        match verdict {
            Verdict::Refuse(_) => {}
            Verdict::Known {
                session: s, cid, ..
            } => {
                let Some(open) = self.sessions.get(s).filter(|o| !o.ended) else {
                    panic!("session {s}, which is not open, is known");
                };
                assert!(
                    hello.is_opening()
                        && hello.key_agreement
                        && hello.opening_nonce == open.opening
                        && cid == open.cid,
                    "a HELLO that is no retry of session {s}'s opening knows it: {hello:?}"
                );
                assert!(
                    !Presence::of(&open.session, now).client_knows_cid,
                    "a retried opening knows session {s}, whose client knows it"
                );
            }
            Verdict::Open {
                keys: server,
                agreement,
                evict,
            } => {
                let derived = if hello.key_agreement {
                    assert!(agreement.is_some(), "an agreement without its part");
                    client_side(&server)
                } else {
                    SessionKeys::derive(&hello.opening_key, &hello.opening_nonce, Role::Client)
                };
                let proven = if hello.key_agreement {
                    hello.tag == [0; 16]
                } else {
                    hello.verify(&derived.handshake.client)
                };
                assert!(
                    hello.is_opening() && proven,
                    "a HELLO that does not prove an opening opened a session: {hello:?}"
                );
                assert_eq!(hello.received, 0, "an opening that received bytes opened");
                assert!(welcome, "a session opened while new ones are not welcome");
                if let Some(e) = evict {
                    let victim = self.sessions.get_mut(e.session).filter(|o| !o.ended);
                    let Some(victim) = victim else {
                        panic!("evicted session {}, which is not open", e.session);
                    };
                    assert_eq!(victim.cid, e.cid, "evicted the wrong CID");
                    let gone = Presence::of(&victim.session, now).gone_for;
                    assert!(
                        gone.is_some_and(|g| g >= self.limits.evictable_after),
                        "evicted a session whose client was gone for {gone:?} only"
                    );
                    victim
                        .session
                        .reset(Error::Evicted { waited: e.waited }, now);
                    victim.ended = true;
                }
                assert!(
                    !self
                        .sessions
                        .iter()
                        .any(|o| !o.ended && o.opening == hello.opening_nonce),
                    "a second session opened for one opening nonce"
                );
                self.open(client, hello, derived, *server, agreement);
            }
            Verdict::Resume(s) => {
                let Some(open) = self.sessions.get_mut(s).filter(|o| !o.ended) else {
                    panic!("resumed session {s}, which is not open");
                };
                let names_it = if hello.is_opening() {
                    hello.opening_nonce == open.opening
                } else {
                    hello.cid == open.cid
                };
                assert!(
                    names_it && hello.verify(&open.keys.handshake.client),
                    "a HELLO that does not prove session {s} resumed it: {hello:?}"
                );
                assert!(
                    hello.attempt > open.last_attempt,
                    "attempt {} resumed after attempt {}",
                    hello.attempt,
                    open.last_attempt
                );
                assert!(
                    self.resumed.insert((s, frame)),
                    "a HELLO resumed session {s} twice"
                );
                open.last_attempt = hello.attempt;
                self.resume(s, hello);
            }
        }
    }

    /// Opens a session for `hello`, as `Engine::open_session` does.
    fn open(
        &mut self,
        client: IpAddr,
        hello: Hello,
        keys: SessionKeys,
        server: SessionKeys,
        agreement: Option<AnswerPart>,
    ) {
        let s = self.sessions.len();
        let cid = u32::try_from(s + 1).unwrap_or(u32::MAX);
        // Small numbers, so that inputs reach full buffers, silence and giving up.
        let limits = Limits {
            send_buffer: 1024,
            send_buffer_max: 4096,
            ack_threshold: 512,
            give_up_after: Some(Duration::from_secs(30)),
            dead_after: Some(Duration::from_secs(3)),
            linger: Duration::from_secs(5),
        };
        let end = End::Server(ChallengeKey::new(&[cid as u8; 32]));
        let epoch = hello.attempt as u32;
        let session = Session::new(end, cid, epoch, limits, server.control, self.now);
        self.endpoint.opened(cid, s, client, &hello, agreement);
        self.sessions.push(Open {
            session,
            cid,
            client,
            opening: hello.opening_nonce,
            keys,
            last_attempt: hello.attempt,
            ended: false,
        });
    }

    /// Resumes session `s` for `hello`, as `Engine::resume_session` does: the old
    /// connection fails, and the ANSWER waits for a CONFIRM.
    fn resume(&mut self, s: usize, hello: Hello) {
        let now = self.now;
        let open = &mut self.sessions[s];
        if !hello.is_opening() {
            open.session.handle_cid_named();
        }
        if !open.session.may_resume(hello.received) {
            return;
        }
        let epoch = open.session.epoch();
        open.session
            .handle_connection_failed(epoch, "the client reconnected", now);
        let Some(peer_received) = open.session.check_resume(hello.received) else {
            return;
        };
        let key = &open.keys.handshake.server;
        let answer = Accepted::accepting(&hello, open.cid, false, 40_000, 0, [0x33; 16], key);
        self.pending.push(Pending {
            session: s,
            hello,
            answer,
            peer_received,
        });
        if self.pending.len() > PENDING {
            self.pending.remove(0);
        }
    }

    /// The client's CONFIRM of a pending resumption (`flip` applied to its body), as
    /// `Engine::complete_resume` takes it.
    fn confirm(&mut self, which: u8, flip: Flip) {
        if self.pending.is_empty() {
            return;
        }
        let p = self.pending.remove(usize::from(which) % self.pending.len());
        let now = self.now;
        let open = &mut self.sessions[p.session];
        let mut frame = Confirm::new(&p.hello, &p.answer, &open.keys.handshake.client).encode();
        flip.apply(&mut frame[HEADER_LEN..]);
        let proven = Confirm::parse(&frame[HEADER_LEN..])
            .is_ok_and(|c| c.verify(&p.hello, &p.answer, &open.keys.handshake.client));
        let epoch = p.answer.epoch;
        if !proven {
            if !open.ended {
                open.session.handle_offer_failed(epoch, now);
            }
            return;
        }
        if self.endpoint.confirmed(open.cid, p.hello.attempt) {
            assert!(!open.ended, "an ended session's resumption confirmed");
            open.session.handle_resume(p.peer_received, epoch, now);
        }
    }

    /// What the engine does between inputs: the sessions' timers, their datagrams, and
    /// the end of those that finished.
    fn service(&mut self) {
        let now = self.now;
        let mut buf = [0; MAX_LEN];
        for open in self.sessions.iter_mut().filter(|o| !o.ended) {
            if open.session.poll_timeout().is_some_and(|t| t <= now) {
                open.session.handle_timeout(now);
            }
            while open.session.poll_datagram(&mut buf, now).is_some() {}
            if open.session.is_finished() {
                open.ended = true;
                let knows = open.session.peer_knows_cid();
                self.endpoint.ended(open.cid, knows, now);
            }
        }
    }

    fn check(&self) {
        let live: Vec<&Open> = self.sessions.iter().filter(|o| !o.ended).collect();
        assert_eq!(self.endpoint.session_count(), live.len());
        assert!(live.len() <= self.limits.max_sessions, "too many sessions");
        for o in &live {
            let same = live.iter().filter(|p| p.client == o.client).count();
            assert!(
                same <= self.limits.max_sessions_per_address,
                "{same} sessions from {}",
                o.client
            );
        }
        assert_eq!(self.endpoint.handshake_count(), self.handshakes.len());
        assert!(self.handshakes.len() <= self.limits.max_handshakes);
        assert!(self.endpoint.tombstone_count() <= self.limits.max_sessions);
    }
}

/// The client's keys of a session whose server has `server`: the same handshake keys,
/// the control keys the other way round.
fn client_side(server: &SessionKeys) -> SessionKeys {
    SessionKeys {
        handshake: server.handshake.clone(),
        control: ControlKeys {
            send: server.control.recv.clone(),
            recv: server.control.send.clone(),
        },
    }
}

/// The keys of a session the harness does not hold (a CID nobody opened).
fn opening_keys(n: u8) -> HandshakeKeys {
    let (secret, nonce) = opening_of(n);
    SessionKeys::derive(&secret, &nonce, Role::Client).handshake
}

/// Element `which` of `items`, modulo their number.
fn pick<T>(items: &[T], which: u8) -> Option<&T> {
    items.get(usize::from(which) % items.len().max(1))
}
