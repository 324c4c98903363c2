//! The daily bill (对账): for each Beijing day, what reconciling WeChat's
//! bill with the orders and refunds found, and the bill itself.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `bills` | day (`yyyy-MM-dd`) | [`BillDay`] |
//! | `bill_files` | day | the bill's text, gzip (kept for `[reconcile] keep_bills_days`) |
//!
//! Day keys sort as dates, so "newest first" is a reverse scan and the
//! files past their retention are one range.

use serde::{Deserialize, Serialize};

use super::codec::{self, CodecError};
use super::{Store, StoreError};

/// The format version written by this release.
const BILL_VERSION: u8 = 1;

/// A day keeps at most this many differences (and counts the rest): a bill
/// of strangers' orders must not make one huge record.
pub const MAX_DIFFERENCES: usize = 500;

/// How a day's reconciliation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BillState {
    /// Every row matched, nothing is missing from the bill.
    Matched,
    /// At least one difference.
    Differences,
    /// WeChat has no bill for the day (no payment, no refund), and no
    /// payment or refund was recorded here either.
    NoBill,
    /// WeChat has not made the bill yet; it is asked again later.
    NotReady,
    /// The bill could not be downloaded or read; see `error`.
    Failed,
}

impl BillState {
    /// The name the admin API and page use.
    pub fn as_str(self) -> &'static str {
        match self {
            BillState::Matched => "MATCHED",
            BillState::Differences => "DIFFERENCES",
            BillState::NoBill => "NO_BILL",
            BillState::NotReady => "NOT_READY",
            BillState::Failed => "FAILED",
        }
    }
}

/// What kind of difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DifferenceKind {
    /// In WeChat's bill, unknown here.
    OnlyAtWechat,
    /// Paid (or refunded) here on that day, not in WeChat's bill.
    OnlyHere,
    /// Both know it, with different amounts.
    AmountMismatch,
    /// Both know it, in different states (paid at WeChat, unpaid here...).
    StatusMismatch,
}

impl DifferenceKind {
    /// The name the admin API and page use.
    pub fn as_str(self) -> &'static str {
        match self {
            DifferenceKind::OnlyAtWechat => "ONLY_AT_WECHAT",
            DifferenceKind::OnlyHere => "ONLY_HERE",
            DifferenceKind::AmountMismatch => "AMOUNT_MISMATCH",
            DifferenceKind::StatusMismatch => "STATUS_MISMATCH",
        }
    }
}

/// One difference between the bill and the records here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// Its kind.
    pub kind: DifferenceKind,
    /// The order.
    pub out_trade_no: String,
    /// The refund, for a refund's difference.
    pub out_refund_no: Option<String>,
    /// WeChat's transaction id, when known.
    pub transaction_id: Option<String>,
    /// The amount in the bill, fen.
    pub wechat_fen: Option<u64>,
    /// The amount here, fen.
    pub local_fen: Option<u64>,
    /// The state in the bill (`SUCCESS`, a refund's status).
    pub wechat_status: Option<String>,
    /// The state here (`PREPAID`, `CLOSED`, a refund's status).
    pub local_status: Option<String>,
}

/// The largest encoded day of reconciliation the store writes: at most
/// [`MAX_DIFFERENCES`] differences of bounded fields, and an error quoted
/// at a bounded length; checked where the record is written. (WeChat's bill
/// file itself is kept apart, bounded by the download's limit.)
pub const MAX_BILL_DAY_BYTES: usize = 1024 * 1024;

/// What [`MAX_BILL_DAY_BYTES`] is called in the error a larger write gets.
const BILL_DAY_LIMIT: &str = "the bill day's size limit (store::bill::MAX_BILL_DAY_BYTES)";

