//! What the platform API needs stored: orders by the platform's own id, a
//! per-platform change feed, request nonces, and the webhook outbox.
//!
//! # Layout
//! | tree | key | value |
//! |---|---|---|
//! | `platform_orders` | platform ‖ 0x00 ‖ platform order id | out_trade_no |
//! | `platform_changes` | platform ‖ 0x00 ‖ change id (8, BE) | out_trade_no |
//! | `nonces` | timestamp s (8, BE) ‖ platform ‖ 0x00 ‖ nonce | empty |
//! | `outbox` | delivery id (8, BE) | [`Delivery`] |
//! | `outbox_pending` | platform ‖ 0x00 ‖ next attempt ms (8, BE) ‖ delivery id | empty |
//! | `outbox_by_order` | out_trade_no ‖ 0x00 ‖ delivery id | empty |
//!
//! The outbox is transactional: a delivery is written by [`Tx::put_order`]
//! in the same transaction as the status change it reports, so an
//! acknowledged payment always has its webhook waiting, whatever crashes.

use serde::{Deserialize, Serialize};

use super::codec::{self, CodecError};
use super::tx::{prefixed_key, within, Tx, TxResult};
use super::{Order, OrderStatus, Page, Store, StoreError, SMALL_WRITE};

/// The format version of [`Delivery`].
const DELIVERY_VERSION: u8 = 2;

/// What an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// `order.paid`
    Paid,
    /// `order.closed`
    Closed,
    /// `order.refunded`: a refund succeeded (the order may be partly refunded).
    Refunded,
    /// `refund.failed`: WeChat closed a refund, or it went ABNORMAL.
    RefundFailed,
}

impl EventKind {
    /// The event type as sent: `order.paid`, `order.closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Paid => "order.paid",
            EventKind::Closed => "order.closed",
            EventKind::Refunded => "order.refunded",
            EventKind::RefundFailed => "refund.failed",
        }
    }

    fn of(status: OrderStatus) -> Option<EventKind> {
        match status {
            OrderStatus::Paid => Some(EventKind::Paid),
            OrderStatus::Closed => Some(EventKind::Closed),
            // Refund events are written per refund, not per status change.
            OrderStatus::Created | OrderStatus::Prepaid | OrderStatus::PartiallyRefunded | OrderStatus::Refunded => {
                None
            }
        }
    }
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryState {
    /// Waiting for its next attempt (`next_at`).
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every scheduled attempt failed; an admin may re-send it.
    Failed,
}

impl DeliveryState {
    /// The upper-case name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "PENDING",
            DeliveryState::Delivered => "DELIVERED",
            DeliveryState::Failed => "FAILED",
        }
    }
}

/// The largest encoded outbox delivery the store writes: its fields are
/// ids, amounts and a last result cut to a few hundred bytes; this is the
/// last bound, checked where the record is written.
pub const MAX_DELIVERY_BYTES: usize = 8 * 1024;

/// What [`MAX_DELIVERY_BYTES`] is called in the error a larger write gets.
const DELIVERY_LIMIT: &str = "the delivery record's size limit (store::platform::MAX_DELIVERY_BYTES)";

/// One event for one platform, and how its delivery went. The event's
/// content is fixed when it is written, so every retry sends the same event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Unique, increasing; the event id the receiver de-duplicates on.
    pub id: u64,
    /// Which platform receives it.
    pub platform: String,
    /// What happened.
    pub kind: EventKind,
    /// When it happened (unix ms).
    pub created_at: i64,
    /// PayBridge's order number.
    pub out_trade_no: String,
    /// The platform's order id.
    pub order_id: String,
    /// Amount in fen.
    pub total_fee: u64,
    /// WeChat's transaction id, for a payment.
    pub transaction_id: Option<String>,
    /// WeChat's payment time (Beijing, `yyyyMMddHHmmss`), for a payment.
    pub time_end: Option<String>,
    /// Where the delivery is.
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (unix ms), while pending.
    pub next_at: Option<i64>,
    /// When the last attempt ended (unix ms).
    pub last_attempt_at: Option<i64>,
    /// What the last attempt got: `HTTP 200`, `HTTP 500`, `timed out`...
    pub last_result: Option<String>,
    /// For a refund's event: which refund, and the order's sums after it.
    pub refund: Option<RefundEvent>,
}

/// What a refund's event tells the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundEvent {
    /// PayBridge's refund number.
    pub out_refund_no: String,
    /// The platform's own refund id, if it asked for the refund.
    pub refund_id: Option<String>,
    /// This refund's amount (fen).
    pub amount: u64,
    /// `SUCCESS`, `CLOSED` or `ABNORMAL`.
    pub status: String,
    /// The order's refunded total after it (fen).
    pub refunded_total: u64,
}

