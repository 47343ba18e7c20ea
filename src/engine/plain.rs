//! An ordinary TCP connection behind an [`RSocket`](crate::RSocket): a peer that does not
//! speak robust-tcp, accepted by a server with `Config::accept_plain_tcp` or reached by a
//! client with `Config::fallback_to_plain_tcp`. Every call goes straight to the one
//! connection and returns what TCP returns; nothing is buffered, counted for a resend or
//! resumed. Only the counts and the end state are kept, for [`Status`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use super::conn::Conn;
use crate::{Error, SessionState, Status};

/// [`PlainStream::shut`]'s bits.
const SHUT_READ: u8 = 1;
const SHUT_WRITE: u8 = 2;
const ABORTED: u8 = 4;

/// One ordinary TCP connection, in blocking mode unless the application sets it otherwise.
pub(crate) struct PlainStream {
    stream: TcpStream,
    read: AtomicU64,
    written: AtomicU64,
    /// Which ways the application shut the connection down, and whether it aborted it.
    shut: AtomicU8,
    /// When the stream was made, and how long after that the last byte was read.
    since: Instant,
    heard_after: AtomicU64,
}

impl PlainStream {
    /// The connection `stream`, in blocking mode (as `TcpStream::connect` and `accept` make it).
    pub(crate) fn new(stream: TcpStream) -> Self {
        PlainStream {
            stream,
            read: AtomicU64::new(0),
            written: AtomicU64::new(0),
            shut: AtomicU8::new(0),
            since: Instant::now(),
            heard_after: AtomicU64::new(0),
        }
    }

    /// `ConnectionAborted` once the application aborted the connection (the socket
    /// then is no longer connected, and TCP's own error would say less).
    fn check_aborted(&self) -> io::Result<()> {
        if self.shut.load(Ordering::SeqCst) & ABORTED != 0 {
            return Err(Error::Aborted.into());
        }
        Ok(())
    }
}

impl Conn for PlainStream {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.check_aborted()?;
        let n = (&self.stream).read(buf)?;
        if n > 0 {
            self.read.fetch_add(n as u64, Ordering::Relaxed);
            let after = u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.heard_after.store(after, Ordering::Relaxed);
        }
        Ok(n)
    }
    fn write(&self, data: &[u8]) -> io::Result<usize> {
        self.check_aborted()?;
        let n = (&self.stream).write(data)?;
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.check_aborted()?;
        self.stream.shutdown(how)?;
        let bits = match how {
            Shutdown::Read => SHUT_READ,
            Shutdown::Write => SHUT_WRITE,
            Shutdown::Both => SHUT_READ | SHUT_WRITE,
        };
        self.shut.fetch_or(bits, Ordering::SeqCst);
        Ok(())
    }
    fn abort(&self) -> io::Result<()> {
        if self.shut.fetch_or(ABORTED, Ordering::SeqCst) & ABORTED != 0 {
            return Ok(());
        }
        // Disconnecting an established TCP socket resets it now, as closing it with a zero
        // linger would, while other handles (and threads blocked on it, which wake with
        // the reset) still hold the descriptor.
        rustix::net::connect_unspec(&self.stream).map_err(io::Error::from)
    }
    fn passivate(&self) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "an ordinary TCP connection cannot be passivated",
        ))
    }
    fn drop_last(&self) {
        // The connection closes when the stream drops, right after this, as TCP's does.
    }
    fn set_read_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(dur)
    }
    fn read_timeout(&self) -> io::Result<Option<Duration>> {
        self.stream.read_timeout()
    }
    fn set_write_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.stream.set_write_timeout(dur)
    }
    fn write_timeout(&self) -> io::Result<Option<Duration>> {
        self.stream.write_timeout()
    }
    fn set_linger(&self, linger: Option<Duration>) -> io::Result<()> {
        socket2::SockRef::from(&self.stream).set_linger(linger)
    }
    fn linger(&self) -> io::Result<Option<Duration>> {
        socket2::SockRef::from(&self.stream).linger()
    }
    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.stream.set_nodelay(nodelay)
    }
    fn nodelay(&self) -> io::Result<bool> {
        self.stream.nodelay()
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }
    fn reconnect_to(&self, _addr: SocketAddr) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a plain TCP connection does not reconnect",
        ))
    }
    fn wait_cid(&self) -> u32 {
        0
    }
    fn cid(&self) -> u32 {
        0
    }
    fn status(&self) -> Status {
        let shut = self.shut.load(Ordering::SeqCst);
        let closed =
            shut & ABORTED != 0 || shut & (SHUT_READ | SHUT_WRITE) == SHUT_READ | SHUT_WRITE;
        let heard = Duration::from_nanos(self.heard_after.load(Ordering::Relaxed));
        Status {
            state: if closed {
                SessionState::Closed
            } else {
                SessionState::Connected
            },
            bytes_written: self.written.load(Ordering::Relaxed),
            bytes_read: self.read.load(Ordering::Relaxed),
            unacknowledged: 0,
            oldest_unacknowledged: None,
            blocked_read: None,
            blocked_write: None,
            reconnections: 0,
            last_failure: None,
            last_outage: None,
            last_heard: self.since.elapsed().saturating_sub(heard),
            control_peer: None,
            control_over_tcp: false,
            local_addr: self.stream.local_addr().ok(),
            peer_addr: self.stream.peer_addr().ok(),
            passive: false,
            send_buffer_capacity: 0,
            round_trip: None,
            plain: true,
        }
    }
    fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.check_aborted()?;
        self.stream.peek(buf)
    }
    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.stream.set_nonblocking(nonblocking)
    }
    fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.stream.set_ttl(ttl)
    }
    fn ttl(&self) -> io::Result<u32> {
        self.stream.ttl()
    }
    fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.stream.take_error()
    }
}
