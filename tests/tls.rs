//! TLS (rustls) over a robust session through a proxy that cuts the TCP connection dozens
//! of times, once on purpose in the middle of the TLS handshake. TLS must see an intact
//! byte stream all along: the handshake completes, every byte arrives both ways, and each
//! side ends on the other's `close_notify`, with no TLS error and no truncation.
//!
//! `examples/tls.rs` explains why this works; here it is checked.

use std::io::{self, Write};
use std::ops::Range;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use robust_tcp::{Config, RServerSocket, RSocket, Status};
use robust_tcp_testkit::bounded::{join, run_bounded, wait_until};
use robust_tcp_testkit::payload::{expect_eof, Payload};
use robust_tcp_testkit::proxy::{CutPlan, FaultProxy};
use robust_tcp_testkit::rng::Rng;
use robust_tcp_testkit::session::{connect_pair, fast_config, server_addr};
use robust_tcp_testkit::tls as tls_support;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection, StreamOwned};

/// Bytes of application data each way.
const LEN: u64 = 8 << 20;
/// The largest message; sizes vary from 1 byte up, so TLS carries records of every size.
const MAX_MESSAGE: u64 = 64 << 10;
/// Cut points up to 256 KiB average 128 KiB, so the 60 planned cuts use up about 7.5 MiB of
/// the more than 16 MiB (data, TLS overhead, resent bytes) that cross the proxy: all of
/// them happen, with a wide margin.
const PLAN_CUTS: usize = 60;
const MAX_CUT_BYTES: u64 = 256 << 10;
const MIN_CUTS: usize = 40;
const LIMIT: Duration = Duration::from_secs(30);
/// How long finding a live TCP connection to cut during the handshake may take.
const WAIT: Duration = Duration::from_secs(10);

#[test]
fn tls_both_ways_through_cuts() {
    run_bounded(LIMIT, || {
        let started = Instant::now();
        let (server_config, client_config) = tls_support::configs().expect("TLS configs");
        let server = RServerSocket::bind_with("127.0.0.1:0", config()).expect("bind");
        let plan = CutPlan::random(PLAN_CUTS, MAX_CUT_BYTES);
        let proxy = FaultProxy::start(server_addr(&server), plan).expect("start the proxy");
        let seed = proxy.seed();
        let (client, accepted) = connect_pair(&server, proxy.local_addr(), config());
        let exchange = Exchange::new(seed);

        let server_side = {
            let exchange = exchange.clone();
            thread::Builder::new()
                .name("tls-server".into())
                .spawn(move || exchange.serve(server_config, accepted))
                .expect("spawn the TLS server thread")
        };
        // On an error `run_client` drops the client's stream, which ends the server's side
        // too, so the join below returns with both errors (the watchdog bounds it anyway).
        let client_result = exchange.run_client(client_config, client, &proxy);
        let (client, server) = match (client_result, join(server_side)) {
            (Ok(client), Ok(server)) => (client, server),
            (client, server) => panic!(
                "seed {seed}: the TLS exchange failed; client: {:?}; server: {:?}",
                client.err(),
                server.err()
            ),
        };

        let cuts = proxy.cuts();
        let (up, down) = (client.status.bytes_written, client.status.bytes_read);
        eprintln!(
            "TLS over a robust session: {LEN} bytes each way in {} messages, {}; {up} bytes \
             of TLS records up and {down} down; {cuts} cuts ({} during the TLS handshake), \
             {} reconnections; {:?}",
            exchange.messages.len(),
            client.negotiated,
            client.handshake_cuts,
            client.status.reconnections,
            started.elapsed()
        );
        assert!(
            client.handshake_cuts > 0,
            "seed {seed}: no cut during the TLS handshake"
        );
        assert!(cuts >= MIN_CUTS, "seed {seed}: only {cuts} cuts happened");
        assert!(
            client.status.reconnections > 0,
            "seed {seed}: {cuts} cuts but the client reports no reconnection: {:?}",
            client.status
        );
        // The session carried the TLS records exactly once: what one side wrote, the other
        // read, no more and no less (and more than the data, for the TLS overhead).
        assert_eq!(
            (server.bytes_read, server.bytes_written),
            (up, down),
            "seed {seed}: the two sides disagree on the bytes of TLS records"
        );
        assert!(
            up > LEN && down > LEN,
            "seed {seed}: {up} and {down} bytes of TLS records for {LEN} bytes of data"
        );
    });
}

