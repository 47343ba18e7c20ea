//! A deterministic simulation of whole sessions: one server and its clients, on a virtual
//! clock, over a simulated network, with the protocol's real core (sessions, the server's
//! endpoint, the client's redial schedule, the handshake frames) and a driver that does
//! what the engine does around it. Each schedule draws both sides' `Config`s, the
//! network's weather and the faults (cuts, blackholes, partitions, lost, duplicated and
//! reordered datagrams, clients that move) from one seed, and checks after every step that
//! every byte read is the one written at its place, exactly once, and that no opening ever
//! opens a second session; after the network heals, that every session that did not fail
//! with a documented error delivers everything within a bound.
//!
//! `cargo test --release --test sim -- --nocapture` runs schedules for `SIM_SECONDS`
//! (default 20) or `SIM_SCHEDULES` of them and prints how many; a failure prints its
//! seed, and `SIM_SEED=<seed> cargo test --release --test sim -- --nocapture` replays it.
//! Anchors: FoundationDB's simulation, TigerBeetle's VOPR, quinn-proto's `Pair` tests.
//!
//! Two seeds in ten are targeted classes ([`Scenario`]): a compound fault at the server's
//! opening ANSWER. Reverted fixes of issue 18 they catch (one-line changes, then
//! `SIM_SCHEDULES=4000`; the first failing seed, measured at 7f0b79e):
//!
//! | change | seed | failure |
//! |---|---|---|
//! | defect 1, server half: `tombstone_life` = `self.handshake_timeout * 12` (`core/endpoint/server.rs`) | 318 | `client 0's opening opened a second session` |
//! | defect 1, client half: `let after = patience;` in `Redial::expired` (no `OPENING_WINDOW`) | 2078 | `client 0's opening opened a second session` |
//! | defect 5: `needs_connection` returns `false` for a failed session (`core/session/getters.rs`) | 1259 | `the healed network delivered nothing more for 600s` |

mod attacker;
mod client;
mod frames;
mod net;
mod rng;
mod server;
mod world;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use robust_tcp::{Config, Error, NotRobustReason, Refusal};

use crate::net::Weather;
use crate::rng::Rng;
use crate::world::{Scenario, Stream, World};

/// How long a RESET is retried, at most (then the peer's session waits for its client
/// like any whose client vanished).
const RESET_RETRIES: Duration = Duration::from_secs(30);

/// How long a healed network may take to deliver everything, in virtual time.
const HEAL_BOUND: Duration = Duration::from_secs(600);

/// A `Config` drawn at random, within what `validate` accepts.
fn random_config(rng: &mut Rng) -> Config {
    let buffer = rng.pick(&[1024, 4096, 16 << 10]);
    let max = buffer * rng.pick(&[1, 4]);
    let config = Config::default()
        .handshake_timeout(rng.pick(&[1, 2, 5, 30]).pipe(Duration::from_secs))
        .dead_after(rng.pick(&[None, Some(1), Some(3)]).map(Duration::from_secs))
        .give_up_after(
            rng.pick(&[None, None, None, None, None, None, Some(2), Some(20)])
                .map(Duration::from_secs),
        )
        .send_buffer_size(buffer)
        .send_buffer_max(max)
        .ack_threshold(buffer / rng.pick(&[2, 4]))
        .busy_limit(Duration::from_secs(rng.pick(&[0, 5, 30])))
        .max_sessions(rng.pick(&[1, 4, 8, 8]))
        .max_sessions_per_address(rng.pick(&[1, 4, 8, 8]))
        // 1: clients resuming together at a single slot evicted each other's answered
        // handshakes forever until answered ones kept their slots (seed 4531).
        .max_handshakes(rng.pick(&[1, 2, 4, 16]))
        .key_agreement(rng.pick(&[true, false]));
    config.validate().expect("a valid random config");
    config
}

/// A `Config` drawn at random, then bent to what `scenario` needs: for a lost ANSWER, a
/// server whose handshake timeout is much shorter than its clients' and whose sessions
/// give up (the session must end while its client still retries the opening); for an
/// abort before the ANSWER, a server whose sessions wait for their client however long.
fn config_for(scenario: Scenario, server: bool, rng: &mut Rng) -> Config {
    let config = random_config(rng);
    let secs = |rng: &mut Rng, of: &[u64]| Duration::from_secs(rng.pick(of));
    let config = match (scenario, server) {
        (Scenario::LostAnswer, true) => config
            .handshake_timeout(secs(rng, &[1, 2]))
            .give_up_after(Some(secs(rng, &[2, 20]))),
        (Scenario::LostAnswer, false) => config.handshake_timeout(secs(rng, &[5, 30])),
        (Scenario::AbortAtAnswer, true) => config.give_up_after(None),
        _ => config,
    };
    config.validate().expect("a valid config for the scenario");
    config
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}

