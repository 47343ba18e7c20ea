//! The scenarios of sessions' lives: vanished clients, a dropped session whose server is
//! gone, an idle session's datagrams, a passive session woken by a write.

use std::time::{Duration, Instant};

use robust_tcp::Config;
use robust_tcp_testkit::netns::{Counter, Options, Topology};

use super::pair::{wait_no_tcp, Pair};
use super::{
    COUNTER_POLL, EXIT_LIMIT, IDLE_RATE_LIMIT, IDLE_WINDOW, LINGER_WATCH, MEASURE_LIMIT, MIB,
    MOVE_LIMIT, PASSIVE_IDLE, PASSIVE_LIMIT, PASSIVE_WAKE_LIMIT, PORT, RESET_TAIL, VANISHED_LIMIT,
};
use crate::events::Event;
use crate::harness::{describe, Ctx, Failure};

/// Test 5: a server at `max_sessions` (4) whose 4 clients were killed with SIGKILL admits
/// a new client within seconds, which then moves data both ways.
pub(super) fn vanished_clients(ctx: &Ctx) -> Result<(), Failure> {
    pub(super) const OLD: usize = 4;
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
pub(super) fn dropped_session_server_gone(ctx: &Ctx) -> Result<(), Failure> {
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
pub(super) fn read_packets(counter: &Counter) -> Result<u64, Failure> {
    counter.read().map(|(p, _)| p).map_err(|e| e.to_string())
}

/// Test 7: an idle session's datagrams per second, each way, counted at the router over
/// 10 s: "at most about one small datagram per second each way by default".
pub(super) fn idle_datagrams(ctx: &Ctx) -> Result<(), Failure> {
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
pub(super) fn passivate_idle_then_write(ctx: &Ctx) -> Result<(), Failure> {
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
