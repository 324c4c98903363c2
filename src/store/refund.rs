//! Refunds: each one a record of its own, and on the order the sums that
//! keep every refund within what was paid.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `refunds` | out_refund_no | [`Refund`] |
//! | `refunds_by_order` | out_trade_no ‖ 0x00 ‖ out_refund_no | empty |
//! | `refunds_processing` | out_refund_no | when it is next queried (unix ms, 8 bytes big-endian): the refunds still watched |
//!
//! A refund is created in the same transaction that reserves its amount on
//! the order (`refund_pending_fee`), after checking that what is refunded,
//! what is being refunded and the new amount together do not exceed the
//! paid amount. The one writer thread applies transactions one after the
//! other, so twenty concurrent requests cannot together refund more than
//! was paid. A refund's end (WeChat's SUCCESS or CLOSED, or PayBridge's
//! FAILED when WeChat refused it) moves the amount from pending to refunded
//! (or releases it), moves the order to PARTIALLY_REFUNDED or REFUNDED, and
//! writes the platform's event, again in one transaction; a repeated end
//! changes nothing.
//!
//! ABNORMAL is not an end: the money went back to the merchant's account and
//! someone may still complete the refund in the merchant platform, so the
//! amount stays reserved and the refund stays watched (queried on a slow
//! schedule) until WeChat reports SUCCESS or CLOSED, or its watch is given up.
//!
//! The watched refunds' index carries each one's due time, so the lifecycle
//! reads what is due ([`Store::refunds_to_query`]) without decoding the rest.

use serde::{Deserialize, Serialize};

use super::codec::{self, CodecError};
use super::platform::EventKind;
use super::tx::{prefixed_key, within};
use super::{OrderStatus, Store, StoreError, SMALL_WRITE};

/// The format version written by this release (1: before `tries` and
/// `next_query_at`).
const REFUND_VERSION: u8 = 2;

/// The most refunds one order may have (WeChat's limit).
pub const MAX_REFUNDS_PER_ORDER: usize = 50;

/// The history entry each refund request leaves on its order.
const REFUND_REQUESTED: &str = "REFUND_REQUESTED";

pub use crate::domain::RefundStatus;

/// The largest encoded refund the store writes. Every field is bounded
/// before it gets here (numbers of at most 64 characters, a reason of 80
/// bytes, WeChat's words quoted at most 100 characters); this is the last
/// bound, checked where the record is written.
pub const MAX_REFUND_BYTES: usize = 8 * 1024;

/// What [`MAX_REFUND_BYTES`] is called in the error a larger write gets.
const REFUND_LIMIT: &str = "the refund record's size limit (store::refund::MAX_REFUND_BYTES)";

/// One refund. Money is in fen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    /// Our refund number, the key (WeChat's `out_refund_no`).
    pub out_refund_no: String,
    /// The order refunded.
    pub out_trade_no: String,
    /// How much goes back.
    pub amount: u64,
    /// Shown to the payer by WeChat.
    pub reason: String,
    /// Where it is.
    pub status: RefundStatus,
    /// Who asked: `admin`, or `platform shop-a`.
    pub requested_by: String,
    /// The platform's own refund id, for a platform's refund.
    pub platform_refund_id: Option<String>,
    /// WeChat's refund id, once known.
    pub refund_id: Option<String>,
    /// When it was asked for (unix ms).
    pub created_at: i64,
    /// Last change (unix ms).
    pub updated_at: i64,
    /// What WeChat said last, for people (errors included).
    pub last_result: Option<String>,
    /// Tries in a row that got no definite answer (a timeout, `SYSTEMERROR`,
    /// a code PayBridge does not know); 0 once WeChat answers. Sets the
    /// back-off and, from a few on, "needs a look".
    pub tries: u32,
    /// While it is watched (PROCESSING or ABNORMAL): when the lifecycle next
    /// asks WeChat about it (unix ms).
    pub next_query_at: i64,
}

