//! The handshake machine, phase by phase, with a host that holds plain sessions.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::*;
use crate::core::auth::{ChallengeKey, SECRET_LEN};
use crate::core::endpoint::server::ServerLimits;
use crate::core::session::{End, Limits, Role};

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const PORT: u16 = 4_000;

type Endpoint = ServerEndpoint<usize, u32>;

/// The sessions the test holds, and scripted randomness.
struct TestHost {
    sessions: Vec<(Session, HandshakeKeys)>,
    /// CIDs the rest of the process holds.
    taken: Vec<u32>,
    /// The next random bytes are these, then a count up from 1.
    script: Vec<u8>,
    counter: u8,
    /// Randomness fails.
    dry: bool,
}

impl Host<usize> for TestHost {
    fn handshake_keys(&self, s: usize) -> Option<HandshakeKeys> {
        self.sessions.get(s).map(|(_, k)| k.clone())
    }
    fn presence(&self, s: usize, now: Instant) -> Presence {
        self.sessions
            .get(s)
            .map_or_else(Default::default, |(session, _)| Presence::of(session, now))
    }
    fn with_session<R>(&mut self, s: usize, f: impl FnOnce(&mut Session) -> R) -> Option<R> {
        self.sessions.get_mut(s).map(|(session, _)| f(session))
    }
    fn cid_taken(&self, cid: u32) -> bool {
        self.taken.contains(&cid)
    }
    fn control_port(&self) -> u16 {
        PORT
    }
    fn random(&mut self, buf: &mut [u8]) -> bool {
        for b in buf.iter_mut() {
            *b = if self.script.is_empty() {
                self.counter = self.counter.wrapping_add(1);
                self.counter
            } else {
                self.script.remove(0)
            };
        }
        !self.dry
    }
}

fn host() -> TestHost {
    TestHost {
        sessions: Vec::new(),
        taken: Vec::new(),
        script: Vec::new(),
        counter: 0,
        dry: false,
    }
}

fn endpoint(max_handshakes: usize) -> Endpoint {
    instance_endpoint(max_handshakes, None)
}

fn instance_endpoint(max_handshakes: usize, instance_id: Option<u8>) -> Endpoint {
    ServerEndpoint::new(ServerLimits {
        max_sessions: 4,
        max_sessions_per_address: 4,
        max_handshakes,
        handshake_timeout: Duration::from_secs(5),
        evictable_after: Duration::from_secs(3),
        accept_plain: false,
        plain_wait: Duration::from_millis(300),
        instance_id,
        announce: None,
    })
}

/// The client's keys of opening `n`, and attempt `attempt` of its opening HELLO.
fn opening(n: u8, attempt: u64) -> (SessionKeys, Hello) {
    let (secret, nonce) = ([n; SECRET_LEN], [n; NONCE_LEN]);
    let keys = SessionKeys::derive(&secret, &nonce, Role::Client);
    let hello = Hello::opening(
        [attempt as u8; NONCE_LEN],
        attempt,
        nonce,
        secret,
        &keys.handshake.client,
    );
    (keys, hello)
}

/// Feeds `frame` (a whole encoded frame) to handshake `h`.
fn feed(
    ep: &mut Endpoint,
    h: u32,
    frame: &[u8],
    host: &mut TestHost,
    now: Instant,
) -> Action<usize> {
    let kind = match frame.get(5) {
        Some(1) => FrameKind::Hello,
        Some(2) => FrameKind::Answer,
        Some(3) => FrameKind::Confirm,
        _ => FrameKind::Control,
    };
    ep.on_frame(h, kind, &frame[8..], CLIENT, true, host, now)
}

/// Opens session `n` through handshake `h`, as the engine does with the action: the
/// session is the host's number `n`'s index.
fn open(ep: &mut Endpoint, h: u32, n: u8, host: &mut TestHost, now: Instant) -> (u32, SessionKeys) {
    assert!(ep.handshake_started(h).is_none());
    let (keys, hello) = opening(n, 0);
    let Action::Open(o) = feed(ep, h, &hello.encode(), host, now) else {
        panic!("the opening did not open");
    };
    assert!(o.answer.answers(&hello, &keys.handshake.server));
    let s = host.sessions.len();
    let end = End::Server(ChallengeKey::new(&o.challenge_key));
    let session = Session::new(end, o.cid, o.answer.epoch, limits(), o.keys.control, now);
    host.sessions.push((session, o.keys.handshake));
    ep.opened(o.cid, s, CLIENT, &o.hello, o.agreement);
    (o.cid, keys)
}

