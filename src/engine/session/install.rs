//! Installing connections: a server's first one, a client's opening one (whose ANSWER the
//! engine reads first), a resumption's after the barrier and the count checks; and a
//! connection's failure, which detaches it.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{SharedSession, State};
use crate::core::auth::SessionKeys;
use crate::error::Error;

impl SharedSession {
    /// Makes `stream`, a new connection in blocking mode, the session's, with the session's
    /// options. Its `TCP_NODELAY` is on (each side sends its handshake's frames so); the
    /// caller says when the session's own setting applies. (A new socket has no timeouts
    /// and the system's TTL: only a read timeout and a TTL are set, if the session has
    /// them. The system calls here are on the way to the first byte of a session.)
    fn attach(st: &mut State, stream: TcpStream) {
        // A socket option that fails here fails again on use, where it is reported.
        if st.read_timeout.is_some() {
            let _ = stream.set_read_timeout(st.read_timeout);
        }
        if let Some(ttl) = st.ttl {
            let _ = stream.set_ttl(ttl);
        }
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

    /// Attaches a server's first connection (in blocking mode, `TCP_NODELAY` on), right
    /// after its ANSWER, unless the session already failed (then a reconnection brings
    /// another). `TCP_NODELAY` stays on for the application's first write: the first
    /// reply then leaves at once, instead of waiting (Nagle) for the acknowledgement of
    /// the ANSWER, a round trip. The session's own setting applies from the second.
    pub(crate) fn attach_first(&self, stream: TcpStream) {
        self.update(|st, _| {
            if st.session.is_connected() && st.conn.is_none() {
                Self::attach(st, stream);
                if !st.nodelay {
                    self.nodelay.hold();
                }
            }
        });
    }

    /// Attaches a client's first connection right behind its opening HELLO, before the
    /// server answered: writes go out on it at once; reads wait until the engine has
    /// consumed the ANSWER ([`opened`](Self::opened)). `TCP_NODELAY`
    /// stays on meanwhile, so that Nagle does not hold the first small write until the
    /// HELLO is acknowledged.
    pub(crate) fn attach_opening(&self, stream: TcpStream) {
        self.update(|st, _| {
            Self::attach(st, stream);
            st.answer_pending = true;
        });
    }

    /// The engine consumed the server's ANSWER from the first connection: the application
    /// reads from it now, and the session's own `TCP_NODELAY` setting applies from the
    /// next write (it only changes how writes go out; a request-then-reply exchange
    /// writes nothing more, and so makes no system call for it).
    fn answer_consumed(&self, st: &mut State) {
        if std::mem::take(&mut st.answer_pending) && !st.nodelay {
            self.nodelay.lend();
        }
    }

    /// The path to the peer takes `rtt` per round trip, as a client's HELLO and the
    /// server's ANSWER just measured (see `Session::handle_round_trip`).
    pub(crate) fn round_trip(&self, rtt: Duration) {
        // Through `update`: a longer path may let the send buffer grow, which a writer
        // waiting for room must hear of.
        self.update(|st, _| st.session.handle_round_trip(rtt));
    }

    /// The server answered a client's opening: the session is `cid`, its control
    /// datagrams go to `server_control`, and its keys are `agreed` if the opening ran the
    /// key agreement (else those it was made with). `on_first` if the ANSWER came on the
    /// session's first connection, which the application reads from as soon as it is
    /// consumed: in the same update, so that a reader waiting for it wakes once, not
    /// once for the CID and again for the connection.
    pub(crate) fn opened(
        &self,
        cid: u32,
        server_control: SocketAddr,
        agreed: Option<SessionKeys>,
        on_first: bool,
    ) {
        self.update(|st, now| {
            if let Some(keys) = agreed {
                st.session.agreed(keys.control);
                *self.handshake_keys.lock() = keys.handshake;
            }
            st.session.opened(cid, server_control, now);
            self.cid.store(cid, Ordering::Release);
            if on_first {
                self.answer_consumed(st);
            }
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

    /// The exact check of a peer's count, after a [`barrier`](Self::barrier).
    pub(crate) fn check_resume(&self, peer_received: u32) -> Option<u64> {
        self.state.lock().session.check_resume(peer_received)
    }

    /// Moves the session to `stream` (in blocking mode, `TCP_NODELAY` on, as every
    /// handshake leaves it), connection number `epoch`, whose peer has received
    /// `peer_received` bytes (checked by [`check_resume`](Self::check_resume)). What the
    /// peer lacks is resent by the next writer or by the engine's [`flush`](Self::flush).
    pub(crate) fn resume(&self, stream: TcpStream, epoch: u32, peer_received: u64) {
        self.update(|st, now| {
            st.session.handle_resume(peer_received, epoch, now);
            Self::attach(st, stream);
            self.nodelay.own();
            if !st.nodelay {
                if let Some(conn) = &st.conn {
                    let _ = conn.set_nodelay(false);
                }
            }
        });
    }

    /// The server refused to resume the session.
    pub(crate) fn resume_refused(&self, error: Error) {
        self.update(|st, _| st.session.handle_resume_refused(error));
    }
}
