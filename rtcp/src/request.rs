//! The request header: the first bytes of every session an rtcp client opens, saying
//! where the server should relay it, and the server's reply, which says whether it did
//! and, if not, why.
//!
//! ```text
//! request (client to server), at the start of the session's byte stream (inside TLS,
//! right after its handshake, unless --insecure-plaintext):
//!   4  magic "RTCP"
//!   1  version, 2
//!   1  kind: 0 FORWARD (the server's --forward target), 1 CONNECT (a SOCKS request)
//!   CONNECT only, as SOCKS5 encodes an address:
//!   1  address type: 1 IPv4, 3 domain name, 4 IPv6
//!   n  4 bytes; a length byte and 1 to 255 bytes of host name; 16 bytes
//!   2  port, big-endian
//! reply (server to client), to every request, before the target's first byte:
//!   4  magic "RTCP"
//!   1  version, 2
//!   1  status: a SOCKS5 reply code (0 connected, 2 not allowed, 4 host unreachable,
//!      5 refused, 1 anything else)
//!   status other than 0 only:
//!   1  length of the reason
//!   n  the reason, UTF-8 (at most 255 bytes, cut at a character boundary)
//! ```
//!
//! The program's first bytes follow the request at once, without waiting for the reply;
//! after a successful reply the session carries the target's bytes unchanged, after a
//! failure the server closes it. A request is at most 265 bytes; the server reads it
//! under [`HEADER_LIMIT`]. A server that reads another magic or version resets the
//! session, and a client that does gives up the session: the peer is not a compatible
//! rtcp.

use std::fmt;
use std::io::{self, Read, Write};
use std::time::Duration;

use crate::secure;
use crate::socks::{array, byte, BadAddress, Reply, Target};

/// The magic that opens a request and a reply.
const MAGIC: [u8; 4] = *b"RTCP";
/// The version of the header this rtcp speaks. 2 added the reply to FORWARD and the
/// failure's reason (nothing released spoke 1).
const VERSION: u8 = 2;
/// The request kinds.
const FORWARD: u8 = 0;
const CONNECT: u8 = 1;

/// How long a server waits for a request's bytes, and a client for a reply. A client
/// writes its request with the session's opening, so it comes within a round trip unless
/// the network is cut; the reply waits for the server's connect to the target (at most
/// 10 s per address).
pub const HEADER_LIMIT: Duration = Duration::from_secs(30);

/// Where a client asks the server to relay a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// To the server's `--forward` target.
    Forward,
    /// To this target, if the server's `--allow` lets it.
    Connect(Target),
}

impl Request {
    /// The request's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = header();
        match self {
            Request::Forward => out.push(FORWARD),
            Request::Connect(target) => {
                out.push(CONNECT);
                target.encode(&mut out);
            }
        }
        out
    }

    /// Reads a request from the start of a session.
    pub fn read_from(r: &mut impl Read) -> Result<Request, BadHeader> {
        check_header(r)?;
        match byte(r)? {
            FORWARD => Ok(Request::Forward),
            CONNECT => Target::read_from(r)
                .map(Request::Connect)
                .map_err(BadHeader::Address),
            kind => Err(BadHeader::Kind(kind)),
        }
    }
}

/// The server's reason for not relaying a session to its target (a failed reply), and
/// the reply's status. Carried inside the `io::Error` that [`read_success`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetFailed {
    /// The reply's status: a SOCKS5 reply code other than [`Reply::Succeeded`].
    pub status: Reply,
    /// The server's words.
    pub reason: String,
}

impl fmt::Display for TargetFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for TargetFailed {}

/// Sends the reply that says the target's bytes follow.
pub fn write_success(w: &mut impl Write) -> io::Result<()> {
    let mut out = header();
    out.push(Reply::Succeeded.code());
    w.write_all(&out)
}

