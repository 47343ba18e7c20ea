//! Ordinary TCP peers, both ways of mixing, with real programs on loopback: `redis-cli`
//! and `redis-server`, `curl` and an HTTP server, `curl` sending mail to an SMTP server
//! (which speaks first), `ssh` and a throwaway `sshd` (root only). A plain client
//! reaches an `RServerSocket` that accepts plain TCP
//! (`Config::accept_plain_tcp`), which relays to the real server; and an `RSocket` that
//! falls back (`Config::fallback_to_plain_tcp`) reaches a plain server, relayed to from a
//! local TCP port where the real client connects. Each pair also fails clearly with its
//! option off. A missing program skips its test, unless `CI` is set.

mod relay;
mod smtp;
mod ssh;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Duration;

use robust_tcp::{Config, Error, RServerSocket, RSocket};
use robust_tcp_testkit::bounded::run_bounded;
use robust_tcp_testkit::check::carried;

use self::relay::{fallback_relay, robust_relay, Proc};

const LIMIT: Duration = Duration::from_secs(60);

/// Whether `program` can be run; without it the test is skipped, unless `CI` is set.
fn have(program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found || std::env::var_os("CI").is_none(),
        "{program} is missing (CI is set)"
    );
    if !found {
        eprintln!("skipped: {program} is missing");
    }
    found
}

fn accept_plain() -> Config {
    Config::default().accept_plain_tcp(true)
}

fn fallback() -> Config {
    Config::default().fallback_to_plain_tcp(true)
}

/// A free loopback port's address (nothing listens on it once this returns).
fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("its address")
}

/// Runs `cmd`, failing the test if it does not end within `limit`.
fn run(mut cmd: Command, limit: Duration) -> Output {
    cmd.stdin(Stdio::null());
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = Proc::from(child.spawn().expect("start the program"));
    child.wait_output(limit)
}

/// A throwaway redis-server on a free loopback port, without persistence.
fn redis_server() -> (Proc, SocketAddr) {
    let addr = free_addr();
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--port",
    ])
    .arg(addr.port().to_string())
    .current_dir(std::env::temp_dir())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let redis = Proc::from(cmd.spawn().expect("start redis-server"));
    redis.wait_listening(addr);
    (redis, addr)
}

fn redis_cli(addr: SocketAddr, args: &[&str]) -> Output {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(args);
    run(cmd, Duration::from_secs(20))
}

/// `SET` then `GET` with redis-cli at `addr`: exactly its replies.
fn set_get(addr: SocketAddr) {
    let set = redis_cli(addr, &["SET", "plain-key", "a value"]);
    assert_eq!(String::from_utf8_lossy(&set.stdout), "OK\n", "{set:?}");
    let get = redis_cli(addr, &["GET", "plain-key"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout), "a value\n", "{get:?}");
}

#[test]
fn redis_cli_reaches_redis_through_a_server_that_accepts_plain_tcp() {
    if !have("redis-server") || !have("redis-cli") {
        return;
    }
    run_bounded(LIMIT, || {
        let (_redis, target) = redis_server();
        let relay = robust_relay(accept_plain(), target, 2);
        set_get(relay.addr);
        for status in relay.finish() {
            assert!(status.plain, "{status:?}");
            assert_eq!(status.reconnections, 0);
        }
    });
}

#[test]
fn redis_cli_is_turned_away_by_a_server_without_the_option() {
    if !have("redis-cli") {
        return;
    }
    run_bounded(LIMIT, || {
        let server = RServerSocket::bind("127.0.0.1:0").expect("bind");
        let addr = server.local_addr().expect("address");
        let out = redis_cli(addr, &["PING"]);
        assert!(!out.status.success(), "{out:?}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("PONG"),
            "{out:?}"
        );
    });
}

#[test]
fn an_rsocket_that_falls_back_talks_resp_to_redis_server() {
    if !have("redis-server") || !have("redis-cli") {
        return;
    }
    run_bounded(LIMIT, || {
        let (_redis, target) = redis_server();
        // The library's own client, byte by byte.
        let mut sock = RSocket::connect_with(target, fallback()).expect("connect");
        let value: Vec<u8> = (0..=255).collect();
        let mut set = b"*3\r\n$3\r\nSET\r\n$3\r\nbin\r\n$256\r\n".to_vec();
        set.extend_from_slice(&value);
        set.extend_from_slice(b"\r\n*2\r\n$3\r\nGET\r\n$3\r\nbin\r\n");
        sock.write_all(&set).expect("write");
        let mut expected = b"+OK\r\n$256\r\n".to_vec();
        expected.extend_from_slice(&value);
        expected.extend_from_slice(b"\r\n");
        let mut got = vec![0; expected.len()];
        sock.read_exact(&mut got).expect("read the replies");
        assert_eq!(got, expected);
        let status = sock.status();
        assert!(status.plain, "{status:?}");
        assert_eq!(status.bytes_written, set.len() as u64);
        assert_eq!(status.bytes_read, expected.len() as u64);
        assert_eq!(sock.session_id(), 0);
        // And redis-cli, through a local port relayed by such sockets.
        let relay = fallback_relay(fallback(), target, 2);
        set_get(relay.addr);
        for status in relay.finish() {
            assert!(status.plain, "{status:?}");
        }
    });
}

