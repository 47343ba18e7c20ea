//! Opening a session in one round trip: `connect` returns once the TCP connection is up,
//! the client's first bytes follow its HELLO, the server accepts at the HELLO and its first
//! reply travels with its ANSWER; and through cuts anywhere in the opening, every byte
//! arrives exactly once and exactly one session comes out of `accept` per client.
//!
//! The proxy's `hold_downstream` keeps every byte from the server away from the client
//! until the test releases it: whatever the client does meanwhile, it does without the
//! server's ANSWER. No sleep synchronises anything; every wait is for a real condition.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use robust_tcp::{Config, Error, RServerSocket, RSocket, SessionState};
use robust_tcp_testkit::bounded::{join, run_bounded, wait_until};
use robust_tcp_testkit::check::{assert_kind, carried};
use robust_tcp_testkit::proxy::{CutAt, CutPlan, CutStyle, FaultProxy};
use robust_tcp_testkit::rng::{fresh_seed, Rng};
use robust_tcp_testkit::session::{connect_pair, fast_config, server_addr};

const LIMIT: Duration = Duration::from_secs(60);
/// The cut-point sweeps, each a few hundred sessions.
const SWEEP_LIMIT: Duration = Duration::from_secs(300);
/// How long a session may wait for a step of the test that must come.
const BOUND: Duration = Duration::from_secs(20);

/// A server whose sessions may linger (every test here closes hundreds or holds several).
fn server(config: Config) -> RServerSocket {
    RServerSocket::bind_with("127.0.0.1:0", config).expect("bind")
}

/// A proxy to `server` that holds every byte from the server until released, and its
/// address.
fn holding_proxy(server: &RServerSocket) -> (FaultProxy, SocketAddr) {
    let plan = CutPlan::never().hold_downstream();
    let proxy = FaultProxy::start(server_addr(server), plan).expect("proxy");
    let via = proxy.local_addr();
    (proxy, via)
}

/// A server, a [`holding_proxy`] to it, and a client session opened through the proxy,
/// whose ANSWER is held there.
fn connect_held() -> (RServerSocket, FaultProxy, RSocket) {
    let server = server(fast_config());
    let (proxy, via) = holding_proxy(&server);
    let client = RSocket::connect_with(via, fast_config()).expect("connect");
    (server, proxy, client)
}

/// Accepts the next session on `server` and reads `expected` from it, every byte compared.
fn accept_and_read(server: &RServerSocket, expected: &[u8]) -> RSocket {
    let (mut accepted, _) = server.accept().expect("accept");
    let mut got = vec![0u8; expected.len()];
    accepted
        .read_exact(&mut got)
        .expect("read the client's bytes");
    assert_eq!(got, expected);
    accepted
}

/// `len` bytes drawn from `rng`.
fn bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

// Proves: no round trip before the first byte, and none before the first reply. With every
// byte from the server held at the proxy, `connect` returns, the client writes its request,
// the server accepts the session, reads the request and writes its reply; only then does
// the proxy let the server's bytes through, and the client reads the reply, which travelled
// with the ANSWER. With a CONFIRM before `accept` (or a `connect` that waits for the
// ANSWER) this cannot happen: the test then hangs until the watchdog fails it.
#[test]
fn the_server_accepts_reads_and_replies_before_any_of_its_bytes_reaches_the_client() {
    run_bounded(LIMIT, || {
        let server = server(fast_config());
        let (proxy, via) = holding_proxy(&server);
        let mut rng = Rng::new(proxy.seed());
        let (request, reply) = (bytes(&mut rng, 300), bytes(&mut rng, 500));
        let (sent_tx, sent_rx) = mpsc::channel();
        let client = {
            let (request, reply) = (request.clone(), reply.clone());
            thread::spawn(move || -> io::Result<u32> {
                let mut sock = RSocket::connect_with(via, fast_config())?;
                sock.write_all(&request)?;
                let _ = sent_tx.send(());
                let mut got = vec![0u8; reply.len()];
                sock.read_exact(&mut got)?;
                assert!(got == reply, "the reply differs");
                Ok(sock.session_id())
            })
        };
        sent_rx
            .recv_timeout(BOUND)
            .expect("connect returned and the request was written without the ANSWER");
        let (mut accepted, _) = server.accept().expect("accept");
        let mut got = vec![0u8; request.len()];
        accepted
            .read_exact(&mut got)
            .expect("read the request, whose client has not heard from the server");
        assert!(got == request, "the request differs");
        accepted.write_all(&reply).expect("write the reply");
        assert!(
            !client.is_finished(),
            "the client read before the server's bytes"
        );
        proxy.release_downstream();
        let cid = join(client).expect("the client reads the reply");
        assert_eq!(cid, accepted.session_id());
    });
}

