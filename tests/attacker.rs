//! An off-path attacker against a live session (issue 7's threat model, `docs/SECURITY.md`).
//!
//! The attacker shares the victim's IP (everything is on 127.0.0.1) and holds a packet
//! capture of the session's traffic (an `AF_PACKET` socket on `lo`, so the test needs
//! root, as CI has). While a transfer runs through a proxy that cuts the TCP connection
//! again and again, it sends forged control datagrams of every type (random CIDs, the real
//! CID with wrong tags, captured datagrams with old packet numbers, wrong lengths),
//! replays every datagram it captured, replays the recorded reconnection HELLOs (and a
//! CONFIRM after each that is answered) and openings, and forges reconnections with the
//! real CID. Being off-path, it replays only what has settled (datagrams a round after it
//! captured them, HELLOs once the server has answered their attempt or a later one), never
//! a packet still on its way: racing the original is an on-path capability
//! (`docs/SECURITY.md`, "Not protected"). The transfer must complete byte-exact with no error and no early end of
//! stream, and the attacker must receive no application byte: on TCP nothing after a
//! handshake answer, on UDP nothing at all (nothing answers what does not authenticate).
#![cfg(target_os = "linux")]
//!
//! The attacker itself is the test kit's `attacker`; the tests and their settings here.

use std::io::{self, Read, Write};
use std::iter;
use std::net::{Shutdown, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use capture::{Capture, Packet};
use robust_tcp::protocol::auth::{SessionKeys, NONCE_LEN, SECRET_LEN, TAG_LEN};
use robust_tcp::protocol::control::MIN_LEN;
use robust_tcp::protocol::handshake::{Answer, Confirm, Hello, HEADER_LEN};
use robust_tcp::protocol::session::Role;
use robust_tcp::{RSocket, SessionState};
use robust_tcp_testkit::bounded::{join, poll_until, run_bounded, wait_until};
use robust_tcp_testkit::capture;
use robust_tcp_testkit::payload::Payload;
use robust_tcp_testkit::proxy::{CutAt, CutPlan, FaultProxy};
use robust_tcp_testkit::rng::{fresh_seed, Rng};
use robust_tcp_testkit::session::{bind, connect_pair, fast_config, server_addr, spawn_reader};

use robust_tcp_testkit::attacker::{recording, Attacker, Tally};

const LIMIT: Duration = Duration::from_secs(120);
/// Bytes each way.
const LEN: u64 = 8 << 20;
/// The writers hold back this last part of their payload until the attack is over, so
/// that the attack happens during the transfer however fast the rest goes.
const HELD_BACK: u64 = 1 << 20;
const PLAN_CUTS: usize = 30;
const MAX_CUT_BYTES: u64 = 256 << 10;
/// Cuts the attacker adds (one every few rounds), so that reconnections, with HELLOs to
/// record and replay, happen throughout the attack.
const ATTACK_CUTS: usize = 20;
const MIN_CUTS: usize = 20;
const FORGED_DATAGRAMS: usize = 10_000;
const HELLO_REPLAYS: usize = 100;
const FORGED_HELLOS: usize = 100;
const OPENING_REPLAYS: usize = 30;
/// A CHALLENGE datagram as docs/PROTOCOL.md section 5 lays it out: its type (8) at byte 4,
/// and one count.
const CHALLENGE_KIND: u8 = 8;
const KIND_AT: usize = 4;
const CHALLENGE_LEN: usize = MIN_LEN + 4;

/// Writes `payload` in chunks on a clone of `sock`, holding back its last [`HELD_BACK`]
/// bytes until `attack_over`, then shuts down writing.
fn spawn_held_writer(
    sock: &RSocket,
    payload: Payload,
    attack_over: Arc<AtomicBool>,
) -> thread::JoinHandle<io::Result<()>> {
    let mut sock = sock.try_clone().expect("try_clone");
    thread::spawn(move || {
        let held = payload.len() - HELD_BACK;
        sock.write_all(&payload.bytes(0..held))?;
        wait_until(LIMIT, "the attack to end", || {
            attack_over.load(Ordering::SeqCst)
        });
        sock.write_all(&payload.bytes(held..payload.len()))?;
        sock.shutdown(Shutdown::Write)
    })
}

// Proves: an off-path attacker with a capture of the traffic, sharing the victim's IP,
// neither disturbs a transfer through cuts nor receives any of its data.
#[test]
fn an_off_path_attacker_can_neither_disturb_nor_read_a_session() {
    run_bounded(LIMIT, || {
        let capture = Capture::start().expect("a packet capture on lo (run the tests as root)");
        let server = bind();
        let proxy = FaultProxy::start(
            server_addr(&server),
            CutPlan::random(PLAN_CUTS, MAX_CUT_BYTES),
        )
        .expect("start the proxy");
        let seed = proxy.seed();
        let (client, accepted) = connect_pair(&server, proxy.local_addr(), fast_config());
        let attack_over = Arc::new(AtomicBool::new(false));
        let (up, down) = (Payload::new(seed, LEN), Payload::new(seed ^ 1, LEN));
        let transfer = [
            (
                "client writing",
                spawn_held_writer(&client, up, Arc::clone(&attack_over)),
            ),
            (
                "server writing",
                spawn_held_writer(&accepted, down, Arc::clone(&attack_over)),
            ),
            ("server reading", spawn_reader(&accepted, up)),
            ("client reading", spawn_reader(&client, down)),
        ];

        // The attacker starts once it has recorded a reconnection.
        let mut rec = recording(&capture.packets());
        let recorded = poll_until(LIMIT / 4, || {
            rec = recording(&capture.packets());
            rec.control_port.is_some() && !rec.settled_hellos().is_empty()
        });
        assert!(recorded, "seed {seed}: no reconnection was recorded");
        let control = SocketAddr::from(([127, 0, 0, 1], rec.control_port.unwrap()));
        let mut attacker = Attacker {
            server: server_addr(&server),
            control,
            cid: client.session_id(),
            udp: UdpSocket::bind("127.0.0.1:0").expect("bind the attacker's socket"),
            rng: Rng::new(fresh_seed()),
            stranger: SessionKeys::derive(&[0xa7; SECRET_LEN], &[0; NONCE_LEN], Role::Client),
            tally: Tally::default(),
        };
        let rounds = FORGED_DATAGRAMS / 100;
        // Datagrams are replayed one round after they were captured, when the engine has
        // long processed the original: an off-path replay, never one racing the original.
        let (mut replayed_upto, mut settled) = (0, 0);
        for round in 0..rounds {
            rec = recording(&capture.packets());
            for _ in 0..100 {
                let d = attacker.forged_datagram(&rec.datagrams);
                attacker.send_datagram(&d);
                attacker.tally.forged_datagrams += 1;
            }
            // Replay what the previous round captured.
            for d in rec
                .datagrams
                .get(replayed_upto..settled)
                .unwrap_or_default()
            {
                attacker.send_datagram(d);
                attacker.tally.replayed_datagrams += 1;
            }
            (replayed_upto, settled) = (settled, rec.datagrams.len());
            if round % (rounds / ATTACK_CUTS) == 0 {
                attacker.tally.cuts += proxy.cut_all();
            }
            let hellos = rec.settled_hellos();
            let hello = hellos[round % hellos.len()].clone();
            let confirm = rec.confirms.last().cloned();
            if let Answer::Accepted(_) = attacker.handshake(&hello, confirm.as_deref()) {
                attacker.tally.hello_replays_answered += 1;
            }
            attacker.tally.hello_replays += 1;
            let forged = attacker.forged_hello();
            match attacker.handshake(&forged, confirm.as_deref()) {
                Answer::Refused(_) => {}
                accepted => panic!("seed {seed}: a forged hello was accepted: {accepted:?}"),
            }
            attacker.tally.forged_hellos += 1;
            if round % (rounds / OPENING_REPLAYS) == 0 {
                // The victim's opening, replayed, is refused while its session lives (the
                // server knows its opening nonce). Any other opening is anyone's to make:
                // the attacker gets a session of its own, never the victim's.
                if let Some(opening) = rec.opening_hellos.first() {
                    if let Answer::Accepted(a) = attacker.handshake(opening, None) {
                        assert_ne!(a.cid, attacker.cid, "seed {seed}: the victim's CID again");
                    }
                    attacker.tally.opening_replays += 1;
                }
            }
        }
        // Late replays: everything the last round had settled, once more.
        rec = recording(&capture.packets());
        for d in rec.datagrams.get(..settled).unwrap_or_default() {
            attacker.send_datagram(d);
            attacker.tally.replayed_datagrams += 1;
        }
        attack_over.store(true, Ordering::SeqCst);

        for (what, thread) in transfer {
            if let Err(e) = join(thread) {
                panic!("seed {seed}: {what}: {e} (kind {:?})", e.kind());
            }
        }
        let tally = &attacker.tally;
        eprintln!(
            "seed {seed}: attacker {tally:?}; proxy cuts {}",
            proxy.cuts()
        );
        assert!(tally.forged_datagrams >= FORGED_DATAGRAMS);
        assert!(tally.hello_replays >= HELLO_REPLAYS && tally.forged_hellos >= FORGED_HELLOS);
        assert!(tally.opening_replays >= OPENING_REPLAYS);
        assert!(
            proxy.cuts() >= MIN_CUTS,
            "seed {seed}: only {} cuts",
            proxy.cuts()
        );
        // Replayed hellos that had reached the server are refused; one that never did
        // (its connection was cut before it arrived) may be answered, but never served.
        assert!(tally.hello_replays_answered * 2 < tally.hello_replays);
        for sock in [&client, &accepted] {
            let status = sock.status();
            assert_eq!(
                (status.bytes_written, status.bytes_read),
                (LEN, LEN),
                "{status:?}"
            );
        }

        // Nothing answered the attacker's datagrams but, at most, a challenge: a replayed
        // genuine datagram that reached the server before its original (one the server
        // never got, or had not read yet) makes its source a candidate address, which
        // gets a challenge and nothing else (docs/SECURITY.md). Seen once in about 100
        // runs of this binary.
        attacker.udp.set_nonblocking(true).expect("set_nonblocking");
        let mut buf = [0u8; 64];
        let mut challenges = 0;
        loop {
            match attacker.udp.recv_from(&mut buf) {
                Ok((n, from)) => {
                    assert!(
                        n == CHALLENGE_LEN && buf[KIND_AT] == CHALLENGE_KIND,
                        "seed {seed}: the attacker received {n} bytes from {from}, type {}",
                        buf[KIND_AT]
                    );
                    challenges += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("seed {seed}: the attacker's socket: {e}"),
            }
        }
        assert!(
            challenges <= attacker.tally.replayed_datagrams,
            "seed {seed}: {challenges} challenges for {} replays",
            attacker.tally.replayed_datagrams
        );
    });
}

/// The resume HELLOs of session `cid` captured so far on their way to `port`, in the
/// order they were sent.
fn captured_hellos(capture: &Capture, cid: u32, port: u16) -> Vec<Hello> {
    let to_port: Vec<Packet> = capture
        .packets()
        .into_iter()
        .filter(|p| p.dst.port() == port)
        .collect();
    let mut hellos: Vec<Hello> = Vec::new();
    for frame in recording(&to_port).resume_hellos {
        let hello = Hello::parse(&frame[HEADER_LEN..]).expect("a captured hello");
        if hello.cid == cid && !hellos.contains(&hello) {
            hellos.push(hello);
        }
    }
    hellos
}

// Proves: a recorded HELLO that never reached the server (its connection was cut at the
// proxy before it was forwarded) proves itself when replayed, but the replayer cannot
// confirm it and receives nothing of the bytes waiting for the client; and a HELLO the
// server did see is refused when replayed, even while its byte count still holds.
#[test]
fn a_replayed_reconnection_gets_no_data() {
    run_bounded(LIMIT, || {
        const WAITING: usize = 12 << 10;
        let capture = Capture::start().expect("a packet capture on lo (run the tests as root)");
        let server = bind();
        // The opening goes through; every reconnection is cut before the proxy forwards a
        // byte of it, until the attacker has replayed one (`stop_cutting`): however slow
        // the machine, no HELLO reaches the server first.
        const HELD_ATTEMPTS: usize = 64;
        let plan = CutPlan::random(HELD_ATTEMPTS, MAX_CUT_BYTES)
            .script(iter::once(CutAt::Never).chain(iter::repeat_n(CutAt::Bytes(0), HELD_ATTEMPTS)));
        let proxy = FaultProxy::start(server_addr(&server), plan).expect("start the proxy");
        let backoff = Duration::from_secs(1);
        let config = fast_config().reconnect_backoff(backoff, backoff);
        let (mut client, accepted) = connect_pair(&server, proxy.local_addr(), config);
        let cid = client.session_id();
        // Bytes the client has not read: the server keeps them to resend.
        let waiting = Payload::new(proxy.seed(), WAITING as u64);
        (&accepted)
            .write_all(&waiting.bytes(0..WAITING as u64))
            .expect("server write");
        // The server's reader sees the cut, and its RECONNECT makes the client reconnect.
        let server_reader = {
            let mut sock = accepted.try_clone().expect("try_clone");
            thread::spawn(move || {
                let mut got = Vec::new();
                sock.read_to_end(&mut got).map(|_| got)
            })
        };
        let cut_by_hand = proxy.cut_all();
        // Its connection must be cut, not merely captured: a HELLO still in the proxy's
        // hands is on its way, and racing it is not an off-path attack.
        let mut never_arrived = None;
        wait_until(LIMIT / 4, "the first reconnection's HELLO, cut", || {
            never_arrived = captured_hellos(&capture, cid, proxy.local_addr().port())
                .first()
                .copied();
            never_arrived.is_some() && proxy.cuts() > cut_by_hand
        });
        let never_arrived = never_arrived.unwrap();
        let attacker = Attacker {
            server: server_addr(&server),
            control: server_addr(&server),
            cid,
            udp: UdpSocket::bind("127.0.0.1:0").expect("bind"),
            rng: Rng::new(fresh_seed()),
            stranger: SessionKeys::derive(&[0xa7; SECRET_LEN], &[0; NONCE_LEN], Role::Client),
            tally: Tally::default(),
        };
        let forged_confirm = Confirm {
            cid,
            tag: [0x5a; TAG_LEN],
        }
        .encode();
        // `handshake` asserts that nothing follows the answer.
        match attacker.handshake(&never_arrived.encode(), Some(&forged_confirm)) {
            Answer::Accepted(a) => assert_eq!(a.cid, cid),
            refused => panic!("the replayed hello was refused: {refused:?}; did it arrive?"),
        }
        proxy.stop_cutting();

        // The client's next attempt, with a higher number, takes the session back.
        let reconnected = poll_until(LIMIT / 4, || {
            client.status().state == SessionState::Connected
        });
        assert!(
            reconnected,
            "the client did not reconnect: {:?}; {} proxy connections; hellos {:?}",
            client.status(),
            proxy.connections(),
            captured_hellos(&capture, cid, server_addr(&server).port())
        );
        // The HELLO the proxy forwarded, with a higher attempt number than the replayed
        // one (the capture may lag behind the server). The server's port also saw the
        // attacker's replay, with the lower number; the order in which the capture's
        // reassembly lists the two is not the order they were sent in (taking the last
        // one listed failed 3 runs in 40).
        let mut delivered = None;
        wait_until(LIMIT / 4, "the delivered HELLO in the capture", || {
            delivered = captured_hellos(&capture, cid, server_addr(&server).port())
                .into_iter()
                .filter(|hello| hello.attempt > never_arrived.attempt)
                .max_by_key(|hello| hello.attempt);
            delivered.is_some()
        });
        let delivered = delivered.unwrap();
        // Replayed, the HELLO that did arrive is refused, though its count still holds
        // (the client has read nothing yet).
        match attacker.handshake(&delivered.encode(), Some(&forged_confirm)) {
            Answer::Refused(_) => {}
            accepted => panic!("a replayed hello was accepted: {accepted:?}"),
        }
        let mut got = vec![0u8; WAITING];
        client
            .read_exact(&mut got)
            .expect("the client reads what waited");
        assert!(
            got == waiting.bytes(0..WAITING as u64),
            "the waiting bytes differ"
        );
        assert_eq!(
            client.status().reconnections,
            1,
            "the replay disturbed the session"
        );
        client.write_all(b"still mine").expect("client write");
        client.shutdown(Shutdown::Write).expect("shutdown");
        let from_client = join(server_reader).expect("the server reads to the end");
        assert_eq!(from_client, b"still mine");
    });
}
