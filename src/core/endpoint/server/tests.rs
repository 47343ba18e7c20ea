//! The listener's decisions, case by case.

use super::*;
use crate::core::auth::{ChallengeKey, CHALLENGE_KEY_LEN, NONCE_LEN, SECRET_LEN};
use crate::core::session::{End, Limits};
use std::net::Ipv4Addr;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

fn limits(handshake_timeout: Duration) -> ServerLimits {
    ServerLimits {
        max_sessions: 4,
        max_sessions_per_address: 2,
        max_handshakes: 3,
        handshake_timeout,
        evictable_after: Duration::from_secs(3),
        accept_plain: false,
        plain_wait: Duration::from_millis(300),
        instance_id: None,
        announce: None,
    }
}

/// Attempt `attempt` of the opening of the session with opening nonce `[n; _]`.
fn opening(n: u8, attempt: u64) -> Hello {
    let key = &keys_of(n).handshake.client;
    Hello::opening(
        [attempt as u8; NONCE_LEN],
        attempt,
        [n; NONCE_LEN],
        [n; SECRET_LEN],
        key,
    )
}

/// Attempt `attempt` of the key-agreement opening of the session with opening nonce
/// `[n; _]`, its client's ephemeral key `[n; _]`.
fn agreeing(n: u8, attempt: u64) -> Hello {
    let public = agreement::client_public(&[n; agreement::KEY_LEN], &[n; NONCE_LEN]).unwrap();
    Hello::agreeing([attempt as u8; NONCE_LEN], attempt, [n; NONCE_LEN], public)
}

/// The listener's ephemeral key in these tests.
const EPHEMERAL: PrivateKey = [0x5e; agreement::KEY_LEN];

type Endpoint = ServerEndpoint<u32, u32>;

/// Asks about `hello` with sessions that verify and are all connected.
fn ask(ep: &mut Endpoint, hello: &Hello, from: IpAddr, now: Instant) -> Verdict<u32> {
    ask_as(ep, hello, from, now, true, true)
}

/// Asks about `hello` with connected sessions, new ones `welcome` or not, whose
/// resumption HELLOs `verify` or not.
fn ask_as(
    ep: &mut Endpoint,
    hello: &Hello,
    from: IpAddr,
    now: Instant,
    welcome: bool,
    verify: bool,
) -> Verdict<u32> {
    let presence = |_| Presence::default();
    ep.on_hello(
        hello,
        from,
        welcome,
        now,
        Some(&EPHEMERAL),
        |_, _| verify,
        presence,
    )
}

/// Asks about `hello` from `from`, new sessions welcome, resumptions that verify, the
/// sessions as `presence` says.
fn ask_with(
    ep: &mut Endpoint,
    hello: &Hello,
    from: IpAddr,
    now: Instant,
    presence: impl Fn(u32) -> Presence,
) -> Verdict<u32> {
    ep.on_hello(
        hello,
        from,
        true,
        now,
        Some(&EPHEMERAL),
        |_, _| true,
        presence,
    )
}

/// Opens session `n` (CID and id `n`) from `from`.
fn open(ep: &mut Endpoint, n: u8, from: IpAddr, now: Instant) {
    open_with(ep, &opening(n, 0), n, from, now);
}

/// Opens session `n` (CID and id `n`) from `from` with `hello`; returns its keys.
fn open_with(ep: &mut Endpoint, hello: &Hello, n: u8, from: IpAddr, now: Instant) -> SessionKeys {
    match ask(ep, hello, from, now) {
        Verdict::Open {
            evict: None,
            keys,
            agreement,
        } => {
            ep.opened(n.into(), n.into(), from, hello, agreement);
            *keys
        }
        other => panic!("session {n} not opened: {other:?}"),
    }
}

fn refusal(verdict: Verdict<u32>) -> Option<RefusalCode> {
    match verdict {
        Verdict::Refuse(code) => Some(code),
        _ => None,
    }
}

#[test]
fn a_retried_opening_resumes_its_session_and_a_replayed_one_is_refused() {
    let now = Instant::now();
    let mut ep = Endpoint::new(limits(Duration::from_secs(5)));
    open(&mut ep, 1, CLIENT, now);
    assert!(matches!(
        ask(&mut ep, &opening(1, 1), CLIENT, now),
        Verdict::Resume(1)
    ));
    assert_eq!(
        refusal(ask(&mut ep, &opening(1, 1), CLIENT, now)),
        Some(RefusalCode::UnknownSession)
    );
    assert!(ep.confirmed(1, 1));
    assert!(!ep.confirmed(1, 0));
    assert_eq!(ep.session_count(), 1);
}

