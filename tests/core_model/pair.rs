//! The simulated pair: two `Session`s, the TCP pipes between them, a lossy control
//! channel under a virtual clock, and what the tests observe of it.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use robust_tcp::protocol::auth::{
    ChallengeKey, SessionKeys, CHALLENGE_KEY_LEN, NONCE_LEN, SECRET_LEN,
};
use robust_tcp::protocol::control::{ControlKind, ControlMessage, MAX_LEN};
use robust_tcp::protocol::counter::to_wire;
use robust_tcp::protocol::session::{Dropped, End, Limits, ReadGate, Role, Session};

pub const CID: u32 = 42;

/// One direction of a TCP connection: bytes in flight, in order.
#[derive(Default)]
pub struct Pipe {
    pub in_flight: VecDeque<u8>,
}

/// Two session ends, the TCP pipes between them and what each application wrote and read.
pub struct Pair {
    pub now: Instant,
    pub ends: [Session; 2],
    pub pipes: [Pipe; 2], // pipes[i] carries end i's outgoing stream to the other end
    /// Control datagrams in flight from end i, in the order sent.
    pub datagrams: [VecDeque<Vec<u8>>; 2],
    /// Where each end's datagrams come from: the client's address (which may change),
    /// the server's control address.
    pub addrs: [SocketAddr; 2],
    /// Datagrams an end sent to an address that is not its peer's now: (sender, to, bytes).
    pub misdirected: Vec<(usize, SocketAddr, Vec<u8>)>,
    /// Every datagram either end sent, for replays: (sender, bytes).
    pub captured: Vec<(usize, Vec<u8>)>,
    /// The bytes of the datagrams the server accepted (authentic, no replay), by source;
    /// and of those it sent to an address while that was not its validated path.
    pub accepted_from: HashMap<SocketAddr, usize>,
    pub unvalidated_to: HashMap<SocketAddr, usize>,
    pub written: [Vec<u8>; 2],
    pub read: [Vec<u8>; 2],
    pub connected: bool,
    pub epoch: u32,
    pub next_byte: u8,
    /// Whether to keep what is written and read (off when only the counts matter).
    pub record: bool,
}

impl Pair {
    pub fn new(buffer: usize, threshold: usize) -> Pair {
        Pair::with_dead_after(buffer, threshold, [Some(DEAD_AFTER); 2])
    }

    /// [`Pair::new`] whose opening datagrams went through: the server knows where its
    /// client is, so its datagrams reach it.
    pub fn opened(buffer: usize, threshold: usize) -> Pair {
        let mut pair = Pair::new(buffer, threshold);
        pair.deliver_control(|| false);
        pair
    }

    /// A pair whose client and server have these silence limits.
    pub fn with_dead_after(
        buffer: usize,
        threshold: usize,
        dead_after: [Option<Duration>; 2],
    ) -> Pair {
        Pair::build([buffer, buffer], threshold, dead_after)
    }

    /// A pair whose send buffers start at `buffer` bytes and grow up to `max`.
    pub fn growing(buffer: usize, max: usize, threshold: usize) -> Pair {
        Pair::build([buffer, max], threshold, [Some(DEAD_AFTER); 2])
    }

