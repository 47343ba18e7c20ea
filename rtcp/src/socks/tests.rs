//! The SOCKS5 parser on well-formed, malformed and arbitrary bytes.

use std::io::{self, Cursor, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

/// A program's bytes in, rtcp's answers out.
struct Duplex {
    input: Cursor<Vec<u8>>,
    output: Vec<u8>,
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs [`accept`] on `input`: its result and what it wrote.
fn run(input: &[u8]) -> (Result<Target, Refused>, Vec<u8>) {
    let mut duplex = Duplex {
        input: Cursor::new(input.to_vec()),
        output: Vec::new(),
    };
    let result = accept(&mut duplex);
    (result, duplex.output)
}

/// A greeting offering no authentication, then a request with `command`.
fn request(command: u8, address: &[u8]) -> Vec<u8> {
    let mut bytes = vec![5, 1, 0, 5, command, 0];
    bytes.extend_from_slice(address);
    bytes
}

/// The 10-byte reply with `code`.
fn reply_bytes(code: u8) -> Vec<u8> {
    vec![5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

const METHOD_ACCEPTED: [u8; 2] = [5, 0];

#[test]
fn connect_requests_of_every_address_type() {
    let v6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    let mut v6_request = vec![4];
    v6_request.extend_from_slice(&v6.octets());
    v6_request.extend_from_slice(&443u16.to_be_bytes());
    let cases: Vec<(Vec<u8>, Target)> = vec![
        (
            vec![1, 10, 0, 0, 7, 0, 80],
            Target {
                host: Host::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))),
                port: 80,
            },
        ),
        (
            v6_request,
            Target {
                host: Host::Ip(IpAddr::V6(v6)),
                port: 443,
            },
        ),
        (
            [&[3, 11][..], b"example.org", &[0x1f, 0x90]].concat(),
            Target {
                host: Host::Name("example.org".into()),
                port: 8080,
            },
        ),
        // curl --socks5-hostname sends an IP literal as a name.
        (
            [&[3, 9][..], b"127.0.0.1", &[0, 22]].concat(),
            Target {
                host: Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                port: 22,
            },
        ),
    ];
    for (address, expected) in cases {
        let (result, written) = run(&request(1, &address));
        let target = result.unwrap_or_else(|e| panic!("{address:?}: {e:?}"));
        assert_eq!(target, expected);
        assert_eq!(written, METHOD_ACCEPTED);
        let mut encoded = Vec::new();
        target.encode(&mut encoded);
        // The literal sent as a name is re-encoded as what it is.
        if address[0] != 3 || matches!(target.host, Host::Name(_)) {
            assert_eq!(encoded, address);
        }
    }
}

#[test]
fn refusals_get_their_reply_codes() {
    // (request bytes after the greeting's method selection, reply code)
    let cases: [(Vec<u8>, u8); 6] = [
        (request(2, &[1, 127, 0, 0, 1, 0, 80]), 0x07), // BIND
        (request(3, &[1, 127, 0, 0, 1, 0, 80]), 0x07), // UDP ASSOCIATE
        (request(1, &[9, 1, 2, 3, 4, 0, 80]), 0x08),   // unknown address type
        (request(1, &[3, 0, 0, 80]), 0x04),            // empty name
        (request(1, &[3, 3, b'a', 0, b'b', 0, 80]), 0x04), // a NUL in a name
        (
            [&[5, 1, 0][..], &[4, 1, 0, 1, 127, 0, 0, 1, 0, 80]].concat(),
            0x01,
        ), // version 4 request
    ];
    for (input, code) in cases {
        let (result, written) = run(&input);
        let refused = result.expect_err("refused");
        assert_eq!(refused.reply.map(Reply::code), Some(code), "{input:?}");
        assert_eq!(written, [&METHOD_ACCEPTED[..], &reply_bytes(code)].concat());
    }
}

#[test]
fn greetings_without_no_auth_or_in_other_protocols() {
    // Username/password only: told that no method is acceptable.
    let (result, written) = run(&[5, 1, 2]);
    assert!(result.expect_err("refused").reply.is_none());
    assert_eq!(written, [5, 0xFF]);
    // No method at all.
    let (result, written) = run(&[5, 0]);
    assert!(result.is_err());
    assert_eq!(written, [5, 0xFF]);
    // SOCKS4 and HTTP: not answered.
    for input in [
        &[4, 1, 0, 80, 127, 0, 0, 1, 0][..],
        b"GET / HTTP/1.0\r\n\r\n",
    ] {
        let (result, written) = run(input);
        assert!(result.expect_err("refused").reply.is_none());
        assert!(written.is_empty());
    }
}

#[test]
fn every_truncation_fails_without_a_reply_beyond_the_method() {
    let full = request(1, &[3, 4, b'h', b'o', b's', b't', 0, 80]);
    for len in 0..full.len() {
        let (result, written) = run(&full[..len]);
        assert!(result.is_err(), "{len} bytes");
        assert!(
            written.is_empty() || written == METHOD_ACCEPTED,
            "{len}: {written:?}"
        );
    }
    assert!(run(&full).0.is_ok());
}

#[test]
fn reply_codes_round_trip() {
    for code in 0..=u8::MAX {
        if let Some(reply) = Reply::from_code(code) {
            assert_eq!(reply.code(), code);
        }
    }
    assert_eq!(Reply::from_code(6), None);
    let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
    assert_eq!(Reply::of_error(&refused), Reply::ConnectionRefused);
    let timed_out = io::Error::from(io::ErrorKind::TimedOut);
    assert_eq!(Reply::of_error(&timed_out), Reply::HostUnreachable);
}

proptest! {
    /// Arbitrary bytes never panic, and rtcp only ever answers with a method selection,
    /// then at most one reply; it accepts only a CONNECT it answered "no authentication".
    #[test]
    fn arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (result, written) = run(&input);
        let allowed = written.is_empty()
            || written == [5, 0xFF]
            || written == METHOD_ACCEPTED
            || (written.len() == 12 && written[..2] == METHOD_ACCEPTED && written[2..4] == [5, written[3]]
                && Reply::from_code(written[3]).is_some() && written[3] != 0);
        prop_assert!(allowed, "wrote {written:?}");
        if result.is_ok() {
            prop_assert_eq!(written, METHOD_ACCEPTED.to_vec());
        }
    }

    /// Arbitrary requests after a good greeting: a target or a refusal, never a panic;
    /// a target read back from its own encoding is the same.
    #[test]
    fn arbitrary_requests(command in 0u8..4, atyp in 0u8..6, rest in proptest::collection::vec(any::<u8>(), 0..270)) {
        let mut input = vec![5, 1, 0, 5, command, 0, atyp];
        input.extend_from_slice(&rest);
        let (result, _) = run(&input);
        if let Ok(target) = result {
            let mut encoded = Vec::new();
            target.encode(&mut encoded);
            prop_assert_eq!(Target::read_from(&mut &encoded[..]).ok(), Some(target));
        }
    }
}
