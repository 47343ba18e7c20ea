//! The emulated wide-area path: two network namespaces, each with a TUN device, and a
//! delay line in this process between the two devices' file descriptors (this kernel may
//! have no netem qdisc, and a user-space line works everywhere).
//!
//! Each direction has two threads. The reader takes each packet from its device as the
//! kernel sends it and decides its fate at once: dropped while the path is blackholed, at
//! random with the configured loss (a seeded generator), or at the tail of the bottleneck's
//! queue when that holds a bandwidth-delay product already; otherwise it leaves the
//! bottleneck when the packets before it have (the rate limit) and is due one one-way delay
//! later. The writer writes each packet into the other device when it is due.

use std::fs::File;
#[cfg(target_os = "linux")]
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
#[cfg(target_os = "linux")]
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use robust_tcp_testkit::netns::Namespaces;
use robust_tcp_testkit::rng::Rng;

/// The TUN device's name in both namespaces.
const DEVICE: &str = "wan0";
/// How often the line's threads look at the stop flag while idle.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Larger than any packet a TUN device with the default MTU hands over.
const MAX_PACKET: usize = 65_536;

/// The server's namespace (index in [`Namespaces`]) and host byte of its address.
pub const SERVER: (usize, u8) = (0, 1);
/// The client's.
pub const CLIENT: (usize, u8) = (1, 2);

/// What the path does to packets, the same both ways.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// One-way propagation delay (the round trip is twice this, plus queueing).
    pub one_way: Duration,
    /// The bottleneck's rate, bits per second.
    pub rate: u64,
    /// Random loss, per cent of packets (each way).
    pub loss_percent: u32,
}

impl Shape {
    /// How long a packet of `bytes` occupies the bottleneck.
    fn transmission(&self, bytes: usize) -> Duration {
        Duration::from_nanos((bytes as u64 * 8).saturating_mul(1_000_000_000) / self.rate.max(1))
    }

    /// The drop-tail queue's length in time: one bandwidth-delay product at the rate.
    fn queue_limit(&self) -> Duration {
        2 * self.one_way
    }
}

/// What the line counted, both directions together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Packets delivered.
    pub delivered: u64,
    /// Dropped at the tail of a full queue.
    pub tail_drops: u64,
    /// Dropped at random ([`Shape::loss_percent`]).
    pub random_drops: u64,
    /// Dropped while blackholed.
    pub blackholed: u64,
}

/// State shared by the line's threads and the bench.
struct Line {
    shape: Mutex<Shape>,
    blackhole: AtomicBool,
    stop: AtomicBool,
    delivered: AtomicU64,
    tail_drops: AtomicU64,
    random_drops: AtomicU64,
    blackholed: AtomicU64,
}

/// The namespaces, their devices and the delay line; dropping it stops the line and
/// deletes the namespaces (with their devices).
pub struct Path {
    line: Arc<Line>,
    threads: Vec<JoinHandle<()>>,
    // Dropped last (fields drop in order): the namespaces outlive the line's threads.
    namespaces: Namespaces,
}

impl Path {
    /// Builds the namespaces and devices and starts the line with `shape`; its random
    /// losses follow `seed`.
    pub fn new(shape: Shape, seed: u64) -> io::Result<Path> {
        let namespaces = Namespaces::new(&["server", "client"]).map_err(io::Error::other)?;
        let mut devices = Vec::new();
        for (ns, host) in [SERVER, CLIENT] {
            // A TUN device belongs to the namespace of the thread that creates it.
            let name = namespaces.name(ns).to_string();
            let device = thread::spawn(move || -> io::Result<File> {
                enter_namespace(&name)?;
                open_tun(DEVICE)
            })
            .join()
            .map_err(|_| io::Error::other("the thread opening a TUN device panicked"))??;
            let cidr = format!("{}/24", namespaces.addr(host));
            for args in [
                &["addr", "add", &cidr, "dev", DEVICE][..],
                &["link", "set", DEVICE, "up"],
            ] {
                namespaces.ip(ns, args).map_err(io::Error::other)?;
            }
            devices.push(device);
        }
        let line = Arc::new(Line {
            shape: Mutex::new(shape),
            blackhole: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
            tail_drops: AtomicU64::new(0),
            random_drops: AtomicU64::new(0),
            blackholed: AtomicU64::new(0),
        });
        let mut path = Path {
            line,
            threads: Vec::new(),
            namespaces,
        };
        for (from, to, name) in [(0, 1, "to-client"), (1, 0, "to-server")] {
            let (tx, rx) = mpsc::channel();
            let source = devices[from].try_clone()?;
            let sink = devices[to].try_clone()?;
            let line = path.line.clone();
            let rng = Rng::new(seed ^ from as u64);
            path.threads.push(
                thread::Builder::new()
                    .name(format!("{name}-in"))
                    .spawn(move || take_packets(&line, source, rng, &tx))?,
            );
            let line = path.line.clone();
            path.threads.push(
                thread::Builder::new()
                    .name(format!("{name}-out"))
                    .spawn(move || deliver_packets(&line, sink, &rx))?,
            );
        }
        Ok(path)
    }

    /// The namespace `ns` ([`SERVER`] or [`CLIENT`]'s first field).
    pub fn namespace(&self, ns: usize) -> &str {
        self.namespaces.name(ns)
    }

    /// The address of `host` ([`SERVER`] or [`CLIENT`]'s second field).
    pub fn addr(&self, host: u8) -> std::net::Ipv4Addr {
        self.namespaces.addr(host)
    }

