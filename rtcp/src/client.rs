//! `rtcp client`: plain TCP connections in from local programs, one robust session out
//! to the `rtcp server` for each.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use robust_tcp::Config;

use crate::metrics::Failure;
use crate::relay::{self, STOPPING};
use crate::status::Registry;
use crate::Fatal;
use crate::{addr, tunnel};

/// Serves until the process is stopped; returns only on a fatal error.
pub fn run(
    listen: &str,
    server: &str,
    config: Config,
    retry: Duration,
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
        let name = format!("rtcp-conn-{peer}");
        tunnel::spawn(name, format_args!("connection from {peer}"), move || {
            serve(
                stream,
                peer,
                &server_addrs,
                &server,
                config,
                retry,
                &registry,
            )
        });
    }
}

/// Opens a session for one local connection (retrying for `retry` while the server cannot
/// be reached) and relays, or resets the connection if no session can be opened (at the
/// TCP connect, or when the server's answer or its status fails the session during the
/// relay): the local program sees the failure as it would a refused connection, not as an
/// empty reply.
fn serve(
    local: TcpStream,
    peer: SocketAddr,
    server_addrs: &[SocketAddr],
    server: &str,
    config: Config,
    retry: Duration,
    registry: &Arc<Registry>,
) {
    let session = match tunnel::open(server_addrs, &config, retry, registry) {
        Ok(session) => session,
        Err(e) => {
            log::warn!(
                "connection from {peer}: cannot open a session to {server} (retried {retry:?}): \
                 {e}; connection reset"
            );
            registry.metrics.failed(Failure::ServerUnreachable);
            relay::reset_tcp(&local);
            return;
        }
    };
    // The relay starts at once: the local program's first bytes follow the session's
    // opening HELLO, without waiting for the server's answer (and so for the session's id).
    log::info!("connection from {peer}: session to {server}");
    tunnel::run(
        local,
        "local program",
        session,
        registry,
        &format!("connection from {peer}, session to {server}"),
        true,
    );
}
