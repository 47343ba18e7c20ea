//! The session state machine: counters, send buffer, closing and the reliable control
//! messages, with no sockets and no clock.
//!
//! [`Session`] coordinates four pieces of state, one file each: the send side
//! (`send.rs`), the receive side (`recv.rs`), the TCP connection in use (`link.rs`) and
//! the control messages on their way out (`reliable.rs`). Every method that needs the time
//! takes it as an argument, so tests drive a session with a virtual clock.

mod coalesce;
mod link;
mod liveness;
mod path;
mod recv;
mod reliable;
mod send;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use self::link::Link;
use self::liveness::Liveness;
use self::path::ControlPath;
use self::recv::RecvSide;
use self::reliable::Reliable;
use self::send::{Announced, SendSide};
use super::auth::{ChallengeKey, ControlKeys};
use super::control::{ControlKind, ControlMessage, MAX_LEN};
use super::counter::{from_wire, to_wire};
use super::replay::{Fresh, ReplayWindow};
use super::{earliest, WireError};
use crate::error::Error;
use crate::status::{SessionState, Status};

/// How often a farewell (a CLOSE once every byte is acknowledged, a RESET) is
/// retransmitted before the sender stops waiting for its confirmation: about 20 s of
/// tries. The peer has all the data; it learns of the end when it next reconnects (and is
/// refused).
const FAREWELL_TRIES: u32 = 14;
/// The same for a CLOSE sent after the peer's own CLOSE: about 300 ms of tries.
const PEER_GONE_CLOSE_TRIES: u32 = 2;

/// Which end of the session this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Opened the session; reconnects when the connection fails.
    Client,
    /// Accepted the session; waits for the client to reconnect.
    Server,
}

/// Which end of the session this is, with what only that end needs to reach its peer.
#[derive(Clone, Debug)]
pub enum End {
    /// The client, which sends its datagrams to the server's control address (none while
    /// it is opening: see [`Session::opened`]).
    Client(Option<SocketAddr>),
    /// The server, which learns its client's address from the client's datagrams and checks
    /// each new one with challenges whose values come from this key, drawn at random for the
    /// session (see `path.rs`).
    Server(ChallengeKey),
}

/// The most control messages a session keeps awaiting confirmation (see
/// [`Session::awaiting_confirmation`]).
pub const MAX_AWAITING_CONFIRMATION: usize = 5;

/// The per-session settings the core needs.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Capacity of the send buffer at first, and what a grown buffer goes back to once
    /// it has been empty for a while.
    pub send_buffer: usize,
    /// The most the send buffer grows to (see [`Session::write_space`]); `send_buffer` or
    /// less: it never grows.
    pub send_buffer_max: usize,
    /// Received bytes that trigger an acknowledgement, asked for or not.
    pub ack_threshold: usize,
    /// How long to stay disconnected before failing the session, if ever.
    pub give_up_after: Option<Duration>,
    /// How long a silent peer may stay silent before its connection counts as failed;
    /// also sets the heartbeat interval (a third of it). `None`: no heartbeats, no limit.
    pub dead_after: Option<Duration>,
    /// How long a closed session may linger to deliver its bytes before it is abandoned.
    pub linger: Duration,
}

/// What a read may do now.
#[derive(Debug)]
pub enum ReadGate {
    /// Read from the TCP connection.
    Proceed,
    /// The stream is over: every byte the peer sent before closing has been read.
    Eof,
    /// The session failed.
    Failed(Error),
}

/// One end of a session: the protocol, without sockets or clock.
///
/// Its methods come in four kinds:
/// - **getters** (`epoch`, `received`, `write_space`, `unsent`, `read_gate`,
///   `needs_connection`, `check_resume`, `status`, ...) change nothing;
/// - **application calls** (`write`, `writer_blocked`, `reader_blocked`, `shutdown_write`,
///   `close`, `fail`, `reset`, ...) report what the application did;
/// - **`handle_*` inputs** report what happened on the network: bytes the application read
///   from TCP ([`handle_read`](Self::handle_read)), bytes written to TCP
///   ([`handle_sent`](Self::handle_sent)), a failed connection, a resumption or its
///   refusal, a control datagram ([`handle_datagram`](Self::handle_datagram), which
///   authenticates it first), and the passing of time
///   ([`handle_timeout`](Self::handle_timeout));
/// - **`poll_*` outputs** say what to do: the control datagrams to send, numbered and
///   tagged ([`poll_datagram`](Self::poll_datagram)), whether to send a FIN on the
///   connection ([`poll_fin`](Self::poll_fin)), and when to call `handle_timeout` next
///   ([`poll_timeout`](Self::poll_timeout)).
///
/// The engine, after any application call or `handle_*` input, drains `poll_datagram` until
/// it returns `None` and sends each datagram, checks `poll_fin`, and then sleeps no later
/// than `poll_timeout`, when it calls `handle_timeout` and polls again. Bytes move on TCP
/// from the range [`unsent`](Self::unsent) names, through `handle_sent`.
#[derive(Debug)]
pub struct Session {
    role: Role,
    limits: Limits,
    /// Set once the session can no longer move data; every later call reports it.
    fatal: Option<Error>,
    send: SendSide,
    recv: RecvSide,
    link: Link,
    liveness: Liveness,
    path: ControlPath,
    reliable: Reliable,
    /// Tags our datagrams and checks the peer's.
    keys: ControlKeys,
    /// A client: the server's control datagrams stopped getting through while the
    /// connection works (see [`datagrams_missing`](Self::datagrams_missing)).
    datagrams_missing: bool,
    /// When the application closed the session, which then lingers at most
    /// `limits.linger`.
    closed_at: Option<Instant>,
    /// The packet number of our next datagram.
    next_packet: u64,
    /// The peer's packet numbers seen.
    replay: ReplayWindow,
    /// Whether the peer named the CID in a HELLO that proved itself.
    peer_named_cid: bool,
}

/// Why a datagram was dropped without effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// It does not decode, or its tag does not verify.
    Wire(WireError),
    /// Authentic, but for another session: its CID or side is not ours.
    NotOurs,
    /// Authentic, but its packet number was seen already or is too old.
    Replayed,
}

