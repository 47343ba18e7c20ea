//! The application's blocking writes: bytes copied into the send buffer, then written to
//! the TCP connection from the caller's thread, from its own slice when that is all the
//! connection lacks.

use std::io::{self, Write};
use std::time::Instant;

use super::nodelay::push_held_segments;
use super::resend::{Unsent, DONTWAIT_SEND};
use super::{call_deadline, is_timeout, lock_until, SharedSession, State};

/// What a write put into the send buffer.
struct Pushed {
    /// The stream position of its first byte.
    start: u64,
    /// How many bytes it put.
    len: usize,
    /// What the connection lacks now; `None` if nothing, or if the bytes may wait for a
    /// batch.
    unsent: Option<Unsent>,
}

impl SharedSession {
    /// `Write::write`: copies into the send buffer, then writes to TCP from this thread.
    ///
    /// With a write timeout, the call returns within about it whatever happens: once the
    /// bytes are in the send buffer they belong to the session, so what the kernel does not
    /// take in time is left for the engine to send.
    pub(crate) fn write(&self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let (timeout, nonblocking, mut connected) = {
            let st = self.state.lock();
            (st.write_timeout, st.nonblocking, st.conn.is_some())
        };
        let deadline = call_deadline(timeout, nonblocking);
        self.nodelay_before_write();
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
            let nagle = !self.nodelay.held();
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
            if let Some(Pushed { start, len, unsent }) = pushed {
                match write {
                    Some(write) => {
                        let fresh = data.get(..len).unwrap_or_default();
                        let out_of_time =
                            self.send_locked(start, fresh, unsent, deadline, nonblocking);
                        self.unlock_write(write, out_of_time);
                        self.nodelay_written();
                    }
                    // A connection came meanwhile and lacks bytes: the engine sends them.
                    None if unsent.is_some() => self.engine.flush(self.id),
                    None => {}
                }
                return Ok(len);
            }
            if let Some(write) = write {
                self.unlock_write(write, false);
            }
            let mut st = self.state.lock();
            while st.awaits_room() {
                if let Err(e) = self.wait(&mut st, deadline) {
                    st.session.writer_unblocked();
                    return Err(e);
                }
            }
            connected = st.conn.is_some();
        }
    }

    /// Appends what fits of `data` to the send buffer (see [`Pushed`]; the bytes may wait
    /// for a batch with `nagle`: see `Session::hold_unsent`); `None` if nothing fits.
    fn push(st: &mut State, data: &[u8], nagle: bool, now: Instant) -> io::Result<Option<Pushed>> {
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
                let len = st.session.write(data, now);
                // The engine asked for what the connection lacks (held bytes that are due,
                // or a resend) while a writer held the lock: this writer sends it. Handing
                // it back instead would wake the engine again and again while writes go on.
                let asked = std::mem::take(&mut st.flush_wanted);
                let unsent = if st.session.hold_unsent(nagle && !asked, now) {
                    None
                } else {
                    Self::unsent_in(st)
                };
                Ok(Some(Pushed { start, len, unsent }))
            }
        }
    }

    /// Writes to the connection what it lacks (`unsent`, then whatever is still missing),
    /// with the write lock held. The caller's own just-buffered bytes, `fresh`, from
    /// stream position `start`, are written from its slice when they are all that is
    /// missing, which saves a copy. Returns whether the deadline passed with bytes still
    /// unsent: the engine then sends them. A `nonblocking` call sends what the kernel takes
    /// now (`MSG_DONTWAIT`) and leaves the rest to the engine the same way.
    fn send_locked(
        &self,
        start: u64,
        fresh: &[u8],
        mut unsent: Option<Unsent>,
        deadline: Option<Instant>,
        nonblocking: bool,
    ) -> bool {
        loop {
            let Some(lacking) = unsent else {
                return false;
            };
            let copy: Vec<u8>;
            let (from, to) = (lacking.from, lacking.to);
            let end = start + fresh.len() as u64;
            let bytes = if from >= start && to <= end {
                // In range: both offsets are within `fresh`.
                fresh
                    .get((from - start) as usize..(to - start) as usize)
                    .unwrap_or_default()
            } else {
                copy = self.copy_chunk(&lacking);
                &copy
            };
            let Unsent { conn, epoch, .. } = lacking;
            // The connection's own send timeout is off (writers without a timeout block);
            // a writer with one bounds each system call by what is left of it.
            let left = match deadline.map(|d| d.saturating_duration_since(Instant::now())) {
                _ if nonblocking => None,
                Some(left) if left.is_zero() => return true,
                left => left,
            };
            if left.is_some() {
                let _ = conn.set_write_timeout(left);
            }
            let result = if nonblocking {
                socket2::SockRef::from(&*conn).send_with_flags(bytes, DONTWAIT_SEND)
            } else {
                (&*conn).write(bytes)
            };
            if left.is_some() {
                let _ = conn.set_write_timeout(None);
            }
            match result {
                Ok(0) => {
                    self.connection_failed(epoch, "the connection accepts no more bytes");
                    return false;
                }
                Ok(n) => {
                    unsent = self.update(|st, now| {
                        st.session.handle_sent(epoch, from, n, now);
                        Self::unsent_in(st)
                    });
                }
                Err(e) if is_timeout(&e) => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => unsent = self.unsent(),
                Err(e) => {
                    self.write_failed(epoch, &e);
                    return false;
                }
            }
        }
    }

    /// A write on connection `epoch` failed.
    pub(super) fn write_failed(&self, epoch: u32, e: &io::Error) {
        // After the peer's CLOSE our own FIN wakes a blocked write: nothing to report.
        if !self.state.lock().session.peer_closed() {
            // The bytes stay buffered; the reconnection resends them.
            self.connection_failed(epoch, &e.to_string());
        }
    }
}