/// One day's reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillDay {
    /// The Beijing day, `yyyy-MM-dd`.
    pub day: String,
    /// Where it stands.
    pub state: BillState,
    /// The last attempt (unix ms).
    pub ran_at: i64,
    /// Attempts so far.
    pub runs: u32,
    /// The last successful reconciliation (unix ms).
    pub reconciled_at: Option<i64>,
    /// Why the last attempt failed (kept next to an earlier result).
    pub error: Option<String>,
    /// Payment rows in the bill, and their sum (fen).
    pub payments: u64,
    /// Fen.
    pub payment_fen: u64,
    /// Refund rows in the bill, and their sum (fen).
    pub refunds: u64,
    /// Fen.
    pub refund_fen: u64,
    /// Differences found (all of them, even past [`MAX_DIFFERENCES`]).
    pub difference_count: u64,
    /// The first [`MAX_DIFFERENCES`] differences.
    pub differences: Vec<Difference>,
    /// Where the bill's own summary disagrees with its rows.
    pub summary_warning: Option<String>,
}

impl BillDay {
    /// An attempt at `day` made at `ran_at` (unix ms) that has found
    /// nothing yet: FAILED until the caller says otherwise.
    pub fn attempt(day: &str, ran_at: i64) -> BillDay {
        BillDay {
            day: day.to_owned(),
            state: BillState::Failed,
            ran_at,
            runs: 0,
            reconciled_at: None,
            error: None,
            payments: 0,
            payment_fen: 0,
            refunds: 0,
            refund_fen: 0,
            difference_count: 0,
            differences: Vec::new(),
            summary_warning: None,
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        codec::encode(BILL_VERSION, self)
    }

    fn decode(bytes: &[u8]) -> Result<BillDay, CodecError> {
        match codec::split(bytes)? {
            (BILL_VERSION, payload) => codec::decode(payload),
            (other, _) => Err(CodecError::UnknownVersion(other)),
        }
    }
}

impl Store {
    /// Records a day's reconciliation and, if given, its bill (gzip);
    /// removes the bill files of days before `keep_files_from`, durably.
    /// An attempt that failed (or found the bill not ready) after an
    /// earlier success keeps that result and only notes the error.
    pub async fn put_bill_day(
        &self,
        day: BillDay,
        file: Option<Vec<u8>>,
        keep_files_from: String,
    ) -> Result<BillDay, StoreError> {
        let bytes = file.as_ref().map_or(0, Vec::len) + 4096;
        let old = self.bill_files_before(&keep_files_from)?;
        self.write(bytes, move |tx, _| {
            let stored = match tx.bills.get(day.day.as_bytes())? {
                Some(bytes) => Some(BillDay::decode(&bytes).map_err(super::tx::abort)?),
                None => None,
            };
            let failed = matches!(day.state, BillState::Failed | BillState::NotReady);
            let record = match stored {
                Some(earlier) if failed && earlier.reconciled_at.is_some() => {
                    BillDay { ran_at: day.ran_at, runs: earlier.runs + 1, error: day.error.clone(), ..earlier }
                }
                earlier => BillDay { runs: earlier.map_or(0, |e| e.runs) + 1, ..day.clone() },
            };
            tx.bills.insert(
                record.day.as_bytes(),
                super::tx::within(record.encode(), MAX_BILL_DAY_BYTES, BILL_DAY_LIMIT)?,
            )?;
            if let Some(file) = &file {
                tx.bill_files.insert(record.day.as_bytes(), file.as_slice())?;
            }
            for key in &old {
                tx.bill_files.remove(key.as_slice())?;
            }
            Ok(record)
        })
        .await
    }

