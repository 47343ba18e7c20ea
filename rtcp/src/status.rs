//! The registry of live sessions, and the status line it feeds.
//!
//! Every relay registers its session (and its plain TCP side) while it runs, so that the
//! status line can sum the sessions' counters and Ctrl-C can close them all gracefully.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use robust_tcp::{RSocket, SessionState};

/// How often the status line is refreshed.
const PERIOD: Duration = Duration::from_secs(2);

/// A session being relayed, with the plain TCP connection it is relayed to.
struct Live {
    session: Arc<RSocket>,
    local: Arc<TcpStream>,
}

/// Counters of a set of sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Sessions open now.
    pub open: usize,
    /// Bytes written to sessions (towards the peer), closed sessions included.
    pub sent: u64,
    /// Bytes read from sessions (from the peer), closed sessions included.
    pub received: u64,
    /// Reconnections of all sessions, closed ones included.
    pub reconnections: u64,
    /// Sessions without a connection right now.
    pub reconnecting: usize,
}

/// The live sessions, and the counters of those already closed.
#[derive(Default)]
pub struct Registry {
    live: Mutex<HashMap<u64, Live>>,
    closed: Mutex<Totals>,
    next_id: AtomicU64,
}

impl Registry {
    /// A poisoned lock only means a relay thread panicked; the map is still consistent
    /// (every change is a single insert or remove), so keep going.
    fn live(&self) -> MutexGuard<'_, HashMap<u64, Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session for as long as the returned guard lives.
    pub fn register(self: &Arc<Self>, session: Arc<RSocket>, local: Arc<TcpStream>) -> Registered {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.live().insert(id, Live { session, local });
        Registered {
            registry: Arc::clone(self),
            id,
        }
    }

    /// Sessions open now.
    pub fn len(&self) -> usize {
        self.live().len()
    }

    /// Starts a graceful close of every live session: reading is shut down on the plain
    /// TCP side, so its relay direction sees end of stream and shuts down writing on the
    /// session; the other direction runs until the peer closes too.
    pub fn stop_all(&self) {
        for live in self.live().values() {
            let _ = live.local.shutdown(Shutdown::Read);
        }
    }

    /// The counters now.
    pub fn totals(&self) -> Totals {
        let mut totals = *self.closed.lock().unwrap_or_else(|e| e.into_inner());
        for live in self.live().values() {
            let status = live.session.status();
            totals.open += 1;
            totals.sent += status.bytes_written;
            totals.received += status.bytes_read;
            totals.reconnections += status.reconnections;
            if status.state == SessionState::Reconnecting {
                totals.reconnecting += 1;
            }
        }
        totals
    }
}

/// Keeps a session in the registry; dropping it moves the session's counters to the
/// closed totals (also when the relay thread panics).
pub struct Registered {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let Some(live) = self.registry.live().remove(&self.id) else {
            return;
        };
        let status = live.session.status();
        let mut closed = self
            .registry
            .closed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        closed.sent += status.bytes_written;
        closed.received += status.bytes_read;
        closed.reconnections += status.reconnections;
    }
}

/// Bytes in a unit a person reads at a glance.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The status line for `totals`.
pub fn line(totals: &Totals) -> String {
    format!(
        "rtcp: {} session{} open, {} sent, {} received, {} reconnection{}, {} reconnecting now",
        totals.open,
        if totals.open == 1 { "" } else { "s" },
        human(totals.sent),
        human(totals.received),
        totals.reconnections,
        if totals.reconnections == 1 { "" } else { "s" },
        totals.reconnecting,
    )
}

/// Prints the status line on stderr every two seconds, if stderr is a terminal (a log
/// file or a pipe gets none: `RUST_LOG` is for those). A line is printed only when it
/// differs from the last one, so an idle tunnel does not scroll the terminal away.
pub fn spawn_status_line(registry: Arc<Registry>) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("rtcp-status".into())
        .spawn(move || {
            let mut last = String::new();
            let mut next = Instant::now() + PERIOD;
            loop {
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                next += PERIOD;
                let now = line(&registry.totals());
                if now != last {
                    let _ = writeln!(std::io::stderr(), "{now}");
                    last = now;
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("no status line: cannot start its thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_at_a_glance() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }

    #[test]
    fn the_line_says_it_all() {
        let totals = Totals {
            open: 1,
            sent: 2048,
            received: 10,
            reconnections: 3,
            reconnecting: 0,
        };
        assert_eq!(
            line(&totals),
            "rtcp: 1 session open, 2.0 KiB sent, 10 B received, 3 reconnections, 0 reconnecting now"
        );
    }
}
