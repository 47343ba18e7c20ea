//! The server side, run by the engine: listeners, accepting (with a pause on resource
//! errors), and `accept`'s queue. The handshake of every incoming TCP connection, new
//! session (paper Fig. 3) or reconnection (Fig. 4), runs on non-blocking sockets in
//! [`handshake`], a resumption's answer and CONFIRM in [`resume`]. What each HELLO gets,
//! the caps, eviction and tombstones are the I/O-free [`ServerEndpoint`]'s decisions; the
//! engine reads and writes the frames, makes the sessions and carries the verdicts out.
//!
//! A listener outlives its `RServerSocket`: while any of its sessions lives,
//! reconnections must still find the port open. New sessions are refused once the
//! `RServerSocket` is gone; the listener closes with the last session.

mod arrivals;
mod handshake;
mod resume;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Interest, Token};

use super::control::{canonical, ControlSocket};
use super::Engine;
use crate::core::auth::Nonce;
use crate::core::endpoint::server::{ServerEndpoint, ServerLimits};
use crate::{Config, RSocket};

pub(crate) use self::arrivals::{arrivals, ArrivalQueue, ArrivalSender, Empty};
pub(crate) use self::handshake::ServerHandshake;

/// How long a listener pauses after an accept error that retrying at once cannot fix (no
/// descriptors or memory left, say).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// A new session for `accept`.
pub(crate) struct Arrival {
    /// The session: an `RSocket`, so that a session nobody accepts closes when the queue
    /// is dropped.
    pub(crate) socket: RSocket,
    /// The client's address.
    pub(crate) client: SocketAddr,
}

/// A listening socket and the sessions it opened.
pub(crate) struct Listener {
    pub(crate) id: Token,
    pub(crate) socket: TcpListener,
    pub(crate) local_addr: SocketAddr,
    pub(crate) config: Config,
    pub(crate) accepted: ArrivalSender,
    /// The UDP socket its sessions' control datagrams use (its port is in every ANSWER).
    pub(crate) control: Arc<ControlSocket>,
    /// Whether the `RServerSocket` still exists (new sessions are welcome). Its drop
    /// clears it at once, before the engine hears of the drop: a HELLO the engine reads
    /// after the drop returned is refused even if it came before that command.
    open: Arc<AtomicBool>,
    /// How many new sessions it refused as full, for its `RServerSocket` to read.
    refused_full: Arc<AtomicU64>,
    /// Its sessions and handshakes, and every decision about them.
    endpoint: ServerEndpoint<Token, Token>,
    /// Set while accepting is paused after a resource error.
    paused_until: Option<Instant>,
}

impl Listener {
    /// The flag its `RServerSocket` clears when dropped.
    pub(crate) fn open_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.open)
    }

    /// The count of new sessions refused as full, which its `RServerSocket` reads.
    pub(crate) fn refused_full(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.refused_full)
    }

    /// Counts a new session refused as full.
    pub(super) fn count_refused_full(&self) {
        self.refused_full.fetch_add(1, Ordering::Relaxed);
    }

    fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    /// A listener for the engine, from a bound non-blocking socket.
    pub(crate) fn new(
        id: Token,
        socket: TcpListener,
        config: Config,
        accepted: ArrivalSender,
        control: Arc<ControlSocket>,
    ) -> io::Result<Self> {
        Ok(Listener {
            id,
            local_addr: socket.local_addr()?,
            socket,
            accepted,
            control,
            open: Arc::new(AtomicBool::new(true)),
            refused_full: Arc::new(AtomicU64::new(0)),
            endpoint: ServerEndpoint::new(ServerLimits::new(&config)),
            paused_until: None,
            config,
        })
    }
}

