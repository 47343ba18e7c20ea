//! One tunnelled connection: a plain TCP connection and a robust session relayed to each
//! other, registered for the status line and for a graceful stop, and the helpers for
//! closing a session before the process exits.

use std::fmt::Display;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use robust_tcp::{Config, RSocket, SessionState, Status};

use crate::limits;
use crate::metrics::Failure;
use crate::relay::{self, STOPPING};
use crate::request::TargetFailed;
use crate::secure::{Channel, TlsFailed};
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

/// Relays `local` and `channel` until both directions are done, then drops both (a
/// graceful close unless a reset was passed on). `what` names the connection in the log,
/// and `local_name` its TCP side; `read_reply` as [`relay::relay`] says.
pub fn run(
    local: TcpStream,
    local_name: &'static str,
    channel: Channel,
    registry: &Arc<Registry>,
    what: &str,
    read_reply: bool,
) {
    // The relay passes on each chunk as it comes; Nagle would only delay it (the programs
    // at both ends made their own choice already).
    let _ = local.set_nodelay(true);
    let session = Arc::clone(channel.session());
    let local = Arc::new(local);
    let _registered = registry.register(Arc::clone(&session), Some(Arc::clone(&local)), what);
    let (up, down) = relay::relay(&local, local_name, &channel, read_reply);
    if STOPPING.load(Ordering::SeqCst) {
        // Exiting soon: let the peer have every byte before the process takes the
        // library's thread with it.
        wait_acknowledged(&session);
    }
    if let Some((side, e)) = relay::failure(&up, &down) {
        registry.metrics.failed(classify(side == local_name, e));
    }
    relay::log_end(what, &up, &down, &counts(&session.status()));
}

/// Why a relay failed, for the metrics: `local` if the plain TCP side failed first.
pub fn classify(local: bool, e: &io::Error) -> Failure {
    if limits::is_server_full(e) {
        Failure::ServerFull
    } else if let Some(failed) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<TargetFailed>())
    {
        Failure::of_reply(failed.status)
    } else if e.get_ref().is_some_and(|inner| inner.is::<TlsFailed>()) {
        Failure::Handshake
    } else if local {
        Failure::LocalFailed
    } else {
        Failure::SessionFailed
    }
}

/// A session's bytes and reconnections, for its last log line.
pub fn counts(status: &Status) -> String {
    format!(
        "{} B sent, {} B received, {} reconnection{}",
        status.bytes_written,
        status.bytes_read,
        status.reconnections,
        if status.reconnections == 1 { "" } else { "s" }
    )
}

/// Opens a session with the server at `addrs`, retrying for `retry` while it cannot be
/// reached (nobody listens, the network is down: a server restarting costs a pause, not
/// an error), and records in `registry` whether the server was reached, for the outage
/// lines.
pub fn open(
    addrs: &[SocketAddr],
    config: &Config,
    retry: Duration,
    registry: &Registry,
) -> io::Result<RSocket> {
    /// The first pause between attempts, doubled up to [`MAX_PAUSE`].
    const FIRST_PAUSE: Duration = Duration::from_millis(100);
    const MAX_PAUSE: Duration = Duration::from_secs(2);
    let deadline = Instant::now() + retry;
    let mut pause = FIRST_PAUSE;
    loop {
        let e = match RSocket::connect_with(addrs, config.clone()) {
            Ok(session) => {
                registry.opening_reached_server(true);
                return Ok(session);
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => return Err(e),
            Err(e) => e,
        };
        registry.opening_reached_server(false);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || STOPPING.load(Ordering::SeqCst) {
            return Err(e);
        }
        log::debug!("cannot open a session yet: {e}; again in {pause:?}");
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(MAX_PAUSE);
    }
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
