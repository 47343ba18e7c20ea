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
/// Byte offsets of the handshake fields, shared by the encoders and the parsers. Body
/// offsets count from the start of the body, after the header.
mod field {
    pub(super) type Field = std::ops::Range<usize>;

    /// The frame header.
    pub(super) mod header {
        use super::Field;
        pub(crate) const MAGIC: Field = 0..4;
        pub(crate) const VERSION: usize = 4;
        pub(crate) const KIND: usize = 5;
        pub(crate) const BODY_LEN: Field = 6..8;
    }

    /// The body of a HELLO.
    pub(super) mod hello {
        use super::Field;
        pub(crate) const CONTROL_PORT: Field = 0..2;
        pub(crate) const CID: Field = 2..6;
        pub(crate) const TOKEN: Field = 6..14;
        pub(crate) const RECEIVED: Field = 14..18;
    }

    /// The body of an ANSWER.
    pub(super) mod answer {
        use super::Field;
        pub(crate) const CID: Field = 0..4;
        pub(crate) const REFUSAL: usize = 4;
        pub(crate) const CONTROL_PORT: Field = 5..7;
        pub(crate) const TOKEN: Field = 7..15;
        pub(crate) const RECEIVED: Field = 15..19;
        pub(crate) const EPOCH: Field = 19..23;
    }

    /// The body of a CONFIRM.
    pub(super) mod confirm {
        use super::Field;
        pub(crate) const CID: Field = 0..4;
    }
}

/// Length of the frame header.
pub const HEADER_LEN: usize = field::header::BODY_LEN.end;
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
    /// Decodes the header bytes.
    ///
    /// # Errors
    ///
    /// [`WireError::NotRobust`] when the magic is wrong (the peer speaks another protocol),
    /// [`WireError::Version`] for another version, [`WireError::Malformed`] for an unknown
    /// kind or an oversized body.
    pub fn parse(header: &[u8; HEADER_LEN]) -> Result<Self, WireError> {
        if header[field::header::MAGIC] != MAGIC {
            return Err(WireError::NotRobust);
        }
        let version = header[field::header::VERSION];
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let kind = match header[field::header::KIND] {
            1 => FrameKind::Hello,
            2 => FrameKind::Answer,
            3 => FrameKind::Confirm,
            _ => return Err(WireError::Malformed("unknown handshake frame kind")),
        };
        let body_len = usize::from(BigEndian::read_u16(&header[field::header::BODY_LEN]));
        if body_len > MAX_BODY_LEN {
            return Err(WireError::Malformed("handshake body too long"));
        }
        Ok(FrameHeader { kind, body_len })
    }
}

/// A frame of `N` bytes, header filled in for `kind` and the body, the `N - HEADER_LEN`
/// bytes after it, left zero for the caller to fill.
fn frame<const N: usize>(kind: FrameKind) -> [u8; N] {
    let mut out = [0u8; N];
    out[field::header::MAGIC].copy_from_slice(&MAGIC);
    out[field::header::VERSION] = VERSION;
    out[field::header::KIND] = kind as u8;
    // Bodies of this version are a few bytes, far below MAX_BODY_LEN, so this fits.
    let body_len = (N - HEADER_LEN) as u16;
    BigEndian::write_u16(&mut out[field::header::BODY_LEN], body_len);
    out
}

/// The first `len` bytes of `body`, or `what` if it is shorter.
fn known_part<'a>(body: &'a [u8], len: usize, what: &'static str) -> Result<&'a [u8], WireError> {
    body.get(..len).ok_or(WireError::Malformed(what))
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

impl Hello {
    /// Length of the body this version writes.
    pub const BODY_LEN: usize = field::hello::RECEIVED.end;
    /// Length of the whole frame.
    pub const FRAME_LEN: usize = HEADER_LEN + Self::BODY_LEN;

    /// The whole frame, header included.
    pub fn encode(&self) -> [u8; Self::FRAME_LEN] {
        let mut out = frame(FrameKind::Hello);
        let body = &mut out[HEADER_LEN..];
        BigEndian::write_u16(&mut body[field::hello::CONTROL_PORT], self.control_port);
        BigEndian::write_u32(&mut body[field::hello::CID], self.cid);
        BigEndian::write_u64(&mut body[field::hello::TOKEN], self.token);
        BigEndian::write_u32(&mut body[field::hello::RECEIVED], self.received);
        out
    }

    /// Decodes a hello body (the bytes after the header).
    ///
    /// # Errors
    ///
    /// [`WireError::Malformed`] if the body is too short.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let b = known_part(body, Self::BODY_LEN, "short hello")?;
        Ok(Hello {
            control_port: BigEndian::read_u16(&b[field::hello::CONTROL_PORT]),
            cid: BigEndian::read_u32(&b[field::hello::CID]),
            token: BigEndian::read_u64(&b[field::hello::TOKEN]),
            received: BigEndian::read_u32(&b[field::hello::RECEIVED]),
        })
    }
}

/// Why a server refused a hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalCode {
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

impl RefusalCode {
    /// Whether the client should try again later.
    pub fn is_temporary(self) -> bool {
        self == RefusalCode::TooManySessions
    }

