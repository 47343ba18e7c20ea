//! One session's shared state, and the application's reads and writes on it.
//!
//! The protocol decisions live in the core [`Session`]; this file owns the TCP connection,
//! the locks and the condition variable around it. Application threads read and write the
//! connection themselves, in blocking mode, straight from and into their own buffers; the
//! engine thread installs connections, runs timers and resends what no writer sends.
//!
//! # Locks
//!
//! Always taken in this order, never the other way round:
//! 1. `read_lock`: held by a reader while it reads from TCP and counts what it read, so
//!    that once a failed connection is detached, taking and releasing it (the engine's
//!    [`Shared::barrier`]) leaves an exact received count.
//! 2. `write_lock`: held while bytes are written to TCP, so that one connection carries the
//!    outgoing stream in order; and, likewise, so that the barrier leaves an exact count
//!    of what was ever written.
//! 3. `state`: the core and the connection; held only briefly, never across blocking I/O.
//!
//! No lock is held while waiting for another object's lock, and the engine only ever
//! waits for the I/O locks right after it aborted the connection (the barrier): a thread
//! holding one then is inside a system call on a shut-down socket, which returns at once.
//! [`Shared::update`] is the one place that carries out what the core asked for: it sends
//! the queued control messages, sends FIN when due, wakes blocked threads and tells the
//! engine when the session's timers or duties changed.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Token;
use parking_lot::{Condvar, Mutex, MutexGuard};

use super::control::ControlSocket;
use super::{mark_dirty, on_engine_thread, EngineHandle};
use crate::core::auth::{HandshakeKeys, SessionKeys};
use crate::core::control::MAX_LEN;
use crate::core::endpoint::server::Presence;
use crate::core::session::{End, Limits, ReadGate, Session};
use crate::error::Error;
use crate::{Config, SessionState, Status};

/// The most a resend copies out of the send buffer for one system call, so that a large
/// buffer is not copied whole for each try. The engine's resend also yields after one such
/// chunk, so that a session with megabytes to resend holds up every other session's
/// handshakes, datagrams and timers for no more than a copy and a system call of this
/// size (tens of microseconds), and 64 KiB is about what loopback's TCP takes per call.
const RESEND_CHUNK: usize = 64 * 1024;

/// The engine's resend must not block (application threads use the socket in blocking
/// mode), nor raise SIGPIPE when the peer has reset the connection: std's own writes avoid
/// it the same way, and a host program may not ignore the signal.
#[cfg(not(target_vendor = "apple"))]
const RESEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
/// Apple's systems have no MSG_NOSIGNAL: `Shared::attach` sets SO_NOSIGPIPE instead.
#[cfg(target_vendor = "apple")]
const RESEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT;

/// A session's state, shared by the application's handles and the engine.
pub(crate) struct Shared {
    /// The engine's name for the session.
    id: Token,
    /// The session's CID; 0 on a client until the server answers its opening.
    cid: AtomicU32,
    /// `TCP_NODELAY` is held on for a server's first connection until the application's
    /// first write went out, whatever the session's setting (see
    /// [`attach_first`](Self::attach_first)).
    nodelay_held: AtomicBool,
    /// Prove and check the handshakes.
    handshake_keys: HandshakeKeys,
    state: Mutex<State>,
    /// Signalled on every change a blocked reader or writer may be waiting for.
    changed: Condvar,
    read_lock: Mutex<()>,
    write_lock: Mutex<()>,
    engine: Arc<EngineHandle>,
    /// The UDP socket the session's datagrams go out on: a server's fixed control port
    /// (NATs and firewalls pass the answers only from the port the client sent to), or
    /// the process's shared one.
    control: Arc<ControlSocket>,
}

/// What `Shared::state` protects.
struct State {
    session: Session,
    conn: Option<Arc<TcpStream>>,
    local_addr: Option<SocketAddr>,
    peer_addr: Option<SocketAddr>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// What dropping the last handle does: see `RSocket::set_linger`.
    linger: Option<Duration>,
    /// The silence limit, which also bounds how long the kernel may hold bytes on a
    /// connection that the peer's TCP does not acknowledge.
    dead_after: Option<Duration>,
    nodelay: bool,
    /// The engine reads the server's opening ANSWER from the connection (a client's first
    /// one, which the application may already write to): reads wait until it is consumed.
    answer_pending: bool,
    /// The engine found the write lock taken when it came to send what the connection
    /// lacks: whoever holds it looks here once it lets go, and hands the send back.
    flush_wanted: bool,
    /// The session's duties as the engine last learnt them, with the earliest deadline
    /// its timer may still be armed for: the engine wakes no later than `timeout`.
    reported: Duties,
}

/// What a new session is made of.
pub(crate) struct SessionSpec {
    pub(crate) id: Token,
    /// A client's: the server's control address, once known. A server's: its key for the
    /// values of its path challenges, which it draws for the session.
    pub(crate) end: End,
    pub(crate) cid: u32,
    pub(crate) keys: SessionKeys,
    pub(crate) epoch: u32,
    /// The socket to send control datagrams on.
    pub(crate) control: Arc<ControlSocket>,
    pub(crate) config: Config,
}

