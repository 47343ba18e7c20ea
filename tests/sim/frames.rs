//! Handshake frames on a simulated connection, read whole once arrived.

use std::collections::VecDeque;

use robust_tcp::protocol::handshake::{FrameHeader, FrameKind, HEADER_LEN};

/// What the front of a pipe holds.
pub enum Front {
    /// Not a whole frame yet.
    Partial,
    /// A frame of this kind, with its body (taken off the pipe).
    Frame(FrameKind, Vec<u8>),
    /// Bytes that are not a robust-tcp frame (taken off the pipe).
    Garbage,
}

/// Takes one frame off the front of `pipe` if it has arrived whole.
pub fn take(pipe: &mut VecDeque<u8>) -> Front {
    if pipe.len() < HEADER_LEN {
        return Front::Partial;
    }
    let mut header = [0; HEADER_LEN];
    for (h, b) in header.iter_mut().zip(pipe.iter()) {
        *h = *b;
    }
    let Ok(h) = FrameHeader::parse(&header) else {
        pipe.clear();
        return Front::Garbage;
    };
    if pipe.len() < HEADER_LEN + h.body_len {
        return Front::Partial;
    }
    pipe.drain(..HEADER_LEN);
    Front::Frame(h.kind, pipe.drain(..h.body_len).collect())
}
