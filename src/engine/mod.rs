//! The engine: the process's one library thread, serving every session, client and server
//! alike (paper section 4.1: "Using few threads is essential").
//!
//! It runs a [`mio::Poll`] over non-blocking sockets and owns:
//! - the UDP control socket: it receives every control datagram and applies it to its
//!   session ([`control`]; over TCP where UDP does not get through, [`tcp_control`]);
//! - every listener of every [`RServerSocket`](crate::RServerSocket), and the server side of
//!   every handshake, opening or reconnection ([`server`]);
//! - the client side of every handshake: opening a session for a caller blocked in
//!   `connect` (until its TCP connect completes) and reading the server's answer, and
//!   reconnecting a session whose connection failed ([`client`]);
//! - the handshakes in progress, each under its deadline ([`handshakes`]);
//! - one timer heap for everything that is due later: the sessions' retransmissions,
//!   acknowledgement requests, give-up and lingering, handshake deadlines, reconnection
//!   backoff, paused listeners ([`timers`]); a session's timers and duties are looked at
//!   in [`service`];
//! - the resend of bytes that a connection lacks when no application writer sends them
//!   (after a reconnection, or when a writer's timeout cut its write short; in
//!   `session/resend.rs`).
//!
//! This file holds the engine's types, its thread and loop, and the commands.
//!
//! Application threads do their own reads and writes on the TCP connection, in blocking
//! mode, and talk to the engine through [`EngineHandle`]: a command channel and a
//! [`mio::Waker`]. The session state they share is [`session::SharedSession`].

pub(crate) mod client;
pub(crate) mod conn;
mod control;
mod frames;
mod handshakes;
mod local_addrs;
pub(crate) mod plain;
pub(crate) mod server;
mod service;
pub(crate) mod session;
mod tcp_control;
mod timers;
mod token_map;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;

use self::control::{ControlSocket, RouteKey, Routes};
use self::handshakes::Handshake;
use self::local_addrs::LocalAddrs;
use self::server::Listener;
use self::session::SharedSession;
use self::tcp_control::{TcpControl, TcpRoute};
use self::timers::TimerQueue;
use self::token_map::TokenMap;
use crate::core::endpoint::early::{ControlMemo, Unclaimed};
use crate::core::endpoint::held::Unrouted;
use crate::core::endpoint::redial::Redial;
use crate::core::session::Role;

const WAKER: Token = Token(0);
const CONTROL: Token = Token(1);
/// The first token handed out for listeners, handshakes and sessions.
const FIRST_TOKEN: usize = 2;

thread_local! {
    /// Set on the engine thread, which needs no wake-up to look at a session.
    static ON_ENGINE: Cell<bool> = const { Cell::new(false) };
    /// Sessions whose duties changed while the engine thread was working on them: the
    /// engine looks at each before it sleeps again, whichever call changed them.
    static DIRTY: RefCell<Vec<Token>> = const { RefCell::new(Vec::new()) };
}

/// Whether the calling thread is the engine.
pub(crate) fn on_engine_thread() -> bool {
    ON_ENGINE.with(Cell::get)
}

/// On the engine thread: session `id`'s timers or duties changed.
pub(crate) fn mark_dirty(id: Token) {
    DIRTY.with(|d| d.borrow_mut().push(id));
}

/// The process's engine, once started (and until it stops, which only a bug can make it).
static ENGINE: Mutex<Option<Arc<EngineHandle>>> = Mutex::new(None);

/// What application threads ask of the engine.
pub(crate) enum Command {
    /// A session's timers or duties changed.
    Poke(Token),
    /// A session's connection lacks bytes that no application writer is sending.
    Flush(Token),
    /// Serve a new listener.
    Listen(Box<Listener>),
    /// An `RServerSocket` was dropped: refuse new sessions on it.
    Unlisten(Token),
    /// Take over a session its caller opened: read its ANSWER, keep it.
    Adopt(Box<client::Opened>),
    /// Receive on a control socket a server bound (a fixed port, or its listener's address).
    ServeControl(Arc<ControlSocket>),
    /// Send a control datagram on a TCP control connection.
    ControlOverTcp(Token, Vec<u8>),
    /// A client session's later attempts go to this address.
    Redirect(Token, SocketAddr),
}

