//! Bulk transfers through a proxy that cuts the TCP connection dozens of times: every byte
//! must arrive exactly once and in order, and the application must see no error. With the
//! default config the writer's send buffer grows for them, so the cuts resend from a grown
//! buffer.

use std::time::Duration;

use robust_tcp::{RServerSocket, RSocket};
use robust_tcp_testkit::bounded::{join, run_bounded};
use robust_tcp_testkit::check::expect_ok;
use robust_tcp_testkit::payload::Payload;
use robust_tcp_testkit::proxy::{CutPlan, FaultProxy};
use robust_tcp_testkit::session::{
    bind, connect_pair, exchange, fast_config, server_addr, spawn_writer, with_peak_capacity,
};

const LEN: u64 = 64 << 20;
const MIN_CUTS: usize = 50;
/// Cut points up to 1 MiB average 0.5 MiB, so the 60 planned cuts use up about 30 MiB of
/// the 64 MiB that must cross the proxy: all of them happen, with a wide margin.
const PLAN_CUTS: usize = 60;
const MAX_CUT_BYTES: u64 = 1 << 20;
const LIMIT: Duration = Duration::from_secs(60);

/// A server, a cutting proxy in front of it and a session through the proxy.
struct Setup {
    // Field order is drop order: the sessions go first, then the proxy, then the server.
    client: RSocket,
    accepted: RSocket,
    proxy: FaultProxy,
    _server: RServerSocket,
}

fn setup() -> Setup {
    let server = bind();
    let proxy = FaultProxy::start(
        server_addr(&server),
        CutPlan::random(PLAN_CUTS, MAX_CUT_BYTES),
    )
    .unwrap();
    let (client, accepted) = connect_pair(&server, proxy.local_addr(), fast_config());
    Setup {
        client,
        accepted,
        proxy,
        _server: server,
    }
}

impl Setup {
    /// The checks every transfer ends with: enough cuts, and the client saw them.
    fn assert_cut_and_reconnected(&self) {
        let seed = self.proxy.seed();
        let cuts = self.proxy.cuts();
        assert!(cuts >= MIN_CUTS, "seed {seed}: only {cuts} cuts happened");
        let status = self.client.status();
        assert!(
            status.reconnections > 0,
            "seed {seed}: {cuts} cuts but the client reports no reconnection: {status:?}"
        );
    }

    fn expect_ok(&self, what: &str, result: std::io::Result<()>) {
        expect_ok(self.proxy.seed(), what, result);
    }

    /// The writer's send buffer grew for the transfer (its bytes then resent from the
    /// grown buffer after each cut), within its maximum.
    fn assert_grew(&self, peak: usize) {
        let config = fast_config();
        let seed = self.proxy.seed();
        assert!(
            peak > config.send_buffer_size_value() && peak <= config.send_buffer_max_value(),
            "seed {seed}: the send buffer peaked at {peak} bytes"
        );
    }
}

#[test]
fn client_to_server_64_mib_through_cuts() {
    run_bounded(LIMIT, || {
        let s = setup();
        let payload = Payload::new(0xC2, LEN);
        let writer = spawn_writer(&s.client, payload);
        let (read, peak) = with_peak_capacity(&s.client, || payload.verify_from(&s.accepted));
        s.expect_ok("server reading", read);
        s.expect_ok("client writing", join(writer));
        s.assert_cut_and_reconnected();
        s.assert_grew(peak);
        assert_eq!(s.client.status().bytes_written, LEN);
        assert_eq!(s.accepted.status().bytes_read, LEN);
    });
}

#[test]
fn server_to_client_64_mib_through_cuts() {
    run_bounded(LIMIT, || {
        let s = setup();
        let payload = Payload::new(0x52, LEN);
        let writer = spawn_writer(&s.accepted, payload);
        let (read, peak) = with_peak_capacity(&s.accepted, || payload.verify_from(&s.client));
        s.expect_ok("client reading", read);
        s.expect_ok("server writing", join(writer));
        s.assert_cut_and_reconnected();
        s.assert_grew(peak);
        assert_eq!(s.client.status().bytes_read, LEN);
        assert_eq!(s.accepted.status().bytes_written, LEN);
    });
}

#[test]
fn both_ways_at_once_64_mib_each_through_cuts() {
    run_bounded(LIMIT, || {
        let s = setup();
        let upstream = Payload::new(0xB0, LEN);
        let downstream = Payload::new(0xB1, LEN);
        exchange(&s.client, &s.accepted, upstream, downstream, s.proxy.seed());
        s.assert_cut_and_reconnected();
        let (client, server) = (s.client.status(), s.accepted.status());
        assert_eq!((client.bytes_written, client.bytes_read), (LEN, LEN));
        assert_eq!((server.bytes_written, server.bytes_read), (LEN, LEN));
    });
}
