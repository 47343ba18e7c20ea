//! `rtcp client` and `rtcp connect` follow the `--server` name across reconnections. New
//! sessions resolve it afresh (`client::Upstream::resolve`); a session that lost its
//! connection would otherwise keep dialling the address its opening reached. So while any
//! session is reconnecting, the name is resolved again on this module's thread (never the
//! library's: resolving may block), at most once a [`PERIOD`], and a session whose server
//! address the name no longer resolves to is sent to the first one it does
//! (`RSocket::reconnect_to`). A server whose name moved (a new IP, a balancer node that
//! died among several) keeps its sessions, as long as the new address reaches the process
//! that holds them; otherwise they fail with an unknown session, as they would have.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::addr;
use crate::status::Registry;

/// How often the name is resolved while sessions reconnect.
const PERIOD: Duration = Duration::from_secs(1);

/// Follows `name` for the sessions of `registry`, on a thread of its own.
pub fn spawn(name: String, registry: Arc<Registry>) {
    let followed = name.clone();
    let spawned = std::thread::Builder::new()
        .name("rtcp-follow".into())
        .spawn(move || {
            let name = followed;
            // Where each session was sent last, so that the line is logged once a move.
            let mut sent: HashMap<u32, SocketAddr> = HashMap::new();
            loop {
                std::thread::sleep(PERIOD);
                let reconnecting = registry.reconnecting();
                sent.retain(|id, _| reconnecting.iter().any(|s| s.session_id() == *id));
                if reconnecting.is_empty() {
                    continue;
                }
                let resolved = match addr::resolve(&name) {
                    Ok(resolved) => resolved,
                    Err(e) => {
                        log::debug!(
                            "{name} does not resolve now: {e}; sessions keep their address"
                        );
                        continue;
                    }
                };
                for session in reconnecting {
                    let Ok(current) = session.peer_addr() else {
                        continue;
                    };
                    let Some(to) = moved_to(current, &resolved) else {
                        continue;
                    };
                    let id = session.session_id();
                    if sent.get(&id) == Some(&to) || session.reconnect_to(to).is_err() {
                        continue;
                    }
                    log::info!(
                        "session {id}: {name} resolves to {to} now, not {current}: \
                         reconnecting there"
                    );
                    sent.insert(id, to);
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("sessions will not follow {name}: cannot start their thread: {e}");
    }
}

/// Where a session whose server is at `current` goes, the name resolving to `resolved`
/// now: nowhere else while `current` is among them.
fn moved_to(current: SocketAddr, resolved: &[SocketAddr]) -> Option<SocketAddr> {
    if resolved.contains(&current) {
        None
    } else {
        resolved.first().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_moves_only_when_its_address_is_gone_from_the_name() {
        let a: SocketAddr = "10.0.0.1:7000".parse().expect("an address");
        let b: SocketAddr = "10.0.0.2:7000".parse().expect("an address");
        assert_eq!(moved_to(a, &[a, b]), None);
        assert_eq!(moved_to(a, &[b, a]), None);
        assert_eq!(moved_to(a, &[b]), Some(b));
        assert_eq!(moved_to(a, &[]), None);
    }
}
