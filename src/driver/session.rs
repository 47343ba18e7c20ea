//! One session's shared state and the thin layer that moves bytes for it.
//!
//! The protocol decisions live in [`core::session::Session`](crate::core::session::Session);
//! this file owns the TCP connection, the locks and the condition variable around it.
//!
//! Locks, always taken in this order and never the other way round:
//! 1. `read_lock`: held by a reader while it reads from TCP and counts what it read, so a
//!    reconnection that holds it sees an exact received count.
//! 2. `write_lock`: held while bytes are written to TCP, so that one connection carries the
//!    outgoing stream in order.
//! 3. `state`: the core and the connection; held only briefly, never across I/O.
//!
//! A reconnection aborts the old connection first (which wakes any thread blocked on it),
//! then takes both I/O locks ([`Shared::quiesce`]), exchanges counts and installs the new
//! connection; it lets readers go on, and resends what the peer lacks before any new byte.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex, MutexGuard};

use super::control::{ControlPlane, SessionKey};
use crate::core::control::ControlMessage;
use crate::core::session::{Limits, ReadGate, Role, Session};
use crate::{Config, Error, Status};

/// A session's state, shared by the application's handles, the driver thread, the control
/// thread and (on a server) the threads that accept reconnections.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Signalled on every change a blocked reader or writer may be waiting for.
    changed: Condvar,
    read_lock: Mutex<()>,
    write_lock: Mutex<()>,
    /// Held by a server's handshake thread from the moment it aborts the old connection
    /// until it has installed the new one (not through the resend), so that two
    /// reconnections of one session (a stale attempt and its retry) take turns.
    handover: Mutex<()>,
    /// Wakes the driver thread when its timers or duties changed.
    wake: Sender<()>,
    plane: Arc<ControlPlane>,
    cid: u32,
    token: u64,
    /// This session, as the control plane holds it (to re-register under a new key).
    me: std::sync::Weak<Shared>,
    /// Runs once when the session has ended (a server uses it to free the slot).
    on_finish: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

/// What `Shared::state` protects.
pub(crate) struct State {
    pub(crate) core: Session,
    conn: Option<Arc<TcpStream>>,
    /// Where the peer's control messages come from and ours go.
    peer_control: SocketAddr,
    key: SessionKey,
    local_addr: Option<SocketAddr>,
    peer_addr: Option<SocketAddr>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    nodelay: bool,
    /// On a server, a session the client has not confirmed yet is dropped at this time.
    pub(crate) unconfirmed_until: Option<Instant>,
}

/// What a client's driver runs whenever its session needs a connection.
pub(crate) type Reconnector = Box<dyn FnMut(&Arc<Shared>, &Receiver<()>) + Send>;

/// The next thing a read does.
enum ReadStep {
    Eof,
    Wait,
    Read(Arc<TcpStream>, u32),
}

/// What a new session is made of.
pub(crate) struct SessionSpec {
    pub(crate) role: Role,
    pub(crate) cid: u32,
    pub(crate) token: u64,
    pub(crate) epoch: u32,
    pub(crate) peer_control: SocketAddr,
    pub(crate) config: Config,
}

/// The two I/O locks, held by a reconnection while it moves the session to a new
/// connection.
pub(crate) struct Quiesced<'a> {
    read: MutexGuard<'a, ()>,
    write: MutexGuard<'a, ()>,
}

