//! An eavesdropper (issue 20): it records every byte of a session, the opening, a
//! reconnection and the control datagrams (an `AF_PACKET` capture on `lo`, so the test
//! needs root, as CI has), then attacks with what it saw. With the key agreement (the
//! default) nothing it recorded gives it a key: no derivation from the public values
//! opens a captured datagram, its replays of the opening and of the reconnection are
//! refused, and its forged RESET, CLOSE, HALF_CLOSE and truncating ACKs are dropped; the
//! session delivers every byte exactly once both ways. With the lightweight opening
//! (`Config::paper()`), the same recording holds the keys.
#![cfg(target_os = "linux")]

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, SocketAddrV4, UdpSocket};
use std::ops::Range;
use std::thread;
use std::time::Duration;

use robust_tcp::protocol::agreement::{self, KEY_LEN};
use robust_tcp::protocol::auth::SessionKeys;
use robust_tcp::protocol::control::{ControlKind, ControlMessage, MAX_LEN};
use robust_tcp::protocol::handshake::{Answer, Hello, RefusalCode, HEADER_LEN};
use robust_tcp::protocol::session::Role;
use robust_tcp::{Config, RSocket, SessionState};
use robust_tcp_testkit::bounded::{poll_until, run_bounded};
use robust_tcp_testkit::capture::{Capture, Packet, Proto};
use robust_tcp_testkit::payload::{expect_eof, Payload};
use robust_tcp_testkit::proxy::{CutPlan, FaultProxy};
use robust_tcp_testkit::rng::{fresh_seed, Rng};
use robust_tcp_testkit::session::{connect_pair, control_port, fast_config, server_addr};

use robust_tcp_testkit::attacker::{recording, Attacker, Recording, Tally};

const LIMIT: Duration = Duration::from_secs(60);
/// Bytes each way, in two halves: the first before the attack, the second after.
const HALF: u64 = 256 << 10;

/// A session through a cutting proxy, recorded from its opening on.
struct Recorded {
    capture: Capture,
    server: robust_tcp::RServerSocket,
    proxy: FaultProxy,
    client: RSocket,
    accepted: RSocket,
    up: Payload,
    down: Payload,
    control_port: u16,
}

/// Opens a session with `config` on both sides, moves the first halves both ways, cuts
/// the connection once (a reconnection), and waits until the capture holds the opening,
/// the reconnection and datagrams both ways.
fn recorded_session(config: Config) -> Recorded {
    let capture = Capture::start().expect("a packet capture on lo (run the tests as root)");
    let server = robust_tcp::RServerSocket::bind_with("127.0.0.1:0", config.clone())
        .expect("bind the server");
    let control_port = control_port(&server);
    let proxy = FaultProxy::start(server_addr(&server), CutPlan::never()).expect("the proxy");
    let seed = proxy.seed();
    let (client, accepted) = connect_pair(&server, proxy.local_addr(), config);
    let (up, down) = (
        Payload::new(seed, 2 * HALF),
        Payload::new(seed ^ 1, 2 * HALF),
    );
    transfer(&client, &accepted, up, 0..HALF, false);
    // The connection is cut between the halves: the client reconnects (a HELLO and a
    // CONFIRM for the recording).
    assert!(proxy.cut_all() > 0, "nothing to cut");
    transfer(&accepted, &client, down, 0..HALF, false);
    let r = Recorded {
        capture,
        server,
        proxy,
        client,
        accepted,
        up,
        down,
        control_port,
    };
    let recorded = poll_until(LIMIT / 4, || {
        let rec = r.recording();
        !rec.opening_hellos.is_empty()
            && !rec.settled_hellos().is_empty()
            && !rec.confirms.is_empty()
            && rec.datagrams.len() >= 4
    });
    let rec = r.recording();
    assert!(
        recorded,
        "seed {seed}: the capture lacks an opening, a reconnection or datagrams: {} opening \
         HELLOs, {} settled HELLOs, {} CONFIRMs, {} datagrams",
        rec.opening_hellos.len(),
        rec.settled_hellos().len(),
        rec.confirms.len(),
        rec.datagrams.len()
    );
    r.client_control(); // Both sides sent datagrams.
    r
}