// Proves: closing does not wait for the server. A client that writes and drops its socket
// before any byte from the server reached it returns from the drop at once; the server
// reads its bytes, then (once the client has the ANSWER, and so the session's control
// path) end of stream.
#[test]
fn a_session_closed_before_the_answer_delivers_its_bytes_and_end_of_stream() {
    run_bounded(LIMIT, || {
        let server = server(fast_config());
        let (proxy, via) = holding_proxy(&server);
        let client = thread::spawn(move || -> io::Result<()> {
            let mut sock = RSocket::connect_with(via, fast_config())?;
            sock.write_all(b"fire and forget")?;
            drop(sock);
            Ok(())
        });
        let mut accepted = accept_and_read(&server, b"fire and forget");
        // The drop returned with every server byte still held: it waits for nothing.
        join(client).expect("the client wrote and dropped");
        proxy.release_downstream();
        let mut rest = Vec::new();
        accepted
            .read_to_end(&mut rest)
            .expect("end of stream once the client has the answer");
        assert!(rest.is_empty(), "bytes after the client's: {rest:02x?}");
    });
}

/// Sizes of the sweep's request and reply: with the HELLO (105 bytes) and the ANSWER (120)
/// the opening exchange moves 305 bytes, both directions together.
const REQUEST: usize = 40;
const REPLY: usize = 40;
/// The cut points swept: every one from 0 to just past the whole exchange.
const SWEEP: u64 = 310;

