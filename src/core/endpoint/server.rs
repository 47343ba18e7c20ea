//! A listener's decisions: what each HELLO gets (a new session, the resumption of one,
//! or a refusal), the caps on sessions in all and per client address, which session a
//! full listener evicts, which handshake a crowded one drops, and the tombstones of
//! sessions that ended before their client knew them.
//!
//! A new session is accepted at its HELLO, in one round trip: with the key agreement, the
//! listener answers with its part of it and the client derives the keys from the ANSWER;
//! with the lightweight opening, the HELLO carries the secret the client drew, so the
//! client holds the keys and can always come back to the session. Each listener remembers
//! the opening nonces of its sessions, so that a retried opening (the client never got the
//! ANSWER) finds the session it already opened rather than open a second one: a
//! lightweight one proves itself and resumes it; a key-agreement one, which cannot prove
//! anything, only learns the CID and the agreement again (until the client proved that it
//! holds the keys) and changes nothing. For [`OPENING_WINDOW`] past the end of such a
//! session, the nonces of sessions that ended before their client could know them
//! (*tombstones*) refuse such an opening instead.
//!
//! Sessions and handshakes are named by ids of the engine's choosing (`S`, `H`); the
//! engine feeds each handshake's frames to its state machine ([`handshake`]), carries out
//! the actions it gets back and reports what happened (`opened`, `ended`).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use self::handshake::Phase;
pub use self::handshake::{Action, Host, Opening};
use super::OPENING_WINDOW;
use crate::core::agreement::{self, AnswerPart, PrivateKey, PublicKey};
use crate::core::auth::{Nonce, SessionKeys};
use crate::core::handshake::{Hello, RefusalCode};
use crate::core::session::{Role, Session};
use crate::Config;

/// How long a session must have waited for its client before a full server may evict it,
/// when there is no silence limit (`Config::dead_after(None)`) to measure it by.
const EVICTABLE_WITHOUT_LIMIT: Duration = Duration::from_secs(3);

/// The settings a listener decides by, from its `Config`.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// Sessions at once, in all.
    pub max_sessions: usize,
    /// Sessions at once from one client address.
    pub max_sessions_per_address: usize,
    /// Handshakes in progress at once.
    pub max_handshakes: usize,
    /// How long a HELLO may take to arrive on an accepted connection.
    pub handshake_timeout: Duration,
    /// How long a session's client must have been gone before a full listener may evict
    /// it.
    pub evictable_after: Duration,
    /// Whether ordinary TCP clients are accepted (`Config::accept_plain_tcp`).
    pub accept_plain: bool,
    /// How long a silent client is waited for before it counts as an ordinary one
    /// (`Config::plain_wait`, at most the handshake timeout).
    pub plain_wait: Duration,
    /// The first byte of every CID the listener gives a session (`Config::instance_id`).
    pub instance_id: Option<u8>,
    /// The control address its ANSWERs announce (`Config::announce_control_addr`).
    pub announce: Option<SocketAddr>,
}

impl ServerLimits {
    /// The limits `config` sets.
    pub fn new(config: &Config) -> Self {
        ServerLimits {
            max_sessions: config.max_sessions_value(),
            max_sessions_per_address: config.max_sessions_per_address_value(),
            max_handshakes: config.max_handshakes_value(),
            handshake_timeout: config.handshake_timeout_value(),
            evictable_after: config.dead_after_value().unwrap_or(EVICTABLE_WITHOUT_LIMIT),
            accept_plain: config.accept_plain_tcp_value(),
            plain_wait: config
                .plain_wait_value()
                .min(config.handshake_timeout_value()),
            instance_id: config.instance_id_value(),
            announce: config.announce_control_addr_value(),
        }
    }

    /// How long a tombstone is kept: a retried opening is sent at most [`OPENING_WINDOW`]
    /// after the client's first HELLO, which came before the session opened and so before
    /// it ended, and is read within a handshake timeout of its connection's arrival.
    fn tombstone_life(&self) -> Duration {
        OPENING_WINDOW + self.handshake_timeout
    }
}

