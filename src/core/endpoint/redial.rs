//! A client session's connection attempts: when the next one starts (backoff, cut short
//! when the server is heard from again), what its HELLO says (a retried opening or a
//! resumption, and its attempt number), and when an opening the server never accepted
//! stops, with which error. Reconnections of an open session go on however they fail
//! (only the session's `give_up_after` ends them).
//!
//! The engine owns the sockets and the timers; it names each attempt by an id of its own
//! (`D`), passes the time in, and reports what became of each attempt.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::OPENING_WINDOW;
use crate::core::agreement::{self, ClientHalf, PrivateKey, PublicKey};
use crate::core::auth::{MacKey, Nonce, Secret, SessionKeys};
use crate::core::backoff::Backoff;
use crate::core::counter::to_wire;
use crate::core::handshake::{Accepted, Hello};
use crate::error::{Error, NotRobustReason, Refusal};
use crate::Config;

/// How many attempts of an opening in a row may be cut after their TCP connect, with no
/// answer, before the session fails: a cut during the handshake is retried, but a peer
/// that keeps hanging up without answering is most likely not a robust-tcp server.
const OPEN_ATTEMPTS: u32 = 10;
/// How many handshake timeouts an opening may go on without any answer from the server
/// before the session fails (within [`OPENING_WINDOW`] in any case): nothing shows that
/// anything but a dead network or a stranger is there.
pub(crate) const OPENING_PATIENCE: u32 = 10;
/// An attempt older than this whose TCP connect has not completed when the server is
/// heard from again is started over: its SYN was most likely lost to the outage, and the
/// kernel's retransmission of it may be seconds away (its timer doubles from 1 s).
const STALE_CONNECT: Duration = Duration::from_millis(250);

/// Why one attempt failed.
#[derive(Debug)]
pub enum Failure {
    /// The TCP connect itself failed.
    Connect(io::Error),
    /// The deadline passed with the connection up and no answer.
    Timeout,
    /// The connection failed during the handshake: worth another try.
    Cut(io::Error),
    /// The server refused with a temporary reason: it holds too many sessions.
    Busy,
    /// Retrying cannot help.
    Fatal(Error),
}

/// What a disconnected client does next, as [`Redial::plan`] decides.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan<D> {
    /// Start an attempt now.
    Dial,
    /// Wait: until this time, or for the attempt in progress.
    Wait(Option<Instant>),
    /// Drop the attempt in progress and start another now.
    Restart(D),
}

/// What an attempt's HELLO says, as [`Redial::next_hello`] decides.
#[derive(Debug, PartialEq, Eq)]
pub struct NextHello {
    /// Its attempt number: each HELLO of a session names a higher one, so that the server
    /// can refuse a replayed one.
    pub attempt: u64,
    /// A retried opening's opening nonce and key (the first HELLO's); `None` to resume
    /// by CID.
    pub opening: Option<(Nonce, OpeningKey)>,
}

/// What an opening HELLO carries besides its opening nonce, the same in every retry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OpeningKey {
    /// The key agreement: the client's ephemeral key pair (the public key travels).
    Agreement {
        /// Drawn by the engine for the session; never sent.
        private: PrivateKey,
        /// Its public key.
        public: PublicKey,
    },
    /// The lightweight opening: the session secret, sent in clear.
    Secret(Secret),
}

impl fmt::Debug for OpeningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private key and the secret are never shown; the public key travels anyway.
        match self {
            OpeningKey::Agreement { public, .. } => f
                .debug_struct("Agreement")
                .field("public", public)
                .finish_non_exhaustive(),
            OpeningKey::Secret(_) => f.write_str("Secret(..)"),
        }
    }
}

impl OpeningKey {
    /// The key agreement with the ephemeral private key `private` (random, drawn by the
    /// engine), for the session whose opening nonce is `nonce`, and the state that
    /// finishes it (for [`Redial::new`]); `None` if `snow` fails.
    pub fn agreement(private: PrivateKey, nonce: &Nonce) -> Option<(Self, ClientHalf)> {
        let (public, half) = agreement::client_start(&private, nonce)?;
        Some((OpeningKey::Agreement { private, public }, half))
    }

