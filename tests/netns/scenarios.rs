//! The scenarios of issue 8's "Tests: real networks in namespaces", each a client and a
//! server process in their namespaces with a router between them, data moving both ways
//! and every byte checked, and the requirements asserted as written.
//!
//! Sleeps appear only as the fault schedule itself (a blackhole that lasts 30 s, an idle
//! window of 10 s); everything else waits for what the peers report.

use std::time::{Duration, Instant};

use robust_tcp::Config;

use crate::events::Event;
use crate::harness::{describe, Ctx, Failure, Peer};
use robust_tcp_testkit::netns::{ClientNet, Counter, Options, Topology, Traffic};

/// A scenario: its name (what filters match), its time limit, and whether it is left out
/// of a plain run (and why).
pub struct Scenario {
    /// The name printed and filtered on.
    pub name: &'static str,
    /// The watchdog's limit.
    pub limit: Duration,
    /// Why it does not run without `--ignored`, if it does not.
    pub ignored: Option<&'static str>,
    /// The body.
    pub run: fn(&Ctx) -> Result<(), Failure>,
}

/// Every scenario, longest first (the runner starts them in this order, so that the
/// longest does not start last).
pub fn all() -> Vec<Scenario> {
    let secs = Duration::from_secs;
    vec![
        Scenario {
            name: "blackhole_120s_default_config",
            limit: secs(300),
            ignored: None,
            run: |ctx| blackhole(ctx, Duration::from_secs(120), Traffic::All),
        },
        Scenario {
            name: "blackhole_30s",
            limit: secs(180),
            ignored: None,
            run: |ctx| blackhole(ctx, Duration::from_secs(30), Traffic::All),
        },
        // Beyond the list: what breaks roaming, on its own (see `blackhole`).
        Scenario {
            name: "blackhole_tcp_only_30s",
            limit: Duration::from_secs(180),
            ignored: None,
            run: |ctx| blackhole(ctx, Duration::from_secs(30), Traffic::Tcp),
        },
        Scenario {
            name: "dropped_session_server_gone",
            limit: secs(150),
            ignored: None,
            run: dropped_session_server_gone,
        },
        Scenario {
            name: "nat_conntrack_flush",
            limit: secs(120),
            ignored: None,
            run: nat_conntrack_flush,
        },
        Scenario {
            name: "udp_blocked",
            limit: secs(150),
            ignored: None,
            run: |ctx| tcp_only(ctx, false),
        },
        Scenario {
            name: "dnat_tcp_port_only",
            limit: secs(150),
            ignored: None,
            run: |ctx| tcp_only(ctx, true),
        },
        Scenario {
            name: "roam_add_then_remove",
            limit: secs(150),
            ignored: None,
            run: |ctx| roam(ctx, true),
        },
        Scenario {
            name: "roam_remove_then_add",
            limit: secs(150),
            ignored: None,
            run: |ctx| roam(ctx, false),
        },
        Scenario {
            name: "vanished_clients_max_sessions",
            limit: secs(120),
            ignored: None,
            run: vanished_clients,
        },
        Scenario {
            name: "nat_random_ports",
            limit: secs(90),
            ignored: None,
            run: nat_random_ports,
        },
        Scenario {
            name: "idle_datagrams_per_second",
            limit: secs(90),
            ignored: None,
            run: idle_datagrams,
        },
        Scenario {
            name: "passivate_idle_then_write",
            limit: secs(120),
            ignored: None,
            run: passivate_idle_then_write,
        },
    ]
}

