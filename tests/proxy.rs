//! Self-tests of the test support (proxy, payloads, watchdog) with plain std TCP, so that a
//! failure in the robust-tcp tests can be trusted to come from the library.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use robust_tcp_testkit::bounded::{join, run_bounded, wait_until};
use robust_tcp_testkit::payload::Payload;
use robust_tcp_testkit::proxy::{CutAt, CutPlan, CutStyle, FaultProxy, EARLY_CUT_MAX};

const LIMIT: Duration = Duration::from_secs(20);

/// An echo server on loopback: a thread per connection copying input back, then
/// half-closing. Dropping it stops accepting and joins every thread.
struct EchoServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl EchoServer {
    fn start() -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the echo server");
        let addr = listener.local_addr().expect("echo server address");
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stopping);
        let acceptor = thread::spawn(move || {
            let mut echoes = Vec::new();
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                echoes.push(thread::spawn(move || echo(&stream)));
            }
            // Each echo ends when its peer (the proxy) closes, which the tests do first.
            for e in echoes {
                join(e);
            }
        });
        EchoServer {
            addr,
            stopping,
            acceptor: Some(acceptor),
        }
    }
}

fn echo(stream: &TcpStream) {
    // Errors just end the echo: the proxy cuts connections on purpose.
    let _ = io::copy(&mut &*stream, &mut &*stream);
    let _ = stream.shutdown(Shutdown::Write);
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            // Do not turn a failing test's unwinding into an abort by panicking again.
            if !thread::panicking() {
                join(acceptor);
            }
        }
    }
}

/// What a sink received, and how its stream ended.
type Sunk = (Vec<u8>, io::Result<()>);

/// A one-connection server that reads until end of stream or an error.
fn start_sink() -> (SocketAddr, JoinHandle<Sunk>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the sink");
    let addr = listener.local_addr().expect("sink address");
    let handle = thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("sink accept");
        let mut got = Vec::new();
        let end = stream.read_to_end(&mut got).map(drop);
        (got, end)
    });
    (addr, handle)
}

/// Writes `payload` on a clone of `stream` from a new thread, then half-closes.
fn spawn_std_writer(stream: &TcpStream, payload: Payload) -> JoinHandle<io::Result<()>> {
    let stream = stream.try_clone().expect("clone the client stream");
    thread::spawn(move || {
        payload.write_to(&stream)?;
        stream.shutdown(Shutdown::Write)
    })
}

/// Sends `payload` through `addr` to the echo server and checks the echo to end of stream.
fn echo_round_trip(addr: SocketAddr, payload: Payload) -> io::Result<()> {
    let stream = TcpStream::connect(addr)?;
    let writer = spawn_std_writer(&stream, payload);
    let read = payload.verify_from(&stream);
    // A cut may fail the writer too; the reader's result is the one that matters.
    let written = join(writer);
    read.and(written)
}

/// Whether `stream`'s next read reports the connection as gone (end of stream or reset).
fn reads_as_gone(mut stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
        ),
    }
}

#[test]
fn forwards_faithfully_without_cuts() {
    run_bounded(LIMIT, || {
        let echo = EchoServer::start();
        let proxy = FaultProxy::start(echo.addr, CutPlan::never()).unwrap();
        let payload = Payload::new(1, 4 << 20);
        echo_round_trip(proxy.local_addr(), payload)
            .unwrap_or_else(|e| panic!("seed {}: {e}", proxy.seed()));
        assert_eq!(proxy.cuts(), 0);
        assert_eq!(proxy.connections(), 1);
    });
}

#[test]
fn close_cut_forwards_exactly_up_to_the_cut_point() {
    run_bounded(LIMIT, || {
        let (sink, received) = start_sink();
        let plan = CutPlan::random(1, 1 << 20)
            .script([CutAt::Bytes(1000)])
            .reset_percent(0);
        let proxy = FaultProxy::start(sink, plan).unwrap();
        let payload = Payload::new(2, 3000);
        let client = TcpStream::connect(proxy.local_addr()).unwrap();
        (&client).write_all(&payload.bytes(0..3000)).unwrap();
        let (got, end) = join(received);
        assert_eq!(got, payload.bytes(0..1000), "the sink got other bytes");
        end.expect("a Close cut ends the target's stream with a FIN");
        assert!(
            reads_as_gone(&client),
            "the client's connection survived the cut"
        );
        assert_eq!(proxy.cuts(), 1);
    });
}

