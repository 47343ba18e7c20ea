//! One session's state, shared by the application's threads and the engine, its locks,
//! and [`SharedSession::update`], the one place that carries out what the core asked for.
//!
//! The protocol decisions live in the core [`Session`]; this module owns the TCP connection,
//! the locks and the condition variable around it. Application threads read and write the
//! connection themselves, in blocking mode, straight from and into their own buffers; the
//! engine thread installs connections, runs timers and resends what no writer sends. Each
//! job has its file:
//! - [`read`]: the application's blocking reads;
//! - [`write`]: the application's blocking writes;
//! - [`resend`]: the engine's non-blocking resend of what a connection lacks;
//! - [`nodelay`]: when bytes go out at once: `TCP_NODELAY` held on for a first exchange,
//!   segments Nagle holds pushed out, and small writes held for a batch sent;
//! - [`install`]: a connection's life in the session: attached (first, opening or
//!   resumption), failed, and the barrier and counts a reconnection needs;
//! - [`close`]: shutdown, close, linger, passivation, and the end of the session;
//! - [`options`]: the socket options and what the session shows of itself.
//!
//! # Locks
//!
//! Always taken in this order, never the other way round:
//! 1. `read_lock`: held by a reader while it reads from TCP and counts what it read, so
//!    that once a failed connection is detached, taking and releasing it (the engine's
//!    [`SharedSession::barrier`]) leaves an exact received count.
//! 2. `write_lock`: held while bytes are written to TCP, so that one connection carries the
//!    outgoing stream in order; and, likewise, so that the barrier leaves an exact count
//!    of what was ever written.
//! 3. `state`: the core and the connection; held only briefly, never across blocking I/O.
//!
//! No lock is held while waiting for another object's lock, and the engine only ever
//! waits for the I/O locks right after it aborted the connection (the barrier): a thread
//! holding one then is inside a system call on a shut-down socket, which returns at once.
//! [`SharedSession::update`] is the one place that carries out what the core asked for: it sends
//! the queued control messages, sends FIN when due, wakes blocked threads and tells the
//! engine when the session's timers or duties changed.

mod close;
mod install;
mod nodelay;
mod options;
mod read;
mod resend;
mod write;

use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Token;
use parking_lot::{Condvar, Mutex, MutexGuard};

use super::control::ControlSocket;
use super::{mark_dirty, on_engine_thread, EngineHandle};
use crate::core::auth::{HandshakeKeys, SessionKeys};
use crate::core::control::MAX_LEN;
use crate::core::session::{End, Limits, ReadGate, Session};
use crate::Config;

/// A session's state, shared by the application's handles and the engine.
pub(crate) struct SharedSession {
    /// The engine's name for the session.
    id: Token,
    /// The session's CID; 0 on a client until the server answers its opening.
    cid: AtomicU32,
    /// Whether the connection's `TCP_NODELAY` is on against the session's setting, and
    /// until when (see [`attach_first`](Self::attach_first)).
    nodelay: nodelay::NodelayLoan,
    /// Prove and check the handshakes. Set once more, on a client whose opening ran the key
    /// agreement, when the ANSWER comes ([`opened`](Self::opened)).
    handshake_keys: Mutex<HandshakeKeys>,
    state: Mutex<State>,
    /// Signalled when what a blocked thread waits for changed (see [`Awaited`]).
    changed: Condvar,
    read_lock: Mutex<()>,
    write_lock: Mutex<()>,
    engine: Arc<EngineHandle>,
    /// The UDP socket the session's datagrams go out on: a server's fixed control port
    /// (NATs and firewalls pass the answers only from the port the client sent to), or
    /// the process's shared one.
    control: Arc<ControlSocket>,
}

/// What `SharedSession::state` protects.
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
    /// connection that the peer's TCP does not acknowledge (`TCP_USER_TIMEOUT`, Linux's;
    /// macOS exposes no equivalent that safe code can set: the heartbeats alone serve).
    #[cfg(target_os = "linux")]
    dead_after: Option<Duration>,
    nodelay: bool,
    /// `IP_TTL` for the current connection and every later one, once the application set
    /// it (see `RSocket::set_ttl`).
    ttl: Option<u32>,
    /// Reads and writes return `WouldBlock` instead of waiting (see
    /// `RSocket::set_nonblocking`); the sockets stay in blocking mode, for the engine.
    nonblocking: bool,
    /// `take_error` has returned the session's failure: it returns it once.
    error_taken: bool,
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

