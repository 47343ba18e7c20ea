//! `rtcp server --allow`: the targets a client's SOCKS requests may reach. Without a
//! pattern the server refuses every one (it is never an open proxy).
//!
//! ```text
//! PATTERN = HOST ":" PORTS
//! HOST    = NAME            a host name, exactly (case ignored, a final dot too)
//!         | "*." NAME       any name under NAME (not NAME itself)
//!         | IPV4 | "[" IPV6 "]"                     one address
//!         | IPV4 "/" BITS | "[" IPV6 "]/" BITS      a network (CIDR)
//! PORTS   = PORT | PORT "-" PORT | "*"              one port, a range, any port
//! ```
//!
//! A request for an address is allowed if an address or network pattern holds it. A
//! request for a name is allowed if a name pattern matches it: the server then connects to
//! whatever the name resolves to. Otherwise, if address patterns are given, the name is
//! resolved and only the addresses they hold are tried. Name patterns never match a
//! request for an address (there is no reverse lookup).

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::str::FromStr;

use crate::socks::{Host, Reply, Target};

/// One `--allow` pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    host: HostPattern,
    ports: RangeInclusive<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    /// A name, lower case, without a final dot.
    Name(String),
    /// Names ending in this (".example.com"), lower case.
    Under(String),
    /// An address (all bits) or a network.
    Net { ip: IpAddr, bits: u8 },
}

impl FromStr for Pattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Pattern, String> {
        let (host, ports) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?}: no port (HOST:PORT, HOST:LOW-HIGH or HOST:*)"))?;
        let ports = parse_ports(ports).ok_or_else(|| format!("{text:?}: bad port {ports:?}"))?;
        let host = parse_host(host).ok_or_else(|| {
            format!("{text:?}: bad host {host:?} (a name, *.name, an address or a network/bits)")
        })?;
        Ok(Pattern { host, ports })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostPattern::Name(name) => write!(f, "{name}")?,
            HostPattern::Under(suffix) => write!(f, "*{suffix}")?,
            HostPattern::Net { ip, bits } => match ip {
                IpAddr::V4(v4) if *bits == 32 => write!(f, "{v4}")?,
                IpAddr::V4(v4) => write!(f, "{v4}/{bits}")?,
                IpAddr::V6(v6) if *bits == 128 => write!(f, "[{v6}]")?,
                IpAddr::V6(v6) => write!(f, "[{v6}]/{bits}")?,
            },
        }
        match (*self.ports.start(), *self.ports.end()) {
            (0, u16::MAX) => f.write_str(":*"),
            (low, high) if low == high => write!(f, ":{low}"),
            (low, high) => write!(f, ":{low}-{high}"),
        }
    }
}

fn parse_ports(text: &str) -> Option<RangeInclusive<u16>> {
    if text == "*" {
        return Some(0..=u16::MAX);
    }
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let (low, high): (u16, u16) = (low.parse().ok()?, high.parse().ok()?);
    (low <= high).then_some(low..=high)
}

fn parse_host(text: &str) -> Option<HostPattern> {
    let (address, bits) = match text.rsplit_once('/') {
        Some((address, bits)) => (address, Some(bits.parse::<u8>().ok()?)),
        None => (text, None),
    };
    let ip = match address.strip_prefix('[') {
        Some(rest) => Some(IpAddr::V6(rest.strip_suffix(']')?.parse().ok()?)),
        None => address.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    };
    if let Some(ip) = ip {
        let ip = ip.to_canonical();
        let all = if ip.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(all);
        return (bits <= all).then_some(HostPattern::Net { ip, bits });
    }
    if bits.is_some() {
        return None;
    }
    let (under, name) = match text.strip_prefix("*.") {
        Some(name) => (true, name),
        None => (false, text),
    };
    let name = normal_name(name)?;
    Some(if under {
        HostPattern::Under(format!(".{name}"))
    } else {
        HostPattern::Name(name)
    })
}

/// `name` in lower case without a final dot, if it is a host name.
fn normal_name(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    valid.then(|| name.to_ascii_lowercase())
}

