//! Session keys and message authentication.
//!
//! A session has four keys, one per purpose and direction, expanded with HKDF-SHA256 from
//! one of two inputs. By default, from an ephemeral X25519 key agreement in the opening
//! ([`super::agreement`]): nobody who only sees the traffic can derive them. With the
//! lightweight opening (`Config::key_agreement(false)`, the paper's cost), from a random
//! 256-bit session secret the client draws and sends in clear in its opening HELLO, salted
//! with the opening nonce: the client holds the keys before it sends a byte, the server
//! derives them from the HELLO alone. Every proof (every HELLO but a key-agreement
//! opening's, every ANSWER and CONFIRM, and every control datagram) is an HMAC-SHA256 tag
//! under one of these keys, truncated to 128 bits and checked in constant time. See
//! `docs/SECURITY.md`.

use std::fmt;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::session::Role;

/// Length of the session secret.
pub const SECRET_LEN: usize = 32;
/// Length of the nonces in the handshake frames.
pub const NONCE_LEN: usize = 16;
/// Length of an authentication tag: the first half of an HMAC-SHA256.
pub const TAG_LEN: usize = 16;

/// The session secret, drawn by the client and sent in its opening HELLO.
pub type Secret = [u8; SECRET_LEN];
/// A handshake nonce: random, fresh for each attempt (or, for the opening nonce, for
/// each session).
pub type Nonce = [u8; NONCE_LEN];
/// An authentication tag.
pub type Tag = [u8; TAG_LEN];

/// Length of a server session's challenge key.
pub const CHALLENGE_KEY_LEN: usize = 32;

/// Labels of the derived keys (HKDF "info"): one per purpose and direction, so that no
/// tag made for one use verifies in another; and one set per kind of opening, so that no
/// key of one kind is ever a key of the other.
struct Labels {
    handshake_client: &'static [u8],
    handshake_server: &'static [u8],
    control_client: &'static [u8],
    control_server: &'static [u8],
}

/// The lightweight opening's labels (unchanged since version 3).
const SECRET_LABELS: Labels = Labels {
    handshake_client: b"robust-tcp v3 handshake client",
    handshake_server: b"robust-tcp v3 handshake server",
    control_client: b"robust-tcp v3 control client",
    control_server: b"robust-tcp v3 control server",
};

/// The key agreement's labels.
const AGREED_LABELS: Labels = Labels {
    handshake_client: b"robust-tcp v5 agreed handshake client",
    handshake_server: b"robust-tcp v5 agreed handshake server",
    control_client: b"robust-tcp v5 agreed control client",
    control_server: b"robust-tcp v5 agreed control server",
};

/// A key for one purpose and direction, ready to tag messages.
#[derive(Clone)]
pub struct MacKey(Hmac<Sha256>);

impl MacKey {
    fn new(key: &[u8]) -> Self {
        MacKey(Hmac::new_from_slice(key).expect("HMAC takes keys of any length"))
    }

    fn mac(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        // The keyed state is cloned rather than rebuilt: no key schedule per message.
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(part);
        }
        mac
    }

    /// The tag of the concatenation of `parts`.
    pub fn tag(&self, parts: &[&[u8]]) -> Tag {
        let full = self.mac(parts).finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(full.get(..TAG_LEN).unwrap_or_default());
        tag
    }

    /// Whether `tag` is the tag of the concatenation of `parts`, compared in constant time.
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        tag.len() == TAG_LEN && self.mac(parts).verify_truncated_left(tag).is_ok()
    }
}

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A key never reaches a log.
        f.write_str("MacKey(..)")
    }
}

/// The keys of a session's handshakes: the client tags every HELLO and CONFIRM with
/// `client`; the server tags every ANSWER with `server`.
#[derive(Clone, Debug)]
pub struct HandshakeKeys {
    /// The client's key.
    pub client: MacKey,
    /// The server's key.
    pub server: MacKey,
}

/// The keys of one side's control datagrams: it tags with `send` and checks the peer's
/// datagrams with `recv`.
#[derive(Clone, Debug)]
pub struct ControlKeys {
    /// Tags this side's datagrams.
    pub send: MacKey,
    /// Checks the peer's datagrams.
    pub recv: MacKey,
}

/// A server session's key for the values of its path challenges (`path.rs`). The engine
/// draws it from the operating system for each session, and it never leaves the server:
/// unlike the session's keys, which its client holds (and anyone may open a session), it
/// lets nobody answer a challenge they did not receive.
#[derive(Clone, Debug)]
pub struct ChallengeKey(MacKey);

// A challenge value is the first 64 bits of a tag.
const _: () = assert!(TAG_LEN >= 8);

impl ChallengeKey {
    /// The key made of `bytes` (random, in the engine).
    pub fn new(bytes: &[u8; CHALLENGE_KEY_LEN]) -> Self {
        ChallengeKey(MacKey::new(bytes))
    }

