//! The control datagram decoder on arbitrary bytes: it must return an error, never panic,
//! and whatever it accepts must re-encode to the very same bytes.
//!
//! Protocol API used (today's, v1): `ControlMessage::parse(&[u8])`,
//! `ControlMessage::encode(&mut [u8; MAX_LEN]) -> usize`, `MAX_LEN`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use robust_tcp::protocol::control::{ControlMessage, MAX_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = ControlMessage::parse(data) else {
        return;
    };
    let mut buf = [0; MAX_LEN];
    let n = msg.encode(&mut buf);
    assert_eq!(
        &buf[..n],
        data,
        "{msg:?} does not re-encode to its datagram"
    );
    assert_eq!(ControlMessage::parse(&buf[..n]), Ok(msg));
});
