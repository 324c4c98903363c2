//! What happens to an order nobody finishes: it is queried at WeChat on a
//! back-off schedule after its prepay (a notify can be lost, for instance
//! while PayBridge was down), once more just before it expires, and closed
//! at WeChat once it has expired. Both versions, through the gateway.
//!
//! # The order's states
//!
//! ```text
//!   CREATED ──prepay──▶ PREPAID ──notify, or query finds it paid──▶ PAID
//!      │                   │
//!      └──── expiry: closed at WeChat (or WeChat closed it) ──▶ CLOSED
//! ```
//!
//! PAID and CLOSED are terminal; each transition is one store transaction
//! with its history, notify-log and outbox entries ([`crate::store`]). A
//! payment WeChat reports for a CLOSED order (the user paid in the last
//! second) is still recorded: the money moved. A close that WeChat answers
//! with "already paid" makes PayBridge query and record the payment
//! instead.
//!
//! Refunds still PROCESSING a minute after their last news are queried
//! too (a lost refund notify), and one WeChat never received is sent again
//! under the same number.
//!
//! The work list is the store's index of open orders, so it survives a
//! restart; what is due is computed from each order's own history. Queries
//! and closes together stay under `orders.queries_per_second`, so a restart
//! after a long outage catches up without a burst at WeChat.

use std::sync::Arc;
use std::time::Duration;

use super::notify::Checked;
use super::{PayError, Payments};
use crate::clock::Clock;
use crate::store::{NotifyRecord, NotifySource, Order, OrderStatus};
use crate::wechat::client::WechatError;
use crate::wechat::gateway::Queried;

/// When an open order is queried, counted from its (latest) prepay.
pub const QUERY_AFTER: [Duration; 4] = [
    Duration::from_secs(5 * 60),
    Duration::from_secs(15 * 60),
    Duration::from_secs(45 * 60),
    Duration::from_secs(105 * 60),
];

/// The last query comes this long before the order expires.
pub const LAST_QUERY_BEFORE_EXPIRY: Duration = Duration::from_secs(2 * 60);

/// A refund still processing this long after its last news is queried.
pub const REFUND_QUERY_AFTER: Duration = Duration::from_secs(60);

/// After a failed close, the next try waits this long.
pub const CLOSE_RETRY: Duration = Duration::from_secs(60);

/// How often the work list is looked at.
const TICK: Duration = Duration::from_secs(5);

/// The most open orders looked at per tick.
const WORK_LIST: usize = 10_000;

/// History kinds the lifecycle writes.
const QUERIED: &str = "QUERIED";
const CLOSE_FAILED: &str = "CLOSE_FAILED";

/// What is due for an open order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Ask WeChat whether it was paid.
    Query,
    /// It expired: close it at WeChat, then here.
    Expire,
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

/// The background worker.
pub struct Lifecycle {
    pay: Arc<Payments>,
    clock: Arc<Clock>,
    queries_per_second: u32,
    /// One pass at a time (a test may run one while the worker wakes).
    pass: tokio::sync::Mutex<()>,
}

impl Lifecycle {
    /// The worker for `pay` on `clock` (the webhooks' clock: the events a
    /// step causes are due on the same time line); nothing runs before
    /// [`Lifecycle::run`].
    pub fn new(pay: Arc<Payments>, queries_per_second: u32, clock: Arc<Clock>) -> Arc<Lifecycle> {
        Arc::new(Lifecycle {
            pay,
            clock,
            queries_per_second: queries_per_second.max(1),
            pass: tokio::sync::Mutex::new(()),
        })
    }

    /// The clock the schedule runs on (tests move it).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Does whatever is due, then waits for the next tick (or for the
    /// clock to move). Runs until aborted.
    pub async fn run(self: Arc<Self>) {
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "order lifecycle: cannot read the open orders");
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = self.clock.moved() => {}
            }
        }
    }

    /// One pass over the open orders: every due step, oldest due first,
    /// paced at `queries_per_second`. Returns how many steps ran.
    pub async fn tick(&self) -> Result<usize, PayError> {
        let _one_pass = self.pass.lock().await;
        let now = self.clock.now_ms();
        let open = self.pay.store.read(|store| store.open_orders(WORK_LIST)).await?;
        let mut due: Vec<(i64, Step, String)> = open
            .iter()
            .filter_map(|o| {
                next_step(o, self.pay.expire_after_ms, now).map(|(at, step)| (at, step, o.out_trade_no.clone()))
            })
            .filter(|(at, _, _)| *at <= now)
            .collect();
        due.sort();
        let pace = Duration::from_secs(1) / self.queries_per_second;
        let mut next_slot = tokio::time::Instant::now();
        for (_, step, no) in &due {
            tokio::time::sleep_until(next_slot).await;
            next_slot = tokio::time::Instant::now() + pace;
            let result = match step {
                Step::Query => self.pay.query_step(no, self.clock.now_ms()).await,
                Step::Expire => self.pay.expire_step(no, self.clock.now_ms()).await,
            };
            match result {
                Ok(result) => self.pay.metrics.lifecycle(result),
                Err(e) => {
                    self.pay.metrics.lifecycle("store_error");
                    tracing::warn!(out_trade_no = %no, error = %e, "order lifecycle step failed");
                }
            }
        }
        // Refunds whose end has not come within a minute: ask WeChat.
        let refunds = self.pay.store.read(|store| store.processing_refunds(WORK_LIST)).await?;
        let stale = refunds.iter().filter(|r| r.updated_at + REFUND_QUERY_AFTER.as_millis() as i64 <= now);
        let mut steps = due.len();
        for refund in stale {
            tokio::time::sleep_until(next_slot).await;
            next_slot = tokio::time::Instant::now() + pace;
            steps += 1;
            match self.pay.refund_step(refund).await {
                Ok(result) => self.pay.metrics.lifecycle(result),
                Err(e) => {
                    self.pay.metrics.lifecycle("store_error");
                    tracing::warn!(out_refund_no = %refund.out_refund_no, error = %e, "refund query failed");
                }
            }
        }
        Ok(steps)
    }
}

