//! Maps keyed by the engine's own tokens, with a hash that costs one multiplication.
//!
//! A token is a number the engine hands out from a counter, never anything a peer
//! chooses, so its maps need no defence against chosen collisions: std's SipHash cost
//! each lookup about 150 instructions, some 60 lookups per loopback CRR transaction
//! (callgrind, `docs/PERFORMANCE.md`). Maps keyed by what peers send (routes by
//! connection id, addresses, opening nonces) keep std's keyed hasher.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use mio::Token;

/// A map keyed by the engine's tokens.
pub(crate) type TokenMap<V> = HashMap<Token, V, BuildHasherDefault<TokenHasher>>;

/// Multiplicative (Fibonacci) hashing: an odd multiplier keeps consecutive tokens apart
/// in the low bits, which pick the bucket, and spreads them into the high bits, which the
/// table's control bytes take.
#[derive(Default)]
pub(crate) struct TokenHasher(u64);

/// 2^64 divided by the golden ratio, odd.
const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for TokenHasher {
    fn write(&mut self, bytes: &[u8]) {
        // A token hashes as one `usize` (below); this serves any other shape of key.
        for &byte in bytes {
            self.write_usize(usize::from(byte));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0.rotate_left(5) ^ n as u64).wrapping_mul(MULTIPLIER);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_again_and_spread_over_buckets_and_control_bytes() {
        let mut map = TokenMap::default();
        for n in 0..10_000 {
            map.insert(Token(n), n);
        }
        assert!((0..10_000).all(|n| map.get(&Token(n)) == Some(&n)));
        assert_eq!(map.remove(&Token(77)), Some(77));
        assert_eq!(map.get(&Token(77)), None);
        let hash = |n: usize| {
            let mut h = TokenHasher::default();
            h.write_usize(n);
            h.finish()
        };
        // Consecutive tokens: distinct low bits (buckets) and varied top 7 bits.
        let low: std::collections::HashSet<u64> = (0..1024).map(|n| hash(n) & 1023).collect();
        assert_eq!(low.len(), 1024);
        let top: std::collections::HashSet<u64> = (0..1024).map(|n| hash(n) >> 57).collect();
        assert!(top.len() > 100, "{}", top.len());
    }
}
