//! The protocol core driven byte by byte, without sockets or clock: two `Session`s joined
//! by a simulated TCP pipe and a lossy control channel, under a virtual clock.
//!
//! Property: whatever the interleaving of writes, reads, cuts, timer runs and control
//! datagrams lost, duplicated, reordered, replayed or forged, what each side has read is
//! always a prefix of what the other wrote, and once the network behaves again it is all
//! of it.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use robust_tcp::protocol::auth::{
    ChallengeKey, SessionKeys, CHALLENGE_KEY_LEN, NONCE_LEN, SECRET_LEN,
};
use robust_tcp::protocol::control::{ControlKind, ControlMessage, MAX_LEN};
use robust_tcp::protocol::counter::to_wire;
use robust_tcp::protocol::session::{Dropped, End, Limits, ReadGate, Role, Session};

const CID: u32 = 42;

/// One direction of a TCP connection: bytes in flight, in order.
#[derive(Default)]
struct Pipe {
    in_flight: VecDeque<u8>,
}

/// Two session ends, the TCP pipes between them and what each application wrote and read.
struct Pair {
    now: Instant,
    ends: [Session; 2],
    pipes: [Pipe; 2], // pipes[i] carries end i's outgoing stream to the other end
    /// Control datagrams in flight from end i, in the order sent.
    datagrams: [VecDeque<Vec<u8>>; 2],
    /// Where each end's datagrams come from: the client's address (which may change),
    /// the server's control address.
    addrs: [SocketAddr; 2],
    /// Datagrams an end sent to an address that is not its peer's now: (sender, to, bytes).
    misdirected: Vec<(usize, SocketAddr, Vec<u8>)>,
    /// Every datagram either end sent, for replays: (sender, bytes).
    captured: Vec<(usize, Vec<u8>)>,
    written: [Vec<u8>; 2],
    read: [Vec<u8>; 2],
    connected: bool,
    epoch: u32,
    next_byte: u8,
    /// Whether to keep what is written and read (off when only the counts matter).
    record: bool,
}

impl Pair {
    fn new(buffer: usize, threshold: usize) -> Pair {
        Pair::with_dead_after(buffer, threshold, [Some(DEAD_AFTER); 2])
    }

    /// [`Pair::new`] whose opening datagrams went through: the server knows where its
    /// client is, so its datagrams reach it.
    fn opened(buffer: usize, threshold: usize) -> Pair {
        let mut pair = Pair::new(buffer, threshold);
        pair.deliver_control(|| false);
        pair
    }

    /// A pair whose client and server have these silence limits.
    fn with_dead_after(buffer: usize, threshold: usize, dead_after: [Option<Duration>; 2]) -> Pair {
        Pair::build([buffer, buffer], threshold, dead_after)
    }

    /// A pair whose send buffers start at `buffer` bytes and grow up to `max`.
    fn growing(buffer: usize, max: usize, threshold: usize) -> Pair {
        Pair::build([buffer, max], threshold, [Some(DEAD_AFTER); 2])
    }

    /// A pair whose send buffers start at `buffer[0]` bytes and grow up to `buffer[1]`.
    fn build(buffer: [usize; 2], threshold: usize, dead_after: [Option<Duration>; 2]) -> Pair {
        let limits = |dead_after| Limits {
            send_buffer: buffer[0],
            send_buffer_max: buffer[1],
            ack_threshold: threshold,
            give_up_after: None,
            dead_after,
            linger: Duration::from_secs(3600),
        };
        let keys = |role| SessionKeys::derive(&SECRET, &[9; NONCE_LEN], role).control;
        let now = Instant::now();
        Pair {
            now,
            ends: [
                Session::new(
                    End::Client(Some(SERVER_ADDR)),
                    CID,
                    0,
                    limits(dead_after[0]),
                    keys(Role::Client),
                    now,
                ),
                Session::new(
                    // The server's own: the client never learns it.
                    End::Server(ChallengeKey::new(&[5; CHALLENGE_KEY_LEN])),
                    CID,
                    0,
                    limits(dead_after[1]),
                    keys(Role::Server),
                    now,
                ),
            ],
            pipes: [Pipe::default(), Pipe::default()],
            datagrams: [VecDeque::new(), VecDeque::new()],
            addrs: [CLIENT_ADDR, SERVER_ADDR],
            misdirected: Vec::new(),
            captured: Vec::new(),
            written: [Vec::new(), Vec::new()],
            read: [Vec::new(), Vec::new()],
            connected: true,
            epoch: 0,
            next_byte: 0,
            record: true,
        }
    }

    /// End `i`'s application writes up to `n` fresh bytes (as much as fits).
    fn write(&mut self, i: usize, n: usize) {
        let Ok(space) = self.ends[i].write_space() else {
            return;
        };
        if space == 0 {
            self.ends[i].writer_blocked(self.now);
            return;
        }
        let mut data = vec![0u8; n.min(space)];
        if self.record {
            for b in &mut data {
                self.next_byte = self.next_byte.wrapping_add(1);
                *b = self.next_byte;
            }
        }
        let pushed = self.ends[i].write(&data, self.now);
        assert_eq!(pushed, data.len());
        self.ends[i].writer_unblocked();
        if self.record {
            self.written[i].extend_from_slice(&data);
        }
        // With Nagle on, as the engine's writer does: back-to-back writes may wait for a
        // batch, which a timer, a read or a full batch sends.
        if !self.ends[i].hold_unsent(true, self.now) {
            self.flush(i);
        }
    }

    /// The writer's TCP write: everything unsent goes into the pipe.
    fn flush(&mut self, i: usize) {
        if !self.connected {
            return;
        }
        if let Some((from, to)) = self.ends[i].unsent() {
            let bytes = self.ends[i].buffered_from(from, usize::MAX);
            let n = (to - from) as usize;
            self.pipes[i].in_flight.extend(&bytes[..n]);
            self.ends[i].handle_sent(self.epoch, from, n, self.now);
        }
    }

