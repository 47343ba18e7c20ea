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
//! Example, redis on `db.example` reached from a laptop on a flaky network:
//!
//! ```text
//! db.example$ rtcp server --listen 0.0.0.0:7000 --forward 127.0.0.1:6379
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
mod connect;
mod listen;
mod proxy;
mod relay;
mod request;
mod routes;
mod server;
mod signals;
mod socks;
mod status;
mod tunnel;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand};
use robust_tcp::Config;

use crate::status::Registry;

/// Robust TCP connections for programs that cannot be recompiled: a local port tunnelled
/// over robust-tcp sessions that survive network failures.
#[derive(Parser, Debug)]
#[command(name = "rtcp", version, about, long_about = None)]
#[command(
    after_help = "Example (redis through a tunnel that survives network cuts):
  on the server:  rtcp server --listen 0.0.0.0:7000 --forward 127.0.0.1:6379
  on the client:  rtcp client --listen 127.0.0.1:16379 --server db.example:7000
                  redis-cli -p 16379 PING
  ssh:            ssh -o ProxyCommand='rtcp connect %h:7000' db.example

Logs: RUST_LOG=info (default warn) on stderr. Every option can also be set in the
environment variable shown with it (RTCP_...)."
)]
struct Cli {
    /// No status line on stderr (it is shown only when stderr is a terminal)
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
        /// Most sessions held at once, lingering ones included; clients past it wait and retry
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), env = "RTCP_MAX_SESSIONS")]
        max_sessions: Option<u64>,
        /// Most sessions held at once from one client IP address (clients behind one NAT
        /// share one); clients past it wait and retry
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), env = "RTCP_MAX_SESSIONS_PER_ADDRESS")]
        max_sessions_per_address: Option<u64>,
        /// UDP port for the sessions' control messages (default: one the system picks),
        /// bound on the --listen address. Fix it behind a firewall or a port forward, for
        /// instance to the TCP port's number, and open or forward it too
        #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..), env = "RTCP_CONTROL_PORT")]
        control_port: Option<u16>,
        #[command(flatten)]
        session: SessionOptions,
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
        session: SessionOptions,
    },
    /// Relay stdin and stdout over one robust session (e.g. ssh -o ProxyCommand='rtcp connect %h:7000')
    Connect {
        /// The rtcp server to open the session with (host:port)
        #[arg(value_name = "ADDR", env = "RTCP_SERVER")]
        server: String,
        #[command(flatten)]
        session: SessionOptions,
    },
}

/// The library's session settings that matter to an operator.
#[derive(Args, Debug)]
struct SessionOptions {
    /// Bytes kept for resending after a cut, per session and direction, at first (e.g.
    /// 65536, 64K, 1M; default 16K). The buffer grows while a writer outpaces the
    /// acknowledgements, up to 4M or this size if larger, and shrinks back once idle
    #[arg(long, value_name = "BYTES", value_parser = parse_size, env = "RTCP_BUFFER_SIZE")]
    buffer_size: Option<usize>,
    /// Give a session up after this many seconds without a connection (default: never)
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..), env = "RTCP_GIVE_UP_AFTER")]
    give_up_after: Option<u64>,
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
        let mut config = Config::default();
        if let Some(bytes) = self.buffer_size {
            // The buffer's maximum follows (4 MiB, or this size if larger), and so does
            // the acknowledgement threshold (half the maximum): writers ask for
            // acknowledgements at each half of their buffer themselves.
            config = config.send_buffer_size(bytes);
        }
        if let Some(secs) = self.give_up_after {
            config = config.give_up_after(Some(Duration::from_secs(secs)));
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
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
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
            max_sessions,
            max_sessions_per_address,
            control_port,
            session,
        } => {
            let mut config = session.config().control_port(control_port);
            let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
            if let Some(n) = max_sessions {
                config = config.max_sessions(count(n));
            }
            if let Some(n) = max_sessions_per_address {
                config = config.max_sessions_per_address(count(n));
            }
            check(&config)?;
            start(&registry, cli.quiet)?;
            let allow = allow::Allow::new(socks.allow);
            server::run(&listen, forward.as_deref(), allow, config, registry)
        }
        Mode::Client {
            listen,
            server,
            socks,
            session,
        } => {
            let config = session.config();
            check(&config)?;
            start(&registry, cli.quiet)?;
            let socks = socks.socks.as_deref();
            client::run(listen.as_deref(), socks, &server, config, registry)
        }
        // No status line: stderr is usually the terminal of the program on stdin/stdout
        // (ssh), and a line every few seconds would write over its screen.
        Mode::Connect { server, session } => {
            let config = session.config();
            check(&config)?;
            connect::run(&server, config)
        }
    }
}

/// Refuses session settings the library would refuse, before anything is opened.
fn check(config: &Config) -> Result<(), Fatal> {
    config
        .validate()
        .map_err(|e| Fatal(format!("invalid session settings: {e}")))
}

/// Signals and the status line, common to `server` and `client`.
fn start(registry: &Arc<Registry>, quiet: bool) -> Result<(), Fatal> {
    signals::install(signals::drain(Arc::clone(registry)))?;
    if !quiet {
        status::spawn_status_line(Arc::clone(registry));
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
