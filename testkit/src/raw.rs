//! A client that speaks the handshake frame by frame, with std's `TcpStream` and the
//! protocol's own encoders: for tests that send what a real client would not (a HELLO cut
//! short, an opening retried by hand, a replay) or read what a real client keeps to itself
//! (the server's ANSWER).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use robust_tcp::protocol::auth::{SessionKeys, NONCE_LEN, SECRET_LEN};
use robust_tcp::protocol::handshake::{Accepted, Answer, FrameHeader, Hello, HEADER_LEN};
use robust_tcp::protocol::session::Role;

use crate::rng::Rng;

/// How long a raw client waits for the server's bytes.
pub const READ_BOUND: Duration = Duration::from_secs(10);

/// A session as its client opens it: the opening nonce and secret the client draws, and
/// the keys both sides derive from them.
pub struct RawOpening {
    /// The opening nonce: the same in every HELLO of the opening.
    pub opening_nonce: [u8; NONCE_LEN],
    /// The session secret.
    pub secret: [u8; SECRET_LEN],
    /// The client's keys.
    pub keys: SessionKeys,
}

impl RawOpening {
    /// A new session's opening, drawn from `rng`.
    pub fn new(rng: &mut Rng) -> RawOpening {
        let opening_nonce = random(rng);
        let secret = random(rng);
        RawOpening {
            opening_nonce,
            secret,
            keys: SessionKeys::derive(&secret, &opening_nonce, Role::Client),
        }
    }

    /// The opening HELLO of attempt number `attempt`, with a fresh client nonce.
    pub fn hello(&self, attempt: u64, rng: &mut Rng) -> Hello {
        let key = &self.keys.handshake.client;
        Hello::opening(random(rng), attempt, self.opening_nonce, self.secret, key)
    }

    /// The HELLO that resumes session `cid` by its CID, attempt `attempt`, having
    /// received `received` bytes.
    pub fn resume_hello(&self, cid: u32, attempt: u64, received: u32, rng: &mut Rng) -> Hello {
        let key = &self.keys.handshake.client;
        Hello::resume(cid, random(rng), attempt, received, key)
    }
}

/// `N` bytes from `rng`.
pub fn random<const N: usize>(rng: &mut Rng) -> [u8; N] {
    std::array::from_fn(|_| rng.next_u64() as u8)
}

/// A TCP connection to `server` whose reads give up after [`READ_BOUND`].
///
/// # Panics
///
/// If the connect fails.
pub fn connect(server: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(server).expect("connect to the server");
    stream
        .set_read_timeout(Some(READ_BOUND))
        .expect("set_read_timeout");
    stream.set_nodelay(true).expect("set_nodelay");
    stream
}

/// Reads one ANSWER frame.
///
/// # Panics
///
/// If the bytes are not a well-formed ANSWER.
pub fn read_answer(stream: &mut TcpStream) -> Answer {
    let mut header = [0u8; HEADER_LEN];
    stream
        .read_exact(&mut header)
        .expect("read the answer's header");
    let header = FrameHeader::parse(&header).expect("an answer header");
    let mut body = vec![0u8; header.body_len];
    stream
        .read_exact(&mut body)
        .expect("read the answer's body");
    Answer::parse(&body).expect("an answer")
}

/// Reads an ANSWER that must accept `hello`, and checks that it proves itself.
///
/// # Panics
///
/// If it refuses, or does not answer `hello` under `opening`'s keys.
pub fn read_acceptance(stream: &mut TcpStream, hello: &Hello, opening: &RawOpening) -> Accepted {
    match read_answer(stream) {
        Answer::Accepted(a) => {
            assert!(
                a.answers(hello, &opening.keys.handshake.server),
                "the answer does not prove itself"
            );
            a
        }
        refused => panic!("the server refused: {refused:?}"),
    }
}

/// Opens a raw session on `stream` (which must be new): sends the opening HELLO
/// (attempt 0) and `first_bytes` behind it, and reads the ANSWER.
pub fn open(
    stream: &mut TcpStream,
    opening: &RawOpening,
    first_bytes: &[u8],
    rng: &mut Rng,
) -> Accepted {
    let hello = opening.hello(0, rng);
    let mut frame = hello.encode().to_vec();
    frame.extend_from_slice(first_bytes);
    stream.write_all(&frame).expect("send the hello");
    read_acceptance(stream, &hello, opening)
}
