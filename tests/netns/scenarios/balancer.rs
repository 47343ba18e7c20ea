//! Issue 22, item 1: HAProxy (the Debian package, with the repository's own
//! `deploy/haproxy.cfg`) in the router's namespace, in front of three server instances in
//! the server's namespace, each with its own instance id and announced control address;
//! one client process per session in the client's namespace. Sessions stream both ways
//! through cuts between the clients and the balancer and between the balancer and the
//! instances, a change of the clients' address and a restart of HAProxy, every byte
//! checked: each resumes on its own instance (a reconnection that reached another would
//! be refused, and its session fail). Then one instance dies, and its session fails with
//! `UnknownSession` within a bound, while the others go on.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use robust_tcp_testkit::netns::{self, ClientNet, Options, Topology};

use super::pair::Pair;
use super::{BEFORE_FAULT, CONNECT_LIMIT, MIB, MOVE_LIMIT, PORT, ROAM_GAP};
use crate::harness::{describe, Ctx, Daemon, Failure, Peer};

/// How many instances (and sessions: one each, the balancer's round robin).
const INSTANCES: u8 = 3;
/// Data flows again within this of a cut through the balancer: the reconnection is at
/// once, or, while HAProxy is down, on the client's next attempt after the server's
/// answer to its heartbeat (within an interval, 1 s).
const BALANCED_RESUME_LIMIT: Duration = Duration::from_secs(5);
/// A session whose instance is gone fails within this: HAProxy's health checks mark the
/// instance down within about a second (`inter 500ms fall 2`), and the client's next
/// attempt, on its backoff, reaches a live instance, which refuses it.
const GONE_LIMIT: Duration = Duration::from_secs(10);
/// Each writer's pace here: six streams at once, on a machine that runs other scenarios.
const BALANCED_RATE: u64 = 1 << 20;
/// How long after a change of address the control path may take to work again: the
/// sessions miss their datagrams for two heartbeat intervals (2 s), and a dead control
/// connection is replaced once it carried nothing authentic for 2 s; a connection that
/// failed meanwhile (the silence limit, 3 s) is resumed at once.
const SETTLE: Duration = Duration::from_secs(5);
/// The window in which nothing faults and no session may reconnect: more than twice the
/// silence limit (3 s), which fails a connection whose peer is never heard.
const QUIET_WINDOW: Duration = Duration::from_secs(7);
/// HAProxy listening after its start.
const BALANCER_START_LIMIT: Duration = Duration::from_secs(10);

/// Instance `i`'s TCP port.
fn instance_port(i: u8) -> u16 {
    PORT + u16::from(i)
}

/// Instance `i`'s UDP control port, which it announces.
fn control_port(i: u8) -> u16 {
    PORT + 100 + u16::from(i)
}

