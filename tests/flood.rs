//! A flood of connections and datagrams from one host while real sessions transfer: the
//! sessions complete byte-exact, and the library's threads and the process's memory stay
//! bounded (measured here: threads named `robust-tcp*` in `/proc/self/task`, and VmRSS).
//!
//! One `#[test]`, alone in its binary, so that nothing else moves the measures.
#![cfg(target_os = "linux")]

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::thread;
use std::time::Duration;

use robust_tcp::protocol::handshake::HEADER_LEN;
use robust_tcp::RServerSocket;
use robust_tcp_testkit::bounded::{join, run_bounded};
use robust_tcp_testkit::raw::RawOpening;
use robust_tcp_testkit::rng::{fresh_seed, Rng};
use robust_tcp_testkit::session::{
    connect_pair, control_port, exchange_seeded, fast_config, server_addr,
};

const LIMIT: Duration = Duration::from_secs(120);
/// Connections of each kind: silent, half a HELLO, junk.
const FLOOD_EACH: usize = 1_000;
/// Junk datagrams to the control port.
const DATAGRAMS: usize = 20_000;
/// Real sessions transferring during the flood, and what each moves each way.
const SESSIONS: usize = 4;
const LEN: u64 = 4 << 20;
/// The process may grow by this much during the flood (kernel socket buffers do not count
/// in RSS; the library's share is its bounded handshakes, a few KiB each).
const RSS_GROWTH_BOUND_KIB: u64 = 16 << 10;

/// The process's resident memory, in KiB.
fn rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// How many of the process's threads are the library's.
fn library_threads() -> usize {
    fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .filter_map(|t| fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("robust-tcp"))
        .count()
}

/// Opens the flood's connections and sends its datagrams; returns the connections, held
/// open by the caller until the real sessions are done.
fn flood(server: SocketAddr, control_port: u16, seed: u64) -> Vec<TcpStream> {
    let mut rng = Rng::new(seed);
    let control = SocketAddr::from(([127, 0, 0, 1], control_port));
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let hello = RawOpening::new(&mut rng).hello(0, &mut rng).encode();
    let mut held = Vec::with_capacity(3 * FLOOD_EACH);
    for i in 0..3 * FLOOD_EACH {
        // The server closes what it evicts; a connect refused in a full backlog is part
        // of a flood too.
        let Ok(mut conn) = TcpStream::connect(server) else {
            continue;
        };
        let sent = match i % 3 {
            0 => Ok(()),
            1 => conn.write_all(&hello[..HEADER_LEN + 20]),
            _ => {
                let junk: Vec<u8> = (0..rng.range(1, 512))
                    .map(|_| rng.next_u64() as u8)
                    .collect();
                conn.write_all(&junk)
            }
        };
        if sent.is_ok() {
            held.push(conn);
        }
        for _ in 0..DATAGRAMS / (3 * FLOOD_EACH) + 1 {
            let len = rng.range(0, 64) as usize;
            let junk: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            let _ = udp.send_to(&junk, control);
        }
    }
    held
}

// Proves: 3,000 silent, half-open and junk connections and 20,000 junk datagrams from the
// clients' own address neither stop real sessions nor add a library thread, and the
// process's memory grows by a bounded amount.
#[test]
fn a_flood_of_connections_and_datagrams_leaves_sessions_and_resources_alone() {
    run_bounded(LIMIT, || {
        // Send buffers that do not grow: the bound is on what the flood costs, not on the
        // transfers' buffers (up to `send_buffer_max` per session and direction, by
        // design; the transfer tests make them grow).
        let fixed = fast_config().send_buffer_max(fast_config().send_buffer_size_value());
        let config = fixed.clone().max_sessions_per_address(SESSIONS + 8);
        let server = RServerSocket::bind_with("127.0.0.1:0", config).expect("bind");
        let addr = server_addr(&server);
        let port = control_port(&server);
        let pairs: Vec<_> = (0..SESSIONS)
            .map(|_| connect_pair(&server, addr, fixed.clone()))
            .collect();
        let (threads_before, rss_before) = (library_threads(), rss_kib());
        assert_eq!(threads_before, 1, "the engine alone");

        let seed = fresh_seed();
        let flooder = thread::spawn(move || flood(addr, port, seed));
        let transfers: Vec<_> = pairs
            .into_iter()
            .enumerate()
            .map(|(i, (client, accepted))| {
                thread::spawn(move || exchange_seeded(&client, &accepted, LEN, seed ^ i as u64))
            })
            .collect();
        let mut rss_peak = rss_before;
        let mut threads_peak = threads_before;
        let mut sample = || {
            rss_peak = rss_peak.max(rss_kib());
            threads_peak = threads_peak.max(library_threads());
        };
        let held = loop {
            sample();
            if flooder.is_finished() {
                break join(flooder);
            }
            thread::park_timeout(Duration::from_millis(5));
        };
        for t in transfers {
            sample();
            join(t);
        }
        sample();
        eprintln!(
            "seed {seed}: {} flood connections held, {DATAGRAMS} junk datagrams; library \
             threads {threads_before} -> peak {threads_peak}; RSS {rss_before} KiB -> peak \
             {rss_peak} KiB",
            held.len()
        );
        assert_eq!(
            threads_peak, 1,
            "the library started threads under the flood"
        );
        assert!(
            rss_peak - rss_before < RSS_GROWTH_BOUND_KIB,
            "RSS grew by {} KiB",
            rss_peak - rss_before
        );
        drop(held);
    });
}