/// The sessions' config: [`fast_config`], without Nagle's algorithm. The exchange is
/// request and response; with Nagle, the tail of each message would wait for the peer's
/// delayed acknowledgement of its head, some 40 ms a message.
fn config() -> Config {
    fast_config().nodelay(true)
}

/// What the client saw.
struct ClientReport {
    /// Cuts from just before the TLS handshake to its end.
    handshake_cuts: usize,
    /// The TLS version and cipher suite.
    negotiated: String,
    /// The client session's status at the end.
    status: Status,
}

/// The messages of the exchange, in lock step: the client sends `up[range]`, the server
/// checks it and answers `down[range]`, which the client checks before the next message.
///
/// Lock step, because a TLS connection is one state machine that one thread drives at a
/// time; each side writes only while the other reads, so no write waits on a full buffer
/// that nobody empties.
#[derive(Clone)]
struct Exchange {
    up: Payload,
    down: Payload,
    messages: Arc<Vec<Range<u64>>>,
}

impl Exchange {
    /// The payloads and message sizes drawn from `seed`, so that a failure replays from it.
    fn new(seed: u64) -> Exchange {
        let mut sizes = Rng::new(seed ^ 2);
        let mut messages = Vec::new();
        let mut pos = 0;
        while pos < LEN {
            let end = (pos + sizes.range(1, MAX_MESSAGE)).min(LEN);
            messages.push(pos..end);
            pos = end;
        }
        Exchange {
            up: Payload::new(seed, LEN),
            down: Payload::new(seed ^ 1, LEN),
            messages: Arc::new(messages),
        }
    }

    /// The server side, on the accepted session: answers every message, then ends on the
    /// client's `close_notify` with its own. Returns the session's final status.
    fn serve(&self, config: Arc<ServerConfig>, sock: RSocket) -> io::Result<Status> {
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        let mut tls = StreamOwned::new(conn, sock);
        // The handshake runs within the first read.
        for range in self.messages.iter() {
            self.up.verify_range(&mut tls, range.clone())?;
            send(&mut tls, &self.down, range.clone())?;
        }
        // rustls reports the client's close_notify as the end of the stream, and a stream
        // that ends without it as an error.
        expect_eof(&mut tls, LEN)?;
        tls_support::close(&mut tls.conn, &mut tls.sock)?;
        Ok(tls.sock.status())
    }

    /// The client side: the handshake, with a cut while it runs, then every message, then
    /// `close_notify` and the server's own.
    fn run_client(
        &self,
        config: Arc<ClientConfig>,
        sock: RSocket,
        proxy: &FaultProxy,
    ) -> io::Result<ClientReport> {
        let conn =
            ClientConnection::new(config, tls_support::server_name()).map_err(io::Error::other)?;
        let mut tls = StreamOwned::new(conn, sock);

        // The handshake step by step, to cut the TCP connection in its middle: the
        // ClientHello goes into the session, then the connection carrying it is cut
        // (waiting for one if a planned cut just took it), then the handshake goes on.
        let before = proxy.cuts();
        tls.conn.write_tls(&mut tls.sock)?;
        wait_until(WAIT, "a live TCP connection to cut", || proxy.cut_all() > 0);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        let handshake_cuts = proxy.cuts() - before;

        for range in self.messages.iter() {
            send(&mut tls, &self.up, range.clone())?;
            self.down.verify_range(&mut tls, range.clone())?;
        }
        tls_support::close(&mut tls.conn, &mut tls.sock)?;
        expect_eof(&mut tls, LEN)?;
        Ok(ClientReport {
            handshake_cuts,
            negotiated: tls_support::negotiated(&tls.conn),
            status: tls.sock.status(),
        })
    }
}

/// Sends `payload[range]` as one message.
fn send(tls: &mut impl Write, payload: &Payload, range: Range<u64>) -> io::Result<()> {
    tls.write_all(&payload.bytes(range))?;
    // The stream writes TLS records to the session as it goes, but keeps any it could not
    // write until the next call: flush so that the whole message is on its way.
    tls.flush()
}
