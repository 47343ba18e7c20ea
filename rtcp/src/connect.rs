//! `rtcp connect`: one robust session on stdin and stdout, for programs that talk through
//! a pipe, such as ssh's `ProxyCommand`.

use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use robust_tcp::Config;

use crate::relay::{pump, End, Ended, Link, STOPPING};
use crate::request::{self, Request};
use crate::secure::{Channel, Security};
use crate::status::Registry;
use crate::{addr, limits, signals, tunnel, Fatal};

/// stdin and stdout as one end of a relay.
struct Stdio;

impl End for Stdio {
    fn read_some(&self, buf: &mut [u8]) -> io::Result<usize> {
        io::stdin().lock().read(buf)
    }

    fn write_all_of(&self, buf: &[u8]) -> io::Result<()> {
        // stdout is line-buffered: flush so that a reply without a newline goes at once.
        let mut out = io::stdout().lock();
        out.write_all(buf)?;
        out.flush()
    }

    fn shutdown_write(&self) {
        let _ = io::stdout().lock().flush();
    }

    /// stdio has no reset: the process exits with an error instead (see [`run`]).
    fn reset(&self) {}
}

/// The session as the stdin copy sees it: a weak handle, upgraded only for each write,
/// so that the main thread holds the last handle and dropping it closes the session even
/// while the stdin thread waits for input that never comes.
struct WeakSession(Weak<Channel>);

impl WeakSession {
    fn get(&self) -> io::Result<Arc<Channel>> {
        self.0
            .upgrade()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "the session is closed"))
    }
}

impl End for WeakSession {
    fn read_some(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.get()?.read_some(buf)
    }

    fn write_all_of(&self, buf: &[u8]) -> io::Result<()> {
        self.get()?.write_all_of(buf)
    }

    fn shutdown_write(&self) {
        if let Ok(session) = self.get() {
            session.shutdown_write();
        }
    }

    fn reset(&self) {
        if let Ok(session) = self.get() {
            session.reset();
        }
    }
}

/// Relays until the server ends the session; `Ok` for a clean end (exit 0). Opening the
/// session is retried for `retry` while the server cannot be reached.
pub fn run(
    server: &str,
    security: &Security,
    config: Config,
    retry: Duration,
    registry: Arc<Registry>,
) -> Result<(), Fatal> {
    let addrs =
        addr::resolve(server).map_err(|e| Fatal(format!("bad server address {server}: {e}")))?;
    let session = tunnel::open(&addrs, &config, retry, &registry).map_err(|e| {
        Fatal(format!(
            "cannot open a session to {server} (retried {retry:?}): {e}"
        ))
    })?;
    let session = security
        .secure(session)
        .and_then(|channel| {
            (&channel).write_all(&Request::Forward.encode())?;
            Ok(channel)
        })
        .map_err(|e| {
            Fatal(format!(
                "session to {server} failed: {}",
                limits::describe(&e)
            ))
        })?;
    // Not the session's id, which waits for the server's answer: stdin's first bytes
    // follow the opening at once. A server that fails the opening fails the relay below.
    log::info!("session to {server}");
    let session = Arc::new(session);
    // Watched for the log (lifecycle, outages); dropped before the session, whose last
    // handle must be the main thread's (see `WeakSession`).
    let what = format!("session to {server}");
    let registered = registry.register(Arc::clone(session.session()), None, &what);
    let weak = Arc::downgrade(&session);
    let link = Arc::new(Link::default());
    // Installed only now: before the session exists, Ctrl-C may kill us the usual way.
    let on_stop = {
        let weak = weak.clone();
        Box::new(move || {
            if let Some(session) = weak.upgrade() {
                session.shutdown_write();
                tunnel::wait_acknowledged(session.session());
            }
            // The server closes in turn; the main thread then sees end of stream, closes
            // and exits 0 itself. This is the bound on waiting for that.
            std::thread::sleep(tunnel::CLOSE_WAIT);
        })
    };
    signals::install(on_stop)?;
    // stdin may never end (the program keeps it open until we exit), so this direction
    // runs on a thread nobody joins.
    let spawned = {
        let link = Arc::clone(&link);
        std::thread::Builder::new()
            .name("rtcp-stdin".into())
            .spawn(move || {
                let session = WeakSession(weak);
                if let Ended::Failed(side, e) = pump(&Stdio, &session, &link, "stdin", "session") {
                    log::warn!("{side} failed: {e}; session reset");
                }
            })
    };
    if let Err(e) = spawned {
        session.reset();
        return Err(Fatal(format!("cannot start a thread: {e}")));
    }
    if let Err(e) = request::read_success(&mut &*session) {
        session.reset();
        return Err(Fatal(format!(
            "session to {server}: {}",
            limits::describe(&e)
        )));
    }
    match pump(&*session, &Stdio, &link, "session", "stdout") {
        Ended::Failed(side, e) => Err(Fatal(format!(
            "session to {server}: {side} failed: {}",
            limits::describe(&e)
        ))),
        // The stdin copy failed first and logged why.
        Ended::Reset => Err(Fatal(format!(
            "session to {server} reset: stdin or the session failed"
        ))),
        Ended::Eof | Ended::Stopped => {
            // From now on a write refused because of this close ends the stdin copy quietly.
            STOPPING.store(true, Ordering::SeqCst);
            session.shutdown_write();
            tunnel::wait_acknowledged(session.session());
            let counts = tunnel::counts(&session.session().status());
            drop(registered);
            drop(session);
            log::info!("session to {server}: closed ({counts})");
            std::thread::sleep(tunnel::CLOSE_GRACE);
            Ok(())
        }
    }
}
