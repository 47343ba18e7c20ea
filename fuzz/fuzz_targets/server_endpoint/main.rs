//! A listener's decisions, driven directly: one `ServerEndpoint` and the server `Session`s
//! it opens, in-process, with no socket and no thread, under a virtual clock. The harness
//! plays the engine (`src/engine/server/`; `tests/sim/server.rs` is the same driver under
//! a simulated network): each HELLO starts a handshake whose frames go to the endpoint's
//! handshake machine (`on_frame`, `after_barrier`, `on_garbage`, `handshake_failed`),
//! whose actions it carries out, and it reports sessions opened and ended.
//!
//! Input: 5 bytes of limits (sessions in all, per address, handshakes, the handshake
//! timeout and the eviction age), then operations, each an opcode byte and its operands
//! (see [`Op`]; an input that ends mid-operation ends there). HELLOs are built and tagged
//! by the harness from small key and session numbers, then one byte of their body may be
//! flipped, so that the fuzzer reaches both HELLOs that prove themselves and near misses;
//! raw HELLO bodies and replays of earlier HELLOs come in too, and so do connections that
//! send nothing, send garbage or time out, in any phase. After each operation the
//! sessions' timers run, their datagrams are taken, and finished sessions are reported.
//!
//! What must hold, whatever the operations:
//! - nothing panics, in the endpoint or a session;
//! - sessions at most `max_sessions` in all and `max_sessions_per_address` per address,
//!   and the endpoint counts the sessions the harness holds;
//! - handshakes at most `max_handshakes`, the endpoint counting those the harness holds
//!   (so every action that ends a handshake ends it in the endpoint too); a handshake it
//!   drops was in progress and is not the new one;
//! - a HELLO opens a session only if it is an opening HELLO whose tag is right for the
//!   keys it carries (or, a key-agreement opening, that carries no tag), with no session
//!   open for its opening nonce, and having received nothing; it resumes only the
//!   session it names (by CID, or by the opening nonce of a lightweight retried
//!   opening), only if its tag is right for that session, with a higher attempt than any
//!   before; so a replayed HELLO never resumes, and no HELLO resumes a session twice;
//! - a HELLO gets a KNOWN answer only if it is a key-agreement opening with an open
//!   session's opening nonce, whose client has not shown that it knows the CID, and the
//!   answer proves itself under that session's key;
//! - a session is evicted only if it is open and its client has been gone for at least
//!   the eviction age;
//! - a connection is installed only by a CONFIRM of the newest attempt that proved
//!   itself, on a session that is open;
//! - the tombstones are at most `max_sessions`.
//!
//! Protocol API used: `ServerEndpoint` (`new`, `on_frame`, `after_barrier`, `on_garbage`,
//! `on_drained`, `handshake_failed`, `handshake_started`, `opened`, `ended`,
//! `session_count`, `handshake_count`, `tombstone_count`), `Host`, `Action`, `Opening`,
//! `ServerLimits`, `Presence::of`; `Hello` (`opening`, `resume`, `signed`, `encode`,
//! `parse`, `verify`, `is_opening`), `Accepted` (`answers`), `Confirm` (`new`, `encode`),
//! `FrameKind`, `ControlKeys`,
//! `HEADER_LEN`; `SessionKeys::derive`, `HandshakeKeys`, `ChallengeKey::new`,
//! `MacKey::tag`; `Session` (`new`, `handle_resume`, `handle_offer_failed`,
//! `handle_connection_failed`, `handle_datagram`, `handle_timeout`, `poll_timeout`,
//! `poll_datagram`, `reset`, `is_finished`, `peer_knows_cid`, `epoch`), `End`, `Limits`,
//! `Role`; `control::MAX_LEN`.
#![no_main]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use robust_tcp::protocol::auth::{ChallengeKey, ControlKeys, HandshakeKeys, SessionKeys};
use robust_tcp::protocol::control::MAX_LEN;
use robust_tcp::protocol::endpoint::{
    Action, Host, Opening, Presence, ServerEndpoint, ServerLimits,
};
use robust_tcp::protocol::handshake::{Accepted, Confirm, FrameKind, Hello, HEADER_LEN};
use robust_tcp::protocol::session::{End, Limits, Role, Session};
use robust_tcp::Error;

use ops::{Flip, Input, Op};

mod invariants;
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
        // This target feeds frames at once, past the first bytes' sniffing.
        accept_plain: false,
        plain_wait: Duration::from_millis(300),
        instance_id: None,
        announce: None,
    };
    let mut server = Server::new(limits);
    while let Some(op) = Op::decode(&mut input) {
        server.apply(op);
        server.service();
        server.check();
    }
});

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

/// A resumption answered and waiting for its CONFIRM on handshake `handshake`.
struct Pending {
    handshake: u32,
    session: usize,
    hello: Hello,
    answer: Accepted,
}

