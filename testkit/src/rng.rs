//! A tiny seeded pseudo-random generator, so that a failing run can be replayed from its
//! seed without pulling in the `rand` crate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The environment variable that fixes the seed of every proxy (and of [`fresh_seed`]), to
/// replay a failure: `ROBUST_TCP_SEED=1234 cargo test --test transfer`. Decimal or `0x` hex.
pub const SEED_ENV: &str = "ROBUST_TCP_SEED";

/// SplitMix64: a bijective mixer. It turns structured inputs (a seed, an index) into
/// well-spread 64-bit values, so nearby seeds still give unrelated streams.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xorshift64*: fast, small state, good enough to pick cut points and chunk sizes.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose whole sequence is a function of `seed`.
    pub fn new(seed: u64) -> Rng {
        // xorshift gets stuck on a zero state; splitmix64 maps exactly one input to zero,
        // so OR-ing in a bit keeps every seed usable.
        Rng(splitmix64(seed) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `lo..=hi` (the modulo bias is irrelevant at these ranges).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "empty range {lo}..={hi}");
        match (hi - lo).checked_add(1) {
            Some(span) => lo + self.next_u64() % span,
            None => self.next_u64(),
        }
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.range(0, 99) < u64::from(percent)
    }
}

/// The seed from [`SEED_ENV`], if set.
///
/// # Panics
///
/// If the variable is set but is not a number: silently ignoring a typo would make a
/// "replay" run a different test.
pub(crate) fn seed_from_env() -> Option<u64> {
    let text = std::env::var(SEED_ENV).ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{SEED_ENV}={text:?} is not a u64: {e}")))
}

/// A seed for one test: [`SEED_ENV`] if set, otherwise a new one per call (clock, process
/// id and a counter), so that repeated runs explore different cut points.
pub fn fresh_seed() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    if let Some(seed) = seed_from_env() {
        return seed;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    splitmix64(nanos ^ (u64::from(std::process::id()) << 32) ^ splitmix64(call))
}
