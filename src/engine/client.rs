//! The client side: opening a session in one round trip (paper Fig. 3, with the paper's
//! suggestion of piggybacking the session messages on the first data) and reconnecting it
//! (Fig. 4).
//!
//! `connect` waits only for the TCP connect ([`connect`], in the caller's thread, which
//! retries nothing but the addresses). The same thread then writes the opening HELLO, makes
//! the session with the connection attached and hands it to the engine, which reads the
//! server's ANSWER from the same connection ([`Engine::adopt_opening`]); no round trip
//! through the engine thread, and the application may write at once, right behind the
//! HELLO. Every later attempt (an opening retried after a cut, or a reconnection) is a
//! [`Dial`] on a non-blocking socket with one deadline (the handshake timeout): TCP
//! connect, HELLO, ANSWER, and CONFIRM when the server resumed a session. Their schedule,
//! and when an opening stops, is the core's ([`Redial`]); the engine drives it with its
//! timers and carries it out on its sockets.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Token};

use super::control::{canonical, RouteKey};
use super::frames::{write_frame, DontWait, FrameError, FrameRead, FrameReader};
use super::session::{SessionSpec, SharedSession};
use super::{engine, random, Command, Engine, EngineHandle, Entry, Handshake, Side};
use crate::core::auth::{Nonce, Secret, SessionKeys};
use crate::core::counter::to_wire;
use crate::core::endpoint::redial::{Failure, NextHello, Redial};
use crate::core::handshake::{Accepted, Answer, Confirm, FrameKind, Hello, RefusalCode};
use crate::core::session::{End, Role};
use crate::core::WireError;
use crate::error::{Error, NotRobustReason, Refusal};
use crate::Config;

/// A session its caller opened (see [`open_once`]), for the engine to take over.
pub(crate) struct Opened {
    id: Token,
    session: Handover,
    /// A descriptor of the session's connection of the engine's own, to read the ANSWER
    /// with; or why there is none (then the opening is retried, as after a cut).
    reader: io::Result<TcpStream>,
    hello: Hello,
    /// When the caller's thread wrote the HELLO.
    hello_sent: Instant,
    addr: SocketAddr,
    config: Config,
    /// The bound on each attempt of the opening.
    opening_timeout: Duration,
    opening_nonce: Nonce,
    secret: Secret,
}

/// A session on its way to the engine. If the command carrying it is dropped instead (the
/// engine stopped after a panic), the session fails with `EngineStopped`, as the engine's
/// own sessions do, rather than wait for an ANSWER nobody reads.
struct Handover(Option<Arc<SharedSession>>);

impl Handover {
    fn arrived(mut self) -> Option<Arc<SharedSession>> {
        self.0.take()
    }
}

impl Drop for Handover {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.fail(Error::EngineStopped);
        }
    }
}

/// Opens a session with the first of `addrs` that accepts a TCP connection, trying them in
/// turn until `limit` (if any) has passed; each attempt of the opening, this TCP connect
/// and the engine's retries alike, takes at most `limit` too. Returns once the TCP
/// connection is up, with the opening HELLO written: the rest of the opening is the
/// engine's (see the module doc).
pub(crate) fn connect(
    addrs: &[SocketAddr],
    config: &Config,
    limit: Option<Duration>,
) -> io::Result<Arc<SharedSession>> {
    config.validate()?;
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any addresses",
        ));
    }
    let engine = engine()?;
    let started = Instant::now();
    // An attempt longer than the caller's limit is of no use to it; the session's later
    // reconnections keep the configured bound.
    let hs = config.handshake_timeout_value();
    let opening_timeout = limit.map_or(hs, |limit| limit.min(hs));
    let mut last_error = None;
    for &addr in addrs {
        if limit.is_some_and(|limit| started.elapsed() >= limit) {
            break;
        }
        match open_once(&engine, addr, config, opening_timeout) {
            Ok(shared) => return Ok(shared),
            Err(Failure::Fatal(e)) => return Err(e.into()),
            Err(Failure::Connect(e) | Failure::Cut(e)) => last_error = Some(e),
            Err(failure) => last_error = Some(io::Error::other(format!("{failure:?}"))),
        }
    }
    // Like TcpStream::connect: nobody listens, so say so at once.
    Err(last_error
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "the connect timed out")))
}