/// The application threads' side of the engine.
pub(crate) struct EngineHandle {
    commands: Sender<Command>,
    waker: Waker,
    /// Whether a wake-up is already on its way (saves a system call per command).
    wake_pending: AtomicBool,
    /// The process's shared control socket: every client session's, and the servers'
    /// that listen on every address and fix no port.
    control: Arc<ControlSocket>,
    /// Control sockets servers bound, by address (unspecified: every address) and port (0:
    /// one the system picked): on the ports servers fixed (`Config::control_port`), or on
    /// the one address a server listens on. Kept for the life of the process once bound: a
    /// process binds few, and may bind a server again.
    fixed: Mutex<HashMap<(IpAddr, u16), Arc<ControlSocket>>>,
    /// Destinations whose datagrams go over a TCP control connection (the token).
    tcp_routes: Mutex<HashMap<TcpRoute, Token>>,
    /// Whether `tcp_routes` may hold anything: spares senders its lock while it does not.
    tcp_routed: AtomicBool,
    /// The control address each server named last (its clients' EARLY datagrams go
    /// there): read by callers opening sessions, written by the engine.
    control_memo: Mutex<ControlMemo>,
    next_token: AtomicUsize,
}

/// The process's engine, started on first use.
///
/// # Errors
///
/// Creating the poll, binding the UDP socket or spawning the thread failed; the next call
/// tries again.
pub(crate) fn engine() -> io::Result<Arc<EngineHandle>> {
    let mut slot = ENGINE.lock();
    if let Some(handle) = &*slot {
        return Ok(Arc::clone(handle));
    }
    let handle = Engine::start()?;
    *slot = Some(Arc::clone(&handle));
    Ok(handle)
}

impl EngineHandle {
    /// The shared control socket.
    pub(crate) fn control(&self) -> &Arc<ControlSocket> {
        &self.control
    }

    /// The control socket for a server listening on `ip`, on `port`: bound now (and served
    /// by the engine from then on) if this process has none there yet. A server that
    /// listens on one address gets a control socket on that address only, so that a
    /// server kept to loopback (say) takes no datagrams from other interfaces; `None` on
    /// every address: the shared one.
    ///
    /// # Errors
    ///
    /// Binding the port failed (it is taken, say).
    pub(crate) fn control_on(
        &self,
        ip: IpAddr,
        port: Option<u16>,
    ) -> io::Result<Arc<ControlSocket>> {
        // 0.0.0.0 and :: both mean the one dual-stack socket on every address.
        let ip = if ip.is_unspecified() {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            ip.to_canonical()
        };
        if ip.is_unspecified() && port.is_none() {
            return Ok(Arc::clone(&self.control));
        }
        let key = (ip, port.unwrap_or(0));
        let mut fixed = self.fixed.lock();
        if let Some(socket) = fixed.get(&key) {
            return Ok(Arc::clone(socket));
        }
        let socket = Arc::new(ControlSocket::bind(ip, key.1)?);
        fixed.insert(key, Arc::clone(&socket));
        self.send(Command::ServeControl(Arc::clone(&socket)));
        Ok(socket)
    }

    /// Sends a control datagram of a session in which we are `role` to `to`: over the TCP
    /// control connection that carries that destination's datagrams if there is one
    /// (through the engine, which owns it), else on `socket`.
    pub(crate) fn send_control(
        &self,
        role: Role,
        socket: &ControlSocket,
        datagram: &[u8],
        to: SocketAddr,
    ) {
        if self.tcp_routed.load(Ordering::Relaxed) {
            let token = self
                .tcp_routes
                .lock()
                .get(&TcpRoute { role, peer: to })
                .copied();
            if let Some(token) = token {
                self.send(Command::ControlOverTcp(token, datagram.to_vec()));
                return;
            }
        }
        socket.send(datagram, to);
    }

    /// Whether datagrams to `to`, in sessions where we are `role`, go over TCP.
    pub(crate) fn routed_over_tcp(&self, role: Role, to: SocketAddr) -> bool {
        self.tcp_routed.load(Ordering::Relaxed)
            && self
                .tcp_routes
                .lock()
                .contains_key(&TcpRoute { role, peer: to })
    }

    /// Routes `route`'s datagrams over TCP control connection `token`.
    fn route_over_tcp(&self, route: TcpRoute, token: Token) {
        self.tcp_routes.lock().insert(route, token);
        self.tcp_routed.store(true, Ordering::Relaxed);
    }

    /// Stops routing `route` over connection `token` (if it still is).
    fn unroute_tcp(&self, route: TcpRoute, token: Token) {
        let mut routes = self.tcp_routes.lock();
        if routes.get(&route) == Some(&token) {
            routes.remove(&route);
        }
    }

    /// A token no other listener, handshake or session has.
    pub(crate) fn new_token(&self) -> Token {
        Token(self.next_token.fetch_add(1, Ordering::Relaxed))
    }

