//! rtcp's TLS, seen from outside: a capture of the tunnel holds none of its bytes (and does
//! with `--insecure-plaintext`, which proves the capture would see them); an unauthorized
//! client, a changed server key and a TLS/plaintext mismatch each fail with one clear
//! line on each side, the local program seeing a reset; all through a cutting proxy.
//!
//! Volume with TLS on is the other tests' job, since TLS is the default: redis.rs runs
//! redis-benchmark through at least 20 cuts, tunnel.rs a 256 MiB file byte-exact through
//! at least 20 cuts.
//!
//! The capture needs root (an `AF_PACKET` socket on `lo`), as the library's attacker tests.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{fingerprint, start_client, Keys, Options, Proc, Target, Tunnel};
use robust_tcp_testkit::bounded::{run_bounded, wait_until};
use robust_tcp_testkit::proxy::CutPlan;

/// Every test's bound.
const LIMIT: Duration = Duration::from_secs(90);
/// How long a log line or a reply may take.
const ANSWER: Duration = Duration::from_secs(15);

/// What the local program sends: a secret an eavesdropper must not read.
const SECRET_COMMAND: &[u8] = b"SET creditcard 4111111111111111\r\n";

/// A target that echoes each connection and returns what it echoed.
fn echo_target() -> Target<Vec<u8>> {
    Target::start(|stream| {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = (&stream).read(&mut buf) {
            all.extend_from_slice(&buf[..n]);
            if (&stream).write_all(&buf[..n]).is_err() {
                break;
            }
        }
        all
    })
}

/// Sends `bytes` through `stream` and checks that the echo brings exactly them back.
fn echo(stream: &mut TcpStream, bytes: &[u8], tunnel: &Tunnel) {
    stream.write_all(bytes).expect("write to the tunnel");
    let mut back = vec![0u8; bytes.len()];
    if let Err(e) = stream.read_exact(&mut back) {
        panic!("echo: {e}\n{}", tunnel.logs());
    }
    assert_eq!(back, bytes);
}

/// The packet capture (an `AF_PACKET` socket) exists on Linux only.
#[cfg(target_os = "linux")]
mod eavesdropping {
    use std::collections::BTreeMap;

    use robust_tcp_testkit::capture::{Capture, Proto};

    use super::*;

    /// The secret in [`SECRET_COMMAND`].
    const SECRET: &[u8] = b"4111111111111111";

