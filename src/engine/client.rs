//! The client side: opening a session (paper Fig. 3) and reconnecting it (Fig. 4).
//!
//! Each attempt, opening or reconnection, is a [`Dial`] run by the engine on a
//! non-blocking socket with one deadline (the handshake timeout): TCP connect, HELLO,
//! ANSWER, and for an opening CONFIRM. The retry policy of `connect` runs in the caller's
//! thread ([`connect`]), which blocks anyway; that of a reconnection runs in the engine
//! ([`Redial`]), driven by its timers.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use mio::net::TcpStream;
use mio::{Interest, Token};

use super::frames::{write_frame, FrameError, FrameRead, FrameReader};
use super::session::{SessionSpec, Shared};
use super::{engine, into_std, random, Command, Engine, EngineHandle, Entry, Handshake, Side};
use crate::core::auth::SessionKeys;
use crate::core::backoff::Backoff;
use crate::core::counter::to_wire;
use crate::core::handshake::{Accepted, Answer, Confirm, FrameKind, Hello, RefusalCode};
use crate::core::session::Role;
use crate::core::WireError;
use crate::error::{Error, NotRobustReason, Refusal};
use crate::Config;

/// How many openings in a row may fail after the TCP connect succeeded before `connect`
/// gives up: a cut during the handshake is retried, but a peer that keeps hanging up
/// without answering is most likely not a robust-tcp server.
const OPEN_ATTEMPTS: u32 = 10;

/// A caller's request for one opening attempt.
pub(crate) struct OpenRequest {
    addr: SocketAddr,
    config: Config,
    reply: Sender<Result<Arc<Shared>, Failure>>,
}

/// Why one attempt failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The TCP connect itself failed.
    Connect(io::Error),
    /// The deadline passed with the connection up and no answer.
    Timeout,
    /// The connection failed during the handshake: worth another try.
    Cut(io::Error),
    /// The server refused with a temporary reason.
    Busy,
    /// Retrying cannot help.
    Fatal(Error),
}

/// Opens a session with the first of `addrs` that answers, retrying cut handshakes and
/// temporary refusals with backoff until `limit` (if any) has passed.
pub(crate) fn connect(
    addrs: &[SocketAddr],
    config: &Config,
    limit: Option<Duration>,
) -> io::Result<Arc<Shared>> {
    config.validate()?;
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any addresses",
        ));
    }
    let engine = engine()?;
    let started = Instant::now();
    let (initial, max) = config.reconnect_backoff_value();
    let backoff = Backoff::new(initial, max);
    let mut reached_server = false;
    let mut busy = false;
    let mut cuts = 0;
    let mut attempt = 0;
    loop {
        let mut last_error = None;
        for &addr in addrs {
            match open_once(&engine, addr, config) {
                Ok(shared) => return Ok(shared),
                Err(Failure::Connect(e)) => last_error = Some(e),
                Err(Failure::Timeout) => {
                    // The connection was up and nothing answered.
                    let reason = NotRobustReason::Silent;
                    return Err(Error::NotRobust { reason }.into());
                }
                Err(Failure::Busy) => {
                    reached_server = true;
                    busy = true;
                }
                Err(Failure::Cut(e)) => {
                    reached_server = true;
                    busy = false;
                    cuts += 1;
                    log::debug!("opening a session with {addr}: {e}");
                    if cuts >= OPEN_ATTEMPTS {
                        let reason = NotRobustReason::HungUp(cuts);
                        return Err(Error::NotRobust { reason }.into());
                    }
                }
                Err(Failure::Fatal(e)) => return Err(e.into()),
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
                return Err(if busy {
                    Error::Refused(Refusal::TooManySessions)
                } else {
                    Error::GaveUp { after: limit }
                }
                .into());
            }
        }
        std::thread::sleep(delay);
    }
}

/// One opening attempt, run by the engine while the caller waits.
fn open_once(
    engine: &EngineHandle,
    addr: SocketAddr,
    config: &Config,
) -> Result<Arc<Shared>, Failure> {
    let (reply, outcome) = crossbeam_channel::bounded(1);
    engine.send(Command::Open(OpenRequest {
        addr,
        config: config.clone(),
        reply,
    }));
    // The engine drops the request without an answer only if it stopped.
    outcome
        .recv()
        .unwrap_or(Err(Failure::Fatal(Error::EngineStopped)))
}

