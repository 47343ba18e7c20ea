//! The client side: opening a session (paper Fig. 3) and reconnecting it (Fig. 4).

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::control::{canonical, plane, ControlPlane};
use super::frames::{read_frame, wire_error, write_frame};
use super::session::{SessionSpec, Shared};
use crate::core::backoff::Backoff;
use crate::core::counter::to_wire;
use crate::core::handshake::{Answer, Confirm, FrameKind, Hello, RefusalCode};
use crate::core::session::Role;
use crate::{Config, Error};

/// How many openings in a row may fail after the TCP connect succeeded before `connect`
/// gives up: a cut during the handshake is retried, but a peer that keeps hanging up
/// without answering is most likely not a robust-tcp server.
const OPEN_ATTEMPTS: u32 = 10;

/// Why one opening attempt failed.
enum OpenError {
    /// The TCP connect itself failed.
    Connect(io::Error),
    /// The connection failed during the handshake: worth another try.
    Handshake(io::Error),
    /// The server refused with a temporary reason.
    Busy,
    /// Retrying cannot help.
    Fatal(io::Error),
}

/// Opens a session with the first of `addrs` that answers, retrying cut handshakes and
/// temporary refusals with backoff until `limit` (if any) has passed.
pub(crate) fn connect(
    addrs: &[SocketAddr],
    config: &Config,
    limit: Option<Duration>,
) -> io::Result<(Arc<Shared>, Receiver<()>, SocketAddr)> {
    config.validate()?;
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any addresses",
        ));
    }
    let plane = plane()?;
    let started = Instant::now();
    let (initial, max) = config.reconnect_backoff_value();
    let backoff = Backoff::new(initial, max);
    let mut reached_server = false;
    let mut handshake_failures = 0;
    let mut attempt = 0;
    loop {
        let mut last_error = None;
        for &addr in addrs {
            match open_once(addr, config, &plane) {
                Ok((shared, woken)) => return Ok((shared, woken, addr)),
                Err(OpenError::Connect(e)) => last_error = Some(e),
                Err(OpenError::Busy) => reached_server = true,
                Err(OpenError::Handshake(e)) => {
                    reached_server = true;
                    handshake_failures += 1;
                    if handshake_failures >= OPEN_ATTEMPTS {
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            format!(
                                "{addr} hung up during {OPEN_ATTEMPTS} handshakes in a row \
                                 (is it a robust-tcp server?): {e}"
                            ),
                        ));
                    }
                    last_error = Some(e);
                }
                Err(OpenError::Fatal(e)) => return Err(e),
            }
        }
        if !reached_server {
            // Like TcpStream::connect: nobody listens, so say so at once.
            return Err(last_error.unwrap_or_else(|| io::ErrorKind::NotConnected.into()));
        }
        attempt += 1;
        let delay = backoff.delay(attempt);
        if let Some(limit) = limit {
            if started.elapsed().saturating_add(delay) >= limit {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no session could be opened in time (the server is busy or unreachable)",
                ));
            }
        }
        std::thread::sleep(delay);
    }
}

fn open_once(
    addr: SocketAddr,
    config: &Config,
    plane: &Arc<ControlPlane>,
) -> Result<(Arc<Shared>, Receiver<()>), OpenError> {
    let stream = dial(addr, config).map_err(OpenError::Connect)?;
    let hello = Hello {
        control_port: plane.port(),
        cid: 0,
        token: 0,
        received: 0,
    };
    let answer = exchange(&stream, &hello).map_err(|e| classify(e, addr, config))?;
    let (cid, token, control_port, epoch) = match answer {
        Answer::Accepted {
            cid,
            token,
            control_port,
            epoch,
            ..
        } => (cid, token, control_port, epoch),
        Answer::Refused(r) if r.is_temporary() => return Err(OpenError::Busy),
        Answer::Refused(RefusalCode::Closed) => {
            return Err(OpenError::Fatal(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("{addr} accepts no new sessions: its server socket was closed"),
            )))
        }
        Answer::Refused(r) => {
            return Err(OpenError::Fatal(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("{addr} refused the session: {r:?}"),
            )))
        }
    };
    let server_ip = canonical(addr).ip();
    let spec = SessionSpec {
        role: Role::Client,
        cid,
        token,
        epoch,
        peer_control: SocketAddr::new(server_ip, control_port),
        config: config.clone(),
    };
    let Some((shared, woken)) = Shared::new(spec, Arc::clone(plane)) else {
        // Another session of ours has this CID from a server at the same address: open
        // another one (the server drops this one when it goes unconfirmed).
        return Err(OpenError::Handshake(io::Error::other(
            "session id collision",
        )));
    };
    let confirmed = write_frame(&stream, &Confirm { cid }.encode());
    shared.attach_first(stream);
    if let Err(e) = confirmed {
        // The server holds the session unconfirmed; resuming it confirms it.
        shared.connection_failed(epoch, &e.to_string());
    }
    Ok((shared, woken))
}

