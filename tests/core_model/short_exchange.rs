//! A short exchange on a new session over a path with a one-way delay: the opening, a
//! request, a reply, the server's close, in virtual time, as on a wide-area path. The
//! reply's last byte comes with TCP's timing; what matters is how long end of stream takes
//! after it (issue 19, item 1).

use std::time::{Duration, Instant};

use robust_tcp::protocol::auth::{ChallengeKey, SessionKeys, CHALLENGE_KEY_LEN, NONCE_LEN};
use robust_tcp::protocol::control::{ControlKind, ControlMessage, MAX_LEN};
use robust_tcp::protocol::early;
use robust_tcp::protocol::endpoint::Unrouted;
use robust_tcp::protocol::session::{End, Limits, ReadGate, Role, Session};

use crate::pair::{CID, CLIENT_ADDR, DEAD_AFTER, SECRET, SERVER_ADDR};

const REQUEST: usize = 64;
const REPLY: usize = 8 << 10;

fn limits() -> Limits {
    Limits {
        send_buffer: 16 << 10,
        send_buffer_max: 4 << 20,
        ack_threshold: 2 << 20,
        give_up_after: None,
        dead_after: Some(DEAD_AFTER),
        linger: Duration::from_secs(60),
    }
}

fn session(end: End, cid: u32, role: Role, now: Instant) -> Session {
    let keys = SessionKeys::derive(&SECRET, &[9; NONCE_LEN], role).control;
    Session::new(end, cid, 0, limits(), keys, now)
}

/// A datagram on its way: when it arrives, at which end (0 the client, 1 the server).
struct InFlight {
    at: Instant,
    to: usize,
    bytes: Vec<u8>,
}

/// The two ends and the datagrams between them, each taking `delay` one way.
struct Path {
    now: Instant,
    delay: Duration,
    ends: [Session; 2],
    in_flight: Vec<InFlight>,
    /// The client has no CID yet: the engine has no route for the server's datagrams, and
    /// keeps them for the session that learns their CID.
    unrouted: bool,
    held: Unrouted,
    /// The CLOSE datagrams the server sent.
    server_closes: usize,
}

/// Whether the client sent its EARLY datagram with the HELLO, and if so, whether the
/// server's first datagrams reach the client's engine after it read the ANSWER or before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Early {
    NotSent,
    ReadAfterAnswer,
    ReadBeforeAnswer,
}

impl Path {
    /// Sends what end `i` has to send now; what goes elsewhere than the peer is lost.
    fn transmit(&mut self, i: usize) {
        let peer = [CLIENT_ADDR, SERVER_ADDR][1 - i];
        let mut out = [0; MAX_LEN];
        while let Some((n, to)) = self.ends[i].poll_datagram(&mut out, self.now) {
            let keys = SessionKeys::derive(&SECRET, &[9; NONCE_LEN], Role::Client).control;
            let sent = ControlMessage::open(&out[..n], &keys.recv).map(|(_, m)| m.kind);
            if i == 1 && matches!(sent, Ok(ControlKind::Close(_))) {
                self.server_closes += 1;
            }
            if to == peer {
                self.in_flight.push(InFlight {
                    at: self.now + self.delay,
                    to: 1 - i,
                    bytes: out[..n].to_vec(),
                });
            }
        }
    }

    /// When the next datagram arrives or the next timer runs out.
    fn next_event(&self) -> Option<Instant> {
        let arrival = self.in_flight.iter().map(|d| d.at).min();
        let timers = self.ends.iter().filter_map(Session::poll_timeout);
        timers.chain(arrival).min()
    }

    /// Moves the clock to the next arrival or timer, and handles what is due then.
    fn step(&mut self) {
        let next = self.next_event().expect("something is due");
        self.now = self.now.max(next);
        let now = self.now;
        let (due, later) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|d| d.at <= now);
        self.in_flight = later;
        for d in due {
            let from = [CLIENT_ADDR, SERVER_ADDR][1 - d.to];
            if d.to == 0 && self.unrouted {
                self.held.keep(CID, &d.bytes, from, now);
                continue;
            }
            // Genuine, and delivered once: it authenticates. The engine polls a session
            // after each datagram.
            let r = self.ends[d.to].handle_datagram(&d.bytes, from, now);
            assert!(r.is_ok(), "{r:?}");
            self.transmit(d.to);
        }
        for i in 0..2 {
            if self.ends[i].poll_timeout().is_some_and(|t| t <= now) {
                self.ends[i].handle_timeout(now);
            }
            self.transmit(i);
        }
    }
}

/// What a short exchange took.
struct Took {
    /// When the reply's last byte arrived, counted from the client's HELLO.
    last_byte: Duration,
    /// When the client's end of stream arrived.
    eos: Duration,
    /// How many CLOSE datagrams the server sent.
    server_closes: usize,
}

