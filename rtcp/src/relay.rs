//! Copying bytes both ways between two ends of a tunnel, one thread per direction (the
//! library's model: blocking calls, a thread per connection).
//!
//! What one side does, the other sees: end of stream becomes `shutdown(Write)` (so a
//! half-closed connection still gets its whole reply), and a reset or any other failure
//! becomes a reset of the other side.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::secure::Channel;
use crate::{limits, request};

/// 64 KiB per read: eight times fewer system calls than `io::copy`'s 8 KiB buffer, and as
/// much as the library's engine takes from one write without splitting hairs.
const CHUNK: usize = 64 * 1024;

/// Set once the process is shutting down (Ctrl-C, SIGTERM): a write refused because this
/// side shut its session down on purpose is then the end of the copy, not a failure to
/// pass on as a reset.
pub static STOPPING: AtomicBool = AtomicBool::new(false);

/// One end of a relayed connection. Every method takes `&self` so that one thread can
/// read while the other writes, as `&TcpStream` and `&RSocket` allow.
pub trait End: Sync {
    /// Reads some bytes; `Ok(0)` is end of stream.
    fn read_some(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes all of `buf`.
    fn write_all_of(&self, buf: &[u8]) -> io::Result<()>;
    /// Tells the peer that no more bytes come (half-close).
    fn shutdown_write(&self);
    /// Resets the connection, as TCP does with RST, and wakes a thread blocked reading it.
    fn reset(&self);
}

/// What sets a socket apart as an [`End`]: how it half-closes and resets. Reading and
/// writing come from std's `Read` and `Write` on a shared reference.
pub trait Socket: Sync {
    /// See [`End::shutdown_write`].
    fn shutdown_write(&self);
    /// See [`End::reset`].
    fn reset(&self);
}

impl<T: Socket> End for T
where
    for<'a> &'a T: Read + Write,
{
    fn read_some(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut this = self;
        this.read(buf)
    }

    fn write_all_of(&self, buf: &[u8]) -> io::Result<()> {
        let mut this = self;
        this.write_all(buf)
    }

    fn shutdown_write(&self) {
        Socket::shutdown_write(self);
    }

    fn reset(&self) {
        Socket::reset(self);
    }
}

impl Socket for TcpStream {
    fn shutdown_write(&self) {
        // Fails only if the connection is already gone, which the other direction reports.
        let _ = self.shutdown(Shutdown::Write);
    }

    fn reset(&self) {
        reset_tcp(self);
    }
}

/// Resets a TCP connection: SO_LINGER 0 makes the close send RST instead of FIN, and
/// `shutdown(Read)` wakes a thread blocked reading it without sending anything (a
/// `shutdown(Write)` would send a FIN, and the peer would read a clean end of stream
/// before the reset). The RST goes when the last handle on the socket is dropped.
pub fn reset_tcp(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
    let _ = stream.shutdown(Shutdown::Read);
}

/// How one direction of a relay ended.
#[derive(Debug)]
pub enum Ended {
    /// The source ended its stream; the destination was shut down for writing.
    Eof,
    /// The process is shutting down and the copy stopped on purpose.
    Stopped,
    /// A read or write failed first, and this direction reset both ends. Carries the error
    /// and which end it came from.
    Failed(&'static str, io::Error),
    /// A read or write failed after the other direction had reset both ends: a
    /// consequence, not a cause worth reporting.
    Reset,
}

/// Shared by the two directions of one relay: whether a reset was passed on, so that
/// the end of stream a reset causes is not mistaken for a graceful one.
#[derive(Default)]
pub struct Link {
    reset: AtomicBool,
}

impl Link {
    /// Resets both ends once, whichever direction sees the failure first, and says how
    /// this direction ended: the first failure is the cause, later ones its echo.
    fn reset_both(&self, a: &dyn End, b: &dyn End, side: &'static str, e: io::Error) -> Ended {
        if self.reset.swap(true, Ordering::SeqCst) {
            return Ended::Reset;
        }
        a.reset();
        b.reset();
        Ended::Failed(side, e)
    }
}

/// Copies `src` to `dst` until end of stream or failure. `src_name` and `dst_name` say
/// which end an error came from, for the log.
pub fn pump(
    src: &dyn End,
    dst: &dyn End,
    link: &Link,
    src_name: &'static str,
    dst_name: &'static str,
) -> Ended {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match src.read_some(&mut buf) {
            Ok(0) => {
                // After a reset, the woken reader sees end of stream: not the peer's.
                if !link.reset.load(Ordering::SeqCst) {
                    dst.shutdown_write();
                }
                return Ended::Eof;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return link.reset_both(src, dst, src_name, e),
        };
        if let Err(e) = dst.write_all_of(&buf[..n]) {
            if STOPPING.load(Ordering::SeqCst) && e.kind() == io::ErrorKind::BrokenPipe {
                return Ended::Stopped;
            }
            return link.reset_both(src, dst, dst_name, e);
        }
    }
}

/// Relays between `local` (a plain TCP connection, called `local_name` in the log) and
/// `session` (a robust session's channel, TLS or not) until both directions are done, and returns how each
/// ended: (local to session, session to local). Dropping both ends afterwards closes
/// them: gracefully, unless reset. With `read_reply` (the client's side of a FORWARD), the
/// server's reply ([`request::read_success`]) is read before anything is passed to
/// `local`; the other
/// direction starts at once, so the local program's first bytes need no round trip.
pub fn relay(
    local: &TcpStream,
    local_name: &'static str,
    session: &Channel,
    read_reply: bool,
) -> (Ended, Ended) {
    let link = Link::default();
    std::thread::scope(|scope| {
        let up = scope.spawn(|| pump(local, session, &link, local_name, "session"));
        let down = match read_reply.then(|| request::read_success(&mut &*session)) {
            Some(Err(e)) => link.reset_both(session, local, "tunnel", e),
            _ => pump(session, local, &link, "session", local_name),
        };
        // A panic in a pump is a bug; report it as a failure rather than panic again.
        let up = up
            .join()
            .unwrap_or_else(|_| Ended::Failed("relay", io::Error::other("relay panicked")));
        (up, down)
    })
}

/// The first failure of a relay, from how its two directions ended: which end, and why.
pub fn failure<'a>(one: &'a Ended, other: &'a Ended) -> Option<(&'static str, &'a io::Error)> {
    match (one, other) {
        (Ended::Failed(side, e), _) | (_, Ended::Failed(side, e)) => Some((side, e)),
        _ => None,
    }
}

/// One log line for the end of a relayed session, with `counts` (its bytes and
/// reconnections): info when it ended cleanly, warn naming the first failure otherwise.
pub fn log_end(what: &str, one: &Ended, other: &Ended, counts: &str) {
    match failure(one, other) {
        Some((side, e)) => {
            let e = limits::describe(e);
            log::warn!("{what}: {side} failed: {e}; both sides reset ({counts})")
        }
        None => log::info!("{what}: closed ({counts})"),
    }
}
