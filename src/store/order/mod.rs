//! The order record and its state machine.
//!
//! An order is written before WeChat is asked for a prepay id, so a payment
//! can never arrive for an order PayBridge does not know. Its history keeps
//! the steps, for the merchant and for reconciliation, within fixed bounds
//! (`history.rs`: repeats counted, details cut at [`MAX_DETAIL_BYTES`], past
//! [`MAX_HISTORY`] entries the oldest folded). The store refuses to write an
//! order over [`MAX_ORDER_BYTES`].

mod history;

use serde::{Deserialize, Serialize};

use super::codec::{self, CodecError};
use crate::domain::PayParams;
pub use crate::domain::Payment;
pub use history::{bounded, EARLIER, MAX_DETAIL_BYTES, MAX_HISTORY};

/// The format version written by this release.
pub const ORDER_VERSION: u8 = 4;

/// The largest encoded order the store writes; a bigger one is refused
/// (never truncated). The largest legal order (every field at its limit,
/// [`MAX_HISTORY`] foldable entries, 50 refunds) is well under it, and
/// sled keeps records this small inline, not as a blob file per rewrite.
pub const MAX_ORDER_BYTES: usize = 64 * 1024;

/// Where an order's amount came from: who can be trusted for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum OrderSource {
    /// The mini-program said so (`orders.accept_client_amount`: unsafe).
    #[default]
    Client,
    /// The merchant's catalogue: price × quantity, computed by PayBridge.
    Product {
        /// The product's id in `[[products]]`.
        id: String,
        /// How many.
        quantity: u32,
    },
    /// Created by a platform's backend through the signed platform API.
    Platform {
        /// The platform's id in `[[platforms]]`.
        platform: String,
        /// The platform's own order id.
        order_id: String,
    },
    /// Created from an order token a platform signed.
    Token {
        /// The platform's id in `[[platforms]]`.
        platform: String,
        /// The platform's own order id.
        order_id: String,
    },
}

impl OrderSource {
    /// For people and the admin page: `client`, `product vip-month ×2`.
    pub fn describe(&self) -> String {
        match self {
            OrderSource::Client => "client".into(),
            OrderSource::Product { id, quantity } => format!("product {id} ×{quantity}"),
            OrderSource::Platform { platform, order_id } => format!("platform {platform} order {order_id}"),
            OrderSource::Token { platform, order_id } => format!("token from {platform} for order {order_id}"),
        }
    }

    /// The platform and its order id, for orders a platform vouched for.
    pub fn platform(&self) -> Option<(&str, &str)> {
        match self {
            OrderSource::Platform { platform, order_id } | OrderSource::Token { platform, order_id } => {
                Some((platform, order_id))
            }
            OrderSource::Client | OrderSource::Product { .. } => None,
        }
    }
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    /// Stored; no prepay id yet (or the last attempt failed: retryable).
    Created,
    /// WeChat gave a prepay id; waiting for the user to pay.
    Prepaid,
    /// A verified notify (or query) says WeChat took the money.
    Paid,
    /// Closed without payment.
    Closed,
    /// Paid, and part of it refunded.
    PartiallyRefunded,
    /// Paid, and all of it refunded.
    Refunded,
}

impl OrderStatus {
    /// Every status, in index order.
    pub const ALL: [OrderStatus; 6] = [
        OrderStatus::Created,
        OrderStatus::Prepaid,
        OrderStatus::Paid,
        OrderStatus::Closed,
        OrderStatus::PartiallyRefunded,
        OrderStatus::Refunded,
    ];

    /// The upper-case name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Created => "CREATED",
            OrderStatus::Prepaid => "PREPAID",
            OrderStatus::Paid => "PAID",
            OrderStatus::Closed => "CLOSED",
            OrderStatus::PartiallyRefunded => "PARTIALLY_REFUNDED",
            OrderStatus::Refunded => "REFUNDED",
        }
    }

    /// Whether WeChat took the money (refunds since do not undo that).
    pub fn is_paid(self) -> bool {
        matches!(self, OrderStatus::Paid | OrderStatus::PartiallyRefunded | OrderStatus::Refunded)
    }

    /// Parses the API name.
    pub fn parse(name: &str) -> Option<OrderStatus> {
        OrderStatus::ALL.into_iter().find(|s| s.as_str().eq_ignore_ascii_case(name))
    }

    /// The byte that prefixes this status in the by-status index.
    pub(crate) fn index_byte(self) -> u8 {
        self as u8
    }
}

