//! Time, at the ground floor: now in unix milliseconds, the injectable
//! [`Clock`] that schedules run on (tests move it instead of sleeping), and
//! the calendar helpers every layer shares (RFC 3339, Beijing days: WeChat's
//! business days are Beijing days).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The time schedules run on (webhook delivery, the order lifecycle, the
/// daily bill): the real clock plus an offset, which tests move forward
/// instead of sleeping through hours of retries.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
    moved: Notify,
}

impl Clock {
    /// Now, in unix ms.
    pub fn now_ms(&self) -> i64 {
        now_ms() + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Resolves when the clock is moved.
    pub async fn moved(&self) {
        self.moved.notified().await
    }

    /// Moves time forward and wakes every worker (tests).
    pub fn advance(&self, by: Duration) {
        self.offset_ms.fetch_add(by.as_millis() as i64, Ordering::Relaxed);
        self.moved.notify_waiters();
    }
}

/// Unix ms as RFC 3339 (UTC).
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Milliseconds in a day, and Beijing's offset (dates are Beijing dates).
const DAY_MS: i64 = 86_400_000;
const BEIJING_OFFSET_MS: i64 = 8 * 3_600_000;

/// The Beijing calendar day of a unix-ms time, as days since 1970-01-01.
pub fn beijing_day(ms: i64) -> i64 {
    (ms + BEIJING_OFFSET_MS).div_euclid(DAY_MS)
}

/// The first millisecond of a Beijing day.
pub fn beijing_day_start(day: i64) -> i64 {
    day * DAY_MS - BEIJING_OFFSET_MS
}

/// A Beijing day number as `YYYY-MM-DD`.
pub fn day_string(day: i64) -> String {
    let date = time::Date::from_julian_day(2_440_588 + day as i32).expect("a day in range");
    format!("{:04}-{:02}-{:02}", date.year(), date.month() as u8, date.day())
}

/// Parses `YYYY-MM-DD` into a Beijing day number.
pub fn parse_day(text: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, format).ok().map(|d| d.to_julian_day() as i64 - 2_440_588)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beijing_days_begin_at_midnight_in_beijing() {
        // 2026-12-06 16:00 UTC is 2026-12-07 00:00 in Beijing.
        let ms = 1_796_572_800_000;
        assert_eq!(day_string(beijing_day(ms)), "2026-12-07");
        assert_eq!(day_string(beijing_day(ms - 1)), "2026-12-06");
        assert_eq!(beijing_day_start(beijing_day(ms)), ms);
        assert_eq!(parse_day("2026-12-07"), Some(beijing_day(ms)));
        assert_eq!(rfc3339(ms), "2026-12-06T16:00:00Z");
    }

    #[test]
    fn a_moved_clock_runs_ahead() {
        let clock = Clock::default();
        let before = clock.now_ms();
        clock.advance(Duration::from_secs(3600));
        assert!(clock.now_ms() - before >= 3_600_000);
    }
}