/// What the engine must do for a session, as [`Shared::duties`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Duties {
    /// When the core's timers are next due.
    pub(crate) timeout: Option<Instant>,
    /// The session lacks a connection it needs (a client reconnects).
    pub(crate) needs_connection: bool,
    /// The peer was heard from since the connection was lost: the path is back.
    pub(crate) heard_since_disconnected: Option<Instant>,
    /// A client hears no control datagram while its connection works: they are to go
    /// over TCP.
    pub(crate) datagrams_missing: bool,
    /// Nothing is left to do: the session can be freed.
    pub(crate) finished: bool,
    /// Bytes that writes held for a batch are due: send them. Only
    /// [`Shared::duties`] sets it, once per hold.
    pub(crate) send_held: bool,
}

/// How a non-blocking flush went.
pub(crate) enum Flush {
    /// Nothing is left to send on the current connection (or there is none).
    Done,
    /// Another thread holds the write lock; it sends what is left, or asks again.
    Busy,
    /// The connection's send buffer is full: wait until `conn` is writable.
    Blocked(Arc<TcpStream>),
    /// One chunk went out and more is left: flush again after other work.
    Yielded,
}

/// The bytes a connection lacks, as `(from, to, connection, epoch)`: stream positions
/// `[from, to)`, to be written to connection number `epoch`; `None` if it lacks nothing
/// (or there is no connection).
type Job = Option<(u64, u64, Arc<TcpStream>, u32)>;

/// The next thing a read does.
enum ReadStep {
    Eof,
    Wait,
    Read(Arc<TcpStream>, u32),
}

impl Shared {
    /// A session whose first connection is being set up.
    pub(crate) fn new(spec: SessionSpec, engine: Arc<EngineHandle>) -> Arc<Shared> {
        let limits = Limits {
            send_buffer: spec.config.send_buffer_size_value(),
            send_buffer_max: spec.config.send_buffer_max_value(),
            ack_threshold: spec.config.ack_threshold_value(),
            give_up_after: spec.config.give_up_after_value(),
            dead_after: spec.config.dead_after_value(),
            linger: spec.config.linger_limit_value(),
        };
        let session = Session::new(
            spec.end,
            spec.cid,
            spec.epoch,
            limits,
            spec.keys.control,
            Instant::now(),
        );
        Arc::new(Shared {
            id: spec.id,
            cid: AtomicU32::new(spec.cid),
            nodelay_held: AtomicBool::new(false),
            handshake_keys: spec.keys.handshake,
            state: Mutex::new(State {
                reported: duties(&session),
                session,
                conn: None,
                local_addr: None,
                peer_addr: None,
                read_timeout: None,
                write_timeout: None,
                linger: None,
                dead_after: spec.config.dead_after_value(),
                nodelay: spec.config.nodelay_value(),
                answer_pending: false,
                flush_wanted: false,
            }),
            changed: Condvar::new(),
            read_lock: Mutex::new(()),
            write_lock: Mutex::new(()),
            engine,
            control: spec.control,
        })
    }

    /// The session's CID; 0 on a client whose opening the server has not answered yet.
    pub(crate) fn cid(&self) -> u32 {
        self.cid.load(Ordering::Acquire)
    }

    /// The session's CID, once the server has answered the opening: waits for the answer
    /// if it has not come yet (as a read does). 0 if the opening failed.
    pub(crate) fn wait_cid(&self) -> u32 {
        let mut st = self.state.lock();
        while st.session.is_opening()
            && st.session.status(Instant::now()).state != SessionState::Closed
        {
            self.changed.wait(&mut st);
        }
        drop(st);
        self.cid()
    }

    /// The UDP port of the session's control socket.
    pub(crate) fn control_port(&self) -> u16 {
        self.control.port()
    }

    /// The keys that prove and check this session's reconnections.
    pub(crate) fn handshake_keys(&self) -> &HandshakeKeys {
        &self.handshake_keys
    }

    /// Runs `f` on the state, then carries out what the core asked for: sends the control
    /// messages it queued, sends FIN if due, wakes blocked threads and tells the engine
    /// when it must look at the session: from an application thread, only if sooner than
    /// it planned to (see [`Duties::need_a_look`]); on the engine thread, whenever its
    /// duties changed, which costs nothing there.
    fn update<R>(&self, f: impl FnOnce(&mut State, Instant) -> R) -> R {
        let now = Instant::now();
        let mut st = self.state.lock();
        let result = f(&mut st, now);
        if !st.session.is_connected() {
            // The core dropped the connection (it failed, the peer fell silent, the
            // session ended): abort it, which wakes every thread blocked on it.
            abort(st.conn.take());
        }
        let mut datagram = [0u8; MAX_LEN];
        let role = st.session.role();
        while let Some((n, to)) = st.session.poll_datagram(&mut datagram, now) {
            // A non-blocking send of a few bytes: fine under the lock, and it keeps the
            // packet numbers in order without a second buffer.
            if let Some(bytes) = datagram.get(..n) {
                self.engine.send_control(role, &self.control, bytes, to);
            }
        }
        let fin = if st.session.poll_fin() {
            st.conn.clone()
        } else {
            None
        };
        if st.session.poll_end_of_stream() {
            if let Some(conn) = &st.conn {
                // Wakes a reader blocked on the connection; it then sees end of stream.
                let _ = conn.shutdown(Shutdown::Read);
            }
        }
        // Computed once per call, against what the last call reported: reads and writes
        // come here several times each, and this is their costliest part.
        let after = duties(&st.session);
        let before = st.reported;
        let tell_engine = if on_engine_thread() {
            // A look costs the engine no wake-up here, and saves one: re-armed now, it
            // does not wake later at a deadline that has moved.
            after != before
        } else {
            after.need_a_look(&before)
        };
        st.reported = if tell_engine {
            after
        } else {
            // Untold, the engine still wakes at the earlier deadline: remembered, it
            // spares a poke for each deadline that comes back between the two.
            Duties {
                timeout: before.timeout,
                ..after
            }
        };
        drop(st);
        if let Some(conn) = fin {
            // Every byte is acknowledged and the peer knows our total: the FIN only wakes
            // its reader. A failure here changes nothing.
            let _ = conn.shutdown(Shutdown::Write);
        }
        self.changed.notify_all();
        if tell_engine {
            if on_engine_thread() {
                mark_dirty(self.id);
            } else {
                self.engine.poke(self.id);
            }
        }
        result
    }

