//! Closing through cuts: a half-closed session still carries the reply, and a session
//! dropped right after a large write still delivers every byte.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::Duration;

use robust_tcp_testkit::bounded::{join, run_bounded};
use robust_tcp_testkit::check::expect_ok;
use robust_tcp_testkit::payload::{expect_eof, Payload};
use robust_tcp_testkit::proxy::{CutPlan, FaultProxy};
use robust_tcp_testkit::session::{bind, connect_pair, fast_config, server_addr, spawn_writer};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn half_close_then_reply_through_cuts() {
    run_bounded(LIMIT, || {
        const LEN: u64 = 1 << 20;
        let server = bind();
        // Cut points up to 256 KiB: at least 8 cuts fit in the 2 MiB crossing the proxy.
        let plan = CutPlan::random(20, 256 << 10);
        let proxy = FaultProxy::start(server_addr(&server), plan).unwrap();
        let seed = proxy.seed();
        let (client, accepted) = connect_pair(&server, proxy.local_addr(), fast_config());

        let request = Payload::new(0x0E, LEN);
        let client_writer = spawn_writer(&client, request);
        expect_ok(
            seed,
            "server reading the request",
            request.verify_from(&accepted),
        );
        expect_ok(seed, "client writing the request", join(client_writer));
        // End of stream is sticky, as on TCP.
        expect_ok(seed, "second read at end", expect_eof(&accepted, LEN));

        // The half-closed client still reads: the server replies after the client's end.
        let reply = Payload::new(0x0F, LEN);
        let server_writer = spawn_writer(&accepted, reply);
        expect_ok(seed, "client reading the reply", reply.verify_from(&client));
        expect_ok(seed, "server writing the reply", join(server_writer));

        assert_eq!(accepted.status().bytes_read, LEN);
        assert_eq!(client.status().bytes_read, LEN);
        assert!(proxy.cuts() >= 5, "seed {seed}: only {} cuts", proxy.cuts());
    });
}

// Proves: the request/response pattern that half-closes (a small request, then
// shutdown(Write); the server reads to end of stream, replies and drops) works end to end,
// and that the server's end of stream implies the request is acknowledged. That it takes
// no timer (the REQ_ACK of shutdown overtakes the request and is answered once the request
// is read, not 200 ms later) is pinned under a virtual clock in tests/core_model.rs
// (`a_small_request_and_half_close_are_acknowledged_without_waiting_for_a_timer`).
#[test]
fn a_small_request_then_half_close_gets_its_reply() {
    run_bounded(LIMIT, || {
        let server = bind();
        let (mut client, accepted) = connect_pair(&server, server_addr(&server), fast_config());
        let server_side = thread::spawn(move || -> std::io::Result<Vec<u8>> {
            let mut accepted = accepted;
            let mut request = Vec::new();
            accepted.read_to_end(&mut request)?;
            accepted.write_all(&[0x5A; 300])?;
            drop(accepted);
            Ok(request)
        });
        client.write_all(&[0xA5; 64]).expect("request");
        client.shutdown(Shutdown::Write).expect("shutdown(Write)");
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).expect("reply");
        let request = join(server_side).expect("server");
        assert_eq!(request, [0xA5; 64]);
        assert_eq!(reply, [0x5A; 300]);
        // The server saw end of stream: the HALF_CLOSE came, which goes only once every
        // byte is acknowledged.
        let status = client.status();
        assert_eq!(status.unacknowledged, 0, "{status:?}");
        assert_eq!((status.bytes_written, status.bytes_read), (64, 300));
    });
}

#[test]
fn shutdown_write_returns_at_once_and_the_peer_still_gets_every_byte() {
    run_bounded(LIMIT, || {
        const LEN: u64 = 8 << 10;
        let server = bind();
        let proxy = FaultProxy::start(server_addr(&server), CutPlan::never()).unwrap();
        let seed = proxy.seed();
        let (client, accepted) = connect_pair(&server, proxy.local_addr(), fast_config());
        // Less than the send buffer: the write returns without the peer reading anything.
        let payload = Payload::new(0x5D, LEN);
        payload.write_to(&client).expect("write");
        client.shutdown(Shutdown::Write).expect("shutdown(Write)");
        // It returned while the peer had read nothing, so it did not wait for the
        // acknowledgement: every byte is still unacknowledged.
        assert_eq!(client.status().unacknowledged, LEN);
        proxy.cut_all();
        expect_ok(
            seed,
            "reading after the cut",
            payload.verify_from(&accepted),
        );
        // Nothing to read on the client: the server wrote nothing and has not closed.
        drop(accepted);
        let mut rest = Vec::new();
        (&client)
            .read_to_end(&mut rest)
            .expect("client reads the server's close");
        assert!(rest.is_empty(), "{} unexpected bytes", rest.len());
    });
}

#[test]
fn drop_right_after_an_8_mib_write_delivers_everything_through_cuts() {
    run_bounded(LIMIT, || {
        const LEN: u64 = 8 << 20;
        // Held back by the reader until the writer has dropped its socket: the drop then
        // happens with bytes still unread, which the lingering session must deliver. 4 KiB
        // stays well inside the 16 KiB send buffer, so the write can finish meanwhile.
        const TAIL: u64 = 4 << 10;
        let server = bind();
        let plan = CutPlan::random(20, 512 << 10);
        let proxy = FaultProxy::start(server_addr(&server), plan).unwrap();
        let seed = proxy.seed();
        let (client, accepted) = connect_pair(&server, proxy.local_addr(), fast_config());

        let payload = Payload::new(0xD8, LEN);
        let writer = thread::spawn(move || {
            payload.write_to(&client)?;
            drop(client);
            Ok::<_, std::io::Error>(())
        });
        expect_ok(
            seed,
            "reading",
            payload.verify_range(&accepted, 0..LEN - TAIL),
        );
        // The tail is unread until the drop returned: a drop that waited for the
        // acknowledgement of every byte would never return (the watchdog would fire).
        join(writer).unwrap_or_else(|e| panic!("seed {seed}: writing: {e}"));
        // Cut whatever connection the lingering session has now (maybe none, if it
        // already finished closing).
        proxy.cut_all();
        expect_ok(
            seed,
            "reading the tail",
            payload.verify_range(&accepted, LEN - TAIL..LEN),
        );
        expect_ok(seed, "reading the end", expect_eof(&accepted, LEN));
        assert!(
            proxy.cuts() >= 10,
            "seed {seed}: only {} cuts",
            proxy.cuts()
        );
    });
}
