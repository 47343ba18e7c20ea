//! The server's handshake state machine, driven for real: one `RServerSocket` on loopback
//! for the whole run, and for each input up to four plain TCP connections, one after the
//! other, each of which sends its bytes as a client would, half-closes and reads what comes
//! back.
//!
//! Input: the connections' bytes, separated by `|NEXT|`. Of each, the first byte chooses
//! where the rest is cut into pieces (the low 4 bits: the first piece's length; the high 4
//! bits: half the second's), and the rest is what the client sends. In it, `CID?` stands
//! for the CID of the latest session the server accepted in this input;
//! `OPENING?????????` for an opening nonce of this input's own (fresh for each input, the
//! same in all its connections, so that an input can open a session and retry its
//! opening); and `TAG?????????????` in the tag field of a HELLO or a CONFIRM for the right
//! tag, which the harness computes: an opening HELLO's with the keys of the secret and
//! opening nonce it carries, a reconnection HELLO's and a CONFIRM's with the keys of the
//! latest session (a CONFIRM's over its connection's HELLO and ANSWER). So an input can
//! open a session, then resume it by its CID or retry its opening on another connection,
//! with the CID the server chose at random. Marks after a HELLO are filled from that
//! HELLO's own ANSWER if it accepts: the client sends the HELLO, reads the ANSWER, then
//! sends the rest.
//!
//! What must hold, whatever the bytes:
//! - the server answers with nothing, or with exactly one well-formed ANSWER frame, and
//!   never with more;
//! - bytes that end before their first frame does get no answer; a first frame the server
//!   cannot read as a HELLO (a foreign protocol, another version, another kind, a short
//!   body) gets a refusal for a bad request; a HELLO gets an answer, which proves itself
//!   (echoes the HELLO's nonce, tagged with the session's server key);
//! - an opening HELLO is accepted only if its opening part is there and its tag is right
//!   for the keys it carries (else it is refused as a bad request); it opens a session
//!   (from byte 0, as connection number `attempt`) only if its opening nonce opened none
//!   before in this input, and resumes one only if that session was opened with its
//!   opening nonce and the attempt is not the first; an opening nonce never used before is
//!   refused, if at all, only for lack of room;
//! - a reconnection HELLO resumes only the session it names, and only when its tag is
//!   right for that session, with a count of bytes received that the server sent (0: its
//!   application never writes); a refusal only for a reason that kind of HELLO can have;
//! - `accept` returns only sessions that a connection opened: the server opened it in its
//!   ANSWER on that connection. Garbage never becomes a session, and neither does a HELLO
//!   without its proof.
//!
//! A panic on the library's engine thread aborts the run too (libFuzzer's panic hook), so a
//! bug there is a crash here. Every wait is bounded (connect, writes, reads), so an input
//! never hangs.
//!
//! Protocol API used: `FrameHeader::parse(&[u8; HEADER_LEN])` with `kind` and
//! `body_len`, `FrameKind`, `Hello::parse`, `Hello::signed`, `Hello::verify`,
//! `Hello::opening_part_is_consistent`, `Answer::parse`, `Accepted::answers`,
//! `Confirm::new`, `SessionKeys::derive`, `HEADER_LEN`; and the public `RServerSocket::bind_with`, `accept`, `local_addr`,
//! `RSocket::session_id`, `abort`, and `Config`'s `handshake_timeout`, `give_up_after`,
//! `max_handshakes`.
#![no_main]

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use robust_tcp::protocol::auth::{SessionKeys, NONCE_LEN, TAG_LEN};
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
/// Stands for the input's own opening nonce.
const OPENING_MARK: &[u8; NONCE_LEN] = b"OPENING?????????";
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
/// CIDs of the sessions the server opened in an ANSWER (see the module's doc).
static CLAIMED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());
/// The session the server last opened with each opening nonce.
static OPENED: Mutex<Option<HashMap<[u8; NONCE_LEN], u32>>> = Mutex::new(None);
/// Counts the inputs, for their own opening nonces.
static INPUTS: AtomicU64 = AtomicU64::new(0);

