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
/// the CID of the session the server accepted last, and for the right tag.
const NEXT: &[u8] = b"|NEXT|";
const CID_MARK: &[u8; 4] = b"CID?";
const TAG_MARK: &[u8; TAG_LEN] = b"TAG?????????????";

fn main() -> io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    // The keys the control_datagram target uses.
    let keys = SessionKeys::derive(&[0x5e; 32], &[0x11; 16], Role::Client);

    let open = Hello::opening([0x42; 16]).encode();
    let resume_hello = Hello::resume(7, [0x43; 16], 1, 5, &keys.handshake.client);
    let resume = resume_hello.encode();
    // A later version's longer body, which this one must accept and ignore the rest of.
    let mut longer = open.to_vec();
    longer.extend_from_slice(b"future field");
    longer[7] += 12;
    let accepted_answer = Accepted {
        cid: 7,
        control_port: 40002,
        client_nonce: [0x43; 16],
        secret: [0; 32],
        received: 1000,
        epoch: 2,
        server_nonce: [0x44; 16],
        tag: [0; TAG_LEN],
    }
    .sign(&resume_hello, &keys.handshake.server);
    let accepted = Answer::Accepted(accepted_answer).encode();
    let confirm = Confirm::new(&resume_hello, &accepted_answer, &keys.handshake.client).encode();
    let foreign = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
    let version1 = b"RTCP\x01\x01\x00\x12".to_vec();
    let oversized = b"RTCP\x02\x01\xff\xff".to_vec();
    let short_hello = b"RTCP\x02\x01\x00\x04\x00\x00\x00\x00".to_vec();

    let dir = root.join("handshake_frames");
    write(&dir, "hello_open", &open)?;
    write(&dir, "hello_resume", &resume)?;
    write(&dir, "hello_longer", &longer)?;
    write(&dir, "answer_accepted", &accepted)?;
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
    // the server accepted last and the right tag (see fuzz_targets/server_handshake.rs).
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
    let open_confirmed = [&open[..], &confirm_it[..]].concat();
    let dir = root.join("server_handshake");
    let seeds = [
        ("open", vec![(0, open.to_vec())]),
        ("open_split", vec![(0x35, open.to_vec())]),
        ("open_confirm", vec![(0, open_confirmed.clone())]),
        (
            "open_confirm_data",
            vec![(0, [&open_confirmed[..], b"application bytes"].concat())],
        ),
        (
            "open_confirm_wrong_cid",
            vec![(0, [&open[..], &confirm[..]].concat())],
        ),
        ("open_longer", vec![(0, longer)]),
        (
            "open_resume",
            vec![
                (0, open.to_vec()),
                (0, [resume_with(1, 0), confirm_it.clone()].concat()),
            ],
        ),
        (
            "open_confirm_resume",
            vec![
                (0, open_confirmed),
                (0x08, [resume_with(1, 0), confirm_it.clone()].concat()),
            ],
        ),
        (
            "open_resume_unsigned",
            vec![(0, open.to_vec()), (0, resume.to_vec())],
        ),
        (
            "open_resume_bad_count",
            vec![(0, open.to_vec()), (0, resume_with(1, 5))],
        ),
        ("resume_unknown", vec![(0, resume.to_vec())]),
        ("foreign", vec![(0, foreign)]),
        ("confirm_first", vec![(0, confirm.to_vec())]),
        ("version1", vec![(0, version1)]),
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
