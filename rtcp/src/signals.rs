//! Ctrl-C and SIGTERM: stop taking new connections, close the live sessions gracefully,
//! wait a bounded time for their relays to finish, and exit 0. A second signal exits at
//! once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::relay::STOPPING;
use crate::status::Registry;
use crate::Fatal;

/// How long a graceful stop waits for the relays before exiting anyway.
const DRAIN: Duration = Duration::from_secs(5);

/// What to do on the first signal: close whatever is live. Runs on its own thread, so a
/// second signal still gets through while it waits.
pub type OnStop = Box<dyn FnOnce() + Send>;

/// Handles SIGINT and SIGTERM on a thread of their own from now on.
pub fn install(on_stop: OnStop) -> Result<(), Fatal> {
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| Fatal(format!("cannot handle signals: {e}")))?;
    let mut on_stop = Some(on_stop);
    std::thread::Builder::new()
        .name("rtcp-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let Some(stop) = on_stop.take() else {
                    log::warn!("second signal {signal}: exiting without waiting");
                    std::process::exit(1);
                };
                log::info!("signal {signal}: closing sessions (again to exit at once)");
                STOPPING.store(true, Ordering::SeqCst);
                let stopper =
                    std::thread::Builder::new()
                        .name("rtcp-stop".into())
                        .spawn(move || {
                            stop();
                            std::process::exit(0);
                        });
                if stopper.is_err() {
                    std::process::exit(1);
                }
            }
        })
        .map_err(|e| Fatal(format!("cannot start the signal thread: {e}")))?;
    Ok(())
}

/// The graceful stop of `rtcp server` and `rtcp client`: every session is shut down for
/// writing (through its plain TCP side), and we wait until the relays have ended.
pub fn drain(registry: Arc<Registry>) -> OnStop {
    Box::new(move || {
        registry.stop_all();
        let deadline = Instant::now() + DRAIN;
        while registry.len() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = registry.len();
        if left > 0 {
            log::warn!("exiting with {left} session(s) still open after {DRAIN:?}");
        }
        std::thread::sleep(crate::tunnel::CLOSE_GRACE);
    })
}