/// A client session's reconnection schedule, kept by the engine.
pub(crate) struct Redial {
    addr: SocketAddr,
    config: Config,
    backoff: Backoff,
    /// Failed attempts since the last success.
    attempt: u32,
    /// The number of the last reconnection HELLO sent: each one names a higher number,
    /// so that the server can refuse a replayed one.
    last_hello: u64,
    /// When the next attempt starts, once one is planned.
    pub(super) next_try: Option<Instant>,
    /// The attempt in progress, and when it started.
    pub(super) dialing: Option<(Token, Instant)>,
    /// The latest sign of life from the server that an attempt was started for.
    heard_acted_on: Option<Instant>,
}

/// What a disconnected client does next, as [`Redial::plan`] decides.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Plan {
    /// Start an attempt now.
    Dial,
    /// Wait: until this time, or for the attempt in progress.
    Wait(Option<Instant>),
    /// Drop the attempt in progress and start another now.
    Restart(Token),
}

/// An attempt older than this whose TCP connect has not completed when the server is
/// heard from again is started over: its SYN was most likely lost to the outage, and the
/// kernel's retransmission of it may be seconds away (its timer doubles from 1 s).
const STALE_CONNECT: Duration = Duration::from_millis(250);

impl Redial {
    /// The server's address.
    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// When the next attempt is due: at once after a success, then with backoff.
    pub(super) fn due(&self, now: Instant) -> Instant {
        now + self.backoff.delay(self.attempt)
    }

    /// Decides what to do for a session that needs a connection. `heard` is when the
    /// server was last heard from since the connection was lost (over the control path:
    /// the path works again); `connecting` says whether the attempt in progress is still
    /// in its TCP connect. Hearing the server cuts the backoff short, so that a session
    /// resumes within a heartbeat of the path's return however long the outage was.
    pub(super) fn plan(
        &mut self,
        heard: Option<Instant>,
        now: Instant,
        connecting: impl FnOnce(Token) -> bool,
    ) -> Plan {
        let news = heard.filter(|&h| self.heard_acted_on.map_or(true, |seen| h > seen));
        if let Some(h) = news {
            self.heard_acted_on = Some(h);
        }
        match self.dialing {
            Some((token, started)) => {
                let stale = now.saturating_duration_since(started) >= STALE_CONNECT;
                if news.is_some() && stale && connecting(token) {
                    Plan::Restart(token)
                } else {
                    Plan::Wait(None)
                }
            }
            None => {
                if news.is_some() {
                    self.attempt = 0;
                    self.next_try = Some(now);
                }
                let due = self.due(now);
                let at = *self.next_try.get_or_insert(due);
                if at <= now {
                    Plan::Dial
                } else {
                    Plan::Wait(Some(at))
                }
            }
        }
    }
}

/// One attempt at a TCP connection and a handshake, by the client.
pub(crate) struct Dial {
    pub(crate) stream: TcpStream,
    purpose: Purpose,
    /// `None` while the TCP connect is in progress; then the HELLO sent and the reader of
    /// the ANSWER.
    answer: Option<(Hello, FrameReader)>,
}

impl Dial {
    /// Whether the TCP connect is still in progress (no HELLO sent yet).
    pub(super) fn connecting(&self) -> bool {
        self.answer.is_none()
    }
}

enum Purpose {
    Open(OpenRequest),
    Resume(Token),
}

impl Engine {
    /// Starts an opening attempt for a caller of `connect`.
    pub(super) fn open(&mut self, request: OpenRequest) {
        let timeout = request.config.handshake_timeout_value();
        let addr = request.addr;
        let token = self.new_token();
        self.dial(token, addr, timeout, Purpose::Open(request));
    }

    /// Starts a reconnection attempt for client session `id`.
    pub(super) fn redial(&mut self, id: Token) {
        let token = self.new_token();
        let Some(Side::Client(redial)) = self.sessions.get_mut(&id).map(|e| &mut e.side) else {
            return;
        };
        // Recorded first: the attempt may fail, and say so, before `dial` returns.
        redial.dialing = Some((token, Instant::now()));
        redial.next_try = None;
        let (addr, timeout) = (redial.addr, redial.config.handshake_timeout_value());
        log::debug!("session {id:?}: reconnecting to {addr}");
        self.dial(token, addr, timeout, Purpose::Resume(id));
    }