    /// The tunnel's own traffic in `capture`, each flow's payloads joined in order: TCP to or
    /// from the proxy's port (client side) or the server's (proxy side), and every UDP
    /// datagram (the sessions' control messages; other tests' too, which carry no payload
    /// bytes). The legs of the local program and the target are plaintext by design, and
    /// left out.
    fn tunnel_flows(capture: &Capture, tunnel: &Tunnel) -> Vec<Vec<u8>> {
        let ports = [tunnel.proxy.local_addr().port(), tunnel.server_addr.port()];
        let mut flows: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for packet in capture.packets() {
            let ours = packet.proto == Proto::Udp
                || ports.contains(&packet.src.port())
                || ports.contains(&packet.dst.port());
            if ours {
                let key = format!("{:?} {} {}", packet.proto, packet.src, packet.dst);
                flows.entry(key).or_default().extend(&packet.payload);
            }
        }
        flows.into_values().collect()
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// Runs the secret through a tunnel (with `options`) twice, with a cut of every
    /// connection between (so the capture holds openings, a reconnection and datagrams),
    /// and returns the tunnel's captured flows.
    fn capture_the_secret(options: &Options) -> Vec<Vec<u8>> {
        let capture = Capture::start().expect("a packet capture on lo (run the tests as root)");
        let target = echo_target();
        let tunnel = Tunnel::start(target.addr(), CutPlan::never(), options);
        let mut stream = TcpStream::connect(tunnel.entry).expect("connect to the client");
        stream.set_read_timeout(Some(ANSWER)).unwrap();
        echo(&mut stream, SECRET_COMMAND, &tunnel);
        assert!(tunnel.proxy.cut_all() >= 1, "{}", tunnel.logs());
        echo(&mut stream, SECRET_COMMAND, &tunnel);
        drop(stream);
        let echoed = target.next_matching(ANSWER, |bytes| !bytes.is_empty());
        assert_eq!(echoed, [SECRET_COMMAND, SECRET_COMMAND].concat());
        // Our session's last line (the status watcher may miss so short a reconnection).
        tunnel
            .client
            .wait_stderr("B received, 1 reconnection)", ANSWER);
        tunnel_flows(&capture, &tunnel)
    }

    // Proves: with the defaults an eavesdropper on the tunnel (every TCP segment and datagram
    // between client and server, a reconnection included) reads nothing of what it carries;
    // the same capture of --insecure-plaintext holds the secret, so the test has teeth.
    #[test]
    fn a_capture_of_the_tunnel_holds_no_plaintext_unless_asked_for() {
        run_bounded(LIMIT, || {
            let flows = capture_the_secret(&Options::default());
            let carried: usize = flows.iter().map(Vec::len).sum();
            assert!(carried > 4 * SECRET_COMMAND.len(), "captured {carried} B");
            for flow in &flows {
                assert!(!contains(flow, SECRET), "the secret is in the capture");
                assert!(!contains(flow, b"creditcard"), "the key is in the capture");
                // rtcp's request header (a FORWARD); the library's own frames start with "RTCP"
                // too, with its version.
                assert!(!contains(flow, b"RTCP\x02\x00"), "the request is in clear");
            }

            let plaintext = Options {
                insecure_plaintext: true,
                ..Options::default()
            };
            let flows = capture_the_secret(&plaintext);
            assert!(
                flows.iter().any(|flow| contains(flow, SECRET)),
                "the plaintext tunnel's capture should show the secret"
            );
        });
    }
}

/// Connects to `entry`, sends a few bytes and expects the connection reset (how rtcp
/// tells a local program that its tunnel failed).
fn expect_reset(entry: SocketAddr) {
    let mut stream = TcpStream::connect(entry).expect("connect to the client");
    stream.set_read_timeout(Some(ANSWER)).unwrap();
    // The reset may come before the write: then the write fails, as the read below.
    let _ = stream.write_all(SECRET_COMMAND);
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
        Ok(n) => panic!("expected a reset, read {:?}", &buf[..n]),
    }
}

// Proves: a client whose key is not in the server's authorized_keys is refused in the TLS
// handshake, with a line on each side saying which key and which file; the target never
// sees its connection (nor its bytes), and the server goes on admitting its own client.
#[test]
fn an_unauthorized_client_is_refused_before_the_target() {
    run_bounded(LIMIT, || {
        let target = echo_target();
        let tunnel = Tunnel::start(target.addr(), CutPlan::random(4, 2048), &Options::default());
        let stranger = Keys::new();
        let key = fingerprint(&stranger.client_state(), false);
        let (client, entry) = start_client(
            "--listen",
            tunnel.proxy.local_addr(),
            &stranger.client_args(),
        );
        expect_reset(entry);
        client.wait_stderr(
            &format!(
                "the server refused this client's key {key}: add it to the server's \
                 --authorized-keys file (`rtcp fingerprint` prints it)"
            ),
            ANSWER,
        );
        tunnel.server.wait_stderr(
            &format!(
                "TLS handshake failed: client key {key} is not in {}: add it there to admit \
                 this client; session closed",
                tunnel.keys.authorized_keys().display()
            ),
            ANSWER,
        );
        // The tunnel's own client still gets through; before its connection, the target
        // saw only the server's check of it at start and the empty probe of the client's
        // start, never the stranger's two sessions (its start's probe and ours).
        let mut stream = TcpStream::connect(tunnel.entry).expect("connect to the client");
        stream.set_read_timeout(Some(ANSWER)).unwrap();
        echo(&mut stream, b"admitted", &tunnel);
        drop(stream);
        let mut before = 0;
        loop {
            let bytes = target.next(ANSWER);
            if bytes == b"admitted" {
                break;
            }
            assert!(bytes.is_empty(), "the target got {bytes:?}");
            before += 1;
        }
        assert!(
            before <= 2,
            "{before} connections before ours: the stranger's reached it"
        );
    });
}