/// One opening, in the caller's thread: the TCP connect (at most the handshake timeout),
/// the opening HELLO, and the session with the connection attached, handed to the engine,
/// which reads the ANSWER and retries the opening if it is cut.
fn open_once(
    engine: &Arc<EngineHandle>,
    addr: SocketAddr,
    config: &Config,
    opening_timeout: Duration,
) -> Result<Arc<SharedSession>, Failure> {
    let connected = match TcpStream::connect_timeout(&addr, opening_timeout) {
        Ok(stream) => Ok(stream),
        // Established, then reset before this thread looked: a cut after the TCP connect,
        // after which the opening is retried, as after any other cut.
        Err(e) if was_established(&e) => Err(e),
        Err(e) => return Err(Failure::Connect(e)),
    };
    let (Ok(nonce), Ok(opening_nonce), Ok(secret)) = (random(), random(), random()) else {
        let e = io::Error::other("the system has no random bytes to give");
        return Err(Failure::Connect(e));
    };
    let keys = SessionKeys::derive(&secret, &opening_nonce, Role::Client);
    let hello = Hello::opening(nonce, 0, opening_nonce, secret, &keys.handshake.client);
    let (stream, reader) = match connected {
        Ok(stream) => {
            // The HELLO goes out at once rather than wait on Nagle (and the session keeps
            // TCP_NODELAY on until the ANSWER, see `SharedSession::attach_opening`).
            let _ = stream.set_nodelay(true);
            let reader = write_frame(&stream, &hello.encode()).and_then(|()| stream.try_clone());
            (Some(stream), reader)
        }
        Err(e) => (None, Err(e)),
    };
    let hello_sent = Instant::now();
    let id = engine.new_token();
    let spec = SessionSpec {
        id,
        // The server's control address comes with its ANSWER.
        end: End::Client(None),
        cid: 0,
        keys,
        epoch: 0,
        config: config.clone(),
        control: Arc::clone(engine.control()),
    };
    let shared = SharedSession::new(spec, Arc::clone(engine));
    if let Some(stream) = stream {
        shared.attach_opening(stream);
    }
    // Before the caller has the session, so the engine has it before any command about it.
    engine.send(Command::Adopt(Box::new(Opened {
        id,
        session: Handover(Some(Arc::clone(&shared))),
        reader,
        hello,
        hello_sent,
        addr,
        config: config.clone(),
        opening_timeout,
        opening_nonce,
        secret,
    })));
    Ok(shared)
}

/// One attempt at a handshake, by the client.
pub(crate) struct Dial {
    /// A non-blocking socket of the dial's own; or, for the first opening, a duplicate
    /// descriptor of the session's connection, which the application uses in blocking
    /// mode (read with `MSG_DONTWAIT`, never written to; a descriptor of our own, because
    /// the engine's resend may watch the session's for room, and epoll takes a descriptor
    /// once).
    stream: TcpStream,
    /// The session the attempt is for: its opening retried, or a reconnection.
    session: Token,
    /// `None` while the TCP connect is in progress.
    answer: Option<AwaitedAnswer>,
    /// Whether `stream` is the session's own connection: the opening HELLO went out on it
    /// and the application's bytes follow.
    on_session: bool,
}

/// A dial's HELLO, sent, and the ANSWER it waits for.
struct AwaitedAnswer {
    hello: Hello,
    /// When the HELLO went out.
    hello_sent: Instant,
    reader: FrameReader,
}

impl AwaitedAnswer {
    /// Waiting for the ANSWER to `hello`, sent at `hello_sent`.
    fn new(hello: Hello, hello_sent: Instant) -> Self {
        AwaitedAnswer {
            hello,
            hello_sent,
            reader: FrameReader::new(FrameKind::Answer),
        }
    }
}

impl Dial {
    /// Whether the TCP connect is still in progress (no HELLO sent yet).
    pub(super) fn connecting(&self) -> bool {
        self.answer.is_none()
    }
}

impl Engine {
    /// Starts an attempt for client session `id`.
    pub(super) fn redial(&mut self, id: Token) {
        let token = self.new_token();
        let Some(Side::Client(redial)) = self.sessions.get_mut(&id).map(|e| &mut e.side) else {
            return;
        };
        // Recorded first: the attempt may fail, and say so, before `dial` returns.
        redial.started(token, Instant::now());
        let (addr, timeout) = (redial.addr(), redial.attempt_timeout());
        log::debug!("session {id:?}: reconnecting to {addr}");
        self.dial(token, addr, timeout, id);
    }

