//! `rtcp server`: robust sessions in, one plain TCP connection out per session, to the
//! `--forward` target or to a SOCKS target the `--allow` list lets through (never an open
//! proxy: without `--allow` the client has no say where it goes).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use robust_tcp::{Config, RServerSocket, RSocket};

use crate::allow::Allow;
use crate::relay::STOPPING;
use crate::routes::Routes;
use crate::status::Registry;
use crate::Fatal;
use crate::{addr, listen, tunnel};

/// Serves until the process is stopped; returns only on a fatal error.
pub fn run(
    listen: &str,
    forward: Option<&str>,
    allow: Allow,
    config: Config,
    registry: Arc<Registry>,
) -> Result<(), Fatal> {
    let forward = forward
        .map(|forward| {
            addr::resolve(forward)
                .map(|addrs| (forward.to_owned(), addrs))
                .map_err(|e| Fatal(format!("bad --forward address {forward}: {e}")))
        })
        .transpose()?;
    let server = listen::addrs(listen)
        .and_then(|addrs| RServerSocket::bind_with(&addrs[..], config))
        .map_err(|e| Fatal(format!("cannot listen on {listen}: {e}")))?;
    let local = server.local_addr().map(|a| a.to_string());
    log::info!(
        "listening on {}, forwarding to {}",
        local.as_deref().unwrap_or(listen),
        forward.as_ref().map_or("no fixed target", |(name, _)| name)
    );
    let routes = Arc::new(Routes { forward, allow });
    loop {
        let (session, peer) = server
            .accept()
            .map_err(|e| Fatal(format!("cannot accept sessions: {e}")))?;
        if STOPPING.load(Ordering::SeqCst) {
            // Shutting down: refuse by resetting, so the client does not wait on it.
            let _ = session.abort();
            continue;
        }
        let routes = Arc::clone(&routes);
        let registry = Arc::clone(&registry);
        let name = format!("rtcp-session-{}", session.session_id());
        tunnel::spawn(name, format_args!("session from {peer}"), move || {
            serve(session, peer, &routes, &registry)
        });
    }
}

/// Relays one session to the target its request names, or answers or resets it if that
/// target is not allowed or cannot be reached.
fn serve(session: RSocket, peer: SocketAddr, routes: &Routes, registry: &Arc<Registry>) {
    let id = session.session_id();
    let Some((local, target)) = routes.open(&session, &format!("session {id} from {peer}")) else {
        return;
    };
    log::info!("session {id} from {peer}: relaying to {target}");
    tunnel::run(
        local,
        "target",
        session,
        registry,
        &format!("session {id} from {peer}"),
    );
}
