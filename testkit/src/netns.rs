//! Real networks in network namespaces (Linux, root, `ip`, `iptables` and `conntrack`): a
//! client, a router and a server namespace joined by veth pairs, with NAT, DNAT and filters
//! on the router, and faults injected there: an iptables DROP (a silent blackhole, not a
//! REJECT), `conntrack -F`, and changes of the client's address.
//!
//! A [`Topology`] owns its namespaces and deletes them when dropped, on every exit path,
//! panics included; deleting a namespace deletes its veths, addresses and iptables rules
//! with it. Names carry the process id ([`PREFIX`]`<pid>-<n>-<role>`), so that
//! [`remove_stale`] can clean up after a run that was killed before its drops ran, and
//! [`remove_live`] after a signal. Addresses are in a 10.a.b.0/24 drawn per topology, so
//! that nothing looks alike between concurrent runs (namespaces already keep them apart).
//!
//! Processes run in a namespace with `ip netns exec <ns> <program>` ([`Topology::command`]);
//! one process lives in one namespace, which is why robust-tcp's client and server, each
//! with one engine and one UDP socket per process, must run as separate processes.
//!
//! Every command that fails is reported with its command line, exit status and stderr.
//! [`Namespaces`] are bare namespaces for a topology of the caller's own (the WAN example's
//! TUN devices); [`on_signal`] cleans up after SIGINT, SIGTERM or SIGHUP.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::rng::{splitmix64, Rng};

mod faults;

pub use faults::Counter;

/// The start of every namespace name this module creates.
pub const PREFIX: &str = "rtcp-";

/// The interface name inside the client and server namespaces.
const HOST_IF: &str = "eth0";
/// The router's interface towards the client.
const ROUTER_CLIENT_IF: &str = "to-client";
/// The router's interface towards the server.
const ROUTER_SERVER_IF: &str = "to-server";
/// The chain that [`Topology::blackhole`] jumps to from FORWARD: one DROP rule, whose
/// counters tell how much the blackhole swallowed.
const BLACKHOLE_CHAIN: &str = "BLACKHOLE";
/// The chain that drops forwarded UDP when [`Options::drop_udp`] is set.
const UDP_DROP_CHAIN: &str = "UDP-DROP";

/// Namespaces created and not yet deleted, for [`remove_live`].
static LIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Numbers the topologies of this process.
static TOPOLOGIES: AtomicU64 = AtomicU64::new(0);

/// A failed command or setup step, with everything needed to see why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Results of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Why namespace tests cannot run on this machine (not root, a tool missing, namespaces
/// not permitted), or `None` if they can.
pub fn missing_prerequisites() -> Option<String> {
    match effective_uid() {
        Some(0) => {}
        Some(uid) => return Some(format!("they need root (running as uid {uid})")),
        None => return Some("cannot tell the user id from /proc/self/status".into()),
    }
    let tools: [(&str, &[&str], &str); 3] = [
        ("ip", &["-V"], "iproute2"),
        ("iptables", &["--version"], "iptables"),
        ("conntrack", &["--version"], "conntrack"),
    ];
    let missing: Vec<String> = tools
        .iter()
        .filter(|(tool, args, _)| run(tool, args).is_err())
        .map(|(tool, _, package)| format!("{tool} (Debian package {package})"))
        .collect();
    if !missing.is_empty() {
        return Some(format!("missing: {}", missing.join(", ")));
    }
    // Root in a container without CAP_SYS_ADMIN cannot create namespaces: try one.
    let probe = format!("{PREFIX}{}-probe", std::process::id());
    if let Err(e) = run("ip", &["netns", "add", &probe]) {
        return Some(format!("cannot create a network namespace: {e}"));
    }
    let _ = run("ip", &["netns", "del", &probe]);
    None
}

/// The effective user id, from `/proc/self/status` (std has no `geteuid`).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Runs `program args`, returning its stdout.
///
/// # Errors
///
/// If it cannot start or exits unsuccessfully; the message has the command line, the exit
/// status and stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let line = || format!("`{program} {}`", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error(format!("{} could not start: {e}", line())))?;
    checked(&line(), output)
}

