//! What dropping a session's last handle does (issue 8, item 5): `RSocket::set_linger`
//! makes the drop wait until the peer has every byte, or abort; `Config::linger_limit`
//! bounds how long a closed session lingers in the background for a peer that never reads.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use robust_tcp::{Error, RServerSocket, SessionState};
use robust_tcp_testkit::bounded::{join, run_bounded, wait_until};
use robust_tcp_testkit::payload::Payload;
use robust_tcp_testkit::proxy::{CutPlan, FaultProxy};
use robust_tcp_testkit::session::{bind, connect_pair, fast_config, server_addr};

const LIMIT: Duration = Duration::from_secs(60);
const LEN: u64 = 2 << 20;
/// What the reader leaves unread until the drop has started.
const TAIL: u64 = 4 << 10;

fn session_error(e: &io::Error) -> Option<&Error> {
    e.get_ref().and_then(|i| i.downcast_ref::<Error>())
}

// Proves: with `set_linger(Some(t))`, dropping the last handle returns only once the peer
// has read every byte, through cuts; the peer then sees the end of the stream.
#[test]
fn a_lingering_drop_returns_once_the_peer_has_every_byte() {
    run_bounded(LIMIT, || {
        let server = bind();
        let proxy =
            FaultProxy::start(server_addr(&server), CutPlan::random(6, 256 << 10)).expect("proxy");
        let (mut client, accepted) = connect_pair(&server, proxy.local_addr(), fast_config());
        let accepted = Arc::new(accepted);
        let payload = Payload::new(proxy.seed(), LEN);
        client.set_linger(Some(LIMIT)).expect("set_linger");
        assert_eq!(client.linger().expect("linger"), Some(LIMIT));

        // The reader stops short of the last bytes, at a gate that opens once the drop is
        // under way. (It reads enough before it for the writer's last write to fit in the
        // send buffer and return.)
        let gate = Arc::new(AtomicBool::new(false));
        let reader = {
            let (gate, accepted) = (Arc::clone(&gate), Arc::clone(&accepted));
            thread::spawn(move || {
                let mut got = Vec::new();
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let before_gate = (LEN - TAIL).saturating_sub(got.len() as u64);
                    if before_gate == 0 {
                        wait_until(LIMIT, "the gate", || gate.load(Ordering::SeqCst));
                    }
                    let want = match before_gate {
                        0 => buf.len(),
                        n => buf.len().min(n as usize),
                    };
                    let n = (&*accepted).read(&mut buf[..want])?;
                    if n == 0 {
                        return Ok::<_, io::Error>(got);
                    }
                    got.extend_from_slice(&buf[..n]);
                }
            })
        };
        let dropping = Arc::new(AtomicBool::new(false));
        let dropper = {
            let (dropping, accepted) = (Arc::clone(&dropping), Arc::clone(&accepted));
            let bytes = payload.bytes(0..LEN);
            thread::spawn(move || {
                client.write_all(&bytes)?;
                dropping.store(true, Ordering::SeqCst);
                drop(client);
                // What the peer's application had read when the drop returned, as its
                // session counts it: the count the acknowledgement carries is taken in
                // the same step, while the reader's thread may not have returned from
                // that read yet (a counter it kept itself failed this check 6 times in
                // 60 runs).
                Ok::<_, io::Error>(accepted.status().bytes_read)
            })
        };
        wait_until(LIMIT, "the drop to start", || {
            dropping.load(Ordering::SeqCst)
        });
        gate.store(true, Ordering::SeqCst);
        let read_at_return = join(dropper).expect("the client writes");
        assert_eq!(
            read_at_return, LEN,
            "the drop returned before the peer had every byte"
        );
        let got = join(reader).expect("the server reads to the end");
        assert!(got == payload.bytes(0..LEN), "the bytes differ");
    });
}

// Proves: with `set_linger(Some(Duration::ZERO))`, dropping the last handle aborts the
// session: the peer's read fails with a reset.
#[test]
fn a_zero_linger_drop_aborts() {
    run_bounded(LIMIT, || {
        let server = bind();
        let (client, mut accepted) = connect_pair(&server, server_addr(&server), fast_config());
        client.set_linger(Some(Duration::ZERO)).expect("set_linger");
        drop(client);
        let mut buf = [0u8; 16];
        let e = accepted
            .read(&mut buf)
            .expect_err("the peer sees the abort");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
        assert_eq!(session_error(&e), Some(&Error::PeerReset));
    });
}

// Proves: a dropped session whose peer never reads what it wrote is abandoned after
// `Config::linger_limit`: it resets, which its peer sees.
#[test]
fn a_closed_session_lingers_no_longer_than_its_limit() {
    run_bounded(LIMIT, || {
        let server = RServerSocket::bind_with("127.0.0.1:0", fast_config()).expect("bind");
        let config = fast_config().linger_limit(Duration::from_millis(500));
        let (mut client, accepted) = connect_pair(&server, server_addr(&server), config);
        client.write_all(&[7u8; 4096]).expect("write");
        // The server never reads, so never acknowledges: the client would linger forever.
        drop(client);
        wait_until(LIMIT / 2, "the abandoned session's reset", || {
            accepted.status().state == SessionState::Closed
        });
        let mut buf = [0u8; 16];
        let e = (&accepted)
            .read(&mut buf)
            .expect_err("the session was reset");
        assert_eq!(session_error(&e), Some(&Error::PeerReset), "{e}");
    });
}