/// Runs connect, request, reply and the server's close over a path whose one-way delay is
/// `delay` (TCP's bytes and the datagrams alike).
fn exchange(delay: Duration, early: Early) -> Took {
    let start = Instant::now();
    // The client's HELLO and request leave at `start`.
    let mut client = session(End::Client(None), 0, Role::Client, start);
    let request: Vec<u8> = (0..REQUEST).map(|i| i as u8).collect();
    assert_eq!(client.write(&request, start), REQUEST);
    client.handle_sent(0, 0, REQUEST, start);
    // They arrive: the server opens the session, reads the request, replies and closes.
    let t = start + delay;
    let key = ChallengeKey::new(&[5; CHALLENGE_KEY_LEN]);
    let mut server = session(End::Server(key), CID, Role::Server, t);
    if early != Early::NotSent {
        // The EARLY datagram came with the HELLO.
        assert!(server.handle_early(CLIENT_ADDR, early::LEN, t));
    }
    server.handle_read(REQUEST, t);
    let reply: Vec<u8> = (0..REPLY).map(|i| (i * 7 + 1) as u8).collect();
    assert_eq!(server.write(&reply, t), REPLY);
    let (from, to) = server.unsent().expect("the reply to send");
    let on_tcp = server.buffered_from(from, REPLY);
    server.handle_sent(0, from, usize::try_from(to - from).expect("small"), t);
    server.close(t);
    let mut path = Path {
        now: t,
        delay,
        ends: [client, server],
        in_flight: Vec::new(),
        unrouted: true,
        held: Unrouted::default(),
        server_closes: 0,
    };
    path.transmit(1);
    // The ANSWER and the reply behind it arrive: the client learns where the server's
    // control address is, and reads the reply. The server's first datagrams arrive at the
    // same time, and are read before or after the ANSWER.
    let answered = start + 2 * delay;
    while path.next_event().is_some_and(|t| t < answered) {
        path.step();
    }
    path.now = answered;
    if early == Early::ReadBeforeAnswer {
        assert!(
            path.in_flight.iter().any(|d| d.to == 0 && d.at == answered),
            "the server's first datagrams arrive with the ANSWER"
        );
        path.step();
    }
    // What the client queued before it had a CID went nowhere (the engine polls a session
    // after every change).
    path.transmit(0);
    let now = path.now;
    path.ends[0].opened(CID, SERVER_ADDR, now);
    path.unrouted = false;
    for held in path.held.take(CID, now) {
        let r = path.ends[0].handle_datagram(held.bytes(), held.from, now);
        assert!(r.is_ok(), "{r:?}");
    }
    assert_eq!(on_tcp, reply, "every byte of the reply, in order");
    path.ends[0].handle_read(REPLY, now);
    let last_byte = now - start;
    path.transmit(0);
    while !matches!(path.ends[0].read_gate(), ReadGate::Eof) {
        assert!(
            path.now - start < Duration::from_secs(30),
            "no end of stream"
        );
        path.step();
    }
    Took {
        last_byte,
        eos: path.now - start,
        server_closes: path.server_closes,
    }
}

#[test]
fn end_of_stream_follows_the_reply_by_one_round_trip_at_most_not_a_validation() {
    // Without an EARLY datagram, the client's first datagram can leave only with the
    // ANSWER in hand (it names the CID and the server's control port), and the ANSWER
    // arrives with the reply: the server's CLOSE can reach the client at best a round trip
    // after the last byte. It must not wait for the challenge of the client's address to
    // be answered as well.
    for ms in [1, 20, 50, 150] {
        let delay = Duration::from_millis(ms);
        let took = exchange(delay, Early::NotSent);
        assert_eq!(took.last_byte, 2 * delay, "the reply with TCP's timing");
        assert!(
            took.eos - took.last_byte <= 2 * delay,
            "one-way delay {delay:?}: end of stream {:?} after the reply's last byte",
            took.eos - took.last_byte
        );
    }
}

#[test]
fn with_an_early_datagram_end_of_stream_comes_with_the_reply_and_the_close_goes_once() {
    // The client's EARLY datagram came with its HELLO: the server's CLOSE leaves with the
    // reply, to where the EARLY came from, and arrives with it. Read before the ANSWER, it
    // is kept until the session has its CID: the server need not send it again when the
    // client's first datagram comes.
    for ms in [1, 20, 50, 150] {
        let delay = Duration::from_millis(ms);
        for early in [Early::ReadAfterAnswer, Early::ReadBeforeAnswer] {
            let took = exchange(delay, early);
            assert_eq!(took.last_byte, 2 * delay, "the reply with TCP's timing");
            assert_eq!(
                took.eos, took.last_byte,
                "{early:?}, one-way delay {delay:?}"
            );
            // Past the first retransmission delay (100 ms) the timer sends it again, as
            // TCP's would; nothing else does.
            if 2 * delay < Duration::from_millis(100) {
                assert_eq!(took.server_closes, 1, "{early:?}, one-way delay {delay:?}");
            }
        }
    }
}
