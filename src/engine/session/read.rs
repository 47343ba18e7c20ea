//! The application's blocking reads, straight from the TCP connection into the caller's
//! buffer, held back while the engine reads an opening's ANSWER or the session waits for a
//! connection.

use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::net::RecvFlags;

use super::{call_deadline, is_timeout, lock_until, timed_out, SharedSession};
use crate::core::session::ReadGate;

/// The next thing a read does.
enum ReadStep {
    Eof,
    Wait,
    Read(Arc<TcpStream>, u32),
}

/// How one read call goes about it.
struct ReadCall {
    /// The session's read timeout, which the socket's own timeout is set to.
    timeout: Option<Duration>,
    /// When the call gives up waiting (see `call_deadline`).
    deadline: Option<Instant>,
    /// `RSocket::set_nonblocking`: no wait at all, and `recv` with `MSG_DONTWAIT`.
    nonblocking: bool,
    /// `RSocket::peek`: `recv` with `MSG_PEEK`, and nothing counted as read.
    peek: bool,
}

impl SharedSession {
    /// `Read::read`.
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.receive(buf, false)
    }

    /// `RSocket::peek`: a read whose bytes stay to be read. They are the next bytes of the
    /// stream on the current connection, which has nothing but them and what follows: a
    /// reconnection resends from the count of bytes read, not of bytes peeked at.
    pub(crate) fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.receive(buf, true)
    }

    fn receive(&self, buf: &mut [u8], peek: bool) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let (timeout, nonblocking) = {
            let st = self.state.lock();
            (st.read_timeout, st.nonblocking)
        };
        let call = ReadCall {
            timeout,
            deadline: call_deadline(timeout, nonblocking),
            nonblocking,
            peek,
        };
        match self.read_until(buf, &call) {
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
    fn read_until(&self, buf: &mut [u8], call: &ReadCall) -> io::Result<usize> {
        let deadline = call.deadline;
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
            // on waiting for the lock or a reconnection. (A non-blocking call does not wait.)
            let shortened = if call.nonblocking {
                None
            } else {
                bound_by_deadline(call.timeout, deadline)?
            };
            if let Some(left) = shortened {
                let _ = conn.set_read_timeout(Some(left));
            }
            let result = recv(&conn, buf, call);
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
                        if !call.peek {
                            st.session.handle_read(n, now);
                        }
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
        while st.awaits_connection() {
            self.wait(&mut st, deadline)?;
        }
        Ok(())
    }
}

/// One `recv` from the connection into the caller's buffer, as `call` says: with
/// `MSG_PEEK` for a peek, `MSG_DONTWAIT` for a non-blocking call (the socket itself stays in
/// blocking mode, which the other handles and the engine rely on).
fn recv(conn: &TcpStream, buf: &mut [u8], call: &ReadCall) -> io::Result<usize> {
    let mut flags = RecvFlags::empty();
    if call.peek {
        flags |= RecvFlags::PEEK;
    }
    if call.nonblocking {
        flags |= RecvFlags::DONTWAIT;
    }
    rustix::net::recv(conn, buf, flags)
        .map(|(n, _)| n)
        .map_err(io::Error::from)
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
