//! The watchdog: a run longer than `RUN_LIMIT` aborts the process with a message and the
//! tables so far, rather than hang the bench.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use super::report::print_tables;
use super::RUN_LIMIT;

/// What runs now, since when, and how much work it has (for the watchdog).
pub(super) static RUNNING: Mutex<Option<(String, Instant, u64)>> = Mutex::new(None);

/// How much of its work the current run has done: writes, round trips or transactions.
pub(super) static PROGRESS: AtomicU64 = AtomicU64::new(0);

pub(super) fn watch(what: String, work: u64) {
    PROGRESS.store(0, Ordering::Relaxed);
    *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = Some((what, Instant::now(), work));
}

pub(super) fn unwatch() {
    *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

pub(super) fn progress(done: u64) {
    PROGRESS.store(done, Ordering::Relaxed);
}

/// Aborts the process if a run takes longer than [`RUN_LIMIT`]: a hang in the library (or
/// in this harness) must end the bench with a message, not stall it forever.
pub(super) fn start_watchdog() {
    thread::Builder::new()
        .name("watchdog".into())
        .spawn(|| loop {
            thread::sleep(Duration::from_millis(500));
            let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((what, since, work)) = &*running {
                if since.elapsed() > RUN_LIMIT {
                    let done = PROGRESS.load(Ordering::Relaxed);
                    println!(
                        "\nwatchdog: {what} has run for more than {RUN_LIMIT:?} and done {done} of \
                         {work} (writes, round trips or transactions): it hangs or is \
                         pathologically slow. Aborting; the benchmarks finished so far:"
                    );
                    print_tables();
                    std::process::abort();
                }
            }
        })
        .expect("spawn the watchdog");
}
