//! `accept`'s queue: the sessions a listener opened, from the engine thread to the
//! threads blocked in `RServerSocket::accept`.
//!
//! A mutex and a condition variable rather than a channel: a thread in `accept` waits a
//! connection's whole handshake or longer, so it should park at once. crossbeam's
//! channel spins and then yields before it parks (four `sched_yield` calls per `accept`
//! in a CRR profile), CPU spent for nothing on a server that accepts all day.
//!
//! What is queued is dropped, so each session closes, once no `RServerSocket` is left to
//! accept it; one sent after that is dropped at once.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::Arrival;

/// The two ends' shared state.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled for each arrival, and when the engine's end goes.
    ready: Condvar,
}

#[derive(Default)]
struct State {
    arrivals: VecDeque<Arrival>,
    /// The engine dropped its end (its listener): nothing more comes.
    engine_gone: bool,
    /// The `RServerSocket` dropped its end: nobody accepts any more.
    accepting_gone: bool,
}

/// Makes a queue: the engine's end and `accept`'s.
pub(crate) fn arrivals() -> (ArrivalSender, ArrivalQueue) {
    let shared = Arc::new(Shared::default());
    (ArrivalSender(Arc::clone(&shared)), ArrivalQueue(shared))
}

/// The engine's end.
pub(crate) struct ArrivalSender(Arc<Shared>);

impl ArrivalSender {
    /// Queues `arrival` for `accept`, or drops it (closing its session or connection) if
    /// nobody accepts any more.
    pub(crate) fn send(&self, arrival: Arrival) {
        let mut state = self.0.state.lock();
        if state.accepting_gone {
            drop(state);
            drop(arrival);
            return;
        }
        state.arrivals.push_back(arrival);
        drop(state);
        self.0.ready.notify_one();
    }
}

impl Drop for ArrivalSender {
    fn drop(&mut self) {
        self.0.state.lock().engine_gone = true;
        self.0.ready.notify_all();
    }
}

/// Why [`ArrivalQueue::try_recv`] returned nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Empty {
    /// Nothing waits now.
    Now,
    /// Nothing ever will: the engine's end is gone.
    ForGood,
}

/// `accept`'s end.
pub(crate) struct ArrivalQueue(Arc<Shared>);

impl ArrivalQueue {
    /// The oldest arrival, waiting for one; `None` once the engine's end is gone.
    pub(crate) fn recv(&self) -> Option<Arrival> {
        let mut state = self.0.state.lock();
        loop {
            if let Some(arrival) = state.arrivals.pop_front() {
                return Some(arrival);
            }
            if state.engine_gone {
                return None;
            }
            self.0.ready.wait(&mut state);
        }
    }

    /// The oldest arrival, if one waits.
    pub(crate) fn try_recv(&self) -> Result<Arrival, Empty> {
        let mut state = self.0.state.lock();
        match state.arrivals.pop_front() {
            Some(arrival) => Ok(arrival),
            None if state.engine_gone => Err(Empty::ForGood),
            None => Err(Empty::Now),
        }
    }
}

impl Drop for ArrivalQueue {
    fn drop(&mut self) {
        let left = {
            let mut state = self.0.state.lock();
            state.accepting_gone = true;
            std::mem::take(&mut state.arrivals)
        };
        // Outside the lock: each closes its session.
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::thread;
    use std::time::Duration;

    use super::*;
    use crate::RSocket;

    /// An arrival whose connection's other end is returned, to see it close.
    fn arrival(listener: &TcpListener) -> (Arrival, TcpStream) {
        let addr = listener.local_addr().expect("the listener's address");
        let client = TcpStream::connect(addr).expect("connect");
        let (server, from) = listener.accept().expect("accept");
        let arrival = Arrival {
            socket: RSocket::from_plain(server),
            client: from,
        };
        (arrival, client)
    }

    fn closed(mut peer: TcpStream) -> bool {
        peer.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a read timeout");
        matches!(peer.read(&mut [0; 1]), Ok(0))
    }

    #[test]
    fn arrivals_come_in_order_and_the_engines_end_going_ends_the_wait() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (sender, queue) = arrivals();
        assert_eq!(queue.try_recv().err(), Some(Empty::Now));
        let (first, _a) = arrival(&listener);
        let (second, _b) = arrival(&listener);
        let (one, two) = (first.client, second.client);
        sender.send(first);
        sender.send(second);
        assert_eq!(queue.recv().map(|a| a.client), Some(one));
        assert_eq!(queue.try_recv().map(|a| a.client).ok(), Some(two));
        // A thread blocked in recv wakes for the next one, and for the end.
        thread::scope(|s| {
            let waiting = s.spawn(|| queue.recv().map(|a| a.client));
            let (third, _c) = arrival(&listener);
            let three = third.client;
            sender.send(third);
            assert_eq!(waiting.join().expect("no panic"), Some(three));
            let waiting = s.spawn(|| queue.recv().is_none());
            drop(sender);
            assert!(waiting.join().expect("no panic"));
        });
        assert_eq!(queue.try_recv().err(), Some(Empty::ForGood));
    }

    #[test]
    fn once_nobody_accepts_what_is_queued_and_what_comes_later_close() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (sender, queue) = arrivals();
        let (queued, queued_peer) = arrival(&listener);
        sender.send(queued);
        drop(queue);
        assert!(closed(queued_peer), "the queued connection closed");
        let (late, late_peer) = arrival(&listener);
        sender.send(late);
        assert!(closed(late_peer), "the late connection closed");
    }
}
