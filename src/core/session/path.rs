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
//! one per [`CHALLENGE_INTERVAL`]: never more than it received.
//!
//! A challenge's value is 64 bits derived from a key of the server's own
//! ([`ChallengeKey`]), not from the session's keys: anyone may open a session and so hold
//! its keys, and could otherwise answer, from a victim's address, a challenge it never
//! received there, and have the server send the victim its datagrams.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::core::auth::ChallengeKey;

/// The least time between two challenges to one candidate address.
const CHALLENGE_INTERVAL: Duration = Duration::from_millis(100);

/// Where this end's control datagrams go (see the module doc).
#[derive(Debug)]
pub(super) struct ControlPath {
    /// Where datagrams go: the server's control address on a client; on a server, the
    /// last client address that answered a challenge (none yet: nothing is sent).
    current: Option<SocketAddr>,
    /// A server follows its peer's address, checking each new one with challenges whose
    /// values come from this key; a client has none.
    challenges: Option<ChallengeKey>,
    /// A new address of the peer's, being checked.
    candidate: Option<Candidate>,
    /// The number of the next challenge: each candidate gets its own value.
    next_challenge: u64,
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
}

impl ControlPath {
    /// A client's path: to the server's control address (none: the client sends nothing).
    pub(super) fn to_server(server: Option<SocketAddr>) -> Self {
        ControlPath {
            current: server,
            challenges: None,
            candidate: None,
            next_challenge: 0,
        }
    }

    /// A server's path: learned from the client's datagrams, each new address checked with
    /// challenges derived from `challenges`.
    pub(super) fn learned(challenges: ChallengeKey) -> Self {
        ControlPath {
            current: None,
            challenges: Some(challenges),
            candidate: None,
            next_challenge: 0,
        }
    }

    /// Where datagrams go now, if anywhere.
    pub(super) fn current(&self) -> Option<SocketAddr> {
        self.current
    }

    /// The peer's newest authentic datagram came from `from`.
    pub(super) fn newest_from(&mut self, from: SocketAddr) {
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
            _ => {
                let challenge = key.challenge(self.next_challenge);
                self.next_challenge = self.next_challenge.wrapping_add(1);
                self.candidate = Some(Candidate {
                    addr: from,
                    challenge,
                    first_sent: None,
                    sent: None,
                    due: true,
                });
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
        self.current = Some(from);
        self.candidate = None;
        Some(now.saturating_duration_since(first_sent))
    }

    /// The challenge to send now, and where, if one is due.
    pub(super) fn poll_challenge(&mut self, now: Instant) -> Option<(SocketAddr, u64)> {
        let c = self.candidate.as_mut()?;
        let rested = c.sent.map_or(true, |t| {
            now.saturating_duration_since(t) >= CHALLENGE_INTERVAL
        });
        if !c.due || !rested {
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
    use crate::core::auth::CHALLENGE_KEY_LEN;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn learned() -> ControlPath {
        ControlPath::learned(ChallengeKey::new(&[3; CHALLENGE_KEY_LEN]))
    }

    #[test]
    fn a_server_moves_only_once_the_new_address_answers() {
        let t0 = Instant::now();
        let mut path = learned();
        assert_eq!(path.current(), None);
        path.newest_from(addr(1));
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
        path.newest_from(addr(9));
        let (to, second) = path.poll_challenge(t0).expect("a challenge");
        assert_eq!((to, path.current()), (addr(9), Some(addr(1))));
        assert_ne!(second, value);
        // The client shows up on the old path again: the check is dropped.
        path.newest_from(addr(1));
        assert_eq!(path.response(addr(9), second, t0), None);
        assert_eq!(path.current(), Some(addr(1)));
    }

    #[test]
    fn the_round_trip_counts_from_the_first_challenge() {
        let t0 = Instant::now();
        let mut path = learned();
        path.newest_from(addr(1));
        let (_, value) = path.poll_challenge(t0).expect("a challenge");
        // A path slower than the challenge interval: a second challenge, same value, goes
        // before the answer to the first arrives.
        path.newest_from(addr(1));
        let again = path.poll_challenge(t0 + CHALLENGE_INTERVAL);
        assert_eq!(again, Some((addr(1), value)));
        let rtt = Duration::from_millis(150);
        assert_eq!(path.response(addr(1), value, t0 + rtt), Some(rtt));
    }

    #[test]
    fn challenges_never_outnumber_what_came_from_the_address() {
        let t0 = Instant::now();
        let mut path = learned();
        path.newest_from(addr(1));
        assert!(path.poll_challenge(t0).is_some());
        // Nothing more came from it: nothing more goes, however long we wait.
        assert_eq!(path.poll_challenge(t0 + Duration::from_secs(5)), None);
        // Another datagram from it: one more challenge, but not within the interval.
        path.newest_from(addr(1));
        assert_eq!(path.poll_challenge(t0 + Duration::from_millis(50)), None);
        assert!(path.poll_challenge(t0 + CHALLENGE_INTERVAL).is_some());
    }

    #[test]
    fn a_client_keeps_the_server_address() {
        let mut path = ControlPath::to_server(Some(addr(7)));
        path.newest_from(addr(8));
        assert_eq!(path.poll_challenge(Instant::now()), None);
        assert_eq!(path.current(), Some(addr(7)));
    }

    /// The values of the first `n` challenges of a server path with key `key`.
    fn values(key: u8, n: u16) -> Vec<u64> {
        let mut path = ControlPath::learned(ChallengeKey::new(&[key; CHALLENGE_KEY_LEN]));
        let t0 = Instant::now();
        (0..n)
            .map(|port| {
                path.newest_from(SocketAddr::from(([10, 0, 0, 1], port)));
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
}