impl Engine {
    /// Serves a new listener.
    pub(super) fn listen(&mut self, mut listener: Listener) {
        let id = listener.id;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut listener.socket, id, Interest::READABLE)
        {
            log::error!("cannot serve {}: {e}", listener.local_addr);
            return;
        }
        self.listeners.insert(id, listener);
        // Connections may have queued before the registration.
        self.accept(id);
    }

    /// The `RServerSocket` was dropped: refuse new sessions; close once none is left.
    pub(super) fn unlisten(&mut self, id: Token) {
        self.close_if_done(id);
    }

    /// A session of listener `id` ended: free its slot (see [`ServerEndpoint::ended`]).
    pub(super) fn forget_session(&mut self, id: Token, cid: u32, client_knows_cid: bool) {
        if let Some(listener) = self.listeners.get_mut(&id) {
            listener
                .endpoint
                .ended(cid, client_knows_cid, Instant::now());
        }
        self.close_if_done(id);
    }

    fn close_if_done(&mut self, id: Token) {
        let done = self
            .listeners
            .get(&id)
            .is_some_and(|l| !l.is_open() && l.endpoint.session_count() == 0);
        if !done {
            return;
        }
        if let Some(mut listener) = self.listeners.remove(&id) {
            self.timers.set(id, None);
            let _ = self.poll.registry().deregister(&mut listener.socket);
            for token in listener.endpoint.take_handshakes() {
                self.drop_handshake(token);
            }
            log::debug!("server on {} stopped listening", listener.local_addr);
        }
    }

    /// Accepts the connections waiting on listener `id`, up to the round's budget.
    pub(super) fn accept(&mut self, id: Token) {
        for _ in 0..super::ROUND_BUDGET {
            let Some(listener) = self.listeners.get_mut(&id) else {
                return;
            };
            if listener.paused_until.is_some() {
                return;
            }
            match listener.socket.accept() {
                Ok((stream, peer)) => self.start_handshake(id, stream, canonical(peer)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // The connection died in the backlog: the next one is fine.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                    ) =>
                {
                    log::debug!("accept on {}: {e}", listener.local_addr)
                }
                Err(e) => {
                    // Out of descriptors or memory, or worse: the connection stays
                    // queued in the kernel, and an edge-triggered poll will not report it
                    // again. Come back after a pause instead of spinning on the error.
                    log::warn!("accept on {}: {e}; pausing", listener.local_addr);
                    let until = Instant::now() + ACCEPT_PAUSE;
                    listener.paused_until = Some(until);
                    self.timers.set(id, Some(until));
                    return;
                }
            }
        }
        self.backlog.push(id);
    }

    /// A listener's pause is over.
    pub(super) fn resume_listening(&mut self, id: Token) {
        if let Some(listener) = self.listeners.get_mut(&id) {
            listener.paused_until = None;
            self.accept(id);
        }
    }

    /// Hands a new session to `accept`.
    fn deliver(&mut self, listener: Token, session: Token, client: SocketAddr) {
        let (Some(l), Some(entry)) = (self.listeners.get(&listener), self.sessions.get(&session))
        else {
            return;
        };
        let socket = RSocket::from_shared(std::sync::Arc::clone(&entry.shared));
        // If the server socket is gone, the returned session is dropped here and closes.
        l.accepted.send(Arrival { socket, client });
        self.service(session);
    }

    /// A client's EARLY datagram of `len` bytes from `from` names the opening whose HELLO
    /// carries `opening_nonce`: it goes to the session opened from that HELLO, or waits
    /// for it (the HELLO, on another path, may not have been read yet). Sessions of two
    /// listeners opened with one nonce (a key-agreement HELLO proves nothing, so one may be
    /// a copy) are an ambiguity it does not resolve: neither gets it.
    pub(super) fn early(&mut self, opening_nonce: Nonce, len: usize, from: SocketAddr) {
        let mut opened = self
            .listeners
            .values()
            .filter_map(|listener| listener.endpoint.opened_by(&opening_nonce));
        match (opened.next(), opened.next()) {
            (Some(id), None) => {
                if let Some(entry) = self.sessions.get(&id) {
                    entry.shared.handle_early(from, len);
                }
            }
            (None, _) => self
                .unclaimed
                .keep(opening_nonce, from, len, Instant::now()),
            (Some(_), Some(_)) => log::debug!("an EARLY datagram from {from} names two sessions"),
        }
    }
}
