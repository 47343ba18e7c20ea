//! The handshake frame decoders on arbitrary bytes: the first 8 bytes as a frame header,
//! the rest as each body. They must return errors, never panic, and agree with the
//! encoders on everything they accept.
//!
//! Protocol API used: `FrameHeader::parse(&[u8; HEADER_LEN])` and its `kind` and
//! `body_len`; `Hello::parse`, `Answer::parse`, `Confirm::parse`, `Control::parse` on a
//! body; their `encode()` (the whole frame) and `BODY_LEN`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use robust_tcp::protocol::handshake::{
    Answer, Confirm, Control, FrameHeader, FrameKind, Hello, HEADER_LEN,
};

fuzz_target!(|data: &[u8]| {
    let (header, rest) = match data.split_first_chunk::<HEADER_LEN>() {
        Some((header, rest)) => (Some(header), rest),
        None => (None, data),
    };

    // Every body decoder on whatever follows the header, as a confused peer would send it.
    hello(rest);
    answer(rest);
    confirm(rest);
    control(rest);

    // The header, and the body it announces, as the engine's frame reader passes it on.
    let Some(bytes) = header else { return };
    let Ok(parsed) = FrameHeader::parse(bytes) else {
        return;
    };
    let Some(body) = rest.get(..parsed.body_len) else {
        return;
    };
    // Each encoder writes this version's header; a header that announces exactly that
    // body length must be the same bytes.
    let (encoded, this_len) = match parsed.kind {
        FrameKind::Hello => (hello(body).map(|h| h.encode().to_vec()), Hello::BODY_LEN),
        FrameKind::Answer => (answer(body).map(|a| a.encode().to_vec()), Answer::BODY_LEN),
        FrameKind::Confirm => (
            confirm(body).map(|c| c.encode().to_vec()),
            Confirm::BODY_LEN,
        ),
        FrameKind::Control => (
            control(body).map(|c| c.encode().to_vec()),
            Control::BODY_LEN,
        ),
    };
    if let Some(frame) = encoded {
        let reparsed = FrameHeader::parse(frame[..HEADER_LEN].try_into().unwrap());
        assert_eq!(reparsed.map(|h| h.kind), Ok(parsed.kind));
        if parsed.body_len == this_len {
            assert_eq!(
                &frame[..HEADER_LEN],
                &bytes[..],
                "header does not re-encode"
            );
        }
    }
});

/// Decodes a HELLO body; what decodes round-trips, byte for byte on the known part.
fn hello(body: &[u8]) -> Option<Hello> {
    let hello = Hello::parse(body).ok()?;
    let frame = hello.encode();
    assert_eq!(Hello::parse(&frame[HEADER_LEN..]), Ok(hello));
    assert_eq!(
        frame[HEADER_LEN..],
        body[..Hello::BODY_LEN],
        "hello does not re-encode"
    );
    Some(hello)
}

/// Decodes an ANSWER body; what decodes round-trips. An acceptance re-encodes byte for
/// byte; a refusal only in its CID and reason (the encoder zeroes the rest).
fn answer(body: &[u8]) -> Option<Answer> {
    let answer = Answer::parse(body).ok()?;
    let frame = answer.encode();
    assert_eq!(Answer::parse(&frame[HEADER_LEN..]), Ok(answer));
    let known = match answer {
        Answer::Accepted { .. } => Answer::BODY_LEN,
        Answer::Refused(_) => 5,
    };
    assert_eq!(
        frame[HEADER_LEN..][..known],
        body[..known],
        "answer does not re-encode"
    );
    Some(answer)
}

/// Decodes a CONTROL body; what decodes round-trips, byte for byte on the known part.
fn control(body: &[u8]) -> Option<Control> {
    let control = Control::parse(body).ok()?;
    let frame = control.encode();
    assert_eq!(Control::parse(&frame[HEADER_LEN..]), Ok(control));
    assert_eq!(
        frame[HEADER_LEN..],
        body[..Control::BODY_LEN],
        "control does not re-encode"
    );
    Some(control)
}

/// Decodes a CONFIRM body; what decodes round-trips, byte for byte on the known part.
fn confirm(body: &[u8]) -> Option<Confirm> {
    let confirm = Confirm::parse(body).ok()?;
    let frame = confirm.encode();
    assert_eq!(Confirm::parse(&frame[HEADER_LEN..]), Ok(confirm));
    assert_eq!(
        frame[HEADER_LEN..],
        body[..Confirm::BODY_LEN],
        "confirm does not re-encode"
    );
    Some(confirm)
}
