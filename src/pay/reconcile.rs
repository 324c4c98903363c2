//! The daily bill (对账): WeChat's record of a day's money against ours.
//!
//! Every day after 10:00 Beijing time (WeChat makes bills from 09:00),
//! yesterday's `ALL` bill is downloaded through the gateway (v2
//! `downloadbill`, v3 `tradebill` with its SHA-1 checked), parsed, and
//! compared with the orders and refunds here:
//!
//! | in the bill | here | difference |
//! |---|---|---|
//! | a payment | no such order | only at WeChat |
//! | a payment | the order is not paid | status mismatch |
//! | a payment | paid, another amount | amount mismatch |
//! | — | paid that day (WeChat's `time_end`) | only here |
//! | a refund | no such refund | only at WeChat |
//! | a refund | another amount | amount mismatch |
//! | a refund, SUCCESS | CLOSED or ABNORMAL here (or the reverse) | status mismatch |
//! | — | a refund WeChat accepted, asked for that day | only here |
//!
//! A refund still PROCESSING on either side is not a mismatch: the bill's
//! refund rows are a snapshot and are never updated. The result, and the
//! bill itself (gzip, for `[reconcile] keep_bills_days`), are stored per
//! day ([`crate::store::bill`]). A bill WeChat has not made yet, or one
//! that cannot be downloaded, is tried again every 30 minutes, up to 48
//! times; a malformed bill is kept for audit and nothing in it counts as
//! matched. Orders and refunds of a day whose orders have moved to the
//! archive ([`crate::store::archive`]) are read from there (the days'
//! results themselves stay in the hot store). Any day can be run again from the admin page or with
//! `paybridge reconcile --date YYYY-MM-DD`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::Payments;
use crate::clock::Clock;
use crate::store::archive::{Archive, ArchiveError};
use crate::store::bill::{BillDay, BillState, Difference, DifferenceKind, MAX_DIFFERENCES};
use crate::store::{beijing_day, beijing_day_start, day_string, parse_day, Order, Refund, RefundStatus, StoreError};
use crate::wechat::bill::{self, Bill};
use crate::wechat::client::WechatError;

/// A failed or not-ready day is tried again after this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(30 * 60);

/// ... at most this many times by the schedule (an admin can always re-run).
pub const MAX_SCHEDULED_RUNS: u32 = 48;

/// Bills are asked for from this hour (Beijing) for the day before.
pub const FROM_HOUR: i64 = 10;

/// How often the schedule looks.
const TICK: Duration = Duration::from_secs(5 * 60);

/// An order paid on a day was created at most this many days before it
/// (the longest expiry an order may have is 7 days).
const PAID_WITHIN_DAYS: i64 = 8;

/// Why a day cannot be reconciled at all.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Not a `yyyy-MM-dd` day, or one in the future.
    #[error("{0}")]
    Day(String),
    /// The store failed.
    #[error("storage error: {0}")]
    Store(#[from] StoreError),
}

/// The day the schedule should reconcile at `now_ms`, given what is
/// recorded for it: yesterday, from 10:00 Beijing, unless it is done (or
/// was tried recently, or too often).
pub fn due_day(now_ms: i64, recorded: Option<&BillDay>) -> Option<String> {
    let hour = (now_ms - beijing_day_start(beijing_day(now_ms))) / 3_600_000;
    if hour < FROM_HOUR {
        return None;
    }
    let yesterday = day_string(beijing_day(now_ms) - 1);
    match recorded {
        None => Some(yesterday),
        Some(day) if day.reconciled_at.is_some() => None,
        Some(day) if day.runs >= MAX_SCHEDULED_RUNS => None,
        Some(day) if now_ms - day.ran_at < RETRY_AFTER.as_millis() as i64 => None,
        Some(_) => Some(yesterday),
    }
}