/// What the engine tells the endpoint about one of its sessions when asked.
#[derive(Clone, Copy, Debug, Default)]
pub struct Presence {
    /// How long its client has been gone: disconnected and silent since; `None` while
    /// connected.
    pub gone_for: Option<Duration>,
    /// Whether its client has shown that it knows the CID (`Session::peer_knows_cid`).
    pub client_knows_cid: bool,
}

impl Presence {
    /// What `session` shows at `now`. A client is gone while the session has no
    /// connection, for as long as it has been silent (a client that still probes is not
    /// gone, however long its TCP connection has been).
    pub fn of(session: &Session, now: Instant) -> Self {
        Presence {
            gone_for: session
                .disconnected_since()
                .map(|_| now.saturating_duration_since(session.last_heard())),
            client_knows_cid: session.peer_knows_cid(),
        }
    }
}

/// What a HELLO gets.
#[derive(Debug)]
pub enum Verdict<S> {
    /// A new session: open it, answer, and report it with [`ServerEndpoint::opened`].
    Open {
        /// The session's keys: agreed, or derived from the HELLO's secret.
        keys: Box<SessionKeys>,
        /// The listener's part of the key agreement, for the ANSWER (and to report with
        /// [`ServerEndpoint::opened`]); `None` for a lightweight opening.
        agreement: Option<AnswerPart>,
        /// A session to reset and end first, to make room (the endpoint has forgotten it
        /// already).
        evict: Option<Eviction<S>>,
    },
    /// The HELLO proved itself for an existing session: resume it on this connection
    /// once its count checks out, and install the connection once the client confirms
    /// ([`ServerEndpoint::confirmed`]).
    Resume(S),
    /// A retried key-agreement opening of this session, whose client has not proved yet
    /// that it holds the keys: answer that the session is known, with the session's CID
    /// and this part of the agreement (its first ANSWER's), tagged with its server
    /// handshake key, and close; change nothing else (the HELLO proves nothing).
    Known {
        /// The session.
        session: S,
        /// The session's CID.
        cid: u32,
        /// The listener's part of the session's key agreement.
        agreement: AnswerPart,
    },
    /// Answer with this refusal and close.
    Refuse(RefusalCode),
}

/// A session a full listener gives up to make room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eviction<S> {
    /// The session.
    pub session: S,
    /// Its CID.
    pub cid: u32,
    /// How long its client had been gone.
    pub waited: Duration,
}

/// One session, as its listener knows it.
#[derive(Debug)]
struct Record<S> {
    session: S,
    /// The address its client opened it from (its share of the per-address cap).
    client: IpAddr,
    /// The opening nonce of the client's HELLO: how a retried opening finds the session.
    opening: Nonce,
    /// The highest attempt whose HELLO proved itself (the opening's, at first): a HELLO
    /// must name a higher one, so none is accepted twice.
    last_attempt: u64,
    /// A key-agreement opening's: the client's ephemeral public key and the listener's
    /// part of the agreement, to answer a retry of the opening with.
    agreement: Option<(PublicKey, AnswerPart)>,
}

/// A handshake in progress, and where it stands.
#[derive(Debug)]
struct InProgress<S, H> {
    handshake: H,
    phase: Phase<S>,
}

/// One listener's decisions (see the module doc).
#[derive(Debug)]
pub struct ServerEndpoint<S, H> {
    limits: ServerLimits,
    /// Every session, by CID.
    sessions: HashMap<u32, Record<S>>,
    /// Every session's CID, by the opening nonce of its client's HELLO.
    by_opening: HashMap<Nonce, u32>,
    /// How many sessions were opened from each client address.
    per_address: HashMap<IpAddr, usize>,
    tombstones: Tombstones,
    /// Handshakes in progress, oldest first.
    handshakes: VecDeque<InProgress<S, H>>,
}

