//! Tuning knobs for sessions, with defaults that follow the paper.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::core::endpoint::OPENING_WINDOW;
use crate::core::send_buffer::{DEFAULT_MAX_CAPACITY, INITIAL_CAPACITY};

/// Settings for a robust session, shared by [`RSocket`](crate::RSocket) and
/// [`RServerSocket`](crate::RServerSocket).
///
/// The defaults follow Ekwall, Urbán and Schiper where today's networks allow: reconnection
/// attempts forever with an exponential backoff, and the paper's send buffer at first.
///
/// Setters take and return the `Config` so that they chain; the values are checked when the
/// config is used (by `connect_with` or `bind_with`), which fail with
/// [`io::ErrorKind::InvalidInput`] for a value that makes no sense, as std does for a zero
/// timeout.
///
/// # The send buffer
///
/// A session keeps the bytes written but not yet acknowledged, for retransmission, in its
/// send buffer. The paper fixed it at [`send_buffer_size`](Self::send_buffer_size)'s
/// default, acknowledged at each half, so that writers hardly ever waited on its 100 Mbit
/// Ethernet; to keep that on faster paths, the buffer grows as Linux sizes TCP's own
/// buffers. It starts at `send_buffer_size` and doubles, instead of a writer waiting, when
/// the writer finds it full while the TCP connection has taken every byte (the kernel has
/// room: what holds the writer back is the acknowledgements' round trip, not the path)
/// and the peer has acknowledged half of it since it last changed size (the peer's
/// application keeps up); over a path whose round trip is 1 ms or more, up to 64 KiB
/// without any acknowledgement and then a quarter of it, so that it keeps ahead of TCP's
/// slow start. It doubles so up to 1 MiB, and past it up to
/// [`send_buffer_max`](Self::send_buffer_max) only over a path whose round trip
/// ([`Status::round_trip`](crate::Status::round_trip)) is 1 ms or more, or not measured
/// yet: on loopback more would only fill the kernels' buffers, at a cost in CPU, so a path
/// under 1 ms that carries more than half a MiB per round trip (above 1 GB/s at 0.5 ms)
/// needs a larger `send_buffer_size`. Once it has been empty for a second it returns to
/// `send_buffer_size`, so that idle sessions stay small. A writer blocks while the buffer
/// is full and cannot grow. [`Config::paper`] pins the paper's fixed sizes.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use robust_tcp::Config;
///
/// let config = Config::default()
///     .send_buffer_size(64 * 1024)
///     .ack_threshold(16 * 1024)
///     .give_up_after(Some(Duration::from_secs(600)));
/// assert_eq!(config.send_buffer_size_value(), 64 * 1024);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    send_buffer_size: usize,
    /// `None`: [`DEFAULT_MAX_CAPACITY`], or `send_buffer_size` if that is more. In 32
    /// bits (saturated: more is invalid anyway), which keeps `Config` small enough to be
    /// carried by value inside the engine's requests.
    send_buffer_max: Option<u32>,
    /// `None`: half of the send buffer's maximum. In 32 bits, as `send_buffer_max`.
    ack_threshold: Option<u32>,
    backoff_initial: Duration,
    backoff_max: Duration,
    give_up_after: Option<Duration>,
    busy_limit: Duration,
    dead_after: Option<Duration>,
    control_port: Option<u16>,
    instance_id: Option<u8>,
    announce_control_addr: Option<SocketAddr>,
    linger_limit: Duration,
    max_sessions: usize,
    max_sessions_per_address: usize,
    max_handshakes: usize,
    handshake_timeout: Duration,
    nodelay: bool,
    key_agreement: bool,
    accept_plain_tcp: bool,
    fallback_to_plain_tcp: bool,
    plain_wait: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            send_buffer_size: INITIAL_CAPACITY,
            send_buffer_max: None,
            ack_threshold: None,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            give_up_after: None,
            busy_limit: Duration::from_secs(30),
            dead_after: Some(Duration::from_secs(3)),
            control_port: None,
            instance_id: None,
            announce_control_addr: None,
            linger_limit: Duration::from_secs(60),
            max_sessions: 1024,
            max_sessions_per_address: 256,
            max_handshakes: 256,
            handshake_timeout: Duration::from_secs(5),
            nodelay: false,
            key_agreement: true,
            accept_plain_tcp: false,
            fallback_to_plain_tcp: false,
            plain_wait: Duration::from_millis(300),
        }
    }
}