/// One client per cut point from 0 to [`SWEEP`] (both directions together), each through
/// a proxy that cuts its first connection there in `style`: the client writes its request
/// at once after `connect` and shuts down writing; the server accepts the session while
/// the proxy still holds every byte from the server (then lets them through: the cut
/// points count the client's HELLO and request first, then the ANSWER and the reply),
/// reads the request to its end, replies and shuts down writing; the client reads the
/// reply to its end: every byte is compared both ways, and nothing more may come. Each `accept` must return the session of the
/// client at hand (a session left over from a cut opening, or a second one for the same
/// client, would come out first), and a sentinel at the end finds nothing left over. Each
/// session is then aborted by the server (and seen to end on the client), so that none
/// lingers behind its dropped proxy.
fn sweep(style: CutStyle) {
    // Every byte read is acknowledged at once, so that a half-close is announced as soon as
    // the peer has read everything, not at the next acknowledgement request.
    let config = fast_config().ack_threshold(1);
    let server = server(config.clone());
    let addr = server_addr(&server);
    // `accept` in a thread of its own, so that a session that never comes fails a bound
    // with the client's state rather than the watchdog.
    let (accepted_tx, accepted_rx) = mpsc::channel();
    thread::spawn(move || {
        while let Ok((sock, _)) = server.accept() {
            if accepted_tx.send(sock).is_err() {
                return;
            }
        }
    });
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for at in 0..=SWEEP {
        let reset_percent = if style == CutStyle::Reset { 100 } else { 0 };
        let plan = CutPlan::random(1, 1 << 20)
            .reset_percent(reset_percent)
            .script([CutAt::Bytes(at)])
            .seed(seed ^ at)
            .hold_downstream();
        let proxy = FaultProxy::start(addr, plan).expect("proxy");
        let via = proxy.local_addr();
        let (request, reply) = (bytes(&mut rng, REQUEST), bytes(&mut rng, REPLY));
        let what = format!("seed {seed}, cut at {at} ({style:?})");
        eprintln!("{what}");
        let (opened_tx, opened_rx) = mpsc::channel();
        let client = {
            let (request, reply, what) = (request.clone(), reply.clone(), what.clone());
            let config = config.clone();
            thread::spawn(move || -> io::Result<RSocket> {
                let mut sock = RSocket::connect_with(via, config)?;
                sock.set_read_timeout(Some(BOUND))?;
                let _ = opened_tx.send(sock.try_clone()?);
                sock.write_all(&request)?;
                sock.shutdown(Shutdown::Write)?;
                let mut got = Vec::new();
                sock.read_to_end(&mut got)?;
                assert!(got == reply, "{what}: the reply differs: {got:02x?}");
                Ok(sock)
            })
        };
        let watched = opened_rx.recv_timeout(BOUND);
        let client_state = || match &watched {
            Ok(sock) => format!("{:?}", sock.status()),
            Err(_) => "no session".to_owned(),
        };
        // Accepted before any byte from the server reached the client: no round trip.
        let Ok(mut accepted) = accepted_rx.recv_timeout(BOUND) else {
            panic!(
                "{what}: nothing came out of accept; the client: {}",
                client_state()
            );
        };
        proxy.release_downstream();
        accepted
            .set_read_timeout(Some(BOUND))
            .expect("set_read_timeout");
        let mut got = Vec::new();
        if let Err(e) = accepted.read_to_end(&mut got) {
            panic!(
                "{what}: reading the request after {} bytes: {e}; server {:?}; client {}",
                got.len(),
                accepted.status(),
                client_state()
            );
        }
        assert!(got == request, "{what}: the request differs: {got:02x?}");
        accepted.write_all(&reply).expect("write the reply");
        accepted.shutdown(Shutdown::Write).expect("shutdown");
        let sock = join(client).unwrap_or_else(|e| {
            panic!(
                "{what}: the client: {e}; client {}; server {:?}",
                client_state(),
                accepted.status()
            )
        });
        assert_eq!(
            sock.session_id(),
            accepted.session_id(),
            "{what}: accept returned another session"
        );
        accepted.abort().expect("abort");
        wait_until(BOUND, "the client to see the session end", || {
            sock.status().state == SessionState::Closed
        });
        drop(proxy);
    }
    let client = thread::spawn(move || {
        let mut sentinel = RSocket::connect_with(addr, fast_config())?;
        sentinel.write_all(b"sentinel")?;
        Ok::<_, io::Error>(sentinel)
    });
    let mut accepted = accepted_rx
        .recv_timeout(BOUND)
        .expect("the sentinel's session");
    let mut got = [0u8; 8];
    accepted.read_exact(&mut got).expect("sentinel read");
    assert_eq!(&got, b"sentinel", "seed {seed}: a stray session in accept");
    join(client).expect("the sentinel");
}

// Proves: a cut at any point of the opening (inside the HELLO, the client's first bytes, the
// ANSWER or the reply), closing both sides with FIN, loses and duplicates nothing, and
// leaves exactly one session per client in `accept`, which returns it before the client
// heard from the server (with a CONFIRM before `accept`, the first one hangs until the
// watchdog fails the test).
#[test]
fn every_cut_point_of_the_opening_loses_and_duplicates_nothing() {
    run_bounded(SWEEP_LIMIT, || sweep(CutStyle::Close));
}

// Proves: as above, with every cut a reset (RST), which drops what the kernels held.
#[test]
fn every_reset_point_of_the_opening_loses_and_duplicates_nothing() {
    run_bounded(SWEEP_LIMIT, || sweep(CutStyle::Reset));
}