    /// Changes the path's shape for the packets that arrive from now on.
    pub fn set_shape(&self, shape: Shape) {
        *self.line.shape.lock().unwrap_or_else(|e| e.into_inner()) = shape;
    }

    /// Drops every packet both ways (`true`), silently, or lets them through again.
    pub fn set_blackhole(&self, on: bool) {
        self.line.blackhole.store(on, Ordering::SeqCst);
    }

    /// What the line has counted so far.
    pub fn counts(&self) -> Counts {
        let l = &self.line;
        Counts {
            delivered: l.delivered.load(Ordering::Relaxed),
            tail_drops: l.tail_drops.load(Ordering::Relaxed),
            random_drops: l.random_drops.load(Ordering::Relaxed),
            blackholed: l.blackholed.load(Ordering::Relaxed),
        }
    }

    /// The CPU time the line's threads have used so far: the bench subtracts it from the
    /// process's, which it shares.
    #[cfg(target_os = "linux")]
    pub fn cpu_time(&self) -> Duration {
        self.threads
            .iter()
            .map(|t| {
                let mut clock: libc::clockid_t = 0;
                // SAFETY: the thread is alive until `Path` drops (it is joined there), and
                // the call writes only into `clock`.
                if unsafe { libc::pthread_getcpuclockid(t.as_pthread_t(), &mut clock) } != 0 {
                    return Duration::ZERO;
                }
                // SAFETY: `timespec` is plain old data; clock_gettime writes only into it.
                let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
                // SAFETY: as above.
                if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
                    return Duration::ZERO;
                }
                Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
            })
            .sum()
    }

    /// Elsewhere the example cannot run (see [`linux_only`]); this only compiles.
    #[cfg(not(target_os = "linux"))]
    pub fn cpu_time(&self) -> Duration {
        Duration::ZERO
    }
}

impl Drop for Path {
    fn drop(&mut self) {
        self.line.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The reader of one direction: each packet from `source` dropped or queued on `tx` with
/// the time it is due.
fn take_packets(
    line: &Line,
    mut source: File,
    mut rng: Rng,
    tx: &mpsc::Sender<(Instant, Vec<u8>)>,
) {
    let mut buf = vec![0; MAX_PACKET];
    // When the bottleneck has sent every packet queued so far.
    let mut free_at = Instant::now();
    while !line.stop.load(Ordering::Relaxed) {
        if !readable(&source, IDLE_POLL) {
            continue;
        }
        let n = match source.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let now = Instant::now();
        let shape = *line.shape.lock().unwrap_or_else(|e| e.into_inner());
        if line.blackhole.load(Ordering::Relaxed) {
            line.blackholed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if shape.loss_percent > 0 && rng.chance(shape.loss_percent) {
            line.random_drops.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let start = free_at.max(now);
        if start - now > shape.queue_limit() {
            line.tail_drops.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        free_at = start + shape.transmission(n);
        if tx
            .send((free_at + shape.one_way, buf[..n].to_vec()))
            .is_err()
        {
            return;
        }
    }
}

/// The writer of one direction: each packet into `sink` when it is due.
fn deliver_packets(line: &Line, mut sink: File, rx: &mpsc::Receiver<(Instant, Vec<u8>)>) {
    loop {
        match rx.recv_timeout(IDLE_POLL) {
            Ok((due, packet)) => {
                // The delay itself, not a synchronisation: the packet is held until due.
                thread::sleep(due.saturating_duration_since(Instant::now()));
                if sink.write(&packet).is_ok() {
                    line.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(RecvTimeoutError::Timeout) if !line.stop.load(Ordering::Relaxed) => {}
            Err(_) => return,
        }
    }
}

/// Whether `file` has a packet to read within `timeout`.
fn readable(file: &File, timeout: Duration) -> bool {
    let mut fd = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, which outlives the call.
    let n = unsafe { libc::poll(&mut fd, 1, timeout.as_millis() as libc::c_int) };
    n > 0 && fd.revents & libc::POLLIN != 0
}

/// Moves the calling thread into network namespace `name` (made by `ip netns add`);
/// sockets it creates afterwards, and threads it starts, live there.
#[cfg(target_os = "linux")]
pub fn enter_namespace(name: &str) -> io::Result<()> {
    let ns = File::open(format!("/var/run/netns/{name}"))?;
    // SAFETY: a valid namespace descriptor; setns changes only this thread's namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Network namespaces and TUN devices are Linux's: elsewhere the example compiles (so that
/// `cargo check --all-targets` covers it) and fails at its first step.
#[cfg(not(target_os = "linux"))]
fn linux_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "the WAN example needs Linux (network namespaces, TUN devices)",
    )
}

/// See [`linux_only`].
#[cfg(not(target_os = "linux"))]
pub fn enter_namespace(_name: &str) -> io::Result<()> {
    Err(linux_only())
}

/// A new TUN device `name` (IP packets, no packet information header) in the calling
/// thread's namespace, as the file its packets are read from and written to.
#[cfg(target_os = "linux")]
fn open_tun(name: &str) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // SAFETY: `ifreq` is plain old data, for which all zero bytes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // The name stays NUL-terminated: it is shorter than the field.
    for (to, from) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *to = from as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes the `ifreq` it is given, which outlives the call.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// See [`linux_only`].
#[cfg(not(target_os = "linux"))]
fn open_tun(_name: &str) -> io::Result<File> {
    Err(linux_only())
}