impl Shared {
    /// A session whose first connection is being set up, registered with the control plane.
    /// Returns `None` if its key is taken (a CID collision).
    pub(crate) fn new(
        spec: SessionSpec,
        plane: Arc<ControlPlane>,
    ) -> Option<(Arc<Shared>, Receiver<()>)> {
        let limits = Limits {
            send_buffer: spec.config.send_buffer_size_value(),
            ack_threshold: spec.config.ack_threshold_value(),
            give_up_after: spec.config.give_up_after_value(),
        };
        let key = (spec.role, spec.cid, spec.peer_control.ip());
        let (wake, woken) = crossbeam_channel::bounded(1);
        let shared = Arc::new_cyclic(|me| Shared {
            state: Mutex::new(State {
                core: Session::new(spec.role, spec.cid, spec.epoch, limits),
                conn: None,
                peer_control: spec.peer_control,
                key,
                local_addr: None,
                peer_addr: None,
                read_timeout: None,
                write_timeout: None,
                nodelay: spec.config.nodelay_value(),
                unconfirmed_until: None,
            }),
            changed: Condvar::new(),
            read_lock: Mutex::new(()),
            write_lock: Mutex::new(()),
            handover: Mutex::new(()),
            wake,
            plane: Arc::clone(&plane),
            cid: spec.cid,
            token: spec.token,
            me: me.clone(),
            on_finish: Mutex::new(None),
        });
        plane
            .register(key, Arc::clone(&shared))
            .then_some((shared, woken))
    }

    pub(crate) fn cid(&self) -> u32 {
        self.cid
    }

    pub(crate) fn token(&self) -> u64 {
        self.token
    }

    pub(crate) fn plane(&self) -> &ControlPlane {
        &self.plane
    }

    /// Sets what runs once the session has ended.
    pub(crate) fn set_on_finish(&self, f: Box<dyn FnOnce() + Send>) {
        *self.on_finish.lock() = Some(f);
    }