    // ------------------------------------------------------------ for the engine

    /// Runs the core's timers and reports what the engine must do.
    pub(crate) fn duties(&self) -> Duties {
        self.update(|st, now| {
            st.session.handle_timeout(now);
            Duties {
                send_held: st.session.release_held(now, false),
                ..duties(&st.session)
            }
        })
    }

    /// Authenticates a control datagram from `from` and applies it; returns whether it
    /// was this session's.
    pub(crate) fn handle_datagram(&self, datagram: &[u8], from: SocketAddr) -> bool {
        self.update(
            |st, now| match st.session.handle_datagram(datagram, from, now) {
                Ok(()) => true,
                Err(why) => {
                    log::trace!(
                        "session {}: dropped a datagram from {from}: {why:?}",
                        self.cid()
                    );
                    false
                }
            },
        )
    }

    /// Makes `stream`, a new connection, the session's, in blocking mode with the
    /// session's options, and `TCP_NODELAY` as `nodelay` says. (A new socket has no
    /// timeouts: only a read timeout is set, if the session has one. The system calls
    /// here are on the way to the first byte of a session.)
    fn attach(st: &mut State, stream: TcpStream, nodelay: bool) {
        // A socket option that fails here fails again on use, where it is reported.
        let _ = stream.set_nonblocking(false);
        if st.read_timeout.is_some() {
            let _ = stream.set_read_timeout(st.read_timeout);
        }
        let _ = stream.set_nodelay(nodelay);
        st.answer_pending = false;
        // A connection whose path died under a live control path (a firewall or NAT that
        // lost only its TCP state) hears datagrams, so the silence limit never fires; its
        // bytes stay unacknowledged in the kernel, which this turns into an error after
        // `dead_after` instead of TCP's many minutes of retransmissions.
        #[cfg(target_os = "linux")]
        if let Some(limit) = st.dead_after {
            let _ = socket2::SockRef::from(&stream).set_tcp_user_timeout(Some(limit));
        }
        #[cfg(target_vendor = "apple")]
        let _ = socket2::SockRef::from(&stream).set_nosigpipe(true);
        st.local_addr = stream.local_addr().ok().or(st.local_addr);
        st.peer_addr = stream.peer_addr().ok().or(st.peer_addr);
        st.conn = Some(Arc::new(stream));
    }

    /// Attaches a server's first connection, right after its ANSWER, unless the session
    /// already failed (then a reconnection brings another). `TCP_NODELAY` stays on until
    /// the application's first write has gone out: the first reply then leaves at once,
    /// instead of waiting (Nagle) for the acknowledgement of the ANSWER, a round trip.
    pub(crate) fn attach_first(&self, stream: TcpStream) {
        self.update(|st, _| {
            if st.session.is_connected() && st.conn.is_none() {
                Self::attach(st, stream, true);
                self.nodelay_held.store(true, Ordering::Relaxed);
            }
        });
    }

    /// After a write: the session's own `TCP_NODELAY` setting applies from now on, if
    /// [`attach_first`](Self::attach_first) held it on.
    fn release_nodelay(&self) {
        if self.nodelay_held.swap(false, Ordering::Relaxed) {
            let st = self.state.lock();
            if let (Some(conn), false) = (&st.conn, st.answer_pending) {
                let _ = conn.set_nodelay(st.nodelay);
            }
        }
    }

    /// Attaches a client's first connection right behind its opening HELLO, before the
    /// server answered: writes go out on it at once; reads wait until the engine has
    /// consumed the ANSWER ([`answer_consumed`](Self::answer_consumed)). `TCP_NODELAY`
    /// stays on meanwhile, so that Nagle does not hold the first small write until the
    /// HELLO is acknowledged.
    pub(crate) fn attach_opening(&self, stream: TcpStream) {
        self.update(|st, _| {
            Self::attach(st, stream, true);
            st.answer_pending = true;
        });
    }

    /// The engine consumed the server's ANSWER from the first connection: the application
    /// reads from it now, and the session's own `TCP_NODELAY` setting applies.
    pub(crate) fn answer_consumed(&self) {
        self.update(|st, _| {
            if std::mem::take(&mut st.answer_pending) {
                if let Some(conn) = &st.conn {
                    let _ = conn.set_nodelay(st.nodelay);
                }
            }
        });
    }

    /// The path to the peer takes `rtt` per round trip, as a client's HELLO and the
    /// server's ANSWER just measured (see `Session::handle_round_trip`).
    pub(crate) fn round_trip(&self, rtt: Duration) {
        self.state.lock().session.handle_round_trip(rtt);
    }

    /// The server answered a client's opening: the session is `cid`, and its control
    /// datagrams go to `server_control`.
    pub(crate) fn opened(&self, cid: u32, server_control: SocketAddr) {
        self.update(|st, now| {
            st.session.opened(cid, server_control, now);
            self.cid.store(cid, Ordering::Release);
        });
    }

