//! The application's socket options (timeouts; `TCP_NODELAY` is in `nodelay.rs`) and what
//! a session shows of itself: its status and addresses, and to a server's endpoint whether
//! its client is still there.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::SharedSession;
use crate::core::endpoint::server::Presence;
use crate::core::session::{Role, Session};
use crate::Status;

impl SharedSession {
    /// Whether the client has shown that it knows the session's CID (see
    /// `Session::peer_knows_cid`).
    pub(crate) fn peer_knows_cid(&self) -> bool {
        self.state.lock().session.peer_knows_cid()
    }

    /// What a server's endpoint asks of a session when it decides whom to evict or
    /// whether to keep a tombstone. A client is gone while the session has no connection,
    /// for as long as it has been silent (a client that still probes is not gone, however
    /// long its TCP connection has been).
    pub(crate) fn presence(&self, now: Instant) -> Presence {
        Presence::of(&self.state.lock().session, now)
    }

    /// Runs `f` on the core under the state lock: for a server handshake's looks and
    /// checks (`Host::with_session`), which queue nothing for `update` to carry out.
    pub(crate) fn with_core<R>(&self, f: impl FnOnce(&mut Session) -> R) -> R {
        f(&mut self.state.lock().session)
    }

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

    /// A client session's later attempts go to `addr`; a server's session never dials.
    pub(crate) fn reconnect_to(&self, addr: SocketAddr) -> io::Result<()> {
        if self.state.lock().session.role() != Role::Client {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "only a client session reconnects",
            ));
        }
        self.engine.redirect(self.id, addr);
        Ok(())
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

    pub(crate) fn set_nonblocking(&self, nonblocking: bool) {
        self.state.lock().nonblocking = nonblocking;
    }

    /// Sets `IP_TTL` on the current connection and remembers it for every later one (see
    /// [`attach`](Self::attach)). Checked here, since there may be no connection to ask.
    pub(crate) fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        if !(1..=255).contains(&ttl) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a TTL is from 1 to 255",
            ));
        }
        let mut st = self.state.lock();
        st.ttl = Some(ttl);
        match &st.conn {
            Some(conn) => conn.set_ttl(ttl),
            None => Ok(()),
        }
    }

    /// The current connection's `IP_TTL`; without one, the value set, if any.
    pub(crate) fn ttl(&self) -> io::Result<u32> {
        let st = self.state.lock();
        match (&st.conn, st.ttl) {
            (Some(conn), _) => conn.ttl(),
            (None, Some(ttl)) => Ok(ttl),
            (None, None) => Err(not_connected()),
        }
    }

    /// The session's failure, the first time it is asked for after the session failed.
    pub(crate) fn take_error(&self) -> Option<io::Error> {
        let mut st = self.state.lock();
        let failure = st.session.failure().cloned()?;
        if std::mem::replace(&mut st.error_taken, true) {
            return None;
        }
        Some(io::Error::from(failure))
    }
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