/// What the threads blocked on [`SharedSession::changed`] wait for: each field is the
/// condition of one wait loop, which tests it through the same method. An update that
/// changes none of them notifies nobody: every waiter would find its condition as it was
/// and wait again, for two context switches and nothing (a reader waiting for its
/// opening's ANSWER was woken so by the engine's first look at the session).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Awaited {
    connection: bool,
    room: bool,
    unfinished: bool,
    cid: bool,
}

impl State {
    /// A read must wait: the session has no connection to read from (or the engine still
    /// reads its opening ANSWER from it), and a read could not end without one.
    fn awaits_connection(&self) -> bool {
        matches!(self.session.read_gate(), ReadGate::Proceed)
            && (self.conn.is_none() || self.answer_pending)
    }

    /// A write must wait for room in the send buffer.
    fn awaits_room(&self) -> bool {
        matches!(self.session.write_space(), Ok(0))
    }

    /// The server has not answered the opening yet, and the session has not ended.
    fn awaits_cid(&self) -> bool {
        let session = &self.session;
        session.is_opening() && session.failure().is_none() && !session.is_finished()
    }

    fn awaited(&self) -> Awaited {
        Awaited {
            connection: self.awaits_connection(),
            room: self.awaits_room(),
            unfinished: !self.session.is_finished(),
            cid: self.awaits_cid(),
        }
    }
}

/// What a new session is made of.
pub(crate) struct SessionSpec {
    pub(crate) id: Token,
    /// A client's: the server's control address, once known. A server's: its key for the
    /// values of its path challenges, which it draws for the session.
    pub(crate) end: End,
    pub(crate) cid: u32,
    /// A key-agreement client's, until its ANSWER: keys derived from a random secret that
    /// nobody else holds (nothing is tagged with them: no datagram goes out before).
    pub(crate) keys: SessionKeys,
    pub(crate) epoch: u32,
    /// The socket to send control datagrams on.
    pub(crate) control: Arc<ControlSocket>,
    pub(crate) config: Config,
}

/// What the engine must do for a session, as [`SharedSession::duties`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Duties {
    /// When the core's timers are next due.
    pub(crate) timeout: Option<Instant>,
    /// The session lacks a connection it needs (a client reconnects).
    pub(crate) needs_connection: bool,
    /// The peer was heard from since the connection was lost: the path is back.
    pub(crate) heard_since_disconnected: Option<Instant>,
    /// When the peer was last heard from at all (whether the last connection proved
    /// itself, for the reconnection's backoff).
    pub(crate) last_heard: Instant,
    /// A client hears no control datagram while its connection works: they are to go
    /// over TCP.
    pub(crate) datagrams_missing: bool,
    /// Nothing is left to do: the session can be freed.
    pub(crate) finished: bool,
    /// Bytes that writes held for a batch are due: send them. Only
    /// [`SharedSession::duties`] sets it, once per hold.
    pub(crate) send_held: bool,
}

