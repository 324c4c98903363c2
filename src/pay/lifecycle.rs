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
//! The work list is the store's due index ([`crate::store::schedule`]): every
//! order write keeps the time its next step is due, so a pass reads only
//! what is due, earliest first, and a flood of junk orders that are not due
//! costs it nothing. Orders WeChat issued a prepay for (they may hold money)
//! wait in their own queue, junk that only needs a close in another, and
//! refunds still processing in a third; each pass gives the three turns in
//! rotation, so thousands of expired junk orders being closed delay a
//! query of a paid order or a refund by at most two steps of the pass that
//! takes it up. A pass does at most [`PASS_SECONDS`] of work before it reads
//! the index again, so what falls due meanwhile waits at most that long.
//! All steps together stay under `orders.queries_per_second`, so a restart
//! after a long outage catches up without a burst at WeChat.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::notify::Checked;
use super::{PayError, Payments};
use crate::clock::Clock;
use crate::store::schedule::Queue;
use crate::store::{NotifyRecord, NotifySource, OrderStatus, Refund};
use crate::wechat::client::WechatError;
use crate::wechat::gateway::Queried;

pub use crate::store::schedule::{
    next_step, Step, CLOSE_FAILED, CLOSE_RETRY, LAST_QUERY_BEFORE_EXPIRY, QUERIED, QUERY_AFTER,
};

/// How often the work list is looked at.
const TICK: Duration = Duration::from_secs(5);

/// A pass takes at most this many seconds' worth of steps (at the pace),
/// then the index is read again: work that fell due meanwhile waits at
/// most this long.
pub const PASS_SECONDS: u32 = 5;

/// The most due-index entries read per queue and pass. Only entries the
/// index holds early (orders from before orders carried an expiry, with
/// `orders.expire_minutes` other than its default) are read and skipped;
/// this bounds what they can cost.
const SCAN_LIMIT: usize = 10_000;

/// The most refunds read per pass.
const REFUND_LIST: usize = 10_000;

/// One unit of work of a pass.
enum Work {
    Order(Step, String),
    Refund(Refund),
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

    /// The most steps one pass takes.
    pub fn pass_steps(&self) -> usize {
        (self.queries_per_second * PASS_SECONDS) as usize
    }

    /// Does whatever is due, then waits for the next tick (or for the
    /// clock to move); a full pass is followed by the next at once. Runs
    /// until aborted.
    pub async fn run(self: Arc<Self>) {
        loop {
            let full = match self.tick().await {
                Ok(steps) => steps >= self.pass_steps(),
                Err(e) => {
                    tracing::warn!(error = %e, "order lifecycle: cannot read the due orders");
                    false
                }
            };
            if full {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = self.clock.moved() => {}
            }
        }
    }

    /// One pass: the due steps of each queue, earliest due first, taken in
    /// turns (prepaid orders, unpaid orders, refunds), paced at
    /// `queries_per_second`, at most [`Lifecycle::pass_steps`]. Returns
    /// how many steps ran.
    pub async fn tick(&self) -> Result<usize, PayError> {
        let _one_pass = self.pass.lock().await;
        let now = self.clock.now_ms();
        let budget = self.pass_steps();
        let mut queues: Vec<VecDeque<Work>> = Vec::new();
        for queue in Queue::ALL {
            // An entry may be early (see `step_now`): it is skipped, and the
            // scan goes on past it, up to SCAN_LIMIT entries.
            let due = self.pay.store.read(move |store| store.due_orders(queue, now, SCAN_LIMIT)).await?;
            let mut work = VecDeque::new();
            for (_, no) in due {
                if work.len() == budget {
                    break;
                }
                let Some(step) = self.step_now(&no, now).await? else { continue };
                work.push_back(Work::Order(step, no));
            }
            queues.push(work);
        }
        // Refunds due to be asked about: PROCESSING ones past their back-off
        // (never sooner than a minute after their last news), ABNORMAL ones
        // on their slow schedule.
        let refunds = self.pay.refunds_to_query(now, REFUND_LIST.min(budget)).await?;
        queues.push(refunds.into_iter().map(Work::Refund).collect());

        let pace = Duration::from_secs(1) / self.queries_per_second;
        let mut next_slot = tokio::time::Instant::now();
        let mut steps = 0;
        while steps < budget {
            let mut took = false;
            for queue in queues.iter_mut() {
                let Some(work) = queue.pop_front() else { continue };
                if steps == budget {
                    break;
                }
                took = true;
                tokio::time::sleep_until(next_slot).await;
                next_slot = tokio::time::Instant::now() + pace;
                steps += 1;
                self.run_step(work).await;
            }
            if !took {
                break;
            }
        }
        Ok(steps)
    }

    /// The step due for an indexed order now, with the configured default
    /// expiry (the index may hold it early: see [`crate::store::schedule::LEGACY_EXPIRY_MS`]).
    async fn step_now(&self, no: &str, now: i64) -> Result<Option<Step>, PayError> {
        let no = no.to_owned();
        let order = self.pay.store.read(move |store| store.order(&no)).await?;
        Ok(order
            .and_then(|o| next_step(&o, self.pay.expire_after_ms, now))
            .filter(|(at, _)| *at <= now)
            .map(|(_, step)| step))
    }

    async fn run_step(&self, work: Work) {
        let (result, what) = match &work {
            Work::Order(Step::Query, no) => (self.pay.query_step(no, self.clock.now_ms()).await, no.as_str()),
            Work::Order(Step::Expire, no) => (self.pay.expire_step(no, self.clock.now_ms()).await, no.as_str()),
            Work::Refund(refund) => (self.pay.refund_step(refund).await, refund.out_refund_no.as_str()),
        };
        match result {
            Ok(result) => self.pay.metrics.lifecycle(result),
            Err(e) => {
                self.pay.metrics.lifecycle("store_error");
                tracing::warn!(of = %what, error = %e, "order lifecycle step failed");
            }
        }
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
            // v3 names a missing order ORDER_NOT_EXIST (the gateway maps
            // only the names the flow branches on elsewhere).
            Err(WechatError::Business { code, .. })
                if matches!(code.as_str(), "ORDERCLOSED" | "ORDERNOTEXIST" | "ORDER_NOT_EXIST") => {}
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
                    // A close retried every minute while WeChat is down, or
                    // queries answered alike, stay one entry (with a count).
                    o.note_latest(now, kind, detail.clone())
                }
            })
            .await?;
        Ok(())
    }
}