    /// Reports that connection `epoch` failed; if it was the one in use, aborts it, which
    /// wakes every thread blocked on it.
    pub(crate) fn connection_failed(&self, epoch: u32, reason: &str) {
        self.update(|st, now| {
            if st.session.handle_connection_failed(epoch, reason, now) {
                log::debug!(
                    "session {}: connection {epoch} failed: {reason}",
                    self.cid()
                );
            }
        });
    }

    /// The client never confirmed connection `epoch`, which a resuming ANSWER offered (see
    /// `Session::handle_offer_failed`).
    pub(crate) fn offer_failed(&self, epoch: u32) {
        self.update(|st, now| st.session.handle_offer_failed(epoch, now));
    }

    /// Aborts the connection in use, if any (a server does this when the client comes back
    /// on a new one).
    pub(crate) fn abort_current(&self, reason: &str) {
        let epoch = self.state.lock().session.epoch();
        self.connection_failed(epoch, reason);
    }

    /// Waits until no application thread is inside a read or write on a detached
    /// connection. Called after the connection failed or was aborted: from then on the
    /// received count and the most ever written stay put until a new connection is
    /// installed, since no thread finds a connection to use.
    pub(crate) fn barrier(&self) {
        drop(self.read_lock.lock());
        drop(self.write_lock.lock());
    }

    /// Whether the client has shown that it knows the session's CID (see
    /// `Session::peer_knows_cid`).
    pub(crate) fn peer_knows_cid(&self) -> bool {
        self.state.lock().session.peer_knows_cid()
    }

    /// What a server's endpoint asks of a session when it decides whom to evict or
    /// whether to keep a tombstone (`Presence::of`).
    pub(crate) fn presence(&self, now: Instant) -> Presence {
        Presence::of(&self.state.lock().session, now)
    }

    /// The client named the CID in a HELLO that proved itself (see
    /// `Session::handle_cid_named`).
    pub(crate) fn cid_named(&self) {
        self.state.lock().session.handle_cid_named();
    }

    /// Where the session's control datagrams go (a client's: the server's control
    /// address).
    pub(crate) fn control_peer(&self) -> Option<SocketAddr> {
        self.state.lock().session.control_peer()
    }

    /// The local address of the connection in use, if there is one.
    pub(crate) fn connected_from(&self) -> Option<SocketAddr> {
        let st = self.state.lock();
        st.conn.as_ref().and(st.local_addr)
    }

    /// The number of this session's current (or last) connection.
    pub(crate) fn epoch(&self) -> u32 {
        self.state.lock().session.epoch()
    }

    /// Bytes the application has read: the count a reconnection announces. Exact only
    /// after a [`barrier`](Self::barrier).
    pub(crate) fn received(&self) -> u64 {
        self.state.lock().session.received()
    }

    /// The loose check of a peer's count, before the live connection is touched.
    pub(crate) fn may_resume(&self, peer_received: u32) -> bool {
        self.state.lock().session.may_resume(peer_received)
    }

    /// The exact check of a peer's count, after a [`barrier`](Self::barrier).
    pub(crate) fn check_resume(&self, peer_received: u32) -> Option<u64> {
        self.state.lock().session.check_resume(peer_received)
    }

    /// Moves the session to `stream`, connection number `epoch`, whose peer has received
    /// `peer_received` bytes (checked by [`check_resume`](Self::check_resume)). What the
    /// peer lacks is resent by the next writer or by the engine's [`flush`](Self::flush).
    pub(crate) fn resume(&self, stream: TcpStream, epoch: u32, peer_received: u64) {
        self.update(|st, now| {
            st.session.handle_resume(peer_received, epoch, now);
            let nodelay = st.nodelay;
            Self::attach(st, stream, nodelay);
        });
    }

    /// The server refused to resume the session.
    pub(crate) fn resume_refused(&self, error: Error) {
        self.update(|st, _| st.session.handle_resume_refused(error));
    }

    /// Fails the session and tells the peer with a RESET.
    pub(crate) fn reset(&self, error: Error) {
        self.update(|st, now| st.session.reset(error, now));
    }

    /// Fails the session without telling the peer (a server drops a session its client
    /// never confirmed).
    pub(crate) fn fail(&self, error: Error) {
        self.update(|st, _| st.session.fail(error));
    }

    /// The session is over: drops its connection.
    pub(crate) fn finish(&self) {
        self.update(|st, _| abort(st.conn.take()));
        log::debug!("session {} finished", self.cid());
    }

    /// Writes what the connection lacks without blocking (the engine's resend when no
    /// application writer is sending).
    pub(crate) fn flush(&self) -> Flush {
        let write = match self.write_lock.try_lock() {
            Some(write) => write,
            None => {
                // Ask the holder to hand back, then look again: if it let go in between,
                // it may have looked at the request before it was made. (Both mutexes
                // are linearizable, so one of the two sees the other.)
                self.state.lock().flush_wanted = true;
                match self.write_lock.try_lock() {
                    Some(write) => write,
                    None => return Flush::Busy,
                }
            }
        };
        let result = self.flush_locked();
        drop(write);
        result
    }

