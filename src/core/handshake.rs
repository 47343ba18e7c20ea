//! The handshake frames sent on a new TCP connection before any application byte.
//!
//! Every frame has an 8-byte header (`magic`, `version`, `kind`, body length) and a body.
//! A decoder accepts a body longer than it knows and ignores the rest, so a later version can
//! append a field without breaking this one. Every HELLO, ANSWER and CONFIRM carries a tag
//! over the exchange so far (the *transcript*: the canonical encodings of the frames
//! before, and of this one up to its tag), made with the session's handshake keys
//! ([`super::auth`]). An opening HELLO carries the session secret the client drew, so the
//! server derives the keys from the HELLO alone and can check its tag. See
//! `docs/PROTOCOL.md`.

use std::net::{Ipv6Addr, SocketAddr};

use byteorder::{BigEndian, ByteOrder};

use super::auth::{MacKey, Nonce, Secret, Tag, NONCE_LEN, SECRET_LEN, TAG_LEN};
use super::WireError;

/// The first four bytes of every handshake frame: "RTCP".
pub const MAGIC: [u8; 4] = *b"RTCP";
/// The protocol version this crate speaks.
pub const VERSION: u8 = 4;
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
        pub(crate) const CID: Field = 0..4;
        pub(crate) const NONCE: Field = 4..20;
        pub(crate) const ATTEMPT: Field = 20..28;
        pub(crate) const RECEIVED: Field = 28..32;
        pub(crate) const OPENING_NONCE: Field = 32..48;
        pub(crate) const SECRET: Field = 48..80;
        pub(crate) const TAG: Field = 80..96;
    }

    /// The body of an ANSWER.
    pub(super) mod answer {
        use super::Field;
        pub(crate) const CID: Field = 0..4;
        pub(crate) const REFUSAL: usize = 4;
        pub(crate) const FLAGS: usize = 5;
        pub(crate) const CONTROL_PORT: Field = 6..8;
        pub(crate) const CLIENT_NONCE: Field = 8..24;
        pub(crate) const RECEIVED: Field = 24..28;
        pub(crate) const EPOCH: Field = 28..32;
        pub(crate) const SERVER_NONCE: Field = 32..48;
        pub(crate) const CONTROL_ADDR: Field = 48..64;
        pub(crate) const CONTROL_ADDR_PORT: Field = 64..66;
        pub(crate) const TAG: Field = 66..82;
    }

    /// The body of a CONTROL.
    pub(super) mod control {
        use super::Field;
        pub(crate) const CID: Field = 0..4;
    }

    /// The body of a CONFIRM.
    pub(super) mod confirm {
        use super::Field;
        pub(crate) const CID: Field = 0..4;
        pub(crate) const TAG: Field = 4..20;
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
    /// Server to client: accept (with the CID: opened, or resumed) or refuse.
    Answer = 2,
    /// Client to server, after an answer that resumed a session: the client holds the
    /// keys and received this very answer; the server may move the session to this
    /// connection.
    Confirm = 3,
    /// Client to server, first on a connection that carries control datagrams instead of
    /// a session (where UDP does not get through): the CID of a session whose server it
    /// is for. Datagrams follow both ways, each after its 2-byte length.
    Control = 4,
}

/// Client to server, first on a control connection: the CID of one of the sessions whose
/// datagrams it carries, at the offset of a HELLO's CID, so that a load balancer routes
/// it to the instance that holds them as it routes their reconnections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Control {
    /// A session's CID.
    pub cid: u32,
}

impl Control {
    /// Length of the body this version writes.
    pub const BODY_LEN: usize = field::control::CID.end;
    /// Length of the whole frame.
    pub const FRAME_LEN: usize = HEADER_LEN + Self::BODY_LEN;

    /// The whole frame, header included.
    pub fn encode(&self) -> [u8; Self::FRAME_LEN] {
        let mut out = frame(FrameKind::Control);
        BigEndian::write_u32(&mut out[HEADER_LEN..][field::control::CID], self.cid);
        out
    }

