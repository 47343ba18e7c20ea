//! Liveness: heartbeats while the control path is quiet, and the silence after which the
//! connection in use counts as failed.
//!
//! TCP reports a path that died silently (a blackhole, a NAT that forgot its mapping, a
//! peer that vanished) only after minutes; rocks (seed 002) showed that heartbeats on the
//! control path detect it in seconds. An end that has heard no datagram from its peer for
//! a heartbeat interval (a third of `dead_after`) sends a REQ_ACK, which the peer answers
//! with an ACK. The client's interval is the shorter (a server waits half as long again),
//! so on an idle session the client asks once per interval, the server answers, and the
//! server's own timer never fires: one small datagram per interval each way, whichever end
//! has heartbeats configured. The same datagrams keep NAT mappings of the control path
//! alive. An end that has heard nothing from its peer (no authentic datagram, no byte
//! read from TCP, no new connection) for `dead_after` treats the connection as failed.
//!
//! A client without heartbeats (`dead_after(None)`) still makes sure, after each
//! connection, that the server can reach it: the server sends its control messages to the
//! address its client's datagrams last came from, and a client that moved (a new network,
//! a NAT that rebound it) has sent it none from the new one if its first datagram was
//! lost. Until it hears an authentic datagram from the server other than a CHALLENGE (whose
//! answer may be lost in turn), it sends the same REQ_ACK
//! a heartbeat is, 1 s after the connection, then 2 s, 4 s, and so on up to every
//! [`PROBE_MAX`]; the server answers at once, from the new address's challenge on. (The
//! simulation found a server whose writer waited forever on an ACK it asked for at the
//! client's old address.)

use std::time::{Duration, Instant};

/// How many client heartbeat intervals fit in `dead_after`: losing two in a row is not
/// yet a failure.
const HEARTBEATS_PER_SILENCE: u32 = 3;
/// The first probe of a client without heartbeats, after a connection came up; each
/// next one waits twice as long.
const PROBE_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two probes.
const PROBE_MAX: Duration = Duration::from_secs(30);

/// What one end knows about its peer's signs of life (see the module doc).
#[derive(Debug)]
pub(super) struct Liveness {
    /// The silence that fails a connection; `None`: no heartbeats of our own and no
    /// silence limit, the paper's behaviour (only TCP reports failures).
    dead_after: Option<Duration>,
    /// The heartbeat interval: a third of `dead_after` on a client, half as long again
    /// on a server.
    interval: Option<Duration>,
    /// How long the peer's datagrams may be missing (see
    /// [`datagrams_missing_at`](Self::datagrams_missing_at)).
    missing_after: Option<Duration>,
    /// When the peer was last heard from.
    last_heard: Instant,
    /// When the peer's last control datagram came (or the connection came up, which
    /// starts the wait for one anew).
    last_datagram: Instant,
    /// When this end last sent a heartbeat.
    last_heartbeat: Instant,
    /// A client without heartbeats that has not heard from its server since its
    /// connection came up: when it did, and how many probes it sent since.
    unconfirmed: Option<(Instant, u32)>,
    /// Whether this end probes (a client without heartbeats).
    probes: bool,
}

impl Liveness {
    /// The peer was just heard from (the session opened at `now`); `server` says which
    /// end this is.
    pub(super) fn new(dead_after: Option<Duration>, server: bool, now: Instant) -> Self {
        let interval = dead_after.map(|d| {
            let client = d / HEARTBEATS_PER_SILENCE;
            if server {
                client * 3 / 2
            } else {
                client
            }
        });
        Liveness {
            dead_after,
            interval,
            missing_after: dead_after.map(|d| d / HEARTBEATS_PER_SILENCE * 2),
            last_heard: now,
            last_datagram: now,
            last_heartbeat: now,
            unconfirmed: None,
            probes: !server && interval.is_none(),
        }
    }

    /// The peer showed a sign of life at `now` (bytes read from TCP).
    pub(super) fn heard(&mut self, now: Instant) {
        self.last_heard = self.last_heard.max(now);
    }

    /// A control datagram from the peer arrived at `now`: the path to us works, and, if
    /// `confirms`, the peer sends to where we are (a server's CHALLENGE does not confirm
    /// that: its answer may be lost, and then nothing else tells the server to move).
    pub(super) fn datagram(&mut self, now: Instant, confirms: bool) {
        self.heard(now);
        self.last_datagram = self.last_datagram.max(now);
        if confirms {
            self.unconfirmed = None;
        }
    }

    /// A connection came up at `now`: the peer's datagrams are expected from then on, and
    /// a client without heartbeats probes until one comes.
    pub(super) fn connected(&mut self, now: Instant) {
        self.heard(now);
        self.last_datagram = self.last_datagram.max(now);
        if self.probes {
            self.unconfirmed = Some((now, 0));
        }
    }

