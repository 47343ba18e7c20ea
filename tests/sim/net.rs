//! The simulated network: control datagrams with delay, loss, duplication and reordering;
//! TCP connections as two byte pipes that can be cut, reset or stalled.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::rng::Rng;

/// A datagram on its way.
pub struct Datagram {
    pub at: Instant,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// How badly the network behaves now.
#[derive(Clone, Copy, Debug)]
pub struct Weather {
    /// Datagrams lost, per thousand.
    pub loss: u64,
    /// Datagrams delivered twice, per thousand.
    pub duplication: u64,
    /// One-way delay of a datagram: a random value in this range (so they reorder).
    pub delay_ms: (u64, u64),
    /// Until when every datagram is dropped (a partition, or a firewall).
    pub udp_blocked_until: Option<Instant>,
}

impl Weather {
    /// A network that behaves.
    pub fn calm() -> Self {
        Weather {
            loss: 0,
            duplication: 0,
            delay_ms: (5, 5),
            udp_blocked_until: None,
        }
    }
}

/// Datagrams in flight.
pub struct Datagrams {
    pub weather: Weather,
    in_flight: Vec<Datagram>,
    /// Every datagram sent, for replays (bounded: the newest).
    pub captured: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
}

const CAPTURED: usize = 512;

impl Datagrams {
    pub fn new() -> Self {
        Datagrams {
            weather: Weather::calm(),
            in_flight: Vec::new(),
            captured: VecDeque::new(),
        }
    }

    /// Sends `bytes` from `from` to `to` at `now`, as the weather allows.
    pub fn send(
        &mut self,
        rng: &mut Rng,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        bytes: &[u8],
    ) {
        if self.captured.len() == CAPTURED {
            self.captured.pop_front();
        }
        self.captured.push_back((from, to, bytes.to_vec()));
        let w = self.weather;
        if w.udp_blocked_until.is_some_and(|until| until > now) || rng.chance(w.loss) {
            return;
        }
        let copies = if rng.chance(w.duplication) { 2 } else { 1 };
        for _ in 0..copies {
            let at = now + rng.millis(w.delay_ms.0, w.delay_ms.1);
            self.in_flight.push(Datagram {
                at,
                from,
                to,
                bytes: bytes.to_vec(),
            });
        }
    }

    /// The datagrams due by `now`, in the order they arrive.
    pub fn due(&mut self, now: Instant) -> Vec<Datagram> {
        let (mut due, later): (Vec<_>, Vec<_>) =
            self.in_flight.drain(..).partition(|d| d.at <= now);
        self.in_flight = later;
        // A stable sort: datagrams due at one instant keep the order they were sent in.
        due.sort_by_key(|d| d.at);
        due
    }

    /// Injects a datagram as if sent from `from` (an attacker's), arriving at once.
    pub fn inject(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.in_flight.push(Datagram {
            at: now,
            from,
            to,
            bytes,
        });
    }

    /// When the next datagram arrives.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.iter().map(|d| d.at).min()
    }
}

/// One TCP connection between a client and the server.
pub struct Conn {
    /// The client it belongs to, and the address it comes from.
    pub client: usize,
    pub from: SocketAddr,
    /// Bytes that arrived at the server, and at the client.
    pub up: VecDeque<u8>,
    pub down: VecDeque<u8>,
    /// Bytes on their way to the server, and to the client, with when they arrive.
    up_wire: VecDeque<(Instant, Vec<u8>)>,
    down_wire: VecDeque<(Instant, Vec<u8>)>,
    /// How long bytes take one way.
    latency: Duration,
    /// Broken (cut, reset, or closed by one end): each end finds out when it next looks.
    pub broken: bool,
    /// Since when bytes stop moving (a blackhole): nothing arrives, nobody is told, until
    /// a kernel's `TCP_USER_TIMEOUT` (the engine sets it to `dead_after`) breaks the
    /// connection under bytes it could not deliver.
    pub stalled: Option<Instant>,
    /// Since when a partition holds its bytes (they move again once it ends).
    pub frozen: Option<Instant>,
    /// When its TCP handshake completes and the server accepts it (later than asked
    /// during a partition: the SYN gets through only after it); `None` once accepted.
    pub accept_at: Option<Instant>,
    /// The server end is done with it (handed over, refused or closed).
    pub server_done: bool,
    /// The client end is done with it.
    pub client_done: bool,
}

