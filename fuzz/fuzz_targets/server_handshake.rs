//! The server's handshake state machine, driven for real: one `RServerSocket` on loopback
//! for the whole run, and for each input up to four plain TCP connections, one after the
//! other, each of which sends its bytes as a client would, half-closes and reads what comes
//! back.
//!
//! Input: the connections' bytes, separated by `|NEXT|`. Of each, the first byte chooses
//! where the rest is cut into pieces (the low 4 bits: the first piece's length; the high 4
//! bits: half the second's), and the rest is what the client sends. In it, `CID?` stands
//! for the CID of the latest session the server accepted in this input, and
//! `TAG?????????????` in the tag field of a HELLO or a CONFIRM for the right tag, which the
//! harness computes with that session's keys (a CONFIRM's, over its connection's HELLO and
//! ANSWER): so an input can open a session and confirm it, then resume it on another
//! connection, with the CID and secret the server chose at random. Marks after a HELLO are
//! filled from that HELLO's own ANSWER if it accepts: the client sends the HELLO, reads
//! the ANSWER, then sends the rest.
//!
//! What must hold, whatever the bytes:
//! - the server answers with nothing, or with exactly one well-formed ANSWER frame, and
//!   never with more;
//! - bytes that end before their first frame does get no answer; a first frame the server
//!   cannot read as a HELLO (a foreign protocol, another version, another kind, a short
//!   body) gets a refusal for a bad request; a HELLO gets an answer: an acceptance only of
//!   a new session (echoing the HELLO's nonce, with a secret) or of the session it names
//!   when the HELLO's tag is right for that session (the answer proving itself, without
//!   the secret), with a count of bytes received that the server sent (0: its
//!   application never writes), and a refusal only for a reason that kind of HELLO can
//!   have;
//! - `accept` returns only sessions that a connection claimed: one the server accepted in
//!   its ANSWER on that connection, followed by the CONFIRM with the right tag. Garbage
//!   never becomes a session, and neither does an exchange without its proof.
//!
//! A panic on the library's engine thread aborts the run too (libFuzzer's panic hook), so a
//! bug there is a crash here. Every wait is bounded (connect, writes, reads), so an input
//! never hangs.
//!
//! Protocol API used: `FrameHeader::parse(&[u8; HEADER_LEN])` with `kind` and
//! `body_len`, `FrameKind`, `Hello::parse`, `Hello::resume`, `Hello::verify`,
//! `Answer::parse`, `Accepted::answers`, `Confirm::new`, `SessionKeys::derive`,
//! `HEADER_LEN`; and the public `RServerSocket::bind_with`, `accept`, `local_addr`,
//! `RSocket::session_id`, `abort`, and `Config`'s `handshake_timeout`, `give_up_after`,
//! `max_handshakes`.
#![no_main]

