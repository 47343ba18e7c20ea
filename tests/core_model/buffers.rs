//! The send buffer growing for a transfer and shrinking back once idle.

use std::time::Duration;

use crate::pair::{requests_sent, Pair};

#[test]
fn a_full_buffer_grows_while_the_peer_reads_and_the_connection_takes_every_byte() {
    let mut pair = Pair::growing(16 << 10, 64 << 10, 1 << 20);
    pair.deliver_control(|| false);
    let capacity = |pair: &Pair| pair.ends[0].status(pair.now).send_buffer_capacity;
    // Full, and the connection took every byte, but the peer has acknowledged nothing:
    // its application may not read at all, so growing would only fill kernel buffers.
    pair.write(0, 16 << 10);
    assert_eq!(pair.ends[0].write_space(), Ok(0));
    // The peer reads half (the writer asked at half its buffer): full again, the buffer
    // doubles instead of the writer waiting.
    pair.deliver_control(|| false);
    pair.read(1, 8 << 10);
    pair.deliver_control(|| false);
    assert_eq!(pair.unacknowledged(0), 8 << 10);
    pair.write(0, 8 << 10);
    assert_eq!(pair.ends[0].write_space(), Ok(16 << 10));
    pair.write(0, 1 << 20);
    assert_eq!(
        (capacity(&pair), pair.unacknowledged(0)),
        (32 << 10, 32 << 10)
    );
    // Again only once the peer has acknowledged half of the new size since.
    pair.deliver_control(|| false);
    pair.read(1, 8 << 10);
    pair.deliver_control(|| false);
    pair.write(0, 1 << 20);
    assert_eq!(pair.unacknowledged(0), 32 << 10);
    assert_eq!(
        pair.ends[0].write_space(),
        Ok(0),
        "8 KiB read since: not yet"
    );
    pair.read(1, 8 << 10);
    pair.deliver_control(|| false);
    pair.write(0, 1 << 20);
    assert_eq!(
        pair.ends[0].write_space(),
        Ok(32 << 10),
        "16 KiB read since"
    );
    pair.write(0, 1 << 20);
    assert_eq!(
        (capacity(&pair), pair.unacknowledged(0)),
        (64 << 10, 64 << 10)
    );
    // Never past the maximum: the writer waits.
    pair.read(1, 32 << 10);
    pair.deliver_control(|| false);
    pair.write(0, 1 << 20);
    assert_eq!(pair.ends[0].write_space(), Ok(0));
    pair.write(0, 1);
    assert_eq!(capacity(&pair), 64 << 10);
    assert!(pair.ends[0].status(pair.now).blocked_write.is_some());
    pair.settle();
    assert_eq!(pair.read[1], pair.written[0]);

    // A peer that has read half a buffer, then a buffer full of bytes the connection has
    // not taken (the writer is blocked in the kernel): no growth.
    let mut pair = Pair::growing(16 << 10, 64 << 10, 1 << 20);
    pair.deliver_control(|| false);
    pair.write(0, 8 << 10);
    pair.read(1, 8 << 10);
    pair.deliver_control(|| false);
    let now = pair.now;
    assert_eq!(pair.ends[0].write(&[7; 16 << 10], now), 16 << 10);
    assert_eq!(pair.ends[0].write_space(), Ok(0));
    assert_eq!(pair.ends[0].write(&[7; 100], now), 0);
    assert_eq!(capacity(&pair), 16 << 10);
    pair.flush(0);
    assert_eq!(pair.ends[0].write_space(), Ok(16 << 10), "taken now");

    // Without a connection: no growth either.
    let mut pair = Pair::growing(16 << 10, 64 << 10, 1 << 20);
    pair.deliver_control(|| false);
    pair.write(0, 8 << 10);
    pair.read(1, 8 << 10);
    pair.deliver_control(|| false);
    pair.write(0, 16 << 10);
    pair.cut();
    assert_eq!(pair.ends[0].write_space(), Ok(0));
    pair.reconnect(); // resends everything: taken again
    assert_eq!(pair.ends[0].write_space(), Ok(16 << 10));

    // Pinned (maximum = initial): the paper's fixed buffer.
    let mut pair = Pair::opened(16 << 10, 8 << 10);
    pair.write(0, 8 << 10);
    pair.read(1, 8 << 10);
    pair.deliver_control(|| false);
    pair.write(0, 16 << 10);
    assert_eq!(pair.ends[0].write_space(), Ok(0));
    assert_eq!(capacity(&pair), 16 << 10);
}