/// What is recorded here for one day.
#[derive(Debug, Default)]
pub struct Local {
    /// Orders and refunds by number, whatever their day.
    pub orders: std::collections::HashMap<String, Order>,
    /// Refunds by number.
    pub refunds: std::collections::HashMap<String, Refund>,
    /// The orders paid that day.
    pub paid: Vec<String>,
    /// The refunds WeChat accepted that were asked for that day.
    pub refunded: Vec<String>,
}

/// The Beijing day a local payment belongs to: WeChat's `time_end`
/// (`yyyyMMddHHmmss`, the bill's 交易时间), or when it was recorded here.
fn paid_day(order: &Order) -> Option<String> {
    if let Some(t) = order.time_end.as_deref().filter(|t| t.len() >= 8 && t.bytes().all(|b| b.is_ascii_digit())) {
        return Some(format!("{}-{}-{}", &t[..4], &t[4..6], &t[6..8]));
    }
    order.paid_at.map(|at| day_string(beijing_day(at)))
}

/// Compares a bill with what is recorded here; returns every difference.
pub fn compare(bill: &Bill, local: &Local) -> Vec<Difference> {
    let mut out = Vec::new();
    let blank = |kind, out_trade_no: &str| Difference {
        kind,
        out_trade_no: out_trade_no.to_owned(),
        out_refund_no: None,
        transaction_id: None,
        wechat_fen: None,
        local_fen: None,
        wechat_status: None,
        local_status: None,
    };
    let mut in_bill = HashSet::new();
    for p in &bill.payments {
        in_bill.insert(p.out_trade_no.as_str());
        let kind = match local.orders.get(&p.out_trade_no) {
            None => DifferenceKind::OnlyAtWechat,
            Some(o) if !o.status.is_paid() => DifferenceKind::StatusMismatch,
            Some(o) if o.total_fee != p.total_fee => DifferenceKind::AmountMismatch,
            Some(_) => continue,
        };
        let order = local.orders.get(&p.out_trade_no);
        out.push(Difference {
            transaction_id: Some(p.transaction_id.clone()),
            wechat_fen: Some(p.total_fee),
            local_fen: order.map(|o| o.total_fee),
            wechat_status: Some("SUCCESS".into()),
            local_status: order.map(|o| o.status.as_str().to_owned()),
            ..blank(kind, &p.out_trade_no)
        });
    }
    for no in local.paid.iter().filter(|no| !in_bill.contains(no.as_str())) {
        let Some(o) = local.orders.get(no) else { continue };
        out.push(Difference {
            transaction_id: o.transaction_id.clone(),
            local_fen: Some(o.total_fee),
            local_status: Some(o.status.as_str().to_owned()),
            ..blank(DifferenceKind::OnlyHere, no)
        });
    }
    let mut refunds_in_bill = HashSet::new();
    for r in &bill.refunds {
        refunds_in_bill.insert(r.out_refund_no.as_str());
        let here = local.refunds.get(&r.out_refund_no);
        // Either API's names, in one vocabulary (a stored bill may predate that).
        let theirs = crate::wechat::bill::normalise_refund_status(&r.status);
        let ended = |s: &str| matches!(s, "SUCCESS" | "CLOSED" | "ABNORMAL" | "FAILED");
        let kind = match here {
            None => DifferenceKind::OnlyAtWechat,
            Some(l) if l.amount != r.amount => DifferenceKind::AmountMismatch,
            Some(l) if ended(&theirs) && ended(l.status.as_str()) && theirs != l.status.as_str() => {
                DifferenceKind::StatusMismatch
            }
            Some(_) => continue,
        };
        out.push(Difference {
            out_refund_no: Some(r.out_refund_no.clone()),
            transaction_id: Some(r.transaction_id.clone()),
            wechat_fen: Some(r.amount),
            local_fen: here.map(|l| l.amount),
            wechat_status: Some(theirs),
            local_status: here.map(|l| l.status.as_str().to_owned()),
            ..blank(kind, &r.out_trade_no)
        });
    }
    for no in local.refunded.iter().filter(|no| !refunds_in_bill.contains(no.as_str())) {
        let Some(l) = local.refunds.get(no) else { continue };
        out.push(Difference {
            out_refund_no: Some(no.clone()),
            local_fen: Some(l.amount),
            local_status: Some(l.status.as_str().to_owned()),
            ..blank(DifferenceKind::OnlyHere, &l.out_trade_no)
        });
    }
    out
}