/// The scenario; with `drop_udp`, no datagram crosses the router, and every session's
/// control messages go over a control connection through the balancer, routed by the
/// CID its CONTROL frame carries.
pub(super) fn haproxy(ctx: &Ctx, drop_udp: bool) -> Result<(), Failure> {
    netns::run("haproxy", &["-v"]).map_err(|e| {
        format!("haproxy is missing (Debian package haproxy; .ci/run installs it): {e}")
    })?;
    let topo = ctx.topology(Options {
        drop_udp,
        ..Options::default()
    })?;
    let mut servers = Vec::new();
    for i in 1..=INSTANCES {
        servers.push((i, start_instance(ctx, &topo, i)?));
    }
    let mut balancer = start_haproxy(ctx, &topo)?;
    let mut pairs = Vec::new();
    for n in 0..INSTANCES {
        let name = format!("client{n}");
        let (client, cid, took) = Pair::start_client_within(
            ctx,
            &topo,
            &name,
            &[
                format!("connect={}", frontend(&topo)),
                format!("rate={BALANCED_RATE}"),
            ],
            CONNECT_LIMIT,
        )?;
        ctx.seconds(&format!("{name}'s connect took"), took);
        let instance = (cid >> 24) as u8;
        // The round robin gives each opening the next instance: this one's is known by
        // the CID's first byte, which must be the instance that accepted it.
        let at = servers
            .iter()
            .position(|(i, _)| *i == instance)
            .ok_or_else(|| {
                format!("{name}'s session {cid:#010x} names instance {instance}, which holds no session of the test (each instance gets one opening)")
            })?;
        let (_, mut server) = servers.swap_remove(at);
        let s = Pair::accepted(&mut server, cid)?;
        ctx.figure(
            &format!("{name}'s session"),
            format!("{cid:#010x} on instance {instance}"),
        );
        pairs.push(Pair {
            client,
            server,
            s,
            next_mark: 0,
        });
    }
    for pair in &mut pairs {
        let status = pair.status_of_client()?;
        let announced = announced(&topo, (pair_cid(pair)? >> 24) as u8).to_string();
        ctx.require(
            status.get("control_peer") == Some(announced.as_str()),
            || {
                format!(
                    "a client sends its datagrams to {:?}, not to the announced {announced}: {}",
                    status.get("control_peer"),
                    describe(&status)
                )
            },
        );
        pair.stream()?;
    }
    for pair in &mut pairs {
        pair.wait_read(BEFORE_FAULT, MOVE_LIMIT, "the data before the cuts")?;
    }
    if drop_udp {
        require_over_tcp(ctx, &mut pairs)?;
    }

    let kill = |ns: &str, filter: &str| -> Result<(), Failure> {
        netns::run_in(ns, "ss", &["-K", "-tn", filter])
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let to_balancer = format!(
        "( dst {} and dport = :{PORT} )",
        topo.gateway(ClientNet::Home)
    );
    kill(&topo.client_ns, &to_balancer)?;
    resumed(
        ctx,
        &mut pairs,
        "after the clients' connections to the balancer were killed",
    )?;

    let at_instances = format!(
        "( sport >= :{} and sport <= :{} )",
        instance_port(1),
        instance_port(INSTANCES)
    );
    kill(&topo.server_ns, &at_instances)?;
    resumed(
        ctx,
        &mut pairs,
        "after the balancer's connections to the instances were killed",
    )?;

    topo.client_join(ClientNet::Away)
        .map_err(|e| e.to_string())?;
    ctx.hold(ROAM_GAP, "the clients hold both addresses for a moment");
    topo.client_leave(ClientNet::Home)
        .map_err(|e| e.to_string())?;
    resumed(ctx, &mut pairs, "after the clients changed address")?;
    quiet(ctx, &mut pairs, "after the clients changed address")?;

    balancer.kill();
    balancer = start_haproxy(ctx, &topo)?;
    resumed(ctx, &mut pairs, "after HAProxy restarted")?;

    let mut orphan = pairs.remove(0);
    let from = orphan.client.cursor();
    orphan.server.kill();
    let killed = Instant::now();
    gone(ctx, &mut orphan.client, from, killed)?;
    resumed(ctx, &mut pairs, "after another instance died")?;

    for pair in pairs {
        pair.finish(ctx)?;
    }
    drop(balancer);
    Ok(())
}

/// Starts instance `i` in the server's namespace and waits until it listens.
fn start_instance(ctx: &Ctx, topo: &Topology, i: u8) -> Result<Peer, Failure> {
    let mut args = vec![
        "server".to_string(),
        format!("listen=0.0.0.0:{}", instance_port(i)),
        format!("instance_id={i}"),
        format!("control_port={}", control_port(i)),
        format!("announce={}", announced(topo, i)),
    ];
    args.extend(Pair::common_args(ctx));
    args.push(format!("rate={BALANCED_RATE}"));
    let mut server = ctx.spawn(&format!("instance{i}"), &topo.server_ns, &args)?;
    server.wait("listening", CONNECT_LIMIT, 0, |e| e.name == "listening")?;
    Ok(server)
}

/// The control address instance `i` announces: its own, which clients reach directly.
fn announced(topo: &Topology, i: u8) -> SocketAddr {
    SocketAddr::new(topo.server_ip().into(), control_port(i))
}

/// Where clients connect: HAProxy's frontend in the router.
fn frontend(topo: &Topology) -> SocketAddr {
    SocketAddr::new(topo.gateway(ClientNet::Home).into(), PORT)
}

/// Starts HAProxy with the repository's configuration, pointed at the instances, and
/// waits until it listens.
fn start_haproxy(ctx: &Ctx, topo: &Topology) -> Result<Daemon, Failure> {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy.cfg");
    let mut envs = vec![("RTCP_FRONTEND", frontend(topo).to_string())];
    let names = ["RTCP_INSTANCE_1", "RTCP_INSTANCE_2", "RTCP_INSTANCE_3"];
    for (i, name) in (1..=INSTANCES).zip(names) {
        let addr = SocketAddr::new(topo.server_ip().into(), instance_port(i));
        envs.push((name, addr.to_string()));
    }
    let args = [
        "-db".to_string(),
        "-f".to_string(),
        config.display().to_string(),
    ];
    let daemon = ctx.spawn_daemon("haproxy", &topo.router_ns, "haproxy", &args, &envs)?;
    let until = Instant::now() + BALANCER_START_LIMIT;
    let listening = format!("( sport = :{PORT} )");
    loop {
        let out = netns::run_in(&topo.router_ns, "ss", &["-Hltn", &listening])
            .map_err(|e| e.to_string())?;
        if !out.trim().is_empty() {
            return Ok(daemon);
        }
        if Instant::now() >= until {
            return Err(format!("haproxy does not listen on {} after {BALANCER_START_LIMIT:?} (see its output in the log)", frontend(topo)));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The CID of `pair`'s session, as its client reported it.
fn pair_cid(pair: &mut Pair) -> Result<u32, Failure> {
    pair.client
        .history_event("connected")
        .and_then(|e| e.num("session"))
        .and_then(|cid| u32::try_from(cid).ok())
        .ok_or_else(|| "no connected event with a session id".into())
}

/// Requires data flowing again on every session within `BALANCED_RESUME_LIMIT` of now,
/// then 1 MiB more each way.
fn resumed(ctx: &Ctx, pairs: &mut [Pair], when: &str) -> Result<(), Failure> {
    ctx.step(when);
    let since = Instant::now();
    for pair in pairs.iter_mut() {
        pair.require_flow(ctx, since, BALANCED_RESUME_LIMIT, when)?;
    }
    for pair in pairs.iter_mut() {
        pair.more(MIB, MOVE_LIMIT)?;
    }
    Ok(())
}

/// Requires that no session reconnects over `QUIET_WINDOW`, once `SETTLE` has passed:
/// nothing faults meanwhile, so a reconnection would be one the control path failed to
/// prevent (its datagrams no longer arriving, the silence limit fails the connection).
fn quiet(ctx: &Ctx, pairs: &mut [Pair], when: &str) -> Result<(), Failure> {
    ctx.hold(SETTLE, "the control path settles");
    let before = reconnections(pairs)?;
    ctx.hold(QUIET_WINDOW, "nothing faults: nobody reconnects");
    let after = reconnections(pairs)?;
    ctx.figure(
        &format!("reconnections in a quiet {QUIET_WINDOW:?} {when}"),
        format!("{before:?} then {after:?}"),
    );
    ctx.require(before == after, || {
        format!("sessions reconnected with nothing faulting, {when}: {before:?} then {after:?} (the control path is dead)")
    });
    Ok(())
}

/// Each session's reconnections as its client counts them.
fn reconnections(pairs: &mut [Pair]) -> Result<Vec<String>, Failure> {
    pairs
        .iter_mut()
        .map(|p| {
            let status = p.status_of_client()?;
            Ok(status.get("reconnections").unwrap_or("?").to_string())
        })
        .collect()
}

/// Requires that the session of a dead instance fails with `UnknownSession`
/// (`ConnectionReset`) within `GONE_LIMIT` of `killed`.
fn gone(ctx: &Ctx, client: &mut Peer, from: usize, killed: Instant) -> Result<(), Failure> {
    let e = client.wait_until(
        "the session's failure",
        killed + 2 * GONE_LIMIT,
        "after its instance died",
        from,
        |e| e.is("read_error", 0),
    )?;
    let took = e.at - killed;
    ctx.seconds("the session of the dead instance failed after", took);
    ctx.require(took <= GONE_LIMIT, || {
        format!("the session of the dead instance failed after {took:.2?}; required within {GONE_LIMIT:?}")
    });
    let unknown = e.get("kind") == Some("ConnectionReset")
        && e.msg
            .as_deref()
            .is_some_and(|m| m.contains("does not know the session"));
    ctx.require(unknown, || {
        format!(
            "the session of the dead instance did not fail as an unknown session: {}",
            describe(&e)
        )
    });
    Ok(())
}

/// With UDP dropped, every session's control messages cross the balancer: both ends say
/// so.
fn require_over_tcp(ctx: &Ctx, pairs: &mut [Pair]) -> Result<(), Failure> {
    for pair in pairs.iter_mut() {
        pair.require_control_over_tcp(ctx)?;
    }
    Ok(())
}
