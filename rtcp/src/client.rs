//! `rtcp client`: plain TCP connections in from local programs, one robust session out
//! to the `rtcp server` for each.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use robust_tcp::{Config, RSocket};

use crate::relay::{self, STOPPING};
use crate::status::Registry;
use crate::Fatal;
use crate::{addr, connect};

/// Serves until the process is stopped; returns only on a fatal error.
pub fn run(
    listen: &str,
    server: &str,
    config: Config,
    registry: Arc<Registry>,
) -> Result<(), Fatal> {
    let server_addrs: Arc<[SocketAddr]> = addr::resolve(server)
        .map_err(|e| Fatal(format!("bad --server address {server}: {e}")))?
        .into();
    let listener = addr::resolve(listen)
        .and_then(|addrs| TcpListener::bind(&addrs[..]))
        .map_err(|e| Fatal(format!("cannot listen on {listen}: {e}")))?;
    log::info!("listening on {listen}, sessions to {server}");
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: passes; don't spin meanwhile.
                log::warn!("cannot accept a connection: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if STOPPING.load(Ordering::SeqCst) {
            relay::reset_tcp(&stream);
            continue;
        }
        let server_addrs = Arc::clone(&server_addrs);
        let registry = Arc::clone(&registry);
        let config = config.clone();
        let server = server.to_owned();
        let spawned = std::thread::Builder::new()
            .name(format!("rtcp-conn-{peer}"))
            .spawn(move || serve(stream, peer, &server_addrs, &server, config, &registry));
        if let Err(e) = spawned {
            log::warn!("connection from {peer} dropped: cannot start its thread: {e}");
        }
    }
}

/// Opens a session for one local connection and relays, or resets the connection if no
/// session can be opened: the local program sees the failure as it would a refused
/// connection, not as an empty reply.
fn serve(
    local: TcpStream,
    peer: SocketAddr,
    server_addrs: &[SocketAddr],
    server: &str,
    config: Config,
    registry: &Arc<Registry>,
) {
    let session = match RSocket::connect_with(server_addrs, config) {
        Ok(session) => session,
        Err(e) => {
            log::warn!(
                "connection from {peer}: cannot open a session to {server}: {e}; connection reset"
            );
            relay::reset_tcp(&local);
            return;
        }
    };
    let _ = local.set_nodelay(true);
    let id = session.session_id();
    log::info!("connection from {peer}: session {id} to {server}");
    let session = Arc::new(session);
    let local = Arc::new(local);
    let _registered = registry.register(Arc::clone(&session), Arc::clone(&local));
    let (up, down) = relay::relay(&local, &session);
    if STOPPING.load(Ordering::SeqCst) {
        // Exiting soon: let the session finish its close before the process takes the
        // library's thread with it.
        connect::wait_acknowledged(&session);
    }
    relay::log_end(&format!("connection from {peer}, session {id}"), &up, &down);
}
