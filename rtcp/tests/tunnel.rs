//! The rtcp binary end to end: a local program -> `rtcp client` -> a connection-cutting
//! proxy -> `rtcp server` -> a target, all real processes and sockets on loopback.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{read_all, Options, Proc, Target, Tunnel, RTCP};
use robust_tcp_testkit::bounded::{join, run_bounded, wait_until};
use robust_tcp_testkit::payload::{expect_eof, Payload};
use robust_tcp_testkit::proxy::CutPlan;

/// Size of the big transfer: 256 MiB, as the issue asks. `RTCP_BIG_MIB` overrides it for
/// quick local runs.
fn big_len() -> u64 {
    let mib = std::env::var("RTCP_BIG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256u64);
    mib << 20
}

/// Counts the bytes read through it, so the sink can report how far a failed check got.
struct Counting<'a, R> {
    inner: R,
    count: &'a AtomicU64,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// What a sink target saw on one connection: bytes received and the payload check.
type SinkResult = (u64, io::Result<()>);

/// A target that checks every byte of `payload` then requires end of stream, and closes.
fn payload_sink(payload: Payload) -> Target<SinkResult> {
    Target::start(move |stream| {
        let count = AtomicU64::new(0);
        let check = payload.verify_from(Counting {
            inner: &stream,
            count: &count,
        });
        (count.load(Ordering::Relaxed), check)
    })
}

/// A target that reads to end of stream, then replies with what it read reversed and
/// closes: the reply can only start after the client's half-close went through.
fn reversing_target() -> Target<usize> {
    Target::start(|mut stream| {
        let mut got = read_all(&stream).unwrap_or_default();
        got.reverse();
        // A probe connection (nothing read) gets an empty reply.
        let _ = stream.write_all(&got);
        let _ = stream.shutdown(Shutdown::Write);
        got.len()
    })
}

/// One half-closed exchange through the tunnel: `len` seeded bytes out, a shutdown of the
/// write side, and the whole reversed reply back, compared byte for byte.
fn reversed_exchange(tunnel: &Tunnel, len: u64, seed: u64) {
    let payload = Payload::new(seed, len);
    let sent = payload.bytes(0..len);
    let mut stream = TcpStream::connect(tunnel.entry).expect("connect to rtcp client");
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        thread::spawn(move || -> io::Result<()> {
            payload.write_to(&mut stream)?;
            // The half-close: the target only answers once it sees end of stream.
            stream.shutdown(Shutdown::Write)
        })
    };
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .unwrap_or_else(|e| panic!("read the reply: {e}\n{}", tunnel.logs()));
    join(writer).expect("write the request and shut down writing");
    let mut want = sent;
    want.reverse();
    assert_eq!(reply.len(), want.len(), "reply length\n{}", tunnel.logs());
    if let Some(i) = reply.iter().zip(&want).position(|(a, b)| a != b) {
        panic!("reply byte {i} differs\n{}", tunnel.logs());
    }
}

