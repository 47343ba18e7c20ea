//! Cuts at the delicate moments: inside the opening handshake, inside reconnection
//! handshakes, and while a writer is blocked on a full send buffer.

use std::io::{Read, Write};
use std::time::Duration;

use robust_tcp::RServerSocket;
use robust_tcp_testkit::bounded::{join, run_bounded, wait_until};
use robust_tcp_testkit::payload::Payload;
use robust_tcp_testkit::proxy::{CutAt, CutPlan, FaultProxy};
use robust_tcp_testkit::session::{
    bind, connect_pair, exchange_seeded, fast_config, server_addr, spawn_writer,
};

const LIMIT: Duration = Duration::from_secs(30);
/// Handshake cuts per test: enough to cut the frame boundaries of a 200-byte handshake a
/// few times over, few enough that even a slow backoff stays fast (and an opening cut this
/// many times in a row, below the 10 after which a client gives up on a server that keeps
/// hanging up).
const HANDSHAKE_CUTS: usize = 8;

/// Opens a fresh session straight to `server` and checks that `accept` returns exactly
/// it: a half-opened session left over from a cut handshake would come out first.
fn assert_no_stray_session(server: &RServerSocket, seed: u64) {
    let (mut sentinel, mut accepted) = connect_pair(server, server_addr(server), fast_config());
    sentinel.write_all(b"sentinel").expect("sentinel write");
    let mut marker = [0u8; 8];
    accepted.read_exact(&mut marker).expect("sentinel read");
    assert_eq!(
        &marker, b"sentinel",
        "seed {seed}: accept returned another session"
    );
}

#[test]
fn cuts_inside_the_opening_handshake() {
    run_bounded(LIMIT, || {
        let server = bind();
        // The first connections are all cut within their first EARLY_CUT_MAX bytes; after
        // HANDSHAKE_CUTS cuts the proxy forwards faithfully.
        let plan = CutPlan::random(HANDSHAKE_CUTS, 1 << 20).script([CutAt::Early; HANDSHAKE_CUTS]);
        let proxy = FaultProxy::start(server_addr(&server), plan).unwrap();
        let seed = proxy.seed();
        let (client, accepted) = connect_pair(&server, proxy.local_addr(), fast_config());
        exchange_seeded(&client, &accepted, 1 << 20, seed);
        assert_eq!(
            proxy.cuts(),
            HANDSHAKE_CUTS,
            "seed {seed}: planned cuts skipped"
        );
        assert_no_stray_session(&server, seed);
    });
}

#[test]
fn cuts_inside_reconnection_handshakes() {
    run_bounded(LIMIT, || {
        let server = bind();
        // The first connection carries data for 256 KiB; the reconnections after it are
        // cut within their handshakes.
        let script = [CutAt::Bytes(256 << 10)]
            .into_iter()
            .chain([CutAt::Early; HANDSHAKE_CUTS]);
        let plan = CutPlan::random(HANDSHAKE_CUTS + 1, 1 << 20).script(script);
        let proxy = FaultProxy::start(server_addr(&server), plan).unwrap();
        let seed = proxy.seed();
        let (client, accepted) = connect_pair(&server, proxy.local_addr(), fast_config());
        exchange_seeded(&client, &accepted, 2 << 20, seed);
        assert_eq!(
            proxy.cuts(),
            HANDSHAKE_CUTS + 1,
            "seed {seed}: planned cuts skipped"
        );
        let status = client.status();
        assert!(status.reconnections >= 1, "seed {seed}: {status:?}");
        assert_no_stray_session(&server, seed);
    });
}

/// Fills the send buffer of one side while the other application reads nothing, cuts the
/// connection while the writer is blocked, then reads and checks everything.
fn cut_while_writer_is_blocked(client_writes: bool) {
    let server = bind();
    let proxy = FaultProxy::start(server_addr(&server), CutPlan::never()).unwrap();
    let seed = proxy.seed();
    let (client, accepted) = connect_pair(&server, proxy.local_addr(), fast_config());
    let (writing, reading) = if client_writes {
        (&client, &accepted)
    } else {
        (&accepted, &client)
    };
    // Far more than the 16 KiB send buffer, socket buffers and any bounded receive buffer
    // of the library: the writer must block.
    let payload = Payload::new(3, 16 << 20);
    let writer = spawn_writer(writing, payload);
    wait_until(
        Duration::from_secs(10),
        "the writer to block on a full send buffer",
        || writing.status().blocked_write.is_some() || writer.is_finished(),
    );
    assert!(
        !writer.is_finished(),
        "the writer finished 16 MiB while the peer application read nothing: {:?}",
        join(writer)
    );
    assert_eq!(proxy.cut_all(), 1, "no live connection to cut");
    if let Err(e) = payload.verify_from(reading) {
        panic!(
            "seed {seed}: reading after the cut: {e} (kind {:?})",
            e.kind()
        );
    }
    if let Err(e) = join(writer) {
        panic!(
            "seed {seed}: the blocked writer failed: {e} (kind {:?})",
            e.kind()
        );
    }
    let status = client.status();
    assert!(
        status.reconnections >= 1,
        "the cut went unnoticed: {status:?}"
    );
}

#[test]
fn cut_while_the_client_writer_is_blocked() {
    run_bounded(LIMIT, || cut_while_writer_is_blocked(true));
}

#[test]
fn cut_while_the_server_writer_is_blocked() {
    run_bounded(LIMIT, || cut_while_writer_is_blocked(false));
}
