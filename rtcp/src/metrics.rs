//! `--metrics ADDR`: the counters of the live and closed sessions in Prometheus's text
//! format (version 0.0.4), served by a minimal HTTP/1.0 responder on one thread:
//! `GET /metrics` gets them, anything else a 404. One request per connection, each
//! bounded in size and time, so a slow or hostile scraper holds the thread for at most
//! [`IO_TIMEOUT`] and costs no memory beyond [`MAX_REQUEST`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;

use crate::socks::Reply;
use crate::status::{Registry, Totals};
use crate::{addr, Fatal};

/// The upper bounds of the resume-time histogram's buckets, in seconds: from a loopback
/// resumption (milliseconds) to the reconnection backoff's maximum and beyond.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];
/// The most of a request read (its request line is all that matters).
const MAX_REQUEST: usize = 4096;
/// How long a scraper may take to send its request and read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// What operators ask of a running `rtcp server` or `rtcp client`.
#[derive(Args, Debug)]
pub struct Ops {
    /// Serve Prometheus metrics at http://ADDR/metrics (host:port; default: none):
    /// sessions open and reconnecting, bytes each way, reconnections, resume times,
    /// failures by reason
    #[arg(long, value_name = "ADDR", env = "RTCP_METRICS")]
    pub metrics: Option<String>,
}

/// Why a session could not be opened or relayed, as a metric's `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// The server refused the session as full (`--max-sessions`,
    /// `--max-sessions-per-address`).
    ServerFull,
    /// The server refused the session because its client's key held
    /// `--max-sessions-per-client` (counted by the server).
    ClientFull,
    /// The server could not be reached for `--retry-opening`.
    ServerUnreachable,
    /// The server could not reach the target (the client's side: as the server's reply
    /// said).
    TargetUnreachable,
    /// The server's `--allow` does not let the SOCKS target through.
    NotAllowed,
    /// The server refused the request for a reason of its own, which its reply names and
    /// the client logs (its client's key held `--max-sessions-per-client`, a request it
    /// could not route; the client's side: as the server's reply said).
    Refused,
    /// The server could not read the request, or has no `--forward` target for it.
    BadRequest,
    /// A session failed during the relay (reset, given up, ...).
    SessionFailed,
    /// The plain TCP side failed during the relay.
    LocalFailed,
    /// The TLS handshake failed: a client key not authorized, a server key not the one
    /// pinned, a peer with TLS against one with `--insecure-plaintext`.
    Handshake,
}

impl Failure {
    /// The failure a server's failed reply with `status` stands for: only the replies
    /// about the target's network, host and port are the target's.
    pub fn of_reply(status: Reply) -> Failure {
        match status {
            Reply::NotAllowed => Failure::NotAllowed,
            Reply::NetworkUnreachable | Reply::HostUnreachable | Reply::ConnectionRefused => {
                Failure::TargetUnreachable
            }
            Reply::Succeeded
            | Reply::GeneralFailure
            | Reply::CommandNotSupported
            | Reply::AddressTypeNotSupported => Failure::Refused,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Failure::ServerFull => "server_full",
            Failure::ClientFull => "client_full",
            Failure::ServerUnreachable => "server_unreachable",
            Failure::TargetUnreachable => "target_unreachable",
            Failure::NotAllowed => "not_allowed",
            Failure::Refused => "refused",
            Failure::BadRequest => "bad_request",
            Failure::SessionFailed => "session_failed",
            Failure::LocalFailed => "local_failed",
            Failure::Handshake => "handshake_failed",
        }
    }
}

/// The counters that the sessions' statuses do not hold.
#[derive(Default)]
pub struct Metrics {
    failures: Mutex<BTreeMap<Failure, u64>>,
    /// Per bucket of [`BUCKETS`] (not cumulative: summed when rendered), then +Inf.
    resume_buckets: [AtomicU64; BUCKETS.len() + 1],
    resume_micros: AtomicU64,
}

impl Metrics {
    /// Counts one failure.
    pub fn failed(&self, failure: Failure) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        *failures.entry(failure).or_default() += 1;
    }

    /// Counts one resumption that took `pause`.
    pub fn resumed(&self, pause: Duration) {
        let secs = pause.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(BUCKETS.len());
        self.resume_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(pause.as_micros()).unwrap_or(u64::MAX);
        self.resume_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The text format, for the sessions' `totals`.
    pub fn render(&self, totals: &Totals) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "rtcp_sessions_open",
            "gauge",
            "Sessions relayed now.",
            totals.open as u64,
        );
        metric(
            "rtcp_sessions_reconnecting",
            "gauge",
            "Sessions without a connection now.",
            totals.reconnecting as u64,
        );
        metric(
            "rtcp_sessions_total",
            "counter",
            "Sessions relayed since the start.",
            totals.sessions,
        );
        metric(
            "rtcp_sent_bytes_total",
            "counter",
            "Bytes written to sessions, towards the peer (each session's request header or reply included).",
            totals.sent,
        );
        metric(
            "rtcp_received_bytes_total",
            "counter",
            "Bytes read from sessions, from the peer (each session's request header or reply included).",
            totals.received,
        );
        metric(
            "rtcp_reconnections_total",
            "counter",
            "Times a session moved to a new TCP connection.",
            totals.reconnections,
        );
        let _ = writeln!(
            out,
            "# HELP rtcp_failures_total Sessions that could not be opened or failed, by reason.\n\
             # TYPE rtcp_failures_total counter"
        );
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for (failure, n) in failures.iter() {
            let _ = writeln!(
                out,
                "rtcp_failures_total{{reason=\"{}\"}} {n}",
                failure.label()
            );
        }
        drop(failures);
        let name = "rtcp_resume_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from a connection's failure to the session's resumption.\n\
             # TYPE {name} histogram"
        );
        let mut count = 0;
        for (i, bucket) in self.resume_buckets.iter().enumerate() {
            count += bucket.load(Ordering::Relaxed);
            let le = BUCKETS
                .get(i)
                .map_or("+Inf".to_owned(), |le| le.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {count}");
        }
        let sum = self.resume_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
        out
    }
}

