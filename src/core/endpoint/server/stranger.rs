//! A server handshake before its first bytes tell what the peer is: a robust-tcp client,
//! an ordinary TCP client (accepted only with `Config::accept_plain_tcp`) or a probe
//! (`core::endpoint::stranger`); and its deadline, which for a silent peer is
//! `plain_wait` when ordinary clients are accepted, the handshake timeout otherwise.

use std::hash::Hash;
use std::time::Instant;

use super::handshake::{Action, Phase};
use super::ServerEndpoint;
use crate::core::endpoint::stranger::{sniff, Sniffed};

impl<S: Copy + Eq + Hash, H: Copy + Eq> ServerEndpoint<S, H> {
    /// Whether handshake `h` waits for the first bytes that tell what its peer is (the
    /// engine peeks at them, leaving them in the stream, and calls
    /// [`on_first_bytes`](Self::on_first_bytes)).
    pub fn sniffing(&self, h: H) -> bool {
        matches!(self.phase(h), Some(Phase::Sniff { .. }))
    }

    /// Handshake `h`'s peer has sent `first` so far (its first bytes, still unread in the
    /// stream), then its end of stream if `ended`. [`Action::Wait`] with the handshake no
    /// longer [`sniffing`](Self::sniffing): read its frames, as for any handshake.
    pub fn on_first_bytes(&mut self, h: H, first: &[u8], ended: bool) -> Action<S> {
        if !self.sniffing(h) {
            return self.handshake_failed(h);
        }
        match sniff(first, ended, self.limits.accept_plain) {
            Sniffed::Wait => {
                self.set_phase(
                    h,
                    Phase::Sniff {
                        heard: !first.is_empty(),
                    },
                );
                Action::Wait
            }
            Sniffed::Frame => {
                self.set_phase(h, Phase::Hello);
                Action::Wait
            }
            Sniffed::Plain => self.end(h, Action::Plain),
            Sniffed::Probe => self.end(h, Action::Greet),
        }
    }

    /// When handshake `h`, whose connection was accepted at `accepted`, is due: a silent
    /// peer, when ordinary clients are accepted, after `plain_wait` (then it is one, of a
    /// protocol where the server speaks first); any other after the handshake timeout.
    pub fn deadline(&self, h: H, accepted: Instant) -> Instant {
        let silent = matches!(self.phase(h), Some(Phase::Sniff { heard: false }));
        accepted
            + if silent && self.limits.accept_plain {
                self.limits.plain_wait
            } else {
                self.limits.handshake_timeout
            }
    }

    /// Handshake `h`'s timer fired at `now`: [`Action::Wait`] if its
    /// [`deadline`](Self::deadline) is still ahead (its peer spoke meanwhile), the hand-over
    /// of a silent ordinary client, or the end of a handshake that took too long.
    pub fn on_deadline(&mut self, h: H, accepted: Instant, now: Instant) -> Action<S> {
        if now < self.deadline(h, accepted) {
            return Action::Wait;
        }
        let silent = matches!(self.phase(h), Some(Phase::Sniff { heard: false }));
        if silent && self.limits.accept_plain {
            return self.end(h, Action::Plain);
        }
        self.handshake_failed(h)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::core::endpoint::server::ServerLimits;
    use crate::core::endpoint::stranger::GREETING;
    use crate::core::handshake::MAGIC;

    const WAIT: Duration = Duration::from_millis(300);
    const TIMEOUT: Duration = Duration::from_secs(5);

    fn endpoint(accept_plain: bool) -> ServerEndpoint<usize, u32> {
        ServerEndpoint::new(ServerLimits {
            max_sessions: 8,
            max_sessions_per_address: 8,
            max_handshakes: 8,
            handshake_timeout: TIMEOUT,
            evictable_after: Duration::from_secs(3),
            accept_plain,
            plain_wait: WAIT,
            instance_id: None,
            announce: None,
        })
    }

    #[test]
    fn an_ordinary_client_that_speaks_first_is_handed_over_at_its_first_byte() {
        let mut ep = endpoint(true);
        ep.handshake_started(1);
        assert!(ep.sniffing(1));
        assert!(matches!(ep.on_first_bytes(1, b"G", false), Action::Plain));
        assert_eq!(ep.handshake_count(), 0, "the handshake is over");
    }

    #[test]
    fn a_silent_client_is_plain_at_plain_wait_only_when_ordinary_clients_are_welcome() {
        let t0 = Instant::now();
        let mut ep = endpoint(true);
        ep.handshake_started(1);
        assert!(matches!(ep.on_first_bytes(1, b"", false), Action::Wait));
        assert_eq!(ep.deadline(1, t0), t0 + WAIT);
        let early = t0 + WAIT - Duration::from_millis(1);
        assert!(matches!(ep.on_deadline(1, t0, early), Action::Wait));
        assert!(matches!(ep.on_deadline(1, t0, t0 + WAIT), Action::Plain));
        assert_eq!(ep.handshake_count(), 0);

        let mut ep = endpoint(false);
        ep.handshake_started(1);
        assert_eq!(ep.deadline(1, t0), t0 + TIMEOUT);
        assert!(matches!(ep.on_deadline(1, t0, t0 + TIMEOUT), Action::Close));
        assert_eq!(ep.handshake_count(), 0);
    }

    #[test]
    fn a_prefix_of_the_magic_waits_for_the_handshake_timeout() {
        let t0 = Instant::now();
        let mut ep = endpoint(true);
        ep.handshake_started(1);
        assert!(matches!(
            ep.on_first_bytes(1, &MAGIC[..2], false),
            Action::Wait
        ));
        assert!(ep.sniffing(1));
        assert_eq!(ep.deadline(1, t0), t0 + TIMEOUT);
        assert!(matches!(ep.on_deadline(1, t0, t0 + WAIT), Action::Wait));
        assert!(matches!(ep.on_first_bytes(1, &MAGIC, false), Action::Wait));
        assert!(!ep.sniffing(1), "the magic: read frames");
        assert_eq!(ep.expected(1).len(), 2, "HELLO or CONTROL");
        assert!(matches!(ep.on_deadline(1, t0, t0 + TIMEOUT), Action::Close));
    }

    #[test]
    fn without_ordinary_clients_any_byte_is_read_as_a_frame() {
        let mut ep = endpoint(false);
        ep.handshake_started(1);
        assert!(matches!(ep.on_first_bytes(1, b"GET", false), Action::Wait));
        assert!(!ep.sniffing(1));
        assert!(matches!(ep.on_garbage(1), Action::TurnAway));
    }

    #[test]
    fn a_probe_is_greeted_whatever_the_setting() {
        assert!(GREETING.starts_with(&MAGIC));
        for accept_plain in [false, true] {
            let mut ep = endpoint(accept_plain);
            ep.handshake_started(1);
            assert!(matches!(ep.on_first_bytes(1, b"", true), Action::Greet));
            assert_eq!(ep.handshake_count(), 0);
        }
    }

    #[test]
    fn bytes_for_a_handshake_past_sniffing_end_it() {
        let mut ep = endpoint(true);
        ep.handshake_started(1);
        assert!(matches!(ep.on_first_bytes(1, b"RTCP", false), Action::Wait));
        assert!(matches!(ep.on_first_bytes(1, b"G", false), Action::Close));
        assert!(matches!(ep.on_first_bytes(2, b"G", false), Action::Close));
    }
}
