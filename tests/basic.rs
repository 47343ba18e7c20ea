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
