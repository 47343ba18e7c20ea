//! The process's UDP control socket (paper section 4.1) and the table that routes each
//! datagram to its session.
//!
//! Any thread sends on the socket (a reader's ACK goes out from the reader's thread); only
//! the engine receives. A datagram that does not decode, or names no session, is logged
//! and dropped: nothing a peer sends can make the engine panic.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use mio::net::UdpSocket;
use mio::Token;

use crate::core::control::{ControlMessage, MAX_LEN};
use crate::core::session::Role;

/// The shared UDP socket.
#[derive(Debug)]
pub(crate) struct ControlSocket {
    socket: UdpSocket,
    port: u16,
    /// The socket is IPv6 (dual-stack): IPv4 peers are reached through mapped addresses.
    dual_stack: bool,
}

impl ControlSocket {
    /// Binds a dual-stack socket on an ephemeral port, or an IPv4 one where IPv6 is off.
    pub(crate) fn bind() -> io::Result<Self> {
        let unspecified_v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0);
        let (socket, dual_stack) = match UdpSocket::bind(unspecified_v6) {
            Ok(s) => (s, true),
            Err(_) => {
                let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
                (UdpSocket::bind(v4)?, false)
            }
        };
        let port = socket.local_addr()?.port();
        Ok(ControlSocket {
            socket,
            port,
            dual_stack,
        })
    }

    /// The UDP port peers send control messages to.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The socket, for registering it with the engine's poll.
    pub(crate) fn source(&mut self) -> &mut UdpSocket {
        &mut self.socket
    }

    /// Sends one datagram; a failure (a full socket buffer, say) is only logged, since the
    /// protocol copes with loss.
    pub(crate) fn send(&self, msg: &ControlMessage, to: SocketAddr) {
        let mut buf = [0u8; MAX_LEN];
        let n = msg.encode(&mut buf);
        let to = match to {
            SocketAddr::V4(v4) if self.dual_stack => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            other => other,
        };
        if let Err(e) = self.socket.send_to(buf.get(..n).unwrap_or_default(), to) {
            log::debug!("control message to {to} not sent: {e}");
        }
    }

    /// Receives one datagram into `buf`: its length and canonical sender, `None` once the
    /// socket has nothing more.
    pub(crate) fn recv(&self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        loop {
            match self.socket.recv_from(buf) {
                Ok((n, from)) => return Some((n, canonical(from))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                // ICMP errors from earlier sends show up here on some systems.
                Err(e) => log::debug!("control socket: {e}"),
            }
        }
    }
}

/// Identifies a session to the control path: our role in it, its CID, and the peer's IP.
pub(crate) type RouteKey = (Role, u32, IpAddr);

/// Which session each control datagram is for.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    by_key: HashMap<RouteKey, Token>,
    /// How many routes each (role, CID) has, whatever the IP: a message for a CID known
    /// under another IP is for a client that moved and has not reconnected yet.
    per_cid: HashMap<(Role, u32), usize>,
}

impl Routes {
    /// Routes `key` to `session`. Returns `false` if another session holds the key.
    pub(crate) fn insert(&mut self, key: RouteKey, session: Token) -> bool {
        if self.by_key.contains_key(&key) {
            return false;
        }
        self.by_key.insert(key, session);
        *self.per_cid.entry((key.0, key.1)).or_default() += 1;
        true
    }

    /// Stops routing `key`.
    pub(crate) fn remove(&mut self, key: &RouteKey) {
        if self.by_key.remove(key).is_none() {
            return;
        }
        if let Some(n) = self.per_cid.get_mut(&(key.0, key.1)) {
            *n -= 1;
            if *n == 0 {
                self.per_cid.remove(&(key.0, key.1));
            }
        }
    }

    /// The session `key` names.
    pub(crate) fn get(&self, key: &RouteKey) -> Option<Token> {
        self.by_key.get(key).copied()
    }

    /// Whether a session of `role` with `cid` exists under any IP.
    pub(crate) fn knows_cid(&self, role: Role, cid: u32) -> bool {
        self.per_cid.contains_key(&(role, cid))
    }
}

/// `addr` with an IPv4-mapped IPv6 address turned back into IPv4, so that one peer has one
/// key whichever socket family saw it.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