impl Config {
    /// The paper's costs: its buffers, fixed (a 16 KiB send buffer that never grows,
    /// acknowledged at least every 8 KiB), and its lightweight opening, without the key
    /// agreement ([`key_agreement`](Self::key_agreement)); every other setting is the
    /// default. For comparisons with the
    /// paper, or where the memory of each session must stay at its minimum whatever the
    /// path; a fast or long path then carries at most 16 KiB per acknowledgement round
    /// trip. (The writer also asks for an acknowledgement at each half buffer, so this
    /// sends about one more datagram per 8 KiB than the paper did.)
    ///
    /// # Examples
    ///
    /// ```
    /// let config = robust_tcp::Config::paper();
    /// assert_eq!(config.send_buffer_size_value(), 16 * 1024);
    /// assert_eq!(config.send_buffer_max_value(), 16 * 1024);
    /// assert_eq!(config.ack_threshold_value(), 8 * 1024);
    /// ```
    pub fn paper() -> Self {
        Config::default()
            .key_agreement(false)
            .send_buffer_size(INITIAL_CAPACITY)
            .send_buffer_max(INITIAL_CAPACITY)
            .ack_threshold(INITIAL_CAPACITY / 2)
    }

    /// The capacity a session's send buffer starts with, and returns to once idle
    /// (default 16 KiB, the paper's); how it grows and shrinks:
    /// [the send buffer](Self#the-send-buffer).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = robust_tcp::Config::default().send_buffer_size(1 << 20);
    /// assert_eq!(config.send_buffer_size_value(), 1 << 20);
    /// ```
    pub fn send_buffer_size(mut self, bytes: usize) -> Self {
        self.send_buffer_size = bytes;
        self
    }

    /// The most a session's send buffer grows to (default 4 MiB, Linux's largest TCP send
    /// buffer by default, or [`send_buffer_size`](Self::send_buffer_size) if that is
    /// more); at least `send_buffer_size`, at most 1 GiB. Equal to `send_buffer_size`, the
    /// buffer never grows. The buffer rarely needs all of it: what a failure can take
    /// from the stream is at most what the local kernel's send buffer and the peer's
    /// receive buffer hold, and the buffer grows only as [the send
    /// buffer](Self#the-send-buffer) says.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = robust_tcp::Config::default().send_buffer_max(64 << 20);
    /// assert_eq!(config.send_buffer_max_value(), 64 << 20);
    /// ```
    pub fn send_buffer_max(mut self, bytes: usize) -> Self {
        self.send_buffer_max = Some(saturating_u32(bytes));
        self
    }

    /// How many bytes read make the receiver acknowledge them without being asked
    /// (default half of [`send_buffer_max`](Self::send_buffer_max): 2 MiB); at most
    /// `send_buffer_max`. The writer asks for acknowledgements itself, once half its
    /// buffer is unacknowledged, and the receiver answers once it has read what was asked
    /// for, and acknowledges what it read once its reads pause for 40 ms; so this only
    /// bounds how long the receiver stays silent while it reads without pause. Lower it
    /// to free the writer's buffer sooner at the cost of more datagrams (one per this
    /// many bytes); the paper used 8 KiB.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = robust_tcp::Config::default().ack_threshold(4096);
    /// assert_eq!(config.ack_threshold_value(), 4096);
    /// ```
    pub fn ack_threshold(mut self, bytes: usize) -> Self {
        self.ack_threshold = Some(saturating_u32(bytes));
        self
    }

