//! The payment flow, independent of HTTP: login, unified order, notify.
//!
//! The HTTP routes in [`crate::http`] parse requests and render replies;
//! everything that decides something about money is here.

pub mod certificates;
pub mod guard;
pub mod lifecycle;
mod notify;
mod notify_v3;
mod order;
pub mod platform;
pub mod reconcile;
pub mod refund;
pub mod settings;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use std::sync::Arc;

use crate::domain::Mode;
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::store::{Store, StoreError};
use crate::wechat::client::WechatError;
use crate::wechat::gateway::Gateway;

pub use notify::NotifyAck;
pub use order::{NewOrder, OrderView, PayerProof};

/// Why a payment request failed. [`crate::http::error`] turns it into a reply.
#[derive(Debug, thiserror::Error)]
pub enum PayError {
    /// The request is malformed; the message says how.
    #[error("{0}")]
    Invalid(String),
    /// The body is not the JSON the endpoint takes; the message says where.
    #[error("the body is not the expected JSON: {0}")]
    InvalidJson(String),
    /// The client sent an amount and the server is not configured to take it.
    #[error(
        "this server does not take the amount from the mini-program (orders.accept_client_amount = false): \
         send a productId from its catalogue instead; see \"Amounts\" in the PayBridge README"
    )]
    ClientAmountRefused,
    /// A platform's order token was refused; the message says why.
    #[error("{0}")]
    Token(String),
    /// The request conflicts with what is stored.
    #[error("{message}")]
    Conflict {
        /// A stable code for programs (`ORDER_CONFLICT`, `ORDER_PAID`, ...).
        code: &'static str,
        /// For people.
        message: String,
    },
    /// No such order.
    #[error("no order {}", crate::text::quote(.0))]
    NotFound(String),
    /// The login failed: WeChat refused the code, or could not be reached.
    #[error("WeChat login failed: {0}; call wx.login again and retry")]
    Login(WechatError),
    /// WeChat refused the order itself (an openid it never issued, a bad
    /// parameter) before any prepay: the order was not kept.
    #[error(
        "WeChat refused this order ({0}); it was not kept: check the openid (from /pay/openid) and the order, \
         then send it again"
    )]
    Refused(WechatError),
    /// WeChat failed or refused; the order is kept and can be retried.
    #[error("{0}; the order is kept, retry with the same outTradeNo")]
    Upstream(WechatError),
    /// WeChat refused a refund outright; the message quotes its code and
    /// words (the refund is FAILED, its amount free again).
    #[error("{0}")]
    RefundRefused(String),
    /// A stranger's limit is spent (per address, per order): HTTP 429.
    #[error("{message}")]
    TooMany {
        /// For people: which limit, and what to do.
        message: String,
        /// Seconds after which a retry may succeed (`Retry-After`).
        retry_after: u64,
    },
    /// PayBridge's own budget of calls to WeChat is spent: HTTP 503.
    #[error("{message}")]
    Busy {
        /// For people: which limit.
        message: String,
        /// Seconds after which a retry may succeed (`Retry-After`).
        retry_after: u64,
    },
    /// Storage failed.
    #[error("storage error")]
    Store(#[from] StoreError),
}

/// Per-order locks: a repeated tap waits for the first one's unified order
/// instead of racing it. Striped so memory stays fixed.
struct OrderLocks {
    stripes: Vec<tokio::sync::Mutex<()>>,
}

impl OrderLocks {
    fn new() -> OrderLocks {
        OrderLocks { stripes: (0..64).map(|_| tokio::sync::Mutex::new(())).collect() }
    }

    async fn lock(&self, out_trade_no: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let mut h = DefaultHasher::new();
        out_trade_no.hash(&mut h);
        self.stripes[(h.finish() % self.stripes.len() as u64) as usize].lock().await
    }
}