    /// The HELLO of opening attempt `attempt`, client nonce `nonce`, of the session whose
    /// opening nonce is `opening_nonce`: a lightweight one is tagged with the client's
    /// handshake key `key` (derived from its secret), a key-agreement one carries no tag.
    pub fn hello(&self, nonce: Nonce, attempt: u64, opening_nonce: Nonce, key: &MacKey) -> Hello {
        match *self {
            OpeningKey::Agreement { public, .. } => {
                Hello::agreeing(nonce, attempt, opening_nonce, public)
            }
            OpeningKey::Secret(secret) => {
                Hello::opening(nonce, attempt, opening_nonce, secret, key)
            }
        }
    }
}

impl NextHello {
    /// The HELLO itself, with a fresh client `nonce`: a retried opening's (untagged if it
    /// runs the key agreement), or a resumption of session `cid` whose application has read `received` bytes (exact
    /// once no thread is inside a read on the old connection). `key`: the session's
    /// client handshake key.
    pub fn hello(&self, nonce: Nonce, cid: u32, received: u64, key: &MacKey) -> Hello {
        match &self.opening {
            Some((opening_nonce, opening)) => {
                opening.hello(nonce, self.attempt, *opening_nonce, key)
            }
            None => Hello::resume(cid, nonce, self.attempt, to_wire(received), key),
        }
    }
}

/// A client session's reconnection schedule; `D` names an attempt (the engine's token).
pub struct Redial<D> {
    addr: SocketAddr,
    /// The bound on each reconnection.
    handshake_timeout: Duration,
    /// The bound on each attempt of the opening: at most `handshake_timeout`, less for
    /// `RSocket::connect_timeout`, for the opening only.
    opening_timeout: Duration,
    /// How long an opening refused as busy is retried.
    busy_limit: Duration,
    backoff: Backoff,
    /// Failed attempts since the last success.
    attempt: u32,
    /// The number of the last HELLO sent (0 for the first opening).
    last_hello: u64,
    /// When the next attempt starts, once one is planned.
    next_try: Option<Instant>,
    /// The attempt in progress, and when it started.
    dialing: Option<(D, Instant)>,
    /// The latest sign of life from the server that an attempt was started for.
    heard_acted_on: Option<Instant>,
    /// When the last connection was installed, until the server was heard on it. Only a
    /// connection that proved itself resets the backoff: one lost before that counts as a
    /// failed attempt, so clients whose handshakes evict each other (a listener's
    /// `max_handshakes` of 1, say) back off instead of retrying at once forever.
    unproven: Option<Instant>,
    /// Until the server has answered the session's opening: what a retried opening needs.
    opening: Option<Box<Opening>>,
}

/// A session whose opening the server has not answered yet: its retried openings send
/// the same opening nonce and key, so that a server that did receive an earlier HELLO
/// finds that session instead of opening a second one.
struct Opening {
    nonce: Nonce,
    key: OpeningKey,
    /// The key agreement's state from the first HELLO, until an ANSWER uses it.
    half: Option<ClientHalf>,
    /// When the first HELLO went out.
    started: Instant,
    /// Attempts cut after their TCP connect since the last answer (a refusal).
    cuts: u32,
    /// The most telling answer the server gave.
    heard: Heard,
}

/// What an opening heard from the server, in increasing order of what it says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Heard {
    /// Nothing: a stranger or a dead network, as far as the client knows.
    Nothing,
    /// An authentic answer: a robust-tcp server is there.
    Answer,
    /// A refusal as busy: a robust-tcp server is there, and full.
    Busy,
}

impl<D: Copy> Redial<D> {
    /// The schedule of a new session with the server at `addr`, whose opening HELLO, with
    /// opening nonce `nonce` and `key`, went out at `now`; each attempt of its opening is
    /// bounded by `opening_timeout`.
    pub fn new(
        addr: SocketAddr,
        config: &Config,
        opening_timeout: Duration,
        nonce: Nonce,
        key: OpeningKey,
        now: Instant,
    ) -> Self {
        let (initial, max) = config.reconnect_backoff_value();
        let handshake_timeout = config.handshake_timeout_value();
        Redial {
            addr,
            handshake_timeout,
            opening_timeout: opening_timeout.min(handshake_timeout),
            busy_limit: config.busy_limit_value(),
            backoff: Backoff::new(initial, max),
            attempt: 0,
            last_hello: 0,
            next_try: None,
            dialing: None,
            heard_acted_on: None,
            unproven: None,
            opening: Some(Box::new(Opening {
                nonce,
                key,
                half: None,
                started: now,
                cuts: 0,
                heard: Heard::Nothing,
            })),
        }
    }

