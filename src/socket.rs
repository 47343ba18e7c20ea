//! [`RSocket`]: a session endpoint, in place of `std::net::TcpStream`.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::client;
use crate::engine::conn::Conn;
use crate::engine::plain::PlainStream;
use crate::engine::session::SharedSession;
use crate::{Config, Status};

/// One end of a robust session: a byte stream like [`std::net::TcpStream`] that survives
/// the failure of the TCP connection under it.
///
/// When the connection fails, the client reconnects (with backoff, forever unless
/// [`Config::give_up_after`] says otherwise) and both sides resend what the other lacks:
/// every byte arrives exactly once and in order. Meanwhile reads and writes wait; they fail
/// only when the session itself ends: the peer reset it, the server forgot it (it
/// restarted), or the client gave up.
///
/// `Read` and `Write` are implemented for `RSocket` and for `&RSocket`, so one thread may
/// read while another writes, as with `TcpStream`; [`try_clone`](Self::try_clone) gives
/// another handle on the same session. Dropping the last handle closes the session without
/// losing what was written: it lingers in the background until the peer has every byte.
///
/// With [`Config::accept_plain_tcp`] on a server or [`Config::fallback_to_plain_tcp`] on
/// a client, an `RSocket` may instead be an ordinary TCP connection to a peer that does not
/// speak robust-tcp ([`Status::plain`]): then every call goes straight to that connection,
/// its errors are TCP's, and nothing survives its failure.
///
/// # Errors
///
/// A read or write fails only when the session has ended, with an `io::Error` carrying a
/// [`crate::Error`] that says why: [`UnknownSession`](crate::Error::UnknownSession) or
/// [`PeerReset`](crate::Error::PeerReset) (`ConnectionReset`),
/// [`GaveUp`](crate::Error::GaveUp) (`TimedOut`),
/// [`ProtocolViolation`](crate::Error::ProtocolViolation) (`InvalidData`), and for writes
/// [`WriteShutDown`](crate::Error::WriteShutDown) or
/// [`PeerClosed`](crate::Error::PeerClosed) (`BrokenPipe`). A call that runs out of its
/// read or write timeout fails with a plain `WouldBlock`, as `TcpStream`'s do on Unix.
///
/// # Examples
///
/// ```no_run
/// use std::io::{Read, Write};
/// use robust_tcp::RSocket;
///
/// # fn main() -> std::io::Result<()> {
/// let mut sock = RSocket::connect("127.0.0.1:7000")?;
/// sock.write_all(b"ping")?;
/// let mut reply = [0; 4];
/// sock.read_exact(&mut reply)?;
/// # Ok(())
/// # }
/// ```
pub struct RSocket {
    handle: Arc<Handle>,
}

/// Closes the session when the last `RSocket` for it goes.
struct Handle {
    shared: Arc<dyn Conn>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.drop_last();
    }
}

impl RSocket {
    /// Wraps a session the engine serves.
    pub(crate) fn from_shared(shared: Arc<SharedSession>) -> RSocket {
        RSocket {
            handle: Arc::new(Handle { shared }),
        }
    }

    fn shared(&self) -> &dyn Conn {
        &*self.handle.shared
    }