impl Session {
    /// A session of `end` whose first TCP connection (number `epoch`) came up at `now`,
    /// whose datagrams are tagged and checked with `keys`. A client session made with CID 0
    /// is opening: it learns its CID and the server's control address from the answer
    /// ([`opened`](Self::opened)).
    pub fn new(
        end: End,
        cid: u32,
        epoch: u32,
        limits: Limits,
        keys: ControlKeys,
        now: Instant,
    ) -> Self {
        let (role, path) = match end {
            End::Client(server_control) => (Role::Client, ControlPath::to_server(server_control)),
            End::Server(challenges) => (Role::Server, ControlPath::learned(challenges)),
        };
        let mut session = Session {
            role,
            limits,
            fatal: None,
            send: SendSide::new(limits.send_buffer, now),
            recv: RecvSide::default(),
            link: Link::new(epoch),
            liveness: Liveness::new(limits.dead_after, role == Role::Server, now),
            path,
            reliable: Reliable::new(cid, role == Role::Server),
            keys,
            datagrams_missing: false,
            closed_at: None,
            next_packet: 0,
            replay: ReplayWindow::default(),
            peer_named_cid: false,
        };
        session.probe();
        session
    }

    // ---------------------------------------------------------------- getters

    /// Which end of the session this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Number of the TCP connection in use (or last used).
    pub fn epoch(&self) -> u32 {
        self.link.epoch
    }

    /// Whether a TCP connection carries the session.
    pub fn is_connected(&self) -> bool {
        self.link.connected
    }

    /// Whether this is a client session whose opening the server has not answered yet:
    /// it has no CID and nowhere to send datagrams (what it would send is dropped, as if
    /// lost), and no silence limit (the handshake timeout bounds the wait). See
    /// [`opened`](Self::opened).
    pub fn is_opening(&self) -> bool {
        self.reliable.cid() == 0
    }

    /// Whether the peer has shown that it knows the session's CID: an authentic datagram
    /// from it arrived (it carries the CID under the peer's key), or a HELLO that named
    /// the CID proved itself ([`handle_cid_named`](Self::handle_cid_named)). A server
    /// whose client never did cannot know whether the client received its opening answer.
    pub fn peer_knows_cid(&self) -> bool {
        self.peer_named_cid || self.replay.any_accepted()
    }

    /// The peer named the CID in a HELLO that proved itself: it received the CID.
    pub fn handle_cid_named(&mut self) {
        self.peer_named_cid = true;
    }

    /// How many control messages await the peer's confirmation, to be sent again until
    /// it comes: at most [`MAX_AWAITING_CONFIRMATION`] whatever the peer does (one CLOSE or
    /// HALF_CLOSE, one RESET, one PASSIVATE, and a server's RECONNECTs for its connection
    /// and its newest failed offer).
    pub fn awaiting_confirmation(&self) -> usize {
        self.reliable.awaiting()
    }

    /// Bytes the application has read, which is what the peer may stop keeping.
    pub fn received(&self) -> u64 {
        self.recv.received
    }

    /// Bytes the application has written.
    pub fn written(&self) -> u64 {
        self.send.buf.end()
    }

    /// How many bytes a write may append now: the room in the send buffer, or, when it is
    /// full, the room it has once [`write`](Self::write) has doubled it (up to
    /// `Limits::send_buffer_max`) when `SendSide::may_grow` allows. A writer blocked in
    /// the kernel, without a connection, or writing to a peer that does not read, finds no
    /// room until the peer acknowledges some.
    ///
    /// # Errors
    ///
    /// The session's failure, or [`Error::WriteShutDown`] once writing was shut down here,
    /// or [`Error::PeerClosed`] once the peer closed the session.
    pub fn write_space(&self) -> Result<usize, Error> {
        if let Some(e) = &self.fatal {
            return Err(e.clone());
        }
        if self.send.write_shut.is_some() {
            return Err(Error::WriteShutDown);
        }
        if self.recv.peer_closed {
            return Err(Error::PeerClosed);
        }
        if self.may_grow() {
            let buf = &self.send.buf;
            return Ok(buf.next_capacity(self.limits.send_buffer_max) - buf.len());
        }
        Ok(self.send.buf.space())
    }

    /// The outgoing bytes that the current connection still lacks, as stream positions
    /// `[from, to)`, or `None` while disconnected.
    pub fn unsent(&self) -> Option<(u64, u64)> {
        // After the peer's CLOSE nothing is sent: nobody would read it.
        let sending = self.link.connected && self.fatal.is_none() && !self.recv.peer_closed;
        sending.then_some((self.send.tcp_sent, self.send.buf.end()))
    }

    /// Whether the peer closed the session: a failed write then means nothing.
    pub fn peer_closed(&self) -> bool {
        self.recv.peer_closed
    }

    /// A copy of at most `max` buffered bytes from stream position `from` on.
    pub fn buffered_from(&self, from: u64, max: usize) -> Vec<u8> {
        self.send.buf.copy_from(from, max)
    }

    /// What a read call may do now.
    pub fn read_gate(&self) -> ReadGate {
        if self.recv.read_shut || self.recv.all_read() {
            return ReadGate::Eof;
        }
        match &self.fatal {
            Some(e) => ReadGate::Failed(e.clone()),
            None => ReadGate::Proceed,
        }
    }

    /// Whether the session needs a TCP connection it does not have. Not once the peer has
    /// closed and everything it sent was read: nothing can move in either direction; nor
    /// while it rests passive (see [`passivate`](Self::passivate)).
    ///
    /// A failed session needs none, with one exception: a client whose opening the server
    /// has not answered, with a RESET to deliver (it was aborted). The server may have
    /// accepted the session already, and only its answer names the CID the RESET needs:
    /// the client retries its opening to learn it, as after a cut, until the RESET can go
    /// (or its tries run out, or the opening itself fails: see [`fail`](Self::fail)).
    /// Without it, the server's session would wait forever for a client that is gone.
    pub fn needs_connection(&self) -> bool {
        if self.link.connected || self.is_finished() {
            return false;
        }
        if self.fatal.is_some() {
            return self.is_opening() && self.reliable.resetting();
        }
        let spent = self.recv.peer_closed && self.recv.all_read();
        !self.resting() && !spent
    }