/// The server's TCP port (each scenario has its own namespaces, so all use the same).
const PORT: u16 = 7000;
/// Each writer's pace, bytes per second: data is in flight through every fault, at a CPU
/// cost that lets scenarios run side by side without disturbing each other's timings.
const RATE: u64 = 4 << 20;
/// Bytes read after a mark that prove that data flows on the path as it is now: four
/// times the default send buffer, more than could have been in flight before the fault.
const FLOW_BYTES: u64 = 64 << 10;
/// Bytes each way before a fault, so that it strikes in the middle of a transfer.
const BEFORE_FAULT: u64 = 2 << 20;
/// Bytes each way after the network recovered, before the transfer ends.
const AFTER_FAULT: u64 = 2 << 20;
/// Opening a session through a working network: anything longer is a hang.
const CONNECT_LIMIT: Duration = Duration::from_secs(15);
/// Moving a few MiB at `RATE` through a working network (about a second): a hang past it.
const MOVE_LIMIT: Duration = Duration::from_secs(30);
/// How long a measurement waits for something late, so that a failure still says how late.
const MEASURE_LIMIT: Duration = Duration::from_secs(60);
/// A peer's exit once its stdin closes.
const EXIT_LIMIT: Duration = Duration::from_secs(5);
/// Issue 8, item 2 and test 3: a silent failure is detected within `dead_after` plus this.
const DETECT_SLACK: Duration = Duration::from_secs(1);
/// Issue 8, item 4 and test 3: data flows again within this of the path returning.
const RESUME_LIMIT: Duration = Duration::from_millis(1500);
/// Issue 8, item 3 and test 4: after a change of address the session continues within this.
const ROAM_LIMIT: Duration = Duration::from_secs(2);
/// Between the two steps of a change of address (a laptop that leaves one network and
/// joins another, or holds both for a moment): the change counts from the second.
const ROAM_GAP: Duration = Duration::from_secs(1);
/// Issue 8, item 1: where no control message gets through, the fallback is detected
/// "within seconds". Test 2 asks only that it engages (and that its time be reported);
/// this bound is the "within seconds" made a number.
const FALLBACK_LIMIT: Duration = Duration::from_secs(10);
/// Issue 8, item 5 and test 5: a full server of vanished clients admits a new one "within
/// seconds". A session counts as vanished after `dead_after` of silence (3 s), and the new
/// client, refused meanwhile, retries on its backoff (its attempt after 3.15 s is the one
/// expected to get in, the next comes at 6.35 s); ten seconds covers both.
const VANISHED_LIMIT: Duration = Duration::from_secs(10);
/// Issue 8, test 7: "at most about one small datagram per second each way by default".
const IDLE_RATE_LIMIT: f64 = 1.2;
/// How long past the linger limit the router watches for a freed session's packets.
const LINGER_WATCH: Duration = Duration::from_secs(40);
/// A session reset at its linger limit still sends its RESET until confirmed, 14 times
/// over about 20 s (PROTOCOL.md, section 5); its datagrams must end within this of the
/// limit, or it was never freed.
const RESET_TAIL: Duration = Duration::from_secs(25);
/// How often the router's counters are read while watching.
const COUNTER_POLL: Duration = Duration::from_millis(250);
/// The idle window over which datagrams are counted.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// Issue 8, item 6: passivated data "arrives"; the issue gives no time, so this is the
/// bound past which it counts as a hang.
const PASSIVE_WAKE_LIMIT: Duration = Duration::from_secs(5);
/// Passivating: both ends show it and the TCP connection is gone within this (a round
/// trip is enough; the issue gives no time).
const PASSIVE_LIMIT: Duration = Duration::from_secs(5);
/// How long a passive session is left alone before a write wakes it.
const PASSIVE_IDLE: Duration = Duration::from_secs(5);
/// One mebibyte.
const MIB: u64 = 1 << 20;

/// The default config's silence limit, which the requirements are stated against.
fn dead_after() -> Duration {
    Config::default()
        .dead_after_value()
        .expect("the default config has a silence limit")
}

// ---------------------------------------------------------------------------------------
// The scenarios
// ---------------------------------------------------------------------------------------

/// Test 1: through a NAT that rewrites ports (`MASQUERADE --random-fully`): byte-exact, no
/// hang.
fn nat_random_ports(ctx: &Ctx) -> Result<(), Failure> {
    let topo = ctx.topology(Options {
        nat: true,
        ..Options::default()
    })?;
    let mut pair = Pair::open(ctx, &topo, &[], &[])?;
    pair.check_nat(ctx, &topo)?;
    let started = Instant::now();
    pair.stream()?;
    let (c, s) = pair.wait_read(8 * MIB, MOVE_LIMIT, "8 MiB each way")?;
    ctx.seconds("8 MiB each way at 4 MiB/s took (client)", c - started);
    ctx.seconds("8 MiB each way at 4 MiB/s took (server)", s - started);
    pair.finish(ctx)
}

/// Test 1: the same NAT forgets its mappings mid-transfer (`conntrack -F`): byte-exact, no
/// hang. The bound is what items 2 and 4 together allow: detection within `dead_after`
/// + 1 s, then flowing within 1.5 s.
fn nat_conntrack_flush(ctx: &Ctx) -> Result<(), Failure> {
    let topo = ctx.topology(Options {
        nat: true,
        ..Options::default()
    })?;
    let mut pair = Pair::open(ctx, &topo, &[], &[])?;
    pair.check_nat(ctx, &topo)?;
    pair.stream()?;
    pair.wait_read(BEFORE_FAULT, MOVE_LIMIT, "the data before the flush")?;
    topo.flush_conntrack().map_err(|e| e.to_string())?;
    let flushed = Instant::now();
    ctx.step("conntrack -F: the NAT forgot every mapping");
    let limit = dead_after() + DETECT_SLACK + RESUME_LIMIT;
    pair.require_flow(ctx, flushed, limit, "after the NAT forgot its mappings")?;
    pair.more(AFTER_FAULT, MOVE_LIMIT)?;
    pair.finish(ctx)
}

/// Test 2: UDP dropped at the router, or the server reachable only through a DNAT of its
/// TCP port: byte-exact, the fallback engaged, no hang.
///
/// The fallback's engagement is seen through the public API: 1 MiB moving each way
/// through a 16 KiB send buffer needs some 128 acknowledgements, none of which can be a
/// datagram here. (A reconnection also acknowledges, by its counts; one per `dead_after`
/// would move some 50 KiB in 10 s, not 1 MiB.)
fn tcp_only(ctx: &Ctx, dnat: bool) -> Result<(), Failure> {
    let options = if dnat {
        Options {
            dnat_port: Some(PORT),
            ..Options::default()
        }
    } else {
        Options {
            drop_udp: true,
            ..Options::default()
        }
    };
    let topo = ctx.topology(options)?;
    let mut pair = Pair::open(ctx, &topo, &[], &[])?;
    if dnat {
        // Harness check: the client dialled the router's port and got the server.
        ctx.figure("client dialled", topo.server_target(PORT).to_string());
    }
    let started = Instant::now();
    pair.stream()?;
    let engaged = pair.wait_read(MIB, MEASURE_LIMIT, "1 MiB each way (the fallback engaged)");
    let udp = if dnat { None } else { topo.udp_dropped().ok() };
    if let Some((packets, _)) = udp {
        ctx.figure("UDP datagrams dropped by the router", packets.to_string());
    }
    let (c, s) = engaged.map_err(|e| {
        pair.record_status(ctx);
        e
    })?;
    let took = c.max(s) - started;
    ctx.seconds("the fallback engaged (1 MiB each way) after", took);
    ctx.require(took <= FALLBACK_LIMIT, || {
        format!("the fallback took {took:.2?} to carry 1 MiB each way; required within {FALLBACK_LIMIT:?} (\"within seconds\")")
    });
    // And the sessions say so.
    for (who, status) in [
        ("client", pair.status_of_client()?),
        ("server", pair.status_of_server()?),
    ] {
        ctx.require(status.get("control_over_tcp") == Some("true"), || {
            format!(
                "the {who}'s status does not show control over TCP: {}",
                describe(&status)
            )
        });
    }
    pair.more(4 * MIB, MOVE_LIMIT)?;
    pair.finish(ctx)
}