use std::collections::{BTreeSet, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use robust_tcp::protocol::auth::{SessionKeys, SECRET_LEN, TAG_LEN};
use robust_tcp::protocol::handshake::{
    Accepted, Answer, Confirm, FrameHeader, FrameKind, Hello, RefusalCode, HEADER_LEN,
};
use robust_tcp::protocol::session::Role;
use robust_tcp::{Config, RServerSocket};

/// Separates the connections of an input.
const NEXT: &[u8] = b"|NEXT|";
/// Stands for the CID of the latest session accepted in this input.
const CID_MARK: &[u8] = b"CID?";
/// In a tag field, stands for the right tag.
const TAG_MARK: &[u8; TAG_LEN] = b"TAG?????????????";
/// The most connections an input makes.
const MAX_CONNECTIONS: usize = 4;
/// How many of the sessions `accept` returned are kept open (the oldest is aborted), so
/// that a later connection can resume a confirmed session.
const KEEP_ACCEPTED: usize = 4;
/// The server's bound on a handshake. Short, so that the sessions that inputs open and
/// never confirm are dropped soon (after 12 of these) and do not fill the server.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(250);
/// How long a server session waits for a reconnection before it gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(1);
/// How long a connect or a write may take: far more than loopback ever needs.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for an answer that must come.
const ANSWER_WAIT: Duration = Duration::from_secs(2);
/// Once something arrived (or nothing has to), how long a silence ends the reading.
const SILENCE: Duration = Duration::from_millis(10);
/// The pause between two pieces of an input, so that the server reads them apart.
const PIECE_PAUSE: Duration = Duration::from_micros(200);
/// More than any answer: a server that sends this much is broken.
const MAX_RESPONSE: usize = 4096;

/// Sessions `accept` returned: their CIDs, until checked against `CLAIMED`.
static ACCEPTED: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// CIDs that a connection may have confirmed or resumed (see the module's doc).
static CLAIMED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// A session the server accepted, as its ANSWER named it, with the keys the client
/// derived.
#[derive(Clone)]
struct Session {
    cid: u32,
    keys: SessionKeys,
}

fuzz_target!(|data: &[u8]| {
    let addr = server();
    let mut session = None;
    for part in parts(data).take(MAX_CONNECTIONS) {
        let Some((&cuts, bytes)) = part.split_first() else {
            continue;
        };
        session = connection(addr, cuts, bytes, session.clone()).or(session);
    }
    // Every session `accept` returned so far was claimed by a connection: the one that
    // claims a session gets its ANSWER before `accept` can return it, and was checked.
    let claimed = lock(&CLAIMED);
    for cid in lock(&ACCEPTED).drain(..) {
        assert!(
            claimed.contains(&cid),
            "accept returned session {cid}, which no connection confirmed or resumed"
        );
    }
});

/// The server for the whole run: its address. Binds it, and starts the thread that takes
/// what `accept` returns, on first use.
fn server() -> SocketAddr {
    static SERVER: OnceLock<SocketAddr> = OnceLock::new();
    static SOCKET: OnceLock<RServerSocket> = OnceLock::new();
    *SERVER.get_or_init(|| {
        let config = Config::default()
            .handshake_timeout(HANDSHAKE_TIMEOUT)
            .give_up_after(Some(GIVE_UP_AFTER))
            .max_handshakes(32);
        let socket = SOCKET.get_or_init(|| {
            RServerSocket::bind_with("127.0.0.1:0", config).expect("bind the server")
        });
        thread::Builder::new()
            .name("fuzz-accept".into())
            .spawn(move || {
                let mut kept = VecDeque::new();
                while let Ok((sock, _)) = socket.accept() {
                    lock(&ACCEPTED).push(sock.session_id());
                    kept.push_back(sock);
                    if kept.len() > KEEP_ACCEPTED {
                        let _ = kept.pop_front().map(|old| old.abort());
                    }
                }
            })
            .expect("start the accept thread");
        socket.local_addr().expect("the server's address")
    })
}

/// A lock that a panic elsewhere does not spoil (the run aborts on a panic anyway).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The input's connections: its bytes split at each `NEXT`.
fn parts(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let data = rest?;
        match data.windows(NEXT.len()).position(|w| w == NEXT) {
            Some(at) => {
                rest = Some(&data[at + NEXT.len()..]);
                Some(&data[..at])
            }
            None => {
                rest = None;
                Some(data)
            }
        }
    })
}

/// Whether `bytes` hold a mark to fill in.
fn has_mark(bytes: &[u8]) -> bool {
    [CID_MARK, &TAG_MARK[..]]
        .iter()
        .any(|mark| bytes.windows(mark.len()).any(|w| w == *mark))
}

/// `bytes`, with the CID marks replaced by `session`'s CID if there is a session.
fn fill(bytes: &[u8], session: Option<&Session>) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if let Some(session) = session {
        replace(&mut out, CID_MARK, &session.cid.to_be_bytes());
    }
    out
}

/// Replaces every `mark` in `bytes` with `with`, of the same length.
fn replace(bytes: &mut [u8], mark: &[u8], with: &[u8]) {
    let mut at = 0;
    while let Some(window) = bytes.get_mut(at..at + mark.len()) {
        if window == mark {
            window.copy_from_slice(with);
            at += mark.len();
        } else {
            at += 1;
        }
    }
}

/// The whole frame of `kind` that `bytes` begin with, if they do, and its body.
fn frame_of(bytes: &[u8], kind: FrameKind) -> Option<(usize, &[u8])> {
    let header = FrameHeader::parse(bytes.first_chunk::<HEADER_LEN>()?).ok()?;
    let len = HEADER_LEN + header.body_len;
    (header.kind == kind).then_some((len, bytes.get(HEADER_LEN..len)?))
}