fn limits() -> Limits {
    Limits {
        send_buffer: 1024,
        send_buffer_max: 1024,
        ack_threshold: 512,
        give_up_after: None,
        dead_after: Some(Duration::from_secs(3)),
        linger: Duration::from_secs(5),
    }
}

/// Handshake `h` (started here unless it is in progress) resumes session CID `cid`, whose
/// keys are `keys`, with attempt `attempt` up to its ANSWER.
fn answered(
    ep: &mut Endpoint,
    h: u32,
    cid: u32,
    keys: &SessionKeys,
    attempt: u64,
    host: &mut TestHost,
    now: Instant,
) -> (Hello, Accepted) {
    if ep.expected(h).is_empty() {
        assert!(ep.handshake_started(h).is_none());
    }
    let hello = Hello::resume(cid, [9; NONCE_LEN], attempt, 0, &keys.handshake.client);
    let action = feed(ep, h, &hello.encode(), host, now);
    // The barrier is the session's that holds the HELLO's keys.
    let Action::Barrier(s) = action else {
        panic!("no barrier: {action:?}");
    };
    assert!(
        hello.verify(&host.sessions[s].1.client),
        "another session's barrier"
    );
    assert_eq!(
        ep.expected(h),
        &[] as &[FrameKind],
        "a frame read across the barrier"
    );
    let Action::Answer(answer) = ep.after_barrier(h, host) else {
        panic!("no answer after the barrier");
    };
    assert!(answer.answers(&hello, &keys.handshake.server));
    assert_eq!(
        (answer.cid, answer.epoch, answer.control_port),
        (cid, attempt as u32, PORT)
    );
    assert_eq!(ep.expected(h), &[FrameKind::Confirm]);
    (hello, *answer)
}

#[test]
fn a_new_handshake_expects_a_hello_or_a_control_and_a_control_naming_a_session_hands_it_over() {
    let (mut ep, mut host, now) = (endpoint(4), host(), Instant::now());
    let (cid, _) = open(&mut ep, 9, 1, &mut host, now);
    assert!(ep.handshake_started(1).is_none());
    assert_eq!(ep.expected(1), &[FrameKind::Hello, FrameKind::Control]);
    let control = Control { cid }.encode();
    assert!(matches!(
        feed(&mut ep, 1, &control, &mut host, now),
        Action::Control
    ));
    assert_eq!(ep.handshake_count(), 0);
}

#[test]
fn a_control_naming_a_session_the_listener_does_not_hold_is_refused_as_unknown() {
    // A balancer that routed it to the wrong instance: the client is told at once, and
    // no connection is kept that could carry nothing authentic.
    let (mut ep, mut host, now) = (endpoint(4), host(), Instant::now());
    let (cid, _) = open(&mut ep, 9, 1, &mut host, now);
    ep.handshake_started(1);
    let control = Control { cid: cid ^ 1 }.encode();
    assert!(matches!(
        feed(&mut ep, 1, &control, &mut host, now),
        Action::Refuse(RefusalCode::UnknownSession)
    ));
    assert_eq!(ep.handshake_count(), 0);
}