    /// Whether nothing is left to do: the session can free its state. A closed session
    /// waits for the confirmation of its CLOSE and for the acknowledgement of every byte it
    /// wrote (unless the peer closed too: then nobody reads them).
    pub fn is_finished(&self) -> bool {
        if self.fatal.is_some() {
            return !self.reliable.resetting();
        }
        self.send.closed
            && self.send.announced == Announced::Close { confirmed: true }
            && (self.send.buf.is_empty() || self.recv.peer_closed)
    }

    /// A client's control datagrams do not get through: connected, it has heard none from
    /// the server for two heartbeat intervals (a network that drops UDP, or a server
    /// reachable only through one forwarded TCP port). The engine then carries them over
    /// TCP. Cleared by the next datagram.
    pub fn datagrams_missing(&self) -> bool {
        self.datagrams_missing
    }

    /// Where this end's control datagrams go now, if anywhere.
    pub fn control_peer(&self) -> Option<SocketAddr> {
        self.path.current()
    }

    /// Since when the session has had no connection, while it has none.
    pub fn disconnected_since(&self) -> Option<Instant> {
        self.link.disconnected_since()
    }

    /// When the peer was last heard from: an authentic datagram, bytes read from TCP, or
    /// a new connection.
    pub fn last_heard(&self) -> Instant {
        self.liveness.last_heard()
    }

    /// While the session has no connection: when the peer was heard from since it lost
    /// it, if it was. The path works again, so a client should reconnect at once rather
    /// than wait out its backoff.
    pub fn heard_since_disconnected(&self) -> Option<Instant> {
        let since = self.disconnected_since()?;
        let heard = self.liveness.last_heard();
        (heard > since).then_some(heard)
    }

    /// A first, loose check of the peer's received count, for a server before it aborts
    /// the live connection: the count must lie within what was ever written. The exact
    /// check ([`check_resume`](Self::check_resume)) needs the I/O locks, since a write in
    /// flight may not be counted yet.
    pub fn may_resume(&self, peer_received: u32) -> bool {
        from_wire(peer_received, self.send.buf.acked(), self.send.buf.end()).is_some()
    }

    /// Checks the peer's received count from a reconnection handshake: the absolute
    /// position it stands for, or `None` if it lies outside what we could have sent
    /// (acknowledged bytes are gone; unsent ones cannot have arrived).
    pub fn check_resume(&self, peer_received: u32) -> Option<u64> {
        from_wire(peer_received, self.send.buf.acked(), self.send.high_water)
    }

    /// A snapshot for the application.
    pub fn status(&self, now: Instant) -> Status {
        let state = if self.fatal.is_some() || self.is_finished() {
            SessionState::Closed
        } else if self.send.write_shut.is_some() || self.send.closed {
            SessionState::Closing
        } else if !self.link.connected && self.resting() {
            SessionState::Passive
        } else if !self.link.connected {
            SessionState::Reconnecting
        } else {
            SessionState::Connected
        };
        let age = |since: Option<Instant>| since.map(|t| now.saturating_duration_since(t));
        Status {
            state,
            bytes_written: self.send.buf.end(),
            bytes_read: self.recv.received,
            unacknowledged: self.send.buf.len() as u64,
            oldest_unacknowledged: age(self.send.oldest_unacknowledged()),
            blocked_read: age(self.recv.reader_blocked_since),
            blocked_write: age(self.send.writer_blocked_since),
            reconnections: self.link.reconnections,
            last_failure: self.link.last_failure.clone(),
            last_heard: now.saturating_duration_since(self.liveness.last_heard()),
            control_peer: self.control_peer(),
            // Which carrier takes the datagrams is the engine's to say.
            control_over_tcp: false,
            // The connection's addresses are the engine's to fill in.
            local_addr: None,
            peer_addr: None,
            passive: self.link.passive,
            send_buffer_capacity: self.send.buf.capacity(),
            round_trip: self.send.round_trip,
        }
    }

    // ---------------------------------------------------------------- application calls

    /// Appends as much of `data` as fits (see [`write_space`](Self::write_space)), first
    /// growing a full buffer that may grow, and returns how much that was.
    pub fn write(&mut self, data: &[u8], now: Instant) -> usize {
        if !data.is_empty() {
            self.send.coalescing.on_write(now);
            // Decided before waking, which may give the connection up: the room
            // `write_space` promised must be there.
            let grow = self.may_grow();
            self.wake(now);
            if grow {
                self.send.grow(self.limits.send_buffer_max);
            }
        }
        self.send.write(data, now)
    }

    /// Whether the bytes the connection lacks may stay in the send buffer after a write,
    /// to go out with the next ones in one batch (see `coalesce.rs`): only
    /// with `nagle` (the application did not set `TCP_NODELAY`), while the application
    /// writes back to back, and until a batch is full. Otherwise the caller sends them now.
    /// Held bytes go out at the latest at a deadline of [`poll_timeout`](Self::poll_timeout),
    /// when [`release_held`](Self::release_held) says so.
    pub fn hold_unsent(&mut self, nagle: bool, now: Instant) -> bool {
        let Some((from, to)) = self.unsent() else {
            return false;
        };
        let unsent = usize::try_from(to - from).unwrap_or(usize::MAX);
        let (capacity, space) = (self.send.buf.capacity(), self.send.buf.space());
        self.send
            .coalescing
            .hold(nagle, unsent, capacity, space, now)
    }

    /// Ends the holding of written bytes if it is due at `now`, or `on_demand` (the
    /// application reads, flushes, shuts down or closes: nothing more may come to batch
    /// with). Returns whether bytes were held: the caller then sends every unsent byte.
    pub fn release_held(&mut self, now: Instant, on_demand: bool) -> bool {
        self.send.coalescing.release(now, on_demand)
    }

    /// Whether written bytes are being held (see [`hold_unsent`](Self::hold_unsent)).
    pub fn holds_unsent(&self) -> bool {
        self.send.coalescing.holding()
    }

