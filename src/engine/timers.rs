//! The engine's one timer structure: the next deadline of each session, handshake and
//! paused listener, keyed by its token.
//!
//! Each token has at most one deadline; setting a new one replaces the old, so the
//! structure holds exactly one entry per owner with a deadline, whatever the number of
//! reschedules (a session's deadline moves with every retransmission and backoff).

use std::collections::BTreeSet;
use std::time::Instant;

use mio::Token;

use super::token_map::TokenMap;

/// Deadlines of sessions, handshakes and paused listeners.
#[derive(Debug, Default)]
pub(crate) struct TimerQueue {
    by_time: BTreeSet<(Instant, usize)>,
    by_token: TokenMap<Instant>,
}

impl TimerQueue {
    /// Sets `token`'s deadline to `at`, replacing any earlier setting; `None` clears it.
    pub(crate) fn set(&mut self, token: Token, at: Option<Instant>) {
        let old = match at {
            Some(at) => self.by_token.insert(token, at),
            None => self.by_token.remove(&token),
        };
        if old == at {
            return;
        }
        if let Some(old) = old {
            self.by_time.remove(&(old, token.0));
        }
        if let Some(at) = at {
            self.by_time.insert((at, token.0));
        }
    }

    /// The earliest deadline, if any.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|&(at, _)| at)
    }

    /// Takes the token whose deadline is earliest, if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Token> {
        let &(at, token) = self.by_time.first().filter(|&&(at, _)| at <= now)?;
        self.by_time.remove(&(at, token));
        self.by_token.remove(&Token(token));
        Some(Token(token))
    }

    /// How many deadlines are set.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_time.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut q = TimerQueue::default();
        q.set(Token(1), Some(ms(30)));
        q.set(Token(2), Some(ms(10)));
        q.set(Token(3), Some(ms(20)));
        assert_eq!(q.next(), Some(ms(10)));
        assert_eq!(q.pop_due(t0), None);
        let due: Vec<usize> = std::iter::from_fn(|| q.pop_due(ms(25)))
            .map(|t| t.0)
            .collect();
        assert_eq!(due, [2, 3]);
        assert_eq!(q.pop_due(ms(1000)).map(|t| t.0), Some(1));
        assert_eq!(q.next(), None);
    }

    #[test]
    fn one_entry_per_token_however_often_it_moves() {
        let t0 = Instant::now();
        let mut q = TimerQueue::default();
        for n in 0..1000u64 {
            // Back and forth between a near and a far deadline, as a reconnecting
            // session's backoff and give-up do.
            let at = if n % 2 == 0 { 5 } else { 3_600_000 };
            q.set(Token(7), Some(t0 + Duration::from_millis(at + n)));
        }
        assert_eq!(q.len(), 1);
        q.set(Token(7), None);
        assert_eq!(q.len(), 0);
        assert_eq!(q.next(), None);
    }
}
