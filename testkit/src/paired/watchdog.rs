//! The watchdog: a run longer than its limit aborts the process with a message and the
//! tables so far, rather than hang the bench.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use super::report::print_tables;

/// What runs now, since when, and how much work it has.
static RUNNING: Mutex<Option<(String, Instant, u64)>> = Mutex::new(None);

/// How much of its work the current run has done: writes, round trips or transactions.
static PROGRESS: AtomicU64 = AtomicU64::new(0);

/// Starts watching a run of `work` units called `what`.
pub fn watch(what: String, work: u64) {
    PROGRESS.store(0, Ordering::Relaxed);
    *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = Some((what, Instant::now(), work));
}

/// The run ended.
pub fn unwatch() {
    *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// How much of its work the current run has done.
pub fn progress(done: u64) {
    PROGRESS.store(done, Ordering::Relaxed);
}

/// Aborts the process (after `on_abort`, which cleans up what an abort would leave
/// behind) if a run takes longer than `limit`: a hang in the library (or in a harness) must
/// end the bench with a message, not stall it forever.
pub fn start_watchdog(limit: Duration, on_abort: fn()) {
    thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || loop {
            thread::sleep(Duration::from_millis(500));
            let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((what, since, work)) = &*running {
                if since.elapsed() > limit {
                    let done = PROGRESS.load(Ordering::Relaxed);
                    println!(
                        "\nwatchdog: {what} has run for more than {limit:?} and done {done} of \
                         {work} (its units of work): it hangs or is pathologically slow. \
                         Aborting; the benchmarks finished so far:"
                    );
                    print_tables();
                    on_abort();
                    std::process::abort();
                }
            }
        })
        .expect("spawn the watchdog");
}
