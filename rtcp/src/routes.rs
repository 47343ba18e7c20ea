//! Where `rtcp server` relays a session: what its request header asks for, to the
//! `--forward` target or to a SOCKS target its `--allow` list lets through.

use std::io;
use std::net::{SocketAddr, TcpStream};

use crate::addr;
use crate::allow::Allow;
use crate::metrics::Failure;
use crate::request::{self, BadHeader, Request};
use crate::secure::{self, Channel};
use crate::socks::Reply;

/// The server's targets.
pub struct Routes {
    /// The `--forward` target: as given, and resolved.
    pub forward: Option<(String, Vec<SocketAddr>)>,
    /// The `--allow` list (empty: every CONNECT is refused).
    pub allow: Allow,
}

impl Routes {
    /// Reads `channel`'s request and connects to its target, and sends the reply that
    /// says so: the connection and the target's name. On failure, logs why (naming the
    /// session `what`) and sends the reply that says why, or resets the session if its
    /// request cannot be read; the caller then drops it (a close: the reply arrives
    /// before the end of the session).
    pub fn open(&self, channel: &Channel, what: &str) -> Result<(TcpStream, String), Failure> {
        let session = channel.session();
        let _ = session.set_read_timeout(Some(request::HEADER_LIMIT));
        let request = Request::read_from(&mut { channel });
        let _ = session.set_read_timeout(None);
        let refuse = |status: Reply, reason: String, failure: Failure| {
            refuse(channel, what, status, &reason);
            Err(failure)
        };
        let (target, addrs) = match request {
            Ok(Request::Forward) => {
                let Some((forward, addrs)) = &self.forward else {
                    let reason = "this server has no --forward target (only --allow)".into();
                    return refuse(Reply::GeneralFailure, reason, Failure::BadRequest);
                };
                (forward.clone(), addrs.clone())
            }
            Ok(Request::Connect(target)) => {
                match self.allow.addresses(&target, |name, port| {
                    addr::resolve(&format!("{name}:{port}"))
                }) {
                    Ok(addrs) => (target.to_string(), addrs),
                    Err(refusal) => {
                        let failure = Failure::of_reply(refusal.reply);
                        return refuse(refusal.reply, refusal.why, failure);
                    }
                }
            }
            // A TLS client at a plaintext server: a plaintext reply, which tells it so.
            Err(e @ BadHeader::Magic(magic)) if secure::looks_like_tls(&magic) => {
                return refuse(Reply::GeneralFailure, e.to_string(), Failure::Handshake);
            }
            Err(e) => {
                log::warn!("{what}: {e}; session reset");
                let _ = session.abort();
                return Err(Failure::BadRequest);
            }
        };
        match addr::connect(&addrs) {
            Ok(stream) => match request::write_success(&mut { channel }) {
                Ok(()) => Ok((stream, target)),
                Err(e) => {
                    log::warn!("{what}: session failed: {e}; target connection closed");
                    Err(Failure::SessionFailed)
                }
            },
            Err(e) => refuse(
                Reply::of_error(&e),
                target_failure(&target, &e),
                Failure::TargetUnreachable,
            ),
        }
    }
}

/// Logs why session `what` is not relayed, and sends the client the reply that says so
/// (`status`, and `reason` in words); the caller then drops the channel, which closes the
/// session after the reply.
pub fn refuse(channel: &Channel, what: &str, status: Reply, reason: &str) {
    log::warn!(
        "{what}: {reason} (SOCKS reply {:#04x}); the client is told",
        status.code()
    );
    let _ = request::write_failure(&mut { channel }, status, reason);
}

/// What the server says when `target` (as the operator or the request wrote it) cannot
/// be reached.
pub fn target_failure(target: &str, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => format!("target {target} refused the connection"),
        io::ErrorKind::TimedOut => format!("target {target} did not answer the connection"),
        _ => format!("target {target} cannot be reached: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_failure_names_the_target() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            target_failure("127.0.0.1:6379", &refused),
            "target 127.0.0.1:6379 refused the connection"
        );
        let timed_out = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(
            target_failure("db:5432", &timed_out),
            "target db:5432 did not answer the connection"
        );
    }
}
