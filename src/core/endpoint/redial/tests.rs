//! The client's attempts, case by case.

use super::*;

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000))
}

/// A new session's schedule under `config`, its first HELLO sent at `t0` on attempt 0.
fn opening(config: &Config, t0: Instant) -> Redial<u32> {
    let timeout = config.handshake_timeout_value();
    let mut redial = Redial::new(
        addr(),
        config,
        timeout,
        [1; 16],
        OpeningKey::Secret([2; 32]),
        t0,
    );
    redial.started(0, t0);
    redial
}

fn cut() -> Failure {
    Failure::Cut(io::Error::from(io::ErrorKind::ConnectionReset))
}

fn connect_failed() -> Failure {
    Failure::Connect(io::Error::from(io::ErrorKind::TimedOut))
}

/// Runs attempts of `redial` from `now`, each failing with `failure()` as soon as it
/// is due, until the session fails; returns when and with what.
fn fail_until_given_up(
    redial: &mut Redial<u32>,
    mut now: Instant,
    failure: impl Fn() -> Failure,
) -> (Instant, Error) {
    for dial in 1..10_000 {
        if let Some(e) = redial.failed(failure(), now) {
            return (now, e);
        }
        now = match redial.plan(None, now, now, |_| false) {
            Plan::Dial => now,
            Plan::Wait(Some(at)) => at,
            other => panic!("{other:?} with no attempt in progress"),
        };
        redial.started(dial, now);
        if let Err(e) = redial.next_hello(now) {
            return (now, e);
        }
    }
    panic!("the opening never stopped");
}

#[test]
fn a_redirect_moves_later_attempts_and_keeps_the_schedule() {
    let t0 = Instant::now();
    let mut moved = opening(&Config::default(), t0);
    let mut stayed = opening(&Config::default(), t0);
    let elsewhere = SocketAddr::from(([127, 0, 0, 2], 7001));
    moved.redirect(elsewhere);
    assert_eq!(moved.addr(), elsewhere);
    assert_eq!(stayed.addr(), addr());
    // The same failures get the same plans and HELLOs: only the address differs.
    let at = t0 + 10 * MS;
    for redial in [&mut moved, &mut stayed] {
        assert!(redial.failed(cut(), at).is_none());
    }
    let plans = [&mut moved, &mut stayed].map(|r| format!("{:?}", r.plan(None, at, at, |_| false)));
    assert_eq!(plans[0], plans[1]);
    assert_eq!(moved.addr(), elsewhere);
}

#[test]
fn a_lost_connection_is_retried_at_once_then_with_doubling_backoff() {
    let config = Config::default().reconnect_backoff(50 * MS, 200 * MS);
    let t0 = Instant::now();
    let mut r = opening(&config, t0);
    r.connected(t0);
    // The server was heard on the connection before it was lost.
    let heard = t0 + MS;
    assert_eq!(r.plan(None, heard, heard, |_| false), Plan::Dial);
    let mut now = heard;
    let mut waits = Vec::new();
    for dial in 1..6 {
        r.started(dial, now);
        assert_eq!(r.plan(None, heard, now, |_| true), Plan::Wait(None));
        assert!(r.failed(connect_failed(), now).is_none());
        let Plan::Wait(Some(at)) = r.plan(None, heard, now, |_| false) else {
            panic!("no backoff after a failure");
        };
        waits.push(at - now);
        assert_eq!(r.plan(None, heard, at, |_| false), Plan::Dial);
        now = at;
    }
    assert_eq!(waits, [50 * MS, 100 * MS, 200 * MS, 200 * MS, 200 * MS]);
    r.connected(now);
    assert_eq!(r.plan(None, now + MS, now + MS, |_| false), Plan::Dial);
}

