//! The merchant's admin page: what it shows and who may see it.
//!
//! [`auth`] holds the password, sessions and login limits; this module
//! builds the views (JSON-ready structs) from the store, so the routes in
//! [`crate::http::admin`] only parse and render.

pub mod auth;
mod bills;
pub mod csv;
pub mod integration;
mod overview;

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::domain::Mode;
use crate::secret::Secret;
use crate::store::{self, NotifyRecord, Order, OrderFilter, Page, Store, StoreError};
use crate::tls::{StatusHandle, TlsStatus};
use crate::wechat::settings::WechatConfig;

/// Everything the admin routes need.
pub struct Admin {
    /// The orders and notifies.
    pub store: Store,
    /// The Argon2id hash of the admin password; `None` disables logging in.
    pub password_hash: Option<Secret>,
    /// Logged-in sessions.
    pub sessions: auth::Sessions,
    /// Failed-login limits.
    pub limiter: auth::LoginLimiter,
    /// Certificate status, with TLS on.
    pub tls_status: Option<Arc<StatusHandle>>,
    /// The payment service: the catalogue in force, refunds.
    pub payments: Arc<crate::pay::Payments>,
    /// Where this server is reached (the Integration view).
    notify_url: url::Url,
    /// For re-sending a webhook.
    pub webhooks: Arc<crate::platform::webhook::Webhooks>,
    /// Runs a day's reconciliation again.
    pub reconciler: Arc<crate::pay::reconcile::Reconciler>,
    started: Instant,
    system: SystemInfo,
}

/// What the System view shows of the configuration: no secret.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct SystemInfo {
    mode: &'static str,
    sandbox: bool,
    appid: String,
    mch_id: String,
    /// `v2` or `v3`.
    api_version: &'static str,
    /// v2: `MD5` or `HMAC-SHA256`.
    sign_type: Option<&'static str>,
    /// v3: how WeChat's signatures are verified (`public_key`, `certificates`, `both`).
    key_mode: Option<&'static str>,
    /// v3: the merchant API certificate's serial (public).
    merchant_serial: Option<String>,
    /// v3: the WeChat Pay public key's id (public).
    public_key_id: Option<String>,
    notify_url: String,
    pay_base_url: String,
    data_dir: String,
    accept_client_amount: bool,
}

/// What the admin page is told about the configuration.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    system: SystemInfo,
    /// Where WeChat posts notifies (the integration view shows it).
    notify_url: url::Url,
}

impl AdminSettings {
    /// The System view's facts: no secret is kept.
    pub fn new(
        wechat: &WechatConfig,
        mode: Mode,
        data_dir: &std::path::Path,
        accept_client_amount: bool,
    ) -> AdminSettings {
        let v3 = match &wechat.api {
            crate::wechat::settings::PayApi::V3(keys) => Some(keys.as_ref()),
            crate::wechat::settings::PayApi::V2 { .. } => None,
        };
        let system = SystemInfo {
            mode: mode.as_str(),
            sandbox: mode == Mode::Sandbox,
            appid: wechat.appid.clone(),
            mch_id: wechat.mch_id.clone(),
            api_version: wechat.api.version(),
            sign_type: match &wechat.api {
                crate::wechat::settings::PayApi::V2 { sign_type, .. } => Some(sign_type.as_str()),
                crate::wechat::settings::PayApi::V3(_) => None,
            },
            key_mode: v3.map(|k| k.key_mode_code()),
            merchant_serial: v3.map(|k| k.merchant_serial.clone()),
            public_key_id: v3.and_then(|k| k.public_key.as_ref().map(|p| p.id.clone())),
            notify_url: wechat.notify_url.to_string(),
            pay_base_url: wechat.pay_base_url.to_string(),
            data_dir: data_dir.display().to_string(),
            accept_client_amount,
        };
        AdminSettings { system, notify_url: wechat.notify_url.clone() }
    }
}

/// One row of the order list.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderRow {
    out_trade_no: String,
    status: &'static str,
    total_fee: u64,
    body: String,
    attach: String,
    openid: String,
    transaction_id: Option<String>,
    created_at: i64,
    paid_at: Option<i64>,
    last_error: Option<String>,
    sandbox: bool,
    /// Where the amount came from: `client`, `product vip-month ×2`.
    source: String,
    /// The same, in parts, for the page to say in its language.
    amount_source: AmountSource,
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
        }
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

/// The System view.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemView {
    version: &'static str,
    uptime_secs: u64,
    data_bytes: u64,
    orders: u64,
    #[serde(flatten)]
    config: SystemInfo,
    tls: Option<TlsStatus>,
    /// The catalogue in force (`[[products]]`, reloaded on SIGHUP).
    products: Vec<crate::pay::settings::Product>,
    /// v3 certificate mode: the platform certificates trusted now.
    platform_certificates: Vec<CertificateInfo>,
}