    /// The key agreement's state made with the first HELLO ([`OpeningKey::agreement`]),
    /// which the first ANSWER finishes ([`agreed_keys`](Self::agreed_keys)).
    pub fn agreement_started(&mut self, half: ClientHalf) {
        if let Some(opening) = &mut self.opening {
            opening.half = Some(half);
        }
    }

    /// The server's address: the opening's, until the application redirects the session.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Later attempts go to `addr` (`RSocket::reconnect_to`: the server's name resolves
    /// elsewhere now); an attempt in progress keeps the address it dialled. Nothing else
    /// changes: the schedule, the backoff and what the next HELLO says are the session's.
    pub fn redirect(&mut self, addr: SocketAddr) {
        self.addr = addr;
    }

    /// The bound on the next attempt: the opening's own until the server answered it.
    pub fn attempt_timeout(&self) -> Duration {
        if self.opening.is_some() {
            self.opening_timeout
        } else {
            self.handshake_timeout
        }
    }

    /// How long an opening refused as busy is retried.
    pub fn busy_limit(&self) -> Duration {
        self.busy_limit
    }

    /// The attempt in progress.
    pub fn dialing(&self) -> Option<D> {
        self.dialing.map(|(dial, _)| dial)
    }

    /// Attempt `dial` started at `now`.
    pub fn started(&mut self, dial: D, now: Instant) {
        self.dialing = Some((dial, now));
        self.next_try = None;
    }

    /// When the next attempt is due: at once after a success, then with backoff.
    fn due(&self, now: Instant) -> Instant {
        now + self.backoff.delay(self.attempt)
    }

    /// Decides what to do for a session that needs a connection. `heard` is when the
    /// server was last heard from since the connection was lost (over the control path:
    /// the path works again); `last_heard`, when it was last heard at all
    /// (`Session::last_heard`); `connecting` says whether the attempt in progress is still
    /// in its TCP connect. Hearing the server cuts the backoff short, so that a session
    /// resumes within a heartbeat of the path's return however long the outage was.
    pub fn plan(
        &mut self,
        heard: Option<Instant>,
        last_heard: Instant,
        now: Instant,
        connecting: impl FnOnce(D) -> bool,
    ) -> Plan<D> {
        if let Some(installed) = self.unproven.take() {
            self.attempt = if last_heard > installed {
                0
            } else {
                self.attempt.saturating_add(1)
            };
        }
        let news = heard.filter(|&h| self.heard_acted_on.is_none_or(|seen| h > seen));
        if let Some(h) = news {
            self.heard_acted_on = Some(h);
        }
        match self.dialing {
            Some((dial, started)) => {
                let stale = now.saturating_duration_since(started) >= STALE_CONNECT;
                if news.is_some() && stale && connecting(dial) {
                    Plan::Restart(dial)
                } else {
                    Plan::Wait(None)
                }
            }
            None => {
                if news.is_some() {
                    self.attempt = 0;
                    self.next_try = Some(now);
                }
                let due = self.due(now);
                let at = *self.next_try.get_or_insert(due);
                if at <= now {
                    Plan::Dial
                } else {
                    Plan::Wait(Some(at))
                }
            }
        }
    }

    /// The HELLO of the attempt whose TCP connection is up at `now`; or, for an opening
    /// whose time is up, the error that fails the session: no retried opening goes out
    /// once [`OPENING_WINDOW`] has passed since the first, so none reaches a server after
    /// it forgot the opening nonce, however the two sides are configured.
    pub fn next_hello(&mut self, now: Instant) -> Result<NextHello, Error> {
        if let Some(e) = self.expired(now) {
            return Err(e);
        }
        self.last_hello += 1;
        Ok(NextHello {
            attempt: self.last_hello,
            opening: self.opening.as_ref().map(|o| (o.nonce, o.key)),
        })
    }