/// What one schedule did.
#[derive(Default)]
struct Summary {
    steps: u64,
    clients: usize,
    completed: usize,
    failed: usize,
    datagrams: u64,
    /// Failures by kind.
    reasons: std::collections::BTreeMap<String, usize>,
}

impl Summary {
    fn add(&mut self, s: Summary) {
        self.steps += s.steps;
        self.clients += s.clients;
        self.completed += s.completed;
        self.failed += s.failed;
        self.datagrams += s.datagrams;
        for (reason, n) in s.reasons {
            *self.reasons.entry(reason).or_default() += n;
        }
    }
}

/// A failure's kind, for the summary.
fn kind(e: &Error) -> String {
    let debug = format!("{e:?}");
    debug
        .split([' ', '(', '{'])
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Runs the schedule of `seed`; panics on a broken promise.
fn run(seed: u64) -> Summary {
    let scenario = Scenario::of(seed);
    let mut rng = Rng::new(seed);
    let server_config = config_for(scenario, true, &mut rng);
    let mut w = World::new(scenario, rng, server_config);
    w.tcp_latency = w.rng.millis(1, 40);
    let shared_ip = w.rng.chance(500);
    let mut summary = Summary::default();
    add_client(&mut w, shared_ip);
    if w.rng.chance(300) {
        add_client(&mut w, shared_ip);
        let attacker = w.clients.len() - 1;
        w.clients[attacker].attacker = true;
        w.clients[attacker].out = Stream::new(0, 0);
        w.clients[attacker].back = Stream::new(0, 0);
    }
    let steps = 50 + w.rng.below(250);
    for _ in 0..steps {
        chaos_step(&mut w, shared_ip);
        summary.steps += 1;
    }
    heal(&mut w);
    summary.clients = w.clients.len();
    summary.datagrams = w.delivered;
    for (i, c) in w.clients.iter().enumerate().filter(|(_, c)| !c.attacker) {
        match &c.failed {
            Some(e) => {
                assert!(
                    documented(e),
                    "client {i} failed with {e:?}, which nothing explains"
                );
                summary.failed += 1;
                let reason = match e {
                    // Abandoned after lingering `linger_limit`.
                    Error::Aborted if c.aborted_at.is_none() => "Aborted(lingered)".into(),
                    Error::Refused(r) => format!("Refused({r:?})"),
                    Error::NotRobust { reason } => format!("NotRobust({reason:?})"),
                    e => kind(e),
                };
                *summary.reasons.entry(reason).or_default() += 1;
            }
            None => summary.completed += 1,
        }
    }
    summary
}

/// Whether a client may fail with `e` in a schedule: the server was full, forgot the
/// session (evicted it), or the opening got nowhere through the faults.
fn documented(e: &Error) -> bool {
    matches!(
        e,
        Error::Aborted
            | Error::UnknownSession
            | Error::Refused(Refusal::TooManySessions)
            | Error::GaveUp { .. }
            | Error::PeerReset
            | Error::NotRobust {
                reason: NotRobustReason::HungUp(_) | NotRobustReason::Silent
            }
    )
}

fn add_client(w: &mut World, shared_ip: bool) {
    let i = w.clients.len() as u8;
    let ip = if shared_ip { 1 } else { 1 + i };
    let port = w.new_port();
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, ip)), port);
    let config = config_for(w.scenario, false, &mut w.rng);
    let key = w.rng.next_u64();
    let out = Stream::new(key, w.rng.below(64 << 10));
    let back = Stream::new(key ^ 1, w.rng.below(64 << 10));
    w.add_client(addr, config, out, back);
}

