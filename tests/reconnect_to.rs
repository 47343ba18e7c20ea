//! `RSocket::reconnect_to`: a client session sent to another address of its server (a
//! name that resolves elsewhere now) resumes there when its connection goes, every byte
//! once; a server's session cannot be sent anywhere.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::Duration;

use robust_tcp::{RServerSocket, RSocket};
use robust_tcp_testkit::bounded::run_bounded;
use robust_tcp_testkit::proxy::{CutPlan, FaultProxy};

const LIMIT: Duration = Duration::from_secs(30);

/// Writes `bytes` and reads them back from the echo server.
fn echoed(sock: &mut RSocket, bytes: &[u8]) {
    sock.write_all(bytes).expect("write");
    let mut back = vec![0; bytes.len()];
    sock.read_exact(&mut back).expect("the echo");
    assert_eq!(back, bytes);
}

#[test]
fn a_session_sent_to_another_address_of_its_server_resumes_there() {
    run_bounded(LIMIT, || {
        let server = RServerSocket::bind("127.0.0.1:0").expect("bind");
        let addr = server.local_addr().expect("address");
        // Echoes to the end of the stream; returns how many bytes it read.
        let echo = thread::spawn(move || {
            let (mut sock, _) = server.accept().expect("accept");
            let mut buf = [0; 4096];
            let mut total = 0;
            loop {
                match sock.read(&mut buf).expect("the server's read") {
                    0 => return total,
                    n => {
                        total += n;
                        sock.write_all(&buf[..n]).expect("the server's write");
                    }
                }
            }
        });
        // Two ways to the one server: the address the opening reached, and the new one.
        let old = FaultProxy::start(addr, CutPlan::never()).expect("a proxy");
        let new = FaultProxy::start(addr, CutPlan::never()).expect("another proxy");
        let (old_addr, new_addr) = (old.local_addr(), new.local_addr());

        let mut sock = RSocket::connect(old_addr).expect("connect");
        echoed(&mut sock, b"before the move");
        sock.reconnect_to(new_addr)
            .expect("a client session is sent elsewhere");
        // The connection in use stays until it goes.
        echoed(&mut sock, b"still on the old connection");
        assert_eq!(sock.peer_addr().expect("peer"), old_addr);
        assert_eq!(new.connections(), 0);

        // The old address goes away, its connection with it: without the move, every
        // attempt would go there and be refused.
        drop(old);
        echoed(&mut sock, b"after the move");
        assert_eq!(sock.peer_addr().expect("peer"), new_addr);
        assert_eq!(new.connections(), 1);
        assert_eq!(sock.status().reconnections, 1);

        sock.shutdown(Shutdown::Write).expect("shutdown");
        let mut rest = Vec::new();
        sock.read_to_end(&mut rest).expect("the end of the echo");
        assert!(rest.is_empty());
        let sent =
            "before the move".len() + "still on the old connection".len() + "after the move".len();
        assert_eq!(echo.join().expect("the echo server"), sent);
    });
}

#[test]
fn a_server_session_is_not_sent_anywhere() {
    run_bounded(LIMIT, || {
        let server = RServerSocket::bind("127.0.0.1:0").expect("bind");
        let addr = server.local_addr().expect("address");
        let client = thread::spawn(move || {
            let mut sock = RSocket::connect(addr).expect("connect");
            sock.write_all(b"hello").expect("write");
            sock
        });
        let (accepted, _) = server.accept().expect("accept");
        let e = accepted
            .reconnect_to(addr)
            .expect_err("a server's session never dials");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        drop(client.join().expect("the client"));
    });
}