/// What the endpoint's handshakes see of the harness: its sessions, and randomness that
/// is the next session's number repeated, so that session `n` gets CID `n + 1` (as the
/// seeds expect).
struct FuzzHost<'a> {
    sessions: &'a mut [Open],
}

impl Host<usize> for FuzzHost<'_> {
    fn handshake_keys(&self, s: usize) -> Option<HandshakeKeys> {
        let open = self.sessions.get(s).filter(|o| !o.ended)?;
        Some(open.keys.handshake.clone())
    }

    fn presence(&self, s: usize, now: Instant) -> Presence {
        let open = self.sessions.get(s).filter(|o| !o.ended);
        open.map_or_else(Default::default, |o| Presence::of(&o.session, now))
    }

    fn with_session<R>(&mut self, s: usize, f: impl FnOnce(&mut Session) -> R) -> Option<R> {
        let open = self.sessions.get_mut(s).filter(|o| !o.ended)?;
        Some(f(&mut open.session))
    }

    fn cid_taken(&self, cid: u32) -> bool {
        self.sessions.iter().any(|o| !o.ended && o.cid == cid)
    }

    fn control_port(&self) -> u16 {
        40_000
    }

    fn random(&mut self, buf: &mut [u8]) -> bool {
        let next = u32::try_from(self.sessions.len() + 1).unwrap_or(u32::MAX);
        for (b, n) in buf.iter_mut().zip(next.to_be_bytes().into_iter().cycle()) {
            *b = n;
        }
        true
    }
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
    /// The session and HELLO of the resumption between its barrier and its ANSWER.
    resuming: Option<(usize, Hello)>,
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
            resuming: None,
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
            Op::RawHello { from, body } => self.hello_body(from, &body, true),
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
                self.start();
            }
            Op::HandshakeGarbage { which } => {
                if let Some(&h) = pick(&self.handshakes, which) {
                    let action = self.endpoint.on_garbage(h);
                    self.carry_out(h, action);
                }
            }
            Op::HandshakeFailed { which } => {
                if let Some(&h) = pick(&self.handshakes, which) {
                    let action = self.endpoint.handshake_failed(h);
                    self.carry_out(h, action);
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
        self.hello_body(from, &frame[HEADER_LEN..], welcome);
    }

    /// A connection is accepted: its handshake starts (`Engine::start_handshake`), unless
    /// the listener is crowded with answered ones and drops this one instead.
    fn start(&mut self) -> Option<u32> {
        let id = self.next_handshake;
        self.next_handshake += 1;
        if let Some((victim, action)) = self.endpoint.handshake_started(id) {
            if victim == id {
                assert!(matches!(action, Action::Close), "{action:?} for a newcomer");
                return None;
            }
            assert!(
                self.handshakes.contains(&victim),
                "dropped handshake {victim}, which was not in progress"
            );
            self.carry_out(victim, action);
        }
        self.handshakes.push(id);
        Some(id)
    }

    /// A new connection from address `from` sends a HELLO frame with `body`: the
    /// endpoint's actions checked and carried out.
    fn hello_body(&mut self, from: u8, body: &[u8], welcome: bool) {
        let hello = Hello::parse(body).ok();
        if let Some(hello) = hello {
            self.history.push(hello.encode());
            if self.history.len() > HISTORY {
                self.history.remove(0);
            }
        }
        let Some(h) = self.start() else {
            return;
        };
        let (client, now) = (address(from), self.now);
        let mut host = FuzzHost {
            sessions: &mut self.sessions,
        };
        let action =
            self.endpoint
                .on_frame(h, FrameKind::Hello, body, client, welcome, &mut host, now);
        match (&action, hello) {
            (Action::Open(o), Some(hello)) => {
                assert_eq!(o.hello, hello, "opened for another HELLO");
                assert!(welcome, "a session opened while new ones are not welcome");
            }
            (Action::Barrier(s), Some(hello)) => {
                self.resumed(*s, hello);
                self.resuming = Some((*s, hello));
            }
            (Action::Known(answer), Some(hello)) => self.known(answer, hello),
            (Action::Open(_) | Action::Barrier(_), None) => {
                panic!("a HELLO that does not parse got {action:?}")
            }
            _ => {}
        }
        if let Action::Open(o) = action {
            self.handshakes.retain(|&x| x != h);
            self.open(client, *o);
        } else {
            self.carry_out(h, action);
        }
    }

    /// Checks that session `s` may be resumed by `hello`, which proved itself.
    fn resumed(&mut self, s: usize, hello: Hello) {
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
            self.resumed.insert((s, hello.encode())),
            "a HELLO resumed session {s} twice"
        );
        open.last_attempt = hello.attempt;
    }

    /// Carries out `action` for handshake `h`, as the engine does (`Engine::carry_out`).
    fn carry_out(&mut self, h: u32, action: Action<usize>) {
        let now = self.now;
        let ends = match action {
            Action::Wait | Action::TurnAway => false,
            Action::Barrier(s) => {
                // The live connection is aborted, then the barrier passed.
                let session = &mut self.sessions[s].session;
                let epoch = session.epoch();
                session.handle_connection_failed(epoch, "the client reconnected", now);
                let mut host = FuzzHost {
                    sessions: &mut self.sessions,
                };
                let action = self.endpoint.after_barrier(h, &mut host);
                return self.carry_out(h, action);
            }
            Action::Answer(answer) => {
                let Some((session, hello)) = self.resuming.take() else {
                    panic!("handshake {h} answered without a resumption");
                };
                assert!(
                    answer.answers(&hello, &self.sessions[session].keys.handshake.server),
                    "an answer that does not prove itself"
                );
                self.pending.push(Pending {
                    handshake: h,
                    session,
                    hello,
                    answer: *answer,
                });
                if self.pending.len() > PENDING {
                    self.pending.remove(0);
                }
                false
            }
            Action::Install {
                session,
                epoch,
                peer_received,
            } => {
                let open = &mut self.sessions[session];
                assert!(!open.ended, "an ended session's resumption confirmed");
                assert_eq!(
                    u64::from(epoch),
                    open.last_attempt,
                    "installed an attempt that is not the newest"
                );
                open.session.handle_resume(peer_received, epoch, now);
                true
            }
            Action::OfferFailed { session, epoch } => {
                let open = &mut self.sessions[session];
                assert_eq!(
                    u64::from(epoch),
                    open.last_attempt,
                    "an offer a later attempt overtook failed its session"
                );
                if !open.ended {
                    open.session.handle_offer_failed(epoch, now);
                }
                true
            }
            Action::Open(_) => panic!("handshake {h} opened outside a HELLO"),
            Action::Control | Action::Refuse(_) | Action::Known(_) | Action::Close => true,
            Action::Plain | Action::Greet => {
                panic!("handshake {h} sniffed outside its first bytes")
            }
        };
        if ends {
            self.handshakes.retain(|&x| x != h);
            self.pending.retain(|p| p.handshake != h);
        }
    }

    /// Opens a session, as `Engine::open_session` does (having evicted first).
    fn open(&mut self, client: IpAddr, o: Opening<usize>) {
        let now = self.now;
        let hello = o.hello;
        let (derived, proven) = if hello.key_agreement {
            // Anyone may open; such a HELLO carries no tag, the ANSWER the agreement.
            let proven = hello.tag == [0; 16] && o.agreement == Some(o.answer.agreement);
            (client_side(&o.keys), proven)
        } else {
            let derived =
                SessionKeys::derive(&hello.opening_key, &hello.opening_nonce, Role::Client);
            let proven = hello.verify(&derived.handshake.client) && o.agreement.is_none();
            (derived, proven)
        };
        assert!(
            hello.is_opening() && proven,
            "a HELLO that does not prove an opening opened a session: {hello:?}"
        );
        assert_eq!(hello.received, 0, "an opening that received bytes opened");
        if let Some(e) = o.evict {
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
                .any(|x| !x.ended && x.opening == hello.opening_nonce),
            "a second session opened for one opening nonce"
        );
        assert!(
            !self.sessions.iter().any(|x| !x.ended && x.cid == o.cid) && o.cid != 0,
            "CID {} is 0 or taken",
            o.cid
        );
        let s = self.sessions.len();
        // Small numbers, so that inputs reach full buffers, silence and giving up.
        let limits = Limits {
            send_buffer: 1024,
            send_buffer_max: 4096,
            ack_threshold: 512,
            give_up_after: Some(Duration::from_secs(30)),
            dead_after: Some(Duration::from_secs(3)),
            linger: Duration::from_secs(5),
        };
        let end = End::Server(ChallengeKey::new(&o.challenge_key));
        let session = Session::new(end, o.cid, o.answer.epoch, limits, o.keys.control, now);
        self.endpoint.opened(o.cid, s, client, &hello, o.agreement);
        self.sessions.push(Open {
            session,
            cid: o.cid,
            client,
            opening: hello.opening_nonce,
            keys: derived,
            last_attempt: hello.attempt,
            ended: false,
        });
    }

    /// The client's CONFIRM of a pending resumption (`flip` applied to its body), fed to
    /// its handshake.
    fn confirm(&mut self, which: u8, flip: Flip) {
        if self.pending.is_empty() {
            return;
        }
        let p = &self.pending[usize::from(which) % self.pending.len()];
        let key = &self.sessions[p.session].keys.handshake.client;
        let mut frame = Confirm::new(&p.hello, &p.answer, key).encode();
        flip.apply(&mut frame[HEADER_LEN..]);
        let (h, now) = (p.handshake, self.now);
        let mut host = FuzzHost {
            sessions: &mut self.sessions,
        };
        let body = &frame[HEADER_LEN..];
        let action = self.endpoint.on_frame(
            h,
            FrameKind::Confirm,
            body,
            address(0),
            true,
            &mut host,
            now,
        );
        self.carry_out(h, action);
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
