//! The control datagram decoder on arbitrary bytes: it must return an error, never panic,
//! and whatever it accepts must re-seal to the very same bytes.
//!
//! The input is tried twice: as a whole datagram (whose tag a fuzzer cannot guess, so this
//! checks that nothing gets past the tag), and, if it is no longer than the part a tag
//! covers in the longest datagram (24 bytes: a REQ_ACK's, CHALLENGE's or RESPONSE's),
//! tagged with the receiver's key, so that the decoding after the tag check is fuzzed too,
//! at every length.
//!
//! The same bytes go to the EARLY datagram's parser, which authenticates nothing: whatever
//! it accepts must re-encode to the very same bytes; and to a client's queue of datagrams
//! it cannot route yet, which must give back what it kept, byte for byte.
//!
//! Protocol API used: `early::parse`, `early::encode`, `Unrouted`, `ControlMessage::route`, `ControlMessage::open(&[u8], &MacKey)`,
//! `ControlMessage::seal(pn, &MacKey, &mut [u8; MAX_LEN])`, `SessionKeys::derive`,
//! `MacKey::tag`, `MAX_LEN`, `TAG_LEN`.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use robust_tcp::protocol::auth::{SessionKeys, TAG_LEN};
use robust_tcp::protocol::control::{ControlMessage, MAX_LEN};
use robust_tcp::protocol::early;
use robust_tcp::protocol::endpoint::Unrouted;
use robust_tcp::protocol::session::Role;

/// The two ends' keys of one session.
fn keys() -> &'static (SessionKeys, SessionKeys) {
    static KEYS: OnceLock<(SessionKeys, SessionKeys)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let derive = |role| SessionKeys::derive(&[0x5e; 32], &[0x11; 16], role);
        (derive(Role::Client), derive(Role::Server))
    })
}

fuzz_target!(|data: &[u8]| {
    let (client, server) = keys();
    if let Some(route) = ControlMessage::route(data) {
        let (mut unrouted, now) = (Unrouted::default(), Instant::now());
        let from = SocketAddr::from(([10, 0, 0, 2], 7001));
        unrouted.keep(route.cid, data, from, now);
        let kept = unrouted.take(route.cid, now);
        let expected: &[&[u8]] = if data.len() <= MAX_LEN { &[data] } else { &[] };
        let got: Vec<&[u8]> = kept.iter().map(|d| d.bytes()).collect();
        assert_eq!(got, expected, "kept and given back");
    }
    if let Some(opening_nonce) = early::parse(data) {
        assert_eq!(
            &early::encode(&opening_nonce)[..],
            data,
            "not the EARLY it names"
        );
    }
    if let Ok(opened) = ControlMessage::open(data, &server.control.recv) {
        // Reaching here means a guessed 128-bit tag: report it.
        panic!("a datagram the fuzzer made up authenticated: {opened:?}");
    }
    if data.len() + TAG_LEN > MAX_LEN {
        return;
    }
    let mut datagram = data.to_vec();
    datagram.extend_from_slice(&client.control.send.tag(&[data]));
    let Ok((pn, msg)) = ControlMessage::open(&datagram, &server.control.recv) else {
        return;
    };
    let mut buf = [0; MAX_LEN];
    let n = msg.seal(pn, &client.control.send, &mut buf);
    assert_eq!(
        &buf[..n],
        &datagram[..],
        "{msg:?} does not re-seal to its datagram"
    );
});