/// The payment service for one merchant.
pub struct Payments {
    store: Store,
    /// WeChat Pay, v2 or v3.
    gateway: Gateway,
    /// The API and its keys (v2 notifies are verified with its key).
    api: crate::wechat::settings::PayApi,
    appid: String,
    mch_id: String,
    /// What order-status tokens are derived from (a merchant secret).
    token_secret: Secret,
    accept_client_amount: bool,
    max_total_fee: u64,
    /// How long a new order may be paid for (ms), unless a platform says.
    expire_after_ms: i64,
    /// The merchant's products; swapped whole when the config is reloaded.
    catalogue: arc_swap::ArcSwap<settings::Catalogue>,
    /// The platforms and their keys; swapped whole when the config is reloaded.
    platforms: arc_swap::ArcSwap<crate::platform::keys::Platforms>,
    sandbox: bool,
    /// Refused notifies recorded per peer; the rest are counted only.
    refused_budget: crate::limit::PeerBudget,
    unrecorded: crate::limit::Summary,
    locks: OrderLocks,
    /// What strangers may make PayBridge do (per address, per order, WeChat calls).
    guard: guard::Guard,
    metrics: Arc<Metrics>,
    /// One certificate download at a time (v3 certificate mode).
    certificate_refresh: tokio::sync::Mutex<()>,
    /// When an unknown serial last triggered a download.
    unknown_serial_refresh: std::sync::Mutex<Option<std::time::Instant>>,
    /// The lifecycle's clock at its latest refund pass (unix ms): what a
    /// refund step's next query counts from ([`refund`]).
    refund_pass_at: std::sync::atomic::AtomicI64,
}

impl Payments {
    /// Builds the service from its settings and an open store.
    pub fn new(
        settings: settings::PaySettings,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> Result<Payments, reqwest::Error> {
        Ok(Payments {
            gateway: Gateway::new(&settings.wechat, metrics.clone())?,
            metrics,
            store,
            api: settings.wechat.api.clone(),
            appid: settings.wechat.appid.clone(),
            mch_id: settings.wechat.mch_id.clone(),
            token_secret: settings.wechat.api.token_secret().clone(),
            accept_client_amount: settings.orders.accept_client_amount,
            max_total_fee: settings.orders.max_total_fee,
            expire_after_ms: settings.orders.expire_after.as_millis() as i64,
            catalogue: arc_swap::ArcSwap::from_pointee(settings.products),
            platforms: arc_swap::ArcSwap::from_pointee(settings.platforms),
            refused_budget: crate::limit::PeerBudget::new(settings.refused_notifies_per_peer_per_minute, 4096),
            unrecorded: crate::limit::Summary::new(std::time::Duration::from_secs(60)),
            sandbox: settings.mode == Mode::Sandbox,
            locks: OrderLocks::new(),
            guard: guard::Guard::new(guard::GuardLimits {
                unified_orders_per_peer_per_minute: settings.orders.unified_orders_per_peer_per_minute,
                openid_per_peer_per_minute: settings.orders.openid_per_peer_per_minute,
                wechat_calls_per_second: settings.orders.wechat_calls_per_second,
                max_failed_prepays: settings.orders.max_failed_prepays,
            }),
            certificate_refresh: tokio::sync::Mutex::new(()),
            unknown_serial_refresh: std::sync::Mutex::new(None),
            refund_pass_at: std::sync::atomic::AtomicI64::new(0),
        })
    }

    /// Replaces the catalogue (a config reload); orders placed before keep their amount.
    pub fn set_catalogue(&self, catalogue: settings::Catalogue) {
        self.catalogue.store(std::sync::Arc::new(catalogue));
    }

    /// The catalogue in force.
    pub fn catalogue(&self) -> std::sync::Arc<settings::Catalogue> {
        self.catalogue.load_full()
    }

    /// How long a new order may be paid for, in seconds (`orders.expire_minutes`).
    pub fn expire_after_secs(&self) -> i64 {
        self.expire_after_ms / 1000
    }

    /// `"v2"` or `"v3"`: the WeChat Pay API in use.
    pub fn api_version(&self) -> &'static str {
        self.gateway.version()
    }

    /// Whether this is sandbox mode.
    pub fn is_sandbox(&self) -> bool {
        self.sandbox
    }

    /// Exchanges a `wx.login` code for the openid. `session_key` never
    /// leaves [`crate::wechat::client::WechatClient::jscode2session`].
    pub async fn openid(&self, code: &str) -> Result<String, PayError> {
        if code.is_empty() || code.len() > 256 {
            return Err(PayError::Invalid("the query parameter `code` (from wx.login) is required".into()));
        }
        // SECURITY: a stranger's login spends the merchant's API quota.
        self.guard.wechat_call(&self.metrics)?;
        // No order exists yet: every failure is a login failure.
        self.gateway.openid(code).await.map_err(PayError::Login)
    }

    /// Takes one request of `route` from the budget of the address it came
    /// from (IPv4, or IPv6 /64); 429 when that address has spent it.
    pub fn admit(&self, route: guard::Route, peer: std::net::IpAddr) -> Result<(), PayError> {
        self.guard.admit(route, peer, &self.metrics)
    }
}

pub use crate::clock::now_ms;
