//! [`RServerSocket`]: accepts robust sessions, in place of `std::net::TcpListener`.

use std::fmt;
use std::io;
use std::iter::FusedIterator;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use mio::Token;

use crate::engine::server::{arrivals, ArrivalQueue, Empty, Listener};
use crate::engine::{engine, Command, EngineHandle};
use crate::{Config, RSocket};

/// A server of robust sessions, like [`std::net::TcpListener`].
///
/// Each new session gets a connection identifier (CID). Reconnections of existing sessions
/// are handled inside the library, whether or not the application calls `accept` again.
/// Dropping the `RServerSocket` (its last handle) refuses new sessions; the listening port stays open while
/// any of its sessions lives, so that they can still reconnect.
///
/// # Examples
///
/// ```no_run
/// use std::io::{Read, Write};
/// use robust_tcp::RServerSocket;
///
/// # fn main() -> std::io::Result<()> {
/// let server = RServerSocket::bind("127.0.0.1:7000")?;
/// for sock in server.incoming() {
///     let mut sock = sock?;
///     std::thread::spawn(move || {
///         let mut buf = [0; 4096];
///         while let Ok(n) = sock.read(&mut buf) {
///             if n == 0 || sock.write_all(&buf[..n]).is_err() {
///                 break;
///             }
///         }
///     });
/// }
/// # Ok(())
/// # }
/// ```
pub struct RServerSocket {
    /// Shared by the handles [`try_clone`](Self::try_clone) makes.
    inner: Arc<Listening>,
}

/// What the handles on one listener share; the listener stops taking new sessions when
/// it goes.
struct Listening {
    id: Token,
    local_addr: SocketAddr,
    accepted: ArrivalQueue,
    engine: Arc<EngineHandle>,
    /// The listener's: cleared on drop (see `Listener::open_flag`).
    open: Arc<AtomicBool>,
    /// A second descriptor of the listening socket, which the engine owns: its socket
    /// options and pending error, read and set from the application's thread.
    socket: TcpListener,
    /// `accept` returns `WouldBlock` rather than wait.
    nonblocking: AtomicBool,
    /// The listener's count of new sessions refused as full.
    refused_full: Arc<AtomicU64>,
}

