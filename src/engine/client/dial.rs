//! The engine's dials: every attempt of a client session after the caller's own (an
//! opening retried after a cut, or a reconnection) on a non-blocking socket under one
//! deadline, TCP connect, HELLO, ANSWER and, when the server resumed the session,
//! CONFIRM; and the first opening's ANSWER, read from the session's own connection. The
//! core's [`Redial`] says when each starts and what its HELLO says; the engine carries
//! it out.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Token};

use super::{was_established, Opened};
use crate::core::auth::SessionKeys;
use crate::core::endpoint::client::{on_answer, Answered};
use crate::core::endpoint::redial::{Failure, Redial};
use crate::core::handshake::{Accepted, FrameKind, Hello};
use crate::core::session::Role;
use crate::core::WireError;
use crate::engine::control::{canonical, RouteKey};
use crate::engine::frames::{write_frame, DontWait, FrameError, FrameRead, FrameReader};
use crate::engine::handshakes::Handshake;
use crate::engine::session::SharedSession;
use crate::engine::{random, Engine, Entry, Side};
use crate::error::{Error, Refusal};

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
            reader: FrameReader::new(&[FrameKind::Answer]),
        }
    }
}

impl Dial {
    /// Whether the TCP connect is still in progress (no HELLO sent yet).
    pub(in crate::engine) fn connecting(&self) -> bool {
        self.answer.is_none()
    }
}

