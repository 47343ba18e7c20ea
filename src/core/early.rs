//! The EARLY datagram: a client's word, sent right behind its opening HELLO, of where its
//! datagrams come from, so that a new session's server can send its first control messages
//! (a short exchange's CLOSE) before the client's first authenticated datagram, which can
//! only follow the ANSWER (it needs the CID and, with the key agreement, the keys).
//!
//! It goes only to a control address the client learned from this server's ANSWER to an
//! earlier session (`endpoint::early::ControlMemo`), and names the opening by the HELLO's
//! opening nonce, which the HELLO carries in clear: it proves nothing, so all it can earn is
//! the anti-amplification allowance of an address the server has heard nothing else from
//! (`session::path`). A server that does not know it drops it, as any datagram naming no
//! session. See `docs/PROTOCOL.md` section 5.

use byteorder::{BigEndian, ByteOrder};

use super::auth::{Nonce, NONCE_LEN};

/// Byte offsets of the fields of an EARLY datagram.
mod field {
    /// The CID field of every control datagram: 0, which names no session.
    pub(super) const CID: std::ops::Range<usize> = 0..4;
    pub(super) const KIND: usize = 4;
    /// Flags and message id: zeros.
    pub(super) const ZEROS: std::ops::Range<usize> = 5..8;
    pub(super) const OPENING_NONCE: std::ops::Range<usize> = 8..24;
    /// Zeros up to [`super::LEN`].
    pub(super) const PADDING: std::ops::RangeFrom<usize> = 24..;
}

/// The type code, after the authenticated datagrams' 1 to 10.
pub const KIND: u8 = 11;

/// Its length: as long as the longest authenticated datagram, so that the allowance it
/// earns, three times its bytes (120), covers a CLOSE, an ACK and a challenge (36, 36
/// and 40 bytes).
pub const LEN: usize = 40;

/// The EARLY datagram of the opening whose HELLO carries `opening_nonce`.
pub fn encode(opening_nonce: &Nonce) -> [u8; LEN] {
    let mut out = [0u8; LEN];
    BigEndian::write_u32(&mut out[field::CID], 0);
    out[field::KIND] = KIND;
    out[field::OPENING_NONCE].copy_from_slice(opening_nonce);
    out
}

/// The opening nonce an EARLY datagram names, if `datagram` is one: exactly [`LEN`]
/// bytes, CID 0, its type, and zeros where it has no field.
pub fn parse(datagram: &[u8]) -> Option<Nonce> {
    if datagram.len() != LEN
        || datagram.get(field::CID)? != [0; 4]
        || *datagram.get(field::KIND)? != KIND
    {
        return None;
    }
    let zeros = |range: &[u8]| range.iter().all(|&b| b == 0);
    if !zeros(datagram.get(field::ZEROS)?) || !zeros(datagram.get(field::PADDING)?) {
        return None;
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(datagram.get(field::OPENING_NONCE)?);
    // An opening nonce is never all zeros (a HELLO with one is refused).
    (nonce != [0; NONCE_LEN]).then_some(nonce)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::auth::{SessionKeys, SECRET_LEN};
    use crate::core::control::{ControlKind, ControlMessage, MAX_LEN};
    use crate::core::session::Role;

    #[test]
    fn an_early_datagram_round_trips() {
        let nonce = [7u8; NONCE_LEN];
        let datagram = encode(&nonce);
        assert_eq!(parse(&datagram), Some(nonce));
        assert_eq!(
            LEN, MAX_LEN,
            "as long as the longest authenticated datagram"
        );
        let first_round_trip = ControlKind::Close(0).datagram_len()
            + ControlKind::Ack(0).datagram_len()
            + ControlKind::Challenge(0).datagram_len();
        assert!(3 * LEN >= first_round_trip);
    }

    #[test]
    fn anything_else_is_not_an_early_datagram() {
        let good = encode(&[7u8; NONCE_LEN]);
        assert_eq!(parse(&good[..LEN - 1]), None, "short");
        assert_eq!(parse(&[good.as_slice(), &[0]].concat()), None, "long");
        assert_eq!(parse(&encode(&[0; NONCE_LEN])), None, "a zero nonce");
        for at in (0..8).chain(24..LEN) {
            let mut bad = good;
            bad[at] ^= 1;
            assert_eq!(parse(&bad), None, "byte {at} changed");
        }
        // An authenticated datagram of the same length is not one, whatever its CID.
        let mut sealed = [0u8; MAX_LEN];
        let msg = ControlMessage {
            cid: 0,
            from_server: false,
            id: 0,
            kind: ControlKind::Challenge(0),
        };
        let keys = SessionKeys::derive(&[1; SECRET_LEN], &[2; NONCE_LEN], Role::Client);
        let n = msg.seal(0, &keys.control.send, &mut sealed);
        assert_eq!(parse(&sealed[..n]), None);
    }
}
