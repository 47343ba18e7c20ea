//! What an operator relies on (issue 21, items 1-4), with the real binaries on loopback:
//! limits that refuse at once and say which option raises them, a killed client's target
//! connection freed, the target's refusal reported on the client's side, and the metrics
//! counting every cut.

mod common;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, local, read_all, Keys, Options, Proc, Target, Tunnel, RTCP};
use robust_tcp_testkit::bounded::{run_bounded, wait_until};
use robust_tcp_testkit::proxy::CutPlan;

/// How long an I/O call of these tests may block: far more than anything here takes on
/// loopback, far less than a hang (the library's busy limit was 30 s).
const IO_LIMIT: Duration = Duration::from_secs(10);

/// A target that echoes every byte until end of stream.
fn echo_target() -> Target<io::Result<u64>> {
    Target::start(|stream| io::copy(&mut &stream, &mut &stream))
}

/// A connection to the tunnel's entry, with reads bounded by [`IO_LIMIT`].
fn connect(tunnel: &Tunnel) -> TcpStream {
    let stream = TcpStream::connect(tunnel.entry).expect("connect to rtcp client");
    stream.set_read_timeout(Some(IO_LIMIT)).unwrap();
    stream
}

/// Writes `bytes` and reads them back, byte for byte.
fn echo(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes)?;
    let mut back = vec![0u8; bytes.len()];
    stream.read_exact(&mut back)?;
    assert_eq!(back, bytes, "the echo differs");
    Ok(())
}

/// Scrapes `GET /metrics` at `addr`: the values by metric name and labels.
fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics");
    stream.set_read_timeout(Some(IO_LIMIT)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("send the request");
    let response = String::from_utf8(read_all(stream).expect("read the metrics")).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').expect("name value");
            (name.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

/// A new local connection through `tunnel` (`what`) is reset at once (within 5 s, where a
/// hang would last until the test's limit), not answered.
fn refused_at_once(tunnel: &Tunnel, what: &str) {
    let mut stream = connect(tunnel);
    let started = Instant::now();
    let result = echo(&mut stream, what.as_bytes());
    let took = started.elapsed();
    let e = result.expect_err(what);
    assert!(
        matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
        ),
        "{what}: {e}"
    );
    assert!(
        took < Duration::from_secs(5),
        "{what}: refused after {took:?}"
    );
}

#[test]
fn past_the_per_address_limit_a_connection_is_reset_at_once_and_both_logs_say_why() {
    run_bounded(Duration::from_secs(60), || {
        let target = echo_target();
        let options = Options {
            server_args: vec!["--max-sessions-per-address".into(), "1".into()],
            ..Options::default()
        };
        let tunnel = Tunnel::start(target.addr(), CutPlan::never(), &options);
        // The one session the limit allows (once the probe of the start has closed and
        // freed its place: until then this one is refused too).
        let mut first = None;
        wait_until(IO_LIMIT, "a first session through", || {
            let mut stream = connect(&tunnel);
            let ok = echo(&mut stream, b"first").is_ok();
            first = ok.then_some(stream);
            ok
        });
        refused_at_once(&tunnel, "a second session past the limit");
        tunnel
            .client
            .wait_stderr("raise them on the server", IO_LIMIT);
        tunnel
            .server
            .wait_stderr("--max-sessions-per-address", IO_LIMIT);
        // The first session is untouched.
        echo(first.as_mut().unwrap(), b"still there").expect("the first session works");
    });
}

#[test]
fn past_the_per_client_limit_a_connection_is_reset_at_once_and_both_logs_say_why() {
    run_bounded(Duration::from_secs(60), || {
        let target = echo_target();
        let options = Options {
            server_args: vec!["--max-sessions-per-client".into(), "2".into()],
            ..Options::default()
        };
        let tunnel = Tunnel::start(target.addr(), CutPlan::never(), &options);
        // The two sessions the limit allows (the start's probe session may still hold a
        // place for a moment, as above).
        let mut held = Vec::new();
        for word in [&b"first"[..], b"second"] {
            wait_until(IO_LIMIT, "a session within the limit", || {
                let mut stream = connect(&tunnel);
                let ok = echo(&mut stream, word).is_ok();
                if ok {
                    held.push(stream);
                }
                ok
            });
        }
        refused_at_once(&tunnel, "a third session past the limit");
        let line = "holds the server's --max-sessions-per-client (2) sessions already";
        tunnel.client.wait_stderr(line, IO_LIMIT);
        tunnel.server.wait_stderr(line, IO_LIMIT);
        for stream in &mut held {
            echo(stream, b"still there").expect("the sessions within the limit work");
        }
        // A session that ends gives its place back.
        drop(held.pop());
        wait_until(IO_LIMIT, "a session in the place given back", || {
            echo(&mut connect(&tunnel), b"again").is_ok()
        });
    });
}

#[test]
fn a_killed_client_frees_its_target_connection_within_give_up_after() {
    run_bounded(Duration::from_secs(60), || {
        let received = Arc::new(AtomicU64::new(0));
        // Reads to the end of the connection; reports what it read and when it ended.
        let target = {
            let received = Arc::clone(&received);
            Target::start(move |mut stream| {
                let mut all = Vec::new();
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    all.extend_from_slice(&buf[..n]);
                    received.fetch_add(n as u64, Ordering::SeqCst);
                }
                (all, Instant::now())
            })
        };
        let give_up = Duration::from_secs(2);
        let options = Options {
            server_args: vec!["--give-up-after".into(), give_up.as_secs().to_string()],
            ..Options::default()
        };
        let mut tunnel = Tunnel::start(target.addr(), CutPlan::never(), &options);
        let mut stream = connect(&tunnel);
        stream.write_all(b"hello").unwrap();
        wait_until(IO_LIMIT, "the target has the bytes", || {
            received.load(Ordering::SeqCst) == 5
        });
        tunnel.client.child().kill().expect("SIGKILL rtcp client");
        let killed = Instant::now();
        let (bytes, ended) = target.next_matching(IO_LIMIT, |(bytes, _)| !bytes.is_empty());
        assert_eq!(bytes, b"hello");
        let freed = ended.saturating_duration_since(killed);
        // The server gives up `give_up` after it saw the connection fail: at once (the
        // client's kernel closed it), or within the silence limit (3 s) at worst.
        assert!(
            freed >= give_up - Duration::from_millis(100)
                && freed < give_up + Duration::from_secs(4),
            "target connection freed {freed:?} after the kill\n{}",
            tunnel.server.stderr()
        );
        tunnel.server.wait_stderr("gave up after", IO_LIMIT);
    });
}

