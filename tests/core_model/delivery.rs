//! Exactly-once delivery: the property over random operations, counts past 2^32,
//! acknowledgements outside the window, half-close, and forged or replayed datagrams.

use proptest::prelude::*;
use robust_tcp::protocol::auth::{SessionKeys, NONCE_LEN};
use robust_tcp::protocol::control::{ControlKind, ControlMessage, MAX_LEN};
use robust_tcp::protocol::counter::to_wire;
use robust_tcp::protocol::session::{ReadGate, Role};

use crate::pair::{Pair, CID, SECRET, SERVER_ADDR};

#[derive(Clone, Debug)]
enum Op {
    Write(usize, usize),
    Read(usize, usize),
    Control { lose_one_in: u32 },
    Shuffled(u64),
    Attack(u64),
    Cut,
    Reconnect,
    Tick(u64),
    Passivate(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, 1..5000usize).prop_map(|(i, n)| Op::Write(i, n)),
        // Small enough to be held for a batch.
        2 => (0..2usize, 1..200usize).prop_map(|(i, n)| Op::Write(i, n)),
        4 => (0..2usize, 1..5000usize).prop_map(|(i, n)| Op::Read(i, n)),
        3 => (1..5u32).prop_map(|lose_one_in| Op::Control { lose_one_in }),
        1 => any::<u64>().prop_map(Op::Shuffled),
        1 => any::<u64>().prop_map(Op::Attack),
        1 => Just(Op::Cut),
        1 => Just(Op::Reconnect),
        1 => (1..500u64).prop_map(Op::Tick),
        1 => (0..2usize).prop_map(Op::Passivate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn every_byte_arrives_exactly_once(ops in proptest::collection::vec(op(), 1..200)) {
        every_byte_arrives_exactly_once_through(Pair::new(4096, 1024), ops)?;
    }

    #[test]
    fn every_byte_arrives_exactly_once_with_buffers_that_grow_and_shrink(
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        // Buffers from 1 KiB to 16 KiB: writes of up to 5000 bytes make them grow, cuts
        // leave grown buffers to resend, ticks let them shrink.
        every_byte_arrives_exactly_once_through(Pair::growing(1024, 16 << 10, 1024), ops)?;
    }
}

/// Runs `ops` on `pair`: what each side read is always a prefix of what the other wrote,
/// and once the network behaves it is all of it.
fn every_byte_arrives_exactly_once_through(
    mut pair: Pair,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let mut loss = 0u32;
    for op in ops {
        match op {
            Op::Write(i, n) => pair.write(i, n),
            Op::Read(i, n) => pair.read(i, n),
            Op::Control { lose_one_in } => pair.deliver_control(|| {
                loss += 1;
                loss % lose_one_in == 0
            }),
            Op::Shuffled(mut seed) => pair.deliver_shuffled(&mut seed),
            Op::Attack(mut seed) => pair.attack(&mut seed, 20),
            Op::Cut => pair.cut(),
            Op::Reconnect => pair.reconnect(),
            Op::Tick(ms) => pair.tick(ms),
            Op::Passivate(i) => {
                let now = pair.now;
                pair.ends[i].passivate(now);
            }
        }
        for i in 0..2 {
            // What was read is always a prefix of what the other side wrote.
            prop_assert!(pair.written[1 - i].starts_with(&pair.read[i]));
        }
        // Copies from the attacker's address that arrive first get a share of the server's
        // datagrams before it validated an address, within the bound.
        pair.check_amplification();
    }
    pair.settle();
    prop_assert_eq!(&pair.read[0], &pair.written[1]);
    prop_assert_eq!(&pair.read[1], &pair.written[0]);
    Ok(())
}

#[test]
fn sessions_past_four_gib_keep_counting_across_the_wrap() {
    // 1 MiB buffers and 5 GiB through them, with cuts around the 2^32 boundary: every
    // count on the wire wraps, and both sides must still agree on what to resend.
    let mut pair = Pair::new(1 << 20, 1 << 19);
    pair.record = false;
    let chunk = 1 << 20;
    let total: u64 = 5 << 30;
    let mut moved = 0u64;
    while moved < total {
        let before = pair.ends[0].written();
        pair.write(0, chunk);
        moved = pair.ends[0].written();
        let n = (moved - before) as usize;
        if moved > (4 << 30) - (3 << 20) && moved < (4 << 30) + (3 << 20) {
            // Around the wrap: lose the connection with half a chunk in flight.
            pair.read(1, n / 2);
            pair.deliver_control(|| false);
            pair.cut();
            pair.reconnect();
            pair.read(1, usize::MAX);
        } else {
            pair.read(1, n);
        }
        pair.deliver_control(|| false);
    }
    assert_eq!(pair.ends[1].received(), total);
    assert_eq!(pair.ends[0].status(pair.now).unacknowledged, 0);
}

#[test]
fn acks_outside_the_window_never_drop_unacknowledged_data() {
    // Even with the key (a buggy or lying server): counts outside what was sent are
    // ignored.
    let mut pair = Pair::new(4096, 4096);
    pair.write(0, 3000);
    pair.read(1, 1000);
    let server_key = SessionKeys::derive(&SECRET, &[9; NONCE_LEN], Role::Server).control;
    let mut pn = 1_000;
    let mut lie = |count: u64| {
        let msg = ControlMessage {
            cid: CID,
            from_server: true,
            id: 0,
            kind: ControlKind::Ack(to_wire(count)),
        };
        let mut buf = [0; MAX_LEN];
        pn += 1;
        let n = msg.seal(pn, &server_key.send, &mut buf);
        buf[..n].to_vec()
    };
    let now = pair.now;
    let tell = |pair: &mut Pair, d: Vec<u8>| {
        assert!(pair.ends[0].handle_datagram(&d, SERVER_ADDR, now).is_ok())
    };
    tell(&mut pair, lie(3001)); // more than was sent
    tell(&mut pair, lie(1 << 33)); // far beyond, wrapping
    assert_eq!(pair.ends[0].status(now).unacknowledged, 3000);
    tell(&mut pair, lie(1000)); // true: the server read 1000
    assert_eq!(pair.ends[0].status(now).unacknowledged, 2000);
    tell(&mut pair, lie(500)); // less than already acknowledged
    assert_eq!(pair.ends[0].status(now).unacknowledged, 2000);
    // The unacknowledged bytes are still there to resend.
    pair.cut();
    pair.reconnect();
    pair.settle();
    assert_eq!(pair.read[1], pair.written[0]);
}

#[test]
fn half_close_ends_the_stream_after_the_last_byte_only() {
    let mut pair = Pair::new(4096, 1024);
    pair.write(0, 3000);
    let now = pair.now;
    pair.ends[0].shutdown_write(now);
    pair.deliver_control(|| false);
    // Nothing announced yet: 3000 bytes are unacknowledged.
    assert!(matches!(pair.ends[1].read_gate(), ReadGate::Proceed));
    pair.read(1, 1000);
    pair.cut();
    pair.tick(300); // REQ_ACK retransmissions while lingering
    pair.deliver_control(|| false);
    pair.reconnect();
    pair.read(1, usize::MAX);
    pair.tick(300);
    pair.deliver_control(|| false);
    assert_eq!(pair.read[1], pair.written[0]);
    assert!(matches!(pair.ends[1].read_gate(), ReadGate::Eof));
    // The other direction still works.
    pair.write(1, 500);
    pair.read(0, usize::MAX);
    assert_eq!(pair.read[0], pair.written[1]);
}

#[test]
fn a_close_that_outlasts_its_retries_while_disconnected_still_reaches_the_peer() {
    // The client closes with bytes unacknowledged during a long outage in which every
    // datagram is lost: its CLOSE must not be given up on before the peer has the data,
    // or the peer would never learn where the stream ends.
    let mut pair = Pair::new(4096, 1024);
    pair.write(0, 3000);
    pair.cut();
    let now = pair.now;
    pair.ends[0].close(now);
    for _ in 0..600 {
        pair.tick(100); // a minute of retransmissions
        pair.deliver_control(|| true);
    }
    assert!(!pair.ends[0].is_finished());
    pair.settle();
    for _ in 0..5 {
        pair.tick(100);
        pair.deliver_control(|| false);
    }
    assert_eq!(pair.read[1], pair.written[0]);
    assert!(matches!(pair.ends[1].read_gate(), ReadGate::Eof));
    assert!(pair.ends[0].is_finished());
}

#[test]
fn forged_close_reset_and_acks_change_nothing() {
    let mut pair = Pair::new(4096, 1024);
    pair.write(0, 3000);
    pair.write(1, 3000);
    pair.read(1, 100);
    let mut seed = 7;
    pair.attack(&mut seed, 10_000);
    let now = pair.now;
    for end in &pair.ends {
        assert!(matches!(end.read_gate(), ReadGate::Proceed));
    }
    assert_eq!(pair.ends[0].status(now).unacknowledged, 3000);
    pair.settle();
    assert_eq!(pair.read[1], pair.written[0]);
    assert_eq!(pair.read[0], pair.written[1]);
    pair.check_amplification();
}