/// Opens session 1 (CID and id 1) with a key-agreement opening: its keys, and the
/// listener's part of the agreement.
fn open_agreeing(ep: &mut Endpoint, now: Instant) -> (SessionKeys, AnswerPart) {
    let hello = agreeing(1, 0);
    match ask(ep, &hello, CLIENT, now) {
        Verdict::Open {
            evict: None,
            keys,
            agreement: Some(part),
        } => {
            ep.opened(1, 1, CLIENT, &hello, Some(part));
            (*keys, part)
        }
        other => panic!("not opened with an agreement: {other:?}"),
    }
}

#[test]
fn a_key_agreement_opening_agrees_with_its_client() {
    let now = Instant::now();
    let mut ep = Endpoint::new(limits(Duration::from_secs(5)));
    let (keys, part) = open_agreeing(&mut ep, now);
    let client = agreement::finish(&[1; agreement::KEY_LEN], &[1; NONCE_LEN], &part).unwrap();
    let tag = client.control.send.tag(&[b"ack"]);
    assert!(keys.control.recv.verify(&[b"ack"], &tag));
    // A damaged ephemeral key is no key, a tag is not what this HELLO carries: refused,
    // and nothing is opened.
    let hello = agreeing(2, 0);
    let mut broken = hello;
    broken.opening_key = [0; SECRET_LEN];
    assert_eq!(
        refusal(ask(&mut ep, &broken, CLIENT, now)),
        Some(RefusalCode::BadRequest)
    );
    let mut tagged = hello;
    tagged.tag[0] = 1;
    assert_eq!(
        refusal(ask(&mut ep, &tagged, CLIENT, now)),
        Some(RefusalCode::BadRequest)
    );
    assert_eq!(ep.session_count(), 1);
}

/// The retry rule: a retried key-agreement opening, which anyone who saw the opening can
/// send with any attempt number, gets the CID and the same agreement until the client
/// proved that it holds the keys, then a refusal; it changes nothing either way.
#[test]
fn a_retried_key_agreement_opening_learns_its_session_and_changes_nothing() {
    let now = Instant::now();
    let mut ep = Endpoint::new(limits(Duration::from_secs(5)));
    let (_, part) = open_agreeing(&mut ep, now);
    let unproven = |_| Presence::default();
    let proven = |_| Presence {
        client_knows_cid: true,
        ..Presence::default()
    };
    for attempt in [0, 1, 7, u64::MAX] {
        let retry = agreeing(1, attempt);
        let verdict = ask_with(&mut ep, &retry, OTHER, now, unproven);
        match verdict {
            Verdict::Known {
                session: 1,
                cid: 1,
                agreement,
            } => assert_eq!(agreement, part, "attempt {attempt}"),
            other => panic!("attempt {attempt}: {other:?}"),
        }
    }
    // No attempt number was used up: the client's own reconnection, by CID, resumes.
    assert!(ep.confirmed(1, 0));
    let by_cid = Hello::resume(1, [3; NONCE_LEN], 1, 0, &keys_of(2).handshake.client);
    assert!(matches!(
        ask(&mut ep, &by_cid, CLIENT, now),
        Verdict::Resume(1)
    ));
    // Another client key with the same opening nonce is not this client.
    let mut other_key = agreeing(1, 2);
    other_key.opening_key = agreeing(2, 2).opening_key;
    let verdict = ask_with(&mut ep, &other_key, CLIENT, now, unproven);
    assert_eq!(refusal(verdict), Some(RefusalCode::UnknownSession));
    // Once the client proved that it holds the keys, a retry is refused.
    let verdict = ask_with(&mut ep, &agreeing(1, 3), CLIENT, now, proven);
    assert_eq!(refusal(verdict), Some(RefusalCode::UnknownSession));
    assert_eq!(ep.session_count(), 1);
}

/// The keys of the lightweight session with secret and opening nonce `[n; _]`.
fn keys_of(n: u8) -> SessionKeys {
    SessionKeys::derive(&[n; SECRET_LEN], &[n; NONCE_LEN], Role::Client)
}

#[test]
fn a_hello_that_does_not_verify_changes_nothing() {
    let now = Instant::now();
    let mut ep = Endpoint::new(limits(Duration::from_secs(5)));
    open(&mut ep, 1, CLIENT, now);
    let mut forged = opening(1, 7);
    forged.tag[0] ^= 1;
    assert_eq!(
        refusal(ask(&mut ep, &forged, CLIENT, now)),
        Some(RefusalCode::BadRequest)
    );
    let resume = Hello::resume(1, [3; NONCE_LEN], 2, 0, &keys_of(0).handshake.client);
    let verdict = ask_as(&mut ep, &resume, CLIENT, now, true, false);
    assert_eq!(refusal(verdict), Some(RefusalCode::UnknownSession));
    // The attempt number was not used up by the HELLOs that failed.
    assert!(matches!(
        ask(&mut ep, &opening(1, 2), CLIENT, now),
        Verdict::Resume(1)
    ));
}