impl<S: Copy + Eq + Hash, H: Copy + Eq> ServerEndpoint<S, H> {
    /// A listener with no session and no handshake.
    pub fn new(limits: ServerLimits) -> Self {
        ServerEndpoint {
            limits,
            sessions: HashMap::new(),
            by_opening: HashMap::new(),
            per_address: HashMap::new(),
            tombstones: Tombstones::default(),
            handshakes: VecDeque::new(),
        }
    }

    /// How many sessions the listener has.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// How many handshakes the listener counts in progress (at most
    /// `ServerLimits::max_handshakes`).
    pub fn handshake_count(&self) -> usize {
        self.handshakes.len()
    }

    /// How many opening nonces the listener keeps as tombstones (with its sessions, at
    /// most twice `ServerLimits::max_sessions`, however many sessions end).
    pub fn tombstone_count(&self) -> usize {
        self.tombstones.queue.len()
    }

    /// What `hello`, from `client`, gets. `welcome` says whether new sessions are (the
    /// `RServerSocket` still exists). `ephemeral` is a fresh random key for a new session's
    /// key agreement (drawn for every opening; without one, a key-agreement opening is
    /// refused as if the listener were full). `verify` checks a resumption's tag with the
    /// session's client handshake key; `presence` reports on a session, for eviction and
    /// for whether its client proved that it holds the keys.
    #[allow(clippy::too_many_arguments)]
    pub fn on_hello(
        &mut self,
        hello: &Hello,
        client: IpAddr,
        welcome: bool,
        now: Instant,
        ephemeral: Option<&PrivateKey>,
        verify: impl FnOnce(S, &Hello) -> bool,
        presence: impl Fn(S) -> Presence,
    ) -> Verdict<S> {
        if !hello.opening_part_is_consistent() {
            return Verdict::Refuse(RefusalCode::BadRequest);
        }
        if !hello.is_opening() {
            return self.resumption(hello.cid, hello, verify);
        }
        let (keys, agreement) = if hello.key_agreement {
            if let Some(&cid) = self.by_opening.get(&hello.opening_nonce) {
                return self.known_opening(cid, hello, &presence);
            }
            let Some(ephemeral) = ephemeral else {
                return Verdict::Refuse(RefusalCode::TooManySessions);
            };
            match agreement::answer(ephemeral, &hello.opening_nonce, &hello.opening_key) {
                Some((part, keys)) => (keys, Some(part)),
                None => return Verdict::Refuse(RefusalCode::BadRequest),
            }
        } else {
            let keys = SessionKeys::derive(&hello.opening_key, &hello.opening_nonce, Role::Server);
            if !hello.verify(&keys.handshake.client) {
                return Verdict::Refuse(RefusalCode::BadRequest);
            }
            if let Some(&cid) = self.by_opening.get(&hello.opening_nonce) {
                // The client is retrying an opening whose ANSWER it did not get.
                return self.resumption(cid, hello, verify);
            }
            (keys, None)
        };
        if self.tombstones.holds(&hello.opening_nonce, now) {
            return Verdict::Refuse(RefusalCode::UnknownSession);
        }
        if hello.received != 0 {
            // The client of a new session has received nothing.
            return Verdict::Refuse(RefusalCode::BadRequest);
        }
        if !welcome {
            return Verdict::Refuse(RefusalCode::Closed);
        }
        self.tombstones.expire(now);
        if self.tombstones_are_full_for(client) {
            // Forgetting a tombstone early could open a second session for a client still
            // retrying its opening; evicting would only add one. So the opening waits
            // (the refusal is temporary) until tombstones expire.
            return Verdict::Refuse(RefusalCode::TooManySessions);
        }
        let mut evict = None;
        if self.is_full_for(client) {
            evict = self.eviction(client, &presence);
            match evict {
                Some(e) => {
                    let knows = presence(e.session).client_knows_cid;
                    self.forget(e.cid, knows, now);
                }
                None => return Verdict::Refuse(RefusalCode::TooManySessions),
            }
        }
        Verdict::Open {
            keys: Box::new(keys),
            agreement,
            evict,
        }
    }

