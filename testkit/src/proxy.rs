//! A seeded fault-injecting TCP proxy on loopback.
//!
//! Every connection accepted by the proxy is forwarded to a target; from a seeded schedule
//! the proxy picks, per connection, a number of forwarded bytes (both directions combined)
//! after which it cuts the connection abruptly on both sides, with a FIN or an RST. Only
//! TCP goes through the proxy; the sessions' UDP control datagrams go directly between the
//! endpoints (their ports travel in the handshake), as a cut cable would leave them.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::rng::{fresh_seed, seed_from_env, Rng, SEED_ENV};

/// The largest "early" cut point, in bytes forwarded in both directions together: an
/// opening handshake is 225 bytes (HELLO 105, ANSWER 120, with the client's first bytes
/// between them) and a reconnection 253 (the same and its CONFIRM, 28), so early cuts
/// land before, inside and just after them.
pub const EARLY_CUT_MAX: u64 = 264;

/// How often blocked proxy threads look at the cut and stop flags. Reads and writes use it
/// as their timeout, so a cut or a drop takes effect within about this long.
const POLL: Duration = Duration::from_millis(10);
/// Bound on connecting to the target, so that dropping the proxy stays bounded.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const BUF_SIZE: usize = 64 * 1024;

/// Where the plan cuts one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutAt {
    /// Forward faithfully ([`FaultProxy::cut_all`] still cuts it).
    Never,
    /// After a random `0..=EARLY_CUT_MAX` bytes: inside a handshake.
    Early,
    /// After a random `EARLY_CUT_MAX + 1..=max_cut_bytes` bytes: while data flows.
    Late,
    /// After exactly this many bytes (0: as soon as both sides are connected).
    Bytes(u64),
}

/// How a cut closes the two TCP connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutStyle {
    /// `shutdown(Both)` then close: the endpoints see end of stream (or a reset if they
    /// keep sending).
    Close,
    /// Close with `SO_LINGER` 0: the endpoints see an RST.
    Reset,
}

/// The cut chosen for one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// Bytes to forward (both directions combined) before cutting; `None`: never.
    pub after_bytes: Option<u64>,
    /// How to close at the cut (also used by [`FaultProxy::cut_all`]).
    pub style: CutStyle,
}

/// What a [`FaultProxy`] does to the connections it forwards.
#[derive(Clone, Debug)]
pub struct CutPlan {
    max_cuts: usize,
    max_cut_bytes: u64,
    early_percent: u32,
    reset_percent: u32,
    script: Vec<CutAt>,
    seed: Option<u64>,
    hold_downstream: bool,
}

impl CutPlan {
    /// Forward everything faithfully; only [`FaultProxy::cut_all`] cuts.
    pub fn never() -> CutPlan {
        CutPlan::random(0, EARLY_CUT_MAX + 1)
    }

    /// Cut every connection, `early_percent` (default 10) of them early and the others
    /// after up to `max_cut_bytes`, until `max_cuts` cuts are done; then forward
    /// faithfully, which bounds the time a test spends reconnecting.
    pub fn random(max_cuts: usize, max_cut_bytes: u64) -> CutPlan {
        CutPlan {
            max_cuts,
            max_cut_bytes: max_cut_bytes.max(EARLY_CUT_MAX + 1),
            early_percent: 10,
            reset_percent: 50,
            script: Vec::new(),
            seed: None,
            hold_downstream: false,
        }
    }

    /// The percentage of connections (after the script) cut early.
    pub fn early_percent(mut self, percent: u32) -> CutPlan {
        self.early_percent = percent.min(100);
        self
    }

    /// The percentage of cuts done with an RST rather than a FIN (default 50).
    pub fn reset_percent(mut self, percent: u32) -> CutPlan {
        self.reset_percent = percent.min(100);
        self
    }

    /// Fixes where the first connections are cut, in accept order; later connections
    /// follow the random plan. `max_cuts` still applies.
    pub fn script(mut self, first: impl IntoIterator<Item = CutAt>) -> CutPlan {
        self.script = first.into_iter().collect();
        self
    }

    /// Holds every byte from the target to the client (in the target's socket) until
    /// [`FaultProxy::release_downstream`]: the client hears nothing from the server
    /// meanwhile, whatever the server sends, while the client's bytes still go through.
    pub fn hold_downstream(mut self) -> CutPlan {
        self.hold_downstream = true;
        self
    }

    /// Uses `seed` unless [`SEED_ENV`] is set (the default is a fresh seed per proxy).
    pub fn seed(mut self, seed: u64) -> CutPlan {
        self.seed = Some(seed);
        self
    }

    /// The cuts for successive connections under `seed`: exactly what a proxy with this
    /// plan and seed applies (before `max_cuts`), exposed to test determinism.
    pub fn schedule(&self, seed: u64) -> Schedule {
        Schedule {
            plan: self.clone(),
            rng: Rng::new(seed),
            index: 0,
        }
    }
}