#[test]
fn a_256_mib_file_arrives_byte_exact_through_at_least_20_cuts() {
    run_bounded(Duration::from_secs(240), || {
        let len = big_len();
        let payload = Payload::new(0x5254_4350_0256, len);
        let sink = payload_sink(payload);
        // Cut points of at most 8 MiB (about 4 MiB apart on average): the 30 planned cuts
        // land within the first ~120 MiB, leaving a wide margin above the 20 required.
        let mut tunnel = Tunnel::start(
            sink.addr(),
            CutPlan::random(30, 8 << 20),
            &Options::default(),
        );

        let started = Instant::now();
        let mut stream = TcpStream::connect(tunnel.entry).expect("connect to rtcp client");
        let writer = {
            let stream = stream.try_clone().unwrap();
            // Generated while written: 256 MiB is never held in memory.
            thread::spawn(move || -> io::Result<()> {
                payload.write_to(&stream)?;
                stream.shutdown(Shutdown::Write)
            })
        };
        // The sink closes after checking end of stream; that close comes back as end of
        // stream here, so this read also checks the way back.
        let back = expect_eof(&mut stream, 0);
        let written = join(writer);
        let elapsed = started.elapsed();

        let (received, check) = sink.next_matching(Duration::from_secs(10), |(n, _)| *n > 0);
        if let Err(e) = check {
            panic!(
                "the sink got {received} of {len} bytes: {e}\n{}",
                tunnel.logs()
            );
        }
        written.unwrap_or_else(|e| panic!("write through the tunnel: {e}\n{}", tunnel.logs()));
        back.unwrap_or_else(|e| panic!("the sink's close did not come back: {e}"));
        let cuts = tunnel.proxy.cuts();
        assert!(
            cuts >= 20,
            "only {cuts} cuts during the transfer\n{}",
            tunnel.logs()
        );
        tunnel.assert_running();
        eprintln!(
            "{} MiB through {cuts} cuts in {elapsed:.1?}: {:.1} MiB/s",
            len >> 20,
            len as f64 / (1 << 20) as f64 / elapsed.as_secs_f64()
        );
    });
}

#[test]
fn half_close_gets_the_whole_reply_through_cuts() {
    run_bounded(Duration::from_secs(60), || {
        let target = reversing_target();
        let tunnel = Tunnel::start(
            target.addr(),
            CutPlan::random(6, 256 << 10),
            &Options::default(),
        );
        reversed_exchange(&tunnel, 1 << 20, 0xB1);
        // An empty request still gets its end of stream back.
        reversed_exchange(&tunnel, 0, 0xB2);
    });
}

/// What the target saw before its connection ended.
#[derive(Debug)]
enum Ending {
    /// End of stream after this many bytes.
    Eof(u64),
    /// An error of this kind after this many bytes.
    Error(io::ErrorKind, u64),
}

#[test]
fn a_reset_by_the_target_resets_the_local_program() {
    run_bounded(Duration::from_secs(60), || {
        // Reads a 5-byte greeting, then closes with SO_LINGER 0: an RST, not a FIN.
        let target = Target::start(|mut stream| {
            let mut hello = [0u8; 5];
            if stream.read_exact(&mut hello).is_err() {
                return false; // a probe connection
            }
            socket2::SockRef::from(&stream)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            true
        });
        let tunnel = Tunnel::start(target.addr(), CutPlan::never(), &Options::default());
        let mut stream = TcpStream::connect(tunnel.entry).unwrap();
        stream.write_all(b"hello").unwrap();
        assert!(target.next_matching(Duration::from_secs(20), |reset| *reset));
        // A bound so a lost reset fails with a message rather than at the watchdog.
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut buf = [0u8; 16];
        let got = stream.read(&mut buf);
        // ConnectionReset, not end of stream: the issue asks that the local program see
        // what the target did, and a reset (unlike a FIN) says the data may be incomplete.
        match got {
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!(
                "expected ConnectionReset after the target's reset, got {other:?}\n{}",
                tunnel.logs()
            ),
        }
    });
}

#[test]
fn a_reset_by_the_local_program_resets_the_target() {
    run_bounded(Duration::from_secs(60), || {
        let received = Arc::new(AtomicU64::new(0));
        let target = {
            let received = Arc::clone(&received);
            Target::start(move |mut stream| {
                let mut total = 0;
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) => return Ending::Eof(total),
                        Ok(n) => {
                            total += n as u64;
                            received.fetch_add(n as u64, Ordering::SeqCst);
                        }
                        Err(e) => return Ending::Error(e.kind(), total),
                    }
                }
            })
        };
        let tunnel = Tunnel::start(target.addr(), CutPlan::never(), &Options::default());
        let stream = TcpStream::connect(tunnel.entry).unwrap();
        (&stream).write_all(b"hello").unwrap();
        // The session is open end to end once the target has the greeting.
        wait_until(
            Duration::from_secs(20),
            "the greeting at the target",
            || received.load(Ordering::SeqCst) == 5,
        );
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(stream); // sends the RST
        let ending = target.next_matching(Duration::from_secs(20), |e| {
            !matches!(e, Ending::Eof(0) | Ending::Error(_, 0))
        });
        assert!(
            matches!(ending, Ending::Error(io::ErrorKind::ConnectionReset, 5)),
            "expected the target to see ConnectionReset after 5 bytes, got {ending:?}\n{}",
            tunnel.logs()
        );
    });
}