impl Engine {
    /// Starts an attempt for client session `id`.
    pub(in crate::engine) fn redial(&mut self, id: Token) {
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

    /// Client session `id`'s later attempts go to `addr` (the application's
    /// `RSocket::reconnect_to`); a server's session, or one that ended, has none.
    pub(in crate::engine) fn redirect(&mut self, id: Token, addr: SocketAddr) {
        if let Some(Side::Client(redial)) = self.sessions.get_mut(&id).map(|e| &mut e.side) {
            log::debug!("session {id:?}: later attempts go to {addr}");
            redial.redirect(addr);
        }
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
    pub(in crate::engine) fn advance_dial(&mut self, token: Token, mut dial: Dial) {
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
        let body = match awaited.reader.poll(DontWait(&dial.stream)) {
            Ok(FrameRead::Pending) => {
                self.handshakes
                    .insert(token, Handshake::Client(Box::new(dial)));
                return;
            }
            Ok(FrameRead::Done(body)) => Ok(body),
            Err(FrameError::Wire(e)) => Err(e),
            Err(FrameError::Io(e)) => return self.dial_failed(dial, Failure::Cut(e)),
        };
        self.answered(dial, hello, hello_sent, body);
    }

    /// Takes over a session its caller opened ([`open_once`]): reads the server's ANSWER
    /// from the session's connection by a dial of its own (a duplicate descriptor), under
    /// the handshake timeout, and keeps the session.
    pub(in crate::engine) fn adopt_opening(&mut self, opened: Opened) {
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
            key,
            half,
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
            key,
            hello_sent,
        );
        if let Some(half) = half {
            redial.agreement_started(half);
        }
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
    /// opening again (same opening nonce and opening key, a higher attempt number).
    fn hello(&mut self, id: Token) -> Option<Result<Hello, Failure>> {
        let nonce = match random() {
            Ok(nonce) => nonce,
            Err(e) => return Some(Err(Failure::Cut(e))),
        };
        let entry = self.sessions.get_mut(&id)?;
        let Side::Client(redial) = &mut entry.side else {
            return None;
        };
        let next = match redial.next_hello(Instant::now()) {
            Ok(next) => next,
            Err(e) => return Some(Err(Failure::Fatal(e))),
        };
        let shared = &entry.shared;
        // The old connection is detached: once no thread is inside a read or write on it,
        // the received count is exact.
        shared.barrier();
        let key = &shared.handshake_keys().client;
        Some(Ok(next.hello(nonce, shared.cid(), shared.received(), key)))
    }

    /// The server answered a dial's `hello`, sent at `hello_sent`, with the frame `body`
    /// (or bytes that are no ANSWER frame): carries out what the core makes of it. An
    /// ANSWER that is this hello's and proves that the server holds the session's keys:
    /// learns the path's round trip, learns the CID (and the keys of a key-agreement
    /// opening) if the session was opening, confirms where the server resumed a session,
    /// and moves the session to the connection (the first opening's is the session's
    /// already); or, where the server knew a retried key-agreement opening's session,
    /// learns it and ends the attempt, to resume it by its CID at once.
    fn answered(
        &mut self,
        dial: Dial,
        hello: Hello,
        hello_sent: Instant,
        body: Result<Vec<u8>, WireError>,
    ) {
        let id = dial.session;
        let Some(entry) = self.sessions.get_mut(&id) else {
            return self.drop_dial(dial);
        };
        let shared = Arc::clone(&entry.shared);
        let keys = shared.handshake_keys();
        let frame = body.as_deref().map_err(|e| *e);
        let check = |n| shared.check_resume(n);
        let agree = |answer: &Accepted| match &mut entry.side {
            Side::Client(redial) => redial.agreed_keys(answer),
            Side::Server { .. } => None,
        };
        let answered = on_answer(&hello, frame, &keys, dial.on_session, check, agree);
        if answered.heard() {
            if let Some(Side::Client(redial)) = self.sessions.get_mut(&id).map(|e| &mut e.side) {
                redial.heard_answer();
            }
        }
        let (answer, confirm, peer_received, agreed) = match answered {
            Answered::Install {
                answer,
                confirm,
                peer_received,
                agreed,
            } => (answer, confirm, peer_received, agreed),
            Answered::Learn { answer, keys } => {
                // Nothing more on this connection: the session resumes by its CID on the
                // next, at once.
                self.unwatch_dial(&dial);
                self.learn_cid(id, &dial, &shared, &answer, Some(*keys), false);
                if let Some(Side::Client(redial)) = self.sessions.get_mut(&id).map(|e| &mut e.side)
                {
                    redial.learned();
                }
                self.learned_cid(answer.cid);
                return self.service(id);
            }
            Answered::Failed { failure, .. } => return self.dial_failed(dial, failure),
            Answered::Refused(error) => return self.refused(dial, error),
            Answered::Violation(error) => {
                self.drop_dial(dial);
                shared.reset(error);
                return self.service(id);
            }
        };
        // From the HELLO to the ANSWER: one round trip to the server itself (a TCP connect
        // may end at a proxy on the way), with nothing of the stream queued ahead.
        shared.round_trip(hello_sent.elapsed());
        if let Some(confirm) = confirm {
            if let Err(e) = write_frame(&dial.stream, &confirm.encode()) {
                return self.dial_failed(dial, Failure::Cut(e));
            }
        }
        self.unwatch_dial(&dial);
        if hello.is_opening() {
            // On the session's first connection (our descriptor of it closes here; the
            // session's stays), the application reads from it once this returns.
            let agreed = agreed.map(|keys| *keys);
            self.learn_cid(id, &dial, &shared, &answer, agreed, dial.on_session);
        }
        if let Some(Side::Client(redial)) = self.sessions.get_mut(&id).map(|e| &mut e.side) {
            redial.connected(Instant::now());
        }
        if !dial.on_session {
            // The application's calls block on it. (A failure here fails again on use,
            // where it is reported.)
            let _ = dial.stream.set_nonblocking(false);
            // An opened session starts at byte 0 both ways: everything is resent.
            shared.resume(dial.stream, answer.epoch, peer_received);
        }
        if hello.is_opening() {
            // After the application's reads are let go: they need none of it.
            self.learned_cid(answer.cid);
        }
        self.service(id);
        self.flush(id);
    }

    /// The server answered session `id`'s opening on `dial`: the session learns its CID,
    /// the server's control address and the keys it `agreed` on (if it ran the key
    /// agreement), and its control datagrams are routed to it. The server is the one that
    /// answered, at the dial's peer address (`reconnect_to` may have named another since
    /// the HELLO went out); the process remembers its control address for the next
    /// opening's EARLY datagram. `on_first`: the ANSWER came on the session's first
    /// connection, which the application reads from from now on.
    fn learn_cid(
        &mut self,
        id: Token,
        dial: &Dial,
        shared: &SharedSession,
        answer: &Accepted,
        agreed: Option<SessionKeys>,
        on_first: bool,
    ) {
        let Some(entry) = self.sessions.get_mut(&id) else {
            return;
        };
        let Side::Client(redial) = &entry.side else {
            return;
        };
        let server = canonical(dial.stream.peer_addr().unwrap_or_else(|_| redial.addr()));
        let control = answer.control_peer(server);
        self.handle.control_memo.lock().learned(server, control);
        shared.opened(answer.cid, control, agreed, on_first);
        let route = RouteKey {
            role: Role::Client,
            cid: answer.cid,
        };
        entry.route = route;
        self.routes.insert(route, id);
        log::debug!("session {id:?} opened: {}", answer.cid);
    }

    /// The server refused the session for good: it fails with `error`.
    fn refused(&mut self, dial: Dial, error: Error) {
        self.unwatch_dial(&dial);
        if dial.on_session {
            self.first_connection_failed(dial.session, "the server refused the opening");
        }
        let id = dial.session;
        let Some(entry) = self.sessions.get_mut(&id) else {
            return;
        };
        log::debug!("session {id:?}: refused: {error}");
        if let Side::Client(redial) = &mut entry.side {
            redial.abandoned();
        }
        entry.shared.resume_refused(error);
        self.service(id);
    }

    /// A dial failed or timed out.
    pub(in crate::engine) fn dial_failed(&mut self, dial: Dial, failure: Failure) {
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
    pub(in crate::engine) fn drop_dial(&mut self, dial: Dial) {
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