#[test]
fn reset_cut_resets_both_sides() {
    run_bounded(LIMIT, || {
        let (sink, received) = start_sink();
        let plan = CutPlan::random(1, 1 << 20)
            .script([CutAt::Bytes(1000)])
            .reset_percent(100);
        let proxy = FaultProxy::start(sink, plan).unwrap();
        let payload = Payload::new(3, 1000);
        let mut client = TcpStream::connect(proxy.local_addr()).unwrap();
        client.write_all(&payload.bytes(0..1000)).unwrap();
        let err = client
            .read(&mut [0u8; 16])
            .expect_err("the client saw no reset");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        let (got, end) = join(received);
        assert!(
            payload.bytes(0..1000).starts_with(&got),
            "the sink got other bytes"
        );
        let err = end.expect_err("the target saw a FIN, not an RST");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        assert_eq!(proxy.cuts(), 1);
    });
}

#[test]
fn zero_byte_cut_happens_on_connect_and_later_connections_pass() {
    run_bounded(LIMIT, || {
        let echo = EchoServer::start();
        let plan = CutPlan::random(5, 1 << 20).script([CutAt::Bytes(0), CutAt::Never]);
        let proxy = FaultProxy::start(echo.addr, plan).unwrap();
        let first = TcpStream::connect(proxy.local_addr()).unwrap();
        assert!(reads_as_gone(&first), "the zero-byte cut did not happen");
        echo_round_trip(proxy.local_addr(), Payload::new(4, 100_000))
            .unwrap_or_else(|e| panic!("seed {}: {e}", proxy.seed()));
        assert_eq!((proxy.cuts(), proxy.connections()), (1, 2));
    });
}

#[test]
fn max_cuts_bounds_the_plan_then_forwards_faithfully() {
    run_bounded(LIMIT, || {
        let echo = EchoServer::start();
        // Every cut point is at most 4 KiB into a 128 KiB round trip, so each planned cut
        // happens; the first connection after them must be left alone.
        let plan = CutPlan::random(5, 4096).early_percent(30);
        let proxy = FaultProxy::start(echo.addr, plan).unwrap();
        let seed = proxy.seed();
        let payload = Payload::new(5, 64 * 1024);
        let mut attempts = 0;
        loop {
            attempts += 1;
            assert!(attempts <= 6, "seed {seed}: still cut after 5 cuts");
            match echo_round_trip(proxy.local_addr(), payload) {
                Ok(()) => break,
                Err(e) => assert_ne!(
                    e.kind(),
                    io::ErrorKind::InvalidData,
                    "seed {seed}: the proxy corrupted data: {e}"
                ),
            }
        }
        assert_eq!(attempts, 6, "seed {seed}: a planned cut was skipped");
        assert_eq!(proxy.cuts(), 5, "seed {seed}");
        assert_eq!(proxy.connections(), 6, "seed {seed}");
    });
}

#[test]
fn cut_all_cuts_every_live_connection_on_demand() {
    run_bounded(LIMIT, || {
        let echo = EchoServer::start();
        let proxy = FaultProxy::start(echo.addr, CutPlan::never()).unwrap();
        let clients: Vec<TcpStream> = (0..3)
            .map(|_| {
                let mut c = TcpStream::connect(proxy.local_addr()).unwrap();
                // A round trip proves the proxy has set the connection up end to end.
                c.write_all(b"ping").unwrap();
                let mut pong = [0u8; 4];
                c.read_exact(&mut pong).unwrap();
                assert_eq!(&pong, b"ping");
                c
            })
            .collect();
        assert_eq!(proxy.cut_all(), 3);
        for c in &clients {
            assert!(reads_as_gone(c), "a connection survived cut_all");
        }
        assert_eq!(proxy.cuts(), 3);
        assert_eq!(
            proxy.cut_all(),
            0,
            "cut connections are still listed as live"
        );
        echo_round_trip(proxy.local_addr(), Payload::new(6, 10_000)).unwrap();
    });
}

#[test]
fn drop_closes_connections_and_the_listener() {
    run_bounded(LIMIT, || {
        let echo = EchoServer::start();
        let proxy = FaultProxy::start(echo.addr, CutPlan::never()).unwrap();
        let addr = proxy.local_addr();
        let mut client = TcpStream::connect(addr).unwrap();
        client.write_all(b"ping").unwrap();
        client.read_exact(&mut [0u8; 4]).unwrap();
        drop(proxy);
        assert!(
            reads_as_gone(&client),
            "the proxied connection survived the drop"
        );
        let err = TcpStream::connect(addr).expect_err("the proxy still listens");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    });
}

