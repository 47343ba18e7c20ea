//! rtcp: robust connections for programs that cannot be recompiled.
//!
//! Any TCP program (redis-cli, psql, ssh, an HTTP client) survives network failures by
//! pointing it at a local port: `rtcp client` accepts plain TCP connections there and
//! carries each over a robust-tcp session to `rtcp server`, which opens a plain TCP
//! connection to one fixed target per session. When the network cuts the connection
//! between the two, the session reconnects and resends what was lost: every byte arrives
//! exactly once, in order, and the programs at both ends see only a pause.
//!
//! Three modes:
//!
//! - `rtcp server --listen ADDR --forward ADDR`: robust sessions in, plain TCP out to the
//!   `--forward` target, and only there (it is not an open proxy); with `--allow
//!   PATTERN...`, also to the SOCKS targets the patterns name.
//! - `rtcp client --listen ADDR --server ADDR`: plain TCP in from local programs, one
//!   robust session out to the server for each connection; with `--socks ADDR`, SOCKS5
//!   requests in, each carried to the target it names.
//! - `rtcp connect ADDR`: one robust session on stdin and stdout, e.g. as ssh's
//!   `ProxyCommand`.
//!
//! Each session runs TLS 1.3: the client pins the server's key (trust on first use, or
//! `--server-key`), and the server admits only the client keys its `--authorized-keys`
//! file lists. `--insecure-plaintext` (on both ends) turns that off.
//!
//! Example, redis on `db.example` reached from a laptop on a flaky network:
//!
//! ```text
//! laptop$     rtcp fingerprint            # this client's key; add it on the server:
//! db.example$ echo 'SHA256:... laptop' >> ~/.config/rtcp/authorized_keys
//! db.example$ rtcp server --listen 0.0.0.0:7000 --forward 127.0.0.1:6379 \
//!                 --authorized-keys ~/.config/rtcp/authorized_keys
//! laptop$     rtcp client --listen 127.0.0.1:16379 --server db.example:7000
//! laptop$     redis-cli -p 16379 PING
//! ```
//!
//! Exit status: 0 after Ctrl-C or SIGTERM (sessions closed gracefully) or, for `connect`,
//! when the server ends the session; 1 with one line on stderr when rtcp cannot start
//! (bad address, port in use, server unreachable) or a `connect` session fails; 2 for a
//! command-line mistake (clap's usage error).

mod addr;
mod allow;
mod client;
mod clients;
mod connect;
mod follow;
mod keys;
mod limits;
mod listen;
mod metrics;
mod outage;
mod proxy;
mod relay;
mod request;
mod routes;
mod secure;
mod server;
mod signals;
mod socks;
mod status;
mod tunnel;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{ArgGroup, Args, Parser, Subcommand};
use robust_tcp::Config;

use crate::keys::{Fingerprint, Identity, Role};
use crate::secure::Security;
use crate::status::{Registry, StatusLine};

/// Robust TCP connections for programs that cannot be recompiled: a local port tunnelled
/// over robust-tcp sessions that survive network failures.
#[derive(Parser, Debug)]
#[command(name = "rtcp", version, about, long_about = None)]
#[command(
    after_help = "Example (redis through a tunnel that survives network cuts, TLS 1.3 inside):
  on the client:  rtcp fingerprint      (prints this client's key: SHA256:...)
  on the server:  echo 'SHA256:... laptop' >> /etc/rtcp/authorized_keys
                  rtcp server --listen 0.0.0.0:7000 --forward 127.0.0.1:6379 \\
                      --authorized-keys /etc/rtcp/authorized_keys
  on the client:  rtcp client --listen 127.0.0.1:16379 --server db.example:7000
                  redis-cli -p 16379 PING
  ssh:            ssh -o ProxyCommand='rtcp connect %h:7000' db.example
The client trusts the server's key on first use and pins it (known_servers in its state
directory); `rtcp fingerprint --server` on the server prints the key to compare.

