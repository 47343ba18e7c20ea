//! The UDP control datagrams (paper Fig. 5).
//!
//! An 8-byte header (CID 4 bytes, type 1, flags 1, message id 2) and, for some types, a
//! 4-byte count, all big-endian. See `docs/PROTOCOL.md`.

use byteorder::{BigEndian, ByteOrder};

use super::WireError;

/// Byte offsets of the fields of a control datagram, shared by the encoder and the parser.
mod field {
    pub(super) type Field = std::ops::Range<usize>;

    pub(super) const CID: Field = 0..4;
    pub(super) const KIND: usize = 4;
    pub(super) const FLAGS: usize = 5;
    pub(super) const ID: Field = 6..8;
    /// Only in the types that carry a count.
    pub(super) const COUNT: Field = 8..12;
}

/// Length of the header: every datagram has it, and some have a count after it.
pub const HEADER_LEN: usize = field::COUNT.start;
/// The longest datagram this crate sends or accepts: a header and a count.
pub const MAX_LEN: usize = field::COUNT.end;

/// Flag: the receiver must answer with a `Conf` carrying the message id.
pub const FLAG_NEEDS_CONF: u8 = 0x01;
/// Flag: the sender is the server side of the session (the receiver is the client).
pub const FLAG_FROM_SERVER: u8 = 0x02;
const KNOWN_FLAGS: u8 = FLAG_NEEDS_CONF | FLAG_FROM_SERVER;

/// What a control datagram says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlKind {
    /// "I have received this many bytes" (wrapping at 2^32).
    Ack(u32),
    /// An `Ack` that also asks the receiver to answer with its own `Ack` at once.
    ReqAck(u32),
    /// The sender closed the session: it will send exactly this many bytes in all and will
    /// read nothing more. Confirmed.
    Close(u32),
    /// The sender shut down writing after exactly this many bytes. Confirmed.
    HalfClose(u32),
    /// The sender aborted the session. Confirmed.
    Reset,
    /// Confirms the message whose id this datagram carries.
    Conf,
    /// From the server: its TCP connection number `epoch` of the session failed; the client
    /// should reconnect if it still uses that connection. Confirmed.
    Reconnect(u32),
}

impl ControlKind {
    fn code(self) -> u8 {
        match self {
            ControlKind::Ack(_) => 1,
            ControlKind::ReqAck(_) => 2,
            ControlKind::Close(_) => 3,
            ControlKind::HalfClose(_) => 4,
            ControlKind::Reset => 5,
            ControlKind::Conf => 6,
            ControlKind::Reconnect(_) => 7,
        }
    }

    /// Whether the receiver must confirm it (and the sender retransmits until it does).
    pub fn needs_conf(self) -> bool {
        matches!(
            self,
            ControlKind::Close(_)
                | ControlKind::HalfClose(_)
                | ControlKind::Reset
                | ControlKind::Reconnect(_)
        )
    }

    fn count(self) -> Option<u32> {
        match self {
            ControlKind::Ack(n)
            | ControlKind::ReqAck(n)
            | ControlKind::Close(n)
            | ControlKind::HalfClose(n)
            | ControlKind::Reconnect(n) => Some(n),
            ControlKind::Reset | ControlKind::Conf => None,
        }
    }
}

/// One control datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlMessage {
    /// The session it is about.
    pub cid: u32,
    /// Whether the sender is the server side of the session.
    pub from_server: bool,
    /// The message id: names a message to confirm (or, in a `Conf`, the confirmed one).
    pub id: u16,
    /// What it says.
    pub kind: ControlKind,
}

impl ControlMessage {
    /// Writes the datagram into `out` and returns its length.
    pub fn encode(&self, out: &mut [u8; MAX_LEN]) -> usize {
        BigEndian::write_u32(&mut out[field::CID], self.cid);
        out[field::KIND] = self.kind.code();
        let mut flags = 0;
        if self.kind.needs_conf() {
            flags |= FLAG_NEEDS_CONF;
        }
        if self.from_server {
            flags |= FLAG_FROM_SERVER;
        }
        out[field::FLAGS] = flags;
        BigEndian::write_u16(&mut out[field::ID], self.id);
        match self.kind.count() {
            Some(n) => {
                BigEndian::write_u32(&mut out[field::COUNT], n);
                MAX_LEN
            }
            None => HEADER_LEN,
        }
    }

