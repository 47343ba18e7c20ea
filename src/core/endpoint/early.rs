//! What each end remembers for the EARLY datagram (`core::early`): a client, the control
//! address each server's last ANSWER named, so that its next opening of that server can
//! send one; a server, the EARLY datagrams that arrived before the HELLO they name was
//! read, so that the session opened from it still gets its client's address. Both are
//! bounded whatever peers do: a full one forgets its oldest entry, which costs only the
//! round trip the datagram would have saved.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use super::held::Held;
use crate::core::auth::Nonce;

/// How many servers a client remembers the control address of.
pub const MEMO_SERVERS: usize = 256;

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

/// A server's EARLY datagrams that came before the HELLO they name was read: the source
/// and length of each, by opening nonce (a short queue: `core::endpoint::held`).
#[derive(Debug, Default)]
pub struct Unclaimed {
    held: Held<Nonce, (SocketAddr, usize)>,
}

impl Unclaimed {
    /// Keeps an EARLY datagram of `len` bytes from `from`, naming `opening_nonce`, that
    /// arrived at `now` and found no session. A later one for the same opening replaces
    /// it (on its own, it proves no more than the first).
    pub fn keep(&mut self, opening_nonce: Nonce, from: SocketAddr, len: usize, now: Instant) {
        self.held.forget(&opening_nonce);
        self.held.keep(opening_nonce, (from, len), now);
    }

    /// The source and length of the EARLY datagram naming `opening_nonce`, for the session
    /// just opened from it, if one came within [`HELD_LIFE`](crate::protocol::endpoint::HELD_LIFE) of
    /// `now`.
    pub fn claim(&mut self, opening_nonce: &Nonce, now: Instant) -> Option<(SocketAddr, usize)> {
        self.held.take(opening_nonce, now).pop()
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
            unclaimed.claim(&[2; 16], t0 + crate::core::endpoint::held::HELD_LIFE),
            None,
            "too late"
        );
        assert_eq!(unclaimed.held.len(), 0);
        // A second datagram for one opening replaces the first.
        unclaimed.keep([1; 16], addr(1), 40, t0);
        unclaimed.keep([1; 16], addr(5), 40, t0);
        assert_eq!(unclaimed.held.len(), 1);
        assert_eq!(unclaimed.claim(&[1; 16], t0), Some((addr(5), 40)));
    }
}
