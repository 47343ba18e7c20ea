//! The process's UDP control socket (paper section 4.1), the table that routes each
//! datagram to its session, and the engine's receiving and dispatch of datagrams.
//!
//! Any thread sends on the socket (a reader's ACK goes out from the reader's thread); only
//! the engine receives. A datagram is looked up by the CID and side it names, in O(1),
//! and handed to the session (or sessions: a client may hold the same CID from two
//! servers), which authenticates it. One that names no session, or that no session finds
//! authentic, is dropped without an answer (on a client, after a short wait for a session
//! that learns its CID from an ANSWER read after it: `core::endpoint::held::Unrouted`): nothing a peer sends can make the engine
//! panic, or make it send anything to an address it has not authenticated, but for a new
//! server session's allowance for the source of its opening's EARLY datagram (untagged,
//! handed to the listeners' endpoints: `Engine::early`).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use mio::net::UdpSocket;
use mio::unix::SourceFd;
use mio::{Interest, Token};
use socket2::{Domain, Protocol, Socket, Type};

use super::{Engine, ROUND_BUDGET};
use crate::core::control::{ControlMessage, MAX_LEN};
use crate::core::early;
use crate::core::session::Role;

/// A UDP control socket: the process's shared one, or one on a port a server fixed.
#[derive(Debug)]
pub(crate) struct ControlSocket {
    socket: UdpSocket,
    port: u16,
    /// The socket is IPv6 (dual-stack): IPv4 peers are reached through mapped addresses.
    dual_stack: bool,
}

impl ControlSocket {
    /// Binds UDP `port` (0: an ephemeral one) on `ip`, or, if `ip` is unspecified, on
    /// every address, IPv6 and IPv4 alike: a dual-stack IPv6 socket, with `IPV6_V6ONLY`
    /// cleared explicitly rather than left to the system's default; or an IPv4 one where
    /// IPv6 is off.
    pub(crate) fn bind(ip: IpAddr, port: u16) -> io::Result<Self> {
        if !ip.is_unspecified() {
            // One address of one family: its peers are of that family too.
            let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, port))?;
            socket.set_nonblocking(true)?;
            return Self::from_std(socket, false);
        }
        let (socket, dual_stack) = match dual_stack(port) {
            Ok(socket) => (socket, true),
            Err(v6) => {
                let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
                let socket = std::net::UdpSocket::bind(v4).map_err(|e| {
                    // The IPv4 error is the one to show, unless IPv4 is merely busy.
                    if e.kind() == io::ErrorKind::AddrInUse {
                        e
                    } else {
                        v6
                    }
                })?;
                socket.set_nonblocking(true)?;
                (socket, false)
            }
        };
        Self::from_std(socket, dual_stack)
    }

    /// Wraps a bound non-blocking socket.
    fn from_std(socket: std::net::UdpSocket, dual_stack: bool) -> io::Result<Self> {
        let port = socket.local_addr()?.port();
        Ok(ControlSocket {
            socket: UdpSocket::from_std(socket),
            port,
            dual_stack,
        })
    }

    /// The socket's descriptor, for registering it with the engine's poll.
    pub(crate) fn fd(&self) -> std::os::fd::RawFd {
        self.socket.as_raw_fd()
    }

    /// The UDP port peers send control messages to.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Sends one datagram; a failure (a full socket buffer, say) is only logged, since the
    /// protocol copes with loss.
    pub(crate) fn send(&self, datagram: &[u8], to: SocketAddr) {
        let to = match to {
            SocketAddr::V4(v4) if self.dual_stack => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            other => other,
        };
        if let Err(e) = self.socket.send_to(datagram, to) {
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

/// A non-blocking IPv6 UDP socket on `port` that takes IPv4 too.
fn dual_stack(port: u16) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_only_v6(false)?;
    socket.set_nonblocking(true)?;
    let any = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
    socket.bind(&any.into())?;
    Ok(socket.into())
}

/// Identifies a session to the control path. Servers give out CIDs unique in the process;
/// a client may get the same CID from two servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RouteKey {
    /// Our role in the session.
    pub(crate) role: Role,
    /// The session's CID (0 on a client until the server answers its opening).
    pub(crate) cid: u32,
}

/// Which sessions each control datagram may be for.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    by_key: HashMap<RouteKey, Vec<Token>>,
}

impl Routes {
    /// Routes `key` to `session` too.
    pub(crate) fn insert(&mut self, key: RouteKey, session: Token) {
        self.by_key.entry(key).or_default().push(session);
    }

