//! Orders a platform vouches for: created through the signed platform API
//! or from an order token, paid by mini-program B at exactly the signed
//! amount, closed on the platform's request.

use serde::Serialize;

use super::{now_ms, PayError, Payments};
use crate::platform::token::{self, TokenClaims};
use crate::store::{Created, Order, OrderContents, OrderSource, OrderStatus};
use crate::wechat::beijing_compact;

/// The longest a platform order may stay payable.
pub const MAX_EXPIRY_SECS: i64 = 7 * 24 * 3600;

/// An order as a platform asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformOrder {
    /// The platform's own order id: 1 to 64 of `A-Z a-z 0-9 - _ . :`.
    pub order_id: String,
    /// Amount in fen.
    pub amount: u64,
    /// The goods description sent to WeChat.
    pub description: String,
    /// Echoed back in webhooks.
    pub attach: String,
    /// Until when it may be paid (unix ms).
    pub expires_at: i64,
}

impl PlatformOrder {
    /// From a verified token's claims.
    pub fn from_claims(claims: &TokenClaims) -> PlatformOrder {
        PlatformOrder {
            order_id: claims.order_id.clone(),
            amount: claims.amount,
            description: claims.description.clone(),
            attach: claims.attach.clone(),
            expires_at: claims.expires_at.saturating_mul(1000),
        }
    }

    fn validate(&self, max_total_fee: u64, now: i64) -> Result<(), PayError> {
        let id_ok = (1..=64).contains(&self.order_id.len())
            && self.order_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if !id_ok {
            return Err(PayError::Invalid("orderId must be 1 to 64 of A-Z a-z 0-9 - _ . :".into()));
        }
        if !(1..=max_total_fee).contains(&self.amount) {
            return Err(PayError::Invalid(format!(
                "amount must be 1 to {max_total_fee} fen (orders.max_total_fee), not {}",
                self.amount
            )));
        }
        if self.description.trim().is_empty() || self.description.len() > 127 {
            return Err(PayError::Invalid(
                "description is required and must be at most 127 bytes of UTF-8 (about 42 Chinese characters)".into(),
            ));
        }
        if self.attach.len() > 127 {
            return Err(PayError::Invalid("attach must be at most 127 bytes of UTF-8".into()));
        }
        if self.expires_at <= now {
            return Err(PayError::Conflict { code: "ORDER_EXPIRED", message: "the order's expiry has passed".into() });
        }
        if self.expires_at > now + MAX_EXPIRY_SECS * 1000 {
            return Err(PayError::Invalid("an order may stay payable for at most 7 days".into()));
        }
        Ok(())
    }

    /// Whether a stored order is this same order (an idempotent repeat).
    fn same_as(&self, order: &Order) -> bool {
        order.total_fee == self.amount && order.body == self.description && order.attach == self.attach
    }
}

/// An order as the platform API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformOrderView {
    /// PayBridge's order number (mini-program A passes it to B).
    pub out_trade_no: String,
    /// The platform's order id.
    pub order_id: String,
    /// Amount in fen.
    pub amount: u64,
    /// The goods description.
    pub description: String,
    /// The platform's data.
    pub attach: String,
    /// `CREATED`, `PREPAID`, `PAID`, `CLOSED`, `PARTIALLY_REFUNDED` or `REFUNDED`.
    pub status: &'static str,
    /// Fen refunded so far.
    pub refunded_amount: u64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; after it the order cannot be paid.
    pub expires_at: Option<String>,
    /// WeChat's transaction id, once paid.
    pub transaction_id: Option<String>,
    /// WeChat's payment time (Beijing, `yyyyMMddHHmmss`), once paid.
    pub time_end: Option<String>,
    /// True for a sandbox order: no real money.
    pub sandbox: bool,
    /// The cursor just past this change (`/changes` only): pass it as
    /// `after` to go on from here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
}

pub use crate::clock::rfc3339;

impl PlatformOrderView {
    /// The view of a platform's order.
    pub fn of(order: &Order) -> PlatformOrderView {
        PlatformOrderView {
            out_trade_no: order.out_trade_no.clone(),
            order_id: order.source.platform().map(|(_, id)| id.to_owned()).unwrap_or_default(),
            amount: order.total_fee,
            description: order.body.clone(),
            attach: order.attach.clone(),
            status: order.status.as_str(),
            refunded_amount: order.refunded_fee,
            created_at: rfc3339(order.created_at),
            expires_at: order.expires_at.map(rfc3339),
            transaction_id: order.transaction_id.clone(),
            time_end: order.time_end.clone(),
            sandbox: order.sandbox,
            change: None,
        }
    }
}

