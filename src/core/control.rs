//! The UDP control datagrams (paper Fig. 5), authenticated.
//!
//! The paper's 8-byte header (CID 4 bytes, type 1, flags 1, message id 2), then the
//! sender's packet number (8 bytes), for most types a 4-byte count (two for REQ_ACK; a
//! CHALLENGE's or RESPONSE's 64-bit value as two), and a 16-byte tag over everything
//! before it; all big-endian. See `docs/PROTOCOL.md`.

use byteorder::{BigEndian, ByteOrder};

use super::auth::{MacKey, TAG_LEN};
use super::WireError;

/// Byte offsets of the fields of a control datagram, shared by the encoder and the parser.
mod field {
    pub(super) type Field = std::ops::Range<usize>;

    pub(super) const CID: Field = 0..4;
    pub(super) const KIND: usize = 4;
    pub(super) const FLAGS: usize = 5;
    pub(super) const ID: Field = 6..8;
    pub(super) const PACKET_NUMBER: Field = 8..16;
    /// The counts follow the packet number, 4 bytes each: none, one, or two (REQ_ACK, and
    /// a 64-bit value, high half first); the tag follows the last.
    pub(super) const COUNTS: usize = 16;
    pub(super) const COUNT_LEN: usize = 4;
    /// The most counts a datagram carries.
    pub(super) const MAX_COUNTS: usize = 2;
}

/// Length of the header (the paper's fields and the packet number): every datagram has
/// it, then its counts, then the tag.
pub const HEADER_LEN: usize = field::PACKET_NUMBER.end;
/// Length of a datagram without a count.
pub const MIN_LEN: usize = HEADER_LEN + TAG_LEN;
/// The longest datagram this crate sends or accepts: a header, two counts and a tag.
pub const MAX_LEN: usize = MIN_LEN + field::MAX_COUNTS * field::COUNT_LEN;

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
    /// An `Ack` that also asks the receiver to answer with its own `Ack` once it has read
    /// `sent` bytes (at once if it has).
    ReqAck {
        /// "I have received this many bytes", as in `Ack`.
        received: u32,
        /// The sender's count of bytes handed to TCP: answer once you have read up to
        /// here. A count the receiver has read already (the sender's acknowledged count,
        /// in a heartbeat) asks for an answer at once.
        sent: u32,
    },
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
    /// From the server, to a new address the client's datagrams came from: "answer this
    /// from there". The server sends its other datagrams to the new address only once the
    /// answer comes (path validation), or, before any address answered, within an
    /// anti-amplification allowance. The value is unpredictable (see `ChallengeKey`).
    Challenge(u64),
    /// From the client: the answer to the `Challenge` carrying this value.
    Response(u64),
    /// The sender closes TCP connection `epoch` on purpose once this is confirmed: the
    /// session goes passive, and neither side reconnects until one has something to send
    /// (paper section 6, "passivation"). Confirmed.
    Passivate(u32),
}

impl ControlKind {
    fn code(self) -> u8 {
        match self {
            ControlKind::Ack(_) => 1,
            ControlKind::ReqAck { .. } => 2,
            ControlKind::Close(_) => 3,
            ControlKind::HalfClose(_) => 4,
            ControlKind::Reset => 5,
            ControlKind::Conf => 6,
            ControlKind::Reconnect(_) => 7,
            ControlKind::Challenge(_) => 8,
            ControlKind::Response(_) => 9,
            ControlKind::Passivate(_) => 10,
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
                | ControlKind::Passivate(_)
        )
    }

    /// The length of the datagram that carries it: a header, its counts and a tag.
    pub fn datagram_len(self) -> usize {
        MIN_LEN + self.counts().1 * field::COUNT_LEN
    }

    /// The counts it carries after the header, and how many of the two there are.
    fn counts(self) -> ([u32; field::MAX_COUNTS], usize) {
        match self {
            ControlKind::Ack(n)
            | ControlKind::Close(n)
            | ControlKind::HalfClose(n)
            | ControlKind::Reconnect(n)
            | ControlKind::Passivate(n) => ([n, 0], 1),
            ControlKind::ReqAck { received, sent } => ([received, sent], 2),
            ControlKind::Challenge(value) | ControlKind::Response(value) => {
                // The halves: truncation is the point.
                ([(value >> 32) as u32, value as u32], 2)
            }
            ControlKind::Reset | ControlKind::Conf => ([0, 0], 0),
        }
    }
}

/// One control datagram's message.
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

/// Where a datagram claims to go, read before it is authenticated: only good for finding
/// the session whose key checks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The CID.
    pub cid: u32,
    /// Whether the sender claims to be the server side.
    pub from_server: bool,
}

