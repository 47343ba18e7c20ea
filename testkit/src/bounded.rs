//! Time bounds: a hang in the code under test must fail the test, never stall `cargo test`.

use std::panic;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::rng::SEED_ENV;

/// Runs `body` on its own thread and returns its result, failing the test if it has not
/// finished within `limit`.
///
/// A panic in `body` is re-raised here unchanged, so assertion messages stay intact. On a
/// timeout the body's thread cannot be killed: it is left behind (the test binary exits
/// soon after) and the panic says so.
///
/// # Panics
///
/// If `body` panics or runs longer than `limit`.
pub fn run_bounded<T, F>(limit: Duration, body: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (done_tx, done_rx) = mpsc::channel();
    let handle = thread::Builder::new()
        .name("bounded-test-body".into())
        .spawn(move || {
            let value = body();
            // The receiver is gone only if the watchdog already gave up; nothing to do then.
            let _ = done_tx.send(());
            value
        })
        .expect("spawn the test body thread");
    match done_rx.recv_timeout(limit) {
        // Finished or panicked (a panic drops the sender): either way join cannot block.
        Ok(()) | Err(RecvTimeoutError::Disconnected) => join(handle),
        Err(RecvTimeoutError::Timeout) => panic!(
            "watchdog: the test did not finish within {limit:?}; something hangs. The proxy \
             seed is printed above; replay it with {SEED_ENV}=<seed>"
        ),
    }
}

/// Joins `handle`, re-raising its panic with the original payload so the message survives.
pub fn join<T>(handle: JoinHandle<T>) -> T {
    handle
        .join()
        .unwrap_or_else(|payload| panic::resume_unwind(payload))
}

/// Polls `condition` until it holds, pausing a little longer each time (up to 10 ms).
///
/// This is how tests wait for an observable state (a blocked writer, a retrying client)
/// instead of sleeping for a guessed time.
///
/// # Panics
///
/// If `condition` still does not hold after `limit`; the message names `what`.
pub fn wait_until(limit: Duration, what: &str, condition: impl FnMut() -> bool) {
    assert!(
        poll_until(limit, condition),
        "gave up after {limit:?} waiting for {what}"
    );
}

/// Polls `condition` as [`wait_until`] does; returns whether it held within `limit`, for
/// callers that report the failure with their own details.
pub fn poll_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_micros(100);
    while !condition() {
        if Instant::now() >= deadline {
            return false;
        }
        thread::park_timeout(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
    true
}