/// Defect 1 of issue 18: a server with a short handshake timeout kept tombstones for
/// 12 of its own handshake timeouts, while clients retry for 10 of theirs; a retry
/// arriving later opened a second session with the same first bytes.
#[test]
fn a_tombstone_outlives_every_retry_of_the_opening_whatever_either_timeout() {
    for server_timeout in [1, 5, 30].map(Duration::from_secs) {
        let opened = Instant::now();
        let mut ep = Endpoint::new(limits(server_timeout));
        open(&mut ep, 1, CLIENT, opened);
        // The session ends at once, before its client knew the CID.
        ep.ended(1, false, opened);
        // The client's last retry goes out at the end of its window, counted from
        // its first HELLO (before `opened`), and waits a handshake timeout to be read.
        let last = opened + OPENING_WINDOW + server_timeout - Duration::from_millis(1);
        assert_eq!(
            refusal(ask(&mut ep, &opening(1, 9), CLIENT, last)),
            Some(RefusalCode::UnknownSession),
            "server handshake timeout {server_timeout:?}"
        );
        // Past that, the nonce may be forgotten.
        let later = opened + OPENING_WINDOW + server_timeout;
        assert!(matches!(
            ask(&mut ep, &opening(1, 9), CLIENT, later),
            Verdict::Open { .. }
        ));
    }
}

#[test]
fn a_session_whose_client_knew_it_leaves_no_tombstone() {
    let now = Instant::now();
    let mut ep = Endpoint::new(limits(Duration::from_secs(5)));
    open(&mut ep, 1, CLIENT, now);
    ep.ended(1, true, now);
    assert!(matches!(
        ask(&mut ep, &opening(1, 1), CLIENT, now),
        Verdict::Open { .. }
    ));
    assert_eq!(ep.session_count(), 0);
}

/// Found by the simulation (`SIM_SEED=728` at 4d81fdc): the table of tombstones kept only
/// the newest `max_sessions`, so sessions of other clients that ended meanwhile pushed
/// out a tombstone whose client was still retrying its opening, which then opened a
/// second session with the same first bytes. Admission bounds the table instead.
#[test]
fn a_tombstone_is_never_forgotten_early_however_many_sessions_end() {
    let now = Instant::now();
    let mut ep = Endpoint::new(limits(Duration::from_secs(5)));
    let max = ep.limits.max_sessions;
    let mut ended = Vec::new();
    for n in 1..=255u8 {
        let from = IpAddr::V4(Ipv4Addr::new(10, 1, 0, n));
        let hello = opening(n, 0);
        match ask(&mut ep, &hello, from, now) {
            Verdict::Open {
                evict: None,
                agreement,
                ..
            } => ep.opened(n.into(), n.into(), from, &hello, agreement),
            Verdict::Refuse(RefusalCode::TooManySessions) => break,
            other => panic!("opening {n}: {other:?}"),
        }
        ep.ended(n.into(), false, now);
        ended.push((n, from));
    }
    assert_eq!(
        ep.tombstone_count(),
        2 * max,
        "sessions and tombstones: twice the cap"
    );
    let later = now + OPENING_WINDOW;
    for &(n, from) in &ended {
        assert_eq!(
            refusal(ask(&mut ep, &opening(n, 9), from, later)),
            Some(RefusalCode::UnknownSession),
            "the opening of session {n}, retried, would open it again"
        );
    }
    // Once they expire, new sessions are welcome again.
    let expired = now + OPENING_WINDOW + ep.limits.handshake_timeout;
    assert!(matches!(
        ask(&mut ep, &opening(250, 0), OTHER, expired),
        Verdict::Open { .. }
    ));
    assert_eq!(ep.tombstones.until.len(), 0);
}

#[test]
fn a_client_that_fills_its_share_with_tombstones_waits_alone() {
    let now = Instant::now();
    let mut ep = Endpoint::new(limits(Duration::from_secs(5)));
    let share = ep.limits.max_sessions_per_address;
    for n in 1..=(2 * share) as u8 {
        open(&mut ep, n, CLIENT, now);
        ep.ended(n.into(), false, now);
    }
    assert_eq!(
        refusal(ask(&mut ep, &opening(100, 0), CLIENT, now)),
        Some(RefusalCode::TooManySessions)
    );
    open(&mut ep, 101, OTHER, now);
}

