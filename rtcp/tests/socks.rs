//! `rtcp client --socks` and `rtcp server --allow` end to end: curl downloading through
//! the SOCKS port and a connection-cutting proxy, refusals with their SOCKS reply codes,
//! and malformed greetings that neither crash nor hang the client.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, local, read_all, Keys, Proc, Target, Tunnel, RTCP};
use robust_tcp_testkit::bounded::run_bounded;
use robust_tcp_testkit::payload::Payload;
use robust_tcp_testkit::proxy::CutPlan;

/// Bounds every test here.
const LIMIT: Duration = Duration::from_secs(90);
/// How long a test waits for one answer from the tunnel.
const ANSWER: Duration = Duration::from_secs(30);

/// A file server speaking just enough HTTP/1.0 for curl: reads the request head, sends
/// `payload` with its length, and closes. The handler's result: whether it saw a request.
fn http_server(payload: Payload) -> Target<bool> {
    Target::start(move |mut stream| {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) if head.len() < 8192 => head.push(byte[0]),
                // A probe connection, or a request head too long for this test server.
                _ => return false,
            }
        }
        let header = format!(
            "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            payload.len()
        );
        let sent = stream.write_all(header.as_bytes()).is_ok() && payload.write_to(&stream).is_ok();
        sent && head.starts_with(b"GET /file HTTP/1.")
    })
}

/// A target that sends back what it reads, once it reads end of stream.
fn echo_target() -> Target<Vec<u8>> {
    Target::start(|mut stream| {
        let got = read_all(&stream).unwrap_or_default();
        let _ = stream.write_all(&got);
        got
    })
}

/// Sends `bytes` and end of stream on a connected SOCKS stream, and checks the echo.
fn echoed(mut stream: TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).expect("write");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    expect_closed_after(stream, bytes);
}

/// Opens a SOCKS5 connection to `entry` and sends a CONNECT for `address` (SOCKS5's
/// address type, address and port); returns the stream and the 10-byte reply.
fn socks_connect(entry: SocketAddr, address: &[u8]) -> (TcpStream, [u8; 10]) {
    let mut stream = TcpStream::connect(entry).expect("connect to the SOCKS port");
    stream.set_read_timeout(Some(ANSWER)).expect("timeout");
    stream.write_all(&[5, 1, 0]).expect("greeting");
    let mut method = [0u8; 2];
    stream.read_exact(&mut method).expect("method selection");
    assert_eq!(method, [5, 0], "no authentication must be accepted");
    let mut request = vec![5, 1, 0];
    request.extend_from_slice(address);
    stream.write_all(&request).expect("request");
    let mut reply = [0u8; 10];
    stream.read_exact(&mut reply).expect("the CONNECT's reply");
    (stream, reply)
}

/// SOCKS5's encoding of `127.0.0.1:port`.
fn ipv4_local(port: u16) -> Vec<u8> {
    let mut address = vec![1, 127, 0, 0, 1];
    address.extend_from_slice(&port.to_be_bytes());
    address
}

/// SOCKS5's encoding of a domain name and port.
fn name(host: &str, port: u16) -> Vec<u8> {
    let mut address = vec![3, u8::try_from(host.len()).expect("a short name")];
    address.extend_from_slice(host.as_bytes());
    address.extend_from_slice(&port.to_be_bytes());
    address
}

