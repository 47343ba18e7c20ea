//! The protocol's decisions before and between a session's connections (issue 18, after
//! quinn-proto's `Endpoint`): on a client, when to attempt a connection, what its HELLO
//! opens or resumes, and when an opening stops; no socket, no clock, no engine token.

pub(crate) mod redial;

use std::time::Duration;

/// The longest a client retries an unanswered opening, counted from its first HELLO,
/// whatever its Config: a protocol constant, so the server's tombstones outlive every
/// retry.
pub(crate) const OPENING_WINDOW: Duration = Duration::from_secs(60);