/// Format 1 of [`Refund`], as stored by earlier releases.
#[derive(Serialize, Deserialize)]
struct RefundV1 {
    out_refund_no: String,
    out_trade_no: String,
    amount: u64,
    reason: String,
    status: RefundStatus,
    requested_by: String,
    platform_refund_id: Option<String>,
    refund_id: Option<String>,
    created_at: i64,
    updated_at: i64,
    last_result: Option<String>,
}

impl From<RefundV1> for Refund {
    fn from(v1: RefundV1) -> Refund {
        Refund {
            out_refund_no: v1.out_refund_no,
            out_trade_no: v1.out_trade_no,
            amount: v1.amount,
            reason: v1.reason,
            status: v1.status,
            requested_by: v1.requested_by,
            platform_refund_id: v1.platform_refund_id,
            refund_id: v1.refund_id,
            created_at: v1.created_at,
            updated_at: v1.updated_at,
            last_result: v1.last_result,
            tries: 0,
            // What the lifecycle did before: a minute after the last news.
            next_query_at: v1.updated_at + 60_000,
        }
    }
}

impl Refund {
    pub(super) fn encode(&self) -> Vec<u8> {
        codec::encode(REFUND_VERSION, self)
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Refund, CodecError> {
        match codec::split(bytes)? {
            (REFUND_VERSION, payload) => codec::decode(payload),
            (1, payload) => codec::decode::<RefundV1>(payload).map(Refund::from),
            (other, _) => Err(CodecError::UnknownVersion(other)),
        }
    }

    /// Whether a person should look at it: ABNORMAL (WeChat wants it handled
    /// in the merchant platform), or PROCESSING after `after` tries in a row
    /// without a definite answer.
    pub fn needs_look(&self, after: u32) -> bool {
        match self.status {
            RefundStatus::Abnormal => true,
            RefundStatus::Processing => self.tries >= after,
            _ => false,
        }
    }
}

/// What is now known of a refund, for [`Store::update_refund`].
#[derive(Debug, Clone)]
pub struct RefundNews {
    /// Where WeChat says it is (or FAILED: refused).
    pub status: RefundStatus,
    /// WeChat's refund id, if this news carries it.
    pub refund_id: Option<String>,
    /// For people: what was said.
    pub result: String,
    /// When (unix ms).
    pub now: i64,
    /// If it stays watched (PROCESSING or ABNORMAL): when to ask next.
    pub next_query_at: i64,
    /// A try that got no definite answer (counted in [`Refund::tries`]).
    pub unanswered: bool,
    /// Ends an ABNORMAL refund whose watch is over: its amount is released
    /// and the platform told, as for CLOSED.
    pub give_up: bool,
    /// Applies only if the refund is still in this state: news from a
    /// request made in that state (a send's reply, a query's answer) must
    /// not undo what a notify recorded meanwhile.
    pub if_still: Option<RefundStatus>,
}

/// A due time as the watch index stores it.
fn due_bytes(at: i64) -> [u8; 8] {
    at.to_be_bytes()
}

/// The due time in a watch index value; an entry written by an earlier
/// release (empty) is due at once.
fn due_of(value: &[u8]) -> i64 {
    <[u8; 8]>::try_from(value).map(i64::from_be_bytes).unwrap_or(i64::MIN)
}

/// What asking for a refund came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundCreated {
    /// Recorded, its amount reserved.
    New(Refund),
    /// A refund with this number exists with the same order and amount (a retry).
    Existing(Refund),
    /// A refund with this number exists for something else.
    NumberTaken(Refund),
    /// No such order.
    NoOrder,
    /// The order is not paid (or fully refunded already).
    NotRefundable(OrderStatus),
    /// More than is left: the fen that may still be refunded.
    TooMuch(u64),
    /// The order has [`MAX_REFUNDS_PER_ORDER`] refunds already.
    TooMany,
}