Logs on stderr: each session opened, reconnecting (and why), resumed (after how long)
and closed (with its bytes) at info, the default for server and client; refusals, failures
and outages at warn, the default for connect. RUST_LOG=warn (or debug) overrides. Every
option can also be set in the environment variable shown with it (RTCP_...)."
)]
struct Cli {
    /// No status line (by default on stderr every 2 s when it is a terminal, or else in
    /// the log every minute when it changed)
    #[arg(long, short, global = true, env = "RTCP_QUIET")]
    quiet: bool,

    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Accept robust sessions and relay each to one fixed TCP target (or, with --allow, to
    /// the SOCKS targets it allows)
    #[command(group(ArgGroup::new("targets").required(true).multiple(true).args(["forward", "allow"])))]
    Server {
        /// Address to accept robust sessions on (host:port, or a bare port for every
        /// interface)
        #[arg(long, value_name = "ADDR", env = "RTCP_LISTEN")]
        listen: String,
        /// The one TCP target every tunnelled session is relayed to (host:port)
        #[arg(long, value_name = "ADDR", env = "RTCP_FORWARD")]
        forward: Option<String>,
        #[command(flatten)]
        socks: ServerSocks,
        /// UDP port for the sessions' control messages (default: one the system picks),
        /// bound on the --listen address. Fix it behind a firewall or a port forward, for
        /// instance to the TCP port's number, and open or forward it too
        #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..), env = "RTCP_CONTROL_PORT")]
        control_port: Option<u16>,
        #[command(flatten)]
        keys: ServerKeys,
        #[command(flatten)]
        session: SessionOptions,
        // Limits and operators' options (issue 21, items 1-4).
        #[command(flatten)]
        limits: limits::ServerLimits,
        #[command(flatten)]
        ops: metrics::Ops,
    },
    /// Accept plain TCP connections and carry each over a robust session to an rtcp server
    /// (or, with --socks, SOCKS5 requests)
    #[command(group(ArgGroup::new("entries").required(true).multiple(true).args(["listen", "socks"])))]
    Client {
        /// Address to accept local TCP connections on (host:port, or a bare port for every
        /// interface), each tunnelled to the server's --forward target
        #[arg(long, value_name = "ADDR", env = "RTCP_LISTEN")]
        listen: Option<String>,
        /// The rtcp server to open sessions with (host:port)
        #[arg(long, value_name = "ADDR", env = "RTCP_SERVER")]
        server: String,
        #[command(flatten)]
        socks: ClientSocks,
        #[command(flatten)]
        keys: ClientKeys,
        #[command(flatten)]
        session: SessionOptions,
        // Limits and operators' options (issue 21, items 1-4).
        #[command(flatten)]
        limits: limits::ClientLimits,
        #[command(flatten)]
        ops: metrics::Ops,
    },
    /// Relay stdin and stdout over one robust session (e.g. ssh -o ProxyCommand='rtcp connect %h:7000')
    Connect {
        /// The rtcp server to open the session with (host:port)
        #[arg(value_name = "ADDR", env = "RTCP_SERVER")]
        server: String,
        #[command(flatten)]
        keys: ClientKeys,
        #[command(flatten)]
        session: SessionOptions,
        // Limits (issue 21, items 1-4).
        #[command(flatten)]
        limits: limits::ClientLimits,
    },
    /// Print this end's key fingerprint (the client's, or with --server the server's),
    /// making the key first if there is none: a client's goes into the server's
    /// --authorized-keys file, a server's is what its clients pin
    Fingerprint {
        /// The server's key, not the client's
        #[arg(long)]
        server: bool,
        #[command(flatten)]
        state: StateDir,
    },
}

/// Where an end keeps its key.
#[derive(Args, Debug)]
struct StateDir {
    /// Directory of this end's key (and of a client's known_servers), made if missing
    /// [default: $STATE_DIRECTORY (systemd), or $XDG_STATE_HOME/rtcp, or
    /// ~/.local/state/rtcp]
    #[arg(long, value_name = "DIR", env = "RTCP_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

impl StateDir {
    fn path(&self) -> Result<PathBuf, Fatal> {
        self.state_dir
            .clone()
            .map_or_else(keys::default_state_dir, Ok)
    }
}

/// TLS off, on either end.
#[derive(Args, Debug)]
struct Plaintext {
    /// No TLS: the tunnel's bytes travel in clear and neither end is authenticated, so
    /// anyone on the path can read and change them. Both ends must have it
    #[arg(long, env = "RTCP_INSECURE_PLAINTEXT")]
    insecure_plaintext: bool,
}

impl Plaintext {
    /// `Some(Security::Plaintext)`, with the warning, if TLS is off.
    fn chosen(&self) -> Option<Security> {
        self.insecure_plaintext.then(|| {
            log::warn!(
                "--insecure-plaintext: sessions are not encrypted and neither end is \
                 authenticated: anyone on the path can read and change the tunnel's bytes"
            );
            Security::Plaintext
        })
    }
}

/// `rtcp server`'s keys.
#[derive(Args, Debug)]
struct ServerKeys {
    /// File of the client keys admitted: one fingerprint per line (`rtcp fingerprint` on
    /// a client prints its own), then an optional comment; `#` starts a comment line.
    /// Read again at each session
    #[arg(long, value_name = "FILE", env = "RTCP_AUTHORIZED_KEYS")]
    authorized_keys: Option<PathBuf>,
    /// Admit every client that reaches the port, instead of --authorized-keys (sessions
    /// are still encrypted, and the server authenticated)
    #[arg(
        long,
        env = "RTCP_ALLOW_ANY_CLIENT",
        conflicts_with = "authorized_keys"
    )]
    allow_any_client: bool,
    #[command(flatten)]
    state: StateDir,
    #[command(flatten)]
    plaintext: Plaintext,
}