/// Puts the right tag in a HELLO at the start of `bytes` whose tag is the mark, with
/// `session`'s keys.
fn sign_hello(bytes: &mut [u8], session: Option<&Session>) {
    let (Some(session), Some((_, body))) = (session, frame_of(bytes, FrameKind::Hello)) else {
        return;
    };
    let Ok(h) = Hello::parse(body) else { return };
    if h.tag != *TAG_MARK {
        return;
    }
    let key = &session.keys.handshake.client;
    let signed = Hello::resume(h.cid, h.nonce, h.attempt, h.received, key);
    let at = HEADER_LEN + Hello::BODY_LEN - TAG_LEN;
    bytes[at..at + TAG_LEN].copy_from_slice(&signed.tag);
}

/// Puts the right tag in a CONFIRM at the start of `bytes` whose tag is the mark: over
/// `hello` and `answer`, with `session`'s keys.
fn sign_confirm(bytes: &mut [u8], hello: &Hello, answer: &Accepted, session: &Session) {
    let Some((_, body)) = frame_of(bytes, FrameKind::Confirm) else {
        return;
    };
    let Ok(c) = Confirm::parse(body) else { return };
    if c.tag != *TAG_MARK {
        return;
    }
    let signed = Confirm::new(hello, answer, &session.keys.handshake.client);
    let at = HEADER_LEN + Confirm::BODY_LEN - TAG_LEN;
    bytes[at..at + TAG_LEN].copy_from_slice(&signed.tag);
}

/// The session an acceptance of `hello` is for: a new one, with the keys its secret
/// gives, or `resumed`, the one the HELLO named.
fn accepted_session(
    hello: &Hello,
    answer: &Accepted,
    resumed: Option<&Session>,
) -> Option<Session> {
    if hello.cid == 0 {
        let keys = SessionKeys::derive(&answer.secret, &hello.nonce, Role::Client);
        return Some(Session {
            cid: answer.cid,
            keys,
        });
    }
    resumed.filter(|s| s.cid == answer.cid).cloned()
}

/// One connection: sends `bytes`, cut as `cuts` says, half-closes, reads what comes back
/// until the server closes or falls silent, and checks it. Marks are filled in from
/// `session`, those after a HELLO from its own ANSWER if that accepts. Returns the session
/// the server accepted on it, if it did.
fn connection(
    addr: SocketAddr,
    cuts: u8,
    bytes: &[u8],
    session: Option<Session>,
) -> Option<Session> {
    let mut sent = fill(bytes, session.as_ref());
    sign_hello(&mut sent, session.as_ref());
    let opening = Opening::of(&sent);
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to the server");
    stream.set_nodelay(true).expect("set TCP_NODELAY");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("set a write timeout");
    let mut response = Vec::new();
    match &opening {
        // The marks after this HELLO stand for the session its ANSWER accepts, if it does.
        Opening::Hello { hello, len } if has_mark(&bytes[*len..]) => {
            let len = *len;
            send(&mut stream, cuts, &sent[..len]);
            read(&mut stream, &mut response, true, true);
            if let Some(Answer::Accepted(a)) = whole_answer(&response) {
                if let Some(this) = accepted_session(hello, &a, session.as_ref()) {
                    let mut rest = fill(&bytes[len..], Some(&this));
                    sign_confirm(&mut rest, hello, &a, &this);
                    sent[len..].copy_from_slice(&rest);
                }
            }
            send(&mut stream, 0, &sent[len..]);
        }
        _ => send(&mut stream, cuts, &sent),
    }
    let _ = stream.shutdown(Shutdown::Write);
    let closed = read(&mut stream, &mut response, opening.needs_answer(), false);
    opening.check(
        &sent,
        &Response {
            bytes: response,
            closed,
        },
        session.as_ref(),
    )
}

/// Writes `bytes` in up to three pieces, cut as `cuts` says, with a pause between them.
fn send(stream: &mut TcpStream, cuts: u8, bytes: &[u8]) {
    let first = usize::from(cuts & 0x0f).min(bytes.len());
    let second = (first + 2 * usize::from(cuts >> 4)).min(bytes.len());
    let pieces = [&bytes[..first], &bytes[first..second], &bytes[second..]];
    let mut sent = false;
    for piece in pieces.into_iter().filter(|p| !p.is_empty()) {
        if sent {
            thread::sleep(PIECE_PAUSE);
        }
        // The server may have answered and hung up already: then stop sending.
        if stream.write_all(piece).is_err() {
            return;
        }
        sent = true;
    }
}

