//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/` from the
//! library's own encoders, so that the seeds follow the wire format when it changes:
//!
//! ```sh
//! cd fuzz && cargo run --example make_seeds
//! ```
//!
//! It replaces the files it writes and leaves others alone. The seeds are small valid
//! messages of every kind and a few near misses: libFuzzer starts from them rather than
//! from nothing, so it reaches the deeper paths (an opened session, a confirmation) within
//! seconds.

use std::fs;
use std::io;
use std::path::Path;

use robust_tcp::protocol::auth::{SessionKeys, TAG_LEN};
use robust_tcp::protocol::control::{ControlKind, ControlMessage, MAX_LEN};
use robust_tcp::protocol::handshake::{Accepted, Answer, Confirm, Hello, RefusalCode};
use robust_tcp::protocol::session::Role;

/// As in fuzz_targets/server_handshake.rs: separates an input's connections, stands for
/// the CID of the session the server accepted last, for the right tag, and for an opening
/// nonce of the input's own.
const NEXT: &[u8] = b"|NEXT|";
const CID_MARK: &[u8; 4] = b"CID?";
const TAG_MARK: &[u8; TAG_LEN] = b"TAG?????????????";
const OPENING_MARK: &[u8; 16] = b"OPENING?????????";

fn main() -> io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    // The keys the control_datagram target uses, and those of the seeds' sessions: an
    // opening HELLO carries the secret and the opening nonce they come from.
    let (secret, opening_nonce) = ([0x5e; 32], [0x11; 16]);
    assert_ne!(opening_nonce, *OPENING_MARK);
    let keys = SessionKeys::derive(&secret, &opening_nonce, Role::Client);

    let open_hello = Hello::opening([0x42; 16], 0, opening_nonce, secret, &keys.handshake.client);
    let open = open_hello.encode();
    let resume_hello = Hello::resume(7, [0x43; 16], 1, 5, &keys.handshake.client);
    let resume = resume_hello.encode();
    // A later version's longer body, which this one must accept and ignore the rest of.
    let mut longer = open.to_vec();
    longer.extend_from_slice(b"future field");
    longer[7] += 12;
    let answer = |hello: &Hello, opened: bool| {
        Accepted {
            cid: 7,
            opened,
            control_port: 40002,
            client_nonce: hello.nonce,
            received: if opened { 0 } else { 1000 },
            epoch: 2,
            server_nonce: [0x44; 16],
            tag: [0; TAG_LEN],
        }
        .sign(hello, &keys.handshake.server)
    };
    let resumed_answer = answer(&resume_hello, false);
    let resumed = Answer::Accepted(resumed_answer).encode();
    let opened = Answer::Accepted(answer(&open_hello, true)).encode();
    let confirm = Confirm::new(&resume_hello, &resumed_answer, &keys.handshake.client).encode();
    let foreign = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
    let version1 = b"RTCP\x01\x01\x00\x12".to_vec();
    // The previous version's opening HELLO: a near miss.
    let version2 = [&b"RTCP\x02\x01\x00\x30"[..], &[0x42; 48]].concat();
    let oversized = b"RTCP\x04\x01\xff\xff".to_vec();
    let short_hello = b"RTCP\x04\x01\x00\x04\x00\x00\x00\x00".to_vec();

    let dir = root.join("handshake_frames");
    write(&dir, "hello_open", &open)?;
    write(&dir, "hello_resume", &resume)?;
    write(&dir, "hello_longer", &longer)?;
    write(&dir, "answer_opened", &opened)?;
    write(&dir, "answer_resumed", &resumed)?;
    for reason in [
        RefusalCode::Closed,
        RefusalCode::TooManySessions,
        RefusalCode::UnknownSession,
        RefusalCode::BadRequest,
    ] {
        let name = format!("answer_refused_{}", reason as u8);
        write(&dir, &name, &Answer::Refused(reason).encode())?;
    }
    write(&dir, "confirm", &confirm)?;
    write(&dir, "version1", &version1)?;
    write(&dir, "version2", &version2)?;

    let dir = root.join("control_datagram");
    let kinds = [
        ("ack", ControlKind::Ack(1000)),
        (
            "req_ack",
            ControlKind::ReqAck {
                received: u32::MAX,
                sent: 5000,
            },
        ),
        ("close", ControlKind::Close(4096)),
        ("half_close", ControlKind::HalfClose(17)),
        ("reset", ControlKind::Reset),
        ("conf", ControlKind::Conf),
        ("reconnect", ControlKind::Reconnect(3)),
        ("challenge", ControlKind::Challenge(0x8899_aabb_ccdd_eeff)),
        ("response", ControlKind::Response(0x0011_2233_4455_6677)),
        ("passivate", ControlKind::Passivate(4)),
    ];
    for (i, (name, kind)) in kinds.into_iter().enumerate() {
        let msg = ControlMessage {
            cid: 0x1234_5678,
            from_server: i % 2 == 0,
            id: i as u16,
            kind,
        };
        // The target tags its input itself: a seed is the part a tag covers.
        let mut buf = [0; MAX_LEN];
        let n = msg.seal(i as u64, &keys.control.send, &mut buf);
        write(&dir, name, &buf[..n - TAG_LEN])?;
    }

    // The server target's input: connections separated by NEXT; of each, the first byte
    // says where to cut the rest (0 sends it whole, 0x35 cuts it after 5 bytes, inside
    // the header, and again 6 bytes later). CID_MARK and TAG_MARK stand for the session
    // the server accepted last and the right tag (see fuzz_targets/server_handshake.rs;
    // an opening HELLO's tag is made with the keys of the secret it carries).
    let cid_mark = u32::from_be_bytes(*CID_MARK);
    let marked = |frame: &[u8]| {
        let mut frame = frame.to_vec();
        let at = frame.len() - TAG_LEN;
        frame[at..].copy_from_slice(TAG_MARK);
        frame
    };
    let confirm_it = marked(
        &Confirm {
            cid: cid_mark,
            tag: [0; TAG_LEN],
        }
        .encode(),
    );
    // A CONFIRM with a later version's longer body confirms too.
    let mut confirm_longer = confirm_it.clone();
    confirm_longer.extend_from_slice(b"future");
    confirm_longer[7] += 6;
    let resume_with = |attempt: u64, received: u32| {
        marked(
            &Hello::resume(
                cid_mark,
                [0x45; 16],
                attempt,
                received,
                &keys.handshake.client,
            )
            .encode(),
        )
    };
    // An opening with the input's own opening nonce (a fresh session for each input),
    // tagged by the harness; and the same session's opening retried.
    let open_again = |attempt: u64| {
        marked(
            &Hello::opening(
                [0x46; 16],
                attempt,
                *OPENING_MARK,
                secret,
                &keys.handshake.client,
            )
            .encode(),
        )
    };
    let open_marked = open_again(0);
    let mut no_secret = open_hello;
    no_secret.secret = [0; 32];
    let bad_tag = marked(&open)
        .iter()
        .map(|&b| if b == b'?' { b'!' } else { b })
        .collect::<Vec<u8>>();
    let dir = root.join("server_handshake");
    let seeds = [
        ("open", vec![(0, open.to_vec())]),
        ("open_marked", vec![(0, open_marked.clone())]),
        ("open_split", vec![(0x35, open_marked.clone())]),
        (
            "open_data",
            vec![(0, [&open_marked[..], b"application bytes"].concat())],
        ),
        ("open_longer", vec![(0, longer)]),
        ("open_bad_tag", vec![(0, bad_tag)]),
        ("open_no_secret", vec![(0, no_secret.encode().to_vec())]),
        (
            "open_resume",
            vec![
                (0, open_marked.clone()),
                (0, [resume_with(1, 0), confirm_it.clone()].concat()),
            ],
        ),
        (
            "open_resume_longer_confirm",
            vec![
                (0, open_marked.clone()),
                (0x08, [resume_with(1, 0), confirm_longer].concat()),
            ],
        ),
        (
            "open_retry",
            vec![
                (0, open_marked.clone()),
                (0, [open_again(1), confirm_it.clone()].concat()),
            ],
        ),
        (
            "open_copy",
            vec![(0, open_marked.clone()), (0, open_again(0))],
        ),
        (
            "open_resume_unsigned",
            vec![(0, open_marked.clone()), (0, resume.to_vec())],
        ),
        (
            "open_resume_bad_count",
            vec![(0, open_marked), (0, resume_with(1, 5))],
        ),
        ("resume_unknown", vec![(0, resume.to_vec())]),
        ("foreign", vec![(0, foreign)]),
        ("confirm_first", vec![(0, confirm.to_vec())]),
        ("version1", vec![(0, version1)]),
        ("version2", vec![(0, version2)]),
        ("oversized", vec![(0, oversized)]),
        ("short_hello", vec![(0, short_hello)]),
    ];
    for (name, connections) in seeds {
        let parts: Vec<Vec<u8>> = connections
            .iter()
            .map(|(cuts, bytes)| [&[*cuts][..], bytes].concat())
            .collect();
        write(&dir, name, &parts.join(NEXT))?;
    }
    Ok(())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join(name), bytes)
}