#[test]
fn a_control_with_a_body_or_garbage_is_turned_away_and_drained_up_to_its_bound() {
    let (mut ep, mut host, now) = (endpoint(4), host(), Instant::now());
    ep.handshake_started(1);
    let kind = FrameKind::Control;
    let action = ep.on_frame(1, kind, b"x", CLIENT, true, &mut host, now);
    assert!(matches!(action, Action::TurnAway));
    assert_eq!(ep.expected(1), &[] as &[FrameKind]);
    assert!(matches!(
        ep.on_drained(1, TURN_AWAY_DRAIN - 1),
        Action::Wait
    ));
    assert!(matches!(ep.on_drained(1, 1), Action::Wait));
    assert_eq!(ep.handshake_count(), 1, "a turned-away peer still counts");
    assert!(
        matches!(ep.on_drained(1, 1), Action::Close),
        "past the bound"
    );
    assert_eq!(ep.handshake_count(), 0);

    ep.handshake_started(2);
    assert!(matches!(ep.on_garbage(2), Action::TurnAway));
    assert!(matches!(ep.on_drained(2, 0), Action::Close), "hung up");
    ep.handshake_started(3);
    let action = ep.on_frame(3, FrameKind::Hello, &[7; 3], CLIENT, true, &mut host, now);
    assert!(
        matches!(action, Action::TurnAway),
        "a HELLO body that does not parse"
    );
    ep.handshake_started(4);
    let action = ep.on_frame(
        4,
        FrameKind::Confirm,
        &[0; 20],
        CLIENT,
        true,
        &mut host,
        now,
    );
    assert!(matches!(action, Action::TurnAway), "a CONFIRM first");
    assert_eq!(ep.handshake_count(), 2);
}

#[test]
fn an_opening_gets_a_random_cid_never_zero_nor_taken_and_an_opened_answer() {
    let (mut ep, mut host, now) = (endpoint(4), host(), Instant::now());
    host.taken.push(0x0505_0505);
    // Nonce, challenge key and ephemeral key first, then the CID draws: 0, a taken one,
    // then a free one.
    host.script = [
        vec![0; NONCE_LEN + CHALLENGE_KEY_LEN + KEY_LEN + 4],
        vec![5; 4],
        vec![6; 4],
    ]
    .concat();
    let (cid, _) = open(&mut ep, 1, 1, &mut host, now);
    assert_eq!(cid, 0x0606_0606);
    assert_eq!(ep.handshake_count(), 0);
    assert_eq!(ep.session_count(), 1);
    assert_eq!(new_cid(&[0; 64], None, |_| false), None);
}

#[test]
fn an_instance_id_is_the_first_byte_of_every_cid_the_rest_random() {
    let draws = [0xAB, 0x01, 0x02, 0x03, 0xCD, 0x04, 0x05, 0x06];
    assert_eq!(new_cid(&draws, Some(7), |_| false), Some(0x0701_0203));
    assert_eq!(new_cid(&draws, Some(0), |_| false), Some(0x0001_0203));
    assert_eq!(new_cid(&draws, None, |_| false), Some(0xAB01_0203));
    // A taken CID counts after the id is put in: the next draw, with the id.
    let taken = |cid| cid == 0x0701_0203;
    assert_eq!(new_cid(&draws, Some(7), taken), Some(0x0704_0506));
    // Instance 0 with three zero bytes would be CID 0, which opens a session: skipped.
    let zeros = [0xAB, 0, 0, 0, 0xCD, 0, 0, 9];
    assert_eq!(new_cid(&zeros, Some(0), |_| false), Some(9));
    assert_eq!(new_cid(&zeros[..4], Some(0), |_| false), None);
    // A trailing partial draw is no CID.
    assert_eq!(new_cid(&draws[..3], Some(7), |_| false), None);
}

#[test]
fn a_listener_with_an_instance_id_opens_every_session_under_it() {
    let (mut ep, mut host, now) = (instance_endpoint(4, Some(0x42)), host(), Instant::now());
    for (h, n) in [(1, 1), (2, 2), (3, 3)] {
        let (cid, _) = open(&mut ep, h, n, &mut host, now);
        assert_eq!(cid >> 24, 0x42, "{cid:#010x}");
        assert_eq!(cid.to_be_bytes()[0], 0x42);
    }
    assert_eq!(ep.session_count(), 3);
}

#[test]
fn an_opening_without_randomness_is_refused_as_busy_before_anything_is_done() {
    let (mut ep, mut host, now) = (endpoint(4), host(), Instant::now());
    host.dry = true;
    ep.handshake_started(1);
    let (_, hello) = opening(1, 0);
    let action = feed(&mut ep, 1, &hello.encode(), &mut host, now);
    assert!(matches!(
        action,
        Action::Refuse(RefusalCode::TooManySessions)
    ));
    assert_eq!((ep.session_count(), ep.handshake_count()), (0, 0));
}

