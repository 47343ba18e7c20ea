//! One tunnelled connection: a plain TCP connection and a robust session relayed to each
//! other, registered for the status line and for a graceful stop, and the helpers for
//! closing a session before the process exits.

use std::fmt::Display;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use robust_tcp::{RSocket, SessionState};

use crate::relay::{self, STOPPING};
use crate::status::Registry;

/// How long to wait at the end for the peer to acknowledge what we wrote.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// How long to let the library's thread send the CLOSE of a dropped session before the
/// process exits. The library offers no way to wait for the close to be confirmed (a
/// session reads as `Closed` only after its last handle is gone, when its status can no
/// longer be read), and without the CLOSE the peer keeps the session, waiting for a
/// reconnection that never comes. One loopback or LAN round trip fits well within it.
pub const CLOSE_GRACE: Duration = Duration::from_millis(200);

/// Runs `work` on a thread of its own (thread per connection is the library's model); if
/// no thread can be started, logs it: what `work` owned is dropped with it.
pub fn spawn(name: String, what: impl Display, work: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name).spawn(work) {
        log::warn!("{what} dropped: cannot start its thread: {e}");
    }
}

/// Relays `local` and `session` until both directions are done, then drops both (a
/// graceful close unless a reset was passed on). `what` names the connection in the log,
/// and `local_name` its TCP side.
pub fn run(
    local: TcpStream,
    local_name: &'static str,
    session: RSocket,
    registry: &Arc<Registry>,
    what: &str,
) {
    // The relay passes on each chunk as it comes; Nagle would only delay it (the programs
    // at both ends made their own choice already).
    let _ = local.set_nodelay(true);
    let session = Arc::new(session);
    let local = Arc::new(local);
    let _registered = registry.register(Arc::clone(&session), Arc::clone(&local));
    let (up, down) = relay::relay(&local, local_name, &session);
    if STOPPING.load(Ordering::SeqCst) {
        // Exiting soon: let the peer have every byte before the process takes the
        // library's thread with it.
        wait_acknowledged(&session);
    }
    relay::log_end(what, &up, &down);
}

/// Waits (a bounded time) until the peer has every byte written to `session`, since
/// exiting the process ends the library's thread too, with the bytes it still holds.
pub fn wait_acknowledged(session: &RSocket) {
    let deadline = Instant::now() + CLOSE_WAIT;
    loop {
        let status = session.status();
        if status.unacknowledged == 0
            || status.state == SessionState::Closed
            || Instant::now() >= deadline
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
