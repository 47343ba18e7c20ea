//! The server's side of each handshake as a state machine, owned by the listener's
//! endpoint: which frame it waits for, what each frame gets, and the resumption's steps
//! around the engine's barrier. The engine (or the simulation) reads and writes the frames,
//! holds the sessions and passes the barrier; it feeds each event in and carries out the
//! [`Action`] it gets back, deciding nothing.
//!
//! ```text
//! Sniff --first bytes not the magic, or silent past plain_wait (ordinary clients
//!   |     accepted)--> (handed to accept as plain TCP)
//!   |  --ended before a byte (a probe)--> (greeted, closed)
//!   |  --the magic (or any byte, ordinary clients not accepted)--> Hello
//! Hello --CONTROL, a CID of the listener's--> (control connection)
//!   |  --HELLO: refused---> (refusal written, closed)
//!   |  --HELLO: opening---> (session opened, answered)
//!   |  --HELLO: a retried key-agreement opening it has--> (KNOWN written, closed)
//!   |  --garbage----------> TurningAway --hangs up, or past TURN_AWAY_DRAIN--> (closed)
//!   |  --HELLO: resumes---> Barrier --count checks out--> Confirm --CONFIRM verifies-->
//!   |                                                        |     (installed, if latest)
//!   |                                                        +--anything else--> (offer failed,
//!   |                                                              or closed if overtaken)
//! ```

use std::net::IpAddr;
use std::time::Instant;

use super::{Eviction, Presence, ServerEndpoint, Verdict};
use crate::core::agreement::{AnswerPart, PrivateKey, KEY_LEN};
use crate::core::auth::{HandshakeKeys, SessionKeys, CHALLENGE_KEY_LEN, NONCE_LEN};
use crate::core::counter::to_wire;
use crate::core::handshake::{Accepted, Confirm, Control, FrameKind, Hello, RefusalCode};
use crate::core::session::Session;

/// The most a peer that does not speak robust-tcp may send while it is turned away.
pub const TURN_AWAY_DRAIN: usize = 64 * 1024;

/// How many random CIDs are drawn for a new session, which is refused as if the server
/// were full if every one is taken: with fewer than 2^16 sessions in the process (and an
/// instance id, which leaves 24 random bits; 2^24 without), that is below one chance in
/// 2^128.
const CID_DRAWS: usize = 16;

/// The bits of a CID that carry the server's instance id, when it has one: its first byte
/// on the wire, so that a load balancer finds it at one fixed offset of every
/// reconnection's stream (`docs/PROTOCOL.md`, section 4).
const INSTANCE_SHIFT: u32 = 24;

/// Where a handshake stands.
#[derive(Debug)]
pub(super) enum Phase<S> {
    /// Before the first bytes tell what the peer is
    /// (`core::endpoint::stranger`); `heard` once a prefix of the magic came. A
    /// frame read now is read as in `Hello` (a driver that reads frames at once skips it).
    Sniff {
        /// Some bytes came, a prefix of the magic.
        heard: bool,
    },
    /// Waiting for the client's HELLO (or the CONTROL that opens a control connection).
    Hello,
    /// A resumption's HELLO proved itself and its count passed the loose check: the
    /// engine aborts the session's live connection and passes the barrier.
    Barrier {
        session: S,
        cid: u32,
        hello: Box<Hello>,
    },
    /// Answered; waiting for the CONFIRM that proves the client sent this HELLO now.
    Confirm(Box<Offer<S>>),
    /// The peer does not speak robust-tcp: it was told so, and what it still sends is read
    /// and dropped (this many bytes so far) until it hangs up, so that closing does not
    /// reset the connection before it read the answer.
    TurningAway(usize),
}

/// A resumption answered: what its CONFIRM must cover, and what installs it.
#[derive(Debug)]
pub(super) struct Offer<S> {
    session: S,
    cid: u32,
    hello: Hello,
    answer: Accepted,
    peer_received: u64,
}

