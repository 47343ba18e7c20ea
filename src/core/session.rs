//! The session state machine: counters, send buffer, closing and the reliable control
//! messages, with no sockets and no clock.
//!
//! The driver feeds it what happened (bytes written or read, a control message, a failed
//! connection, the time) through `handle_*`-style methods, asks it what to do through
//! [`Session::poll_transmit`] and [`Session::poll_timeout`], and does the I/O itself. Every
//! method that needs the time takes it as an argument, so tests drive it with a virtual
//! clock.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use super::control::{ControlKind, ControlMessage};
use super::counter::{from_wire, to_wire};
use super::send_buffer::SendBuffer;
use crate::status::{SessionState, Status};

/// First retransmission delay of a message that needs confirmation.
const RETRANSMIT_INITIAL: Duration = Duration::from_millis(100);
/// Retransmission delays double up to this.
const RETRANSMIT_MAX: Duration = Duration::from_secs(2);
/// How often a sender that waits for acknowledgements asks for one again (the REQ_ACK or
/// the answering ACK may be lost).
const REQ_ACK_INTERVAL: Duration = Duration::from_millis(200);
/// How often a CLOSE or RESET is sent before the sender stops waiting for its
/// confirmation (about 20 s of tries). A CLOSE is given up on only once every byte is
/// acknowledged, so the peer has all the data; it learns of the end when it next
/// reconnects (and is refused).
const FAREWELL_ATTEMPTS: u32 = 14;
/// Writes within this span share one entry in the unacknowledged-age queue, which keeps
/// that queue short however small the writes are.
const AGE_GRANULARITY: Duration = Duration::from_millis(1);

/// Which end of the session this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Opened the session; reconnects when the connection fails.
    Client,
    /// Accepted the session; waits for the client to reconnect.
    Server,
}

/// The per-session settings the core needs.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Capacity of the send buffer.
    pub send_buffer: usize,
    /// Received bytes that trigger an acknowledgement.
    pub ack_threshold: usize,
    /// How long to stay disconnected before failing the session, if ever.
    pub give_up_after: Option<Duration>,
}

/// What a read may do now.
#[derive(Debug)]
pub enum ReadGate {
    /// Read from the TCP connection.
    Proceed,
    /// The stream is over: every byte the peer sent before closing has been read.
    Eof,
    /// The session failed.
    Failed(io::Error),
}

#[derive(Clone, Debug)]
struct Fatal {
    kind: io::ErrorKind,
    message: String,
}

/// How far our own close announcement got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Announced {
    Nothing,
    HalfClose { confirmed: bool },
    Close { confirmed: bool },
}

/// A message sent until the peer confirms it.
#[derive(Clone, Copy, Debug)]
struct Unconfirmed {
    id: u16,
    kind: ControlKind,
    due: Instant,
    interval: Duration,
    attempts: u32,
}

/// One end of a session.
#[derive(Debug)]
pub struct Session {
    role: Role,
    cid: u32,
    limits: Limits,

    /// Number of the TCP connection in use (the server counts; the client adopts).
    epoch: u32,
    /// Whether a TCP connection currently carries the session.
    connected: bool,
    /// When the session lost its connection, while it has none.
    disconnected_since: Option<Instant>,
    reconnections: u64,
    last_failure: Option<String>,
    /// Set once the session can no longer move data; every later call reports it.
    fatal: Option<Fatal>,

    /// Bytes written and not yet acknowledged: `[acked, end)` of the outgoing stream.
    buf: SendBuffer,
    /// Outgoing stream position up to which the current connection has been written.
    tcp_sent: u64,
    /// The most ever written to any connection: an acknowledgement beyond it is a lie.
    high_water: u64,
    /// `(end position, time)` of writes not yet acknowledged, oldest first.
    unacked_since: VecDeque<(u64, Instant)>,
    /// The total the application wrote before shutting down writing, once it has.
    write_shut: Option<u64>,
    /// The application dropped every handle.
    closed: bool,
    /// Our FIN has been sent on connection `epoch`.
    fin_sent_on: Option<u32>,
    announced: Announced,
    writer_blocked_since: Option<Instant>,
    next_req_ack: Option<Instant>,