/// Version 1 lacks `refund` (`None`: 0).
const DELIVERY_MISSING_SINCE_V1: &[u8] = &[0];

impl Delivery {
    fn for_order(id: u64, kind: EventKind, order: &Order, platform: &str, order_id: &str) -> Delivery {
        Delivery {
            id,
            platform: platform.to_owned(),
            kind,
            created_at: order.updated_at,
            out_trade_no: order.out_trade_no.clone(),
            order_id: order_id.to_owned(),
            total_fee: order.total_fee,
            transaction_id: order.transaction_id.clone(),
            time_end: order.time_end.clone(),
            state: DeliveryState::Pending,
            attempts: 0,
            next_at: Some(order.updated_at),
            last_attempt_at: None,
            last_result: None,
            refund: None,
        }
    }

    /// Encodes the current format.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(DELIVERY_VERSION, self)
    }

    /// Decodes any format this release knows.
    pub fn decode(bytes: &[u8]) -> Result<Delivery, CodecError> {
        match codec::split(bytes)? {
            (DELIVERY_VERSION, payload) => codec::decode(payload),
            (1, payload) => codec::decode([payload, DELIVERY_MISSING_SINCE_V1].concat().as_slice()),
            (other, _) => Err(CodecError::UnknownVersion(other)),
        }
    }
}

fn abort(e: CodecError) -> sled::transaction::ConflictableTransactionError<CodecError> {
    sled::transaction::ConflictableTransactionError::Abort(e)
}

/// A pending delivery's place in its platform's queue: by when it is due.
fn pending_key(delivery: &Delivery) -> Option<Vec<u8>> {
    if delivery.state != DeliveryState::Pending {
        return None;
    }
    let mut suffix = delivery.next_at.unwrap_or(0).max(0).to_be_bytes().to_vec();
    suffix.extend(delivery.id.to_be_bytes());
    Some(prefixed_key(&delivery.platform, &suffix))
}

fn nonce_key(timestamp: i64, platform: &str, nonce: &str) -> Vec<u8> {
    let mut key = timestamp.max(0).to_be_bytes().to_vec();
    key.extend(prefixed_key(platform, nonce.as_bytes()));
    key
}

impl Tx<'_> {
    /// Indexes a platform's order (creation), with its first change.
    pub(super) fn index_platform_order(&self, order: &Order) -> TxResult<()> {
        if let Some((platform, order_id)) = order.source.platform() {
            let no = order.out_trade_no.as_bytes();
            self.platform_orders.insert(prefixed_key(platform, order_id.as_bytes()), no)?;
            self.platform_changes.insert(prefixed_key(platform, &order.seq.to_be_bytes()), no)?;
        }
        Ok(())
    }

    /// Puts a platform's order in its change feed as change `id`.
    pub(super) fn note_platform_change(&self, order: &Order, id: u64) -> TxResult<()> {
        if let Some((platform, _)) = order.source.platform() {
            self.platform_changes.insert(prefixed_key(platform, &id.to_be_bytes()), order.out_trade_no.as_bytes())?;
        }
        Ok(())
    }

    /// Records a platform order's status change as change `id`, and queues
    /// its event when the change is one the platform is told of.
    pub(super) fn platform_order_changed(&self, order: &Order, id: u64) -> TxResult<()> {
        let Some((platform, order_id)) = order.source.platform() else { return Ok(()) };
        self.note_platform_change(order, id)?;
        if let Some(kind) = EventKind::of(order.status) {
            self.put_delivery(&Delivery::for_order(id, kind, order, platform, order_id), None)?;
        }
        Ok(())
    }

    /// A refund's end, for the platform that vouched for the order.
    pub(super) fn refund_event(&self, kind: EventKind, order: &Order, refund: &super::Refund, id: u64) -> TxResult<()> {
        let Some((platform, order_id)) = order.source.platform() else { return Ok(()) };
        self.note_platform_change(order, id)?;
        let mut delivery = Delivery::for_order(id, kind, order, platform, order_id);
        delivery.refund = Some(RefundEvent {
            out_refund_no: refund.out_refund_no.clone(),
            refund_id: refund.platform_refund_id.clone(),
            amount: refund.amount,
            status: refund.status.as_str().to_owned(),
            refunded_total: order.refunded_fee,
        });
        self.put_delivery(&delivery, None)
    }

    /// Writes a delivery and keeps its indexes right (`before`: as stored).
    pub(super) fn put_delivery(&self, delivery: &Delivery, before: Option<&Delivery>) -> TxResult<()> {
        let id = delivery.id.to_be_bytes();
        self.outbox.insert(&id, within(delivery.encode(), MAX_DELIVERY_BYTES, DELIVERY_LIMIT)?)?;
        match before {
            None => {
                self.outbox_by_order.insert(prefixed_key(&delivery.out_trade_no, &id), &[])?;
            }
            Some(before) => {
                if let Some(key) = pending_key(before) {
                    self.outbox_pending.remove(key)?;
                }
            }
        }
        if let Some(key) = pending_key(delivery) {
            self.outbox_pending.insert(key, &[])?;
        }
        Ok(())
    }

    fn get_delivery(&self, id: u64) -> TxResult<Option<Delivery>> {
        match self.outbox.get(id.to_be_bytes())? {
            Some(bytes) => Ok(Some(Delivery::decode(&bytes).map_err(abort)?)),
            None => Ok(None),
        }
    }
}

