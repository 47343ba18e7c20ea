//! The request header: the first bytes of every session an rtcp client opens, saying
//! where the server should relay it, and the server's reply to a CONNECT.
//!
//! ```text
//! request (client to server), at the start of the session's byte stream:
//!   4  magic "RTCP"
//!   1  version, 1
//!   1  kind: 0 FORWARD (the server's --forward target), 1 CONNECT (a SOCKS request)
//!   CONNECT only, as SOCKS5 encodes an address:
//!   1  address type: 1 IPv4, 3 domain name, 4 IPv6
//!   n  4 bytes; a length byte and 1 to 255 bytes of host name; 16 bytes
//!   2  port, big-endian
//! reply (server to client), to a CONNECT only, before the target's first byte:
//!   4  magic "RTCP"
//!   1  version, 1
//!   1  status: a SOCKS5 reply code (0 connected, 2 not allowed, 4 host unreachable,
//!      5 refused, 1 anything else)
//! ```
//!
//! A FORWARD gets no reply: the program's first bytes follow the header at once, and the
//! target's first bytes come back as they would without rtcp. A request is at most 265
//! bytes; the server reads it under [`HEADER_LIMIT`]. A server that reads another magic or
//! version resets the session: the client is not a compatible rtcp.

use std::fmt;
use std::io::{self, Read, Write};
use std::time::Duration;

use crate::socks::{array, byte, BadAddress, Reply, Target};

/// The magic that opens a request and a reply.
const MAGIC: [u8; 4] = *b"RTCP";
/// The version of the header this rtcp speaks.
const VERSION: u8 = 1;
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

/// Sends the reply to a CONNECT.
pub fn write_reply(w: &mut impl Write, status: Reply) -> io::Result<()> {
    let mut out = header();
    out.push(status.code());
    w.write_all(&out)
}

/// Reads the reply to a CONNECT.
pub fn read_reply(r: &mut impl Read) -> Result<Reply, BadHeader> {
    check_header(r)?;
    let code = byte(r)?;
    Reply::from_code(code).ok_or(BadHeader::Status(code))
}

/// Why a header could not be read.
#[derive(Debug)]
pub enum BadHeader {
    /// The session failed or ended, or the time limit passed.
    Io(io::Error),
    /// Not rtcp's magic and version: another rtcp version, or not rtcp at all.
    Magic([u8; 5]),
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
            BadHeader::Magic(bytes) => write!(
                f,
                "the peer is not a compatible rtcp (its first bytes are {bytes:?}, not \"RTCP\" and version {VERSION})"
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
    let bytes = array::<5>(r)?;
    if bytes[..4] != MAGIC || bytes[4] != VERSION {
        return Err(BadHeader::Magic(bytes));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socks::Host;

    #[test]
    fn requests_and_replies_round_trip() {
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
            assert_eq!(bytes[..6], [b'R', b'T', b'C', b'P', 1, bytes[5]]);
            let read = Request::read_from(&mut &bytes[..]).expect("reads back");
            assert_eq!(read, request);
        }
        assert_eq!(Request::Forward.encode(), b"RTCP\x01\x00");
        let mut reply = Vec::new();
        write_reply(&mut reply, Reply::NotAllowed).unwrap();
        assert_eq!(reply, b"RTCP\x01\x02");
        assert_eq!(read_reply(&mut &reply[..]).unwrap(), Reply::NotAllowed);
    }

    #[test]
    fn malformed_headers_are_refused() {
        let cases: [&[u8]; 6] = [
            b"",
            b"RTC",
            b"GET / HTTP/1.1\r\n",
            b"RTCP\x02\x00",
            b"RTCP\x01\x07",
            b"RTCP\x01\x01\x09",
        ];
        for bytes in cases {
            assert!(Request::read_from(&mut &bytes[..]).is_err(), "{bytes:?}");
        }
        assert!(matches!(
            read_reply(&mut &b"RTCP\x01\x06"[..]),
            Err(BadHeader::Status(6))
        ));
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic, and a request read is at most 265 bytes.
        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut rest = &bytes[..];
            if Request::read_from(&mut rest).is_ok() {
                proptest::prop_assert!(bytes.len() - rest.len() <= 265);
            }
            let _ = read_reply(&mut &bytes[..]);
        }
    }
}