/// Reads into `bytes` until the server closes (then returns true) or falls silent: for
/// up to ANSWER_WAIT while an answer that must come has not begun, else for SILENCE.
/// With `one_frame`, stops as soon as `bytes` hold a whole frame.
fn read(stream: &mut TcpStream, bytes: &mut Vec<u8>, needs_answer: bool, one_frame: bool) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + ANSWER_WAIT;
    loop {
        if one_frame && frame_len(bytes).is_some_and(|len| bytes.len() >= len) {
            return false;
        }
        let wait = if bytes.is_empty() && needs_answer {
            deadline.saturating_duration_since(Instant::now())
        } else {
            SILENCE
        };
        if wait.is_zero() {
            return false;
        }
        stream
            .set_read_timeout(Some(wait))
            .expect("set a read timeout");
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => {
                bytes.extend_from_slice(&buf[..n]);
                assert!(
                    bytes.len() <= MAX_RESPONSE,
                    "the server sent more than {MAX_RESPONSE} bytes: {:02x?}",
                    &bytes[..64]
                );
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // A reset: the server closed with input unread.
            Err(_) => return true,
        }
    }
}

/// The length of the frame `bytes` begin with, once its header is there and parses.
fn frame_len(bytes: &[u8]) -> Option<usize> {
    let header = FrameHeader::parse(bytes.first_chunk::<HEADER_LEN>()?).ok()?;
    Some(HEADER_LEN + header.body_len)
}

/// The ANSWER `bytes` begin with, if it is all there and parses; checked in full later.
fn whole_answer(bytes: &[u8]) -> Option<Answer> {
    let body = bytes.get(HEADER_LEN..frame_len(bytes)?)?;
    Answer::parse(body).ok()
}

/// What the server sent back on one connection.
struct Response {
    bytes: Vec<u8>,
    /// Whether the server closed the connection (end of stream, or a reset), rather than
    /// fell silent.
    closed: bool,
}

/// What the input's first frame is to the server, and so what it must answer.
enum Opening {
    /// The bytes end before the first frame does: the server waits for the rest, sees the
    /// end of stream and hangs up without a word.
    Incomplete,
    /// Not a HELLO the server can read: foreign bytes, another version, another kind, an
    /// oversized or a short body. It must refuse it as a bad request.
    Foreign,
    /// A HELLO, `len` bytes of frame.
    Hello { hello: Hello, len: usize },
    /// A CONTROL frame (no body): the connection carries control datagrams from then on.
    /// Nothing the input holds authenticates, so the server sends nothing on it, and hangs
    /// up at the end of stream or on a length no datagram has.
    Control,
}

impl Opening {
    fn of(input: &[u8]) -> Opening {
        let Some((header, rest)) = input.split_first_chunk::<HEADER_LEN>() else {
            return Opening::Incomplete;
        };
        let header = match FrameHeader::parse(header) {
            Ok(header) if header.kind == FrameKind::Hello => header,
            Ok(header) if header.kind == FrameKind::Control && header.body_len == 0 => {
                return Opening::Control;
            }
            // A CONTROL with a body is malformed: the server refuses it once it has it.
            Ok(header) if header.kind == FrameKind::Control => {
                return match rest.get(..header.body_len) {
                    Some(_) => Opening::Foreign,
                    None => Opening::Incomplete,
                };
            }
            // The server judges the header as soon as it has it.
            _ => return Opening::Foreign,
        };
        let Some(body) = rest.get(..header.body_len) else {
            return Opening::Incomplete;
        };
        match Hello::parse(body) {
            Ok(hello) => Opening::Hello {
                hello,
                len: HEADER_LEN + header.body_len,
            },
            Err(_) => Opening::Foreign,
        }
    }

    fn needs_answer(&self) -> bool {
        !matches!(self, Opening::Incomplete | Opening::Control)
    }

