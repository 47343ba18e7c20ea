//! The scenarios of faults in the network: NAT with random ports, a flushed conntrack
//! table, UDP blocked, a blackhole, the client's address changing.

use std::time::{Duration, Instant};

use robust_tcp_testkit::netns::{ClientNet, Options, Topology, Traffic};

use super::pair::{Pair, UdpCounters};
use super::{
    dead_after, AFTER_FAULT, BEFORE_FAULT, DETECT_SLACK, FALLBACK_LIMIT, MEASURE_LIMIT, MIB,
    MOVE_LIMIT, PORT, RESUME_LIMIT, ROAM_GAP, ROAM_LIMIT,
};
use crate::events::Event;
use crate::harness::{Ctx, Failure};

/// Test 1: through a NAT that rewrites ports (`MASQUERADE --random-fully`): byte-exact, no
/// hang.
pub(super) fn nat_random_ports(ctx: &Ctx) -> Result<(), Failure> {
    // `_topo`, not `_`: the namespaces live until the end of the scenario.
    let (_topo, mut pair) = through_nat(ctx)?;
    let started = Instant::now();
    pair.stream()?;
    let (c, s) = pair.wait_read(8 * MIB, MOVE_LIMIT, "8 MiB each way")?;
    ctx.seconds("8 MiB each way at 4 MiB/s took (client)", c - started);
    ctx.seconds("8 MiB each way at 4 MiB/s took (server)", s - started);
    pair.finish(ctx)
}

/// A session through a NAT that rewrites ports, checked to be rewritten.
fn through_nat(ctx: &Ctx) -> Result<(Topology, Pair), Failure> {
    let topo = ctx.topology(Options {
        nat: true,
        ..Options::default()
    })?;
    let mut pair = Pair::open(ctx, &topo, &[], &[])?;
    pair.check_nat(ctx, &topo)?;
    Ok((topo, pair))
}

/// Test 1: the same NAT forgets its mappings mid-transfer (`conntrack -F`): byte-exact, no
/// hang. The bound is what items 2 and 4 together allow: detection within `dead_after`
/// + 1 s, then flowing within 1.5 s.
pub(super) fn nat_conntrack_flush(ctx: &Ctx) -> Result<(), Failure> {
    let (topo, mut pair) = through_nat(ctx)?;
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
pub(super) fn tcp_only(ctx: &Ctx, dnat: bool) -> Result<(), Failure> {
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
    let (c, s) = engaged.inspect_err(|_| {
        pair.record_status(ctx);
    })?;
    let took = c.max(s) - started;
    ctx.seconds("the fallback engaged (1 MiB each way) after", took);
    ctx.require(took <= FALLBACK_LIMIT, || {
        format!("the fallback took {took:.2?} to carry 1 MiB each way; required within {FALLBACK_LIMIT:?} (\"within seconds\")")
    });
    // And the sessions say so.
    pair.require_control_over_tcp(ctx)?;
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
pub(super) fn blackhole(ctx: &Ctx, outage: Duration, traffic: Traffic) -> Result<(), Failure> {
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
pub(super) fn roam(ctx: &Ctx, new_first: bool) -> Result<(), Failure> {
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
