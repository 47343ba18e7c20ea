//! The faults a [`Topology`] injects on its router (a silent blackhole of all traffic
//! or of one protocol, `conntrack -F`, a client that changes networks) and what it counts
//! there.

use super::*;

impl Topology {
    /// Drops every forwarded packet of `traffic`, both ways, silently (no RST, no ICMP):
    /// the path goes dark as a cut cable or a dead middlebox makes it
    /// ([`Traffic::All`]), or for one protocol only, as a stateful firewall that lost a
    /// connection's state does.
    ///
    /// # Errors
    ///
    /// If iptables fails.
    pub fn blackhole(&self, traffic: Traffic) -> Result<()> {
        let mut rule = vec!["-I", "FORWARD", "1"];
        rule.extend_from_slice(traffic.matches());
        rule.extend_from_slice(&["-j", BLACKHOLE_CHAIN]);
        self.iptables(&rule).map(drop)
    }

    /// Ends the blackhole of `traffic`; returns how many packets the blackholes of this
    /// topology swallowed so far (a check that it did drop traffic).
    ///
    /// # Errors
    ///
    /// If iptables fails, or there is no such blackhole.
    pub fn restore(&self, traffic: Traffic) -> Result<u64> {
        let mut rule = vec!["-D", "FORWARD"];
        rule.extend_from_slice(traffic.matches());
        rule.extend_from_slice(&["-j", BLACKHOLE_CHAIN]);
        self.iptables(&rule)?;
        self.chain_counters(BLACKHOLE_CHAIN)
            .map(|(packets, _)| packets)
    }

    /// Packets and bytes the router dropped for [`Options::drop_udp`].
    ///
    /// # Errors
    ///
    /// If iptables fails (or the option is off: the chain does not exist).
    pub fn udp_dropped(&self) -> Result<(u64, u64)> {
        self.chain_counters(UDP_DROP_CHAIN)
    }

    /// Forgets every connection the router tracks, NAT mappings included (`conntrack -F`),
    /// as a NAT that reboots or times its mappings out does.
    ///
    /// # Errors
    ///
    /// If conntrack fails.
    pub fn flush_conntrack(&self) -> Result<()> {
        run_in(&self.router_ns, "conntrack", &["-F"]).map(drop)
    }

    /// Gives the client its address on `net` and makes that network's gateway its default
    /// route, so new packets leave from there (the old address, if still held, keeps
    /// working for what is bound to it).
    ///
    /// # Errors
    ///
    /// If ip fails.
    pub fn client_join(&self, net: ClientNet) -> Result<()> {
        let c = &self.client_ns;
        self.ip(
            c,
            &["addr", "add", &cidr(self.client_ip(net)), "dev", HOST_IF],
        )?;
        self.ip(
            c,
            &[
                "route",
                "replace",
                "default",
                "via",
                &self.gateway(net).to_string(),
            ],
        )
        .map(drop)
    }

    /// Takes the client's address on `net` away (routes through that network go with it).
    ///
    /// # Errors
    ///
    /// If ip fails.
    pub fn client_leave(&self, net: ClientNet) -> Result<()> {
        self.ip(
            &self.client_ns,
            &["addr", "del", &cidr(self.client_ip(net)), "dev", HOST_IF],
        )
        .map(drop)
    }

    /// Counts forwarded packets that match `matches` (iptables match arguments, e.g.
    /// `["-i", "to-client", "-p", "udp"]`, see [`Topology::from_client`]) from now on,
    /// without changing what happens to them. `name` names the counter's chain (at most
    /// 28 characters, unique in the topology).
    ///
    /// # Errors
    ///
    /// If iptables fails.
    pub fn counter(&self, name: &str, matches: &[&str]) -> Result<Counter> {
        self.iptables(&["-N", name])?;
        self.iptables(&["-A", name, "-j", "RETURN"])?;
        // First in FORWARD, so that it counts whatever the rules after it do; a blackhole
        // inserted later comes before it, and what it drops is not counted.
        let mut rule = vec!["-I", "FORWARD", "1"];
        rule.extend_from_slice(matches);
        rule.extend_from_slice(&["-j", name]);
        self.iptables(&rule)?;
        Ok(Counter {
            router_ns: self.router_ns.clone(),
            chain: name.to_string(),
        })
    }

    /// The iptables matches for packets forwarded from the client towards the server.
    pub fn from_client() -> [&'static str; 2] {
        ["-i", ROUTER_CLIENT_IF]
    }

    /// The iptables matches for packets forwarded from the server towards the client.
    pub fn from_server() -> [&'static str; 2] {
        ["-i", ROUTER_SERVER_IF]
    }

    fn chain_counters(&self, chain: &str) -> Result<(u64, u64)> {
        chain_counters(&self.router_ns, chain)
    }

    /// How many established TCP connections the client namespace has to `port` (`ss`).
    ///
    /// # Errors
    ///
    /// If ss fails.
    pub fn client_tcp_connections(&self, port: u16) -> Result<usize> {
        let filter = format!("( dport = :{port} )");
        let out = run_in(
            &self.client_ns,
            "ss",
            &["-Htn", "state", "established", &filter],
        )?;
        Ok(out.lines().filter(|l| !l.trim().is_empty()).count())
    }
}

/// Packet and byte counters of a [`Topology::counter`].
pub struct Counter {
    router_ns: String,
    chain: String,
}

impl Counter {
    /// Packets and bytes counted since it was made or last zeroed.
    ///
    /// # Errors
    ///
    /// If iptables fails or prints what this cannot read.
    pub fn read(&self) -> Result<(u64, u64)> {
        chain_counters(&self.router_ns, &self.chain)
    }

    /// Starts counting again from zero.
    ///
    /// # Errors
    ///
    /// If iptables fails.
    pub fn zero(&self) -> Result<()> {
        run_in(&self.router_ns, "iptables", &["-w", "-Z", &self.chain]).map(drop)
    }
}

/// The counters of the first rule of `chain` in `ns`.
fn chain_counters(ns: &str, chain: &str) -> Result<(u64, u64)> {
    let out = run_in(ns, "iptables", &["-w", "-L", chain, "-v", "-x", "-n"])?;
    // "Chain X (1 references)", the column titles, then "pkts bytes target ..." rows.
    let row = out
        .lines()
        .nth(2)
        .ok_or_else(|| Error(format!("no rule in chain {chain} of {ns}: {out}")))?;
    let mut fields = row.split_whitespace().map(str::parse::<u64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(packets)), Some(Ok(bytes))) => Ok((packets, bytes)),
        _ => Err(Error(format!(
            "cannot read the counters of chain {chain} of {ns}: {row:?}"
        ))),
    }
}