    /// Opens a session with the server at `addr`, with the default [`Config`].
    ///
    /// Like [`TcpStream::connect`](std::net::TcpStream::connect), each resolved address is
    /// tried in turn, and the call returns once a TCP connection is up: after one round
    /// trip. The session's opening HELLO is on its way by then, and the application may
    /// write at once: its first bytes follow the HELLO on the same connection, and the
    /// server accepts the session, and can read them and reply, without waiting for
    /// another round trip. Reads wait for the server's answer (as they wait during a
    /// reconnection); so does [`session_id`](Self::session_id). Until it comes,
    /// [`status`](Self::status) shows [`SessionState::Connecting`](crate::SessionState::Connecting).
    ///
    /// # Errors
    ///
    /// The TCP error if no address accepts a connection.
    ///
    /// What goes wrong after that is reported by the session's next read or write (as
    /// with TCP Fast Open), with an error carrying a [`crate::Error`]:
    /// [`Error::Refused`](crate::Error::Refused) (`ConnectionRefused`) if the server no
    /// longer accepts sessions; [`Error::NotRobust`](crate::Error::NotRobust) if the peer
    /// does not speak robust-tcp (`InvalidData`; `TimedOut` if it stays silent for the
    /// handshake timeout; `ConnectionAborted` if it hangs up on 10 openings in a row);
    /// [`Error::GaveUp`](crate::Error::GaveUp) (`TimedOut`) if no answer came within 10
    /// handshake timeouts of retrying; [`Error::UnknownSession`](crate::Error::UnknownSession)
    /// (`ConnectionReset`) if the server ended the session before its answer could reach
    /// the client. A handshake cut by the network, or a server at its session limit, is
    /// retried with backoff, and no byte is lost or duplicated.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let sock = robust_tcp::RSocket::connect("127.0.0.1:7000")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<RSocket> {
        RSocket::connect_with(addr, Config::default())
    }

    /// Opens a session with the server at `addr`, with `config`.
    ///
    /// Retries of the opening (cut handshakes, a busy server) stop after
    /// [`Config::give_up_after`], if set, as reconnections do.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect), and `InvalidInput` for a config that makes no sense
    /// (see [`Config::validate`]). When [`Config::give_up_after`] passes without an open
    /// session, the next read or write fails with
    /// [`Error::GaveUp`](crate::Error::GaveUp) (`TimedOut`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use robust_tcp::{Config, RSocket};
    ///
    /// let config = Config::default().send_buffer_size(64 * 1024);
    /// let sock = RSocket::connect_with("127.0.0.1:7000", config)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connect_with<A: ToSocketAddrs>(addr: A, config: Config) -> io::Result<RSocket> {
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        let limit = config.give_up_after_value();
        RSocket::open(&addrs, config, limit)
    }

    /// Opens a session with the server at `addr`, taking at most `timeout` for the TCP
    /// connect (and, at most, for each handshake of the opening that follows; the
    /// session's later reconnections are bounded by the default handshake timeout).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect); `TimedOut` when `timeout` passes; `InvalidInput` for
    /// a zero `timeout`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let addr = "127.0.0.1:7000".parse().unwrap();
    /// let sock = robust_tcp::RSocket::connect_timeout(&addr, Duration::from_secs(2))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<RSocket> {
        if timeout.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot set a 0 duration timeout",
            ));
        }
        // The opening's attempts take at most `timeout` each (see `client::connect`); the
        // session's reconnections keep the default handshake timeout.
        RSocket::open(&[*addr], Config::default(), Some(timeout))
    }

    fn open(addrs: &[SocketAddr], config: Config, limit: Option<Duration>) -> io::Result<RSocket> {
        client::connect(addrs, &config, limit)
    }

    /// Another handle on the same session. The session closes when the last handle is
    /// dropped.
    ///
    /// # Errors
    ///
    /// None today; the `Result` mirrors `TcpStream::try_clone`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let sock = robust_tcp::RSocket::connect("127.0.0.1:7000")?;
    /// let reader = sock.try_clone()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_clone(&self) -> io::Result<RSocket> {
        Ok(RSocket {
            handle: Arc::clone(&self.handle),
        })
    }

    /// Shuts down reading, writing or both, and returns at once.
    ///
    /// After `Shutdown::Write` the session still delivers every byte written before it
    /// (reconnecting if it must); the peer then reads end of stream. After
    /// `Shutdown::Read`, reads return `Ok(0)`.
    ///
    /// # Errors
    ///
    /// None today; the `Result` mirrors `TcpStream::shutdown`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::io::Write;
    /// use std::net::Shutdown;
    ///
    /// let mut sock = robust_tcp::RSocket::connect("127.0.0.1:7000")?;
    /// sock.write_all(b"request")?;
    /// sock.shutdown(Shutdown::Write)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.shared().shutdown(how)
    }

    /// Aborts the session at once, as a TCP reset does: the peer's pending and later calls
    /// fail with `ConnectionReset` ([`Error::PeerReset`](crate::Error::PeerReset)), and
    /// bytes not yet delivered either way are dropped. Calls on this side then fail with
    /// `ConnectionAborted` ([`Error::Aborted`](crate::Error::Aborted)). For a close that
    /// loses nothing, drop the socket or [`shutdown`](Self::shutdown) it instead.
    ///
    /// Right after [`connect`](Self::connect) too, before the server's answer came: the
    /// server may have accepted the session already, so the library retries the opening
    /// in the background, for at most about 20 s, to learn where the reset goes.
    ///
    /// A relay uses it to pass on a reset it saw on the other side.
    ///
    /// # Errors
    ///
    /// None today; the `Result` leaves room for one.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let sock = robust_tcp::RSocket::connect("127.0.0.1:7000")?;
    /// sock.abort()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn abort(&self) -> io::Result<()> {
        self.shared().abort()
    }

    /// Puts the session to sleep without ending it (the paper's "passivation"): its TCP
    /// connection is closed, and the session keeps its state, costing no connection and a
    /// heartbeat datagram per interval from the client (which keeps NAT mappings open for
    /// the wake-up). The next write on either side wakes it: a client reconnects; a server
    /// asks its client, over the control path, to reconnect (only a client can). Reads
    /// wait meanwhile, as during a reconnection. [`status`](Self::status) shows
    /// [`SessionState::Passive`](crate::SessionState::Passive).
    ///
    /// Returns at once; nothing written before is lost or held back. The connection closes
    /// only once the peer's application has read every byte written here, and this side's
    /// every byte the peer wrote before it learned of the passivation (until then the
    /// status says `passive` and `Connected`): a request followed by `passivate()` gets
    /// its response. A write here before the connection closed cancels the passivation.
    ///
    /// # Errors
    ///
    /// The session's failure, if it has ended.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::io::Write;
    ///
    /// let mut sock = robust_tcp::RSocket::connect("127.0.0.1:7000")?;
    /// sock.passivate()?; // a long pause: no TCP connection meanwhile
    /// sock.write_all(b"back")?; // reconnects
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn passivate(&self) -> io::Result<()> {
        self.shared().passivate()
    }

    /// Bounds how long a read waits, reconnections included; `None` waits forever. A read
    /// that times out fails with `WouldBlock`, as `TcpStream`'s do on Unix.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for `Some(Duration::ZERO)`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let sock = robust_tcp::RSocket::connect("127.0.0.1:7000")?;
    /// sock.set_read_timeout(Some(Duration::from_secs(1)))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_read_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.shared().set_read_timeout(dur)
    }

    /// The read timeout.
    ///
    /// # Errors
    ///
    /// None today; the `Result` mirrors `TcpStream::read_timeout`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let sock = robust_tcp::RSocket::connect("127.0.0.1:7000")?;
    /// assert_eq!(sock.read_timeout()?, None);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        self.shared().read_timeout()
    }

    /// Bounds how long a write takes, whatever the buffers, the locks or a reconnection in
    /// progress; `None` waits forever. A write that found no room in the send buffer in
    /// time fails with `WouldBlock` and has written nothing. Once bytes are in the send
    /// buffer they belong to the session: a write whose TCP write is still pending when
    /// its time is up returns `Ok` with their count, and the library sends the rest.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for `Some(Duration::ZERO)`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let sock = robust_tcp::RSocket::connect("127.0.0.1:7000")?;
    /// sock.set_write_timeout(Some(Duration::from_secs(1)))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_write_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.shared().set_write_timeout(dur)
    }

    /// The write timeout.
    ///
    /// # Errors
    ///
    /// None today; the `Result` mirrors `TcpStream::write_timeout`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let sock = robust_tcp::RSocket::connect("127.0.0.1:7000")?;
    /// assert_eq!(sock.write_timeout()?, None);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        self.shared().write_timeout()
    }

    /// What dropping the last handle on the session does, as `SO_LINGER` says for
    /// `TcpStream::set_linger`:
    /// - `None` (the default): the drop returns at once, and the session lingers in the
    ///   background until the peer has every byte (at most
    ///   [`Config::linger_limit`](crate::Config::linger_limit));
    /// - `Some(t)`: the drop blocks until the peer has acknowledged every byte and
    ///   confirmed the close, reconnecting as needed, or until `t` has passed (then it
    ///   lingers in the background as with `None`), for an application that must know its
    ///   data arrived before it exits;
    /// - `Some(Duration::ZERO)`: the drop aborts the session, as
    ///   [`abort`](Self::abort) does.
    ///
    /// The setting belongs to the session: every handle sees it.
    ///
    /// # Errors
    ///
    /// None today; the `Result` mirrors `TcpStream::set_linger`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::io::Write;
    /// use std::time::Duration;
    ///
    /// let mut sock = robust_tcp::RSocket::connect("127.0.0.1:7000")?;
    /// sock.write_all(b"the last words")?;
    /// sock.set_linger(Some(Duration::from_secs(30)))?;
    /// drop(sock); // returns once the server has them, or after 30 s
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_linger(&self, linger: Option<Duration>) -> io::Result<()> {
        self.shared().set_linger(linger)
    }

    /// The linger setting (see [`set_linger`](Self::set_linger)).
    ///
    /// # Errors
    ///
    /// None today; the `Result` mirrors `TcpStream::linger`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let sock = robust_tcp::RSocket::connect("127.0.0.1:7000")?;
    /// assert_eq!(sock.linger()?, None);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn linger(&self) -> io::Result<Option<Duration>> {
        self.shared().linger()
    }

    /// Sets `TCP_NODELAY` on the current connection and on every later one. With `true`,
    /// small writes are no longer held for a batch either (see [`Config::nodelay`]), and
    /// what is held goes out now (within 1 ms if another thread is writing meanwhile).
    ///
    /// # Errors
    ///
    /// The error of setting the option on the current connection.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let sock = robust_tcp::RSocket::connect("127.0.0.1:7000")?;
    /// sock.set_nodelay(true)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.shared().set_nodelay(nodelay)
    }

    /// Whether `TCP_NODELAY` is set.
    ///
    /// # Errors
    ///
    /// None today; the `Result` mirrors `TcpStream::nodelay`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let sock = robust_tcp::RSocket::connect("127.0.0.1:7000")?;
    /// println!("TCP_NODELAY: {}", sock.nodelay()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn nodelay(&self) -> io::Result<bool> {
        self.shared().nodelay()
    }

    /// Reads into `buf` the next bytes of the stream without consuming them: the next read
    /// (or peek) returns them again, as `TcpStream::peek` does. It waits as a read does
    /// (for data, for a reconnection; bounded by the read timeout, or not at all in
    /// non-blocking mode) and returns `Ok(0)` at the end of the stream.
    ///
    /// Across reconnections: the bytes peeked at are those the session received and the
    /// application has not read. A connection that fails takes them with it, and the peer
    /// resends them (it resends from what was read, not from what was peeked at), so a peek
    /// after a reconnection returns the same bytes again.
    ///
    /// # Errors
    ///
    /// As [`read`](std::io::Read::read).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let sock = robust_tcp::RSocket::connect("127.0.0.1:7000")?;
    /// let mut first = [0; 1];
    /// let n = sock.peek(&mut first)?; // the next read returns the same byte
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.shared().peek(buf)
    }

    /// Moves the session in or out of non-blocking mode, for every handle on it (as
    /// `TcpStream`'s clones share theirs).
    ///
    /// In non-blocking mode a call that would wait returns `WouldBlock` instead: a read
    /// or [`peek`](Self::peek) with nothing to return (no data yet, or no connection during
    /// a reconnection); a write when the send buffer is full. A write that fits in part
    /// takes that part and returns its count; its bytes then belong to the session, which
    /// sends what TCP does not take at once as soon as it can (as it does after a write
    /// timeout). `flush` never blocks in either mode. The read and write timeouts do not
    /// apply meanwhile; they are kept for when blocking mode returns. There is no readiness
    /// notification (no `mio` or `epoll` source: see the README's migration table): an
    /// application that gets `WouldBlock` tries again later.
    ///
    /// The TCP connections stay in blocking mode: each call passes `MSG_DONTWAIT` instead.
    ///
    /// # Errors
    ///
    /// None today; the `Result` mirrors `TcpStream::set_nonblocking`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::io::{ErrorKind, Read};
    ///
    /// let mut sock = robust_tcp::RSocket::connect("127.0.0.1:7000")?;
    /// sock.set_nonblocking(true)?;
    /// let mut buf = [0; 1024];
    /// match sock.read(&mut buf) {
    ///     Ok(n) => println!("{n} bytes"),
    ///     Err(e) if e.kind() == ErrorKind::WouldBlock => println!("nothing yet"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.shared().set_nonblocking(nonblocking)
    }

    /// Sets `IP_TTL` on the current TCP connection and on every later one, from the end
    /// of its handshake (a reconnection's HELLO goes out with the system's TTL).
    ///
    /// # Errors
    ///
    /// `InvalidInput` unless `ttl` is from 1 to 255; the error of setting it on the
    /// current connection (the value is remembered for the next ones all the same).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let sock = robust_tcp::RSocket::connect("127.0.0.1:7000")?;
    /// sock.set_ttl(64)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.shared().set_ttl(ttl)
    }

    /// `IP_TTL` of the current TCP connection (a server session's first one inherits its
    /// listener's); between connections, the value [`set_ttl`](Self::set_ttl) set.
    ///
    /// # Errors
    ///
    /// The error of reading it from the connection; `NotConnected` between connections if
    /// none was set.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let sock = robust_tcp::RSocket::connect("127.0.0.1:7000")?;
    /// println!("TTL {}", sock.ttl()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn ttl(&self) -> io::Result<u32> {
        self.shared().ttl()
    }

    /// The session's failure, once: the first call after the session failed returns the
    /// error its reads and writes fail with (carrying a [`crate::Error`]), later calls
    /// `None`, as `SO_ERROR` is cleared once read. Reads and writes go on failing.
    ///
    /// A failed TCP connection is not an error of the session: the session reconnects, and
    /// `take_error` says nothing of it ([`status`](Self::status) counts the
    /// reconnections and tells the last connection's failure).
    ///
    /// # Errors
    ///
    /// None today; the `Result` mirrors `TcpStream::take_error`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let sock = robust_tcp::RSocket::connect("127.0.0.1:7000")?;
    /// if let Some(e) = sock.take_error()? {
    ///     println!("the session failed: {e}");
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.shared().take_error()
    }

    /// Sends this client session's later reconnections to `addr` instead of the address its
    /// opening reached: for a server whose name resolves elsewhere now (a new IP, another
    /// node of a load balancer that routes by the session's CID, `docs/DEPLOYMENT.md`),
    /// resolve the name again and pass one of its addresses. An attempt in progress keeps
    /// its own address; the next goes to `addr`, on the session's usual schedule, and
    /// [`peer_addr`](Self::peer_addr) changes once it connects. A server there that does
    /// not hold the session refuses it, and the session fails with
    /// [`Error::UnknownSession`](crate::Error::UnknownSession). Control datagrams keep
    /// going where they went (the address the opening's ANSWER named, or its server's IP);
    /// if nothing answers them there, control moves to TCP within two heartbeat
    /// intervals, as where UDP is blocked.
    ///
    /// # Errors
    ///
    /// `InvalidInput` on a server's session, or a plain TCP connection
    /// ([`Status::plain`](crate::Status::plain)): neither reconnects.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::net::ToSocketAddrs;
    ///
    /// let sock = robust_tcp::RSocket::connect("server.example:7000")?;
    /// // ... later, once the name has moved:
    /// if let Some(addr) = "server.example:7000".to_socket_addrs()?.next() {
    ///     sock.reconnect_to(addr)?;
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn reconnect_to(&self, addr: SocketAddr) -> io::Result<()> {
        self.shared().reconnect_to(addr)
    }

    /// The peer's address on the current (or last) TCP connection.
    ///
    /// # Errors
    ///
    /// `NotConnected` if the session never had a connection.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let sock = robust_tcp::RSocket::connect("127.0.0.1:7000")?;
    /// println!("connected to {}", sock.peer_addr()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.shared().peer_addr()
    }

    /// The local address of the current (or last) TCP connection.
    ///
    /// # Errors
    ///
    /// `NotConnected` if the session never had a connection.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let sock = robust_tcp::RSocket::connect("127.0.0.1:7000")?;
    /// println!("from {}", sock.local_addr()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared().local_addr()
    }

    /// The session's connection identifier (CID), chosen by the server.
    ///
    /// A client learns it from the server's answer to its opening, which comes a round
    /// trip after [`connect`](Self::connect) returned: until then this waits for it, as a
    /// read does (and returns 0 if the opening failed: the next read or write says why).
    /// Never 0 once the session is open; always 0 on an ordinary TCP connection
    /// ([`Status::plain`](crate::Status::plain)).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let sock = robust_tcp::RSocket::connect("127.0.0.1:7000")?;
    /// assert_ne!(sock.session_id(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn session_id(&self) -> u32 {
        self.shared().wait_cid()
    }

    /// A snapshot of the session: its state, byte counts, what waits for acknowledgement,
    /// blocked calls and reconnections.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let sock = robust_tcp::RSocket::connect("127.0.0.1:7000")?;
    /// let status = sock.status();
    /// println!("{} reconnections, {} bytes unacknowledged", status.reconnections, status.unacknowledged);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn status(&self) -> Status {
        self.shared().status()
    }
}

