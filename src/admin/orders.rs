//! The Orders and Notifies views: an order's row, its detail (history,
//! notifies, refunds, webhooks), and the notify log, as the admin API
//! sends them. An order number not in the hot store is looked up in the
//! archive ([`crate::store::archive`]) and shown read-only, marked archived.

use serde::Serialize;

use super::Admin;
use crate::store::archive::{Archive, ArchiveError, ArchivedOrder, Found};
use crate::store::{self, NotifyRecord, Order, OrderFilter, Page, Store, StoreError};

/// One row of the order list (its fields are the CSV export's too).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderRow {
    pub(super) out_trade_no: String,
    pub(super) status: &'static str,
    pub(super) total_fee: u64,
    pub(super) body: String,
    pub(super) attach: String,
    pub(super) openid: String,
    pub(super) transaction_id: Option<String>,
    pub(super) created_at: i64,
    pub(super) paid_at: Option<i64>,
    pub(super) last_error: Option<String>,
    pub(super) sandbox: bool,
    /// Where the amount came from: `client`, `product vip-month ×2`.
    pub(super) source: String,
    /// The same, in parts, for the page to say in its language.
    pub(super) amount_source: AmountSource,
    /// Read from the archive: it ended long ago and nothing changes it.
    pub(super) archived: bool,
}

/// Where an order's amount came from, in parts (the page words it).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum AmountSource {
    /// The mini-program said how much.
    Client,
    /// The catalogue's price × quantity.
    Product {
        /// The product's id.
        id: String,
        /// How many.
        quantity: u32,
    },
    /// A platform's backend created it.
    Platform {
        /// The platform's id.
        platform: String,
        /// The platform's own order id.
        order_id: String,
    },
    /// From an order token a platform signed.
    Token {
        /// The platform's id.
        platform: String,
        /// The platform's own order id.
        order_id: String,
    },
}

impl From<&store::OrderSource> for AmountSource {
    fn from(s: &store::OrderSource) -> AmountSource {
        match s.clone() {
            store::OrderSource::Client => AmountSource::Client,
            store::OrderSource::Product { id, quantity } => AmountSource::Product { id, quantity },
            store::OrderSource::Platform { platform, order_id } => AmountSource::Platform { platform, order_id },
            store::OrderSource::Token { platform, order_id } => AmountSource::Token { platform, order_id },
        }
    }
}

impl From<&Order> for OrderRow {
    fn from(o: &Order) -> OrderRow {
        OrderRow {
            out_trade_no: o.out_trade_no.clone(),
            status: o.status.as_str(),
            total_fee: o.total_fee,
            body: o.body.clone(),
            attach: o.attach.clone(),
            openid: o.openid.clone(),
            transaction_id: o.transaction_id.clone(),
            created_at: o.created_at,
            paid_at: o.paid_at,
            last_error: o.last_error.clone(),
            sandbox: o.sandbox,
            source: o.source.describe(),
            amount_source: AmountSource::from(&o.source),
            archived: false,
        }
    }
}

impl OrderRow {
    /// The row of an archived order.
    pub(super) fn archived(o: &Order) -> OrderRow {
        OrderRow { archived: true, ..OrderRow::from(o) }
    }
}

/// One notify, raw body included (as text).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifyRow {
    id: u64,
    received_at: i64,
    peer: Option<String>,
    out_trade_no: Option<String>,
    transaction_id: Option<String>,
    verdict: &'static str,
    reason: String,
    /// Whether the signature verified; an unverified one only claims its order.
    verified: bool,
    /// The body: whole if verified, else its first KiB.
    raw: String,
    size: u64,
    sha256: String,
    sandbox: bool,
    /// API v3: the notify's event id.
    event_id: Option<String>,
    /// API v3: the decrypted transaction (JSON), once verified.
    resource: Option<String>,
    /// `notify` (WeChat posted it) or `query` (the reconciler asked WeChat).
    source: &'static str,
}

impl From<&NotifyRecord> for NotifyRow {
    fn from(r: &NotifyRecord) -> NotifyRow {
        NotifyRow {
            id: r.id,
            received_at: r.received_at,
            peer: r.peer.clone(),
            out_trade_no: r.out_trade_no.clone(),
            transaction_id: r.transaction_id.clone(),
            verdict: r.verdict.as_str(),
            reason: r.reason.clone(),
            verified: r.verified,
            raw: String::from_utf8_lossy(&r.raw).into_owned(),
            size: r.size,
            sha256: r.sha256.clone(),
            sandbox: r.sandbox,
            event_id: r.event_id.clone(),
            resource: r.resource.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
            source: r.source.as_str(),
        }
    }
}

