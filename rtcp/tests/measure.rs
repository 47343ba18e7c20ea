//! Measurements, not tests (ignored by default): redis-benchmark directly to redis, through
//! the tunnel without cuts and with cuts; and a 256 MiB transfer through the tunnel against
//! a plain relay (socat) on the same path. Re-run with release binaries:
//!
//! ```sh
//! cargo test --release -p rtcp --test measure -- --ignored --nocapture --test-threads 1
//! ```
//!
//! Needs redis-server, redis-benchmark and socat.

mod common;

use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{free_port, local, start_redis, Options, Proc, Target, Tunnel};
use robust_tcp_testkit::bounded::join;
use robust_tcp_testkit::payload::{expect_eof, Payload};
use robust_tcp_testkit::proxy::CutPlan;

const BENCH: [&str; 8] = ["-n", "100000", "-c", "10", "-t", "set,get", "-q", "--csv"];

/// `rtcp client` -> `rtcp server` -> `target` with no proxy between them.
fn direct_tunnel(target: SocketAddr, extra: &[&str]) -> (Proc, Proc, SocketAddr) {
    let server_addr = local(free_port());
    let args = mode_args("server", server_addr, "--forward", target, extra);
    let mut server = Proc::rtcp("rtcp server", &args);
    server.wait_listening(server_addr);
    let entry = local(free_port());
    let args = mode_args("client", entry, "--server", server_addr, extra);
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
        let (_client, _server, entry) = direct_tunnel(redis_addr, &[]);
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
    let socat_port = free_port();
    let mut cmd = Command::new("socat");
    cmd.arg(format!(
        "TCP-LISTEN:{socat_port},bind=127.0.0.1,reuseaddr,fork"
    ))
    .arg(format!("TCP:{}", sink.addr()))
    .stdin(Stdio::null())
    .stdout(Stdio::null());
    let mut socat = Proc::spawn("socat", cmd);
    socat.wait_listening(local(socat_port));
    println!(
        "256 MiB via socat: {:.0} MiB/s",
        transfer(local(socat_port), &sink)
    );
    drop(socat);
    for extra in [&[][..], &["--buffer-size", "1M"][..]] {
        let (_client, _server, entry) = direct_tunnel(sink.addr(), extra);
        println!(
            "256 MiB via rtcp client -> rtcp server {extra:?}: {:.0} MiB/s",
            transfer(entry, &sink)
        );
    }
}