    /// The reconnection backoff: the first retry goes at once, the second after `initial`,
    /// and each later one after twice the previous delay, up to `max` (default 50 ms and 5 s).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (initial, max) = (Duration::from_millis(10), Duration::from_secs(1));
    /// let config = robust_tcp::Config::default().reconnect_backoff(initial, max);
    /// assert_eq!(config.reconnect_backoff_value(), (initial, max));
    /// ```
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }

    /// How long a session may stay without a TCP connection: a client stops reconnecting
    /// and a server stops waiting for its client. The session then fails with
    /// [`io::ErrorKind::TimedOut`] and tells the peer with a RESET (whose calls then fail
    /// with `ConnectionReset`). It also bounds the retries of
    /// [`RSocket::connect_with`](crate::RSocket::connect_with). `None` (the default) waits
    /// forever, as the paper requires: only the application ends a session.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let config = robust_tcp::Config::default().give_up_after(Some(Duration::from_secs(600)));
    /// assert_eq!(config.give_up_after_value(), Some(Duration::from_secs(600)));
    /// ```
    pub fn give_up_after(mut self, limit: Option<Duration>) -> Self {
        self.give_up_after = limit;
        self
    }

    /// How long a new session is retried while its server refuses it as full (default
    /// 30 s; at most 60 s), counted from `connect`: the server holds
    /// [`max_sessions`](Self::max_sessions), or
    /// [`max_sessions_per_address`](Self::max_sessions_per_address) from this client's
    /// address (all the connections of one tunnel, say), and none it may evict. The opening
    /// is retried with backoff meanwhile, since sessions end and make room; past this
    /// time the session fails, and its pending and later reads and writes return
    /// `ConnectionRefused` ([`Error::Refused`](crate::Error::Refused)), as a TCP connect to
    /// a listener that never accepts fails rather than hang. Tens of seconds ride out a
    /// burst of sessions ending and starting; a client that would rather know at once sets
    /// zero. Capped at 60 s because no opening is retried longer than that after its first
    /// HELLO (the server forgets an ended session's opening after that, see
    /// `docs/PROTOCOL.md`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let config = robust_tcp::Config::default().busy_limit(Duration::from_secs(5));
    /// assert_eq!(config.busy_limit_value(), Duration::from_secs(5));
    /// ```
    pub fn busy_limit(mut self, limit: Duration) -> Self {
        self.busy_limit = limit;
        self
    }

    /// How long a peer may stay silent before the connection counts as failed (default
    /// 3 s): a client then reconnects and a server drops the connection and waits for its
    /// client. Silent means no authentic control message and no byte read from TCP. Each
    /// end sends a small heartbeat datagram when it has sent none for a third of this
    /// time, so a live peer is never silent that long; an idle session costs one such
    /// datagram per interval each way. A reconnecting client sends them too, and
    /// reconnects at once when the server answers one: the path is back.
    ///
    /// Failures that TCP does not report (a blackhole, a NAT that forgot its mapping, a
    /// peer that vanished) are detected in this time rather than TCP's minutes. `None`
    /// turns heartbeats and the limit off: only TCP's own errors count, as in the paper.
    ///
    /// On Linux each connection also gets it as `TCP_USER_TIMEOUT`, which fails a
    /// connection whose bytes go unacknowledged that long while datagrams still pass (a
    /// firewall or NAT that lost only its TCP state). Other systems lack that option (macOS
    /// has `TCP_RXT_CONNDROPTIME`, which neither `libc` nor `socket2` exposes): there such
    /// a connection fails only when TCP gives up retransmitting, after minutes.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let config = robust_tcp::Config::default().dead_after(Some(Duration::from_secs(10)));
    /// assert_eq!(config.dead_after_value(), Some(Duration::from_secs(10)));
    /// ```
    pub fn dead_after(mut self, silence: Option<Duration>) -> Self {
        self.dead_after = silence;
        self
    }

    /// The UDP port a server's sessions use for their control messages (default `None`:
    /// the process's shared control socket, on a port the system picks). Fix it when the
    /// server sits behind a firewall or a port forward: clients send their control
    /// datagrams to this port, and a NAT or firewall in front of the server passes them
    /// only to a port it was told about. Using the same number as the TCP port keeps the
    /// rule simple (`7000/tcp` and `7000/udp`). The port is bound when the server socket
    /// is bound, which fails if it is taken, on the address the server listens on (on
    /// every address, IPv4 and IPv6 alike, for a server on `0.0.0.0` or `[::]`); it stays
    /// bound for the life of the process, and servers of one process that fix the same
    /// port on the same address share it. Without a fixed port, a server on every address
    /// uses the process's shared control socket, and one on a single address a socket of
    /// its own on that address. Clients ignore this setting.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = robust_tcp::Config::default().control_port(Some(7000));
    /// assert_eq!(config.control_port_value(), Some(7000));
    /// ```
    pub fn control_port(mut self, port: Option<u16>) -> Self {
        self.control_port = port;
        self
    }

    /// This server instance's id among the instances behind one load balancer (default
    /// `None`: CIDs are random in all 32 bits). With `Some(id)`, the first byte of every
    /// CID the server gives a session (byte 8 of every reconnection's TCP stream, the
    /// first byte of its HELLO's body) is `id`, the other three random, so that a
    /// balancer routes each reconnection, and each control connection, to the instance
    /// that holds its session by that one byte, keeping no state (`docs/DEPLOYMENT.md`).
    /// Openings (CID 0) are the balancer's to spread. Every instance behind one balancer
    /// needs its own id, from 1 (0 would look like an opening's CID); 24 random bits leave room for 2^24 sessions per instance, far
    /// above `max_sessions`. Clients ignore this setting.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = robust_tcp::Config::default().instance_id(Some(2));
    /// assert_eq!(config.instance_id_value(), Some(2));
    /// ```
    pub fn instance_id(mut self, id: Option<u8>) -> Self {
        self.instance_id = id;
        self
    }

    /// The UDP control address a server announces in its ANSWERs (default `None`: only
    /// its control port, which clients reach at the IP address they connected to). Behind
    /// a load balancer, that IP is the balancer's, which does not forward the control
    /// datagrams to the instance that holds the session: announce an address where this
    /// instance itself takes them (its own address and its control port, fixed with
    /// [`control_port`](Self::control_port)), and clients send their datagrams there.
    /// The address is covered by the ANSWER's tag. It also tells a client's sessions of
    /// different instances apart when UDP does not get through: each announced address
    /// gets its own control connection through the balancer ("Control over TCP" in
    /// `docs/PROTOCOL.md`), so every instance behind one balancer must announce a
    /// different one. Clients ignore this setting.
    ///
    /// # Examples
    ///
    /// ```
    /// let addr = "192.0.2.7:7000".parse().unwrap();
    /// let config = robust_tcp::Config::default().announce_control_addr(Some(addr));
    /// assert_eq!(config.announce_control_addr_value(), Some(addr));
    /// ```
    pub fn announce_control_addr(mut self, addr: Option<SocketAddr>) -> Self {
        self.announce_control_addr = addr;
        self
    }

    /// How long a session whose every handle was dropped lingers at most to deliver what
    /// was written (default 60 s). Dropping the last handle closes the session without
    /// losing anything: it stays in the background until the peer has acknowledged every
    /// byte and confirmed the close, reconnecting as needed. A peer that is gone for good
    /// would hold it forever; past this time it is reset (the peer, if it comes back,
    /// learns that the rest will not come) and freed. An application that must know its
    /// data arrived waits for it with [`RSocket::set_linger`](crate::RSocket::set_linger).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let config = robust_tcp::Config::default().linger_limit(Duration::from_secs(600));
    /// assert_eq!(config.linger_limit_value(), Duration::from_secs(600));
    /// ```
    pub fn linger_limit(mut self, limit: Duration) -> Self {
        self.linger_limit = limit;
        self
    }

    /// How many sessions a server holds at once, lingering ones and those waiting for
    /// their client to reconnect included (default 1024). When a new client comes to a
    /// full server, the session whose client has been gone longest (no connection, and
    /// nothing heard from it for at least [`dead_after`](Self::dead_after), or 3 s without
    /// one) is reset to make room: its server side fails with
    /// [`Error::Evicted`](crate::Error::Evicted), and its client, if it ever comes back, is
    /// told the session is unknown. Vanished clients cannot hold a server for good. With
    /// no such session, the new one is refused with a temporary reason and its client
    /// retries.
    ///
    /// The same applies within [`max_sessions_per_address`](Self::max_sessions_per_address),
    /// among the sessions of the new client's address.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = robust_tcp::Config::default().max_sessions(10_000);
    /// assert_eq!(config.max_sessions_value(), 10_000);
    /// ```
    pub fn max_sessions(mut self, sessions: usize) -> Self {
        self.max_sessions = sessions;
        self
    }

    /// How many sessions a server holds that were opened from one IP address (default
    /// 256), so that one host cannot take every session of
    /// [`max_sessions`](Self::max_sessions). Past it, a vanished session from that address
    /// is evicted as `max_sessions` says, or else new sessions from that address are
    /// refused with a temporary reason. Clients behind one NAT share an address: raise it
    /// for a server with many such clients.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = robust_tcp::Config::default().max_sessions_per_address(16);
    /// assert_eq!(config.max_sessions_per_address_value(), 16);
    /// ```
    pub fn max_sessions_per_address(mut self, sessions: usize) -> Self {
        self.max_sessions_per_address = sessions;
        self
    }

    /// How many incoming connections a server lets be in their handshake at once (default
    /// 256). Past it, an answered resumption that can install nothing any more (a later
    /// attempt of its session overtook it, or the session ended) is dropped to make room,
    /// else the oldest handshake that has not been answered yet: an honest client completes
    /// its handshake within a round trip, so a flood of slow or silent connections costs a
    /// bounded amount of memory and evicts itself, not the client. Answered resumptions
    /// that may still install, which only wait for their client's CONFIRM, go only when
    /// every slot holds one (the oldest), and with a single slot not at all: the new
    /// connection is closed instead. It also bounds the new sessions whose client has not confirmed them
    /// (past it, or when the server is full, the oldest such session is dropped), so that
    /// peers that open sessions and vanish cannot fill the server.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = robust_tcp::Config::default().max_handshakes(64);
    /// assert_eq!(config.max_handshakes_value(), 64);
    /// ```
    pub fn max_handshakes(mut self, handshakes: usize) -> Self {
        self.max_handshakes = handshakes;
        self
    }

    /// The bound on each connection attempt: the TCP connect and the exchange of handshake
    /// messages (default 5 s, at most one hour). One SYN lost in a dead network costs this
    /// much, not the kernel's minutes. A peer that accepts the first connection but sends
    /// no answer within it is taken for a server of another protocol.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let config = robust_tcp::Config::default().handshake_timeout(Duration::from_secs(2));
    /// assert_eq!(config.handshake_timeout_value(), Duration::from_secs(2));
    /// ```
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Whether the TCP connections of a session set `TCP_NODELAY` (default `false`).
    /// [`RSocket::set_nodelay`](crate::RSocket::set_nodelay) changes it for one session.
    ///
    /// With Nagle on (`false`), small writes that the application makes back to back wait
    /// in the send buffer and go to TCP in one system call per batch of up to 64 KiB, as
    /// Nagle's algorithm lets TCP hold small segments: the first write after a pause goes
    /// out at once, and held bytes go out within 1 ms, or as soon as the application
    /// reads from, flushes, shuts down or closes the socket. With `true`, every write goes
    /// to TCP at once.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = robust_tcp::Config::default().nodelay(true);
    /// assert!(config.nodelay_value());
    /// ```
    pub fn nodelay(mut self, nodelay: bool) -> Self {
        self.nodelay = nodelay;
        self
    }

    /// Whether a client's opening runs the ephemeral key agreement (default `true`;
    /// `false` in [`Config::paper`]). With it, the HELLO and the ANSWER carry ephemeral
    /// X25519 public keys, and the session's keys come from the agreed secret: nobody
    /// who only sees the traffic can take the session over, reset or truncate it. Without
    /// it, the lightweight opening of the paper's cost: the client sends its session
    /// secret in clear, and whoever sees the opening holds the session's keys. Either way
    /// the opening takes one round trip. A server answers both kinds; this setting is
    /// the client's. See `docs/SECURITY.md` and `docs/PERFORMANCE.md`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(robust_tcp::Config::default().key_agreement_value());
    /// assert!(!robust_tcp::Config::paper().key_agreement_value());
    /// ```
    pub fn key_agreement(mut self, on: bool) -> Self {
        self.key_agreement = on;
        self
    }

    /// The configured initial send buffer size in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(robust_tcp::Config::default().send_buffer_size_value(), 16 * 1024);
    /// ```
    pub fn send_buffer_size_value(&self) -> usize {
        self.send_buffer_size
    }

    /// The most the send buffer grows to in bytes: as configured, or by default as
    /// [`send_buffer_max`](Self::send_buffer_max) says.
    ///
    /// # Examples
    ///
    /// ```
    /// use robust_tcp::Config;
    ///
    /// assert_eq!(Config::default().send_buffer_max_value(), 4 << 20);
    /// assert_eq!(Config::default().send_buffer_size(8 << 20).send_buffer_max_value(), 8 << 20);
    /// ```
    pub fn send_buffer_max_value(&self) -> usize {
        match self.send_buffer_max {
            Some(bytes) => widen(bytes),
            None => DEFAULT_MAX_CAPACITY.max(self.send_buffer_size),
        }
    }

    /// The acknowledgement threshold in bytes: as configured, or by default half of the
    /// send buffer's maximum.
    ///
    /// # Examples
    ///
    /// ```
    /// use robust_tcp::Config;
    ///
    /// assert_eq!(Config::default().ack_threshold_value(), 2 << 20);
    /// assert_eq!(Config::default().send_buffer_max(1 << 20).ack_threshold_value(), 512 << 10);
    /// ```
    pub fn ack_threshold_value(&self) -> usize {
        match self.ack_threshold {
            Some(bytes) => widen(bytes),
            None => (self.send_buffer_max_value() / 2).max(1),
        }
    }

    /// The configured reconnection backoff, as `(initial, max)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (initial, max) = robust_tcp::Config::default().reconnect_backoff_value();
    /// assert_eq!((initial, max), (Duration::from_millis(50), Duration::from_secs(5)));
    /// ```
    pub fn reconnect_backoff_value(&self) -> (Duration, Duration) {
        (self.backoff_initial, self.backoff_max)
    }

    /// The configured limit on reconnection attempts, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(robust_tcp::Config::default().give_up_after_value(), None);
    /// ```
    pub fn give_up_after_value(&self) -> Option<Duration> {
        self.give_up_after
    }

    /// The configured time a new session is retried while its server refuses it as full.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// assert_eq!(robust_tcp::Config::default().busy_limit_value(), Duration::from_secs(30));
    /// ```
    pub fn busy_limit_value(&self) -> Duration {
        self.busy_limit
    }

    /// The configured silence limit, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let limit = robust_tcp::Config::default().dead_after_value();
    /// assert_eq!(limit, Some(Duration::from_secs(3)));
    /// ```
    pub fn dead_after_value(&self) -> Option<Duration> {
        self.dead_after
    }

    /// The configured control port, if fixed.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(robust_tcp::Config::default().control_port_value(), None);
    /// ```
    pub fn control_port_value(&self) -> Option<u16> {
        self.control_port
    }

    /// The configured instance id, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(robust_tcp::Config::default().instance_id_value(), None);
    /// ```
    pub fn instance_id_value(&self) -> Option<u8> {
        self.instance_id
    }

    /// The configured announced control address, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(robust_tcp::Config::default().announce_control_addr_value(), None);
    /// ```
    pub fn announce_control_addr_value(&self) -> Option<SocketAddr> {
        self.announce_control_addr
    }

    /// The configured limit on lingering.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let limit = robust_tcp::Config::default().linger_limit_value();
    /// assert_eq!(limit, Duration::from_secs(60));
    /// ```
    pub fn linger_limit_value(&self) -> Duration {
        self.linger_limit
    }

    /// The configured maximum number of sessions of a server.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(robust_tcp::Config::default().max_sessions_value(), 1024);
    /// ```
    pub fn max_sessions_value(&self) -> usize {
        self.max_sessions
    }

    /// The configured maximum number of sessions a server holds from one address.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(robust_tcp::Config::default().max_sessions_per_address_value(), 256);
    /// ```
    pub fn max_sessions_per_address_value(&self) -> usize {
        self.max_sessions_per_address
    }

    /// The configured maximum number of handshakes in progress on a server.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(robust_tcp::Config::default().max_handshakes_value(), 256);
    /// ```
    pub fn max_handshakes_value(&self) -> usize {
        self.max_handshakes
    }

    /// The configured bound on one connection attempt.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// assert_eq!(robust_tcp::Config::default().handshake_timeout_value(), Duration::from_secs(5));
    /// ```
    pub fn handshake_timeout_value(&self) -> Duration {
        self.handshake_timeout
    }

    /// Whether new TCP connections set `TCP_NODELAY`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!robust_tcp::Config::default().nodelay_value());
    /// ```
    pub fn nodelay_value(&self) -> bool {
        self.nodelay
    }

    /// Whether a client's opening runs the key agreement.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = robust_tcp::Config::default().key_agreement(false);
    /// assert!(!config.key_agreement_value());
    /// ```
    pub fn key_agreement_value(&self) -> bool {
        self.key_agreement
    }

    /// Checks every value, as `connect_with` and `bind_with` do.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] naming the first value that makes no sense: a zero
    /// buffer, threshold, session or handshake limit or timeout, a handshake timeout over
    /// an hour, a silence limit (`dead_after`) under 30 ms or over an hour, a control port
    /// of 0, a zero linger limit, a busy limit over 60 s, a zero `plain_wait`, a send
    /// buffer maximum below its initial size, a threshold larger than the buffer's maximum,
    /// a send buffer over 1 GiB (the wire's 32-bit counters need the window well below 4
    /// GiB), or a backoff whose maximum is below its initial delay.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::ErrorKind;
    /// use robust_tcp::Config;
    ///
    /// assert!(Config::default().validate().is_ok());
    /// let err = Config::default().send_buffer_size(0).validate().unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidInput);
    /// ```
    pub fn validate(&self) -> io::Result<()> {
        let invalid = |what: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        if self.send_buffer_size == 0 {
            return invalid("send_buffer_size must not be zero");
        }
        if self.send_buffer_size > MAX_SEND_BUFFER {
            return invalid("send_buffer_size must not exceed 1 GiB");
        }
        let max = self.send_buffer_max_value();
        if max < self.send_buffer_size {
            return invalid("send_buffer_max must not be below send_buffer_size");
        }
        if max > MAX_SEND_BUFFER {
            return invalid("send_buffer_max must not exceed 1 GiB");
        }
        if self.ack_threshold_value() == 0 {
            return invalid("ack_threshold must not be zero");
        }
        if self.ack_threshold_value() > max {
            return invalid("ack_threshold must not exceed send_buffer_max");
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return invalid("reconnect_backoff needs 0 < initial <= max");
        }
        if self.give_up_after == Some(Duration::ZERO) {
            return invalid("give_up_after must not be zero (use None to never give up)");
        }
        if self.busy_limit > OPENING_WINDOW {
            return invalid("busy_limit must not exceed 60 s");
        }
        if self
            .dead_after
            .is_some_and(|d| !(MIN_DEAD_AFTER..=MAX_DEAD_AFTER).contains(&d))
        {
            return invalid("dead_after must lie between 30 ms and one hour");
        }
        if self.linger_limit.is_zero() {
            return invalid("linger_limit must not be zero");
        }
        if self.control_port == Some(0) {
            return invalid("control_port must not be zero (use None for the shared socket)");
        }
        if self.instance_id == Some(0) {
            return invalid("instance_id must not be zero (a CID starting with 0 looks like an opening's to a balancer)");
        }
        if self
            .announce_control_addr
            .is_some_and(|a| a.port() == 0 || a.ip().is_unspecified())
        {
            return invalid("announce_control_addr needs an address and a port");
        }
        if self.max_sessions == 0 {
            return invalid("max_sessions must not be zero");
        }
        if self.max_sessions_per_address == 0 {
            return invalid("max_sessions_per_address must not be zero");
        }
        if self.max_handshakes == 0 {
            return invalid("max_handshakes must not be zero");
        }
        if self.handshake_timeout.is_zero() {
            return invalid("handshake_timeout must not be zero");
        }
        if self.handshake_timeout > MAX_HANDSHAKE_TIMEOUT {
            return invalid("handshake_timeout must not exceed one hour");
        }
        if self.plain_wait.is_zero() {
            return invalid("plain_wait must not be zero");
        }
        Ok(())
    }
}