    /// Runs `f` on the state, then carries out what the core asked for: sends the control
    /// messages it queued, sends FIN if due, wakes blocked threads and, if its timers or
    /// duties changed, the driver.
    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut State, Instant) -> R) -> R {
        let now = Instant::now();
        let mut st = self.state.lock();
        let before = driver_view(&st.core);
        let result = f(&mut st, now);
        let mut outgoing = Vec::new();
        while let Some(msg) = st.core.poll_transmit() {
            outgoing.push(msg);
        }
        let fin = if st.core.poll_fin() {
            st.conn.clone()
        } else {
            None
        };
        let wake_driver = driver_view(&st.core) != before;
        let to = st.peer_control;
        drop(st);
        for msg in &outgoing {
            self.plane.send(msg, to);
        }
        if let Some(conn) = fin {
            // Every byte is acknowledged and the peer knows our total: the FIN only wakes
            // its reader. A failure here changes nothing.
            let _ = conn.shutdown(Shutdown::Write);
        }
        self.changed.notify_all();
        if wake_driver {
            let _ = self.wake.try_send(());
        }
        result
    }

    /// Applies a control message from the peer (called by the control thread).
    pub(crate) fn handle_control(&self, msg: &ControlMessage) {
        self.update(|st, now| {
            let was_connected = st.core.is_connected();
            st.core.handle_control(msg, now);
            if was_connected && !st.core.is_connected() {
                abort(st.conn.take());
            }
        });
    }

    // ------------------------------------------------------------ connections

    /// Makes `stream` the session's connection, as the first connection or after
    /// [`resume`](Self::resume).
    fn attach(&self, st: &mut State, stream: TcpStream) {
        // A socket option that fails here fails again on use, where it is reported.
        let _ = stream.set_read_timeout(st.read_timeout);
        let _ = stream.set_write_timeout(None);
        let _ = stream.set_nodelay(st.nodelay);
        st.local_addr = stream.local_addr().ok().or(st.local_addr);
        st.peer_addr = stream.peer_addr().ok().or(st.peer_addr);
        st.conn = Some(Arc::new(stream));
    }

    /// Attaches the first connection of a session, unless it already failed (then the
    /// reconnection brings another).
    pub(crate) fn attach_first(&self, stream: TcpStream) {
        self.update(|st, _| {
            if st.core.is_connected() && st.core.epoch() == 0 {
                self.attach(st, stream);
            }
        });
    }

    /// On a server, the client's CONFIRM arrived. Returns whether this confirmed the
    /// session (then the first connection is attached, if it has not failed meanwhile);
    /// `false` if a reconnection confirmed it first and handed it to `accept` already.
    pub(crate) fn take_confirmation(&self, stream: TcpStream) -> bool {
        self.update(|st, _| {
            if st.unconfirmed_until.take().is_none() {
                return false;
            }
            if st.core.is_connected() && st.core.epoch() == 0 {
                self.attach(st, stream);
            }
            true
        })
    }

    /// Reports that connection `epoch` failed; if it was the one in use, aborts it, which
    /// wakes every thread blocked on it.
    pub(crate) fn connection_failed(&self, epoch: u32, reason: &str) {
        self.update(|st, now| {
            if st.core.handle_connection_failed(epoch, reason, now) {
                log::debug!("session {}: connection {epoch} failed: {reason}", self.cid);
                abort(st.conn.take());
            }
        });
    }

    /// Aborts the connection in use, if any (a server does this when the client comes back
    /// on a new one).
    pub(crate) fn abort_current(&self, reason: &str) {
        let epoch = self.state.lock().core.epoch();
        self.connection_failed(epoch, reason);
    }

    /// Takes both I/O locks; no application byte moves until they are dropped.
    pub(crate) fn quiesce(&self) -> Quiesced<'_> {
        let read = self.read_lock.lock();
        let write = self.write_lock.lock();
        Quiesced { read, write }
    }

    /// Serialises the reconnections of this session on a server (see `handover`).
    pub(crate) fn handover(&self) -> MutexGuard<'_, ()> {
        self.handover.lock()
    }

    /// Locks the state (for a handshake that must read it while quiesced).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Moves the session to `stream`, connection number `epoch`, whose peer has received
    /// `peer_received` bytes, and resends what it lacks.
    pub(crate) fn resume(
        &self,
        quiesced: Quiesced<'_>,
        stream: TcpStream,
        epoch: u32,
        peer_received: u64,
        peer_control: Option<SocketAddr>,
        handover: Option<MutexGuard<'_, ()>>,
    ) {
        self.update(|st, now| {
            st.core.handle_resume(peer_received, epoch, now);
            if let Some(addr) = peer_control {
                self.move_peer_control(st, addr);
            }
            self.attach(st, stream);
        });
        // Readers may go on now: the peer has our count. Keeping them out during the
        // resend could deadlock two sides that both resend more than the kernel buffers.
        // Likewise the next reconnection: it must be able to abort this connection if the
        // resend hangs on it.
        drop(handover);
        let Quiesced { read, write } = quiesced;
        drop(read);
        self.send_unsent_locked(None);
        drop(write);
    }

    /// A server's client may come back from another address: route its messages.
    fn move_peer_control(&self, st: &mut State, addr: SocketAddr) {
        st.peer_control = addr;
        let key = (st.key.0, st.key.1, addr.ip());
        if key != st.key {
            self.plane.unregister(&st.key);
            if let Some(me) = self.me.upgrade() {
                self.plane.register(key, me);
            }
            st.key = key;
        }
    }

    // ------------------------------------------------------------ application I/O

    /// `Read::read`.
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = deadline_after(self.state.lock().read_timeout);
        let result = self.read_until(buf, deadline);
        self.update(|st, _| st.core.reader_unblocked());
        result
    }

    fn read_until(&self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<usize> {
        let mut waited = false;
        loop {
            let guard = lock_until(&self.read_lock, deadline)?;
            let step = self.update(|st, now| match st.core.read_gate() {
                ReadGate::Eof => Ok(ReadStep::Eof),
                ReadGate::Failed(e) => Err(io::Error::from(e)),
                ReadGate::Proceed => {
                    st.core.reader_blocked(now);
                    Ok(match &st.conn {
                        Some(conn) => ReadStep::Read(Arc::clone(conn), st.core.epoch()),
                        None => ReadStep::Wait,
                    })
                }
            })?;
            let (conn, epoch) = match step {
                ReadStep::Eof => return Ok(0),
                ReadStep::Read(conn, epoch) => (conn, epoch),
                ReadStep::Wait => {
                    // Let the reconnection take the read lock.
                    drop(guard);
                    self.wait_for_connection(deadline)?;
                    waited = true;
                    continue;
                }
            };
            if waited {
                // Part of the timeout went on waiting for the reconnection.
                if let Some(d) = deadline {
                    let left = d.saturating_duration_since(Instant::now());
                    let _ = conn.set_read_timeout(Some(left.max(Duration::from_millis(1))));
                }
            }
            let result = (&*conn).read(buf);
            if waited && deadline.is_some() {
                let _ = conn.set_read_timeout(self.state.lock().read_timeout);
            }
            match result {
                Ok(0) => {
                    let ended = self.update(|st, _| matches!(st.core.read_gate(), ReadGate::Eof));
                    if ended {
                        return Ok(0);
                    }
                    self.connection_failed(epoch, "end of stream without a close announcement");
                }
                Ok(n) => {
                    self.update(|st, _| st.core.handle_read(n));
                    return Ok(n);
                }
                Err(e) if is_timeout(&e) => return Err(e),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.connection_failed(epoch, &e.to_string()),
            }
            waited = true;
        }
    }

    /// Blocks until the session has a connection again, or a read can end without one.
    fn wait_for_connection(&self, deadline: Option<Instant>) -> io::Result<()> {
        let mut st = self.state.lock();
        while matches!(st.core.read_gate(), ReadGate::Proceed) && st.conn.is_none() {
            self.wait(&mut st, deadline)?;
        }
        Ok(())
    }

    /// `Write::write`: copies into the send buffer, then writes to TCP from this thread.
    pub(crate) fn write(&self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let deadline = deadline_after(self.state.lock().write_timeout);
        loop {
            let pushed = self.update(|st, now| match st.core.write_space() {
                Err(e) => {
                    st.core.writer_unblocked();
                    Err(io::Error::from(e))
                }
                Ok(0) => {
                    st.core.writer_blocked(now);
                    if !st.nodelay {
                        if let Some(conn) = &st.conn {
                            // Nagle may hold the tail of the window until a delayed TCP
                            // ACK, and the peer acknowledges (frees our buffer) only once
                            // it has read that tail: a stall per window. On Linux, setting
                            // TCP_NODELAY pushes pending segments out at once; then the
                            // user's choice is restored. Elsewhere it costs two calls.
                            let _ = conn.set_nodelay(true);
                            let _ = conn.set_nodelay(false);
                        }
                    }
                    Ok(None)
                }
                Ok(_) => {
                    st.core.writer_unblocked();
                    let start = st.core.written();
                    Ok(Some((start, st.core.write(data, now))))
                }
            })?;
            if let Some((start, n)) = pushed {
                self.send_unsent(Some((start, &data[..n])));
                return Ok(n);
            }
            let mut st = self.state.lock();
            while matches!(st.core.write_space(), Ok(0)) {
                if let Err(e) = self.wait(&mut st, deadline) {
                    st.core.writer_unblocked();
                    return Err(e);
                }
            }
        }
    }

    /// Writes to the connection whatever of the send buffer it lacks. `fresh` is the
    /// caller's own just-buffered bytes with their stream position: written from there
    /// when they are all that is missing, which saves a copy.
    fn send_unsent(&self, fresh: Option<(u64, &[u8])>) {
        let _write = self.write_lock.lock();
        self.send_unsent_locked(fresh);
    }

    fn send_unsent_locked(&self, fresh: Option<(u64, &[u8])>) {
        loop {
            let job = {
                let st = self.state.lock();
                match (st.core.unsent(), &st.conn) {
                    (Some((from, to)), Some(conn)) if from < to => {
                        Some((from, to, Arc::clone(conn), st.core.epoch()))
                    }
                    _ => None,
                }
            };
            let Some((from, to, conn, epoch)) = job else {
                return;
            };
            let copy: Vec<u8>;
            let bytes = match fresh {
                Some((start, mine)) if from >= start && to <= start + mine.len() as u64 => {
                    // In range: both offsets are within `mine`.
                    &mine[(from - start) as usize..(to - start) as usize]
                }
                _ => {
                    copy = self.state.lock().core.buffered_from(from);
                    let len = (to - from) as usize;
                    &copy[..len.min(copy.len())]
                }
            };
            match (&*conn).write(bytes) {
                Ok(0) => {
                    self.connection_failed(epoch, "the connection accepts no more bytes");
                    return;
                }
                Ok(n) => self.update(|st, _| st.core.handle_sent(epoch, from, n)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) if self.state.lock().core.peer_closed() => {
                    // Our own FIN after the peer's CLOSE woke this write: nothing to send.
                    return;
                }
                Err(e) => {
                    // The bytes stay buffered; the reconnection resends them.
                    self.connection_failed(epoch, &e.to_string());
                    return;
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
        self.update(|st, now| {
            if matches!(how, Shutdown::Write | Shutdown::Both) {
                st.core.shutdown_write(now);
            }
            if matches!(how, Shutdown::Read | Shutdown::Both) {
                st.core.shutdown_read();
                if let Some(conn) = &st.conn {
                    // Wakes a reader blocked on the connection; it then sees end of stream.
                    let _ = conn.shutdown(Shutdown::Read);
                }
            }
        });
    }

    /// The application dropped its last handle: the session lingers until every byte is
    /// acknowledged (or the peer closed too) and its CLOSE is confirmed.
    pub(crate) fn close(&self) {
        self.update(|st, now| st.core.close(now));
    }

    // ------------------------------------------------------------ getters and setters

    pub(crate) fn status(&self) -> Status {
        self.state.lock().core.status(Instant::now())
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
        if let Some(conn) = &st.conn {
            conn.set_nodelay(nodelay)?;
        }
        Ok(())
    }

    pub(crate) fn nodelay(&self) -> bool {
        self.state.lock().nodelay
    }

    // ------------------------------------------------------------ the driver thread

    /// Starts the session's driver thread: it runs the core's timers, lingers after close,
    /// runs `reconnect` (on a client) whenever the session needs a connection, and frees the
    /// session at the end.
    pub(crate) fn spawn_driver(
        self: &Arc<Self>,
        woken: Receiver<()>,
        mut reconnect: Option<Reconnector>,
    ) -> io::Result<()> {
        let me = Arc::clone(self);
        thread::Builder::new()
            .name(format!("robust-tcp-session-{}", self.cid))
            .stack_size(128 * 1024)
            .spawn(move || loop {
                let (deadline, needs_connection, finished) = me.update(|st, now| {
                    st.core.handle_timeout(now);
                    if st.unconfirmed_until.is_some_and(|t| t <= now) {
                        st.unconfirmed_until = None;
                        st.core.fail(Error::ProtocolViolation(
                            "the client never confirmed the session",
                        ));
                    }
                    let deadline = [st.core.poll_timeout(), st.unconfirmed_until]
                        .into_iter()
                        .flatten()
                        .min();
                    (deadline, st.core.needs_connection(), st.core.is_finished())
                });
                if finished {
                    me.finish();
                    return;
                }
                if needs_connection {
                    if let Some(reconnect) = reconnect.as_mut() {
                        reconnect(&me, &woken);
                        continue;
                    }
                }
                // A wake-up or the deadline: either way, look again.
                let _ = match deadline {
                    Some(d) => woken.recv_deadline(d).ok(),
                    None => woken.recv().ok(),
                };
            })?;
        Ok(())
    }

    fn finish(&self) {
        let key = self.update(|st, _| {
            abort(st.conn.take());
            st.key
        });
        self.plane.unregister(&key);
        if let Some(f) = self.on_finish.lock().take() {
            f();
        }
        log::debug!("session {} finished", self.cid);
    }
}

/// What the driver thread acts on: when any of it changes, the driver must look again.
fn driver_view(core: &Session) -> (Option<Instant>, bool, bool) {
    (
        core.poll_timeout(),
        core.needs_connection(),
        core.is_finished(),
    )
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

fn lock_until(lock: &Mutex<()>, deadline: Option<Instant>) -> io::Result<MutexGuard<'_, ()>> {
    match deadline {
        None => Ok(lock.lock()),
        Some(d) => lock.try_lock_until(d).ok_or_else(timed_out),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
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
