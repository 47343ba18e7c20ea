//! What each end remembers for the EARLY datagram (`core::early`): a client, the control
//! address each server's last ANSWER named, so that its next opening of that server can
//! send one; a server, the EARLY datagrams that arrived before the HELLO they name was
//! read, so that the session opened from it still gets its client's address. Both are
//! bounded whatever peers do: a full one forgets its oldest entry, which costs only the
//! round trip the datagram would have saved.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::core::auth::Nonce;

/// How many servers a client remembers the control address of.
pub const MEMO_SERVERS: usize = 256;

/// How many unclaimed EARLY datagrams a server keeps.
pub const UNCLAIMED_KEPT: usize = 64;

/// How long a server keeps an unclaimed EARLY datagram: its HELLO was sent just before it,
/// on a TCP connection already up, so it is read within a round trip unless lost (and a
/// retried opening is answered with the same session, which the datagram no longer needs).
pub const UNCLAIMED_LIFE: Duration = Duration::from_secs(2);

/// A client's memo: the control address each server (by the address its TCP connections
/// go to) named in its last accepting ANSWER.
#[derive(Debug, Default)]
pub struct ControlMemo {
    /// Oldest first; at most [`MEMO_SERVERS`], one per server.
    entries: VecDeque<(SocketAddr, SocketAddr)>,
}

impl ControlMemo {
    /// Where the server at `server` took datagrams last time, if this client knows.
    pub fn get(&self, server: SocketAddr) -> Option<SocketAddr> {
        let entry = self.entries.iter().find(|(s, _)| *s == server);
        entry.map(|&(_, control)| control)
    }

    /// The server at `server` named `control` in an ANSWER that opened a session.
    pub fn learned(&mut self, server: SocketAddr, control: SocketAddr) {
        self.entries.retain(|(s, _)| *s != server);
        if self.entries.len() >= MEMO_SERVERS {
            self.entries.pop_front();
        }
        self.entries.push_back((server, control));
    }
}

/// An EARLY datagram no session claimed yet.
#[derive(Clone, Copy, Debug)]
struct Early {
    opening_nonce: Nonce,
    from: SocketAddr,
    len: usize,
    arrived: Instant,
}

/// A server's EARLY datagrams that came before the HELLO they name was read.
#[derive(Debug, Default)]
pub struct Unclaimed {
    /// Oldest first; at most [`UNCLAIMED_KEPT`].
    queue: VecDeque<Early>,
}

impl Unclaimed {
    /// Keeps an EARLY datagram of `len` bytes from `from`, naming `opening_nonce`, that
    /// arrived at `now` and found no session. A later one for the same opening replaces
    /// it (on its own, it proves no more than the first).
    pub fn keep(&mut self, opening_nonce: Nonce, from: SocketAddr, len: usize, now: Instant) {
        self.expire(now);
        self.queue.retain(|e| e.opening_nonce != opening_nonce);
        if self.queue.len() >= UNCLAIMED_KEPT {
            self.queue.pop_front();
        }
        self.queue.push_back(Early {
            opening_nonce,
            from,
            len,
            arrived: now,
        });
    }

    /// The source and length of the EARLY datagram naming `opening_nonce`, for the session
    /// just opened from it, if one came within [`UNCLAIMED_LIFE`] of `now`.
    pub fn claim(&mut self, opening_nonce: &Nonce, now: Instant) -> Option<(SocketAddr, usize)> {
        self.expire(now);
        let at = self
            .queue
            .iter()
            .position(|e| e.opening_nonce == *opening_nonce)?;
        self.queue.remove(at).map(|e| (e.from, e.len))
    }

    fn expire(&mut self, now: Instant) {
        while self
            .queue
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.arrived) >= UNCLAIMED_LIFE)
        {
            self.queue.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn a_memo_keeps_each_servers_latest_address_and_forgets_the_oldest_server() {
        let mut memo = ControlMemo::default();
        assert_eq!(memo.get(addr(1)), None);
        memo.learned(addr(1), addr(1001));
        memo.learned(addr(1), addr(2001));
        assert_eq!(memo.get(addr(1)), Some(addr(2001)), "the latest");
        for port in 2..=u16::try_from(MEMO_SERVERS).expect("small") {
            memo.learned(addr(port), addr(port + 1000));
        }
        assert_eq!(memo.get(addr(1)), Some(addr(2001)), "full, not past it");
        memo.learned(addr(999), addr(1999));
        assert_eq!(memo.get(addr(1)), None, "the oldest went");
        assert_eq!(memo.get(addr(2)), Some(addr(1002)));
        assert_eq!(memo.entries.len(), MEMO_SERVERS);
    }

    #[test]
    fn an_unclaimed_datagram_is_claimed_once_within_its_life() {
        let t0 = Instant::now();
        let mut unclaimed = Unclaimed::default();
        unclaimed.keep([1; 16], addr(1), 40, t0);
        unclaimed.keep([2; 16], addr(2), 40, t0);
        assert_eq!(unclaimed.claim(&[3; 16], t0), None);
        assert_eq!(unclaimed.claim(&[1; 16], t0), Some((addr(1), 40)));
        assert_eq!(unclaimed.claim(&[1; 16], t0), None, "once");
        assert_eq!(
            unclaimed.claim(&[2; 16], t0 + UNCLAIMED_LIFE),
            None,
            "too late"
        );
        assert!(unclaimed.queue.is_empty());
        // A second datagram for one opening replaces the first.
        unclaimed.keep([1; 16], addr(1), 40, t0);
        unclaimed.keep([1; 16], addr(5), 40, t0);
        assert_eq!(unclaimed.queue.len(), 1);
        assert_eq!(unclaimed.claim(&[1; 16], t0), Some((addr(5), 40)));
    }

    #[test]
    fn a_flood_of_unclaimed_datagrams_keeps_only_the_newest() {
        let t0 = Instant::now();
        let mut unclaimed = Unclaimed::default();
        for i in 0..1000u16 {
            let mut nonce = [0; 16];
            nonce[..2].copy_from_slice(&i.to_be_bytes());
            unclaimed.keep(nonce, addr(i), 40, t0);
            assert!(unclaimed.queue.len() <= UNCLAIMED_KEPT);
        }
        let mut newest = [0; 16];
        newest[..2].copy_from_slice(&999u16.to_be_bytes());
        assert_eq!(unclaimed.claim(&newest, t0), Some((addr(999), 40)));
        assert_eq!(
            unclaimed.claim(&[0; 16], t0),
            None,
            "the first went long ago"
        );
    }
}