/// End `from` streams to the other end for `cycles` round trips of `round_trip`: it
/// writes until its buffer is full; half a round trip later the first half of its buffer
/// has arrived and the reader reads it (as bytes come in over a real path, half a buffer
/// at a time: each read answers one request); the answer is back another half later.
/// Returns the writer's buffer capacity after each cycle; every byte read is checked.
fn stream_over(pair: &mut Pair, from: usize, round_trip: Duration, cycles: usize) -> Vec<usize> {
    let mut capacities = Vec::new();
    for _ in 0..cycles {
        fill(pair, from);
        pair.write(from, 1); // finds the buffer full
        pair.now += round_trip / 2;
        let half = pair.ends[from].status(pair.now).send_buffer_capacity / 2;
        pair.read(1 - from, half);
        pair.now += round_trip / 2;
        pair.deliver_control(|| false);
        capacities.push(pair.ends[from].status(pair.now).send_buffer_capacity);
    }
    let read = &pair.read[1 - from];
    assert_eq!(read[..], pair.written[from][..read.len()]);
    capacities
}

/// End `from` writes until its buffer is full, growing it whenever it may.
fn fill(pair: &mut Pair, from: usize) {
    while pair.ends[from].write_space().is_ok_and(|space| space > 0) {
        pair.write(from, 1 << 20);
    }
}

/// Delivers control datagrams as [`Pair::deliver_control`] does, but each takes
/// `one_way` to arrive.
fn deliver_control_slowly(pair: &mut Pair, one_way: Duration) {
    for _ in 0..8 {
        if !pair.transmit() {
            break;
        }
        pair.now += one_way;
        for i in 0..2 {
            while let Some(d) = pair.datagrams[i].pop_front() {
                let r = pair.receive(i, &d);
                assert!(r.is_ok(), "{r:?}");
            }
        }
    }
}

// Proves: up to 1 MiB a buffer grows as before; past it only over a path whose round
// trip is long (1 ms or more) or not known. A client knows it from its HELLO and the
// server's ANSWER (the engine tells the core); a server from the challenge of its
// client's address.
#[test]
fn a_buffer_grows_past_a_megabyte_only_over_a_long_round_trip() {
    const MIB: usize = 1 << 20;
    let growing = || Pair::growing(16 << 10, 4 * MIB, 2 * MIB);
    let wan = Duration::from_millis(30);
    let lan = Duration::from_micros(200);
    for (measured, path, expected) in [
        (Some(wan), wan, 4 * MIB),
        (Some(lan), lan, MIB),
        // The threshold: 1 ms.
        (Some(Duration::from_micros(999)), lan, MIB),
        (Some(Duration::from_millis(1)), lan, 4 * MIB),
        // Not measured: as every buffer grew before the round trip was measured.
        (None, lan, 4 * MIB),
    ] {
        let mut pair = growing();
        pair.deliver_control(|| false);
        if let Some(rtt) = measured {
            pair.ends[0].handle_round_trip(rtt);
        }
        let capacities = stream_over(&mut pair, 0, path, 40);
        assert_eq!(
            capacities.last(),
            Some(&expected),
            "{measured:?}: {capacities:?}"
        );
        pair.settle();
        assert_eq!(pair.read[1], pair.written[0]);
    }

    // The server measures its path when it checks its client's address: the client's
    // first datagram, the challenge and the response each take half the round trip.
    for (path, expected) in [(wan, 4 * MIB), (lan, MIB)] {
        let mut pair = growing();
        deliver_control_slowly(&mut pair, path / 2);
        let capacities = stream_over(&mut pair, 1, path, 40);
        assert_eq!(
            capacities.last(),
            Some(&expected),
            "{path:?}: {capacities:?}"
        );
    }
}

/// End 0 streams over a path of `round_trip` for `cycles` round trips, as bytes come in
/// over a real path: the reader reads the first `capacity` bytes of each round trip a
/// quarter at a time, each read's acknowledgement (if one was asked for) comes back before
/// the next, and the writer fills its buffer after each. Returns the capacity after each
/// round trip; every byte read is checked.
fn stream_in_quarters(pair: &mut Pair, round_trip: Duration, cycles: usize) -> Vec<usize> {
    let capacity = |pair: &Pair| pair.ends[0].status(pair.now).send_buffer_capacity;
    let mut capacities = Vec::new();
    for _ in 0..cycles {
        fill(pair, 0);
        let quarter = capacity(pair) / 4;
        for _ in 0..4 {
            pair.now += round_trip / 8;
            pair.read(1, quarter);
            pair.now += round_trip / 8;
            pair.deliver_control(|| false);
            fill(pair, 0);
        }
        capacities.push(capacity(pair));
    }
    assert_eq!(pair.read[1], pair.written[0][..pair.read[1].len()]);
    capacities
}