    /// Decodes a datagram.
    ///
    /// # Errors
    ///
    /// [`WireError::Malformed`] for a datagram that is short, of unknown type, has unknown
    /// flags or a confirmation flag that disagrees with its type, or has the wrong length
    /// for its type.
    pub fn parse(datagram: &[u8]) -> Result<Self, WireError> {
        let wrong_length = WireError::Malformed("control datagram of the wrong length");
        let header = datagram
            .get(..HEADER_LEN)
            .ok_or(WireError::Malformed("short control datagram"))?;
        // In range: `header` is exactly HEADER_LEN bytes.
        let cid = BigEndian::read_u32(&header[field::CID]);
        let (code, flags) = (header[field::KIND], header[field::FLAGS]);
        let id = BigEndian::read_u16(&header[field::ID]);
        let count = || match datagram.get(field::COUNT) {
            Some(count) if datagram.len() == MAX_LEN => Ok(BigEndian::read_u32(count)),
            _ => Err(wrong_length),
        };
        let kind = match code {
            1 => ControlKind::Ack(count()?),
            2 => ControlKind::ReqAck(count()?),
            3 => ControlKind::Close(count()?),
            4 => ControlKind::HalfClose(count()?),
            5 | 6 if datagram.len() != HEADER_LEN => return Err(wrong_length),
            5 => ControlKind::Reset,
            6 => ControlKind::Conf,
            7 => ControlKind::Reconnect(count()?),
            _ => return Err(WireError::Malformed("unknown control type")),
        };
        if flags & !KNOWN_FLAGS != 0 {
            return Err(WireError::Malformed("unknown control flags"));
        }
        if (flags & FLAG_NEEDS_CONF != 0) != kind.needs_conf() {
            return Err(WireError::Malformed(
                "confirmation flag disagrees with type",
            ));
        }
        Ok(ControlMessage {
            cid,
            from_server: flags & FLAG_FROM_SERVER != 0,
            id,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        let kinds = [
            ControlKind::Ack(1),
            ControlKind::ReqAck(u32::MAX),
            ControlKind::Close(3),
            ControlKind::HalfClose(4),
            ControlKind::Reset,
            ControlKind::Conf,
            ControlKind::Reconnect(6),
        ];
        for (i, kind) in kinds.into_iter().enumerate() {
            let m = ControlMessage {
                cid: 0x0102_0304,
                from_server: i % 2 == 0,
                id: i as u16,
                kind,
            };
            let mut buf = [0; MAX_LEN];
            let n = m.encode(&mut buf);
            assert_eq!(ControlMessage::parse(&buf[..n]), Ok(m));
        }
    }

    #[test]
    fn ack_layout_matches_the_paper() {
        let m = ControlMessage {
            cid: 0x0a0b_0c0d,
            from_server: false,
            id: 0,
            kind: ControlKind::Ack(0x1122_3344),
        };
        let mut buf = [0; MAX_LEN];
        assert_eq!(m.encode(&mut buf), 12);
        assert_eq!(
            buf,
            [0x0a, 0x0b, 0x0c, 0x0d, 1, 0, 0, 0, 0x11, 0x22, 0x33, 0x44]
        );
    }

    #[test]
    fn malformed_datagrams_are_errors() {
        assert!(ControlMessage::parse(&[]).is_err());
        assert!(ControlMessage::parse(&[0, 0, 0, 1, 1, 0, 0]).is_err());
        assert!(
            ControlMessage::parse(&[0, 0, 0, 1, 1, 0, 0, 0]).is_err(),
            "ack without count"
        );
        assert!(
            ControlMessage::parse(&[0, 0, 0, 1, 99, 0, 0, 0]).is_err(),
            "unknown type"
        );
        assert!(
            ControlMessage::parse(&[0, 0, 0, 1, 6, 0x80, 0, 0]).is_err(),
            "unknown flag"
        );
        assert!(
            ControlMessage::parse(&[0, 0, 0, 1, 5, 0, 0, 0]).is_err(),
            "reset unflagged"
        );
        assert!(
            ControlMessage::parse(&[0, 0, 0, 1, 6, 0, 0, 0, 9]).is_err(),
            "trailing byte"
        );
    }
}