#[test]
fn a_dead_target_gets_the_client_reset() {
    run_bounded(LIMIT, || {
        // Bind then drop to get a loopback port nobody listens on.
        let dead = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let proxy = FaultProxy::start(dead, CutPlan::never()).unwrap();
        let client = TcpStream::connect(proxy.local_addr()).unwrap();
        assert!(reads_as_gone(&client), "the client was left hanging");
        assert_eq!((proxy.connections(), proxy.cuts()), (1, 0));
    });
}

#[test]
fn schedules_are_deterministic_per_seed_and_follow_the_plan() {
    let plan = CutPlan::random(10, 1 << 20).script([CutAt::Never, CutAt::Bytes(7)]);
    let a: Vec<_> = plan.schedule(42).take(200).collect();
    assert_eq!(a, plan.schedule(42).take(200).collect::<Vec<_>>());
    assert_ne!(a, plan.schedule(43).take(200).collect::<Vec<_>>());
    assert_eq!((a[0].after_bytes, a[1].after_bytes), (None, Some(7)));
    for cut in &a[2..] {
        let at = cut.after_bytes.expect("random cuts always cut");
        assert!(at <= 1 << 20, "{at} is past max_cut_bytes");
    }
    let early = a[2..]
        .iter()
        .filter(|c| c.after_bytes <= Some(EARLY_CUT_MAX));
    let resets = a.iter().filter(|c| c.style == CutStyle::Reset);
    // 10% early and 50% resets by default: far from 0 and from all over 200 draws.
    assert!((3..60).contains(&early.count()));
    assert!((50..150).contains(&resets.count()));

    let all_early = CutPlan::random(1, 1 << 20)
        .early_percent(100)
        .reset_percent(0);
    for cut in all_early.schedule(7).take(100) {
        assert!(cut.after_bytes <= Some(EARLY_CUT_MAX));
        assert_eq!(cut.style, CutStyle::Close);
    }
}

#[test]
fn payload_checks_catch_corruption_loss_and_extra_bytes() {
    let payload = Payload::new(9, 100_000);
    let mut written = Vec::new();
    payload.write_to(&mut written).unwrap();
    assert_eq!(written, payload.bytes(0..100_000));
    // Generation does not depend on where a chunk starts.
    assert_eq!(payload.bytes(3..11), written[3..11]);
    payload.verify_from(&written[..]).unwrap();

    let mut corrupt = written.clone();
    corrupt[54_321] ^= 1;
    let err = payload.verify_from(&corrupt[..]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("byte 54321"), "{err}");

    let mut duplicated = written[..500].to_vec();
    duplicated.extend_from_slice(&written[499..99_999]);
    let err = payload.verify_from(&duplicated[..]).unwrap_err();
    assert!(err.to_string().contains("byte 500"), "{err}");

    let err = payload.verify_from(&written[..99_999]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

    let mut extra = written.clone();
    extra.push(0);
    let err = payload.verify_from(&extra[..]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);

    assert_ne!(Payload::new(10, 64).bytes(0..64), payload.bytes(0..64));
}

#[test]
fn watchdog_and_wait_until_fail_on_time_and_pass_panics_through() {
    let (release, hang) = mpsc::channel::<()>();
    let timed_out = panic::catch_unwind(AssertUnwindSafe(|| {
        run_bounded(Duration::from_millis(50), move || {
            // Blocks until `release` is dropped below, which also ends this thread.
            let _ = hang.recv();
        });
    }));
    drop(release);
    let message = panic_text(timed_out.expect_err("a hung body passed"));
    assert!(message.contains("watchdog"), "{message}");

    let failed = panic::catch_unwind(|| run_bounded(LIMIT, || panic!("inner failure 17")));
    let message = panic_text(failed.expect_err("a panicking body passed"));
    assert_eq!(message, "inner failure 17");

    assert_eq!(run_bounded(LIMIT, || 5), 5);

    let gave_up = panic::catch_unwind(|| {
        wait_until(
            Duration::from_millis(20),
            "a condition that never holds",
            || false,
        );
    });
    let message = panic_text(gave_up.expect_err("wait_until returned for a false condition"));
    assert!(
        message.contains("a condition that never holds"),
        "{message}"
    );
    let mut polls = 0;
    wait_until(LIMIT, "the third poll", || {
        polls += 1;
        polls == 3
    });
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast::<&str>()
            .map_or_else(|_| "<non-text panic>".into(), |s| s.to_string()),
    }
}
