//! The engine's resend: what a connection lacks (after a reconnection, bytes a writer's
//! timeout left, a batch that is due) written with non-blocking sends, a chunk at a time;
//! the hand-back between the engine and a writer that holds the write lock; and the
//! engine's watch of a connection for room while bytes wait ([`Engine::flush`]).

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use mio::unix::SourceFd;
use mio::{Interest, Token};
use parking_lot::MutexGuard;

use super::super::Engine;
use super::nodelay::push_held_segments;
use super::{SharedSession, State};

/// The most a resend copies out of the send buffer for one system call, so that a large
/// buffer is not copied whole for each try. The engine's resend also yields after one such
/// chunk, so that a session with megabytes to resend holds up every other session's
/// handshakes, datagrams and timers for no more than a copy and a system call of this
/// size (tens of microseconds), and 64 KiB is about what loopback's TCP takes per call.
const RESEND_CHUNK: usize = 64 * 1024;

/// The engine's resend, and a non-blocking application's write, must not block
/// (application threads use the socket in blocking mode), nor raise SIGPIPE when the peer
/// has reset the connection: std's own writes avoid it the same way, and a host program
/// may not ignore the signal.
#[cfg(not(target_vendor = "apple"))]
pub(super) const DONTWAIT_SEND: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
/// Apple's systems have no MSG_NOSIGNAL: `SharedSession::attach` sets SO_NOSIGPIPE instead.
#[cfg(target_vendor = "apple")]
pub(super) const DONTWAIT_SEND: libc::c_int = libc::MSG_DONTWAIT;

/// How a non-blocking flush went.
pub(super) enum Flush {
    /// Nothing is left to send on the current connection (or there is none).
    Done,
    /// Another thread holds the write lock; it sends what is left, or asks again.
    Busy,
    /// The connection's send buffer is full: wait until `conn` is writable.
    Blocked(Arc<TcpStream>),
    /// One chunk went out and more is left: flush again after other work.
    Yielded,
}

/// The bytes a connection lacks.
pub(super) struct Unsent {
    /// The stream position of the first.
    pub(super) from: u64,
    /// The stream position after the last.
    pub(super) to: u64,
    /// The connection that lacks them.
    pub(super) conn: Arc<TcpStream>,
    /// Its number.
    pub(super) epoch: u32,
}

impl SharedSession {
    /// Writes what the connection lacks without blocking (the engine's resend when no
    /// application writer is sending).
    fn flush(&self) -> Flush {
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
    pub(super) fn flush_locked(&self) -> Flush {
        self.state.lock().flush_wanted = false;
        // The last connection this resend wrote to.
        let mut wrote_to: Option<Arc<TcpStream>> = None;
        loop {
            let Some(unsent) = self.unsent() else {
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
            let bytes = self.copy_chunk(&unsent);
            let Unsent {
                from, conn, epoch, ..
            } = unsent;
            let sock = socket2::SockRef::from(&*conn);
            match sock.send_with_flags(&bytes, DONTWAIT_SEND) {
                Ok(0) => {
                    self.connection_failed(epoch, "the connection accepts no more bytes");
                    return Flush::Done;
                }
                Ok(n) => {
                    let more = self.update(|st, now| {
                        st.session.handle_sent(epoch, from, n, now);
                        Self::unsent_in(st).is_some()
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

    /// The bytes the current connection lacks; `None` if it lacks nothing (or there is no
    /// connection).
    pub(super) fn unsent(&self) -> Option<Unsent> {
        Self::unsent_in(&self.state.lock())
    }

    /// A copy of the first of `unsent`'s bytes, at most [`RESEND_CHUNK`] of them, out of
    /// the send buffer.
    pub(super) fn copy_chunk(&self, unsent: &Unsent) -> Vec<u8> {
        let len = usize::try_from(unsent.to - unsent.from).unwrap_or(usize::MAX);
        let st = self.state.lock();
        st.session.buffered_from(unsent.from, len.min(RESEND_CHUNK))
    }

    /// [`unsent`](Self::unsent) with the state locked.
    pub(super) fn unsent_in(st: &State) -> Option<Unsent> {
        match (st.session.unsent(), &st.conn) {
            (Some((from, to)), Some(conn)) if from < to => Some(Unsent {
                from,
                to,
                conn: Arc::clone(conn),
                epoch: st.session.epoch(),
            }),
            _ => None,
        }
    }

    /// Lets go of the write lock, then hands the engine the sending it asked for while
    /// the lock was held (see [`flush`](Self::flush)), or what `left` says is left: it
    /// sends what a writer never will. Every holder of the lock but the engine lets go
    /// here; a request it dropped would leave a resend undone.
    pub(super) fn unlock_write(&self, write: MutexGuard<'_, ()>, left: bool) {
        drop(write);
        // Only once the write lock is free: the engine's resend needs it, and gives up
        // (leaving the bytes to whoever holds it) if it is taken.
        let wanted = std::mem::take(&mut self.state.lock().flush_wanted);
        if left || wanted {
            self.engine.flush(self.id);
        }
    }
}

impl Engine {
    /// Sends what session `id`'s connection lacks, as far as the kernel takes it now, and
    /// watches the connection for room if it takes less.
    pub(in crate::engine) fn flush(&mut self, id: Token) {
        let Some(entry) = self.sessions.get_mut(&id) else {
            return;
        };
        match entry.shared.flush() {
            Flush::Done | Flush::Busy => {
                let watch = entry.flush_watch.take();
                self.unwatch(watch);
            }
            Flush::Yielded => {
                let watch = entry.flush_watch.take();
                self.unwatch(watch);
                // Once per round, however many asked.
                if !self.backlog.contains(&id) {
                    self.backlog.push(id);
                }
            }
            Flush::Blocked(conn) => {
                if entry
                    .flush_watch
                    .as_ref()
                    .is_some_and(|w| Arc::ptr_eq(w, &conn))
                {
                    return; // Registered already: the next writable edge comes.
                }
                let old = entry.flush_watch.replace(Arc::clone(&conn));
                let fd = conn.as_raw_fd();
                let registered =
                    self.poll
                        .registry()
                        .register(&mut SourceFd(&fd), id, Interest::WRITABLE);
                if let Err(e) = registered {
                    log::warn!("cannot watch a connection for room: {e}");
                    if let Some(entry) = self.sessions.get_mut(&id) {
                        entry.flush_watch = None;
                    }
                }
                self.unwatch(old);
            }
        }
    }

    /// Stops watching a connection for room.
    pub(in crate::engine) fn unwatch(&self, conn: Option<Arc<TcpStream>>) {
        if let Some(conn) = conn {
            let fd = conn.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
    }
}
