//! The engine's one timer structure: a heap of deadlines keyed by the token of what is due.
//!
//! Deletion is lazy: rescheduling pushes a new entry and leaves the old one in the heap;
//! the owner of a token keeps its current deadline, and a popped entry that no longer
//! matches it is ignored (see [`Engine::on_timer`](super::Engine)). The heap holds at most
//! a few entries per token, since an old entry leaves it when its time comes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use mio::Token;

/// Deadlines of sessions, handshakes and paused listeners.
#[derive(Debug, Default)]
pub(crate) struct TimerQueue {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl TimerQueue {
    /// Remembers that `token` is due at `at`.
    pub(crate) fn schedule(&mut self, token: Token, at: Instant) {
        self.heap.push(Reverse((at, token.0)));
    }

    /// The earliest deadline, if any.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the next entry due at or before `now`, with the deadline it was scheduled for.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Token, Instant)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => {
                let Reverse((at, token)) = self.heap.pop()?;
                Some((Token(token), at))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut q = TimerQueue::default();
        q.schedule(Token(1), t0 + Duration::from_millis(30));
        q.schedule(Token(2), t0 + Duration::from_millis(10));
        q.schedule(Token(3), t0 + Duration::from_millis(20));
        assert_eq!(q.next(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(q.pop_due(t0), None);
        let due: Vec<usize> = std::iter::from_fn(|| q.pop_due(t0 + Duration::from_millis(25)))
            .map(|(t, _)| t.0)
            .collect();
        assert_eq!(due, [2, 3]);
        assert_eq!(
            q.pop_due(t0 + Duration::from_secs(1)).map(|(t, _)| t.0),
            Some(1)
        );
        assert_eq!(q.next(), None);
    }
}