/// `output`'s stdout if `line` succeeded; else an error with its status and stderr.
fn checked(line: &str, output: Output) -> Result<String> {
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(Error(format!(
        "{line} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}

/// Runs `program args` inside namespace `ns`.
///
/// # Errors
///
/// As [`run`].
pub fn run_in(ns: &str, program: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["netns", "exec", ns, program];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Deletes every namespace this process created and has not deleted yet. For a signal
/// handler's thread, when drops will not run; safe to call more than once.
pub fn remove_live() {
    let names = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|e| e.into_inner()));
    for name in names {
        delete_namespace(&name);
    }
}

/// Set by [`on_signal`]'s handler.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// On SIGINT, SIGTERM or SIGHUP, runs `cleanup` (which kills what the process started),
/// deletes every namespace this process created, and exits with status 130: drops do not
/// run when a signal ends the process.
pub fn on_signal(cleanup: fn()) {
    extern "C" fn handler(_: libc::c_int) {
        // Only an atomic store: nothing else is async-signal-safe here.
        INTERRUPTED.store(true, Ordering::SeqCst);
    }
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                signal,
                handler as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
    std::thread::spawn(move || loop {
        if INTERRUPTED.load(Ordering::SeqCst) {
            eprintln!("interrupted: cleaning up (child processes, network namespaces)");
            cleanup();
            remove_live();
            std::process::exit(130);
        }
        // How often the flag is looked at: not a synchronisation.
        std::thread::sleep(std::time::Duration::from_millis(50));
    });
}

/// Deletes the namespaces left by runs of this module whose process is gone (killed before
/// its drops ran), and returns their names.
///
/// # Errors
///
/// If the namespaces cannot be listed.
pub fn remove_stale() -> Result<Vec<String>> {
    let listing = run("ip", &["netns", "list"])?;
    let mut removed = Vec::new();
    for name in listing.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            delete_namespace(name);
            removed.push(name.to_string());
        }
    }
    Ok(removed)
}

/// Deletes namespace `name`, saying so on stderr if that fails (cleanup goes on).
fn delete_namespace(name: &str) {
    if let Err(e) = run("ip", &["netns", "del", name]) {
        eprintln!("netns cleanup: {e}");
    }
}

/// The name of this process's namespace number `n` in the role `role`.
fn namespace_name(n: u64, role: &str) -> String {
    format!("{PREFIX}{}-{n}-{role}", std::process::id())
}

/// The second and third bytes of a 10.a.b.0/24 drawn for namespace set `n`, so that
/// nothing looks alike between concurrent runs (namespaces already keep them apart).
fn random_net(n: u64) -> (u8, u8) {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = Rng::new(splitmix64(nanos ^ n) ^ u64::from(std::process::id()));
    // 10.0.x and 10.255.x are left alone: they are the ranges people pick by hand.
    (rng.range(1, 254) as u8, rng.range(0, 255) as u8)
}

/// Creates namespace `name` with its loopback up, and registers it for [`remove_live`].
fn add_namespace(name: &str) -> Result<()> {
    run("ip", &["netns", "add", name])?;
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(name.to_string());
    run("ip", &["-n", name, "link", "set", "lo", "up"]).map(drop)
}

/// Deletes namespace `name` unless [`remove_live`] already did.
fn remove_namespace(name: &str) {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    // Deleting the name is enough: the namespace goes with its last process, and its
    // devices, addresses and rules with it. A process left inside (the caller should have
    // killed it) keeps it alive unnamed until it exits.
    if let Some(i) = live.iter().position(|n| n == name) {
        live.swap_remove(i);
        delete_namespace(name);
    }
}

/// A set of bare namespaces (each with only `lo`, up), deleted on drop, on every exit path,
/// panics included (and by [`remove_live`] after a signal): for a topology other than
/// [`Topology`]'s, built by its user.
pub struct Namespaces {
    names: Vec<String>,
    net: (u8, u8),
}

impl Namespaces {
    /// One namespace per role, named after the process, a counter and the role.
    ///
    /// # Errors
    ///
    /// The first command that fails; whatever was created is deleted.
    pub fn new(roles: &[&str]) -> Result<Namespaces> {
        let n = TOPOLOGIES.fetch_add(1, Ordering::Relaxed);
        let mut set = Namespaces {
            names: Vec::new(),
            net: random_net(n),
        };
        for role in roles {
            let name = namespace_name(n, role);
            // Registered for the drop before it exists: a failure half way still deletes it.
            set.names.push(name.clone());
            add_namespace(&name)?;
        }
        Ok(set)
    }

    /// The name of the namespace made for `roles[i]`.
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// Address `host` in the 10.a.b.0/24 drawn for this set.
    pub fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net.0, self.net.1, host)
    }

    /// `ip args` inside namespace `roles[i]`.
    ///
    /// # Errors
    ///
    /// As [`run`].
    pub fn ip(&self, i: usize, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name(i)];
        full.extend_from_slice(args);
        run("ip", &full)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            remove_namespace(name);
        }
    }
}