/// Ordinary TCP peers (`docs/PROTOCOL.md`, "Ordinary TCP peers"): both off by default, so
/// that a peer that does not speak robust-tcp gets a clear error.
impl Config {
    /// Whether an [`RServerSocket`](crate::RServerSocket) also accepts ordinary TCP
    /// clients on its port (default `false`: they are told they reached a robust-tcp
    /// server, and closed). Such a client's connection is handed to `accept` as an
    /// [`RSocket`](crate::RSocket) that is plain TCP: reads and writes go straight to the
    /// one connection, its errors are TCP's, nothing is resumed, and
    /// [`Status::plain`](crate::Status::plain) says so. Robust-tcp clients are unaffected.
    ///
    /// The server tells them apart by the first bytes: a client whose first byte differs
    /// from robust-tcp's magic (`RTCP`) is handed over at that byte, which it reads first,
    /// with everything after it (protocols where the client speaks first pay no delay;
    /// ssh's clients send their identification at once). A client that sends nothing
    /// (SMTP, POP3, FTP: the server speaks first) is handed over after
    /// [`plain_wait`](Self::plain_wait) (default 300 ms), the delay such protocols pay.
    /// A client whose first bytes are a prefix of the magic and then pause is waited for
    /// as a robust-tcp client, up to the handshake timeout.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = robust_tcp::Config::default().accept_plain_tcp(true);
    /// assert!(config.accept_plain_tcp_value());
    /// ```
    pub fn accept_plain_tcp(mut self, accept: bool) -> Self {
        self.accept_plain_tcp = accept;
        self
    }

