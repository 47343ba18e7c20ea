//! An off-path attacker against a live session on loopback (`docs/SECURITY.md`'s threat
//! model), shared by `tests/attacker` and `tests/eavesdropper.rs`: what it records of the
//! session's traffic from a packet capture ([`crate::capture`]), and what it forges and
//! replays from that.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};

use robust_tcp::protocol::auth::{SessionKeys, NONCE_LEN, TAG_LEN};
use robust_tcp::protocol::control::{ControlKind, ControlMessage, MAX_LEN};
use robust_tcp::protocol::handshake::{Answer, FrameHeader, FrameKind, Hello, HEADER_LEN};
use std::time::Duration;

use crate::capture::{Packet, Proto};
use crate::rng::Rng;

/// How long the attacker waits for an answer, or for bytes after one.
pub const READ_BOUND: Duration = Duration::from_secs(5);

/// What the attacker did and saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Control datagrams forged.
    pub forged_datagrams: usize,
    /// Captured control datagrams replayed.
    pub replayed_datagrams: usize,
    /// Captured reconnection HELLOs replayed.
    pub hello_replays: usize,
    /// Of those, the ones the server answered (each then followed by a captured CONFIRM).
    pub hello_replays_answered: usize,
    /// Reconnection HELLOs forged for the real CID.
    pub forged_hellos: usize,
    /// Captured opening HELLOs replayed.
    pub opening_replays: usize,
    /// Cuts of the victim's connection during the attack.
    pub cuts: usize,
}

/// The attacker's view of the traffic.
pub struct Recording {
    /// The control datagrams captured.
    pub datagrams: Vec<Vec<u8>>,
    /// The reconnection HELLO frames captured.
    pub resume_hellos: Vec<Vec<u8>>,
    /// The opening HELLO frames captured.
    pub opening_hellos: Vec<Vec<u8>>,
    /// The CONFIRM frames captured.
    pub confirms: Vec<Vec<u8>>,
    /// The client nonces that accepting ANSWERs echoed: which HELLOs the server has seen.
    pub answered: Vec<[u8; NONCE_LEN]>,
    /// The server's control port, once an ANSWER named it.
    pub control_port: Option<u16>,
}

impl Recording {
    /// The reconnection HELLOs whose fate is settled: the server answered one of their
    /// session with the same or a higher attempt number, so it has seen them or never
    /// will. An off-path attacker replays only those; a HELLO still on its way is what an
    /// on-path attacker would race (`docs/SECURITY.md`, "Not protected").
    pub fn settled_hellos(&self) -> Vec<Vec<u8>> {
        let parsed: Vec<Hello> = self
            .resume_hellos
            .iter()
            .map(|f| Hello::parse(&f[HEADER_LEN..]).expect("a captured hello"))
            .collect();
        let answered_up_to = |cid: u32| {
            parsed
                .iter()
                .filter(|h| h.cid == cid && self.answered.contains(&h.nonce))
                .map(|h| h.attempt)
                .max()
        };
        self.resume_hellos
            .iter()
            .zip(&parsed)
            .filter(|(_, h)| answered_up_to(h.cid).is_some_and(|a| h.attempt <= a))
            .map(|(f, _)| f.clone())
            .collect()
    }
}

/// Sorts captured payloads: control datagrams (between the victim process's control
/// port, which an ANSWER names, and itself: client and server share the process) and
/// handshake frames.
pub fn recording(packets: &[Packet]) -> Recording {
    let mut r = Recording {
        datagrams: Vec::new(),
        resume_hellos: Vec::new(),
        opening_hellos: Vec::new(),
        confirms: Vec::new(),
        answered: Vec::new(),
        control_port: None,
    };
    for p in packets.iter().filter(|p| p.proto == Proto::Tcp) {
        let frame = &p.payload;
        let kind = (frame.len() >= HEADER_LEN && frame.starts_with(b"RTCP"))
            .then(|| FrameHeader::parse(frame[..HEADER_LEN].try_into().unwrap()).ok())
            .flatten();
        let Some(header) = kind else { continue };
        let Some(whole) = frame.get(..HEADER_LEN + header.body_len) else {
            continue;
        };
        match header.kind {
            FrameKind::Hello => {
                // The capture sees all of `lo`: other processes' frames (a fuzzer's, say)
                // need not parse. Kept frames do, which the parses below rely on.
                let Ok(hello) = Hello::parse(&whole[HEADER_LEN..]) else {
                    continue;
                };
                let list = if hello.cid == 0 {
                    &mut r.opening_hellos
                } else {
                    &mut r.resume_hellos
                };
                if !list.iter().any(|h| h == whole) {
                    list.push(whole.to_vec());
                }
            }
            FrameKind::Answer => {
                if let Ok(Answer::Accepted(a)) = Answer::parse(&whole[HEADER_LEN..]) {
                    r.control_port = Some(a.control_port);
                    r.answered.push(a.client_nonce);
                }
            }
            FrameKind::Confirm => r.confirms.push(whole.to_vec()),
            // Control over TCP is not used on loopback, where UDP gets through.
            FrameKind::Control => {}
        }
    }
    if let Some(port) = r.control_port {
        r.datagrams = packets
            .iter()
            .filter(|p| p.proto == Proto::Udp && p.dst.port() == port && p.src.port() == port)
            .map(|p| p.payload.clone())
            .collect();
    }
    r
}

