//! What arrived before the one it is for was known, kept a short while: a server's EARLY
//! datagrams that came before the HELLO they name was read ([`Unclaimed`](super::early::Unclaimed)),
//! and a client's control datagrams that came before the ANSWER that gives their session
//! its CID ([`Unrouted`]). Both races are of a round trip at most, so both queues are
//! short and their entries short-lived; whatever peers send, they hold a bounded number,
//! and a full one forgets its oldest entry, which costs only what the entry would have
//! saved (a round trip, or a retransmission).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::core::control::MAX_LEN;

/// How many entries a queue keeps.
pub const HELD_KEPT: usize = 64;

/// How long an entry is kept: the one it is for comes within a round trip unless a
/// packet is lost, and then the retransmission does what the entry would have done.
pub const HELD_LIFE: Duration = Duration::from_secs(2);

/// A bounded queue of values by key, oldest first, each kept for [`HELD_LIFE`].
#[derive(Debug)]
pub(super) struct Held<K, V> {
    queue: VecDeque<(K, V, Instant)>,
}

impl<K, V> Default for Held<K, V> {
    fn default() -> Self {
        Held {
            queue: VecDeque::new(),
        }
    }
}

impl<K: PartialEq, V> Held<K, V> {
    /// Keeps `value` for `key`, arrived at `now`; past [`HELD_KEPT`], the oldest entry
    /// goes.
    pub(super) fn keep(&mut self, key: K, value: V, now: Instant) {
        self.expire(now);
        if self.queue.len() >= HELD_KEPT {
            self.queue.pop_front();
        }
        self.queue.push_back((key, value, now));
    }

    /// Takes every value kept for `key` within [`HELD_LIFE`] of `now`, oldest first.
    pub(super) fn take(&mut self, key: &K, now: Instant) -> Vec<V> {
        self.expire(now);
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for (k, v, at) in self.queue.drain(..) {
            if k == *key {
                taken.push(v);
            } else {
                kept.push_back((k, v, at));
            }
        }
        self.queue = kept;
        taken
    }

    /// Forgets what is kept for `key`.
    pub(super) fn forget(&mut self, key: &K) {
        self.queue.retain(|(k, _, _)| k != key);
    }

    /// How many entries are kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    fn expire(&mut self, now: Instant) {
        while self
            .queue
            .front()
            .is_some_and(|(_, _, at)| now.saturating_duration_since(*at) >= HELD_LIFE)
        {
            self.queue.pop_front();
        }
    }
}

/// A control datagram a client kept (see [`Unrouted`]).
#[derive(Clone, Copy, Debug)]
pub struct HeldDatagram {
    bytes: [u8; MAX_LEN],
    len: usize,
    /// Where it came from.
    pub from: SocketAddr,
}

impl HeldDatagram {
    /// The datagram.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

/// A client's control datagrams from servers that named a CID none of its sessions has.
/// A server sends its first datagrams as soon as it answers, so on a fast path they may
/// be read before the ANSWER that gives their session its CID; kept, they reach the
/// session once it has it, and the server need not send them again. Nothing is trusted:
/// the session authenticates each as it would have on arrival.
#[derive(Debug, Default)]
pub struct Unrouted {
    held: Held<u32, HeldDatagram>,
}

impl Unrouted {
    /// Keeps `datagram`, from `from` at `now`, which names CID `cid` that no session of
    /// this client has. One longer than any valid control datagram is not kept.
    pub fn keep(&mut self, cid: u32, datagram: &[u8], from: SocketAddr, now: Instant) {
        let mut bytes = [0; MAX_LEN];
        let Some(room) = bytes.get_mut(..datagram.len()) else {
            return;
        };
        room.copy_from_slice(datagram);
        let len = datagram.len();
        self.held.keep(cid, HeldDatagram { bytes, len, from }, now);
    }

    /// The datagrams for CID `cid`, which a session just learned, in the order they came.
    pub fn take(&mut self, cid: u32, now: Instant) -> Vec<HeldDatagram> {
        self.held.take(&cid, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn values_are_taken_by_key_in_order_once_within_their_life() {
        let t0 = Instant::now();
        let mut held = Held::default();
        held.keep(1, "a", t0);
        held.keep(2, "b", t0);
        held.keep(1, "c", t0 + Duration::from_secs(1));
        assert_eq!(held.take(&1, t0), ["a", "c"]);
        assert!(held.take(&1, t0).is_empty(), "once");
        assert!(held.take(&2, t0 + HELD_LIFE).is_empty(), "too late");
        assert_eq!(held.len(), 0);
        held.keep(3, "d", t0);
        held.forget(&3);
        assert!(held.take(&3, t0).is_empty());
    }

    #[test]
    fn a_flood_keeps_only_the_newest() {
        let t0 = Instant::now();
        let mut held = Held::default();
        for i in 0..1000u32 {
            held.keep(i, i, t0);
            assert!(held.len() <= HELD_KEPT);
        }
        assert_eq!(held.take(&999, t0), [999]);
        assert!(held.take(&0, t0).is_empty(), "the first went long ago");
    }

    #[test]
    fn a_client_keeps_datagrams_whole_and_refuses_overlong_ones() {
        let t0 = Instant::now();
        let mut unrouted = Unrouted::default();
        unrouted.keep(7, &[1; 36], addr(1), t0);
        unrouted.keep(7, &[2; MAX_LEN + 1], addr(1), t0);
        unrouted.keep(8, &[3; 32], addr(2), t0);
        let taken = unrouted.take(7, t0);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken.first().map(HeldDatagram::bytes), Some(&[1; 36][..]));
        assert_eq!(taken.first().map(|d| d.from), Some(addr(1)));
        assert!(unrouted.take(7, t0).is_empty());
        assert_eq!(unrouted.take(8, t0).len(), 1);
    }
}