impl Payments {
    /// Queries an open order; records a payment it finds exactly as a
    /// notify would be (source: query). Returns what came of it.
    async fn query_step(&self, no: &str, now: i64) -> Result<&'static str, PayError> {
        let queried = self.gateway.query(no).await;
        match queried {
            Ok(Queried::Paid { payment, raw }) => self.record_queried_payment(no, payment, raw).await,
            Ok(Queried::Closed(state)) => {
                self.close_here(no, now, &format!("WeChat says {state}: closed there")).await?;
                Ok("closed_at_wechat")
            }
            Ok(Queried::Unpaid(state)) => {
                self.note(no, now, QUERIED, format!("WeChat says {state}")).await?;
                Ok("unpaid")
            }
            Ok(Queried::NotFound) => {
                self.note(no, now, QUERIED, "WeChat has no such order".into()).await?;
                Ok("not_found")
            }
            Err(e) => {
                // Counted as a query: the schedule moves on, WeChat is not hammered.
                self.note(no, now, QUERIED, format!("query failed: {e}")).await?;
                Ok("query_error")
            }
        }
    }

    /// Closes an expired order at WeChat, then here; a payment found on the
    /// way is recorded instead.
    async fn expire_step(&self, no: &str, now: i64) -> Result<&'static str, PayError> {
        let _guard = self.locks.lock(no).await;
        match self.gateway.close(no).await {
            Ok(()) => {}
            Err(WechatError::Business { code, .. }) if code == "ORDERCLOSED" || code == "ORDERNOTEXIST" => {}
            Err(WechatError::Business { code, .. }) if code == "ORDERPAID" => {
                // The user paid at the last moment: find and record it.
                return match self.gateway.query(no).await {
                    Ok(Queried::Paid { payment, raw }) => self.record_queried_payment(no, payment, raw).await,
                    Ok(other) => {
                        self.note(no, now, CLOSE_FAILED, format!("WeChat says paid, then {other:?}")).await?;
                        Ok("close_error")
                    }
                    Err(e) => {
                        self.note(no, now, CLOSE_FAILED, format!("WeChat says paid; query failed: {e}")).await?;
                        Ok("close_error")
                    }
                };
            }
            Err(e) => {
                self.note(no, now, CLOSE_FAILED, format!("close at WeChat failed: {e}")).await?;
                return Ok("close_error");
            }
        }
        self.close_here(no, now, "expired: closed at WeChat").await?;
        tracing::info!(out_trade_no = %no, "expired order closed");
        Ok("expired")
    }

    async fn record_queried_payment(
        &self,
        no: &str,
        payment: crate::store::Payment,
        raw: Vec<u8>,
    ) -> Result<&'static str, PayError> {
        let mut record = NotifyRecord::received(&raw, super::now_ms(), None, self.sandbox);
        record.source = NotifySource::Query;
        record.verified = true;
        record.out_trade_no = Some(no.to_owned());
        record.transaction_id = Some(payment.transaction_id.clone()).filter(|t| !t.is_empty() && t.len() <= 64);
        if payment.transaction_id.is_empty() {
            return Ok("query_error");
        }
        let ack = self.settle(record, Checked::Payment(payment), None).await;
        Ok(if ack.success { "paid_by_query" } else { "query_error" })
    }

    /// Marks an open order CLOSED (nothing happens to a PAID one).
    async fn close_here(&self, no: &str, now: i64, reason: &str) -> Result<(), PayError> {
        let reason = reason.to_owned();
        self.store
            .update_order(no, move |o| {
                if matches!(o.status, OrderStatus::Created | OrderStatus::Prepaid) {
                    o.close(now, &reason);
                }
            })
            .await?;
        Ok(())
    }

    /// Adds a history entry to an open order (what was asked, what failed).
    async fn note(&self, no: &str, now: i64, kind: &'static str, detail: String) -> Result<(), PayError> {
        self.store
            .update_order(no, move |o| {
                if matches!(o.status, OrderStatus::Created | OrderStatus::Prepaid) {
                    // A close retried every minute while WeChat is down stays one entry.
                    match kind {
                        CLOSE_FAILED => o.note_latest(now, kind, detail.clone()),
                        _ => o.note(now, kind, detail.clone()),
                    }
                }
            })
            .await?;
        Ok(())
    }
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
    }
}
