//! SOCKS5 (RFC 1928) as `rtcp client --socks` speaks it with local programs: the "no
//! authentication" method only, the CONNECT command only, IPv4, IPv6 and domain names.
//!
//! Only the parsing and the replies live here, over any `Read + Write`, so that the unit
//! tests can feed them arbitrary bytes; `proxy.rs` carries the requests over sessions.
//! Every length comes from a single byte, so a request is at most 262 bytes whatever a
//! program sends.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The protocol version byte of every SOCKS5 message.
const VERSION: u8 = 5;
/// The "no authentication required" method.
const NO_AUTH: u8 = 0x00;
/// The method reply that says none of the offered methods is acceptable.
const NO_ACCEPTABLE_METHOD: u8 = 0xFF;
/// The CONNECT command; BIND (2) and UDP ASSOCIATE (3) are not supported.
const CONNECT: u8 = 0x01;
/// Address types, as SOCKS5 numbers them (rtcp's request header uses the same).
const ATYP_IPV4: u8 = 1;
const ATYP_NAME: u8 = 3;
const ATYP_IPV6: u8 = 4;

/// A SOCKS5 reply code (RFC 1928 section 6). rtcp's server sends the same codes back to
/// the client for a CONNECT (see `request.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// 0x00: connected.
    Succeeded,
    /// 0x01: anything else (the rtcp server unreachable, a malformed request).
    GeneralFailure,
    /// 0x02: the target is not in the server's `--allow` list.
    NotAllowed,
    /// 0x03: the server has no route to the target's network.
    NetworkUnreachable,
    /// 0x04: the target's name does not resolve, or its host does not answer.
    HostUnreachable,
    /// 0x05: the target refused the connection.
    ConnectionRefused,
    /// 0x07: a command other than CONNECT.
    CommandNotSupported,
    /// 0x08: an address type other than IPv4, IPv6 and domain name.
    AddressTypeNotSupported,
}

impl Reply {
    /// The code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Reply::Succeeded => 0x00,
            Reply::GeneralFailure => 0x01,
            Reply::NotAllowed => 0x02,
            Reply::NetworkUnreachable => 0x03,
            Reply::HostUnreachable => 0x04,
            Reply::ConnectionRefused => 0x05,
            Reply::CommandNotSupported => 0x07,
            Reply::AddressTypeNotSupported => 0x08,
        }
    }

    /// The reply with `code`, if rtcp sends it.
    pub fn from_code(code: u8) -> Option<Reply> {
        [
            Reply::Succeeded,
            Reply::GeneralFailure,
            Reply::NotAllowed,
            Reply::NetworkUnreachable,
            Reply::HostUnreachable,
            Reply::ConnectionRefused,
            Reply::CommandNotSupported,
            Reply::AddressTypeNotSupported,
        ]
        .into_iter()
        .find(|reply| reply.code() == code)
    }

    /// The reply for a failed connect to a target: always one of the target's codes (any
    /// other failure, a local address not available say, as the host unreachable), so that
    /// a general failure is only ever the server's own refusal (`metrics::Failure::of_reply`).
    pub fn of_error(e: &io::Error) -> Reply {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Reply::ConnectionRefused,
            io::ErrorKind::NetworkUnreachable | io::ErrorKind::NetworkDown => {
                Reply::NetworkUnreachable
            }
            _ => Reply::HostUnreachable,
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            Reply::Succeeded => "succeeded",
            Reply::GeneralFailure => "general failure",
            Reply::NotAllowed => "not allowed by the server's --allow",
            Reply::NetworkUnreachable => "network unreachable",
            Reply::HostUnreachable => "host unreachable",
            Reply::ConnectionRefused => "connection refused",
            Reply::CommandNotSupported => "command not supported",
            Reply::AddressTypeNotSupported => "address type not supported",
        };
        write!(f, "{what} (SOCKS reply {:#04x})", self.code())
    }
}

/// A host as a request names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// An IP address (IPv4-mapped IPv6 addresses are kept as IPv4).
    Ip(IpAddr),
    /// A domain name, resolved by the rtcp server: 1 to 255 bytes of letters, digits,
    /// `-`, `_` and `.`.
    Name(String),
}

/// Where a CONNECT goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The host.
    pub host: Host,
    /// The TCP port.
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}:{}", self.port),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

/// Why an address could not be read.
#[derive(Debug)]
pub enum BadAddress {
    /// The stream failed or ended (or its read timeout passed).
    Io(io::Error),
    /// An address type other than 1, 3 and 4.
    Type(u8),
    /// A domain name that is empty or holds other bytes than a host name may.
    Name,
}

impl From<io::Error> for BadAddress {
    fn from(e: io::Error) -> Self {
        BadAddress::Io(e)
    }
}

impl fmt::Display for BadAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadAddress::Io(e) => write!(f, "{e}"),
            BadAddress::Type(atyp) => write!(f, "address type {atyp} is not supported"),
            BadAddress::Name => f.write_str("the domain name is not a host name"),
        }
    }
}