    /// The application asked for the session to go passive (paper section 6): no TCP
    /// connection, and nobody reconnects until one side writes. Nothing written before is
    /// stranded: the connection closes only once neither side has a byte on it that the
    /// other has not read.
    ///
    /// So the PASSIVATE goes out once every byte written here is acknowledged (read by
    /// the peer's application; until then it asks for acknowledgements); the peer confirms
    /// it, and closes its side, once every byte it wrote is acknowledged in turn; this
    /// side closes at the confirmation. A cut meanwhile strands nothing either: a side with
    /// unacknowledged bytes reconnects (a server asks its client to) to deliver them. A
    /// side still delivering its own bytes stays passive across the new connection and
    /// goes on; otherwise the new connection wakes the session. A write here before the
    /// connection closed ends the request (see `wake`). Without a connection and with
    /// nothing to deliver, the session just stops reconnecting.
    pub fn passivate(&mut self, now: Instant) {
        if self.fatal.is_some() || self.link.passive {
            return;
        }
        self.link.passive = true;
        self.advance_passivation(now);
    }

    /// A writer found no room (see [`write_space`](Self::write_space)): ask the peer for
    /// an acknowledgement now, and again every so often while it waits. (Even if a request
    /// for the same bytes just went out: its answer may have been lost, and then the
    /// writer would wait for the next request.)
    pub fn writer_blocked(&mut self, now: Instant) {
        if self.send.writer_blocked_since.is_none() {
            self.send.writer_blocked_since = Some(now);
            self.request_ack(now);
        }
    }

    /// The blocked writer stopped waiting.
    pub fn writer_unblocked(&mut self) {
        self.send.writer_blocked_since = None;
    }

    /// A read call is about to block on the connection (or on a reconnection).
    pub fn reader_blocked(&mut self, now: Instant) {
        self.recv.reader_blocked_since.get_or_insert(now);
    }

    /// The read call returned.
    pub fn reader_unblocked(&mut self) {
        self.recv.reader_blocked_since = None;
    }

    /// The application shut down writing: the peer reads up to here, then end of stream.
    pub fn shutdown_write(&mut self, now: Instant) {
        self.wake(now);
        if self.send.write_shut.is_none() {
            self.send.write_shut = Some(self.send.buf.end());
            if !self.send.buf.is_empty() && !self.send.asked_for_all_sent() {
                // The receiver acknowledges only every `ack_threshold` bytes: ask for the
                // rest, and keep asking while lingering. (Not again for what the last
                // request named: a write that reached half the buffer asked for it just
                // now, and the timer repeats that request.)
                self.request_ack(now);
            }
        }
        self.advance_close(now);
    }

    /// The application shut down reading: reads return end of stream from now on.
    pub fn shutdown_read(&mut self) {
        self.recv.read_shut = true;
    }

    /// The application dropped its last handle.
    pub fn close(&mut self, now: Instant) {
        self.closed_at.get_or_insert(now);
        self.send.closed = true;
        self.recv.read_shut = true;
        self.shutdown_write(now);
        if self.recv.unacknowledged() && self.fatal.is_none() {
            // Nothing here reads any more: the peer learns at once how much was read, so
            // that its session can end without asking.
            self.send_ack();
        }
    }

    /// Fails the session for good, telling nobody; every later call reports `error`.
    ///
    /// On a session that failed already and is still opening, it says that the opening
    /// retried to deliver its RESET failed too (refused, or given up: see
    /// [`needs_connection`](Self::needs_connection)): nobody can be told, so the RESET is
    /// dropped and the session can end.
    pub fn fail(&mut self, error: Error) {
        if self.fatal.is_none() {
            self.fatal = Some(error);
        } else if self.is_opening() {
            self.reliable.forget(|kind| kind == ControlKind::Reset);
        }
        self.link.lost();
        self.reliable
            .forget(|kind| matches!(kind, ControlKind::Reconnect(_)));
    }

    /// Fails the session and tells the peer with a RESET.
    pub fn reset(&mut self, error: Error, now: Instant) {
        if self.fatal.is_none() {
            self.fail(error);
            self.reliable.send(ControlKind::Reset, now);
        }
    }

    // ---------------------------------------------------------------- inputs

    /// A client's opening was answered at `now`: the session is `cid`, and its datagrams
    /// go to `server_control`. What it queued before went nowhere, as if lost: messages
    /// awaiting confirmation go out now, and an ACK tells the server where the client is.
    pub fn opened(&mut self, cid: u32, server_control: SocketAddr, now: Instant) {
        self.reliable.set_cid(cid);
        self.path = ControlPath::to_server(Some(server_control));
        // The server's datagrams are awaited from now on.
        self.liveness.connected(now);
        self.datagrams_missing = false;
        self.reachable(now);
    }

    /// The peer can be sent datagrams now, and could not before: what awaits its
    /// confirmation goes out at once, and an acknowledgement request if one is wanted,
    /// else an ACK (any sent before went nowhere; a client's also tells the server where
    /// it is).
    fn reachable(&mut self, now: Instant) {
        self.reliable.rewind(now);
        if self.fatal.is_some() {
            // Only its RESET is left to say.
            return;
        }
        if self.wants_ack() {
            self.request_ack(now);
        } else {
            self.send_ack();
        }
    }

    /// The application read `n` bytes at `now`; acknowledges once `ack_threshold` bytes
    /// have been read since the last acknowledgement, or the reads reach the position the
    /// peer asked for one at. What is left unacknowledged is acknowledged once the reads
    /// pause (see [`poll_timeout`](Self::poll_timeout)).
    pub fn handle_read(&mut self, n: usize, now: Instant) {
        if n > 0 {
            self.liveness.heard(now);
        }
        if self.recv.read(n, self.limits.ack_threshold, now) {
            self.send_ack();
        }
    }

    /// The bytes `[from, from + n)` of the outgoing stream went out on connection `epoch`
    /// at `now`. Asks the peer for an acknowledgement once half the send buffer is
    /// unacknowledged (and again at each further half), and once the last bytes before a
    /// shutdown went out.
    ///
    /// Counted as possibly delivered even if that connection has failed meanwhile: the
    /// peer may have them, so its count may include them.
    pub fn handle_sent(&mut self, epoch: u32, from: u64, n: usize, now: Instant) {
        self.send.sent(epoch, from, n, self.link.current(), now);
        if self.fatal.is_some() || self.recv.peer_closed {
            return;
        }
        // At most three: the bytes sent but unacknowledged are at most the capacity.
        while let Some(upto) = self.send.next_ask() {
            self.request_ack_at(upto, now);
        }
    }

