//! The two child processes: the server holding the sessions, the client opening them;
//! each reports to the parent on stdout and exits when its stdin closes.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use robust_tcp::{Config, RServerSocket, RSocket, SessionState};
use robust_tcp_testkit::child::exit_on_stdin_eof;

use super::{invalid, parse_options, CONNECT_LIMIT, EXCHANGE_TIMEOUT, MESSAGE, PROGRESS_EVERY};

/// Prints one line for the parent and flushes it at once: the parent waits for it.
pub(super) fn tell_parent(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

pub(super) fn run_server(args: &[String]) -> io::Result<()> {
    let options = parse_options(args)?;
    let n = options.sessions;
    let watcher = exit_on_stdin_eof();
    // The default session limits (1024, and 256 per client address) would refuse most of
    // the sessions, which all come from 127.0.0.1.
    let config = Config::default()
        .max_sessions(n)
        .max_sessions_per_address(n);
    let server = RServerSocket::bind_with("127.0.0.1:0", config)?;
    tell_parent(&format!("listening {}", server.local_addr()?))?;

    // No thread per session: the main thread accepts, answers the request and keeps the
    // socket, which is exactly what makes the library's own threads visible.
    let mut sessions = Vec::with_capacity(n);
    let started = Instant::now();
    let mut buf = [0u8; MESSAGE];
    for i in 0..n {
        let (mut sock, peer) = server.accept()?;
        sock.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
        sock.set_write_timeout(Some(EXCHANGE_TIMEOUT))?;
        sock.read_exact(&mut buf)
            .and_then(|()| sock.write_all(&buf))
            .and_then(|()| sock.flush())
            .map_err(|e| io::Error::other(format!("session {i} from {peer}: {e}")))?;
        sessions.push(sock);
    }
    let open = sessions
        .iter()
        .filter(|s| s.status().state == SessionState::Connected)
        .count();
    tell_parent(&format!(
        "all-open {n} {:.6} {open}",
        started.elapsed().as_secs_f64()
    ))?;
    // Idle until the watcher ends the process; it never returns normally.
    let _ = watcher.join();
    drop(sessions);
    Ok(())
}

pub(super) fn run_client(args: &[String]) -> io::Result<()> {
    let options = parse_options(args)?;
    let n = options.sessions;
    let server = options
        .server
        .ok_or_else(|| invalid("client needs --server ADDR".into()))?;
    let watcher = exit_on_stdin_eof();
    let config = Config::default().give_up_after(Some(CONNECT_LIMIT));

    let mut sessions = Vec::with_capacity(n);
    let mut connect_times = Vec::with_capacity(n);
    let mut exchange_total = Duration::ZERO;
    let started = Instant::now();
    let mut reply = [0u8; MESSAGE];
    for i in 0..n {
        let t0 = Instant::now();
        let mut sock = RSocket::connect_with(server, config.clone())
            .map_err(|e| io::Error::other(format!("connect session {i}: {e}")))?;
        let t1 = Instant::now();
        connect_times.push(t1 - t0);
        sock.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
        sock.set_write_timeout(Some(EXCHANGE_TIMEOUT))?;
        let mut request = [0u8; MESSAGE];
        request[..8].copy_from_slice(&(i as u64).to_le_bytes());
        request[8..].copy_from_slice(b"scale-rq");
        sock.write_all(&request)
            .and_then(|()| sock.flush())
            .and_then(|()| sock.read_exact(&mut reply))
            .map_err(|e| io::Error::other(format!("exchange on session {i}: {e}")))?;
        if reply != request {
            return Err(io::Error::other(format!(
                "session {i}: the reply differs from the request"
            )));
        }
        exchange_total += t1.elapsed();
        sessions.push(sock);
        if (i + 1) % PROGRESS_EVERY == 0 && i + 1 < n {
            eprintln!(
                "  client: {}/{n} sessions open after {:.1} s",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let total = started.elapsed();
    connect_times.sort_unstable();
    let quantile = |q: f64| {
        // n > 0, so the index is in range.
        let index = ((connect_times.len() - 1) as f64 * q).round() as usize;
        connect_times[index].as_secs_f64()
    };
    let connect_sum: Duration = connect_times.iter().sum();
    tell_parent(&format!(
        "all-open {n} {:.6} {:.6} {:.6} {:.6} {:.6} {:.6}",
        total.as_secs_f64(),
        connect_sum.as_secs_f64(),
        exchange_total.as_secs_f64(),
        quantile(0.5),
        quantile(0.99),
        quantile(1.0),
    ))?;
    let _ = watcher.join();
    drop(sessions);
    Ok(())
}