impl Store {
    /// Records a refund and reserves its amount on the order, in one transaction.
    pub async fn create_refund(&self, refund: Refund) -> Result<RefundCreated, StoreError> {
        self.write(SMALL_WRITE, move |tx, id| {
            if let Some(bytes) = tx.refunds.get(refund.out_refund_no.as_bytes())? {
                let existing = Refund::decode(&bytes).map_err(super::tx::abort)?;
                let same = existing.out_trade_no == refund.out_trade_no && existing.amount == refund.amount;
                return Ok(if same { RefundCreated::Existing(existing) } else { RefundCreated::NumberTaken(existing) });
            }
            let Some(before) = tx.get_order(&refund.out_trade_no)? else { return Ok(RefundCreated::NoOrder) };
            if !matches!(before.status, OrderStatus::Paid | OrderStatus::PartiallyRefunded) {
                return Ok(RefundCreated::NotRefundable(before.status));
            }
            // Counted from the order's own history, inside the transaction.
            if before.history.iter().filter(|e| e.kind == REFUND_REQUESTED).count() >= MAX_REFUNDS_PER_ORDER {
                return Ok(RefundCreated::TooMany);
            }
            let left = before.total_fee.saturating_sub(before.refunded_fee + before.refund_pending_fee);
            if refund.amount > left {
                return Ok(RefundCreated::TooMuch(left));
            }
            let mut order = before.clone();
            order.refund_pending_fee += refund.amount;
            order.note(
                refund.created_at,
                REFUND_REQUESTED,
                format!(
                    "{} fen, {} by {}: {}",
                    refund.amount, refund.out_refund_no, refund.requested_by, refund.reason
                ),
            );
            tx.put_order(&order, &before, id)?;
            tx.refunds
                .insert(refund.out_refund_no.as_bytes(), within(refund.encode(), MAX_REFUND_BYTES, REFUND_LIMIT)?)?;
            tx.refunds_by_order.insert(prefixed_key(&refund.out_trade_no, refund.out_refund_no.as_bytes()), &[])?;
            tx.refunds_processing.insert(refund.out_refund_no.as_bytes(), &due_bytes(refund.next_query_at))?;
            Ok(RefundCreated::New(refund.clone()))
        })
        .await
    }

    /// Records what is known of a refund: its id, and either when to ask
    /// again (PROCESSING, ABNORMAL) or its end (sums, the order's status, the
    /// platform's event). A refund already ended is not changed. Returns the
    /// refund as stored.
    pub async fn update_refund(&self, out_refund_no: &str, news: RefundNews) -> Result<Option<Refund>, StoreError> {
        let no = out_refund_no.to_owned();
        self.write(SMALL_WRITE, move |tx, id| {
            let Some(bytes) = tx.refunds.get(no.as_bytes())? else { return Ok(None) };
            let mut refund = Refund::decode(&bytes).map_err(super::tx::abort)?;
            if refund.status.is_end() || news.if_still.is_some_and(|s| s != refund.status) {
                return Ok(Some(refund));
            }
            refund.refund_id = news.refund_id.clone().or(refund.refund_id);
            refund.last_result = Some(news.result.clone());
            refund.updated_at = news.now;
            refund.status = news.status;
            let watched = matches!(news.status, RefundStatus::Processing | RefundStatus::Abnormal) && !news.give_up;
            if watched {
                refund.tries = if news.unanswered { refund.tries.saturating_add(1) } else { 0 };
                refund.next_query_at = news.next_query_at;
                tx.refunds_processing.insert(no.as_bytes(), &due_bytes(refund.next_query_at))?;
            } else {
                let Some(before) = tx.get_order(&refund.out_trade_no)? else { return Ok(None) };
                let mut order = before.clone();
                order.refund_pending_fee = order.refund_pending_fee.saturating_sub(refund.amount);
                let kind = if news.status == RefundStatus::Success {
                    order.refunded_fee += refund.amount;
                    order.status = if order.refunded_fee >= order.total_fee {
                        OrderStatus::Refunded
                    } else {
                        OrderStatus::PartiallyRefunded
                    };
                    EventKind::Refunded
                } else {
                    EventKind::RefundFailed
                };
                order.note(
                    news.now,
                    &format!("REFUND_{}", news.status.as_str()),
                    format!("{} fen, {}: {}", refund.amount, refund.out_refund_no, news.result),
                );
                tx.put_order(&order, &before, id)?;
                tx.refund_event(kind, &order, &refund, id)?;
                tx.refunds_processing.remove(no.as_bytes())?;
            }
            tx.refunds.insert(no.as_bytes(), within(refund.encode(), MAX_REFUND_BYTES, REFUND_LIMIT)?)?;
            Ok(Some(refund))
        })
        .await
    }

