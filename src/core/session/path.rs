//! The control path: where this end's datagrams go, and how a server follows a client
//! whose address changes (a NAT's new mapping, a new network) without being led astray.
//!
//! A client sends to the server's control address, which never changes. A server sends to
//! the address its client's datagrams come from, which it learns and follows from the
//! client's authentic datagrams alone. It does not believe a new address at once: a copy of
//! a genuine datagram, sent from elsewhere ahead of the original, is authentic too. When
//! the newest datagram comes from a new address, the server sends a `Challenge` there and
//! keeps sending everything else to the old address; only a `Response` carrying the
//! challenge, from the new address, moves it (as QUIC validates a path). To an address
//! that has not answered, it sends one challenge per datagram received from it, at most
//! one per [`CHALLENGE_INTERVAL`].
//!
//! Before any address has answered (a new session: the client's first datagram can only
//! follow the server's ANSWER), the server sends everything to the address of the client's
//! newest authentic datagram, within an anti-amplification allowance: [`AMPLIFICATION`]
//! times the bytes of authentic datagrams received from it, less what went there, challenges
//! included (QUIC's, RFC 9000 section 8.1). So the first round trips' CLOSE, ACKs and
//! REQ_ACKs go out at once instead of a validation later, and an address that never sent an
//! authentic datagram gets nothing, but for the source of the client's EARLY datagram
//! (`early`), while the server has heard nothing else: three times its bytes. Every address
//! that has not answered is held to its allowance, a challenged one too; the answer lifts
//! it.
//!
//! A challenge's value is 64 bits derived from a key of the server's own
//! ([`ChallengeKey`]), not from the session's keys: anyone may open a session and so hold
//! its keys, and could otherwise answer, from a victim's address, a challenge it never
//! received there, and have the server send the victim its datagrams.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::core::auth::ChallengeKey;
use crate::core::control::ControlKind;

/// The least time between two challenges to one candidate address.
const CHALLENGE_INTERVAL: Duration = Duration::from_millis(100);

/// How many bytes a server may send an address that has not answered a challenge, for each
/// byte of authentic datagrams received from it (RFC 9000 section 8.1).
pub(super) const AMPLIFICATION: u64 = 3;

/// Where this end's control datagrams go (see the module doc).
#[derive(Debug)]
pub(super) struct ControlPath {
    /// Where datagrams go: the server's control address on a client; on a server, the
    /// last client address that answered a challenge (none yet: see `candidate`).
    current: Option<SocketAddr>,
    /// A server follows its peer's address, checking each new one with challenges whose
    /// values come from this key; a client has none.
    challenges: Option<ChallengeKey>,
    /// A new address of the peer's, being checked.
    candidate: Option<Candidate>,
    /// The number of the next challenge: each candidate gets its own value.
    next_challenge: u64,
    /// A datagram had nowhere to go (no address, or no allowance left) since the peer was
    /// last reachable anew: its content must go again once it is (see `take_reopened`).
    starved: bool,
    /// The peer became reachable somewhere new: a first candidate, or a validated address.
    gained: bool,
}

/// An address the client's newest datagram came from, not yet proved to be the client's.
#[derive(Debug)]
struct Candidate {
    addr: SocketAddr,
    challenge: u64,
    /// When the first challenge went out: the answer times the path's round trip from
    /// there (a later challenge carries the same value, and the answer may be to the first).
    first_sent: Option<Instant>,
    /// When the last challenge went out.
    sent: Option<Instant>,
    /// A datagram came from it since: another challenge may go.
    due: bool,
    /// The bytes `addr` may still be sent: [`AMPLIFICATION`] times those of the authentic
    /// datagrams (and of the EARLY one) that came from it while it was the candidate, less
    /// those that went there.
    allowance: u64,
    /// Only an EARLY datagram came from it so far: it may not be the client's at all (an
    /// EARLY proves nothing), so what went there goes again if the client's first
    /// authentic datagram comes from elsewhere. (A client keeps the datagrams it reads
    /// before its ANSWER, `endpoint::held::Unrouted`: from the EARLY's address, nothing
    /// need go again.)
    early_only: bool,
}

impl Candidate {
    /// Takes `len` bytes from the allowance, if it has them.
    fn spend(&mut self, len: usize) -> bool {
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        match self.allowance.checked_sub(len) {
            Some(left) => {
                self.allowance = left;
                true
            }
            None => false,
        }
    }
}