    /// [`flush`](Self::flush) with the write lock held.
    fn flush_locked(&self) -> Flush {
        self.state.lock().flush_wanted = false;
        // The last connection this resend wrote to.
        let mut wrote_to: Option<Arc<TcpStream>> = None;
        loop {
            let Some((from, to, conn, epoch)) = self.unsent_job() else {
                if let Some(conn) = wrote_to {
                    // A resend follows the reconnection's CONFIRM, which the peer's TCP
                    // acknowledges only after its delayed-ACK timer (some 40 ms): Nagle
                    // would hold the resend's tail until then.
                    if !self.state.lock().nodelay {
                        push_held_segments(&conn);
                    }
                }
                return Flush::Done;
            };
            let len = usize::try_from(to - from).unwrap_or(usize::MAX);
            let bytes = self
                .state
                .lock()
                .session
                .buffered_from(from, len.min(RESEND_CHUNK));
            let sock = socket2::SockRef::from(&*conn);
            match sock.send_with_flags(&bytes, RESEND_FLAGS) {
                Ok(0) => {
                    self.connection_failed(epoch, "the connection accepts no more bytes");
                    return Flush::Done;
                }
                Ok(n) => {
                    let more = self.update(|st, now| {
                        st.session.handle_sent(epoch, from, n, now);
                        Self::job(st).is_some()
                    });
                    if more {
                        return Flush::Yielded;
                    }
                    wrote_to = Some(conn);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flush::Blocked(conn),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.write_failed(epoch, &e);
                    return Flush::Done;
                }
            }
        }
    }

    /// The bytes the current connection lacks (see [`Job`]).
    fn unsent_job(&self) -> Job {
        Self::job(&self.state.lock())
    }

    fn job(st: &State) -> Job {
        match (st.session.unsent(), &st.conn) {
            (Some((from, to)), Some(conn)) if from < to => {
                Some((from, to, Arc::clone(conn), st.session.epoch()))
            }
            _ => None,
        }
    }

    /// A write on connection `epoch` failed.
    fn write_failed(&self, epoch: u32, e: &io::Error) {
        // After the peer's CLOSE our own FIN wakes a blocked write: nothing to report.
        if !self.state.lock().session.peer_closed() {
            // The bytes stay buffered; the reconnection resends them.
            self.connection_failed(epoch, &e.to_string());
        }
    }

    // ------------------------------------------------------------ application I/O