/// The reply with `code`, bound address unspecified.
fn reply(code: u8) -> [u8; 10] {
    [5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

/// Asserts that the connection closes, having received `expected` first.
fn expect_closed_after(mut stream: TcpStream, expected: &[u8]) {
    stream.set_read_timeout(Some(ANSWER)).expect("timeout");
    let rest = read_all(&mut stream);
    match rest {
        Ok(bytes) => assert_eq!(bytes, expected),
        // A reset after what was expected counts as closed, provided nothing else came.
        Err(e) => assert!(expected.is_empty(), "{e} instead of {expected:?}"),
    }
}

// Proves: curl with --socks5-hostname downloads a file through `rtcp client --socks`, a
// proxy that cuts the session's connection, and `rtcp server --allow`, byte for byte.
#[test]
fn curl_downloads_byte_exact_through_socks_and_cuts() {
    if Command::new("curl").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "curl is missing (.ci/run installs it)"
        );
        eprintln!("skipped: curl is missing (Debian package curl)");
        return;
    }
    run_bounded(LIMIT, || {
        let len = 24 << 20;
        let payload = Payload::new(0x50c5_0005, len);
        let files = http_server(payload);
        let port = files.addr().port();
        let allow = format!("localhost:{port}");
        let mut tunnel = Tunnel::start_socks(&[&allow], CutPlan::random(6, 4 << 20));
        let output = Command::new("curl")
            .args(["--silent", "--show-error", "--fail", "--max-time", "60"])
            .arg("--socks5-hostname")
            .arg(tunnel.entry.to_string())
            .arg(format!("http://localhost:{port}/file"))
            .stdin(Stdio::null())
            .output()
            .expect("run curl");
        assert!(
            output.status.success(),
            "curl failed ({}): {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            tunnel.logs()
        );
        let want = payload.bytes(0..len);
        assert_eq!(output.stdout.len(), want.len(), "length\n{}", tunnel.logs());
        if let Some(i) = output.stdout.iter().zip(&want).position(|(a, b)| a != b) {
            panic!("byte {i} differs\n{}", tunnel.logs());
        }
        assert!(
            files.next_matching(ANSWER, |served| *served),
            "the file server saw the request"
        );
        assert!(
            tunnel.proxy.cuts() > 0,
            "no cut happened\n{}",
            tunnel.logs()
        );
        tunnel.assert_running();
    });
}

// Proves: a target outside --allow gets reply 0x02, a closed allowed port 0x05, and a
// server without --allow (configured by RTCP_* variables) refuses every SOCKS request with
// 0x02; an allowed address, and a name that resolves to one, are reached and carry bytes
// both ways.
#[test]
fn targets_outside_allow_are_refused_with_their_reply_codes() {
    run_bounded(LIMIT, || {
        let echo = echo_target();
        let port = echo.addr().port();
        let closed = free_port();
        let allowed = [format!("127.0.0.1:{port}"), format!("127.0.0.1:{closed}")];
        let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
        let mut tunnel = Tunnel::start_socks(&allowed, CutPlan::never());

        let (stream, answer) = socks_connect(tunnel.entry, &ipv4_local(port));
        assert_eq!(answer, reply(0), "{}", tunnel.logs());
        echoed(stream, b"allowed");

        let (stream, answer) = socks_connect(tunnel.entry, &ipv4_local(port + 1));
        assert_eq!(answer, reply(2), "another port\n{}", tunnel.logs());
        expect_closed_after(stream, b"");
        // The server's reason reaches the client's log with its code.
        let server = tunnel.proxy.local_addr();
        tunnel.client.wait_stderr(
            &format!(
                "refused by the server {server}: 127.0.0.1:{}: not allowed by the server's \
                 --allow; SOCKS reply 0x02",
                port + 1
            ),
            ANSWER,
        );
        // A name that resolves to an allowed address reaches it.
        let (stream, answer) = socks_connect(tunnel.entry, &name("localhost", port));
        assert_eq!(
            answer,
            reply(0),
            "a name for an allowed address\n{}",
            tunnel.logs()
        );
        echoed(stream, b"by name");
        let (stream, answer) = socks_connect(tunnel.entry, &ipv4_local(closed));
        assert_eq!(answer, reply(5), "a closed port\n{}", tunnel.logs());
        expect_closed_after(stream, b"");
        tunnel.client.wait_stderr(
            &format!(
                "refused by the server {server}: target 127.0.0.1:{closed} refused the \
                 connection; SOCKS reply 0x05"
            ),
            ANSWER,
        );
        tunnel.assert_running();
        assert!(
            tunnel
                .server
                .stderr()
                .contains("not allowed by the server's --allow (SOCKS reply 0x02)"),
            "the server logs the refusal\n{}",
            tunnel.logs()
        );

        // A plain tunnel's server (--forward only) takes no SOCKS request. Its options
        // come from the environment.
        let server_addr = local(free_port());
        let keys = Keys::new();
        let mut forward_only = Command::new(RTCP);
        forward_only
            .args(["server", "--quiet"])
            .env("RTCP_LISTEN", server_addr.to_string())
            .env("RTCP_FORWARD", echo.addr().to_string())
            .env("RTCP_STATE_DIR", keys.server_state())
            .env("RTCP_AUTHORIZED_KEYS", keys.authorized_keys())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let mut server = Proc::spawn("rtcp server", forward_only);
        server.wait_listening(server_addr);
        let entry = local(free_port());
        let socks_only = [
            "client",
            "--socks",
            &format!(":{}", entry.port()),
            "--server",
            &server_addr.to_string(),
        ];
        let mut client_args = strings(&socks_only);
        client_args.extend(keys.client_args());
        let mut client = Proc::rtcp("rtcp client", &client_args);
        client.wait_listening(entry);
        let (stream, answer) = socks_connect(entry, &ipv4_local(port));
        assert_eq!(answer, reply(2), "server stderr:\n{}", server.stderr());
        expect_closed_after(stream, b"");
        server.assert_running();
        client.assert_running();
    });
}