impl ControlPath {
    /// A client's path: to the server's control address (none: the client sends nothing).
    pub(super) fn to_server(server: Option<SocketAddr>) -> Self {
        ControlPath::new(server, None)
    }

    /// A server's path: learned from the client's datagrams, each new address checked with
    /// challenges derived from `challenges`.
    pub(super) fn learned(challenges: ChallengeKey) -> Self {
        ControlPath::new(None, Some(challenges))
    }

    fn new(current: Option<SocketAddr>, challenges: Option<ChallengeKey>) -> Self {
        ControlPath {
            current,
            challenges,
            candidate: None,
            next_challenge: 0,
            starved: false,
            gained: false,
        }
    }

    /// The address that answered a challenge (a server), or the server's (a client).
    pub(super) fn current(&self) -> Option<SocketAddr> {
        self.current
    }

    /// An authentic datagram of `len` bytes that is not a replay came from `from`;
    /// `newest` if its packet number is the highest so far.
    pub(super) fn heard(&mut self, from: SocketAddr, len: usize, newest: bool) {
        if newest {
            self.newest_from(from);
        }
        if let Some(c) = self.candidate.as_mut().filter(|c| c.addr == from) {
            if c.early_only {
                // The client's address after all, and its allowance grows: what had no
                // allowance left goes again now.
                c.early_only = false;
                self.gained = true;
            }
        }
        self.heard_bytes(from, len);
    }

    /// `len` bytes came from `from`: if it is the candidate, its allowance grows.
    fn heard_bytes(&mut self, from: SocketAddr, len: usize) {
        if let Some(c) = self.candidate.as_mut().filter(|c| c.addr == from) {
            let len = u64::try_from(len).unwrap_or(u64::MAX);
            c.allowance = c
                .allowance
                .saturating_add(len.saturating_mul(AMPLIFICATION));
        }
    }

    /// The client's EARLY datagram of `len` bytes, naming this session's opening, came from
    /// `from`. It proves nothing (the opening nonce it carries travelled in clear), so it
    /// counts only while the server has heard nothing else (no address, no candidate):
    /// then `from` is the candidate, with the allowance of its bytes. The client's first
    /// authentic datagram brings the first challenge; from elsewhere, it replaces it.
    /// Returns whether it counted.
    pub(super) fn early(&mut self, from: SocketAddr, len: usize) -> bool {
        if self.challenges.is_none() || self.current.is_some() || self.candidate.is_some() {
            return false;
        }
        self.newest_from(from);
        if let Some(c) = self.candidate.as_mut() {
            // The first challenge waits for an authentic datagram: one sent now would
            // reach a client that cannot read it yet, and spend the allowance.
            c.due = false;
            c.early_only = true;
        }
        self.heard_bytes(from, len);
        true
    }

    /// The peer's newest authentic datagram came from `from`.
    fn newest_from(&mut self, from: SocketAddr) {
        let key = match &self.challenges {
            Some(key) if self.current != Some(from) => key,
            _ => {
                // A client, or back on the known path (a stray copy made the detour):
                // nothing to check.
                self.candidate = None;
                return;
            }
        };
        match &mut self.candidate {
            Some(c) if c.addr == from => c.due = true,
            previous => {
                // What went on an EARLY's word went to an address that was not the
                // client's: it goes again to this one.
                self.starved |= previous.as_ref().is_some_and(|c| c.early_only);
                let challenge = key.challenge(self.next_challenge);
                self.next_challenge = self.next_challenge.wrapping_add(1);
                self.candidate = Some(Candidate {
                    addr: from,
                    challenge,
                    first_sent: None,
                    sent: None,
                    due: true,
                    allowance: 0,
                    early_only: false,
                });
                // Without a validated address, datagrams go to the candidate now.
                self.gained |= self.current.is_none();
            }
        }
    }

    /// An authentic `Response(value)` came from `from` at `now`: if it answers the
    /// challenge sent there, `from` becomes the path. Returns whether it did, as the round
    /// trip since the first challenge.
    pub(super) fn response(
        &mut self,
        from: SocketAddr,
        value: u64,
        now: Instant,
    ) -> Option<Duration> {
        let c = self.candidate.as_ref()?;
        let first_sent = c.first_sent?;
        if c.addr != from || c.challenge != value {
            return None;
        }
        // A move: what went to the old address may have been lost there. (Without one,
        // everything went to this address, within its allowance.)
        self.starved |= self.current.is_some();
        self.current = Some(from);
        self.candidate = None;
        self.gained = true;
        Some(now.saturating_duration_since(first_sent))
    }