#[test]
fn a_resumption_passes_the_barrier_is_answered_and_installed_once_confirmed() {
    let (mut ep, mut host, now) = (endpoint(4), host(), Instant::now());
    let (cid, keys) = open(&mut ep, 1, 1, &mut host, now);
    let (hello, answer) = answered(&mut ep, 2, cid, &keys, 1, &mut host, now);
    assert!(
        host.sessions[0].0.peer_knows_cid(),
        "the HELLO named the CID"
    );
    let confirm = Confirm::new(&hello, &answer, &keys.handshake.client).encode();
    let action = feed(&mut ep, 2, &confirm, &mut host, now);
    assert!(matches!(
        action,
        Action::Install {
            session: 0,
            epoch: 1,
            peer_received: 0
        }
    ));
    assert_eq!(ep.handshake_count(), 0);
}

#[test]
fn a_retried_opening_resumes_its_session_through_the_same_steps() {
    let (mut ep, mut host, now) = (endpoint(4), host(), Instant::now());
    let (cid, keys) = open(&mut ep, 1, 1, &mut host, now);
    ep.handshake_started(2);
    let (_, retry) = opening(1, 1);
    assert!(matches!(
        feed(&mut ep, 2, &retry.encode(), &mut host, now),
        Action::Barrier(0)
    ));
    let Action::Answer(answer) = ep.after_barrier(2, &mut host) else {
        panic!("no answer");
    };
    assert_eq!(answer.cid, cid);
    assert!(answer.answers(&retry, &keys.handshake.server));
    assert!(
        !host.sessions[0].0.peer_knows_cid(),
        "an opening names no CID"
    );
}

#[test]
fn a_confirmation_that_does_not_verify_or_never_comes_fails_the_offer() {
    let (mut ep, mut host, now) = (endpoint(4), host(), Instant::now());
    let (cid, keys) = open(&mut ep, 1, 1, &mut host, now);
    let offer_failed = |a: Action<usize>, epoch| {
        assert!(
            matches!(a, Action::OfferFailed { session: 0, epoch: e } if e == epoch),
            "{a:?}"
        )
    };
    let (hello, answer) = answered(&mut ep, 2, cid, &keys, 1, &mut host, now);
    let mut confirm = Confirm::new(&hello, &answer, &keys.handshake.client).encode();
    confirm[12] ^= 1;
    offer_failed(feed(&mut ep, 2, &confirm, &mut host, now), 1);
    answered(&mut ep, 3, cid, &keys, 2, &mut host, now);
    offer_failed(feed(&mut ep, 3, &hello.encode(), &mut host, now), 2);
    answered(&mut ep, 4, cid, &keys, 3, &mut host, now);
    offer_failed(ep.on_garbage(4), 3);
    answered(&mut ep, 5, cid, &keys, 4, &mut host, now);
    offer_failed(ep.handshake_failed(5), 4);
    assert_eq!(ep.handshake_count(), 0);
    assert!(matches!(ep.handshake_failed(5), Action::Close), "once only");
}

#[test]
fn a_confirmation_of_a_superseded_attempt_installs_nothing() {
    let (mut ep, mut host, now) = (endpoint(4), host(), Instant::now());
    let (cid, keys) = open(&mut ep, 1, 1, &mut host, now);
    let (old_hello, old_answer) = answered(&mut ep, 2, cid, &keys, 1, &mut host, now);
    let (new_hello, new_answer) = answered(&mut ep, 3, cid, &keys, 2, &mut host, now);
    let key = &keys.handshake.client;
    let old = Confirm::new(&old_hello, &old_answer, key).encode();
    assert!(matches!(
        feed(&mut ep, 2, &old, &mut host, now),
        Action::Close
    ));
    let new = Confirm::new(&new_hello, &new_answer, key).encode();
    let action = feed(&mut ep, 3, &new, &mut host, now);
    assert!(
        matches!(action, Action::Install { epoch: 2, .. }),
        "{action:?}"
    );
}

