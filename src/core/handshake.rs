//! The handshake frames sent on a new TCP connection before any application byte.
//!
//! Every frame has an 8-byte header (`magic`, `version`, `kind`, body length) and a body.
//! A decoder accepts a body longer than it knows and ignores the rest, so a later version can
//! append a field (authentication, say) without breaking this one. See `docs/PROTOCOL.md`.

use byteorder::{BigEndian, ByteOrder};

use super::WireError;

/// The first four bytes of every handshake frame: "RTCP".
pub const MAGIC: [u8; 4] = *b"RTCP";
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Length of the frame header.
pub const HEADER_LEN: usize = 8;
/// The longest body a decoder accepts; anything longer is not a robust-tcp peer.
pub const MAX_BODY_LEN: usize = 1024;

/// The kinds of handshake frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// Client to server: open a session (CID 0) or resume one.
    Hello = 1,
    /// Server to client: accept (with the CID) or refuse.
    Answer = 2,
    /// Client to server: the client has the CID; the new session may be accepted.
    Confirm = 3,
}

/// A decoded frame header: what follows and how long it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the body is.
    pub kind: FrameKind,
    /// How many body bytes follow the header.
    pub body_len: usize,
}

impl FrameHeader {
    /// Decodes the 8 header bytes.
    ///
    /// # Errors
    ///
    /// [`WireError::NotRobust`] when the magic is wrong (the peer speaks another protocol),
    /// [`WireError::Version`] for another version, [`WireError::Malformed`] for a short
    /// header, an unknown kind or an oversized body.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let header = bytes
            .get(..HEADER_LEN)
            .ok_or(WireError::Malformed("short header"))?;
        if header[..4] != MAGIC {
            return Err(WireError::NotRobust);
        }
        if header[4] != VERSION {
            return Err(WireError::Version(header[4]));
        }
        let kind = match header[5] {
            1 => FrameKind::Hello,
            2 => FrameKind::Answer,
            3 => FrameKind::Confirm,
            _ => return Err(WireError::Malformed("unknown handshake frame kind")),
        };
        let body_len = usize::from(BigEndian::read_u16(&header[6..8]));
        if body_len > MAX_BODY_LEN {
            return Err(WireError::Malformed("handshake body too long"));
        }
        Ok(FrameHeader { kind, body_len })
    }
}

fn frame(kind: FrameKind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind as u8);
    let len = u16::try_from(body.len()).expect("handshake bodies are a few bytes");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Client to server, first frame on every TCP connection of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The client's UDP control port.
    pub control_port: u16,
    /// 0 to open a new session; the session's CID to resume it.
    pub cid: u32,
    /// The session's secret from the server's answer (0 when opening): a reconnection must
    /// present it, so a client never joins a session that is not its own.
    pub token: u64,
    /// Bytes the client has received in this session (wrapping at 2^32).
    pub received: u32,
}

const HELLO_LEN: usize = 18;

impl Hello {
    /// The whole frame, header included.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = [0u8; HELLO_LEN];
        BigEndian::write_u16(&mut body[0..2], self.control_port);
        BigEndian::write_u32(&mut body[2..6], self.cid);
        BigEndian::write_u64(&mut body[6..14], self.token);
        BigEndian::write_u32(&mut body[14..18], self.received);
        frame(FrameKind::Hello, &body)
    }

    /// Decodes a hello body (the bytes after the header).
    ///
    /// # Errors
    ///
    /// [`WireError::Malformed`] if the body is too short.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let b = body
            .get(..HELLO_LEN)
            .ok_or(WireError::Malformed("short hello"))?;
        Ok(Hello {
            control_port: BigEndian::read_u16(&b[0..2]),
            cid: BigEndian::read_u32(&b[2..6]),
            token: BigEndian::read_u64(&b[6..14]),
            received: BigEndian::read_u32(&b[14..18]),
        })
    }
}

/// Why a server refused a hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The server no longer accepts new sessions (permanent).
    Closed = 1,
    /// The server holds `max_sessions` sessions already (temporary: retry later).
    TooManySessions = 2,
    /// The CID and token name no session of this server: it restarted, or the session
    /// ended (permanent).
    UnknownSession = 3,
    /// The hello made no sense for the session (a byte count outside what was sent).
    BadRequest = 4,
}

impl Refusal {
    /// Whether the client should try again later.
    pub fn is_temporary(self) -> bool {
        self == Refusal::TooManySessions
    }

    fn from_code(code: u8) -> Result<Self, WireError> {
        match code {
            1 => Ok(Refusal::Closed),
            2 => Ok(Refusal::TooManySessions),
            3 => Ok(Refusal::UnknownSession),
            4 => Ok(Refusal::BadRequest),
            _ => Err(WireError::Malformed("unknown refusal reason")),
        }
    }
}

