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

use robust_tcp::protocol::control::{ControlKind, ControlMessage, MAX_LEN};
use robust_tcp::protocol::handshake::{Answer, Confirm, Hello, RefusalCode};

/// As in fuzz_targets/server_handshake.rs: separates an input's connections, and stands
/// for the CID and the token of the session the server accepted last.
const NEXT: &[u8] = b"|NEXT|";
const CID_MARK: &[u8; 4] = b"CID?";
const TOKEN_MARK: &[u8; 8] = b"TOKEN???";

fn main() -> io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");

    let open = Hello {
        control_port: 40000,
        cid: 0,
        token: 0,
        received: 0,
    }
    .encode();
    let resume = Hello {
        control_port: 40001,
        cid: 7,
        token: 0x0123_4567_89ab_cdef,
        received: 5,
    }
    .encode();
    // A later version's longer body, which this one must accept and ignore the rest of.
    let mut longer = open.to_vec();
    longer.extend_from_slice(b"future field");
    longer[7] += 12;
    let confirm = Confirm { cid: 0x1234_5678 }.encode();
    let accepted = Answer::Accepted {
        cid: 0x1234_5678,
        token: 0x0123_4567_89ab_cdef,
        control_port: 40002,
        received: 1000,
        epoch: 2,
    }
    .encode();
    let foreign = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
    let version2 = b"RTCP\x02\x01\x00\x00".to_vec();
    let oversized = b"RTCP\x01\x01\xff\xff".to_vec();
    let short_hello = b"RTCP\x01\x01\x00\x04\x00\x00\x00\x00".to_vec();

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
    write(&dir, "version2", &version2)?;

    let dir = root.join("control_datagram");
    let kinds = [
        ("ack", ControlKind::Ack(1000)),
        ("req_ack", ControlKind::ReqAck(u32::MAX)),
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
        let mut buf = [0; MAX_LEN];
        let n = msg.encode(&mut buf);
        write(&dir, name, &buf[..n])?;
    }

    // The server target's input: connections separated by NEXT; of each, the first byte
    // says where to cut the rest (0 sends it whole, 0x35 cuts it after 5 bytes, inside
    // the header, and again 6 bytes later). CID_MARK and TOKEN_MARK stand for the session
    // the server accepted last (see fuzz_targets/server_handshake.rs).
    let cid_mark = u32::from_be_bytes(*CID_MARK);
    let token_mark = u64::from_be_bytes(*TOKEN_MARK);
    let confirm_it = Confirm { cid: cid_mark }.encode();
    let resume_with = |token: u64, received: u32| {
        Hello {
            control_port: 40003,
            cid: cid_mark,
            token,
            received,
        }
        .encode()
        .to_vec()
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
            vec![(0, open.to_vec()), (0, resume_with(token_mark, 0))],
        ),
        (
            "open_confirm_resume",
            vec![(0, open_confirmed), (0x08, resume_with(token_mark, 0))],
        ),
        (
            "open_resume_wrong_token",
            vec![(0, open.to_vec()), (0, resume_with(1, 0))],
        ),
        (
            "open_resume_bad_count",
            vec![(0, open.to_vec()), (0, resume_with(token_mark, 5))],
        ),
        ("resume_unknown", vec![(0, resume.to_vec())]),
        ("foreign", vec![(0, foreign)]),
        ("confirm_first", vec![(0, confirm.to_vec())]),
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
