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

use robust_tcp::protocol::agreement::{self, KEY_LEN};
use robust_tcp::protocol::auth::{SessionKeys, TAG_LEN};
use robust_tcp::protocol::control::{ControlKind, ControlMessage, MAX_LEN};
use robust_tcp::protocol::endpoint::OpeningKey;
use robust_tcp::protocol::handshake::{Accepted, Answer, Confirm, Control, Hello, RefusalCode};
use robust_tcp::protocol::session::Role;

/// As in fuzz_targets/server_endpoint.rs: the secret and opening nonce of its opening
/// number 1.
const ENDPOINT_OPENING: ([u8; 32], [u8; 16]) = ([0x51; 32], [0x11; 16]);

fn main() -> io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    // The keys the control_datagram target uses, and those of the seeds' sessions: an
    // opening HELLO carries the secret and the opening nonce they come from.
    let (secret, opening_nonce) = ([0x5e; 32], [0x11; 16]);
    let keys = SessionKeys::derive(&secret, &opening_nonce, Role::Client);

    let open_hello = Hello::opening([0x42; 16], 0, opening_nonce, secret, &keys.handshake.client);
    let open = open_hello.encode();
    let resume_hello = Hello::resume(7, [0x43; 16], 1, 5, &keys.handshake.client);
    let resume = resume_hello.encode();
    // A later version's longer body, which this one must accept and ignore the rest of.
    let mut longer = open.to_vec();
    longer.extend_from_slice(b"future field");
    longer[7] += 12;
    let server_key = &keys.handshake.server;
    let answer = |hello: &Hello, opened: bool| {
        let received = if opened { 0 } else { 1000 };
        Accepted::accepting(hello, 7, opened, 40002, received, [0x44; 16], server_key)
    };
    let resumed_answer = answer(&resume_hello, false);
    let resumed = Answer::Accepted(resumed_answer).encode();
    let opened = Answer::Accepted(answer(&open_hello, true)).encode();
    // The key agreement: its opening HELLO, the ANSWER that opens it with the server's
    // part, and the KNOWN answer to a retry of it.
    let (opening_key, _) = OpeningKey::agreement([0x61; KEY_LEN], &opening_nonce).expect("snow");
    let agreeing_hello = opening_key.hello([0x45; 16], 0, opening_nonce, server_key);
    let (part, agreed) = agreement::answer(
        &[0x62; KEY_LEN],
        &opening_nonce,
        &agreeing_hello.opening_key,
    )
    .expect("snow");
    let agreed_key = &agreed.handshake.server;
    let agreed_answer =
        Accepted::accepting(&agreeing_hello, 8, true, 40002, 0, [0x46; 16], agreed_key).agreed(
            part,
            &agreeing_hello,
            agreed_key,
        );
    let retry_hello = opening_key.hello([0x47; 16], 1, opening_nonce, server_key);
    let known_answer = Accepted::known(&retry_hello, 8, 40002, [0x48; 16], part, agreed_key);
    // The previous version's opening HELLO: a near miss.
    let version4 = [&b"RTCP\x04\x01\x00\x60"[..], open.get(9..).expect("a body")].concat();
    // An instance behind a load balancer announces its own control address.
    let announced = answer(&open_hello, true).announcing(
        Some("198.51.100.7:7101".parse().expect("an address")),
        &open_hello,
        &keys.handshake.server,
    );
    let announced = Answer::Accepted(announced).encode();
    let control = Control { cid: 0x0100_0007 }.encode();
    let confirm = Confirm::new(&resume_hello, &resumed_answer, &keys.handshake.client).encode();
    let version1 = b"RTCP\x01\x01\x00\x12".to_vec();
    // The previous version's opening HELLO: a near miss.
    let version2 = [&b"RTCP\x02\x01\x00\x30"[..], &[0x42; 48]].concat();

    let dir = root.join("handshake_frames");
    write(&dir, "hello_open", &open)?;
    write(&dir, "hello_resume", &resume)?;
    write(&dir, "hello_longer", &longer)?;
    write(&dir, "hello_agreeing", &agreeing_hello.encode())?;
    write(
        &dir,
        "answer_agreed",
        &Answer::Accepted(agreed_answer).encode(),
    )?;
    write(
        &dir,
        "answer_known",
        &Answer::Accepted(known_answer).encode(),
    )?;
    write(&dir, "version4", &version4)?;
    // Version 5's CONTROL frame, without a CID: a near miss of this version's.
    write(&dir, "version5_control", b"RTCP\x05\x04\x00\x00")?;
    write(&dir, "answer_opened", &opened)?;
    write(&dir, "answer_resumed", &resumed)?;
    write(&dir, "answer_announced", &announced)?;
    write(&dir, "control", &control)?;
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

    // The server_endpoint target's input: 5 bytes of limits, then operations (see
    // fuzz_targets/server_endpoint.rs): its opening number 1 is `ENDPOINT_OPENING`.
    let (secret, opening_nonce) = ENDPOINT_OPENING;
    let keys = SessionKeys::derive(&secret, &opening_nonce, Role::Client);
    let open_hello = Hello::opening([0; 16], 0, opening_nonce, secret, &keys.handshake.client);
    // Opening 1 from address 0, attempts 0, 1 and 2, welcome, no flip.
    let [open0, open1, open2] = [0, 1, 2].map(|attempt| [0, 0, 1, attempt, 0, 1, 0, 0]);
    // A resumption of session 0 (CID 1), attempt 1, no flip.
    let resume1 = [1, 0, 0, 1, 0, 0, 0, 0];
    let confirm = [4, 0, 0, 0];
    let mut datagram = vec![5, 0, 1];
    let ack = ControlMessage {
        cid: 1,
        from_server: false,
        id: 0,
        kind: ControlKind::Ack(0),
    };
    let mut buf = [0; MAX_LEN];
    let n = ack.seal(0, &keys.control.send, &mut buf) - TAG_LEN;
    datagram.push(n as u8);
    datagram.extend_from_slice(&buf[..n]);
    let raw_hello = [&[2, 0, 48][..], &open_hello.encode()[8..]].concat();
    let roomy = [4, 2, 2, 4, 10];
    let dir = root.join("server_endpoint");
    // (name, limits, operations)
    let seeds: [(&str, &[u8], Operations); 11] = [
        ("open", &roomy, vec![&open0]),
        ("open_raw", &roomy, vec![&raw_hello]),
        ("open_flipped", &roomy, vec![&[0, 0, 1, 0, 0, 1, 40, 1]]),
        ("open_closed", &roomy, vec![&[0, 0, 1, 0, 0, 0, 0, 0]]),
        ("retry_confirm", &roomy, vec![&open0, &open1, &confirm]),
        (
            "resume_confirm_replay",
            &roomy,
            vec![&open0, &resume1, &confirm, &[3, 0, 1], &resume1],
        ),
        ("datagram", &roomy, vec![&open0, &datagram, &[11, 0, 50]]),
        // A full listener (one session) evicts a client gone long enough.
        (
            "evict",
            &[1, 1, 1, 2, 1],
            vec![&open0, &[6, 0], &[11, 0, 100], &[0, 1, 2, 0, 0, 1, 0, 0]],
        ),
        // A listener full in all and for address 0 (3 sessions, 2 per address), whose
        // vanished session is address 1's: address 0 gets no third session.
        (
            "evict_beyond_share",
            &[2, 1, 0, 0, 7],
            vec![
                &open0,
                &[0, 0, 2, 0, 0, 1, 0, 0],
                &[0, 1, 3, 0, 0, 1, 0, 0],
                &[6, 2],
                &[11, 0, 100],
                &[0, 0, 4, 0, 0, 1, 0, 0],
            ],
        ),
        // A session reset before its client knew it: its retried opening is refused
        // until the tombstone expires (OPENING_WINDOW and a handshake timeout later).
        (
            "tombstone",
            &roomy,
            vec![&open0, &[7, 0], &open1, &[11, 0x1b, 0x58], &open2],
        ),
        (
            "handshakes",
            &[1, 1, 2, 1, 1],
            vec![&[8], &[8], &[9, 0], &[8], &[10, 1], &[8]],
        ),
    ];
    for (name, limits, ops) in seeds {
        write(&dir, name, &[limits, &ops.concat()].concat())?;
    }

    // The redial target's input: 4 bytes of settings, then operations of 3 bytes each
    // (see fuzz_targets/redial.rs).
    let settings = [10, 10, 0x21, 5];
    let (started, hello, heard, connected) = ([1, 0, 0], [2, 0, 0], [3, 0, 0], [4, 0, 0]);
    let plan = |heard: u8| [0, heard, 0];
    let failed = |how: u8| [6, how, 0];
    let advance = |ms: u8, scale: u8| [7, ms, scale];
    let dir = root.join("redial");
    let seeds: [(&str, Vec<[u8; 3]>); 4] = [
        (
            "retried_then_open",
            vec![
                started,
                failed(2),
                plan(0),
                advance(200, 10),
                plan(0),
                started,
                hello,
                heard,
                connected,
                failed(0),
                plan(5),
                started,
                hello,
            ],
        ),
        (
            "busy",
            vec![
                started,
                failed(3),
                advance(250, 20),
                plan(0),
                started,
                hello,
            ],
        ),
        (
            "past_the_window",
            vec![
                started,
                hello,
                heard,
                failed(2),
                advance(255, 63),
                advance(255, 63),
                advance(255, 63),
                advance(255, 63),
                started,
                hello,
            ],
        ),
        (
            "stale_connect_restarted",
            vec![started, advance(255, 1), [0, 1, 1], hello],
        ),
    ];
    for (name, ops) in seeds {
        write(&dir, name, &[&settings[..], &ops.concat()].concat())?;
    }
    Ok(())
}

/// A seed's operations, each as its bytes.
type Operations<'a> = Vec<&'a [u8]>;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join(name), bytes)
}
