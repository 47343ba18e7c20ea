//! Unit tests of the handshake frames: round trips, the tags, and every way a frame
//! may be malformed.

use std::net::{Ipv6Addr, SocketAddr};

use super::*;
use crate::core::agreement::{self, KEY_LEN};
use crate::core::auth::SessionKeys;
use crate::core::session::Role;

fn body(frame: &[u8], kind: FrameKind) -> &[u8] {
    let h = FrameHeader::parse(frame[..HEADER_LEN].try_into().unwrap()).unwrap();
    assert_eq!(h.kind, kind);
    assert_eq!(frame.len(), HEADER_LEN + h.body_len);
    &frame[HEADER_LEN..]
}

fn keys() -> SessionKeys {
    SessionKeys::derive(&[3; SECRET_LEN], &[4; NONCE_LEN], Role::Client)
}

fn accepted() -> Accepted {
    Accepted {
        cid: 7,
        opened: false,
        control_port: 1234,
        client_nonce: [5; NONCE_LEN],
        received: 5,
        epoch: 3,
        server_nonce: [8; NONCE_LEN],
        agreement: [0; ANSWER_PART_LEN],
        control_addr: None,
        tag: [0; TAG_LEN],
        known: false,
    }
}

/// A key-agreement opening HELLO, attempt `attempt`.
fn agreeing(attempt: u64) -> Hello {
    let public = agreement::client_public(&[0x11; KEY_LEN], &[4; NONCE_LEN]).unwrap();
    Hello::agreeing([1; NONCE_LEN], attempt, [4; NONCE_LEN], public)
}

/// One of each kind of frame this version writes, whole.
fn every_frame() -> Vec<(FrameKind, Vec<u8>)> {
    let key = &keys().handshake.client;
    let resume = Hello::resume(7, [1; NONCE_LEN], 2, 3, key);
    let known = Accepted::known(
        &agreeing(2),
        7,
        9,
        [2; NONCE_LEN],
        [3; ANSWER_PART_LEN],
        key,
    );
    vec![
        (FrameKind::Hello, resume.encode().to_vec()),
        (FrameKind::Hello, agreeing(0).encode().to_vec()),
        (
            FrameKind::Hello,
            Hello::opening([1; NONCE_LEN], 0, [4; NONCE_LEN], [3; SECRET_LEN], key)
                .encode()
                .to_vec(),
        ),
        (
            FrameKind::Answer,
            Answer::Accepted(accepted()).encode().to_vec(),
        ),
        (FrameKind::Answer, Answer::Accepted(known).encode().to_vec()),
        (
            FrameKind::Answer,
            Answer::Refused(RefusalCode::Closed).encode().to_vec(),
        ),
        (
            FrameKind::Confirm,
            Confirm::new(&resume, &accepted(), key).encode().to_vec(),
        ),
    ]
}

/// Whether a body of `kind` decodes.
fn parses(kind: FrameKind, body: &[u8]) -> bool {
    match kind {
        FrameKind::Hello => Hello::parse(body).is_ok(),
        FrameKind::Answer => Answer::parse(body).is_ok(),
        FrameKind::Confirm => Confirm::parse(body).is_ok(),
        FrameKind::Control => unreachable!("no body"),
    }
}

#[test]
fn every_truncation_of_every_frame_is_rejected() {
    for (kind, frame) in every_frame() {
        let whole = body(&frame, kind);
        assert!(parses(kind, whole), "{kind:?}");
        for len in 0..whole.len() {
            assert!(!parses(kind, &whole[..len]), "{kind:?} cut to {len}");
        }
    }
}

