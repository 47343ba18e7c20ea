//! `TcpStream` and `TcpListener` parity (issue 22, item 3): `peek`, `set_nonblocking`,
//! `set_ttl`/`ttl` and `take_error` on streams, and `set_nonblocking`, `try_clone`,
//! `set_ttl`/`ttl` and `take_error` on listeners. Each conformance test is one generic
//! function run twice, against std's types (module `tcp`) and against `RSocket` and
//! `RServerSocket` (module `robust`), with the same assertions; then the robust types
//! alone, across cuts made by the test kit's proxy, where TCP has nothing to compare.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use robust_tcp::{RServerSocket, RSocket};
use robust_tcp_testkit::bounded::{join, poll_until, run_bounded, wait_until};
use robust_tcp_testkit::payload::Payload;
use robust_tcp_testkit::proxy::{CutPlan, FaultProxy};
use robust_tcp_testkit::session::{bind, connect_pair, fast_config, server_addr};

const LIMIT: Duration = Duration::from_secs(60);
/// How long a condition that needs only loopback round trips may take.
const SOON: Duration = Duration::from_secs(20);
/// A write size that no buffer capacity is a multiple of: the write that fills a buffer
/// then fits in part.
const CHUNK: usize = 99_991;

/// The methods under test, as both stream types have them.
trait Stream: Read + Write + Send + Sync + Sized + 'static {
    fn peek(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()>;
    fn set_ttl(&self, ttl: u32) -> io::Result<()>;
    fn ttl(&self) -> io::Result<u32>;
    fn take_error(&self) -> io::Result<Option<io::Error>>;
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
    /// Ends the connection with a reset, as the peer sees it.
    fn reset(self);
}

/// The methods under test, as both listener types have them.
trait Listener: Send + Sync + Sized + 'static {
    type Stream: Stream;
    fn bind_loopback() -> Self;
    fn connect(addr: SocketAddr) -> Self::Stream;
    fn accept(&self) -> io::Result<(Self::Stream, SocketAddr)>;
    fn local_addr(&self) -> io::Result<SocketAddr>;
    fn try_clone(&self) -> io::Result<Self>;
    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()>;
    fn set_ttl(&self, ttl: u32) -> io::Result<()>;
    fn ttl(&self) -> io::Result<u32>;
    fn take_error(&self) -> io::Result<Option<io::Error>>;
}

