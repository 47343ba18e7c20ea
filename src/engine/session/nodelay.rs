//! When bytes go out at once rather than wait: `TCP_NODELAY` held on for a server's first
//! reply, the segments Nagle's algorithm holds pushed out where waiting would stall the
//! stream, and the bytes small writes held for a batch (the core's coalescing) sent.

use std::io;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU8, Ordering};

use super::resend::Flush;
use super::SharedSession;

/// Where the connection's `TCP_NODELAY` stands against the session's own setting, when
/// that setting is off. Every connection comes to the session with it on (each side sends
/// its handshake's frames so); switching it off is a system call, made only before a
/// write that Nagle's algorithm could hold, and never by a short exchange that writes
/// nothing after its first reply.
#[derive(Debug, Default)]
pub(super) struct NodelayLoan(AtomicU8);

/// The connection has the session's setting.
const OWN: u8 = 0;
/// On for the application's first write (a server's first reply leaves at once instead of
/// waiting, Nagle's way, for the acknowledgement of the ANSWER: a round trip).
const HELD: u8 = 1;
/// Still on; the session's setting goes back on before the next write.
const LENT: u8 = 2;

impl NodelayLoan {
    /// Holds it on for the first write.
    pub(super) fn hold(&self) {
        self.0.store(HELD, Ordering::Relaxed);
    }

    /// Lends it until the next write.
    pub(super) fn lend(&self) {
        self.0.store(LENT, Ordering::Relaxed);
    }

    /// The connection has the session's setting.
    pub(super) fn own(&self) {
        self.0.store(OWN, Ordering::Relaxed);
    }

    /// Whether it is held on for the write being made.
    pub(super) fn held(&self) -> bool {
        self.0.load(Ordering::Relaxed) == HELD
    }

    /// A write went out: one held for it is lent until the next.
    fn written(&self) {
        let _ = self
            .0
            .compare_exchange(HELD, LENT, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Whether it was lent and must be given back now.
    fn take_back(&self) -> bool {
        self.0
            .compare_exchange(LENT, OWN, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

impl SharedSession {
    /// After a write: `TCP_NODELAY`, if held on for it, is lent until the next one.
    pub(super) fn nodelay_written(&self) {
        self.nodelay.written();
    }

    /// Before a write: the session's own `TCP_NODELAY` setting applies again, if the
    /// connection had it on loan.
    pub(super) fn nodelay_before_write(&self) {
        if self.nodelay.take_back() {
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
        // The application's own choice replaces any loan.
        self.nodelay.own();
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