    /// End `i`'s application reads up to `n` bytes that have arrived.
    fn read(&mut self, i: usize, n: usize) {
        // Without a connection there is nothing to read from: what the end's closed
        // connection still held is lost with it.
        if !matches!(self.ends[i].read_gate(), ReadGate::Proceed) || !self.ends[i].is_connected() {
            return;
        }
        if self.ends[i].release_held(self.now, true) {
            self.flush(i);
        }
        let pipe = &mut self.pipes[1 - i].in_flight;
        let n = n.min(pipe.len());
        let arrived = pipe.drain(..n);
        if self.record {
            self.read[i].extend(arrived);
        }
        let now = self.now;
        self.ends[i].handle_read(n, now);
    }

    /// Takes the datagrams each end wants to send into the network.
    fn transmit(&mut self) -> bool {
        let mut moved = false;
        for i in 0..2 {
            let mut buf = [0; MAX_LEN];
            while let Some((n, to)) = self.ends[i].poll_datagram(&mut buf, self.now) {
                moved = true;
                self.captured.push((i, buf[..n].to_vec()));
                if to == self.addrs[1 - i] {
                    self.datagrams[i].push_back(buf[..n].to_vec());
                } else {
                    self.misdirected.push((i, to, buf[..n].to_vec()));
                }
            }
        }
        moved
    }

    /// Hands datagram `bytes` from end `from` to the other end.
    fn receive(&mut self, from: usize, bytes: &[u8]) -> Result<(), Dropped> {
        let addr = self.addrs[from];
        self.receive_from(from, addr, bytes)
    }

    /// Hands `bytes`, sent by end `from`'s side, to the other end as if from `addr`.
    fn receive_from(&mut self, from: usize, addr: SocketAddr, bytes: &[u8]) -> Result<(), Dropped> {
        let now = self.now;
        self.ends[1 - from].handle_datagram(bytes, addr, now)
    }

    /// Moves control datagrams between the ends in order, dropping those `lose` says to.
    fn deliver_control(&mut self, mut lose: impl FnMut() -> bool) {
        for _ in 0..8 {
            let moved = self.transmit();
            if !moved && self.datagrams.iter().all(VecDeque::is_empty) {
                break;
            }
            for i in 0..2 {
                while let Some(d) = self.datagrams[i].pop_front() {
                    if !lose() {
                        // A genuine datagram always authenticates. (It may be refused as
                        // old when a test injected newer ones.)
                        let r = self.receive(i, &d);
                        assert!(matches!(r, Ok(_) | Err(Dropped::Replayed)), "{r:?}");
                    }
                }
            }
        }
    }

    /// Delivers what is in flight out of order, some of it twice, as `rng` decides.
    fn deliver_shuffled(&mut self, rng: &mut u64) {
        self.transmit();
        let mut all: Vec<(usize, Vec<u8>)> = Vec::new();
        for i in 0..2 {
            all.extend(self.datagrams[i].drain(..).map(|d| (i, d)));
        }
        let picks = all.len() * 3 / 2;
        for _ in 0..picks {
            let (from, d) = &all[next(rng) as usize % all.len()];
            let _ = self.receive(*from, &d.clone());
        }
    }

    /// An attacker without the keys: replays captured datagrams and sends forged ones,
    /// none of which may be accepted unless it is a genuine datagram arriving for the
    /// first time.
    fn attack(&mut self, rng: &mut u64, count: usize) {
        let stranger = SessionKeys::derive(&[1; SECRET_LEN], &[9; NONCE_LEN], Role::Server);
        for _ in 0..count {
            let to = (next(rng) % 2) as usize;
            let kind = match next(rng) % 7 {
                0 => ControlKind::Ack(next(rng) as u32),
                1 => ControlKind::ReqAck {
                    received: next(rng) as u32,
                    sent: next(rng) as u32,
                },
                2 => ControlKind::Close(next(rng) as u32 % 64),
                3 => ControlKind::HalfClose(next(rng) as u32 % 64),
                4 => ControlKind::Reset,
                5 => ControlKind::Conf,
                _ => ControlKind::Reconnect(next(rng) as u32),
            };
            let msg = ControlMessage {
                cid: CID,
                from_server: to == 0,
                id: next(rng) as u16,
                kind,
            };
            let mut forged = [0; MAX_LEN];
            // Another session's key (the attacker's own session, say), or a guessed tag.
            let n = msg.seal(next(rng), &stranger.control.send, &mut forged);
            if next(rng) % 2 == 0 {
                let guess = next(rng).to_be_bytes();
                forged[n - 8..n].copy_from_slice(&guess);
            }
            let from = 1 - to;
            assert!(
                self.receive(from, &forged[..n]).is_err(),
                "forged {msg:?} accepted"
            );
            // A captured datagram replayed from the attacker's address: when it is still
            // on its way, it arrives first, and is authentic.
            if let Some((from, d)) = self.pick_captured(rng) {
                let _ = self.receive_from(from, ATTACKER_ADDR, &d);
            }
        }
    }

    /// What went to addresses other than the peer's: the server challenges an address
    /// the client's newest datagram came from, and sends nothing else there.
    fn check_misdirected(&self) {
        let client = SessionKeys::derive(&SECRET, &[9; NONCE_LEN], Role::Client).control;
        for (from, to, d) in &self.misdirected {
            assert_eq!(*from, 1, "the client sends only to the server");
            let (_, msg) = ControlMessage::open(d, &client.recv).expect("genuine");
            assert!(
                matches!(msg.kind, ControlKind::Challenge(_)),
                "{msg:?} sent to {to}, not the client's address"
            );
        }
    }

    /// How many datagrams went to `addr`, not the peer's address.
    fn misdirected_to(&self, addr: SocketAddr) -> usize {
        self.misdirected
            .iter()
            .filter(|(_, to, _)| *to == addr)
            .count()
    }

    fn pick_captured(&self, rng: &mut u64) -> Option<(usize, Vec<u8>)> {
        if self.captured.is_empty() {
            return None;
        }
        let i = next(rng) as usize % self.captured.len();
        Some(self.captured[i].clone())
    }

    /// Bytes end `i` wrote that its peer has not acknowledged.
    fn unacknowledged(&self, i: usize) -> u64 {
        self.ends[i].status(self.now).unacknowledged
    }

