//! The handshake frames sent on a new TCP connection before any application byte.
//!
//! Every frame has an 8-byte header (`magic`, `version`, `kind`, body length) and a body.
//! A decoder accepts a body longer than it knows and ignores the rest, so a later version can
//! append a field without breaking this one. Every HELLO, ANSWER and CONFIRM carries a tag
//! over the exchange so far (the *transcript*: the canonical encodings of the frames
//! before, and of this one up to its tag), made with the session's handshake keys
//! ([`super::auth`]). A key-agreement opening HELLO carries the client's ephemeral public
//! key and no tag (there is no key yet); the ANSWER carries the server's part of the
//! agreement ([`super::agreement`]) and the first tag. A lightweight opening HELLO carries
//! the session secret the client drew, so the server derives the keys from the HELLO
//! alone and can check its tag. See `docs/PROTOCOL.md`.

use std::net::{Ipv6Addr, SocketAddr};

use byteorder::{BigEndian, ByteOrder};

use super::agreement::{AnswerPart, PublicKey, ANSWER_PART_LEN};
use super::auth::{MacKey, Nonce, Secret, Tag, NONCE_LEN, SECRET_LEN, TAG_LEN};
use super::WireError;

/// The first four bytes of every handshake frame: "RTCP".
pub const MAGIC: [u8; 4] = *b"RTCP";
/// The protocol version this crate speaks.
pub const VERSION: u8 = 6;
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
        pub(crate) const FLAGS: usize = 32;
        pub(crate) const OPENING_NONCE: Field = 33..49;
        pub(crate) const OPENING_KEY: Field = 49..81;
        pub(crate) const TAG: Field = 81..97;
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
        pub(crate) const AGREEMENT: Field = 48..96;
        pub(crate) const CONTROL_ADDR: Field = 96..112;
        pub(crate) const CONTROL_ADDR_PORT: Field = 112..114;
        pub(crate) const TAG: Field = 114..130;
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
    /// Whether the opening runs the key agreement: then `opening_key` is the client's
    /// ephemeral public key and the tag is zero (there is no key yet). Only an opening
    /// says so.
    pub key_agreement: bool,
    /// When opening: the client's ephemeral X25519 public key (with `key_agreement`), or
    /// the session secret it drew (the lightweight opening). Zero when resuming by CID
    /// (it travels once per attempt at opening, never afterwards).
    pub opening_key: [u8; SECRET_LEN],
    /// The tag of the frame up to the tag under the client's handshake key; zero in a
    /// key-agreement opening.
    pub tag: Tag,
}

/// The HELLO flag saying that the opening runs the key agreement.
const KEY_AGREEMENT: u8 = 0x01;

impl Hello {
    /// Length of the body this version writes.
    pub const BODY_LEN: usize = field::hello::TAG.end;
    /// Length of the whole frame.
    pub const FRAME_LEN: usize = HEADER_LEN + Self::BODY_LEN;

    /// The lightweight HELLO of opening attempt number `attempt` of the session whose
    /// secret is `secret` and whose opening nonce is `opening_nonce`, tagged with the
    /// client's handshake key `key` (derived from those two).
    pub fn opening(
        nonce: Nonce,
        attempt: u64,
        opening_nonce: Nonce,
        secret: Secret,
        key: &MacKey,
    ) -> Self {
        Hello {
            key_agreement: false,
            opening_key: secret,
            ..Self::agreeing(nonce, attempt, opening_nonce, [0; SECRET_LEN])
        }
        .signed(key)
    }