    /// A retried key-agreement opening of session `cid`. It proves nothing (anyone who saw
    /// the opening can send it, with any attempt number), so it changes nothing: it only
    /// gets the CID and the agreement's part again, and only while the session's client
    /// has not proved that it holds the keys (no authentic datagram, no confirmed
    /// reconnection: until then a real client may still be retrying; afterwards, never).
    /// A HELLO with another client key is not this client's.
    fn known_opening(
        &self,
        cid: u32,
        hello: &Hello,
        presence: &impl Fn(S) -> Presence,
    ) -> Verdict<S> {
        let Some(record) = self.sessions.get(&cid) else {
            return Verdict::Refuse(RefusalCode::UnknownSession);
        };
        match record.agreement {
            Some((public, agreement))
                if public == hello.opening_key && !presence(record.session).client_knows_cid =>
            {
                Verdict::Known {
                    session: record.session,
                    cid,
                    agreement,
                }
            }
            _ => Verdict::Refuse(RefusalCode::UnknownSession),
        }
    }

    /// A resumption of session `cid` (named by the HELLO, or found by its opening nonce):
    /// nothing changes unless the HELLO proves itself with the session's key and names a
    /// higher attempt than any before (a replayed HELLO names an old one). Unknown,
    /// forged and replayed HELLOs get the same refusal: it tells an attacker nothing
    /// about which sessions exist.
    fn resumption(
        &mut self,
        cid: u32,
        hello: &Hello,
        verify: impl FnOnce(S, &Hello) -> bool,
    ) -> Verdict<S> {
        let Some(record) = self.sessions.get_mut(&cid) else {
            return Verdict::Refuse(RefusalCode::UnknownSession);
        };
        if hello.attempt <= record.last_attempt || !verify(record.session, hello) {
            return Verdict::Refuse(RefusalCode::UnknownSession);
        }
        record.last_attempt = hello.attempt;
        Verdict::Resume(record.session)
    }

    /// Whether a new session from `client` would pass a cap.
    fn is_full_for(&self, client: IpAddr) -> bool {
        self.sessions.len() >= self.limits.max_sessions || self.share_is_full(client)
    }

    /// Whether a new session from `client` would leave no room for its tombstone, should
    /// it end before its client knew it: the sessions and tombstones of the listener may
    /// number twice `max_sessions`, those of one address twice its share. Since a session
    /// that ends becomes at most one tombstone, the table never has to forget a live one,
    /// and it stays bounded; a client that fills its own share with tombstones waits
    /// without holding up others.
    fn tombstones_are_full_for(&self, client: IpAddr) -> bool {
        let in_all = self.sessions.len() + self.tombstones.queue.len();
        let from_client =
            self.per_address.get(&client).copied().unwrap_or(0) + self.tombstones.from(client);
        in_all >= 2 * self.limits.max_sessions
            || from_client >= 2 * self.limits.max_sessions_per_address
    }

    /// Whether `client` has as many sessions as one address may.
    fn share_is_full(&self, client: IpAddr) -> bool {
        let from_client = self.per_address.get(&client).copied().unwrap_or(0);
        from_client >= self.limits.max_sessions_per_address
    }

    /// The session whose client has been gone longest (among `client`'s own if its
    /// per-address share is full, since only one of those makes room in it, whether or
    /// not the listener is full too), if it has been gone for at least
    /// `ServerLimits::evictable_after`. Vanished clients would otherwise hold the
    /// server's capacity for good. Costs a scan, only when the listener is full.
    fn eviction(&self, client: IpAddr, presence: &impl Fn(S) -> Presence) -> Option<Eviction<S>> {
        let share_full = self.share_is_full(client);
        self.sessions
            .iter()
            .filter(|(_, r)| !share_full || r.client == client)
            .filter_map(|(&cid, r)| {
                let waited = presence(r.session).gone_for?;
                let eviction = Eviction {
                    session: r.session,
                    cid,
                    waited,
                };
                (waited >= self.limits.evictable_after).then_some(eviction)
            })
            .max_by_key(|e| (e.waited, e.cid))
    }