    /// Connection `epoch` failed (an I/O error, or an end of stream the peer did not
    /// announce). Returns whether that was the connection in use, in which case the engine
    /// must abort it; a report about an older connection is ignored.
    pub fn handle_connection_failed(&mut self, epoch: u32, reason: &str, now: Instant) -> bool {
        if !self.link.failed(epoch, reason, now) {
            return false;
        }
        if self.role == Role::Server && self.fatal.is_none() && !self.resting() {
            // The client may not have noticed (it may only be waiting for an ACK): tell it.
            self.ask_to_reconnect(epoch, now);
        }
        true
    }

    /// The path to the peer was measured: a round trip takes `rtt`, with nothing of the
    /// stream queued ahead (a client's HELLO and the server's ANSWER, which the engine
    /// times; a server's path check times itself). The latest measurement stands: a send
    /// buffer grows past `send_buffer::GROWS_FREELY_UPTO` only over a long round trip
    /// (see `SendSide::may_grow`).
    pub fn handle_round_trip(&mut self, rtt: Duration) {
        self.send.round_trip = Some(rtt);
    }

    /// A server offered connection `epoch` in a resuming ANSWER and the client's CONFIRM
    /// never came: if the client did send it, it installed a connection the server never
    /// took, and must learn that it failed (it may only be waiting for an ACK). Epochs are
    /// never offered twice, so the RECONNECT cannot fail a later connection. It replaces
    /// the RECONNECT of an earlier failed offer (see `ask_to_reconnect`).
    pub fn handle_offer_failed(&mut self, epoch: u32, now: Instant) {
        let offered_only = self.link.current() != Some(epoch);
        if self.role == Role::Server && self.fatal.is_none() && !self.resting() && offered_only {
            self.ask_to_reconnect(epoch, now);
        }
    }

    /// A server tells its client that connection `epoch` failed, with a RECONNECT sent
    /// until confirmed. At most two are pending, whatever a peer does: the one for the
    /// connection the session last installed (its client may still use it), and the one
    /// for the newest offer that failed. Why the older offers' may go: a client reconnects
    /// only once it has given up its connection, so its connection is the one of its
    /// newest handshake, and a RECONNECT for any other epoch is ignored (`Link::failed`),
    /// save that it wakes a passive client, which the newer one does as well. The server
    /// takes attempt numbers only in rising order, so the newest offer is the latest. A
    /// peer holding the keys (anyone may open a session) that sends HELLOs with rising
    /// attempts and never CONFIRMs would otherwise leave one RECONNECT per offer,
    /// retransmitted every 2 s for the session's life.
    fn ask_to_reconnect(&mut self, epoch: u32, now: Instant) {
        let installed = self.link.epoch;
        let offer = epoch != installed;
        self.reliable.forget(|kind| match kind {
            ControlKind::Reconnect(e) => e == epoch || (offer && e != installed),
            _ => false,
        });
        self.reliable.send(ControlKind::Reconnect(epoch), now);
    }

    /// The session moved to connection `epoch`, whose peer has received `peer_received`
    /// bytes (checked by [`check_resume`](Self::check_resume)): the bytes after it are to be
    /// resent, see [`unsent`](Self::unsent).
    ///
    /// A failed session does not take the connection: it reconnected only to learn where
    /// its RESET goes (see [`needs_connection`](Self::needs_connection)).
    pub fn handle_resume(&mut self, peer_received: u64, epoch: u32, now: Instant) {
        if self.fatal.is_some() {
            return;
        }
        // A new connection wakes a resting session (the peer woke it); one that reconnected
        // to deliver its bytes before going passive stays passive, and goes on with that.
        if self.resting() {
            self.link.passive = false;
        }
        self.acknowledged(peer_received, now);
        self.send.tcp_sent = peer_received.max(self.send.buf.acked());
        self.link.resumed(epoch);
        // A new connection: the peer's datagrams are awaited anew.
        self.liveness.connected(now);
        self.datagrams_missing = false;
        // Both are about an older connection, which the peer no longer uses: it would
        // ignore them. (A PASSIVATE the peer never confirmed would otherwise stay for
        // the session's life, one more for each passivation.)
        self.reliable
            .forget(|kind| matches!(kind, ControlKind::Reconnect(_) | ControlKind::Passivate(_)));
        // The peer is reachable again: what it has not confirmed goes out at once.
        self.reliable.rewind(now);
        self.probe();
        self.advance_passivation(now);
    }

    /// The server refused to resume the session (it does not know it: it restarted, or
    /// the session ended there; or it found our count impossible). `error` says which.
    pub fn handle_resume_refused(&mut self, error: Error) {
        let delivered = self.send.buf.is_empty() && self.send.write_shut.is_some();
        if delivered && self.recv.all_read() {
            // Both directions were complete: the session ended there while we lingered.
            self.send.announced = Announced::Close { confirmed: true };
            self.send.closed = true;
            return;
        }
        self.fail(error);
    }

    /// Authenticates a control datagram that came from `from` and, if it is authentic,
    /// addressed to this session and not a replay, applies it. A server follows its client
    /// to the address of the newest such datagram, once that address answers a challenge
    /// (see `path.rs`).
    ///
    /// # Errors
    ///
    /// Why the datagram was dropped; the session is unchanged then.
    pub fn handle_datagram(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        now: Instant,
    ) -> Result<(), Dropped> {
        let (pn, msg) = ControlMessage::open(datagram, &self.keys.recv).map_err(Dropped::Wire)?;
        let ours = msg.cid == self.reliable.cid() && msg.from_server == (self.role == Role::Client);
        if !ours {
            return Err(Dropped::NotOurs);
        }
        let fresh = self.replay.record(pn);
        if fresh == Fresh::Replayed {
            return Err(Dropped::Replayed);
        }
        // A CHALLENGE says that the server has not moved to this address yet: it proves
        // the path to us works, but not that the server will use it.
        let moved_to_us = !matches!(msg.kind, ControlKind::Challenge(_));
        self.liveness.datagram(now, moved_to_us);
        self.datagrams_missing = false;
        if fresh == Fresh::Newest {
            self.path.newest_from(from);
        }
        self.handle_control(&msg, from, now);
        Ok(())
    }