#[test]
fn frames_round_trip() {
    let key = &keys().handshake.client;
    let h = Hello::resume(0xdead_beef, [1; NONCE_LEN], 9, u32::MAX, key);
    let f = h.encode();
    assert_eq!(&f[..6], b"RTCP\x06\x01");
    assert_eq!(Hello::parse(body(&f, FrameKind::Hello)), Ok(h));
    let o = Hello::opening([1; NONCE_LEN], 2, [4; NONCE_LEN], [3; SECRET_LEN], key);
    assert_eq!(Hello::parse(body(&o.encode(), FrameKind::Hello)), Ok(o));
    let k = agreeing(3);
    assert_eq!(Hello::parse(body(&k.encode(), FrameKind::Hello)), Ok(k));
    for (opened, known) in [(false, false), (true, false), (false, true)] {
        let a = Answer::Accepted(Accepted {
            opened,
            known,
            agreement: [known as u8 + 1; ANSWER_PART_LEN],
            ..accepted()
        });
        assert_eq!(Answer::parse(body(&a.encode(), FrameKind::Answer)), Ok(a));
    }
    for r in [
        RefusalCode::Closed,
        RefusalCode::TooManySessions,
        RefusalCode::UnknownSession,
        RefusalCode::BadRequest,
    ] {
        let a = Answer::Refused(r);
        assert_eq!(Answer::parse(body(&a.encode(), FrameKind::Answer)), Ok(a));
    }
    let c = Confirm::new(&h, &accepted(), key);
    assert_eq!(Confirm::parse(body(&c.encode(), FrameKind::Confirm)), Ok(c));
}

#[test]
fn the_opening_part_is_present_exactly_when_opening() {
    let key = &keys().handshake.client;
    let opening = Hello::opening([1; NONCE_LEN], 0, [4; NONCE_LEN], [3; SECRET_LEN], key);
    assert!(opening.is_opening() && opening.opening_part_is_consistent());
    let resume = Hello::resume(7, [1; NONCE_LEN], 1, 0, key);
    assert!(!resume.is_opening() && resume.opening_part_is_consistent());
    let agreeing = agreeing(0);
    assert!(agreeing.is_opening() && agreeing.opening_part_is_consistent());
    for broken in [
        Hello {
            opening_key: [0; SECRET_LEN],
            ..opening
        },
        Hello {
            opening_key: [0; SECRET_LEN],
            ..agreeing
        },
        // A key-agreement opening has no key to tag with.
        Hello {
            tag: [1; TAG_LEN],
            ..agreeing
        },
        Hello {
            key_agreement: true,
            ..resume
        },
        Hello {
            opening_nonce: [0; NONCE_LEN],
            ..opening
        },
        Hello {
            opening_key: [1; SECRET_LEN],
            ..resume
        },
        Hello {
            opening_nonce: [1; NONCE_LEN],
            ..resume
        },
    ] {
        assert!(!broken.opening_part_is_consistent(), "{broken:?}");
    }
}

#[test]
fn hellos_and_answers_prove_themselves_both_ways() {
    let keys = keys();
    let (client, server) = (&keys.handshake.client, &keys.handshake.server);
    let resume = Hello::resume(7, [5; NONCE_LEN], 2, 100, client);
    let opening = Hello::opening([5; NONCE_LEN], 1, [4; NONCE_LEN], [3; SECRET_LEN], client);
    for hello in [resume, opening] {
        assert!(hello.verify(client));
        assert!(!hello.verify(server), "wrong key");
        for changed in [
            Hello {
                attempt: hello.attempt + 1,
                ..hello
            },
            Hello {
                received: 101,
                ..hello
            },
            Hello { cid: 8, ..hello },
            Hello {
                nonce: [6; NONCE_LEN],
                ..hello
            },
            Hello {
                opening_nonce: [9; NONCE_LEN],
                ..hello
            },
            Hello {
                opening_key: [9; SECRET_LEN],
                ..hello
            },
            Hello {
                key_agreement: !hello.key_agreement,
                ..hello
            },
        ] {
            assert!(!changed.verify(client), "{changed:?}");
        }
    }
    let answer = accepted().sign(&resume, server);
    assert!(answer.answers(&resume, server));
    assert!(!answer.answers(&resume, client), "wrong key");
    let other_hello = Hello::resume(7, [9; NONCE_LEN], 2, 100, client);
    assert!(
        !answer.answers(&other_hello, server),
        "not this hello's answer"
    );
    assert!(!Accepted { epoch: 4, ..answer }.answers(&resume, server));
    assert!(
        !Accepted {
            opened: true,
            ..answer
        }
        .answers(&resume, server),
        "the flag is covered"
    );
    for changed in [
        Accepted {
            known: true,
            ..answer
        },
        Accepted {
            agreement: [1; ANSWER_PART_LEN],
            ..answer
        },
    ] {
        assert!(!changed.answers(&resume, server), "{changed:?} is covered");
    }
    let confirm = Confirm::new(&resume, &answer, client);
    assert!(confirm.verify(&resume, &answer, client));
    assert!(!confirm.verify(&resume, &answer, server), "wrong key");
    let other_answer = Accepted {
        server_nonce: [1; NONCE_LEN],
        ..answer
    };
    assert!(
        !confirm.verify(&resume, &other_answer, client),
        "replayed confirm"
    );
    let opened = Accepted {
        opened: true,
        epoch: 1,
        received: 0,
        ..accepted()
    }
    .sign(&opening, server);
    assert!(opened.answers(&opening, server));
    assert!(!opened.answers(&resume, server));
}

