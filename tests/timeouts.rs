//! A call with a timeout returns within about its timeout, whatever holds it up: a TCP
//! write into a peer that reads nothing, another writer holding the connection, another
//! reader waiting for bytes. Each call is timed against [`BOUND`]; a call that waits
//! forever is caught by the watchdog instead.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use robust_tcp::Config;
use robust_tcp_testkit::bounded::{join, run_bounded, wait_until};
use robust_tcp_testkit::check::{assert_kind, expect_ok, session_error};
use robust_tcp_testkit::payload::{expect_eof, Payload};
use robust_tcp_testkit::proxy::{CutPlan, FaultProxy};
use robust_tcp_testkit::session::{bind, connect_pair, fast_config, server_addr};

const LIMIT: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(10);
/// The timeout of the calls under test.
const TIMEOUT: Duration = Duration::from_millis(200);
/// How long a call with [`TIMEOUT`] may take. A bound that tells "returned" from "waits
/// for something unbounded", not a speed claim: two cores shared with compilers.
const BOUND: Duration = Duration::from_secs(5);
/// Half the clients' send buffer: a write of this size fits in it, so any wait is in the
/// TCP write (far more than loopback's socket buffers hold while nobody reads).
const HALF: u64 = 32 << 20;

/// A client whose 64 MiB send buffer holds two [`HALF`] writes.
fn big_buffer_config() -> Config {
    fast_config()
        .send_buffer_size(2 * HALF as usize)
        .ack_threshold(HALF as usize / 2)
}

/// Runs `call` and returns its result, failing unless it returned within [`BOUND`].
fn timed<T>(what: &str, call: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let start = Instant::now();
    let result = call();
    let took = start.elapsed();
    assert!(
        took < BOUND,
        "{what} with a {TIMEOUT:?} timeout took {took:?}"
    );
    result
}

/// The bytes a write with a timeout wrote: all or part (`Ok`), or none (`WouldBlock`).
fn written(what: &str, result: io::Result<usize>) -> u64 {
    match result {
        Ok(n) => n as u64,
        Err(e) => {
            assert_kind(what, Err::<(), _>(e), io::ErrorKind::WouldBlock);
            0
        }
    }
}

// Proves: a write timeout bounds a write whose bytes fit the send buffer but not the TCP
// connection (the server application reads nothing): it returns Ok(n) or WouldBlock in
// time, and the server then reads exactly those n bytes and end of stream.
#[test]
fn a_write_timeout_bounds_a_write_stuck_in_tcp() {
    run_bounded(LIMIT, || {
        let server = bind();
        let (client, accepted) = connect_pair(&server, server_addr(&server), big_buffer_config());
        client
            .set_write_timeout(Some(TIMEOUT))
            .expect("set_write_timeout");
        let payload = Payload::new(0x71, HALF);
        let data = payload.bytes(0..HALF);
        let what = "a 32 MiB write nobody reads";
        let n = written(what, timed(what, || (&client).write(&data)));

        client.shutdown(Shutdown::Write).expect("shutdown(Write)");
        Payload::new(0x71, n)
            .verify_from(&accepted)
            .expect("the server reads what the write took, then end of stream");
    });
}