/// A prepay id obtained from WeChat and the signed `wx.requestPayment`
/// parameters given to the mini-program, kept so a repeated tap gets the same answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepay {
    /// WeChat's prepay id (valid for 2 hours).
    pub prepay_id: String,
    /// When WeChat issued it (unix ms).
    pub obtained_at: i64,
    /// The parameters returned to the mini-program.
    pub params: PayParams,
}

/// One step in an order's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEvent {
    /// When (unix ms).
    pub at: i64,
    /// What happened, e.g. `CREATED`, `PREPAY_FAILED`, `PAID`.
    pub kind: String,
    /// Details for a person (never a secret).
    pub detail: String,
}

/// What the payer asked for: the parts of an order a repeated tap must repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderContents {
    /// Amount in fen.
    pub total_fee: u64,
    /// Goods description.
    pub body: String,
    /// Merchant data.
    pub attach: String,
    /// The payer's openid.
    pub openid: String,
}

/// A merchant order. Money is in fen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The merchant's order number, the key.
    pub out_trade_no: String,
    /// Unique, increasing number; orders the indexes among equal timestamps.
    pub seq: u64,
    /// Amount in fen.
    pub total_fee: u64,
    /// Goods description sent to WeChat.
    pub body: String,
    /// Merchant data echoed by WeChat.
    pub attach: String,
    /// The payer's openid under our appid.
    pub openid: String,
    /// True for orders made in sandbox mode: no real money.
    pub sandbox: bool,
    /// Current state.
    pub status: OrderStatus,
    /// Creation time (unix ms).
    pub created_at: i64,
    /// Last change (unix ms).
    pub updated_at: i64,
    /// The latest prepay, if any.
    pub prepay: Option<Prepay>,
    /// WeChat's transaction id, once paid.
    pub transaction_id: Option<String>,
    /// WeChat's `time_end` (Beijing time, `yyyyMMddHHmmss`), once paid.
    pub time_end: Option<String>,
    /// When PayBridge learned of the payment (unix ms).
    pub paid_at: Option<i64>,
    /// The last error met while talking to WeChat about this order.
    pub last_error: Option<String>,
    /// Everything that happened, oldest first.
    pub history: Vec<OrderEvent>,
    /// Where the amount came from.
    pub source: OrderSource,
    /// After this (unix ms) the order can no longer be paid; `None`: no limit
    /// but WeChat's (a prepay id lives 2 hours).
    pub expires_at: Option<i64>,
    /// Fen refunded (refunds that succeeded).
    pub refunded_fee: u64,
    /// Fen being refunded (refunds asked for, not yet ended): reserved, so
    /// that refunds never exceed what was paid.
    pub refund_pending_fee: u64,
}

/// What older formats lack, as encoded bytes. Each version appended fields
/// at the end, so an old record followed by the encoding of the new fields'
/// defaults is a current record: version 1 lacks `source` (`Client`: variant
/// 0) and `expires_at` (`None`: 0); version 2 lacks `expires_at`; versions
/// 1 to 3 lack the two refund sums (0 each).
const MISSING_SINCE_V1: &[u8] = &[0, 0, 0, 0];
const MISSING_SINCE_V2: &[u8] = &[0, 0, 0];
const MISSING_SINCE_V3: &[u8] = &[0, 0];

/// The result of applying a payment to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentOutcome {
    /// The order moved to PAID now.
    Paid,
    /// It was already PAID by this transaction: nothing changed.
    Duplicate,
    /// The payment does not fit the order; nothing changed but the history.
    Conflict(String),
}

impl Order {
    /// A new order in `Created`; the store gives it its sequence number.
    pub fn new(out_trade_no: String, contents: OrderContents, sandbox: bool, now: i64) -> Order {
        let OrderContents { total_fee, body, attach, openid } = contents;
        Order {
            out_trade_no,
            seq: 0,
            total_fee,
            body,
            attach,
            openid,
            sandbox,
            status: OrderStatus::Created,
            created_at: now,
            updated_at: now,
            prepay: None,
            transaction_id: None,
            time_end: None,
            paid_at: None,
            last_error: None,
            history: vec![OrderEvent { at: now, kind: "CREATED".into(), detail: format!("{total_fee} fen") }],
            source: OrderSource::Client,
            expires_at: None,
            refunded_fee: 0,
            refund_pending_fee: 0,
        }
    }

    /// Whether a request for the same order number describes this same order
    /// (a repeated tap), as opposed to a different order reusing the number.
    pub fn same_contents(&self, c: &OrderContents) -> bool {
        self.total_fee == c.total_fee && self.body == c.body && self.attach == c.attach && self.openid == c.openid
    }

