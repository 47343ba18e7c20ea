//! Addresses from the command line: resolved once at start, so that a typo is one clear
//! line and exit 1 instead of a failure on every connection.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long one TCP connect to the `--forward` target may take: a target that drops SYNs
/// would otherwise hold the session for the kernel's two minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Resolves `addr` (`host:port` or `ip:port`) to at least one socket address.
pub fn resolve(addr: &str) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the name resolves to no address",
        ));
    }
    Ok(addrs)
}

/// Opens a TCP connection to the first of `addrs` that accepts one, as
/// `TcpStream::connect` does, but bounding each attempt.
pub fn connect(addrs: &[SocketAddr]) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
    for addr in addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}