/// One step of the faulty phase: the applications, the network's weather and faults.
fn chaos_step(w: &mut World, shared_ip: bool) {
    match w.rng.below(100) {
        0..=19 => both_ends(w, 8192, World::client_write, World::server_write),
        20..=39 => both_ends(w, 16384, World::client_read, World::server_read),
        40..=59 => {
            let span = w.rng.millis(1, 1500);
            w.advance(span);
        }
        60..=64 => {
            // A cut (a reset, or a NAT that forgot the connection and answers with one):
            // of any connection, or of the newest, which is most likely in its handshake
            // (an ANSWER lost with it).
            let live: Vec<usize> = (0..w.conns.len()).filter(|&c| !w.conns[c].broken).collect();
            let newest = live.last().copied();
            let pick = match w.rng.chance(500) {
                true => newest,
                false => live.get(w.rng.below(live.len() as u64) as usize).copied(),
            };
            if let Some(c) = pick {
                w.conns[c].cut();
            }
        }
        65..=66 => {
            // A blackhole: the connection stays up and carries nothing. Only where the
            // client and the server have a silence limit (`TCP_USER_TIMEOUT`); without one,
            // TCP's own retransmissions take many minutes, as documented.
            let limits = w.server.config.dead_after_value().is_some();
            let live: Vec<usize> = (0..w.conns.len())
                .filter(|&c| !w.conns[c].broken && w.conns[c].stalled.is_none())
                .filter(|&c| {
                    w.clients[w.conns[c].client]
                        .config
                        .dead_after_value()
                        .is_some()
                })
                .filter(|_| limits)
                .collect();
            if !live.is_empty() {
                let c = live[w.rng.below(live.len() as u64) as usize];
                w.conns[c].stalled = Some(w.now);
            }
        }
        67..=71 => {
            let weather = Weather {
                loss: w.rng.pick(&[0, 10, 100, 300]),
                duplication: w.rng.pick(&[0, 10, 100]),
                delay_ms: (1, w.rng.pick(&[1, 20, 200])),
                udp_blocked_until: None,
            };
            w.set_weather(weather);
        }
        72..=73 => {
            let span = w.rng.millis(500, 8000);
            w.block_udp(span);
        }
        74..=75 => {
            // The client moves (a NAT rebinding, a new network): new address, and its
            // connection with the old one is gone.
            let i = w.rng.below(w.clients.len() as u64) as usize;
            let port = w.new_port();
            let c = &mut w.clients[i];
            c.addr = SocketAddr::new(c.addr.ip(), port);
            if let Some(conn) = c.conn {
                w.conns[conn].cut();
            }
        }
        76..=77 if w.clients.len() < 4 && w.partition_end().is_none() => add_client(w, shared_ip),
        88 => {
            // An outage that starts with a handshake: the newest connection (most likely
            // carrying an ANSWER) is cut, and nothing gets through for a while.
            if let Some(c) = (0..w.conns.len()).rev().find(|&c| !w.conns[c].broken) {
                w.conns[c].cut();
            }
            let span = w.rng.millis(500, 40_000);
            w.partition(span);
        }
        86..=87 => {
            // Up to 40 s: longer than a short handshake timeout's tombstones used to last,
            // and than a RESET is retried.
            let span = w.rng.millis(500, 40_000);
            w.partition(span);
        }
        78..=79 => w.replay_from_victim(5),
        80..=81 => {
            if let Some(a) = w.clients.iter().position(|c| c.attacker) {
                if w.rng.chance(500) {
                    w.spoof_path(a);
                } else {
                    w.flood_offers(a, 20);
                }
            }
        }
        85 if w.rng.chance(150) => {
            let i = w.rng.below(w.clients.len() as u64) as usize;
            w.client_abort(i);
        }
        82..=84 => {
            let i = w.rng.below(w.clients.len() as u64) as usize;
            w.client_close(i);
            if let Some(s) = pick_server_session(w) {
                w.server_close(s);
            }
        }
        _ => w.pump(),
    }
    w.pump();
    w.check_bounds();
}

/// A client at random and a live server session at random (if any) each do `client` and
/// `server` with a random count of up to `most` bytes.
fn both_ends(
    w: &mut World,
    most: u64,
    client: fn(&mut World, usize, usize),
    server: fn(&mut World, usize, usize),
) {
    let i = w.rng.below(w.clients.len() as u64) as usize;
    let n = w.rng.below(most) as usize + 1;
    client(w, i, n);
    if let Some(s) = pick_server_session(w) {
        server(w, s, n);
    }
}

/// A live server session, if any, at random.
fn pick_server_session(w: &mut World) -> Option<usize> {
    let live: Vec<usize> = (0..w.server.sessions.len())
        .filter(|&s| !w.server.sessions[s].finished)
        .collect();
    (!live.is_empty()).then(|| live[w.rng.below(live.len() as u64) as usize])
}

/// The network heals: no more faults; every application writes what it has left and reads
/// everything; every session that has not failed must be done within `HEAL_BOUND`.
fn heal(w: &mut World) {
    w.calm();
    let started = w.now;
    loop {
        let applications: Vec<usize> = (0..w.clients.len())
            .filter(|&i| !w.clients[i].attacker)
            .collect();
        for i in applications {
            w.client_write(i, usize::MAX);
            w.client_read(i, usize::MAX);
            w.client_close(i);
        }
        for s in 0..w.server.sessions.len() {
            w.server_write(s, usize::MAX);
            w.server_read(s, usize::MAX);
            w.server_close(s);
        }
        w.check_bounds();
        if all_done(w) {
            return;
        }
        assert!(
            w.now.duration_since(started) < HEAL_BOUND,
            "the healed network delivered nothing more for {HEAL_BOUND:?}: {}",
            pending(w)
        );
        w.advance(Duration::from_millis(100));
    }
}