    /// Records a prepay id. Only an unpaid, open order takes one.
    pub fn record_prepay(&mut self, prepay: Prepay, now: i64) {
        debug_assert!(matches!(self.status, OrderStatus::Created | OrderStatus::Prepaid));
        self.event(now, "PREPAY", format!("prepay_id {}", prepay.prepay_id));
        self.prepay = Some(prepay);
        self.status = OrderStatus::Prepaid;
        self.last_error = None;
    }

    /// Closes an unpaid order.
    pub fn close(&mut self, now: i64, reason: &str) {
        debug_assert!(matches!(self.status, OrderStatus::Created | OrderStatus::Prepaid));
        self.event(now, "CLOSED", reason.to_owned());
        self.status = OrderStatus::Closed;
    }

    /// Records a failed attempt to get a prepay id; the order stays retryable.
    pub fn record_prepay_error(&mut self, error: String, now: i64) {
        let error = bounded(error, MAX_DETAIL_BYTES);
        self.note_latest(now, "PREPAY_FAILED", error.clone());
        self.last_error = Some(error);
    }

    /// Applies a verified payment. PAID happens at most once; a repeat of
    /// the same transaction is a duplicate; anything else that does not fit
    /// is a conflict recorded in the history.
    pub fn apply_payment(&mut self, p: &Payment, now: i64) -> PaymentOutcome {
        // A refunded order was paid too: a late copy of its notify changes nothing.
        if self.status.is_paid() {
            if self.transaction_id.as_deref() == Some(p.transaction_id.as_str()) {
                return PaymentOutcome::Duplicate;
            }
            let reason = format!(
                "already paid by transaction {}, notify names transaction {}",
                self.transaction_id.as_deref().unwrap_or("?"),
                p.transaction_id
            );
            self.event(now, "PAYMENT_CONFLICT", reason.clone());
            return PaymentOutcome::Conflict(reason);
        }
        if p.total_fee != self.total_fee {
            let reason = format!("amount mismatch: notify says {} fen, order is {} fen", p.total_fee, self.total_fee);
            self.event(now, "PAYMENT_CONFLICT", reason.clone());
            return PaymentOutcome::Conflict(reason);
        }
        let from = self.status;
        self.status = OrderStatus::Paid;
        self.transaction_id = Some(p.transaction_id.clone());
        self.time_end = Some(p.time_end.clone());
        self.paid_at = Some(now);
        let mut detail = format!("transaction {} at {}", p.transaction_id, p.time_end);
        if from == OrderStatus::Closed {
            detail.push_str(" (the order had been closed: WeChat took the money anyway)");
        }
        if p.openid != self.openid {
            detail.push_str(&format!(" (paid by openid {})", p.openid));
        }
        self.event(now, "PAID", detail);
        PaymentOutcome::Paid
    }

