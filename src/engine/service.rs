//! Servicing sessions: the engine takes a session in, looks at it whenever its timers
//! fire or its duties change (runs the core's timers, starts a reconnection when the
//! core's `Redial` says so, moves control datagrams to TCP when UDP does not get
//! through), and frees it when the core says it is finished.

use std::time::Instant;

use mio::Token;

use super::handshakes::Handshake;
use super::{Engine, Entry, Side};
use crate::core::earliest;
use crate::core::endpoint::redial::Plan;

impl Engine {
    /// Adds a session to the engine and looks at it.
    pub(super) fn adopt(&mut self, id: Token, entry: Entry) {
        self.sessions.insert(id, entry);
        self.service(id);
    }

    /// Looks at session `id`: runs its timers, frees it when finished, starts a
    /// reconnection when one is due, and sets its next deadline.
    pub(super) fn service(&mut self, id: Token) {
        let now = Instant::now();
        let Some(entry) = self.sessions.get_mut(&id) else {
            return;
        };
        if let (Side::Client(_), Some(local)) = (&entry.side, entry.shared.connected_from()) {
            if !self.local_addrs.present(local, now) {
                // The host left the network the connection was on: reconnect from where it
                // is now rather than wait for the silence limit.
                let epoch = entry.shared.epoch();
                entry
                    .shared
                    .connection_failed(epoch, &format!("the local address {} is gone", local.ip()));
            }
        }
        let duties = entry.shared.duties();
        if duties.finished {
            self.finish(id);
            return;
        }
        let next = duties.timeout;
        let mut plan = Plan::Wait(None);
        let mut tcp_control = None;
        match &mut entry.side {
            Side::Server { .. } => {}
            Side::Client(redial) if duties.needs_connection => {
                let handshakes = &self.handshakes;
                let heard = duties.heard_since_disconnected;
                plan = redial.plan(heard, duties.last_heard, now, |token| {
                    matches!(handshakes.get(&token), Some(Handshake::Client(d)) if d.connecting())
                });
            }
            Side::Client(redial) => {
                if duties.datagrams_missing {
                    let cid = entry.route.cid;
                    tcp_control = entry
                        .shared
                        .control_peer()
                        .map(|udp| (udp, redial.addr(), cid));
                }
            }
        }
        if let Some((udp, tcp, cid)) = tcp_control {
            self.use_tcp_control(udp, tcp, cid);
        }
        match plan {
            Plan::Wait(at) => self.timers.set(id, earliest(next, at)),
            Plan::Dial => {
                self.timers.set(id, next);
                self.redial(id);
            }
            Plan::Restart(stale) => {
                log::debug!("session {id:?}: the server answers again; a new attempt");
                self.timers.set(id, next);
                self.drop_handshake(stale);
                self.redial(id);
            }
        }
        if duties.send_held {
            self.flush(id);
        }
    }

    /// Frees session `id`: its routes, its listener slot, its reconnection, its resend.
    pub(super) fn finish(&mut self, id: Token) {
        let Some(entry) = self.sessions.remove(&id) else {
            return;
        };
        self.timers.set(id, None);
        self.routes.remove(&entry.route, id);
        self.unwatch(entry.flush_watch);
        match entry.side {
            Side::Server { listener } => {
                let (cid, knows) = (entry.shared.cid(), entry.shared.peer_knows_cid());
                self.forget_session(listener, cid, knows);
            }
            Side::Client(redial) => {
                if let Some(dial) = redial.dialing() {
                    self.drop_handshake(dial);
                }
            }
        }
        entry.shared.finish();
    }
}
