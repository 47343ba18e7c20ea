//! The limits an operator sets, with defaults that fit a connection pool, and the one line
//! that names a limit, and the option that raises it, when a session runs into it.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use robust_tcp::{Config, Error, Refusal};

use crate::clients::Clients;

/// `rtcp server`'s limits.
#[derive(Args, Debug)]
pub struct ServerLimits {
    /// Most sessions held at once, lingering ones and those waiting for their client
    /// included. When full, the session whose client has been gone longest is ended to
    /// make room; with none gone, the new session is refused at once
    #[arg(long, value_name = "N", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..), env = "RTCP_MAX_SESSIONS")]
    pub max_sessions: u64,
    /// Most sessions held at once from one client IP address, counted from the opening,
    /// before the client's key is known: this bounds what any one address can take
    /// (every connection of one `rtcp client` comes from its address; clients behind one
    /// NAT share it, so raise it for them)
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..), env = "RTCP_MAX_SESSIONS_PER_ADDRESS")]
    pub max_sessions_per_address: u64,
    /// Most sessions held at once by one client key (--authorized-keys), whatever its
    /// addresses: the largest connection pool one `rtcp client` carries (1024 lets
    /// `redis-benchmark -c 1000` through). A session past it is refused after the TLS
    /// handshake, before its target is reached
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..), env = "RTCP_MAX_SESSIONS_PER_CLIENT")]
    pub max_sessions_per_client: u64,
    /// End a session whose client has been gone this many seconds, closing its target
    /// connection: a client killed or gone for good would otherwise hold a connection of
    /// the target forever. 600 rides out a suspended laptop or a long network outage and
    /// still frees an abandoned target connection within ten minutes
    #[arg(long, value_name = "SECS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..), env = "RTCP_GIVE_UP_AFTER")]
    pub give_up_after: u64,
}

impl ServerLimits {
    /// The count of each client key's sessions, with this limit.
    pub fn clients(&self) -> Arc<Clients> {
        Clients::new(usize::try_from(self.max_sessions_per_client).unwrap_or(usize::MAX))
    }

    /// `config` with these limits.
    pub fn apply(&self, config: Config) -> Config {
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        config
            .max_sessions(count(self.max_sessions))
            .max_sessions_per_address(count(self.max_sessions_per_address))
            .give_up_after(Some(Duration::from_secs(self.give_up_after)))
    }
}

/// The limits of `rtcp client` and `rtcp connect`.
#[derive(Args, Debug)]
pub struct ClientLimits {
    /// Give a session up after this many seconds without a connection (default: never;
    /// the server ends it after its own --give-up-after, 600 by default, and the session
    /// then fails when the server is back)
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..), env = "RTCP_GIVE_UP_AFTER")]
    pub give_up_after: Option<u64>,
    /// Retry opening a session this many seconds while the server cannot be reached
    /// (not listening, or the network down) before resetting the local connection that
    /// waits for it: a server restarting or a short outage costs a pause, not an error.
    /// A server that is full refuses at once instead: the local connection is reset, and
    /// the log names the server's option to raise
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 30,
        env = "RTCP_RETRY_OPENING"
    )]
    pub retry_opening: u64,
}

impl ClientLimits {
    /// `config` with these limits. A server that refuses a new session as full refuses it
    /// at once: the local program sees its connection reset rather than a hang, and can
    /// retry (its pool does).
    pub fn apply(&self, config: Config) -> Config {
        config
            .give_up_after(self.give_up_after.map(Duration::from_secs))
            .busy_limit(Duration::ZERO)
    }

    /// How long an opening is retried while the server cannot be reached.
    pub fn retry_opening(&self) -> Duration {
        Duration::from_secs(self.retry_opening)
    }
}

/// The server's line for new sessions refused as full under `config`.
pub fn server_full(config: &Config) -> String {
    format!(
        "the server is full: it holds its --max-sessions ({}), or its \
         --max-sessions-per-address ({}) from the client's address, and no client's \
         session has been gone long enough to end (raise them)",
        config.max_sessions_value(),
        config.max_sessions_per_address_value()
    )
}

/// The server's reason for refusing a session of client `key`, which holds `max`: in the
/// server's log, and in the reply the client logs.
pub fn client_full(key: impl std::fmt::Display, max: usize) -> String {
    format!(
        "client key {key} holds the server's --max-sessions-per-client ({max}) sessions \
         already (raise it on the server)"
    )
}

/// Whether `e` is the server's refusal of a new session because it was full.
pub fn is_server_full(e: &io::Error) -> bool {
    matches!(
        e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()),
        Some(Error::Refused(Refusal::TooManySessions))
    )
}

/// `e` for the log: a refusal by a full server names the limits and their options.
pub fn describe(e: &io::Error) -> String {
    if is_server_full(e) {
        "the server is full: it holds its --max-sessions, or its --max-sessions-per-address \
         from this client's address (raise them on the server)"
            .to_owned()
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_server_names_its_options() {
        let full: io::Error = Error::Refused(Refusal::TooManySessions).into();
        assert!(is_server_full(&full));
        assert!(describe(&full).contains("--max-sessions-per-address"));
        let reset: io::Error = Error::PeerReset.into();
        assert!(!is_server_full(&reset));
        assert_eq!(describe(&reset), reset.to_string());
    }
}