    /// A pair whose send buffers start at `buffer[0]` bytes and grow up to `buffer[1]`.
    pub fn build(buffer: [usize; 2], threshold: usize, dead_after: [Option<Duration>; 2]) -> Pair {
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
            accepted_from: HashMap::new(),
            unvalidated_to: HashMap::new(),
            written: [Vec::new(), Vec::new()],
            read: [Vec::new(), Vec::new()],
            connected: true,
            epoch: 0,
            next_byte: 0,
            record: true,
        }
    }

    /// End `i`'s application writes up to `n` fresh bytes (as much as fits).
    pub fn write(&mut self, i: usize, n: usize) {
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
    pub fn flush(&mut self, i: usize) {
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
    pub fn read(&mut self, i: usize, n: usize) {
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
    pub fn transmit(&mut self) -> bool {
        let mut moved = false;
        for i in 0..2 {
            let mut buf = [0; MAX_LEN];
            while let Some((n, to)) = self.ends[i].poll_datagram(&mut buf, self.now) {
                moved = true;
                if i == 1 && self.ends[1].control_peer() != Some(to) {
                    *self.unvalidated_to.entry(to).or_default() += n;
                }
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
    pub fn receive(&mut self, from: usize, bytes: &[u8]) -> Result<(), Dropped> {
        let addr = self.addrs[from];
        self.receive_from(from, addr, bytes)
    }

    /// Hands `bytes`, sent by end `from`'s side, to the other end as if from `addr`.
    pub fn receive_from(
        &mut self,
        from: usize,
        addr: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Dropped> {
        let now = self.now;
        let r = self.ends[1 - from].handle_datagram(bytes, addr, now);
        if from == 0 && r.is_ok() {
            *self.accepted_from.entry(addr).or_default() += bytes.len();
        }
        r
    }

    /// Moves control datagrams between the ends in order, dropping those `lose` says to.
    pub fn deliver_control(&mut self, mut lose: impl FnMut() -> bool) {
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
    pub fn deliver_shuffled(&mut self, rng: &mut u64) {
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
    pub fn attack(&mut self, rng: &mut u64, count: usize) {
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

    /// What went to addresses other than the peer's, once the server validated its
    /// client's: the server challenges an address the client's newest datagram came from,
    /// and sends nothing else there.
    pub fn check_misdirected(&self) {
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

    /// The server sent no address, while it was not its validated path, more than three
    /// times the bytes it accepted from there (see `path.rs`). (The pair's attacker
    /// replays what it captured, the server's challenges and the client's answers too, so
    /// it may win a validation, as an attacker on the path can.)
    pub fn check_amplification(&self) {
        for (to, &bytes) in &self.unvalidated_to {
            let accepted = self.accepted_from.get(to).copied().unwrap_or(0);
            assert!(
                bytes <= 3 * accepted,
                "{bytes} bytes to {to}, unvalidated, which sent {accepted}"
            );
        }
    }

    /// How many datagrams went to `addr`, not the peer's address.
    pub fn misdirected_to(&self, addr: SocketAddr) -> usize {
        self.misdirected
            .iter()
            .filter(|(_, to, _)| *to == addr)
            .count()
    }

    pub fn pick_captured(&self, rng: &mut u64) -> Option<(usize, Vec<u8>)> {
        if self.captured.is_empty() {
            return None;
        }
        let i = next(rng) as usize % self.captured.len();
        Some(self.captured[i].clone())
    }

    /// Bytes end `i` wrote that its peer has not acknowledged.
    pub fn unacknowledged(&self, i: usize) -> u64 {
        self.ends[i].status(self.now).unacknowledged
    }

    /// The TCP connection breaks: what was in flight is lost.
    pub fn cut(&mut self) {
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
    pub fn reconnect(&mut self) {
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

    pub fn tick(&mut self, ms: u64) {
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
    pub fn settle(&mut self) {
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

pub const CLIENT_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 4000));

pub const SERVER_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 2), 5000));

pub const ATTACKER_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 66), 6666));
/// An address that never sends anything itself: an attacker's spoofed datagrams claim it.
pub const VICTIM_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 3, 3), 3333));

/// The silence after which an end drops its connection.
pub const DEAD_AFTER: Duration = Duration::from_secs(3);

/// The session secret of the pair under test.
pub const SECRET: [u8; SECRET_LEN] = [7; SECRET_LEN];

/// A step of a seeded generator (splitmix64), for the choices inside one operation.
pub fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Steps of 100 ms from the pair's now until `end`, running timers and, if `deliver`,
/// moving every control datagram; returns how many datagrams each end sent.
pub fn run_for(pair: &mut Pair, span: Duration, deliver: bool) -> [usize; 2] {
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

/// The messages end `from` sent since `since` (an index into `captured`).
pub fn messages_sent(pair: &Pair, from: usize, since: usize) -> Vec<ControlMessage> {
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
pub fn kinds_sent(pair: &Pair, from: usize, since: usize) -> Vec<ControlKind> {
    messages_sent(pair, from, since)
        .into_iter()
        .map(|msg| msg.kind)
        .collect()
}

/// How many acknowledgement requests (REQ_ACK) end `from` sent since `since`.
pub fn requests_sent(pair: &Pair, from: usize, since: usize) -> usize {
    kinds_sent(pair, from, since)
        .iter()
        .filter(|k| matches!(k, ControlKind::ReqAck { .. }))
        .count()
}