    /// Sends `command` to the engine and wakes it if it may be asleep.
    pub(crate) fn send(&self, command: Command) {
        if self.commands.send(command).is_err() {
            log::error!("the robust-tcp engine is gone");
            return;
        }
        if !self.wake_pending.swap(true, Ordering::SeqCst) {
            if let Err(e) = self.waker.wake() {
                log::error!("cannot wake the robust-tcp engine: {e}");
            }
        }
    }

    /// Tells the engine that session `id`'s timers or duties changed.
    pub(crate) fn poke(&self, id: Token) {
        self.send(Command::Poke(id));
    }

    /// Asks the engine to send what session `id`'s connection lacks.
    pub(crate) fn flush(&self, id: Token) {
        self.send(Command::Flush(id));
    }

    /// Tells the engine that client session `id`'s later attempts go to `addr`.
    pub(crate) fn redirect(&self, id: Token, addr: SocketAddr) {
        self.send(Command::Redirect(id, addr));
    }
}

/// A session as the engine holds it.
struct Entry {
    shared: Arc<SharedSession>,
    route: RouteKey,
    /// The connection registered for writability while a resend waits for room; held so
    /// that its descriptor stays open until it is deregistered.
    flush_watch: Option<Arc<TcpStream>>,
    side: Side,
}

/// What the engine does for one end of a session.
enum Side {
    /// A client reconnects when its connection fails (and retries its opening until the
    /// server answers it).
    Client(Box<Redial<Token>>),
    /// A server session belongs to a listener, which knows the rest (its
    /// `ServerEndpoint`).
    Server { listener: Token },
}

/// The engine thread's state.
struct Engine {
    handle: Arc<EngineHandle>,
    poll: Poll,
    commands: Receiver<Command>,
    timers: TimerQueue,
    routes: Routes,
    sessions: TokenMap<Entry>,
    listeners: TokenMap<Listener>,
    handshakes: TokenMap<Handshake>,
    /// The control sockets served: the shared one, and those on fixed ports.
    controls: TokenMap<Arc<ControlSocket>>,
    /// Control connections over TCP, both ends.
    tcp_controls: TokenMap<TcpControl>,
    /// Which local addresses still exist, for the clients' connections.
    local_addrs: LocalAddrs,
    /// Sources that had more to give when their round's budget ran out (the control
    /// socket, listeners, a session's resend): served again next round, before the engine
    /// sleeps. With edge-triggered readiness nothing would report them again.
    backlog: Vec<Token>,
    /// EARLY datagrams whose HELLO was not read yet.
    unclaimed: Unclaimed,
    /// Datagrams from servers that came before the ANSWER giving their session its CID.
    unrouted: Unrouted,
}

/// How many datagrams, or connections of one listener, the engine takes per round, so
/// that a flood of one kind cannot starve the other work (handshakes, timers).
const ROUND_BUDGET: usize = 256;

impl Engine {
    fn start() -> io::Result<Arc<EngineHandle>> {
        let poll = Poll::new()?;
        let control = Arc::new(ControlSocket::bind(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)?);
        poll.registry()
            .register(&mut SourceFd(&control.fd()), CONTROL, Interest::READABLE)?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (commands, receiver) = crossbeam_channel::unbounded();
        let handle = Arc::new(EngineHandle {
            commands,
            waker,
            wake_pending: AtomicBool::new(false),
            control: Arc::clone(&control),
            fixed: Mutex::new(HashMap::new()),
            tcp_routes: Mutex::new(HashMap::new()),
            tcp_routed: AtomicBool::new(false),
            control_memo: Mutex::new(ControlMemo::default()),
            next_token: AtomicUsize::new(FIRST_TOKEN),
        });
        let mut engine = Engine {
            handle: Arc::clone(&handle),
            poll,
            commands: receiver,
            timers: TimerQueue::default(),
            routes: Routes::default(),
            sessions: TokenMap::default(),
            listeners: TokenMap::default(),
            handshakes: TokenMap::default(),
            controls: TokenMap::from_iter([(CONTROL, control)]),
            tcp_controls: TokenMap::default(),
            local_addrs: LocalAddrs::default(),
            backlog: Vec::new(),
            unclaimed: Unclaimed::default(),
            unrouted: Unrouted::default(),
        };
        thread::Builder::new()
            .name("robust-tcp-engine".into())
            .spawn(move || {
                ON_ENGINE.with(|on| on.set(true));
                let outcome = panic::catch_unwind(AssertUnwindSafe(|| engine.run()));
                if outcome.is_err() {
                    engine.stop();
                }
            })?;
        log::debug!("engine started; control port {}", handle.control.port());
        Ok(handle)
    }

