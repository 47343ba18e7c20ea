//! TCP connections that survive network failures.
//!
//! `robust-tcp` is a session layer over TCP after Ekwall, Urbán and Schiper, "Robust TCP
//! connections for fault tolerant computing". [`RSocket`] and [`RServerSocket`] behave like
//! [`std::net::TcpStream`] and [`std::net::TcpListener`]: blocking, [`Read`](std::io::Read)
//! and [`Write`](std::io::Write), one thread per connection. When the TCP connection under
//! a session fails, the client reconnects, both sides tell each other how many bytes they
//! received, and each resends what the other lacks from a bounded send buffer: every byte
//! arrives exactly once and in order. The application sees a slower call, never an error,
//! until it closes the session.
//!
//! ```
//! use std::io::{Read, Write};
//! use robust_tcp::{RServerSocket, RSocket};
//!
//! # fn main() -> std::io::Result<()> {
//! let server = RServerSocket::bind("127.0.0.1:0")?;
//! let addr = server.local_addr()?;
//! let client = std::thread::spawn(move || -> std::io::Result<()> {
//!     let mut sock = RSocket::connect(addr)?;
//!     sock.write_all(b"hello")?;
//!     Ok(())
//! });
//! let (mut sock, _peer) = server.accept()?;
//! let mut text = String::new();
//! sock.read_to_string(&mut text)?;
//! assert_eq!(text, "hello");
//! client.join().unwrap()?;
//! # Ok(())
//! # }
//! ```
//!
//! `docs/PROTOCOL.md` describes the wire formats byte by byte and `docs/ARCHITECTURE.md`
//! where each behaviour lives. The protocol itself (the internal `core` module) does no I/O and
//! reads no clock; the one library thread and the sockets around it live in the engine.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

// One clear error instead of a screenful: everything below is Unix-only (see the README's
// "Platforms"), so it is left out elsewhere.
#[cfg(not(unix))]
compile_error!(
    "robust-tcp supports Unix only: Linux (tested) and macOS (compiles; not run). Windows \
     is not supported: the engine passes MSG_DONTWAIT and MSG_NOSIGNAL to sockets that \
     application threads use in blocking mode, and registers raw file descriptors with mio."
);

#[cfg(unix)]
mod config;
#[cfg(unix)]
mod core;
#[cfg(unix)]
mod engine;
#[cfg(unix)]
mod error;
#[cfg(unix)]
mod server_socket;
#[cfg(unix)]
mod socket;
#[cfg(unix)]
mod status;

#[cfg(unix)]
pub use config::Config;
#[cfg(unix)]
pub use error::{Error, NotRobustReason, Refusal};
#[cfg(unix)]
pub use server_socket::{Incoming, RServerSocket};
#[cfg(unix)]
pub use socket::RSocket;
#[cfg(unix)]
pub use status::{SessionState, Status};

/// The I/O-free protocol core, exposed for property tests, the simulation and fuzzing: wire
/// formats, keys, counters, the send buffer, the session state machine and the endpoint's
/// decisions. Not a stable API.
#[cfg(unix)]
#[doc(hidden)]
pub mod protocol {
    pub use crate::core::WireError;

    /// The session state machine.
    pub mod session {
        pub use crate::core::session::{
            Dropped, End, Limits, ReadGate, Role, Session, MAX_AWAITING_CONFIRMATION,
        };
    }

    /// The opening's ephemeral key agreement (Noise NN).
    pub mod agreement {
        pub use crate::core::agreement::{
            answer, client_public, client_start, finish, AnswerPart, ClientHalf, PrivateKey,
            PublicKey, ANSWER_PART_LEN, KEY_LEN,
        };
    }

    /// Session keys and tags.
    pub mod auth {
        pub use crate::core::auth::{
            ChallengeKey, ControlKeys, HandshakeKeys, MacKey, SessionKeys, CHALLENGE_KEY_LEN,
            NONCE_LEN, SECRET_LEN, TAG_LEN,
        };
    }

    /// The UDP control datagrams.
    pub mod control {
        pub use crate::core::control::{ControlKind, ControlMessage, Route, MAX_LEN, MIN_LEN};
    }

    /// The client's EARLY datagram.
    pub mod early {
        pub use crate::core::early::{encode, parse, LEN};
    }

    /// The handshake frames on a new TCP connection.
    pub mod handshake {
        pub use crate::core::handshake::{
            Accepted, Answer, Confirm, Control, FrameHeader, FrameKind, Hello, RefusalCode,
            HEADER_LEN,
        };
    }

    /// Byte counts and their 32-bit wire form.
    pub mod counter {
        pub use crate::core::counter::to_wire;
    }

    /// An endpoint's decisions before and between connections.
    pub mod endpoint {
        pub use crate::core::endpoint::client::{on_answer, Answered};
        pub use crate::core::endpoint::early::{ControlMemo, Unclaimed};
        pub use crate::core::endpoint::held::{HeldDatagram, Unrouted, HELD_KEPT, HELD_LIFE};
        pub use crate::core::endpoint::redial::{Failure, NextHello, OpeningKey, Plan, Redial};
        pub use crate::core::endpoint::server::{
            Action, Eviction, Host, Opening, Presence, ServerEndpoint, ServerLimits, Verdict,
        };
        pub use crate::core::endpoint::OPENING_WINDOW;
    }
}
