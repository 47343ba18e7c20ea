//! Unit tests of the key agreement: both sides agree; the keys are no function of what an
//! observer sees; a retried opening agrees on the same keys; a damaged part fails.

use super::*;
use crate::core::auth::{MacKey, NONCE_LEN};

const OPENING_NONCE: Nonce = [4; NONCE_LEN];
const CLIENT: PrivateKey = [0x11; KEY_LEN];
const SERVER: PrivateKey = [0x22; KEY_LEN];

/// Whether `a` verifies what `b` tags: the two are the same key.
fn same(a: &MacKey, b: &MacKey) -> bool {
    a.verify(&[b"probe"], &b.tag(&[b"probe"]))
}

/// Whether `keys` holds any of `theirs`, in any role.
fn shares_a_key(keys: &SessionKeys, theirs: &SessionKeys) -> bool {
    let mine = [
        &keys.handshake.client,
        &keys.handshake.server,
        &keys.control.send,
        &keys.control.recv,
    ];
    let other = [
        &theirs.handshake.client,
        &theirs.handshake.server,
        &theirs.control.send,
        &theirs.control.recv,
    ];
    mine.iter().any(|m| other.iter().any(|o| same(m, o)))
}

fn opening() -> (PublicKey, AnswerPart, SessionKeys) {
    let public = client_public(&CLIENT, &OPENING_NONCE).unwrap();
    let (part, server) = answer(&SERVER, &OPENING_NONCE, &public).unwrap();
    (public, part, server)
}

#[test]
fn both_sides_agree_on_every_key() {
    let (_, part, server) = opening();
    let client = finish(&CLIENT, &OPENING_NONCE, &part).unwrap();
    assert!(same(&client.handshake.client, &server.handshake.client));
    assert!(same(&client.handshake.server, &server.handshake.server));
    assert!(same(&client.control.send, &server.control.recv));
    assert!(same(&client.control.recv, &server.control.send));
    assert!(!same(&client.control.send, &client.control.recv));
    assert!(!same(&client.handshake.client, &client.handshake.server));
}

#[test]
fn the_keys_are_no_function_of_what_an_observer_sees() {
    let (public, part, server) = opening();
    // An observer holds the HELLO's key and nonce and the ANSWER's part, and whatever
    // private keys of its own: every agreement it can run with them, as either side, and
    // the lightweight derivation over every public value it saw, gives other keys.
    let (server_public, tag) = part.split_at(KEY_LEN);
    let mut server_key = [0u8; KEY_LEN];
    server_key.copy_from_slice(server_public);
    for own in [
        [0u8; KEY_LEN],
        [1; KEY_LEN],
        [0xff; KEY_LEN],
        public,
        server_key,
    ] {
        if let Some(keys) = finish(&own, &OPENING_NONCE, &part) {
            assert!(!shares_a_key(&keys, &server), "as the client with {own:?}");
        }
        if let Some((_, keys)) = answer(&own, &OPENING_NONCE, &public) {
            assert!(!shares_a_key(&keys, &server), "as the server with {own:?}");
        }
    }
    let seen: [&[u8]; 3] = [&public, server_public, tag];
    for secret in seen {
        let mut s = [0u8; 32];
        s.iter_mut().zip(secret).for_each(|(s, b)| *s = *b);
        for role in [Role::Client, Role::Server] {
            let light = SessionKeys::derive(&s, &OPENING_NONCE, role);
            assert!(!shares_a_key(&light, &server));
        }
    }
    // The wire carries no key: the public values are not the private ones.
    assert_ne!(public, CLIENT);
    assert_ne!(server_public, SERVER);
}

#[test]
fn a_retried_opening_agrees_on_the_same_keys() {
    let (public, part, server) = opening();
    assert_eq!(client_public(&CLIENT, &OPENING_NONCE), Some(public));
    // The server's part of its first ANSWER, sent again, completes a retry's agreement.
    let retried = finish(&CLIENT, &OPENING_NONCE, &part).unwrap();
    assert!(same(&retried.control.send, &server.control.recv));
    // And the server, given the same keys, answers with the same part.
    let (again, _) = answer(&SERVER, &OPENING_NONCE, &public).unwrap();
    assert_eq!(again, part);
}

#[test]
fn another_opening_nonce_or_a_changed_byte_fails_the_agreement() {
    let (_, part, _) = opening();
    assert!(finish(&CLIENT, &[5; NONCE_LEN], &part).is_none());
    for i in 0..ANSWER_PART_LEN {
        let mut bad = part;
        bad[i] ^= 1;
        assert!(finish(&CLIENT, &OPENING_NONCE, &bad).is_none(), "byte {i}");
    }
    // A server whose agreement ran with another client key does not complete this one.
    let other = client_public(&[0x33; KEY_LEN], &OPENING_NONCE).unwrap();
    let (foreign, _) = answer(&SERVER, &OPENING_NONCE, &other).unwrap();
    assert!(finish(&CLIENT, &OPENING_NONCE, &foreign).is_none());
}

#[test]
fn the_half_kept_from_the_hello_finishes_as_the_private_key_does() {
    let (public, half) = client_start(&CLIENT, &OPENING_NONCE).unwrap();
    assert_eq!(public, client_public(&CLIENT, &OPENING_NONCE).unwrap());
    let (part, server) = answer(&SERVER, &OPENING_NONCE, &public).unwrap();
    let kept = half.finish(&part).unwrap();
    let again = finish(&CLIENT, &OPENING_NONCE, &part).unwrap();
    assert!(same(&kept.handshake.client, &server.handshake.client));
    assert!(same(&kept.control.send, &server.control.recv));
    assert!(same(&kept.control.recv, &again.control.recv));
    // A damaged part fails it as it fails `finish`.
    let (_, half) = client_start(&CLIENT, &OPENING_NONCE).unwrap();
    let mut damaged = part;
    damaged[KEY_LEN] ^= 1;
    assert!(half.finish(&damaged).is_none());
}