impl HostPattern {
    fn matches_name(&self, name: &str) -> bool {
        match self {
            HostPattern::Name(pattern) => pattern == name,
            HostPattern::Under(suffix) => name.ends_with(suffix.as_str()),
            HostPattern::Net { .. } => false,
        }
    }

    fn holds(&self, ip: IpAddr) -> bool {
        let HostPattern::Net { ip: net, bits } = self else {
            return false;
        };
        match (net, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix(
                u128::from(net.to_bits()),
                u128::from(ip.to_bits()),
                *bits,
                32,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix(net.to_bits(), ip.to_bits(), *bits, 128),
            _ => false,
        }
    }
}

/// Whether `a` and `b`, `width` bits wide, agree on their first `bits` bits.
fn prefix(a: u128, b: u128, bits: u8, width: u32) -> bool {
    let ignored = width - u32::from(bits).min(width);
    a.checked_shr(ignored).unwrap_or(0) == b.checked_shr(ignored).unwrap_or(0)
}

/// Why a request is refused: the reply's status, and its reason (for the client and the
/// log).
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    /// What the client's program is told.
    pub reply: Reply,
    /// Why, naming the target.
    pub why: String,
}

/// The `--allow` list.
#[derive(Debug, Default)]
pub struct Allow {
    patterns: Vec<Pattern>,
}

impl Allow {
    /// The list of `patterns`; empty: every request is refused.
    pub fn new(patterns: Vec<Pattern>) -> Allow {
        Allow { patterns }
    }

