//! When an open order needs its next step: a pure function of the order.
//!
//! It lives in the store, not in [`crate::pay`], because the store keeps the
//! due-time index (`orders_due`) right on every order write, and the store
//! imports nothing above it. [`crate::pay::lifecycle`] re-exports it and
//! runs the steps.
//!
//! The index key is `queue (1) ‖ due_ms (8, BE) ‖ out_trade_no`. Queue 0
//! holds orders WeChat issued a prepay for (they may hold money: their
//! queries and closes come first), queue 1 the rest. The due time stored is
//! the earliest moment anything can be due, whatever the clock says, so the
//! lifecycle reads only what is due by a range scan, never a flood of junk.

use std::time::Duration;

use super::{Order, OrderStatus};

/// When an open order is queried, counted from its (latest) prepay.
pub const QUERY_AFTER: [Duration; 4] = [
    Duration::from_secs(5 * 60),
    Duration::from_secs(15 * 60),
    Duration::from_secs(45 * 60),
    Duration::from_secs(105 * 60),
];

/// The last query comes this long before the order expires.
pub const LAST_QUERY_BEFORE_EXPIRY: Duration = Duration::from_secs(2 * 60);

/// After a failed close, the next try waits this long.
pub const CLOSE_RETRY: Duration = Duration::from_secs(60);

/// History kind of a query's answer.
pub const QUERIED: &str = "QUERIED";
/// History kind of a close that failed.
pub const CLOSE_FAILED: &str = "CLOSE_FAILED";

/// The expiry the index assumes for orders stored before orders carried
/// one (the default of `orders.expire_minutes`). The lifecycle recomputes
/// each entry with the configured default before acting, so with another
/// setting such an order is only looked at early, never acted on early.
pub const LEGACY_EXPIRY_MS: i64 = 120 * 60_000;

/// What is due for an open order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Ask WeChat whether it was paid.
    Query,
    /// It expired: close it at WeChat, then here.
    Expire,
}

/// The lifecycle's queues in the due index, in the order they matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Queue {
    /// WeChat issued a prepay: the payer may have paid.
    Prepaid = 0,
    /// No prepay ever: nobody could pay it; only a close is due.
    Unpaid = 1,
}

impl Queue {
    /// Both queues, first one first.
    pub const ALL: [Queue; 2] = [Queue::Prepaid, Queue::Unpaid];
}

/// When `order` needs its next step, and which, seen at `now`; `None` for
/// a terminal order. Past expiry the close comes first, whatever queries
/// were missed; missed queries are one query. `default_expiry_ms` applies
/// to orders stored before expiry existed.
pub fn next_step(order: &Order, default_expiry_ms: i64, now: i64) -> Option<(i64, Step)> {
    if !matches!(order.status, OrderStatus::Created | OrderStatus::Prepaid) {
        return None;
    }
    let expiry = order.expires_at.unwrap_or(order.created_at + default_expiry_ms);
    let last = |kind: &str| order.history.iter().rev().find(|e| e.kind == kind).map(|e| e.at);
    if let Some(failed) = last(CLOSE_FAILED).filter(|at| *at >= expiry) {
        return Some((failed + CLOSE_RETRY.as_millis() as i64, Step::Expire));
    }
    let expire = Some((expiry, Step::Expire));
    if now >= expiry {
        return expire;
    }
    let Some(prepay) = order.prepay.as_ref().filter(|_| order.status == OrderStatus::Prepaid) else {
        return expire;
    };
    // Queries already made since this prepay move the schedule on.
    let done = last(QUERIED).filter(|at| *at >= prepay.obtained_at).unwrap_or(prepay.obtained_at);
    let last_chance = expiry - LAST_QUERY_BEFORE_EXPIRY.as_millis() as i64;
    let query = QUERY_AFTER
        .iter()
        .map(|after| prepay.obtained_at + after.as_millis() as i64)
        .chain([last_chance])
        .filter(|at| *at > done && *at < expiry)
        .min();
    match query {
        Some(at) => Some((at, Step::Query)),
        None => expire,
    }
}

/// The earliest time anything is due for `order`, at any clock: what the
/// index stores. (Seen from before everything, the first step not yet done
/// is the due one; once expired, the close is due from the expiry, which
/// is never earlier.)
pub fn due_at(order: &Order) -> Option<i64> {
    next_step(order, LEGACY_EXPIRY_MS, i64::MIN).map(|(at, _)| at)
}

/// The queue `order` waits in.
pub fn queue_of(order: &Order) -> Queue {
    match order.prepay {
        Some(_) => Queue::Prepaid,
        None => Queue::Unpaid,
    }
}

/// The index key of `order`, or `None` when nothing will ever be due.
pub(super) fn due_key(order: &Order) -> Option<Vec<u8>> {
    let at = due_at(order)?;
    let mut key = Vec::with_capacity(9 + order.out_trade_no.len());
    key.push(queue_of(order) as u8);
    key.extend_from_slice(&(at.max(0) as u64).to_be_bytes());
    key.extend_from_slice(order.out_trade_no.as_bytes());
    Some(key)
}

