//! Refunds: each one a record of its own, and on the order the sums that
//! keep every refund within what was paid.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `refunds` | out_refund_no | [`Refund`] |
//! | `refunds_by_order` | out_trade_no ‖ 0x00 ‖ out_refund_no | empty |
//! | `refunds_processing` | out_refund_no | empty (the refunds not yet ended) |
//!
//! A refund is created in the same transaction that reserves its amount on
//! the order (`refund_pending_fee`), after checking that what is refunded,
//! what is being refunded and the new amount together do not exceed the
//! paid amount. The one writer thread applies transactions one after the
//! other, so twenty concurrent requests cannot together refund more than
//! was paid. A refund's end (WeChat's SUCCESS, CLOSED or ABNORMAL) moves the
//! amount from pending to refunded (or releases it), moves the order to
//! PARTIALLY_REFUNDED or REFUNDED, and writes the platform's event, again
//! in one transaction; a repeated end changes nothing.

use serde::{Deserialize, Serialize};

use super::codec::{self, CodecError};
use super::platform::EventKind;
use super::tx::prefixed_key;
use super::{OrderStatus, Store, StoreError, SMALL_WRITE};

/// The format version written by this release.
const REFUND_VERSION: u8 = 1;

/// The most refunds one order may have (WeChat's limit).
pub const MAX_REFUNDS_PER_ORDER: usize = 50;

/// The history entry each refund request leaves on its order.
const REFUND_REQUESTED: &str = "REFUND_REQUESTED";

pub use crate::domain::RefundStatus;

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
}

impl Refund {
    fn encode(&self) -> Vec<u8> {
        codec::encode(REFUND_VERSION, self)
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Refund, CodecError> {
        match codec::split(bytes)? {
            (REFUND_VERSION, payload) => codec::decode(payload),
            (other, _) => Err(CodecError::UnknownVersion(other)),
        }
    }
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
            tx.refunds.insert(refund.out_refund_no.as_bytes(), refund.encode())?;
            tx.refunds_by_order.insert(prefixed_key(&refund.out_trade_no, refund.out_refund_no.as_bytes()), &[])?;
            tx.refunds_processing.insert(refund.out_refund_no.as_bytes(), &[])?;
            Ok(RefundCreated::New(refund.clone()))
        })
        .await
    }

    /// Records what WeChat said of a refund: its id, and, when `status` is
    /// final, the end (sums, the order's status, the platform's event). A
    /// refund already ended is not changed. Returns the refund as stored.
    pub async fn update_refund(
        &self,
        out_refund_no: &str,
        status: RefundStatus,
        refund_id: Option<String>,
        result: String,
        now: i64,
    ) -> Result<Option<Refund>, StoreError> {
        let no = out_refund_no.to_owned();
        self.write(SMALL_WRITE, move |tx, id| {
            let Some(bytes) = tx.refunds.get(no.as_bytes())? else { return Ok(None) };
            let mut refund = Refund::decode(&bytes).map_err(super::tx::abort)?;
            if refund.status != RefundStatus::Processing {
                return Ok(Some(refund));
            }
            refund.refund_id = refund_id.clone().or(refund.refund_id);
            refund.last_result = Some(result.clone());
            refund.updated_at = now;
            refund.status = status;
            if status != RefundStatus::Processing {
                let Some(before) = tx.get_order(&refund.out_trade_no)? else { return Ok(None) };
                let mut order = before.clone();
                order.refund_pending_fee = order.refund_pending_fee.saturating_sub(refund.amount);
                let kind = if status == RefundStatus::Success {
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
                    now,
                    &format!("REFUND_{}", status.as_str()),
                    format!("{} fen, {}: {result}", refund.amount, refund.out_refund_no),
                );
                tx.put_order(&order, &before, id)?;
                tx.refund_event(kind, &order, &refund, id)?;
                tx.refunds_processing.remove(no.as_bytes())?;
            }
            tx.refunds.insert(no.as_bytes(), refund.encode())?;
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

    /// Refunds still processing (at most `limit`): the lifecycle asks WeChat
    /// about them. Read from their own index, so the cost does not grow with
    /// the refunds that ended.
    pub fn processing_refunds(&self, limit: usize) -> Result<Vec<Refund>, StoreError> {
        let trees = self.trees()?;
        let mut out = Vec::new();
        for no in trees.refunds_processing.iter().keys().take(limit) {
            if let Some(bytes) = trees.refunds.get(no?)? {
                out.push(Refund::decode(&bytes)?);
            }
        }
        Ok(out)
    }
}