/// Test 3: a silent blackhole of both directions for `outage` in the middle of a transfer
/// both ways: detected within `dead_after` + 1 s on both sides, data flowing again within
/// 1.5 s of the path returning, byte-exact; with the default config.
///
/// With [`Traffic::Tcp`] (beyond the list) only TCP goes dark and the control
/// datagrams still pass, as when a stateful firewall loses a TCP connection's state, or
/// when the TCP connection of a client that roamed is dead while its control path is not.
/// The peer is heard then, so item 2 does not call for detection (its time is reported
/// when it happens); item 4 still asks data to flow within 1.5 s of the path returning.
fn blackhole(ctx: &Ctx, outage: Duration, traffic: Traffic) -> Result<(), Failure> {
    let topo = ctx.topology(Options::default())?;
    let udp = UdpCounters::new(&topo)?;
    let mut pair = Pair::open(ctx, &topo, &[], &[])?;
    pair.stream()?;
    pair.wait_read(BEFORE_FAULT, MOVE_LIMIT, "the data before the blackhole")?;
    let (c0, s0) = pair.cursors();
    topo.blackhole(traffic).map_err(|e| e.to_string())?;
    udp.zero()?;
    let dark = Instant::now();
    ctx.step(&format!(
        "blackhole: forwarded packets ({traffic:?}) dropped for {outage:?}"
    ));

    let limit = dead_after() + DETECT_SLACK;
    let reconnecting = |e: &Event, s| e.is("state", s) && e.get("state") == Some("Reconnecting");
    let server_s = pair.s;
    let (what, until) = ("detection (state Reconnecting)", dark + outage);
    let window = format!("while the {outage:?} blackhole lasted");
    let client = pair
        .client
        .wait_until(what, until, &window, c0, |e| reconnecting(e, 0));
    let server = pair
        .server
        .wait_until(what, until, &window, s0, |e| reconnecting(e, server_s));
    for (who, seen) in [("client", client), ("server", server)] {
        match seen {
            Ok(e) => {
                let took = e.at - dark;
                ctx.seconds(&format!("{who} detected the failure after"), took);
                ctx.require(took <= limit || traffic != Traffic::All, || {
                    format!("{who} detected the blackhole after {took:.2?}; required within dead_after + 1 s = {limit:?}")
                });
            }
            Err(e) if traffic == Traffic::All => ctx.require(false, || e),
            Err(_) => ctx.figure(&format!("{who} detected the failure"), "never".into()),
        }
    }

    ctx.hold(outage.saturating_sub(dark.elapsed()), "the blackhole lasts");
    let dropped = topo.restore(traffic).map_err(|e| e.to_string())?;
    let back = Instant::now();
    ctx.step("the path is back");
    udp.report(ctx, "during the blackhole")?;
    ctx.figure("packets the blackhole dropped", dropped.to_string());
    if dropped == 0 {
        return Err("harness: the blackhole dropped nothing".into());
    }
    pair.require_flow(ctx, back, RESUME_LIMIT, "after the path returned")?;
    pair.more(AFTER_FAULT, MOVE_LIMIT)?;
    pair.finish(ctx)
}

/// Test 4: the client's address changes mid-transfer, the new one added first and the old
/// removed (`new_first`) or the reverse: the session continues within 2 s of the change
/// (its second step), byte-exact, and the server follows the client to its new address.
fn roam(ctx: &Ctx, new_first: bool) -> Result<(), Failure> {
    let topo = ctx.topology(Options::default())?;
    let udp = UdpCounters::new(&topo)?;
    let mut pair = Pair::open(ctx, &topo, &[], &[])?;
    pair.stream()?;
    pair.wait_read(BEFORE_FAULT, MOVE_LIMIT, "the data before the move")?;
    let (old, new) = (
        topo.client_ip(ClientNet::Home),
        topo.client_ip(ClientNet::Away),
    );
    let join = || {
        ctx.step(&format!(
            "the client gains {new} (default route through its network)"
        ));
        topo.client_join(ClientNet::Away)
    };
    let leave = || {
        ctx.step(&format!("the client loses {old}"));
        topo.client_leave(ClientNet::Home)
    };
    if new_first {
        join().map_err(|e| e.to_string())?;
        ctx.hold(ROAM_GAP, "both addresses for a moment");
        leave().map_err(|e| e.to_string())?;
    } else {
        leave().map_err(|e| e.to_string())?;
        ctx.hold(ROAM_GAP, "no address for a moment");
        join().map_err(|e| e.to_string())?;
    }
    let moved = Instant::now();
    udp.zero()?;
    let flowed = pair.require_flow(ctx, moved, ROAM_LIMIT, "after the change of address");
    udp.report(ctx, "after the change of address")?;
    flowed?;
    pair.more(AFTER_FAULT, MOVE_LIMIT)?;
    let server = pair.status_of_server()?;
    let seen = server.get("peer").unwrap_or("none").to_string();
    ctx.figure("the server sees the client at", seen.clone());
    ctx.require(seen.starts_with(&format!("{new}:")), || {
        format!(
            "the server's connection comes from {seen}, not from the client's new address {new}"
        )
    });
    pair.finish(ctx)
}