    /// The TCP connection breaks: what was in flight is lost.
    fn cut(&mut self) {
        if !self.connected {
            return;
        }
        self.connected = false;
        for pipe in &mut self.pipes {
            pipe.in_flight.clear();
        }
        let now = self.now;
        for end in &mut self.ends {
            end.handle_connection_failed(self.epoch, "cut", now);
        }
    }

    /// The client reconnects: counts are exchanged through the wire's 32 bits, and each
    /// side resends what the other lacks.
    fn reconnect(&mut self) {
        if self.connected {
            return;
        }
        self.epoch += 1;
        let client_received = to_wire(self.ends[0].received());
        let server_received = to_wire(self.ends[1].received());
        let at_server = self.ends[1]
            .check_resume(client_received)
            .expect("server check");
        let at_client = self.ends[0]
            .check_resume(server_received)
            .expect("client check");
        let now = self.now;
        self.ends[1].handle_resume(at_server, self.epoch, now);
        self.ends[0].handle_resume(at_client, self.epoch, now);
        self.connected = true;
        self.flush(0);
        self.flush(1);
    }

    fn tick(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        let now = self.now;
        for i in 0..2 {
            self.ends[i].handle_timeout(now);
            if self.ends[i].release_held(now, false) {
                self.flush(i);
            }
        }
        // An end that found its peer silent dropped the connection; as the engine does,
        // abort it, which the other end sees as a failure too.
        if self.ends.iter().any(|end| !end.is_connected()) {
            self.cut();
        }
    }

    /// Lets the network behave until both directions are fully read. The client
    /// reconnects only when an end needs a connection, as the engine does: a passive
    /// session that stranded bytes never settles.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            // No flush here: what writes held must go out by the hold's own deadline.
            if self.ends.iter().any(Session::needs_connection) {
                self.reconnect();
            }
            for i in 0..2 {
                self.read(i, usize::MAX);
            }
            self.deliver_control(|| false);
            self.tick(250);
            if self.read[0].len() == self.written[1].len()
                && self.read[1].len() == self.written[0].len()
            {
                // Drain what the writers still hold.
                for i in 0..2 {
                    self.write(i, 0);
                }
                return;
            }
        }
        panic!("the pair never settled");
    }
}

const CLIENT_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 4000));
const SERVER_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 2), 5000));
const ATTACKER_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 66), 6666));
/// An address that never sends anything itself: an attacker's spoofed datagrams claim it.
const VICTIM_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 3, 3), 3333));

/// The silence after which an end drops its connection.
const DEAD_AFTER: Duration = Duration::from_secs(3);

/// The session secret of the pair under test.
const SECRET: [u8; SECRET_LEN] = [7; SECRET_LEN];

/// A step of a seeded generator (splitmix64), for the choices inside one operation.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

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
}

/// Steps of 100 ms from the pair's now until `end`, running timers and, if `deliver`,
/// moving every control datagram; returns how many datagrams each end sent.
fn run_for(pair: &mut Pair, span: Duration, deliver: bool) -> [usize; 2] {
    let before = [0, 1].map(|i| pair.captured.iter().filter(|(from, _)| *from == i).count());
    let end = pair.now + span;
    while pair.now < end {
        pair.tick(100);
        if deliver {
            pair.deliver_control(|| false);
        } else {
            pair.transmit();
            pair.datagrams.iter_mut().for_each(VecDeque::clear);
        }
    }
    [0, 1].map(|i| pair.captured.iter().filter(|(from, _)| *from == i).count() - before[i])
}

#[test]
fn heartbeats_keep_an_idle_session_alive_at_one_datagram_per_second() {
    let mut pair = Pair::new(4096, 1024);
    pair.deliver_control(|| false);
    let sent = run_for(&mut pair, Duration::from_secs(60), true);
    assert!(pair.ends.iter().all(Session::is_connected));
    for n in sent {
        // One heartbeat per third of `dead_after`: about 60 in a minute.
        assert!((55..=65).contains(&n), "{sent:?} datagrams in 60 s");
    }
}

#[test]
fn a_silent_peer_fails_the_connection_after_dead_after_and_no_sooner() {
    let mut pair = Pair::new(4096, 1024);
    pair.write(0, 1000);
    pair.deliver_control(|| false);
    let start = pair.now;
    // Everything is lost from now on: no datagram, no TCP byte gets through.
    while pair.ends.iter().all(Session::is_connected) {
        pair.tick(100);
        pair.transmit();
        pair.datagrams.iter_mut().for_each(VecDeque::clear);
        assert!(
            pair.now - start <= DEAD_AFTER,
            "still connected after {DEAD_AFTER:?}"
        );
    }
    assert_eq!(pair.now - start, DEAD_AFTER);
    assert!(pair.ends.iter().all(|end| !end.is_connected()));
    let status = pair.ends[0].status(pair.now);
    assert!(
        status
            .last_failure
            .as_deref()
            .is_some_and(|f| f.contains("heard nothing")),
        "{status:?}"
    );
}

#[test]
fn a_reconnecting_client_probes_and_learns_when_the_server_answers() {
    let mut pair = Pair::new(4096, 1024);
    pair.cut();
    // An outage: the client keeps probing, once a second, and nobody answers.
    let start = pair.captured.len();
    let sent = run_for(&mut pair, Duration::from_secs(30), false);
    assert!((28..=32).contains(&sent[0]), "client probes {sent:?}");
    // A server without a connection sends no heartbeats: only its RECONNECT, with its
    // retransmissions backing off.
    let client_keys = SessionKeys::derive(&SECRET, &[9; NONCE_LEN], Role::Client).control;
    for (from, d) in &pair.captured[start..] {
        if *from == 1 {
            let (_, msg) = ControlMessage::open(d, &client_keys.recv).expect("genuine");
            assert!(matches!(msg.kind, ControlKind::Reconnect(_)), "{msg:?}");
        }
    }
    assert_eq!(pair.ends[0].heard_since_disconnected(), None);
    // The path is back: the next probe is answered.
    run_for(&mut pair, Duration::from_millis(1100), true);
    let heard = pair.ends[0].heard_since_disconnected();
    assert!(heard.is_some_and(|t| t <= pair.now), "{heard:?}");
    pair.reconnect();
    assert_eq!(pair.ends[0].heard_since_disconnected(), None);
    pair.write(1, 700);
    pair.settle();
    assert_eq!(pair.read[0], pair.written[1]);
}

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
fn either_end_keeps_an_idle_session_alive_when_only_it_has_heartbeats() {
    for dead_after in [[Some(DEAD_AFTER), None], [None, Some(DEAD_AFTER)]] {
        let mut pair = Pair::with_dead_after(4096, 1024, dead_after);
        pair.deliver_control(|| false);
        let sent = run_for(&mut pair, Duration::from_secs(60), true);
        assert!(
            pair.ends.iter().all(Session::is_connected),
            "{dead_after:?}"
        );
        for n in sent {
            // One heartbeat an interval from the end that has them, one answer from the
            // other.
            assert!(
                (35..=65).contains(&n),
                "{dead_after:?}: {sent:?} datagrams in 60 s"
            );
        }
        assert!(!pair.ends[0].datagrams_missing());
    }
}