/// A WeChat Pay platform certificate, as the System view shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateInfo {
    serial: String,
    /// End of validity, unix seconds.
    not_after: i64,
    /// Whether it expires within 30 days (WeChat should have issued the
    /// next one by then; if not, something is wrong with the downloads).
    expires_soon: bool,
}

pub use crate::store::{day_string, parse_day};
pub use bills::{BillDayView, MAX_DAYS_PER_PAGE};
pub use overview::{Day, Overview, Total};

impl Admin {
    /// The admin state for a running server.
    pub fn new(
        settings: AdminSettings,
        store: Store,
        password_hash: Option<Secret>,
        tls_status: Option<Arc<StatusHandle>>,
        payments: Arc<crate::pay::Payments>,
        webhooks: Arc<crate::platform::webhook::Webhooks>,
        reconciler: Arc<crate::pay::reconcile::Reconciler>,
    ) -> Admin {
        Admin {
            payments,
            webhooks,
            reconciler,
            notify_url: settings.notify_url,
            store,
            password_hash,
            sessions: auth::Sessions::default(),
            limiter: auth::LoginLimiter::default(),
            tls_status,
            started: Instant::now(),
            system: settings.system,
        }
    }

    /// Whether this is sandbox mode.
    pub fn sandbox(&self) -> bool {
        self.system.sandbox
    }

    /// A page of orders, filtered or searched.
    pub fn orders(
        &self,
        filter: &OrderFilter,
        query: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<OrderRow>, StoreError> {
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
        Ok(Page { items: page.items.iter().map(OrderRow::from).collect(), next: page.next })
    }

    /// The orders that configured platforms created under this id of theirs.
    fn platform_orders_named(&self, order_id: &str) -> Result<Vec<Order>, StoreError> {
        let mut found = Vec::new();
        for platform in self.payments.platforms().all() {
            found.extend(self.store.platform_order(&platform.id, order_id)?);
        }
        Ok(found)
    }

    /// One order in full, or `None`.
    pub fn order(&self, out_trade_no: &str) -> Result<Option<OrderDetail>, StoreError> {
        let Some(order) = self.store.order(out_trade_no)? else { return Ok(None) };
        let notifies = self.store.notifies_for_order(out_trade_no, None, ORDER_NOTIFIES)?;
        Ok(Some(OrderDetail {
            row: OrderRow::from(&order),
            prepay_id: order.prepay.as_ref().map(|p| p.prepay_id.clone()),
            time_end: order.time_end.clone(),
            updated_at: order.updated_at,
            history: order.history.clone(),
            notifies: notifies.items.iter().map(NotifyRow::from).collect(),
            notifies_next: notifies.next,
            deliveries: self.store.deliveries_for_order(out_trade_no)?.iter().map(DeliveryRow::from).collect(),
            refunds: self.store.refunds_for_order(out_trade_no)?.iter().map(RefundRow::from).collect(),
            refunded_fee: order.refunded_fee,
            refund_pending_fee: order.refund_pending_fee,
        }))
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

    /// The Integration view: the kit with this merchant's values filled in.
    pub fn integration(&self) -> integration::IntegrationView {
        let base = integration::api_base(&self.notify_url);
        integration::view(&base, &self.system.appid, &self.payments.platforms())
    }

    /// The System view.
    pub fn system(&self) -> Result<SystemView, StoreError> {
        Ok(SystemView {
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: self.started.elapsed().as_secs(),
            data_bytes: self.store.size_on_disk()?,
            orders: self.store.order_count()?,
            config: self.system.clone(),
            tls: self.tls_status.as_ref().map(|s| s.get()),
            products: self.payments.catalogue().all().to_vec(),
            platform_certificates: {
                let now = crate::clock::now_ms() / 1000;
                let warn_within = crate::pay::certificates::EXPIRY_WARNING.as_secs() as i64;
                self.payments
                    .platform_certificates()
                    .into_iter()
                    .map(|c| CertificateInfo {
                        expires_soon: c.not_after - now < warn_within,
                        serial: c.serial,
                        not_after: c.not_after,
                    })
                    .collect()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip() {
        assert_eq!(day_string(0), "1970-01-01");
        let day = parse_day("2026-11-27").unwrap();
        assert_eq!(day_string(day), "2026-11-27");
        assert_eq!(parse_day("2026-13-01"), None);
        assert_eq!(parse_day("yesterday"), None);
    }

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