    /// The keys that `answer`, to a key-agreement opening of this session, agrees on; `None`
    /// if its agreement part does not complete the client's, or the session runs no key
    /// agreement or its opening was answered already (its keys are settled).
    pub fn agreed_keys(&mut self, answer: &Accepted) -> Option<SessionKeys> {
        let opening = self.opening.as_mut()?;
        let OpeningKey::Agreement { private, .. } = &opening.key else {
            return None;
        };
        // The state kept from the HELLO reads one part; a later ANSWER (to a retry, or
        // after a forged one) starts the agreement again from the private key.
        match opening.half.take() {
            Some(half) => half.finish(&answer.agreement),
            None => agreement::finish(private, &opening.nonce, &answer.agreement),
        }
    }

    /// The server answered an attempt with proof that it holds the session's keys.
    pub fn heard_answer(&mut self) {
        if let Some(opening) = &mut self.opening {
            opening.heard = opening.heard.max(Heard::Answer);
            opening.cuts = 0;
        }
    }

    /// The attempt in progress gave the session a connection at `now`: the session is
    /// open. Once the server is heard on the connection, its loss is retried at once;
    /// before, it counts as a failed attempt (see [`plan`](Self::plan)).
    pub fn connected(&mut self, now: Instant) {
        self.answered();
        self.unproven = Some(now);
    }

    /// The server knew the session of a retried key-agreement opening and told its CID
    /// and keys (a KNOWN answer, which proves that it holds them): the session is open,
    /// and its resumption by CID starts at once. (At most once a session: no livelock.)
    pub fn learned(&mut self) {
        self.answered();
        self.attempt = 0;
    }

    /// The server answered the session's opening, or the attempt in progress.
    fn answered(&mut self) {
        self.dialing = None;
        self.opening = None;
    }

    /// The attempt in progress ended with a refusal that fails the session.
    pub fn abandoned(&mut self) {
        self.dialing = None;
    }

    /// An attempt failed at `now`: plans the next one, and returns the error that fails
    /// the session if the opening (while the server has not answered it) must stop.
    /// Reconnections of an open session go on however they fail.
    pub fn failed(&mut self, failure: Failure, now: Instant) -> Option<Error> {
        self.dialing = None;
        self.attempt = self.attempt.saturating_add(1);
        let next = self.due(now);
        self.next_try = Some(next);
        let opening = self.opening.as_mut()?;
        match failure {
            Failure::Fatal(e) => return Some(e),
            // The connection was up and nothing answered.
            Failure::Timeout => {
                let reason = NotRobustReason::Silent;
                return Some(Error::NotRobust { reason });
            }
            Failure::Busy => {
                opening.heard = Heard::Busy;
                opening.cuts = 0;
            }
            Failure::Cut(_) => {
                opening.cuts += 1;
                if opening.cuts >= OPEN_ATTEMPTS {
                    let reason = NotRobustReason::HungUp(opening.cuts);
                    return Some(Error::NotRobust { reason });
                }
            }
            Failure::Connect(_) => {}
        }
        // The next attempt cannot send its HELLO before it starts: fail now rather than
        // keep the application waiting for an attempt that could only be refused.
        self.expired(next)
    }

    /// Whether the opening's time is up at `at`, and the error it then fails with. An
    /// opening that heard nothing gets `OPENING_PATIENCE` attempt timeouts; one refused as
    /// busy, `busy_limit` (a full server fails a client as a TCP listener that never
    /// accepts does, not by leaving it waiting); every opening, `OPENING_WINDOW` at most.
    fn expired(&self, at: Instant) -> Option<Error> {
        let opening = self.opening.as_ref()?;
        let (after, error) = match opening.heard {
            Heard::Nothing => {
                let patience = self.opening_timeout.saturating_mul(OPENING_PATIENCE);
                let after = patience.min(OPENING_WINDOW);
                (after, Error::GaveUp { after })
            }
            Heard::Answer => (
                OPENING_WINDOW,
                Error::GaveUp {
                    after: OPENING_WINDOW,
                },
            ),
            Heard::Busy => (
                self.busy_limit.min(OPENING_WINDOW),
                Error::Refused(Refusal::TooManySessions),
            ),
        };
        (at.saturating_duration_since(opening.started) >= after).then_some(error)
    }
}

#[cfg(test)]
mod tests;