impl ServerKeys {
    fn security(&self) -> Result<Security, Fatal> {
        if let Some(plaintext) = self.plaintext.chosen() {
            return Ok(plaintext);
        }
        if self.authorized_keys.is_none() && !self.allow_any_client {
            return Err(Fatal(
                "no --authorized-keys: give the file of the client keys to admit (`rtcp \
                 fingerprint` on a client prints its key), or --allow-any-client"
                    .into(),
            ));
        }
        if self.allow_any_client {
            log::warn!(
                "--allow-any-client: every client that reaches this port is admitted to the \
                 targets"
            );
        }
        Security::server(self.state.path()?, self.authorized_keys.clone())
    }
}

/// `rtcp client`'s and `rtcp connect`'s keys.
#[derive(Args, Debug)]
struct ClientKeys {
    /// The server's key fingerprint (`rtcp fingerprint --server` on the server prints
    /// it). Without it, the key is trusted on first use and pinned in known_servers in
    /// the state directory
    #[arg(long, value_name = "FINGERPRINT", env = "RTCP_SERVER_KEY")]
    server_key: Option<Fingerprint>,
    #[command(flatten)]
    state: StateDir,
    #[command(flatten)]
    plaintext: Plaintext,
}

impl ClientKeys {
    fn security(&self, server: &str) -> Result<Security, Fatal> {
        match self.plaintext.chosen() {
            Some(plaintext) => Ok(plaintext),
            None => Security::client(self.state.path()?, server, self.server_key),
        }
    }
}

/// The library's session settings that matter to an operator.
#[derive(Args, Debug)]
struct SessionOptions {
    /// Bytes kept for resending after a cut, per session and direction, at first (e.g.
    /// 65536, 64K, 1M; default 16K). The buffer grows while a writer outpaces the
    /// acknowledgements, up to 4M or this size if larger, and shrinks back once idle
    #[arg(long, value_name = "BYTES", value_parser = parse_size, env = "RTCP_BUFFER_SIZE")]
    buffer_size: Option<usize>,
}

/// `rtcp server`'s SOCKS option.
#[derive(Args, Debug)]
struct ServerSocks {
    /// Targets that clients' SOCKS requests (rtcp client --socks) may reach: host:port,
    /// host:LOW-HIGH, host:*, *.domain:port, IP:port, [IPv6]:port, CIDR:port (e.g.
    /// 10.0.0.0/8:22); several, or comma-separated. Without it, SOCKS requests are refused
    #[arg(long, value_name = "PATTERN", num_args = 1.., value_delimiter = ',', env = "RTCP_ALLOW")]
    allow: Vec<allow::Pattern>,
}

/// `rtcp client`'s SOCKS option.
#[derive(Args, Debug)]
struct ClientSocks {
    /// Address to accept SOCKS5 connections on (host:port, or a bare port for every
    /// interface): CONNECT requests, without authentication, each carried to the target it
    /// names if the server's --allow lets it
    #[arg(long, value_name = "ADDR", env = "RTCP_SOCKS")]
    socks: Option<String>,
}

impl SessionOptions {
    fn config(&self) -> Config {
        // A relay passes each chunk on as it comes: the programs at both ends chose Nagle
        // for themselves already, and holding the relay's small writes (a request's reply,
        // TLS's handshake and records) behind an unacknowledged segment costs a round trip.
        let mut config = Config::default().nodelay(true);
        if let Some(bytes) = self.buffer_size {
            // The buffer's maximum follows (4 MiB, or this size if larger), and so does
            // the acknowledgement threshold (half the maximum): writers ask for
            // acknowledgements at each half of their buffer themselves.
            config = config.send_buffer_size(bytes);
        }
        config
    }
}

