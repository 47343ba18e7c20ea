//! Whether a local address still exists: how a client notices that it moved to another
//! network.
//!
//! When the address a TCP connection is bound to disappears (a laptop leaves its Wi-Fi,
//! a phone's mobile address changes), Linux reports nothing on the connection: its
//! segments still go out with the old source address, and nothing comes back. The
//! silence limit would catch it after `dead_after`; looking costs a `bind` and is done
//! once per address per interval, whatever the number of sessions, so a roaming client
//! reconnects from its new address within about a heartbeat.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// How long one look at an address stays good.
const RECHECK: Duration = Duration::from_millis(500);
/// Addresses remembered at most (a host has a few; the map is cleared past this).
const REMEMBERED: usize = 64;

/// The engine's recent looks at local addresses.
#[derive(Debug, Default)]
pub(crate) struct LocalAddrs {
    looked: HashMap<IpAddr, (Instant, bool)>,
}

impl LocalAddrs {
    /// Whether `addr`'s IP address is still one of this host's (a recent look, or a new
    /// one). Only a definite "not available" counts as gone: any other error says nothing
    /// about the address.
    pub(crate) fn present(&mut self, addr: SocketAddr, now: Instant) -> bool {
        if let Some(&(at, present)) = self.looked.get(&addr.ip()) {
            if now.saturating_duration_since(at) < RECHECK {
                return present;
            }
        }
        // Port 0, and the IPv6 scope kept: a link-local address binds only with it.
        let mut probe = addr;
        probe.set_port(0);
        let present = match UdpSocket::bind(probe) {
            Ok(_) => true,
            Err(e) => e.kind() != io::ErrorKind::AddrNotAvailable,
        };
        if self.looked.len() >= REMEMBERED {
            self.looked.clear();
        }
        self.looked.insert(addr.ip(), (now, present));
        present
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn loopback_is_present_and_a_foreign_address_is_not() {
        let mut addrs = LocalAddrs::default();
        let now = Instant::now();
        assert!(addrs.present(SocketAddr::from((Ipv4Addr::LOCALHOST, 4000)), now));
        // TEST-NET-3 (RFC 5737): never assigned to this host. Only a bind is tried; nothing
        // is sent.
        let foreign = SocketAddr::from(([203, 0, 113, 7], 4000));
        assert!(!addrs.present(foreign, now));
        // Remembered for a while.
        assert!(!addrs.present(foreign, now + RECHECK / 2));
    }
}