/// Sends the reply that says the session is not relayed: `status` (not
/// [`Reply::Succeeded`]) and `reason`, cut to 255 bytes at a character boundary.
pub fn write_failure(w: &mut impl Write, status: Reply, reason: &str) -> io::Result<()> {
    let mut end = reason.len().min(usize::from(u8::MAX));
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = header();
    out.push(status.code());
    // `end` is at most 255.
    out.push(end as u8);
    out.extend_from_slice(&reason.as_bytes()[..end]);
    w.write_all(&out)
}

/// Reads the server's reply: `Ok` if the target's bytes follow, or the failure the
/// server sent.
pub fn read_reply(r: &mut impl Read) -> Result<Result<(), TargetFailed>, BadHeader> {
    check_header(r)?;
    let code = byte(r)?;
    let status = Reply::from_code(code).ok_or(BadHeader::Status(code))?;
    if status == Reply::Succeeded {
        return Ok(Ok(()));
    }
    let mut reason = vec![0u8; usize::from(byte(r)?)];
    r.read_exact(&mut reason)?;
    let reason = String::from_utf8_lossy(&reason).into_owned();
    Ok(Err(TargetFailed { status, reason }))
}

/// [`read_reply`] as one `io::Error` for the sides that relay a FORWARD: a failure is
/// `ConnectionRefused` carrying its [`TargetFailed`], a reply that cannot be read is the
/// session's error, or `InvalidData` for bytes that are no reply.
pub fn read_success(r: &mut impl Read) -> io::Result<()> {
    match read_reply(r) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(failed)) => Err(io::Error::new(io::ErrorKind::ConnectionRefused, failed)),
        Err(BadHeader::Io(e)) => Err(e),
        Err(bad) => Err(io::Error::new(io::ErrorKind::InvalidData, bad.to_string())),
    }
}

/// Why a header could not be read.
#[derive(Debug)]
pub enum BadHeader {
    /// The session failed or ended, or the time limit passed.
    Io(io::Error),
    /// Not rtcp's magic: not rtcp at all.
    Magic([u8; 4]),
    /// rtcp's magic, another version: both ends must run an rtcp with the same version.
    Version(u8),
    /// An unknown request kind.
    Kind(u8),
    /// A CONNECT's address is malformed.
    Address(BadAddress),
    /// A reply status that is no SOCKS5 reply code.
    Status(u8),
}

impl From<io::Error> for BadHeader {
    fn from(e: io::Error) -> Self {
        BadHeader::Io(e)
    }
}

impl fmt::Display for BadHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadHeader::Io(e) => write!(f, "no request header: {e}"),
            BadHeader::Magic(bytes) if secure::looks_like_tls(bytes) => write!(
                f,
                "the peer speaks TLS and this rtcp runs with --insecure-plaintext: {}",
                secure::MISMATCH_FIX
            ),
            BadHeader::Magic(bytes) => write!(
                f,
                "the peer is not a compatible rtcp (its first bytes are {bytes:?}, not \"RTCP\")"
            ),
            BadHeader::Version(version) => write!(
                f,
                "the peer is not a compatible rtcp (it speaks header version {version}, this \
                 rtcp {VERSION}: run the same rtcp release at both ends)"
            ),
            BadHeader::Kind(kind) => write!(f, "unknown request kind {kind}"),
            BadHeader::Address(bad) => write!(f, "bad CONNECT address: {bad}"),
            BadHeader::Status(code) => write!(f, "unknown reply status {code}"),
        }
    }
}

/// The magic and the version.
fn header() -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.push(VERSION);
    out
}