    /// Encodes the current format.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(ORDER_VERSION, self)
    }

    /// Decodes any format this release knows.
    pub fn decode(bytes: &[u8]) -> Result<Order, CodecError> {
        let with_defaults = |payload: &[u8], missing: &[u8]| codec::decode([payload, missing].concat().as_slice());
        match codec::split(bytes)? {
            (ORDER_VERSION, payload) => codec::decode(payload),
            (3, payload) => with_defaults(payload, MISSING_SINCE_V3),
            (2, payload) => with_defaults(payload, MISSING_SINCE_V2),
            (1, payload) => with_defaults(payload, MISSING_SINCE_V1),
            (other, _) => Err(CodecError::UnknownVersion(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn order() -> Order {
        let contents = OrderContents { total_fee: 100, body: "b".into(), attach: "".into(), openid: "o1".into() };
        Order::new("T0000001".into(), contents, false, 1000)
    }

    pub(super) fn payment(tx: &str, fee: u64) -> Payment {
        Payment { transaction_id: tx.into(), total_fee: fee, time_end: "20200526152550".into(), openid: "o1".into() }
    }

    #[test]
    fn paid_once_then_duplicate() {
        let mut o = order();
        assert_eq!(o.apply_payment(&payment("42", 100), 2000), PaymentOutcome::Paid);
        assert_eq!(o.status, OrderStatus::Paid);
        assert_eq!(o.paid_at, Some(2000));
        let before = o.clone();
        assert_eq!(o.apply_payment(&payment("42", 100), 3000), PaymentOutcome::Duplicate);
        assert_eq!(o, before);
    }

    #[test]
    fn amount_mismatch_and_second_transaction_conflict() {
        let mut o = order();
        assert!(matches!(o.apply_payment(&payment("42", 99), 2000), PaymentOutcome::Conflict(r) if r.contains("99")));
        assert_eq!(o.status, OrderStatus::Created);
        o.apply_payment(&payment("42", 100), 2000);
        assert!(matches!(o.apply_payment(&payment("43", 100), 3000), PaymentOutcome::Conflict(_)));
        assert_eq!(o.transaction_id.as_deref(), Some("42"));
    }

    #[test]
    fn a_refunded_order_is_not_paid_again_by_a_late_notify() {
        let mut o = order();
        o.apply_payment(&payment("42", 100), 2000);
        o.status = OrderStatus::PartiallyRefunded;
        assert_eq!(o.apply_payment(&payment("42", 100), 3000), PaymentOutcome::Duplicate);
        assert_eq!(o.status, OrderStatus::PartiallyRefunded);
        assert!(matches!(o.apply_payment(&payment("43", 100), 3000), PaymentOutcome::Conflict(_)));
    }

    #[test]
    fn encoding_round_trips_and_refuses_unknown_versions() {
        let o = order();
        let bytes = o.encode();
        assert_eq!(Order::decode(&bytes).unwrap(), o);
        let mut newer = bytes.clone();
        newer[0] = 99;
        assert!(matches!(Order::decode(&newer), Err(CodecError::UnknownVersion(99))));
    }

    #[test]
    fn older_versions_read_with_defaults() {
        let mut o = order();
        o.source = OrderSource::Product { id: "p".into(), quantity: 2 };
        o.expires_at = Some(5);
        fn len(value: &impl serde::Serialize) -> usize {
            postcard::to_stdvec(value).unwrap().len()
        }
        let refunds = len(&(o.refunded_fee, o.refund_pending_fee));
        let older = |version: u8, cut: usize| {
            let mut bytes = o.encode();
            bytes[0] = version;
            bytes.truncate(bytes.len() - cut);
            Order::decode(&bytes).unwrap()
        };
        // Version 3 is version 4 without the refund sums.
        assert_eq!(older(3, refunds), o);
        // Version 2 has no expiry either.
        assert_eq!(older(2, refunds + len(&o.expires_at)), Order { expires_at: None, ..o.clone() });
        // Version 1 has neither the source nor the expiry.
        let v1 = older(1, refunds + len(&(&o.source, o.expires_at)));
        assert_eq!(v1, Order { source: OrderSource::Client, expires_at: None, ..o });
    }

    /// The largest order the rules allow fits under [`MAX_ORDER_BYTES`]:
    /// every text at its limit, a full foldable history, 50 refunds with
    /// their ends, the longest (RSA) payment signature.
    #[test]
    fn the_largest_legal_order_fits() {
        let text = |n: usize| "字".repeat(n / 3);
        let contents = OrderContents { total_fee: 100, body: text(127), attach: text(127), openid: "o".repeat(128) };
        let mut o = Order::new("T".repeat(32), contents, false, i64::MAX / 2);
        o.source = OrderSource::Token { platform: "p".repeat(64), order_id: "i".repeat(64) };
        o.expires_at = Some(i64::MAX);
        let params = PayParams {
            app_id: "w".repeat(32),
            time_stamp: "9".repeat(20),
            nonce_str: "n".repeat(32),
            package: format!("prepay_id={}", "p".repeat(64)),
            sign_type: crate::wechat::jsapi::PaySignType::Rsa,
            pay_sign: "s".repeat(512),
        };
        o.record_prepay(Prepay { prepay_id: "p".repeat(64), obtained_at: i64::MAX, params }, i64::MAX);
        for i in 0..MAX_HISTORY * 3 {
            o.record_prepay_error(format!("{i}{}", "e".repeat(1000)), i64::MAX - i as i64);
            o.note(i64::MAX, "QUERIED", format!("{i}{}", text(1000)));
        }
        o.apply_payment(&payment(&"4".repeat(64), 100), i64::MAX);
        for i in 0..50 {
            o.note(i64::MAX, "REFUND_REQUESTED", format!("{i}{}", text(1000)));
            o.note(i64::MAX, "REFUND_SUCCESS", format!("{i}{}", text(1000)));
        }
        o.last_error = Some(bounded("e".repeat(1000), MAX_DETAIL_BYTES));
        o.transaction_id = Some("4".repeat(64));
        o.time_end = Some("9".repeat(14));
        let size = o.encode().len();
        assert!(size <= MAX_ORDER_BYTES, "{size} bytes");
        assert!(size > MAX_ORDER_BYTES / 3, "{size} bytes: the test builds a large order");
    }

    #[test]
    fn status_names() {
        for s in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(OrderStatus::parse("paid"), Some(OrderStatus::Paid));
        assert_eq!(OrderStatus::parse("nope"), None);
    }
}
