//! The Reconciliation view: each day's bill against the orders, and the
//! differences to look into.

use serde::Serialize;

use super::Admin;
use crate::store::bill::{BillDay, Difference};
use crate::store::StoreError;

/// The most days one page lists.
pub const MAX_DAYS_PER_PAGE: usize = 100;

/// One day, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BillDayView {
    day: String,
    /// `MATCHED`, `DIFFERENCES`, `NO_BILL`, `NOT_READY`, `FAILED`.
    state: &'static str,
    ran_at: i64,
    runs: u32,
    reconciled_at: Option<i64>,
    error: Option<String>,
    payments: u64,
    payment_fen: u64,
    refunds: u64,
    refund_fen: u64,
    difference_count: u64,
    differences: Vec<DifferenceView>,
    summary_warning: Option<String>,
}

/// One difference.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DifferenceView {
    /// `ONLY_AT_WECHAT`, `ONLY_HERE`, `AMOUNT_MISMATCH`, `STATUS_MISMATCH`.
    kind: &'static str,
    out_trade_no: String,
    out_refund_no: Option<String>,
    transaction_id: Option<String>,
    wechat_fen: Option<u64>,
    local_fen: Option<u64>,
    wechat_status: Option<String>,
    local_status: Option<String>,
}

impl From<&Difference> for DifferenceView {
    fn from(d: &Difference) -> Self {
        DifferenceView {
            kind: d.kind.as_str(),
            out_trade_no: d.out_trade_no.clone(),
            out_refund_no: d.out_refund_no.clone(),
            transaction_id: d.transaction_id.clone(),
            wechat_fen: d.wechat_fen,
            local_fen: d.local_fen,
            wechat_status: d.wechat_status.clone(),
            local_status: d.local_status.clone(),
        }
    }
}

impl From<&BillDay> for BillDayView {
    fn from(d: &BillDay) -> Self {
        BillDayView {
            day: d.day.clone(),
            state: d.state.as_str(),
            ran_at: d.ran_at,
            runs: d.runs,
            reconciled_at: d.reconciled_at,
            error: d.error.clone(),
            payments: d.payments,
            payment_fen: d.payment_fen,
            refunds: d.refunds,
            refund_fen: d.refund_fen,
            difference_count: d.difference_count,
            differences: d.differences.iter().map(DifferenceView::from).collect(),
            summary_warning: d.summary_warning.clone(),
        }
    }
}

impl Admin {
    /// Reconciled days, newest first (without their differences), and the
    /// day to pass as `before` for the next page.
    pub fn bill_days(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<BillDayView>, Option<String>), StoreError> {
        let days = self.store.bill_days(before, limit.min(MAX_DAYS_PER_PAGE))?;
        let next = (days.len() == limit).then(|| days.last().map(|d| d.day.clone())).flatten();
        let rows = days.iter().map(|d| BillDayView { differences: Vec::new(), ..BillDayView::from(d) }).collect();
        Ok((rows, next))
    }

    /// One day with its differences.
    pub fn bill_day(&self, day: &str) -> Result<Option<BillDayView>, StoreError> {
        Ok(self.store.bill_day(day)?.as_ref().map(BillDayView::from))
    }
}
