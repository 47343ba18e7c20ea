//! Where a server sends its datagrams: its client's address, followed when it changes,
//! and validated by a challenge.

use std::net::SocketAddr;
use std::time::Duration;

use robust_tcp::protocol::auth::{SessionKeys, NONCE_LEN};
use robust_tcp::protocol::control::{ControlKind, ControlMessage, MAX_LEN};
use robust_tcp::protocol::session::{Dropped, Role, Session};

use crate::pair::{run_for, Pair, ATTACKER_ADDR, CID, CLIENT_ADDR, SECRET, VICTIM_ADDR};

#[test]
fn the_server_follows_a_client_whose_address_changes_once_it_answers() {
    let mut pair = Pair::new(4096, 1024);
    pair.write(1, 3000);
    pair.settle();
    // The client moves (a NAT's new mapping, another network): its next datagram comes
    // from the new address, the server challenges it, and the answer moves the path.
    pair.addrs[0] = SocketAddr::from(([10, 0, 7, 9], 4321));
    pair.write(1, 3000);
    pair.write(0, 3000);
    pair.settle();
    assert_eq!(pair.read[0], pair.written[1]);
    assert_eq!(pair.read[1], pair.written[0]);
    // Nothing went astray but to the old address (lost there, as on a real network).
    assert!(pair.misdirected.iter().all(|(_, to, _)| *to == CLIENT_ADDR));
    // From now on the server's datagrams (ACKs, heartbeats) reach the client there.
    let astray = pair.misdirected.len();
    let sent = run_for(&mut pair, Duration::from_secs(2), true);
    assert!(sent[1] > 0);
    assert_eq!(
        pair.misdirected.len(),
        astray,
        "the server still sends to the old address"
    );
    assert_eq!(pair.ends[0].status(pair.now).unacknowledged, 0);
    assert!(pair.ends.iter().all(Session::is_connected));
}

#[test]
fn a_copy_from_elsewhere_that_arrives_first_does_not_move_the_server() {
    let mut pair = Pair::new(4096, 1024);
    pair.settle();
    // The client sends; an attacker's copy of the datagram overtakes the original.
    pair.write(0, 100);
    pair.read(1, usize::MAX);
    let now = pair.now;
    pair.ends[0].writer_blocked(now); // a REQ_ACK goes out
    pair.transmit();
    let d = pair.datagrams[0]
        .pop_front()
        .expect("a datagram from the client");
    pair.receive_from(0, ATTACKER_ADDR, &d)
        .expect("the copy is authentic");
    assert_eq!(pair.receive(0, &d), Err(Dropped::Replayed));
    // The server's answer goes to the client; the attacker gets one challenge, no more.
    pair.transmit();
    assert_eq!(pair.misdirected_to(ATTACKER_ADDR), 1);
    pair.check_misdirected();
    assert!(
        !pair.datagrams[1].is_empty(),
        "the server answers the client"
    );
    pair.settle();
    assert_eq!(pair.read[1], pair.written[0]);
}

#[test]
fn a_key_holder_that_never_saw_the_challenge_cannot_move_the_path() {
    // Anyone may open a session, so an attacker may hold its client's keys. It sends one
    // authentic datagram "from" a victim's address, which the server challenges, and then
    // answers the challenge it never received with guesses, from there too. The server
    // must keep sending to its client, and send the victim nothing but challenges.
    let mut pair = Pair::opened(4096, 1024);
    assert_eq!(pair.ends[1].control_peer(), Some(CLIENT_ADDR));
    let client = SessionKeys::derive(&SECRET, &[9; NONCE_LEN], Role::Client).control;
    let mut pn = 1 << 40;
    let mut forge = |kind| {
        let msg = ControlMessage {
            cid: CID,
            from_server: false,
            id: 0,
            kind,
        };
        let mut d = [0; MAX_LEN];
        let n = msg.seal(pn, &client.send, &mut d);
        pn += 1;
        d[..n].to_vec()
    };
    pair.receive_from(0, VICTIM_ADDR, &forge(ControlKind::Ack(0)))
        .expect("authentic");
    pair.transmit();
    for guess in 0..10_000 {
        pair.now += Duration::from_millis(1);
        pair.receive_from(0, VICTIM_ADDR, &forge(ControlKind::Response(guess)))
            .expect("authentic");
        pair.transmit();
    }
    assert_eq!(pair.ends[1].control_peer(), Some(CLIENT_ADDR));
    pair.check_misdirected();
    let challenges = pair.misdirected_to(VICTIM_ADDR);
    // One per 100 ms at most, over 10 s.
    assert!((1..=101).contains(&challenges), "{challenges} challenges");
}