    /// After a panic (a bug): fails every session, so that no application thread waits
    /// forever for an engine that is gone, and lets the next `connect` or `bind` start a
    /// new engine. Listeners close as the engine's state is dropped, which ends their
    /// `accept`; openings whose commands are dropped fail (see `client::Opened`).
    fn stop(&mut self) {
        log::error!("the robust-tcp engine stopped after a panic; failing its sessions");
        *ENGINE.lock() = None;
        for entry in self.sessions.values() {
            // A session the panic left half-updated may panic again: the others must
            // still be failed.
            let failed = panic::catch_unwind(AssertUnwindSafe(|| {
                entry.shared.fail(crate::Error::EngineStopped)
            }));
            if failed.is_err() {
                log::error!("session {}: could not be failed", entry.shared.cid());
            }
        }
        while self.commands.try_recv().is_ok() {}
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let dirty = DIRTY.with(|d| !d.borrow().is_empty());
            let timeout = if self.backlog.is_empty() && !dirty {
                self.timers
                    .next()
                    .map(|at| at.saturating_duration_since(Instant::now()))
            } else {
                Some(std::time::Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("engine poll failed: {e}");
                }
                continue;
            }
            for token in std::mem::take(&mut self.backlog) {
                self.on_ready(token);
            }
            for event in events.iter() {
                self.on_ready(event.token());
            }
            self.run_commands();
            self.run_timers();
            self.service_dirty();
        }
    }

    /// Looks at every session whose duties changed during this round. Looking at one may
    /// change another's, so it goes on a few passes; what is still
    /// dirty then waits for the next round, which does not sleep, so that no session can
    /// hold the engine.
    fn service_dirty(&mut self) {
        for _ in 0..4 {
            let dirty = DIRTY.with(|d| std::mem::take(&mut *d.borrow_mut()));
            if dirty.is_empty() {
                return;
            }
            for id in dirty {
                self.service(id);
            }
        }
    }

    fn run_commands(&mut self) {
        // Clear the flag first: a command sent after this wakes the poll again.
        self.handle.wake_pending.store(false, Ordering::SeqCst);
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Poke(id) => self.service(id),
                Command::Flush(id) => self.flush(id),
                Command::Listen(listener) => self.listen(*listener),
                Command::Unlisten(id) => self.unlisten(id),
                Command::Adopt(opened) => self.adopt_opening(*opened),
                Command::ServeControl(socket) => self.serve_control(socket),
                Command::ControlOverTcp(token, datagram) => self.send_over_tcp(token, &datagram),
                Command::Redirect(id, addr) => self.redirect(id, addr),
            }
        }
    }

    fn run_timers(&mut self) {
        let now = Instant::now();
        while let Some(token) = self.timers.pop_due(now) {
            if self.sessions.contains_key(&token) {
                self.service(token);
            } else if self.handshakes.contains_key(&token) {
                self.handshake_due(token);
            } else if self.listeners.contains_key(&token) {
                self.resume_listening(token);
            } else if self.tcp_controls.contains_key(&token) {
                self.expire_tcp_control(token, now);
            }
        }
    }

    /// A socket with `token` is ready.
    fn on_ready(&mut self, token: Token) {
        if token == WAKER {
            // The commands are run after the events.
        } else if let Some(socket) = self.controls.get(&token).cloned() {
            self.receive_control(token, &socket);
        } else if self.tcp_controls.contains_key(&token) {
            self.serve_tcp_control(token);
        } else if self.listeners.contains_key(&token) {
            self.accept(token);
        } else if self.handshakes.contains_key(&token) {
            self.advance_handshake(token);
        } else if self.sessions.contains_key(&token) {
            self.flush(token);
        }
    }

    fn new_token(&self) -> Token {
        self.handle.new_token()
    }
}

/// `N` random bytes from the operating system: nonces, session secrets, CIDs.
fn random<const N: usize>() -> io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).map_err(io::Error::other)?;
    Ok(bytes)
}

/// Turns a handshake's non-blocking stream into the blocking std stream the application
/// uses, and stops the engine watching it.
fn into_std(poll: &Poll, mut stream: mio::net::TcpStream) -> TcpStream {
    let _ = poll.registry().deregister(&mut stream);
    let stream = TcpStream::from(stream);
    // A failure here fails again on use, where it is reported.
    let _ = stream.set_nonblocking(false);
    stream
}
