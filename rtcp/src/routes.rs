//! Where `rtcp server` relays a session: what its request header asks for, to the
//! `--forward` target or to a SOCKS target its `--allow` list lets through.

use std::net::{SocketAddr, TcpStream};

use robust_tcp::RSocket;

use crate::addr;
use crate::allow::Allow;
use crate::request::{self, Request};
use crate::socks::Reply;

/// The server's targets.
pub struct Routes {
    /// The `--forward` target: as given, and resolved.
    pub forward: Option<(String, Vec<SocketAddr>)>,
    /// The `--allow` list (empty: every CONNECT is refused).
    pub allow: Allow,
}

impl Routes {
    /// Reads `session`'s request and connects to its target: the connection and the
    /// target's name. On failure, logs why (naming the session `what`), and answers a
    /// CONNECT with its reply or resets the session; the caller then drops it.
    pub fn open(&self, session: &RSocket, what: &str) -> Option<(TcpStream, String)> {
        let _ = session.set_read_timeout(Some(request::HEADER_LIMIT));
        let request = Request::read_from(&mut &*session);
        let _ = session.set_read_timeout(None);
        let (target, addrs, connect) = match request {
            Ok(Request::Forward) => {
                let Some((forward, addrs)) = &self.forward else {
                    log::warn!("{what}: asks for the --forward target, and this server has none (only --allow); session reset");
                    let _ = session.abort();
                    return None;
                };
                (forward.clone(), addrs.clone(), false)
            }
            Ok(Request::Connect(target)) => {
                match self.allow.addresses(&target, |name, port| {
                    addr::resolve(&format!("{name}:{port}"))
                }) {
                    Ok(addrs) => (target.to_string(), addrs, true),
                    Err(refusal) => {
                        log::warn!("{what}: {}; {}", refusal.why, refusal.reply);
                        let _ = request::write_reply(&mut &*session, refusal.reply);
                        return None;
                    }
                }
            }
            Err(e) => {
                log::warn!("{what}: {e}; session reset");
                let _ = session.abort();
                return None;
            }
        };
        match addr::connect(&addrs) {
            Ok(stream) => {
                if connect {
                    if let Err(e) = request::write_reply(&mut &*session, Reply::Succeeded) {
                        log::warn!("{what}: cannot answer: {e}");
                        return None;
                    }
                }
                Some((stream, target))
            }
            Err(e) if connect => {
                let reply = Reply::of_error(&e);
                log::warn!("{what}: cannot reach {target}: {e}; {reply}");
                let _ = request::write_reply(&mut &*session, reply);
                None
            }
            Err(e) => {
                log::warn!("{what}: cannot reach {target}: {e}; session reset");
                let _ = session.abort();
                None
            }
        }
    }
}