#[test]
fn only_a_connection_the_server_was_heard_on_resets_the_backoff() {
    // Clients whose handshakes evict each other (a listener's `max_handshakes` of 1)
    // each install a connection at the ANSWER that the server drops before its
    // CONFIRM arrives: were the backoff reset at the install, each would retry at
    // once, and evict the other's handshake again, forever.
    let config = Config::default().reconnect_backoff(50 * MS, 200 * MS);
    let t0 = Instant::now();
    let mut r = opening(&config, t0);
    r.connected(t0);
    let mut now = t0;
    let mut waits = Vec::new();
    for dial in 1..5 {
        // Lost with nothing heard on it: the server was last heard at its install.
        let Plan::Wait(Some(at)) = r.plan(None, now, now, |_| false) else {
            panic!("connection {dial}, lost before it proved itself, is retried at once");
        };
        waits.push(at - now);
        assert_eq!(r.plan(None, now, at, |_| false), Plan::Dial);
        now = at;
        r.started(dial, now);
        r.connected(now);
    }
    assert_eq!(waits, [50 * MS, 100 * MS, 200 * MS, 200 * MS]);
    // A connection the server was heard on: its loss is retried at once.
    assert_eq!(r.plan(None, now + MS, now + SECOND, |_| false), Plan::Dial);
}

#[test]
fn a_known_answer_resumes_by_cid_at_once_whatever_the_backoff() {
    // A retried key-agreement opening answered KNOWN: the answer proves the server
    // holds the session, which then resumes by its CID at once, though its earlier
    // attempts failed and nothing is heard on the connection the server closed.
    let config = Config::default().reconnect_backoff(50 * MS, 200 * MS);
    let t0 = Instant::now();
    let mut r = opening(&config, t0);
    let mut now = t0;
    for dial in 1..4 {
        r.started(dial, now);
        assert!(r.failed(cut(), now).is_none());
        let Plan::Wait(Some(at)) = r.plan(None, t0, now, |_| false) else {
            panic!("no backoff after failed attempt {dial}");
        };
        now = at;
        assert_eq!(r.plan(None, t0, now, |_| false), Plan::Dial);
    }
    r.started(4, now);
    r.learned();
    assert_eq!(r.plan(None, t0, now, |_| false), Plan::Dial);
    r.started(5, now);
    let next = r.next_hello(now).expect("a resumption");
    assert!(next.opening.is_none(), "the learned session resumes by CID");
}

#[test]
fn news_from_the_server_restarts_a_stale_connect_and_cuts_the_backoff_short() {
    let config = Config::default().reconnect_backoff(SECOND, 60 * SECOND);
    let t0 = Instant::now();
    let mut r = opening(&config, t0);
    r.connected(t0);
    r.started(7, t0);
    let last = t0 + 2 * SECOND;
    let heard = Some(t0 + 100 * MS);
    // Too young to call stale: its SYN may still be on its way.
    assert_eq!(
        r.plan(heard, last, t0 + 100 * MS, |_| true),
        Plan::Wait(None)
    );
    // The same news again, once the connect is stale, is no reason to restart.
    assert_eq!(r.plan(heard, last, t0 + SECOND, |_| true), Plan::Wait(None));
    let heard = Some(t0 + SECOND);
    // Past its TCP connect, the attempt is not started over.
    assert_eq!(
        r.plan(heard, last, t0 + SECOND, |_| false),
        Plan::Wait(None)
    );
    let heard = Some(t0 + 2 * SECOND);
    assert_eq!(
        r.plan(heard, last, t0 + 2 * SECOND, |_| true),
        Plan::Restart(7)
    );

    // Several failures put the next attempt far off; news brings it to now.
    let mut now = t0 + 2 * SECOND;
    for _ in 0..5 {
        r.failed(connect_failed(), now);
        now += 10 * MS;
    }
    let plan = r.plan(None, last, now, |_| false);
    assert!(matches!(plan, Plan::Wait(Some(at)) if at > now + SECOND));
    assert_eq!(r.plan(Some(now), now, now, |_| false), Plan::Dial);
}

#[test]
fn an_opening_nobody_answers_fails_after_its_patience() {
    let config = Config::default().handshake_timeout(SECOND);
    let t0 = Instant::now();
    let mut r = opening(&config, t0);
    let (when, e) = fail_until_given_up(&mut r, t0, connect_failed);
    let patience = SECOND * OPENING_PATIENCE;
    assert_eq!(e, Error::GaveUp { after: patience });
    assert!(when <= t0 + patience, "{:?}", when - t0);
    // Within one backoff step of it (the next attempt could not have started in time).
    assert!(
        when + Duration::from_secs(5) > t0 + patience,
        "{:?}",
        when - t0
    );
}

