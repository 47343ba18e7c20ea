//! The simulated world: one server, its clients, the network between them, a virtual
//! clock; the application streams each side writes and checks; and the oracle that knows
//! which client every opening belongs to.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use robust_tcp::protocol::auth::NONCE_LEN;
use robust_tcp::protocol::control::ControlMessage;
use robust_tcp::protocol::session::{Limits, MAX_AWAITING_CONFIRMATION};
use robust_tcp::Config;

use crate::client::Client;
use crate::net::{Conn, Datagrams, Weather};
use crate::rng::Rng;
use crate::server::Server;

/// The server's TCP address and its control (UDP) address.
pub const SERVER_TCP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1)), 7000);
pub const SERVER_CONTROL: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1)), 7001);

/// An address that belongs to no peer: attackers forge datagrams from it.
pub const VICTIM: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 66));

/// A session's limits from its `Config`, as the engine makes them.
pub fn limits(config: &Config) -> Limits {
    Limits {
        send_buffer: config.send_buffer_size_value(),
        send_buffer_max: config.send_buffer_max_value(),
        ack_threshold: config.ack_threshold_value(),
        give_up_after: config.give_up_after_value(),
        dead_after: config.dead_after_value(),
        linger: config.linger_limit_value(),
    }
}

/// One direction of an application's byte stream: byte `p` is a function of the stream's
/// key and `p`, so a reader checks every byte it gets, in place and in order, without
/// keeping what was written.
#[derive(Clone, Copy, Debug)]
pub struct Stream {
    key: u64,
    /// How many bytes the writer writes in all.
    pub total: u64,
    pub written: u64,
    pub read: u64,
}

impl Stream {
    pub fn new(key: u64, total: u64) -> Self {
        Stream {
            key,
            total,
            written: 0,
            read: 0,
        }
    }

    /// The same stream, as the other end sees it from the start.
    pub fn fresh(&self) -> Self {
        Stream::new(self.key, self.total)
    }

    fn byte(&self, p: u64) -> u8 {
        let mut x = self.key ^ p.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 29;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        (x >> 40) as u8
    }

    pub fn left(&self) -> usize {
        (self.total - self.written) as usize
    }

    pub fn next_bytes(&mut self, n: usize) -> Vec<u8> {
        let from = self.written;
        self.written += n as u64;
        (from..self.written).map(|p| self.byte(p)).collect()
    }

    /// Checks bytes read next: each is the one written at its position, exactly once.
    pub fn check_read(&mut self, bytes: &[u8], who: &str) {
        for (i, &b) in bytes.iter().enumerate() {
            let p = self.read + i as u64;
            assert!(
                p < self.total,
                "{who} read byte {p}, past the {} written: a byte delivered twice",
                self.total
            );
            assert_eq!(
                b,
                self.byte(p),
                "{who}: byte {p} is not the one written there (lost, repeated or reordered)"
            );
        }
        self.read += bytes.len() as u64;
    }

    pub fn is_done(&self) -> bool {
        self.read == self.total
    }
}

/// What only the test knows.
#[derive(Default)]
pub struct Oracle {
    /// Which client drew each opening nonce.
    pub openings: HashMap<[u8; NONCE_LEN], usize>,
    /// The opening nonces the server opened a session for.
    pub opened: HashSet<[u8; NONCE_LEN]>,
    /// By address: the bytes of the datagrams a server session accepted from there
    /// (authentic, no replay), and of those the server sent there while it was not that
    /// session's validated path (every one, to the victim's addresses, which an attacker
    /// forges datagrams from and which never send anything themselves).
    pub accepted_from: HashMap<SocketAddr, u64>,
    pub unvalidated_to: HashMap<SocketAddr, u64>,
}

/// How many bytes the server may send an address that has not answered its challenge, for
/// each byte it accepted from there (PROTOCOL.md section 5).
pub const AMPLIFICATION: u64 = 3;

/// A schedule's class (BUGGIFY-style targeted faults). Most schedules are random only; in
/// the others a compound fault fires at a protocol event, with both sides' `Config`s
/// drawn to suit it, since the edges of the opening are too narrow for random faults to
/// hit (an ANSWER is in flight for a few ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Random faults only.
    Random,
    /// When the server answers an opening: the ANSWER is lost with its connection, and a
    /// partition follows that can outlast the server's memory of the opening while the
    /// server session gives up (issue 18, defect 1).
    LostAnswer,
    /// When the server answers an opening: the client's application aborts, before the
    /// ANSWER is read (issue 18, defect 5).
    AbortAtAnswer,
}