/// What the router does besides forwarding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Masquerade what goes to the server with random ports (`MASQUERADE --random-fully`),
    /// as home routers and carrier NATs do; the server then has no route to the client's
    /// networks, only to the router.
    pub nat: bool,
    /// Make the server reachable only through this TCP port of the router's client-side
    /// address (`DNAT` to the server's same port), as `docker run -p`, a Kubernetes Service
    /// or a cloud load balancer do: nothing else is forwarded towards the server.
    pub dnat_port: Option<u16>,
    /// Drop every forwarded UDP datagram, both ways (a firewall that allows TCP only).
    pub drop_udp: bool,
}

/// The client's networks: the one it starts on, and the one it can roam to. Both are on
/// the same link, where the router has an address (the gateway) in each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientNet {
    /// 10.a.b.0/26: the router is .1, the client .2.
    Home,
    /// 10.a.b.128/26: the router is .129, the client .130.
    Away,
}

impl ClientNet {
    fn base(self) -> u8 {
        match self {
            ClientNet::Home => 0,
            ClientNet::Away => 128,
        }
    }
}

/// What a [`Topology::blackhole`] swallows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Traffic {
    /// Every forwarded packet.
    All,
    /// TCP only: the control datagrams still pass.
    Tcp,
}

impl Traffic {
    fn matches(self) -> &'static [&'static str] {
        match self {
            Traffic::All => &[],
            Traffic::Tcp => &["-p", "tcp"],
        }
    }
}

/// A client, a router and a server namespace (server side 10.a.b.64/26: router .65,
/// server .66), deleted on drop.
pub struct Topology {
    /// The client's namespace.
    pub client_ns: String,
    /// The router's namespace.
    pub router_ns: String,
    /// The server's namespace.
    pub server_ns: String,
    /// The second and third bytes of the 10.a.b.0/24 this topology uses.
    net: (u8, u8),
    options: Options,
    /// Namespaces created so far, deleted on drop (a setup that fails half way still
    /// cleans up what it made).
    created: Vec<String>,
}

impl Topology {
    /// Creates the namespaces, veths, addresses, routes and router rules for `options`.
    ///
    /// # Errors
    ///
    /// The first command that fails; whatever was created is deleted.
    pub fn new(options: Options) -> Result<Topology> {
        let n = TOPOLOGIES.fetch_add(1, Ordering::Relaxed);
        let name = |role: &str| namespace_name(n, role);
        let net = random_net(n);
        let mut topo = Topology {
            client_ns: name("c"),
            router_ns: name("r"),
            server_ns: name("s"),
            net,
            options,
            created: Vec::new(),
        };
        topo.build()?;
        Ok(topo)
    }