/// Test 5: a server at `max_sessions` (4) whose 4 clients were killed with SIGKILL admits
/// a new client within seconds, which then moves data both ways.
fn vanished_clients(ctx: &Ctx) -> Result<(), Failure> {
    const OLD: usize = 4;
    let topo = ctx.topology(Options::default())?;
    let server_args = [format!("max_sessions={OLD}")];
    let mut server = Pair::start_server(ctx, &topo, &server_args)?;
    let mut old = Vec::new();
    for i in 0..OLD {
        let (client, session, _) = Pair::start_client(ctx, &topo, &format!("client-{i}"), &[])?;
        Pair::accepted(&mut server, session)?;
        old.push(client);
    }
    for client in &mut old {
        client.kill();
    }
    let killed = Instant::now();
    ctx.step("the 4 clients were killed; a new client comes");
    let (mut client, session, _) =
        Pair::start_client_within(ctx, &topo, "newcomer", &[], MEASURE_LIMIT)?;
    let admitted = client
        .history_event("connected")
        .map_or(killed.elapsed(), |e| e.at - killed);
    ctx.seconds(
        "the new client got in after the old ones vanished",
        admitted,
    );
    ctx.require(admitted <= VANISHED_LIMIT, || {
        format!("the new client got in {admitted:.2?} after the old ones vanished; required within {VANISHED_LIMIT:?} (\"within seconds\")")
    });
    let s = Pair::accepted(&mut server, session)?;
    let mut states = Vec::new();
    for i in 0..OLD {
        let from = server.cursor();
        server.send(&format!("status s={i}"))?;
        let e = server.wait("status", MOVE_LIMIT, from, |e| e.is("status", i))?;
        states.push(e.get("state").unwrap_or("?").to_string());
    }
    ctx.figure("the old sessions on the server", states.join(", "));
    let mut pair = Pair {
        client,
        server,
        s,
        next_mark: 0,
    };
    pair.send_both(&format!("write {MIB}"))?;
    pair.wait_read(MIB, MOVE_LIMIT, "1 MiB each way")?;
    pair.finish(ctx)
}

/// Test 5, second part: a session whose every handle was dropped while its server is gone
/// (the server process killed, so each reconnection attempt is refused) lingers to deliver
/// its bytes for at most `Config::linger_limit` (the default, 60 s), then is freed: its
/// client stops trying to reconnect. Seen from the router: the client's TCP SYNs to the
/// server must end within a second of the limit, and its datagrams (the RESET that
/// follows the limit is sent for about 20 s) within `RESET_TAIL` of it.
fn dropped_session_server_gone(ctx: &Ctx) -> Result<(), Failure> {
    let linger = Config::default().linger_limit_value();
    let topo = ctx.topology(Options::default())?;
    let mut syn = Topology::from_client().to_vec();
    syn.extend_from_slice(&["-p", "tcp", "--syn"]);
    let syns = topo.counter("SYN-UP", &syn).map_err(|e| e.to_string())?;
    let mut udp = Topology::from_client().to_vec();
    udp.extend_from_slice(&["-p", "udp"]);
    let datagrams = topo.counter("UDP-UP", &udp).map_err(|e| e.to_string())?;
    let mut pair = Pair::open(ctx, &topo, &[], &[])?;
    pair.send_both("write 65536")?;
    pair.wait_read(65536, MOVE_LIMIT, "64 KiB each way")?;
    pair.server.kill();
    // Bytes the server will never acknowledge: the session has something to deliver.
    let from = pair.client.cursor();
    pair.client.send("write 4096")?;
    pair.client
        .wait("the last write", MOVE_LIMIT, from, |e| e.is("wrote", 0))?;
    pair.client.send("drop")?;
    let dropped = pair
        .client
        .wait("the drop", MOVE_LIMIT, from, |e| e.is("dropped", 0))?
        .at;
    ctx.step("the server is gone; the client dropped its session");
    let (mut last_syn, mut last_udp) = (None, None);
    let (mut syn_count, mut udp_count) = (0, 0);
    let watch_until = dropped + linger + LINGER_WATCH;
    while Instant::now() < watch_until {
        let now = Instant::now();
        let (s, u) = (read_packets(&syns)?, read_packets(&datagrams)?);
        if s > syn_count {
            (syn_count, last_syn) = (s, Some(now - dropped));
        }
        if u > udp_count {
            (udp_count, last_udp) = (u, Some(now - dropped));
        }
        std::thread::sleep(COUNTER_POLL);
    }
    let show =
        |d: Option<Duration>| d.map_or("never".into(), |d| format!("{:.1} s", d.as_secs_f64()));
    ctx.figure(
        "after the drop, the client's SYNs to the server",
        format!(
            "{syn_count} in all, the last {} after the drop (linger_limit {linger:?})",
            show(last_syn)
        ),
    );
    ctx.figure(
        "after the drop, the client's datagrams to the server",
        format!(
            "{udp_count} in all, the last {} after the drop",
            show(last_udp)
        ),
    );
    let Some(last) = last_syn else {
        return Err(
            "harness: the dropped session never tried to reconnect to the gone server".into(),
        );
    };
    ctx.require(last <= linger + Duration::from_secs(1), || {
        format!("the dropped session still tried to reconnect {last:.1?} after the drop; linger_limit is {linger:?}")
    });
    let last = last_udp.unwrap_or_default();
    ctx.require(last <= linger + RESET_TAIL, || {
        format!("the dropped session still sent datagrams {last:.1?} after the drop; linger_limit is {linger:?}, and a RESET's retransmissions take about 20 s")
    });
    pair.client.finish(EXIT_LIMIT)
}

