//! Sessions without faults: the TcpStream behaviour the crate promises.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::Duration;

use robust_tcp::{RServerSocket, RSocket, SessionState};
use robust_tcp_testkit::bounded::run_bounded;

/// The watchdog: a hang fails the test instead of stalling `cargo test`.
const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn echo_round_trip_and_clean_close() {
    run_bounded(LIMIT, || {
        let server = RServerSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let echo = thread::spawn(move || {
            let (mut sock, _) = server.accept().unwrap();
            let mut buf = vec![0; 4096];
            let mut total = 0;
            loop {
                let n = sock.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                total += n;
                sock.write_all(&buf[..n]).unwrap();
            }
            total
        });
        let mut client = RSocket::connect(addr).unwrap();
        assert_ne!(client.session_id(), 0);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let reader = client.try_clone().unwrap();
        let expected = data.clone();
        let rx = thread::spawn(move || {
            let mut got = Vec::new();
            (&reader).read_to_end(&mut got).unwrap();
            assert_eq!(got.len(), expected.len());
            assert!(got == expected);
        });
        client.write_all(&data).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(echo.join().unwrap(), data.len());
        rx.join().unwrap();
        let status = client.status();
        assert_eq!(status.bytes_written, data.len() as u64);
        assert_eq!(status.bytes_read, data.len() as u64);
        assert_eq!(status.state, SessionState::Closing);
    });
}

#[test]
fn a_small_write_then_drop_reaches_the_peer_with_end_of_stream() {
    run_bounded(LIMIT, || {
        // Less than the acknowledgement threshold: the closing side must ask for the ACK.
        let server = RServerSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let client = thread::spawn(move || {
            let mut sock = RSocket::connect(addr).unwrap();
            sock.write_all(b"hello").unwrap();
        });
        let (mut sock, _) = server.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut got = Vec::new();
        sock.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"hello");
        client.join().unwrap();
    });
}

/// The kernel's `TCP_NODELAY` on the connection `sock` uses now.
#[cfg(target_os = "linux")]
fn kernel_nodelay(sock: &RSocket) -> Option<bool> {
    robust_tcp_testkit::session::kernel_nodelay(
        sock.local_addr().unwrap(),
        sock.peer_addr().unwrap(),
    )
}

/// `message` written on `from` and read, byte-exact, on `to`.
#[cfg(target_os = "linux")]
fn pass(from: &mut RSocket, to: &mut RSocket, message: &[u8]) {
    from.write_all(message).unwrap();
    let mut got = vec![0; message.len()];
    to.read_exact(&mut got).unwrap();
    assert_eq!(got, message);
}

// Proves: a session's connection has the session's `TCP_NODELAY` setting (Nagle on by
// default) for every write after a short exchange's first request (written before the
// ANSWER) and reply, which both go out with it on, as the handshakes leave it; and a
// reconnection's connection has the setting at once. The first exchange switches
// nothing, so a request-then-reply session makes no system call for it (before this
// test each end switched Nagle back on right after that exchange, and it failed).
#[cfg(target_os = "linux")]
#[test]
fn the_nodelay_setting_applies_from_the_write_after_the_first_exchange() {
    use robust_tcp_testkit::proxy::{CutPlan, FaultProxy};
    use robust_tcp_testkit::session::{fast_config, server_addr};

    run_bounded(LIMIT, || {
        for nodelay in [false, true] {
            let config = fast_config().nodelay(nodelay);
            let server = RServerSocket::bind_with("127.0.0.1:0", config.clone()).unwrap();
            // The ANSWER waits in the proxy until the request is written, as on any path
            // longer than a thread's wake-up.
            let plan = CutPlan::never().hold_downstream();
            let proxy = FaultProxy::start(server_addr(&server), plan).unwrap();
            let to = proxy.local_addr();
            let connecting = thread::spawn(move || RSocket::connect_with(to, config));
            let (mut accepted, _) = server.accept().unwrap();
            let mut client = connecting.join().unwrap().unwrap();
            client.write_all(b"request").unwrap();
            proxy.release_downstream();
            let mut request = [0; 7];
            accepted.read_exact(&mut request).unwrap();
            assert_eq!(&request, b"request");
            pass(&mut accepted, &mut client, b"reply");
            assert_eq!(kernel_nodelay(&client), Some(true), "client, {nodelay}");
            assert_eq!(kernel_nodelay(&accepted), Some(true), "server, {nodelay}");
            pass(&mut client, &mut accepted, b"second request");
            pass(&mut accepted, &mut client, b"second reply");
            assert_eq!(kernel_nodelay(&client), Some(nodelay), "client, {nodelay}");
            assert_eq!(
                kernel_nodelay(&accepted),
                Some(nodelay),
                "server, {nodelay}"
            );
            assert_eq!(proxy.cut_all(), 1);
            pass(&mut client, &mut accepted, b"after the cut");
            pass(&mut accepted, &mut client, b"after the cut");
            assert!(client.status().reconnections >= 1);
            assert_eq!(kernel_nodelay(&client), Some(nodelay), "client, {nodelay}");
            assert_eq!(
                kernel_nodelay(&accepted),
                Some(nodelay),
                "server, {nodelay}"
            );
        }
    });
}