impl SharedSession {
    /// A session whose first connection is being set up.
    pub(crate) fn new(spec: SessionSpec, engine: Arc<EngineHandle>) -> Arc<SharedSession> {
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
        Arc::new(SharedSession {
            id: spec.id,
            cid: AtomicU32::new(spec.cid),
            nodelay: nodelay::NodelayLoan::default(),
            handshake_keys: Mutex::new(spec.keys.handshake),
            state: Mutex::new(State {
                reported: duties(&session),
                session,
                conn: None,
                local_addr: None,
                peer_addr: None,
                read_timeout: None,
                write_timeout: None,
                linger: None,
                #[cfg(target_os = "linux")]
                dead_after: spec.config.dead_after_value(),
                nodelay: spec.config.nodelay_value(),
                ttl: None,
                nonblocking: false,
                error_taken: false,
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
        while st.awaits_cid() {
            self.changed.wait(&mut st);
        }
        drop(st);
        self.cid()
    }

    /// The keys that prove and check this session's reconnections.
    pub(crate) fn handshake_keys(&self) -> HandshakeKeys {
        self.handshake_keys.lock().clone()
    }

    /// Runs `f` on the state, then carries out what the core asked for: sends the control
    /// messages it queued, sends FIN if due, wakes blocked threads and tells the engine
    /// when it must look at the session: from an application thread, only if sooner than
    /// it planned to (see [`Duties::must_wake_engine`]); on the engine thread, whenever its
    /// duties changed, which costs nothing there.
    fn update<R>(&self, f: impl FnOnce(&mut State, Instant) -> R) -> R {
        self.update_for(Looker::Caller, f).0
    }

    /// [`update`](Self::update), for `looker`; also returns the duties it computed after
    /// `f` and the datagrams: the engine, looking at the session, acts on them at once,
    /// so the session is not marked for another look by this one.
    fn update_for<R>(
        &self,
        looker: Looker,
        f: impl FnOnce(&mut State, Instant) -> R,
    ) -> (R, Duties) {
        let now = Instant::now();
        let mut st = self.state.lock();
        let awaited = st.awaited();
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
        let end_of_stream = if st.session.poll_end_of_stream() {
            st.conn.clone()
        } else {
            None
        };
        // Computed once per call, against what the last call reported: reads and writes
        // come here several times each, and this is their costliest part.
        let after = duties(&st.session);
        let before = st.reported;
        let wake = st.awaited() != awaited;
        let tell_engine = if looker == Looker::Engine {
            // The engine acts on `after` as it returns.
            false
        } else if on_engine_thread() {
            // A look costs the engine no wake-up here, and saves one: re-armed now, it
            // does not wake later at a deadline that has moved.
            after != before
        } else {
            after.must_wake_engine(&before)
        };
        st.reported = if tell_engine || looker == Looker::Engine {
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
        if let Some(conn) = end_of_stream {
            // Wakes a reader blocked on the connection; it then sees end of stream.
            let _ = conn.shutdown(Shutdown::Read);
        }
        if let Some(conn) = fin {
            // Every byte is acknowledged and the peer knows our total: the FIN only wakes
            // its reader. A failure here changes nothing.
            let _ = conn.shutdown(Shutdown::Write);
        }
        if wake {
            self.changed.notify_all();
        }
        if tell_engine {
            if on_engine_thread() {
                mark_dirty(self.id);
            } else {
                self.engine.poke(self.id);
            }
        }
        (result, after)
    }

    /// Runs the core's timers and reports what the engine must do: the duties as they
    /// stand once the datagrams the timers queued went out (a retransmission's deadline
    /// among them).
    pub(crate) fn duties(&self) -> Duties {
        let (send_held, after) = self.update_for(Looker::Engine, |st, now| {
            st.session.handle_timeout(now);
            st.session.release_held(now, false)
        });
        Duties { send_held, ..after }
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

    /// The client's EARLY datagram for this session's opening came from `from`: see
    /// `Session::handle_early`.
    pub(crate) fn handle_early(&self, from: SocketAddr, len: usize) {
        let counted = self.update(|st, now| st.session.handle_early(from, len, now));
        log::trace!(
            "session {}: EARLY from {from}, counted: {counted}",
            self.cid()
        );
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
    /// from [`SharedSession::duties`], as it does after every timer.
    pub(crate) fn must_wake_engine(&self, before: &Duties) -> bool {
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

/// Who runs an [`update`](SharedSession::update): the engine looking at the session (its
/// `service`), or anyone else (an application's call, or the engine on the session's
/// behalf: a datagram, a connection's event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Looker {
    Engine,
    Caller,
}

/// What the engine acts on: when any of it changes, the engine must look again (see
/// [`Duties::must_wake_engine`]).
fn duties(session: &Session) -> Duties {
    Duties {
        timeout: session.poll_timeout(),
        needs_connection: session.needs_connection(),
        heard_since_disconnected: session.heard_since_disconnected(),
        last_heard: session.last_heard(),
        datagrams_missing: session.datagrams_missing(),
        finished: session.is_finished(),
        send_held: false,
    }
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

/// The deadline of an application's read or write: a non-blocking call's is now, so that
/// every wait it would make (for a lock, a connection, room in the send buffer) fails at
/// once with `WouldBlock`; its socket calls do not wait either (`MSG_DONTWAIT`).
fn call_deadline(timeout: Option<Duration>, nonblocking: bool) -> Option<Instant> {
    if nonblocking {
        Some(Instant::now())
    } else {
        deadline_after(timeout)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn duties(timeout: Option<Instant>) -> Duties {
        Duties {
            timeout,
            needs_connection: false,
            heard_since_disconnected: None,
            last_heard: Instant::now(),
            datagrams_missing: false,
            finished: false,
            send_held: false,
        }
    }

    #[test]
    fn the_engine_is_told_of_sooner_deadlines_and_other_changes_only() {
        let t0 = Instant::now();
        let at = |ms| Some(t0 + Duration::from_millis(ms));
        let wakes = |before, after| duties(after).must_wake_engine(&duties(before));
        assert!(wakes(None, at(5)), "a deadline appears");
        assert!(wakes(at(10), at(5)), "a deadline comes sooner");
        assert!(!wakes(at(5), at(10)), "a deadline moves later");
        assert!(!wakes(at(5), at(5)), "nothing changed");
        assert!(!wakes(at(5), None), "a deadline goes away");
        assert!(!wakes(None, None));
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
            assert!(after.must_wake_engine(&before), "{after:?}");
        }
    }
}