/// Reads the magic and the version, and checks them.
fn check_header(r: &mut impl Read) -> Result<(), BadHeader> {
    let [m0, m1, m2, m3, version] = array::<5>(r)?;
    let magic = [m0, m1, m2, m3];
    if magic != MAGIC {
        return Err(BadHeader::Magic(magic));
    }
    if version != VERSION {
        return Err(BadHeader::Version(version));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socks::Host;

    #[test]
    fn requests_round_trip() {
        let requests = [
            Request::Forward,
            Request::Connect(Target {
                host: Host::Name("db.example".into()),
                port: 5432,
            }),
            Request::Connect(Target {
                host: Host::Ip("::1".parse().unwrap()),
                port: 22,
            }),
        ];
        for request in requests {
            let bytes = request.encode();
            assert_eq!(bytes[..6], [b'R', b'T', b'C', b'P', 2, bytes[5]]);
            let read = Request::read_from(&mut &bytes[..]).expect("reads back");
            assert_eq!(read, request);
        }
        assert_eq!(Request::Forward.encode(), b"RTCP\x02\x00");
    }

    #[test]
    fn a_success_is_the_header_and_the_stream_follows() {
        let mut wire = Vec::new();
        write_success(&mut wire).unwrap();
        assert_eq!(wire, b"RTCP\x02\x00");
        wire.extend_from_slice(b"PONG");
        let mut input = &wire[..];
        assert_eq!(read_reply(&mut input).unwrap(), Ok(()));
        assert_eq!(input, b"PONG");
    }

    #[test]
    fn a_failure_carries_its_code_and_reason() {
        let reason = "target 127.0.0.1:6379 refused the connection";
        let mut wire = Vec::new();
        write_failure(&mut wire, Reply::ConnectionRefused, reason).unwrap();
        let mut expected = b"RTCP\x02\x05".to_vec();
        expected.push(reason.len() as u8);
        expected.extend_from_slice(reason.as_bytes());
        assert_eq!(wire, expected);
        let failed = TargetFailed {
            status: Reply::ConnectionRefused,
            reason: reason.into(),
        };
        assert_eq!(read_reply(&mut &wire[..]).unwrap(), Err(failed.clone()));
        let e = read_success(&mut &wire[..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(e.to_string(), reason);
        let inner = e.get_ref().and_then(|e| e.downcast_ref::<TargetFailed>());
        assert_eq!(inner, Some(&failed));
    }

    #[test]
    fn a_long_reason_is_cut_at_a_character() {
        let reason = "é".repeat(200);
        let mut wire = Vec::new();
        write_failure(&mut wire, Reply::GeneralFailure, &reason).unwrap();
        assert_eq!(wire[6], 254);
        assert_eq!(wire.len(), 7 + 254);
        let e = read_success(&mut &wire[..]).unwrap_err();
        assert_eq!(e.to_string(), "é".repeat(127));
    }

    #[test]
    fn malformed_headers_are_refused() {
        let cases: [&[u8]; 6] = [
            b"",
            b"RTC",
            b"GET / HTTP/1.1\r\n",
            b"RTCP\x02\x07",
            b"RTCP\x02\x01\x09",
            b"RTCP\x01\x00",
        ];
        for bytes in cases {
            assert!(Request::read_from(&mut &bytes[..]).is_err(), "{bytes:?}");
        }
        assert!(matches!(
            read_reply(&mut &b"RTCP\x02\x06"[..]),
            Err(BadHeader::Status(6))
        ));
        // A failure cut short, and an rtcp that speaks version 1, named as such.
        assert!(matches!(
            read_reply(&mut &b"RTCP\x02\x05\x03ab"[..]),
            Err(BadHeader::Io(_))
        ));
        let old = read_reply(&mut &b"RTCP\x01\x00"[..]).unwrap_err();
        assert!(matches!(old, BadHeader::Version(1)), "{old:?}");
        assert!(
            old.to_string().contains("header version 1, this rtcp 2"),
            "{old}"
        );
        let e = read_success(&mut &b"RTCP\x01\x00"[..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic, a request read is at most 265 bytes and a reply
        /// at most 262.
        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut rest = &bytes[..];
            if Request::read_from(&mut rest).is_ok() {
                proptest::prop_assert!(bytes.len() - rest.len() <= 265);
            }
            let mut rest = &bytes[..];
            if read_reply(&mut rest).is_ok() {
                proptest::prop_assert!(bytes.len() - rest.len() <= 262);
            }
        }
    }
}