/// What creating a platform order found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A new order, as stored.
    New(Order),
    /// The platform's order id was taken already: this is that order.
    Existing(Order),
    /// The new order's number is taken by another order: nothing was
    /// written; try again with another number.
    NumberTaken,
}

impl Store {
    /// Creates a platform order unless the platform's order id is taken,
    /// in which case the existing order is returned and nothing is written:
    /// concurrent creators (a repeated request, the same token twice) agree.
    pub async fn create_platform_order(&self, order: Order) -> Result<Created, StoreError> {
        let (platform, order_id) = order.source.platform().expect("a platform order");
        let key = prefixed_key(platform, order_id.as_bytes());
        self.write(SMALL_WRITE, move |tx, id| {
            if let Some(no) = tx.platform_orders.get(&key)? {
                let no = String::from_utf8_lossy(&no).into_owned();
                let existing = tx.get_order(&no)?.ok_or_else(|| abort(CodecError::Empty))?;
                return Ok(Created::Existing(existing));
            }
            if tx.get_order(&order.out_trade_no)?.is_some() {
                return Ok(Created::NumberTaken);
            }
            let mut order = order.clone();
            order.seq = id;
            tx.insert_order(&order)?;
            Ok(Created::New(order))
        })
        .await
    }

    /// The order a platform created under its own order id.
    pub fn platform_order(&self, platform: &str, order_id: &str) -> Result<Option<Order>, StoreError> {
        let trees = self.trees()?;
        match trees.platform_orders.get(prefixed_key(platform, order_id.as_bytes()))? {
            Some(no) => trees.order(&String::from_utf8_lossy(&no)),
            None => Ok(None),
        }
    }

    /// A platform's orders in the order they changed, from change `from` on:
    /// (change id, the order as it is now). An order changed twice since
    /// appears twice, both times as it is now. Continue from the last id + 1.
    pub fn platform_changes(&self, platform: &str, from: u64, limit: usize) -> Result<Vec<(u64, Order)>, StoreError> {
        let trees = self.trees()?;
        let start = prefixed_key(platform, &from.to_be_bytes());
        let end = prefixed_key(platform, &u64::MAX.to_be_bytes());
        let mut out = Vec::with_capacity(limit.min(1000));
        for entry in trees.platform_changes.range(start..=end).take(limit) {
            let (key, no) = entry?;
            let id = u64::from_be_bytes(key[key.len() - 8..].try_into().expect("8 bytes"));
            if let Some(order) = trees.order(&String::from_utf8_lossy(&no))? {
                out.push((id, order));
            }
        }
        Ok(out)
    }

    /// Remembers a request's nonce; false if this platform used it already
    /// with this timestamp (a replay). Durable before it answers, so a
    /// restart does not forget it.
    pub async fn use_nonce(&self, platform: &str, timestamp: i64, nonce: &str) -> Result<bool, StoreError> {
        let key = nonce_key(timestamp, platform, nonce);
        self.write(SMALL_WRITE, move |tx, _| Ok(tx.nonces.insert(key.as_slice(), &[])?.is_none())).await
    }

    /// A platform's pending deliveries due by `now` (at most `limit`, the
    /// longest waiting first), and when the next one after those is due.
    pub fn due_deliveries(
        &self,
        platform: &str,
        now: i64,
        limit: usize,
    ) -> Result<(Vec<Delivery>, Option<i64>), StoreError> {
        let trees = self.trees()?;
        let prefix = prefixed_key(platform, &[]);
        let mut due = Vec::new();
        for key in trees.outbox_pending.scan_prefix(&prefix).keys() {
            let key = key?;
            let at = i64::from_be_bytes(key[prefix.len()..prefix.len() + 8].try_into().expect("8 bytes"));
            if at > now || due.len() == limit {
                return Ok((due, Some(at)));
            }
            if let Some(bytes) = trees.outbox.get(&key[key.len() - 8..])? {
                due.push(Delivery::decode(&bytes)?);
            }
        }
        Ok((due, None))
    }

    /// How many deliveries wait, all platforms together (a scan of the
    /// pending index, counted up to a million: for `/metrics`).
    pub fn pending_delivery_count(&self) -> Result<usize, StoreError> {
        Ok(self.trees()?.outbox_pending.iter().keys().take(1_000_000).count())
    }