impl Recorded {
    /// The session's own packets (other processes' share `lo`, and `control_port`'s
    /// raw opening went to the server directly): TCP to and from the proxy, UDP to and
    /// from the server's control port.
    fn packets(&self) -> Vec<Packet> {
        let tcp = self.proxy.local_addr().port();
        let ports = |p: &Packet| [p.src.port(), p.dst.port()];
        self.capture
            .packets()
            .into_iter()
            .filter(|p| match p.proto {
                Proto::Tcp => ports(p).contains(&tcp),
                Proto::Udp => ports(p).contains(&self.control_port),
            })
            .collect()
    }

    /// What the eavesdropper recorded, sorted.
    fn recording(&self) -> Recording {
        let packets = self.packets();
        let mut r = recording(&packets);
        // Both directions, the server's datagrams and the client's, of this session (the
        // CID leads each).
        let cid = self.client.session_id().to_be_bytes();
        r.datagrams = packets
            .iter()
            .filter(|p| p.proto == Proto::Udp && p.payload.starts_with(&cid))
            .map(|p| p.payload.clone())
            .collect();
        r
    }

    /// The client's control address: where its datagrams to the server came from.
    fn client_control(&self) -> SocketAddrV4 {
        self.packets()
            .iter()
            .find(|p| p.proto == Proto::Udp && p.dst.port() == self.control_port)
            .map(|p| p.src)
            .expect("a datagram from the client")
    }

    /// Finishes the transfer (the second halves both ways, then end of stream) and
    /// checks that every byte arrived once, in order, and nothing more.
    fn finish(self) {
        transfer(&self.client, &self.accepted, self.up, HALF..2 * HALF, true);
        transfer(
            &self.accepted,
            &self.client,
            self.down,
            HALF..2 * HALF,
            true,
        );
        for sock in [&self.client, &self.accepted] {
            let status = sock.status();
            assert_eq!(
                (status.bytes_written, status.bytes_read),
                (2 * HALF, 2 * HALF),
                "{status:?}"
            );
            assert_ne!(status.state, SessionState::Closed, "{status:?}");
        }
    }
}

/// Writes `range` of `payload` on `from` (then shuts it down for writing, if `last`) from
/// another thread, and reads and checks it on `to` (then its end of stream).
fn transfer(from: &RSocket, to: &RSocket, payload: Payload, range: Range<u64>, last: bool) {
    thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut from = from;
            from.write_all(&payload.bytes(range.clone()))?;
            if last {
                from.shutdown(Shutdown::Write)?;
            }
            io::Result::Ok(())
        });
        payload.verify_range(to, range.clone()).expect("read");
        if last {
            expect_eof(to, range.end).expect("end of stream");
        }
        writer.join().expect("the writer").expect("write");
    });
}

/// Every set of session keys an eavesdropper can compute from the opening it recorded:
/// the lightweight derivation over the HELLO's key, and key agreements of its own with
/// each side's public key, each for both roles.
fn eavesdropper_keys(
    opening: &Hello,
    answer_part: &[u8; agreement::ANSWER_PART_LEN],
) -> Vec<SessionKeys> {
    let mut keys = Vec::new();
    for role in [Role::Client, Role::Server] {
        keys.push(SessionKeys::derive(
            &opening.opening_key,
            &opening.opening_nonce,
            role,
        ));
    }
    for own in [[0x5a; KEY_LEN], [1; KEY_LEN]] {
        let nonce = &opening.opening_nonce;
        keys.extend(agreement::finish(&own, nonce, answer_part));
        keys.extend(agreement::answer(&own, nonce, &opening.opening_key).map(|(_, k)| k));
    }
    keys
}

/// The opening HELLO the client sent and the server's part of the agreement in the
/// ANSWER to it, from `rec`.
fn opening_exchange(r: &Recorded) -> (Hello, [u8; agreement::ANSWER_PART_LEN]) {
    let rec = r.recording();
    let frame = rec.opening_hellos.first().expect("the opening hello");
    let opening = Hello::parse(&frame[HEADER_LEN..]).expect("a hello");
    let part = r
        .packets()
        .iter()
        .filter(|p| p.proto == Proto::Tcp && p.payload.len() > HEADER_LEN)
        .find_map(|p| match Answer::parse(p.payload.get(HEADER_LEN..)?) {
            Ok(Answer::Accepted(a)) if a.client_nonce == opening.nonce => Some(a.agreement),
            _ => None,
        })
        .expect("the answer to the opening");
    (opening, part)
}

/// How many captured datagrams some key of `keys` opens.
fn opened_by(keys: &[SessionKeys], datagrams: &[Vec<u8>]) -> usize {
    datagrams
        .iter()
        .filter(|d| {
            keys.iter()
                .any(|k| ControlMessage::open(d, &k.control.recv).is_ok())
        })
        .count()
}