    /// A refund by its number.
    pub fn refund(&self, out_refund_no: &str) -> Result<Option<Refund>, StoreError> {
        match self.trees()?.refunds.get(out_refund_no.as_bytes())? {
            Some(bytes) => Ok(Some(Refund::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// An order's refunds, oldest number first (at most 100: WeChat allows 50).
    pub fn refunds_for_order(&self, out_trade_no: &str) -> Result<Vec<Refund>, StoreError> {
        let trees = self.trees()?;
        let mut out = Vec::new();
        for key in trees.refunds_by_order.scan_prefix(prefixed_key(out_trade_no, &[])).keys().take(100) {
            let key = key?;
            let no = &key[out_trade_no.len() + 1..];
            if let Some(bytes) = trees.refunds.get(no)? {
                out.push(Refund::decode(&bytes)?);
            }
        }
        Ok(out)
    }

    /// The watched refunds due to be asked about at `now` (at most `limit`,
    /// the longest due first): PROCESSING ones whose back-off has passed and
    /// ABNORMAL ones due on their slow schedule. Read from the watch index
    /// and its due times, so the cost does not grow with the refunds that
    /// ended, and only due ones are decoded.
    pub fn refunds_to_query(&self, now: i64, limit: usize) -> Result<Vec<Refund>, StoreError> {
        let trees = self.trees()?;
        let mut due = Vec::new();
        for entry in trees.refunds_processing.iter() {
            let (no, value) = entry?;
            let at = due_of(&value);
            if at <= now {
                due.push((at, no));
            }
        }
        due.sort();
        let mut out = Vec::new();
        for (_, no) in due.into_iter().take(limit) {
            if let Some(bytes) = trees.refunds.get(no)? {
                out.push(Refund::decode(&bytes)?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_1_refund_reads_with_a_schedule_and_failed_is_appended() {
        let v1 = RefundV1 {
            out_refund_no: "RF1".into(),
            out_trade_no: "O1".into(),
            amount: 5,
            reason: String::new(),
            status: RefundStatus::Abnormal,
            requested_by: "admin".into(),
            platform_refund_id: None,
            refund_id: None,
            created_at: 1_000,
            updated_at: 2_000,
            last_result: None,
        };
        let read = Refund::decode(&codec::encode(1, &v1)).unwrap();
        assert_eq!((read.status, read.tries, read.next_query_at), (RefundStatus::Abnormal, 0, 62_000));
        let again = Refund::decode(&read.encode()).unwrap();
        assert_eq!(again, read);
        // Stored statuses are positions: the old four keep theirs.
        let position = |s: RefundStatus| postcard::to_stdvec(&s).unwrap();
        assert_eq!(position(RefundStatus::Abnormal), [3]);
        assert_eq!(position(RefundStatus::Failed), [4]);
        assert_eq!(RefundStatus::parse("FAILED"), None, "WeChat never says FAILED");
        assert!(RefundStatus::Failed.is_end() && !RefundStatus::Abnormal.is_end());
        assert_eq!(due_of(&due_bytes(-5)), -5);
        assert_eq!(due_of(&[]), i64::MIN, "an entry from before due times is due");
    }
}