#[test]
fn a_count_outside_what_was_written_is_refused_before_the_barrier() {
    let (mut ep, mut host, now) = (endpoint(4), host(), Instant::now());
    let (cid, keys) = open(&mut ep, 1, 1, &mut host, now);
    ep.handshake_started(2);
    let hello = Hello::resume(cid, [9; NONCE_LEN], 1, 5, &keys.handshake.client);
    let action = feed(&mut ep, 2, &hello.encode(), &mut host, now);
    assert!(matches!(action, Action::Refuse(RefusalCode::BadRequest)));
    assert_eq!(ep.handshake_count(), 0);
    // A session gone across the barrier is unknown.
    ep.handshake_started(3);
    let hello = Hello::resume(cid, [9; NONCE_LEN], 2, 0, &keys.handshake.client);
    assert!(matches!(
        feed(&mut ep, 3, &hello.encode(), &mut host, now),
        Action::Barrier(0)
    ));
    host.sessions.clear();
    let action = ep.after_barrier(3, &mut host);
    assert!(matches!(
        action,
        Action::Refuse(RefusalCode::UnknownSession)
    ));
}

#[test]
fn a_crowded_listener_drops_the_oldest_handshake_not_yet_answered() {
    let (mut ep, mut host, now) = (endpoint(3), host(), Instant::now());
    let (cid, keys) = open(&mut ep, 1, 1, &mut host, now);
    answered(&mut ep, 10, cid, &keys, 1, &mut host, now);
    assert!(ep.handshake_started(11).is_none());
    assert!(ep.handshake_started(12).is_none());
    let dropped = ep.handshake_started(13);
    assert!(matches!(dropped, Some((11, Action::Close))), "{dropped:?}");
    answered(&mut ep, 12, cid, &keys, 2, &mut host, now);
    answered(&mut ep, 13, cid, &keys, 3, &mut host, now);
    // All answered, 10 and 12 overtaken by 13: the oldest goes, closed, since its offer
    // can install nothing.
    let dropped = ep.handshake_started(14);
    assert!(matches!(dropped, Some((10, Action::Close))), "{dropped:?}");
    ep.handshake_ended(12);
    assert!(ep.handshake_started(15).is_none());
    assert_eq!(ep.handshake_count(), 3);
    assert_eq!(ep.take_handshakes().collect::<Vec<_>>(), [13, 14, 15]);
}

#[test]
fn an_offer_a_later_attempt_overtook_goes_first_and_fails_nothing() {
    // Three slots, all answered resumptions: session 0's attempt 1 (its latest), then
    // session 1's attempts 1 and 2. A newcomer evicts session 1's first offer, which its
    // second overtook, not session 0's older but live one.
    let (mut ep, mut host, now) = (endpoint(3), host(), Instant::now());
    let (cid0, keys0) = open(&mut ep, 1, 1, &mut host, now);
    let (cid1, keys1) = open(&mut ep, 2, 2, &mut host, now);
    answered(&mut ep, 10, cid0, &keys0, 1, &mut host, now);
    answered(&mut ep, 11, cid1, &keys1, 1, &mut host, now);
    answered(&mut ep, 12, cid1, &keys1, 2, &mut host, now);
    let dropped = ep.handshake_started(13);
    assert!(matches!(dropped, Some((11, Action::Close))), "{dropped:?}");
    assert_eq!(ep.take_handshakes().collect::<Vec<_>>(), [10, 12, 13]);
    // However it ends, an overtaken offer tells its session nothing; the latest's failure
    // does.
    let (mut ep, mut host) = (endpoint(4), self::host());
    let (cid, keys) = open(&mut ep, 1, 1, &mut host, now);
    let (old_hello, old_answer) = answered(&mut ep, 20, cid, &keys, 1, &mut host, now);
    answered(&mut ep, 21, cid, &keys, 2, &mut host, now);
    let mut bad = Confirm::new(&old_hello, &old_answer, &keys.handshake.client).encode();
    bad[12] ^= 1;
    assert!(matches!(
        feed(&mut ep, 20, &bad, &mut host, now),
        Action::Close
    ));
    answered(&mut ep, 22, cid, &keys, 3, &mut host, now);
    assert!(matches!(ep.handshake_failed(21), Action::Close));
    let failed = ep.handshake_failed(22);
    assert!(
        matches!(failed, Action::OfferFailed { epoch: 3, .. }),
        "{failed:?}"
    );
}