/// The endless sequence of per-connection cuts of a plan; see [`CutPlan::schedule`].
#[derive(Clone, Debug)]
pub struct Schedule {
    plan: CutPlan,
    rng: Rng,
    index: usize,
}

impl Iterator for Schedule {
    type Item = Cut;

    fn next(&mut self) -> Option<Cut> {
        // Always draw the same four numbers, so a script does not shift the random cuts
        // of later connections.
        let (kind_roll, early_roll, late_roll, style_roll) = (
            self.rng.chance(self.plan.early_percent),
            self.rng.range(0, EARLY_CUT_MAX),
            self.rng.range(EARLY_CUT_MAX + 1, self.plan.max_cut_bytes),
            self.rng.chance(self.plan.reset_percent),
        );
        let at = self
            .plan
            .script
            .get(self.index)
            .copied()
            .unwrap_or(if kind_roll { CutAt::Early } else { CutAt::Late });
        self.index += 1;
        let after_bytes = match at {
            CutAt::Never => None,
            CutAt::Early => Some(early_roll),
            CutAt::Late => Some(late_roll),
            CutAt::Bytes(n) => Some(n),
        };
        let style = if style_roll {
            CutStyle::Reset
        } else {
            CutStyle::Close
        };
        Some(Cut { after_bytes, style })
    }
}

/// A TCP proxy on loopback that cuts the connections it forwards, following a
/// [`CutPlan`]. Dropping it stops its threads and closes every socket it holds.
pub struct FaultProxy {
    addr: SocketAddr,
    seed: u64,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on an ephemeral loopback port and forwards each connection to `target`.
    ///
    /// The seed is [`SEED_ENV`] if set, else the plan's, else fresh; it is printed on
    /// stderr (shown by `cargo test` for a failing test) and available from
    /// [`seed`](Self::seed) for assertion messages.
    ///
    /// # Errors
    ///
    /// If the listening socket cannot be set up.
    ///
    /// # Panics
    ///
    /// If `target` is not a loopback address: these tests stay on the local machine.
    pub fn start(target: SocketAddr, plan: CutPlan) -> io::Result<FaultProxy> {
        let listen_ip = if target.is_ipv4() {
            Ipv4Addr::LOCALHOST.into()
        } else {
            Ipv6Addr::LOCALHOST.into()
        };
        FaultProxy::start_at(SocketAddr::new(listen_ip, 0), target, plan)
    }