    /// Decodes a control body.
    ///
    /// # Errors
    ///
    /// [`WireError::Malformed`] if the body is too short or names CID 0 (no session).
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let b = known_part(body, Self::BODY_LEN, "short control")?;
        match BigEndian::read_u32(&b[field::control::CID]) {
            0 => Err(WireError::Malformed("control names no session")),
            cid => Ok(Control { cid }),
        }
    }
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
            4 => FrameKind::Control,
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
    // Bodies of this version are a few dozen bytes, far below MAX_BODY_LEN, so this fits.
    let body_len = (N - HEADER_LEN) as u16;
    BigEndian::write_u16(&mut out[field::header::BODY_LEN], body_len);
    out
}

/// The first `len` bytes of `body`, or `what` if it is shorter.
fn known_part<'a>(body: &'a [u8], len: usize, what: &'static str) -> Result<&'a [u8], WireError> {
    body.get(..len).ok_or(WireError::Malformed(what))
}

/// The bytes of `field` in `b`, as an array (`b` was checked to hold the whole body).
fn array<const N: usize>(b: &[u8], field: std::ops::Range<usize>) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[field]);
    out
}

/// The bytes of a whole frame that its tag covers: everything before the tag, which ends
/// the body.
fn untagged(frame: &[u8]) -> &[u8] {
    &frame[..frame.len() - TAG_LEN]
}

/// Client to server, first frame on every TCP connection of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// 0 to open a session (a new one, or the one this client opened with the same
    /// opening nonce, if the server has it); the session's CID to resume it.
    pub cid: u32,
    /// Fresh for each attempt: the server echoes it, so an answer cannot be replayed.
    pub nonce: Nonce,
    /// The number of this attempt in the session: 0 for the first opening; each later
    /// attempt (a retried opening, a reconnection) counts one more, so that a replayed
    /// HELLO is refused.
    pub attempt: u64,
    /// Bytes the client has received in this session (wrapping at 2^32).
    pub received: u32,
    /// When opening: random, drawn once per session; the keys are derived with it as the
    /// salt, and the server finds a session it opened by it. Zero when resuming by CID.
    pub opening_nonce: Nonce,
    /// When opening: the session secret, drawn by the client. Zero when resuming by CID
    /// (it travels once per attempt at opening, never afterwards).
    pub secret: Secret,
    /// The tag of the frame up to the tag under the client's handshake key.
    pub tag: Tag,
}

impl Hello {
    /// Length of the body this version writes.
    pub const BODY_LEN: usize = field::hello::TAG.end;
    /// Length of the whole frame.
    pub const FRAME_LEN: usize = HEADER_LEN + Self::BODY_LEN;

    /// The HELLO of opening attempt number `attempt` of the session whose secret is
    /// `secret` and whose opening nonce is `opening_nonce`, tagged with the client's
    /// handshake key `key` (derived from those two).
    pub fn opening(
        nonce: Nonce,
        attempt: u64,
        opening_nonce: Nonce,
        secret: Secret,
        key: &MacKey,
    ) -> Self {
        Hello {
            cid: 0,
            nonce,
            attempt,
            received: 0,
            opening_nonce,
            secret,
            tag: [0; TAG_LEN],
        }
        .signed(key)
    }

    /// The HELLO of reconnection number `attempt` of session `cid`, tagged with the
    /// client's handshake key.
    pub fn resume(cid: u32, nonce: Nonce, attempt: u64, received: u32, key: &MacKey) -> Self {
        Hello {
            cid,
            nonce,
            attempt,
            received,
            opening_nonce: [0; NONCE_LEN],
            secret: [0; SECRET_LEN],
            tag: [0; TAG_LEN],
        }
        .signed(key)
    }

    /// This HELLO, whatever its fields, with its tag under the client's handshake key
    /// `key` (the constructors above use it; so can tests and fuzzers).
    pub fn signed(mut self, key: &MacKey) -> Self {
        self.tag = key.tag(&[untagged(&self.encode())]);
        self
    }

    /// Whether this HELLO opens a session (CID 0).
    pub fn is_opening(&self) -> bool {
        self.cid == 0
    }