/// Forwards each trait method to the type's inherent method of the same name.
macro_rules! forward {
    ($($name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        $(fn $name(&self $(, $arg: $ty)*) -> $ret {
            Self::$name(self $(, $arg)*)
        })*
    };
}

macro_rules! stream_methods {
    () => {
        forward! {
            peek(&self, buf: &mut [u8]) -> io::Result<usize>;
            set_nonblocking(&self, nonblocking: bool) -> io::Result<()>;
            set_ttl(&self, ttl: u32) -> io::Result<()>;
            ttl(&self) -> io::Result<u32>;
            take_error(&self) -> io::Result<Option<io::Error>>;
            shutdown(&self, how: Shutdown) -> io::Result<()>;
        }
    };
}

macro_rules! listener_methods {
    () => {
        forward! {
            accept(&self) -> io::Result<(Self::Stream, SocketAddr)>;
            local_addr(&self) -> io::Result<SocketAddr>;
            try_clone(&self) -> io::Result<Self>;
            set_nonblocking(&self, nonblocking: bool) -> io::Result<()>;
            set_ttl(&self, ttl: u32) -> io::Result<()>;
            ttl(&self) -> io::Result<u32>;
            take_error(&self) -> io::Result<Option<io::Error>>;
        }
    };
}

impl Stream for TcpStream {
    stream_methods!();

    fn reset(self) {
        socket2::SockRef::from(&self)
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER 0");
    }
}

impl Stream for RSocket {
    stream_methods!();

    fn reset(self) {
        self.abort().expect("abort");
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    listener_methods!();

    fn bind_loopback() -> Self {
        TcpListener::bind("127.0.0.1:0").expect("bind")
    }

    fn connect(addr: SocketAddr) -> TcpStream {
        TcpStream::connect(addr).expect("connect")
    }
}

impl Listener for RServerSocket {
    type Stream = RSocket;
    listener_methods!();

    fn bind_loopback() -> Self {
        bind()
    }

    fn connect(addr: SocketAddr) -> RSocket {
        RSocket::connect_with(addr, fast_config()).expect("connect")
    }
}

/// A client connected to `listener` and the stream `listener` accepted for it.
fn pair<L: Listener>(listener: &L) -> (L::Stream, L::Stream) {
    let addr = listener.local_addr().expect("local_addr");
    let client = thread::spawn(move || L::connect(addr));
    let (accepted, _) = listener.accept().expect("accept");
    (join(client), accepted)
}

/// Reads exactly `want.len()` bytes from a stream in either mode (retrying on `WouldBlock`
/// until `SOON` has passed) and compares every one.
fn read_expecting(mut stream: impl Read, want: &[u8]) {
    let mut got = vec![0; want.len()];
    let mut at = 0;
    let done = poll_until(SOON, || {
        while at < got.len() {
            match stream.read(&mut got[at..]) {
                Ok(0) => panic!("end of stream after {at} of {} bytes", want.len()),
                Ok(n) => at += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) => panic!("read after {at} bytes: {e}"),
            }
        }
        true
    });
    assert!(done, "read {at} of {} bytes in {SOON:?}", want.len());
    assert!(got == want, "the bytes read differ from those written");
}

/// Peeks until `want.len()` bytes are there, then checks they are `want`.
fn peek_expecting(stream: &impl Stream, want: &[u8]) {
    let mut got = vec![0; want.len()];
    let mut n = 0;
    wait_until(SOON, "the peeked bytes", || {
        n = stream.peek(&mut got).expect("peek");
        n == want.len()
    });
    assert!(got == want, "the bytes peeked at differ from those written");
}

fn peek_leaves_the_bytes_to_be_read<L: Listener>() {
    let listener = L::bind_loopback();
    let (mut client, mut server) = pair(&listener);
    let data = Payload::new(1, 1000).bytes(0..1000);
    client.write_all(&data).expect("write");
    peek_expecting(&server, &data);
    // Again, and into a smaller buffer: the same first bytes.
    peek_expecting(&server, &data);
    let mut head = [0; 10];
    assert_eq!(server.peek(&mut head).expect("peek"), head.len());
    assert_eq!(head, data[..10]);
    assert_eq!(server.peek(&mut []).expect("an empty peek"), 0);
    read_expecting(&mut server, &data);
    client.shutdown(Shutdown::Write).expect("shutdown");
    assert_eq!(server.peek(&mut head).expect("peek at the end"), 0);
}

fn nonblocking_streams_would_block_instead_of_waiting<L: Listener>() {
    let listener = L::bind_loopback();
    let (mut client, mut server) = pair(&listener);
    client.set_nonblocking(true).expect("set_nonblocking");
    let mut buf = [0; 16];
    let kind = |r: io::Result<usize>| r.expect_err("a call with nothing to return").kind();
    assert_eq!(kind(client.read(&mut buf)), ErrorKind::WouldBlock);
    assert_eq!(kind(client.peek(&mut buf)), ErrorKind::WouldBlock);
    server.write_all(b"abc").expect("write");
    read_expecting(&mut client, b"abc");
    assert_eq!(kind(client.read(&mut buf)), ErrorKind::WouldBlock);

    // Writes fill the buffers while the server does not read; the one that fills them
    // fits in part, and the next would block.
    let payload = Payload::new(2, u64::MAX / 2);
    let mut chunk = vec![0; CHUNK];
    let mut written = 0u64;
    let mut partial = false;
    let full = poll_until(SOON, || loop {
        payload.fill(written, &mut chunk);
        match client.write(&chunk) {
            Ok(n) => {
                assert!(n > 0 && n <= CHUNK, "a write of {CHUNK} bytes returned {n}");
                partial |= n < CHUNK;
                written += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) => panic!("write after {written} bytes: {e}"),
        }
    });
    assert!(full, "the buffers took more than {written} bytes");
    assert!(partial, "no write took part of its bytes");
    client.flush().expect("flush in non-blocking mode");
    // Every byte written arrives, in order.
    let reader = thread::spawn(move || {
        read_expecting(&mut server, &payload.bytes(0..written));
        server
    });
    let mut server = join(reader);
    client.shutdown(Shutdown::Write).expect("shutdown");
    assert_eq!(server.read(&mut buf).expect("end of stream"), 0);
}

fn ttl_is_set_and_read_back<L: Listener>() {
    let listener = L::bind_loopback();
    listener.set_ttl(33).expect("listener set_ttl");
    assert_eq!(listener.ttl().expect("listener ttl"), 33);
    let (client, accepted) = pair(&listener);
    assert_eq!(
        accepted.ttl().expect("ttl"),
        33,
        "inherited from the listener"
    );
    client.set_ttl(42).expect("set_ttl");
    assert_eq!(client.ttl().expect("ttl"), 42);
    for wrong in [0, 256] {
        let e = client.set_ttl(wrong).expect_err("an impossible TTL");
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "set_ttl({wrong})");
        let e = listener.set_ttl(wrong).expect_err("an impossible TTL");
        assert_eq!(
            e.kind(),
            ErrorKind::InvalidInput,
            "listener set_ttl({wrong})"
        );
    }
    assert_eq!(client.ttl().expect("ttl"), 42);
    assert_eq!(listener.ttl().expect("listener ttl"), 33);
}