#[test]
fn a_client_that_hears_no_datagram_for_two_intervals_finds_them_missing() {
    let mut pair = Pair::new(4096, 1024);
    pair.deliver_control(|| false);
    // The server's datagrams are lost (UDP dropped one way); TCP bytes still flow.
    let start = pair.now;
    while !pair.ends[0].datagrams_missing() {
        pair.tick(100);
        pair.write(1, 10);
        pair.read(0, usize::MAX);
        pair.transmit();
        pair.datagrams[1].clear();
        assert!(pair.now - start <= DEAD_AFTER, "never found missing");
    }
    assert!(
        pair.now - start < DEAD_AFTER,
        "found missing only at the silence limit"
    );
    assert!(
        pair.ends.iter().all(Session::is_connected),
        "the bytes keep it alive"
    );
    // One datagram from the server clears it.
    run_for(&mut pair, Duration::from_millis(1100), true);
    assert!(!pair.ends[0].datagrams_missing());
}

#[test]
fn a_closed_session_without_a_connection_probes_once_an_interval() {
    // The server is gone: the client's REQ_ACKs for its unacknowledged bytes would be
    // asked of nobody. Only its heartbeat probes and its CLOSE's backing-off
    // retransmissions go out.
    let mut pair = Pair::new(4096, 1024);
    pair.write(0, 3000);
    let now = pair.now;
    pair.ends[0].close(now);
    pair.cut();
    let sent = run_for(&mut pair, Duration::from_secs(20), false);
    // 20 probes and the CLOSE's retransmissions (100 ms doubling to 2 s, 15 in 20 s):
    // 36 here; a REQ_ACK every 200 ms on top made it 136.
    assert!(sent[0] <= 40, "{sent:?} datagrams in 20 s");
}

#[test]
fn a_small_request_and_half_close_are_acknowledged_without_waiting_for_a_timer() {
    // A 64-byte request, then shutdown(Write): the REQ_ACK that shutdown sends overtakes
    // the bytes (UDP against TCP), so when it arrives nothing has been read yet. The
    // acknowledgement must still come as soon as the server has read the request, not
    // at the next REQ_ACK 200 ms later: the virtual clock never moves in this test.
    let mut pair = Pair::opened(16 << 10, 8 << 10);
    let start = pair.now;
    pair.write(0, 64);
    let now = pair.now;
    pair.ends[0].shutdown_write(now);
    pair.deliver_control(|| false); // the REQ_ACK, ahead of the bytes
    pair.read(1, usize::MAX);
    pair.deliver_control(|| false); // the ACK, the HALF_CLOSE and its CONF
    assert_eq!(pair.read[1], pair.written[0]);
    assert_eq!(pair.unacknowledged(0), 0);
    assert!(matches!(pair.ends[1].read_gate(), ReadGate::Eof));
    // The server replies and drops its end; the client reads the reply to its end.
    pair.write(1, 300);
    let now = pair.now;
    pair.ends[1].close(now);
    pair.deliver_control(|| false);
    pair.read(0, usize::MAX);
    pair.deliver_control(|| false);
    assert_eq!(pair.read[0], pair.written[1]);
    assert!(matches!(pair.ends[0].read_gate(), ReadGate::Eof));
    assert_eq!(pair.unacknowledged(1), 0);
    assert!(pair.ends[1].is_finished(), "the server's session is done");
    assert_eq!(pair.now, start, "a timer had to run");
}

/// The messages end `from` sent since `since` (an index into `captured`).
fn messages_sent(pair: &Pair, from: usize, since: usize) -> Vec<ControlMessage> {
    let receiver = if from == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let keys = SessionKeys::derive(&SECRET, &[9; NONCE_LEN], receiver).control;
    pair.captured[since..]
        .iter()
        .filter(|(sender, _)| *sender == from)
        .map(|(_, d)| ControlMessage::open(d, &keys.recv).expect("genuine").1)
        .collect()
}

/// The kinds of the datagrams end `from` sent since `since` (an index into `captured`).
fn kinds_sent(pair: &Pair, from: usize, since: usize) -> Vec<ControlKind> {
    messages_sent(pair, from, since)
        .into_iter()
        .map(|msg| msg.kind)
        .collect()
}

/// How many acknowledgement requests (REQ_ACK) end `from` sent since `since`.
fn requests_sent(pair: &Pair, from: usize, since: usize) -> usize {
    kinds_sent(pair, from, since)
        .iter()
        .filter(|k| matches!(k, ControlKind::ReqAck { .. }))
        .count()
}

#[test]
fn a_writer_asks_for_an_acknowledgement_at_half_its_buffer() {
    // The receiver's own threshold is the whole buffer: it would acknowledge only once
    // the writer is full. The writer asks when half its buffer is unacknowledged, and the
    // receiver answers once it has read that far, with no timer.
    let mut pair = Pair::opened(16 << 10, 16 << 10);
    let start = pair.now;
    let since = pair.captured.len();
    pair.write(0, 4 << 10);
    pair.transmit();
    assert_eq!(
        requests_sent(&pair, 0, since),
        0,
        "asked before half the buffer"
    );
    pair.write(0, 4 << 10);
    pair.transmit();
    assert_eq!(
        requests_sent(&pair, 0, since),
        1,
        "one request at half the buffer"
    );
    pair.deliver_control(|| false);
    assert_eq!(pair.unacknowledged(0), 8 << 10);
    pair.read(1, usize::MAX);
    pair.deliver_control(|| false);
    assert_eq!(pair.unacknowledged(0), 0);
    assert_eq!(pair.now, start);
}

