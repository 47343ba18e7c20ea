//! When bytes go out at once rather than wait: `TCP_NODELAY` held on for a server's first
//! reply, the segments Nagle's algorithm holds pushed out where waiting would stall the
//! stream, and the bytes small writes held for a batch (the core's coalescing) sent.

use std::io;
use std::net::TcpStream;
use std::sync::atomic::Ordering;

use super::resend::Flush;
use super::SharedSession;

impl SharedSession {
    /// After a write: the session's own `TCP_NODELAY` setting applies from now on, if
    /// [`attach_first`](Self::attach_first) held it on.
    pub(super) fn release_nodelay(&self) {
        if self.nodelay_held.swap(false, Ordering::Relaxed) {
            let st = self.state.lock();
            if let (Some(conn), false) = (&st.conn, st.answer_pending) {
                let _ = conn.set_nodelay(st.nodelay);
            }
        }
    }

    /// Sends now the bytes that writes held for a batch, if any (`Write::flush`, and
    /// whenever nothing more may come to batch with them). Never blocks: while another
    /// thread writes, that writer sends them, or the hold's deadline does; what the
    /// kernel does not take now, the engine sends.
    pub(crate) fn send_held(&self) {
        let Some(write) = self.write_lock.try_lock() else {
            return;
        };
        let more = self.update(|st, now| st.session.release_held(now, true))
            && matches!(self.flush_locked(), Flush::Blocked(_) | Flush::Yielded);
        self.unlock_write(write, more);
    }

    pub(crate) fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        let mut st = self.state.lock();
        st.nodelay = nodelay;
        let set = match &st.conn {
            // Applied once the opening ANSWER is consumed.
            Some(_) if st.answer_pending => Ok(()),
            Some(conn) => conn.set_nodelay(nodelay),
            None => Ok(()),
        };
        drop(st);
        if nodelay {
            self.send_held();
        }
        set
    }

    pub(crate) fn nodelay(&self) -> bool {
        self.state.lock().nodelay
    }
}

/// Sends at once the segments that Nagle's algorithm holds on `conn`, which stays in
/// Nagle mode: on Linux, setting TCP_NODELAY pushes pending segments out; then the
/// user's choice is restored. Elsewhere it costs two calls and may push nothing.
pub(super) fn push_held_segments(conn: &TcpStream) {
    let _ = conn.set_nodelay(true);
    let _ = conn.set_nodelay(false);
}