    /// The value of challenge number `n`: the first 64 bits of the HMAC-SHA256 of `n`
    /// under the key. Without the key, no value tells anything of another's.
    pub fn challenge(&self, n: u64) -> u64 {
        let tag = self.0.tag(&[&n.to_be_bytes()]);
        let mut value = [0u8; 8];
        value.iter_mut().zip(tag).for_each(|(v, t)| *v = t);
        u64::from_be_bytes(value)
    }
}

/// Every key of a session, derived from its secret.
#[derive(Clone, Debug)]
pub struct SessionKeys {
    /// For the handshakes.
    pub handshake: HandshakeKeys,
    /// For the control datagrams of the side that derived them.
    pub control: ControlKeys,
}

impl SessionKeys {
    /// The keys of side `role` of the session whose secret is `secret` and whose opening
    /// nonce (in its lightweight opening HELLO) is `opening_nonce`.
    pub fn derive(secret: &Secret, opening_nonce: &Nonce, role: Role) -> Self {
        let hkdf = Hkdf::<Sha256>::new(Some(opening_nonce), secret);
        Self::expand(&hkdf, &SECRET_LABELS, role)
    }

    /// The keys of side `role` of a session whose key agreement ended with the Noise
    /// handshake hash `handshake_hash` and split into `split` (both cipher keys, the
    /// initiator's first): they are the HKDF input key material, the hash the salt, so
    /// the keys depend on the agreed secret and on the whole transcript.
    pub(crate) fn agreed(handshake_hash: &[u8], split: &[u8], role: Role) -> Self {
        let hkdf = Hkdf::<Sha256>::new(Some(handshake_hash), split);
        Self::expand(&hkdf, &AGREED_LABELS, role)
    }

    fn expand(hkdf: &Hkdf<Sha256>, labels: &Labels, role: Role) -> Self {
        let key = |label: &[u8]| {
            let mut okm = [0u8; 32];
            // 32 bytes is far below HKDF-SHA256's limit of 255 * 32: this cannot fail.
            let _ = hkdf.expand(label, &mut okm);
            MacKey::new(&okm)
        };
        let (client, server) = (key(labels.control_client), key(labels.control_server));
        let control = match role {
            Role::Client => ControlKeys {
                send: client,
                recv: server,
            },
            Role::Server => ControlKeys {
                send: server,
                recv: client,
            },
        };
        SessionKeys {
            handshake: HandshakeKeys {
                client: key(labels.handshake_client),
                server: key(labels.handshake_server),
            },
            control,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(role: Role) -> SessionKeys {
        SessionKeys::derive(&[7; SECRET_LEN], &[9; NONCE_LEN], role)
    }

    #[test]
    fn each_side_checks_what_the_other_tags() {
        let (client, server) = (keys(Role::Client), keys(Role::Server));
        let tag = client.control.send.tag(&[b"ack", b" 42"]);
        assert!(server.control.recv.verify(&[b"ack 42"], &tag));
        assert!(
            !server.control.send.verify(&[b"ack 42"], &tag),
            "wrong direction"
        );
        assert!(
            !client.handshake.client.verify(&[b"ack 42"], &tag),
            "wrong purpose"
        );
        let tag = server.control.send.tag(&[b"conf"]);
        assert!(client.control.recv.verify(&[b"conf"], &tag));
    }

    #[test]
    fn a_changed_byte_secret_or_nonce_fails() {
        let key = keys(Role::Client).control.send;
        let tag = key.tag(&[b"close 1000"]);
        assert!(!key.verify(&[b"close 1001"], &tag));
        let mut bad = tag;
        bad[15] ^= 1;
        assert!(!key.verify(&[b"close 1000"], &bad));
        assert!(!key.verify(&[b"close 1000"], &tag[..15]), "short tag");
        let other_secret = SessionKeys::derive(&[8; SECRET_LEN], &[9; NONCE_LEN], Role::Client);
        assert!(!other_secret.control.send.verify(&[b"close 1000"], &tag));
        let other_nonce = SessionKeys::derive(&[7; SECRET_LEN], &[0; NONCE_LEN], Role::Client);
        assert!(!other_nonce.control.send.verify(&[b"close 1000"], &tag));
    }

    #[test]
    fn challenges_differ_by_number_and_key() {
        let key = ChallengeKey::new(&[1; CHALLENGE_KEY_LEN]);
        let other = ChallengeKey::new(&[2; CHALLENGE_KEY_LEN]);
        let values = [key.challenge(0), key.challenge(1), other.challenge(0)];
        assert_ne!(values[0], values[1]);
        assert_ne!(values[0], values[2]);
        assert!(!values.contains(&0) && !values.contains(&1), "{values:?}");
        // The same key gives the same values: tests stay deterministic.
        assert_eq!(
            ChallengeKey::new(&[1; CHALLENGE_KEY_LEN]).challenge(1),
            values[1]
        );
    }

    #[test]
    fn keys_never_print() {
        assert_eq!(
            format!("{:?}", keys(Role::Server).control.send),
            "MacKey(..)"
        );
    }
}