/// Serves the metrics on `listen` from a thread of its own, for the life of the process.
pub fn serve(listen: &str, registry: Arc<Registry>) -> Result<(), Fatal> {
    let listener = addr::resolve(listen)
        .and_then(|addrs| TcpListener::bind(&addrs[..]))
        .map_err(|e| Fatal(format!("cannot serve metrics on {listen}: {e}")))?;
    log::info!("metrics on http://{listen}/metrics");
    std::thread::Builder::new()
        .name("rtcp-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => answer(stream, &registry),
                    Err(e) => {
                        log::warn!("metrics: cannot accept a connection: {e}");
                        // Out of file descriptors and the like: passes; don't spin.
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map_err(|e| Fatal(format!("cannot start the metrics thread: {e}")))?;
    Ok(())
}

/// Answers one HTTP request on `stream`; a scraper that fails or dawdles gets nothing.
fn answer(mut stream: TcpStream, registry: &Registry) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let Some(head) = read_head(&mut stream) else {
        return;
    };
    let response = match route(&head) {
        Some(()) => {
            let body = registry.metrics.render(&registry.totals());
            format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        None => {
            "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
        }
    };
    let _ = stream.write_all(response.as_bytes());
}

/// The request's head, up to its blank line, or `None` if it fails, ends or grows past
/// [`MAX_REQUEST`] first.
fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf).ok().filter(|&n| n > 0)?;
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST {
            return None;
        }
    }
    Some(head)
}

/// `Some` for a request for the metrics (`GET /metrics`, any HTTP version).
fn route(head: &[u8]) -> Option<()> {
    let line = head.split(|&b| b == b'\n').next()?;
    let mut words = line.split(|&b| b == b' ');
    (words.next()? == b"GET" && words.next()? == b"/metrics").then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_is_served() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Some(()));
        assert_eq!(route(b"GET /metrics HTTP/1.0\n\n"), Some(()));
        for other in [
            &b"POST /metrics HTTP/1.0\r\n\r\n"[..],
            b"GET / HTTP/1.0\r\n\r\n",
            b"",
            b"\xff",
        ] {
            assert_eq!(route(other), None, "{other:?}");
        }
    }

    #[test]
    fn the_text_format_counts_everything() {
        let metrics = Metrics::default();
        metrics.resumed(Duration::from_millis(3));
        metrics.resumed(Duration::from_millis(700));
        metrics.resumed(Duration::from_secs(100));
        metrics.failed(Failure::TargetUnreachable);
        metrics.failed(Failure::TargetUnreachable);
        metrics.failed(Failure::ServerFull);
        metrics.failed(Failure::of_reply(Reply::NotAllowed));
        // A server's refusal of its own (a client over its per-client cap) is not the
        // target's failure.
        metrics.failed(Failure::of_reply(Reply::GeneralFailure));
        assert_eq!(
            Failure::of_reply(Reply::ConnectionRefused),
            Failure::TargetUnreachable
        );
        let totals = Totals {
            open: 2,
            sessions: 5,
            sent: 10,
            received: 20,
            reconnections: 3,
            reconnecting: 1,
        };
        let text = metrics.render(&totals);
        for line in [
            "rtcp_sessions_open 2",
            "rtcp_sessions_reconnecting 1",
            "rtcp_sessions_total 5",
            "rtcp_sent_bytes_total 10",
            "rtcp_received_bytes_total 20",
            "rtcp_reconnections_total 3",
            "rtcp_failures_total{reason=\"server_full\"} 1",
            "rtcp_failures_total{reason=\"target_unreachable\"} 2",
            "rtcp_failures_total{reason=\"not_allowed\"} 1",
            "rtcp_failures_total{reason=\"refused\"} 1",
            "rtcp_resume_seconds_bucket{le=\"0.005\"} 1",
            "rtcp_resume_seconds_bucket{le=\"0.5\"} 1",
            "rtcp_resume_seconds_bucket{le=\"1\"} 2",
            "rtcp_resume_seconds_bucket{le=\"60\"} 2",
            "rtcp_resume_seconds_bucket{le=\"+Inf\"} 3",
            "rtcp_resume_seconds_sum 100.703",
            "rtcp_resume_seconds_count 3",
            "# TYPE rtcp_resume_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }
}