#[test]
fn caps_refuse_in_all_and_per_address_and_free_on_end() {
    let now = Instant::now();
    let mut ep = Endpoint::new(limits(Duration::from_secs(5)));
    open(&mut ep, 1, CLIENT, now);
    open(&mut ep, 2, CLIENT, now);
    assert_eq!(
        refusal(ask(&mut ep, &opening(3, 0), CLIENT, now)),
        Some(RefusalCode::TooManySessions)
    );
    open(&mut ep, 3, OTHER, now);
    open(&mut ep, 4, OTHER, now);
    let third = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3));
    assert_eq!(
        refusal(ask(&mut ep, &opening(5, 0), third, now)),
        Some(RefusalCode::TooManySessions)
    );
    ep.ended(1, true, now);
    open(&mut ep, 6, CLIENT, now);
    let closed = ask_as(&mut ep, &opening(7, 0), third, now, false, true);
    assert_eq!(refusal(closed), Some(RefusalCode::Closed));
}

#[test]
fn a_full_listener_evicts_the_client_gone_longest_if_gone_long_enough() {
    let now = Instant::now();
    let mut ep = Endpoint::new(limits(Duration::from_secs(5)));
    open(&mut ep, 1, CLIENT, now);
    open(&mut ep, 2, CLIENT, now);
    // A third session from CLIENT, while sessions 1 and 2 have been gone these
    // seconds (0: connected).
    let mut third = |gone: [u64; 3]| {
        let presence = move |id: u32| Presence {
            gone_for: gone
                .get(id as usize)
                .filter(|&&s| s > 0)
                .map(|&s| Duration::from_secs(s)),
            client_knows_cid: true,
        };
        ask_with(&mut ep, &opening(3, 0), CLIENT, now, presence)
    };
    // Gone, but not for long enough: refused.
    assert_eq!(
        refusal(third([0, 2, 1])),
        Some(RefusalCode::TooManySessions)
    );
    let v = third([0, 4, 9]);
    match v {
        Verdict::Open { evict: Some(e), .. } => {
            assert_eq!((e.session, e.cid, e.waited), (2, 2, Duration::from_secs(9)))
        }
        other => panic!("no eviction: {other:?}"),
    }
    assert_eq!(ep.session_count(), 1);
}

/// Found by the server_endpoint fuzz target: a listener full in all and for the
/// client's address evicted another address's session, and the client got one more
/// session than its share.
#[test]
fn a_client_at_its_share_evicts_only_its_own_sessions_even_from_a_full_listener() {
    let now = Instant::now();
    let mut ep = Endpoint::new(limits(Duration::from_secs(5)));
    open(&mut ep, 1, CLIENT, now);
    open(&mut ep, 2, CLIENT, now);
    open(&mut ep, 3, OTHER, now);
    open(&mut ep, 4, OTHER, now);
    // Sessions `gone` have been gone for 9 s, the others are connected.
    let fifth = |ep: &mut Endpoint, gone: &[u32]| {
        let presence = |id: u32| Presence {
            gone_for: gone.contains(&id).then_some(Duration::from_secs(9)),
            client_knows_cid: true,
        };
        ask_with(ep, &opening(5, 0), CLIENT, now, presence)
    };
    // OTHER's vanished sessions would free a slot in all, not in CLIENT's share.
    assert_eq!(
        refusal(fifth(&mut ep, &[3, 4])),
        Some(RefusalCode::TooManySessions)
    );
    match fifth(&mut ep, &[2, 3, 4]) {
        Verdict::Open { evict: Some(e), .. } => assert_eq!((e.session, e.cid), (2, 2)),
        other => panic!("CLIENT's own vanished session not evicted: {other:?}"),
    }
}

#[test]
fn a_client_is_gone_since_it_was_last_heard_once_its_connection_failed() {
    let t0 = Instant::now();
    let second = Duration::from_secs(1);
    let keys = SessionKeys::derive(&[1; SECRET_LEN], &[1; NONCE_LEN], Role::Server);
    let limits = Limits {
        send_buffer: 1024,
        send_buffer_max: 1024,
        ack_threshold: 512,
        give_up_after: None,
        dead_after: Some(3 * second),
        linger: 5 * second,
    };
    let end = End::Server(ChallengeKey::new(&[2; CHALLENGE_KEY_LEN]));
    let mut session = Session::new(end, 1, 0, limits, keys.control, t0);
    let connected = Presence::of(&session, t0 + second);
    assert_eq!(connected.gone_for, None);
    assert!(!connected.client_knows_cid);
    session.handle_connection_failed(0, "cut", t0 + second);
    // Gone since the client was last heard (the connection came up at t0), not
    // since the connection failed.
    assert_eq!(
        Presence::of(&session, t0 + 5 * second).gone_for,
        Some(5 * second)
    );
    session.handle_cid_named();
    assert!(Presence::of(&session, t0).client_knows_cid);
}
