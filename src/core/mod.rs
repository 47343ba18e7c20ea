//! The protocol core: wire formats, counters, the send buffer and the session state
//! machine. Nothing here does I/O or reads the clock; the engine passes time in.

pub(crate) mod agreement;
pub(crate) mod auth;
pub(crate) mod backoff;
pub(crate) mod control;
pub(crate) mod counter;
pub(crate) mod early;
pub(crate) mod endpoint;
pub(crate) mod handshake;
pub(crate) mod replay;
pub(crate) mod send_buffer;
pub(crate) mod session;

use std::fmt;
use std::time::Instant;

/// The earlier of two optional deadlines.
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Bytes from a peer that do not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The bytes do not start with the robust-tcp magic: the peer speaks another protocol.
    NotRobust,
    /// The peer speaks another version of the protocol.
    Version(u8),
    /// The bytes are a robust-tcp message, but a broken one.
    Malformed(&'static str),
    /// The message's authentication tag does not verify: it was forged, corrupted, or
    /// made with another session's key.
    Forged,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::NotRobust => f.write_str("the peer does not speak robust-tcp"),
            WireError::Version(v) => write!(f, "the peer speaks robust-tcp version {v}"),
            WireError::Malformed(what) => write!(f, "malformed robust-tcp message: {what}"),
            WireError::Forged => f.write_str("robust-tcp message with a wrong tag"),
        }
    }
}

impl std::error::Error for WireError {}