/// Whether every client either failed or exchanged everything with its server session
/// and closed, both ends freed; the server session of an aborted client must have ended
/// too, unless the client's opening failed afterwards (it never reached the server to
/// tell it). An attacker's session and one whose client failed otherwise may wait for
/// their client: they are bounded by the server's caps and eviction.
fn all_done(w: &World) -> bool {
    let clients = w
        .clients
        .iter()
        .all(|c| c.attacker || c.failed.is_some() || c.finished);
    let sessions = w.server.sessions.iter().all(|s| {
        let client = &w.clients[s.client];
        // An aborted client's RESET is retried for about 20 s: it reaches the server
        // unless datagrams were lost meanwhile (or the opening failed before it could).
        let reset_lost = client
            .aborted_at
            .is_some_and(|at| w.was_rough(at, at + RESET_RETRIES));
        let told = matches!(client.failed, Some(Error::Aborted)) && !reset_lost;
        s.finished || client.attacker || (client.failed.is_some() && !told)
    });
    clients && sessions
}

fn pending(w: &World) -> String {
    let mut out = String::new();
    for (i, c) in w.clients.iter().enumerate() {
        let server = w.server.sessions.iter().filter(|s| s.client == i);
        let server: Vec<String> = server
            .map(|s| {
                format!(
                    "read {}/{} wrote {}/{} finished {} conn {:?} epoch {} dead_after {:?} {:?}",
                    s.back.read,
                    s.back.total,
                    s.out.written,
                    s.out.total,
                    s.finished,
                    s.conn.map(|k| (
                        k,
                        w.conns[k].broken,
                        w.conns[k].stalled.is_some(),
                        w.conns[k].up.len(),
                        w.conns[k].down.len()
                    )),
                    s.session.epoch(),
                    w.server.config.dead_after_value(),
                    s.session.status(w.now)
                )
            })
            .collect();
        out += &format!(
            "\n  client {i}: read {}/{}, wrote {}/{}, failed {:?}, conn {:?}, dial {}, {:?}; server: {server:?}",
            c.back.read,
            c.back.total,
            c.out.written,
            c.out.total,
            c.failed,
            c.conn.map(|k| (k, c.session.epoch(), c.addr, c.config.dead_after_value(), w.conns[k].broken, w.conns[k].stalled.is_some(), w.conns[k].up.len(), w.conns[k].down.len())),
            c.dial.is_some(),
            c.session.status(w.now),
        );
    }
    out
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn every_schedule_delivers_every_byte_exactly_once() {
    if let Some(seed) = env_u64("SIM_SEED") {
        let s = run(seed);
        println!(
            "sim: seed {seed}: {} steps, {} clients ({} completed, {} failed as documented), {} datagrams",
            s.steps, s.clients, s.completed, s.failed, s.datagrams
        );
        return;
    }
    let budget = Duration::from_secs(env_u64("SIM_SECONDS").unwrap_or(20));
    let limit = env_u64("SIM_SCHEDULES");
    let base = env_u64("SIM_BASE").unwrap_or(0);
    let started = Instant::now();
    let mut total = Summary::default();
    let mut count = 0u64;
    let mut slowest = (Duration::ZERO, 0);
    while limit.map_or(started.elapsed() < budget, |n| count < n) {
        let seed = base + count;
        let began = Instant::now();
        let s = match catch_unwind(AssertUnwindSafe(|| run(seed))) {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "sim: schedule {seed} failed; replay it with\n  SIM_SEED={seed} cargo test --release --test sim -- --nocapture"
                );
                std::panic::resume_unwind(e);
            }
        };
        count += 1;
        total.add(s);
        slowest = slowest.max((began.elapsed(), seed));
    }
    println!(
        "sim: {count} schedules (seeds {base}..{}) in {:.1?}: {} steps, {} clients ({} completed, {} failed as documented: {:?}), {} datagrams",
        base + count,
        started.elapsed(),
        total.steps,
        total.clients,
        total.completed,
        total.failed,
        total.reasons,
        total.datagrams
    );
    println!(
        "sim: the slowest schedule, seed {}, took {:.1?}",
        slowest.1, slowest.0
    );
}