    /// Bytes the application has read.
    received: u64,
    /// The count carried by our last acknowledgement.
    ack_sent: u64,
    /// The peer's total, once it announced HALF_CLOSE or CLOSE.
    peer_final: Option<u64>,
    /// The peer sent CLOSE: it reads nothing more.
    peer_closed: bool,
    /// The application shut down reading.
    read_shut: bool,
    reader_blocked_since: Option<Instant>,

    next_id: u16,
    unconfirmed: Vec<Unconfirmed>,
    outbox: VecDeque<ControlMessage>,
}

impl Session {
    /// A session whose first TCP connection (number `epoch`) is up.
    pub fn new(role: Role, cid: u32, epoch: u32, limits: Limits) -> Self {
        Session {
            role,
            cid,
            limits,
            epoch,
            connected: true,
            disconnected_since: None,
            reconnections: 0,
            last_failure: None,
            fatal: None,
            buf: SendBuffer::new(limits.send_buffer),
            tcp_sent: 0,
            high_water: 0,
            unacked_since: VecDeque::new(),
            write_shut: None,
            closed: false,
            fin_sent_on: None,
            announced: Announced::Nothing,
            writer_blocked_since: None,
            next_req_ack: None,
            received: 0,
            ack_sent: 0,
            peer_final: None,
            peer_closed: false,
            read_shut: false,
            reader_blocked_since: None,
            next_id: 0,
            unconfirmed: Vec::new(),
            outbox: VecDeque::new(),
        }
    }

    /// The session's connection identifier.
    pub fn cid(&self) -> u32 {
        self.cid
    }

    /// Which end this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Number of the TCP connection in use (or last used).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Whether a TCP connection carries the session.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Bytes the application has read, which is what the peer may stop keeping.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Bytes the application has written.
    pub fn written(&self) -> u64 {
        self.buf.end()
    }

    // ---------------------------------------------------------------- writing

