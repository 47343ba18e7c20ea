//! Attackers: one off the path, replaying what it captured from a victim's address; and
//! one holding its own session's keys (anyone may open a session), forging authentic
//! datagrams from a victim's address, guessing path challenges, and offering the server
//! reconnections it never confirms.

use std::net::SocketAddr;
use std::time::Duration;

use robust_tcp::protocol::control::{ControlKind, ControlMessage, MAX_LEN};
use robust_tcp::protocol::counter::to_wire;
use robust_tcp::protocol::handshake::Hello;

use crate::world::{World, SERVER_CONTROL, VICTIM};

/// Packet numbers the key-holding attacker forges from: far above its session's own.
pub const FORGED_PACKETS: u64 = 1 << 40;
/// Attempt numbers the key-holding attacker offers from: far above its session's own.
pub const FORGED_ATTEMPTS: u64 = 1 << 20;

impl World {
    /// Replays captured datagrams from the victim's address to where they went.
    pub fn replay_from_victim(&mut self, count: usize) {
        for _ in 0..count {
            let n = self.datagrams.captured.len() as u64;
            if n == 0 {
                return;
            }
            let k = self.rng.below(n) as usize;
            let Some((_, to, bytes)) = self.datagrams.captured.get(k).cloned() else {
                return;
            };
            let from = SocketAddr::new(VICTIM, 1000 + self.rng.below(1000) as u16);
            self.datagrams.inject(self.now, from, to, bytes);
        }
    }

    /// Attacker `i` sends one authentic datagram "from" the victim, then answers the
    /// challenges it guesses the server sent there: RESPONSE(0), RESPONSE(1), ...
    pub fn spoof_path(&mut self, i: usize) {
        let c = &self.clients[i];
        if c.cid == 0 {
            return;
        }
        let from = SocketAddr::new(VICTIM, 5000);
        let received = to_wire(c.session.received());
        let mut forged = Vec::new();
        for k in 0..17u64 {
            let kind = match k {
                0 => ControlKind::Ack(received),
                k => ControlKind::Response(k - 1),
            };
            let msg = ControlMessage {
                cid: c.cid,
                from_server: false,
                id: 0,
                kind,
            };
            let mut buf = [0; MAX_LEN];
            let n = msg.seal(FORGED_PACKETS + self.forged, &c.keys.control.send, &mut buf);
            self.forged += 1;
            forged.push(buf[..n].to_vec());
        }
        for bytes in forged {
            self.datagrams.inject(self.now, from, SERVER_CONTROL, bytes);
        }
    }

    /// Attacker `i` offers the server reconnections of its session, each with a fresh
    /// attempt number and a valid tag, and never confirms one.
    pub fn flood_offers(&mut self, i: usize, count: usize) {
        if self.clients[i].cid == 0 {
            return;
        }
        for _ in 0..count {
            let addr = self.clients[i].addr;
            let conn = self.connect(i, addr, Duration::ZERO);
            let c = &self.clients[i];
            let attempt = FORGED_ATTEMPTS + self.forged;
            self.forged += 1;
            let received = to_wire(c.session.received());
            let key = &c.keys.handshake.client;
            let hello = Hello::resume(c.cid, self.rng.bytes(), attempt, received, key);
            self.conns[conn].send_up(self.now, &hello.encode());
            self.conns[conn].client_done = true;
        }
    }
}
