//! `rtcp client`: plain TCP connections in from local programs, one robust session out
//! to the `rtcp server` for each.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use robust_tcp::Config;

use crate::metrics::Failure;
use crate::relay::{self, STOPPING};
use crate::request::Request;
use crate::secure::{Channel, Security};
use crate::status::Registry;
use crate::Fatal;
use crate::{addr, limits, listen, proxy, tunnel};

/// Serves until the process is stopped; returns only on a fatal error. `listen` takes
/// connections to tunnel to the server's `--forward` target, `socks` SOCKS5 requests
/// (at least one of them is given).
pub fn run(
    listen: Option<&str>,
    socks: Option<&str>,
    server: &str,
    security: Security,
    config: Config,
    retry: Duration,
    registry: Arc<Registry>,
) -> Result<(), Fatal> {
    let addrs =
        addr::resolve(server).map_err(|e| Fatal(format!("bad --server address {server}: {e}")))?;
    let tunnels = listen.map(bind).transpose()?;
    let proxies = socks.map(bind).transpose()?;
    let upstream = Arc::new(Upstream {
        name: server.to_owned(),
        addrs,
        security,
        config,
        retry,
        registry,
    });
    let handler = |serve: fn(TcpStream, SocketAddr, &Upstream)| -> Arc<Handler> {
        let upstream = Arc::clone(&upstream);
        Arc::new(move |stream, peer| serve(stream, peer, &upstream))
    };
    if let Some(listener) = proxies {
        log::info!(
            "SOCKS5 on {}, sessions to {server}",
            socks.unwrap_or_default()
        );
        let serve_all = {
            let handler = handler(proxy::serve);
            move || accept_each(&listener, &handler)
        };
        if tunnels.is_none() {
            serve_all();
            return Ok(());
        }
        std::thread::Builder::new()
            .name("rtcp-socks".into())
            .spawn(serve_all)
            .map_err(|e| Fatal(format!("cannot start a thread: {e}")))?;
    }
    if let Some(listener) = tunnels {
        log::info!(
            "listening on {}, sessions to {server}",
            listen.unwrap_or_default()
        );
        accept_each(&listener, &handler(serve));
    }
    Ok(())
}

/// The rtcp server sessions are opened with, and what each session needs.
pub struct Upstream {
    /// The `--server` address as given, for the log.
    pub name: String,
    /// The addresses it resolved to at start.
    pub addrs: Vec<SocketAddr>,
    /// TLS, or not.
    pub security: Security,
    /// The sessions' settings.
    pub config: Config,
    /// How long an opening is retried while the server cannot be reached.
    pub retry: Duration,
    /// Where sessions are registered for the status line and a graceful stop.
    pub registry: Arc<Registry>,
}

impl Upstream {
    /// The server's addresses for a new session: the name resolved again, so that a
    /// server that moved (a DNS change) gets new sessions at its new address; the
    /// addresses found at start if the name does not resolve now. Live sessions follow a
    /// move through `follow`.
    pub fn resolve(&self) -> Vec<SocketAddr> {
        addr::resolve(&self.name).unwrap_or_else(|e| {
            log::debug!("{}: {e}; using the addresses found at start", self.name);
            self.addrs.clone()
        })
    }

    /// Opens a session (see [`tunnel::open`]) and runs its TLS handshake, or says why it
    /// could not, for the log; a failure is counted.
    pub fn open(&self) -> Result<Channel, String> {
        let addrs = self.resolve();
        let session =
            tunnel::open(&addrs, &self.config, self.retry, &self.registry).map_err(|e| {
                self.registry.metrics.failed(Failure::ServerUnreachable);
                format!(
                    "cannot open a session to {} (retried {:?}): {e}",
                    self.name, self.retry
                )
            })?;
        self.security.secure(session).map_err(|e| {
            self.registry.metrics.failed(tunnel::classify(false, &e));
            format!("session to {} failed: {}", self.name, limits::describe(&e))
        })
    }
}

/// What serves one accepted connection, on a thread of its own.
type Handler = dyn Fn(TcpStream, SocketAddr) + Send + Sync;

/// Binds a `--listen` or `--socks` address.
fn bind(spec: &str) -> Result<TcpListener, Fatal> {
    listen::addrs(spec)
        .and_then(|addrs| TcpListener::bind(&addrs[..]))
        .map_err(|e| Fatal(format!("cannot listen on {spec}: {e}")))
}

/// Accepts connections for ever, each served by `handler` on a thread of its own.
fn accept_each(listener: &TcpListener, handler: &Arc<Handler>) {
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
        let handler = Arc::clone(handler);
        let name = format!("rtcp-conn-{peer}");
        tunnel::spawn(name, format_args!("connection from {peer}"), move || {
            handler(stream, peer)
        });
    }
}

/// Opens a session for one local connection (retrying while the server cannot be
/// reached) and relays, or resets the connection if no session can be opened (at the TCP
/// connect, or when the server's answer or its reply fails the session during the relay):
/// the local program sees the failure as it would a refused connection, not as an empty
/// reply.
fn serve(local: TcpStream, peer: SocketAddr, upstream: &Upstream) {
    let server = &upstream.name;
    let channel = match upstream.open() {
        Ok(channel) => channel,
        Err(why) => {
            log::warn!("connection from {peer}: {why}; connection reset");
            relay::reset_tcp(&local);
            return;
        }
    };
    // The relay starts at once: the local program's first bytes follow the request header
    // (with TLS, right after the handshake's round trip), without waiting for the
    // server's reply.
    if let Err(e) = (&channel).write_all(&Request::Forward.encode()) {
        log::warn!("connection from {peer}: session to {server} failed: {e}; connection reset");
        relay::reset_tcp(&local);
        return;
    }
    log::info!("connection from {peer}: session to {server}");
    tunnel::run(
        local,
        "local program",
        channel,
        &upstream.registry,
        &format!("connection from {peer}, session to {server}"),
        true,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(name: &str) -> Upstream {
        Upstream {
            name: name.into(),
            addrs: vec![SocketAddr::from(([192, 0, 2, 1], 7000))],
            security: Security::Plaintext,
            config: Config::default(),
            retry: Duration::ZERO,
            registry: Arc::default(),
        }
    }

    #[test]
    fn each_session_resolves_the_server_again_or_falls_back() {
        let moved = upstream("127.0.0.1:7001");
        assert_eq!(
            moved.resolve(),
            vec![SocketAddr::from(([127, 0, 0, 1], 7001))]
        );
        let unresolvable = upstream("no-such-host.invalid:7000");
        assert_eq!(unresolvable.resolve(), unresolvable.addrs);
    }
}
