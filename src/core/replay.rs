//! The sliding window that rejects replayed control datagrams.
//!
//! Each side numbers its datagrams 0, 1, 2, ... (the packet number, covered by the tag).
//! The receiver keeps the highest number it accepted and a bitmap of the [`WINDOW`]
//! numbers below it: a number already seen, or older than the window, is a replay (or
//! too late to matter) and is dropped. Datagrams overtaking each other within the window
//! are all accepted, once.

/// How far below the highest packet number a datagram is still accepted.
pub const WINDOW: u64 = 64;

/// Which packet numbers were accepted (see the module doc).
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplayWindow {
    /// The highest packet number accepted, if any.
    highest: Option<u64>,
    /// Bit `i` is set when `highest - i` was accepted (bit 0 is `highest` itself).
    seen: u64,
}

/// How a packet number fares against the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fresh {
    /// Never seen, and the highest so far.
    Newest,
    /// Never seen, within the window below the highest.
    Late,
    /// Seen already, or older than the window: drop it.
    Replayed,
}

impl ReplayWindow {
    /// Whether any packet number was accepted.
    pub fn any_accepted(&self) -> bool {
        self.highest.is_some()
    }

    /// How `pn` fares, without recording it (the datagram is not acted on yet).
    pub fn check(&self, pn: u64) -> Fresh {
        let Some(highest) = self.highest else {
            return Fresh::Newest;
        };
        if pn > highest {
            return Fresh::Newest;
        }
        let age = highest - pn;
        if age >= WINDOW || self.seen & (1 << age) != 0 {
            Fresh::Replayed
        } else {
            Fresh::Late
        }
    }

    /// Records `pn` as accepted; returns how it fared before.
    pub fn record(&mut self, pn: u64) -> Fresh {
        let fresh = self.check(pn);
        match self.highest {
            _ if fresh == Fresh::Replayed => {}
            Some(highest) if pn <= highest => self.seen |= 1 << (highest - pn),
            Some(highest) => {
                let shift = pn - highest;
                let kept = if shift >= WINDOW {
                    0
                } else {
                    self.seen << shift
                };
                self.seen = kept | 1;
                self.highest = Some(pn);
            }
            None => {
                self.seen = 1;
                self.highest = Some(pn);
            }
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn each_number_is_accepted_once() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.record(5), Fresh::Newest);
        assert_eq!(w.record(5), Fresh::Replayed);
        assert_eq!(w.record(3), Fresh::Late);
        assert_eq!(w.record(3), Fresh::Replayed);
        assert_eq!(w.record(6), Fresh::Newest);
        assert_eq!(w.record(4), Fresh::Late);
        assert_eq!(w.record(6 + WINDOW), Fresh::Newest);
        assert_eq!(w.record(6), Fresh::Replayed, "older than the window");
        assert_eq!(w.record(7), Fresh::Late);
        assert_eq!(w.record(u64::MAX), Fresh::Newest);
        assert_eq!(w.record(u64::MAX), Fresh::Replayed);
        assert_eq!(w.record(0), Fresh::Replayed);
    }

    proptest! {
        /// Whatever the order, the window accepts each number at most once, and accepts
        /// every number that is within the window of the highest when it arrives.
        #[test]
        fn matches_a_model(pns in proptest::collection::vec(0u64..300, 0..400)) {
            let mut w = ReplayWindow::default();
            let mut accepted = std::collections::HashSet::new();
            let mut highest: Option<u64> = None;
            for pn in pns {
                let fresh = w.record(pn);
                let model_ok = !accepted.contains(&pn)
                    && highest.is_none_or(|h| pn > h || h - pn < WINDOW);
                prop_assert_eq!(fresh != Fresh::Replayed, model_ok, "pn {}", pn);
                if model_ok {
                    accepted.insert(pn);
                    highest = Some(highest.map_or(pn, |h| h.max(pn)));
                }
            }
        }
    }
}