    /// `Read::read`.
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let timeout = self.state.lock().read_timeout;
        match self.read_until(buf, timeout) {
            // `read_until` counted the bytes and the end of the call in one go.
            Ok(n) if n > 0 => Ok(n),
            other => {
                self.update(|st, _| st.session.reader_unblocked());
                other
            }
        }
    }

    /// [`read`](Self::read)'s loop. A call that returns bytes has also recorded that the
    /// reader is no longer blocked.
    fn read_until(&self, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<usize> {
        let deadline = deadline_after(timeout);
        loop {
            let guard = lock_until(&self.read_lock, deadline)?;
            // A look, not a change: marking the reader blocked only shows in `status`, so
            // this needs none of `update`'s work (the costliest part of a read).
            let (step, holding) = {
                let mut st = self.state.lock();
                let step = match st.session.read_gate() {
                    ReadGate::Eof => Ok(ReadStep::Eof),
                    ReadGate::Failed(e) => Err(io::Error::from(e)),
                    ReadGate::Proceed => {
                        st.session.reader_blocked(Instant::now());
                        Ok(match &st.conn {
                            Some(conn) if !st.answer_pending => {
                                ReadStep::Read(Arc::clone(conn), st.session.epoch())
                            }
                            _ => ReadStep::Wait,
                        })
                    }
                };
                (step, st.session.holds_unsent())
            };
            if holding {
                // A request's last bytes must not wait for a batch while its reply is
                // awaited.
                self.send_held();
            }
            let step = step?;
            let (conn, epoch) = match step {
                ReadStep::Eof => return Ok(0),
                ReadStep::Read(conn, epoch) => (conn, epoch),
                ReadStep::Wait => {
                    // Let the engine's barrier pass.
                    drop(guard);
                    self.wait_for_connection(deadline)?;
                    continue;
                }
            };
            // The socket's own timeout is the whole read timeout; part of it may have gone
            // on waiting for the lock or a reconnection.
            let shortened = bound_by_deadline(timeout, deadline)?;
            if let Some(left) = shortened {
                let _ = conn.set_read_timeout(Some(left));
            }
            let result = (&*conn).read(buf);
            if shortened.is_some() {
                let _ = conn.set_read_timeout(self.state.lock().read_timeout);
            }
            match result {
                Ok(0) => {
                    let ended =
                        self.update(|st, _| matches!(st.session.read_gate(), ReadGate::Eof));
                    if ended {
                        return Ok(0);
                    }
                    self.connection_failed(epoch, "end of stream without a close announcement");
                }
                Ok(n) => {
                    self.update(|st, now| {
                        st.session.handle_read(n, now);
                        st.session.reader_unblocked();
                    });
                    return Ok(n);
                }
                Err(e) if is_timeout(&e) => return Err(timed_out()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.connection_failed(epoch, &e.to_string()),
            }
        }
    }

    /// Blocks until the session has a connection to read from again (one whose opening
    /// ANSWER is consumed), or a read can end without one.
    fn wait_for_connection(&self, deadline: Option<Instant>) -> io::Result<()> {
        let mut st = self.state.lock();
        while matches!(st.session.read_gate(), ReadGate::Proceed)
            && (st.conn.is_none() || st.answer_pending)
        {
            self.wait(&mut st, deadline)?;
        }
        Ok(())
    }

    /// `Write::write`: copies into the send buffer, then writes to TCP from this thread.
    ///
    /// With a write timeout, the call returns within about it whatever happens: once the
    /// bytes are in the send buffer they belong to the session, so what the kernel does not
    /// take in time is left for the engine to send.
    pub(crate) fn write(&self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let (timeout, mut connected) = {
            let st = self.state.lock();
            (st.write_timeout, st.conn.is_some())
        };
        let deadline = deadline_after(timeout);
        loop {
            // Held from before the bytes are buffered until they are written, so that the
            // range found to be unsent is still unsent when it is written. Without a
            // connection the bytes only go into the send buffer, which the state lock
            // keeps in order: no write lock then, so that a writer that goes on filling
            // the buffer through an outage never keeps the engine's barrier (and with it
            // the reconnection) waiting while the scheduler has it off the CPU.
            let write = if connected {
                Some(lock_until(&self.write_lock, deadline)?)
            } else {
                None
            };
            let nagle = !self.nodelay_held.load(Ordering::Relaxed);
            let pushed =
                match self.update(|st, now| Self::push(st, data, nagle && !st.nodelay, now)) {
                    Ok(pushed) => pushed,
                    Err(e) => {
                        if let Some(write) = write {
                            self.unlock_write(write, false);
                        }
                        return Err(e);
                    }
                };
            if let Some((start, n, job)) = pushed {
                match write {
                    Some(write) => {
                        let fresh = data.get(..n).unwrap_or_default();
                        let out_of_time = self.send_locked(start, fresh, job, deadline);
                        self.unlock_write(write, out_of_time);
                        self.release_nodelay();
                    }
                    // A connection came meanwhile and lacks bytes: the engine sends them.
                    None if job.is_some() => self.engine.flush(self.id),
                    None => {}
                }
                return Ok(n);
            }
            if let Some(write) = write {
                self.unlock_write(write, false);
            }
            let mut st = self.state.lock();
            while matches!(st.session.write_space(), Ok(0)) {
                if let Err(e) = self.wait(&mut st, deadline) {
                    st.session.writer_unblocked();
                    return Err(e);
                }
            }
            connected = st.conn.is_some();
        }
    }

    /// Appends what fits of `data` to the send buffer: the stream position it starts at,
    /// how much that was and what the connection now lacks, unless the bytes may wait for
    /// a batch (with `nagle`: see `Session::hold_unsent`); `None` if nothing fits.
    fn push(
        st: &mut State,
        data: &[u8],
        nagle: bool,
        now: Instant,
    ) -> io::Result<Option<(u64, usize, Job)>> {
        match st.session.write_space() {
            Err(e) => {
                st.session.writer_unblocked();
                Err(io::Error::from(e))
            }
            Ok(0) => {
                st.session.writer_blocked(now);
                if !st.nodelay {
                    if let Some(conn) = &st.conn {
                        // Nagle may hold the tail of the window until a delayed TCP ACK,
                        // and the peer acknowledges (frees our buffer) only once it has
                        // read that tail: a stall per window.
                        push_held_segments(conn);
                    }
                }
                Ok(None)
            }
            Ok(_) => {
                st.session.writer_unblocked();
                let start = st.session.written();
                let n = st.session.write(data, now);
                // The engine asked for what the connection lacks (held bytes that are due,
                // or a resend) while a writer held the lock: this writer sends it. Handing
                // it back instead would wake the engine again and again while writes go on.
                let asked = std::mem::take(&mut st.flush_wanted);
                let job = if st.session.hold_unsent(nagle && !asked, now) {
                    None
                } else {
                    Self::job(st)
                };
                Ok(Some((start, n, job)))
            }
        }
    }

    /// Writes to the connection what it lacks (`job`, then whatever is still missing),
    /// with the write lock held. The caller's own just-buffered bytes, `fresh`, from
    /// stream position `start`, are written from its slice when they are all that is
    /// missing, which saves a copy. Returns whether the deadline passed with bytes still
    /// unsent: the engine then sends them.
    fn send_locked(
        &self,
        start: u64,
        fresh: &[u8],
        mut job: Job,
        deadline: Option<Instant>,
    ) -> bool {
        loop {
            let Some((from, to, conn, epoch)) = job else {
                return false;
            };
            let copy: Vec<u8>;
            let end = start + fresh.len() as u64;
            let bytes = if from >= start && to <= end {
                // In range: both offsets are within `fresh`.
                fresh
                    .get((from - start) as usize..(to - start) as usize)
                    .unwrap_or_default()
            } else {
                let len = usize::try_from(to - from).unwrap_or(usize::MAX);
                copy = self
                    .state
                    .lock()
                    .session
                    .buffered_from(from, len.min(RESEND_CHUNK));
                &copy
            };
            // The connection's own send timeout is off (writers without a timeout block);
            // a writer with one bounds each system call by what is left of it.
            let left = match deadline.map(|d| d.saturating_duration_since(Instant::now())) {
                Some(left) if left.is_zero() => return true,
                left => left,
            };
            if left.is_some() {
                let _ = conn.set_write_timeout(left);
            }
            let result = (&*conn).write(bytes);
            if left.is_some() {
                let _ = conn.set_write_timeout(None);
            }
            match result {
                Ok(0) => {
                    self.connection_failed(epoch, "the connection accepts no more bytes");
                    return false;
                }
                Ok(n) => {
                    job = self.update(|st, now| {
                        st.session.handle_sent(epoch, from, n, now);
                        Self::job(st)
                    });
                }
                Err(e) if is_timeout(&e) => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => job = self.unsent_job(),
                Err(e) => {
                    self.write_failed(epoch, &e);
                    return false;
                }
            }
        }
    }

    /// Waits on the condition variable until something changes or `deadline` passes.
    fn wait(&self, st: &mut MutexGuard<'_, State>, deadline: Option<Instant>) -> io::Result<()> {
        match deadline {
            None => {
                self.changed.wait(st);
                Ok(())
            }
            Some(d) => {
                if self.changed.wait_until(st, d).timed_out() {
                    Err(timed_out())
                } else {
                    Ok(())
                }
            }
        }
    }

    // ------------------------------------------------------------ closing

    /// `shutdown(how)`.
    pub(crate) fn shutdown(&self, how: Shutdown) {
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            self.send_held();
        }
        self.update(|st, now| {
            if matches!(how, Shutdown::Write | Shutdown::Both) {
                st.session.shutdown_write(now);
            }
            if matches!(how, Shutdown::Read | Shutdown::Both) {
                st.session.shutdown_read();
                match &st.conn {
                    // The engine still reads the opening's ANSWER from it (no reader does
                    // meanwhile): shut down, its end of stream would fail the opening, and
                    // it would be retried for nothing.
                    Some(_) if st.answer_pending => {}
                    // Wakes a reader blocked on the connection; it then sees end of stream.
                    Some(conn) => {
                        let _ = conn.shutdown(Shutdown::Read);
                    }
                    None => {}
                }
            }
        });
    }

    /// The application dropped its last handle: the session lingers until every byte is
    /// acknowledged (or the peer closed too) and its CLOSE is confirmed.
    pub(crate) fn close(&self) {
        self.send_held();
        self.update(|st, now| st.session.close(now));
    }

    /// Sends now the bytes that writes held for a batch, if any (`Write::flush`, and
    /// whenever nothing more may come to batch with them). Never blocks: while another
    /// thread writes, that writer sends them, or the hold's deadline does; what the
    /// kernel does not take now, the engine sends.
    pub(crate) fn send_held(&self) {
        let Some(write) = self.write_lock.try_lock() else {
            return;
        };
        let more = self.update(|st, now| st.session.release_held(now, true))
            && matches!(self.flush_locked(), Flush::Blocked(_) | Flush::Yielded);
        self.unlock_write(write, more);
    }

    /// Lets go of the write lock, then hands the engine the sending it asked for while
    /// the lock was held (see [`flush`](Self::flush)), or what `left` says is left: it
    /// sends what a writer never will. Every holder of the lock but the engine lets go
    /// here; a request it dropped would leave a resend undone.
    fn unlock_write(&self, write: MutexGuard<'_, ()>, left: bool) {
        drop(write);
        // Only once the write lock is free: the engine's resend needs it, and gives up
        // (leaving the bytes to whoever holds it) if it is taken.
        let wanted = std::mem::take(&mut self.state.lock().flush_wanted);
        if left || wanted {
            self.engine.flush(self.id);
        }
    }

    /// Makes the session passive (see `RSocket::passivate`).
    pub(crate) fn passivate(&self) -> io::Result<()> {
        // Bytes held for a batch go out now: the passivation waits for their
        // acknowledgement, and nothing more comes to batch with them.
        self.send_held();
        self.update(|st, now| {
            if let ReadGate::Failed(e) = st.session.read_gate() {
                return Err(e.into());
            }
            st.session.passivate(now);
            Ok(())
        })
    }

    /// The last handle was dropped: closes, aborts or closes and waits, as the linger
    /// setting says (see `RSocket::set_linger`).
    pub(crate) fn drop_last(&self) {
        let linger = self.state.lock().linger;
        match linger {
            Some(wait) if wait.is_zero() => self.reset(Error::Aborted),
            Some(wait) if !on_engine_thread() => {
                self.close();
                self.wait_finished(wait);
            }
            _ => self.close(),
        }
    }

    /// Waits until the session has finished (every byte acknowledged and the close
    /// confirmed, or failed), or `wait` has passed.
    fn wait_finished(&self, wait: Duration) {
        let deadline = deadline_after(Some(wait));
        let mut st = self.state.lock();
        while !st.session.is_finished() {
            match deadline {
                Some(deadline) => {
                    if self.changed.wait_until(&mut st, deadline).timed_out() {
                        return;
                    }
                }
                None => self.changed.wait(&mut st),
            }
        }
    }

    pub(crate) fn set_linger(&self, linger: Option<Duration>) {
        self.state.lock().linger = linger;
    }

    pub(crate) fn linger(&self) -> Option<Duration> {
        self.state.lock().linger
    }

    // ------------------------------------------------------------ getters and setters

    pub(crate) fn status(&self) -> Status {
        let st = self.state.lock();
        let mut status = st.session.status(Instant::now());
        status.local_addr = st.local_addr;
        status.peer_addr = st.peer_addr;
        let role = st.session.role();
        drop(st);
        status.control_over_tcp = status
            .control_peer
            .is_some_and(|to| self.engine.routed_over_tcp(role, to));
        status
    }

    pub(crate) fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.state.lock().peer_addr.ok_or_else(not_connected)
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.state.lock().local_addr.ok_or_else(not_connected)
    }

    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        check_timeout(t)?;
        let mut st = self.state.lock();
        st.read_timeout = t;
        if let Some(conn) = &st.conn {
            conn.set_read_timeout(t)?;
        }
        Ok(())
    }

    pub(crate) fn read_timeout(&self) -> Option<Duration> {
        self.state.lock().read_timeout
    }

    pub(crate) fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        check_timeout(t)?;
        self.state.lock().write_timeout = t;
        Ok(())
    }

    pub(crate) fn write_timeout(&self) -> Option<Duration> {
        self.state.lock().write_timeout
    }

    pub(crate) fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        let mut st = self.state.lock();
        st.nodelay = nodelay;
        let set = match &st.conn {
            // Applied once the opening ANSWER is consumed.
            Some(_) if st.answer_pending => Ok(()),
            Some(conn) => conn.set_nodelay(nodelay),
            None => Ok(()),
        };
        drop(st);
        if nodelay {
            self.send_held();
        }
        set
    }

    pub(crate) fn nodelay(&self) -> bool {
        self.state.lock().nodelay
    }
}

