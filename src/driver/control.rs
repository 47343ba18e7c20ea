//! The process's control plane: one UDP socket and one thread that serve every session,
//! client and server alike (paper section 4.1).
//!
//! The thread decodes each datagram, finds its session by (our role, CID, peer IP) and
//! applies the message to the session's core under the session's lock; the session then
//! sends what the core queued and wakes whoever waits. Nothing a peer sends can make it
//! panic: a datagram that does not decode, or names no session, is logged and dropped.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::thread;

use parking_lot::Mutex;

use super::session::Shared;
use crate::core::control::{ControlKind, ControlMessage, MAX_LEN};
use crate::core::session::Role;

/// Identifies a session to the control thread: our role in it, its CID, and the peer's IP.
pub(crate) type SessionKey = (Role, u32, IpAddr);

/// The shared UDP socket and the sessions it serves.
pub(crate) struct ControlPlane {
    socket: UdpSocket,
    port: u16,
    /// The socket is IPv6 (dual-stack): IPv4 peers are reached through mapped addresses.
    dual_stack: bool,
    sessions: Mutex<HashMap<SessionKey, Arc<Shared>>>,
}

/// The process's control plane, started on first use.
///
/// # Errors
///
/// Binding the UDP socket or spawning the control thread failed; the next call tries again.
pub(crate) fn plane() -> io::Result<Arc<ControlPlane>> {
    static PLANE: Mutex<Option<Arc<ControlPlane>>> = Mutex::new(None);
    let mut slot = PLANE.lock();
    if let Some(plane) = &*slot {
        return Ok(Arc::clone(plane));
    }
    let plane = ControlPlane::start()?;
    *slot = Some(Arc::clone(&plane));
    Ok(plane)
}

impl ControlPlane {
    fn start() -> io::Result<Arc<Self>> {
        // A dual-stack socket serves IPv4 and IPv6 sessions alike; where IPv6 is off,
        // fall back to IPv4 alone.
        let (socket, dual_stack) = match UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)) {
            Ok(s) => (s, true),
            Err(_) => (UdpSocket::bind(("0.0.0.0", 0))?, false),
        };
        let port = socket.local_addr()?.port();
        let plane = Arc::new(ControlPlane {
            socket,
            port,
            dual_stack,
            sessions: Mutex::new(HashMap::new()),
        });
        let runner = Arc::clone(&plane);
        thread::Builder::new()
            .name("robust-tcp-control".into())
            .spawn(move || runner.run())?;
        log::debug!("control plane on UDP port {port}");
        Ok(plane)
    }

    /// The UDP port peers send control messages to.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Routes control messages for `key` to `session`. Returns `false` if another session
    /// holds the key already.
    pub(crate) fn register(&self, key: SessionKey, session: Arc<Shared>) -> bool {
        let mut sessions = self.sessions.lock();
        if sessions.contains_key(&key) {
            return false;
        }
        sessions.insert(key, session);
        true
    }

    /// Stops routing messages for `key`.
    pub(crate) fn unregister(&self, key: &SessionKey) {
        self.sessions.lock().remove(key);
    }

    /// Sends one datagram; a failure is only logged, since the protocol copes with loss.
    pub(crate) fn send(&self, msg: &ControlMessage, to: SocketAddr) {
        let mut buf = [0u8; MAX_LEN];
        let n = msg.encode(&mut buf);
        let to = match to {
            SocketAddr::V4(v4) if self.dual_stack => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            other => other,
        };
        if let Err(e) = self.socket.send_to(&buf[..n], to) {
            log::debug!("control message to {to} not sent: {e}");
        }
    }

    fn run(&self) {
        let mut buf = [0u8; 64];
        loop {
            let (n, from) = match self.socket.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors from earlier sends show up here on some systems.
                    log::debug!("control socket: {e}");
                    continue;
                }
            };
            let Some(datagram) = buf.get(..n) else {
                continue;
            };
            match ControlMessage::parse(datagram) {
                Ok(msg) => self.dispatch(&msg, canonical(from)),
                Err(e) => log::debug!("dropped a datagram from {from}: {e}"),
            }
        }
    }

    fn dispatch(&self, msg: &ControlMessage, from: SocketAddr) {
        let ours = if msg.from_server {
            Role::Client
        } else {
            Role::Server
        };
        let key = (ours, msg.cid, from.ip());
        let (session, known_elsewhere) = {
            let sessions = self.sessions.lock();
            match sessions.get(&key) {
                Some(session) => (Some(Arc::clone(session)), false),
                // A client that moved sends from its new address until it reconnects:
                // its session is not gone, so its messages must not be confirmed here.
                None => (
                    None,
                    sessions.keys().any(|&(r, c, _)| r == ours && c == msg.cid),
                ),
            }
        };
        match session {
            Some(session) => session.handle_control(msg),
            // Not RECONNECT: it can reach a new client session before the client has
            // registered it, and must then be repeated, not confirmed.
            None if msg.kind.needs_conf()
                && !known_elsewhere
                && !matches!(msg.kind, ControlKind::Reconnect(_)) =>
            {
                // The session is gone here (our confirmation was lost, or it ended): confirm
                // anyway, so that the sender stops repeating a message that has no one
                // left to act on it.
                let conf = ControlMessage {
                    cid: msg.cid,
                    from_server: ours == Role::Server,
                    id: msg.id,
                    kind: ControlKind::Conf,
                };
                self.send(&conf, from);
            }
            None => log::debug!(
                "dropped {:?} for unknown session {} from {from}",
                msg.kind,
                msg.cid
            ),
        }
    }
}

/// `addr` with an IPv4-mapped IPv6 address turned back into IPv4, so that one peer has one
/// key whichever socket family saw it.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
