//! When to renew, and how long to wait after a failure. Pure functions of
//! the time given, so they are tested without waiting.

use std::collections::VecDeque;
use std::time::Duration;

use time::OffsetDateTime;

/// When a certificate is due: when a third of its lifetime remains (so a
/// 90-day certificate renews at 60 days, a 6-day one at 4).
pub fn renewal_time(not_before: OffsetDateTime, not_after: OffsetDateTime) -> OffsetDateTime {
    not_after - (not_after - not_before) / 3
}

/// A time in an ARI suggested window, uniformly at random (`unit` in [0, 1)),
/// as RFC 9773 asks so that renewals spread out.
pub fn in_window(start: OffsetDateTime, end: OffsetDateTime, unit: f64) -> OffsetDateTime {
    if end <= start {
        return start;
    }
    start + (end - start) * unit.clamp(0.0, 1.0)
}

/// The wait after the `failures`-th consecutive failure (1-based): the
/// schedule's entry (its last entry repeats), ±20% jitter so that many
/// servers do not retry in step. `unit` is a random number in [0, 1).
pub fn retry_delay(schedule: &[Duration], failures: u32, unit: f64) -> Duration {
    let index = (failures.max(1) as usize - 1).min(schedule.len().saturating_sub(1));
    let base = schedule.get(index).copied().unwrap_or(Duration::from_secs(60));
    base.mul_f64(0.8 + 0.4 * unit.clamp(0.0, 1.0))
}

/// A sliding-window limit, to stay under a CA's rate limits (Let's
/// Encrypt: 5 failed authorizations per name per hour, 5 certificates per
/// name set per week): at most `limit` events per `window`.
#[derive(Debug, Clone)]
pub struct RateWindow {
    limit: usize,
    window: time::Duration,
    events: VecDeque<OffsetDateTime>,
}

impl RateWindow {
    /// A window allowing `limit` events per `window`.
    pub fn new(limit: usize, window: time::Duration) -> RateWindow {
        RateWindow { limit, window, events: VecDeque::new() }
    }

    /// Records an event.
    pub fn record(&mut self, at: OffsetDateTime) {
        self.events.push_back(at);
    }

    /// The events still in the window at `now` (for storing them).
    pub fn events(&mut self, now: OffsetDateTime) -> Vec<OffsetDateTime> {
        self.expire(now);
        self.events.iter().copied().collect()
    }

    fn expire(&mut self, now: OffsetDateTime) {
        while self.events.front().is_some_and(|t| *t + self.window <= now) {
            self.events.pop_front();
        }
    }

    /// `None` if another event is allowed now, else when it will be.
    pub fn next_allowed(&mut self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.expire(now);
        if self.events.len() < self.limit {
            None
        } else {
            self.events.get(self.events.len() - self.limit).map(|t| *t + self.window)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn renews_with_a_third_of_the_lifetime_left() {
        let nb = datetime!(2026-01-01 00:00 UTC);
        assert_eq!(renewal_time(nb, nb + time::Duration::days(90)), nb + time::Duration::days(60));
        assert_eq!(renewal_time(nb, nb + time::Duration::days(6)), nb + time::Duration::days(4));
        assert_eq!(renewal_time(nb, nb + time::Duration::seconds(30)), nb + time::Duration::seconds(20));
    }

    #[test]
    fn retry_follows_the_schedule_with_jitter() {
        let s = [60, 600, 6000, 86400].map(Duration::from_secs);
        assert_eq!(retry_delay(&s, 1, 0.5), Duration::from_secs(60));
        assert_eq!(retry_delay(&s, 2, 0.5), Duration::from_secs(600));
        assert_eq!(retry_delay(&s, 4, 0.5), Duration::from_secs(86400));
        assert_eq!(retry_delay(&s, 40, 0.5), Duration::from_secs(86400));
        assert_eq!(retry_delay(&s, 1, 0.0), Duration::from_secs(48));
        assert_eq!(retry_delay(&s, 1, 0.999_999), Duration::from_secs_f64(60.0 * 1.199_999_6));
    }

    #[test]
    fn window_limits_events() {
        let t0 = datetime!(2026-01-01 00:00 UTC);
        let mut w = RateWindow::new(4, time::Duration::hours(1));
        for i in 0..4 {
            assert_eq!(w.next_allowed(t0 + time::Duration::minutes(i)), None);
            w.record(t0 + time::Duration::minutes(i));
        }
        assert_eq!(w.next_allowed(t0 + time::Duration::minutes(10)), Some(t0 + time::Duration::hours(1)));
        assert_eq!(w.next_allowed(t0 + time::Duration::minutes(60)), None);
        assert_eq!(w.events(t0 + time::Duration::minutes(62)).len(), 1);
    }

    #[test]
    fn ari_window_pick() {
        let s = datetime!(2026-01-01 00:00 UTC);
        let e = s + time::Duration::hours(10);
        assert_eq!(in_window(s, e, 0.5), s + time::Duration::hours(5));
        assert_eq!(in_window(e, s, 0.5), e);
    }
}