    /// Stops routing `key` to `session`.
    pub(crate) fn remove(&mut self, key: &RouteKey, session: Token) {
        if let Some(sessions) = self.by_key.get_mut(key) {
            sessions.retain(|&s| s != session);
            if sessions.is_empty() {
                self.by_key.remove(key);
            }
        }
    }

    /// The sessions `key` names (almost always one, or none).
    pub(crate) fn get(&self, key: &RouteKey) -> &[Token] {
        self.by_key.get(key).map_or(&[], Vec::as_slice)
    }

    /// Whether a session holds `key`.
    pub(crate) fn contains(&self, key: &RouteKey) -> bool {
        self.by_key.contains_key(key)
    }
}

/// `addr` with an IPv4-mapped IPv6 address turned back into IPv4, so that one peer has one
/// key whichever socket family saw it.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

impl Engine {
    /// Starts receiving on a control socket on a fixed port.
    pub(super) fn serve_control(&mut self, socket: Arc<ControlSocket>) {
        let token = self.new_token();
        let registered =
            self.poll
                .registry()
                .register(&mut SourceFd(&socket.fd()), token, Interest::READABLE);
        match registered {
            Ok(()) => {
                self.controls.insert(token, Arc::clone(&socket));
                // Datagrams may have arrived before the registration.
                self.receive_control(token, &socket);
            }
            Err(e) => log::error!("cannot serve control port {}: {e}", socket.port()),
        }
    }

    /// Takes the datagrams waiting on a control socket, up to the round's budget.
    pub(super) fn receive_control(&mut self, token: Token, socket: &ControlSocket) {
        let mut buf = [0u8; RECEIVE_BUFFER];
        for _ in 0..ROUND_BUDGET {
            let Some((n, from)) = socket.recv(&mut buf) else {
                return;
            };
            if let Some(datagram) = buf.get(..n) {
                self.dispatch(datagram, from);
            }
        }
        self.backlog.push(token);
    }

    /// Hands a datagram to the session it names, which authenticates it; drops it,
    /// unanswered, if no session does. Returns whether a session took it as authentic. An
    /// EARLY datagram goes to the endpoint instead (`Engine::early`).
    pub(super) fn dispatch(&mut self, datagram: &[u8], from: std::net::SocketAddr) -> bool {
        if let Some(opening_nonce) = early::parse(datagram) {
            // It authenticates nothing: not taken (a control connection that carries only
            // these is not kept alive by them).
            self.early(opening_nonce, datagram.len(), from);
            return false;
        }
        let Some(route) = ControlMessage::route(datagram) else {
            log::trace!("dropped a short datagram from {from}");
            return false;
        };
        let key = RouteKey {
            // The role the datagram's sender gives us.
            role: if route.from_server {
                Role::Client
            } else {
                Role::Server
            },
            cid: route.cid,
        };
        if self.routes.contains(&key) {
            if self.deliver_datagram(datagram, from, &key) {
                return true;
            }
        } else if key.role == Role::Client {
            // Perhaps read before the ANSWER that gives its session this CID: kept for it
            // (`Engine::learned_cid`), so that the server need not send it again.
            self.unrouted
                .keep(route.cid, datagram, from, Instant::now());
            return false;
        }
        log::trace!("dropped a datagram from {from} for session {}", route.cid);
        false
    }

    /// Hands a datagram to the sessions `key` routes to, until one takes it as authentic;
    /// returns whether one did.
    fn deliver_datagram(&self, datagram: &[u8], from: SocketAddr, key: &RouteKey) -> bool {
        self.routes.get(key).iter().any(|id| {
            // If the message changed the session's duties, it is marked dirty and looked
            // at before the engine sleeps.
            self.sessions
                .get(id)
                .is_some_and(|entry| entry.shared.handle_datagram(datagram, from))
        })
    }

    /// A client session learned its CID `cid` from an ANSWER: the datagrams for it that
    /// came before are handed to it now, as if they had just arrived (one it does not
    /// take is dropped, not kept again).
    pub(super) fn learned_cid(&mut self, cid: u32) {
        let key = RouteKey {
            role: Role::Client,
            cid,
        };
        for held in self.unrouted.take(cid, Instant::now()) {
            self.deliver_datagram(held.bytes(), held.from, &key);
        }
    }
}

/// The receive buffer: longer than any datagram this version accepts, so that a longer
/// one is seen whole and refused for its length rather than truncated to a valid one.
const RECEIVE_BUFFER: usize = 64;
const _: () = assert!(MAX_LEN < RECEIVE_BUFFER);
