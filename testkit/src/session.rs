//! Helpers around robust sessions shared by the test files.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::panic;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use robust_tcp::{Config, RServerSocket, RSocket};

use crate::payload::Payload;

/// The default config with a short reconnection backoff (1 ms doubling to 20 ms): a test
/// with dozens of cuts must not spend seconds in backoff, and the schedule itself is the
/// library's own (unit-tested) business.
pub fn fast_config() -> Config {
    Config::default().reconnect_backoff(Duration::from_millis(1), Duration::from_millis(20))
}

/// A server on an ephemeral loopback port, with [`fast_config`].
///
/// # Panics
///
/// If binding fails.
pub fn bind() -> RServerSocket {
    RServerSocket::bind_with("127.0.0.1:0", fast_config()).expect("bind")
}

/// The address `server` listens on.
///
/// # Panics
///
/// If the server cannot say.
pub fn server_addr(server: &RServerSocket) -> SocketAddr {
    server.local_addr().expect("server address")
}

/// Opens a session from a client connecting to `connect_to` (the server itself or a proxy
/// in front of it) and accepts it on `server`; returns `(client, accepted)`.
///
/// `connect` runs on its own thread because it may need `accept` to make progress.
///
/// # Panics
///
/// If connect or accept fails, or the accepted session is not the client's (its session
/// id differs).
pub fn connect_pair(
    server: &RServerSocket,
    connect_to: SocketAddr,
    config: Config,
) -> (RSocket, RSocket) {
    thread::scope(|s| {
        let client = s.spawn(move || RSocket::connect_with(connect_to, config));
        let (accepted, _peer) = server.accept().expect("accept the test session");
        let client = client
            .join()
            .unwrap_or_else(|payload| panic::resume_unwind(payload))
            .expect("connect the test session");
        assert_eq!(
            client.session_id(),
            accepted.session_id(),
            "accept returned another session than the client's"
        );
        (client, accepted)
    })
}

/// Writes `payload` on a clone of `sock` from a new thread, then shuts down writing.
///
/// # Panics
///
/// If the clone fails; the thread's result carries write errors.
pub fn spawn_writer(sock: &RSocket, payload: Payload) -> JoinHandle<io::Result<()>> {
    let sock = sock.try_clone().expect("try_clone for the writer thread");
    thread::Builder::new()
        .name("payload-writer".into())
        .spawn(move || {
            payload.write_to(&sock)?;
            sock.shutdown(Shutdown::Write)
        })
        .expect("spawn the writer thread")
}

/// Reads and checks `payload` then end of stream on a clone of `sock`, from a new thread.
///
/// # Panics
///
/// If the clone fails; the thread's result carries read and check errors.
pub fn spawn_reader(sock: &RSocket, payload: Payload) -> JoinHandle<io::Result<()>> {
    let sock = sock.try_clone().expect("try_clone for the reader thread");
    thread::Builder::new()
        .name("payload-reader".into())
        .spawn(move || payload.verify_from(&sock))
        .expect("spawn the reader thread")
}

/// Moves `up` from `client` to `server` and `down` back at once, with a writer and a reader
/// thread on each side (each on its own `try_clone` handle), and checks every byte and the
/// end of stream on both sides. Panics naming `seed` and the failing thread.
pub fn exchange(client: &RSocket, server: &RSocket, up: Payload, down: Payload, seed: u64) {
    let threads = [
        ("client writing", spawn_writer(client, up)),
        ("server writing", spawn_writer(server, down)),
        ("server reading", spawn_reader(server, up)),
        ("client reading", spawn_reader(client, down)),
    ];
    for (what, thread) in threads {
        if let Err(e) = crate::bounded::join(thread) {
            panic!("seed {seed}: {what}: {e} (kind {:?})", e.kind());
        }
    }
}

/// [`exchange`] of `len` bytes each way, the payloads drawn from `seed` (up) and `seed ^ 1`
/// (down), so that a failure replays from the seed alone.
pub fn exchange_seeded(client: &RSocket, server: &RSocket, len: u64, seed: u64) {
    let (up, down) = (Payload::new(seed, len), Payload::new(seed ^ 1, len));
    exchange(client, server, up, down, seed);
}

/// The UDP control port `server` names in its answers, read from the ANSWER to an opening
/// that a raw client sends; the session it opens is accepted here and aborted, so that it
/// does not come out of the caller's next `accept`.
///
/// # Panics
///
/// If the server does not answer with an acceptance, or `accept` returns another session.
pub fn control_port(server: &RServerSocket) -> u16 {
    use crate::raw;
    use crate::rng::{fresh_seed, Rng};

    let mut rng = Rng::new(fresh_seed());
    let opening = raw::RawOpening::new(&mut rng);
    let mut stream = raw::connect(server_addr(server));
    let answer = raw::open(&mut stream, &opening, b"", &mut rng);
    let (accepted, _) = server.accept().expect("accept the raw session");
    assert_eq!(
        accepted.session_id(),
        answer.cid,
        "accept returned another session"
    );
    accepted.abort().expect("abort the raw session");
    answer.control_port
}

/// Runs `work` while sampling the send buffer capacity of `sock` (every millisecond or
/// so); returns what `work` returned and the largest capacity seen, before, during and
/// right after it.
pub fn with_peak_capacity<T>(sock: &RSocket, work: impl FnOnce() -> T) -> (T, usize) {
    use std::sync::atomic::{AtomicBool, Ordering};

    let done = AtomicBool::new(false);
    let capacity = || sock.status().send_buffer_capacity;
    thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut peak = capacity();
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(capacity());
                thread::park_timeout(Duration::from_millis(1));
            }
            peak.max(capacity())
        });
        let result = work();
        done.store(true, Ordering::Relaxed);
        let peak = sampler
            .join()
            .unwrap_or_else(|payload| panic::resume_unwind(payload));
        (result, peak)
    })
}

/// The kernel's `TCP_NODELAY` on this process's TCP socket from `local` to `peer`: the
/// connection a session uses, found among the process's descriptors by its addresses
/// (`RSocket::local_addr` and `peer_addr`), since a session does not lend its socket out.
/// `None` if no descriptor of this process is that connection.
///
/// # Panics
///
/// If `/proc/self/fd` cannot be listed, or descriptors of that connection disagree.
#[cfg(target_os = "linux")]
pub fn kernel_nodelay(local: SocketAddr, peer: SocketAddr) -> Option<bool> {
    use std::os::fd::BorrowedFd;

    let mut found = None;
    for entry in std::fs::read_dir("/proc/self/fd").expect("list /proc/self/fd") {
        let Some(fd) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: the descriptor is only queried, never closed or kept. If another thread
        // closes it meanwhile, the calls fail (EBADF) or query whatever reuses the
        // number, which the address check below filters out.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let addr = |got: rustix::io::Result<Option<rustix::net::SocketAddrAny>>| {
            got.ok()
                .flatten()
                .and_then(|a| SocketAddr::try_from(a).ok())
        };
        if addr(rustix::net::getsockname(fd).map(Some)) != Some(local)
            || addr(rustix::net::getpeername(fd)) != Some(peer)
        {
            continue;
        }
        if let Ok(on) = rustix::net::sockopt::tcp_nodelay(fd) {
            assert!(found.is_none_or(|was| was == on), "descriptors disagree");
            found = Some(on);
        }
    }
    found
}