    fn handle_control(&mut self, msg: &ControlMessage, from: SocketAddr, now: Instant) {
        // A PASSIVATE of the connection in use is confirmed only once every byte we sent
        // on it is acknowledged (see `advance_passivation`).
        let deferred = matches!(msg.kind, ControlKind::Passivate(epoch)
            if self.link.current() == Some(epoch) && self.fatal.is_none());
        if msg.kind.needs_conf() && !deferred {
            // Confirm duplicates too: our earlier confirmation may have been lost.
            self.reliable.send_once(ControlKind::Conf, msg.id);
        }
        match msg.kind {
            ControlKind::Ack(count) => self.handle_ack(count, now),
            ControlKind::ReqAck { received, sent } => {
                self.handle_ack(received, now);
                if self.recv.asked(sent) {
                    self.send_ack();
                }
            }
            ControlKind::HalfClose(total) => self.recv.peer_end(total),
            ControlKind::Close(total) => {
                self.recv.peer_end(total);
                self.recv.peer_closed = true;
                self.send.forget_ages();
                // The peer reads nothing more, so our HALF_CLOSE is moot; and once its
                // session is gone nobody could confirm it (nothing answers a datagram it
                // cannot authenticate).
                if self.send.announced == (Announced::HalfClose { confirmed: false }) {
                    self.reliable
                        .forget(|kind| matches!(kind, ControlKind::HalfClose(_)));
                    self.send.confirmed(ControlKind::HalfClose(0));
                }
            }
            ControlKind::Reset => {
                self.fail(Error::PeerReset);
                self.reliable.forget(|_| true);
            }
            ControlKind::Conf => {
                if let Some(kind) = self.reliable.confirm(msg.id) {
                    if let ControlKind::Passivate(epoch) = kind {
                        // The peer will not reconnect: close the connection now.
                        if self.link.passive {
                            self.handle_connection_failed(epoch, "passivated", now);
                        }
                    }
                    self.send.confirmed(kind);
                    self.advance_close(now);
                }
            }
            ControlKind::Reconnect(epoch) => {
                if self.role == Role::Client {
                    // From a passive server too: it has something to send. (A client that
                    // is still delivering its own bytes before going passive goes on.)
                    if self.resting() {
                        self.link.passive = false;
                    }
                    self.handle_connection_failed(epoch, "the server's connection failed", now);
                }
            }
            ControlKind::Passivate(epoch) => {
                if deferred {
                    self.link.peer_passivated = Some((epoch, msg.id));
                    self.advance_passivation(now);
                }
            }
            ControlKind::Challenge(value) => {
                if self.role == Role::Client {
                    self.reliable.send_once(ControlKind::Response(value), 0);
                }
            }
            ControlKind::Response(value) => {
                let answered = match self.role {
                    Role::Server => self.path.response(from, value, now),
                    Role::Client => None,
                };
                if let Some(rtt) = answered {
                    log::debug!(
                        "session {}: the client's control path moved to {from} (round trip {rtt:?})",
                        self.reliable.cid()
                    );
                    self.handle_round_trip(rtt);
                    // What had nowhere to go until now goes at once: the messages awaiting
                    // confirmation, and our counts (an ACK or REQ_ACK sent before was
                    // dropped, and a short exchange may be over before any timer runs).
                    self.reachable(now);
                }
            }
        }
    }

