//! Ordinary TCP peers, recognised without costing them a byte: which first bytes make a
//! server's connection a robust-tcp handshake, an ordinary client's (with
//! `Config::accept_plain_tcp`) or a client's probe; and what a probing client
//! (`Config::fallback_to_plain_tcp`) makes of what its probe heard. Both sides decide on
//! the fewest bytes that settle the question, so that a peer that is not robust-tcp is
//! recognised at its first byte that differs.
//!
//! A probe is a connection its client closes for writing at once, without a byte: an
//! ordinary server's application sees a connection that sends nothing, and a robust-tcp
//! server, for which no client ever does that, answers with [`GREETING`] and closes.

use crate::core::handshake::{HEADER_LEN, MAGIC, VERSION};

/// The frame kind of [`GREETING`]. Nobody parses it as a frame (a probing client compares
/// the greeting whole), so it is not among the kinds a frame reader accepts.
const GREETING_KIND: u8 = 5;

/// What a robust-tcp server writes on a connection that ended before its first byte (a
/// probe): a handshake header of kind 5 with no body.
pub const GREETING: [u8; HEADER_LEN] = [
    MAGIC[0],
    MAGIC[1],
    MAGIC[2],
    MAGIC[3],
    VERSION,
    GREETING_KIND,
    0,
    0,
];

/// What a server's connection is, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// Too few bytes to tell: wait for more.
    Wait,
    /// Read a handshake frame: the peer sent robust-tcp's magic (or, with ordinary
    /// clients not accepted, anything at all: the frame reader turns a stranger away).
    Frame,
    /// An ordinary TCP client: its bytes are its application's.
    Plain,
    /// A probe: it ended before its first byte.
    Probe,
}

/// What the connection whose first bytes are `first` (perhaps none yet) is, `ended` if
/// the peer sent its end of stream after them; `accept_plain` if ordinary clients are
/// accepted. A robust-tcp client's first bytes are the magic, so the first byte that
/// differs from it settles the question.
pub fn sniff(first: &[u8], ended: bool, accept_plain: bool) -> Sniffed {
    let n = first.len().min(MAGIC.len());
    let like_magic = first.get(..n) == MAGIC.get(..n);
    let stranger = if accept_plain {
        Sniffed::Plain
    } else {
        Sniffed::Frame
    };
    match (n, like_magic) {
        (0, _) if ended => Sniffed::Probe,
        (0, _) => Sniffed::Wait,
        (_, false) => stranger,
        (n, true) if n == MAGIC.len() => Sniffed::Frame,
        // A prefix of the magic and nothing more will come: no robust-tcp client.
        (_, true) if ended => stranger,
        (_, true) => Sniffed::Wait,
    }
}

/// What a probe heard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probed {
    /// Too few bytes to tell: wait for more (or for the probe's time to run out, which
    /// makes the server an ordinary one).
    Wait,
    /// The server greeted the probe: it speaks robust-tcp.
    Robust,
    /// Anything else (other bytes, or the end of the stream first): an ordinary server.
    Plain,
}

/// What the probe that read `got` (at most [`GREETING`]'s length) heard, `ended` if the
/// server's end of stream followed.
pub fn probed(got: &[u8], ended: bool) -> Probed {
    let n = got.len().min(GREETING.len());
    match (got.get(..n) == GREETING.get(..n), n == GREETING.len()) {
        (false, _) => Probed::Plain,
        (true, true) => Probed::Robust,
        (true, false) if ended => Probed::Plain,
        (true, false) => Probed::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::auth::{SessionKeys, NONCE_LEN, SECRET_LEN};
    use crate::core::handshake::{Control, FrameHeader, Hello};
    use crate::core::session::Role;

    #[test]
    fn a_hello_and_a_control_connection_are_frames_at_their_magic() {
        let (secret, nonce) = ([1; SECRET_LEN], [2; NONCE_LEN]);
        let keys = SessionKeys::derive(&secret, &nonce, Role::Client);
        let hello = Hello::opening(nonce, 0, nonce, secret, &keys.handshake.client);
        let frames = [
            hello.encode().to_vec(),
            Control { cid: 1 }.encode().to_vec(),
        ];
        for frame in frames {
            for accept_plain in [false, true] {
                for n in 1..MAGIC.len() {
                    assert_eq!(sniff(&frame[..n], false, accept_plain), Sniffed::Wait);
                }
                for n in MAGIC.len()..=frame.len() {
                    assert_eq!(sniff(&frame[..n], false, accept_plain), Sniffed::Frame);
                }
            }
        }
    }

    #[test]
    fn a_stranger_is_known_at_its_first_byte_that_is_not_the_magic() {
        for first in [
            &b"G"[..],
            b"GET / HTTP/1.1\r\n",
            b"*1\r\n$4\r\nPING\r\n",
            b"RX",
            b"RTCX",
        ] {
            assert_eq!(sniff(first, false, true), Sniffed::Plain, "{first:?}");
            assert_eq!(sniff(first, true, true), Sniffed::Plain, "{first:?}");
            // Without ordinary clients, the frame reader turns it away as before.
            assert_eq!(sniff(first, false, false), Sniffed::Frame, "{first:?}");
        }
        // A prefix of the magic, then the end: nothing robust follows.
        assert_eq!(sniff(b"RT", true, true), Sniffed::Plain);
        assert_eq!(sniff(b"RT", true, false), Sniffed::Frame);
    }

    #[test]
    fn silence_waits_and_an_empty_stream_is_a_probe() {
        for accept_plain in [false, true] {
            assert_eq!(sniff(&[], false, accept_plain), Sniffed::Wait);
            assert_eq!(sniff(&[], true, accept_plain), Sniffed::Probe);
        }
    }

    #[test]
    fn the_greeting_is_a_header_of_this_version_that_no_reader_takes_for_a_frame() {
        assert_eq!(GREETING[..4], MAGIC);
        assert_eq!(GREETING[4], VERSION);
        assert!(FrameHeader::parse(&GREETING).is_err());
    }

    #[test]
    fn a_probe_is_robust_only_on_the_whole_greeting() {
        for n in 0..GREETING.len() {
            assert_eq!(probed(&GREETING[..n], false), Probed::Wait);
            assert_eq!(probed(&GREETING[..n], true), Probed::Plain);
        }
        assert_eq!(probed(&GREETING, false), Probed::Robust);
        assert_eq!(probed(&GREETING, true), Probed::Robust);
        assert_eq!(probed(b"SSH-2.0-", false), Probed::Plain);
        assert_eq!(probed(b"R", false), Probed::Wait);
        assert_eq!(probed(b"RTCP\x03", false), Probed::Plain);
    }
}