#[test]
fn longer_bodies_are_accepted_for_later_versions() {
    let c = Confirm {
        cid: 9,
        tag: [1; TAG_LEN],
    };
    let mut f = c.encode().to_vec();
    f.extend_from_slice(b"future field");
    f[7] += 12;
    assert_eq!(Confirm::parse(body(&f, FrameKind::Confirm)), Ok(c));
}

#[test]
fn layouts_match_the_protocol_document() {
    let hello = Hello {
        cid: 0x0102_0304,
        nonce: std::array::from_fn(|i| 5 + i as u8),
        attempt: 0x1516_1718_191a_1b1c,
        received: 0x1d1e_1f20,
        key_agreement: true,
        opening_nonce: std::array::from_fn(|i| 0x22 + i as u8),
        opening_key: std::array::from_fn(|i| 0x32 + i as u8),
        tag: std::array::from_fn(|i| 0x52 + i as u8),
    };
    let mut expect = b"RTCP\x06\x01\x00\x61".to_vec();
    expect.extend(1..=0x20u8);
    expect.push(0x01);
    expect.extend(0x22..=0x61u8);
    assert_eq!(hello.encode()[..], expect[..]);

    let answer = Answer::Accepted(Accepted {
        cid: 0x0102_0304,
        opened: true,
        control_port: 0x0708,
        client_nonce: std::array::from_fn(|i| 9 + i as u8),
        received: 0x191a_1b1c,
        epoch: 0x1d1e_1f20,
        server_nonce: std::array::from_fn(|i| 0x21 + i as u8),
        agreement: std::array::from_fn(|i| 0x31 + i as u8),
        control_addr: Some(SocketAddr::new(
            Ipv6Addr::from(std::array::from_fn::<u8, 16, _>(|i| 0x61 + i as u8)).into(),
            0x7172,
        )),
        tag: std::array::from_fn(|i| 0x73 + i as u8),
        known: false,
    });
    let mut expect = b"RTCP\x06\x02\x00\x82\x01\x02\x03\x04\x00\x01".to_vec();
    expect.extend(7..=0x82u8);
    assert_eq!(answer.encode()[..], expect[..]);
    let known = Answer::Accepted(Accepted {
        known: true,
        ..accepted()
    })
    .encode();
    assert_eq!(known[HEADER_LEN + 5], 0x02);

    let refused = Answer::Refused(RefusalCode::TooManySessions).encode();
    assert_eq!(refused[HEADER_LEN..HEADER_LEN + 5], [0, 0, 0, 0, 2]);
    assert!(refused[HEADER_LEN + 5..].iter().all(|&b| b == 0));

    let confirm = Confirm {
        cid: 0x0a0b_0c0d,
        tag: [0xee; TAG_LEN],
    }
    .encode();
    assert_eq!(confirm[..12], *b"RTCP\x06\x03\x00\x14\x0a\x0b\x0c\x0d");
    assert_eq!(confirm[12..], [0xee; TAG_LEN]);
}