#[test]
fn a_plain_tcp_client_is_refused_and_the_server_keeps_serving() {
    run_bounded(Duration::from_secs(60), || {
        let target = reversing_target();
        let mut tunnel = Tunnel::start(target.addr(), CutPlan::never(), &Options::default());

        let mut plain = TcpStream::connect(tunnel.server_addr).unwrap();
        // Exactly 8 bytes, one frame header's worth, that are not a robust-tcp header: the
        // server reads them all before answering, so its close is a FIN, not the RST that
        // closing with unread bytes would send (and that could discard the answer).
        plain.write_all(b"HELLO?\r\n").unwrap();
        plain
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let reply = read_all(&plain).expect("the refusal, then end of stream");
        // Either a bare close or robust-tcp's ANSWER refusal (docs/PROTOCOL.md section 2):
        // magic "RTCP", version 6, kind 2 ANSWER, CID 0 (refused), reason 4 (bad request).
        if !reply.is_empty() {
            assert!(reply.len() >= 13, "short reply {reply:?}");
            assert_eq!(&reply[..6], b"RTCP\x06\x02", "not an ANSWER: {reply:?}");
            assert_eq!(&reply[8..12], &[0, 0, 0, 0], "CID is not 0: {reply:?}");
            assert_eq!(reply[12], 4, "refusal reason is not 4: {reply:?}");
        }

        tunnel.assert_running();
        reversed_exchange(&tunnel, 256 << 10, 0xD1);
    });
}

#[test]
fn rtcp_connect_moves_a_file_both_ways() {
    run_bounded(Duration::from_secs(90), || {
        // Echoes everything, then passes the end of stream on.
        let target = Target::start(|stream| {
            let copied = io::copy(&mut &stream, &mut &stream);
            let _ = stream.shutdown(Shutdown::Write);
            copied.unwrap_or(0)
        });
        // The client process is unused here; `rtcp connect` goes to the proxy itself.
        let tunnel = Tunnel::start(
            target.addr(),
            CutPlan::random(10, 2 << 20),
            &Options::default(),
        );
        let payload = Payload::new(0xE1, 16 << 20);
        let mut cmd = Command::new(RTCP);
        cmd.arg("connect")
            .arg(tunnel.proxy.local_addr().to_string())
            .args(tunnel.keys.client_args())
            .arg("--quiet")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut connect = Proc::spawn("rtcp connect", cmd);
        let stdin = connect.child().stdin.take().unwrap();
        let stdout = connect.child().stdout.take().unwrap();
        // Dropping stdin at the end is the half-close that lets the echo finish.
        let writer = thread::spawn(move || payload.write_to(stdin));
        let check = payload.verify_from(stdout);
        let written = join(writer);
        if let Err(e) = check {
            panic!(
                "stdout: {e}\n--- rtcp connect stderr:\n{}\n{}",
                connect.stderr(),
                tunnel.logs()
            );
        }
        written.expect("write stdin");
        let status = connect.wait_exit(Duration::from_secs(20));
        assert!(
            status.success(),
            "rtcp connect: {status}\n{}",
            connect.stderr()
        );
        let echoed = target.next_matching(Duration::from_secs(10), |n| *n > 0);
        assert_eq!(echoed, payload.len());
    });
}
