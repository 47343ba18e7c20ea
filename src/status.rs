//! What a session exposes about itself: the paper's future work (bytes unacknowledged, how
//! long calls have been blocked), so that applications can see transport state.

use std::net::SocketAddr;
use std::time::Duration;

/// The phase a session is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionState {
    /// A client whose opening the server has not answered yet. `RSocket::connect` returns
    /// once the TCP connection is up and its HELLO is on its way, before the answer (the
    /// opening takes one round trip), so a new session shows this until the server's
    /// ANSWER is read, and while a cut opening is retried. Writes go ahead; reads wait
    /// for the answer.
    Connecting,
    /// A TCP connection carries the session.
    Connected,
    /// The TCP connection failed; the client is reconnecting (or, on a server, waiting for
    /// the client to reconnect). Reads and writes wait.
    Reconnecting,
    /// The application closed or half-closed the session; it lingers until the peer has
    /// acknowledged every byte and confirmed the close.
    Closing,
    /// The session is passive (`RSocket::passivate`): it has no TCP connection, on
    /// purpose, until one side writes. Reads wait.
    Passive,
    /// The session is over: closed by both sides, reset, or given up.
    Closed,
}

/// A snapshot of a session, from [`RSocket::status`](crate::RSocket::status).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The phase of the session.
    pub state: SessionState,
    /// Bytes the application wrote since the session began.
    pub bytes_written: u64,
    /// Bytes the application read since the session began.
    pub bytes_read: u64,
    /// Bytes written but not yet acknowledged by the peer (they sit in the send buffer).
    pub unacknowledged: u64,
    /// How long the oldest unacknowledged byte has waited, if any byte is unacknowledged.
    pub oldest_unacknowledged: Option<Duration>,
    /// How long the read call in progress has been blocked, if one is.
    pub blocked_read: Option<Duration>,
    /// How long the write call in progress has been blocked, if one is.
    pub blocked_write: Option<Duration>,
    /// How many times the session moved to a new TCP connection.
    pub reconnections: u64,
    /// How long the session was without a connection before its latest reconnection
    /// (`None` before the first): from the failure of the connection it lost (or, for a
    /// passive session, from its going passive) to the resumption. What an operator
    /// sees as the pause.
    pub last_outage: Option<Duration>,
    /// Why the last TCP connection failed, if one did.
    pub last_failure: Option<String>,
    /// How long ago the peer was last heard from: a control datagram, bytes read from the
    /// connection, or a new connection. A live peer sends a heartbeat at least every
    /// third of `Config::dead_after`.
    pub last_heard: Duration,
    /// Where this end's control datagrams go: on a client, the server's control address;
    /// on a server, the client's address as last proved (`None` until the client's first
    /// answer), which follows a client whose address changes.
    pub control_peer: Option<SocketAddr>,
    /// Whether the control datagrams go over a TCP control connection (where UDP does not
    /// get through) rather than UDP.
    pub control_over_tcp: bool,
    /// The local address of the current (or last) TCP connection.
    pub local_addr: Option<SocketAddr>,
    /// The peer's address on the current (or last) TCP connection.
    pub peer_addr: Option<SocketAddr>,
    /// Whether the session is passive, or going passive (`RSocket::passivate`).
    pub passive: bool,
    /// How many bytes the send buffer holds at most now: `Config::send_buffer_size` at
    /// first, then as it grows and shrinks ([the send
    /// buffer](crate::Config#the-send-buffer)).
    pub send_buffer_capacity: usize,
    /// The path's round trip as last measured, with nothing of the stream queued ahead:
    /// on a client, from its HELLO to the server's ANSWER (the opening's, then each
    /// reconnection's); on a server, from its challenge of a new address of its client's
    /// to the answer (`None` until the client's first control datagram has been
    /// challenged and answered). How far the send buffer grows depends on it ([the send
    /// buffer](crate::Config#the-send-buffer)). It is an upper bound: a thread that was
    /// not scheduled at once (the engine busy, a loaded machine) makes a short path look
    /// longer, and the buffer then grows as if the path were long, until the next
    /// measurement.
    pub round_trip: Option<Duration>,
    /// Whether this is no session but an ordinary TCP connection: a peer that does not
    /// speak robust-tcp, accepted with `Config::accept_plain_tcp` or reached with
    /// `Config::fallback_to_plain_tcp`. Nothing is resumed then: the state is `Connected`
    /// until the socket is shut down both ways or aborted (then `Closed`), the byte counts
    /// are those the application read and wrote, nothing is ever unacknowledged or
    /// reconnected, and the fields about control datagrams, the send buffer and the round
    /// trip say nothing.
    pub plain: bool,
}
