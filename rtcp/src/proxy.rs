//! `rtcp client --socks`: SOCKS5 requests from local programs, each carried over a robust
//! session whose request header names the target; the server connects to it if its
//! `--allow` lets it, and says how that went, which becomes the program's SOCKS reply.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::client::Upstream;
use crate::metrics::Failure;
use crate::request::{self, Request};
use crate::socks::{self, Reply};
use crate::tunnel;

/// How long a program may take to send its greeting and request: a connection that says
/// nothing (or too little) is closed after it rather than held for ever.
const GREETING_LIMIT: Duration = Duration::from_secs(10);

/// How long a refused connection's unread bytes are drained before it is closed.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// Negotiates SOCKS5 with one local program, opens a session for its CONNECT and relays;
/// every failure is answered with its SOCKS reply and closes the connection.
pub fn serve(local: TcpStream, peer: SocketAddr, upstream: &Upstream) {
    let server = &upstream.name;
    let _ = local.set_read_timeout(Some(GREETING_LIMIT));
    let target = match socks::accept(&mut &local) {
        Ok(target) => target,
        Err(refused) => {
            let answer = refused
                .reply
                .map_or_else(|| "no reply".to_string(), |r| r.to_string());
            log::info!(
                "SOCKS connection from {peer} refused: {}; {answer}",
                refused.why
            );
            close_gently(&local);
            return;
        }
    };
    let _ = local.set_read_timeout(None);
    let what = format!("SOCKS connection from {peer} to {target}");
    let refuse = |reply: Reply, why: String| {
        // The code alone: `why` has the words (the server's reason, for a refusal).
        log::warn!("{what}: {why}; SOCKS reply {:#04x}", reply.code());
        let _ = socks::reply(&mut &local, reply);
        close_gently(&local);
    };
    let channel = match upstream.open() {
        Ok(channel) => channel,
        Err(why) => return refuse(Reply::GeneralFailure, why),
    };
    let session = channel.session();
    let asked = (&channel).write_all(&Request::Connect(target).encode());
    let _ = session.set_read_timeout(Some(request::HEADER_LIMIT));
    let answer = asked
        .map_err(request::BadHeader::Io)
        .and_then(|()| request::read_reply(&mut &channel));
    let _ = session.set_read_timeout(None);
    match answer {
        Ok(Ok(())) => {}
        Ok(Err(failed)) => {
            upstream
                .registry
                .metrics
                .failed(Failure::of_reply(failed.status));
            let why = format!("refused by the server {server}: {failed}");
            return refuse(failed.status, why);
        }
        Err(e) => {
            let _ = session.abort();
            upstream.registry.metrics.failed(Failure::SessionFailed);
            return refuse(
                Reply::GeneralFailure,
                format!("no answer from the server {server}: {e}"),
            );
        }
    }
    if let Err(e) = socks::reply(&mut &local, Reply::Succeeded) {
        log::info!("{what}: the program left: {e}");
        let _ = session.abort();
        return;
    }
    log::info!("{what}: relaying through {server}");
    tunnel::run(
        local,
        "local program",
        channel,
        &upstream.registry,
        &what,
        false,
    );
}

/// Closes a refused connection so that its reply arrives: a close with unread bytes (the
/// rest of a request rtcp did not parse) would send a reset, which may destroy the reply
/// before the program reads it. So: end of stream first, then what the program still sends
/// is read and dropped, for a bounded time.
fn close_gently(local: &TcpStream) {
    let _ = local.shutdown(Shutdown::Write);
    let deadline = Instant::now() + DRAIN_LIMIT;
    let mut sink = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if left.is_zero() || local.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match (&mut &*local).read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