    /// Whether the opening part is as it must be: present (non-zero) exactly when the
    /// HELLO opens a session.
    pub fn opening_part_is_consistent(&self) -> bool {
        let present = self.opening_nonce != [0; NONCE_LEN] && self.secret != [0; SECRET_LEN];
        let absent = self.opening_nonce == [0; NONCE_LEN] && self.secret == [0; SECRET_LEN];
        if self.is_opening() {
            present
        } else {
            absent
        }
    }

    /// Whether the tag is right for the client's handshake key `key`.
    pub fn verify(&self, key: &MacKey) -> bool {
        key.verify(&[untagged(&self.encode())], &self.tag)
    }

    /// The whole frame, header included.
    pub fn encode(&self) -> [u8; Self::FRAME_LEN] {
        let mut out = frame(FrameKind::Hello);
        let body = &mut out[HEADER_LEN..];
        BigEndian::write_u32(&mut body[field::hello::CID], self.cid);
        body[field::hello::NONCE].copy_from_slice(&self.nonce);
        BigEndian::write_u64(&mut body[field::hello::ATTEMPT], self.attempt);
        BigEndian::write_u32(&mut body[field::hello::RECEIVED], self.received);
        body[field::hello::OPENING_NONCE].copy_from_slice(&self.opening_nonce);
        body[field::hello::SECRET].copy_from_slice(&self.secret);
        body[field::hello::TAG].copy_from_slice(&self.tag);
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
            cid: BigEndian::read_u32(&b[field::hello::CID]),
            nonce: array(b, field::hello::NONCE),
            attempt: BigEndian::read_u64(&b[field::hello::ATTEMPT]),
            received: BigEndian::read_u32(&b[field::hello::RECEIVED]),
            opening_nonce: array(b, field::hello::OPENING_NONCE),
            secret: array(b, field::hello::SECRET),
            tag: array(b, field::hello::TAG),
        })
    }
}

/// Why a server refused a hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalCode {
    /// The server no longer accepts new sessions (permanent).
    Closed = 1,
    /// The server holds as many sessions as it may, in all or from the client's address
    /// (temporary: retry later).
    TooManySessions = 2,
    /// No session of this server has that CID, or the hello's proof does not hold for it:
    /// the server restarted, or the session ended (permanent).
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

/// The server's acceptance of a hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The session's CID (never 0).
    pub cid: u32,
    /// Whether the server opened the session on this connection: then the client's bytes
    /// follow its HELLO, no CONFIRM follows, and both sides start from byte 0. Otherwise
    /// the server resumed a session it had (by the HELLO's CID, or by its opening nonce),
    /// and waits for the client's CONFIRM.
    pub opened: bool,
    /// The server's UDP control port.
    pub control_port: u16,
    /// The nonce of the hello this answers.
    pub client_nonce: Nonce,
    /// Bytes the server has received in this session (wrapping at 2^32).
    pub received: u32,
    /// The number of this TCP connection in the session; control messages about a
    /// connection name it. A session opened by opening attempt `n` starts at `n`, so
    /// that it never reuses a number the client gave an earlier connection.
    pub epoch: u32,
    /// Fresh for each answer: the client's CONFIRM covers it, so a CONFIRM cannot be
    /// replayed.
    pub server_nonce: Nonce,
    /// The address where the server takes control datagrams, if it announces one
    /// (`Config::announce_control_addr`); else they go to `control_port` at the address
    /// the client connected to.
    pub control_addr: Option<SocketAddr>,
    /// The tag of the HELLO and of this frame up to the tag under the server's handshake
    /// key.
    pub tag: Tag,
}

impl Accepted {
    /// The server's answer accepting `hello` for session `cid`, opened on this connection
    /// or resumed, its control datagrams on `control_port`, the server having received
    /// `received` bytes; tagged with the server's handshake key `key`. The connection is
    /// numbered by the attempt that made it: above every number offered before in the
    /// session, so that no two connections the client may have installed share one (a
    /// RECONNECT about one never fails another, and a session opened by a retried opening
    /// never reuses the number of an earlier connection). An honest client's attempts
    /// stay far below 2^32.
    pub fn accepting(
        hello: &Hello,
        cid: u32,
        opened: bool,
        control_port: u16,
        received: u32,
        server_nonce: Nonce,
        key: &MacKey,
    ) -> Self {
        Accepted {
            cid,
            opened,
            control_port,
            client_nonce: hello.nonce,
            received,
            epoch: hello.attempt as u32,
            server_nonce,
            control_addr: None,
            tag: [0; TAG_LEN],
        }
        .sign(hello, key)
    }