    /// The addresses `target` may be reached at, resolving a name with `resolve` when
    /// a pattern needs it; or why it may not.
    pub fn addresses(
        &self,
        target: &Target,
        resolve: impl FnOnce(&str, u16) -> io::Result<Vec<SocketAddr>>,
    ) -> Result<Vec<SocketAddr>, Refusal> {
        let port = target.port;
        let mut fitting = self.patterns.iter().filter(|p| p.ports.contains(&port));
        let not_allowed = || Refusal {
            reply: Reply::NotAllowed,
            why: format!("{target}: not allowed by the server's --allow"),
        };
        match &target.host {
            Host::Ip(ip) => {
                if fitting.any(|p| p.host.holds(*ip)) {
                    Ok(vec![SocketAddr::new(*ip, port)])
                } else {
                    Err(not_allowed())
                }
            }
            Host::Name(name) => {
                let Some(name) = normal_name(name) else {
                    return Err(not_allowed());
                };
                let fitting: Vec<&Pattern> = fitting.collect();
                let by_name = fitting.iter().any(|p| p.host.matches_name(&name));
                let by_net = |a: &SocketAddr| fitting.iter().any(|p| p.host.holds(a.ip()));
                if !by_name
                    && !fitting
                        .iter()
                        .any(|p| matches!(p.host, HostPattern::Net { .. }))
                {
                    return Err(not_allowed());
                }
                let resolved = resolve(&name, port)
                    .ok()
                    .filter(|addrs| !addrs.is_empty())
                    .ok_or_else(|| Refusal {
                        reply: Reply::HostUnreachable,
                        why: format!("{target}: the name does not resolve"),
                    })?;
                let allowed: Vec<SocketAddr> = if by_name {
                    resolved
                } else {
                    resolved.into_iter().filter(by_net).collect()
                };
                if allowed.is_empty() {
                    Err(not_allowed())
                } else {
                    Ok(allowed)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(patterns: &[&str]) -> Allow {
        Allow::new(patterns.iter().map(|p| p.parse().expect(p)).collect())
    }

    fn target(host: &str, port: u16) -> Target {
        let host = match host.parse() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(host.into()),
        };
        Target { host, port }
    }

    /// A resolver that knows two names.
    fn dns(name: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let ips: &[&str] = match name {
            "db.internal" => &["10.1.2.3", "192.0.2.9"],
            "web.example.com" => &["203.0.113.5"],
            _ => return Err(io::ErrorKind::NotFound.into()),
        };
        Ok(ips
            .iter()
            .map(|ip| SocketAddr::new(ip.parse().unwrap(), port))
            .collect())
    }

    fn verdict(allow: &Allow, host: &str, port: u16) -> Result<Vec<String>, Reply> {
        allow
            .addresses(&target(host, port), dns)
            .map(|addrs| addrs.iter().map(ToString::to_string).collect())
            .map_err(|refusal| refusal.reply)
    }

    #[test]
    fn the_grammar() {
        for good in [
            "localhost:80",
            "Example.COM.:443",
            "*.example.com:*",
            "10.0.0.0/8:22",
            "127.0.0.1:1000-2000",
            "[::1]:22",
            "[fd00::]/8:5432",
            "0.0.0.0/0:443",
        ] {
            let pattern: Pattern = good.parse().unwrap_or_else(|e| panic!("{e}"));
            // What it prints parses back to the same pattern.
            assert_eq!(pattern.to_string().parse::<Pattern>(), Ok(pattern.clone()));
        }
        assert_eq!(
            "Example.COM.:443".parse::<Pattern>().unwrap().to_string(),
            "example.com:443"
        );
        for bad in [
            "",
            "host",
            "host:",
            ":80",
            "*:80",
            "*",
            "10.0.0.0/33:80",
            "[::1]/129:80",
            "::1:80",
            "host/8:80",
            "host:2000-1000",
            "host:70000",
            "ho st:80",
            "[::1:80",
            "1.2.3.4/x:80",
        ] {
            assert!(bad.parse::<Pattern>().is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn nothing_is_allowed_without_patterns() {
        let none = Allow::default();
        assert_eq!(verdict(&none, "127.0.0.1", 80), Err(Reply::NotAllowed));
        assert_eq!(verdict(&none, "db.internal", 80), Err(Reply::NotAllowed));
    }

    #[test]
    fn addresses_and_networks() {
        let list = allow(&["127.0.0.1:8000-8080", "10.0.0.0/8:*", "[fd00::]/8:22"]);
        assert_eq!(
            verdict(&list, "127.0.0.1", 8080),
            Ok(vec!["127.0.0.1:8080".into()])
        );
        assert_eq!(verdict(&list, "127.0.0.1", 8081), Err(Reply::NotAllowed));
        assert_eq!(verdict(&list, "127.0.0.2", 8000), Err(Reply::NotAllowed));
        assert_eq!(
            verdict(&list, "10.255.0.1", 1),
            Ok(vec!["10.255.0.1:1".into()])
        );
        assert_eq!(verdict(&list, "11.0.0.1", 1), Err(Reply::NotAllowed));
        assert_eq!(
            verdict(&list, "fdab::1", 22),
            Ok(vec!["[fdab::1]:22".into()])
        );
        assert_eq!(verdict(&list, "fe00::1", 22), Err(Reply::NotAllowed));
        // A name is resolved and only the addresses a network holds are kept.
        assert_eq!(
            verdict(&list, "db.internal", 5),
            Ok(vec!["10.1.2.3:5".into()])
        );
        assert_eq!(verdict(&list, "web.example.com", 5), Err(Reply::NotAllowed));
        assert_eq!(verdict(&list, "nowhere", 5), Err(Reply::HostUnreachable));
    }

    #[test]
    fn names_and_domains() {
        let list = allow(&["db.internal:5432", "*.example.com:443"]);
        assert_eq!(
            verdict(&list, "DB.internal.", 5432),
            Ok(vec!["10.1.2.3:5432".into(), "192.0.2.9:5432".into()])
        );
        assert_eq!(verdict(&list, "db.internal", 5433), Err(Reply::NotAllowed));
        assert_eq!(
            verdict(&list, "web.example.com", 443),
            Ok(vec!["203.0.113.5:443".into()])
        );
        assert_eq!(verdict(&list, "example.com", 443), Err(Reply::NotAllowed));
        assert_eq!(
            verdict(&list, "a.b.example.com", 443),
            Err(Reply::HostUnreachable)
        );
        assert_eq!(
            verdict(&list, "badexample.com", 443),
            Err(Reply::NotAllowed)
        );
        // No reverse lookup: the address a name resolves to is not allowed by the name.
        assert_eq!(verdict(&list, "10.1.2.3", 5432), Err(Reply::NotAllowed));
    }
}