    /// The session opened by the HELLO whose opening nonce is `opening_nonce`, which an
    /// EARLY datagram names (the session decides what it is worth).
    pub fn opened_by(&self, opening_nonce: &Nonce) -> Option<S> {
        let cid = self.by_opening.get(opening_nonce)?;
        self.sessions.get(cid).map(|record| record.session)
    }

    /// The engine opened `session` with CID `cid` for `hello`, from `client`, with the
    /// verdict's `agreement`.
    pub fn opened(
        &mut self,
        cid: u32,
        session: S,
        client: IpAddr,
        hello: &Hello,
        agreement: Option<AnswerPart>,
    ) {
        self.sessions.insert(
            cid,
            Record {
                session,
                client,
                opening: hello.opening_nonce,
                last_attempt: hello.attempt,
                agreement: agreement.map(|part| (hello.opening_key, part)),
            },
        );
        self.by_opening.insert(hello.opening_nonce, cid);
        *self.per_address.entry(client).or_default() += 1;
    }

    /// The client confirmed attempt `attempt` of session `cid`: whether it is still the
    /// latest that proved itself (a later one may have meanwhile), so that the connection
    /// may be installed.
    pub fn confirmed(&self, cid: u32, attempt: u64) -> bool {
        self.sessions
            .get(&cid)
            .is_some_and(|r| r.last_attempt == attempt)
    }

    /// Session `cid` ended: its slot is free. Its opening nonce is kept as a tombstone if
    /// its client never showed that it knows the CID, since it may still be retrying its
    /// opening, which must not open a second session.
    pub fn ended(&mut self, cid: u32, client_knows_cid: bool, now: Instant) {
        self.forget(cid, client_knows_cid, now);
    }