    /// This answer to `hello`, announcing `control_addr` (if any: otherwise unchanged),
    /// tagged again with the server's handshake key `key`.
    pub fn announcing(self, control_addr: Option<SocketAddr>, hello: &Hello, key: &MacKey) -> Self {
        match control_addr {
            Some(_) => Accepted {
                control_addr,
                ..self
            }
            .sign(hello, key),
            None => self,
        }
    }

    /// Where the client sends its control datagrams, having connected to `server`: the
    /// announced address, or the control port at `server`'s IP address.
    pub fn control_peer(&self, server: SocketAddr) -> SocketAddr {
        self.control_addr
            .unwrap_or(SocketAddr::new(server.ip(), self.control_port))
    }

    /// Tags the answer to `hello` with the server's handshake key.
    pub fn sign(mut self, hello: &Hello, key: &MacKey) -> Self {
        self.tag = [0; TAG_LEN];
        let frame = Answer::Accepted(self).encode();
        self.tag = key.tag(&[&hello.encode(), untagged(&frame)]);
        self
    }

    /// Whether this answers `hello`: it echoes the hello's nonce and its tag is right for
    /// the server's handshake key `key`.
    pub fn answers(&self, hello: &Hello, key: &MacKey) -> bool {
        if self.client_nonce != hello.nonce {
            return false;
        }
        let frame = Answer::Accepted(*self).encode();
        key.verify(&[&hello.encode(), untagged(&frame)], &self.tag)
    }
}

/// Server to client: the answer to a hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The session is open (or resumed).
    Accepted(Accepted),
    /// The hello was refused; the wire carries CID 0 and the reason.
    Refused(RefusalCode),
}

/// The ANSWER flag saying that the server opened the session on this connection.
const OPENED: u8 = 0x01;

impl Answer {
    /// Length of the body this version writes.
    pub const BODY_LEN: usize = field::answer::TAG.end;
    /// Length of the whole frame.
    pub const FRAME_LEN: usize = HEADER_LEN + Self::BODY_LEN;

    /// The whole frame, header included.
    pub fn encode(&self) -> [u8; Self::FRAME_LEN] {
        let mut out = frame(FrameKind::Answer);
        let body = &mut out[HEADER_LEN..];
        match self {
            Answer::Accepted(a) => {
                BigEndian::write_u32(&mut body[field::answer::CID], a.cid);
                body[field::answer::FLAGS] = if a.opened { OPENED } else { 0 };
                BigEndian::write_u16(&mut body[field::answer::CONTROL_PORT], a.control_port);
                body[field::answer::CLIENT_NONCE].copy_from_slice(&a.client_nonce);
                BigEndian::write_u32(&mut body[field::answer::RECEIVED], a.received);
                BigEndian::write_u32(&mut body[field::answer::EPOCH], a.epoch);
                body[field::answer::SERVER_NONCE].copy_from_slice(&a.server_nonce);
                if let Some(addr) = a.control_addr {
                    let ip = match addr {
                        SocketAddr::V4(v4) => v4.ip().to_ipv6_mapped(),
                        SocketAddr::V6(v6) => *v6.ip(),
                    };
                    body[field::answer::CONTROL_ADDR].copy_from_slice(&ip.octets());
                    BigEndian::write_u16(&mut body[field::answer::CONTROL_ADDR_PORT], addr.port());
                }
                body[field::answer::TAG].copy_from_slice(&a.tag);
            }
            // CID 0 says refused; the other fields stay zero.
            Answer::Refused(reason) => body[field::answer::REFUSAL] = *reason as u8,
        }
        out
    }