impl Duties {
    /// Whether an application thread must wake the engine to look at the session, its
    /// duties having gone from `before` to `self`: a deadline that appeared or came
    /// earlier, or any other change.
    ///
    /// Not a deadline that moved later or went away: the application's reads and writes
    /// do that all the time (the silence limit, the acknowledgement of bytes read once
    /// the reads pause), and a wake-up of the engine thread for each would cost far more
    /// than the call. The engine then wakes at the deadline it was given, which is never
    /// later than the session's, finds nothing due, and sets the session's new deadline
    /// from [`Shared::duties`], as it does after every timer.
    pub(crate) fn need_a_look(&self, before: &Duties) -> bool {
        let sooner = match (before.timeout, self.timeout) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(was), Some(now)) => now < was,
        };
        let others = |d: &Duties| {
            (
                d.needs_connection,
                d.heard_since_disconnected,
                d.datagrams_missing,
                d.finished,
            )
        };
        sooner || others(self) != others(before)
    }
}

/// What the engine acts on: when any of it changes, the engine must look again (see
/// [`Duties::need_a_look`]).
fn duties(session: &Session) -> Duties {
    Duties {
        timeout: session.poll_timeout(),
        needs_connection: session.needs_connection(),
        heard_since_disconnected: session.heard_since_disconnected(),
        datagrams_missing: session.datagrams_missing(),
        finished: session.is_finished(),
        send_held: false,
    }
}