    /// Runs the timers due at `now`: retransmissions, acknowledgement requests,
    /// acknowledgements of bytes read before the reads paused, heartbeats, the peer's
    /// silence (which fails the connection in use), giving up (which fails the session
    /// with [`Error::GaveUp`] and resets it), and the return of a grown send buffer to its
    /// initial size once it has been empty for a while.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.check_liveness(now);
        if self.idle_ack_at().is_some_and(|t| t <= now) {
            self.send_ack();
        }
        if self.fatal.is_none() {
            self.send.shrink_if_due(self.limits.send_buffer, now);
        }
        // A CLOSE is given up on only once the session is connected and every byte is
        // acknowledged (or the peer closed too, and reads none of them): until then the
        // peer still needs its total.
        //
        // After the peer's own CLOSE it lapses after a few tries: the peer's application
        // is gone, and its session, which needs nothing more from us once our final ACK
        // came, has most likely ended already; nobody would confirm it, and a session
        // that waited out every try would linger some 20 s after each exchange in which
        // the peer closed first (a server that answers and hangs up), thousands of them
        // under load.
        let close_tries = if !self.link.connected {
            None
        } else if self.recv.peer_closed {
            Some(PEER_GONE_CLOSE_TRIES)
        } else {
            self.send.buf.is_empty().then_some(FAREWELL_TRIES)
        };
        let dropped = self.reliable.retransmit(now, |kind| match kind {
            ControlKind::Close(_) => close_tries,
            ControlKind::Reset => Some(FAREWELL_TRIES),
            _ => None,
        });
        for kind in dropped {
            // Nobody will confirm it: count it as confirmed, so the session can end.
            self.send.confirmed(kind);
        }
        if self.wants_ack() && self.send.next_req_ack.is_some_and(|t| t <= now) {
            self.request_ack(now);
        }
        if self.give_up_at().is_some_and(|t| now >= t) {
            let after = self.limits.give_up_after.unwrap_or_default();
            self.reset(Error::GaveUp { after }, now);
        }
        if self.linger_ends().is_some_and(|t| now >= t) {
            // Nobody holds the session any more: the peer learns from the RESET that the
            // rest will not come, and the state is freed.
            log::debug!(
                "session {}: still undelivered after lingering {:?}; abandoned",
                self.reliable.cid(),
                self.limits.linger
            );
            self.reset(Error::Aborted, now);
        }
    }

    // ---------------------------------------------------------------- outputs

    /// The next control datagram to send, numbered and tagged, written to `out`: its
    /// length and where it goes, if there is one. A message with nowhere to go (a server
    /// that has not learned its client's address yet) is dropped, as if lost.
    pub fn poll_datagram(
        &mut self,
        out: &mut [u8; MAX_LEN],
        now: Instant,
    ) -> Option<(usize, SocketAddr)> {
        let (msg, to) = match self.path.poll_challenge(now) {
            Some((to, value)) => (self.reliable.message(ControlKind::Challenge(value), 0), to),
            None => loop {
                let msg = self.reliable.poll_transmit()?;
                if let Some(to) = self.path.current() {
                    break (msg, to);
                }
            },
        };
        let pn = self.next_packet;
        self.next_packet += 1;
        Some((msg.seal(pn, &self.keys.send, out), to))
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next run, if ever. An idle
    /// session whose buffer has its initial size has no deadline but its heartbeats'.
    ///
    /// The application's reads and writes move deadlines later (the silence limit, the
    /// acknowledgement of bytes read once the reads pause) far more often than earlier:
    /// an engine may sleep until a deadline it was given and then ask again, rather than
    /// be told of every move.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Every read and write asks (twice): plain comparisons, no iterator chains.
        let mut at = self.reliable.next_due();
        if self.wants_ack() {
            at = earliest(at, self.send.next_req_ack);
        }
        at = earliest(at, self.give_up_at());
        at = earliest(at, self.linger_ends());
        at = earliest(at, self.idle_ack_at());
        if self.fatal.is_none() {
            at = earliest(at, self.send.shrink_at(self.limits.send_buffer));
        }
        at = earliest(at, self.send.coalescing.release_at());
        if self.wants_heartbeat() {
            at = earliest(at, self.liveness.next_heartbeat());
        }
        if self.link.connected && !self.is_opening() {
            at = earliest(at, self.liveness.dead_at());
        }
        if self.watches_datagrams() {
            at = earliest(at, self.liveness.datagrams_missing_at());
        }
        at
    }

    /// Whether the engine should send FIN on the current connection now: the peer has
    /// confirmed our end of stream and this connection carries every byte; or the peer
    /// closed, so nothing more is to be sent (the FIN also wakes a writer of ours blocked
    /// in the kernel: its bytes will never be read). Returns `true` once per connection.
    pub fn poll_fin(&mut self) -> bool {
        self.link.connected && self.send.take_fin(self.link.epoch, self.recv.peer_closed)
    }

    /// Whether the engine should wake a reader blocked on the current connection (shut the
    /// connection down for reading): the peer's stream has ended and every byte of it was
    /// read, so such a read waits for nothing. It would otherwise wait for the peer's FIN,
    /// which follows our confirmation of its end, a round trip later. Returns `true` once
    /// per connection.
    pub fn poll_end_of_stream(&mut self) -> bool {
        self.link.connected && self.recv.take_end_wake(self.link.epoch)
    }

    // ---------------------------------------------------------------- internals

    fn handle_ack(&mut self, count: u32, now: Instant) {
        // Outside [acked, high_water] it is stale or a lie: ignored.
        if let Some(upto) = from_wire(count, self.send.buf.acked(), self.send.high_water) {
            self.acknowledged(upto, now);
        }
    }

    fn acknowledged(&mut self, upto: u64, now: Instant) {
        if self.send.acknowledged(upto, now) {
            self.advance_close(now);
            self.advance_passivation(now);
        }
    }

    /// Whether the session is passive with nothing of its own left to deliver: it rests
    /// without a connection, on purpose. A passive session whose bytes are not all
    /// acknowledged still needs a connection to deliver them (after a cut, say), and stays
    /// passive across it.
    fn resting(&self) -> bool {
        self.link.passive && self.send.buf.is_empty()
    }

    /// Whether the connection in use is to close for a passivation, asked for here or by
    /// the peer, once every byte sent on it is acknowledged.
    fn passivating(&self) -> bool {
        self.link.connected && (self.link.passive || self.link.peer_passivation().is_some())
    }

    /// Moves a passivation on, as far as the acknowledgements allow: the connection closes
    /// only once neither side has a byte on it that the other has not read. Each side
    /// first has every byte it wrote acknowledged (asking for it; the timer asks again),
    /// then: the side that asked sends PASSIVATE; the side that received it confirms it
    /// and closes its connection; the asking side closes at the confirmation. Neither
    /// writes on that connection after its step (a write here wakes the session first).
    fn advance_passivation(&mut self, now: Instant) {
        if self.fatal.is_some() || !self.passivating() {
            return;
        }
        let Some(epoch) = self.link.current() else {
            return;
        };
        let asked = self.link.peer_passivation();
        if asked.is_none() && self.link.passivate_sent() {
            return; // Ours is out: the peer's confirmation closes the connection.
        }
        if !self.send.buf.is_empty() {
            if !self.send.asked_for_all_sent() {
                self.request_ack(now);
            }
            return;
        }
        match asked {
            Some(id) => {
                self.link.peer_passivated = None;
                self.link.passive = true;
                self.reliable.send_once(ControlKind::Conf, id);
                self.handle_connection_failed(epoch, "the peer passivated the session", now);
            }
            None => {
                self.link.passivate_sent_on = Some(epoch);
                self.reliable.send(ControlKind::Passivate(epoch), now);
            }
        }
    }

    /// Whether a full send buffer may grow before a writer waits (see
    /// [`write_space`](Self::write_space)).
    fn may_grow(&self) -> bool {
        self.send
            .may_grow(self.link.connected, self.limits.send_buffer_max)
    }

    /// When to acknowledge the bytes read since the last acknowledgement, once the reads
    /// have paused.
    fn idle_ack_at(&self) -> Option<Instant> {
        self.fatal
            .is_none()
            .then(|| self.recv.idle_ack_at())
            .flatten()
    }

    /// Announces the end of our stream: HALF_CLOSE once every byte written is
    /// acknowledged; CLOSE at once when the application closed, because from then on
    /// nothing here reads, and a peer blocked writing to us must learn it (as TCP's RST
    /// tells it) instead of waiting for acknowledgements that never come.
    fn advance_close(&mut self, now: Instant) {
        if self.fatal.is_some() {
            return;
        }
        let Some(kind) = self.send.next_announcement(self.recv.peer_closed) else {
            return;
        };
        if matches!(kind, ControlKind::Close(_)) {
            // A CLOSE carries the same total and supersedes a pending HALF_CLOSE.
            self.reliable
                .forget(|kind| matches!(kind, ControlKind::HalfClose(_)));
        }
        self.reliable.send(kind, now);
    }

    /// Fails the connection in use if the peer has been silent too long; sends a
    /// heartbeat if this end has been.
    fn check_liveness(&mut self, now: Instant) {
        if self.watches_datagrams()
            && self
                .liveness
                .datagrams_missing_at()
                .is_some_and(|t| now >= t)
        {
            self.datagrams_missing = true;
        }
        let limited = self.link.connected && !self.is_opening();
        if limited && self.liveness.dead_at().is_some_and(|t| now >= t) {
            let after = self.liveness.dead_after().unwrap_or_default();
            let reason = format!("heard nothing from the peer for {after:?}");
            self.handle_connection_failed(self.link.epoch, &reason, now);
        }
        if self.wants_heartbeat() && self.liveness.next_heartbeat().is_some_and(|t| now >= t) {
            // A REQ_ACK: the peer answers with an ACK at once, whatever its own settings,
            // since it asks for nothing the peer has not read (our acknowledged count). It
            // also tells a server where its client is; and a reconnecting client that
            // hears the answer knows the path is back, and starts its next attempt at once.
            let received = self.recv.ack_count();
            let sent = to_wire(self.send.buf.acked());
            self.reliable
                .send_once(ControlKind::ReqAck { received, sent }, 0);
            // Counted as sent even where nothing goes out (a server that does not know
            // its client's address yet): the next one is due an interval later.
            self.liveness.heartbeat_sent(now);
        }
    }

    /// Whether this end watches for the peer's datagrams going missing: a connected client
    /// that has not found them missing yet.
    fn watches_datagrams(&self) -> bool {
        self.role == Role::Client
            && self.link.connected
            && self.fatal.is_none()
            && !self.datagrams_missing
            && !self.is_opening()
    }

    /// Whether heartbeats are due on this session: while it is connected, and, on a
    /// client, while it reconnects. A server without a connection waits in silence: its
    /// client may be gone for good.
    ///
    /// Except a closed server that lingers for the acknowledgement of its last bytes: its
    /// client may have read them all and acknowledged them in a datagram that was lost,
    /// then lost the connection; having read everything the server will ever send, that
    /// client needs no connection and never reconnects, so nothing would carry its count
    /// again. A heartbeat asks for it (the client answers at once), an interval at a time,
    /// until the linger limit.
    fn wants_heartbeat(&self) -> bool {
        if self.fatal.is_some() {
            return false;
        }
        if self.link.connected {
            return true;
        }
        match self.role {
            Role::Client => self.needs_connection() || self.link.passive,
            Role::Server => self.linger_ends().is_some() && !self.send.buf.is_empty(),
        }
    }

    /// The session has something to send: a passive one wakes. A client then reconnects;
    /// a server without a connection asks its client to, with a RECONNECT.
    ///
    /// A session whose PASSIVATE named the connection in use gives that connection up:
    /// the peer may be closing it on our request (it confirms by closing), and bytes
    /// written to it now would be lost with it, with nobody reconnecting. It fails it
    /// instead, and reconnects (or asks its client to) as after a cut.
    fn wake(&mut self, now: Instant) {
        if !self.link.passive || self.fatal.is_some() {
            return;
        }
        self.link.passive = false;
        self.reliable
            .forget(|kind| matches!(kind, ControlKind::Passivate(_)));
        if self.link.passivate_sent() {
            let reason = "woken while the peer may close the connection it was asked to";
            self.handle_connection_failed(self.link.epoch, reason, now);
            return;
        }
        if self.role == Role::Server && !self.link.connected {
            self.ask_to_reconnect(self.link.epoch, now);
        }
    }

    /// When a closed session that has not finished stops lingering.
    fn linger_ends(&self) -> Option<Instant> {
        if self.fatal.is_some() || self.is_finished() {
            return None;
        }
        self.closed_at?.checked_add(self.limits.linger)
    }

    /// When the session gives up, if it is disconnected and has a limit.
    fn give_up_at(&self) -> Option<Instant> {
        if self.fatal.is_some() || self.resting() {
            return None;
        }
        self.link.give_up_at(self.limits.give_up_after)
    }

    /// Whether the REQ_ACK timer runs: bytes wait for an acknowledgement that a blocked
    /// writer or a lingering close needs. Not without a connection: the peer then has
    /// nothing new to acknowledge, and the heartbeats probe the path once an interval.
    fn wants_ack(&self) -> bool {
        !self.send.buf.is_empty()
            && self.link.connected
            && !self.recv.peer_closed
            && self.fatal.is_none()
            && (self.send.writer_blocked_since.is_some()
                || self.send.write_shut.is_some()
                || self.passivating())
    }

    /// Asks the peer to acknowledge every byte sent so far, once it has read them.
    fn request_ack(&mut self, now: Instant) {
        self.request_ack_at(self.send.high_water, now);
    }

    /// Asks the peer for an acknowledgement once it has read up to `upto`.
    fn request_ack_at(&mut self, upto: u64, now: Instant) {
        let received = self.recv.ack_count();
        self.reliable.send_once(
            ControlKind::ReqAck {
                received,
                sent: to_wire(upto),
            },
            0,
        );
        self.send.requested_ack(upto, now);
    }

    /// A client tells the server where its control datagrams come from, after the opening
    /// and after every reconnection: the server sends only to the source of the client's
    /// newest authentic datagram, and an ACK changes nothing else.
    fn probe(&mut self) {
        if self.role == Role::Client {
            self.send_ack();
        }
    }

    fn send_ack(&mut self) {
        let count = self.recv.ack_count();
        self.reliable.send_once(ControlKind::Ack(count), 0);
    }
}
