//! `rtcp server`: robust sessions in, one plain TCP connection out per session, always to
//! the one `--forward` target (never an open proxy: the client has no say where it goes).

use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use robust_tcp::{Config, RServerSocket, RSocket};

use crate::metrics::Failure;
use crate::relay::STOPPING;
use crate::status::Registry;
use crate::Fatal;
use crate::{addr, limits, preamble, tunnel};

/// Serves until the process is stopped; returns only on a fatal error.
pub fn run(
    listen: &str,
    forward: &str,
    config: Config,
    registry: Arc<Registry>,
) -> Result<(), Fatal> {
    let target = addr::resolve(forward)
        .map_err(|e| Fatal(format!("bad --forward address {forward}: {e}")))?;
    let refusal_line = limits::server_full(&config);
    let server = addr::resolve(listen)
        .and_then(|addrs| RServerSocket::bind_with(&addrs[..], config))
        .map_err(|e| Fatal(format!("cannot listen on {listen}: {e}")))?;
    let server = Arc::new(server);
    watch_refusals(Arc::clone(&server), refusal_line, Arc::clone(&registry));
    let local = server.local_addr().map(|a| a.to_string());
    log::info!(
        "listening on {}, forwarding to {forward}",
        local.as_deref().unwrap_or(listen)
    );
    // A target that is down is most likely a mistake in --forward, or a service not
    // started yet: say so now, not only at the first session. (The target sees an empty
    // connection.)
    if let Err(e) = addr::connect(&target) {
        log::warn!(
            "{}: sessions will be closed with this reason until it accepts connections",
            preamble::target_failure(forward, &e)
        );
    }
    let target: Arc<[SocketAddr]> = target.into();
    loop {
        let (session, peer) = server
            .accept()
            .map_err(|e| Fatal(format!("cannot accept sessions: {e}")))?;
        if STOPPING.load(Ordering::SeqCst) {
            // Shutting down: refuse by resetting, so the client does not wait on it.
            let _ = session.abort();
            continue;
        }
        let target = Arc::clone(&target);
        let registry = Arc::clone(&registry);
        let forward = forward.to_owned();
        let name = format!("rtcp-session-{}", session.session_id());
        tunnel::spawn(name, format_args!("session from {peer}"), move || {
            serve(session, peer, &target, &forward, &registry)
        });
    }
}

/// How often the refusals of new sessions are looked at: at most one line per period.
const REFUSALS_PERIOD: Duration = Duration::from_secs(1);

/// Logs (at most once per [`REFUSALS_PERIOD`]) and counts the new sessions the library
/// refused because the server was full: its clients see their connections reset, and
/// the operator must know which limit to raise.
fn watch_refusals(server: Arc<RServerSocket>, line: String, registry: Arc<Registry>) {
    let spawned = std::thread::Builder::new()
        .name("rtcp-refusals".into())
        .spawn(move || {
            let mut seen = 0;
            loop {
                std::thread::sleep(REFUSALS_PERIOD);
                let now = server.refused_as_full();
                if now > seen {
                    log::warn!("refused {} new session(s): {line}", now - seen);
                    for _ in seen..now {
                        registry.metrics.failed(Failure::ServerFull);
                    }
                    seen = now;
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("refusals will not be logged: cannot start their thread: {e}");
    }
}

/// Relays one session to the target after the status that says so ([`preamble`]), or,
/// if the target cannot be reached, sends the reason and closes the session.
fn serve(
    session: RSocket,
    peer: SocketAddr,
    target: &[SocketAddr],
    forward: &str,
    registry: &Arc<Registry>,
) {
    let what = format!("session {} from {peer}", session.session_id());
    let local = match addr::connect(target) {
        Ok(stream) => stream,
        Err(e) => {
            let reason = preamble::target_failure(forward, &e);
            log::warn!("{what}: {reason}; the client is told");
            registry.metrics.failed(Failure::TargetUnreachable);
            // A close, not a reset: the reason reaches the client before the end of the
            // session (the dropped session lingers until it is acknowledged).
            let _ = preamble::write_failure(&session, &reason);
            let _ = session.shutdown(Shutdown::Write);
            return;
        }
    };
    if let Err(e) = preamble::write_ok(&session) {
        log::warn!("{what}: session failed: {e}; target connection closed");
        registry.metrics.failed(Failure::SessionFailed);
        return;
    }
    log::info!("{what}: relaying to {forward}");
    tunnel::run(local, "target", session, registry, &what, false);
}