#[test]
fn at_a_single_slot_an_answered_resumption_stays_and_the_newcomer_is_dropped() {
    // One slot, holding an answered resumption: the new connection goes, not the offer
    // (whose eviction would bring its client back at once to evict the newcomer's in turn:
    // two clients resuming together did so forever, simulation seed 4531).
    let (mut ep, mut host, now) = (endpoint(1), host(), Instant::now());
    let (cid, keys) = open(&mut ep, 1, 1, &mut host, now);
    answered(&mut ep, 10, cid, &keys, 1, &mut host, now);
    let dropped = ep.handshake_started(11);
    assert!(matches!(dropped, Some((11, Action::Close))), "{dropped:?}");
    assert_eq!(ep.take_handshakes().collect::<Vec<_>>(), [10]);
    // Not answered yet, it is evicted as any other.
    let mut ep = endpoint(1);
    assert!(ep.handshake_started(10).is_none());
    let dropped = ep.handshake_started(11);
    assert!(matches!(dropped, Some((10, Action::Close))), "{dropped:?}");
    assert_eq!(ep.take_handshakes().collect::<Vec<_>>(), [11]);
}

#[test]
fn a_refused_hello_ends_the_handshake_and_frames_after_the_end_close() {
    let (mut ep, mut host, now) = (endpoint(4), host(), Instant::now());
    ep.handshake_started(1);
    let hello = Hello::resume(77, [9; NONCE_LEN], 1, 0, &opening(1, 0).0.handshake.client);
    let action = feed(&mut ep, 1, &hello.encode(), &mut host, now);
    assert!(matches!(
        action,
        Action::Refuse(RefusalCode::UnknownSession)
    ));
    assert_eq!(ep.handshake_count(), 0);
    assert!(matches!(
        feed(&mut ep, 1, &hello.encode(), &mut host, now),
        Action::Close
    ));
    assert!(matches!(ep.after_barrier(1, &mut host), Action::Close));
}

/// A retried key-agreement opening of a session the listener opened gets the KNOWN answer
/// (the same agreement, under the session's key) and changes nothing, until the client
/// shows that it knows the CID; then it is refused.
#[test]
fn a_retried_key_agreement_opening_is_answered_known_until_the_client_proves_itself() {
    let (mut ep, mut host, now) = (endpoint(4), host(), Instant::now());
    let private = [0x31; KEY_LEN];
    let public = crate::core::agreement::client_public(&private, &[7; NONCE_LEN]).unwrap();
    let hello =
        |attempt| Hello::agreeing([attempt as u8; NONCE_LEN], attempt, [7; NONCE_LEN], public);
    assert!(ep.handshake_started(1).is_none());
    let Action::Open(o) = feed(&mut ep, 1, &hello(0).encode(), &mut host, now) else {
        panic!("the key-agreement opening did not open");
    };
    let part = o.agreement.expect("the listener's part");
    assert_eq!(o.answer.agreement, part);
    let end = End::Server(ChallengeKey::new(&o.challenge_key));
    let session = Session::new(end, o.cid, o.answer.epoch, limits(), o.keys.control, now);
    host.sessions.push((session, o.keys.handshake.clone()));
    ep.opened(o.cid, 0, CLIENT, &o.hello, o.agreement);
    let retry = hello(9);
    assert!(ep.handshake_started(2).is_none());
    let Action::Known(answer) = feed(&mut ep, 2, &retry.encode(), &mut host, now) else {
        panic!("the retry is not answered KNOWN");
    };
    assert!(answer.known && !answer.opened && answer.cid == o.cid);
    assert_eq!(answer.agreement, part);
    assert!(answer.answers(&retry, &o.keys.handshake.server));
    // Nothing changed: the first attempt is still the session's latest.
    assert!(ep.confirmed(o.cid, 0));
    assert_eq!(ep.handshake_count(), 0);
    host.sessions[0].0.handle_cid_named();
    assert!(ep.handshake_started(3).is_none());
    let refused = feed(&mut ep, 3, &hello(10).encode(), &mut host, now);
    assert!(
        matches!(refused, Action::Refuse(RefusalCode::UnknownSession)),
        "{refused:?}"
    );
}
