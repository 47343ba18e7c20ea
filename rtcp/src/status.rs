//! The registry of live sessions, and what watches it: the sessions' lifecycle in the log,
//! the server's outages, the status line, the metrics.
//!
//! Every relay registers its session (and its plain TCP side) while it runs, so that the
//! watcher can see each session's state and sum their counters, and Ctrl-C can close them
//! all gracefully.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use robust_tcp::{RSocket, SessionState};

use crate::metrics::Metrics;
use crate::outage::{Event, Outage};

/// How often the watcher looks at every session: a resumption is logged within this.
const TICK: Duration = Duration::from_millis(100);
/// How often the status line is refreshed on a terminal.
const PERIOD: Duration = Duration::from_secs(2);
/// How often the status line goes to the log instead, when stderr is not a terminal.
const LOG_PERIOD: Duration = Duration::from_secs(60);

/// A session being relayed, with the plain TCP connection it is relayed to (none for
/// `rtcp connect`'s stdin and stdout), and what the watcher last saw of it.
struct Live {
    session: Arc<RSocket>,
    local: Option<Arc<TcpStream>>,
    /// The session's name in the log.
    what: String,
    seen_state: SessionState,
    seen_reconnections: u64,
}

/// Counters of a set of sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Sessions open now.
    pub open: usize,
    /// Sessions registered since the start, closed ones included.
    pub sessions: u64,
    /// Bytes written to sessions (towards the peer), closed sessions included.
    pub sent: u64,
    /// Bytes read from sessions (from the peer), closed sessions included.
    pub received: u64,
    /// Reconnections of all sessions, closed ones included.
    pub reconnections: u64,
    /// Sessions without a connection right now.
    pub reconnecting: usize,
}

/// The live sessions, the counters of those already closed, and the other metrics.
#[derive(Default)]
pub struct Registry {
    live: Mutex<HashMap<u64, Live>>,
    closed: Mutex<Totals>,
    next_id: AtomicU64,
    /// Whether the latest attempt to open a session failed to reach the server (the
    /// client's retries): an outage even while no session is live.
    opening_failed: AtomicBool,
    /// Failures and resume times.
    pub metrics: Metrics,
}

impl Registry {
    /// A poisoned lock only means a relay thread panicked; the map is still consistent
    /// (every change is a single insert or remove), so keep going.
    fn live(&self) -> MutexGuard<'_, HashMap<u64, Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session, named `what` in the log, for as long as the returned guard
    /// lives.
    pub fn register(
        self: &Arc<Self>,
        session: Arc<RSocket>,
        local: Option<Arc<TcpStream>>,
        what: &str,
    ) -> Registered {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let status = session.status();
        self.live().insert(
            id,
            Live {
                session,
                local,
                what: what.to_owned(),
                seen_state: status.state,
                seen_reconnections: status.reconnections,
            },
        );
        Registered {
            registry: Arc::clone(self),
            id,
        }
    }

    /// Records whether the latest attempt to open a session reached the server.
    pub fn opening_reached_server(&self, reached: bool) {
        self.opening_failed.store(!reached, Ordering::Relaxed);
    }

    /// Sessions open now.
    pub fn len(&self) -> usize {
        self.live().len()
    }

    /// The live sessions without a connection now.
    pub fn reconnecting(&self) -> Vec<Arc<RSocket>> {
        self.live()
            .values()
            .filter(|live| live.session.status().state == SessionState::Reconnecting)
            .map(|live| Arc::clone(&live.session))
            .collect()
    }

    /// Starts a graceful close of every live session: reading is shut down on the plain
    /// TCP side, so its relay direction sees end of stream and shuts down writing on the
    /// session; the other direction runs until the peer closes too.
    pub fn stop_all(&self) {
        for live in self.live().values() {
            if let Some(local) = &live.local {
                let _ = local.shutdown(Shutdown::Read);
            }
        }
    }

    /// The counters now.
    pub fn totals(&self) -> Totals {
        let mut totals = *self.closed.lock().unwrap_or_else(|e| e.into_inner());
        totals.sessions = self.next_id.load(Ordering::Relaxed);
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

    /// Logs what changed in each session since the last look (a lost connection, a
    /// resumption), counts the resumptions' times, and says whether the server is
    /// reachable: `Some(true)` if a session is connected, `Some(false)` if sessions or
    /// openings wait for it and none is, `None` with nothing to go by.
    fn look(&self) -> Option<bool> {
        let (mut connected, mut waiting) = (false, self.opening_failed.load(Ordering::Relaxed));
        for live in self.live().values_mut() {
            let status = live.session.status();
            if status.state == SessionState::Reconnecting
                && live.seen_state != SessionState::Reconnecting
            {
                let why = status.last_failure.as_deref().unwrap_or("connection lost");
                log::info!("{}: reconnecting: {why}", live.what);
            }
            if status.reconnections > live.seen_reconnections {
                let pause = status.last_outage.unwrap_or_default();
                log::info!("{}: resumed after {pause:.1?}", live.what);
                // Resumptions between two looks (within TICK) each count the latest's
                // time: the session keeps only that one.
                for _ in live.seen_reconnections..status.reconnections {
                    self.metrics.resumed(pause);
                }
            }
            live.seen_state = status.state;
            live.seen_reconnections = status.reconnections;
            connected |= status.state == SessionState::Connected;
            waiting |= status.state == SessionState::Reconnecting;
        }
        if connected {
            Some(true)
        } else {
            waiting.then_some(false)
        }
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

/// Where the status line goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusLine {
    /// Nowhere (`--quiet`, or `rtcp connect`, whose stderr is the terminal of the program
    /// on its stdin and stdout).
    Off,
    /// On stderr every two seconds if it is a terminal, or else to the log (info) every
    /// minute; either only when it changed, so an idle tunnel does not scroll away.
    On,
}

/// Watches the registry from a thread of its own: each session's lifecycle at info, the
/// outages of `server` (for `rtcp client` and `rtcp connect`) at warn, and the status
/// line as `status_line` says.
pub fn spawn_watch(registry: Arc<Registry>, server: Option<String>, status_line: StatusLine) {
    let terminal = std::io::stderr().is_terminal();
    let period = if terminal { PERIOD } else { LOG_PERIOD };
    let spawned = std::thread::Builder::new()
        .name("rtcp-watch".into())
        .spawn(move || {
            let mut outage = Outage::default();
            let mut last = String::new();
            let mut next_line = Instant::now() + period;
            loop {
                std::thread::sleep(TICK);
                let now = Instant::now();
                let reachable = registry.look();
                if let Some(server) = &server {
                    match outage.observe(now, reachable) {
                        Some(Event::Unreachable(d)) => {
                            log::warn!("server {server} unreachable since {d:.1?} ago")
                        }
                        Some(Event::Back(d)) => {
                            log::warn!("server {server} reachable again after an outage of {d:.1?}")
                        }
                        None => {}
                    }
                }
                if status_line == StatusLine::Off || now < next_line {
                    continue;
                }
                next_line = now + period;
                let line = line(&registry.totals());
                if line != last {
                    if terminal {
                        let _ = writeln!(std::io::stderr(), "{line}");
                    } else {
                        log::info!("{line}");
                    }
                    last = line;
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("no session log nor status line: cannot start their thread: {e}");
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
            sessions: 4,
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
