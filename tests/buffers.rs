//! Send buffers that follow the path, and acknowledgements that never keep a writer
//! waiting for nothing, through real sockets and the engine: a buffer grows while a
//! transfer needs it and returns to its initial size once idle; bytes read are
//! acknowledged once the reader goes idle, without heartbeats or requests to prompt it.
//!
//! The exact rules and their timings are pinned in `tests/core_model.rs`, under a virtual
//! clock; here only what the engine must make happen, eventually, is checked.

use std::io::{Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use robust_tcp::{Config, RServerSocket, RSocket};
use robust_tcp_testkit::bounded::{join, run_bounded, wait_until};
use robust_tcp_testkit::check::expect_ok;
use robust_tcp_testkit::payload::Payload;
use robust_tcp_testkit::proxy::{CutPlan, FaultProxy};
use robust_tcp_testkit::session::{
    connect_pair, fast_config, server_addr, spawn_writer, with_peak_capacity,
};

const LIMIT: Duration = Duration::from_secs(60);
/// How long the engine may take to do what a timer asks: far more than any timer here.
const EVENTUALLY: Duration = Duration::from_secs(20);

/// Heartbeats off at both ends: their answers would acknowledge bytes too, and hide
/// whether the reader's own acknowledgement works.
fn quiet_config() -> Config {
    fast_config().dead_after(None)
}

fn bind_with(config: Config) -> RServerSocket {
    RServerSocket::bind_with("127.0.0.1:0", config).expect("bind")
}

fn capacity(sock: &RSocket) -> usize {
    sock.status().send_buffer_capacity
}

/// Moves `len` bytes from a client to a server, both with `config`, and checks them;
/// returns the client and the largest capacity its send buffer had meanwhile.
fn transfer(config: Config, len: u64, seed: u64) -> (RSocket, usize) {
    let server = bind_with(config.clone());
    let (client, accepted) = connect_pair(&server, server_addr(&server), config);
    let payload = Payload::new(seed, len);
    let writer = spawn_writer(&client, payload);
    let (read, peak) = with_peak_capacity(&client, || payload.verify_from(&accepted));
    expect_ok(seed, "reading", read);
    expect_ok(seed, "writing", join(writer));
    (client, peak)
}

// Proves: a small write that the peer reads is acknowledged although nothing asks for it
// (no heartbeats, no blocked writer, far below every threshold): the reader acknowledges
// once it has gone idle. Before, the bytes stayed unacknowledged for good.
#[test]
fn bytes_read_are_acknowledged_once_the_reader_goes_idle() {
    run_bounded(LIMIT, || {
        let server = bind_with(quiet_config());
        let (mut client, mut accepted) =
            connect_pair(&server, server_addr(&server), quiet_config());
        client.write_all(&[0x42; 64]).expect("write");
        let mut got = [0; 64];
        accepted.read_exact(&mut got).expect("read");
        assert_eq!(got, [0x42; 64]);
        wait_until(EVENTUALLY, "the 64 bytes to be acknowledged", || {
            client.status().unacknowledged == 0
        });
        // And again, in the other direction.
        accepted.write_all(&[0x43; 100]).expect("write back");
        let mut got = [0; 100];
        client.read_exact(&mut got).expect("read back");
        wait_until(EVENTUALLY, "the 100 bytes to be acknowledged", || {
            accepted.status().unacknowledged == 0
        });
    });
}

// Proves: a transfer makes the writer's buffer grow beyond its initial 16 KiB (and never
// beyond its maximum), and once the session is idle the engine's timer brings it back to
// its initial size: an idle session keeps no grown buffer. (The deadline that shrinks it
// appears on the engine thread, when the last acknowledgement empties the buffer.)
#[test]
fn a_buffer_grows_for_a_transfer_and_shrinks_back_once_idle() {
    run_bounded(LIMIT, || {
        let config = quiet_config().send_buffer_max(1 << 20);
        let initial = config.send_buffer_size_value();
        let (client, peak) = transfer(config, 32 << 20, 0xB5);
        assert!(peak > initial, "the buffer never grew: {peak}");
        assert!(peak <= 1 << 20, "the buffer grew past its maximum: {peak}");
        wait_until(EVENTUALLY, "the buffer to shrink back", || {
            capacity(&client) == initial
        });
        assert_eq!(client.status().unacknowledged, 0);
    });
}

/// One byte each way: the client's ANSWER is read, and each end has heard the other.
fn exchange(client: &mut RSocket, accepted: &mut RSocket) {
    let mut byte = [0];
    client.write_all(b"?").expect("client write");
    accepted.read_exact(&mut byte).expect("server read");
    accepted.write_all(b"!").expect("server write");
    client.read_exact(&mut byte).expect("client read");
    assert_eq!(&byte, b"!");
}

// Proves: the engine gives each session the path's round trip, which decides whether its
// buffer may grow past 1 MiB (the rule is pinned in tests/core_model.rs): a client times
// its HELLO until the server's ANSWER, at the opening and again at each reconnection, and
// a server times its challenge of the client's address. The proxy holds the server's
// bytes for a while after the TCP connect, which it answers itself at once: the client's
// measurement must include that wait, which a timed connect would not. (Beyond that, how
// long loopback's round trip is depends on the machine: only that a new measurement
// comes at a reconnection is checked.)
#[test]
fn the_round_trip_is_measured_at_the_opening_at_each_reconnection_and_by_the_server() {
    run_bounded(LIMIT, || {
        const HELD: Duration = Duration::from_millis(20);
        let server = bind_with(fast_config());
        let plan = CutPlan::never().reset_percent(100).hold_downstream();
        let proxy = FaultProxy::start(server_addr(&server), plan).expect("proxy");
        // `connect` returns once the HELLO is written, and `accept` at the HELLO; the
        // ANSWER waits in the proxy.
        let connecting = thread::spawn({
            let to = proxy.local_addr();
            move || RSocket::connect_with(to, fast_config())
        });
        let (mut accepted, _) = server.accept().expect("accept");
        let mut client = join(connecting).expect("connect");
        let connected = Instant::now();
        // Not a wait for anything: the delay the client's measurement must contain.
        thread::sleep(HELD);
        proxy.release_downstream();
        let held = connected.elapsed();
        exchange(&mut client, &mut accepted);
        assert_eq!(client.session_id(), accepted.session_id());
        let opening = client.status().round_trip.expect("measured at the opening");
        assert!(
            opening >= held,
            "the client measured {opening:?} while its ANSWER was held {held:?}"
        );
        wait_until(EVENTUALLY, "the server's challenge to be answered", || {
            accepted.status().round_trip.is_some()
        });
        assert_eq!(proxy.cut_all(), 1);
        exchange(&mut client, &mut accepted);
        assert!(client.status().reconnections >= 1);
        let again = client.status().round_trip.expect("measured");
        assert_ne!(again, opening, "not measured again at the reconnection");
    });
}

// Proves: with `Config::paper()` the buffer never grows, however much is written.
#[test]
fn the_papers_buffer_never_grows() {
    run_bounded(LIMIT, || {
        let config =
            Config::paper().reconnect_backoff(Duration::from_millis(1), Duration::from_millis(20));
        let (_client, peak) = transfer(config, 4 << 20, 0x9A);
        assert_eq!(peak, 16 << 10);
    });
}

// Proves: with Nagle on, small writes made back to back, which the session holds in its
// send buffer to send in one batch, reach the peer although the writer then does nothing
// at all (no further write, no read, no flush, no shutdown): the engine sends them when
// the hold's deadline comes. Then the same after a pause, with a flush instead.
#[test]
fn small_writes_held_for_a_batch_go_out_by_themselves() {
    run_bounded(LIMIT, || {
        let server = bind_with(quiet_config());
        let (mut client, mut accepted) =
            connect_pair(&server, server_addr(&server), quiet_config());
        accepted
            .set_read_timeout(Some(EVENTUALLY))
            .expect("read timeout");
        let payload = Payload::new(9, 2000);
        for round in 0..2u64 {
            for piece in 0..100 {
                let at = round * 1000 + piece * 10;
                client
                    .write_all(&payload.bytes(at..at + 10))
                    .expect("write");
            }
            if round == 1 {
                client.flush().expect("flush");
            }
            let mut got = vec![0; 1000];
            accepted
                .read_exact(&mut got)
                .expect("the held bytes arrive");
            assert_eq!(got, payload.bytes(round * 1000..round * 1000 + 1000));
        }
    });
}
