//! [`Error`]: why a session failed, carried inside the [`io::Error`]s that the std-like API
//! returns.

use std::fmt;
use std::io;
use std::time::Duration;

/// Why a session, or an attempt to open one, failed for good.
///
/// The std-like API returns [`io::Error`]; when the cause is one of these, the `io::Error`
/// carries it, and its [`kind`](io::Error::kind) is the one named on each variant (the
/// mapping lives in one place, `From<Error> for io::Error`). Retrieve it with
/// [`io::Error::get_ref`] and `downcast_ref`:
///
/// ```
/// use std::io;
/// use robust_tcp::Error;
///
/// fn explain(e: &io::Error) -> &'static str {
///     match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
///         Some(Error::UnknownSession) => "the server restarted: open a new session",
///         Some(Error::PeerReset) => "the peer aborted the session",
///         Some(_) => "the session ended",
///         None => "an I/O error (or a timeout)",
///     }
/// }
///
/// let e: io::Error = Error::UnknownSession.into();
/// assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
/// assert_eq!(explain(&e), "the server restarted: open a new session");
/// ```
///
/// A read or write timeout is not a failure of the session: it is a plain `io::Error` of
/// kind `WouldBlock`, as with `TcpStream`, and carries no `Error`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The server does not know the session: it restarted, or the session ended there.
    /// Kind `ConnectionReset`.
    UnknownSession,
    /// The peer reset (aborted) the session. Kind `ConnectionReset`.
    PeerReset,
    /// The session had no connection for `give_up_after` and gave up, or a session could
    /// not be opened within the time allowed. Kind `TimedOut`.
    GaveUp {
        /// The limit that passed.
        after: Duration,
    },
    /// The peer does not speak robust-tcp (or speaks another version of it).
    /// Kind `InvalidData`, or `TimedOut` when the peer accepted the connection and stayed
    /// silent, or `ConnectionAborted` when it hung up on every handshake.
    NotRobust {
        /// What gave it away.
        reason: NotRobustReason,
    },
    /// The server refused to open a session. Kind `ConnectionRefused`.
    Refused(Refusal),
    /// The peer broke the protocol: it claimed to have received bytes that were never
    /// sent, or the like. The session was reset. Kind `InvalidData`.
    ProtocolViolation(&'static str),
    /// Writing was shut down on this side. Kind `BrokenPipe`.
    WriteShutDown,
    /// The peer closed the session: it reads nothing more. Kind `BrokenPipe`.
    PeerClosed,
    /// This side aborted the session ([`RSocket::abort`](crate::RSocket::abort)).
    /// Kind `ConnectionAborted`.
    Aborted,
    /// The server dropped the session to make room for a new one: it was full, and this
    /// session's client had been gone (no connection, and nothing heard from it) for
    /// `waited`, longer than any other's. Kind `ConnectionAborted`. The client, if it comes back, is told
    /// the session is unknown.
    Evicted {
        /// How long the session had waited for its client.
        waited: Duration,
    },
    /// The library's engine thread stopped after an internal error (a bug in the library,
    /// logged at error level); its sessions cannot go on. New sessions start a new
    /// engine. Kind `Other`.
    EngineStopped,
}

/// How a peer showed that it does not speak robust-tcp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotRobustReason {
    /// It sent bytes that are not a robust-tcp handshake frame.
    ForeignBytes,
    /// It speaks another version of the protocol.
    Version(u8),
    /// It sent a malformed or unexpected robust-tcp frame.
    Malformed,
    /// It accepted the TCP connection but sent no answer within the handshake timeout.
    Silent,
    /// It accepted the TCP connection and hung up without answering, this many times in
    /// a row.
    HungUp(u32),
}

/// Why a server refused to open a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The server socket was closed: the server accepts no new sessions.
    ServerClosed,
    /// The server held its maximum number of sessions for as long as the client kept
    /// trying.
    TooManySessions,
}

impl Error {
    /// The `io::ErrorKind` an `io::Error` carrying this error has.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::ErrorKind;
    /// use robust_tcp::Error;
    ///
    /// assert_eq!(Error::PeerReset.kind(), ErrorKind::ConnectionReset);
    /// ```
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::UnknownSession | Error::PeerReset => io::ErrorKind::ConnectionReset,
            Error::GaveUp { .. } => io::ErrorKind::TimedOut,
            Error::NotRobust { reason } => match reason {
                NotRobustReason::Silent => io::ErrorKind::TimedOut,
                NotRobustReason::HungUp(_) => io::ErrorKind::ConnectionAborted,
                _ => io::ErrorKind::InvalidData,
            },
            Error::Refused(_) => io::ErrorKind::ConnectionRefused,
            Error::ProtocolViolation(_) => io::ErrorKind::InvalidData,
            Error::WriteShutDown | Error::PeerClosed => io::ErrorKind::BrokenPipe,
            Error::EngineStopped => io::ErrorKind::Other,
            Error::Aborted | Error::Evicted { .. } => io::ErrorKind::ConnectionAborted,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownSession => f.write_str(
                "the server does not know the session (it restarted, or the session ended)",
            ),
            Error::PeerReset => f.write_str("the peer reset the session"),
            Error::GaveUp { after } => write!(f, "gave up after {after:?} without a connection"),
            Error::NotRobust { reason } => {
                f.write_str("the peer is not a robust-tcp server: ")?;
                match reason {
                    NotRobustReason::ForeignBytes => f.write_str("it sent foreign bytes"),
                    NotRobustReason::Version(v) => {
                        write!(f, "it speaks robust-tcp version {v}, not this one")
                    }
                    NotRobustReason::Malformed => {
                        f.write_str("it sent a malformed or unexpected handshake")
                    }
                    NotRobustReason::Silent => f.write_str(
                        "it accepted the connection but sent no answer within the handshake \
                         timeout",
                    ),
                    NotRobustReason::HungUp(n) => {
                        write!(f, "it hung up during {n} handshakes in a row")
                    }
                }
            }
            Error::Refused(Refusal::ServerClosed) => {
                f.write_str("the server accepts no new sessions: its server socket was closed")
            }
            Error::Refused(Refusal::TooManySessions) => {
                f.write_str("the server holds too many sessions to open another in time")
            }
            Error::ProtocolViolation(what) => write!(f, "the peer broke the protocol: {what}"),
            Error::WriteShutDown => f.write_str("the session was shut down for writing"),
            Error::PeerClosed => f.write_str("the peer closed the session"),
            Error::Aborted => f.write_str("the session was aborted on this side"),
            Error::Evicted { waited } => write!(
                f,
                "the server dropped the session for a new one after its client was gone \
                 for {waited:?}"
            ),
            Error::EngineStopped => {
                f.write_str("the robust-tcp engine stopped after an internal error")
            }
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_survives_the_trip_through_io_error() {
        let cases = [
            Error::UnknownSession,
            Error::PeerReset,
            Error::GaveUp {
                after: Duration::from_secs(1),
            },
            Error::NotRobust {
                reason: NotRobustReason::Silent,
            },
            Error::Refused(Refusal::ServerClosed),
            Error::ProtocolViolation("count"),
            Error::WriteShutDown,
            Error::PeerClosed,
            Error::EngineStopped,
            Error::Aborted,
            Error::Evicted {
                waited: Duration::from_secs(4),
            },
        ];
        for e in cases {
            let io: io::Error = e.clone().into();
            assert_eq!(io.kind(), e.kind());
            let inner = io.get_ref().and_then(|i| i.downcast_ref::<Error>());
            assert_eq!(inner, Some(&e));
        }
    }
}