    /// Removes session `cid`'s record, keeping a tombstone if its client may not know it.
    fn forget(&mut self, cid: u32, client_knows_cid: bool, now: Instant) {
        let Some(record) = self.sessions.remove(&cid) else {
            return;
        };
        self.by_opening.remove(&record.opening);
        if !client_knows_cid {
            let until = now + self.limits.tombstone_life();
            self.tombstones.keep(record.opening, until, record.client);
        }
        if let Some(n) = self.per_address.get_mut(&record.client) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&record.client);
            }
        }
    }

    /// A handshake started, waiting for its HELLO: returns the one dropped to make room,
    /// with what to do about it, if the listener had `max_handshakes` already. The victim
    /// is, first, the oldest answered resumption that can install nothing any more (a
    /// later attempt of its session overtook it, or the session ended); then the oldest that has not been answered: a
    /// real client completes within a round trip, so a flood of slow or silent
    /// connections evicts itself.
    ///
    /// An answered resumption that may still install (waiting for its CONFIRM) is the
    /// furthest along, and its eviction sends its client a RECONNECT that brings it back
    /// at once. So one goes only when every slot holds one (the oldest), and never from a
    /// listener of one slot: there two clients resuming together evicted each other
    /// forever (simulation seed 4531). Then the new connection is the one dropped:
    /// `handshake` itself is returned, not started, and its client, which heard nothing on
    /// it, backs off.
    pub fn handshake_started(&mut self, handshake: H) -> Option<(H, Action<S>)> {
        let max = self.limits.max_handshakes;
        if self.handshakes.len() < max {
            self.push_started(handshake);
            return None;
        }
        let answered = |h: &&InProgress<S, H>| matches!(h.phase, Phase::Confirm(_));
        let victim = self
            .handshakes
            .iter()
            .find(|h| self.holds_an_overtaken_offer(&h.phase))
            .or_else(|| self.handshakes.iter().find(|h| !answered(h)))
            .or_else(|| self.handshakes.front().filter(|_| max > 1))
            .map(|h| h.handshake);
        let Some(victim) = victim else {
            return Some((handshake, Action::Close));
        };
        let dropped = (victim, self.handshake_failed(victim));
        self.push_started(handshake);
        Some(dropped)
    }

    /// Starts handshake `handshake`: it waits for its first bytes.
    fn push_started(&mut self, handshake: H) {
        self.handshakes.push_back(InProgress {
            handshake,
            phase: Phase::Sniff { heard: false },
        });
    }

    /// Where handshake `h` stands, if it is in progress.
    fn phase(&self, h: H) -> Option<&Phase<S>> {
        self.handshakes
            .iter()
            .find(|p| p.handshake == h)
            .map(|p| &p.phase)
    }

    /// The same, to change.
    fn phase_mut(&mut self, h: H) -> Option<&mut Phase<S>> {
        self.handshakes
            .iter_mut()
            .find(|p| p.handshake == h)
            .map(|p| &mut p.phase)
    }

    /// Moves handshake `h` on to `phase`.
    fn set_phase(&mut self, h: H, phase: Phase<S>) {
        if let Some(p) = self.phase_mut(h) {
            *p = phase;
        }
    }

    /// Ends handshake `h`: where it stood, if it was in progress.
    fn take(&mut self, h: H) -> Option<Phase<S>> {
        let at = self.handshakes.iter().position(|p| p.handshake == h)?;
        self.handshakes.remove(at).map(|p| p.phase)
    }

    /// A handshake is over: its connection was closed without a word from the endpoint
    /// (a write on it failed, say). Nothing was offered on it that the session must hear of.
    pub fn handshake_ended(&mut self, handshake: H) {
        self.take(handshake);
    }

    /// The handshakes in progress, to drop when the listener closes.
    pub fn take_handshakes(&mut self) -> impl Iterator<Item = H> {
        std::mem::take(&mut self.handshakes)
            .into_iter()
            .map(|h| h.handshake)
    }
}

/// Opening nonces of sessions that ended before their client showed that it knows the
/// CID, each with when it may be forgotten and the address that opened it. Bounded by
/// admission (`ServerEndpoint::tombstones_are_full_for`), never by forgetting one early.
#[derive(Debug, Default)]
struct Tombstones {
    /// Oldest first; since every tombstone lives as long, also the first to expire first.
    queue: VecDeque<(Nonce, Instant, IpAddr)>,
    /// The same, to look up.
    until: HashMap<Nonce, Instant>,
    /// How many each client address has.
    per_address: HashMap<IpAddr, usize>,
}

impl Tombstones {
    /// Whether `nonce` is a tombstone at `now`.
    fn holds(&self, nonce: &Nonce, now: Instant) -> bool {
        self.until.get(nonce).is_some_and(|&until| until > now)
    }

    /// How many tombstones `client` has.
    fn from(&self, client: IpAddr) -> usize {
        self.per_address.get(&client).copied().unwrap_or(0)
    }

    /// Keeps `nonce`, of a session opened from `client`, until `until`.
    fn keep(&mut self, nonce: Nonce, until: Instant, client: IpAddr) {
        self.queue.push_back((nonce, until, client));
        self.until.insert(nonce, until);
        *self.per_address.entry(client).or_default() += 1;
    }

    /// Forgets the tombstones that expired by `now`.
    fn expire(&mut self, now: Instant) {
        while let Some(&(nonce, until, client)) = self.queue.front() {
            if until > now {
                break;
            }
            self.queue.pop_front();
            if self.until.get(&nonce) == Some(&until) {
                self.until.remove(&nonce);
            }
            if let Some(n) = self.per_address.get_mut(&client) {
                *n -= 1;
                if *n == 0 {
                    self.per_address.remove(&client);
                }
            }
        }
    }
}

mod handshake;
mod stranger;
#[cfg(test)]
mod tests;
