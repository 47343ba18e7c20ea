//! A client's probe, before its opening HELLO, of a server that may not speak robust-tcp
//! (`Config::fallback_to_plain_tcp`): a TCP connection of its own, closed for writing at
//! once without a byte, so that an ordinary server's application never reads a byte the
//! client's application did not write. What its answer means is the core's
//! ([`probed`]); this reads it, for at most `plain_wait`.

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::core::endpoint::stranger::{probed, Probed, GREETING};

/// Probes the server at `addr`: [`Probed::Robust`] if it greets the probe within `wait`,
/// else [`Probed::Plain`]. The TCP connect takes at most `connect_timeout`.
///
/// # Errors
///
/// The TCP connect's, as `TcpStream::connect` would return them.
pub(super) fn probe(
    addr: SocketAddr,
    connect_timeout: Duration,
    wait: Duration,
) -> io::Result<Probed> {
    let stream = TcpStream::connect_timeout(&addr, connect_timeout)?;
    let deadline = Instant::now() + wait;
    // A reset right after the connect is an ordinary server's doing as well.
    if stream.shutdown(Shutdown::Write).is_err() {
        return Ok(Probed::Plain);
    }
    let mut got = [0u8; GREETING.len()];
    let mut n = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Probed::Plain);
        }
        stream.set_read_timeout(Some(left))?;
        let into = got.get_mut(n..).unwrap_or_default();
        let ended = match (&stream).read(into) {
            Ok(0) => true,
            Ok(k) => {
                n += k;
                false
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Silence until `wait` passed (`WouldBlock` on Unix), or a reset: an ordinary
            // server, or none that greets.
            Err(_) => return Ok(Probed::Plain),
        };
        match probed(got.get(..n).unwrap_or_default(), ended) {
            Probed::Wait => continue,
            verdict => return Ok(verdict),
        }
    }
}