    /// How many bytes a write may append now.
    ///
    /// # Errors
    ///
    /// The session's failure, or `BrokenPipe` once writing was shut down here or the peer
    /// closed the session.
    pub fn write_space(&self) -> io::Result<usize> {
        if let Some(f) = &self.fatal {
            return Err(io::Error::new(f.kind, f.message.clone()));
        }
        if self.write_shut.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the session was shut down for writing",
            ));
        }
        if self.peer_closed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the peer closed the session",
            ));
        }
        Ok(self.buf.space())
    }

    /// Appends as much of `data` as fits (see [`write_space`](Self::write_space)) and
    /// returns how much that was.
    pub fn write(&mut self, data: &[u8], now: Instant) -> usize {
        let n = self.buf.push(data);
        if n > 0 {
            let end = self.buf.end();
            match self.unacked_since.back_mut() {
                Some((last_end, at)) if now.saturating_duration_since(*at) < AGE_GRANULARITY => {
                    *last_end = end
                }
                _ => self.unacked_since.push_back((end, now)),
            }
        }
        n
    }

    /// A writer found the buffer full: ask the peer for an acknowledgement now, and again
    /// every so often while it waits.
    pub fn writer_blocked(&mut self, now: Instant) {
        if self.writer_blocked_since.is_none() {
            self.writer_blocked_since = Some(now);
            self.request_ack(now);
        }
    }

    /// The blocked writer stopped waiting.
    pub fn writer_unblocked(&mut self) {
        self.writer_blocked_since = None;
    }

    /// The outgoing bytes that the current connection still lacks, as stream positions
    /// `[from, to)`, or `None` while disconnected.
    pub fn unsent(&self) -> Option<(u64, u64)> {
        // After the peer's CLOSE nothing is sent: nobody would read it.
        let sending = self.connected && self.fatal.is_none() && !self.peer_closed;
        sending.then_some((self.tcp_sent, self.buf.end()))
    }

    /// Whether the peer closed the session: a failed write then means nothing.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// A copy of the buffered bytes from stream position `from` on.
    pub fn buffered_from(&self, from: u64) -> Vec<u8> {
        self.buf.copy_from(from)
    }

    /// The bytes `[from, from + n)` of the outgoing stream went out on connection `epoch`.
    ///
    /// Counted as possibly delivered even if that connection has failed meanwhile: the
    /// peer may have them, so its count may include them.
    pub fn handle_sent(&mut self, epoch: u32, from: u64, n: usize) {
        let end = (from + n as u64).min(self.buf.end());
        self.high_water = self.high_water.max(end);
        if self.connected && epoch == self.epoch && from == self.tcp_sent {
            self.tcp_sent = end;
        }
    }

    // ---------------------------------------------------------------- reading

    /// What a read call may do now.
    pub fn read_gate(&self) -> ReadGate {
        if self.read_shut || self.peer_final == Some(self.received) {
            return ReadGate::Eof;
        }
        match &self.fatal {
            Some(f) => ReadGate::Failed(io::Error::new(f.kind, f.message.clone())),
            None => ReadGate::Proceed,
        }
    }

    /// A read call is about to block on the connection (or on a reconnection).
    pub fn reader_blocked(&mut self, now: Instant) {
        self.reader_blocked_since.get_or_insert(now);
    }

    /// The read call returned.
    pub fn reader_unblocked(&mut self) {
        self.reader_blocked_since = None;
    }

    /// The application read `n` bytes; acknowledges once enough have arrived.
    pub fn handle_read(&mut self, n: usize) {
        self.received += n as u64;
        if self.received - self.ack_sent >= self.limits.ack_threshold as u64 {
            self.send_ack();
        }
    }

    /// The application shut down reading: reads return end of stream from now on.
    pub fn shutdown_read(&mut self) {
        self.read_shut = true;
    }

    // ---------------------------------------------------------------- connections

    /// Connection `epoch` failed (an I/O error, or an end of stream the peer did not
    /// announce). Returns whether that was the connection in use, in which case the driver
    /// must abort it; a report about an older connection is ignored.
    pub fn handle_connection_failed(&mut self, epoch: u32, reason: &str, now: Instant) -> bool {
        if !self.connected || epoch != self.epoch {
            return false;
        }
        self.connected = false;
        self.disconnected_since = Some(now);
        self.last_failure = Some(reason.to_owned());
        if self.role == Role::Server && self.fatal.is_none() {
            // The client may not have noticed (it may only be waiting for an ACK): tell it.
            self.send_reliable(ControlKind::Reconnect(epoch), now);
        }
        true
    }

    /// Whether the session needs a TCP connection it does not have. Not once the peer has
    /// closed and everything it sent was read: nothing can move in either direction.
    pub fn needs_connection(&self) -> bool {
        let spent = self.peer_closed && self.peer_final == Some(self.received);
        !self.connected && self.fatal.is_none() && !spent && !self.is_finished()
    }

    /// A first, loose check of the peer's received count, for a server before it aborts
    /// the live connection: the count must lie within what was ever written. The exact
    /// check ([`check_resume`](Self::check_resume)) needs the I/O locks, since a write in
    /// flight may not be counted yet.
    pub fn may_resume(&self, peer_received: u32) -> bool {
        from_wire(peer_received, self.buf.acked(), self.buf.end()).is_some()
    }

    /// Checks the peer's received count from a reconnection handshake: the absolute
    /// position it stands for, or `None` if it lies outside what we could have sent
    /// (acknowledged bytes are gone; unsent ones cannot have arrived).
    pub fn check_resume(&self, peer_received: u32) -> Option<u64> {
        from_wire(peer_received, self.buf.acked(), self.high_water)
    }

    /// The session moved to connection `epoch`, whose peer has received `peer_received`
    /// bytes (checked by [`check_resume`](Self::check_resume)): the bytes after it are to be
    /// resent, see [`unsent`](Self::unsent).
    pub fn handle_resume(&mut self, peer_received: u64, epoch: u32, now: Instant) {
        self.acknowledged(peer_received, now);
        self.tcp_sent = peer_received.max(self.buf.acked());
        self.epoch = epoch;
        self.connected = true;
        self.disconnected_since = None;
        self.reconnections += 1;
        self.unconfirmed
            .retain(|m| !matches!(m.kind, ControlKind::Reconnect(_)));
        // The peer is reachable again: what it has not confirmed goes out at once, with a
        // fresh count of attempts.
        for m in &mut self.unconfirmed {
            m.due = now;
            m.attempts = 0;
            m.interval = RETRANSMIT_INITIAL;
        }
    }

    /// The server refused to resume the session (it does not know it: it restarted, or
    /// the session ended there; or it found our count impossible). `message` says which.
    pub fn resume_refused(&mut self, message: String) {
        let delivered = self.buf.is_empty() && self.write_shut.is_some();
        if delivered && self.peer_final == Some(self.received) {
            // Both directions were complete: the session ended there while we lingered.
            self.announced = Announced::Close { confirmed: true };
            self.closed = true;
            return;
        }
        self.fail_old(io::ErrorKind::ConnectionReset, message);
    }

    /// Fails the session for good; every later call reports `kind` and `message`.
    pub fn fail_old(&mut self, kind: io::ErrorKind, message: String) {
        if self.fatal.is_none() {
            self.fatal = Some(Fatal { kind, message });
        }
        self.connected = false;
        self.unconfirmed
            .retain(|m| !matches!(m.kind, ControlKind::Reconnect(_)));
    }

    /// Fails the session and tells the peer with a RESET.
    pub fn abort(&mut self, kind: io::ErrorKind, message: String, now: Instant) {
        if self.fatal.is_none() {
            self.fail_old(kind, message);
            self.send_reliable(ControlKind::Reset, now);
        }
    }

    // ---------------------------------------------------------------- closing

    /// The application shut down writing: the peer reads up to here, then end of stream.
    pub fn shutdown_write(&mut self, now: Instant) {
        if self.write_shut.is_none() {
            self.write_shut = Some(self.buf.end());
            if !self.buf.is_empty() {
                // The receiver acknowledges only every `ack_threshold` bytes: ask for the
                // rest, and keep asking while lingering.
                self.request_ack(now);
            }
        }
        self.advance_close(now);
    }

    /// The application dropped its last handle.
    pub fn close(&mut self, now: Instant) {
        self.closed = true;
        self.read_shut = true;
        self.shutdown_write(now);
    }

    /// Whether the driver should send FIN on the current connection now: the peer has
    /// confirmed our end of stream and this connection carries every byte; or the peer
    /// closed, so nothing more is to be sent (the FIN also wakes a writer of ours blocked
    /// in the kernel: its bytes will never be read).
    pub fn poll_fin(&mut self) -> bool {
        let confirmed = matches!(
            self.announced,
            Announced::HalfClose { confirmed: true } | Announced::Close { confirmed: true }
        );
        let done_sending =
            self.peer_closed || (confirmed && Some(self.tcp_sent) == self.write_shut);
        let due = done_sending && self.connected && self.fin_sent_on != Some(self.epoch);
        if due {
            self.fin_sent_on = Some(self.epoch);
        }
        due
    }

    /// Whether nothing is left to do: the session can free its state. A closed session
    /// waits for the confirmation of its CLOSE and for the acknowledgement of every byte it
    /// wrote (unless the peer closed too: then nobody reads them).
    pub fn is_finished(&self) -> bool {
        let resetting = self
            .unconfirmed
            .iter()
            .any(|m| m.kind == ControlKind::Reset);
        if self.fatal.is_some() {
            return !resetting;
        }
        self.closed
            && self.announced == Announced::Close { confirmed: true }
            && (self.buf.is_empty() || self.peer_closed)
    }

    /// Announces the end of our stream: HALF_CLOSE once every byte written is
    /// acknowledged; CLOSE at once when the application closed, because from then on
    /// nothing here reads, and a peer blocked writing to us must learn it (as TCP's RST
    /// tells it) instead of waiting for acknowledgements that never come.
    fn advance_close(&mut self, now: Instant) {
        let Some(total) = self.write_shut else { return };
        if self.fatal.is_some() {
            return;
        }
        let announce = match self.announced {
            Announced::Nothing if self.closed => true,
            Announced::Nothing => self.buf.is_empty() && !self.peer_closed,
            Announced::HalfClose { .. } => self.closed,
            Announced::Close { .. } => false,
        };
        if !announce {
            return;
        }
        if self.closed {
            // A CLOSE carries the same total and supersedes a pending HALF_CLOSE.
            self.unconfirmed
                .retain(|m| !matches!(m.kind, ControlKind::HalfClose(_)));
            self.announced = Announced::Close { confirmed: false };
            self.send_reliable(ControlKind::Close(to_wire(total)), now);
        } else {
            self.announced = Announced::HalfClose { confirmed: false };
            self.send_reliable(ControlKind::HalfClose(to_wire(total)), now);
        }
    }

    // ---------------------------------------------------------------- control input

    /// Applies a control datagram addressed to this session.
    pub fn handle_control(&mut self, msg: &ControlMessage, now: Instant) {
        if msg.kind.needs_conf() {
            // Confirm duplicates too: our earlier confirmation may have been lost.
            self.send_unreliable(ControlKind::Conf, msg.id);
        }
        match msg.kind {
            ControlKind::Ack(count) => self.handle_ack(count, now),
            ControlKind::ReqAck(count) => {
                self.handle_ack(count, now);
                self.send_ack();
            }
            ControlKind::HalfClose(total) => self.handle_peer_end(total),
            ControlKind::Close(total) => {
                self.handle_peer_end(total);
                self.peer_closed = true;
                // Whatever we still buffer will never be read.
                self.unacked_since.clear();
            }
            ControlKind::Reset => {
                self.fail_old(
                    io::ErrorKind::ConnectionReset,
                    "the peer reset the session".to_owned(),
                );
                self.unconfirmed.clear();
            }
            ControlKind::Conf => self.handle_conf(msg.id, now),
            ControlKind::Reconnect(epoch) => {
                if self.role == Role::Client {
                    self.handle_connection_failed(epoch, "the server's connection failed", now);
                }
            }
        }
    }

    fn handle_ack(&mut self, count: u32, now: Instant) {
        // Outside [acked, high_water] it is stale or a lie: ignored.
        if let Some(upto) = from_wire(count, self.buf.acked(), self.high_water) {
            self.acknowledged(upto, now);
        }
    }

    fn acknowledged(&mut self, upto: u64, now: Instant) {
        if self.buf.ack(upto) {
            while self
                .unacked_since
                .front()
                .is_some_and(|&(end, _)| end <= upto)
            {
                self.unacked_since.pop_front();
            }
            self.advance_close(now);
        }
    }

    fn handle_peer_end(&mut self, total: u32) {
        // The peer cannot have sent less than we read, nor 4 GiB beyond it unacknowledged.
        let window_end = self.received.saturating_add(u64::from(u32::MAX));
        if let Some(total) = from_wire(total, self.received, window_end) {
            self.peer_final.get_or_insert(total);
        }
    }

    fn handle_conf(&mut self, id: u16, now: Instant) {
        let Some(i) = self.unconfirmed.iter().position(|m| m.id == id) else {
            return;
        };
        let kind = self.unconfirmed.swap_remove(i).kind;
        self.announced = match (kind, self.announced) {
            (ControlKind::HalfClose(_), Announced::HalfClose { .. }) => {
                Announced::HalfClose { confirmed: true }
            }
            (ControlKind::Close(_), _) => Announced::Close { confirmed: true },
            (_, announced) => announced,
        };
        self.advance_close(now);
    }

    // ---------------------------------------------------------------- timers and output

    /// When [`handle_timeout`](Self::handle_timeout) must next run, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retransmit = self.unconfirmed.iter().map(|m| m.due).min();
        let req_ack = self.wants_ack().then_some(self.next_req_ack).flatten();
        let give_up = self.give_up_at();
        [retransmit, req_ack, give_up].into_iter().flatten().min()
    }

    /// Runs the timers due at `now`: retransmissions, acknowledgement requests, giving up.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut i = 0;
        while let Some(m) = self.unconfirmed.get_mut(i) {
            if m.due > now {
                i += 1;
                continue;
            }
            // A CLOSE is given up on only once every byte is acknowledged and the session
            // is connected: until then the peer still needs its total.
            let farewell = match m.kind {
                ControlKind::Close(_) => self.connected && self.buf.is_empty(),
                ControlKind::Reset => true,
                _ => false,
            };
            if farewell && m.attempts >= FAREWELL_ATTEMPTS {
                let m = self.unconfirmed.swap_remove(i);
                log::debug!(
                    "session {}: {:?} never confirmed; giving up",
                    self.cid,
                    m.kind
                );
                if matches!(m.kind, ControlKind::Close(_)) {
                    self.announced = Announced::Close { confirmed: true };
                }
                continue;
            }
            m.attempts += 1;
            m.interval = (m.interval * 2).min(RETRANSMIT_MAX);
            m.due = now + m.interval;
            let msg = ControlMessage {
                cid: self.cid,
                from_server: self.role == Role::Server,
                id: m.id,
                kind: m.kind,
            };
            self.outbox.push_back(msg);
            i += 1;
        }
        if self.wants_ack() && self.next_req_ack.is_some_and(|t| t <= now) {
            self.request_ack(now);
        }
        if self.give_up_at().is_some_and(|t| now >= t) {
            let limit = self.limits.give_up_after.unwrap_or_default();
            let message = format!("no connection for {limit:?}: gave up on the session");
            self.abort(io::ErrorKind::TimedOut, message, now);
        }
    }

    /// When the session gives up, if it is disconnected and has a limit (one too far in
    /// the future to represent is no limit).
    fn give_up_at(&self) -> Option<Instant> {
        let since = self.disconnected_since?;
        let limit = self.limits.give_up_after?;
        if self.fatal.is_some() {
            return None;
        }
        since.checked_add(limit)
    }

    /// The next control datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<ControlMessage> {
        self.outbox.pop_front()
    }

    fn wants_ack(&self) -> bool {
        !self.buf.is_empty()
            && !self.peer_closed
            && self.fatal.is_none()
            && (self.writer_blocked_since.is_some() || self.write_shut.is_some())
    }

    fn request_ack(&mut self, now: Instant) {
        self.ack_sent = self.received;
        self.send_unreliable(ControlKind::ReqAck(to_wire(self.received)), 0);
        self.next_req_ack = Some(now + REQ_ACK_INTERVAL);
    }

    fn send_ack(&mut self) {
        self.ack_sent = self.received;
        self.send_unreliable(ControlKind::Ack(to_wire(self.received)), 0);
    }

    /// Queues a message that is sent once (an ACK, a REQ_ACK or a CONF).
    fn send_unreliable(&mut self, kind: ControlKind, id: u16) {
        self.outbox.push_back(ControlMessage {
            cid: self.cid,
            from_server: self.role == Role::Server,
            id,
            kind,
        });
    }

    /// Queues a message that is retransmitted until confirmed.
    fn send_reliable(&mut self, kind: ControlKind, now: Instant) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.unconfirmed.push(Unconfirmed {
            id,
            kind,
            due: now + RETRANSMIT_INITIAL,
            interval: RETRANSMIT_INITIAL,
            attempts: 0,
        });
        self.outbox.push_back(ControlMessage {
            cid: self.cid,
            from_server: self.role == Role::Server,
            id,
            kind,
        });
    }

    // ---------------------------------------------------------------- status

    /// A snapshot for the application.
    pub fn status(&self, now: Instant) -> Status {
        let state = if self.fatal.is_some() || self.is_finished() {
            SessionState::Closed
        } else if self.write_shut.is_some() || self.closed {
            SessionState::Closing
        } else if !self.connected {
            SessionState::Reconnecting
        } else {
            SessionState::Connected
        };
        let age = |since: Option<Instant>| since.map(|t| now.saturating_duration_since(t));
        Status {
            state,
            bytes_written: self.buf.end(),
            bytes_read: self.received,
            unacknowledged: self.buf.len() as u64,
            oldest_unacknowledged: age(self.unacked_since.front().map(|&(_, t)| t)),
            blocked_read: age(self.reader_blocked_since),
            blocked_write: age(self.writer_blocked_since),
            reconnections: self.reconnections,
            last_failure: self.last_failure.clone(),
        }
    }

    /// Temporary alias while the core is being split (see the next commits).
    pub fn fail(&mut self, e: crate::error::Error) {
        self.fail_old(e.kind(), e.to_string())
    }
    /// Temporary alias while the core is being split (see the next commits).
    pub fn reset(&mut self, e: crate::error::Error, now: Instant) {
        self.abort(e.kind(), e.to_string(), now)
    }
    /// Temporary alias while the core is being split (see the next commits).
    pub fn handle_resume_refused(&mut self, e: crate::error::Error) {
        self.resume_refused(e.to_string())
    }
}
