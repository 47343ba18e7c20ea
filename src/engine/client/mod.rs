//! The client side: opening a session in one round trip (paper Fig. 3, with the paper's
//! suggestion of piggybacking the session messages on the first data) and reconnecting it
//! (Fig. 4).
//!
//! `connect` waits only for the TCP connect ([`connect`], in the caller's thread, which
//! retries nothing but the addresses). The same thread then writes the opening HELLO, makes
//! the session with the connection attached and hands it to the engine, which reads the
//! server's ANSWER from the same connection (`Engine::adopt_opening`); no round trip
//! through the engine thread, and the application may write at once, right behind the
//! HELLO. Every later attempt (an opening retried after a cut, or a reconnection) is a
//! [`Dial`] on a non-blocking socket with one deadline (the handshake timeout): TCP
//! connect, HELLO, ANSWER, and CONFIRM when the server resumed a session. Their schedule,
//! and when an opening stops, is the core's (`Redial`); the engine drives it with its
//! timers and carries it out on its sockets.
//!
//! This file holds the caller's side of the opening; [`dial`] the engine's.

mod dial;
mod probe;

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Token;

use super::control::canonical;
use super::frames::write_frame;
use super::session::{SessionSpec, SharedSession};
use super::{engine, random, Command, EngineHandle};
use crate::core::agreement::{ClientHalf, KEY_LEN};
use crate::core::auth::{Nonce, Secret, SessionKeys, NONCE_LEN, SECRET_LEN};
use crate::core::early;
use crate::core::endpoint::redial::{Failure, OpeningKey};
use crate::core::endpoint::stranger::Probed;
use crate::core::handshake::Hello;
use crate::core::session::{End, Role};
use crate::error::Error;
use crate::{Config, RSocket};

pub(crate) use self::dial::Dial;

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
    key: OpeningKey,
    /// The key agreement's state, which the ANSWER finishes, if the opening runs one.
    half: Option<ClientHalf>,
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
/// engine's (see the module doc). With `Config::fallback_to_plain_tcp`, each address is
/// probed first, and one that does not speak robust-tcp gets a plain TCP connection.
pub(crate) fn connect(
    addrs: &[SocketAddr],
    config: &Config,
    limit: Option<Duration>,
) -> io::Result<RSocket> {
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
        if config.fallback_to_plain_tcp_value() {
            match probe::probe(addr, opening_timeout, config.plain_wait_value()) {
                Ok(Probed::Robust) => {}
                Ok(_) => match connect_plain(addr, config, opening_timeout) {
                    Ok(socket) => return Ok(socket),
                    Err(e) => {
                        last_error = Some(e);
                        continue;
                    }
                },
                Err(e) => {
                    last_error = Some(e);
                    continue;
                }
            }
        }
        match open_once(&engine, addr, config, opening_timeout) {
            Ok(shared) => return Ok(RSocket::from_shared(shared)),
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
    // One draw for the four: one system call per opening.
    let Some((nonce, opening_nonce, secret, private)) = opening_draws() else {
        let e = io::Error::other("the system has no random bytes to give");
        return Err(Failure::Connect(e));
    };
    // With the key agreement, the keys come with the ANSWER; until then the session holds
    // these, which nobody else does (the secret is then never sent), and tags nothing.
    let keys = SessionKeys::derive(&secret, &opening_nonce, Role::Client);
    let (key, half) = if config.key_agreement_value() {
        let (key, half) = OpeningKey::agreement(private, &opening_nonce).ok_or(Failure::Fatal(
            Error::ProtocolViolation("the key agreement failed to start"),
        ))?;
        (key, Some(half))
    } else {
        (OpeningKey::Secret(secret), None)
    };
    let hello = key.hello(nonce, 0, opening_nonce, &keys.handshake.client);
    let (stream, reader) = match connected {
        Ok(stream) => {
            // The HELLO goes out at once rather than wait on Nagle (and the session keeps
            // TCP_NODELAY on until the ANSWER, see `SharedSession::attach_opening`).
            let _ = stream.set_nodelay(true);
            let reader = write_frame(&stream, &hello.encode()).and_then(|()| stream.try_clone());
            if reader.is_ok() {
                send_early(engine, addr, &opening_nonce);
            }
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
        key,
        half,
    })));
    Ok(shared)
}

/// The random values of an opening: the HELLO's nonce, the opening nonce, the secret (the
/// lightweight opening's) and the ephemeral private key (the key agreement's), from one
/// draw.
fn opening_draws() -> Option<(Nonce, Nonce, Secret, [u8; KEY_LEN])> {
    let bytes: [u8; 2 * NONCE_LEN + SECRET_LEN + KEY_LEN] = random().ok()?;
    let (nonce, rest) = bytes.split_at(NONCE_LEN);
    let (opening_nonce, rest) = rest.split_at(NONCE_LEN);
    let (secret, private) = rest.split_at(SECRET_LEN);
    Some((
        nonce.try_into().ok()?,
        opening_nonce.try_into().ok()?,
        secret.try_into().ok()?,
        private.try_into().ok()?,
    ))
}

/// Sends the EARLY datagram of the opening whose HELLO carries `opening_nonce` to the
/// control address the server at `addr` named last, if this process has opened a session
/// with it before (see `core::early`).
fn send_early(engine: &EngineHandle, addr: SocketAddr, opening_nonce: &Nonce) {
    let known = engine.control_memo.lock().get(canonical(addr));
    if let Some(to) = known {
        let datagram = early::encode(opening_nonce);
        engine.send_control(Role::Client, engine.control(), &datagram, to);
    }
}

/// A plain TCP connection to `addr`, a server that does not speak robust-tcp.
fn connect_plain(addr: SocketAddr, config: &Config, timeout: Duration) -> io::Result<RSocket> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_nodelay(config.nodelay_value())?;
    Ok(RSocket::from_plain(stream))
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
