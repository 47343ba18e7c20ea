//! The tunnel's one piece of framing: before it relays anything, `rtcp server` writes a
//! status on each session, so that the client learns why a session fails when the server
//! cannot reach its target, and not only that the session was reset.
//!
//! The status is one byte: [`OK`], after which the session carries the target's bytes
//! unchanged; or [`TARGET_FAILED`], followed by one byte of length and that many bytes of
//! UTF-8 (at most 255), the reason, after which the server closes the session.

use std::fmt;
use std::io::{self, Read, Write};

/// The server reached its target: the target's bytes follow.
pub const OK: u8 = 0;
/// The server could not reach its target: a length byte and the reason follow.
pub const TARGET_FAILED: u8 = 1;

/// The reason the server gave for not reaching its target, carried inside the
/// `io::Error` that [`read`] returns (kind `ConnectionRefused`).
#[derive(Debug)]
pub struct TargetFailed(pub String);

impl fmt::Display for TargetFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TargetFailed {}

/// Writes the status that says the target's bytes follow.
pub fn write_ok(mut out: impl Write) -> io::Result<()> {
    out.write_all(&[OK])
}

/// Writes the status that says the target could not be reached, and why (cut to 255
/// bytes, at a character boundary).
pub fn write_failure(mut out: impl Write, reason: &str) -> io::Result<()> {
    let mut end = reason.len().min(usize::from(u8::MAX));
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut frame = vec![TARGET_FAILED, end as u8];
    frame.extend_from_slice(&reason.as_bytes()[..end]);
    out.write_all(&frame)
}

/// Reads the server's status: `Ok` if the target's bytes follow, or the server's reason
/// (a [`TargetFailed`]), or `InvalidData` for a status this version does not know.
pub fn read(mut input: impl Read) -> io::Result<()> {
    let mut status = [0u8; 2];
    input.read_exact(&mut status[..1])?;
    match status[0] {
        OK => Ok(()),
        TARGET_FAILED => {
            input.read_exact(&mut status[1..])?;
            let mut reason = vec![0u8; usize::from(status[1])];
            input.read_exact(&mut reason)?;
            let reason = String::from_utf8_lossy(&reason).into_owned();
            Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                TargetFailed(reason),
            ))
        }
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the server sent an unknown tunnel status {other} (another rtcp version?)"),
        )),
    }
}

/// What the server says when `target` (as the operator wrote it) cannot be reached.
pub fn target_failure(target: &str, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => format!("target {target} refused the connection"),
        io::ErrorKind::TimedOut => format!("target {target} did not answer the connection"),
        _ => format!("target {target} cannot be reached: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_is_one_byte_and_the_stream_follows() {
        let mut wire = Vec::new();
        write_ok(&mut wire).unwrap();
        wire.extend_from_slice(b"PONG");
        let mut input = &wire[..];
        read(&mut input).unwrap();
        assert_eq!(input, b"PONG");
    }

    #[test]
    fn a_failure_carries_its_reason() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let reason = target_failure("127.0.0.1:6379", &refused);
        assert_eq!(reason, "target 127.0.0.1:6379 refused the connection");
        let mut wire = Vec::new();
        write_failure(&mut wire, &reason).unwrap();
        assert_eq!(wire[..2], [TARGET_FAILED, reason.len() as u8]);
        assert_eq!(&wire[2..], reason.as_bytes());
        let e = read(&wire[..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(e.to_string(), reason);
        assert!(e.get_ref().unwrap().is::<TargetFailed>());
    }

    #[test]
    fn a_long_reason_is_cut_at_a_character() {
        let reason = "é".repeat(200);
        let mut wire = Vec::new();
        write_failure(&mut wire, &reason).unwrap();
        assert_eq!(wire[1], 254);
        assert_eq!(read(&wire[..]).unwrap_err().to_string(), "é".repeat(127));
    }

    #[test]
    fn truncated_or_unknown_statuses_fail_without_panic() {
        for wire in [&[][..], &[TARGET_FAILED], &[TARGET_FAILED, 5, b'a'], &[7]] {
            assert!(read(wire).is_err(), "{wire:?}");
        }
    }
}