/// The largest `--buffer-size`: the library's limit.
const MAX_BUFFER: u64 = 1 << 30;

/// Parses a byte count with an optional K, M or G suffix (powers of 1024).
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_uppercase()),
        _ => (text, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return Err(format!("unknown unit {unit:?} (use K, M or G)")),
    };
    let value: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a byte count"))?;
    let bytes = value
        .checked_mul(1 << shift)
        .filter(|b| (1..=MAX_BUFFER).contains(b))
        .ok_or_else(|| format!("must be between 1 byte and 1G, not {text}"))?;
    usize::try_from(bytes).map_err(|_| format!("{text} does not fit this machine"))
}

/// A reason rtcp cannot go on: printed as one line, `rtcp: <reason>`, with exit status 1.
#[derive(Debug)]
pub struct Fatal(pub String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    // rtcp's own info lines (sessions opened, reconnecting, resumed, closed) are what an
    // operator of a server or client reads; `connect` writes on the terminal of the
    // program on its stdin and stdout (ssh), which gets only warnings.
    let filter = match cli.mode {
        Mode::Connect { .. } | Mode::Fingerprint { .. } => "warn",
        _ => "warn,rtcp=info",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filter)).init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fatal(reason)) => {
            eprintln!("rtcp: {reason}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Fatal> {
    let registry = Arc::new(Registry::default());
    match cli.mode {
        Mode::Server {
            listen,
            forward,
            socks,
            control_port,
            keys,
            session,
            limits,
            ops,
        } => {
            let config = limits.apply(session.config().control_port(control_port));
            check(&config)?;
            let security = keys.security()?;
            start(&registry, cli.quiet, None, &ops)?;
            let allow = allow::Allow::new(socks.allow);
            server::run(
                &listen,
                forward.as_deref(),
                allow,
                security,
                limits.clients(),
                config,
                registry,
            )
        }
        Mode::Client {
            listen,
            server,
            socks,
            keys,
            session,
            limits,
            ops,
        } => {
            let config = limits.apply(session.config());
            check(&config)?;
            let security = keys.security(&server)?;
            start(&registry, cli.quiet, Some(&server), &ops)?;
            follow::spawn(server.clone(), Arc::clone(&registry));
            let socks = socks.socks.as_deref();
            let retry = limits.retry_opening();
            client::run(
                listen.as_deref(),
                socks,
                &server,
                security,
                config,
                retry,
                registry,
            )
        }
        // No status line: stderr is usually the terminal of the program on stdin/stdout
        // (ssh), and a line every few seconds would write over its screen.
        Mode::Connect {
            server,
            keys,
            session,
            limits,
        } => {
            let config = limits.apply(session.config());
            check(&config)?;
            let security = keys.security(&server)?;
            let watched = Some(server.clone());
            status::spawn_watch(Arc::clone(&registry), watched, StatusLine::Off);
            follow::spawn(server.clone(), Arc::clone(&registry));
            let retry = limits.retry_opening();
            connect::run(&server, &security, config, retry, registry)
        }
        Mode::Fingerprint { server, state } => {
            let role = if server { Role::Server } else { Role::Client };
            let identity = Identity::load_or_make(&state.path()?, role)?;
            println!("{}", identity.fingerprint);
            Ok(())
        }
    }
}

/// Refuses session settings the library would refuse, before anything is opened.
fn check(config: &Config) -> Result<(), Fatal> {
    config
        .validate()
        .map_err(|e| Fatal(format!("invalid session settings: {e}")))
}

/// Signals, the watcher (the sessions' log lines, `server`'s outages, the status line)
/// and the metrics, common to `server` and `client`.
fn start(
    registry: &Arc<Registry>,
    quiet: bool,
    server: Option<&str>,
    ops: &metrics::Ops,
) -> Result<(), Fatal> {
    signals::install(signals::drain(Arc::clone(registry)))?;
    let line = if quiet {
        StatusLine::Off
    } else {
        StatusLine::On
    };
    status::spawn_watch(Arc::clone(registry), server.map(str::to_owned), line);
    if let Some(listen) = &ops.metrics {
        metrics::serve(listen, Arc::clone(registry))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_a_unit() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("2G").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("K").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
