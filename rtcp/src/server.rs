//! `rtcp server`: robust sessions in, one plain TCP connection out per session, always to
//! the one `--forward` target (never an open proxy: the client has no say where it goes).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use robust_tcp::{Config, RServerSocket, RSocket};

use crate::relay::STOPPING;
use crate::status::Registry;
use crate::Fatal;
use crate::{addr, tunnel};

/// Serves until the process is stopped; returns only on a fatal error.
pub fn run(
    listen: &str,
    forward: &str,
    config: Config,
    registry: Arc<Registry>,
) -> Result<(), Fatal> {
    let target = addr::resolve(forward)
        .map_err(|e| Fatal(format!("bad --forward address {forward}: {e}")))?;
    let server = addr::resolve(listen)
        .and_then(|addrs| RServerSocket::bind_with(&addrs[..], config))
        .map_err(|e| Fatal(format!("cannot listen on {listen}: {e}")))?;
    let local = server.local_addr().map(|a| a.to_string());
    log::info!(
        "listening on {}, forwarding to {forward}",
        local.as_deref().unwrap_or(listen)
    );
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

/// Relays one session to the target, or resets it if the target cannot be reached.
fn serve(
    session: RSocket,
    peer: SocketAddr,
    target: &[SocketAddr],
    forward: &str,
    registry: &Arc<Registry>,
) {
    let id = session.session_id();
    let local = match addr::connect(target) {
        Ok(stream) => stream,
        Err(e) => {
            log::warn!("session {id} from {peer}: cannot reach {forward}: {e}; session reset");
            let _ = session.abort();
            return;
        }
    };
    log::info!("session {id} from {peer}: relaying to {forward}");
    tunnel::run(
        local,
        "target",
        session,
        registry,
        &format!("session {id} from {peer}"),
    );
}
