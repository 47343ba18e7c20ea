//! The session state machine: counters, send buffer, closing and the reliable control
//! messages, with no sockets and no clock.
//!
//! [`Session`] coordinates pieces of state, one file each: the send side (`send.rs`),
//! the receive side (`recv.rs`), the TCP connection in use (`link.rs`), the control
//! messages on their way out (`reliable.rs`), liveness (`liveness.rs`) and the control
//! path (`path.rs`). Its methods are spread by concern: what it shows (`getters.rs`),
//! closing and failing (`closing.rs`), passivation (`passivation.rs`) and its timers
//! (`timers.rs`); this file holds the rest: making a session, the application's writes,
//! and the network's inputs and outputs. How the lifecycle's states move is in
//! `lifecycle.rs`. Every method that needs the time takes it as an argument, so tests
//! drive a session with a virtual clock.

mod closing;
mod coalesce;
mod getters;
mod lifecycle;
mod link;
mod liveness;
mod passivation;
mod path;
mod recv;
mod reliable;
mod send;
#[cfg(test)]
mod testing;
mod timers;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use self::link::Link;
use self::liveness::Liveness;
use self::path::ControlPath;
use self::recv::RecvSide;
use self::reliable::Reliable;
use self::send::SendSide;
use super::auth::{ChallengeKey, ControlKeys};
use super::control::{ControlKind, ControlMessage, MAX_LEN};
use super::counter::{from_wire, to_wire};
use super::replay::{Fresh, ReplayWindow};
use super::WireError;
use crate::error::Error;

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
            next_packet: 0,
            replay: ReplayWindow::default(),
            peer_named_cid: false,
        };
        session.probe();
        session
    }

    /// A client's opening agreed on the session's keys (`docs/PROTOCOL.md` section 2.1):
    /// its datagrams are tagged and checked with `keys` from now on. Called before
    /// [`opened`](Self::opened), which sends the first; none was sent before (it had
    /// nowhere to go).
    pub fn agreed(&mut self, keys: ControlKeys) {
        self.keys = keys;
    }

    /// The peer named the CID in a HELLO that proved itself: it received the CID.
    pub fn handle_cid_named(&mut self) {
        self.peer_named_cid = true;
    }

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
    /// at `now`. Asks the peer for an acknowledgement once half the send buffer (a quarter
    /// over a long path) is unacknowledged, and again at each further step, and once the
    /// last bytes before a shutdown went out.
    ///
    /// Counted as possibly delivered even if that connection has failed meanwhile: the
    /// peer may have them, so its count may include them.
    pub fn handle_sent(&mut self, epoch: u32, from: u64, n: usize, now: Instant) {
        self.send.sent(epoch, from, n, self.link.current(), now);
        if self.fatal.is_some() || self.recv.peer_closed {
            return;
        }
        // At most five: the bytes sent but unacknowledged are at most the capacity, and a
        // step is at least a quarter of it.
        while let Some(upto) = self.send.next_ask(self.limits.send_buffer_max) {
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
        self.link.resumed(epoch, now);
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

    /// Authenticates a control datagram that came from `from` and, if it is authentic,
    /// addressed to this session and not a replay, applies it. A server follows its client
    /// to the address of the newest such datagram, once that address answers a challenge;
    /// before any address has, it sends there within an allowance (see `path.rs`).
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
        self.path
            .heard(from, datagram.len(), fresh == Fresh::Newest);
        self.handle_control(&msg, from, now);
        if self.path.take_reopened() {
            // What had nowhere to go until now goes at once: the messages awaiting
            // confirmation, and our counts (an ACK or REQ_ACK sent before was dropped, and
            // a short exchange may be over before any timer runs).
            self.reachable(now);
        }
        Ok(())
    }

    /// The client's EARLY datagram for this session's opening, `len` bytes, came from
    /// `from` (the endpoint matched its opening nonce). It authenticates nothing, so it
    /// changes nothing but where a new server session may send before it hears from its
    /// client, within the allowance of those bytes (`path::ControlPath::early`). Returns
    /// whether it counted.
    pub fn handle_early(&mut self, from: SocketAddr, len: usize, now: Instant) -> bool {
        let counted = self.role == Role::Server && self.path.early(from, len);
        if counted && self.path.take_reopened() {
            self.reachable(now);
        }
        counted
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
                // cannot authenticate). (Only an unconfirmed HALF_CLOSE awaits confirmation.)
                self.reliable
                    .forget(|kind| matches!(kind, ControlKind::HalfClose(_)));
                if self.send.closing.half_close_unconfirmed() {
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
                }
            }
        }
    }

    /// The next control datagram to send, numbered and tagged, written to `out`: its
    /// length and where it goes, if there is one. A message with nowhere to go (a server
    /// that has not heard from its client yet, or whose allowance for the address it has
    /// not validated is spent: see `path.rs`) is dropped, as if lost, and goes again once
    /// it has somewhere to go.
    pub fn poll_datagram(
        &mut self,
        out: &mut [u8; MAX_LEN],
        now: Instant,
    ) -> Option<(usize, SocketAddr)> {
        // The messages first: before a server has validated an address, they are what the
        // first round trips wait for (a CLOSE, the counts), and a challenge the allowance
        // cannot take yet goes with the client's next datagram, which the messages ask for.
        let (msg, to) = loop {
            match self.reliable.poll_transmit() {
                Some(msg) => {
                    if let Some(to) = self.path.route(msg.kind.datagram_len()) {
                        break (msg, to);
                    }
                }
                None => {
                    let (to, value) = self.path.poll_challenge(now)?;
                    break (self.reliable.message(ControlKind::Challenge(value), 0), to);
                }
            }
        };
        let pn = self.next_packet;
        self.next_packet += 1;
        Some((msg.seal(pn, &self.keys.send, out), to))
    }

    /// Whether the engine should send FIN on the current connection now: the peer has
    /// confirmed our end of stream and this connection carries every byte; or the peer
    /// closed, so nothing more is to be sent (the FIN also wakes a writer of ours blocked
    /// in the kernel: its bytes will never be read). Returns `true` once per connection.
    pub fn poll_fin(&mut self) -> bool {
        self.link.connected() && self.send.take_fin(self.link.epoch, self.recv.peer_closed)
    }

    /// Whether the engine should wake a reader blocked on the current connection (shut the
    /// connection down for reading): the peer's stream has ended and every byte of it was
    /// read, so such a read waits for nothing. It would otherwise wait for the peer's FIN,
    /// which follows our confirmation of its end, a round trip later. Returns `true` once
    /// per connection.
    pub fn poll_end_of_stream(&mut self) -> bool {
        self.link.connected() && self.recv.take_end_wake(self.link.epoch)
    }

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

    /// Whether a full send buffer may grow before a writer waits (see
    /// [`write_space`](Self::write_space)).
    fn may_grow(&self) -> bool {
        self.send
            .may_grow(self.link.connected(), self.limits.send_buffer_max)
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