    /// Whether [`RSocket::connect_with`](crate::RSocket::connect_with) falls back to plain
    /// TCP against a server that does not speak robust-tcp (default `false`: the session
    /// fails with [`Error::NotRobust`](crate::Error::NotRobust) at its first read or
    /// write). The server's application never sees a byte this side's application did not
    /// write: before its HELLO, the client probes the server with a connection of its
    /// own, which it closes for writing at once without a byte. A robust-tcp server
    /// answers a probe with a greeting, and the session opens as usual; anything else
    /// (other bytes, the end of the stream, or silence for
    /// [`plain_wait`](Self::plain_wait)) makes the server an ordinary one, and `connect`
    /// returns an `RSocket` on a plain TCP connection
    /// ([`Status::plain`](crate::Status::plain)).
    ///
    /// The cost, on every `connect`: one more TCP connection (the probe, which the server's
    /// application may see accepted and ended without a byte, as a port scan), and two
    /// round trips more before `connect` returns (the probe's connect, then its answer),
    /// or, against an ordinary server that keeps a connection open without a word after
    /// its client's end of stream, the probe's connect and `plain_wait`. Nothing is
    /// remembered between `connect`s: a server that was robust-tcp a moment ago may be an
    /// ordinary one now, and must not read a HELLO. Reconnections of an open session probe
    /// nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = robust_tcp::Config::default().fallback_to_plain_tcp(true);
    /// assert!(config.fallback_to_plain_tcp_value());
    /// ```
    pub fn fallback_to_plain_tcp(mut self, fallback: bool) -> Self {
        self.fallback_to_plain_tcp = fallback;
        self
    }

