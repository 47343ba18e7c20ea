//! Real programs no one here wrote, through the tunnel while a proxy cuts it: redis-server
//! behind `rtcp server`, redis-benchmark and redis-cli in front of `rtcp client`.
//!
//! Needs `redis-server`, `redis-cli` and `redis-benchmark` (Debian: redis-server,
//! redis-tools; `.ci/run` installs them). Without them the tests fail when `CI` is set,
//! and are skipped with a message otherwise.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::Duration;

use common::{have_programs, start_redis, Options, Tunnel};
use robust_tcp_testkit::bounded::{join, run_bounded};
use robust_tcp_testkit::payload::Payload;
use robust_tcp_testkit::proxy::CutPlan;

const TOOLS: [&str; 3] = ["redis-server", "redis-cli", "redis-benchmark"];

/// Whether the redis tools are installed; if not, fails under CI and says so otherwise.
fn have_redis(test: &str) -> bool {
    have_programs(test, &TOOLS, "redis-server and redis-tools")
}

/// Runs a redis command-line tool to completion, feeding it `stdin`; the watchdog of the
/// calling test bounds it.
fn run_tool(program: &str, args: &[String], stdin: Vec<u8>) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let mut pipe = child.stdin.take().unwrap();
    // Written from a thread: a tool that answers while still reading must not deadlock
    // against a test that only reads its output after writing everything.
    let feeder = thread::spawn(move || pipe.write_all(&stdin));
    let output = child.wait_with_output().expect("wait for the tool");
    // A tool that exits without reading all of stdin breaks the pipe; its exit status
    // reports that case.
    let _ = join(feeder);
    output
}

/// Runs redis-benchmark's `tests` (its `-t`), 20,000 requests each, over `clients`
/// connections through `tunnel`, and checks that every request succeeded and that each
/// of `results` (the names it reports them under) ran to its end.
fn benchmark(tunnel: &Tunnel, clients: &str, tests: &str, results: &[&str]) {
    let mut args = tunnel_args(tunnel.entry);
    args.extend(["-n", "20000", "-c", clients, "-t", tests, "-q"].map(String::from));
    let out = run_tool("redis-benchmark", &args, Vec::new());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // -q still redraws a progress line with carriage returns; keep the final rates, and
    // only the end of the output for failure messages.
    let rates: Vec<&str> = stdout
        .split(['\r', '\n'])
        .filter(|line| line.contains("requests per second"))
        .collect();
    eprintln!("redis-benchmark through the tunnel: {rates:?}");
    let end = last_chars(&stdout, 2000);
    // redis-benchmark exits non-zero when a connection fails ("Error: Server closed the
    // connection") and prints "Error from server" for error replies; either would be a
    // request that did not succeed.
    assert!(
        out.status.success(),
        "redis-benchmark: {}\n{end}{stderr}\n{}",
        out.status,
        tunnel.logs()
    );
    let all = format!("{stdout}{stderr}").to_lowercase();
    assert!(!all.contains("error"), "{end}{stderr}\n{}", tunnel.logs());
    // Each test's final line: "SET: 4133.94 requests per second, p50=...".
    for test in results {
        let done = format!("{test}: ");
        let finished = rates.iter().any(|l| l.trim_start().starts_with(&done));
        assert!(finished, "no {test} result in:\n{end}");
    }
}

/// The last `n` characters of `text`.
fn last_chars(text: &str, n: usize) -> String {
    let skip = text.chars().count().saturating_sub(n);
    text.chars().skip(skip).collect()
}

fn tunnel_args(addr: SocketAddr) -> Vec<String> {
    vec![
        "-h".into(),
        addr.ip().to_string(),
        "-p".into(),
        addr.port().to_string(),
    ]
}

#[test]
fn redis_benchmark_succeeds_through_at_least_20_cuts() {
    if !have_redis("redis_benchmark_succeeds_through_at_least_20_cuts") {
        return;
    }
    run_bounded(Duration::from_secs(180), || {
        let (_redis, redis_addr) = start_redis();
        // 10 connections each carry about 4,000 requests of some 30 bytes each way, about
        // 250 KB; cut points of at most 64 KiB give each several cuts, 30 in all.
        let mut tunnel = Tunnel::start(
            redis_addr,
            CutPlan::random(30, 64 << 10),
            &Options::default(),
        );
        benchmark(&tunnel, "10", "set,get", &["SET", "GET"]);
        let cuts = tunnel.proxy.cuts();
        assert!(cuts >= 20, "only {cuts} cuts\n{}", tunnel.logs());
        tunnel.assert_running();
    });
}

/// A connection pool through one `rtcp client` with the defaults: 500 connections come
/// from one address, past the library's per-address default of 256, and all of them work.
#[test]
fn redis_benchmark_with_500_clients_through_one_tunnel_with_defaults() {
    if !have_redis("redis_benchmark_with_500_clients_through_one_tunnel_with_defaults") {
        return;
    }
    run_bounded(Duration::from_secs(90), || {
        let (_redis, redis_addr) = start_redis();
        let mut tunnel = Tunnel::start(redis_addr, CutPlan::never(), &Options::default());
        benchmark(
            &tunnel,
            "500",
            "ping,set,get",
            &["PING_INLINE", "PING_MBULK", "SET", "GET"],
        );
        tunnel.assert_running();
    });
}

#[test]
fn redis_cli_set_then_get_of_several_mib_is_byte_exact() {
    if !have_redis("redis_cli_set_then_get_of_several_mib_is_byte_exact") {
        return;
    }
    run_bounded(Duration::from_secs(120), || {
        let (_redis, redis_addr) = start_redis();
        let mut tunnel =
            Tunnel::start(redis_addr, CutPlan::random(8, 2 << 20), &Options::default());
        // Arbitrary binary bytes: redis strings and redis-cli -x are binary-safe.
        let value = Payload::new(0x7ED15, 6 << 20).bytes(0..6 << 20);

        let mut set = tunnel_args(tunnel.entry);
        set.extend(["-x".into(), "SET".into(), "rtcp:big".into()]);
        let out = run_tool("redis-cli", &set, value.clone());
        assert!(
            out.status.success() && out.stdout == b"OK\n",
            "SET: {} {:?} {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tunnel.logs()
        );

        let mut get = tunnel_args(tunnel.entry);
        get.extend(["GET".into(), "rtcp:big".into()]);
        let out = run_tool("redis-cli", &get, Vec::new());
        assert!(out.status.success(), "GET: {}", out.status);
        // Not a terminal, so redis-cli prints the raw value and a newline.
        let got = out.stdout.strip_suffix(b"\n").unwrap_or(&out.stdout);
        assert_eq!(got.len(), value.len(), "GET length\n{}", tunnel.logs());
        if let Some(i) = got.iter().zip(&value).position(|(a, b)| a != b) {
            panic!("GET byte {i} differs\n{}", tunnel.logs());
        }
        assert!(
            tunnel.proxy.cuts() >= 1,
            "no cut happened\n{}",
            tunnel.logs()
        );
        tunnel.assert_running();
    });
}