#[test]
fn a_reader_that_goes_idle_acknowledges_after_a_short_delay() {
    // 100 bytes, far below every threshold, and nobody asks: the reader acknowledges
    // them once it has read nothing more for a while (40 ms), not at once and not never.
    let mut pair = Pair::opened(16 << 10, 8 << 10);
    pair.write(0, 100);
    pair.deliver_control(|| false);
    pair.read(1, usize::MAX);
    pair.deliver_control(|| false);
    assert_eq!(pair.unacknowledged(0), 100, "not at once");
    pair.tick(30);
    pair.deliver_control(|| false);
    assert_eq!(pair.unacknowledged(0), 100, "not before 40 ms");
    pair.tick(10);
    pair.deliver_control(|| false);
    assert_eq!(pair.unacknowledged(0), 0, "at 40 ms");
}

#[test]
fn a_writer_asks_once_per_half_buffer_however_small_its_writes() {
    let mut pair = Pair::opened(16 << 10, 16 << 10);
    let since = pair.captured.len();
    for _ in 0..16 {
        pair.write(0, 1024);
        pair.transmit();
    }
    assert_eq!(pair.ends[0].write_space(), Ok(0));
    assert_eq!(requests_sent(&pair, 0, since), 2, "at 8 KiB and at 16 KiB");
    // The reader reads it all: one acknowledgement answers both.
    pair.deliver_control(|| false);
    pair.read(1, usize::MAX);
    pair.transmit();
    let acks = kinds_sent(&pair, 1, since);
    assert_eq!(acks, [ControlKind::Ack(16 << 10)], "{acks:?}");
}

#[test]
fn a_request_is_answered_when_the_reads_reach_it_and_not_before() {
    let mut pair = Pair::opened(16 << 10, 16 << 10);
    pair.write(0, 10_000); // one request, at 8192: half the buffer
    pair.deliver_control(|| false);
    let since = pair.captured.len();
    pair.read(1, 6000);
    pair.transmit();
    assert_eq!(
        kinds_sent(&pair, 1, since),
        [],
        "answered before the reads reached it"
    );
    pair.read(1, 2191);
    pair.transmit();
    assert_eq!(kinds_sent(&pair, 1, since), []);
    pair.read(1, 1);
    pair.transmit();
    assert_eq!(kinds_sent(&pair, 1, since), [ControlKind::Ack(8192)]);
    // A blocked writer asks for every byte it sent.
    let now = pair.now;
    pair.ends[0].writer_blocked(now);
    pair.deliver_control(|| false);
    pair.read(1, 1807);
    pair.transmit();
    assert_eq!(kinds_sent(&pair, 1, since), [ControlKind::Ack(8192)]);
    pair.read(1, 1);
    pair.transmit();
    let answers = [ControlKind::Ack(8192), ControlKind::Ack(10_000)];
    assert_eq!(kinds_sent(&pair, 1, since), answers);
    // A request for what was read already is answered at once.
    pair.ends[0].writer_unblocked();
    pair.ends[0].writer_blocked(now);
    pair.deliver_control(|| false);
    let answers = [
        ControlKind::Ack(8192),
        ControlKind::Ack(10_000),
        ControlKind::Ack(10_000),
    ];
    assert_eq!(kinds_sent(&pair, 1, since), answers);
}

#[test]
fn a_writer_asks_at_each_half_buffer_however_its_writes_are_cut() {
    // One write of the whole buffer: the requests still mark each half, so the reader
    // acknowledges the first half while it reads the second (a sliding window, not a
    // stop and wait per buffer).
    let mut pair = Pair::opened(16 << 10, 1 << 20);
    let since = pair.captured.len();
    pair.write(0, 16 << 10);
    pair.deliver_control(|| false);
    let asked: Vec<_> = kinds_sent(&pair, 0, since)
        .into_iter()
        .filter_map(|k| match k {
            ControlKind::ReqAck { sent, .. } => Some(sent),
            _ => None,
        })
        .collect();
    assert_eq!(asked, [8 << 10, 16 << 10]);
    pair.read(1, 8 << 10);
    pair.deliver_control(|| false);
    assert_eq!(pair.unacknowledged(0), 8 << 10);
    assert_eq!(pair.ends[0].write_space(), Ok(8 << 10));
}

#[test]
fn a_heartbeat_is_answered_at_once_even_with_bytes_unread() {
    // The server reads nothing; the client's heartbeats must still be answered, or it
    // would take its peer for silent.
    let mut pair = Pair::opened(16 << 10, 16 << 10);
    pair.write(0, 10_000);
    pair.deliver_control(|| false);
    let since = pair.captured.len();
    run_for(&mut pair, Duration::from_secs(10), true);
    let answers = kinds_sent(&pair, 1, since)
        .into_iter()
        .filter(|k| *k == ControlKind::Ack(0))
        .count();
    assert!(answers >= 9, "{answers} answers in 10 s");
    assert!(pair.ends.iter().all(Session::is_connected));
    assert!(!pair.ends[0].datagrams_missing());
}

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
        while pair.ends[from].write_space().is_ok_and(|space| space > 0) {
            pair.write(from, 1 << 20);
        }
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

#[test]
fn what_a_server_says_before_it_knows_its_client_address_goes_out_once_it_does() {
    // Connect, request, response, close, all before the server has validated its client's
    // control address (the client's first datagram, the challenge and the response are
    // still on their way): the server's acknowledgement of the request and its CLOSE
    // had nowhere to go. They must go out as soon as the path is validated, not at a
    // retransmission timer; and the client, which would otherwise wait for an
    // acknowledgement from a server session that has ended, must finish too. The
    // virtual clock never moves.
    let mut pair = Pair::new(16 << 10, 8 << 10);
    let start = pair.now;
    request_reply_and_server_close(&mut pair);
    let now = pair.now;
    pair.ends[0].close(now);
    pair.deliver_control(|| false);
    assert_eq!(pair.read[1], pair.written[0]);
    assert_eq!(pair.read[0], pair.written[1]);
    assert_eq!(pair.unacknowledged(0), 0, "the request was acknowledged");
    assert!(pair.ends[1].is_finished(), "the server's session is done");
    assert!(pair.ends[0].is_finished(), "the client's session is done");
    assert_eq!(pair.now, start, "a timer had to run");
}