    /// The key-agreement HELLO of opening attempt number `attempt` of the session whose
    /// opening nonce is `opening_nonce` and whose client's ephemeral public key is
    /// `public`; untagged.
    pub fn agreeing(nonce: Nonce, attempt: u64, opening_nonce: Nonce, public: PublicKey) -> Self {
        Hello {
            cid: 0,
            nonce,
            attempt,
            received: 0,
            opening_nonce,
            key_agreement: true,
            opening_key: public,
            tag: [0; TAG_LEN],
        }
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
            key_agreement: false,
            opening_key: [0; SECRET_LEN],
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
    /// HELLO opens a session, the key agreement only in an opening, and then no tag.
    pub fn opening_part_is_consistent(&self) -> bool {
        let zero_nonce = self.opening_nonce == [0; NONCE_LEN];
        let zero_key = self.opening_key == [0; SECRET_LEN];
        if !self.is_opening() {
            zero_nonce && zero_key && !self.key_agreement
        } else {
            !zero_nonce && !zero_key && (!self.key_agreement || self.tag == [0; TAG_LEN])
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
        body[field::hello::FLAGS] = if self.key_agreement { KEY_AGREEMENT } else { 0 };
        body[field::hello::OPENING_NONCE].copy_from_slice(&self.opening_nonce);
        body[field::hello::OPENING_KEY].copy_from_slice(&self.opening_key);
        body[field::hello::TAG].copy_from_slice(&self.tag);
        out
    }

    /// Decodes a hello body (the bytes after the header).
    ///
    /// # Errors
    ///
    /// [`WireError::Malformed`] if the body is too short or has flags this version does
    /// not know.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let b = known_part(body, Self::BODY_LEN, "short hello")?;
        let key_agreement = match b[field::hello::FLAGS] {
            0 => false,
            KEY_AGREEMENT => true,
            _ => return Err(WireError::Malformed("unknown hello flags")),
        };
        Ok(Hello {
            cid: BigEndian::read_u32(&b[field::hello::CID]),
            nonce: array(b, field::hello::NONCE),
            attempt: BigEndian::read_u64(&b[field::hello::ATTEMPT]),
            received: BigEndian::read_u32(&b[field::hello::RECEIVED]),
            opening_nonce: array(b, field::hello::OPENING_NONCE),
            key_agreement,
            opening_key: array(b, field::hello::OPENING_KEY),
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
    /// and waits for the client's CONFIRM; or, with `known`, touched nothing.
    pub opened: bool,
    /// The answer to a retried key-agreement opening whose session the server has: it
    /// gives the client the CID and (with `agreement`) the keys, and nothing more; the
    /// server changed nothing for this unauthenticated HELLO, and the client resumes the
    /// session by its CID on a new connection. Never with `opened`.
    pub known: bool,
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
    /// The server's part of the key agreement (its ephemeral public key and Noise's tag)
    /// when it answers a key-agreement opening; zero otherwise.
    pub agreement: AnswerPart,
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
            known: false,
            control_port,
            client_nonce: hello.nonce,
            received,
            epoch: hello.attempt as u32,
            server_nonce,
            agreement: [0; ANSWER_PART_LEN],
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

    /// This answer to the key-agreement opening `hello`, carrying the server's part of the
    /// agreement, tagged again under the agreed server handshake key `key`.
    pub fn agreed(self, agreement: AnswerPart, hello: &Hello, key: &MacKey) -> Self {
        Accepted { agreement, ..self }.sign(hello, key)
    }

    /// The answer to `hello`, a retried key-agreement opening of session `cid` that the
    /// server has (see [`known`](Self::known)), with the agreement's part the session's
    /// first ANSWER carried.
    pub fn known(
        hello: &Hello,
        cid: u32,
        control_port: u16,
        server_nonce: Nonce,
        agreement: AnswerPart,
        key: &MacKey,
    ) -> Self {
        let answer = Self::accepting(hello, cid, false, control_port, 0, server_nonce, key);
        Accepted {
            known: true,
            ..answer
        }
        .agreed(agreement, hello, key)
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
/// The ANSWER flag saying that the server has the session of a retried key-agreement
/// opening, and changed nothing.
const KNOWN: u8 = 0x02;

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
                body[field::answer::FLAGS] = match (a.opened, a.known) {
                    (true, _) => OPENED,
                    (false, true) => KNOWN,
                    (false, false) => 0,
                };
                BigEndian::write_u16(&mut body[field::answer::CONTROL_PORT], a.control_port);
                body[field::answer::CLIENT_NONCE].copy_from_slice(&a.client_nonce);
                BigEndian::write_u32(&mut body[field::answer::RECEIVED], a.received);
                BigEndian::write_u32(&mut body[field::answer::EPOCH], a.epoch);
                body[field::answer::SERVER_NONCE].copy_from_slice(&a.server_nonce);
                body[field::answer::AGREEMENT].copy_from_slice(&a.agreement);
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
        let (opened, known) = match b[field::answer::FLAGS] {
            0 => (false, false),
            OPENED => (true, false),
            KNOWN => (false, true),
            _ => return Err(WireError::Malformed("unknown answer flags")),
        };
        Ok(Answer::Accepted(Accepted {
            cid,
            opened,
            known,
            control_port: BigEndian::read_u16(&b[field::answer::CONTROL_PORT]),
            client_nonce: array(b, field::answer::CLIENT_NONCE),
            received: BigEndian::read_u32(&b[field::answer::RECEIVED]),
            epoch: BigEndian::read_u32(&b[field::answer::EPOCH]),
            server_nonce: array(b, field::answer::SERVER_NONCE),
            agreement: array(b, field::answer::AGREEMENT),
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