#[test]
fn an_rsocket_without_the_option_fails_against_redis_server() {
    if !have("redis-server") {
        return;
    }
    run_bounded(LIMIT, || {
        let (_redis, target) = redis_server();
        let mut sock = RSocket::connect(target).expect("connect");
        let e = sock
            .read(&mut [0; 16])
            .expect_err("redis speaks no robust-tcp");
        assert!(
            matches!(carried("a session with redis", &e), Error::NotRobust { .. }),
            "{e:?}"
        );
    });
}

/// The body every test HTTP server sends.
const BODY: &str = "plain and simple\n";

/// Serves one HTTP request on `conn`: reads up to the blank line, answers with [`BODY`]
/// and closes; returns the request's bytes.
fn serve_http(mut conn: impl Read + Write) -> Vec<u8> {
    let mut request = Vec::new();
    let mut buf = [0; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return request,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    conn.write_all(response.as_bytes()).expect("answer");
    request
}

fn curl(addr: SocketAddr, path: &str) -> Output {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "--http1.1"])
        .arg(format!("http://{addr}{path}"));
    run(cmd, Duration::from_secs(20))
}

#[test]
fn curl_gets_a_page_from_a_server_that_accepts_plain_tcp() {
    if !have("curl") {
        return;
    }
    run_bounded(LIMIT, || {
        let server = RServerSocket::bind_with("127.0.0.1:0", accept_plain()).expect("bind");
        let addr = server.local_addr().expect("address");
        let served = thread::spawn(move || {
            let (sock, _) = server.accept().expect("accept");
            let status = sock.status();
            (serve_http(sock), status)
        });
        let out = curl(addr, "/over-rsocket");
        assert_eq!(String::from_utf8_lossy(&out.stdout), BODY, "{out:?}");
        let (request, status) = served.join().expect("the server");
        assert!(status.plain, "{status:?}");
        let request = String::from_utf8_lossy(&request);
        assert!(
            request.starts_with("GET /over-rsocket HTTP/1.1\r\nHost: "),
            "{request}"
        );
    });
}

#[test]
fn curl_through_an_rsocket_that_falls_back_reaches_a_plain_http_server() {
    if !have("curl") {
        return;
    }
    run_bounded(LIMIT, || {
        let (target, requests) = plain_http_server(2);
        let relay = fallback_relay(fallback(), target, 1);
        let out = curl(relay.addr, "/fallback");
        assert_eq!(String::from_utf8_lossy(&out.stdout), BODY, "{out:?}");
        assert!(relay.finish()[0].plain);
        // The probe, which sent nothing, then curl's request and nothing else: the
        // server's application never read a byte curl did not write.
        let probe = requests.recv_timeout(LIMIT).expect("the probe");
        assert_eq!(probe, b"");
        let request = requests.recv_timeout(LIMIT).expect("the request");
        let request = String::from_utf8_lossy(&request);
        assert!(
            request.starts_with("GET /fallback HTTP/1.1\r\nHost: "),
            "{request}"
        );
        assert!(
            request.ends_with("\r\n\r\n") && !request.contains("RTCP"),
            "{request}"
        );
    });
}

#[test]
fn without_the_options_curl_and_an_rsocket_fail_clearly() {
    if !have("curl") {
        return;
    }
    run_bounded(LIMIT, || {
        let server = RServerSocket::bind("127.0.0.1:0").expect("bind");
        let out = curl(server.local_addr().expect("address"), "/");
        assert!(!out.status.success(), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");

        let (target, requests) = plain_http_server(1);
        let config = Config::default().handshake_timeout(Duration::from_secs(1));
        let mut sock = RSocket::connect_with(target, config).expect("connect");
        let e = sock.read(&mut [0; 16]).expect_err("no robust-tcp server");
        assert!(
            matches!(
                carried("a session with an HTTP server", &e),
                Error::NotRobust { .. }
            ),
            "{e:?}"
        );
        drop(sock);
        // Today's behaviour, which the option exists to avoid: the HELLO reached it.
        let seen = requests.recv_timeout(LIMIT).expect("what it read");
        assert!(seen.starts_with(b"RTCP"), "{seen:?}");
    });
}

/// An ordinary HTTP server on its own thread: serves `n` connections (each one request,
/// or none) and sends what each carried, in order.
fn plain_http_server(n: usize) -> (SocketAddr, Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for conn in listener.incoming().take(n) {
            let Ok(conn) = conn else { return };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let request = serve_http(&conn);
            let _ = conn.shutdown(Shutdown::Both);
            let _ = tx.send(request);
        }
    });
    (addr, rx)
}

#[test]
fn robust_peers_with_the_options_on_still_open_robust_sessions() {
    run_bounded(LIMIT, || {
        for server_config in [Config::default(), accept_plain()] {
            for client_config in [Config::default(), fallback()] {
                let server =
                    RServerSocket::bind_with("127.0.0.1:0", server_config.clone()).expect("bind");
                let addr = server.local_addr().expect("address");
                let echo = thread::spawn(move || {
                    let (mut sock, _) = server.accept().expect("accept");
                    let mut got = [0; 5];
                    sock.read_exact(&mut got).expect("read");
                    sock.write_all(&got).expect("echo");
                    sock.status()
                });
                let mut sock = RSocket::connect_with(addr, client_config).expect("connect");
                sock.write_all(b"hello").expect("write");
                let mut got = [0; 5];
                sock.read_exact(&mut got).expect("read the echo");
                assert_eq!(&got, b"hello");
                assert!(!sock.status().plain);
                assert_ne!(sock.session_id(), 0);
                assert!(!echo.join().expect("the server").plain);
            }
        }
    });
}
