//! `rtcp server`: robust sessions in, one plain TCP connection out per session, to the
//! `--forward` target or to a SOCKS target the `--allow` list lets through (never an open
//! proxy: without `--allow` the client has no say where it goes).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use robust_tcp::{Config, RServerSocket, RSocket};

use crate::allow::Allow;
use crate::clients::Clients;
use crate::metrics::Failure;
use crate::relay::STOPPING;
use crate::routes::{self, Routes};
use crate::secure::Security;
use crate::socks::Reply;
use crate::status::Registry;
use crate::Fatal;
use crate::{addr, limits, listen, tunnel};

/// Serves until the process is stopped; returns only on a fatal error. Each session runs
/// TLS as `security` says before its request is read, and is counted in `clients` by the
/// key its client proved.
pub fn run(
    listen: &str,
    forward: Option<&str>,
    allow: Allow,
    security: Security,
    clients: Arc<Clients>,
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
    let refusal_line = limits::server_full(&config);
    let server = listen::addrs(listen)
        .and_then(|addrs| RServerSocket::bind_with(&addrs[..], config))
        .map_err(|e| Fatal(format!("cannot listen on {listen}: {e}")))?;
    let server = Arc::new(server);
    watch_refusals(Arc::clone(&server), refusal_line, Arc::clone(&registry));
    let local = server.local_addr().map(|a| a.to_string());
    log::info!(
        "listening on {}, forwarding to {}",
        local.as_deref().unwrap_or(listen),
        forward.as_ref().map_or("no fixed target", |(name, _)| name)
    );
    // A target that is down is most likely a mistake in --forward, or a service not
    // started yet: say so now, not only at the first session. (The target sees an empty
    // connection.)
    if let Some((name, addrs)) = &forward {
        if let Err(e) = addr::connect(addrs) {
            log::warn!(
                "{}: sessions will be closed with this reason until it accepts connections",
                routes::target_failure(name, &e)
            );
        }
    }
    let routes = Arc::new(Routes { forward, allow });
    let security = Arc::new(security);
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
        let security = Arc::clone(&security);
        let clients = Arc::clone(&clients);
        let registry = Arc::clone(&registry);
        let name = format!("rtcp-session-{}", session.session_id());
        tunnel::spawn(name, format_args!("session from {peer}"), move || {
            serve(session, peer, &routes, &security, &clients, &registry)
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

/// Relays one session to the target its request names after the reply that says so, or,
/// if that target is not allowed or cannot be reached, sends the reply that says why
/// and closes the session. A client whose TLS handshake fails (a key not authorized)
/// gets no further: its request is not read and no target connection is made; nor does
/// one that holds its `--max-sessions-per-client`, which is told so.
fn serve(
    session: RSocket,
    peer: SocketAddr,
    routes: &Routes,
    security: &Security,
    clients: &Arc<Clients>,
    registry: &Arc<Registry>,
) {
    let what = format!("session {} from {peer}", session.session_id());
    let channel = match security.secure(session) {
        Ok(channel) => channel,
        Err(e) => {
            // Dropping the session closes it, after the alert that tells the client why.
            log::warn!("{what}: TLS handshake failed: {e}; session closed");
            registry.metrics.failed(tunnel::classify(false, &e));
            return;
        }
    };
    // Held until the relay ends.
    let _counted = match channel.client_key().map(|key| (key, clients.admit(key))) {
        Some((key, None)) => {
            let reason = limits::client_full(key, clients.max());
            routes::refuse(&channel, &what, Reply::GeneralFailure, &reason);
            registry.metrics.failed(Failure::ClientFull);
            return;
        }
        Some((_, slot)) => slot,
        None => None,
    };
    let (local, target) = match routes.open(&channel, &what) {
        Ok(opened) => opened,
        Err(failure) => {
            registry.metrics.failed(failure);
            return;
        }
    };
    log::info!("{what}: relaying to {target}");
    tunnel::run(local, "target", channel, registry, &what, false);
}