/// The attacker: its own sockets, its own randomness.
pub struct Attacker {
    /// The server's TCP address.
    pub server: SocketAddr,
    /// The server's control address.
    pub control: SocketAddr,
    /// The victim session's CID.
    pub cid: u32,
    /// Its own UDP socket.
    pub udp: UdpSocket,
    /// Its own randomness.
    pub rng: Rng,
    /// Keys of a session of its own: well-formed tags, wrong keys.
    pub stranger: SessionKeys,
    /// What it did so far.
    pub tally: Tally,
}

impl Attacker {
    /// The next forged control datagram, in turn of every kind and forgery (a random
    /// CID, the real CID with a wrong tag, a captured one with an old packet number, a
    /// wrong length, another session's key).
    pub fn forged_datagram(&mut self, captured: &[Vec<u8>]) -> Vec<u8> {
        let n = self.tally.forged_datagrams;
        let kind = match n % 7 {
            0 => ControlKind::Ack(self.rng.next_u64() as u32),
            1 => ControlKind::ReqAck {
                received: self.rng.next_u64() as u32,
                sent: self.rng.next_u64() as u32,
            },
            2 => ControlKind::Close(self.rng.range(0, 4095) as u32),
            3 => ControlKind::HalfClose(self.rng.range(0, 4095) as u32),
            4 => ControlKind::Reset,
            5 => ControlKind::Conf,
            _ => ControlKind::Reconnect(self.rng.range(0, 63) as u32),
        };
        let cid = if n % 3 == 0 {
            self.rng.next_u64() as u32
        } else {
            self.cid
        };
        let msg = ControlMessage {
            cid,
            from_server: self.rng.chance(50),
            id: self.rng.next_u64() as u16,
            kind,
        };
        let mut buf = [0u8; MAX_LEN];
        let len = msg.seal(self.rng.next_u64(), &self.stranger.control.send, &mut buf);
        let mut d = buf[..len].to_vec();
        match (n / 7) % 4 {
            // A guessed tag.
            0 => {
                for b in &mut d[len - TAG_LEN..] {
                    *b = self.rng.next_u64() as u8;
                }
            }
            // A captured genuine datagram with an old packet number (its tag then fails).
            1 if !captured.is_empty() => {
                d = captured[self.rng.range(0, captured.len() as u64 - 1) as usize].clone();
                d[8..16].copy_from_slice(&0u64.to_be_bytes());
            }
            // A genuine datagram cut short or lengthened.
            2 if !captured.is_empty() => {
                d = captured[self.rng.range(0, captured.len() as u64 - 1) as usize].clone();
                if self.rng.chance(50) {
                    d.truncate(d.len() - 4);
                } else {
                    d.extend_from_slice(&[0; 4]);
                }
            }
            // Tagged with another session's key.
            _ => {}
        }
        d
    }

    /// Sends `d` to the server's control address.
    pub fn send_datagram(&self, d: &[u8]) {
        self.udp.send_to(d, self.control).expect("send a datagram");
    }

    /// Sends `frame` on a connection of its own to the server and reads the answer; if it
    /// accepts, follows with `confirm` and checks that nothing more comes.
    pub fn handshake(&self, frame: &[u8], confirm: Option<&[u8]>) -> Answer {
        let mut conn = TcpStream::connect(self.server).expect("connect to the server");
        conn.set_read_timeout(Some(READ_BOUND))
            .expect("set_read_timeout");
        conn.write_all(frame).expect("send a hello");
        let answer = read_answer(&mut conn);
        if let (Answer::Accepted(_), Some(confirm)) = (&answer, confirm) {
            // The server may have closed already: a failed write is fine.
            let _ = conn.write_all(confirm);
            let _ = conn.shutdown(Shutdown::Write);
            let mut rest = Vec::new();
            match conn.read_to_end(&mut rest) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
                Err(e) => panic!("reading after a replayed hello's answer: {e}"),
            }
            assert!(
                rest.is_empty(),
                "the attacker received {} bytes after an answer: {:02x?}",
                rest.len(),
                &rest[..rest.len().min(64)]
            );
        }
        answer
    }

    /// The next forged reconnection HELLO for the real CID: a random nonce, attempt
    /// numbers far above and below any real one, tagged under another session's key or
    /// with a random tag.
    pub fn forged_hello(&mut self) -> Vec<u8> {
        let nonce = std::array::from_fn(|_| self.rng.next_u64() as u8);
        // Attempt numbers from far above any real one down to 1, counts in and out of
        // the window.
        let attempt = match self.tally.forged_hellos % 3 {
            0 => u64::MAX - self.tally.forged_hellos as u64,
            1 => 1 + self.tally.forged_hellos as u64,
            _ => self.rng.next_u64(),
        };
        let received = self.rng.next_u64() as u32;
        let key = &self.stranger.handshake.client;
        let mut hello = Hello::resume(self.cid, nonce, attempt, received, key);
        if self.rng.chance(50) {
            hello.tag = std::array::from_fn(|_| self.rng.next_u64() as u8);
        }
        hello.encode().to_vec()
    }
}

/// Reads one ANSWER frame.
///
/// # Panics
///
/// If the connection fails or ends first, or the frame is no ANSWER.
pub fn read_answer(conn: &mut TcpStream) -> Answer {
    let mut header = [0u8; HEADER_LEN];
    conn.read_exact(&mut header).expect("read an answer header");
    let header = FrameHeader::parse(&header).expect("an answer header");
    assert_eq!(header.kind, FrameKind::Answer);
    let mut body = vec![0u8; header.body_len];
    conn.read_exact(&mut body).expect("read an answer body");
    Answer::parse(&body).expect("an answer")
}
