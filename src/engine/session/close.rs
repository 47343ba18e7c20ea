//! Closing: `shutdown`, the last handle's drop (close, linger or abort), passivation, and
//! the end of the session (failed, reset, or finished and freed by the engine).

use std::io;
use std::net::Shutdown;
use std::time::Duration;

use super::super::on_engine_thread;
use super::{abort, deadline_after, SharedSession};
use crate::core::session::ReadGate;
use crate::error::Error;

impl SharedSession {
    /// Fails the session and tells the peer with a RESET.
    pub(crate) fn reset(&self, error: Error) {
        self.update(|st, now| st.session.reset(error, now));
    }

    /// Fails the session without telling the peer (a server drops a session its client
    /// never confirmed).
    pub(crate) fn fail(&self, error: Error) {
        self.update(|st, _| st.session.fail(error));
    }

    /// The session is over: drops its connection.
    pub(crate) fn finish(&self) {
        self.update(|st, _| abort(st.conn.take()));
        log::debug!("session {} finished", self.cid());
    }

    /// `shutdown(how)`.
    pub(crate) fn shutdown(&self, how: Shutdown) {
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            self.send_held();
        }
        self.update(|st, now| {
            if matches!(how, Shutdown::Write | Shutdown::Both) {
                st.session.shutdown_write(now);
            }
            if matches!(how, Shutdown::Read | Shutdown::Both) {
                st.session.shutdown_read();
                match &st.conn {
                    // The engine still reads the opening's ANSWER from it (no reader does
                    // meanwhile): shut down, its end of stream would fail the opening, and
                    // it would be retried for nothing.
                    Some(_) if st.answer_pending => {}
                    // Wakes a reader blocked on the connection; it then sees end of stream.
                    Some(conn) => {
                        let _ = conn.shutdown(Shutdown::Read);
                    }
                    None => {}
                }
            }
        });
    }

    /// The application dropped its last handle: the session lingers until every byte is
    /// acknowledged (or the peer closed too) and its CLOSE is confirmed.
    pub(crate) fn close(&self) {
        self.send_held();
        self.update(|st, now| st.session.close(now));
    }

    /// Makes the session passive (see `RSocket::passivate`).
    pub(crate) fn passivate(&self) -> io::Result<()> {
        // Bytes held for a batch go out now: the passivation waits for their
        // acknowledgement, and nothing more comes to batch with them.
        self.send_held();
        self.update(|st, now| {
            if let ReadGate::Failed(e) = st.session.read_gate() {
                return Err(e.into());
            }
            st.session.passivate(now);
            Ok(())
        })
    }

    /// The last handle was dropped: closes, aborts or closes and waits, as the linger
    /// setting says (see `RSocket::set_linger`).
    pub(crate) fn drop_last(&self) {
        let linger = self.state.lock().linger;
        match linger {
            Some(wait) if wait.is_zero() => self.reset(Error::Aborted),
            Some(wait) if !on_engine_thread() => {
                self.close();
                self.wait_finished(wait);
            }
            _ => self.close(),
        }
    }

    /// Waits until the session has finished (every byte acknowledged and the close
    /// confirmed, or failed), or `wait` has passed.
    fn wait_finished(&self, wait: Duration) {
        let deadline = deadline_after(Some(wait));
        let mut st = self.state.lock();
        while !st.session.is_finished() {
            match deadline {
                Some(deadline) => {
                    if self.changed.wait_until(&mut st, deadline).timed_out() {
                        return;
                    }
                }
                None => self.changed.wait(&mut st),
            }
        }
    }

    pub(crate) fn set_linger(&self, linger: Option<Duration>) {
        self.state.lock().linger = linger;
    }

    pub(crate) fn linger(&self) -> Option<Duration> {
        self.state.lock().linger
    }
}