/// A new PayBridge order number: `PB`, the Beijing date and time, and ten
/// random letters and digits (26 characters: guessing one is hopeless).
fn new_out_trade_no(now: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp(now / 1000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("PB{}{}", beijing_compact(at), &crate::wechat::nonce_str()[..10])
}

impl Payments {
    /// The store (the platform API's read-only queries).
    pub fn store(&self) -> &crate::store::Store {
        &self.store
    }

    /// Uses up a verified request's nonce: false if it was used before.
    pub async fn use_nonce(&self, request: &crate::platform::auth::Verified) -> Result<bool, PayError> {
        Ok(self.store.use_nonce(&request.platform.id, request.timestamp, &request.nonce).await?)
    }

    /// The platforms in force.
    pub fn platforms(&self) -> std::sync::Arc<crate::platform::keys::Platforms> {
        self.platforms.load_full()
    }

    /// Replaces the platforms (a config reload): keys rotate without a restart.
    pub fn set_platforms(&self, platforms: crate::platform::keys::Platforms) {
        self.platforms.store(std::sync::Arc::new(platforms));
    }

    /// Creates a platform's order, or returns the one it already created
    /// under this order id (same contents) — the flag is true when new.
    /// The same id with other contents is refused.
    pub async fn create_platform_order(
        &self,
        platform: &str,
        request: PlatformOrder,
        from_token: bool,
    ) -> Result<(Order, bool), PayError> {
        let now = now_ms();
        let found = {
            let (platform, id) = (platform.to_owned(), request.order_id.clone());
            self.store.read(move |store| store.platform_order(&platform, &id)).await?
        };
        if let Some(existing) = found {
            return self.same_order(existing, &request).map(|o| (o, false));
        }
        request.validate(self.max_total_fee, now)?;
        let contents = OrderContents {
            total_fee: request.amount,
            body: request.description.clone(),
            attach: request.attach.clone(),
            // Unknown until mini-program B pays it.
            openid: String::new(),
        };
        let (platform, order_id) = (platform.to_owned(), request.order_id.clone());
        let source = match from_token {
            true => OrderSource::Token { platform, order_id },
            false => OrderSource::Platform { platform, order_id },
        };
        // A generated number that meets an existing one (a one in 10^17 chance) gets another.
        for _ in 0..3 {
            let mut order = Order::new(new_out_trade_no(now), contents.clone(), self.sandbox, now);
            order.source = source.clone();
            order.expires_at = Some(request.expires_at);
            match self.store.create_platform_order(order).await? {
                Created::New(order) => {
                    tracing::info!(out_trade_no = %order.out_trade_no, source = %order.source.describe(), total_fee = order.total_fee, "platform order created");
                    return Ok((order, true));
                }
                Created::Existing(existing) => return self.same_order(existing, &request).map(|o| (o, false)),
                Created::NumberTaken => continue,
            }
        }
        Err(PayError::Store(crate::store::StoreError::Busy))
    }

    fn same_order(&self, existing: Order, request: &PlatformOrder) -> Result<Order, PayError> {
        match request.same_as(&existing) {
            true => Ok(existing),
            false => Err(PayError::Conflict {
                code: "ORDER_CONFLICT",
                message: format!(
                    "orderId {} already exists with another amount, description or attach (PayBridge order {}); \
                     use a new orderId",
                    request.order_id, existing.out_trade_no
                ),
            }),
        }
    }

    /// The order a token describes, created on first use.
    pub async fn order_from_token(&self, token: &str) -> Result<Order, PayError> {
        let claims = token::verify(&self.platforms(), token, now_ms()).map_err(|e| PayError::Token(e.to_string()))?;
        let request = PlatformOrder::from_claims(&claims);
        self.create_platform_order(&claims.platform, request, true).await.map(|(order, _)| order)
    }

    /// A platform's order by PayBridge number; another platform's (or a
    /// non-platform) order looks exactly like a missing one.
    pub async fn platform_order(&self, platform: &str, out_trade_no: &str) -> Result<Order, PayError> {
        let no = out_trade_no.to_owned();
        match self.store.read(move |store| store.order(&no)).await? {
            Some(order) if order.source.platform().is_some_and(|(p, _)| p == platform) => Ok(order),
            _ => Err(PayError::NotFound(out_trade_no.to_owned())),
        }
    }

    /// Closes a platform's unpaid order: WeChat first (if it issued a
    /// prepay), so the user cannot pay after the platform gave up on it.
    pub async fn close_platform_order(&self, platform: &str, out_trade_no: &str) -> Result<Order, PayError> {
        let _guard = self.locks.lock(out_trade_no).await;
        let order = self.platform_order(platform, out_trade_no).await?;
        match order.status {
            OrderStatus::Closed => return Ok(order),
            OrderStatus::Paid | OrderStatus::PartiallyRefunded | OrderStatus::Refunded => {
                return Err(PayError::Conflict {
                    code: "ORDER_PAID",
                    message: "this order is paid; refund it instead".into(),
                })
            }
            OrderStatus::Created | OrderStatus::Prepaid => {}
        }
        if order.prepay.is_some() {
            match self.gateway.close(out_trade_no).await {
                Ok(()) => {}
                // Closed at WeChat already: fine.
                Err(crate::wechat::client::WechatError::Business { code, .. }) if code == "ORDERCLOSED" => {}
                Err(crate::wechat::client::WechatError::Business { code, description }) if code == "ORDERPAID" => {
                    return Err(PayError::Conflict {
                        code: "ORDER_PAID",
                        message: format!("WeChat says this order is paid ({description}); its notify is on the way"),
                    })
                }
                Err(e) => return Err(PayError::Upstream(e)),
            }
        }
        let now = now_ms();
        let closed = self
            .store
            .update_order(out_trade_no, move |o| {
                if matches!(o.status, OrderStatus::Created | OrderStatus::Prepaid) {
                    o.close(now, "closed by the platform");
                }
            })
            .await?
            .ok_or_else(|| PayError::NotFound(out_trade_no.to_owned()))?;
        if closed.status.is_paid() {
            return Err(PayError::Conflict { code: "ORDER_PAID", message: "this order was paid meanwhile".into() });
        }
        tracing::info!(out_trade_no, platform, "platform order closed");
        Ok(closed)
    }

    /// Checks a trusted order can be paid now by `openid`, and returns it
    /// with that payer. The payer is whoever first gets a prepay for it in
    /// mini-program B: the order is bound (stored) only once WeChat accepted
    /// the prepay for that openid ([`Payments::unified_order`]), so an
    /// openid WeChat refuses cannot lock the real payer out.
    pub(super) async fn claim(&self, order: Order, openid: &str, total_fee: Option<u64>) -> Result<Order, PayError> {
        if openid.is_empty() || openid.len() > 128 {
            return Err(PayError::Invalid("openid is required (get it from /pay/openid)".into()));
        }
        if let Some(sent) = total_fee.filter(|fee| *fee != order.total_fee) {
            return Err(PayError::Conflict {
                code: "AMOUNT_MISMATCH",
                message: format!(
                    "totalFee {sent} differs from the amount the platform set ({} fen); send no totalFee",
                    order.total_fee
                ),
            });
        }
        if order.expires_at.is_some_and(|at| at <= now_ms())
            && matches!(order.status, OrderStatus::Created | OrderStatus::Prepaid)
        {
            return Err(PayError::Conflict {
                code: "ORDER_EXPIRED",
                message: "this order expired; platform A must create a new one".into(),
            });
        }
        if !order.openid.is_empty() && order.openid != openid {
            return Err(PayError::Conflict {
                code: "ORDER_TAKEN",
                message: "this order is being paid by another WeChat user".into(),
            });
        }
        // Held under the order's lock until the prepay is answered.
        Ok(Order { openid: openid.to_owned(), ..order })
    }

    /// The signed result mini-program B hands back to A
    /// (`navigateBackMiniProgram`'s `extraData.result`), for a platform's order.
    ///
    /// SECURITY: a receipt means paid. An order WeChat has not taken money
    /// for (CREATED, PREPAID, CLOSED) gets none, so a backend at A that
    /// delivers whenever a result verifies never ships unpaid goods.
    pub fn signed_result(&self, order: &Order) -> Option<String> {
        if !order.status.is_paid() {
            return None;
        }
        let (platform, order_id) = order.source.platform()?;
        let platforms = self.platforms();
        let key = &platforms.get(platform)?.key;
        let result = token::ResultClaims {
            platform: platform.to_owned(),
            order_id: order_id.to_owned(),
            out_trade_no: order.out_trade_no.clone(),
            status: order.status.as_str().to_owned(),
            amount: order.total_fee,
            transaction_id: order.transaction_id.clone(),
            at: now_ms() / 1000,
        };
        Some(token::sign_result(key, &result))
    }
}
