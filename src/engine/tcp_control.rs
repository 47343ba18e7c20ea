//! Control datagrams over TCP, for networks where UDP does not get through (a firewall
//! that drops it, a server reachable only through one forwarded TCP port).
//!
//! A client whose sessions hear no control datagram from a server while their TCP
//! connections work opens one more TCP connection to the server's address, sends a
//! CONTROL frame on it, and from then on sends every control datagram for that server on
//! it; the server answers on it. One such connection per client process and server: the
//! datagrams are the same bytes as on UDP, with the same authentication, each after its
//! 2-byte length, and the data connections keep their single-copy read path (see
//! `docs/PROTOCOL.md`, "Control over TCP").

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Token};

use super::{Engine, ROUND_BUDGET};
use crate::core::control::{MAX_LEN, MIN_LEN};
use crate::core::handshake::Control;
use crate::core::session::Role;

/// How long a control connection may go without an authentic datagram before it is
/// closed: a live session's heartbeats cross it every second or so (every third of its
/// `dead_after`), so one this quiet serves nobody. A client opens it again when needed.
const IDLE: Duration = Duration::from_secs(60);
/// How soon a server's control connection must carry its first authentic datagram: a
/// client opens one only to send on it at once.
const FIRST_DATAGRAM_WITHIN: Duration = Duration::from_secs(5);
/// A client's control connection that has carried nothing authentic for this long while
/// its sessions miss their datagrams is dead (its local address went away with a change
/// of network, a middlebox dropped its state: Linux reports nothing on it until TCP gives
/// up, minutes later), and is replaced. A working one carries the answers to the
/// sessions' heartbeats, about one a second.
const DEAD_AFTER: Duration = Duration::from_secs(2);

/// The most a connection queues for sending; past it, datagrams are dropped, as UDP
/// drops them when the path is congested (the protocol copes with loss).
const OUTBOX_LIMIT: usize = 64 * 1024;
/// Each datagram's length prefix.
const LENGTH_LEN: usize = 2;

/// A destination whose control datagrams go over a TCP control connection: a client's
/// server (its UDP control address), or a server's client (the connection's peer address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TcpRoute {
    /// Our role in the sessions whose datagrams go there.
    pub(crate) role: Role,
    /// The destination.
    pub(crate) peer: SocketAddr,
}

/// One control connection, at either end.
#[derive(Debug)]
pub(crate) struct TcpControl {
    pub(crate) stream: TcpStream,
    /// The address the datagrams it carries come from, as the sessions see it: the
    /// peer's address on the connection.
    pub(crate) peer: SocketAddr,
    /// The destination whose datagrams it carries.
    pub(crate) route: TcpRoute,
    /// The listener it came in on (a server).
    pub(crate) listener: Option<mio::Token>,
    /// When it last carried an authentic datagram, if it has.
    pub(crate) last_authentic: Option<Instant>,
    /// When it opened.
    opened: Instant,
    inbox: Vec<u8>,
    outbox: Vec<u8>,
}

impl TcpControl {
    /// A control connection; `first` is queued before any datagram (the client's CONTROL
    /// frame).
    pub(crate) fn new(
        stream: TcpStream,
        peer: SocketAddr,
        route: TcpRoute,
        listener: Option<mio::Token>,
        first: &[u8],
        now: Instant,
    ) -> Self {
        TcpControl {
            stream,
            peer,
            route,
            listener,
            last_authentic: None,
            opened: now,
            inbox: Vec::new(),
            outbox: first.to_vec(),
        }
    }

    /// Queues one datagram (dropped if the connection is that far behind) and sends what
    /// the connection takes now.
    pub(crate) fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        let Ok(len) = u16::try_from(datagram.len()) else {
            return Ok(());
        };
        if self.outbox.len() + LENGTH_LEN + datagram.len() <= OUTBOX_LIMIT {
            self.outbox.extend_from_slice(&len.to_be_bytes());
            self.outbox.extend_from_slice(datagram);
        }
        self.flush()
    }

    /// Sends what is queued, as far as the connection takes it without blocking.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        while !self.outbox.is_empty() {
            match self.stream.write(&self.outbox) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.outbox.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Not connected yet: the writable event that ends the connect comes.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads what the connection has and returns the whole datagrams in it, in order, at
    /// most `budget` of them; and whether the connection may hold more (then it must be
    /// read again without waiting for readiness, which edge-triggered polling would not
    /// report again).
    ///
    /// # Errors
    ///
    /// The connection failed or ended, or a length lies outside what a datagram can be
    /// (the peer does not speak this protocol): the connection is to be closed.
    pub(crate) fn receive(&mut self, budget: usize) -> io::Result<(Vec<Vec<u8>>, bool)> {
        let mut datagrams = Vec::new();
        let mut buf = [0u8; 4096];
        while datagrams.len() < budget {
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self
                    .inbox
                    .extend_from_slice(buf.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((datagrams, false)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            self.parse(&mut datagrams)?;
        }
        Ok((datagrams, true))
    }

    /// Moves the whole datagrams at the front of the inbox to `out`.
    fn parse(&mut self, out: &mut Vec<Vec<u8>>) -> io::Result<()> {
        let mut at = 0;
        while let Some(&[hi, lo]) = self.inbox.get(at..at + LENGTH_LEN) {
            let len = usize::from(u16::from_be_bytes([hi, lo]));
            if !(MIN_LEN..=MAX_LEN).contains(&len) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "not a control datagram's length",
                ));
            }
            let Some(datagram) = self.inbox.get(at + LENGTH_LEN..at + LENGTH_LEN + len) else {
                break;
            };
            out.push(datagram.to_vec());
            at += LENGTH_LEN + len;
        }
        self.inbox.drain(..at);
        Ok(())
    }
}