impl RServerSocket {
    /// Listens on `addr` with the default [`Config`]. Port 0 picks a free port; see
    /// [`local_addr`](Self::local_addr).
    ///
    /// # Errors
    ///
    /// The error of binding the TCP listener or the process's UDP control socket.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = robust_tcp::RServerSocket::bind("127.0.0.1:0")?;
    /// println!("listening on {}", server.local_addr()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<RServerSocket> {
        RServerSocket::bind_with(addr, Config::default())
    }

    /// Listens on `addr` with `config`, which applies to every session of this server.
    ///
    /// # Errors
    ///
    /// As [`bind`](Self::bind), and `InvalidInput` for a config that makes no sense (see
    /// [`Config::validate`]).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use robust_tcp::{Config, RServerSocket};
    ///
    /// let server = RServerSocket::bind_with("127.0.0.1:0", Config::default().max_sessions(64))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind_with<A: ToSocketAddrs>(addr: A, config: Config) -> io::Result<RServerSocket> {
        config.validate()?;
        let engine = engine()?;
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let options = listener.try_clone()?;
        let socket = mio::net::TcpListener::from_std(listener);
        let id = engine.new_token();
        let (queue, accepted) = arrivals();
        let control = engine.control_on(socket.local_addr()?.ip(), config.control_port_value())?;
        let listener = Listener::new(id, socket, config, queue, control)?;
        let local_addr = listener.local_addr;
        let open = listener.open_flag();
        let refused_full = listener.refused_full();
        engine.send(Command::Listen(Box::new(listener)));
        Ok(RServerSocket {
            inner: Arc::new(Listening {
                id,
                local_addr,
                accepted,
                engine,
                open,
                socket: options,
                nonblocking: AtomicBool::new(false),
                refused_full,
            }),
        })
    }

    /// Waits for a new session and returns it with the client's address.
    ///
    /// A session is returned once its client has confirmed it; reconnections of existing
    /// sessions never show up here. Each new session goes to one `accept`, on whichever
    /// handle of the listener ([`try_clone`](Self::try_clone)) asks first.
    ///
    /// # Errors
    ///
    /// `WouldBlock` in non-blocking mode when no new session waits. Otherwise none in
    /// practice: the engine outlives every `RServerSocket`. The `Result` mirrors
    /// `TcpListener::accept`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = robust_tcp::RServerSocket::bind("127.0.0.1:7000")?;
    /// let (sock, client) = server.accept()?;
    /// println!("session {} from {client}", sock.session_id());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn accept(&self) -> io::Result<(RSocket, SocketAddr)> {
        let inner = &self.inner;
        let arrival = if inner.nonblocking.load(Ordering::Relaxed) {
            inner.accepted.try_recv().map_err(|e| match e {
                Empty::Now => io::Error::from(io::ErrorKind::WouldBlock),
                Empty::ForGood => engine_stopped(),
            })
        } else {
            inner.accepted.recv().ok_or_else(engine_stopped)
        };
        arrival.map(|arrival| (arrival.socket, arrival.client))
    }

    /// An iterator over new sessions, as [`accept`](Self::accept) returns them. It never
    /// returns `None`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = robust_tcp::RServerSocket::bind("127.0.0.1:7000")?;
    /// for sock in server.incoming() {
    ///     let sock = sock?;
    ///     std::thread::spawn(move || drop(sock));
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { server: self }
    }

    /// How many new sessions this server refused because it was full
    /// ([`Config::max_sessions`], or [`Config::max_sessions_per_address`] for the client's
    /// address) and had no vanished client's session to evict. Each refused attempt
    /// counts: a client retrying within its [`Config::busy_limit`] counts once per try.
    /// The clients see [`Error::Refused`](crate::Error::Refused); this lets the server's
    /// operator see it too.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = robust_tcp::RServerSocket::bind("127.0.0.1:0")?;
    /// assert_eq!(server.refused_as_full(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn refused_as_full(&self) -> u64 {
        self.inner.refused_full.load(Ordering::Relaxed)
    }

    /// The address the server listens on: the one clients connect to.
    ///
    /// # Errors
    ///
    /// None today; the `Result` mirrors `TcpListener::local_addr`.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = robust_tcp::RServerSocket::bind("127.0.0.1:0")?;
    /// assert_ne!(server.local_addr()?.port(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.inner.local_addr)
    }

    /// Another handle on the same listener: `accept` on either returns the next new
    /// session. The listener stops taking new sessions once every handle is dropped.
    ///
    /// # Errors
    ///
    /// None today; the `Result` mirrors `TcpListener::try_clone`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = robust_tcp::RServerSocket::bind("127.0.0.1:7000")?;
    /// let other = server.try_clone()?;
    /// std::thread::spawn(move || other.accept());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_clone(&self) -> io::Result<RServerSocket> {
        Ok(RServerSocket {
            inner: Arc::clone(&self.inner),
        })
    }

    /// Moves the listener in or out of non-blocking mode, for every handle on it:
    /// [`accept`](Self::accept) (and [`incoming`](Self::incoming)) then return
    /// `WouldBlock` when no new session waits. The listener's handshakes and its sessions'
    /// reconnections go on in the library's thread either way.
    ///
    /// # Errors
    ///
    /// None today; the `Result` mirrors `TcpListener::set_nonblocking`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = robust_tcp::RServerSocket::bind("127.0.0.1:7000")?;
    /// server.set_nonblocking(true)?;
    /// match server.accept() {
    ///     Ok((sock, client)) => println!("{client}"),
    ///     Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => println!("nobody yet"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.nonblocking.store(nonblocking, Ordering::Relaxed);
        Ok(())
    }

    /// Sets `IP_TTL` on the listening socket. Connections it accepts from then on inherit
    /// it (on Linux, as with `TcpListener`): new sessions' first connections and the
    /// reconnections of every session of this listener, unless the session set its own
    /// with [`RSocket::set_ttl`]. Connections already in use keep theirs.
    ///
    /// # Errors
    ///
    /// The system's error, as `TcpListener::set_ttl`'s.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = robust_tcp::RServerSocket::bind("127.0.0.1:7000")?;
    /// server.set_ttl(64)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.socket.set_ttl(ttl)
    }

    /// `IP_TTL` of the listening socket.
    ///
    /// # Errors
    ///
    /// The system's error, as `TcpListener::ttl`'s.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = robust_tcp::RServerSocket::bind("127.0.0.1:7000")?;
    /// println!("TTL {}", server.ttl()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.socket.ttl()
    }

    /// The listening socket's pending error (`SO_ERROR`), cleared once read, as
    /// `TcpListener::take_error`'s. Errors of accepting (`EMFILE`, say) are not reported
    /// here: the library pauses the listener and tries again (see `docs/ARCHITECTURE.md`).
    ///
    /// # Errors
    ///
    /// The system's error reading the option.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = robust_tcp::RServerSocket::bind("127.0.0.1:7000")?;
    /// assert!(server.take_error()?.is_none());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.socket.take_error()
    }
}

fn engine_stopped() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the robust-tcp engine stopped")
}

impl Drop for Listening {
    fn drop(&mut self) {
        // New sessions are refused from now on, whenever the engine reads their HELLO.
        self.open.store(false, Ordering::SeqCst);
        // Sessions nobody accepted close now, as they would if accepted and dropped.
        while self.accepted.try_recv().is_ok() {}
        self.engine.send(Command::Unlisten(self.id));
    }
}

impl fmt::Debug for RServerSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RServerSocket")
            .field("local_addr", &self.inner.local_addr)
            .finish()
    }
}

/// The iterator of [`RServerSocket::incoming`]: yields every new session and never ends.
#[derive(Debug)]
#[must_use = "iterators are lazy and do nothing unless consumed"]
pub struct Incoming<'a> {
    server: &'a RServerSocket,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<RSocket>;

    fn next(&mut self) -> Option<io::Result<RSocket>> {
        Some(self.server.accept().map(|(sock, _)| sock))
    }
}

impl FusedIterator for Incoming<'_> {}