/// A TCP connection to `addr` with the handshake's timeouts.
fn dial(addr: SocketAddr, config: &Config) -> io::Result<TcpStream> {
    let timeout = config.handshake_timeout_value();
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(config.nodelay_value())?;
    Ok(stream)
}

/// Sends a hello and reads the answer.
fn exchange(stream: &TcpStream, hello: &Hello) -> io::Result<Answer> {
    write_frame(stream, &hello.encode())?;
    let body = read_frame(stream, FrameKind::Answer)?;
    Answer::parse(&body).map_err(super::frames::invalid)
}

/// Sorts a failed opening exchange: foreign bytes or silence mean the peer is not a
/// robust-tcp server (fail at once); a cut is worth another try.
fn classify(e: io::Error, addr: SocketAddr, config: &Config) -> OpenError {
    if let Some(w) = wire_error(&e) {
        return OpenError::Fatal(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{addr} is not a robust-tcp server: {w}"),
        ));
    }
    if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        return OpenError::Fatal(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{addr} accepted the connection but sent no robust-tcp answer within {:?} \
                 (is it a robust-tcp server?)",
                config.handshake_timeout_value()
            ),
        ));
    }
    OpenError::Handshake(e)
}

/// The client's reconnection loop, run by the session's driver thread whenever the session
/// needs a connection: backoff, connect, exchange counts, resend. Returns when connected,
/// failed for good, or no longer in need of a connection.
pub(crate) fn reconnect(
    shared: &Arc<Shared>,
    woken: &Receiver<()>,
    addr: SocketAddr,
    config: &Config,
) {
    let (initial, max) = config.reconnect_backoff_value();
    let backoff = Backoff::new(initial, max);
    let mut attempt = 0;
    loop {
        // The core's timers (give_up_after) and the application (close) may end the need.
        let needed = shared.update(|st, now| {
            st.core.handle_timeout(now);
            st.core.needs_connection()
        });
        if !needed {
            return;
        }
        match try_resume(shared, addr, config) {
            Ok(()) => return,
            Err(e) => log::debug!(
                "session {}: reconnection to {addr} failed: {e}",
                shared.cid()
            ),
        }
        attempt += 1;
        // Sleeps through the backoff unless something changes (a close, a give-up timer).
        let _ = woken.recv_timeout(backoff.delay(attempt));
    }
}

/// One reconnection attempt.
fn try_resume(shared: &Arc<Shared>, addr: SocketAddr, config: &Config) -> io::Result<()> {
    let stream = dial(addr, config)?;
    let quiesced = shared.quiesce();
    let received = shared.lock().core.received();
    let hello = Hello {
        control_port: shared.plane().port(),
        cid: shared.cid(),
        token: shared.token(),
        received: to_wire(received),
    };
    match exchange(&stream, &hello)? {
        Answer::Accepted {
            received: peer,
            epoch,
            ..
        } => {
            let checked = shared.lock().core.check_resume(peer);
            let Some(peer_received) = checked else {
                shared.update(|st, now| {
                    st.core.reset(
                        Error::ProtocolViolation(
                            "the server claims to have received bytes that were never sent",
                        ),
                        now,
                    )
                });
                return Ok(());
            };
            shared.resume(quiesced, stream, epoch, peer_received, None, None);
            Ok(())
        }
        Answer::Refused(r) if r.is_temporary() => Err(io::Error::other("server busy")),
        Answer::Refused(reason) => {
            log::debug!("session {}: reconnection refused: {reason:?}", shared.cid());
            let error = match reason {
                RefusalCode::BadRequest => {
                    Error::ProtocolViolation("the server found our byte counts impossible")
                }
                _ => Error::UnknownSession,
            };
            shared.update(|st, _| st.core.handle_resume_refused(error));
            Ok(())
        }
    }
}