    fn dial(&mut self, token: Token, addr: SocketAddr, timeout: Duration, session: Token) {
        let deadline = Instant::now() + timeout;
        let stream = mio::net::TcpStream::connect(addr)
            .map(TcpStream::from)
            .and_then(|stream| {
                let interest = Interest::READABLE | Interest::WRITABLE;
                self.watch(&stream, token, interest)?;
                Ok(stream)
            });
        match stream {
            Ok(stream) => {
                let dial = Dial {
                    stream,
                    session,
                    answer: None,
                    on_session: false,
                };
                self.add_handshake(token, Handshake::Client(Box::new(dial)), deadline);
            }
            Err(e) => self.attempt_failed(session, Failure::Connect(e)),
        }
    }

    /// Registers `stream`'s descriptor with the poll under `token`.
    fn watch(&self, stream: &TcpStream, token: Token, interest: Interest) -> io::Result<()> {
        let fd = stream.as_raw_fd();
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), token, interest)
    }

    /// Stops watching a dial's socket.
    fn unwatch_dial(&self, dial: &Dial) {
        let fd = dial.stream.as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
    }

    /// Advances a dial as far as the connection allows.
    pub(super) fn advance_dial(&mut self, token: Token, mut dial: Dial) {
        if dial.answer.is_none() {
            match connected(&dial.stream) {
                Ok(false) => {
                    self.handshakes
                        .insert(token, Handshake::Client(Box::new(dial)));
                    return;
                }
                Ok(true) => {}
                // Established, then reset before we looked: a cut after the TCP connect.
                Err(e) if was_established(&e) => return self.dial_failed(dial, Failure::Cut(e)),
                Err(e) => return self.dial_failed(dial, Failure::Connect(e)),
            }
            // The handshake's frames go out at once rather than wait on Nagle.
            let _ = dial.stream.set_nodelay(true);
            let hello = match self.hello(dial.session) {
                Some(Ok(hello)) => hello,
                Some(Err(failure)) => return self.dial_failed(dial, failure),
                None => return self.drop_dial(dial),
            };
            if let Err(e) = write_frame(&dial.stream, &hello.encode()) {
                return self.dial_failed(dial, Failure::Cut(e));
            }
            dial.answer = Some(AwaitedAnswer::new(hello, Instant::now()));
        }
        let Some(awaited) = dial.answer.as_mut() else {
            return;
        };
        let (hello, hello_sent) = (awaited.hello, awaited.hello_sent);
        match awaited.reader.poll(DontWait(&dial.stream)) {
            Ok(FrameRead::Pending) => {
                self.handshakes
                    .insert(token, Handshake::Client(Box::new(dial)));
            }
            Ok(FrameRead::Done(body)) => match Answer::parse(&body) {
                Ok(Answer::Accepted(answer)) => self.answered(dial, hello, hello_sent, answer),
                Ok(Answer::Refused(code)) => self.refused(code, dial),
                Err(e) => self.dial_failed(dial, not_robust(e)),
            },
            Err(FrameError::Wire(e)) => self.dial_failed(dial, not_robust(e)),
            Err(FrameError::Io(e)) => self.dial_failed(dial, Failure::Cut(e)),
        }
    }

    /// Takes over a session its caller opened ([`open_once`]): reads the server's ANSWER
    /// from the session's connection by a dial of its own (a duplicate descriptor), under
    /// the handshake timeout, and keeps the session.
    pub(super) fn adopt_opening(&mut self, opened: Opened) {
        let Opened {
            id,
            session,
            reader,
            hello,
            hello_sent,
            addr,
            config,
            opening_timeout,
            opening_nonce,
            secret,
        } = opened;
        let Some(shared) = session.arrived() else {
            return;
        };
        let token = self.new_token();
        let mut redial = Redial::new(
            addr,
            &config,
            opening_timeout,
            opening_nonce,
            secret,
            hello_sent,
        );
        let reading = reader.and_then(|reader| {
            self.watch(&reader, token, Interest::READABLE)?;
            Ok(reader)
        });
        match reading {
            Ok(reader) => {
                let now = Instant::now();
                redial.started(token, now);
                let dial = Dial {
                    stream: reader,
                    session: id,
                    answer: Some(AwaitedAnswer::new(hello, hello_sent)),
                    on_session: true,
                };
                self.handshakes
                    .insert(token, Handshake::Client(Box::new(dial)));
                self.timers.set(token, Some(now + redial.attempt_timeout()));
            }
            // The opening is retried as after a cut.
            Err(e) => shared.connection_failed(0, &e.to_string()),
        }
        let entry = Entry {
            shared,
            // Routed once the server's answer names the CID.
            route: RouteKey {
                role: Role::Client,
                cid: 0,
            },
            flush_watch: None,
            side: Side::Client(Box::new(redial)),
        };
        self.adopt(id, entry);
    }

    /// The HELLO for an attempt of session `id`, or why there is none; `None` if the
    /// session is gone. A session whose opening the server has not answered sends its
    /// opening again (same opening nonce and secret, a higher attempt number).
    fn hello(&mut self, id: Token) -> Option<Result<Hello, Failure>> {
        let nonce = match random() {
            Ok(nonce) => nonce,
            Err(e) => return Some(Err(Failure::Cut(e))),
        };
        let entry = self.sessions.get_mut(&id)?;
        let Side::Client(redial) = &mut entry.side else {
            return None;
        };
        let NextHello { attempt, opening } = match redial.next_hello(Instant::now()) {
            Ok(next) => next,
            Err(e) => return Some(Err(Failure::Fatal(e))),
        };
        let shared = &entry.shared;
        // The old connection is detached: once no thread is inside a read or write on it,
        // the received count is exact.
        shared.barrier();
        let key = &shared.handshake_keys().client;
        Some(Ok(match opening {
            Some((opening_nonce, secret)) => {
                Hello::opening(nonce, attempt, opening_nonce, secret, key)
            }
            None => {
                let received = to_wire(shared.received());
                Hello::resume(shared.cid(), nonce, attempt, received, key)
            }
        }))
    }

    /// The server accepted a dial's `hello`, sent at `hello_sent`, with `answer`. If the
    /// answer is this hello's and proves that the server holds the session's keys: learns
    /// the path's round trip, learns the CID if the session was opening, confirms where
    /// the server resumed a session, and moves the session to the connection (the first
    /// opening's is the session's already).
    fn answered(&mut self, dial: Dial, hello: Hello, hello_sent: Instant, answer: Accepted) {
        let id = dial.session;
        let Some(shared) = self.sessions.get(&id).map(|e| Arc::clone(&e.shared)) else {
            return self.drop_dial(dial);
        };
        if !answer.answers(&hello, &shared.handshake_keys().server) {
            // Not the server that holds the session's keys, or not an answer to this
            // hello: nothing more is sent on this connection.
            let e = io::Error::other("the answer does not prove itself");
            return self.dial_failed(dial, Failure::Cut(e));
        }
        if let Some(Side::Client(redial)) = self.sessions.get_mut(&id).map(|e| &mut e.side) {
            // A robust-tcp server answered: whatever happens to this attempt, the opening
            // is not talking to a stranger that hangs up.
            redial.heard_answer();
        }
        let fits = if hello.is_opening() {
            // The first opening's connection carries the session already: only a session
            // opened on it, as connection 0, fits.
            !dial.on_session || (answer.opened && answer.epoch == 0)
        } else {
            !answer.opened && answer.cid == hello.cid
        };
        if !fits {
            let e = io::Error::other("the answer does not fit the hello");
            return self.dial_failed(dial, Failure::Cut(e));
        }
        // From the HELLO to the ANSWER: one round trip to the server itself (a TCP connect
        // may end at a proxy on the way), with nothing of the stream queued ahead.
        shared.round_trip(hello_sent.elapsed());
        let peer_received = shared
            .check_resume(answer.received)
            .filter(|&n| n == 0 || !answer.opened);
        let Some(peer_received) = peer_received else {
            self.drop_dial(dial);
            shared.reset(Error::ProtocolViolation(
                "the server claims to have received bytes that were never sent",
            ));
            return self.service(id);
        };
        if !answer.opened {
            // The server resumed a session: prove that we hold its keys and got this
            // answer, before it moves the session to this connection.
            let confirm = Confirm::new(&hello, &answer, &shared.handshake_keys().client);
            if let Err(e) = write_frame(&dial.stream, &confirm.encode()) {
                return self.dial_failed(dial, Failure::Cut(e));
            }
        }
        self.unwatch_dial(&dial);
        if hello.is_opening() {
            self.learn_cid(id, &shared, &answer);
        }
        if let Some(Side::Client(redial)) = self.sessions.get_mut(&id).map(|e| &mut e.side) {
            redial.connected();
        }
        if dial.on_session {
            // Our descriptor of the connection closes here; the session's stays.
            shared.answer_consumed();
        } else {
            // An opened session starts at byte 0 both ways: everything is resent.
            shared.resume(dial.stream, answer.epoch, peer_received);
        }
        self.service(id);
        self.flush(id);
    }

    /// The server answered session `id`'s opening: the session learns its CID and the
    /// server's control address, and its control datagrams are routed to it.
    fn learn_cid(&mut self, id: Token, shared: &SharedSession, answer: &Accepted) {
        let Some(entry) = self.sessions.get_mut(&id) else {
            return;
        };
        let Side::Client(redial) = &entry.side else {
            return;
        };
        let server_ip = canonical(redial.addr()).ip();
        shared.opened(answer.cid, SocketAddr::new(server_ip, answer.control_port));
        let route = RouteKey {
            role: Role::Client,
            cid: answer.cid,
        };
        entry.route = route;
        self.routes.insert(route, id);
        log::debug!("session {id:?} opened: {}", answer.cid);
    }

    fn refused(&mut self, code: RefusalCode, dial: Dial) {
        self.unwatch_dial(&dial);
        if dial.on_session {
            self.first_connection_failed(dial.session, "the server refused the opening");
        }
        if code.is_temporary() {
            return self.attempt_failed(dial.session, Failure::Busy);
        }
        let id = dial.session;
        let Some(entry) = self.sessions.get_mut(&id) else {
            return;
        };
        let opening = entry.shared.cid() == 0;
        let error = match (code, opening) {
            (RefusalCode::Closed, true) => Error::Refused(Refusal::ServerClosed),
            (RefusalCode::BadRequest, true) => {
                Error::ProtocolViolation("the server refused to open a session")
            }
            (RefusalCode::BadRequest, false) => {
                Error::ProtocolViolation("the server found our byte count impossible")
            }
            _ => Error::UnknownSession,
        };
        log::debug!("session {id:?}: refused: {code:?}");
        if let Side::Client(redial) = &mut entry.side {
            redial.abandoned();
        }
        entry.shared.resume_refused(error);
        self.service(id);
    }

    /// A dial failed or timed out.
    pub(super) fn dial_failed(&mut self, dial: Dial, failure: Failure) {
        self.unwatch_dial(&dial);
        // A deadline passed before the connection was up is the connect's own failure.
        let failure = match failure {
            Failure::Timeout if dial.answer.is_none() => Failure::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                "the TCP connect timed out",
            )),
            other => other,
        };
        if dial.on_session {
            self.first_connection_failed(dial.session, &format!("{failure:?}"));
        }
        self.attempt_failed(dial.session, failure);
    }

    /// The first opening's dial ended without an answer that opened the session on its
    /// connection: the session's connection failed with it (if it had not already).
    fn first_connection_failed(&self, id: Token, why: &str) {
        if let Some(entry) = self.sessions.get(&id) {
            entry.shared.connection_failed(0, why);
        }
    }

    /// Drops a dial whose session is gone (or that is started over).
    pub(super) fn drop_dial(&mut self, dial: Dial) {
        self.unwatch_dial(&dial);
    }

    fn attempt_failed(&mut self, id: Token, failure: Failure) {
        log::debug!("session {id:?}: attempt failed: {failure:?}");
        let now = Instant::now();
        if let Some(entry) = self.sessions.get_mut(&id) {
            if let Side::Client(redial) = &mut entry.side {
                if let Some(error) = redial.failed(failure, now) {
                    log_opening_failure(id, redial, &error);
                    entry.shared.fail(error);
                }
            }
        }
        self.service(id);
    }
}

/// Logs why session `id`'s opening failed: at warn when a full server refused it for as
/// long as the client waits, which nothing else shows but the application's next read or
/// write (a tunnel's connection that just closes, say).
fn log_opening_failure(id: Token, redial: &Redial<Token>, error: &Error) {
    if *error == Error::Refused(Refusal::TooManySessions) {
        log::warn!(
            "session {id:?}: {} refused the new session as full (its max_sessions, or its \
             max_sessions_per_address for this client's address) for the whole busy_limit \
             of {:?}: {error}",
            redial.addr(),
            redial.busy_limit()
        );
    } else {
        log::debug!("session {id:?}: the opening failed: {error}");
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

/// Whether a connect's error says that the connection was established and then lost (a
/// reset answers a SYN with `ConnectionRefused`, never these).
fn was_established(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
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