#[test]
fn a_session_closed_after_its_peer_closed_does_not_wait_long_for_a_confirmation() {
    // A server answers and hangs up; its session ends as soon as the client has
    // acknowledged every byte and confirmed the server's CLOSE, often before the client's
    // own CLOSE arrives, which nobody then confirms. The client must not linger through
    // the 20 s of tries a CLOSE gets otherwise: under a load of such exchanges, thousands
    // of lingering sessions would fill the engine.
    let mut pair = Pair::opened(16 << 10, 8 << 10);
    request_reply_and_server_close(&mut pair);
    pair.deliver_control(|| false);
    assert!(pair.ends[1].is_finished(), "the server's session is done");
    // The server's session is gone: nothing the client sends is answered any more.
    let now = pair.now;
    pair.ends[0].close(now);
    let start = pair.now;
    while !pair.ends[0].is_finished() {
        assert!(
            pair.now - start < Duration::from_secs(1),
            "the client still lingers after {:?}",
            pair.now - start
        );
        pair.tick(50);
        pair.transmit();
        pair.datagrams = [VecDeque::new(), VecDeque::new()];
    }
}

/// Connect-request-response up to the client's last read: a 64-byte request read by the
/// server, an 8 KiB reply, the server's close, the datagrams of both delivered, the
/// reply read.
fn request_reply_and_server_close(pair: &mut Pair) {
    pair.write(0, 64);
    pair.read(1, usize::MAX);
    pair.write(1, 8 << 10);
    let now = pair.now;
    pair.ends[1].close(now);
    pair.deliver_control(|| false);
    pair.read(0, usize::MAX);
}

#[test]
fn a_reader_is_woken_once_when_the_peer_closes_after_it_read_everything() {
    // A read blocked in the kernel when the peer's CLOSE arrives would otherwise wait
    // for the peer's FIN, which follows our confirmation: a round trip.
    let mut pair = Pair::opened(16 << 10, 8 << 10);
    pair.write(1, 300);
    pair.read(0, usize::MAX);
    assert!(!pair.ends[0].poll_end_of_stream(), "the stream goes on");
    let now = pair.now;
    pair.ends[1].close(now);
    pair.deliver_control(|| false);
    assert!(pair.ends[0].poll_end_of_stream(), "the CLOSE ends it");
    assert!(!pair.ends[0].poll_end_of_stream(), "once per connection");
    assert!(matches!(pair.ends[0].read_gate(), ReadGate::Eof));

    // Bytes still unread when the CLOSE comes: the reader gets them first, and its next
    // read sees the end without blocking; the wake comes once they are read.
    let mut pair = Pair::opened(16 << 10, 8 << 10);
    pair.write(1, 300);
    let now = pair.now;
    pair.ends[1].close(now);
    pair.deliver_control(|| false);
    assert!(!pair.ends[0].poll_end_of_stream(), "300 bytes to read");
    pair.read(0, 100);
    assert!(!pair.ends[0].poll_end_of_stream(), "200 bytes to read");
    pair.read(0, usize::MAX);
    assert!(pair.ends[0].poll_end_of_stream());
}

#[test]
fn a_shutdown_asks_again_only_for_bytes_the_last_request_did_not_name() {
    // An 8 KiB reply in a 16 KiB buffer reaches the half-buffer mark, which asks for an
    // acknowledgement of all of it; the shutdown right after has nothing more to ask for
    // (the timer repeats the request if its answer is lost).
    let mut pair = Pair::opened(16 << 10, 16 << 10);
    let since = pair.captured.len();
    pair.write(1, 8 << 10);
    pair.transmit();
    assert_eq!(
        requests_sent(&pair, 1, since),
        1,
        "asked at half the buffer"
    );
    let now = pair.now;
    pair.ends[1].shutdown_write(now);
    pair.transmit();
    assert_eq!(requests_sent(&pair, 1, since), 1, "no second request");

    // Bytes beyond the last request: the shutdown asks for them.
    pair.write(0, 100);
    pair.transmit();
    let since = pair.captured.len();
    let now = pair.now;
    pair.ends[0].shutdown_write(now);
    pair.transmit();
    assert_eq!(requests_sent(&pair, 0, since), 1);
    // And the receiver reads everything and acknowledges it, the writer's timer repeating
    // nothing meanwhile.
    pair.read(0, usize::MAX);
    pair.read(1, usize::MAX);
    pair.deliver_control(|| false);
    assert_eq!(pair.unacknowledged(1), 0);
    assert_eq!(pair.unacknowledged(0), 0);
}

/// The messages the server sent since `since` (an index into `captured`) that await
/// confirmation, each once, as (message id, kind): those pending, if the window spans a
/// retransmission interval.
fn pending_at_server(pair: &Pair, since: usize) -> Vec<(u16, ControlKind)> {
    let mut pending: Vec<(u16, ControlKind)> = messages_sent(pair, 1, since)
        .into_iter()
        .filter(|msg| msg.kind.needs_conf())
        .map(|msg| (msg.id, msg.kind))
        .collect();
    pending.sort_unstable_by_key(|&(id, _)| id);
    pending.dedup();
    pending
}