impl Scenario {
    /// The class of schedule `seed`: decided by the seed alone, so the random schedules
    /// (eight in ten) replay as they did before the classes existed.
    pub fn of(seed: u64) -> Self {
        match seed % 10 {
            8 => Scenario::LostAnswer,
            9 => Scenario::AbortAtAnswer,
            _ => Scenario::Random,
        }
    }
}

/// Everything in one schedule.
pub struct World {
    pub scenario: Scenario,
    pub now: Instant,
    pub rng: Rng,
    pub datagrams: Datagrams,
    pub conns: Vec<Conn>,
    pub clients: Vec<Client>,
    pub server: Server,
    pub oracle: Oracle,
    /// Datagrams delivered, for the summary.
    pub delivered: u64,
    /// Datagrams and HELLOs the key-holding attacker forged so far.
    pub forged: u64,
    /// The last port a client was given: each address a client takes is its own.
    port: u16,
    /// Until when the network carries nothing at all, TCP or UDP.
    partition_until: Option<Instant>,
    /// When every datagram was lost (a UDP block or a partition): from, until.
    rough: Vec<(Instant, Option<Instant>)>,
    /// How long TCP bytes take one way.
    pub tcp_latency: Duration,
    /// The connections not broken yet (a schedule makes thousands; most are over).
    pub live: Vec<usize>,
}

impl World {
    pub fn new(scenario: Scenario, rng: Rng, server: Config) -> Self {
        World {
            scenario,
            now: Instant::now(),
            rng,
            datagrams: Datagrams::new(),
            conns: Vec::new(),
            clients: Vec::new(),
            server: Server::new(server),
            oracle: Oracle::default(),
            delivered: 0,
            forged: 0,
            port: 40000,
            partition_until: None,
            rough: Vec::new(),
            tcp_latency: Duration::from_millis(5),
            live: Vec::new(),
        }
    }

    /// The weather changes to `weather`. (Random loss, at most 30% here, does not count as
    /// rough: 14 tries of a RESET all lost is a chance below one in ten million.)
    pub fn set_weather(&mut self, weather: Weather) {
        let blocked = self.datagrams.weather.udp_blocked_until;
        self.datagrams.weather = Weather {
            udp_blocked_until: blocked,
            ..weather
        };
    }

    /// Every datagram is lost for `span`.
    pub fn block_udp(&mut self, span: Duration) {
        let until = self.now + span;
        self.rough.push((self.now, Some(until)));
        let blocked = &mut self.datagrams.weather.udp_blocked_until;
        *blocked = Some(blocked.map_or(until, |b| b.max(until)));
    }

    fn end_rough_weather(&mut self) {
        for (_, until) in &mut self.rough {
            until.get_or_insert(self.now);
        }
    }

    /// Whether datagrams may have been lost between `from` and `to`.
    pub fn was_rough(&self, from: Instant, to: Instant) -> bool {
        self.rough
            .iter()
            .any(|&(start, until)| start < to && until.is_none_or(|u| u > from))
    }

    /// The network carries nothing for `span`: every connection's bytes wait, new
    /// connections come up only after it, datagrams are lost.
    pub fn partition(&mut self, span: Duration) {
        let until = self.now + span;
        self.partition_until = Some(until);
        self.block_udp(span);
        for &c in &self.live {
            self.conns[c].frozen.get_or_insert(self.now);
        }
    }

    /// When the partition in force ends.
    pub fn partition_end(&self) -> Option<Instant> {
        self.partition_until.filter(|&until| until > self.now)
    }

    /// The network heals: no loss, no partition.
    pub fn calm(&mut self) {
        self.end_rough_weather();
        self.datagrams.weather = Weather::calm();
        if self.partition_until.is_some() {
            self.partition_until = Some(self.now);
            self.thaw();
        }
    }

    /// The partition ended: bytes move again.
    fn thaw(&mut self) {
        if self.partition_until.is_some_and(|until| until <= self.now) {
            self.partition_until = None;
            for &c in &self.live {
                self.conns[c].frozen = None;
            }
        }
    }

    /// The server just wrote the ANSWER that opens client `client`'s session on
    /// connection `conn`: the moment the scenario's fault fires, in half of the openings.
    pub fn opening_answered(&mut self, conn: usize, client: usize) {
        if self.scenario == Scenario::Random || !self.rng.chance(500) {
            return;
        }
        match self.scenario {
            Scenario::LostAnswer => {
                self.conns[conn].cut();
                // Up to 90 s: past a tombstone of 12 short server handshake timeouts (the
                // old rule) plus the server session's give-up, within a client's patience;
                // and past `OPENING_WINDOW` plus a give-up, so a client that retried an
                // opening longer than the window would reach a server that forgot it.
                let span = self.rng.millis(5_000, 90_000);
                self.partition(span);
            }
            Scenario::AbortAtAnswer => self.client_abort(client),
            Scenario::Random => {}
        }
    }

