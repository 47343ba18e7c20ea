//! TLS over a session, case by case.

use super::*;
use crate::relay::Socket;
use robust_tcp::RServerSocket;
use robust_tcp_testkit::bounded::{join, run_bounded};
use robust_tcp_testkit::payload::Payload;
use std::time::Duration;

/// A client's and a server's [`Security`], the client authorized and the server's key
/// given to the client, their keys in `dir`.
fn pair(dir: &std::path::Path) -> (Security, Security) {
    let client = Identity::load_or_make(&dir.join("client"), keys::Role::Client).unwrap();
    let server = Identity::load_or_make(&dir.join("server"), keys::Role::Server).unwrap();
    let authorized = dir.join("authorized_keys");
    std::fs::write(&authorized, format!("{}\n", client.fingerprint)).unwrap();
    let client = Security::client(dir.join("client"), "test", Some(server.fingerprint));
    let server = Security::server(dir.join("server"), Some(authorized));
    (client.unwrap(), server.unwrap())
}

/// Two channels over one loopback session, TLS with keys in `dir`: (client, server).
fn connected(dir: &std::path::Path) -> (Channel, Channel) {
    let (client, server) = pair(dir);
    let listener = RServerSocket::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::thread::spawn(move || {
        let (session, _) = listener.accept().unwrap();
        server.secure(session).unwrap()
    });
    let client = client.secure(RSocket::connect(addr).unwrap()).unwrap();
    (client, join(accepted))
}

/// Both directions at once, as a relay runs them, each writing more than the
/// session's buffers hold while the other reads: nothing waits for a lock the other
/// holds, every byte arrives, and a half-close is an end of stream, not an error.
#[test]
fn both_directions_at_once_then_half_close() {
    run_bounded(Duration::from_secs(120), || {
        let dir = tempfile::tempdir().unwrap();
        let (client, server) = connected(dir.path());
        let up = Payload::new(1, 16 << 20);
        let down = Payload::new(2, 16 << 20);
        std::thread::scope(|scope| {
            let sends = [(&client, &up), (&server, &down)].map(|(channel, payload)| {
                scope.spawn(move || {
                    let mut chunk = vec![0u8; 64 * 1024];
                    let mut at = 0;
                    while at < payload.len() {
                        let n = chunk.len().min((payload.len() - at) as usize);
                        payload.fill(at, &mut chunk[..n]);
                        (&mut &*channel).write_all(&chunk[..n]).unwrap();
                        at += n as u64;
                    }
                    channel.shutdown_write();
                })
            });
            down.verify_from(&client).unwrap();
            up.verify_from(&server).unwrap();
            for send in sends {
                send.join().unwrap();
            }
        });
    });
}

/// Bytes after the peer's close_notify, in the same read of the session as it and
/// more than rustls takes at once, are dropped: the reader sees the end of stream,
/// and does not spin on bytes rustls will never take.
#[test]
fn bytes_after_close_notify_end_the_stream() {
    run_bounded(Duration::from_secs(20), || {
        let dir = tempfile::tempdir().unwrap();
        let (client, server) = connected(dir.path());
        (&server).write_all(b"end").unwrap();
        let tls = server.tls.as_ref().unwrap();
        let sending = lock(&tls.sending);
        let mut conn = lock(&tls.conn);
        conn.send_close_notify();
        drop(tls.send(server.session(), sending, conn).unwrap());
        std::thread::scope(|scope| {
            // Application-data records' type byte, as junk that looks like more
            // records; from a thread, since the session's writer waits for the reader.
            let junk = scope.spawn(|| (&**server.session()).write_all(&[0x17; 100_000]));
            let mut got = [0u8; 3];
            (&client).read_exact(&mut got).unwrap();
            assert_eq!(&got, b"end");
            assert_eq!((&client).read(&mut got).unwrap(), 0);
            // The junk is not read: the session's end lets its writer go.
            client.reset();
            let _ = junk.join().unwrap();
        });
    });
}

/// A session that ends without TLS's close_notify may have been cut short by
/// someone on the path: the reader sees an error, not an end of stream.
#[test]
fn an_end_without_close_notify_is_an_error() {
    run_bounded(Duration::from_secs(60), || {
        let dir = tempfile::tempdir().unwrap();
        let (client, server) = connected(dir.path());
        (&client).write_all(b"part").unwrap();
        client.session().shutdown(Shutdown::Write).unwrap();
        let mut got = [0u8; 4];
        (&server).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"part");
        let e = (&server).read(&mut got).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    });
}