// Proves: a server whose key changed (another state directory, as a new machine or an
// attacker would have) is refused by the client that pinned the old one on first use,
// with one line naming both keys, the file and what to check; the server says the client
// refused its key; the local program sees a reset.
#[test]
fn a_changed_server_key_is_refused_with_one_line() {
    run_bounded(LIMIT, || {
        let target = echo_target();
        let mut tunnel =
            Tunnel::start(target.addr(), CutPlan::random(4, 2048), &Options::default());
        // The client's start pinned the server's key (its probe's session).
        let old = fingerprint(&tunnel.keys.server_state(), true);
        let known = tunnel.keys.client_state().join("known_servers");
        let server_name = tunnel.proxy.local_addr().to_string();
        let pinned = format!("{server_name} {old}\n");
        wait_until(ANSWER, "the server's key pinned", || {
            std::fs::read_to_string(&known).is_ok_and(|text| text == pinned)
        });

        let other = Keys::new();
        let new = fingerprint(&other.server_state(), true);
        tunnel.server.child().kill().expect("kill the server");
        tunnel.server.wait_exit(ANSWER);
        let args = [
            "server".to_string(),
            "--listen".into(),
            tunnel.server_addr.to_string(),
            "--forward".into(),
            target.addr().to_string(),
            "--state-dir".into(),
            other.server_state().to_str().unwrap().into(),
            "--authorized-keys".into(),
            tunnel.keys.authorized_keys().to_str().unwrap().into(),
        ];
        tunnel.server = Proc::rtcp("rtcp server with another key", &args);
        tunnel.server.wait_listening(tunnel.server_addr);

        expect_reset(tunnel.entry);
        tunnel.client.wait_stderr(
            &format!(
                "session to {server_name} failed: the server {server_name}'s key changed: it \
                 is {new}, and {} pins {old}; check `rtcp fingerprint --server` on the \
                 server: if it prints the new key, delete {server_name}'s line in that file; \
                 if not, someone may be intercepting the connection; connection reset",
                known.display()
            ),
            ANSWER,
        );
        tunnel.server.wait_stderr(
            &format!(
                "TLS handshake failed: the client refused this server's key {new}: it has \
                 another key pinned for this server (its known_servers or --server-key)"
            ),
            ANSWER,
        );
        // The pin is not overwritten by the refused key.
        assert_eq!(std::fs::read_to_string(&known).unwrap(), pinned);
    });
}

/// The line both ends of a TLS/plaintext mismatch end with.
const MISMATCH_FIX: &str =
    "run both ends with TLS (the default), or both with --insecure-plaintext";

// Proves: a client with --insecure-plaintext against a TLS server, and a TLS client
// against a server with --insecure-plaintext, each fail at once with a line on each side
// that names the mismatch and the fix; neither reaches the target.
#[test]
fn plaintext_against_tls_fails_cleanly_both_ways() {
    run_bounded(LIMIT, || {
        let target = echo_target();
        let cuts = || CutPlan::random(4, 2048);

        let tls = Tunnel::start(target.addr(), cuts(), &Options::default());
        let plaintext_client = ["--insecure-plaintext".to_string()];
        let (client, entry) = start_client("--listen", tls.proxy.local_addr(), &plaintext_client);
        expect_reset(entry);
        client.wait_stderr(
            &format!(
                "tunnel failed: the peer speaks TLS and this rtcp runs with \
                 --insecure-plaintext: {MISMATCH_FIX}; both sides reset"
            ),
            ANSWER,
        );
        tls.server.wait_stderr(
            &format!(
                "TLS handshake failed: the client speaks plaintext rtcp (--insecure-plaintext) \
                 and this server TLS: {MISMATCH_FIX}; session closed"
            ),
            ANSWER,
        );

        let plaintext = Options {
            insecure_plaintext: true,
            ..Options::default()
        };
        let open = Tunnel::start(target.addr(), cuts(), &plaintext);
        let keys = Keys::new();
        let server = open.proxy.local_addr();
        let (client, entry) = start_client("--listen", server, &keys.client_args());
        expect_reset(entry);
        client.wait_stderr(
            &format!(
                "session to {server} failed: the server speaks plaintext rtcp \
                 (--insecure-plaintext) and this client TLS: {MISMATCH_FIX}; connection reset"
            ),
            ANSWER,
        );
        open.server.wait_stderr(
            &format!(
                "the peer speaks TLS and this rtcp runs with --insecure-plaintext: \
                 {MISMATCH_FIX} (SOCKS reply 0x01); the client is told"
            ),
            ANSWER,
        );
    });
}