// Proves: an opening whose first connection is cut inside its HELLO (the server never saw
// it), after `connect` returned and the client wrote, is retried: the server opens the
// session on the retry (it has not resumed anything: no reconnection on its side), and the
// client resends its first bytes, lost with the first connection, from byte 0. The ANSWER
// to the retry is held until the client has written: with an opening that waits for the
// ANSWER before `connect` returns, the test hangs until the watchdog fails it.
#[test]
fn a_retried_opening_whose_hello_never_arrived_opens_fresh() {
    run_bounded(LIMIT, || {
        let server = server(fast_config());
        // The first connection is cut after 40 bytes of the 105-byte HELLO.
        let plan = CutPlan::random(1, 1 << 20)
            .reset_percent(0)
            .script([CutAt::Bytes(40)])
            .hold_downstream();
        let proxy = FaultProxy::start(server_addr(&server), plan).expect("proxy");
        let via = proxy.local_addr();
        let mut rng = Rng::new(proxy.seed());
        let request = bytes(&mut rng, 1000);
        let (sent_tx, sent_rx) = mpsc::channel();
        let client = {
            let request = request.clone();
            thread::spawn(move || -> io::Result<RSocket> {
                let mut sock = RSocket::connect_with(via, fast_config())?;
                sock.write_all(&request)?;
                let _ = sent_tx.send(());
                let mut reply = [0u8; 2];
                sock.read_exact(&mut reply)?;
                assert_eq!(&reply, b"ok");
                Ok(sock)
            })
        };
        sent_rx
            .recv_timeout(BOUND)
            .expect("connect returned and the request was written without the ANSWER");
        // The retry's HELLO opens the session; its ANSWER waits at the proxy.
        let (mut accepted, _) = server.accept().expect("accept");
        proxy.release_downstream();
        let mut got = vec![0u8; request.len()];
        accepted.read_exact(&mut got).expect("read the request");
        assert!(got == request, "the request differs");
        accepted.write_all(b"ok").expect("reply");
        let sock = join(client).expect("the client");
        assert_eq!(sock.session_id(), accepted.session_id());
        assert_eq!(proxy.cuts(), 1, "the first connection was not cut");
        assert_eq!(
            accepted.status().reconnections,
            0,
            "the server resumed a session instead of opening it on the retry"
        );
        assert_eq!(sock.status().reconnections, 1, "{:?}", sock.status());
    });
}

// Proves: an opening whose ANSWER never reached its client, and whose session then ended on
// the server (evicted for a new client while its client could not reach the server), is
// refused when the client retries it: the server keeps the opening nonce (a tombstone),
// so the client's first bytes, read once by the ended session, are not delivered again
// to a second one. The client's session fails with UnknownSession, as after a server
// restart; `accept` returns no second session for it. With a CONFIRM before `accept` (or
// a `connect` that waits for the ANSWER) the test hangs until the watchdog fails it.
#[test]
fn a_retried_opening_of_a_session_that_ended_meanwhile_is_refused() {
    run_bounded(LIMIT, || {
        let config = fast_config()
            .max_sessions(1)
            .dead_after(Some(Duration::from_millis(200)));
        let server = server(config);
        let (first, via) = holding_proxy(&server);
        let (sent_tx, sent_rx) = mpsc::channel();
        let client = thread::spawn(move || -> io::Result<()> {
            let mut sock = RSocket::connect_with(via, fast_config())?;
            sock.write_all(b"once")?;
            let _ = sent_tx.send(());
            let mut got = [0u8; 1];
            let read = sock.read(&mut got);
            let e = assert_kind("the read", read, io::ErrorKind::ConnectionReset);
            assert_eq!(carried("the read", &e), &Error::UnknownSession);
            Ok(())
        });
        sent_rx
            .recv_timeout(BOUND)
            .expect("connect returned and the client wrote without the ANSWER");
        let (mut opened, _) = server.accept().expect("accept the first session");
        let mut got = [0u8; 4];
        opened.read_exact(&mut got).expect("read the first bytes");
        assert_eq!(&got, b"once");
        // The client loses the server: its retries find the port closed (no cut, no
        // answer: it keeps trying).
        drop(first);
        // A second client fills the only slot once the first session has been gone for
        // the silence limit: the server evicts it.
        let (mut second, mut accepted) = connect_pair(&server, server_addr(&server), fast_config());
        second.write_all(b"second").expect("second write");
        let mut got = [0u8; 6];
        accepted
            .read_exact(&mut got)
            .expect("read the second client's bytes");
        assert_eq!(&got, b"second");
        // The server again, on the port the first client retries.
        let _again = FaultProxy::start_at(via, server_addr(&server), CutPlan::never())
            .expect("a proxy on the first one's port");
        join(client).expect("the first client's session fails as unknown");
        let e = assert_kind(
            "the evicted session",
            opened.read(&mut [0u8; 1]),
            io::ErrorKind::ConnectionAborted,
        );
        assert!(
            matches!(carried("the evicted session", &e), Error::Evicted { .. }),
            "{e}"
        );
        drop(accepted);
        drop(second);
    });
}