/// The range of keys of `queue` due at or before `now`.
pub(super) fn due_range(queue: Queue, now: i64) -> std::ops::Range<Vec<u8>> {
    let start = vec![queue as u8];
    let mut end = vec![queue as u8];
    end.extend_from_slice(&(now.max(0) as u64).saturating_add(1).to_be_bytes());
    start..end
}

/// Reads a key back: its due time and order number.
pub(super) fn parse_due_key(key: &[u8]) -> Option<(i64, String)> {
    let at = u64::from_be_bytes(key.get(1..9)?.try_into().ok()?);
    Some((at as i64, String::from_utf8_lossy(key.get(9..)?).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{OrderContents, Prepay};
    use crate::wechat::jsapi::{PayParams, PaySignType};

    const MIN: i64 = 60_000;

    fn order(expires_in_min: i64) -> Order {
        let contents = OrderContents { total_fee: 1, body: "b".into(), attach: String::new(), openid: "o".into() };
        let mut o = Order::new("LIFE000001".into(), contents, false, 0);
        o.expires_at = Some(expires_in_min * MIN);
        o
    }

    fn prepaid(mut o: Order, at: i64) -> Order {
        let params = PayParams {
            app_id: "wx".into(),
            time_stamp: "0".into(),
            nonce_str: "n".into(),
            package: "prepay_id=wx1".into(),
            sign_type: PaySignType::Md5,
            pay_sign: "s".into(),
        };
        o.record_prepay(Prepay { prepay_id: "wx1".into(), obtained_at: at, params }, at);
        o
    }

    #[test]
    fn the_schedule_backs_off_then_asks_once_more_before_expiry() {
        let unpaid = order(120);
        assert_eq!(next_step(&unpaid, 0, 0), Some((120 * MIN, Step::Expire)), "no prepay: only expiry");
        let mut o = prepaid(order(120), 0);
        let mut seen = Vec::new();
        while let Some((at, Step::Query)) = next_step(&o, 0, 0) {
            seen.push(at / MIN);
            o.note(at, QUERIED, "NOTPAY".into());
        }
        assert_eq!(seen, [5, 15, 45, 105, 118]);
        assert_eq!(next_step(&o, 0, 0), Some((120 * MIN, Step::Expire)));
        // A failed close is retried a minute later, not at once; a day of
        // failures stays one history entry.
        let entries = o.history.len();
        for minute in 121..121 + 24 * 60 {
            o.note_latest(minute * MIN, CLOSE_FAILED, "timeout".into());
            assert_eq!(next_step(&o, 0, minute * MIN), Some(((minute + 1) * MIN, Step::Expire)));
        }
        assert_eq!(o.history.len(), entries + 1);
        assert!(o.history.last().unwrap().detail.starts_with("1440 times: "), "{:?}", o.history.last());
        o.note(121 * MIN, CLOSE_FAILED, "timeout".into());
        assert_eq!(next_step(&o, 0, 121 * MIN), Some((122 * MIN, Step::Expire)));
        // Terminal orders have nothing due.
        o.close(122 * MIN, "x");
        assert_eq!(next_step(&o, 0, 122 * MIN), None);
        assert_eq!(due_key(&o), None, "a closed order leaves the index");
    }

    #[test]
    fn missed_queries_are_one_query_and_expiry_comes_first() {
        let o = prepaid(order(120), 0);
        // Back after 50 minutes: the earliest missed query is due now, once.
        assert_eq!(next_step(&o, 0, 50 * MIN), Some((5 * MIN, Step::Query)));
        let mut asked = o.clone();
        asked.note(50 * MIN, QUERIED, "NOTPAY".into());
        assert_eq!(next_step(&asked, 0, 50 * MIN), Some((105 * MIN, Step::Query)));
        // Back after three hours: close, do not query first.
        assert_eq!(next_step(&o, 0, 180 * MIN), Some((120 * MIN, Step::Expire)));
    }

    #[test]
    fn an_order_from_before_expiry_existed_expires_by_the_default() {
        let mut o = order(0);
        o.expires_at = None;
        assert_eq!(next_step(&o, 120 * MIN, 0), Some((120 * MIN, Step::Expire)));
        assert_eq!(due_at(&o), Some(LEGACY_EXPIRY_MS));
    }

    /// The index never says "later" when the schedule says "now": what the
    /// store keeps is at most the due time seen at any clock.
    #[test]
    fn the_indexed_due_time_is_never_late() {
        let mut o = prepaid(order(120), 0);
        for now in (0..200).map(|m| m * MIN) {
            let (at, _) = next_step(&o, 0, now).unwrap();
            assert!(due_at(&o).unwrap() <= at.max(now.min(at)), "at {now}");
            if now == 50 * MIN {
                o.note(now, QUERIED, "NOTPAY".into());
            }
        }
        let (queue, key) = (queue_of(&o), due_key(&o).unwrap());
        assert_eq!(queue, Queue::Prepaid);
        assert_eq!(parse_due_key(&key), Some((105 * MIN, "LIFE000001".to_owned())));
        assert!(due_range(Queue::Prepaid, 105 * MIN).contains(&key));
        assert!(!due_range(Queue::Prepaid, 105 * MIN - 1).contains(&key));
        assert_eq!(queue_of(&order(1)), Queue::Unpaid);
    }
}