    /// A port no client had before.
    pub fn new_port(&mut self) -> u16 {
        self.port += 1;
        self.port
    }

    /// Lets every engine do what is due now: datagrams in, handshakes, timers, datagrams
    /// and bytes out.
    pub fn pump(&mut self) {
        self.thaw();
        let conns = &mut self.conns;
        self.live.retain(|&c| !conns[c].broken);
        for &c in &self.live {
            conns[c].arrive(self.now);
        }
        for c in self.live.clone() {
            if self.conn_breaks_at(c).is_some_and(|t| t <= self.now) {
                self.conns[c].cut();
            }
        }
        for d in self.datagrams.due(self.now) {
            self.delivered += 1;
            if d.to == SERVER_CONTROL {
                self.server_datagram(d.from, &d.bytes);
            } else if let Some(i) = self.clients.iter().position(|c| c.addr == d.to) {
                let Some(route) = ControlMessage::route(&d.bytes) else {
                    continue;
                };
                let c = &mut self.clients[i];
                if route.from_server && route.cid == c.cid && c.cid != 0 {
                    let _ = c.session.handle_datagram(&d.bytes, d.from, self.now);
                } else if route.from_server {
                    c.unrouted.keep(route.cid, &d.bytes, d.from, self.now);
                }
            }
        }
        for _ in 0..3 {
            self.service_server();
            for i in 0..self.clients.len() {
                self.service_client(i);
            }
        }
    }

    /// The bounds that hold whatever peers do: sessions and handshakes per listener,
    /// messages awaiting confirmation per session, and no address that has not answered a
    /// challenge sent more than three times the bytes accepted from it.
    pub fn check_bounds(&self) {
        let config = &self.server.config;
        assert!(self.server.endpoint.session_count() <= config.max_sessions_value());
        assert!(self.server.handshakes.len() <= config.max_handshakes_value());
        let sessions = self.server.sessions.iter().filter(|s| !s.finished);
        for (i, s) in sessions.map(|s| &s.session).enumerate() {
            let awaiting = s.awaiting_confirmation();
            assert!(
                awaiting <= MAX_AWAITING_CONFIRMATION,
                "server session {i}: {awaiting} messages await confirmation"
            );
        }
        for (to, &sent) in &self.oracle.unvalidated_to {
            let accepted = self.oracle.accepted_from.get(to).copied().unwrap_or(0);
            assert!(
                sent <= AMPLIFICATION * accepted,
                "the server sent {sent} bytes to {to}, unvalidated, which sent it {accepted}"
            );
        }
    }

    /// When stalled connection `c` breaks under undelivered bytes.
    fn conn_breaks_at(&self, c: usize) -> Option<Instant> {
        let conn = &self.conns[c];
        if conn.broken {
            return None;
        }
        let client = self.clients[conn.client].config.dead_after_value();
        let server = self.server.config.dead_after_value();
        conn.breaks_at(client, server)
    }

    /// The next moment anything is due.
    fn next_event(&self) -> Option<Instant> {
        let clients = self.clients.iter().filter(|c| !c.finished).flat_map(|c| {
            let dial = c.dial.as_ref().map(|d| {
                if d.hello.is_none() {
                    d.connected_at.min(d.deadline)
                } else {
                    d.deadline
                }
            });
            [c.session.poll_timeout(), dial]
        });
        let sessions = self
            .server
            .sessions
            .iter()
            .filter(|s| !s.finished)
            .map(|s| s.session.poll_timeout());
        let handshakes = self
            .server
            .handshakes
            .values()
            .map(|&deadline| Some(deadline));
        clients
            .chain(sessions)
            .chain(handshakes)
            .chain([self.datagrams.next_arrival()])
            .chain(self.live.iter().map(|&c| self.conn_breaks_at(c)))
            .chain(self.live.iter().map(|&c| self.conns[c].accept_at))
            .chain(self.live.iter().map(|&c| self.conns[c].next_arrival()))
            .chain([self.partition_until])
            .flatten()
            .min()
    }

    /// Runs the world for `span` of virtual time, event by event.
    pub fn advance(&mut self, span: Duration) {
        let end = self.now + span;
        let mut stuck = 0;
        while self.now < end {
            let next = self.next_event().unwrap_or(end).clamp(self.now, end);
            if next == self.now {
                stuck += 1;
                assert!(
                    stuck < 1000,
                    "a deadline that stays due however often it is served (t = {:?})",
                    self.now
                );
                self.now += Duration::from_millis(1);
            } else {
                stuck = 0;
                self.now = next;
            }
            self.pump();
        }
    }
}
