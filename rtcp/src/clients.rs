//! `rtcp server`'s count of the sessions each client holds, by the key it proved in TLS.
//! The library counts sessions by address, which cannot tell clients apart: every
//! connection of one `rtcp client` comes from its one address, clients behind one NAT
//! share an address, and a client that moves keeps its sessions. The key can.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::keys::Fingerprint;

/// The sessions each client key holds, at most `max` each. A key is in the table only
/// while it holds a session, so the table is no larger than the server's session limit.
pub struct Clients {
    max: usize,
    held: Mutex<HashMap<Fingerprint, usize>>,
}

impl Clients {
    /// A table that admits at most `max` sessions of one key at once.
    pub fn new(max: usize) -> Arc<Clients> {
        Arc::new(Clients {
            max,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// The most sessions one key may hold.
    pub fn max(&self) -> usize {
        self.max
    }

    /// One more session of `key`, held until the [`Slot`] is dropped; `None` if `key`
    /// already holds [`max`](Self::max).
    pub fn admit(self: &Arc<Self>, key: Fingerprint) -> Option<Slot> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot {
            clients: Arc::clone(self),
            key,
        })
    }

    /// How many sessions `key` holds.
    #[cfg(test)]
    fn held(&self, key: Fingerprint) -> usize {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(&key).copied().unwrap_or(0)
    }
}

/// One session of a client, counted until dropped.
pub struct Slot {
    clients: Arc<Clients>,
    key: Fingerprint,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self
            .clients
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> Fingerprint {
        format!("SHA256:{}", format!("{byte:02x}").repeat(32))
            .parse()
            .expect("a fingerprint")
    }

    #[test]
    fn a_key_holds_at_most_max_sessions_and_gets_its_slots_back() {
        let clients = Clients::new(2);
        let first = clients.admit(key(1)).expect("the first");
        let second = clients.admit(key(1)).expect("the second");
        assert!(clients.admit(key(1)).is_none(), "a third past the limit");
        // Another client is counted on its own.
        let other = clients.admit(key(2)).expect("another key");
        drop(first);
        let third = clients.admit(key(1)).expect("a slot given back");
        assert_eq!(clients.held(key(1)), 2);
        drop((second, third, other));
        assert_eq!(clients.held(key(1)), 0);
        assert!(
            clients.held.lock().expect("the table").is_empty(),
            "a key without sessions leaves the table"
        );
    }
}