/// Ordinary TCP peers (`Config::accept_plain_tcp`, `Config::fallback_to_plain_tcp`).
impl RSocket {
    /// Wraps an ordinary TCP connection (in blocking mode): every call goes straight to it.
    pub(crate) fn from_plain(stream: std::net::TcpStream) -> RSocket {
        RSocket {
            handle: Arc::new(Handle {
                shared: Arc::new(PlainStream::new(stream)),
            }),
        }
    }
}

impl Read for RSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.shared().read(buf)
    }
}

impl Write for RSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared().write(buf)
    }

    /// Sends at once what small writes left in the send buffer to go out in one batch
    /// (with Nagle on, back-to-back writes are coalesced for up to 1 ms; see
    /// [`Config::nodelay`]). Never blocks, in blocking mode or not: the rest is already
    /// with TCP, or waits in the send buffer for room in TCP's or for a reconnection, and
    /// the session sends it without being asked.
    fn flush(&mut self) -> io::Result<()> {
        self.shared().flush()
    }
}

impl Read for &RSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.shared().read(buf)
    }
}

impl Write for &RSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.shared().flush()
    }
}

impl fmt::Debug for RSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RSocket")
            // Not `session_id`, which may wait for the server's answer.
            .field("session_id", &self.shared().cid())
            .field("peer_addr", &self.peer_addr().ok())
            .finish()
    }
}