    fn from_code(code: u8) -> Result<Self, WireError> {
        match code {
            1 => Ok(RefusalCode::Closed),
            2 => Ok(RefusalCode::TooManySessions),
            3 => Ok(RefusalCode::UnknownSession),
            4 => Ok(RefusalCode::BadRequest),
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
    Refused(RefusalCode),
}

impl Answer {
    /// Length of the body this version writes.
    pub const BODY_LEN: usize = field::answer::EPOCH.end;
    /// Length of the whole frame.
    pub const FRAME_LEN: usize = HEADER_LEN + Self::BODY_LEN;

    /// The whole frame, header included.
    pub fn encode(&self) -> [u8; Self::FRAME_LEN] {
        let mut out = frame(FrameKind::Answer);
        let body = &mut out[HEADER_LEN..];
        match *self {
            Answer::Accepted {
                cid,
                token,
                control_port,
                received,
                epoch,
            } => {
                BigEndian::write_u32(&mut body[field::answer::CID], cid);
                BigEndian::write_u16(&mut body[field::answer::CONTROL_PORT], control_port);
                BigEndian::write_u64(&mut body[field::answer::TOKEN], token);
                BigEndian::write_u32(&mut body[field::answer::RECEIVED], received);
                BigEndian::write_u32(&mut body[field::answer::EPOCH], epoch);
            }
            // CID 0 says refused; the other fields stay zero.
            Answer::Refused(reason) => body[field::answer::REFUSAL] = reason as u8,
        }
        out
    }

    /// Decodes an answer body.
    ///
    /// # Errors
    ///
    /// [`WireError::Malformed`] if the body is too short, accepts with CID 0, or refuses
    /// with an unknown reason.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let b = known_part(body, Self::BODY_LEN, "short answer")?;
        let cid = BigEndian::read_u32(&b[field::answer::CID]);
        let reason = b[field::answer::REFUSAL];
        if cid == 0 {
            return RefusalCode::from_code(reason).map(Answer::Refused);
        }
        if reason != 0 {
            return Err(WireError::Malformed("answer both accepts and refuses"));
        }
        Ok(Answer::Accepted {
            cid,
            control_port: BigEndian::read_u16(&b[field::answer::CONTROL_PORT]),
            token: BigEndian::read_u64(&b[field::answer::TOKEN]),
            received: BigEndian::read_u32(&b[field::answer::RECEIVED]),
            epoch: BigEndian::read_u32(&b[field::answer::EPOCH]),
        })
    }
}

/// Client to server, after an accepting answer to an opening hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Confirm {
    /// The CID the client received.
    pub cid: u32,
}

impl Confirm {
    /// Length of the body this version writes.
    pub const BODY_LEN: usize = field::confirm::CID.end;
    /// Length of the whole frame.
    pub const FRAME_LEN: usize = HEADER_LEN + Self::BODY_LEN;

    /// The whole frame, header included.
    pub fn encode(&self) -> [u8; Self::FRAME_LEN] {
        let mut out = frame(FrameKind::Confirm);
        BigEndian::write_u32(&mut out[HEADER_LEN..][field::confirm::CID], self.cid);
        out
    }

    /// Decodes a confirm body.
    ///
    /// # Errors
    ///
    /// [`WireError::Malformed`] if the body is too short.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let b = known_part(body, Self::BODY_LEN, "short confirm")?;
        Ok(Confirm {
            cid: BigEndian::read_u32(&b[field::confirm::CID]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(frame: &[u8], kind: FrameKind) -> &[u8] {
        let h = FrameHeader::parse(frame[..HEADER_LEN].try_into().unwrap()).unwrap();
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
            RefusalCode::Closed,
            RefusalCode::TooManySessions,
            RefusalCode::UnknownSession,
            RefusalCode::BadRequest,
        ] {
            let a = Answer::Refused(r);
            assert_eq!(Answer::parse(body(&a.encode(), FrameKind::Answer)), Ok(a));
        }
    }

    #[test]
    fn longer_bodies_are_accepted_for_later_versions() {
        let mut f = Confirm { cid: 9 }.encode().to_vec();
        f.extend_from_slice(b"future field");
        f[7] += 12;
        assert_eq!(
            Confirm::parse(body(&f, FrameKind::Confirm)),
            Ok(Confirm { cid: 9 })
        );
    }

    #[test]
    fn layouts_match_the_protocol_document() {
        let hello = Hello {
            control_port: 0x0102,
            cid: 0x0304_0506,
            token: 0x0708_090a_0b0c_0d0e,
            received: 0x0f10_1112,
        };
        let mut expect = b"RTCP\x01\x01\x00\x12".to_vec();
        expect.extend(1..=0x12u8);
        assert_eq!(hello.encode()[..], expect[..]);

        let answer = Answer::Accepted {
            cid: 0x0102_0304,
            control_port: 0x0506,
            token: 0x0708_090a_0b0c_0d0e,
            received: 0x0f10_1112,
            epoch: 0x1314_1516,
        };
        let mut expect = b"RTCP\x01\x02\x00\x17\x01\x02\x03\x04\x00".to_vec();
        expect.extend(5..=0x16u8);
        assert_eq!(answer.encode()[..], expect[..]);

        let refused = Answer::Refused(RefusalCode::TooManySessions).encode();
        assert_eq!(
            refused[HEADER_LEN..],
            [0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );

        let confirm = Confirm { cid: 0x0a0b_0c0d }.encode();
        assert_eq!(confirm, *b"RTCP\x01\x03\x00\x04\x0a\x0b\x0c\x0d");
    }

    #[test]
    fn foreign_bytes_are_recognised() {
        assert_eq!(FrameHeader::parse(b"SSH-2.0-"), Err(WireError::NotRobust));
        assert_eq!(
            FrameHeader::parse(b"RTCP\x02\x01\0\0"),
            Err(WireError::Version(2))
        );
        assert!(FrameHeader::parse(b"RTCP\x01\x09\0\0").is_err());
        assert!(FrameHeader::parse(b"RTCP\x01\x01\xff\xff").is_err());
    }
}