    fn build(&mut self) -> Result<()> {
        for ns in [
            self.client_ns.clone(),
            self.router_ns.clone(),
            self.server_ns.clone(),
        ] {
            add_namespace(&ns)?;
            self.created.push(ns.clone());
        }
        let (c, r, s) = (&self.client_ns, &self.router_ns, &self.server_ns);
        self.veth(c, ROUTER_CLIENT_IF)?;
        self.veth(s, ROUTER_SERVER_IF)?;
        let home_gw = self.gateway(ClientNet::Home);
        let away_gw = self.gateway(ClientNet::Away);
        let server_gw = self.host(65);
        self.ip(r, &["addr", "add", &cidr(home_gw), "dev", ROUTER_CLIENT_IF])?;
        // The router serves the client's second network from the start, as a network the
        // client can roam to would.
        self.ip(r, &["addr", "add", &cidr(away_gw), "dev", ROUTER_CLIENT_IF])?;
        self.ip(
            r,
            &["addr", "add", &cidr(server_gw), "dev", ROUTER_SERVER_IF],
        )?;
        self.ip(r, &["link", "set", ROUTER_CLIENT_IF, "up"])?;
        self.ip(r, &["link", "set", ROUTER_SERVER_IF, "up"])?;
        run_in(r, "sh", &["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])?;

        let client = self.client_ip(ClientNet::Home);
        self.ip(c, &["addr", "add", &cidr(client), "dev", HOST_IF])?;
        self.ip(c, &["link", "set", HOST_IF, "up"])?;
        self.ip(c, &["route", "add", "default", "via", &home_gw.to_string()])?;

        self.ip(s, &["addr", "add", &cidr(self.server_ip()), "dev", HOST_IF])?;
        self.ip(s, &["link", "set", HOST_IF, "up"])?;
        if !self.options.nat {
            // Behind a NAT the server sees only the router's address and needs no route
            // to the client's private networks; without one, it must reach them.
            self.ip(
                s,
                &["route", "add", "default", "via", &server_gw.to_string()],
            )?;
        }

        let mut chains = vec![BLACKHOLE_CHAIN];
        if self.options.drop_udp {
            chains.push(UDP_DROP_CHAIN);
        }
        for chain in chains {
            self.iptables(&["-N", chain])?;
            self.iptables(&["-A", chain, "-j", "DROP"])?;
        }
        if self.options.drop_udp {
            self.iptables(&["-A", "FORWARD", "-p", "udp", "-j", UDP_DROP_CHAIN])?;
        }
        if self.options.nat {
            self.iptables(&[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                ROUTER_SERVER_IF,
                "-j",
                "MASQUERADE",
                "--random-fully",
            ])?;
        }
        if let Some(port) = self.options.dnat_port {
            let port = port.to_string();
            let target = format!("{}:{port}", self.server_ip());
            self.iptables(&[
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-i",
                ROUTER_CLIENT_IF,
                "-p",
                "tcp",
                "-d",
                &home_gw.to_string(),
                "--dport",
                &port,
                "-j",
                "DNAT",
                "--to-destination",
                &target,
            ])?;
            // Only the forwarded port and what belongs to its connections pass.
            self.iptables(&["-P", "FORWARD", "DROP"])?;
            self.iptables(&[
                "-A",
                "FORWARD",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ])?;
            self.iptables(&[
                "-A",
                "FORWARD",
                "-i",
                ROUTER_CLIENT_IF,
                "-o",
                ROUTER_SERVER_IF,
                "-p",
                "tcp",
                "-d",
                &self.server_ip().to_string(),
                "--dport",
                &port,
                "-m",
                "conntrack",
                "--ctstate",
                "NEW",
                "-j",
                "ACCEPT",
            ])?;
        }
        Ok(())
    }

    /// A veth pair from [`HOST_IF`] in `ns` to `router_if` in the router. It is created with
    /// its ends already in their namespaces, so no name ever appears in the root namespace
    /// (where concurrent runs would clash).
    fn veth(&self, ns: &str, router_if: &str) -> Result<()> {
        let router = self.router_ns.as_str();
        let args = [
            "link", "add", HOST_IF, "type", "veth", "peer", "name", router_if, "netns", router,
        ];
        self.ip(ns, &args).map(drop)
    }

    /// `ip -n <ns> args`.
    fn ip(&self, ns: &str, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", ns];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// `iptables args` in the router.
    fn iptables(&self, args: &[&str]) -> Result<String> {
        // -w: wait for the xtables lock rather than fail when another namespace's
        // iptables holds it (the lock file is shared by every namespace).
        let mut full = vec!["-w"];
        full.extend_from_slice(args);
        run_in(&self.router_ns, "iptables", &full)
    }

    fn host(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net.0, self.net.1, host)
    }

    /// The router's address on `net`: the client's gateway there (and where a program in
    /// the router, a load balancer, listens for the client).
    pub fn gateway(&self, net: ClientNet) -> Ipv4Addr {
        self.host(net.base() + 1)
    }

    /// The client's address on `net` (it holds it only while it is on that network).
    pub fn client_ip(&self, net: ClientNet) -> Ipv4Addr {
        self.host(net.base() + 2)
    }

    /// The server's address.
    pub fn server_ip(&self) -> Ipv4Addr {
        self.host(66)
    }

    /// The address the server sees for the client: the router's server-side address behind
    /// the NAT, the client's own otherwise.
    pub fn client_seen_by_server(&self, net: ClientNet) -> Ipv4Addr {
        if self.options.nat {
            self.host(65)
        } else {
            self.client_ip(net)
        }
    }

    /// The address the client dials to reach a server listening on `port`: the router's
    /// forwarded port with [`Options::dnat_port`], the server itself otherwise.
    pub fn server_target(&self, port: u16) -> SocketAddr {
        match self.options.dnat_port {
            Some(_) => SocketAddrV4::new(self.gateway(ClientNet::Home), port).into(),
            None => SocketAddrV4::new(self.server_ip(), port).into(),
        }
    }

    /// A command that runs `program` inside namespace `ns` (`ip netns exec`, which execs
    /// the program in place: the child's process id is the program's).
    pub fn command(ns: &str, program: &std::path::Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program);
        cmd
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.created.drain(..) {
            remove_namespace(&ns);
        }
    }
}

/// `addr` with the /26 prefix every network here has.
fn cidr(addr: Ipv4Addr) -> String {
    format!("{addr}/26")
}