/// A session the server accepted, as its ANSWER named it, with the keys the client
/// derived.
#[derive(Clone)]
struct Session {
    cid: u32,
    keys: SessionKeys,
}

fuzz_target!(|data: &[u8]| {
    let addr = server();
    let mut input = Input {
        session: None,
        opening_nonce: input_nonce(),
        opened: BTreeSet::new(),
    };
    for part in parts(data).take(MAX_CONNECTIONS) {
        let Some((&cuts, bytes)) = part.split_first() else {
            continue;
        };
        if let Some(session) = connection(addr, cuts, bytes, &mut input) {
            input.session = Some(session);
        }
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

/// What the connections of one input share.
struct Input {
    /// The latest session the server accepted (the marks stand for it).
    session: Option<Session>,
    /// This input's opening nonce (`OPENING_MARK` stands for it).
    opening_nonce: [u8; NONCE_LEN],
    /// The opening nonces the server opened a session with, in this input.
    opened: BTreeSet<[u8; NONCE_LEN]>,
}

/// An opening nonce no other input of the run has, and never the mark.
fn input_nonce() -> [u8; NONCE_LEN] {
    let n = INPUTS.fetch_add(1, Ordering::Relaxed);
    let mut nonce = [0x6e; NONCE_LEN];
    nonce[..8].copy_from_slice(&n.to_be_bytes());
    nonce
}

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

/// `bytes`, with the opening nonce marks replaced by `opening_nonce`, and the CID marks
/// by `session`'s CID if there is a session.
fn fill(bytes: &[u8], session: Option<&Session>, opening_nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    replace(&mut out, OPENING_MARK, opening_nonce);
    if let Some(session) = session {
        replace(&mut out, CID_MARK, &session.cid.to_be_bytes());
    }
    out
}

/// The client's keys of the session an opening HELLO opens, from the secret and opening
/// nonce it carries.
fn opening_keys(hello: &Hello) -> SessionKeys {
    SessionKeys::derive(&hello.secret, &hello.opening_nonce, Role::Client)
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

/// Puts the right tag in a HELLO at the start of `bytes` whose tag is the mark: an opening
/// HELLO's with the keys it carries, another's with `session`'s keys.
fn sign_hello(bytes: &mut [u8], session: Option<&Session>) {
    let Some((_, body)) = frame_of(bytes, FrameKind::Hello) else {
        return;
    };
    let Ok(h) = Hello::parse(body) else { return };
    if h.tag != *TAG_MARK {
        return;
    }
    let keys = match (h.cid, session) {
        (0, _) => opening_keys(&h),
        (_, Some(session)) => session.keys.clone(),
        (_, None) => return,
    };
    let signed = h.signed(&keys.handshake.client);
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

/// The session an acceptance of `hello` is for: an opening's (opened, or found by its
/// opening nonce), with the keys the HELLO carries, or `resumed`, the one the HELLO named.
fn accepted_session(
    hello: &Hello,
    answer: &Accepted,
    resumed: Option<&Session>,
) -> Option<Session> {
    if hello.cid == 0 {
        return Some(Session {
            cid: answer.cid,
            keys: opening_keys(hello),
        });
    }
    resumed.filter(|s| s.cid == answer.cid).cloned()
}

/// One connection: sends `bytes`, cut as `cuts` says, half-closes, reads what comes back
/// until the server closes or falls silent, and checks it. Marks are filled in from
/// `session`, those after a HELLO from its own ANSWER if that accepts. Returns the session
/// the server accepted on it, if it did.
fn connection(addr: SocketAddr, cuts: u8, bytes: &[u8], input: &mut Input) -> Option<Session> {
    let session = input.session.clone();
    let bytes = &fill(bytes, None, &input.opening_nonce)[..];
    let mut sent = fill(bytes, session.as_ref(), &input.opening_nonce);
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
                    let mut rest = fill(&bytes[len..], Some(&this), &input.opening_nonce);
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
        &Response {
            bytes: response,
            closed,
        },
        session.as_ref(),
        &mut input.opened,
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

    /// Checks the server's response, records the session it opened, and returns the
    /// session the server accepted, if it did. `resumable` is the session the input's
    /// marks stood for; `opened` the opening nonces of the sessions this input opened.
    fn check(
        &self,
        response: &Response,
        resumable: Option<&Session>,
        opened: &mut BTreeSet<[u8; NONCE_LEN]>,
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
            (Opening::Hello { hello, .. }, Answer::Accepted(a)) => {
                let cid = a.cid;
                assert!(
                    hello.opening_part_is_consistent(),
                    "the server accepted {hello:?}, whose opening part is wrong"
                );
                // The server's count: its application never writes, so a client can have
                // received nothing: any other count is outside what was sent.
                assert_eq!(
                    hello.received, 0,
                    "the server accepted session {cid} for a client that claims bytes of \
                     the 0 it sent"
                );
                if hello.cid == 0 {
                    let keys = opening_keys(hello);
                    assert!(
                        hello.verify(&keys.handshake.client),
                        "the server accepted an opening whose tag is wrong: {hello:?}"
                    );
                    assert!(
                        a.answers(hello, &keys.handshake.server),
                        "an opening answer that does not prove itself"
                    );
                    let mut by_nonce = lock(&OPENED);
                    let by_nonce = by_nonce.get_or_insert_with(HashMap::new);
                    if a.opened {
                        assert_eq!(
                            (a.received, a.epoch),
                            (0, hello.attempt as u32),
                            "a new session that does not start afresh"
                        );
                        assert!(
                            opened.insert(hello.opening_nonce),
                            "a second session opened with one opening nonce: {hello:?}"
                        );
                        by_nonce.insert(hello.opening_nonce, cid);
                        lock(&CLAIMED).insert(cid);
                    } else {
                        assert_eq!(
                            by_nonce.get(&hello.opening_nonce),
                            Some(&cid),
                            "a retried opening resumed a session not opened with its nonce"
                        );
                        assert!(hello.attempt > 0, "the first opening resumed a session");
                    }
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
                    assert!(!a.opened, "the server opened a session for a reconnection");
                    let key = resumable.map(|s| &s.keys.handshake.server);
                    assert!(
                        key.is_some_and(|key| a.answers(hello, key)),
                        "a resuming answer that does not prove itself"
                    );
                }
                return accepted_session(hello, &a, resumable);
            }
            (Opening::Hello { hello, .. }, Answer::Refused(reason)) => {
                let proven = hello.opening_part_is_consistent()
                    && hello.verify(&opening_keys(hello).handshake.client);
                let fresh = !lock(&OPENED)
                    .as_ref()
                    .is_some_and(|n| n.contains_key(&hello.opening_nonce));
                let allowed: &[RefusalCode] = match (hello.cid, proven, fresh) {
                    // A new session, whose client has received nothing: refused only for
                    // lack of room.
                    (0, true, true) if hello.received == 0 => {
                        &[RefusalCode::Closed, RefusalCode::TooManySessions]
                    }
                    (0, true, true) => &[RefusalCode::BadRequest],
                    // A retry (with a count, checked), a copy, or a session that ended
                    // before its client knew it.
                    (0, true, false) => &[
                        RefusalCode::Closed,
                        RefusalCode::TooManySessions,
                        RefusalCode::UnknownSession,
                        RefusalCode::BadRequest,
                    ],
                    (0, false, _) => &[RefusalCode::BadRequest],
                    _ => &[RefusalCode::UnknownSession, RefusalCode::BadRequest],
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
