//! What the payment service is configured with: the merchant's WeChat Pay
//! settings, how orders behave, the catalogue and the platforms. The domain
//! owns these types; the configuration layer fills them.

use std::time::Duration;

use crate::domain::Mode;
use crate::platform::keys::Platforms;
use crate::wechat::settings::WechatConfig;

/// Everything [`super::Payments::new`] needs.
#[derive(Debug, Clone)]
pub struct PaySettings {
    /// Sandbox (the simulator, no real money) or live.
    pub mode: Mode,
    /// The merchant at WeChat Pay and its keys.
    pub wechat: WechatConfig,
    /// `[orders]`
    pub orders: OrdersConfig,
    /// Refused notifies recorded per peer and minute; the rest are only counted.
    pub refused_notifies_per_peer_per_minute: u32,
    /// `[[products]]`
    pub products: Catalogue,
    /// `[[platforms]]`
    pub platforms: Platforms,
}

/// `[orders]`
#[derive(Debug, Clone)]
pub struct OrdersConfig {
    /// Whether `/pay/unifiedOrder` may take the amount from the mini-program.
    /// Off by default: a client can send any amount it likes.
    pub accept_client_amount: bool,
    /// The largest `totalFee` (fen) an order may have.
    pub max_total_fee: u64,
    /// How long an order may be paid for (sent to WeChat as `time_expire`;
    /// platform orders and tokens carry their own).
    pub expire_after: Duration,
    /// At most this many queries to WeChat a second by the reconciler.
    pub queries_per_second: u32,
    /// `POST /pay/unifiedOrder` requests per address (IPv4, IPv6 /64) per
    /// minute. Generous: many users share one carrier-NAT IPv4 address.
    pub unified_orders_per_peer_per_minute: u32,
    /// `GET /pay/openid` requests per address per minute.
    pub openid_per_peer_per_minute: u32,
    /// Calls to WeChat a second made for strangers (prepay and login), all
    /// together: strangers cannot spend the merchant's API quota.
    pub wechat_calls_per_second: u32,
    /// Failed prepays per order per 10 minutes; then 429.
    pub max_failed_prepays: u32,
}

/// One product of the merchant's catalogue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Product {
    /// Its id, what mini-program B sends (`productId`).
    pub id: String,
    /// The goods description sent to WeChat and shown to the payer.
    pub name: String,
    /// The price of one, in fen.
    pub price: u64,
}

/// The catalogue: products by id, in config order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalogue {
    products: Vec<Product>,
}

impl Catalogue {
    /// A catalogue of these products (ids are checked by the configuration).
    pub fn new(products: Vec<Product>) -> Catalogue {
        Catalogue { products }
    }

    /// The product with this id.
    pub fn get(&self, id: &str) -> Option<&Product> {
        self.products.iter().find(|p| p.id == id)
    }

    /// Every product, in config order.
    pub fn all(&self) -> &[Product] {
        &self.products
    }
}
