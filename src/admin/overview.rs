//! The Overview view: paid and refunded today and this month, what waits,
//! what went wrong, and the last 30 days.

use serde::Serialize;

use super::Admin;
use crate::store::bill::BillState;
use crate::store::{self, day_string, Refund, RefundStatus, StoreError};

/// A count of payments (or refunds) and their sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Total {
    count: u64,
    fen: u64,
}

impl Total {
    /// `self` plus one more of `fen`, or `None` past `u64` (a corrupt store).
    fn add(self, count: u64, fen: u64) -> Option<Total> {
        Some(Total { count: self.count.checked_add(count)?, fen: self.fen.checked_add(fen)? })
    }
}

/// One day of the chart.
#[derive(Debug, Clone, Serialize)]
pub struct Day {
    date: String,
    count: u64,
    fen: u64,
}

/// The overview: today, this month, pending, problems, last 30 days.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    sandbox: bool,
    /// Paid today (Beijing), refunds not taken off.
    today: Total,
    month: Total,
    /// Refunds that went through, asked for today: with `today`, what is
    /// left of the day's takings (the page shows both, and the net).
    refunded_today: Total,
    refunded_month: Total,
    pending: u64,
    closed: u64,
    rejected_notifies_today: u64,
    rejected_notifies_30_days: u64,
    /// Days of the last 30 whose bill differs from the orders, or failed.
    reconciliation_attention: u64,
    /// Days of the last 30 reconciled at all: "all match" means something
    /// only if some were.
    reconciled_days: u64,
    days: Vec<Day>,
}

/// What [`Total::add`] overflowing is called in the error.
fn overflow(what: &'static str) -> StoreError {
    StoreError::Codec(store::codec::CodecError::Overflow(what))
}

/// The refunds that went through among `refunds`, asked for today and
/// this month. A refund counts on the day it was asked for, as the
/// reconciliation counts it (WeChat's bill lists it on that day).
fn refunded(refunds: &[Refund], today: i64, first_of_month: i64) -> Option<(Total, Total)> {
    let (mut day, mut month) = (Total::default(), Total::default());
    for r in refunds.iter().filter(|r| r.status == RefundStatus::Success) {
        let asked = store::beijing_day(r.created_at);
        if asked >= first_of_month && asked <= today {
            month = month.add(1, r.amount)?;
        }
        if asked == today {
            day = day.add(1, r.amount)?;
        }
    }
    Some((day, month))
}

impl Admin {
    /// The overview at `now_ms`.
    pub fn overview(&self, now_ms: i64) -> Result<Overview, StoreError> {
        let today = store::beijing_day(now_ms);
        let days = self.store.paid_by_day(today - 29, today)?;
        let first_of_month = {
            let date = time::Date::from_julian_day(2_440_588 + today as i32).expect("a day in range");
            today - (date.day() as i64 - 1)
        };
        let month = self
            .store
            .paid_by_day(first_of_month, today)?
            .iter()
            .try_fold(Total::default(), |t, d| t.add(d.count, d.fen))
            .ok_or(overflow("the month's paid total"))?;
        // One scan of the refunds (they are few next to orders), only on
        // this page: a per-day counter would cost every refund a write.
        let refunds = self
            .store
            .refunds_created_in(store::beijing_day_start(first_of_month), store::beijing_day_start(today + 1))?;
        let (refunded_today, refunded_month) =
            refunded(&refunds, today, first_of_month).ok_or(overflow("the month's refunded total"))?;
        let counts = self.store.status_counts()?;
        let count = |s: store::OrderStatus| counts.iter().find(|(x, _)| *x == s).map_or(0, |(_, n)| *n);
        // At most 31 days from `since` on, newest first: the same days the
        // attention count used to read on its own.
        let since = day_string(today - 30);
        let bills: Vec<_> =
            self.store.bill_days(None, 31)?.into_iter().filter(|b| b.day.as_str() >= since.as_str()).collect();
        Ok(Overview {
            sandbox: self.sandbox(),
            today: days.last().map_or(Total::default(), |d| Total { count: d.count, fen: d.fen }),
            month,
            refunded_today,
            refunded_month,
            pending: count(store::OrderStatus::Created) + count(store::OrderStatus::Prepaid),
            closed: count(store::OrderStatus::Closed),
            rejected_notifies_today: self.store.rejected_notifies(today, today)?,
            rejected_notifies_30_days: self.store.rejected_notifies(today - 29, today)?,
            reconciliation_attention: bills
                .iter()
                .filter(|b| matches!(b.state, BillState::Differences | BillState::Failed))
                .count() as u64,
            reconciled_days: bills.len() as u64,
            days: days.iter().map(|d| Day { date: day_string(d.day), count: d.count, fen: d.fen }).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refund(no: &str, amount: u64, status: RefundStatus, created_at: i64) -> Refund {
        Refund {
            out_refund_no: no.into(),
            out_trade_no: "O1".into(),
            amount,
            reason: String::new(),
            status,
            requested_by: "admin".into(),
            platform_refund_id: None,
            refund_id: None,
            created_at,
            updated_at: created_at,
            last_result: None,
            tries: 0,
            next_query_at: 0,
        }
    }

    #[test]
    fn only_refunds_that_went_through_count_on_the_day_asked() {
        let today = store::parse_day("2026-12-07").unwrap();
        let first = store::parse_day("2026-12-01").unwrap();
        let at = |day: i64, hour: i64| store::beijing_day_start(day) + hour * 3_600_000;
        let refunds = [
            refund("R1", 500, RefundStatus::Success, at(today, 0)),
            refund("R2", 300, RefundStatus::Success, at(today, 23)),
            refund("R3", 700, RefundStatus::Processing, at(today, 1)),
            refund("R4", 900, RefundStatus::Closed, at(today, 1)),
            refund("R5", 200, RefundStatus::Success, at(first, 0)),
            refund("R6", 100, RefundStatus::Success, at(first - 1, 23)),
        ];
        let (day, month) = refunded(&refunds, today, first).unwrap();
        assert_eq!(day, Total { count: 2, fen: 800 });
        assert_eq!(month, Total { count: 3, fen: 1000 });
        let huge = [refund("R1", u64::MAX, RefundStatus::Success, at(today, 0)), refunds[0].clone()];
        assert_eq!(refunded(&huge, today, first), None, "an overflow is an error, not a wrap");
    }
}