    fn dial(&mut self, token: Token, addr: SocketAddr, timeout: Duration, purpose: Purpose) {
        let deadline = Instant::now() + timeout;
        let stream = TcpStream::connect(addr).and_then(|mut stream| {
            self.poll.registry().register(
                &mut stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(stream)
        });
        match stream {
            Ok(stream) => {
                let dial = Dial {
                    stream,
                    purpose,
                    answer: None,
                };
                self.add_handshake(token, Handshake::Client(dial), deadline);
            }
            Err(e) => self.attempt_failed(purpose, Failure::Connect(e)),
        }
    }

    /// Advances a dial as far as the connection allows.
    pub(super) fn advance_dial(&mut self, token: Token, mut dial: Dial) {
        if dial.answer.is_none() {
            match connected(&dial.stream) {
                Ok(false) => {
                    self.handshakes.insert(token, Handshake::Client(dial));
                    return;
                }
                Ok(true) => {}
                Err(e) => return self.dial_failed(dial, Failure::Connect(e)),
            }
            // The handshake's frames go out at once rather than wait on Nagle.
            let _ = dial.stream.set_nodelay(true);
            let hello = match self.hello(&dial.purpose) {
                Some(Ok(hello)) => hello,
                Some(Err(e)) => return self.dial_failed(dial, Failure::Cut(e)),
                None => return self.drop_dial(dial),
            };
            if let Err(e) = write_frame(&dial.stream, &hello.encode()) {
                return self.dial_failed(dial, Failure::Cut(e));
            }
            dial.answer = Some((hello, FrameReader::new(FrameKind::Answer)));
        }
        let Some((hello, reader)) = dial.answer.as_mut() else {
            return;
        };
        let hello = *hello;
        match reader.poll(&dial.stream) {
            Ok(FrameRead::Pending) => {
                self.handshakes.insert(token, Handshake::Client(dial));
            }
            Ok(FrameRead::Done(body)) => match Answer::parse(&body) {
                Ok(Answer::Accepted(answer)) => self.answered(dial, hello, answer),
                Ok(Answer::Refused(code)) => {
                    let mut stream = dial.stream;
                    self.deregister(&mut stream);
                    self.refused(code, dial.purpose);
                }
                Err(e) => self.dial_failed(dial, not_robust(e)),
            },
            Err(FrameError::Wire(e)) => self.dial_failed(dial, not_robust(e)),
            Err(FrameError::Io(e)) => self.dial_failed(dial, Failure::Cut(e)),
        }
    }

    /// The HELLO for a dial, or why there is none; `None` if its session is gone.
    fn hello(&mut self, purpose: &Purpose) -> Option<io::Result<Hello>> {
        let nonce = match random() {
            Ok(nonce) => nonce,
            Err(e) => return Some(Err(e)),
        };
        let id = match purpose {
            Purpose::Open(_) => return Some(Ok(Hello::opening(nonce))),
            Purpose::Resume(id) => id,
        };
        let entry = self.sessions.get_mut(id)?;
        let Side::Client(redial) = &mut entry.side else {
            return None;
        };
        redial.last_hello += 1;
        let shared = &entry.shared;
        // The old connection is detached: once no thread is inside a read or write on it,
        // the received count is exact.
        shared.barrier();
        Some(Ok(Hello::resume(
            shared.cid(),
            nonce,
            redial.last_hello,
            to_wire(shared.received()),
            &shared.handshake_keys().client,
        )))
    }

    /// The server accepted a dial's `hello` with `answer`: if the answer is this hello's
    /// (and, for a reconnection, proves the server holds the session's keys), confirm it
    /// and move the session to the connection.
    fn answered(&mut self, dial: Dial, hello: Hello, answer: Accepted) {
        match dial.purpose {
            Purpose::Open(request) => {
                if !answer.answers(&hello, None) {
                    let e = io::Error::other("the answer is not for our hello");
                    return self.dial_failed(
                        Dial {
                            purpose: Purpose::Open(request),
                            ..dial
                        },
                        Failure::Cut(e),
                    );
                }
                let stream = into_std(&self.poll, dial.stream);
                let server_ip = super::control::canonical(request.addr).ip();
                let keys = SessionKeys::derive(&answer.secret, &hello.nonce, Role::Client);
                let confirm = Confirm::new(&hello, &answer, &keys.handshake.client);
                let id = self.new_token();
                let route = (Role::Client, answer.cid);
                self.routes.insert(route, id);
                let spec = SessionSpec {
                    id,
                    role: Role::Client,
                    cid: answer.cid,
                    keys,
                    epoch: answer.epoch,
                    server_control: Some(SocketAddr::new(server_ip, answer.control_port)),
                    config: request.config.clone(),
                    control: Arc::clone(self.handle.control()),
                };
                let shared = Shared::new(spec, Arc::clone(&self.handle));
                let confirmed = write_frame(&stream, &confirm.encode());
                shared.attach_first(stream);
                if let Err(e) = confirmed {
                    // The server holds the session unconfirmed; resuming it confirms it.
                    shared.connection_failed(answer.epoch, &e.to_string());
                }
                let (initial, max) = request.config.reconnect_backoff_value();
                let redial = Redial {
                    addr: request.addr,
                    backoff: Backoff::new(initial, max),
                    config: request.config,
                    attempt: 0,
                    last_hello: 0,
                    next_try: None,
                    dialing: None,
                    heard_acted_on: None,
                };
                let entry = Entry {
                    shared: Arc::clone(&shared),
                    route,
                    flush_watch: None,
                    side: Side::Client(Box::new(redial)),
                };
                self.adopt(id, entry);
                if request.reply.send(Ok(shared)).is_err() {
                    log::debug!("session {}: its caller is gone", answer.cid);
                }
            }
            Purpose::Resume(id) => {
                let Some(shared) = self.sessions.get(&id).map(|e| Arc::clone(&e.shared)) else {
                    return self.drop_dial(dial);
                };
                if !answer.answers(&hello, Some(&shared.handshake_keys().server)) {
                    // Not the server that holds the session, or not an answer to this
                    // hello: nothing is sent on this connection.
                    let e = io::Error::other("the answer does not prove itself");
                    return self.dial_failed(dial, Failure::Cut(e));
                }
                let Some(peer_received) = shared.check_resume(answer.received) else {
                    self.drop_dial(dial);
                    shared.reset(Error::ProtocolViolation(
                        "the server claims to have received bytes that were never sent",
                    ));
                    return self.service(id);
                };
                let stream = into_std(&self.poll, dial.stream);
                let confirm = Confirm::new(&hello, &answer, &shared.handshake_keys().client);
                if let Err(e) = write_frame(&stream, &confirm.encode()) {
                    return self.attempt_failed(Purpose::Resume(id), Failure::Cut(e));
                }
                if let Some(Side::Client(redial)) = self.sessions.get_mut(&id).map(|e| &mut e.side)
                {
                    redial.dialing = None;
                    redial.attempt = 0;
                }
                shared.resume(stream, answer.epoch, peer_received);
                self.service(id);
                self.flush(id);
            }
        }
    }

    fn refused(&mut self, code: RefusalCode, purpose: Purpose) {
        if code.is_temporary() {
            return self.attempt_failed(purpose, Failure::Busy);
        }
        match purpose {
            Purpose::Open(request) => {
                let error = match code {
                    RefusalCode::Closed => Error::Refused(Refusal::ServerClosed),
                    _ => Error::ProtocolViolation("the server refused to open a session"),
                };
                let _ = request.reply.send(Err(Failure::Fatal(error)));
            }
            Purpose::Resume(id) => {
                let error = match code {
                    RefusalCode::BadRequest => {
                        Error::ProtocolViolation("the server found our byte count impossible")
                    }
                    _ => Error::UnknownSession,
                };
                log::debug!("session {id:?}: reconnection refused: {code:?}");
                if let Some(entry) = self.sessions.get_mut(&id) {
                    if let Side::Client(redial) = &mut entry.side {
                        redial.dialing = None;
                    }
                    entry.shared.resume_refused(error);
                }
                self.service(id);
            }
        }
    }

    /// A dial failed or timed out.
    pub(super) fn dial_failed(&mut self, mut dial: Dial, failure: Failure) {
        self.deregister(&mut dial.stream);
        // A deadline passed before the connection was up is the connect's own failure.
        let failure = match failure {
            Failure::Timeout if dial.answer.is_none() => Failure::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                "the TCP connect timed out",
            )),
            other => other,
        };
        self.attempt_failed(dial.purpose, failure);
    }

    /// Drops a dial whose session is gone.
    fn drop_dial(&mut self, mut dial: Dial) {
        self.deregister(&mut dial.stream);
    }

    fn attempt_failed(&mut self, purpose: Purpose, failure: Failure) {
        match purpose {
            Purpose::Open(request) => {
                let _ = request.reply.send(Err(failure));
            }
            Purpose::Resume(id) => {
                log::debug!("session {id:?}: reconnection failed: {failure:?}");
                let now = Instant::now();
                if let Some(Side::Client(redial)) = self.sessions.get_mut(&id).map(|e| &mut e.side)
                {
                    redial.dialing = None;
                    redial.attempt = redial.attempt.saturating_add(1);
                    redial.next_try = Some(redial.due(now));
                }
                self.service(id);
            }
        }
    }
}

/// Whether a non-blocking connect has completed; its error if it failed.
fn connected(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// The failure for bytes from a server that are not a robust-tcp answer.
fn not_robust(e: WireError) -> Failure {
    let reason = match e {
        WireError::NotRobust => NotRobustReason::ForeignBytes,
        WireError::Version(v) => NotRobustReason::Version(v),
        WireError::Malformed(_) | WireError::Forged => NotRobustReason::Malformed,
    };
    Failure::Fatal(Error::NotRobust { reason })
}