/// Runs reconciliations: on a schedule, and when asked.
pub struct Reconciler {
    pay: Arc<Payments>,
    clock: Arc<Clock>,
    keep_bills_days: u32,
    /// Where the orders of long-past days are.
    archive: Archive,
    /// One day at a time (the schedule and an admin may ask together).
    running: tokio::sync::Mutex<()>,
}

impl Reconciler {
    /// A reconciler for `pay` on `clock` (the schedule's time line; tests move it).
    pub fn new(pay: Arc<Payments>, clock: Arc<Clock>, keep_bills_days: u32, archive: Archive) -> Arc<Reconciler> {
        Arc::new(Reconciler { pay, clock, keep_bills_days, archive, running: tokio::sync::Mutex::new(()) })
    }

    /// Reconciles yesterday when due; runs until aborted.
    pub async fn run(self: Arc<Self>) {
        loop {
            let now = self.clock.now_ms();
            let yesterday = day_string(beijing_day(now) - 1);
            let recorded = self.pay.store.read(move |s| s.bill_day(&yesterday)).await;
            match recorded {
                Ok(recorded) => {
                    if let Some(day) = due_day(now, recorded.as_ref()) {
                        if let Err(e) = self.run_day(&day).await {
                            tracing::warn!(error = %e, day, "daily bill: could not reconcile");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "daily bill: cannot read the store"),
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = self.clock.moved() => {}
            }
        }
    }

    /// Downloads, compares and records one day (`yyyy-MM-dd`, not after
    /// today in Beijing). Failures to download or read the bill are
    /// recorded in the day, not returned.
    pub async fn run_day(&self, day: &str) -> Result<BillDay, ReconcileError> {
        let now = self.clock.now_ms();
        let number =
            parse_day(day).ok_or_else(|| ReconcileError::Day(format!("{day:?} is not a date (YYYY-MM-DD)")))?;
        if number > beijing_day(now) {
            return Err(ReconcileError::Day(format!("{day} has not happened yet (Beijing time)")));
        }
        let day = day_string(number);
        let _one = self.running.lock().await;
        let outcome = self.pay.gateway.bill(&day).await;
        let mut record = BillDay::attempt(&day, now);
        let mut file = None;
        let text = match outcome {
            Ok(text) => text,
            Err(WechatError::Business { code, .. }) if code == "BILL_CREATING" => {
                record.state = BillState::NotReady;
                record.error =
                    Some("WeChat has not made this bill yet (bills are ready after 10:00 the next day)".into());
                return self.save(record, None).await;
            }
            Err(e) => {
                record.error = Some(format!("the bill could not be downloaded: {e}"));
                return self.save(record, None).await;
            }
        };
        let bill = match &text {
            None => Bill::default(),
            Some(text) => {
                file = Some(bill::gzip(text));
                match bill::parse(text) {
                    Ok(bill) => bill,
                    Err(e) => {
                        record.error = Some(format!("the bill could not be read: {e}"));
                        return self.save(record, file).await;
                    }
                }
            }
        };
        let local = self.local(&bill, number).await?;
        let differences = compare(&bill, &local);
        record.state = match (&text, differences.is_empty()) {
            (_, false) => BillState::Differences,
            (None, true) => BillState::NoBill,
            (Some(_), true) => BillState::Matched,
        };
        record.reconciled_at = Some(now);
        record.payments = bill.payments.len() as u64;
        record.payment_fen = bill.payments.iter().map(|p| p.total_fee).sum();
        record.refunds = bill.refunds.len() as u64;
        record.refund_fen = bill.refunds.iter().map(|r| r.amount).sum();
        record.difference_count = differences.len() as u64;
        record.differences = differences.into_iter().take(MAX_DIFFERENCES).collect();
        record.summary_warning = bill.summary_disagreement();
        self.save(record, file).await
    }

    async fn save(&self, record: BillDay, file: Option<Vec<u8>>) -> Result<BillDay, ReconcileError> {
        let keep_from = day_string(beijing_day(self.clock.now_ms()) - i64::from(self.keep_bills_days));
        let saved = self.pay.store.put_bill_day(record, file, keep_from).await?;
        match saved.state {
            BillState::Matched | BillState::NoBill => {
                tracing::info!(day = %saved.day, payments = saved.payments, "daily bill: matched")
            }
            BillState::Differences => tracing::warn!(
                day = %saved.day, differences = saved.difference_count,
                "daily bill: WeChat's bill and PayBridge differ; see Reconciliation in the admin page"
            ),
            BillState::NotReady => tracing::info!(day = %saved.day, "daily bill: not ready at WeChat yet"),
            BillState::Failed => {
                tracing::warn!(day = %saved.day, error = saved.error.as_deref().unwrap_or(""), "daily bill: failed")
            }
        }
        self.pay.metrics.bill_reconciled(saved.state.as_str());
        Ok(saved)
    }

    /// What is recorded here that the bill of day `number` may concern.
    async fn local(&self, bill: &Bill, number: i64) -> Result<Local, ReconcileError> {
        let day = day_string(number);
        let (start, end) = (beijing_day_start(number), beijing_day_start(number + 1));
        let wanted_orders: Vec<String> = bill
            .payments
            .iter()
            .map(|p| p.out_trade_no.clone())
            .chain(bill.refunds.iter().map(|r| r.out_trade_no.clone()))
            .collect();
        let wanted_refunds: Vec<String> = bill.refunds.iter().map(|r| r.out_refund_no.clone()).collect();
        let archive = self.archive.clone();
        let local = self
            .pay
            .store
            .read(move |store| {
                let mut local = Local::default();
                let mut orders = store.orders_created_in(start - PAID_WITHIN_DAYS * 86_400_000, end)?;
                // A day long past: its orders may be in the archive (an
                // order in both is the hot one).
                let archived =
                    archive_read(|| archive.created_in(start - PAID_WITHIN_DAYS * 86_400_000, end, usize::MAX))?;
                let mut archived_refunds = Vec::new();
                for a in archived {
                    if store.order(&a.order.out_trade_no)?.is_none() {
                        archived_refunds.extend(a.refunds);
                        orders.push(a.order);
                    }
                }
                for order in orders {
                    if order.status.is_paid() && paid_day(&order).as_deref() == Some(day.as_str()) {
                        local.paid.push(order.out_trade_no.clone());
                    }
                    local.orders.insert(order.out_trade_no.clone(), order);
                }
                for no in wanted_orders {
                    if let std::collections::hash_map::Entry::Vacant(slot) = local.orders.entry(no) {
                        if let Some(order) = store.order(slot.key())? {
                            slot.insert(order);
                        } else if let Some(a) = archive_read(|| archive.find(slot.key()))? {
                            archived_refunds.extend(a.refunds);
                            slot.insert(a.order);
                        }
                    }
                }
                let mut refunds = store.refunds_created_in(start, end)?;
                // Refunds asked that day of orders archived since: WeChat
                // takes them up to a year after the payment.
                let year_before = start - 366 * 86_400_000;
                for a in archive_read(|| archive.created_in(year_before, end, usize::MAX))? {
                    if store.order(&a.order.out_trade_no)?.is_none() {
                        archived_refunds.extend(a.refunds);
                    }
                }
                refunds.extend(archived_refunds.iter().filter(|r| (start..end).contains(&r.created_at)).cloned());
                for refund in refunds {
                    // A refund WeChat refused at once never reached its books.
                    if refund.refund_id.is_some()
                        || !matches!(refund.status, RefundStatus::Closed | RefundStatus::Failed)
                    {
                        local.refunded.push(refund.out_refund_no.clone());
                    }
                    local.refunds.insert(refund.out_refund_no.clone(), refund);
                }
                let archived_by_number: std::collections::HashMap<String, Refund> =
                    archived_refunds.into_iter().map(|r| (r.out_refund_no.clone(), r)).collect();
                for no in wanted_refunds {
                    if let std::collections::hash_map::Entry::Vacant(slot) = local.refunds.entry(no) {
                        if let Some(refund) = store.refund(slot.key())? {
                            slot.insert(refund);
                        } else if let Some(refund) = archived_by_number.get(slot.key()) {
                            slot.insert(refund.clone());
                        }
                    }
                }
                Ok(local)
            })
            .await?;
        Ok(local)
    }
}

/// An archive read inside a store read: its failure carried as a store
/// error (the caller reports it as a failed day, nothing recorded wrong).
fn archive_read<T>(read: impl FnOnce() -> Result<T, ArchiveError>) -> Result<T, StoreError> {
    read().map_err(|e| match e {
        ArchiveError::Store(e) => e,
        other => StoreError::Sled(sled::Error::Io(std::io::Error::other(other.to_string()))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{OrderContents, OrderStatus};
    use crate::wechat::bill::{BillPayment, BillRefund};

    #[test]
    fn days_count_like_the_store() {
        assert_eq!(parse_day("1970-01-02"), Some(1));
        assert_eq!(day_string(parse_day("2026-11-26").unwrap()), "2026-11-26");
        assert_eq!(parse_day("2026-02-30"), None);
        assert_eq!(parse_day("26-11-2026"), None);
    }

    fn at(day: &str, hour: i64) -> i64 {
        beijing_day_start(parse_day(day).unwrap()) + hour * 3_600_000
    }

    #[test]
    fn yesterday_is_due_from_ten_beijing_until_done() {
        assert_eq!(due_day(at("2026-11-27", 9), None), None, "WeChat makes bills from 09:00; ask after 10:00");
        assert_eq!(due_day(at("2026-11-27", 10), None).as_deref(), Some("2026-11-26"));
        let mut day =
            BillDay { state: BillState::NotReady, runs: 1, ..BillDay::attempt("2026-11-26", at("2026-11-27", 10)) };
        assert_eq!(due_day(at("2026-11-27", 10) + 60_000, Some(&day)), None, "tried a minute ago");
        assert_eq!(due_day(at("2026-11-27", 11), Some(&day)).as_deref(), Some("2026-11-26"));
        day.runs = MAX_SCHEDULED_RUNS;
        assert_eq!(due_day(at("2026-11-27", 11), Some(&day)), None, "gave up; an admin can re-run");
        day.runs = 1;
        day.reconciled_at = Some(1);
        assert_eq!(due_day(at("2026-11-27", 23), Some(&day)), None, "done");
    }

    fn order(no: &str, fen: u64, status: OrderStatus, time_end: Option<&str>) -> Order {
        let contents = OrderContents { total_fee: fen, body: "b".into(), attach: "".into(), openid: "o".into() };
        let mut o = Order::new(no.into(), contents, false, 0);
        o.status = status;
        o.time_end = time_end.map(str::to_owned);
        o
    }

    fn payment(no: &str, fen: u64) -> BillPayment {
        BillPayment {
            time: "2026-11-26 12:00:00".into(),
            appid: "wx".into(),
            mch_id: "1".into(),
            transaction_id: format!("T{no}"),
            out_trade_no: no.into(),
            openid: "o".into(),
            total_fee: fen,
            settlement_fee: fen,
            fee: "0".into(),
            body: "b".into(),
        }
    }

    #[test]
    fn each_kind_of_difference() {
        let mut local = Local::default();
        for o in [
            order("MATCHED", 100, OrderStatus::Paid, Some("20261126120000")),
            order("UNPAID", 100, OrderStatus::Prepaid, None),
            order("OTHERFEE", 100, OrderStatus::Paid, Some("20261126120000")),
            order("NOTINBILL", 300, OrderStatus::PartiallyRefunded, Some("20261126235959")),
        ] {
            local.orders.insert(o.out_trade_no.clone(), o);
        }
        local.paid = vec!["MATCHED".into(), "OTHERFEE".into(), "NOTINBILL".into()];
        let refund = |no: &str, amount, status| Refund {
            out_refund_no: no.into(),
            out_trade_no: "MATCHED".into(),
            amount,
            reason: String::new(),
            status,
            requested_by: "admin".into(),
            platform_refund_id: None,
            refund_id: Some("5030".into()),
            created_at: 0,
            updated_at: 0,
            last_result: None,
            tries: 0,
            next_query_at: 0,
        };
        for r in [
            refund("R-OK", 10, RefundStatus::Success),
            refund("R-PROCESSING", 10, RefundStatus::Processing),
            refund("R-CLOSED", 10, RefundStatus::Closed),
            refund("R-HERE", 10, RefundStatus::Success),
        ] {
            local.refunds.insert(r.out_refund_no.clone(), r);
        }
        local.refunded = vec!["R-OK".into(), "R-PROCESSING".into(), "R-CLOSED".into(), "R-HERE".into()];
        let bill_refund = |no: &str, amount| BillRefund {
            time: "2026-11-26 13:00:00".into(),
            transaction_id: "TMATCHED".into(),
            out_trade_no: "MATCHED".into(),
            refund_id: "5030".into(),
            out_refund_no: no.into(),
            amount,
            status: "SUCCESS".into(),
            total_fee: 100,
        };
        let bill = Bill {
            payments: vec![
                payment("MATCHED", 100),
                payment("UNPAID", 100),
                payment("OTHERFEE", 90),
                payment("STRANGER", 5),
            ],
            refunds: vec![
                bill_refund("R-OK", 10),
                bill_refund("R-PROCESSING", 10),
                bill_refund("R-CLOSED", 10),
                bill_refund("R-BIGGER", 20),
            ],
            summary: Default::default(),
        };
        let found: Vec<(DifferenceKind, String, Option<String>)> =
            compare(&bill, &local).into_iter().map(|d| (d.kind, d.out_trade_no, d.out_refund_no)).collect();
        use DifferenceKind::*;
        let refund_diff = |kind, no: &str| (kind, "MATCHED".to_owned(), Some(no.to_owned()));
        assert_eq!(
            found,
            vec![
                (StatusMismatch, "UNPAID".to_owned(), None),
                (AmountMismatch, "OTHERFEE".to_owned(), None),
                (OnlyAtWechat, "STRANGER".to_owned(), None),
                (OnlyHere, "NOTINBILL".to_owned(), None),
                refund_diff(StatusMismatch, "R-CLOSED"),
                refund_diff(OnlyAtWechat, "R-BIGGER"),
                refund_diff(OnlyHere, "R-HERE"),
            ]
        );
        let matched = Bill { payments: vec![payment("MATCHED", 100)], ..Bill::default() };
        let only_matched = Local { paid: vec!["MATCHED".into()], refunded: Vec::new(), ..local };
        assert_eq!(compare(&matched, &only_matched), Vec::new());
    }

    #[test]
    fn a_payment_belongs_to_the_day_wechat_says() {
        let mut o = order("A", 1, OrderStatus::Paid, Some("20261126235959"));
        // Recorded here a few seconds into the next day.
        o.paid_at = Some(at("2026-11-27", 0) + 5_000);
        assert_eq!(paid_day(&o).as_deref(), Some("2026-11-26"));
        o.time_end = None;
        assert_eq!(paid_day(&o).as_deref(), Some("2026-11-27"));
    }
}