/// Packets counted by `counter`.
fn read_packets(counter: &Counter) -> Result<u64, Failure> {
    counter.read().map(|(p, _)| p).map_err(|e| e.to_string())
}

/// Test 7: an idle session's datagrams per second, each way, counted at the router over
/// 10 s: "at most about one small datagram per second each way by default".
fn idle_datagrams(ctx: &Ctx) -> Result<(), Failure> {
    let topo = ctx.topology(Options::default())?;
    let counter = |name: &str, from: [&str; 2], proto: &str| {
        let mut matches = from.to_vec();
        matches.extend_from_slice(&["-p", proto]);
        topo.counter(name, &matches).map_err(|e| e.to_string())
    };
    let udp_up = counter("UDP-UP", Topology::from_client(), "udp")?;
    let udp_down = counter("UDP-DOWN", Topology::from_server(), "udp")?;
    let tcp_up = counter("TCP-UP", Topology::from_client(), "tcp")?;
    let tcp_down = counter("TCP-DOWN", Topology::from_server(), "tcp")?;
    let mut pair = Pair::open(ctx, &topo, &[], &[])?;
    pair.send_both("write 65536")?;
    pair.wait_read(65536, MOVE_LIMIT, "64 KiB each way")?;
    ctx.hold(
        Duration::from_secs(2),
        "the exchange's acknowledgements settle",
    );
    for c in [&udp_up, &udp_down, &tcp_up, &tcp_down] {
        c.zero().map_err(|e| e.to_string())?;
    }
    let zeroed = Instant::now();
    ctx.hold(IDLE_WINDOW, "the session idles; the router counts");
    let read = |c: &Counter| c.read().map_err(|e| e.to_string());
    let (up, down, tup, tdown) = (
        read(&udp_up)?,
        read(&udp_down)?,
        read(&tcp_up)?,
        read(&tcp_down)?,
    );
    let secs = zeroed.elapsed().as_secs_f64();
    for (who, (packets, bytes)) in [("client to server", up), ("server to client", down)] {
        let rate = packets as f64 / secs;
        let size = bytes.checked_div(packets).unwrap_or(0);
        ctx.figure(
            &format!("idle UDP {who}"),
            format!("{packets} datagrams in {secs:.1} s = {rate:.2}/s, {size} bytes each (IP)"),
        );
        ctx.require(rate <= IDLE_RATE_LIMIT, || {
            format!("an idle session sent {rate:.2} datagrams/s {who}; required at most about one ({IDLE_RATE_LIMIT}/s)")
        });
    }
    ctx.figure(
        "idle TCP segments",
        format!("{} client to server, {} server to client", tup.0, tdown.0),
    );
    pair.send_both("write 65536")?;
    pair.wait_read(
        2 * 65536,
        MOVE_LIMIT,
        "64 KiB more each way after the idle time",
    )?;
    pair.finish(ctx)
}