    /// How long either side waits to tell an ordinary TCP peer from a robust-tcp one
    /// (default 300 ms, and never longer than the handshake timeout): a server that
    /// [accepts ordinary clients](Self::accept_plain_tcp), for the first byte of a client
    /// that sends nothing (then it is an ordinary one); a client that
    /// [falls back](Self::fallback_to_plain_tcp), for the answer to its probe.
    /// Long enough for a round trip and a busy server; every client of a protocol where
    /// the server speaks first waits this long for its first byte.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let config = robust_tcp::Config::default().plain_wait(Duration::from_millis(500));
    /// assert_eq!(config.plain_wait_value(), Duration::from_millis(500));
    /// ```
    pub fn plain_wait(mut self, wait: Duration) -> Self {
        self.plain_wait = wait;
        self
    }

    /// Whether ordinary TCP clients are accepted.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!robust_tcp::Config::default().accept_plain_tcp_value());
    /// ```
    pub fn accept_plain_tcp_value(&self) -> bool {
        self.accept_plain_tcp
    }

    /// Whether a client falls back to plain TCP.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!robust_tcp::Config::default().fallback_to_plain_tcp_value());
    /// ```
    pub fn fallback_to_plain_tcp_value(&self) -> bool {
        self.fallback_to_plain_tcp
    }

