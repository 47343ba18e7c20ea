//! Whether the server is reachable, as `rtcp client` and `rtcp connect` see it: one line
//! when an outage has lasted [`ANNOUNCE_AFTER`], one when it ends, with its length. A
//! cut that the session rides out in less is not worth a line (the session's own
//! reconnection line, at info, reports it).

use std::time::{Duration, Instant};

/// How long the server must stay unreachable before the outage is reported.
pub const ANNOUNCE_AFTER: Duration = Duration::from_secs(3);

/// What an observation changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// The server has been unreachable for this long.
    Unreachable(Duration),
    /// The server is reachable again after an outage of this length.
    Back(Duration),
}

/// The state of the server's reachability.
#[derive(Debug, Default)]
pub struct Outage {
    /// When the outage began, if there is one.
    since: Option<Instant>,
    /// Whether it was reported.
    announced: bool,
}

impl Outage {
    /// Takes in what was seen at `now`: `Some(true)` a session connected, `Some(false)`
    /// sessions without a connection (or openings failing) and none connected, `None`
    /// nothing to go by (no session). Returns the line to log, if any.
    pub fn observe(&mut self, now: Instant, reachable: Option<bool>) -> Option<Event> {
        match reachable? {
            false => {
                let since = *self.since.get_or_insert(now);
                let lasted = now.saturating_duration_since(since);
                if self.announced || lasted < ANNOUNCE_AFTER {
                    return None;
                }
                self.announced = true;
                Some(Event::Unreachable(lasted))
            }
            true => {
                let since = self.since.take()?;
                std::mem::take(&mut self.announced)
                    .then(|| Event::Back(now.saturating_duration_since(since)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_reported_once_when_it_lasts_and_when_it_ends() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut o = Outage::default();
        assert_eq!(o.observe(at(0), Some(true)), None);
        assert_eq!(o.observe(at(100), Some(false)), None);
        assert_eq!(o.observe(at(200), None), None);
        assert_eq!(o.observe(at(3099), Some(false)), None);
        assert_eq!(
            o.observe(at(3100), Some(false)),
            Some(Event::Unreachable(Duration::from_secs(3)))
        );
        assert_eq!(o.observe(at(9000), Some(false)), None);
        assert_eq!(
            o.observe(at(10_100), Some(true)),
            Some(Event::Back(Duration::from_secs(10)))
        );
        assert_eq!(o.observe(at(10_200), Some(true)), None);
    }

    #[test]
    fn a_short_cut_is_not_reported() {
        let t0 = Instant::now();
        let mut o = Outage::default();
        assert_eq!(o.observe(t0, Some(false)), None);
        assert_eq!(o.observe(t0 + Duration::from_secs(1), Some(true)), None);
        // The next outage counts from its own start.
        assert_eq!(o.observe(t0 + Duration::from_secs(2), Some(false)), None);
        assert_eq!(o.observe(t0 + Duration::from_secs(4), Some(false)), None);
    }
}