impl Conn {
    /// Bytes that have arrived at the server end.
    pub fn at_server(&mut self) -> Option<&mut VecDeque<u8>> {
        (self.stalled.is_none() && self.frozen.is_none()).then_some(&mut self.up)
    }

    /// Bytes that have arrived at the client end.
    pub fn at_client(&mut self) -> Option<&mut VecDeque<u8>> {
        (self.stalled.is_none() && self.frozen.is_none()).then_some(&mut self.down)
    }

    /// When a stalled connection breaks: once bytes wait in it, `user_timeout` after the
    /// stall began (for the side whose bytes wait: `client` for the client's, `server`
    /// for the server's), if that side has one.
    pub fn breaks_at(&self, client: Option<Duration>, server: Option<Duration>) -> Option<Instant> {
        let since = self.stalled.or(self.frozen)?;
        let up = client.filter(|_| !self.up_wire.is_empty());
        let down = server.filter(|_| !self.down_wire.is_empty());
        [up, down].into_iter().flatten().min().map(|d| since + d)
    }

    /// A new connection from client `client` at `from`, which the server accepts at
    /// `accept_at`.
    pub fn new(client: usize, from: SocketAddr, accept_at: Instant, latency: Duration) -> Self {
        Conn {
            client,
            from,
            up: VecDeque::new(),
            down: VecDeque::new(),
            up_wire: VecDeque::new(),
            down_wire: VecDeque::new(),
            latency,
            broken: false,
            stalled: None,
            frozen: None,
            accept_at: Some(accept_at),
            server_done: false,
            client_done: false,
        }
    }

    /// Breaks it: what was in flight is lost, and each end finds out when it next looks.
    pub fn cut(&mut self) {
        self.broken = true;
        self.up.clear();
        self.down.clear();
        self.up_wire.clear();
        self.down_wire.clear();
    }

    /// The client writes `bytes` at `now`.
    pub fn send_up(&mut self, now: Instant, bytes: &[u8]) {
        let at = arrival(&self.up_wire, now + self.latency);
        self.up_wire.push_back((at, bytes.to_vec()));
    }

    /// The server writes `bytes` at `now`.
    pub fn send_down(&mut self, now: Instant, bytes: &[u8]) {
        let at = arrival(&self.down_wire, now + self.latency);
        self.down_wire.push_back((at, bytes.to_vec()));
    }

    /// Moves what arrived by `now` to the ends (nothing moves while stalled or frozen).
    pub fn arrive(&mut self, now: Instant) {
        if self.stalled.is_some() || self.frozen.is_some() {
            return;
        }
        for (wire, end) in [
            (&mut self.up_wire, &mut self.up),
            (&mut self.down_wire, &mut self.down),
        ] {
            while wire.front().is_some_and(|(at, _)| *at <= now) {
                if let Some((_, bytes)) = wire.pop_front() {
                    end.extend(bytes);
                }
            }
        }
    }

    /// When the next bytes arrive, if they can.
    pub fn next_arrival(&self) -> Option<Instant> {
        if self.broken || self.stalled.is_some() || self.frozen.is_some() {
            return None;
        }
        let up = self.up_wire.front().map(|(at, _)| *at);
        let down = self.down_wire.front().map(|(at, _)| *at);
        up.into_iter().chain(down).min()
    }

    /// The client closes it abruptly.
    pub fn abort_from_client(&mut self) {
        self.client_done = true;
        self.cut();
    }

    /// The server closes it abruptly.
    pub fn abort_from_server(&mut self) {
        self.server_done = true;
        self.cut();
    }
}

/// When bytes sent at `earliest` arrive behind what `wire` holds: in order.
fn arrival(wire: &VecDeque<(Instant, Vec<u8>)>, earliest: Instant) -> Instant {
    wire.back()
        .map_or(earliest, |(last, _)| earliest.max(*last))
}

/// A TCP connect's time: one round trip, roughly.
pub const CONNECT_TIME: Duration = Duration::from_millis(10);