/// An order with its history and notifies.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderDetail {
    #[serde(flatten)]
    row: OrderRow,
    prepay_id: Option<String>,
    time_end: Option<String>,
    updated_at: i64,
    history: Vec<store::OrderEvent>,
    /// Its newest verified notifies (at most [`ORDER_NOTIFIES`]).
    notifies: Vec<NotifyRow>,
    /// The cursor for more of them in `/admin/api/notifies?order=`.
    notifies_next: Option<String>,
    /// Its webhooks to the platform, for a platform's order.
    deliveries: Vec<DeliveryRow>,
    /// Its refunds.
    refunds: Vec<RefundRow>,
    /// Fen refunded, and fen being refunded.
    refunded_fee: u64,
    refund_pending_fee: u64,
}

/// One refund, as the admin page shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefundRow {
    out_refund_no: String,
    out_trade_no: String,
    amount: u64,
    reason: String,
    status: &'static str,
    requested_by: String,
    platform_refund_id: Option<String>,
    refund_id: Option<String>,
    created_at: i64,
    updated_at: i64,
    last_result: Option<String>,
    /// Tries in a row without a definite answer from WeChat.
    tries: u32,
    /// ABNORMAL, or PROCESSING after a few tries without an answer.
    needs_look: bool,
}

impl From<&store::Refund> for RefundRow {
    fn from(r: &store::Refund) -> RefundRow {
        RefundRow {
            out_refund_no: r.out_refund_no.clone(),
            out_trade_no: r.out_trade_no.clone(),
            amount: r.amount,
            reason: r.reason.clone(),
            status: r.status.as_str(),
            requested_by: r.requested_by.clone(),
            platform_refund_id: r.platform_refund_id.clone(),
            refund_id: r.refund_id.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_result: r.last_result.clone(),
            tries: r.tries,
            needs_look: r.needs_look(crate::pay::refund::NEEDS_LOOK_AFTER),
        }
    }
}

/// One webhook of an order and how its delivery went.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRow {
    /// For the re-send button.
    id: String,
    /// The event id the platform sees.
    event_id: String,
    platform: String,
    r#type: &'static str,
    state: &'static str,
    attempts: u32,
    last_result: Option<String>,
    last_attempt_at: Option<i64>,
    next_at: Option<i64>,
}

impl From<&store::Delivery> for DeliveryRow {
    fn from(d: &store::Delivery) -> DeliveryRow {
        DeliveryRow {
            id: d.id.to_string(),
            event_id: crate::platform::webhook::event_id(d.id),
            platform: d.platform.clone(),
            r#type: d.kind.as_str(),
            state: d.state.as_str(),
            attempts: d.attempts,
            last_result: d.last_result.clone(),
            last_attempt_at: d.last_attempt_at,
            next_at: d.next_at,
        }
    }
}

/// How many notifies an order's detail shows; the rest are a page away.
pub const ORDER_NOTIFIES: usize = 20;

impl OrderDetail {
    /// An order of the hot store, with what the store keeps of it.
    fn hot(store: &Store, order: &Order) -> Result<OrderDetail, StoreError> {
        let no = &order.out_trade_no;
        let notifies = store.notifies_for_order(no, None, ORDER_NOTIFIES)?;
        Ok(OrderDetail {
            row: OrderRow::from(order),
            prepay_id: order.prepay.as_ref().map(|p| p.prepay_id.clone()),
            time_end: order.time_end.clone(),
            updated_at: order.updated_at,
            history: order.history.clone(),
            notifies: notifies.items.iter().map(NotifyRow::from).collect(),
            notifies_next: notifies.next,
            deliveries: store.deliveries_for_order(no)?.iter().map(DeliveryRow::from).collect(),
            refunds: store.refunds_for_order(no)?.iter().map(RefundRow::from).collect(),
            refunded_fee: order.refunded_fee,
            refund_pending_fee: order.refund_pending_fee,
        })
    }

    /// An archived order, with everything that moved with it.
    fn archived(a: &ArchivedOrder) -> OrderDetail {
        let order = &a.order;
        OrderDetail {
            row: OrderRow::archived(order),
            prepay_id: order.prepay.as_ref().map(|p| p.prepay_id.clone()),
            time_end: order.time_end.clone(),
            updated_at: order.updated_at,
            history: order.history.clone(),
            notifies: a.notifies.iter().map(NotifyRow::from).collect(),
            notifies_next: None,
            deliveries: a.deliveries.iter().map(DeliveryRow::from).collect(),
            refunds: a.refunds.iter().map(RefundRow::from).collect(),
            refunded_fee: order.refunded_fee,
            refund_pending_fee: order.refund_pending_fee,
        }
    }
}

