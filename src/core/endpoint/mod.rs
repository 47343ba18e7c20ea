//! Every decision of an endpoint before and between a session's connections, without I/O
//! or a clock (quinn-proto's `Endpoint` is the model). On a server
//! ([`server::ServerEndpoint`]): which HELLO opens a session, resumes one or is refused,
//! the caps on sessions and handshakes, whom a full server evicts, how long it remembers
//! the openings of sessions that ended (tombstones), and each handshake's phases, from its
//! first frame to the CONFIRM around the engine's barrier, with the CID of each new
//! session. On a client ([`redial::Redial`]): when to attempt a connection, what its HELLO
//! opens or resumes, and when an opening stops; and ([`client::on_answer`]) what the frame
//! answering a HELLO is worth. The engine owns the sockets and asks; time comes in as
//! `now`.

pub(crate) mod client;
pub(crate) mod early;
pub(crate) mod held;
pub(crate) mod redial;
pub(crate) mod server;
pub(crate) mod stranger;

use std::time::Duration;

/// The longest a client retries an unanswered opening, counted from its first HELLO,
/// whatever its `Config`: a protocol constant rather than a setting, so that a server's
/// tombstones ([`server::ServerEndpoint`]) outlive every retry of every client, whatever
/// either side's handshake timeout is.
pub const OPENING_WINDOW: Duration = Duration::from_secs(60);