// Proves (issue 18, item 5): `abort()` before the opening's ANSWER reaches the client
// resets the session the server already accepted: the server's read fails with
// `ConnectionReset` (`PeerReset`) after the client's bytes, and the client's session ends.
// The ANSWER is held at the proxy until the client has aborted, so the RESET has no
// destination yet; the client retries the opening to learn it. (Before the fix the RESET
// was dropped, the client stopped dialling, and the server's read waited forever, here
// until its read timeout.)
#[test]
fn an_abort_before_the_answer_resets_the_accepted_session() {
    run_bounded(LIMIT, || {
        let (server, proxy, client) = connect_held();
        (&client).write_all(b"doomed").expect("write");
        let mut accepted = accept_and_read(&server, b"doomed");
        client.abort().expect("abort");
        let e = assert_kind(
            "the client's read",
            (&client).read(&mut [0u8; 1]),
            io::ErrorKind::ConnectionAborted,
        );
        assert_eq!(carried("the client's read", &e), &Error::Aborted);
        proxy.release_downstream();
        accepted
            .set_read_timeout(Some(BOUND))
            .expect("set_read_timeout");
        let read = accepted.read(&mut [0u8; 1]);
        let e = assert_kind("the server's read", read, io::ErrorKind::ConnectionReset);
        assert_eq!(carried("the server's read", &e), &Error::PeerReset);
    });
}

// Proves (issue 18, suspected): `shutdown(Read)` right after `connect`, before the ANSWER
// came, costs the opening nothing: the engine still reads the ANSWER from the first
// connection (reads return end of stream meanwhile and after), the session opens on it
// with no second connection and no resumption, and the client's bytes arrive once.
#[test]
fn a_shutdown_of_reading_before_the_answer_costs_no_retried_opening() {
    run_bounded(LIMIT, || {
        let (server, proxy, client) = connect_held();
        client.shutdown(Shutdown::Read).expect("shutdown");
        assert_eq!((&client).read(&mut [0u8; 1]).expect("read"), 0);
        (&client).write_all(b"one way").expect("write");
        let accepted = accept_and_read(&server, b"one way");
        proxy.release_downstream();
        assert_eq!(client.session_id(), accepted.session_id());
        let status = client.status();
        assert_eq!(
            status.reconnections, 0,
            "the opening was retried: {status:?}"
        );
        assert_eq!(proxy.connections(), 1, "a second connection");
        assert_eq!(accepted.status().reconnections, 0);
        assert_eq!((&client).read(&mut [0u8; 1]).expect("read"), 0);
    });
}