#[test]
fn failed_offers_leave_a_bounded_number_of_reconnects_pending() {
    // A peer that holds the session's keys (anyone may open a session) sends resuming
    // HELLOs with rising attempt numbers and never CONFIRMs: the first one aborts the live
    // connection, every one leaves a failed offer. However many there are, the server
    // keeps a constant number of RECONNECTs pending, and so sends a constant number of
    // datagrams per retransmission interval.
    let mut pair = Pair::opened(4096, 1024);
    let now = pair.now;
    assert!(pair.ends[1].handle_connection_failed(0, "aborted for a HELLO", now));
    const OFFERS: u32 = 2000;
    for epoch in 1..=OFFERS {
        pair.now += Duration::from_millis(1);
        let now = pair.now;
        pair.ends[1].handle_offer_failed(epoch, now);
        pair.transmit();
        pair.datagrams.iter_mut().for_each(VecDeque::clear);
    }
    // Past the first retransmissions, every pending RECONNECT goes out once per 2 s: over
    // 4 s, each pending one shows its id twice.
    run_for(&mut pair, Duration::from_secs(10), false);
    let since = pair.captured.len();
    let sent = run_for(&mut pair, Duration::from_secs(4), false);
    let pending = pending_at_server(&pair, since);
    assert!(
        pending.len() <= 2 && sent[1] <= 6,
        "{} RECONNECTs pending, {} datagrams sent in 4 s",
        pending.len(),
        sent[1]
    );
    // The ones kept are the ones a client may still use: the live connection that was
    // aborted, and the newest offer.
    let kinds: Vec<ControlKind> = pending.iter().map(|&(_, kind)| kind).collect();
    assert!(
        kinds.contains(&ControlKind::Reconnect(0))
            && kinds.contains(&ControlKind::Reconnect(OFFERS)),
        "{kinds:?}"
    );
}

#[test]
fn a_client_that_installed_the_newest_failed_offer_learns_that_it_failed() {
    // The client reconnected with attempt 5 after earlier attempts of its own failed:
    // it sent the CONFIRM for offer 5 and installed the connection, but the CONFIRM never
    // arrived. The server's RECONNECT for offer 5 must reach it, whatever older offers
    // failed before.
    let mut pair = Pair::opened(4096, 1024);
    pair.cut();
    let now = pair.now;
    for epoch in 1..=5 {
        pair.ends[1].handle_offer_failed(epoch, now);
    }
    let at = pair.ends[0]
        .check_resume(0)
        .expect("the server has sent nothing");
    pair.ends[0].handle_resume(at, 5, now);
    assert!(pair.ends[0].is_connected());
    run_for(&mut pair, Duration::from_secs(3), true);
    assert!(
        pair.ends[0].needs_connection(),
        "the client still uses a connection the server never took"
    );
}