impl Target {
    /// Reads an address type, the address and the port, as SOCKS5 encodes them.
    pub fn read_from(r: &mut impl Read) -> Result<Target, BadAddress> {
        let host = match byte(r)? {
            ATYP_IPV4 => Host::Ip(IpAddr::V4(Ipv4Addr::from(array::<4>(r)?))),
            ATYP_IPV6 => Host::Ip(IpAddr::V6(Ipv6Addr::from(array::<16>(r)?)).to_canonical()),
            ATYP_NAME => {
                let mut name = vec![0u8; usize::from(byte(r)?)];
                r.read_exact(&mut name)?;
                host_of_name(name)?
            }
            other => return Err(BadAddress::Type(other)),
        };
        let port = u16::from_be_bytes(array::<2>(r)?);
        Ok(Target { host, port })
    }

    /// Appends the address type, the address and the port, as SOCKS5 encodes them.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match &self.host {
            Host::Ip(IpAddr::V4(ip)) => {
                out.push(ATYP_IPV4);
                out.extend_from_slice(&ip.octets());
            }
            Host::Ip(IpAddr::V6(ip)) => {
                out.push(ATYP_IPV6);
                out.extend_from_slice(&ip.octets());
            }
            Host::Name(name) => {
                out.push(ATYP_NAME);
                // A `Name` holds at most 255 bytes (`host_of_name`).
                out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
                out.extend_from_slice(name.as_bytes());
            }
        }
        out.extend_from_slice(&self.port.to_be_bytes());
    }
}

/// The host a domain name field names: an IP address written as text becomes that address
/// (curl's `--socks5-hostname` sends literals as names), anything else must be a host name.
fn host_of_name(name: Vec<u8>) -> Result<Host, BadAddress> {
    let valid = !name.is_empty()
        && name.len() <= 255
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    let name = String::from_utf8(name).map_err(|_| BadAddress::Name)?;
    if !valid {
        return Err(BadAddress::Name);
    }
    let literal = name.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return Ok(Host::Ip(ip.to_canonical()));
    }
    // A colon belongs to IPv6 literals only.
    if name.contains(':') {
        return Err(BadAddress::Name);
    }
    Ok(Host::Name(name))
}

/// One byte.
pub fn byte(r: &mut impl Read) -> io::Result<u8> {
    Ok(array::<1>(r)?[0])
}

/// `N` bytes.
pub fn array<const N: usize>(r: &mut impl Read) -> io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    r.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// Why a local program's SOCKS request is not carried, after what it was told.
#[derive(Debug)]
pub struct Refused {
    /// The reply sent, if any (a greeting in another protocol gets none).
    pub reply: Option<Reply>,
    /// Why, for the log.
    pub why: String,
}

/// Reads a program's greeting and answers it, then reads its request: the target of a
/// CONNECT, or the refusal already sent (the caller then closes the connection). The reply
/// to the CONNECT itself is the caller's ([`reply`]), once it knows how the connect went.
pub fn accept(stream: &mut (impl Read + Write)) -> Result<Target, Refused> {
    let unanswered = |why: String| Refused { reply: None, why };
    let io = |e: io::Error| unanswered(format!("the greeting failed: {e}"));
    let version = byte(stream).map_err(io)?;
    if version != VERSION {
        return Err(unanswered(format!(
            "not a SOCKS5 greeting (version byte {version})"
        )));
    }
    let mut methods = vec![0u8; usize::from(byte(stream).map_err(io)?)];
    stream.read_exact(&mut methods).map_err(io)?;
    if !methods.contains(&NO_AUTH) {
        let _ = stream.write_all(&[VERSION, NO_ACCEPTABLE_METHOD]);
        return Err(unanswered(format!(
            "the program offers no method rtcp supports (only \"no authentication\"): {methods:?}"
        )));
    }
    stream.write_all(&[VERSION, NO_AUTH]).map_err(io)?;

    let [version, command, _reserved] =
        array::<3>(stream).map_err(|e| unanswered(format!("the request failed: {e}")))?;
    let refuse = |stream: &mut dyn Write, code: Reply, why: String| {
        let _ = reply(stream, code);
        Refused {
            reply: Some(code),
            why,
        }
    };
    if version != VERSION {
        let why = format!("request version {version}, not 5");
        return Err(refuse(stream, Reply::GeneralFailure, why));
    }
    if command != CONNECT {
        let why = format!("command {command} (only CONNECT, 1, is supported)");
        return Err(refuse(stream, Reply::CommandNotSupported, why));
    }
    match Target::read_from(stream) {
        Ok(target) => Ok(target),
        Err(BadAddress::Io(e)) => Err(unanswered(format!("the request failed: {e}"))),
        Err(bad @ BadAddress::Type(_)) => Err(refuse(
            stream,
            Reply::AddressTypeNotSupported,
            bad.to_string(),
        )),
        Err(bad @ BadAddress::Name) => Err(refuse(stream, Reply::HostUnreachable, bad.to_string())),
    }
}

/// Sends the reply to a CONNECT. The bound address is left unspecified (0.0.0.0:0): it is
/// the rtcp server's, which the program could not reach anyway.
pub fn reply(stream: &mut dyn Write, code: Reply) -> io::Result<()> {
    stream.write_all(&[VERSION, code.code(), 0, ATYP_IPV4, 0, 0, 0, 0, 0, 0])
}

#[cfg(test)]
mod tests;
