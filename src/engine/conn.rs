//! What an [`RSocket`](crate::RSocket) is a handle on: a robust session
//! ([`SharedSession`]) or an ordinary TCP connection ([`super::plain::PlainStream`]). The
//! socket's methods call through this trait, so each stays one line whatever is below.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use super::session::SharedSession;
use crate::{Error, Status};

/// The calls of an `RSocket`, as it returns them.
pub(crate) trait Conn: Send + Sync {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn write(&self, data: &[u8]) -> io::Result<usize>;
    fn flush(&self) -> io::Result<()>;
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
    fn abort(&self) -> io::Result<()>;
    fn passivate(&self) -> io::Result<()>;
    /// The last handle is gone.
    fn drop_last(&self);
    fn set_read_timeout(&self, dur: Option<Duration>) -> io::Result<()>;
    fn read_timeout(&self) -> io::Result<Option<Duration>>;
    fn set_write_timeout(&self, dur: Option<Duration>) -> io::Result<()>;
    fn write_timeout(&self) -> io::Result<Option<Duration>>;
    fn set_linger(&self, linger: Option<Duration>) -> io::Result<()>;
    fn linger(&self) -> io::Result<Option<Duration>>;
    fn set_nodelay(&self, nodelay: bool) -> io::Result<()>;
    fn nodelay(&self) -> io::Result<bool>;
    fn peer_addr(&self) -> io::Result<SocketAddr>;
    fn local_addr(&self) -> io::Result<SocketAddr>;
    fn reconnect_to(&self, addr: SocketAddr) -> io::Result<()>;
    /// The session's CID, once known (waits for the server's answer).
    fn wait_cid(&self) -> u32;
    /// The session's CID as known now (0 before the answer).
    fn cid(&self) -> u32;
    fn status(&self) -> Status;
    fn peek(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()>;
    fn set_ttl(&self, ttl: u32) -> io::Result<()>;
    fn ttl(&self) -> io::Result<u32>;
    fn take_error(&self) -> io::Result<Option<io::Error>>;
}

impl Conn for SharedSession {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        SharedSession::read(self, buf)
    }
    fn write(&self, data: &[u8]) -> io::Result<usize> {
        SharedSession::write(self, data)
    }
    fn flush(&self) -> io::Result<()> {
        self.send_held();
        Ok(())
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        SharedSession::shutdown(self, how);
        Ok(())
    }
    fn abort(&self) -> io::Result<()> {
        self.reset(Error::Aborted);
        Ok(())
    }
    fn passivate(&self) -> io::Result<()> {
        SharedSession::passivate(self)
    }
    fn drop_last(&self) {
        SharedSession::drop_last(self)
    }
    fn set_read_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        SharedSession::set_read_timeout(self, dur)
    }
    fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(SharedSession::read_timeout(self))
    }
    fn set_write_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        SharedSession::set_write_timeout(self, dur)
    }
    fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(SharedSession::write_timeout(self))
    }
    fn set_linger(&self, linger: Option<Duration>) -> io::Result<()> {
        SharedSession::set_linger(self, linger);
        Ok(())
    }
    fn linger(&self) -> io::Result<Option<Duration>> {
        Ok(SharedSession::linger(self))
    }
    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        SharedSession::set_nodelay(self, nodelay)
    }
    fn nodelay(&self) -> io::Result<bool> {
        Ok(SharedSession::nodelay(self))
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        SharedSession::peer_addr(self)
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        SharedSession::local_addr(self)
    }
    fn reconnect_to(&self, addr: SocketAddr) -> io::Result<()> {
        SharedSession::reconnect_to(self, addr)
    }
    fn wait_cid(&self) -> u32 {
        SharedSession::wait_cid(self)
    }
    fn cid(&self) -> u32 {
        SharedSession::cid(self)
    }
    fn status(&self) -> Status {
        SharedSession::status(self)
    }
    fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        SharedSession::peek(self, buf)
    }
    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        SharedSession::set_nonblocking(self, nonblocking);
        Ok(())
    }
    fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        SharedSession::set_ttl(self, ttl)
    }
    fn ttl(&self) -> io::Result<u32> {
        SharedSession::ttl(self)
    }
    fn take_error(&self) -> io::Result<Option<io::Error>> {
        Ok(SharedSession::take_error(self))
    }
}