#[test]
fn a_target_that_refuses_is_named_in_the_client_log_and_resets_the_local_program() {
    run_bounded(Duration::from_secs(60), || {
        let target = local(free_port());
        let tunnel = Tunnel::start(target, CutPlan::never(), &Options::default());
        let line = format!("target {target} refused the connection");
        tunnel.server.wait_stderr(
            &format!("{line}: sessions will be closed with this reason"),
            IO_LIMIT,
        );
        let mut stream = connect(&tunnel);
        let started = Instant::now();
        let e = echo(&mut stream, b"PING\r\n").expect_err("no target behind the tunnel");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        tunnel
            .client
            .wait_stderr(&format!("tunnel failed: {line}"), IO_LIMIT);
    });
}

#[test]
fn the_metrics_count_every_cut_and_byte() {
    run_bounded(Duration::from_secs(60), || {
        let target = echo_target();
        let metrics = local(free_port());
        // The byte counts are the session's: under TLS they add the handshake and the
        // records' overhead. Plaintext keeps them exact, which is what this test checks.
        let options = Options {
            client_args: vec!["--metrics".into(), metrics.to_string()],
            insecure_plaintext: true,
            ..Options::default()
        };
        let tunnel = Tunnel::start(target.addr(), CutPlan::never(), &options);
        let mut stream = connect(&tunnel);
        let mut sent = 0;
        echo(&mut stream, b"before the cuts").unwrap();
        sent += 15;
        // The start's probe session out of the registry: only ours counts from now on.
        // (Its connection may still be closing in the proxy, and be cut too.)
        wait_until(IO_LIMIT, "the probe session closed", || {
            scrape(metrics)["rtcp_sessions_open"] == 1.0
        });
        let mut cuts = 0;
        for round in 0..3u8 {
            cuts += tunnel.proxy.cut_all();
            // Blocks until the session resumed: the reply comes on the new connection.
            let bytes = vec![round; 1000];
            echo(&mut stream, &bytes).unwrap();
            sent += bytes.len();
        }
        assert!(cuts >= 3, "our connection cut each time\n{}", tunnel.logs());
        // The watcher looks every 100 ms: wait for it to have seen the last resumption.
        wait_until(IO_LIMIT, "every resumption timed", || {
            scrape(metrics)["rtcp_resume_seconds_count"] == 3.0
        });
        let m = scrape(metrics);
        assert_eq!(m["rtcp_reconnections_total"], 3.0, "{m:?}");
        assert_eq!(m["rtcp_resume_seconds_bucket{le=\"+Inf\"}"], 3.0, "{m:?}");
        assert_eq!(m["rtcp_sessions_open"], 1.0, "{m:?}");
        assert_eq!(m["rtcp_sessions_reconnecting"], 0.0, "{m:?}");
        // Each session also wrote its request header and read the server's reply, 6 bytes
        // each ("RTCP", the version, FORWARD or Succeeded), the probe's included.
        let headers = 6 * m["rtcp_sessions_total"] as u64;
        assert_eq!(
            m["rtcp_sent_bytes_total"],
            (sent as u64 + headers) as f64,
            "{m:?}"
        );
        assert_eq!(
            m["rtcp_received_bytes_total"],
            (sent as u64 + headers) as f64,
            "{m:?}"
        );
        tunnel.client.wait_stderr("resumed after", IO_LIMIT);
    });
}