/// Test 6: passivate an idle session (its TCP connection closes, the session stays), leave
/// it, then write from either side: the data arrives. Twice: the client passivates and the
/// server writes (the server must ask the client to come back, over the control path),
/// then the server passivates and the client writes. Item 6 also asks that `Status` show
/// it: both ends must report `Passive` while the session sleeps.
fn passivate_idle_then_write(ctx: &Ctx) -> Result<(), Failure> {
    let topo = ctx.topology(Options::default())?;
    let mut pair = Pair::open(ctx, &topo, &[], &[])?;
    pair.send_both("write 65536")?;
    let mut total = 65536;
    pair.wait_read(total, MOVE_LIMIT, "64 KiB each way")?;
    for (sleeper, waker) in [("client", "server"), ("server", "client")] {
        let (c0, s0) = pair.cursors();
        let s = pair.s;
        let (peer, target) = if sleeper == "client" {
            (&mut pair.client, 0)
        } else {
            (&mut pair.server, s)
        };
        let from = peer.cursor();
        peer.send(&format!("passivate s={target}"))?;
        let e = peer.wait("passivation", MOVE_LIMIT, from, |e| {
            e.is("passivated", target) || e.is("passivate_error", target)
        })?;
        if e.name != "passivated" {
            return Err(format!(
                "the {sleeper} could not passivate: {}",
                describe(&e)
            ));
        }
        let asked = Instant::now();
        let passive = |e: &Event, s| e.is("state", s) && e.get("state") == Some("Passive");
        let client = pair
            .client
            .wait("state Passive", PASSIVE_LIMIT, c0, |e| passive(e, 0));
        let server = pair
            .server
            .wait("state Passive", PASSIVE_LIMIT, s0, |e| passive(e, s));
        for (who, seen) in [("client", client), ("server", server)] {
            match seen {
                Ok(e) => ctx.seconds(
                    &format!("{sleeper} passivated: the {who}'s status showed it after"),
                    e.at - asked,
                ),
                Err(e) => ctx.require(false, || e),
            }
        }
        let closed = wait_no_tcp(&topo, PASSIVE_LIMIT)?;
        ctx.require(closed, || {
            format!("the session passivated by the {sleeper} kept its TCP connection for {PASSIVE_LIMIT:?}")
        });
        ctx.hold(PASSIVE_IDLE, "the passive session is left alone");
        let still = topo
            .client_tcp_connections(PORT)
            .map_err(|e| e.to_string())?;
        ctx.require(still == 0, || {
            format!("a passive session had {still} TCP connections after {PASSIVE_IDLE:?} idle")
        });
        let (c1, s1) = pair.cursors();
        let sent = Instant::now();
        let (reader, reader_s, from) = if waker == "client" {
            pair.client.send("write 65536")?;
            (&mut pair.server, s, s1)
        } else {
            pair.server.send(&format!("write 65536 s={s}"))?;
            (&mut pair.client, 0, c1)
        };
        total += 65536;
        let what = "the data written to the passive session";
        let e = reader.wait(what, MEASURE_LIMIT, from, |e| {
            e.is("progress", reader_s) && e.num("read") >= Some(total)
        })?;
        let took = e.at - sent;
        let who = if waker == "client" {
            "server"
        } else {
            "client"
        };
        ctx.seconds(
            &format!("passivated by the {sleeper}, written by the {waker}: the {who} had it after"),
            took,
        );
        ctx.require(took <= PASSIVE_WAKE_LIMIT, || {
            format!("data the {waker} wrote to a session passivated by the {sleeper} took {took:.2?} to reach the {who}; bound {PASSIVE_WAKE_LIMIT:?}")
        });
        // The other side's bytes, so that both stay at `total` for the next round.
        let (other, other_s) = if waker == "client" {
            pair.server.send(&format!("write 65536 s={s}"))?;
            (&mut pair.client, 0)
        } else {
            pair.client.send("write 65536")?;
            (&mut pair.server, s)
        };
        other.wait("the reply", MOVE_LIMIT, 0, |e| {
            e.is("progress", other_s) && e.num("read") >= Some(total)
        })?;
    }
    pair.finish(ctx)
}

/// Forwarded UDP datagrams each way, counted at the router: whether the control path
/// works while a fault lasts (a figure, to tell apart a dead control path from a dead
/// TCP connection).
struct UdpCounters {
    up: Counter,
    down: Counter,
}

impl UdpCounters {
    fn new(topo: &Topology) -> Result<UdpCounters, Failure> {
        let count = |name, from: [&str; 2]| {
            let mut matches = from.to_vec();
            matches.extend_from_slice(&["-p", "udp"]);
            topo.counter(name, &matches).map_err(|e| e.to_string())
        };
        Ok(UdpCounters {
            up: count("UDP-UP", Topology::from_client())?,
            down: count("UDP-DOWN", Topology::from_server())?,
        })
    }

    /// Starts counting from now.
    fn zero(&self) -> Result<(), Failure> {
        self.up.zero().map_err(|e| e.to_string())?;
        self.down.zero().map_err(|e| e.to_string())
    }

    /// Records what was counted since [`zero`](Self::zero) as a figure.
    fn report(&self, ctx: &Ctx, when: &str) -> Result<(), Failure> {
        let up = self.up.read().map_err(|e| e.to_string())?.0;
        let down = self.down.read().map_err(|e| e.to_string())?.0;
        ctx.figure(
            &format!("UDP datagrams forwarded {when}"),
            format!("{up} client to server, {down} server to client"),
        );
        Ok(())
    }
}