#[test]
fn passivations_never_confirmed_leave_one_pending() {
    // The server's application passivates again and again; its client never confirms,
    // and reconnects each time (its connection was cut). A PASSIVATE for a connection
    // that is gone is moot: only the newest may stay pending.
    let mut pair = Pair::opened(4096, 1024);
    for _ in 0..50 {
        let now = pair.now;
        pair.ends[1].passivate(now);
        pair.transmit();
        pair.datagrams.iter_mut().for_each(VecDeque::clear);
        pair.cut();
        pair.reconnect();
    }
    run_for(&mut pair, Duration::from_secs(10), false);
    let since = pair.captured.len();
    run_for(&mut pair, Duration::from_secs(4), false);
    let pending = pending_at_server(&pair, since);
    // At most one: the RECONNECT for the last connection, which the silent client lost.
    assert!(pending.len() <= 1, "{} pending: {pending:?}", pending.len());
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

/// Whether end `i` rests passive: no connection, on purpose, and none wanted.
fn resting(pair: &Pair, i: usize) -> bool {
    let end = &pair.ends[i];
    let status = end.status(pair.now);
    !end.is_connected() && status.passive && !end.needs_connection()
}

#[test]
fn a_passivation_closes_the_connection_only_once_neither_side_has_unread_bytes() {
    // Issue 18, item 4: bytes in flight both ways when the client passivates. Neither end
    // may close its connection while the other has not read what it sent: those bytes
    // would be lost with the connection, and nobody reconnects while passive.
    let mut pair = Pair::opened(16 << 10, 8 << 10);
    let since = pair.captured.len();
    pair.write(0, 3000);
    pair.write(1, 2000);
    let now = pair.now;
    pair.ends[0].passivate(now);
    pair.deliver_control(|| false);
    assert!(
        pair.ends.iter().all(Session::is_connected),
        "nothing read yet"
    );
    assert!(
        !kinds_sent(&pair, 0, since).contains(&ControlKind::Passivate(0)),
        "PASSIVATE before the client's bytes were read"
    );
    // The server reads the client's bytes: the client asks it to go passive, but its own
    // bytes are unread at the client, so it keeps the connection and does not confirm.
    pair.read(1, usize::MAX);
    pair.deliver_control(|| false);
    assert!(kinds_sent(&pair, 0, since).contains(&ControlKind::Passivate(0)));
    assert!(
        pair.ends.iter().all(Session::is_connected),
        "the server's bytes are unread"
    );
    assert!(!kinds_sent(&pair, 1, since).contains(&ControlKind::Conf));
    // The client reads them: the server confirms and closes, the client closes too.
    pair.read(0, usize::MAX);
    pair.deliver_control(|| false);
    assert_eq!(pair.read[0], pair.written[1]);
    assert_eq!(pair.read[1], pair.written[0]);
    assert!(resting(&pair, 0) && resting(&pair, 1));
    // And they stay so: heartbeats only, no reconnection, no giving up.
    run_for(&mut pair, Duration::from_secs(30), true);
    assert!(resting(&pair, 0) && resting(&pair, 1));
    // A write wakes the session: the client reconnects and the bytes arrive.
    pair.write(1, 100);
    pair.deliver_control(|| false);
    assert!(pair.ends[0].needs_connection());
    pair.cut();
    pair.settle();
    assert_eq!(pair.read[0], pair.written[1]);
}

#[test]
fn a_passive_client_cut_before_its_bytes_were_read_reconnects_to_deliver_them() {
    // The cut loses the bytes in flight; the passivation stands: the client reconnects,
    // resends, and goes passive once the server has read them.
    let mut pair = Pair::opened(16 << 10, 8 << 10);
    pair.write(0, 3000);
    pair.ends[0].passivate(pair.now);
    pair.cut();
    assert!(pair.ends[0].needs_connection(), "its bytes are undelivered");
    pair.reconnect();
    pair.read(1, usize::MAX);
    pair.deliver_control(|| false);
    assert_eq!(pair.read[1], pair.written[0]);
    assert!(resting(&pair, 0) && resting(&pair, 1));
}

#[test]
fn a_write_after_the_passivate_went_out_gives_that_connection_up() {
    // The server may close the connection on the PASSIVATE at any time: bytes written to
    // it would be lost there. The client reconnects instead, and they arrive.
    let mut pair = Pair::opened(16 << 10, 8 << 10);
    let now = pair.now;
    pair.ends[0].passivate(now); // nothing unacknowledged: the PASSIVATE goes at once
    pair.transmit();
    pair.write(0, 100);
    assert!(!pair.ends[0].is_connected());
    assert!(pair.ends[0].needs_connection());
    pair.deliver_control(|| false); // the PASSIVATE arrives now: the server closes
    pair.cut();
    pair.settle();
    assert_eq!(pair.read[1], pair.written[0]);
    assert!(!pair.ends[0].status(pair.now).passive);
}

/// A client session whose opening the server has not answered yet.
fn opening_client(now: Instant) -> Session {
    let limits = Limits {
        send_buffer: 16 << 10,
        send_buffer_max: 16 << 10,
        ack_threshold: 8 << 10,
        give_up_after: None,
        dead_after: Some(DEAD_AFTER),
        linger: Duration::from_secs(3600),
    };
    let keys = SessionKeys::derive(&SECRET, &[9; NONCE_LEN], Role::Client).control;
    Session::new(End::Client(None), 0, 0, limits, keys, now)
}

/// The kinds of the datagrams `end` sends now, as the server reads them.
fn client_sends(end: &mut Session, now: Instant) -> Vec<ControlKind> {
    let keys = SessionKeys::derive(&SECRET, &[9; NONCE_LEN], Role::Server).control;
    let mut out = [0; MAX_LEN];
    let mut kinds = Vec::new();
    while let Some((n, to)) = end.poll_datagram(&mut out, now) {
        assert_eq!(to, SERVER_ADDR);
        kinds.push(
            ControlMessage::open(&out[..n], &keys.recv)
                .expect("genuine")
                .1
                .kind,
        );
    }
    kinds
}

#[test]
fn an_aborted_opening_retries_until_its_reset_can_go_and_takes_no_connection() {
    // Issue 18, item 5: the server may have accepted the session at the HELLO; only its
    // answer names the CID the RESET needs.
    let now = Instant::now();
    let mut client = opening_client(now);
    client.reset(robust_tcp::Error::Aborted, now);
    assert!(
        client_sends(&mut client, now).is_empty(),
        "nowhere to send yet"
    );
    assert!(
        client.needs_connection(),
        "retries its opening to deliver the RESET"
    );
    assert!(!client.is_finished());
    // The retried opening is answered: the RESET goes at once; the connection is not used.
    client.opened(CID, SERVER_ADDR, now);
    client.handle_resume(0, 1, now);
    assert!(!client.is_connected());
    assert!(!client.needs_connection());
    assert_eq!(client_sends(&mut client, now), [ControlKind::Reset]);
    assert!(matches!(client.read_gate(), ReadGate::Failed(_)));
}

#[test]
fn an_aborted_opening_stops_retrying_once_the_opening_fails_or_the_reset_lapses() {
    let now = Instant::now();
    // Refused (the session ended on the server), or given up: nobody to tell.
    let mut refused = opening_client(now);
    refused.reset(robust_tcp::Error::Aborted, now);
    refused.fail(robust_tcp::Error::UnknownSession);
    assert!(!refused.needs_connection());
    assert!(refused.is_finished());
    // No answer ever: the RESET's own tries bound it (about 20 s).
    let mut unanswered = opening_client(now);
    unanswered.reset(robust_tcp::Error::Aborted, now);
    let mut t = now;
    while !unanswered.is_finished() {
        assert!(unanswered.needs_connection());
        t = unanswered
            .poll_timeout()
            .expect("a deadline while it retries");
        unanswered.handle_timeout(t);
        assert!(
            t - now < Duration::from_secs(30),
            "retried past its RESET's tries"
        );
    }
    assert!(!unanswered.needs_connection());
    assert!(t - now > Duration::from_secs(10));
}

#[test]
fn a_closed_server_whose_last_acknowledgement_was_lost_with_the_connection_ends_soon() {
    // Issue 18, suspected: the server closes; its client reads every byte (it is spent:
    // nothing can move either way, so it never reconnects) and acknowledges, but the ACK
    // is lost and the connection fails. The server must not linger for its whole limit
    // (an hour here) for an acknowledgement its client would give if asked.
    let mut pair = Pair::opened(16 << 10, 8 << 10);
    pair.write(1, 3000);
    pair.ends[1].close(pair.now);
    pair.deliver_control(|| false); // the CLOSE and the REQ_ACK, and the CONF back
    pair.read(0, usize::MAX);
    assert_eq!(pair.read[0], pair.written[1]);
    pair.deliver_control(|| true); // the client's ACK is lost
    pair.cut();
    assert!(!pair.ends[0].needs_connection(), "the client is spent");
    assert!(matches!(pair.ends[0].read_gate(), ReadGate::Eof));
    run_for(&mut pair, Duration::from_secs(10), true);
    assert_eq!(pair.unacknowledged(1), 0);
    assert!(pair.ends[1].is_finished(), "the server still lingers");
}

#[test]
fn a_spent_client_without_a_connection_does_not_linger_for_a_close_nobody_confirms() {
    // Found by the simulation: the server answers and closes, and its session ends once
    // the client has acknowledged everything; then the client's connection fails, and its
    // own CLOSE goes to a session that is gone. The client is spent (nothing to send or
    // read: it never reconnects), and a CLOSE without a connection never lapsed: it
    // lingered its whole limit (an hour here), then gave the session up with a RESET.
    let mut pair = Pair::opened(16 << 10, 8 << 10);
    request_reply_and_server_close(&mut pair);
    pair.deliver_control(|| false);
    assert!(pair.ends[1].is_finished(), "the server's session is done");
    pair.cut();
    let now = pair.now;
    pair.ends[0].close(now);
    let start = pair.now;
    while !pair.ends[0].is_finished() {
        let waited = pair.now - start;
        assert!(
            waited < Duration::from_secs(30),
            "the client still lingers after {waited:?}"
        );
        pair.tick(250);
        pair.transmit();
        pair.datagrams = [VecDeque::new(), VecDeque::new()];
    }
    assert!(
        pair.ends[0].failure().is_none(),
        "{:?}",
        pair.ends[0].failure()
    );
}
