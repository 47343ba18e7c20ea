//! Reading and writing handshake frames on a TCP stream.

use std::io::{self, Read, Write};

use crate::core::handshake::{FrameHeader, FrameKind, HEADER_LEN};
use crate::core::WireError;

/// Writes one encoded frame.
pub(crate) fn write_frame(mut stream: impl Write, frame: &[u8]) -> io::Result<()> {
    stream.write_all(frame)
}

/// Reads one frame of the expected kind and returns its body. Reads exactly the frame's
/// bytes, so application bytes that follow stay in the stream.
///
/// # Errors
///
/// I/O errors as they come (a cut connection gives `UnexpectedEof` or a reset), and
/// `InvalidData` wrapping a [`WireError`] for bytes that are not the expected frame.
pub(crate) fn read_frame(mut stream: impl Read, expected: FrameKind) -> io::Result<Vec<u8>> {
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header)?;
    let header = FrameHeader::parse(&header).map_err(invalid)?;
    if header.kind != expected {
        return Err(invalid(WireError::Malformed("unexpected handshake frame")));
    }
    let mut body = vec![0u8; header.body_len];
    stream.read_exact(&mut body)?;
    Ok(body)
}

/// Wraps a decoding error as `InvalidData`.
pub(crate) fn invalid(e: WireError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The [`WireError`] inside an I/O error from [`read_frame`], if that is what it is.
pub(crate) fn wire_error(e: &io::Error) -> Option<WireError> {
    e.get_ref()?.downcast_ref::<WireError>().copied()
}
