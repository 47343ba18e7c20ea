//! Handshake frames on a non-blocking TCP stream: reading exactly one frame, whatever the
//! peer sends and however it splits it, and writing one small frame.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use crate::core::handshake::{FrameHeader, FrameKind, HEADER_LEN};
use crate::core::WireError;

/// Accumulates one handshake frame from a non-blocking stream. Reads exactly the frame's
/// bytes (header, then the body length it announces), so application bytes that follow
/// stay in the stream for the application.
#[derive(Debug)]
pub(crate) struct FrameReader {
    /// The kinds accepted: another is an error as soon as its header is read.
    expected: &'static [FrameKind],
    /// The kind read, once the header is.
    kind: Option<FrameKind>,
    header: [u8; HEADER_LEN],
    header_len: usize,
    /// The body, once the header is known; its length is the announced one.
    body: Option<Vec<u8>>,
    body_len: usize,
}

/// What reading a frame came to.
#[derive(Debug)]
pub(crate) enum FrameRead {
    /// The whole frame: its body.
    Done(Vec<u8>),
    /// More bytes are needed; wait for the stream to be readable again.
    Pending,
}

/// Why reading a frame failed.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The stream failed or ended before the frame did.
    Io(io::Error),
    /// The bytes are not the expected frame.
    Wire(WireError),
}

impl FrameReader {
    /// A reader waiting for a frame of a kind in `expected`.
    pub(crate) fn new(expected: &'static [FrameKind]) -> Self {
        FrameReader {
            expected,
            kind: None,
            header: [0; HEADER_LEN],
            header_len: 0,
            body: None,
            body_len: 0,
        }
    }

    /// The kind of the frame, once its header is read.
    pub(crate) fn kind(&self) -> Option<FrameKind> {
        self.kind
    }

    /// Reads what the stream has, up to the end of the frame.
    pub(crate) fn poll(&mut self, mut stream: impl Read) -> Result<FrameRead, FrameError> {
        loop {
            let target = match &mut self.body {
                Some(body) => body.get_mut(self.body_len..).unwrap_or_default(),
                None => self.header.get_mut(self.header_len..).unwrap_or_default(),
            };
            if target.is_empty() {
                if let Some(body) = self.body.take() {
                    return Ok(FrameRead::Done(body));
                }
                let header = FrameHeader::parse(&self.header).map_err(FrameError::Wire)?;
                if !self.expected.contains(&header.kind) {
                    return Err(FrameError::Wire(WireError::Malformed(
                        "unexpected handshake frame",
                    )));
                }
                self.kind = Some(header.kind);
                self.body = Some(vec![0; header.body_len]);
                continue;
            }
            match stream.read(target) {
                Ok(0) => {
                    return Err(FrameError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection ended inside a handshake frame",
                    )))
                }
                Ok(n) if self.body.is_some() => self.body_len += n,
                Ok(n) => self.header_len += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(FrameRead::Pending),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(FrameError::Io(e)),
            }
        }
    }
}

/// A TCP stream read without blocking whatever mode its socket is in: `recv` with
/// `MSG_DONTWAIT`. The engine reads a client's opening ANSWER this way from the connection
/// that the application already writes to in blocking mode (the application reads only
/// once the ANSWER is consumed).
pub(crate) struct DontWait<'a>(pub(crate) &'a TcpStream);

impl Read for DontWait<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        rustix::net::recv(self.0, buf, rustix::net::RecvFlags::DONTWAIT)
            .map(|(n, _)| n)
            .map_err(io::Error::from)
    }
}

/// Writes a whole small frame to a non-blocking stream in one call.
///
/// Handshake frames are a few dozen bytes, written first on a fresh connection or after
/// the peer's frame was read (so the peer is not sending): the kernel's send buffer always
/// has room for them. A stream that takes less than the whole frame is treated as failed
/// rather than kept in a partial-write state that no honest peer causes.
pub(crate) fn write_frame(mut stream: impl Write, frame: &[u8]) -> io::Result<()> {
    match stream.write(frame)? {
        n if n == frame.len() => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "a handshake frame did not fit the connection's send buffer",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::handshake::Confirm;

    /// A stream that yields its bytes in the given pieces, then `WouldBlock`.
    struct Pieces(Vec<Vec<u8>>);

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.retain(|p| !p.is_empty());
            let Some(piece) = self.0.first_mut() else {
                return Err(io::ErrorKind::WouldBlock.into());
            };
            let n = piece.len().min(buf.len());
            buf[..n].copy_from_slice(&piece[..n]);
            piece.drain(..n);
            if piece.is_empty() {
                self.0.remove(0);
            }
            Ok(n)
        }
    }

    #[test]
    fn reads_a_frame_split_anywhere_and_nothing_after_it() {
        let frame = Confirm {
            cid: 7,
            tag: [7; 16],
        }
        .encode();
        for split in 0..frame.len() {
            let mut stream = Pieces(vec![frame[..split].to_vec()]);
            let mut reader = FrameReader::new(&[FrameKind::Confirm]);
            assert!(matches!(reader.poll(&mut stream), Ok(FrameRead::Pending)));
            let mut rest = frame[split..].to_vec();
            rest.extend_from_slice(b"application");
            let mut stream = Pieces(vec![rest]);
            let Ok(FrameRead::Done(body)) = reader.poll(&mut stream) else {
                panic!("split at {split}: no frame");
            };
            assert_eq!(
                Confirm::parse(&body),
                Ok(Confirm {
                    cid: 7,
                    tag: [7; 16]
                })
            );
            assert_eq!(stream.0, [b"application".to_vec()], "read past the frame");
        }
    }

    #[test]
    fn foreign_bytes_and_early_ends_are_errors() {
        let mut reader = FrameReader::new(&[FrameKind::Hello]);
        let r = reader.poll(Pieces(vec![b"GET / HTTP/1.1\r\n".to_vec()]));
        assert!(matches!(r, Err(FrameError::Wire(WireError::NotRobust))));
        let mut reader = FrameReader::new(&[FrameKind::Hello]);
        let r = reader.poll(Pieces(vec![Confirm {
            cid: 1,
            tag: [1; 16],
        }
        .encode()
        .to_vec()]));
        assert!(matches!(r, Err(FrameError::Wire(WireError::Malformed(_)))));
        let mut reader = FrameReader::new(&[FrameKind::Confirm]);
        let r = reader.poll(&b"RTC"[..]);
        assert!(matches!(r, Err(FrameError::Io(_))));
    }
}