impl TcpControl {
    /// Whether it carried an authentic datagram, or opened, within `span` of `now`.
    fn heard_within(&self, span: Duration, now: Instant) -> bool {
        now.saturating_duration_since(self.last_authentic.unwrap_or(self.opened)) < span
    }

    /// When it is closed for carrying nothing authentic.
    fn expires(&self) -> Instant {
        match self.last_authentic {
            Some(at) => at + IDLE,
            None => self.opened + FIRST_DATAGRAM_WITHIN,
        }
    }
}

impl Engine {
    /// A client's sessions with the server whose control address is `udp` hear none of
    /// its datagrams: carries that server's control datagrams over a TCP connection to
    /// `tcp`, its session address, unless one does already. The connection names session
    /// `cid`, one of that server's, so that a balancer routes it to the instance that
    /// holds it (each instance behind one announces its own `udp`).
    pub(super) fn use_tcp_control(&mut self, udp: SocketAddr, tcp: SocketAddr, cid: u32) {
        let route = TcpRoute {
            role: Role::Client,
            peer: udp,
        };
        let now = Instant::now();
        let current = self.tcp_controls.iter().find(|(_, c)| c.route == route);
        match current.map(|(&token, c)| (token, c.heard_within(DEAD_AFTER, now))) {
            Some((_, true)) => return,
            Some((token, false)) => self.close_tcp_control(token, "it carries nothing any more"),
            None => {}
        }
        let token = self.new_token();
        let stream = TcpStream::connect(tcp).and_then(|mut stream| {
            self.poll.registry().register(
                &mut stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(stream)
        });
        match stream {
            Ok(stream) => {
                log::debug!("control datagrams for {udp} go over TCP to {tcp} from now on");
                let first = Control { cid }.encode();
                let control = TcpControl::new(stream, tcp, route, None, &first, now);
                self.adopt_tcp_control(token, control);
            }
            Err(e) => log::debug!("cannot open a control connection to {tcp}: {e}"),
        }
    }

    /// Serves a control connection: routes its destination to it, and bounds its life.
    pub(super) fn adopt_tcp_control(&mut self, token: Token, control: TcpControl) {
        if let Some(listener) = control.listener {
            self.make_room_for_tcp_control(listener);
        }
        self.handle.route_over_tcp(control.route, token);
        self.timers.set(token, Some(control.expires()));
        self.tcp_controls.insert(token, control);
        self.serve_tcp_control(token);
    }

    /// Bounds a listener's control connections to `max_handshakes`: past it, the one that
    /// carried an authentic datagram longest ago (or never) is closed.
    fn make_room_for_tcp_control(&mut self, listener: Token) {
        let cap = self
            .listeners
            .get(&listener)
            .map_or(0, |l| l.config.max_handshakes_value());
        let mine = || {
            self.tcp_controls
                .iter()
                .filter(|(_, c)| c.listener == Some(listener))
        };
        if mine().count() < cap {
            return;
        }
        let stalest = mine()
            .min_by_key(|(_, c)| c.last_authentic)
            .map(|(&t, _)| t);
        if let Some(token) = stalest {
            self.close_tcp_control(token, "too many control connections");
        }
    }

    /// Sends what a control connection has queued and reads what it brings.
    pub(super) fn serve_tcp_control(&mut self, token: Token) {
        let Some(control) = self.tcp_controls.get_mut(&token) else {
            return;
        };
        let received = control.flush().and_then(|()| control.receive(ROUND_BUDGET));
        let (datagrams, more) = match received {
            Ok(received) => received,
            Err(e) => return self.close_tcp_control(token, &e.to_string()),
        };
        let peer = control.peer;
        // Every datagram is dispatched (not `any`, which would stop at the first taken).
        let taken = datagrams.iter().filter(|d| self.dispatch(d, peer)).count();
        let authentic = taken > 0;
        if let Some(control) = self.tcp_controls.get_mut(&token) {
            if authentic {
                control.last_authentic = Some(Instant::now());
            }
        }
        if more {
            self.backlog.push(token);
        }
    }

    /// Sends one datagram on a control connection (from `EngineHandle::send_control`).
    pub(super) fn send_over_tcp(&mut self, token: Token, datagram: &[u8]) {
        let sent = match self.tcp_controls.get_mut(&token) {
            Some(control) => control.send(datagram),
            None => return,
        };
        if let Err(e) = sent {
            self.close_tcp_control(token, &e.to_string());
        }
    }

    /// A control connection's timer: closes it if it has carried nothing authentic for
    /// too long, or looks again later.
    pub(super) fn expire_tcp_control(&mut self, token: Token, now: Instant) {
        let Some(expires) = self.tcp_controls.get(&token).map(TcpControl::expires) else {
            return;
        };
        if expires <= now {
            self.close_tcp_control(token, "it carried nothing authentic for too long");
        } else {
            self.timers.set(token, Some(expires));
        }
    }

    /// Closes a control connection; its destination's datagrams go over UDP again (and a
    /// client whose sessions still hear none opens another).
    fn close_tcp_control(&mut self, token: Token, why: &str) {
        let Some(mut control) = self.tcp_controls.remove(&token) else {
            return;
        };
        log::debug!("control connection with {} closed: {why}", control.peer);
        self.timers.set(token, None);
        self.handle.unroute_tcp(control.route, token);
        let _ = self.poll.registry().deregister(&mut control.stream);
    }
}
