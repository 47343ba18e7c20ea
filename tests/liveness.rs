//! The silence limit (`Config::dead_after`) must not take a slow peer for a dead one.

use std::io::Read;
use std::thread;
use std::time::Duration;

use robust_tcp_testkit::bounded::{join, run_bounded};
use robust_tcp_testkit::payload::Payload;
use robust_tcp_testkit::session::{bind, connect_pair, fast_config, server_addr, spawn_writer};

const LIMIT: Duration = Duration::from_secs(60);
const DEAD_AFTER: Duration = Duration::from_millis(300);

// Proves: a reader that stops reading for several silence limits, while the writer has
// filled every buffer on the way (the peer's TCP window is zero, and the kernel's
// unacknowledged-data limit is `dead_after` too), loses no connection: the heartbeats
// and the window probes the peer's kernel answers keep it alive.
#[test]
fn a_reader_that_pauses_longer_than_dead_after_keeps_its_connection() {
    run_bounded(LIMIT, || {
        let config = fast_config().dead_after(Some(DEAD_AFTER));
        let server = bind();
        let (client, mut accepted) = connect_pair(&server, server_addr(&server), config);
        let payload = Payload::new(7, 16 << 20);
        let writer = spawn_writer(&client, payload);
        // The pause is the fault being tested, not a synchronisation.
        thread::sleep(DEAD_AFTER * 5);
        let mut got = Vec::new();
        accepted.read_to_end(&mut got).expect("read");
        join(writer).expect("write");
        assert!(got == payload.bytes(0..payload.len()), "the bytes differ");
        assert_eq!(client.status().reconnections, 0, "{:?}", client.status());
    });
}