    /// Decodes an answer body.
    ///
    /// # Errors
    ///
    /// [`WireError::Malformed`] if the body is too short, accepts with CID 0, refuses
    /// with an unknown reason, has flags this version does not know, or announces half
    /// a control address.
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
        let opened = match b[field::answer::FLAGS] {
            0 => false,
            OPENED => true,
            _ => return Err(WireError::Malformed("unknown answer flags")),
        };
        Ok(Answer::Accepted(Accepted {
            cid,
            opened,
            control_port: BigEndian::read_u16(&b[field::answer::CONTROL_PORT]),
            client_nonce: array(b, field::answer::CLIENT_NONCE),
            received: BigEndian::read_u32(&b[field::answer::RECEIVED]),
            epoch: BigEndian::read_u32(&b[field::answer::EPOCH]),
            server_nonce: array(b, field::answer::SERVER_NONCE),
            control_addr: announced(b)?,
            tag: array(b, field::answer::TAG),
        }))
    }
}

/// The control address an ANSWER body announces: none when its bytes are all zero (the
/// server announces nothing); an IPv4-mapped address as IPv4.
///
/// # Errors
///
/// [`WireError::Malformed`] for an address without a port, or a port without an address.
fn announced(b: &[u8]) -> Result<Option<SocketAddr>, WireError> {
    let raw = array::<16>(b, field::answer::CONTROL_ADDR);
    let port = BigEndian::read_u16(&b[field::answer::CONTROL_ADDR_PORT]);
    let ip = Ipv6Addr::from(raw).to_canonical();
    match (
        raw == [0; 16] && port == 0,
        ip.is_unspecified() || port == 0,
    ) {
        (true, _) => Ok(None),
        (false, true) => Err(WireError::Malformed("half an announced control address")),
        (false, false) => Ok(Some(SocketAddr::new(ip, port))),
    }
}

/// Client to server, after every answer that resumed a session: the proof that the
/// client holds the session's keys and received this very answer (an opening answer needs
/// none: the client's bytes follow its HELLO).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Confirm {
    /// The CID the client received.
    pub cid: u32,
    /// The tag of the HELLO, the ANSWER and this frame up to the tag, under the client's
    /// handshake key.
    pub tag: Tag,
}

impl Confirm {
    /// Length of the body this version writes.
    pub const BODY_LEN: usize = field::confirm::TAG.end;
    /// Length of the whole frame.
    pub const FRAME_LEN: usize = HEADER_LEN + Self::BODY_LEN;

    /// The confirmation of the exchange `hello`, `answer`, tagged with the client's
    /// handshake key.
    pub fn new(hello: &Hello, answer: &Accepted, key: &MacKey) -> Self {
        let mut confirm = Confirm {
            cid: answer.cid,
            tag: [0; TAG_LEN],
        };
        let (h, a, c) = confirm.transcript(hello, answer);
        confirm.tag = key.tag(&[&h, &a, untagged(&c)]);
        confirm
    }

    /// Whether this confirms the exchange `hello`, `answer` under the client's handshake
    /// key `key`.
    pub fn verify(&self, hello: &Hello, answer: &Accepted, key: &MacKey) -> bool {
        let (h, a, c) = self.transcript(hello, answer);
        self.cid == answer.cid && key.verify(&[&h, &a, untagged(&c)], &self.tag)
    }

    /// The frames the tag covers: the HELLO, the ANSWER and this one.
    #[allow(clippy::type_complexity)]
    fn transcript(
        &self,
        hello: &Hello,
        answer: &Accepted,
    ) -> (
        [u8; Hello::FRAME_LEN],
        [u8; Answer::FRAME_LEN],
        [u8; Confirm::FRAME_LEN],
    ) {
        (
            hello.encode(),
            Answer::Accepted(*answer).encode(),
            self.encode(),
        )
    }

    /// The whole frame, header included.
    pub fn encode(&self) -> [u8; Self::FRAME_LEN] {
        let mut out = frame(FrameKind::Confirm);
        let body = &mut out[HEADER_LEN..];
        BigEndian::write_u32(&mut body[field::confirm::CID], self.cid);
        body[field::confirm::TAG].copy_from_slice(&self.tag);
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
            tag: array(b, field::confirm::TAG),
        })
    }
}

#[cfg(test)]
mod tests;
