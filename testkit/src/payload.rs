//! Deterministic pseudo-random payloads, generated and checked chunk by chunk so that a
//! 64 MiB transfer needs no 64 MiB buffers.

use std::io::{self, Read, Write};
use std::ops::Range;

use crate::rng::{splitmix64, Rng};

/// Size of the chunks read while checking.
const READ_CHUNK: usize = 64 * 1024;
/// Largest single `write` call; sizes vary so the session sees small and large writes.
const MAX_WRITE: u64 = 64 * 1024;

/// `len` bytes whose value at offset `i` depends only on `(seed, i)`.
///
/// A lost, duplicated or reordered byte shifts the stream and shows up as a mismatch at a
/// precise offset; the writer and the checker regenerate the bytes independently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payload {
    key: u64,
    seed: u64,
    len: u64,
}

impl Payload {
    /// The payload of `len` bytes for `seed`.
    pub fn new(seed: u64, len: u64) -> Payload {
        Payload {
            key: splitmix64(seed ^ 0x5041_594C_4F41_4421),
            seed,
            len,
        }
    }

    /// Its length in bytes.
    // A payload is a stream to send, never a collection asked whether it is empty.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Fills `buf` with bytes `offset..offset + buf.len()` of the stream (which continues
    /// past `len`, so callers must stay within it themselves).
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        let mut pos = offset;
        let mut done = 0;
        while done < buf.len() {
            // One 8-byte word per 8 offsets keeps generation cheap (~1 ns a byte).
            let word = splitmix64(self.key ^ (pos / 8)).to_le_bytes();
            let start = (pos % 8) as usize;
            let n = (8 - start).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&word[start..start + n]);
            done += n;
            pos += n as u64;
        }
    }

    /// The bytes in `range` (for small payloads and for tests of this module).
    pub fn bytes(&self, range: Range<u64>) -> Vec<u8> {
        let mut out = vec![0; (range.end - range.start) as usize];
        self.fill(range.start, &mut out);
        out
    }

    /// Writes the whole payload to `w` in calls of varying sizes (1 byte to 64 KiB, chosen
    /// from the seed), so that the session sees tiny and large writes.
    ///
    /// # Errors
    ///
    /// The first error of `w`.
    pub fn write_to<W: Write>(&self, mut w: W) -> io::Result<()> {
        let mut sizes = Rng::new(self.seed);
        let mut buf = vec![0; MAX_WRITE as usize];
        let mut pos = 0;
        while pos < self.len {
            let want = if sizes.chance(10) {
                sizes.range(1, 64)
            } else {
                sizes.range(1, MAX_WRITE)
            };
            let n = want.min(self.len - pos) as usize;
            self.fill(pos, &mut buf[..n]);
            w.write_all(&buf[..n])?;
            pos += n as u64;
        }
        w.flush()
    }

    /// Reads exactly the bytes in `range` from `r` and checks each one.
    ///
    /// # Errors
    ///
    /// The reader's own error (its kind kept, the offset added to the message),
    /// [`io::ErrorKind::UnexpectedEof`] if the stream ends early, or
    /// [`io::ErrorKind::InvalidData`] naming the first wrong byte.
    pub fn verify_range<R: Read>(&self, mut r: R, range: Range<u64>) -> io::Result<()> {
        let mut got = vec![0; READ_CHUNK];
        let mut want = vec![0; READ_CHUNK];
        let mut pos = range.start;
        while pos < range.end {
            let max = (range.end - pos).min(READ_CHUNK as u64) as usize;
            let n = match r.read(&mut got[..max]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("stream ended after {pos} of {} bytes", range.end),
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("read failed after {pos} of {} bytes: {e}", range.end),
                    ))
                }
            };
            self.fill(pos, &mut want[..n]);
            if let Some(i) = got[..n].iter().zip(&want[..n]).position(|(g, w)| g != w) {
                return Err(mismatch(pos + i as u64, got[i], want[i]));
            }
            pos += n as u64;
        }
        Ok(())
    }

    /// Reads the whole payload from `r`, checking every byte, then requires end of stream.
    ///
    /// # Errors
    ///
    /// As [`verify_range`](Self::verify_range), and [`io::ErrorKind::InvalidData`] if
    /// bytes follow the payload.
    pub fn verify_from<R: Read>(&self, mut r: R) -> io::Result<()> {
        self.verify_range(&mut r, 0..self.len)?;
        expect_eof(r, self.len)
    }
}

/// Requires that `r` is at end of stream, `len` bytes into it (for the message).
///
/// # Errors
///
/// The reader's error, or [`io::ErrorKind::InvalidData`] if a byte arrives.
pub fn expect_eof<R: Read>(mut r: R, len: u64) -> io::Result<()> {
    let mut extra = [0u8; 256];
    loop {
        match r.read(&mut extra) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{n} unexpected bytes after the {len}-byte payload"),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("read after the {len}-byte payload failed instead of Ok(0): {e}"),
                ))
            }
        }
    }
}

fn mismatch(offset: u64, got: u8, want: u8) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("byte {offset} is {got:#04x}, expected {want:#04x} (lost, duplicated or reordered data)"),
    )
}