/// Sends at once the segments that Nagle's algorithm holds on `conn`, which stays in
/// Nagle mode: on Linux, setting TCP_NODELAY pushes pending segments out; then the
/// user's choice is restored. Elsewhere it costs two calls and may push nothing.
fn push_held_segments(conn: &TcpStream) {
    let _ = conn.set_nodelay(true);
    let _ = conn.set_nodelay(false);
}

/// Shuts a connection down both ways, waking every thread blocked on it.
fn abort(conn: Option<Arc<TcpStream>>) {
    if let Some(conn) = conn {
        let _ = conn.shutdown(Shutdown::Both);
    }
}

/// The deadline of a call bounded by `timeout`; a timeout too long to represent is none.
fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// The time left before `deadline` if it is shorter than the whole `timeout` (by more than
/// a millisecond: not worth two system calls otherwise); `Err` once it has passed.
fn bound_by_deadline(
    timeout: Option<Duration>,
    deadline: Option<Instant>,
) -> io::Result<Option<Duration>> {
    let (Some(timeout), Some(deadline)) = (timeout, deadline) else {
        return Ok(None);
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timed_out());
    }
    Ok((left + Duration::from_millis(1) < timeout).then_some(left))
}

fn lock_until(lock: &Mutex<()>, deadline: Option<Instant>) -> io::Result<MutexGuard<'_, ()>> {
    match deadline {
        None => Ok(lock.lock()),
        Some(d) => lock.try_lock_until(d).ok_or_else(timed_out),
    }
}

/// Whether a socket call's error is its own timeout (`SO_RCVTIMEO`, `SO_SNDTIMEO`), which
/// Unix reports as `EAGAIN`. Not `ETIMEDOUT`: that is the connection timing out (TCP's
/// retransmissions, or `TCP_USER_TIMEOUT`), a failure that calls for a reconnection.
fn is_timeout(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// The error a timed-out call returns; `WouldBlock`, as std's socket timeouts on Unix.
fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::WouldBlock, "the operation timed out")
}

fn not_connected() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the session has no connection yet",
    )
}

/// std rejects a zero timeout; so do we.
fn check_timeout(t: Option<Duration>) -> io::Result<()> {
    if t == Some(Duration::ZERO) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot set a 0 duration timeout",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duties(timeout: Option<Instant>) -> Duties {
        Duties {
            timeout,
            needs_connection: false,
            heard_since_disconnected: None,
            datagrams_missing: false,
            finished: false,
            send_held: false,
        }
    }

    #[test]
    fn the_engine_is_told_of_sooner_deadlines_and_other_changes_only() {
        let t0 = Instant::now();
        let at = |ms| Some(t0 + Duration::from_millis(ms));
        let look = |before, after| duties(after).need_a_look(&duties(before));
        assert!(look(None, at(5)), "a deadline appears");
        assert!(look(at(10), at(5)), "a deadline comes sooner");
        assert!(!look(at(5), at(10)), "a deadline moves later");
        assert!(!look(at(5), at(5)), "nothing changed");
        assert!(!look(at(5), None), "a deadline goes away");
        assert!(!look(None, None));
        let before = duties(at(5));
        let changes = [
            Duties {
                needs_connection: true,
                ..before
            },
            Duties {
                heard_since_disconnected: at(1),
                ..before
            },
            Duties {
                datagrams_missing: true,
                ..before
            },
            Duties {
                finished: true,
                // Even with a deadline that went away.
                timeout: None,
                ..before
            },
        ];
        for after in changes {
            assert!(after.need_a_look(&before), "{after:?}");
        }
    }
}