#[test]
fn cuts_in_a_row_fail_the_opening_and_an_answer_starts_the_count_again() {
    let t0 = Instant::now();
    let mut r = opening(&Config::default(), t0);
    for n in 1..OPEN_ATTEMPTS {
        assert!(r.failed(cut(), t0 + n * MS).is_none(), "cut {n}");
    }
    // An answer in between: a robust-tcp server is there; cuts count from zero.
    r.heard_answer();
    for n in 1..OPEN_ATTEMPTS {
        assert!(r.failed(cut(), t0 + SECOND + n * MS).is_none(), "cut {n}");
    }
    assert!(r.failed(Failure::Busy, t0 + 2 * SECOND).is_none());
    for n in 1..OPEN_ATTEMPTS {
        assert!(
            r.failed(cut(), t0 + 3 * SECOND + n * MS).is_none(),
            "cut {n}"
        );
    }
    let e = r.failed(cut(), t0 + 4 * SECOND);
    let reason = NotRobustReason::HungUp(OPEN_ATTEMPTS);
    assert_eq!(e, Some(Error::NotRobust { reason }));
}

#[test]
fn an_opening_refused_as_busy_fails_as_refused_within_the_busy_limit() {
    let limit = Config::default().busy_limit_value();
    assert!(limit >= 10 * SECOND && limit < OPENING_WINDOW, "{limit:?}");
    let config = Config::default().busy_limit(3 * SECOND);
    let t0 = Instant::now();
    let mut r = opening(&config, t0);
    let (when, e) = fail_until_given_up(&mut r, t0, || Failure::Busy);
    assert_eq!(e, Error::Refused(Refusal::TooManySessions));
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    assert!(when <= t0 + 3 * SECOND, "{:?}", when - t0);
    // Retried meanwhile, with backoff: the server may free a slot.
    assert!(r.last_hello >= 5, "only {} attempts", r.last_hello);
    assert!(when + Duration::from_secs(5) > t0 + 3 * SECOND);

    // A zero limit fails at the first refusal.
    let mut r = opening(&Config::default().busy_limit(Duration::ZERO), t0);
    let e = r.failed(Failure::Busy, t0 + MS);
    assert_eq!(e, Some(Error::Refused(Refusal::TooManySessions)));
}

#[test]
fn no_retried_opening_starts_after_the_window_whatever_the_handshake_timeout() {
    let config = Config::default().handshake_timeout(30 * SECOND);
    let t0 = Instant::now();
    // An opening that heard nothing, whose patience (300 s) is past the window.
    let mut r = opening(&config, t0);
    let (when, e) = fail_until_given_up(&mut r, t0, connect_failed);
    assert_eq!(
        e,
        Error::GaveUp {
            after: OPENING_WINDOW
        }
    );
    assert!(when <= t0 + OPENING_WINDOW, "{:?}", when - t0);

    // An opening that heard an answer has no patience limit, only the window; an
    // attempt whose TCP connect took it past the window sends no HELLO.
    let mut r = opening(&config, t0);
    r.heard_answer();
    assert!(r.failed(cut(), t0 + 59 * SECOND).is_none());
    r.started(1, t0 + 59 * SECOND);
    let e = r.next_hello(t0 + OPENING_WINDOW);
    assert_eq!(
        e,
        Err(Error::GaveUp {
            after: OPENING_WINDOW
        })
    );
    assert_eq!(r.last_hello, 0, "a HELLO was numbered");

    // A busy limit cannot take an opening past the window either.
    let mut r = opening(&config, t0);
    r.busy_limit = 2 * OPENING_WINDOW;
    let (when, _) = fail_until_given_up(&mut r, t0, || Failure::Busy);
    assert!(when <= t0 + OPENING_WINDOW, "{:?}", when - t0);
}