// Proves: a writer with a timeout is not held up by another writer blocked without one
// (in the TCP write, the peer reading nothing): it returns in time, and every byte of
// both writes then arrives in order.
#[test]
fn a_write_timeout_bounds_the_wait_behind_another_writer() {
    run_bounded(LIMIT, || {
        let server = bind();
        let (client, accepted) = connect_pair(&server, server_addr(&server), big_buffer_config());
        let payload = Payload::new(0x72, 2 * HALF);
        let first = {
            let sock = client.try_clone().expect("try_clone for the first writer");
            let data = payload.bytes(0..HALF);
            thread::spawn(move || (&sock).write_all(&data))
        };
        // Its bytes are in the stream before the second writer's: the check below relies
        // on that order. (On a library that writes to TCP from the caller's thread, the
        // first writer is now blocked there.)
        wait_until(WAIT, "the first writer's bytes to be taken", || {
            client.status().bytes_written == HALF || first.is_finished()
        });

        client
            .set_write_timeout(Some(TIMEOUT))
            .expect("set_write_timeout");
        let data = payload.bytes(HALF..2 * HALF);
        let what = "a write behind a blocked writer";
        let n = written(what, timed(what, || (&client).write(&data)));

        // Reading lets the first writer finish; then everything was written.
        let total = HALF + n;
        expect_ok(
            0x72,
            "reading both writes",
            payload.verify_range(&accepted, 0..total),
        );
        expect_ok(0x72, "the first writer", join(first));
        client.shutdown(Shutdown::Write).expect("shutdown(Write)");
        expect_ok(0x72, "end of stream", expect_eof(&accepted, total));
    });
}

// Proves: a reader with a timeout is not held up by another reader blocked without one:
// it fails with WouldBlock (carrying no session error) in time; the blocked reader then
// gets the bytes the server writes.
#[test]
fn a_read_timeout_bounds_the_wait_behind_another_reader() {
    run_bounded(LIMIT, || {
        let server = bind();
        let (client, accepted) = connect_pair(&server, server_addr(&server), fast_config());
        let first = {
            let sock = client.try_clone().expect("try_clone for the first reader");
            thread::spawn(move || {
                let mut got = [0u8; 4];
                (&sock).read_exact(&mut got).map(|()| got)
            })
        };
        wait_until(WAIT, "the first read to block", || {
            client.status().blocked_read.is_some()
        });

        client
            .set_read_timeout(Some(TIMEOUT))
            .expect("set_read_timeout");
        let what = "a read behind a blocked reader";
        let result = timed(what, || (&client).read(&mut [0u8; 16]));
        let e = assert_kind(what, result, io::ErrorKind::WouldBlock);
        assert_eq!(session_error(&e), None, "a timeout carries a session error");

        // The first reader waits without a timeout, as when it started.
        client
            .set_read_timeout(None)
            .expect("clear the read timeout");
        (&accepted).write_all(b"wake").expect("server write");
        let got = join(first).expect("the first reader");
        assert_eq!(&got, b"wake");
        drop(accepted);
        expect_ok(0, "end of stream", expect_eof(&client, 4));
    });
}

// Proves: when the engine is the one sending (a write timeout left the rest of a write to
// it) and the connection fails under that send, the client reconnects by itself, without
// any help from the server's application (which touches nothing until the client has
// reconnected: its own read would notice the cut and tell the client). Then every byte
// arrives. Before the engine looked at sessions whose duties changed on its own thread,
// the failure was recorded and the reconnection never started.
#[test]
fn a_cut_under_the_engines_resend_starts_a_reconnection() {
    run_bounded(LIMIT, || {
        let server = bind();
        let proxy = FaultProxy::start(server_addr(&server), CutPlan::never()).unwrap();
        let seed = proxy.seed();
        let (client, accepted) = connect_pair(&server, proxy.local_addr(), big_buffer_config());
        let payload = Payload::new(seed, HALF);
        let data = payload.bytes(0..HALF);
        client.set_write_timeout(Some(TIMEOUT)).unwrap();
        let n = written(
            "a write into a peer that reads nothing",
            (&client).write(&data),
        );
        assert_eq!(n, HALF, "the write fits the send buffer");
        wait_until(WAIT, "the engine to take over the write", || {
            client.status().blocked_write.is_none()
        });
        assert_eq!(proxy.cut_all(), 1, "no live connection to cut");
        wait_until(WAIT, "the client to reconnect on its own", || {
            client.status().reconnections >= 1
        });
        client.shutdown(Shutdown::Write).unwrap();
        expect_ok(
            seed,
            "reading after the cut",
            payload.verify_from(&accepted),
        );
    });
}