/// One order in full, from the hot store or else the archive (`None`: in
/// neither). Blocking reads; the admin page and `paybridge order` use it.
pub fn order_detail(store: &Store, archive: &Archive, out_trade_no: &str) -> Result<Option<OrderDetail>, ArchiveError> {
    Ok(match archive.lookup(store, out_trade_no)? {
        None => None,
        Some(Found::Hot(order)) => Some(OrderDetail::hot(store, &order)?),
        Some(Found::Archived(archived)) => Some(OrderDetail::archived(&archived)),
    })
}

/// Whether `filter` takes `order` (status and creation time).
fn accepts(filter: &OrderFilter, order: &Order) -> bool {
    filter.status.is_none_or(|s| s == order.status)
        && filter.from_ms.is_none_or(|from| order.created_at >= from)
        && filter.to_ms.is_none_or(|to| order.created_at < to)
}

impl Admin {
    /// A page of orders, filtered or searched. Listing covers the hot
    /// store only; a search for an order number also finds it in the archive.
    pub fn orders(
        &self,
        filter: &OrderFilter,
        query: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<OrderRow>, ArchiveError> {
        let page = match query.map(str::trim).filter(|q| !q.is_empty()) {
            Some(q) => {
                let found = self.store.search_orders(q, filter, cursor, limit)?;
                match found.items.is_empty() && cursor.is_none() {
                    // Platform A names its orders by its own id: look that up too.
                    true => Page { items: self.platform_orders_named(q)?, next: None },
                    false => found,
                }
            }
            None => self.store.list_orders(filter, cursor, limit)?,
        };
        let mut items: Vec<OrderRow> = page.items.iter().map(OrderRow::from).collect();
        if let (true, None, Some(q)) = (items.is_empty(), cursor, query.map(str::trim)) {
            if let Some(archived) = self.archive.find(q)?.filter(|a| accepts(filter, &a.order)) {
                items.push(OrderRow::archived(&archived.order));
            }
        }
        Ok(Page { items, next: page.next })
    }

    /// The archived orders an export over `filter` (and an exact number,
    /// if searched) covers, at most `limit`, skipping any still in the hot
    /// store (a move stopped halfway: the hot one is exported).
    pub fn archived_rows(
        &self,
        filter: &OrderFilter,
        query: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OrderRow>, ArchiveError> {
        let found = match query.map(str::trim).filter(|q| !q.is_empty()) {
            Some(q) => self.archive.find(q)?.into_iter().collect(),
            None => self.archive.created_in(filter.from_ms.unwrap_or(0), filter.to_ms.unwrap_or(i64::MAX), limit)?,
        };
        let mut rows = Vec::new();
        for archived in found.iter().filter(|a| accepts(filter, &a.order)) {
            if self.store.order(&archived.order.out_trade_no)?.is_none() {
                rows.push(OrderRow::archived(&archived.order));
            }
        }
        Ok(rows)
    }

    /// The orders that configured platforms created under this id of theirs.
    fn platform_orders_named(&self, order_id: &str) -> Result<Vec<Order>, StoreError> {
        let mut found = Vec::new();
        for platform in self.payments.platforms().all() {
            found.extend(self.store.platform_order(&platform.id, order_id)?);
        }
        Ok(found)
    }

    /// One order in full, from the hot store or the archive, or `None`.
    pub fn order(&self, out_trade_no: &str) -> Result<Option<OrderDetail>, ArchiveError> {
        order_detail(&self.store, &self.archive, out_trade_no)
    }

    /// A page of the notify log, or of one order's verified notifies.
    pub fn notifies(
        &self,
        order: Option<&str>,
        cursor: Option<u64>,
        limit: usize,
    ) -> Result<Page<NotifyRow>, StoreError> {
        let page = match order {
            Some(no) => self.store.notifies_for_order(no, cursor, limit)?,
            None => self.store.list_notifies(cursor, limit)?,
        };
        Ok(Page { items: page.items.iter().map(NotifyRow::from).collect(), next: page.next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_amount_source_comes_in_parts_the_page_can_word() {
        let json = |s: store::OrderSource| serde_json::to_value(AmountSource::from(&s)).unwrap();
        assert_eq!(json(store::OrderSource::Client), serde_json::json!({ "kind": "client" }));
        assert_eq!(
            json(store::OrderSource::Product { id: "vip".into(), quantity: 2 }),
            serde_json::json!({ "kind": "product", "id": "vip", "quantity": 2 })
        );
        assert_eq!(
            json(store::OrderSource::Token { platform: "shop-a".into(), order_id: "A1".into() }),
            serde_json::json!({ "kind": "token", "platform": "shop-a", "orderId": "A1" })
        );
    }
}