fn take_error_reports_a_reset_once<L: Listener>() {
    let listener = L::bind_loopback();
    assert!(listener
        .take_error()
        .expect("listener take_error")
        .is_none());
    let (client, accepted) = pair(&listener);
    assert!(client.take_error().expect("take_error").is_none());
    accepted.reset();
    let mut error = None;
    wait_until(SOON, "the reset as an error", || {
        error = client.take_error().expect("take_error");
        error.is_some()
    });
    let kind = error.map(|e| e.kind());
    assert_eq!(kind, Some(ErrorKind::ConnectionReset));
    assert!(
        client.take_error().expect("take_error").is_none(),
        "taken once"
    );
}

fn a_nonblocking_listener_would_block_until_a_client_comes<L: Listener>() {
    let listener = L::bind_loopback();
    listener.set_nonblocking(true).expect("set_nonblocking");
    let e = listener.accept().map(drop).expect_err("accept with nobody");
    assert_eq!(e.kind(), ErrorKind::WouldBlock);
    let addr = listener.local_addr().expect("local_addr");
    let mut client = L::connect(addr);
    let mut accepted = None;
    wait_until(SOON, "the client's arrival", || match listener.accept() {
        Ok((stream, _)) => {
            accepted = Some(stream);
            true
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept: {e}"),
    });
    let mut accepted = accepted.expect("accepted");
    client.write_all(b"ping").expect("write");
    read_expecting(&mut accepted, b"ping");
}

fn a_cloned_listener_accepts_too<L: Listener>() {
    let listener = L::bind_loopback();
    let clone = listener.try_clone().expect("try_clone");
    assert_eq!(
        clone.local_addr().expect("addr"),
        listener.local_addr().expect("addr")
    );
    for (i, accepting) in [&listener, &clone].into_iter().enumerate() {
        let (mut client, mut accepted) = pair(accepting);
        let data = Payload::new(10 + i as u64, 100).bytes(0..100);
        client.write_all(&data).expect("write");
        read_expecting(&mut accepted, &data);
    }
    // The clone outlives the first handle and still accepts.
    drop(listener);
    let (mut client, mut accepted) = pair(&clone);
    accepted.write_all(b"pong").expect("write");
    read_expecting(&mut client, b"pong");
}

/// Each test, against std's types and against robust-tcp's.
macro_rules! side_by_side {
    ($($name:ident),* $(,)?) => {
        mod tcp {
            use super::*;
            $(#[test]
            fn $name() {
                run_bounded(LIMIT, super::$name::<TcpListener>);
            })*
        }
        mod robust {
            use super::*;
            $(#[test]
            fn $name() {
                run_bounded(LIMIT, super::$name::<RServerSocket>);
            })*
        }
    };
}

side_by_side!(
    peek_leaves_the_bytes_to_be_read,
    nonblocking_streams_would_block_instead_of_waiting,
    ttl_is_set_and_read_back,
    take_error_reports_a_reset_once,
    a_nonblocking_listener_would_block_until_a_client_comes,
    a_cloned_listener_accepts_too,
);

// Proves: bytes peeked at before a cut are peeked at again after the reconnection (the
// peer resends what was not read), then read once, followed by what came after; and a TTL
// set on either side applies to the connection after the cut too.
#[test]
fn peek_and_ttl_survive_a_cut() {
    run_bounded(LIMIT, || {
        let server = bind();
        let proxy = FaultProxy::start(server_addr(&server), CutPlan::never()).expect("proxy");
        let (mut client, mut accepted) = connect_pair(&server, proxy.local_addr(), fast_config());
        // A reader blocked on the client sees the cut at once, and the client reconnects.
        let reader = client.try_clone().expect("try_clone");
        let reader = thread::spawn(move || (&reader).read(&mut [0; 1]));
        client.set_ttl(77).expect("set_ttl");
        accepted.set_ttl(55).expect("set_ttl");
        let payload = Payload::new(proxy.seed(), 2000);
        client.write_all(&payload.bytes(0..1000)).expect("write");
        let first = payload.bytes(0..1000);
        peek_expecting(&accepted, &first);
        assert_eq!(proxy.cut_all(), 1);
        // The server's side learns of the cut when the client comes back on a new
        // connection; the peek then reads from that one.
        wait_until(SOON, "the reconnection", || {
            accepted.status().reconnections >= 1 && client.status().reconnections >= 1
        });
        peek_expecting(&accepted, &first);
        // Read from the new connections' sockets.
        assert_eq!(client.ttl().expect("ttl"), 77);
        assert_eq!(accepted.ttl().expect("ttl"), 55);
        client.write_all(&payload.bytes(1000..2000)).expect("write");
        read_expecting(&mut accepted, &payload.bytes(0..2000));
        drop(accepted);
        assert_eq!(join(reader).expect("the client's read"), 0, "end of stream");
    });
}

// Proves: non-blocking reads and writes on both sides carry a stream through cuts, every
// byte once and in order, and end of stream after it.
#[test]
fn nonblocking_transfer_across_cuts_delivers_every_byte() {
    const LEN: u64 = 4 << 20;
    run_bounded(LIMIT, || {
        let server = bind();
        let proxy =
            FaultProxy::start(server_addr(&server), CutPlan::random(6, 512 << 10)).expect("proxy");
        let (mut client, mut accepted) = connect_pair(&server, proxy.local_addr(), fast_config());
        client.set_nonblocking(true).expect("set_nonblocking");
        accepted.set_nonblocking(true).expect("set_nonblocking");
        let payload = Payload::new(proxy.seed(), LEN);
        let writer = thread::spawn(move || {
            let mut chunk = vec![0; CHUNK];
            let mut written = 0;
            let done = poll_until(LIMIT, || {
                while written < LEN {
                    let n = chunk.len().min((LEN - written) as usize);
                    payload.fill(written, &mut chunk[..n]);
                    match client.write(&chunk[..n]) {
                        Ok(n) => written += n as u64,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                        Err(e) => panic!("write after {written} bytes: {e}"),
                    }
                }
                true
            });
            assert!(done, "wrote {written} of {LEN} bytes");
            client.shutdown(Shutdown::Write).expect("shutdown");
            client
        });
        read_expecting(&mut accepted, &payload.bytes(0..LEN));
        let mut buf = [0; 1];
        wait_until(SOON, "end of stream", || match accepted.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => panic!("a byte after the end of the payload"),
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => panic!("read at the end: {e}"),
        });
        drop(join(writer));
        assert!(
            proxy.cuts() > 0,
            "the proxy cut nothing (seed {})",
            proxy.seed()
        );
    });
}
