//! The server side: the listening socket, its acceptor thread, and the handshake of every
//! incoming TCP connection, new session (paper Fig. 3) or reconnection (Fig. 4).
//!
//! The listener lives in the acceptor thread, which outlives the `RServerSocket`: while any
//! session of the server lives, reconnections must still find the port open. New sessions
//! are refused once the `RServerSocket` is gone; the thread ends with the last session.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use super::control::{canonical, plane, ControlPlane};
use super::frames::{read_frame, wire_error, write_frame};
use super::session::{SessionSpec, Shared};
use crate::core::counter::to_wire;
use crate::core::handshake::{Answer, Confirm, FrameKind, Hello, RefusalCode};
use crate::core::session::Role;
use crate::{Config, RSocket};

/// How many handshake timeouts a new session may wait for its client's confirmation, which
/// a cut can delay until the client's first reconnection.
const CONFIRM_PATIENCE: u32 = 12;

/// A new session for `accept`, with the client's address. An `RSocket`, so that a session
/// nobody accepts closes when the queue is dropped.
pub(crate) type Accepted = (RSocket, SocketAddr);

/// What the server's threads share.
pub(crate) struct ServerCore {
    config: Config,
    local_addr: SocketAddr,
    plane: Arc<ControlPlane>,
    sessions: Mutex<Sessions>,
    accepted: Sender<Accepted>,
}

struct Sessions {
    /// Whether the `RServerSocket` still exists (new sessions are welcome). Under the same
    /// lock as the table, so that no session is added once the acceptor decided to stop.
    open: bool,
    by_cid: HashMap<u32, Arc<Shared>>,
    /// The next CID to hand out; starts at a random value (paper 3.1).
    next_cid: u32,
}

/// Binds the listener and starts the acceptor thread.
pub(crate) fn bind(
    addrs: &[SocketAddr],
    config: Config,
) -> io::Result<(Arc<ServerCore>, Receiver<Accepted>)> {
    config.validate()?;
    let plane = plane()?;
    let listener = TcpListener::bind(addrs)?;
    let local_addr = listener.local_addr()?;
    let (accepted, accept_queue) = crossbeam_channel::unbounded();
    let core = Arc::new(ServerCore {
        config,
        local_addr,
        plane,
        sessions: Mutex::new(Sessions {
            open: true,
            by_cid: HashMap::new(),
            next_cid: random_u32()?,
        }),
        accepted,
    });
    let acceptor = Arc::clone(&core);
    thread::Builder::new()
        .name(format!("robust-tcp-accept-{}", local_addr.port()))
        .spawn(move || acceptor.run(listener))?;
    Ok((core, accept_queue))
}

impl ServerCore {
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The `RServerSocket` is gone: refuse new sessions; stop once no session is left.
    pub(crate) fn close(&self) {
        self.sessions.lock().open = false;
        self.wake_if_done();
    }

    fn done(&self) -> bool {
        let sessions = self.sessions.lock();
        !sessions.open && sessions.by_cid.is_empty()
    }

    /// Wakes the acceptor (blocked in `accept`) so that it sees it is done.
    fn wake_if_done(&self) {
        if self.done() {
            let ip = match self.local_addr.ip() {
                IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                ip => ip,
            };
            let _ = TcpStream::connect_timeout(
                &SocketAddr::new(ip, self.local_addr.port()),
                self.config.handshake_timeout_value(),
            );
        }
    }

    fn run(self: Arc<Self>, listener: TcpListener) {
        for stream in listener.incoming() {
            if self.done() {
                break;
            }
            match stream {
                Ok(stream) => {
                    let core = Arc::clone(&self);
                    let spawned = thread::Builder::new()
                        .name("robust-tcp-handshake".into())
                        .stack_size(128 * 1024)
                        .spawn(move || core.handshake(stream));
                    if let Err(e) = spawned {
                        log::warn!("no thread for a handshake: {e}");
                    }
                }
                Err(e) => log::debug!("accept on {}: {e}", self.local_addr),
            }
        }
        log::debug!("server on {} stopped listening", self.local_addr);
    }

    fn handshake(self: Arc<Self>, stream: TcpStream) {
        let timeout = self.config.handshake_timeout_value();
        let prepared = stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .and_then(|()| stream.peer_addr());
        let client = match prepared {
            Ok(addr) => canonical(addr),
            Err(e) => return log::debug!("handshake: {e}"),
        };
        let hello = read_frame(&stream, FrameKind::Hello)
            .and_then(|body| Hello::parse(&body).map_err(super::frames::invalid));
        let result = match hello {
            Ok(hello) if hello.cid == 0 => self.open_session(stream, client, hello),
            Ok(hello) => self.resume_session(stream, client, hello),
            Err(e) => {
                if wire_error(&e).is_some() {
                    Self::turn_away(&stream);
                }
                Err(e)
            }
        };
        if let Err(e) = result {
            log::debug!("handshake with {client}: {e}");
        }
    }

    /// Tells a peer that does not speak robust-tcp what it reached, and closes cleanly:
    /// closing with its bytes unread would make the kernel send a reset, which can
    /// destroy our answer before the peer reads it. The drain is bounded by the stream's
    /// handshake timeout and by size.
    fn turn_away(stream: &TcpStream) {
        if Self::refuse(stream, RefusalCode::BadRequest).is_ok()
            && stream.shutdown(std::net::Shutdown::Write).is_ok()
        {
            let mut rest = io::Read::take(stream, 64 * 1024);
            let _ = io::copy(&mut rest, &mut io::sink());
        }
    }