    /// Checks the server's response to `input`, records the session the connection may
    /// claim, and returns the session the server accepted, if it did. `resumable` is the
    /// session the input's marks stood for.
    fn check(
        &self,
        input: &[u8],
        response: &Response,
        resumable: Option<&Session>,
    ) -> Option<Session> {
        let Some(answer) = parse_answer(&response.bytes) else {
            // Silence is only right for bytes that end inside their frame. (The server
            // answers a whole frame at once, and closes a handshake after
            // HANDSHAKE_TIMEOUT, far less than the ANSWER_WAIT it had.)
            assert!(
                !self.needs_answer(),
                "the server {} {} without an answer",
                if response.closed {
                    "hung up on"
                } else {
                    "sat on"
                },
                self.what()
            );
            return None;
        };
        match (self, answer) {
            (Opening::Control, answer) => {
                panic!("the server answered {answer:?} on a control connection")
            }
            (Opening::Incomplete, answer) => {
                panic!("the server answered {answer:?} to bytes that end inside their frame")
            }
            (Opening::Foreign, Answer::Refused(RefusalCode::BadRequest)) => {}
            (Opening::Foreign, answer) => {
                panic!("the server answered {answer:?} to a frame that is no HELLO")
            }
            (Opening::Hello { hello, len }, Answer::Accepted(a)) => {
                let cid = a.cid;
                if hello.cid == 0 {
                    assert!(
                        a.answers(hello, None),
                        "an opening answer without the nonce"
                    );
                    assert_ne!(a.secret, [0; SECRET_LEN], "an opening without a secret");
                } else {
                    // Only a HELLO with the right tag for the session it names resumes it.
                    let proven = resumable.is_some_and(|s| {
                        s.cid == hello.cid && hello.verify(&s.keys.handshake.client)
                    });
                    assert!(
                        proven,
                        "the server resumed session {cid} for an unproven {hello:?}"
                    );
                    assert_eq!(hello.cid, cid, "the server resumed another session");
                    assert_eq!(a.secret, [0; SECRET_LEN], "the secret travelled again");
                    let key = resumable.map(|s| &s.keys.handshake.server);
                    assert!(
                        a.answers(hello, key),
                        "a resuming answer that does not prove itself"
                    );
                    // The server's application never writes, so a resuming client can
                    // have received nothing: any other count is outside what was sent.
                    assert_eq!(
                        hello.received, 0,
                        "the server resumed session {cid} for a client that claims bytes \
                         of the 0 it sent"
                    );
                }
                let session = accepted_session(hello, &a, resumable)?;
                // The CONFIRM that follows, if any, as the server reads it (a longer body
                // is a later version's: the tag covers the canonical frame).
                let key = &session.keys.handshake.client;
                let confirmed = frame_of(&input[*len..], FrameKind::Confirm)
                    .and_then(|(_, body)| Confirm::parse(body).ok())
                    .is_some_and(|c| c.verify(hello, &a, key));
                if confirmed {
                    lock(&CLAIMED).insert(cid);
                }
                return Some(session);
            }
            (Opening::Hello { hello, .. }, Answer::Refused(reason)) => {
                let allowed: &[RefusalCode] = if hello.cid == 0 {
                    &[RefusalCode::Closed, RefusalCode::TooManySessions]
                } else {
                    &[RefusalCode::UnknownSession, RefusalCode::BadRequest]
                };
                assert!(
                    allowed.contains(&reason),
                    "the server refused {hello:?} for {reason:?}"
                );
            }
        }
        None
    }

    fn what(&self) -> &'static str {
        match self {
            Opening::Incomplete => "an incomplete frame",
            Opening::Foreign => "a frame that is no HELLO",
            Opening::Hello { .. } => "a HELLO",
            Opening::Control => "a CONTROL frame",
        }
    }
}

/// The one ANSWER frame in `bytes`, or `None` if it is empty; anything else is a failure.
fn parse_answer(bytes: &[u8]) -> Option<Answer> {
    if bytes.is_empty() {
        return None;
    }
    let (header, body) = bytes
        .split_first_chunk::<HEADER_LEN>()
        .unwrap_or_else(|| panic!("the server sent a partial header: {bytes:02x?}"));
    let header = FrameHeader::parse(header)
        .unwrap_or_else(|e| panic!("the server sent a bad header ({e}): {bytes:02x?}"));
    assert_eq!(
        header.kind,
        FrameKind::Answer,
        "the server sent {bytes:02x?}"
    );
    assert_eq!(
        body.len(),
        header.body_len,
        "the server sent more or less than one ANSWER: {bytes:02x?}"
    );
    let answer = Answer::parse(body)
        .unwrap_or_else(|e| panic!("the server sent a bad ANSWER ({e}): {bytes:02x?}"));
    Some(answer)
}
