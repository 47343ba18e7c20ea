//! Sessions for the unit tests of this module's files.

use std::time::{Duration, Instant};

use super::{End, Limits, Role, Session};
use crate::core::auth::{ChallengeKey, SessionKeys, CHALLENGE_KEY_LEN, NONCE_LEN, SECRET_LEN};

/// A session of `role` named `cid` (0: a client whose opening is unanswered), connected
/// at `now`, with a 16 KiB buffer, giving up after 10 s disconnected and lingering 1 s.
pub(super) fn session(role: Role, cid: u32, dead_after: Option<Duration>, now: Instant) -> Session {
    let keys = SessionKeys::derive(&[1; SECRET_LEN], &[2; NONCE_LEN], role).control;
    let end = match role {
        Role::Client => End::Client((cid != 0).then(|| ([127, 0, 0, 1], 9000).into())),
        Role::Server => End::Server(ChallengeKey::new(&[3; CHALLENGE_KEY_LEN])),
    };
    let limits = Limits {
        send_buffer: 16 * 1024,
        send_buffer_max: 16 * 1024,
        ack_threshold: 8 * 1024,
        give_up_after: Some(Duration::from_secs(10)),
        dead_after,
        linger: Duration::from_secs(1),
    };
    Session::new(end, cid, 0, limits, keys, now)
}
