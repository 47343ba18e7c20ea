//! A server's fixed control port (`Config::control_port`, issue 8 item 1), and the control
//! sockets' dual stack: IPv4 and IPv6 clients of one server.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use robust_tcp::{Config, RServerSocket};
use robust_tcp_testkit::bounded::{run_bounded, wait_until};
use robust_tcp_testkit::proxy::{CutPlan, FaultProxy};
use robust_tcp_testkit::session::{
    connect_pair, control_port, exchange_seeded, fast_config, server_addr,
};

const LIMIT: Duration = Duration::from_secs(60);
const LEN: u64 = 4 << 20;

/// A UDP port nothing uses right now, on every address: bound, read and released.
fn free_udp_port() -> u16 {
    let probe = UdpSocket::bind("[::]:0").or_else(|_| UdpSocket::bind("0.0.0.0:0"));
    probe
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
}

// Proves: a server that fixes its control port names it in its answers and its sessions
// use it (their acknowledgements cross it while a transfer goes through cuts); a second
// server of the process may fix the same port; a port another socket holds fails the bind
// with the system's error.
#[test]
fn a_fixed_control_port_is_named_in_answers_and_carries_the_sessions() {
    run_bounded(LIMIT, || {
        let port = free_udp_port();
        let config = fast_config().control_port(Some(port));
        let server = RServerSocket::bind_with("127.0.0.1:0", config.clone()).expect("bind");
        assert_eq!(control_port(&server), port);
        let twin = RServerSocket::bind_with("127.0.0.1:0", config).expect("bind a twin");
        assert_eq!(control_port(&twin), port);

        let proxy =
            FaultProxy::start(server_addr(&server), CutPlan::random(8, 512 << 10)).expect("proxy");
        let (client, accepted) = connect_pair(&server, proxy.local_addr(), fast_config());
        exchange_seeded(&client, &accepted, LEN, proxy.seed());
        assert!(
            client.status().reconnections > 0,
            "the transfer went through cuts"
        );

        let taken = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
        let busy = taken.local_addr().expect("its address").port();
        let config = Config::default().control_port(Some(busy));
        match RServerSocket::bind_with("127.0.0.1:0", config) {
            Ok(_) => panic!("a taken control port must fail the bind"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}"),
        }
    });
}

// Proves: the control sockets take IPv6 and IPv4 alike: a server on every address serves
// a client over ::1 and one over 127.0.0.1, each through cuts.
#[test]
fn ipv4_and_ipv6_clients_share_one_server() {
    run_bounded(LIMIT, || {
        let Ok(server) = RServerSocket::bind_with("[::]:0", fast_config()) else {
            eprintln!("skipped: this machine has no IPv6");
            return;
        };
        let port = server_addr(&server).port();
        for ip in ["::1", "127.0.0.1"] {
            let target = SocketAddr::new(ip.parse().expect("an IP"), port);
            let proxy = FaultProxy::start(target, CutPlan::random(4, 512 << 10)).expect("proxy");
            let (client, accepted) = connect_pair(&server, proxy.local_addr(), fast_config());
            exchange_seeded(&client, &accepted, LEN, proxy.seed());
            assert!(client.status().reconnections > 0, "{ip}: no cut happened");
        }
    });
}

// Proves: `Status` shows where control datagrams go (the server's control port on the
// client; on the server, the client's address once it answered a challenge), the TCP
// connection's addresses, and a peer heard within a heartbeat or so.
#[test]
fn status_shows_the_control_path_and_the_addresses() {
    run_bounded(LIMIT, || {
        let server = RServerSocket::bind_with("127.0.0.1:0", fast_config()).expect("bind");
        let addr = server_addr(&server);
        let (client, accepted) = connect_pair(&server, addr, fast_config());
        let udp = SocketAddr::new(addr.ip(), control_port(&server));
        let c = client.status();
        assert_eq!(c.control_peer, Some(udp));
        assert_eq!(c.peer_addr, Some(addr));
        assert_eq!(accepted.status().peer_addr, c.local_addr);
        // The client's first datagram is challenged, and the answer makes the path.
        wait_until(
            LIMIT / 2,
            "the server to learn the client's control address",
            || accepted.status().control_peer.is_some(),
        );
        let learned = accepted.status().control_peer.expect("learned");
        assert_eq!(learned.ip(), addr.ip());
        assert!(client.status().last_heard < Duration::from_secs(3));
    });
}

// Proves: where UDP gets through (loopback), the control datagrams stay on it.
#[test]
fn on_loopback_control_stays_on_udp() {
    run_bounded(LIMIT, || {
        let server = RServerSocket::bind_with("127.0.0.1:0", fast_config()).expect("bind");
        let (client, accepted) = connect_pair(&server, server_addr(&server), fast_config());
        exchange_seeded(&client, &accepted, LEN, 11);
        assert!(!client.status().control_over_tcp);
        assert!(!accepted.status().control_over_tcp);
    });
}

// Proves: a server that listens on one address gets its control socket on that address
// only, with a fixed port or without: the same UDP port stays free on another loopback
// address (127.0.0.2), which a socket on every address would hold; and its sessions run
// through cuts on it.
#[test]
fn a_server_on_one_address_binds_its_control_socket_there_only() {
    run_bounded(LIMIT, || {
        for fixed in [None, Some(free_udp_port())] {
            let config = fast_config().control_port(fixed);
            let server = RServerSocket::bind_with("127.0.0.1:0", config).expect("bind");
            let port = control_port(&server);
            if let Some(fixed) = fixed {
                assert_eq!(port, fixed);
            }
            let beside = UdpSocket::bind(("127.0.0.2", port));
            assert!(
                beside.is_ok(),
                "control port {port} (fixed: {fixed:?}) is held beyond 127.0.0.1: {beside:?}"
            );
            let proxy = FaultProxy::start(server_addr(&server), CutPlan::random(4, 512 << 10))
                .expect("proxy");
            let (client, accepted) = connect_pair(&server, proxy.local_addr(), fast_config());
            exchange_seeded(&client, &accepted, LEN, proxy.seed());
            assert!(!client.status().control_over_tcp, "control left UDP");
        }
    });
}