// Proves (issue 19 item 2): over a path measured long, a full buffer whose bytes the
// connection took grows to 64 KiB before anything is acknowledged (a new session's first
// acknowledgement comes two round trips after its first bytes), and then asks at each
// quarter and grows after each quarter acknowledged: four times a round trip, ahead of
// TCP's slow start, where halves gave twice. A short path, one not measured, and an
// exchange that does not fill the buffer keep the paper's start and halves.
#[test]
fn over_a_long_path_a_buffer_starts_at_64_kib_and_quadruples_each_round_trip() {
    const KIB: usize = 1 << 10;
    const MIB: usize = 1 << 20;
    let wan = Duration::from_millis(40);
    let lan = Duration::from_micros(200);
    for (measured, path, first, per_round_trip) in [
        (
            Some(wan),
            wan,
            64 * KIB,
            vec![256 * KIB, MIB, 4 * MIB, 4 * MIB],
        ),
        (
            Some(lan),
            lan,
            16 * KIB,
            vec![32 * KIB, 64 * KIB, 128 * KIB, 256 * KIB],
        ),
        (
            None,
            wan,
            16 * KIB,
            vec![32 * KIB, 64 * KIB, 128 * KIB, 256 * KIB],
        ),
    ] {
        let mut pair = Pair::growing(16 * KIB, 4 * MIB, 2 * MIB);
        pair.deliver_control(|| false);
        if let Some(rtt) = measured {
            pair.ends[0].handle_round_trip(rtt);
        }
        fill(&mut pair, 0);
        let status = pair.ends[0].status(pair.now);
        assert_eq!(
            (status.send_buffer_capacity, pair.unacknowledged(0)),
            (first, first as u64),
            "{measured:?}: nothing acknowledged yet"
        );
        assert_eq!(
            pair.ends[0].write_space(),
            Ok(0),
            "{measured:?}: no further without an acknowledgement"
        );
        let capacities = stream_in_quarters(&mut pair, path, 4);
        assert_eq!(capacities, per_round_trip, "{measured:?}");
        pair.settle();
        assert_eq!(pair.read[1], pair.written[0]);
    }

    // A reply that does not fill the buffer, and the paper's fixed buffer, which never
    // grows: one request, at half.
    for mut pair in [
        Pair::growing(16 * KIB, 4 * MIB, 2 * MIB),
        Pair::opened(16 * KIB, 16 * KIB),
    ] {
        pair.deliver_control(|| false);
        pair.ends[0].handle_round_trip(wan);
        let since = pair.captured.len();
        pair.write(0, 4 * KIB);
        pair.transmit();
        assert_eq!(requests_sent(&pair, 0, since), 0, "not at a quarter");
        pair.write(0, 4 * KIB);
        pair.transmit();
        assert_eq!(requests_sent(&pair, 0, since), 1, "at half");
    }
}

#[test]
fn a_grown_buffer_shrinks_once_empty_for_a_second_and_then_has_no_timer() {
    let no_heartbeats = [None, None];
    let mut pair = Pair::build([16 << 10, 1 << 20], 8 << 10, no_heartbeats);
    let capacity = |pair: &Pair| pair.ends[0].status(pair.now).send_buffer_capacity;
    pair.deliver_control(|| false);
    // An idle session of the initial size has no deadline at all.
    assert_eq!(pair.ends[0].poll_timeout(), None);
    for _ in 0..5 {
        // The peer reads half of what is buffered each round: the buffer doubles when full.
        pair.write(0, 256 << 10);
        pair.read(1, (pair.unacknowledged(0) / 2) as usize);
        pair.deliver_control(|| false);
        pair.write(0, 256 << 10);
    }
    assert_eq!(capacity(&pair), 256 << 10);
    // Not while bytes are unacknowledged, however long.
    pair.tick(5000);
    assert_eq!(capacity(&pair), 256 << 10);
    pair.read(1, usize::MAX);
    pair.deliver_control(|| false);
    assert_eq!(pair.unacknowledged(0), 0);
    let emptied = pair.now;
    assert_eq!(
        pair.ends[0].poll_timeout(),
        Some(emptied + Duration::from_secs(1))
    );
    pair.tick(999);
    assert_eq!(capacity(&pair), 256 << 10);
    // A write in between starts the wait anew.
    pair.write(0, 10);
    pair.read(1, usize::MAX);
    pair.tick(1);
    pair.deliver_control(|| false);
    assert_eq!(capacity(&pair), 256 << 10);
    pair.tick(40); // the reader's delayed acknowledgement
    pair.deliver_control(|| false);
    assert_eq!(pair.unacknowledged(0), 0);
    pair.tick(999);
    assert_eq!(capacity(&pair), 256 << 10);
    pair.tick(1);
    assert_eq!(capacity(&pair), 16 << 10);
    assert_eq!(pair.ends[0].poll_timeout(), None, "no timer once shrunk");
    // And it grows again when needed, keeping the stream intact.
    pair.write(0, 100 << 10);
    pair.write(0, 100 << 10);
    pair.settle();
    assert_eq!(pair.read[1], pair.written[0]);
}
