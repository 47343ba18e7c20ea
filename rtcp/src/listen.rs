//! `--listen` and `--socks` addresses: `host:port`, or a bare port (`7000` or `:7000`) for
//! every interface, as socat and ssh take it.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::addr;

/// The addresses to bind for `spec`, in the order to try them: a bare port means every
/// interface, IPv6 and IPv4 (an IPv6 socket on `[::]` takes both where the system allows,
/// and `0.0.0.0` is the fallback where IPv6 is off); anything else is resolved.
pub fn addrs(spec: &str) -> io::Result<Vec<SocketAddr>> {
    match bare_port(spec) {
        Some(port) => Ok(vec![
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        ]),
        None => addr::resolve(spec),
    }
}

/// The port of `7000` or `:7000`; `None` for anything else.
fn bare_port(spec: &str) -> Option<u16> {
    let digits = spec.strip_prefix(':').unwrap_or(spec);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_means_every_interface() {
        let every = vec![
            "[::]:7000".parse::<SocketAddr>().unwrap(),
            "0.0.0.0:7000".parse().unwrap(),
        ];
        assert_eq!(addrs("7000").unwrap(), every);
        assert_eq!(addrs(":7000").unwrap(), every);
        assert_eq!(addrs("0").unwrap()[1], "0.0.0.0:0".parse().unwrap());
    }

    #[test]
    fn anything_else_is_an_address() {
        assert_eq!(
            addrs("127.0.0.1:7000").unwrap(),
            vec!["127.0.0.1:7000".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            addrs("[::1]:7000").unwrap(),
            vec!["[::1]:7000".parse::<SocketAddr>().unwrap()]
        );
        for bad in ["", ":", "70000", ":+7", "-1", "host", "7000:"] {
            assert!(addrs(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