    /// Whether the peer became reachable where datagrams had nowhere to go before (once):
    /// what they said must go again.
    pub(super) fn take_reopened(&mut self) -> bool {
        let reopened = self.gained && self.starved;
        self.gained = false;
        self.starved &= !reopened;
        reopened
    }

    /// Where a datagram of `len` bytes goes now, if anywhere: the current address; before
    /// a server has one, the candidate, within its allowance (which it spends).
    pub(super) fn route(&mut self, len: usize) -> Option<SocketAddr> {
        let to = self.current.or_else(|| {
            let c = self.candidate.as_mut()?;
            c.spend(len).then_some(c.addr)
        });
        self.starved |= to.is_none();
        to
    }

    /// The challenge to send now, and where, if one is due (and within the allowance).
    pub(super) fn poll_challenge(&mut self, now: Instant) -> Option<(SocketAddr, u64)> {
        let c = self.candidate.as_mut()?;
        let rested = c
            .sent
            .is_none_or(|t| now.saturating_duration_since(t) >= CHALLENGE_INTERVAL);
        let len = ControlKind::Challenge(c.challenge).datagram_len();
        if !c.due || !rested || !c.spend(len) {
            return None;
        }
        c.due = false;
        c.sent = Some(now);
        c.first_sent.get_or_insert(now);
        Some((c.addr, c.challenge))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::auth::{SessionKeys, CHALLENGE_KEY_LEN, NONCE_LEN, SECRET_LEN};
    use crate::core::control::{ControlMessage, MAX_LEN};
    use crate::core::session::{testing, Role, Session};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    /// An authentic ACK, the newest so far, came from `from`.
    fn heard(path: &mut ControlPath, from: SocketAddr) {
        path.heard(from, ControlKind::Ack(0).datagram_len(), true);
    }

    fn learned() -> ControlPath {
        ControlPath::learned(ChallengeKey::new(&[3; CHALLENGE_KEY_LEN]))
    }

    #[test]
    fn a_server_moves_only_once_the_new_address_answers() {
        let t0 = Instant::now();
        let mut path = learned();
        assert_eq!(path.current(), None);
        heard(&mut path, addr(1));
        let (to, value) = path.poll_challenge(t0).expect("a challenge");
        assert_eq!(to, addr(1));
        assert_eq!(path.current(), None, "not before the answer");
        assert_eq!(path.response(addr(2), value, t0), None, "from elsewhere");
        assert_eq!(
            path.response(addr(1), value.wrapping_add(1), t0),
            None,
            "another value"
        );
        let t1 = t0 + Duration::from_millis(30);
        assert_eq!(
            path.response(addr(1), value, t1),
            Some(Duration::from_millis(30)),
            "the round trip"
        );
        assert_eq!(path.current(), Some(addr(1)));

        // A new address: challenged, while the old one stays in use.
        heard(&mut path, addr(9));
        let (to, second) = path.poll_challenge(t0).expect("a challenge");
        assert_eq!((to, path.current()), (addr(9), Some(addr(1))));
        assert_ne!(second, value);
        // The client shows up on the old path again: the check is dropped.
        heard(&mut path, addr(1));
        assert_eq!(path.response(addr(9), second, t0), None);
        assert_eq!(path.current(), Some(addr(1)));
    }

    #[test]
    fn the_round_trip_counts_from_the_first_challenge() {
        let t0 = Instant::now();
        let mut path = learned();
        heard(&mut path, addr(1));
        let (_, value) = path.poll_challenge(t0).expect("a challenge");
        // A path slower than the challenge interval: a second challenge, same value, goes
        // before the answer to the first arrives.
        heard(&mut path, addr(1));
        let again = path.poll_challenge(t0 + CHALLENGE_INTERVAL);
        assert_eq!(again, Some((addr(1), value)));
        let rtt = Duration::from_millis(150);
        assert_eq!(path.response(addr(1), value, t0 + rtt), Some(rtt));
    }

    #[test]
    fn challenges_never_outnumber_what_came_from_the_address() {
        let t0 = Instant::now();
        let mut path = learned();
        heard(&mut path, addr(1));
        assert!(path.poll_challenge(t0).is_some());
        // Nothing more came from it: nothing more goes, however long we wait.
        assert_eq!(path.poll_challenge(t0 + Duration::from_secs(5)), None);
        // Another datagram from it: one more challenge, but not within the interval.
        heard(&mut path, addr(1));
        assert_eq!(path.poll_challenge(t0 + Duration::from_millis(50)), None);
        assert!(path.poll_challenge(t0 + CHALLENGE_INTERVAL).is_some());
    }

    #[test]
    fn a_client_keeps_the_server_address() {
        let mut path = ControlPath::to_server(Some(addr(7)));
        heard(&mut path, addr(8));
        assert_eq!(path.poll_challenge(Instant::now()), None);
        assert_eq!(path.current(), Some(addr(7)));
    }

    const ACK: usize = 36;
    const CHALLENGE: usize = 40;

    /// Sends datagrams of `len` bytes while the path takes them; returns where they went.
    fn send_while_allowed(path: &mut ControlPath, len: usize) -> Vec<SocketAddr> {
        std::iter::from_fn(|| path.route(len)).take(1000).collect()
    }

    #[test]
    fn before_any_answer_a_server_sends_three_times_what_came_from_the_address() {
        let t0 = Instant::now();
        let mut path = learned();
        // Nothing to an address it never heard from.
        assert_eq!(path.route(ACK), None);
        assert_eq!(path.poll_challenge(t0), None);
        // One ACK (36 bytes): 108 bytes may go back, counted in bytes, the challenge's
        // too: 40 + 2 * 32 + 4 left, which no datagram fits.
        heard(&mut path, addr(1));
        assert_eq!(ACK, ControlKind::Ack(0).datagram_len());
        assert_eq!(path.poll_challenge(t0).map(|(to, _)| to), Some(addr(1)));
        assert_eq!(CHALLENGE, ControlKind::Challenge(0).datagram_len());
        assert_eq!(send_while_allowed(&mut path, 32), [addr(1); 2]);
        assert_eq!(path.route(4), Some(addr(1)));
        assert_eq!(path.route(1), None, "never past the allowance");
        // A datagram from it that is not the newest still counts, for it alone.
        path.heard(addr(1), 40, false);
        assert_eq!(send_while_allowed(&mut path, 40), [addr(1); 3]);
        path.heard(addr(2), 40, false);
        assert_eq!(path.route(1), None, "addr(2) is no candidate");
    }

    #[test]
    fn an_early_datagram_earns_its_allowance_until_the_client_speaks() {
        let t0 = Instant::now();
        let mut path = learned();
        assert!(path.early(addr(1), 40));
        assert!(!path.take_reopened(), "nothing had nowhere to go");
        assert_eq!(
            path.poll_challenge(t0),
            None,
            "no challenge before the client speaks"
        );
        assert_eq!(send_while_allowed(&mut path, 40), [addr(1); 3]);
        // A second one proves no more: nothing more goes.
        assert!(!path.early(addr(1), 40));
        assert!(!path.early(addr(2), 40));
        assert_eq!(path.route(1), None);
        // The client's first authentic datagram, from there: its allowance and the
        // challenge, as if the EARLY had not come; and what had no allowance left goes
        // again (what went is not: the client keeps what it reads before its ANSWER).
        assert!(!path.take_reopened());
        heard(&mut path, addr(1));
        assert!(path.take_reopened());
        assert_eq!(path.poll_challenge(t0).map(|(to, _)| to), Some(addr(1)));
        assert!(!path.take_reopened(), "once");
        // Within the allowance, nothing had nowhere to go: nothing goes again.
        let mut path = learned();
        path.early(addr(1), 40);
        assert_eq!(path.route(40), Some(addr(1)));
        assert_eq!(path.route(36), Some(addr(1)));
        heard(&mut path, addr(1));
        assert!(!path.take_reopened());
        // From elsewhere instead (the EARLY was a copy sent ahead): that address wins, and
        // what went on the EARLY's word goes again, there.
        let mut path = learned();
        path.early(addr(1), 40);
        assert!(!path.take_reopened());
        assert_eq!(send_while_allowed(&mut path, 40), [addr(1); 3]);
        heard(&mut path, addr(2));
        assert!(path.take_reopened());
        assert_eq!(path.poll_challenge(t0).map(|(to, _)| to), Some(addr(2)));
        assert_eq!(send_while_allowed(&mut path, 32), [addr(2); 2]);
        // Once the server heard from its client, an EARLY changes nothing.
        assert!(!path.early(addr(3), 40));
        assert_eq!(path.route(1), Some(addr(2)));
        // A client's path ignores it.
        let mut path = ControlPath::to_server(None);
        assert!(!path.early(addr(1), 40));
        assert_eq!(path.route(1), None);
    }

    #[test]
    fn the_allowance_is_per_address_and_ends_with_the_answer() {
        let t0 = Instant::now();
        let mut path = learned();
        heard(&mut path, addr(1));
        assert_eq!(send_while_allowed(&mut path, ACK), [addr(1); 3]);
        // A copy from elsewhere is the newest: that address gets its own allowance, and
        // addr(1) nothing more until it sends again.
        heard(&mut path, addr(2));
        assert_eq!(send_while_allowed(&mut path, ACK), [addr(2); 3]);
        heard(&mut path, addr(1));
        let (to, value) = path.poll_challenge(t0).expect("a challenge");
        assert_eq!(to, addr(1));
        assert_eq!(send_while_allowed(&mut path, 32), [addr(1); 2]);
        // The answer lifts the limit: the address is the client's.
        assert!(path.response(addr(1), value, t0).is_some());
        assert_eq!(send_while_allowed(&mut path, ACK), [addr(1); 1000]);
        // A new address now gets only its challenges, within its own allowance.
        path.heard(addr(3), 13, true);
        assert_eq!(path.poll_challenge(t0), None, "39 bytes: no room for 40");
        assert_eq!(path.route(ACK), Some(addr(1)));
        path.heard(addr(3), 1, false);
        assert_eq!(path.poll_challenge(t0).map(|(to, _)| to), Some(addr(3)));
    }

    #[test]
    fn what_had_nowhere_to_go_goes_again_once_there_is_somewhere() {
        let t0 = Instant::now();
        let mut path = learned();
        assert!(!path.take_reopened());
        assert_eq!(path.route(ACK), None);
        assert!(!path.take_reopened(), "still nowhere");
        heard(&mut path, addr(1));
        assert!(path.take_reopened(), "the first address heard from");
        assert!(!path.take_reopened(), "once");
        // Everything fit: the answer moves nothing that was lost.
        let (_, value) = path.poll_challenge(t0).expect("a challenge");
        assert!(path.response(addr(1), value, t0).is_some());
        assert!(!path.take_reopened());
        // Past the allowance, the answer brings back what was dropped.
        let mut path = learned();
        heard(&mut path, addr(1));
        assert!(!path.take_reopened(), "nothing was dropped");
        assert_eq!(send_while_allowed(&mut path, ACK), [addr(1); 3]);
        // The client's next datagram pays for the challenge.
        heard(&mut path, addr(1));
        let (_, value) = path.poll_challenge(t0).expect("a challenge");
        assert!(!path.take_reopened(), "no new address");
        assert!(path.response(addr(1), value, t0).is_some());
        assert!(path.take_reopened());
        // A move: what went to the old address may be lost there.
        heard(&mut path, addr(2));
        let (_, value) = path.poll_challenge(t0).expect("a challenge");
        assert!(!path.take_reopened(), "the datagrams still go to addr(1)");
        assert!(path.response(addr(2), value, t0).is_some());
        assert!(path.take_reopened());
    }

    /// The values of the first `n` challenges of a server path with key `key`.
    fn values(key: u8, n: u16) -> Vec<u64> {
        let mut path = ControlPath::learned(ChallengeKey::new(&[key; CHALLENGE_KEY_LEN]));
        let t0 = Instant::now();
        (0..n)
            .map(|port| {
                heard(&mut path, SocketAddr::from(([10, 0, 0, 1], port)));
                path.poll_challenge(t0).expect("a challenge").1
            })
            .collect()
    }

    #[test]
    fn challenges_come_from_the_servers_own_key() {
        let mine = values(1, 64);
        // Distinct, none a small counter an attacker would try first.
        let mut sorted = mine.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), mine.len());
        assert!(mine.iter().all(|&v| v > u64::from(u32::MAX)), "{mine:?}");
        // Another server session's challenges (another key) share none of them.
        let theirs = values(2, 64);
        assert!(mine.iter().all(|v| !theirs.contains(v)));
    }

    /// What `s` sends at `now`: where, the bytes, and what they say (read with the
    /// receiver's keys; the test sessions share their secret).
    fn drain(s: &mut Session, now: Instant) -> Vec<(SocketAddr, Vec<u8>, ControlKind)> {
        let receiver = match s.role() {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        };
        let keys = SessionKeys::derive(&[1; SECRET_LEN], &[2; NONCE_LEN], receiver).control;
        let mut out = [0; MAX_LEN];
        let mut sent = Vec::new();
        while let Some((n, to)) = s.poll_datagram(&mut out, now) {
            let bytes = out[..n].to_vec();
            let kind = ControlMessage::open(&bytes, &keys.recv)
                .expect("genuine")
                .1
                .kind;
            sent.push((to, bytes, kind));
        }
        sent
    }

    fn kinds(sent: &[(SocketAddr, Vec<u8>, ControlKind)]) -> Vec<ControlKind> {
        sent.iter().map(|(_, _, kind)| *kind).collect()
    }

    /// Hands every datagram of `sent` to `s`, as if from `from`.
    fn deliver(
        s: &mut Session,
        sent: &[(SocketAddr, Vec<u8>, ControlKind)],
        from: SocketAddr,
        now: Instant,
    ) {
        for (_, bytes, _) in sent {
            s.handle_datagram(bytes, from, now).expect("authentic");
        }
    }

    #[test]
    fn a_new_sessions_first_round_trips_go_out_at_once_within_the_allowance() {
        // Connect, request, reply, close, as a server sees it: the request read, the
        // reply written and the session closed before the client's first datagram, which
        // can only follow the ANSWER.
        let t0 = Instant::now();
        let client_addr = addr(4000);
        let server_addr = SocketAddr::from(([127, 0, 0, 1], 9000));
        let mut server = testing::session(Role::Server, 7, None, t0);
        let mut client = testing::session(Role::Client, 0, None, t0);
        server.handle_read(64, t0);
        assert_eq!(server.write(&[5; 8192], t0), 8192);
        server.handle_sent(0, 0, 8192, t0);
        server.close(t0);
        assert!(drain(&mut server, t0).is_empty(), "nowhere to go yet");
        // The client's first datagram: its ACK, once the ANSWER names the CID and the
        // server's control port.
        assert!(drain(&mut client, t0).is_empty());
        client.opened(7, server_addr, t0);
        let first = drain(&mut client, t0);
        assert_eq!(kinds(&first), [ControlKind::Ack(0)]);
        // What the first round trip needs goes back at once, to where the ACK came from,
        // within three times its bytes: the CLOSE, and the request for the reply's
        // acknowledgement (which also acknowledges the request).
        let t1 = t0 + Duration::from_millis(30);
        deliver(&mut server, &first, client_addr, t1);
        let back = drain(&mut server, t1);
        let close = ControlKind::Close(8192);
        let ask = ControlKind::ReqAck {
            received: 64,
            sent: 8192,
        };
        assert_eq!(kinds(&back), [close, ask]);
        assert!(back.iter().all(|(to, _, _)| *to == client_addr));
        let bytes: usize = back.iter().map(|(_, d, _)| d.len()).sum();
        assert!(bytes <= 3 * first[0].1.len(), "{bytes} bytes");
        assert_eq!(server.control_peer(), None, "not validated yet");
        // The client confirms and acknowledges; that pays for the challenge, which still
        // goes; its answer validates the address.
        let t2 = t1 + Duration::from_millis(30);
        client.handle_read(8192, t2);
        deliver(&mut client, &back, server_addr, t2);
        let answers = drain(&mut client, t2);
        assert!(kinds(&answers).contains(&ControlKind::Conf));
        assert!(kinds(&answers).contains(&ControlKind::Ack(8192)));
        deliver(&mut server, &answers, client_addr, t2);
        let challenge = drain(&mut server, t2);
        assert!(matches!(kinds(&challenge)[..], [ControlKind::Challenge(_)]));
        assert!(server.is_finished(), "the exchange is over for the server");
        deliver(&mut client, &challenge, server_addr, t2);
        let response = drain(&mut client, t2);
        deliver(&mut server, &response, client_addr, t2);
        assert_eq!(server.control_peer(), Some(client_addr));
        assert!(
            drain(&mut server, t2).is_empty(),
            "nothing was lost to resend"
        );
    }
}