/// Polls until the client namespace has no TCP connection to the server's port; whether
/// that happened within `limit`.
fn wait_no_tcp(topo: &Topology, limit: Duration) -> Result<bool, Failure> {
    let until = Instant::now() + limit;
    loop {
        if topo
            .client_tcp_connections(PORT)
            .map_err(|e| e.to_string())?
            == 0
        {
            return Ok(true);
        }
        if Instant::now() >= until {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// A client and a server peer with one session between them
// ---------------------------------------------------------------------------------------

/// A client peer and the server peer holding its session (index `s` there).
struct Pair {
    client: Peer,
    server: Peer,
    s: usize,
    next_mark: u64,
}

impl Pair {
    /// Starts a server and a client with extra arguments each, and waits for the session.
    fn open(
        ctx: &Ctx,
        topo: &Topology,
        server_args: &[String],
        client_args: &[String],
    ) -> Result<Pair, Failure> {
        let mut server = Pair::start_server(ctx, topo, server_args)?;
        let (client, session, connect) = Pair::start_client(ctx, topo, "client", client_args)?;
        ctx.seconds("connect took", connect);
        let s = Pair::accepted(&mut server, session)?;
        Ok(Pair {
            client,
            server,
            s,
            next_mark: 0,
        })
    }

    fn common_args(ctx: &Ctx) -> Vec<String> {
        vec![format!("seed={}", ctx.seed), format!("rate={RATE}")]
    }

    fn start_server(ctx: &Ctx, topo: &Topology, extra: &[String]) -> Result<Peer, Failure> {
        let mut args = vec!["server".to_string(), format!("listen=0.0.0.0:{PORT}")];
        args.extend(Pair::common_args(ctx));
        args.extend_from_slice(extra);
        let mut server = ctx.spawn("server", &topo.server_ns, &args)?;
        server.wait("listening", CONNECT_LIMIT, 0, |e| e.name == "listening")?;
        Ok(server)
    }

    /// Starts a client; returns it, its session id and how long `connect` took.
    fn start_client(
        ctx: &Ctx,
        topo: &Topology,
        name: &str,
        extra: &[String],
    ) -> Result<(Peer, u64, Duration), Failure> {
        Pair::start_client_within(ctx, topo, name, extra, CONNECT_LIMIT)
    }

    fn start_client_within(
        ctx: &Ctx,
        topo: &Topology,
        name: &str,
        extra: &[String],
        limit: Duration,
    ) -> Result<(Peer, u64, Duration), Failure> {
        let mut args = vec![
            "client".to_string(),
            format!("connect={}", topo.server_target(PORT)),
        ];
        args.extend(Pair::common_args(ctx));
        args.extend_from_slice(extra);
        let mut client = ctx.spawn(name, &topo.client_ns, &args)?;
        let e = client.wait("connected", limit, 0, |e| e.name == "connected")?;
        let session = e.num("session").ok_or("connected without a session id")?;
        let ms: f64 = e.get("ms").and_then(|ms| ms.parse().ok()).unwrap_or(0.0);
        let took = Duration::from_secs_f64(ms / 1000.0);
        Ok((client, session, took))
    }

    /// Waits for the server to accept session `session`; returns its index there.
    fn accepted(server: &mut Peer, session: u64) -> Result<usize, Failure> {
        let e = server.wait("the client's session accepted", CONNECT_LIMIT, 0, |e| {
            e.name == "accepted" && e.num("session") == Some(session)
        })?;
        e.num("s")
            .map(|s| s as usize)
            .ok_or_else(|| "accepted without an index".into())
    }

    /// Harness check for the NAT topologies: the server sees the router's address, on
    /// another port than the client's (the NAT rewrote it).
    fn check_nat(&mut self, ctx: &Ctx, topo: &Topology) -> Result<(), Failure> {
        let client = self
            .client
            .history_event("connected")
            .ok_or("no connected event")?;
        let s = self.s;
        let accepted = self
            .server
            .history()
            .iter()
            .find(|e| e.is("accepted", s))
            .cloned()
            .ok_or("no accepted event")?;
        let (local, seen) = (
            client.get("local").unwrap_or("?").to_string(),
            accepted.get("peer").unwrap_or("?").to_string(),
        );
        ctx.figure(
            "NAT",
            format!("client {local} seen by the server as {seen}"),
        );
        let router = topo.client_seen_by_server(ClientNet::Home);
        if !seen.starts_with(&format!("{router}:")) {
            return Err(format!(
                "harness: the server sees the client at {seen}, not at the router {router}: no NAT"
            ));
        }
        Ok(())
    }

    /// Sends `command` to the client and to the server for this session.
    fn send_both(&mut self, command: &str) -> Result<(), Failure> {
        self.client.send(command)?;
        self.server.send(&format!("{command} s={}", self.s))
    }

    /// Both writers stream at `RATE` until [`finish`](Self::finish).
    fn stream(&mut self) -> Result<(), Failure> {
        self.send_both("stream")
    }

    fn cursors(&mut self) -> (usize, usize) {
        (self.client.cursor(), self.server.cursor())
    }

    /// Waits until each side has read `bytes` in all; returns when each got there.
    fn wait_read(
        &mut self,
        bytes: u64,
        limit: Duration,
        what: &str,
    ) -> Result<(Instant, Instant), Failure> {
        let started = Instant::now();
        let c = wait_read(&mut self.client, 0, bytes, limit, what)?;
        let left = limit.saturating_sub(started.elapsed());
        let s = wait_read(&mut self.server, self.s, bytes, left, what)?;
        Ok((c, s))
    }

    /// Waits until each side has read `bytes` more than it had so far.
    fn more(&mut self, bytes: u64, limit: Duration) -> Result<(), Failure> {
        let read = |peer: &mut Peer, s| {
            peer.last("progress", s)
                .and_then(|e| e.num("read"))
                .unwrap_or(0)
        };
        let target = read(&mut self.client, 0).max(read(&mut self.server, self.s)) + bytes;
        let what = format!("{} MiB more each way", bytes / MIB);
        self.wait_read(target, limit, &what).map(drop)
    }

    /// Marks both readers and requires `FLOW_BYTES` read by each within `limit` of `since`
    /// (when the network came back); records both times. Waits up to `MEASURE_LIMIT` to
    /// say how late data is, and fails only if it never comes.
    fn require_flow(
        &mut self,
        ctx: &Ctx,
        since: Instant,
        limit: Duration,
        when: &str,
    ) -> Result<(), Failure> {
        self.next_mark += 1;
        let id = self.next_mark;
        let (c0, s0) = self.cursors();
        self.send_both(&format!("mark id={id} bytes={FLOW_BYTES}"))?;
        let s = self.s;
        let what = format!("data flowing ({FLOW_BYTES} bytes read)");
        let (until, window) = (
            since + MEASURE_LIMIT,
            format!("within {MEASURE_LIMIT:?} {when}"),
        );
        let client = self.client.wait_until(&what, until, &window, c0, |e| {
            e.is("flow", 0) && e.num("id") == Some(id)
        });
        let server = self.server.wait_until(&what, until, &window, s0, |e| {
            e.is("flow", s) && e.num("id") == Some(id)
        });
        let mut never = Vec::new();
        for (who, seen) in [("client", client), ("server", server)] {
            match seen {
                Ok(e) => {
                    let took = e.at - since;
                    ctx.seconds(&format!("data reached the {who} again {when} after"), took);
                    ctx.require(took <= limit, || {
                        format!(
                            "data reached the {who} {took:.2?} {when}; required within {limit:?}"
                        )
                    });
                }
                Err(e) => never.push(e),
            }
        }
        if never.is_empty() {
            Ok(())
        } else {
            self.record_status(ctx);
            Err(never.join("\n"))
        }
    }

    /// Records both sides' full status as figures, to show where a stuck session stands.
    fn record_status(&mut self, ctx: &Ctx) {
        let s = self.s;
        for (who, peer, s) in [
            ("client", &mut self.client, 0),
            ("server", &mut self.server, s),
        ] {
            let from = peer.cursor();
            let status = peer
                .send(&format!("status s={s}"))
                .and_then(|()| peer.wait("status", EXIT_LIMIT, from, |e| e.is("status", s)));
            match status {
                Ok(e) => ctx.figure(&format!("{who} status"), describe(&e)),
                Err(e) => ctx.figure(&format!("{who} status"), format!("unavailable: {e}")),
            }
        }
    }

    /// The server's status of this session.
    fn status_of_server(&mut self) -> Result<Event, Failure> {
        let s = self.s;
        let from = self.server.cursor();
        self.server.send(&format!("status s={s}"))?;
        self.server
            .wait("status", MOVE_LIMIT, from, |e| e.is("status", s))
    }

    /// The client's status of this session.
    fn status_of_client(&mut self) -> Result<Event, Failure> {
        let from = self.client.cursor();
        self.client.send("status s=0")?;
        self.client
            .wait("status", MOVE_LIMIT, from, |e| e.is("status", 0))
    }

    /// Stops both writers, waits for each side to read the other's whole stream and its
    /// end, requires the counts to match (every byte was checked as it was read), records
    /// the session's figures and ends both processes.
    fn finish(mut self, ctx: &Ctx) -> Result<(), Failure> {
        let s = self.s;
        let (c0, s0) = self.cursors();
        self.send_both("stop")?;
        let up = outcome(&mut self.client, 0, c0, "shutdown", "write_error")?;
        let down = outcome(&mut self.server, s, s0, "shutdown", "write_error")?;
        let got_down = outcome(&mut self.client, 0, 0, "eof", "read_error")?;
        let got_up = outcome(&mut self.server, s, 0, "eof", "read_error")?;
        ctx.figure(
            "bytes client to server",
            format!("{up} written, {got_up} read"),
        );
        ctx.figure(
            "bytes server to client",
            format!("{down} written, {got_down} read"),
        );
        if (got_up, got_down) != (up, down) {
            return Err(format!(
                "byte counts differ: client wrote {up} and the server read {got_up}; server \
                 wrote {down} and the client read {got_down}"
            ));
        }
        for (who, peer, s) in [
            ("client", &mut self.client, 0),
            ("server", &mut self.server, s),
        ] {
            let from = peer.cursor();
            peer.send(&format!("status s={s}"))?;
            let e = peer.wait("status", MOVE_LIMIT, from, |e| e.is("status", s))?;
            ctx.figure(
                &format!("{who} reconnections"),
                e.get("reconnections").unwrap_or("?").to_string(),
            );
        }
        self.client.finish(EXIT_LIMIT)?;
        self.server.finish(EXIT_LIMIT)
    }
}

/// Waits for `ok` (`shutdown` or `eof`) about session `s` and returns its `total`; an
/// `err` event about it first is the failure.
fn outcome(peer: &mut Peer, s: usize, from: usize, ok: &str, err: &str) -> Result<u64, Failure> {
    let e = peer.wait(ok, MOVE_LIMIT, from, |e| e.is(ok, s) || e.is(err, s))?;
    if e.name == err {
        return Err(format!("{}: {}", peer.name, describe(&e)));
    }
    e.num("total")
        .ok_or_else(|| format!("{}: {ok} without a total", peer.name))
}

/// Waits until `peer` has read `bytes` on session `s`; returns when it reported so.
fn wait_read(
    peer: &mut Peer,
    s: usize,
    bytes: u64,
    limit: Duration,
    what: &str,
) -> Result<Instant, Failure> {
    let e = peer.wait(what, limit, 0, |e| {
        (e.is("progress", s) && e.num("read") >= Some(bytes))
            || (e.is("eof", s) && e.num("total") >= Some(bytes))
            || e.is("read_error", s)
    })?;
    if e.name == "read_error" {
        return Err(format!("{}: {}", peer.name, describe(&e)));
    }
    Ok(e.at)
}

impl Peer {
    /// The first event named `name` so far.
    fn history_event(&mut self, name: &str) -> Option<Event> {
        self.history().iter().find(|e| e.name == name).cloned()
    }
}
