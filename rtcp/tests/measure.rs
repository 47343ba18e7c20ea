//! Measurements, not tests (ignored by default): redis-benchmark directly to redis, through
//! the tunnel without cuts and with cuts; and a 256 MiB transfer through the tunnel (TLS,
//! the default, and --insecure-plaintext) against relays on the same path: one plain socat,
//! and a pair of socats with TLS between them (OpenSSL, a self-signed P-256 certificate),
//! as rtcp's client and server are a pair. Re-run with release binaries:
//!
//! ```sh
//! cargo test --release -p robust-tcp-cli --test measure -- --ignored --nocapture --test-threads 1
//! ```
//!
//! Needs redis-server, redis-benchmark, socat and openssl.

mod common;

use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{free_port, local, start_redis, Keys, Options, Proc, Target, Tunnel};
use robust_tcp_testkit::bounded::join;
use robust_tcp_testkit::payload::{expect_eof, Payload};
use robust_tcp_testkit::proxy::CutPlan;

const BENCH: [&str; 8] = ["-n", "100000", "-c", "10", "-t", "set,get", "-q", "--csv"];

/// `rtcp client` -> `rtcp server` -> `target` with no proxy between them, with TLS and
/// `keys` (unused with `--insecure-plaintext` in `extra`).
fn direct_tunnel(target: SocketAddr, extra: &[&str], keys: &Keys) -> (Proc, Proc, SocketAddr) {
    let plaintext = extra.contains(&"--insecure-plaintext");
    let server_addr = local(free_port());
    let mut args = mode_args("server", server_addr, "--forward", target, extra);
    if !plaintext {
        args.extend(keys.server_args());
    }
    let mut server = Proc::rtcp("rtcp server", &args);
    server.wait_listening(server_addr);
    let entry = local(free_port());
    let mut args = mode_args("client", entry, "--server", server_addr, extra);
    if !plaintext {
        args.extend(keys.client_args());
    }
    let mut client = Proc::rtcp("rtcp client", &args);
    client.wait_listening(entry);
    (client, server, entry)
}

/// `MODE --listen LISTEN PEER_FLAG PEER EXTRA...`: the arguments of `rtcp server` and
/// `rtcp client`, which differ only in the mode and the flag naming the far side.
fn mode_args(
    mode: &str,
    listen: SocketAddr,
    peer_flag: &str,
    peer: SocketAddr,
    extra: &[&str],
) -> Vec<String> {
    let mut args = vec![
        mode.to_string(),
        "--listen".to_string(),
        listen.to_string(),
        peer_flag.to_string(),
        peer.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn benchmark(label: &str, addr: SocketAddr) {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(BENCH)
        .output()
        .expect("run redis-benchmark");
    assert!(out.status.success(), "{label}: {}", out.status);
    println!(
        "redis-benchmark {label}:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
#[ignore = "a measurement; run with --ignored --nocapture"]
fn redis_benchmark_rates() {
    let (_redis, redis_addr) = start_redis();
    println!("flags: {}", BENCH.join(" "));
    benchmark("directly to redis", redis_addr);
    {
        let keys = Keys::new();
        let (_client, _server, entry) = direct_tunnel(redis_addr, &[], &keys);
        benchmark("through the tunnel, no cuts", entry);
    }
    let tunnel = Tunnel::start(
        redis_addr,
        CutPlan::random(30, 64 << 10),
        &Options::default(),
    );
    benchmark(
        "through the tunnel and a proxy cutting 30 times",
        tunnel.entry,
    );
    println!("cuts made: {}", tunnel.proxy.cuts());
}

const LEN: u64 = 256 << 20;

/// The CPU time (user and system) process `pid` has used so far: on a loaded machine a
/// steadier measure of a relay's cost than its rate.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields 14 and 15 (utime, stime), counted after the command's closing parenthesis,
    // in /proc's clock ticks (USER_HZ, 100 on Linux).
    let after = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// `socat LISTEN CONNECT` on a free loopback port (`listen` makes the address from it),
/// once it listens.
fn socat(listen: impl Fn(u16) -> String, connect: &str) -> (Proc, SocketAddr) {
    let port = free_port();
    let mut cmd = Command::new("socat");
    cmd.arg(listen(port))
        .arg(connect)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut relay = Proc::spawn("socat", cmd);
    relay.wait_listening(local(port));
    (relay, local(port))
}

/// Sends 256 MiB of checked payload to `entry`, which must lead to `sink`; returns MiB/s.
fn transfer(entry: SocketAddr, sink: &Target<u64>) -> f64 {
    let payload = Payload::new(7, LEN);
    let started = Instant::now();
    let mut stream = TcpStream::connect(entry).unwrap();
    let writer = {
        let stream = stream.try_clone().unwrap();
        thread::spawn(move || -> io::Result<()> {
            payload.write_to(&stream)?;
            stream.shutdown(Shutdown::Write)
        })
    };
    expect_eof(&mut stream, 0).expect("the sink's close");
    join(writer).expect("write");
    let secs = started.elapsed().as_secs_f64();
    let got = sink.next_matching(Duration::from_secs(10), |n| *n > 0);
    assert_eq!(got, LEN);
    LEN as f64 / (1 << 20) as f64 / secs
}

#[test]
#[ignore = "a measurement; run with --ignored --nocapture"]
fn file_throughput_tunnel_against_socat() {
    // Checks every byte as the tests do, so both paths pay the same generation cost.
    let sink = Target::start(|stream| {
        let payload = Payload::new(7, LEN);
        match payload.verify_from(&stream) {
            Ok(()) => LEN,
            Err(_) => 0,
        }
    });
    let plain = |port: u16| format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork");
    let (relay, entry) = socat(plain, &format!("TCP:{}", sink.addr()));
    println!("256 MiB via socat: {:.0} MiB/s", transfer(entry, &sink));
    drop(relay);

    // Two socats with TLS between them, as rtcp's pair: a self-signed certificate.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(made.success(), "openssl req: {made}");
    let tls_listen = |port: u16| {
        format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
            cert.display(),
            key.display()
        )
    };
    let (tls_server, tls_addr) = socat(tls_listen, &format!("TCP:{}", sink.addr()));
    let (tls_client, entry) = socat(plain, &format!("OPENSSL:{tls_addr},verify=0"));
    println!(
        "256 MiB via socat -> socat with TLS (OpenSSL): {:.0} MiB/s",
        transfer(entry, &sink)
    );
    drop((tls_client, tls_server));

    let keys = Keys::new();
    let runs: [&[&str]; 3] = [&["--insecure-plaintext"], &[], &["--buffer-size", "1M"]];
    for extra in runs {
        let (mut client, mut server, entry) = direct_tunnel(sink.addr(), extra, &keys);
        let what = if extra.is_empty() {
            "TLS".to_string()
        } else {
            format!("{extra:?}")
        };
        let cpu = |client: &mut Proc, server: &mut Proc| {
            cpu_secs(client.child().id()) + cpu_secs(server.child().id())
        };
        let before = cpu(&mut client, &mut server);
        let rate = transfer(entry, &sink);
        let used = cpu(&mut client, &mut server) - before;
        println!(
            "256 MiB via rtcp client -> rtcp server ({what}): {rate:.0} MiB/s, \
             {used:.2} s of CPU (client and server)"
        );
    }
}