    /// How long either side waits to tell an ordinary TCP peer.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// assert_eq!(robust_tcp::Config::default().plain_wait_value(), Duration::from_millis(300));
    /// ```
    pub fn plain_wait_value(&self) -> Duration {
        self.plain_wait
    }
}

/// The longest handshake timeout: a server keeps an unconfirmed session for a multiple of
/// it, and an attempt that takes longer is better retried.
const MAX_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The shortest silence limit: its heartbeats come every 10 ms, which a loaded machine
/// can still keep up; shorter would fail healthy connections.
const MIN_DEAD_AFTER: Duration = Duration::from_millis(30);

/// The longest silence limit; longer is better written as `None`.
const MAX_DEAD_AFTER: Duration = Duration::from_secs(3600);

/// The largest send buffer: the 32-bit counters on the wire are unambiguous only while the
/// unacknowledged window stays well below 2^32 bytes.
const MAX_SEND_BUFFER: usize = 1 << 30;

/// A byte count in 32 bits: `u32::MAX` for anything larger, which validation rejects as
/// over 1 GiB as it would the count itself.
fn saturating_u32(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// A byte count stored in 32 bits, back in a `usize` (at least 32 bits on every platform
/// this crate builds for).
fn widen(bytes: u32) -> usize {
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_starts_at_the_papers_buffer_and_may_grow() {
        let c = Config::default();
        assert_eq!(c.send_buffer_size_value(), 16 * 1024);
        assert_eq!(c.send_buffer_max_value(), 4 << 20);
        assert_eq!(c.ack_threshold_value(), 2 << 20);
        assert_eq!(c.give_up_after_value(), None);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn paper_pins_the_buffer() {
        let c = Config::paper();
        assert_eq!(c.send_buffer_size_value(), c.send_buffer_max_value());
        assert_eq!(c.ack_threshold_value(), 8 * 1024);
        assert!(c.validate().is_ok());
        assert_eq!(c.dead_after_value(), Config::default().dead_after_value());
    }

    #[test]
    fn the_maximum_and_threshold_follow_the_size_unless_set() {
        let big = Config::default().send_buffer_size(8 << 20);
        assert_eq!(big.send_buffer_max_value(), 8 << 20);
        assert_eq!(big.ack_threshold_value(), 4 << 20);
        assert!(big.validate().is_ok());
        let small = Config::default().send_buffer_size(1).send_buffer_max(1);
        assert_eq!(small.ack_threshold_value(), 1);
        assert!(small.validate().is_ok());
    }

    #[test]
    fn each_buffer_error_names_its_setting() {
        let cases = [
            (
                Config::default().send_buffer_max(8 << 10),
                "send_buffer_max",
            ),
            (
                Config::default().send_buffer_max(2 << 30),
                "send_buffer_max",
            ),
            (Config::default().ack_threshold(8 << 20), "ack_threshold"),
            (Config::default().ack_threshold(usize::MAX), "ack_threshold"),
            (
                Config::default().send_buffer_max(usize::MAX),
                "send_buffer_max",
            ),
            (
                Config::default().send_buffer_size(2 << 30),
                "send_buffer_size",
            ),
        ];
        for (c, name) in cases {
            let err = c.validate().expect_err("should be rejected");
            assert!(err.to_string().starts_with(name), "{err}");
        }
    }

    #[test]
    fn nonsense_is_invalid_input() {
        let bad = [
            Config::default().send_buffer_size(0),
            Config::default().ack_threshold(0),
            Config::default()
                .ack_threshold(32 * 1024)
                .send_buffer_max(16 * 1024),
            Config::default().send_buffer_max(0),
            Config::default().send_buffer_max(1024),
            Config::default().handshake_timeout(Duration::ZERO),
            Config::default().handshake_timeout(Duration::MAX),
            Config::default().plain_wait(Duration::ZERO),
            Config::default().give_up_after(Some(Duration::ZERO)),
            Config::default().busy_limit(OPENING_WINDOW + Duration::from_nanos(1)),
            Config::default().dead_after(Some(Duration::ZERO)),
            Config::default().control_port(Some(0)),
            Config::default().instance_id(Some(0)),
            Config::default().announce_control_addr(Some("192.0.2.7:0".parse().unwrap())),
            Config::default().announce_control_addr(Some("0.0.0.0:7000".parse().unwrap())),
            Config::default().linger_limit(Duration::ZERO),
            Config::default().dead_after(Some(Duration::from_secs(7200))),
            Config::default().max_sessions(0),
            Config::default().max_handshakes(0),
            Config::default().max_sessions_per_address(0),
            Config::default().reconnect_backoff(Duration::ZERO, Duration::from_secs(1)),
            Config::default().reconnect_backoff(Duration::from_secs(2), Duration::from_secs(1)),
            Config::default().send_buffer_size(usize::MAX),
        ];
        for c in bad {
            let err = c.validate().expect_err("should be rejected");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{c:?}");
        }
    }
}