/// Server to client: the answer to a hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The session is open (or resumed).
    Accepted {
        /// The session's CID (never 0).
        cid: u32,
        /// The session's secret, to present when reconnecting.
        token: u64,
        /// The server's UDP control port.
        control_port: u16,
        /// Bytes the server has received in this session (wrapping at 2^32).
        received: u32,
        /// The number of this TCP connection in the session (0 for the first); control
        /// messages about a connection name it.
        epoch: u32,
    },
    /// The hello was refused; the wire carries CID 0 and the reason.
    Refused(Refusal),
}

const ANSWER_LEN: usize = 23;

impl Answer {
    /// The whole frame, header included.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = [0u8; ANSWER_LEN];
        match *self {
            Answer::Accepted {
                cid,
                token,
                control_port,
                received,
                epoch,
            } => {
                BigEndian::write_u32(&mut body[0..4], cid);
                BigEndian::write_u16(&mut body[5..7], control_port);
                BigEndian::write_u64(&mut body[7..15], token);
                BigEndian::write_u32(&mut body[15..19], received);
                BigEndian::write_u32(&mut body[19..23], epoch);
            }
            Answer::Refused(reason) => body[4] = reason as u8,
        }
        frame(FrameKind::Answer, &body)
    }

    /// Decodes an answer body.
    ///
    /// # Errors
    ///
    /// [`WireError::Malformed`] if the body is too short, accepts with CID 0, or refuses
    /// with an unknown reason.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let b = body
            .get(..ANSWER_LEN)
            .ok_or(WireError::Malformed("short answer"))?;
        let cid = BigEndian::read_u32(&b[0..4]);
        let reason = b[4];
        if cid == 0 {
            return Refusal::from_code(reason).map(Answer::Refused);
        }
        if reason != 0 {
            return Err(WireError::Malformed("answer both accepts and refuses"));
        }
        Ok(Answer::Accepted {
            cid,
            control_port: BigEndian::read_u16(&b[5..7]),
            token: BigEndian::read_u64(&b[7..15]),
            received: BigEndian::read_u32(&b[15..19]),
            epoch: BigEndian::read_u32(&b[19..23]),
        })
    }
}

/// Client to server, after an accepting answer to an opening hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Confirm {
    /// The CID the client received.
    pub cid: u32,
}

const CONFIRM_LEN: usize = 4;

impl Confirm {
    /// The whole frame, header included.
    pub fn encode(&self) -> Vec<u8> {
        frame(FrameKind::Confirm, &self.cid.to_be_bytes())
    }

    /// Decodes a confirm body.
    ///
    /// # Errors
    ///
    /// [`WireError::Malformed`] if the body is too short.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let b = body
            .get(..CONFIRM_LEN)
            .ok_or(WireError::Malformed("short confirm"))?;
        Ok(Confirm {
            cid: BigEndian::read_u32(b),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(frame: &[u8], kind: FrameKind) -> &[u8] {
        let h = FrameHeader::parse(frame).unwrap();
        assert_eq!(h.kind, kind);
        assert_eq!(frame.len(), HEADER_LEN + h.body_len);
        &frame[HEADER_LEN..]
    }

    #[test]
    fn hello_round_trips() {
        let h = Hello {
            control_port: 40000,
            cid: 0xdead_beef,
            token: 0x0102_0304_0506_0708,
            received: u32::MAX,
        };
        let f = h.encode();
        assert_eq!(&f[..6], b"RTCP\x01\x01");
        assert_eq!(Hello::parse(body(&f, FrameKind::Hello)), Ok(h));
    }

    #[test]
    fn answers_round_trip() {
        let a = Answer::Accepted {
            cid: 7,
            token: 99,
            control_port: 1234,
            received: 5,
            epoch: 3,
        };
        assert_eq!(Answer::parse(body(&a.encode(), FrameKind::Answer)), Ok(a));
        for r in [
            Refusal::Closed,
            Refusal::TooManySessions,
            Refusal::UnknownSession,
            Refusal::BadRequest,
        ] {
            let a = Answer::Refused(r);
            assert_eq!(Answer::parse(body(&a.encode(), FrameKind::Answer)), Ok(a));
        }
    }

    #[test]
    fn longer_bodies_are_accepted_for_later_versions() {
        let mut f = Confirm { cid: 9 }.encode();
        f.extend_from_slice(b"future field");
        f[7] += 12;
        assert_eq!(
            Confirm::parse(body(&f, FrameKind::Confirm)),
            Ok(Confirm { cid: 9 })
        );
    }

    #[test]
    fn foreign_bytes_are_recognised() {
        assert_eq!(FrameHeader::parse(b"SSH-2.0-"), Err(WireError::NotRobust));
        assert_eq!(
            FrameHeader::parse(b"RTCP\x02\x01\0\0"),
            Err(WireError::Version(2))
        );
        assert!(FrameHeader::parse(b"RTCP\x01\x09\0\0").is_err());
        assert!(FrameHeader::parse(b"RTCP").is_err());
        assert!(FrameHeader::parse(b"RTCP\x01\x01\xff\xff").is_err());
    }
}

pub use Refusal as RefusalCode;