#[test]
fn a_control_frame_carries_a_cid_at_the_offset_of_a_hellos() {
    let frame = Control { cid: 0x0a0b_0c0d }.encode();
    assert_eq!(frame[..], *b"RTCP\x06\x04\x00\x04\x0a\x0b\x0c\x0d");
    let hello = Hello::resume(0x0a0b_0c0d, [1; NONCE_LEN], 1, 0, &keys().handshake.client);
    assert_eq!(
        frame[HEADER_LEN..],
        hello.encode()[HEADER_LEN..HEADER_LEN + 4]
    );
    let body = body(&frame, FrameKind::Control);
    assert_eq!(Control::parse(body), Ok(Control { cid: 0x0a0b_0c0d }));
    // A longer body (a later version's) is accepted; a shorter one, or CID 0, is not.
    assert_eq!(Control::parse(&[0, 0, 0, 1, 9]), Ok(Control { cid: 1 }));
    assert!(Control::parse(&[]).is_err());
    assert!(Control::parse(&body[..3]).is_err());
    assert!(Control::parse(&[0; 4]).is_err());
}

#[test]
fn an_announced_control_address_round_trips_and_the_tag_covers_it() {
    let keys = keys();
    let key = &keys.handshake.server;
    let hello = Hello::resume(7, [1; NONCE_LEN], 1, 0, &keys.handshake.client);
    let plain = Accepted::accepting(&hello, 7, false, 1234, 0, [8; NONCE_LEN], key);
    assert_eq!(plain.announcing(None, &hello, key), plain);
    let server: SocketAddr = "192.0.2.1:7000".parse().unwrap();
    assert_eq!(
        plain.control_peer(server),
        "192.0.2.1:1234".parse().unwrap()
    );
    for announced in ["198.51.100.7:7101", "[2001:db8::7]:7101"] {
        let addr: SocketAddr = announced.parse().unwrap();
        let a = plain.announcing(Some(addr), &hello, key);
        assert!(a.answers(&hello, key));
        assert_eq!(a.control_peer(server), addr);
        let mut frame = Answer::Accepted(a).encode();
        assert_eq!(Answer::parse(&frame[HEADER_LEN..]), Ok(Answer::Accepted(a)));
        // Whoever changes the address on the way breaks the tag.
        frame[HEADER_LEN + 111] ^= 1;
        let Ok(Answer::Accepted(changed)) = Answer::parse(&frame[HEADER_LEN..]) else {
            panic!("a changed address still parses");
        };
        assert_ne!(changed.control_addr, Some(addr));
        assert!(!changed.answers(&hello, key));
    }
    // All zero is no announcement; a port without an address, or an address without a
    // port, is malformed (so that what parses re-encodes to the same bytes).
    let frame = Answer::Accepted(plain).encode();
    assert_eq!(
        Answer::parse(&frame[HEADER_LEN..]),
        Ok(Answer::Accepted(plain))
    );
    for (at, byte) in [(113, 1), (111, 1), (96 + 11, 0xff)] {
        let mut half = frame;
        half[HEADER_LEN + at] = byte;
        assert!(Answer::parse(&half[HEADER_LEN..]).is_err(), "byte {at}");
    }
}

#[test]
fn unknown_flags_are_malformed() {
    for flags in [0x03, 0x04, 0x80] {
        let mut frame = Answer::Accepted(accepted()).encode();
        frame[HEADER_LEN + 5] = flags;
        assert!(
            Answer::parse(&frame[HEADER_LEN..]).is_err(),
            "answer {flags}"
        );
        let mut frame = agreeing(0).encode();
        frame[HEADER_LEN + 32] = flags;
        assert!(Hello::parse(&frame[HEADER_LEN..]).is_err(), "hello {flags}");
    }
}

#[test]
fn foreign_bytes_are_recognised() {
    assert_eq!(FrameHeader::parse(b"SSH-2.0-"), Err(WireError::NotRobust));
    assert_eq!(
        FrameHeader::parse(b"RTCP\x02\x01\0\0"),
        Err(WireError::Version(2))
    );
    // Version 4's lightweight-only opening is another version.
    assert_eq!(
        FrameHeader::parse(b"RTCP\x04\x01\0\0"),
        Err(WireError::Version(4))
    );
    // Version 5's CONTROL (no CID) and ANSWER (no announced address) are another
    // version's: a control connection of a version 5 client is refused, not misread.
    assert_eq!(
        FrameHeader::parse(b"RTCP\x05\x04\0\0"),
        Err(WireError::Version(5))
    );
    assert!(FrameHeader::parse(b"RTCP\x06\x09\0\0").is_err());
    assert!(FrameHeader::parse(b"RTCP\x06\x01\xff\xff").is_err());
}