#[test]
fn a_client_retries_an_opening_while_the_server_is_down_and_logs_the_outage() {
    run_bounded(Duration::from_secs(60), || {
        let target = echo_target();
        let server_addr = local(free_port());
        let entry = local(free_port());
        let keys = Keys::new();
        let args = |list: &[&str], keys: Vec<String>| {
            let mut args: Vec<String> = list.iter().map(|s| s.to_string()).collect();
            args.extend(keys);
            args
        };
        let server_arg = server_addr.to_string();
        let entry_arg = entry.to_string();
        let mut client = Proc::rtcp(
            "rtcp client",
            &args(
                &["client", "--listen", &entry_arg, "--server", &server_arg],
                keys.client_args(),
            ),
        );
        client.wait_listening(entry);
        // A local program before the server exists: its opening is retried.
        let mut stream = TcpStream::connect(entry).unwrap();
        stream.set_read_timeout(Some(IO_LIMIT)).unwrap();
        stream.write_all(b"waited for").unwrap();
        client.wait_stderr(&format!("server {server_addr} unreachable since"), IO_LIMIT);
        let target_arg = target.addr().to_string();
        let mut server = Proc::rtcp(
            "rtcp server",
            &args(
                &["server", "--listen", &server_arg, "--forward", &target_arg],
                keys.server_args(),
            ),
        );
        let mut back = [0u8; 10];
        stream.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"waited for");
        client.wait_stderr(
            &format!("server {server_addr} reachable again after an outage of"),
            IO_LIMIT,
        );
        server.assert_running();
    });
}

/// Sends `signal` (`STOP`, `CONT`) to `process`.
fn signal(process: &mut Proc, signal: &str) {
    let pid = process.child().id().to_string();
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

#[test]
fn rtcp_connect_reports_a_frozen_server_and_its_return() {
    run_bounded(Duration::from_secs(60), || {
        let target = echo_target();
        let mut tunnel = Tunnel::start(target.addr(), CutPlan::never(), &Options::default());
        let mut cmd = Command::new(RTCP);
        cmd.arg("connect")
            .arg(tunnel.server_addr.to_string())
            .args(tunnel.keys.client_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut connect = Proc::spawn("rtcp connect", cmd);
        let mut stdin = connect.child().stdin.take().unwrap();
        let mut stdout = connect.child().stdout.take().unwrap();
        let mut echo_line = |bytes: &[u8]| {
            stdin.write_all(bytes).unwrap();
            let mut back = vec![0u8; bytes.len()];
            stdout.read_exact(&mut back).unwrap();
            assert_eq!(back, bytes);
        };
        echo_line(b"before\n");
        // A server that stops answering (as a host gone from the network): after the
        // silence limit the client reconnects, and its attempts find no answer.
        signal(&mut tunnel.server, "STOP");
        let server = tunnel.server_addr;
        connect.wait_stderr(
            &format!("server {server} unreachable since"),
            Duration::from_secs(20),
        );
        signal(&mut tunnel.server, "CONT");
        connect.wait_stderr(
            &format!("server {server} reachable again after an outage of"),
            Duration::from_secs(20),
        );
        echo_line(b"after\n");
    });
}