/// What the engine does next for a handshake.
#[derive(Debug)]
pub enum Action<S> {
    /// Read more: while [`ServerEndpoint::sniffing`], the first bytes
    /// ([`ServerEndpoint::on_first_bytes`]); then a frame of a kind in
    /// [`ServerEndpoint::expected`], or, while turning away, bytes to drop
    /// ([`ServerEndpoint::on_drained`]).
    Wait,
    /// The connection carries control datagrams from now on (the handshake is over).
    Control,
    /// Write this refusal and close.
    Refuse(RefusalCode),
    /// Not robust-tcp: write a `BadRequest` refusal, shut down writing, then read and drop
    /// what comes, reporting it to [`ServerEndpoint::on_drained`].
    TurnAway,
    /// Open a new session (the handshake is over): reset and free the evicted session if
    /// there is one, write the ANSWER, make the session and report it with
    /// [`ServerEndpoint::opened`]. If the ANSWER cannot be written, make nothing.
    Open(Box<Opening<S>>),
    /// Abort session `S`'s live connection, wait until no application thread is inside a
    /// read or write on it (the barrier), then call [`ServerEndpoint::after_barrier`].
    Barrier(S),
    /// Write this ANSWER, then read the CONFIRM.
    Answer(Box<Accepted>),
    /// Write this KNOWN answer to a retried key-agreement opening, and close (the
    /// handshake is over; nothing else changes).
    Known(Box<Accepted>),
    /// Move session `session` to this connection (the handshake is over).
    Install {
        /// The session.
        session: S,
        /// The connection's number.
        epoch: u32,
        /// What its client has received (checked).
        peer_received: u64,
    },
    /// The offer of connection `epoch` to `session` was never confirmed: tell the session
    /// (`Session::handle_offer_failed`), and close.
    OfferFailed {
        /// The session.
        session: S,
        /// The connection number its ANSWER offered.
        epoch: u32,
    },
    /// Close the connection (the handshake is over).
    Close,
    /// An ordinary TCP client (the handshake is over): hand the connection to `accept` as
    /// plain TCP, with every byte it sent still unread in it.
    Plain,
    /// A probe (`core::endpoint::stranger`): write
    /// its GREETING and close (the handshake is
    /// over).
    Greet,
}

/// A new session to make.
#[derive(Debug)]
pub struct Opening<S> {
    /// Its CID: random, never 0, taken by no server session of the process.
    pub cid: u32,
    /// Its keys: agreed, or derived from the HELLO.
    pub keys: SessionKeys,
    /// The listener's part of the key agreement, for [`ServerEndpoint::opened`]; `None`
    /// for a lightweight opening.
    pub agreement: Option<AnswerPart>,
    /// The ANSWER to write (OPENED; with the agreement's part).
    pub answer: Accepted,
    /// The key of its path challenges (`ChallengeKey::new`).
    pub challenge_key: [u8; CHALLENGE_KEY_LEN],
    /// The HELLO, for [`ServerEndpoint::opened`].
    pub hello: Hello,
    /// A session to reset (`Error::Evicted`) and free first, to make room (the endpoint
    /// has forgotten it already).
    pub evict: Option<Eviction<S>>,
}

/// What a listener's handshakes need from whoever holds the sessions and the sockets.
/// Nothing here performs I/O.
pub trait Host<S> {
    /// Session `s`'s handshake keys, if it still exists.
    fn handshake_keys(&self, s: S) -> Option<HandshakeKeys>;
    /// What session `s` shows at `now` ([`Presence::of`]), for eviction.
    fn presence(&self, s: S, now: Instant) -> Presence;
    /// Runs `f` on session `s`'s core (under its lock), if it still exists.
    fn with_session<R>(&mut self, s: S, f: impl FnOnce(&mut Session) -> R) -> Option<R>;
    /// Whether a server session of the process has CID `cid`.
    fn cid_taken(&self, cid: u32) -> bool;
    /// The UDP port the listener's sessions take control datagrams on.
    fn control_port(&self) -> u16;
    /// Fills `buf` with random bytes; `false` if there are none to be had.
    fn random(&mut self, buf: &mut [u8]) -> bool;
}