// Proves: with the key agreement (the default), an eavesdropper that recorded a session's
// opening, a reconnection and its datagrams holds no key, and neither resumes, resets,
// closes nor truncates the session with what it saw; every byte arrives once.
#[test]
fn an_eavesdropper_gets_no_key_and_cannot_disturb_the_session() {
    run_bounded(LIMIT, || {
        let r = recorded_session(fast_config());
        let rec = r.recording();
        let (opening, part) = opening_exchange(&r);
        assert!(
            opening.key_agreement,
            "the default opening runs the agreement"
        );
        let keys = eavesdropper_keys(&opening, &part);
        assert_eq!(
            opened_by(&keys, &rec.datagrams),
            0,
            "the eavesdropper opened a datagram with keys from the recording"
        );
        let cid = r.client.session_id();
        for hello in rec.settled_hellos() {
            let hello = Hello::parse(&hello[HEADER_LEN..]).expect("a hello");
            assert!(
                keys.iter().all(|k| !hello.verify(&k.handshake.client)),
                "the eavesdropper can tag a reconnection"
            );
        }

        let attacker = Attacker {
            server: server_addr(&r.server),
            control: SocketAddr::from(([127, 0, 0, 1], r.control_port)),
            cid,
            udp: UdpSocket::bind("127.0.0.1:0").expect("bind the attacker's socket"),
            rng: Rng::new(fresh_seed()),
            stranger: keys[0].clone(),
            tally: Tally::default(),
        };
        // The recorded opening, as it was and with any attempt number (it carries no
        // tag): the client proved that it holds the keys, so each is refused.
        for attempt in [opening.attempt, 1, 2, u64::MAX] {
            let mut hello = opening;
            hello.attempt = attempt;
            match attacker.handshake(&hello.encode(), None) {
                Answer::Refused(RefusalCode::UnknownSession) => {}
                other => panic!("a replayed opening got {other:?}"),
            }
        }
        // The recorded reconnection with its CONFIRM: its attempt is used up.
        let confirm = rec.confirms.last().cloned();
        for hello in rec.settled_hellos() {
            match attacker.handshake(&hello, confirm.as_deref()) {
                Answer::Refused(_) => {}
                other => panic!("a replayed reconnection got {other:?}"),
            }
        }
        // Forged farewells under every key it could compute, to both sides; replays of
        // every datagram; ACKs it recorded with their counts changed (a truncation).
        let client_control = SocketAddr::V4(r.client_control());
        for (i, k) in keys.iter().enumerate() {
            for (kind, from_server) in [
                (ControlKind::Reset, true),
                (ControlKind::Reset, false),
                (ControlKind::Close(0), true),
                (ControlKind::Close(0), false),
                (ControlKind::HalfClose(1), true),
                (ControlKind::HalfClose(1), false),
                (ControlKind::Ack(u32::MAX), false),
            ] {
                let msg = ControlMessage {
                    cid,
                    from_server,
                    id: i as u16,
                    kind,
                };
                let mut buf = [0u8; MAX_LEN];
                let n = msg.seal(1 << 40, &k.control.send, &mut buf);
                let to = if from_server {
                    client_control
                } else {
                    attacker.control
                };
                attacker.udp.send_to(&buf[..n], to).expect("send");
            }
        }
        for d in &rec.datagrams {
            for to in [attacker.control, client_control] {
                attacker.udp.send_to(d, to).expect("send");
                let mut changed = d.clone();
                // The count (docs/PROTOCOL.md section 5), an ACK's position.
                if let Some(b) = changed.get_mut(16) {
                    *b ^= 0x80;
                }
                attacker.udp.send_to(&changed, to).expect("send");
            }
        }
        r.finish();
    });
}

// Proves the test above has teeth: with the lightweight opening (`Config::paper()`'s,
// `key_agreement(false)`), the same recording gives the eavesdropper the session's keys
// (docs/SECURITY.md).
#[test]
fn the_lightweight_opening_gives_its_keys_to_an_eavesdropper() {
    run_bounded(LIMIT, || {
        let r = recorded_session(fast_config().key_agreement(false));
        let rec = r.recording();
        let (opening, part) = opening_exchange(&r);
        assert!(!opening.key_agreement);
        let keys = eavesdropper_keys(&opening, &part);
        assert!(!rec.datagrams.is_empty());
        assert_eq!(opened_by(&keys, &rec.datagrams), rec.datagrams.len());
        r.finish();
    });
}