    /// This end sent a heartbeat (or a probe) at `now`.
    pub(super) fn heartbeat_sent(&mut self, now: Instant) {
        self.last_heartbeat = self.last_heartbeat.max(now);
        if let Some((_, sent)) = &mut self.unconfirmed {
            *sent = sent.saturating_add(1);
        }
    }

    /// When the peer was last heard from.
    pub(super) fn last_heard(&self) -> Instant {
        self.last_heard
    }

    /// When the next heartbeat is due: with heartbeats on, an interval after the later of
    /// the peer's last datagram and our last heartbeat; without, the next probe of a
    /// client that has not heard from its server since its connection came up.
    pub(super) fn next_heartbeat(&self) -> Option<Instant> {
        let Some(interval) = self.interval else {
            let (since, sent) = self.unconfirmed?;
            let wait = PROBE_FIRST.saturating_mul(1 << sent.min(5)).min(PROBE_MAX);
            return self.last_heartbeat.max(since).checked_add(wait);
        };
        let quiet_since = self.last_datagram.max(self.last_heartbeat);
        quiet_since.checked_add(interval)
    }

    /// When the peer's control datagrams count as not getting through: none for two
    /// client intervals, though a live peer's come each interval (and TCP may be fine: a
    /// network that drops UDP). Before the silence limit, so that a session moves its
    /// control messages elsewhere before it is taken for dead.
    pub(super) fn datagrams_missing_at(&self) -> Option<Instant> {
        self.last_datagram.checked_add(self.missing_after?)
    }

    /// When the peer's silence fails the connection in use, if ever.
    pub(super) fn dead_at(&self) -> Option<Instant> {
        self.last_heard.checked_add(self.dead_after?)
    }

    /// The silence limit, for the failure's description.
    pub(super) fn dead_after(&self) -> Option<Duration> {
        self.dead_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEAD: Duration = Duration::from_secs(3);

    #[test]
    fn a_client_asks_three_times_per_silence_and_a_server_less_often() {
        let t0 = Instant::now();
        let client = Liveness::new(Some(DEAD), false, t0);
        let server = Liveness::new(Some(DEAD), true, t0);
        assert_eq!(client.next_heartbeat(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(
            server.next_heartbeat(),
            Some(t0 + Duration::from_millis(1500))
        );
        assert_eq!(client.dead_at(), Some(t0 + DEAD));
        assert_eq!(
            client.datagrams_missing_at(),
            Some(t0 + Duration::from_secs(2))
        );
    }

    #[test]
    fn a_datagram_puts_the_heartbeat_off_and_bytes_keep_the_peer_alive() {
        let t0 = Instant::now();
        let mut l = Liveness::new(Some(DEAD), false, t0);
        l.datagram(t0 + Duration::from_millis(800), true);
        assert_eq!(l.next_heartbeat(), Some(t0 + Duration::from_millis(1800)));
        l.heartbeat_sent(t0 + Duration::from_secs(2));
        assert_eq!(l.next_heartbeat(), Some(t0 + Duration::from_secs(3)));
        // Bytes read count as life, not as datagrams.
        l.heard(t0 + Duration::from_secs(4));
        assert_eq!(l.dead_at(), Some(t0 + Duration::from_secs(7)));
        assert_eq!(
            l.datagrams_missing_at(),
            Some(t0 + Duration::from_millis(2800))
        );
        // An earlier report never moves a time back.
        l.heard(t0 + Duration::from_secs(1));
        assert_eq!(l.dead_at(), Some(t0 + Duration::from_secs(7)));
    }

    #[test]
    fn without_a_limit_nothing_is_due() {
        let l = Liveness::new(None, false, Instant::now());
        assert_eq!((l.next_heartbeat(), l.dead_at()), (None, None));
        assert_eq!(l.datagrams_missing_at(), None);
    }

    #[test]
    fn a_client_without_heartbeats_probes_until_its_server_is_heard_after_a_connection() {
        let t0 = Instant::now();
        let secs = |s| t0 + Duration::from_secs(s);
        let mut l = Liveness::new(None, false, t0);
        l.connected(t0);
        let mut probes = Vec::new();
        for _ in 0..8 {
            let at = l.next_heartbeat().expect("a probe");
            probes.push(at);
            l.heartbeat_sent(at);
        }
        // 1 s, then twice as long each time, up to 30 s.
        let expected = [1, 3, 7, 15, 31, 61, 91, 121].map(secs);
        assert_eq!(probes, expected);
        // Heard: no more probes until the next connection.
        l.datagram(secs(121), false);
        assert_eq!(
            l.next_heartbeat(),
            Some(secs(151)),
            "a CHALLENGE confirms nothing"
        );
        l.datagram(secs(122), true);
        assert_eq!(l.next_heartbeat(), None);
        l.connected(secs(200));
        assert_eq!(l.next_heartbeat(), Some(secs(201)));
        // A server never probes: it cannot reach a client that has not spoken.
        let mut server = Liveness::new(None, true, t0);
        server.connected(t0);
        assert_eq!(server.next_heartbeat(), None);
    }
}
