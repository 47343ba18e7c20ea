//! The two peers of a scenario, driven through their commands and events, and what the
//! scenarios observe of the network (UDP counters, TCP connections).

use std::time::{Duration, Instant};

use robust_tcp_testkit::netns::{ClientNet, Counter, Topology};

use super::{CONNECT_LIMIT, EXIT_LIMIT, FLOW_BYTES, MEASURE_LIMIT, MIB, MOVE_LIMIT, PORT, RATE};
use crate::events::Event;
use crate::harness::{describe, Ctx, Failure, Peer};

/// Forwarded UDP datagrams each way, counted at the router: whether the control path
/// works while a fault lasts (a figure, to tell apart a dead control path from a dead
/// TCP connection).
pub(super) struct UdpCounters {
    pub(super) up: Counter,
    pub(super) down: Counter,
}

impl UdpCounters {
    pub(super) fn new(topo: &Topology) -> Result<UdpCounters, Failure> {
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
    pub(super) fn zero(&self) -> Result<(), Failure> {
        self.up.zero().map_err(|e| e.to_string())?;
        self.down.zero().map_err(|e| e.to_string())
    }

    /// Records what was counted since [`zero`](Self::zero) as a figure.
    pub(super) fn report(&self, ctx: &Ctx, when: &str) -> Result<(), Failure> {
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
pub(super) fn wait_no_tcp(topo: &Topology, limit: Duration) -> Result<bool, Failure> {
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
pub(super) struct Pair {
    pub(super) client: Peer,
    pub(super) server: Peer,
    pub(super) s: usize,
    pub(super) next_mark: u64,
}

impl Pair {
    /// Starts a server and a client with extra arguments each, and waits for the session.
    pub(super) fn open(
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

    pub(super) fn common_args(ctx: &Ctx) -> Vec<String> {
        vec![format!("seed={}", ctx.seed), format!("rate={RATE}")]
    }

    pub(super) fn start_server(
        ctx: &Ctx,
        topo: &Topology,
        extra: &[String],
    ) -> Result<Peer, Failure> {
        let mut args = vec!["server".to_string(), format!("listen=0.0.0.0:{PORT}")];
        args.extend(Pair::common_args(ctx));
        args.extend_from_slice(extra);
        let mut server = ctx.spawn("server", &topo.server_ns, &args)?;
        server.wait("listening", CONNECT_LIMIT, 0, |e| e.name == "listening")?;
        Ok(server)
    }

    /// Starts a client; returns it, its session id and how long `connect` took.
    pub(super) fn start_client(
        ctx: &Ctx,
        topo: &Topology,
        name: &str,
        extra: &[String],
    ) -> Result<(Peer, u64, Duration), Failure> {
        Pair::start_client_within(ctx, topo, name, extra, CONNECT_LIMIT)
    }

    pub(super) fn start_client_within(
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
    pub(super) fn accepted(server: &mut Peer, session: u64) -> Result<usize, Failure> {
        let e = server.wait("the client's session accepted", CONNECT_LIMIT, 0, |e| {
            e.name == "accepted" && e.num("session") == Some(session)
        })?;
        e.num("s")
            .map(|s| s as usize)
            .ok_or_else(|| "accepted without an index".into())
    }

    /// Harness check for the NAT topologies: the server sees the router's address, on
    /// another port than the client's (the NAT rewrote it).
    pub(super) fn check_nat(&mut self, ctx: &Ctx, topo: &Topology) -> Result<(), Failure> {
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
    pub(super) fn send_both(&mut self, command: &str) -> Result<(), Failure> {
        self.client.send(command)?;
        self.server.send(&format!("{command} s={}", self.s))
    }

    /// Both writers stream at `RATE` until [`finish`](Self::finish).
    pub(super) fn stream(&mut self) -> Result<(), Failure> {
        self.send_both("stream")
    }

    pub(super) fn cursors(&mut self) -> (usize, usize) {
        (self.client.cursor(), self.server.cursor())
    }

    /// Waits until each side has read `bytes` in all; returns when each got there.
    pub(super) fn wait_read(
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
    pub(super) fn more(&mut self, bytes: u64, limit: Duration) -> Result<(), Failure> {
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
    pub(super) fn require_flow(
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
    pub(super) fn record_status(&mut self, ctx: &Ctx) {
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
    pub(super) fn status_of_server(&mut self) -> Result<Event, Failure> {
        let s = self.s;
        let from = self.server.cursor();
        self.server.send(&format!("status s={s}"))?;
        self.server
            .wait("status", MOVE_LIMIT, from, |e| e.is("status", s))
    }

    /// The client's status of this session.
    pub(super) fn status_of_client(&mut self) -> Result<Event, Failure> {
        let from = self.client.cursor();
        self.client.send("status s=0")?;
        self.client
            .wait("status", MOVE_LIMIT, from, |e| e.is("status", 0))
    }

    /// Requires both ends' status to show that their control messages go over TCP.
    pub(super) fn require_control_over_tcp(&mut self, ctx: &Ctx) -> Result<(), Failure> {
        for (who, status) in [
            ("client", self.status_of_client()?),
            ("server", self.status_of_server()?),
        ] {
            ctx.require(status.get("control_over_tcp") == Some("true"), || {
                format!(
                    "the {who}'s status does not show control over TCP: {}",
                    describe(&status)
                )
            });
        }
        Ok(())
    }

    /// Stops both writers, waits for each side to read the other's whole stream and its
    /// end, requires the counts to match (every byte was checked as it was read), records
    /// the session's figures and ends both processes.
    pub(super) fn finish(mut self, ctx: &Ctx) -> Result<(), Failure> {
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
pub(super) fn outcome(
    peer: &mut Peer,
    s: usize,
    from: usize,
    ok: &str,
    err: &str,
) -> Result<u64, Failure> {
    let e = peer.wait(ok, MOVE_LIMIT, from, |e| e.is(ok, s) || e.is(err, s))?;
    if e.name == err {
        return Err(format!("{}: {}", peer.name, describe(&e)));
    }
    e.num("total")
        .ok_or_else(|| format!("{}: {ok} without a total", peer.name))
}

/// Waits until `peer` has read `bytes` on session `s`; returns when it reported so.
pub(super) fn wait_read(
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
    pub(super) fn history_event(&mut self, name: &str) -> Option<Event> {
        self.history().iter().find(|e| e.name == name).cloned()
    }
}