// Proves: a FORWARD (rtcp client --listen) to a server with only --allow gets a failed
// reply whose reason the client logs, and its local program sees a reset, not an empty
// reply.
#[test]
fn a_forward_to_a_server_without_forward_is_told_why() {
    run_bounded(LIMIT, || {
        let tunnel = Tunnel::start_socks(&["127.0.0.1:1"], CutPlan::never());
        let entry = local(free_port());
        let args = [
            "client",
            "--listen",
            &entry.to_string(),
            "--server",
            &tunnel.server_addr.to_string(),
        ];
        let mut client_args = strings(&args);
        client_args.extend(tunnel.keys.client_args());
        let mut client = Proc::rtcp("rtcp client --listen", &client_args);
        client.wait_listening(entry);
        let mut stream = TcpStream::connect(entry).expect("connect to the client");
        stream.set_read_timeout(Some(ANSWER)).expect("timeout");
        stream.write_all(b"PING\r\n").expect("write");
        let mut buf = [0u8; 16];
        let e = stream
            .read(&mut buf)
            .expect_err("no target behind the tunnel");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        client.wait_stderr(
            "tunnel failed: this server has no --forward target (only --allow)",
            ANSWER,
        );
        tunnel.server.wait_stderr(
            "this server has no --forward target (only --allow) (SOCKS reply 0x01); the \
             client is told",
            ANSWER,
        );
        client.assert_running();
    });
}

// Proves: malformed greetings and requests are answered as RFC 1928 says (or not at all)
// and closed at once; the client keeps serving, and a good request still works after them.
#[test]
fn malformed_greetings_neither_crash_nor_hang_the_client() {
    run_bounded(LIMIT, || {
        let echo = echo_target();
        let port = echo.addr().port();
        let mut tunnel = Tunnel::start_socks(&[&format!("127.0.0.1:{port}")], CutPlan::never());
        let bind = [vec![5, 1, 0, 5, 2, 0], ipv4_local(port)].concat();
        let bad_type = [&[5, 1, 0, 5, 1, 0, 9][..], &[0; 6]].concat();
        let cases: [(&[u8], Vec<u8>); 7] = [
            (&[4, 1, 0, 80, 127, 0, 0, 1, 0], vec![]), // SOCKS4
            (b"GET / HTTP/1.0\r\n\r\n", vec![]),
            (&[5, 1, 2], vec![5, 0xFF]), // username/password only
            (&[5, 0], vec![5, 0xFF]),    // no method
            (&bind, [&[5, 0][..], &reply(7)].concat()),
            (&bad_type, [&[5, 0][..], &reply(8)].concat()),
            (
                &[5, 1, 0, 5, 1, 0, 3, 0, 0, 80],
                [&[5, 0][..], &reply(4)].concat(),
            ), // empty name
        ];
        for (input, expected) in cases {
            let mut stream = TcpStream::connect(tunnel.entry).expect("connect");
            stream.write_all(input).expect("send");
            expect_closed_after(stream, &expected);
        }
        // Half a greeting, then end of stream.
        let mut stream = TcpStream::connect(tunnel.entry).expect("connect");
        stream.write_all(&[5, 3, 0]).expect("send");
        stream
            .shutdown(std::net::Shutdown::Write)
            .expect("half-close");
        expect_closed_after(stream, b"");

        let (stream, answer) = socks_connect(tunnel.entry, &ipv4_local(port));
        assert_eq!(answer, reply(0), "{}", tunnel.logs());
        echoed(stream, b"still serving");
        tunnel.assert_running();
    });
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}