    /// As [`start`](Self::start), listening on `listen` (a loopback address; the port of
    /// a proxy dropped before, say, so that its clients reach this one).
    ///
    /// # Errors
    ///
    /// If the listening socket cannot be set up.
    ///
    /// # Panics
    ///
    /// If `target` is not a loopback address.
    pub fn start_at(
        listen: SocketAddr,
        target: SocketAddr,
        plan: CutPlan,
    ) -> io::Result<FaultProxy> {
        assert!(target.ip().is_loopback(), "{target} is not loopback");
        let seed = seed_from_env().or(plan.seed).unwrap_or_else(fresh_seed);
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        eprintln!("fault proxy {addr} -> {target}: seed {seed} (replay with {SEED_ENV}={seed})");
        let shared = Arc::new(Shared {
            target,
            max_cuts: AtomicUsize::new(plan.max_cuts),
            stopping: AtomicBool::new(false),
            planned_cuts: AtomicUsize::new(0),
            cuts: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            downstream_held: AtomicBool::new(plan.hold_downstream),
            links: Mutex::new(Vec::new()),
            workers: Mutex::new(Vec::new()),
        });
        let schedule = plan.schedule(seed);
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("proxy-accept".into())
                .spawn(move || accept_loop(&listener, &shared, schedule))?
        };
        Ok(FaultProxy {
            addr,
            seed,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The seed in use (for failure messages).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Cuts done so far, by the plan and by [`cut_all`](Self::cut_all).
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// Connections accepted so far (each connect attempt of a client is one).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Ends the plan: from now on no connection is cut by it, including connections
    /// already accepted that have not reached their cut point ([`cut_all`](Self::cut_all)
    /// still cuts). Lets a test hold a client off the server for as long as it needs.
    pub fn stop_cutting(&self) {
        self.shared.max_cuts.store(0, Ordering::SeqCst);
    }

    /// Lets the bytes from the target through to the client, held since the start by
    /// [`CutPlan::hold_downstream`] (and every later byte).
    pub fn release_downstream(&self) {
        self.shared.downstream_held.store(false, Ordering::SeqCst);
    }

    /// Holds the bytes from the target to the client on the connections accepted from now
    /// on, as [`CutPlan::hold_downstream`] does from the start, until
    /// [`release_downstream`](Self::release_downstream).
    pub fn hold_downstream(&self) {
        self.shared.downstream_held.store(true, Ordering::SeqCst);
    }

    /// Cuts every live connection now, each in its planned [`CutStyle`]; returns how many.
    /// These cuts count in [`cuts`](Self::cuts) but not against the plan's `max_cuts`.
    pub fn cut_all(&self) -> usize {
        self.shared
            .live_links()
            .iter()
            .filter(|link| self.shared.cut(link, link.style))
            .count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // The acceptor blocks in accept(); a connection of our own wakes it to see the flag.
        let _ = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for link in self.shared.live_links() {
            link.close(CutStyle::Close);
        }
        // Forwarders see the stop flag within POLL, so these joins are bounded.
        let workers = std::mem::take(&mut *lock(&self.shared.workers));
        for worker in workers {
            let _ = worker.join();
        }
    }
}

/// State shared by the proxy handle and its threads.
struct Shared {
    target: SocketAddr,
    /// The plan's `max_cuts`, lowered by [`FaultProxy::stop_cutting`].
    max_cuts: AtomicUsize,
    stopping: AtomicBool,
    /// Cuts made by the plan, limited by `max_cuts`.
    planned_cuts: AtomicUsize,
    /// All cuts (plan and `cut_all`).
    cuts: AtomicUsize,
    connections: AtomicUsize,
    /// Whether the target's bytes wait before going to the client.
    downstream_held: AtomicBool,
    /// Live connections for `cut_all` and drop; the forwarders own them, so a link whose
    /// forwarders have both ended is freed (and its sockets closed) at once.
    links: Mutex<Vec<Weak<Link>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn live_links(&self) -> Vec<Arc<Link>> {
        let mut links = lock(&self.links);
        links.retain(|weak| weak.strong_count() > 0);
        links.iter().filter_map(Weak::upgrade).collect()
    }

    /// Takes one of the plan's cuts if any is left.
    fn reserve_planned_cut(&self) -> bool {
        self.planned_cuts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |done| {
                (done < self.max_cuts.load(Ordering::SeqCst)).then_some(done + 1)
            })
            .is_ok()
    }

    /// Cuts `link` unless it is already closed; returns whether this call cut it.
    fn cut(&self, link: &Link, style: CutStyle) -> bool {
        if !link.claim_close() {
            return false;
        }
        // Counted before the endpoints can see the cut, so a test that observed the cut
        // also observes the count.
        self.cuts.fetch_add(1, Ordering::SeqCst);
        link.shut(style);
        true
    }

    /// Of `n` bytes just read on `link`, how many to forward, and whether to cut after them.
    fn admit(&self, link: &Link, n: usize) -> (usize, bool) {
        // A lock, not an atomic: the check, the reservation and the update must be one step
        // so that two directions crossing the cut point together cut (and count) once.
        let mut budget = lock(&link.budget);
        match *budget {
            Budget::Never => (n, false),
            // The other direction reached the cut point and is cutting: drop these bytes.
            Budget::Cutting => (0, false),
            Budget::Left(left) if (n as u64) < left => {
                *budget = Budget::Left(left - n as u64);
                (n, false)
            }
            Budget::Left(left) if self.reserve_planned_cut() => {
                *budget = Budget::Cutting;
                (left as usize, true)
            }
            Budget::Left(_) => {
                *budget = Budget::Never;
                (n, false)
            }
        }
    }

    fn spawn_worker(&self, name: &str, work: impl FnOnce() + Send + 'static) {
        let mut workers = lock(&self.workers);
        workers.retain(|w| !w.is_finished());
        match thread::Builder::new().name(name.into()).spawn(work) {
            Ok(handle) => workers.push(handle),
            Err(e) => eprintln!("fault proxy: cannot spawn {name}: {e}"),
        }
    }
}

/// One proxied connection: the client's side and the target's side.
struct Link {
    client: TcpStream,
    server: TcpStream,
    budget: Mutex<Budget>,
    style: CutStyle,
    closed: AtomicBool,
}

impl Link {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Closes both sides abruptly; only the first call acts (returns true).
    fn close(&self, style: CutStyle) -> bool {
        let first = self.claim_close();
        if first {
            self.shut(style);
        }
        first
    }

    /// Marks the link closed; true for the one caller that must then [`shut`](Self::shut) it.
    fn claim_close(&self) -> bool {
        !self.closed.swap(true, Ordering::SeqCst)
    }