/// A CID for a new server session: the first of the random `draws` that is not 0 (which
/// opens a session) and not `taken`, with its first byte replaced by `instance`
/// (`Config::instance_id`) when there is one. Random, so that one session's CID tells
/// nothing of its neighbours' (but, with an instance id, which instance holds it: that is
/// its purpose); unique, so that a datagram for a server session is looked up in one
/// step. `None` if every draw was taken.
pub fn new_cid(draws: &[u8], instance: Option<u8>, taken: impl Fn(u32) -> bool) -> Option<u32> {
    let mask = u32::MAX >> (32 - INSTANCE_SHIFT);
    draws
        .chunks_exact(4)
        .filter_map(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .map(|cid| match instance {
            Some(id) => u32::from(id) << INSTANCE_SHIFT | cid & mask,
            None => cid,
        })
        .find(|&cid| cid != 0 && !taken(cid))
}

/// The random values a new session needs, drawn before its HELLO is decided so that a
/// failure to draw refuses it before anything (an eviction) is done.
struct Draws {
    cid: u32,
    server_nonce: [u8; NONCE_LEN],
    challenge_key: [u8; CHALLENGE_KEY_LEN],
    /// For a key agreement.
    ephemeral: PrivateKey,
}

impl Draws {
    /// All of them in one draw: one system call per opening rather than four.
    fn from<S>(host: &mut impl Host<S>, instance: Option<u8>) -> Option<Self> {
        let mut bytes = [0; NONCE_LEN + CHALLENGE_KEY_LEN + KEY_LEN + 4 * CID_DRAWS];
        let drawn = host.random(&mut bytes);
        let (server_nonce, rest) = bytes.split_at(NONCE_LEN);
        let (challenge_key, rest) = rest.split_at(CHALLENGE_KEY_LEN);
        let (ephemeral, cids) = rest.split_at(KEY_LEN);
        let (Ok(server_nonce), Ok(challenge_key), Ok(ephemeral)) = (
            <[u8; NONCE_LEN]>::try_from(server_nonce),
            <[u8; CHALLENGE_KEY_LEN]>::try_from(challenge_key),
            <[u8; KEY_LEN]>::try_from(ephemeral),
        ) else {
            return None;
        };
        let cid = new_cid(cids, instance, |cid| host.cid_taken(cid));
        cid.filter(|_| drawn).map(|cid| Draws {
            cid,
            server_nonce,
            challenge_key,
            ephemeral,
        })
    }
}

impl<S: Copy + Eq + std::hash::Hash, H: Copy + Eq> ServerEndpoint<S, H> {
    /// The frame kinds handshake `h` reads next (none: it reads no frame).
    pub fn expected(&self, h: H) -> &'static [FrameKind] {
        match self.phase(h) {
            Some(Phase::Hello | Phase::Sniff { .. }) => &[FrameKind::Hello, FrameKind::Control],
            Some(Phase::Confirm(_)) => &[FrameKind::Confirm],
            _ => &[],
        }
    }

    /// Handshake `h` read a whole frame of kind `kind` from `client`. `welcome` says
    /// whether new sessions are (the `RServerSocket` still exists).
    #[allow(clippy::too_many_arguments)]
    pub fn on_frame(
        &mut self,
        h: H,
        kind: FrameKind,
        body: &[u8],
        client: IpAddr,
        welcome: bool,
        host: &mut impl Host<S>,
        now: Instant,
    ) -> Action<S> {
        match self.phase(h) {
            Some(Phase::Hello | Phase::Sniff { .. }) => match kind {
                // A control connection for a session of another listener (a balancer
                // that routed it wrong) would carry nothing it could authenticate: the
                // client is told at once.
                FrameKind::Control => match Control::parse(body) {
                    Ok(c) if self.sessions.contains_key(&c.cid) => self.end(h, Action::Control),
                    Ok(_) => self.end(h, Action::Refuse(RefusalCode::UnknownSession)),
                    Err(_) => self.turn_away(h),
                },
                FrameKind::Hello => match Hello::parse(body) {
                    Ok(hello) => self.hello(h, hello, client, welcome, host, now),
                    Err(_) => self.turn_away(h),
                },
                _ => self.turn_away(h),
            },
            Some(Phase::Confirm(_)) => self.confirm(h, kind, body, host),
            _ => self.handshake_failed(h),
        }
    }

    /// Handshake `h` read bytes that are no robust-tcp frame.
    pub fn on_garbage(&mut self, h: H) -> Action<S> {
        match self.phase(h) {
            Some(Phase::Hello | Phase::Sniff { .. }) => self.turn_away(h),
            _ => self.handshake_failed(h),
        }
    }

    /// A turned-away peer sent `n` more bytes (0: it hung up).
    pub fn on_drained(&mut self, h: H, n: usize) -> Action<S> {
        match self.phase_mut(h) {
            Some(Phase::TurningAway(drained)) if n > 0 && *drained + n <= TURN_AWAY_DRAIN => {
                *drained += n;
                Action::Wait
            }
            _ => self.end(h, Action::Close),
        }
    }

    /// Handshake `h` ended before completing: its deadline passed, its connection failed
    /// or ended, or a crowded listener dropped it. An answered resumption's offer failed.
    pub fn handshake_failed(&mut self, h: H) -> Action<S> {
        match self.take(h) {
            Some(Phase::Confirm(offer)) if !self.overtaken(&offer) => Action::OfferFailed {
                session: offer.session,
                epoch: offer.answer.epoch,
            },
            _ => Action::Close,
        }
    }

    /// Whether `offer` was overtaken by a later attempt of its session, which proved
    /// itself since, or its session ended: its CONFIRM would install nothing
    /// ([`confirmed`](Self::confirmed)),
    /// so it holds a handshake slot for nothing, and its end tells the session nothing
    /// (a RECONNECT for it would only replace the one for the newest offer that failed,
    /// which is the one its client may need: see `Session::ask_to_reconnect`).
    fn overtaken(&self, offer: &Offer<S>) -> bool {
        !self.confirmed(offer.cid, offer.hello.attempt)
    }

    /// Whether handshake `phase` is an answered offer that a later attempt overtook.
    pub(super) fn holds_an_overtaken_offer(&self, phase: &Phase<S>) -> bool {
        matches!(phase, Phase::Confirm(offer) if self.overtaken(offer))
    }

    /// The engine aborted the session's live connection and passed the barrier: the
    /// count is checked exactly now that no write in flight can move it, and the signed
    /// ANSWER made.
    pub fn after_barrier(&mut self, h: H, host: &mut impl Host<S>) -> Action<S> {
        let Some(&Phase::Barrier {
            session,
            cid,
            ref hello,
        }) = self.phase(h)
        else {
            return self.handshake_failed(h);
        };
        let hello = **hello;
        let counts = host.with_session(session, |s| {
            s.check_resume(hello.received)
                .map(|peer| (peer, to_wire(s.received())))
        });
        let (peer_received, received) = match counts {
            None => return self.end(h, Action::Refuse(RefusalCode::UnknownSession)),
            // Only the client, which holds the key, can send such a count, and an honest
            // one does not.
            Some(None) => return self.end(h, Action::Refuse(RefusalCode::BadRequest)),
            Some(Some(counts)) => counts,
        };
        let mut server_nonce = [0; NONCE_LEN];
        let port = host.control_port();
        let (true, Some(keys)) = (host.random(&mut server_nonce), host.handshake_keys(session))
        else {
            return self.end(h, Action::Close);
        };
        let answer = Accepted::accepting(
            &hello,
            cid,
            false,
            port,
            received,
            server_nonce,
            &keys.server,
        )
        .announcing(self.limits.announce, &hello, &keys.server);
        // Nothing is resent before the client proves, with its CONFIRM, that it is the
        // one that sent this HELLO now, not someone replaying it.
        self.set_phase(
            h,
            Phase::Confirm(Box::new(Offer {
                session,
                cid,
                hello,
                answer,
                peer_received,
            })),
        );
        Action::Answer(Box::new(answer))
    }

    /// A HELLO: what the listener decides for it.
    fn hello(
        &mut self,
        h: H,
        hello: Hello,
        client: IpAddr,
        welcome: bool,
        host: &mut impl Host<S>,
        now: Instant,
    ) -> Action<S> {
        let draws = if hello.is_opening() {
            match Draws::from(host, self.limits.instance_id) {
                Some(draws) => Some(draws),
                None => return self.end(h, Action::Refuse(RefusalCode::TooManySessions)),
            }
        } else {
            None
        };
        let verdict = self.on_hello(
            &hello,
            client,
            welcome,
            now,
            draws.as_ref().map(|d| &d.ephemeral),
            |s, hello| {
                host.handshake_keys(s)
                    .is_some_and(|k| hello.verify(&k.client))
            },
            |s| host.presence(s, now),
        );
        match (verdict, draws) {
            (Verdict::Refuse(code), _) => self.end(h, Action::Refuse(code)),
            (
                Verdict::Open {
                    keys,
                    agreement,
                    evict,
                },
                Some(d),
            ) => {
                let key = &keys.handshake.server;
                let port = host.control_port();
                let mut answer =
                    Accepted::accepting(&hello, d.cid, true, port, 0, d.server_nonce, key);
                if let Some(part) = agreement {
                    answer = answer.agreed(part, &hello, key);
                }
                answer = answer.announcing(self.limits.announce, &hello, key);
                let opening = Opening {
                    cid: d.cid,
                    keys: *keys,
                    agreement,
                    answer,
                    challenge_key: d.challenge_key,
                    hello,
                    evict,
                };
                self.end(h, Action::Open(Box::new(opening)))
            }
            (Verdict::Resume(session), _) => self.resume(h, session, hello, host),
            (
                Verdict::Known {
                    session,
                    cid,
                    agreement,
                },
                Some(d),
            ) => {
                let Some(keys) = host.handshake_keys(session) else {
                    return self.end(h, Action::Refuse(RefusalCode::UnknownSession));
                };
                let port = host.control_port();
                let key = &keys.server;
                let answer = Accepted::known(&hello, cid, port, d.server_nonce, agreement, key)
                    .announcing(self.limits.announce, &hello, key);
                self.end(h, Action::Known(Box::new(answer)))
            }
            // The endpoint opens or knows only for an opening HELLO, which got its draws.
            (Verdict::Open { .. } | Verdict::Known { .. }, None) => self.end(h, Action::Close),
        }
    }

    /// A resumption whose HELLO proved itself: its count is checked loosely before the
    /// live connection is touched (a count outside what was ever written leaves it alone).
    fn resume(&mut self, h: H, session: S, hello: Hello, host: &mut impl Host<S>) -> Action<S> {
        let cid = if hello.is_opening() {
            self.by_opening.get(&hello.opening_nonce).copied()
        } else {
            Some(hello.cid)
        };
        let named = !hello.is_opening();
        let loose = host.with_session(session, |s| {
            if named {
                s.handle_cid_named();
            }
            s.may_resume(hello.received)
        });
        match (loose, cid) {
            (Some(true), Some(cid)) => {
                let hello = Box::new(hello);
                self.set_phase(
                    h,
                    Phase::Barrier {
                        session,
                        cid,
                        hello,
                    },
                );
                Action::Barrier(session)
            }
            (Some(false), _) => self.end(h, Action::Refuse(RefusalCode::BadRequest)),
            _ => self.end(h, Action::Refuse(RefusalCode::UnknownSession)),
        }
    }

    /// The CONFIRM of an answered resumption: the connection is installed if it verifies
    /// and no later attempt has proved itself meanwhile (then it is closed, whatever it
    /// is).
    fn confirm(
        &mut self,
        h: H,
        kind: FrameKind,
        body: &[u8],
        host: &mut impl Host<S>,
    ) -> Action<S> {
        let Some(Phase::Confirm(offer)) = self.take(h) else {
            return Action::Close;
        };
        if self.overtaken(&offer) {
            return Action::Close;
        }
        let proven = kind == FrameKind::Confirm
            && host.handshake_keys(offer.session).is_some_and(|k| {
                Confirm::parse(body).is_ok_and(|c| c.verify(&offer.hello, &offer.answer, &k.client))
            });
        if !proven {
            return Action::OfferFailed {
                session: offer.session,
                epoch: offer.answer.epoch,
            };
        }
        Action::Install {
            session: offer.session,
            epoch: offer.answer.epoch,
            peer_received: offer.peer_received,
        }
    }

    /// Tells the peer it does not speak robust-tcp, then drains it.
    fn turn_away(&mut self, h: H) -> Action<S> {
        self.set_phase(h, Phase::TurningAway(0));
        Action::TurnAway
    }

    /// Ends handshake `h` with `action`.
    pub(super) fn end(&mut self, h: H, action: Action<S>) -> Action<S> {
        self.handshake_ended(h);
        action
    }
}

#[cfg(test)]
mod tests;