    /// One day's reconciliation.
    pub fn bill_day(&self, day: &str) -> Result<Option<BillDay>, StoreError> {
        match self.trees()?.bills.get(day.as_bytes())? {
            Some(bytes) => Ok(Some(BillDay::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Reconciled days, newest first, before `before` (a day) if given.
    pub fn bill_days(&self, before: Option<&str>, limit: usize) -> Result<Vec<BillDay>, StoreError> {
        let trees = self.trees()?;
        let range = match before {
            Some(day) => trees.bills.range(..day.as_bytes()),
            None => trees.bills.range::<&[u8], _>(..),
        };
        let mut out = Vec::new();
        for entry in range.rev().take(limit) {
            out.push(BillDay::decode(&entry?.1)?);
        }
        Ok(out)
    }

    /// How many days from `from` on have differences or failed.
    pub fn bill_days_needing_attention(&self, from: &str) -> Result<u64, StoreError> {
        let mut count = 0;
        for entry in self.trees()?.bills.range(from.as_bytes()..) {
            let day = BillDay::decode(&entry?.1)?;
            count += u64::from(matches!(day.state, BillState::Differences | BillState::Failed));
        }
        Ok(count)
    }

    /// The orders created in `[from_ms, to_ms)`, oldest first (what a day's
    /// payments are looked for in: a reverse index would be one more write
    /// per payment for a once-a-day read).
    pub fn orders_created_in(&self, from_ms: i64, to_ms: i64) -> Result<Vec<super::Order>, StoreError> {
        let trees = self.trees()?;
        let range = super::tx::time_key_of(from_ms, 0)..super::tx::time_key_of(to_ms, 0);
        let mut out = Vec::new();
        for entry in trees.orders_by_time.range(range) {
            if let Some(order) = trees.order(std::str::from_utf8(&entry?.1).unwrap_or_default())? {
                out.push(order);
            }
        }
        Ok(out)
    }

    /// The refunds asked for in `[from_ms, to_ms)` (a scan of all refunds,
    /// which are few next to orders; once a day).
    pub fn refunds_created_in(&self, from_ms: i64, to_ms: i64) -> Result<Vec<super::Refund>, StoreError> {
        let mut out = Vec::new();
        for entry in self.trees()?.refunds.iter() {
            let refund = super::Refund::decode(&entry?.1)?;
            if (from_ms..to_ms).contains(&refund.created_at) {
                out.push(refund);
            }
        }
        Ok(out)
    }

    /// A day's bill as downloaded (gzip), if still kept.
    pub fn bill_file(&self, day: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.trees()?.bill_files.get(day.as_bytes())?.map(|b| b.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Mode;

    fn day(day: &str, state: BillState, at: i64) -> BillDay {
        BillDay {
            state,
            reconciled_at: matches!(state, BillState::Matched | BillState::Differences).then_some(at),
            error: (state == BillState::Failed).then(|| "down".into()),
            payments: 1,
            payment_fen: 100,
            ..BillDay::attempt(day, at)
        }
    }

    #[tokio::test]
    async fn a_failure_keeps_the_earlier_result_and_old_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Mode::Live).unwrap();
        let keep_all = String::new();
        store
            .put_bill_day(day("2026-11-01", BillState::Matched, 1), Some(b"old".to_vec()), keep_all.clone())
            .await
            .unwrap();
        store.put_bill_day(day("2026-11-02", BillState::Matched, 1), Some(b"b".to_vec()), keep_all).await.unwrap();
        let failed =
            store.put_bill_day(day("2026-11-02", BillState::Failed, 2), None, "2026-11-02".into()).await.unwrap();
        assert_eq!((failed.state, failed.runs, failed.error.as_deref()), (BillState::Matched, 2, Some("down")));
        assert_eq!(failed.reconciled_at, Some(1));
        assert_eq!(store.bill_file("2026-11-01").unwrap(), None, "past retention");
        assert_eq!(store.bill_file("2026-11-02").unwrap().unwrap(), b"b");
        let days: Vec<String> = store.bill_days(None, 10).unwrap().into_iter().map(|d| d.day).collect();
        assert_eq!(days, ["2026-11-02", "2026-11-01"]);
        assert_eq!(store.bill_days(Some("2026-11-02"), 10).unwrap().len(), 1);
        // A first attempt that fails is recorded as failed.
        let first = store.put_bill_day(day("2026-11-03", BillState::Failed, 3), None, String::new()).await.unwrap();
        assert_eq!((first.state, first.runs), (BillState::Failed, 1));
        assert_eq!(store.bill_days_needing_attention("2026-11-02").unwrap(), 1);
    }
}