    fn shut(&self, style: CutStyle) {
        for stream in [&self.client, &self.server] {
            match style {
                CutStyle::Close => {
                    let _ = stream.shutdown(Shutdown::Both);
                }
                CutStyle::Reset => {
                    // Disconnecting (a connect to AF_UNSPEC) sends the RST at once and
                    // wakes every thread blocked on the socket. Closing it with SO_LINGER 0
                    // would send the RST only once the forwarders let go of it, and one
                    // blocked in a write sees the cut only when its send timeout ends (10
                    // ms), which delayed the reset that long.
                    if rustix::net::connect_unspec(stream).is_err() {
                        // Where that is not supported: the RST goes out when the last
                        // handle closes the socket; shutting down reading wakes a blocked
                        // reader at once and sends nothing.
                        let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
                        let _ = stream.shutdown(Shutdown::Read);
                    }
                }
            }
        }
    }
}

/// Where a link stands with respect to its planned cut.
#[derive(Clone, Copy, Debug)]
enum Budget {
    /// Not cut by the plan (none planned, or `max_cuts` reached at the cut point).
    Never,
    /// Bytes left to forward before the cut.
    Left(u64),
    /// The cut point is reached and one forwarder is cutting.
    Cutting,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking proxy thread must not hide the test's own failure behind a poison error.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>, mut schedule: Schedule) {
    for incoming in listener.incoming() {
        if shared.stopping() {
            return;
        }
        let client = match incoming {
            Ok(client) => client,
            Err(e) => {
                // Transient (e.g. out of descriptors): back off a little instead of spinning.
                eprintln!("fault proxy: accept failed: {e}");
                thread::park_timeout(POLL);
                continue;
            }
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let cut = schedule.next().expect("schedules are endless");
        match TcpStream::connect_timeout(&shared.target, CONNECT_TIMEOUT) {
            Ok(server) => start_link(shared, client, server, cut),
            Err(_) => refuse(&client),
        }
    }
}

/// The target is down: reset the client's connection, as the target itself would have.
fn refuse(client: &TcpStream) {
    let _ = socket2::SockRef::from(client).set_linger(Some(Duration::ZERO));
}

fn start_link(shared: &Arc<Shared>, client: TcpStream, server: TcpStream, cut: Cut) {
    for stream in [&client, &server] {
        // Timeouts turn blocking calls into polls of the cut and stop flags; no Nagle delay
        // so the proxy adds no latency to small handshake frames.
        let setup = stream
            .set_read_timeout(Some(POLL))
            .and_then(|()| stream.set_write_timeout(Some(POLL)))
            .and_then(|()| stream.set_nodelay(true));
        if setup.is_err() {
            return;
        }
    }
    let link = Arc::new(Link {
        client,
        server,
        budget: Mutex::new(cut.after_bytes.map_or(Budget::Never, Budget::Left)),
        style: cut.style,
        closed: AtomicBool::new(false),
    });
    lock(&shared.links).push(Arc::downgrade(&link));
    // A cut point of 0 cuts before any byte moves.
    if let (_, true) = shared.admit(&link, 0) {
        shared.cut(&link, link.style);
        return;
    }
    for to_server in [true, false] {
        let (worker_shared, link) = (Arc::clone(shared), Arc::clone(&link));
        let name = if to_server { "proxy-up" } else { "proxy-down" };
        shared.spawn_worker(name, move || forward(&worker_shared, &link, to_server));
    }
}

/// Copies one direction of `link` until end of stream, an error, a cut or the proxy's drop.
fn forward(shared: &Shared, link: &Link, to_server: bool) {
    let (from, to) = if to_server {
        (&link.client, &link.server)
    } else {
        (&link.server, &link.client)
    };
    let mut buf = vec![0; BUF_SIZE];
    while !to_server && shared.downstream_held.load(Ordering::SeqCst) {
        // The target's bytes wait in its socket: nothing is read from it meanwhile.
        if link.is_closed() || shared.stopping() {
            return;
        }
        thread::park_timeout(POLL);
    }
    loop {
        if link.is_closed() || shared.stopping() {
            return;
        }
        let n = match (&*from).read(&mut buf) {
            // Checked again: a cut wakes readers with end of stream, not to be passed on.
            _ if link.is_closed() => return,
            Ok(0) => {
                // An orderly half-close: pass it on and keep the other direction going.
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if is_poll_timeout(&e) => continue,
            Err(_) => {
                // The endpoint reset or failed: pass that on to the other one.
                link.close(CutStyle::Reset);
                return;
            }
        };
        let (pass, cut_now) = shared.admit(link, n);
        if write_polled(shared, link, to, &buf[..pass]).is_err() {
            link.close(CutStyle::Reset);
            return;
        }
        if cut_now {
            shared.cut(link, link.style);
            return;
        }
    }
}

/// `write_all` that gives up when the link is cut or the proxy stops.
fn write_polled(
    shared: &Shared,
    link: &Link,
    mut to: &TcpStream,
    mut data: &[u8],
) -> io::Result<()> {
    while !data.is_empty() {
        if link.is_closed() || shared.stopping() {
            return Err(io::ErrorKind::ConnectionAborted.into());
        }
        match to.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if is_poll_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn is_poll_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}