    /// One delivery.
    pub fn delivery(&self, id: u64) -> Result<Option<Delivery>, StoreError> {
        match self.trees()?.outbox.get(id.to_be_bytes())? {
            Some(bytes) => Ok(Some(Delivery::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// An order's deliveries, oldest first (a few per order: one per event).
    pub fn deliveries_for_order(&self, out_trade_no: &str) -> Result<Vec<Delivery>, StoreError> {
        let trees = self.trees()?;
        let mut out = Vec::new();
        for key in trees.outbox_by_order.scan_prefix(prefixed_key(out_trade_no, &[])).keys().take(100) {
            let key = key?;
            if let Some(bytes) = trees.outbox.get(&key[key.len() - 8..])? {
                out.push(Delivery::decode(&bytes)?);
            }
        }
        Ok(out)
    }

    /// Every delivery, newest first, starting after `cursor`.
    pub fn list_deliveries(&self, cursor: Option<u64>, limit: usize) -> Result<Page<Delivery>, StoreError> {
        let end = cursor.unwrap_or(u64::MAX).to_be_bytes();
        let mut items = Vec::with_capacity(limit.min(1000));
        for entry in self.trees()?.outbox.range(..end).rev().take(limit) {
            let (_, bytes) = entry?;
            items.push(Delivery::decode(&bytes)?);
        }
        let next = (items.len() == limit).then(|| items.last().map(|d| d.id.to_string())).flatten();
        Ok(Page { items, next })
    }

    /// Changes a delivery (an attempt's outcome, a re-send); `change` may run
    /// more than once. Returns it as stored, or `None` if there is none.
    pub async fn update_delivery(
        &self,
        id: u64,
        change: impl Fn(&mut Delivery) + Send + 'static,
    ) -> Result<Option<Delivery>, StoreError> {
        self.write(SMALL_WRITE, move |tx, _| {
            let Some(before) = tx.get_delivery(id)? else { return Ok(None) };
            let mut delivery = before.clone();
            change(&mut delivery);
            tx.put_delivery(&delivery, Some(&before))?;
            Ok(Some(delivery))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Mode;
    use crate::store::{OrderContents, OrderSource};

    fn platform_order(no: &str, order_id: &str) -> Order {
        let contents = OrderContents { total_fee: 100, body: "b".into(), attach: "".into(), openid: String::new() };
        let mut order = Order::new(no.into(), contents, false, 1_000);
        order.source = OrderSource::Platform { platform: "shop-a".into(), order_id: order_id.into() };
        order
    }

    /// A paid platform order has its event waiting in the same write; a
    /// rebuild of the indexes (an upgrade) keeps the event pending, finds
    /// the order by the platform's id, and shows it in the change feed as
    /// changed after any cursor the platform already holds.
    #[tokio::test]
    async fn events_and_feeds_survive_an_index_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Mode::Live).unwrap();
        let Created::New(order) = store.create_platform_order(platform_order("PB0000000001", "A-1")).await.unwrap()
        else {
            panic!("a new order")
        };
        assert_eq!(
            store.create_platform_order(platform_order("PB0000000002", "A-1")).await.unwrap(),
            Created::Existing(order.clone())
        );
        store.update_order("PB0000000001", |o| o.status = OrderStatus::Paid).await.unwrap();
        let (due, _) = store.due_deliveries("shop-a", i64::MAX, 10).unwrap();
        assert_eq!((due.len(), due[0].kind), (1, EventKind::Paid));
        let feed = store.platform_changes("shop-a", 0, 10).unwrap();
        assert_eq!(feed.len(), 2, "created, then paid");
        let cursor = feed.last().unwrap().0 + 1;
        assert!(store.platform_changes("shop-a", cursor, 10).unwrap().is_empty());
        assert!(store.platform_changes("shop-b", 0, 10).unwrap().is_empty(), "another platform sees nothing");
        drop(store);

        let db = crate::store::open::sled_config(dir.path(), Default::default()).open().unwrap();
        db.open_tree("meta").unwrap().insert("index_version", "0").unwrap();
        db.flush().unwrap();
        drop(db);
        let store = Store::open(dir.path(), Mode::Live).unwrap();
        assert_eq!(store.due_deliveries("shop-a", i64::MAX, 10).unwrap().0.len(), 1, "still pending");
        assert_eq!(store.deliveries_for_order("PB0000000001").unwrap().len(), 1);
        assert_eq!(store.platform_order("shop-a", "A-1").unwrap().unwrap().out_trade_no, "PB0000000001");
        let after = store.platform_changes("shop-a", cursor, 10).unwrap();
        assert_eq!(after.len(), 1, "seen again as changed: {after:?}");
        assert_eq!(after[0].1.status, OrderStatus::Paid);
    }
}