#[test]
fn retried_openings_carry_the_opening_then_reconnections_resume() {
    let config = Config::default().handshake_timeout(5 * SECOND);
    let t0 = Instant::now();
    let mut r = Redial::new(
        addr(),
        &config,
        SECOND,
        [1; 16],
        OpeningKey::Secret([2; 32]),
        t0,
    );
    r.started(0, t0);
    assert_eq!(r.attempt_timeout(), SECOND);
    r.failed(cut(), t0);
    let hello = r.next_hello(t0 + SECOND).unwrap();
    let opening = Some(([1; 16], OpeningKey::Secret([2; 32])));
    assert_eq!(
        hello,
        NextHello {
            attempt: 1,
            opening
        }
    );
    r.connected(t0 + SECOND);
    // The opening's shorter bound was the opening's only.
    assert_eq!(r.attempt_timeout(), 5 * SECOND);
    // A reconnection goes on however it fails, and names the next attempt.
    let mut now = t0 + 2 * SECOND;
    for failure in [cut(), Failure::Timeout, Failure::Busy] {
        assert!(r.failed(failure, now).is_none());
        now += 10 * OPENING_WINDOW;
    }
    let fatal = Failure::Fatal(Error::NotRobust {
        reason: NotRobustReason::Malformed,
    });
    assert!(r.failed(fatal, now).is_none());
    let hello = r.next_hello(now).unwrap();
    assert_eq!(
        hello,
        NextHello {
            attempt: 2,
            opening: None
        }
    );
}

#[test]
fn the_agreement_kept_from_the_hello_finishes_once_then_the_private_key_does() {
    use crate::core::agreement::{self, KEY_LEN};
    use crate::core::session::Role;

    let config = Config::default();
    let t0 = Instant::now();
    let nonce = [1; 16];
    let (key, half) = OpeningKey::agreement([3; KEY_LEN], &nonce).unwrap();
    let mut r = Redial::<u32>::new(addr(), &config, SECOND, nonce, key, t0);
    r.agreement_started(half);
    // A key-agreement HELLO carries no tag.
    let untagged = SessionKeys::derive(&[0; 32], &nonce, Role::Client)
        .handshake
        .client;
    let hello = r.next_hello(t0).unwrap().hello([5; 16], 0, 0, &untagged);
    let (part, server) = agreement::answer(&[4; KEY_LEN], &nonce, &hello.opening_key).unwrap();
    let signing = &server.handshake.server;
    let answer = |part| {
        Accepted::accepting(&hello, 9, true, 7001, 0, [6; 16], signing)
            .agreed(part, &hello, signing)
    };
    let mut forged = part;
    forged[0] ^= 1;
    // A forged ANSWER takes the state kept from the HELLO and agrees on nothing; the real
    // one, after it, is finished from the private key, and agrees with the server.
    assert!(r.agreed_keys(&answer(forged)).is_none());
    let agreed = r.agreed_keys(&answer(part)).unwrap();
    assert!(agreed
        .control
        .send
        .verify(&[b"x"], &server.control.recv.tag(&[b"x"])));
    let mut fresh = Redial::<u32>::new(addr(), &config, SECOND, nonce, key, t0);
    let (_, half) = OpeningKey::agreement([3; KEY_LEN], &nonce).unwrap();
    fresh.agreement_started(half);
    let kept = fresh.agreed_keys(&answer(part)).unwrap();
    assert!(kept
        .control
        .send
        .verify(&[b"x"], &server.control.recv.tag(&[b"x"])));
}

#[test]
fn an_opening_key_shows_no_private_key_nor_secret() {
    let (agreement, _) = OpeningKey::agreement([0xAB; 32], &[1; 16]).unwrap();
    let OpeningKey::Agreement { public, .. } = agreement else {
        panic!("not an agreement");
    };
    let shown = format!("{agreement:?}");
    assert!(shown.contains(&format!("{public:?}")), "{shown}");
    assert!(
        !shown.contains("171, 171, 171"),
        "the private key shows: {shown}"
    );
    let shown = format!("{:?}", OpeningKey::Secret([0xCD; 32]));
    assert_eq!(shown, "Secret(..)");
}
