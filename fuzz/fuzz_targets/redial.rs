//! A client session's attempts, driven directly: one `Redial` under a virtual clock, told
//! of attempts started, connected, failed in every way and abandoned, asked to plan and
//! for the next HELLO at arbitrary times (and with arbitrary news of the server, earlier
//! or later than now), as the engine (`src/engine/client.rs`) would.
//!
//! Input: 4 bytes of settings (handshake timeout, the opening's own, backoff, busy
//! limit), then operations, each an opcode byte and its operands (see [`Op`]).
//!
//! What must hold, whatever the operations:
//! - nothing panics;
//! - no HELLO of a retried opening is planned once `OPENING_WINDOW` has passed since the
//!   first, and none at all once the session connected;
//! - each HELLO names a higher attempt than the one before;
//! - `Restart` names the attempt in progress, and nothing else;
//! - a session whose opening failed for good is not asked anything more (the engine
//!   drops it), and a reconnection of an open session never fails it.
//!
//! Protocol API used: `Redial` (`new`, `plan`, `started`, `dialing`, `next_hello`,
//! `heard_answer`, `connected`, `abandoned`, `failed`), `Plan`, `NextHello`, `Failure`,
//! `OPENING_WINDOW`; `Config`'s `handshake_timeout`, `reconnect_backoff`, `busy_limit`.
#![no_main]

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use robust_tcp::protocol::endpoint::{Failure, OpeningKey, Plan, Redial, OPENING_WINDOW};
use robust_tcp::{Config, Error};

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.iter().copied();
    let mut byte = || bytes.next();
    let [a, b, c, d] = [byte(), byte(), byte(), byte()].map(Option::unwrap_or_default);
    let handshake_timeout = Duration::from_millis(100 + u64::from(a) * 100);
    let initial = Duration::from_millis(1 + u64::from(c % 16) * 50);
    let config = Config::default()
        .handshake_timeout(handshake_timeout)
        .reconnect_backoff(initial, initial * (1 + u32::from(c >> 4)))
        .busy_limit(Duration::from_secs(u64::from(d)));
    let opening_timeout = Duration::from_millis(1 + u64::from(b) * 100);
    let t0 = Instant::now();
    let addr = SocketAddr::from(([127, 0, 0, 1], 7000));
    let mut redial = Redial::new(
        addr,
        &config,
        opening_timeout,
        [1; 16],
        OpeningKey::Secret([2; 32]),
        t0,
    );
    let mut client = Client {
        now: t0,
        t0,
        open: false,
        next_dial: 0,
        last_attempt: 0,
    };
    while let Some(code) = byte() {
        let operand = byte().unwrap_or_default();
        let op = Op::decode(code, operand, byte().unwrap_or_default());
        if client.apply(&mut redial, op).is_some() {
            // The session failed: the engine drops its schedule.
            return;
        }
    }
});

/// One operation: its opcode byte modulo the number of kinds, then two operand bytes.
#[derive(Debug)]
enum Op {
    /// `plan`, with the server heard `heard` tenths of a second before now (0: not
    /// heard; past 128, after now), the attempt in progress still connecting or not.
    Plan { heard: u8, connecting: bool },
    /// A new attempt starts.
    Started,
    /// The attempt's connection is up: `next_hello`.
    NextHello,
    /// The server answered with its proof.
    HeardAnswer,
    /// The attempt gave the session a connection.
    Connected,
    /// The attempt was refused for good.
    Abandoned,
    /// The attempt failed, in the way `how` says.
    Failed { how: u8 },
    /// Time passes: `ms` times `scale` milliseconds.
    Advance { ms: u8, scale: u8 },
}

impl Op {
    fn decode(code: u8, x: u8, y: u8) -> Self {
        match code % 8 {
            0 => Op::Plan {
                heard: x,
                connecting: y & 1 == 1,
            },
            1 => Op::Started,
            2 => Op::NextHello,
            3 => Op::HeardAnswer,
            4 => Op::Connected,
            5 => Op::Abandoned,
            6 => Op::Failed { how: x },
            _ => Op::Advance { ms: x, scale: y },
        }
    }
}

/// The engine's side of one client session.
struct Client {
    now: Instant,
    /// When the first HELLO went out.
    t0: Instant,
    /// The session connected once: its opening is over.
    open: bool,
    next_dial: u32,
    last_attempt: u64,
}

impl Client {
    /// Applies `op`; returns the error that failed the session, if it did.
    fn apply(&mut self, redial: &mut Redial<u32>, op: Op) -> Option<Error> {
        let now = self.now;
        match op {
            Op::Plan { heard, connecting } => {
                let ago = Duration::from_millis(u64::from(heard % 128) * 100);
                let heard = match heard {
                    0 => None,
                    1..=127 => now.checked_sub(ago),
                    _ => Some(now + ago),
                };
                let dialing = redial.dialing();
                // Heard at the opening at least; later when the control path worked again.
                let last_heard = heard.unwrap_or(self.t0);
                if let Plan::Restart(dial) = redial.plan(heard, last_heard, now, |_| connecting) {
                    assert_eq!(Some(dial), dialing, "restarted an attempt not in progress");
                    self.start(redial);
                }
            }
            Op::Started => self.start(redial),
            Op::NextHello => match redial.next_hello(now) {
                Ok(hello) => {
                    assert!(
                        hello.attempt > self.last_attempt,
                        "attempt numbers went back"
                    );
                    self.last_attempt = hello.attempt;
                    if hello.opening.is_some() {
                        assert!(!self.open, "a retried opening after the session opened");
                        assert!(
                            now.duration_since(self.t0) < OPENING_WINDOW,
                            "a retried opening {:?} after the first",
                            now.duration_since(self.t0)
                        );
                    }
                }
                Err(e) => return Some(e),
            },
            Op::HeardAnswer => redial.heard_answer(),
            Op::Connected => {
                redial.connected(now);
                self.open = true;
            }
            Op::Abandoned => redial.abandoned(),
            Op::Failed { how } => {
                let failure = match how % 5 {
                    0 => Failure::Connect(io::ErrorKind::ConnectionRefused.into()),
                    1 => Failure::Timeout,
                    2 => Failure::Cut(io::ErrorKind::ConnectionReset.into()),
                    3 => Failure::Busy,
                    _ => Failure::Fatal(Error::UnknownSession),
                };
                let error = redial.failed(failure, now);
                assert!(
                    !self.open || error.is_none(),
                    "a reconnection failed an open session: {error:?}"
                );
                return error;
            }
            Op::Advance { ms, scale } => {
                self.now += Duration::from_millis(u64::from(ms) * u64::from(scale % 64 + 1));
            }
        }
        None
    }

    fn start(&mut self, redial: &mut Redial<u32>) {
        self.next_dial += 1;
        redial.started(self.next_dial, self.now);
    }
}