impl ControlMessage {
    /// Writes the datagram with packet number `pn`, tagged with `key`, into `out` and
    /// returns its length.
    pub fn seal(&self, pn: u64, key: &MacKey, out: &mut [u8; MAX_LEN]) -> usize {
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
        BigEndian::write_u64(&mut out[field::PACKET_NUMBER], pn);
        let (counts, n) = self.kind.counts();
        let mut tagged = field::COUNTS;
        for count in &counts[..n] {
            BigEndian::write_u32(&mut out[tagged..tagged + field::COUNT_LEN], *count);
            tagged += field::COUNT_LEN;
        }
        let (message, tag) = out.split_at_mut(tagged);
        tag[..TAG_LEN].copy_from_slice(&key.tag(&[message]));
        tagged + TAG_LEN
    }

    /// The CID and side a datagram names, if it is long enough to name them.
    pub fn route(datagram: &[u8]) -> Option<Route> {
        let cid = datagram.get(field::CID)?;
        let flags = *datagram.get(field::FLAGS)?;
        Some(Route {
            cid: BigEndian::read_u32(cid),
            from_server: flags & FLAG_FROM_SERVER != 0,
        })
    }

    /// Checks a datagram's tag with `key`, then decodes it: its packet number and message.
    ///
    /// # Errors
    ///
    /// [`WireError::Malformed`] for a datagram of no length this version sends (32, 36
    /// or 40 bytes); [`WireError::Forged`] if the tag does not verify (nothing else is
    /// looked at then); [`WireError::Malformed`] for an authentic datagram that makes no
    /// sense (unknown type or flags, a confirmation flag that disagrees with its type, a
    /// length wrong for its type), which only a peer with the key, of another version,
    /// sends.
    pub fn open(datagram: &[u8], key: &MacKey) -> Result<(u64, Self), WireError> {
        let wrong_length = WireError::Malformed("control datagram of the wrong length");
        let counts = match datagram.len().checked_sub(MIN_LEN) {
            Some(extra) if extra % field::COUNT_LEN == 0 => extra / field::COUNT_LEN,
            _ => return Err(wrong_length),
        };
        if counts > field::MAX_COUNTS {
            return Err(wrong_length);
        }
        let (message, tag) = datagram.split_at(datagram.len() - TAG_LEN);
        if !key.verify(&[message], tag) {
            return Err(WireError::Forged);
        }
        // In range: `message` is the header and `counts` counts.
        let cid = BigEndian::read_u32(&message[field::CID]);
        let (code, flags) = (message[field::KIND], message[field::FLAGS]);
        let id = BigEndian::read_u16(&message[field::ID]);
        let pn = BigEndian::read_u64(&message[field::PACKET_NUMBER]);
        let count = |i: usize| {
            let at = field::COUNTS + i * field::COUNT_LEN;
            BigEndian::read_u32(&message[at..at + field::COUNT_LEN])
        };
        let value = || u64::from(count(0)) << 32 | u64::from(count(1));
        let kind = match (code, counts) {
            (1, 1) => ControlKind::Ack(count(0)),
            (2, 2) => ControlKind::ReqAck {
                received: count(0),
                sent: count(1),
            },
            (3, 1) => ControlKind::Close(count(0)),
            (4, 1) => ControlKind::HalfClose(count(0)),
            (5, 0) => ControlKind::Reset,
            (6, 0) => ControlKind::Conf,
            (7, 1) => ControlKind::Reconnect(count(0)),
            (8, 2) => ControlKind::Challenge(value()),
            (9, 2) => ControlKind::Response(value()),
            (10, 1) => ControlKind::Passivate(count(0)),
            (1..=10, _) => return Err(wrong_length),
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
        let msg = ControlMessage {
            cid,
            from_server: flags & FLAG_FROM_SERVER != 0,
            id,
            kind,
        };
        Ok((pn, msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::auth::{SessionKeys, NONCE_LEN, SECRET_LEN};
    use crate::core::session::Role;

    fn keys(role: Role) -> SessionKeys {
        SessionKeys::derive(&[1; SECRET_LEN], &[2; NONCE_LEN], role)
    }

    fn sealed(m: &ControlMessage, pn: u64) -> Vec<u8> {
        let mut buf = [0; MAX_LEN];
        let n = m.seal(pn, &keys(Role::Client).control.send, &mut buf);
        buf[..n].to_vec()
    }

    #[test]
    fn every_kind_round_trips() {
        let kinds = [
            ControlKind::Ack(1),
            ControlKind::ReqAck {
                received: u32::MAX,
                sent: 0x0102_0304,
            },
            ControlKind::Close(3),
            ControlKind::HalfClose(4),
            ControlKind::Reset,
            ControlKind::Conf,
            ControlKind::Reconnect(6),
            ControlKind::Challenge(0x0102_0304_0506_0708),
            ControlKind::Response(u64::MAX - 8),
            ControlKind::Passivate(9),
        ];
        let recv = keys(Role::Server).control.recv;
        for (i, kind) in kinds.into_iter().enumerate() {
            let m = ControlMessage {
                cid: 0x0102_0304,
                from_server: i % 2 == 0,
                id: i as u16,
                kind,
            };
            let d = sealed(&m, 1000 + i as u64);
            assert_eq!(d.len(), kind.datagram_len(), "{kind:?}");
            assert_eq!(ControlMessage::open(&d, &recv), Ok((1000 + i as u64, m)));
            let route = Route {
                cid: m.cid,
                from_server: m.from_server,
            };
            assert_eq!(ControlMessage::route(&d), Some(route));
        }
    }

    #[test]
    fn ack_layout_matches_the_protocol_document() {
        let m = ControlMessage {
            cid: 0x0a0b_0c0d,
            from_server: true,
            id: 0x0102,
            kind: ControlKind::Ack(0x1122_3344),
        };
        let d = sealed(&m, 0x0102_0304_0506_0708);
        assert_eq!(d.len(), 36);
        assert_eq!(
            d[..20],
            [0x0a, 0x0b, 0x0c, 0x0d, 1, 2, 1, 2, 1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x22, 0x33, 0x44]
        );
        let tag = keys(Role::Client).control.send.tag(&[&d[..20]]);
        assert_eq!(d[20..], tag);
        assert_eq!(
            sealed(
                &ControlMessage {
                    kind: ControlKind::Conf,
                    ..m
                },
                0
            )
            .len(),
            32
        );
        let req_ack = ControlMessage {
            kind: ControlKind::ReqAck {
                received: 0x1122_3344,
                sent: 0x5566_7788,
            },
            ..m
        };
        let d = sealed(&req_ack, 0x0102_0304_0506_0708);
        assert_eq!(d.len(), 40);
        assert_eq!(d[4], 2);
        assert_eq!(d[16..24], [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
        let tag = keys(Role::Client).control.send.tag(&[&d[..24]]);
        assert_eq!(d[24..], tag);
        // A challenge's 64-bit value: high half first, where REQ_ACK's counts go.
        let challenge = ControlMessage {
            kind: ControlKind::Challenge(0x1122_3344_5566_7788),
            ..m
        };
        let d = sealed(&challenge, 0);
        assert_eq!((d.len(), d[4], d[5]), (40, 8, FLAG_FROM_SERVER));
        assert_eq!(d[16..24], [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
    }

    #[test]
    fn forged_and_malformed_datagrams_are_errors() {
        let recv = keys(Role::Server).control.recv;
        let m = ControlMessage {
            cid: 5,
            from_server: false,
            id: 9,
            kind: ControlKind::Close(100),
        };
        let good = sealed(&m, 3);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            assert_eq!(
                ControlMessage::open(&bad, &recv),
                Err(WireError::Forged),
                "byte {i}"
            );
        }
        let wrong_key = keys(Role::Client).control.recv;
        assert_eq!(
            ControlMessage::open(&good, &wrong_key),
            Err(WireError::Forged)
        );
        for len in [0, 7, 8, 31, 33, 35, 37, 39, 41, 44, 64] {
            let d = vec![0; len];
            assert!(ControlMessage::open(&d, &recv).is_err(), "length {len}");
        }
        assert_eq!(ControlMessage::route(&[0, 0, 0]), None);
        // Authentic but senseless: a RESET with a count, an unknown type or flag.
        let send = keys(Role::Client).control.send;
        let authentic = |mut body: Vec<u8>| {
            let tag = send.tag(&[&body]);
            body.extend_from_slice(&tag);
            body
        };
        let mut reset_with_count = vec![0, 0, 0, 5, 5, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        reset_with_count.extend([0, 0, 0, 0]);
        // A REQ_ACK with one count (the previous version's), an ACK with two.
        let mut req_ack_short = vec![0, 0, 0, 5, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        req_ack_short.extend([0, 0, 0, 9]);
        let mut ack_long = vec![0, 0, 0, 5, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        ack_long.extend([0, 0, 0, 9, 0, 0, 0, 9]);
        // A RESPONSE with a 32-bit value (the previous version's).
        let mut response_short = vec![0, 0, 0, 5, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        response_short.extend([0, 0, 0, 0]);
        let unknown_type = vec![0, 0, 0, 5, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let unknown_flag = vec![0, 0, 0, 5, 6, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let reset_unflagged = vec![0, 0, 0, 5, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        for body in [
            reset_with_count,
            req_ack_short,
            ack_long,
            response_short,
            unknown_type,
            unknown_flag,
            reset_unflagged,
        ] {
            let d = authentic(body);
            assert!(matches!(
                ControlMessage::open(&d, &recv),
                Err(WireError::Malformed(_))
            ));
        }
    }
}
