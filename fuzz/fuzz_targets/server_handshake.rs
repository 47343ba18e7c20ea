//! The server's handshake state machine, driven for real: one `RServerSocket` on loopback
//! for the whole run, and for each input a plain TCP connection that sends the input's
//! bytes as a client would, in up to three pieces, then half-closes and reads what comes
//! back.
//!
//! Input: the first byte chooses where the bytes are cut (the low 4 bits: the first
//! piece's length; the high 4 bits: half the second's), the rest is what the client sends.
//!
//! What must hold, whatever the bytes:
//! - the server answers with nothing, or with exactly one well-formed ANSWER frame, and
//!   never with more;
//! - bytes that end before their first frame does get no answer; a first frame the server
//!   cannot read as a HELLO (a foreign protocol, another version, another kind, a short
//!   body) gets a refusal for a bad request; a HELLO gets an answer: an acceptance only of
//!   a new session or of the session it names, a refusal only for a reason that kind of
//!   HELLO can have;
//! - `accept` returns only sessions that an input claimed: one the server accepted in its
//!   ANSWER to that input, which carries the CID again after its header (in a CONFIRM, or
//!   in the HELLO that resumed it). Garbage never becomes a session.
//!
//! A panic on the library's engine thread aborts the run too (libFuzzer's panic hook), so a
//! bug there is a crash here. Every wait is bounded (connect, writes, reads), so an input
//! never hangs.
//!
//! Protocol API used (today's, v1): `FrameHeader::parse(&[u8; HEADER_LEN])` with `kind`
//! and `body_len`, `FrameKind`, `Hello::parse` (its `cid`), `Answer::parse`
//! (`Answer::Accepted { cid, .. }`, `Answer::Refused(RefusalCode)`), `HEADER_LEN`; and the
//! public `RServerSocket::bind_with`, `accept`, `local_addr`, `RSocket::session_id`,
//! `abort`, and `Config`'s `handshake_timeout`, `give_up_after`, `max_handshakes`.
#![no_main]

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use robust_tcp::protocol::handshake::{
    Answer, FrameHeader, FrameKind, Hello, RefusalCode, HEADER_LEN,
};
use robust_tcp::{Config, RServerSocket};

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
const SILENCE: Duration = Duration::from_millis(50);
/// The pause between two pieces of an input, so that the server reads them apart.
const PIECE_PAUSE: Duration = Duration::from_micros(200);
/// More than any answer: a server that sends this much is broken.
const MAX_RESPONSE: usize = 4096;

/// Sessions `accept` returned: their CIDs, until checked against `CLAIMED`.
static ACCEPTED: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// CIDs that an input may have confirmed or resumed (see the module's doc).
static CLAIMED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, input)) = data.split_first() else {
        return;
    };
    let opening = Opening::of(input);
    let response = exchange(server(), cuts, input, opening.needs_answer());
    opening.check(input, &response);
    // Every session `accept` returned so far was claimed by an input: the one that claims
    // a session gets its ANSWER before `accept` can return it, and was checked above.
    let claimed = lock(&CLAIMED);
    for cid in lock(&ACCEPTED).drain(..) {
        assert!(
            claimed.contains(&cid),
            "accept returned session {cid}, which no input confirmed or resumed"
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
                while let Ok((sock, _)) = socket.accept() {
                    lock(&ACCEPTED).push(sock.session_id());
                    // Free it at once: nobody will use it.
                    let _ = sock.abort();
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

/// What the server sent back on one connection.
struct Response {
    bytes: Vec<u8>,
    /// Whether the server closed the connection (end of stream, or a reset), rather than
    /// fell silent.
    closed: bool,
}

/// Sends `input` to the server over a new connection, cut as `cuts` says, half-closes,
/// and reads what comes back until the server closes or falls silent.
fn exchange(addr: SocketAddr, cuts: u8, input: &[u8], needs_answer: bool) -> Response {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to the server");
    stream.set_nodelay(true).expect("set TCP_NODELAY");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("set a write timeout");

    let first = usize::from(cuts & 0x0f).min(input.len());
    let second = (first + 2 * usize::from(cuts >> 4)).min(input.len());
    let pieces = [&input[..first], &input[first..second], &input[second..]];
    let mut sent = false;
    for piece in pieces.into_iter().filter(|p| !p.is_empty()) {
        if sent {
            thread::sleep(PIECE_PAUSE);
        }
        // The server may have answered and hung up already: then stop sending.
        if stream.write_all(piece).is_err() {
            break;
        }
        sent = true;
    }
    let _ = stream.shutdown(Shutdown::Write);

    let mut bytes = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + ANSWER_WAIT;
    let closed = loop {
        let wait = if bytes.is_empty() && needs_answer {
            deadline.saturating_duration_since(Instant::now())
        } else {
            SILENCE
        };
        if wait.is_zero() {
            break false;
        }
        stream
            .set_read_timeout(Some(wait))
            .expect("set a read timeout");
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => {
                bytes.extend_from_slice(&buf[..n]);
                assert!(
                    bytes.len() <= MAX_RESPONSE,
                    "the server sent more than {MAX_RESPONSE} bytes: {:02x?}",
                    &bytes[..64]
                );
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break false
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // A reset: the server closed with input unread.
            Err(_) => break true,
        }
    };
    Response { bytes, closed }
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
}

impl Opening {
    fn of(input: &[u8]) -> Opening {
        let Some((header, rest)) = input.split_first_chunk::<HEADER_LEN>() else {
            return Opening::Incomplete;
        };
        let header = match FrameHeader::parse(header) {
            Ok(header) if header.kind == FrameKind::Hello => header,
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
        !matches!(self, Opening::Incomplete)
    }

    /// Checks the server's response to `input`, and records the session it may claim.
    fn check(&self, input: &[u8], response: &Response) {
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
            return;
        };
        match (self, answer) {
            (Opening::Incomplete, answer) => {
                panic!("the server answered {answer:?} to bytes that end inside their frame")
            }
            (Opening::Foreign, Answer::Refused(RefusalCode::BadRequest)) => {}
            (Opening::Foreign, answer) => {
                panic!("the server answered {answer:?} to a frame that is no HELLO")
            }
            (Opening::Hello { hello, len }, Answer::Accepted { cid, .. }) => {
                assert!(
                    hello.cid == 0 || hello.cid == cid,
                    "the server accepted session {cid} for a HELLO that names session {}",
                    hello.cid
                );
                let wire = cid.to_be_bytes();
                if hello.cid == cid || input[*len..].windows(4).any(|w| w == wire) {
                    lock(&CLAIMED).insert(cid);
                }
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
    }

    fn what(&self) -> &'static str {
        match self {
            Opening::Incomplete => "an incomplete frame",
            Opening::Foreign => "a frame that is no HELLO",
            Opening::Hello { .. } => "a HELLO",
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