    fn refuse(stream: &TcpStream, reason: RefusalCode) -> io::Result<()> {
        log::debug!("refusing {:?}: {reason:?}", stream.peer_addr());
        write_frame(stream, &Answer::Refused(reason).encode())
    }

    fn open_session(
        self: &Arc<Self>,
        stream: TcpStream,
        client: SocketAddr,
        hello: Hello,
    ) -> io::Result<()> {
        let token = random_u64()?;
        let peer_control = SocketAddr::new(client.ip(), hello.control_port);
        let (shared, woken) = {
            let mut sessions = self.sessions.lock();
            if !sessions.open {
                drop(sessions);
                return Self::refuse(&stream, RefusalCode::Closed);
            }
            if sessions.by_cid.len() >= self.config.max_sessions_value() {
                drop(sessions);
                return Self::refuse(&stream, RefusalCode::TooManySessions);
            }
            let Some(cid) = sessions.allocate() else {
                drop(sessions);
                return Self::refuse(&stream, RefusalCode::TooManySessions);
            };
            let spec = SessionSpec {
                role: Role::Server,
                cid,
                token,
                epoch: 0,
                peer_control,
                config: self.config.clone(),
            };
            let Some((shared, woken)) = Shared::new(spec, Arc::clone(&self.plane)) else {
                drop(sessions);
                return Self::refuse(&stream, RefusalCode::TooManySessions);
            };
            sessions.by_cid.insert(cid, Arc::clone(&shared));
            (shared, woken)
        };
        let cid = shared.cid();
        // `Config::validate` bounds the handshake timeout, so this cannot overflow.
        let patience = self.config.handshake_timeout_value() * CONFIRM_PATIENCE;
        shared.lock().unconfirmed_until = Some(Instant::now() + patience);
        let me = Arc::clone(self);
        shared.set_on_finish(Box::new(move || me.forget(cid)));
        shared.spawn_driver(woken, None)?;
        let answer = Answer::Accepted {
            cid,
            token,
            control_port: self.plane.port(),
            received: 0,
            epoch: 0,
        };
        let confirmed = write_frame(&stream, &answer.encode())
            .and_then(|()| read_frame(&stream, FrameKind::Confirm))
            .and_then(|body| Confirm::parse(&body).map_err(super::frames::invalid));
        match confirmed {
            Ok(c) if c.cid == cid => {
                if shared.take_confirmation(stream) {
                    self.deliver(&shared, client);
                }
                Ok(())
            }
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "confirmation for another session",
            )),
            Err(e) => {
                // The client may have the CID; if so its reconnection confirms the session.
                shared.connection_failed(0, &e.to_string());
                Err(e)
            }
        }
    }

    fn resume_session(
        &self,
        stream: TcpStream,
        client: SocketAddr,
        hello: Hello,
    ) -> io::Result<()> {
        let shared = self.sessions.lock().by_cid.get(&hello.cid).cloned();
        let Some(shared) = shared.filter(|s| s.token() == hello.token) else {
            return Self::refuse(&stream, RefusalCode::UnknownSession);
        };
        // Check before touching the live connection: a bad attempt must leave it alone.
        if !shared.lock().core.may_resume(hello.received) {
            return Self::refuse(&stream, RefusalCode::BadRequest);
        }
        let turn = shared.handover();
        shared.abort_current("the client reconnected");
        let quiesced = shared.quiesce();
        let (peer_received, received, epoch, confirming) = {
            let mut st = shared.lock();
            let confirming = st.unconfirmed_until.take().is_some();
            let peer_received = st.core.check_resume(hello.received);
            (
                peer_received,
                st.core.received(),
                st.core.epoch().wrapping_add(1),
                confirming,
            )
        };
        let Some(peer_received) = peer_received else {
            return Self::refuse(&stream, RefusalCode::BadRequest);
        };
        let answer = Answer::Accepted {
            cid: shared.cid(),
            token: shared.token(),
            control_port: self.plane.port(),
            received: to_wire(received),
            epoch,
        };
        write_frame(&stream, &answer.encode())?;
        let peer_control = SocketAddr::new(client.ip(), hello.control_port);
        shared.resume(
            quiesced,
            stream,
            epoch,
            peer_received,
            Some(peer_control),
            Some(turn),
        );
        if confirming {
            self.deliver(&shared, client);
        }
        Ok(())
    }

    /// Hands a confirmed session to `accept`.
    fn deliver(&self, shared: &Arc<Shared>, client: SocketAddr) {
        // If the server socket is gone, the returned session is dropped here and closes.
        let _ = self
            .accepted
            .send((RSocket::from_shared(Arc::clone(shared)), client));
    }

    /// A session ended: free its slot.
    fn forget(&self, cid: u32) {
        self.sessions.lock().by_cid.remove(&cid);
        self.wake_if_done();
    }
}

impl Sessions {
    /// The next free CID, never 0.
    fn allocate(&mut self) -> Option<u32> {
        for _ in 0..1024 {
            let cid = self.next_cid;
            self.next_cid = self.next_cid.wrapping_add(1);
            if cid != 0 && !self.by_cid.contains_key(&cid) {
                return Some(cid);
            }
        }
        None
    }
}

fn random_u32() -> io::Result<u32> {
    let mut b = [0u8; 4];
    getrandom::getrandom(&mut b).map_err(io::Error::other)?;
    Ok(u32::from_be_bytes(b))
}

fn random_u64() -> io::Result<u64> {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).map_err(io::Error::other)?;
    Ok(u64::from_be_bytes(b))
}
