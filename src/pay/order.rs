//! Placing orders: store first, then ask WeChat, then sign for `wx.requestPayment`.
//!
//! # Orders WeChat refused are not kept
//!
//! An order is stored before WeChat is asked, so no payment can arrive for
//! an order PayBridge does not know. But a stranger can place orders for an
//! openid WeChat never issued, for free: WeChat refuses each one. Such an
//! order is not an open order and is not kept: when WeChat's answer
//! certainly means it did not create the order (a business refusal of the
//! request itself: `PARAM_ERROR`, `LACK_PARAMS`, `INVALID_REQUEST` other
//! than a repeated number), the order never had a prepay nor an earlier
//! failed attempt (an earlier timeout may have created it at WeChat), and
//! no platform vouched for it, it is removed with its index entries in the
//! same store step that would have recorded the failure. The attempt is
//! logged and counted (`paybridge_refused_total{reason="order_refused_by_wechat"}`).
//! Timeouts and every other failure keep the order CREATED for a retry.
//!
//! Each order may fail `orders.max_failed_prepays` times in ten minutes
//! (then 429, whether it was kept or not), and every call to WeChat for a
//! stranger takes from `orders.wechat_calls_per_second` ([`super::guard`]).

use serde::Serialize;

use super::{now_ms, PayError, Payments};
use crate::store::{Order, OrderContents, OrderSource, OrderStatus, Prepay};
use crate::wechat::client::WechatError;
use crate::wechat::gateway::PrepayOrder;
use crate::wechat::is_valid_out_trade_no;
use crate::wechat::jsapi::PayParams;

/// The history kind of a failed prepay.
const PREPAY_FAILED: &str = "PREPAY_FAILED";

/// Whether WeChat's answer certainly means it did not create the order: it
/// refused the request itself. A repeated number (`201 商户订单号重复`,
/// `OUT_TRADE_NO_USED`), a re-submission that differs (v3's `不一致`),
/// `ORDERPAID`, `SYSTEMERROR`, timeouts and unreadable replies all may mean
/// WeChat has it.
fn refused_for_good(e: &WechatError) -> bool {
    match e {
        WechatError::Business { code, description } => match code.as_str() {
            "PARAM_ERROR" | "LACK_PARAMS" => true,
            "INVALID_REQUEST" => !["201", "重复", "不一致"].iter().any(|m| description.contains(m)),
            _ => false,
        },
        _ => false,
    }
}

/// A prepay id is valid for 2 hours; past this age a repeated tap gets a new one.
const PREPAY_REUSE_MS: i64 = 110 * 60 * 1000;

/// An order with less time left than this is not offered for payment:
/// WeChat wants `time_expire` at least a minute ahead.
const MIN_TIME_LEFT_MS: i64 = 60 * 1000;

/// An order as the mini-program asks for it (already parsed from JSON).
#[derive(Debug, Clone)]
pub struct NewOrder {
    /// Merchant order number.
    pub out_trade_no: String,
    /// Amount in fen, if the client sent one.
    pub total_fee: Option<u64>,
    /// Goods description.
    pub body: String,
    /// Merchant data.
    pub attach: String,
    /// Payer's openid.
    pub openid: String,
    /// A product of the catalogue: then PayBridge sets the amount and the description.
    pub product_id: Option<String>,
    /// How many of the product (default 1).
    pub quantity: Option<u32>,
    /// An order token signed by a platform: then the token sets everything.
    pub token: Option<String>,
}

/// The most of one product an order may hold.
pub const MAX_QUANTITY: u32 = 999;

/// How the caller of `/pay/orders/{no}` proves it is the payer.
#[derive(Debug, Clone)]
pub enum PayerProof {
    /// The openid the order was placed for.
    Openid(String),
    /// The `orderToken` from `unifiedOrder`.
    Token(String),
}

/// What `/pay/orders/{no}` shows: status and amount, no openid, no secrets.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    /// Merchant order number.
    pub out_trade_no: String,
    /// `CREATED`, `PREPAID`, `PAID`, `CLOSED`, `PARTIALLY_REFUNDED` or `REFUNDED`.
    pub status: &'static str,
    /// Amount in fen.
    pub total_fee: u64,
    /// Whether the order was paid (refunds since included).
    pub paid: bool,
    /// WeChat's transaction id, once paid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// WeChat's payment time (Beijing, `yyyyMMddHHmmss`), once paid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_end: Option<String>,
    /// True for a sandbox order: no real money.
    pub sandbox: bool,
    /// For a platform's order: the signed result mini-program B hands back
    /// to A in `navigateBackMiniProgram`'s `extraData`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

impl From<&Order> for OrderView {
    fn from(o: &Order) -> OrderView {
        OrderView {
            out_trade_no: o.out_trade_no.clone(),
            status: o.status.as_str(),
            total_fee: o.total_fee,
            paid: o.status.is_paid(),
            transaction_id: o.transaction_id.clone(),
            time_end: o.time_end.clone(),
            sandbox: o.sandbox,
            result: None,
        }
    }
}

fn invalid(message: impl Into<String>) -> PayError {
    PayError::Invalid(message.into())
}

impl NewOrder {
    fn validate(self, max_total_fee: u64) -> Result<OrderContents, PayError> {
        if self.out_trade_no.is_empty() {
            return Err(invalid("outTradeNo is required (or the token from platform A)"));
        }
        if !is_valid_out_trade_no(&self.out_trade_no) {
            return Err(invalid("outTradeNo must be 6 to 32 characters of letters, digits, _ - | *"));
        }
        if self.body.is_empty() || self.body.len() > 127 {
            return Err(invalid(
                "body is required and must be at most 127 bytes of UTF-8 (about 42 Chinese characters)",
            ));
        }
        if self.attach.len() > 127 {
            return Err(invalid("attach must be at most 127 bytes of UTF-8"));
        }
        if self.openid.is_empty() || self.openid.len() > 128 {
            return Err(invalid("openid is required (get it from /pay/openid)"));
        }
        match self.total_fee {
            None => Err(invalid("totalFee (in fen) is required")),
            Some(0) => Err(invalid("totalFee must be at least 1 fen")),
            Some(fee) if fee > max_total_fee => {
                Err(invalid(format!("totalFee must be at most {max_total_fee} fen (orders.max_total_fee), not {fee}")))
            }
            Some(total_fee) => {
                Ok(OrderContents { total_fee, body: self.body, attach: self.attach, openid: self.openid })
            }
        }
    }
}

impl Payments {
    /// Places (or repeats) an order and returns the signed `wx.requestPayment`
    /// parameters. `payer_ip` becomes `spbill_create_ip`.
    pub async fn unified_order(&self, new: NewOrder, payer_ip: &str) -> Result<(Order, PayParams), PayError> {
        let result = self.place(new, payer_ip).await;
        self.metrics.unified_order(match &result {
            Ok((_, _, true)) => "reused",
            Ok((_, _, false)) => "prepaid",
            Err(PayError::Upstream(_) | PayError::Store(_) | PayError::Busy { .. }) => "wechat_error",
            Err(_) => "refused",
        });
        result.map(|(order, params, _)| (order, params))
    }

    /// Decides where the amount comes from. A catalogue product sets the
    /// amount (price × quantity) and the description itself; a client
    /// amount needs `orders.accept_client_amount`.
    fn price(&self, new: &mut NewOrder) -> Result<OrderSource, PayError> {
        let Some(id) = new.product_id.clone() else {
            if new.quantity.is_some() {
                return Err(invalid("quantity needs a productId"));
            }
            if !self.accept_client_amount {
                return Err(PayError::ClientAmountRefused);
            }
            return Ok(OrderSource::Client);
        };
        let catalogue = self.catalogue.load();
        let Some(product) = catalogue.get(&id) else {
            return Err(invalid(format!(
                "productId {} is not in this merchant's catalogue ([[products]])",
                crate::text::quote(&id)
            )));
        };
        let quantity = new.quantity.unwrap_or(1);
        if !(1..=MAX_QUANTITY).contains(&quantity) {
            return Err(invalid(format!("quantity must be 1 to {MAX_QUANTITY}")));
        }
        let amount =
            product.price.checked_mul(u64::from(quantity)).filter(|a| *a <= self.max_total_fee).ok_or_else(|| {
                invalid(format!(
                    "{quantity} × {} fen is more than orders.max_total_fee ({} fen)",
                    product.price, self.max_total_fee
                ))
            })?;
        if let Some(sent) = new.total_fee.filter(|sent| *sent != amount) {
            return Err(PayError::Conflict {
                code: "AMOUNT_MISMATCH",
                message: format!(
                    "totalFee {sent} differs from the price of {quantity} × {id} ({amount} fen); send no totalFee, \
                     the server sets it"
                ),
            });
        }
        new.total_fee = Some(amount);
        // The description is the merchant's, not the client's.
        new.body = match quantity {
            1 => product.name.clone(),
            n => format!("{} ×{n}", product.name),
        };
        Ok(OrderSource::Product { id, quantity })
    }

    /// [`Payments::unified_order`]; the flag says whether a stored prepay was reused.
    async fn place(&self, mut new: NewOrder, payer_ip: &str) -> Result<(Order, PayParams, bool), PayError> {
        let out_trade_no = match &new.token {
            // The platform signed the order: it is created on first use.
            Some(token) => self.order_from_token(token).await?.out_trade_no,
            None => new.out_trade_no.clone(),
        };
        let _guard = self.locks.lock(&out_trade_no).await;
        // Before anything is stored: a refused order must not come back as junk.
        self.guard.may_prepay(&out_trade_no, &self.metrics)?;
        let mut budget_taken = false;

        let no = out_trade_no.clone();
        let existing = self.store.read(move |store| store.order(&no)).await?;
        let order = match existing {
            Some(order) if order.source.platform().is_some() => {
                if new.product_id.is_some() {
                    return Err(invalid("this order's amount was set by platform A: send no productId"));
                }
                self.claim(order, &new.openid, new.total_fee).await?
            }
            existing => {
                let source = self.price(&mut new)?;
                let contents = new.validate(self.max_total_fee)?;
                match existing {
                    Some(existing) if !existing.same_contents(&contents) || existing.source != source => {
                        return Err(PayError::Conflict {
                            code: "ORDER_CONFLICT",
                            message: format!(
                                "order {} already exists with different contents; use a new outTradeNo",
                                existing.out_trade_no
                            ),
                        });
                    }
                    Some(existing) => existing,
                    None => {
                        // SECURITY: a new order means a call to WeChat for a
                        // stranger; nothing is stored if the budget is spent.
                        self.guard.wechat_call(&self.metrics)?;
                        budget_taken = true;
                        // The order is durable before WeChat hears of it, so no
                        // payment can arrive for an order we do not know. (The
                        // order lock is held, so nobody else inserts it meanwhile.)
                        let now = now_ms();
                        let mut order = Order::new(out_trade_no, contents, self.sandbox, now);
                        order.source = source;
                        order.expires_at = Some(now + self.expire_after_ms);
                        match self.store.insert_order(order).await? {
                            Ok(stored) | Err(stored) => stored,
                        }
                    }
                }
            }
        };
        match order.status {
            OrderStatus::Paid | OrderStatus::PartiallyRefunded | OrderStatus::Refunded => {
                return Err(PayError::Conflict { code: "ORDER_PAID", message: "this order is already paid".into() })
            }
            OrderStatus::Closed => {
                return Err(PayError::Conflict {
                    code: "ORDER_CLOSED",
                    message: "this order is closed; use a new outTradeNo".into(),
                })
            }
            OrderStatus::Created | OrderStatus::Prepaid => {}
        }
        // WeChat refuses a time_expire less than a minute ahead; so do we.
        if order.expires_at.is_some_and(|at| at - now_ms() < MIN_TIME_LEFT_MS) {
            return Err(PayError::Conflict {
                code: "ORDER_EXPIRED",
                message: match order.source.platform() {
                    Some(_) => "this order expired; platform A must create a new one".into(),
                    None => "this order expired; place a new one with a new outTradeNo".into(),
                },
            });
        }
        if let Some(prepay) = &order.prepay {
            if now_ms() - prepay.obtained_at < PREPAY_REUSE_MS {
                let params = prepay.params.clone();
                return Ok((order, params, true));
            }
        }

        if !budget_taken {
            self.guard.wechat_call(&self.metrics)?;
        }
        let result = self
            .gateway
            .prepay(&PrepayOrder {
                out_trade_no: &order.out_trade_no,
                total_fee: order.total_fee,
                body: &order.body,
                attach: &order.attach,
                openid: &order.openid,
                payer_ip,
                expires_at: order.expires_at.map(|ms| ms / 1000),
            })
            .await;
        match result {
            Ok(prepay_id) => {
                let now = now_ms();
                let params = self.gateway.pay_params(&prepay_id, now / 1000);
                let prepay = Prepay { prepay_id, obtained_at: now, params: params.clone() };
                let payer = order.openid.clone();
                let stored = self
                    .store
                    .update_order(&order.out_trade_no, move |o| {
                        // A notify may have beaten us here; never move a paid order back.
                        if matches!(o.status, OrderStatus::Created | OrderStatus::Prepaid) {
                            o.record_prepay(prepay.clone(), now);
                        }
                        // A platform's order is bound to its payer only now
                        // that WeChat accepted the prepay for that openid.
                        if o.openid.is_empty() {
                            o.openid = payer.clone();
                        }
                    })
                    .await?;
                self.guard.prepay_succeeded(&order.out_trade_no);
                tracing::info!(out_trade_no = %order.out_trade_no, total_fee = order.total_fee, sandbox = self.sandbox, "unified order placed");
                Ok((stored.unwrap_or(order), params, false))
            }
            Err(e) => {
                let now = now_ms();
                let message = e.to_string();
                self.guard.prepay_failed(&order.out_trade_no);
                let certain = refused_for_good(&e);
                let (_, removed) = self
                    .store
                    .update_or_remove_order(&order.out_trade_no, move |o| {
                        let never_tried = o.prepay.is_none() && !o.history.iter().any(|h| h.kind == PREPAY_FAILED);
                        o.record_prepay_error(message.clone(), now);
                        !(certain && never_tried && o.status == OrderStatus::Created)
                    })
                    .await?;
                if removed {
                    self.guard.not_kept(&order.out_trade_no, &e, &self.metrics);
                    return Err(PayError::Refused(e));
                }
                tracing::warn!(out_trade_no = %order.out_trade_no, error = %e, retryable = e.is_retryable(), "unified order failed");
                Err(match e {
                    WechatError::Business { code, description } if code == "ORDERPAID" => PayError::Conflict {
                        code: "ORDER_PAID",
                        message: format!("WeChat says this order is already paid ({description})"),
                    },
                    e => PayError::Upstream(e),
                })
            }
        }
    }

    /// The order's public view.
    ///
    /// SECURITY: only for the payer: the caller proves it with the openid the
    /// order was placed for, or the `orderToken` `unifiedOrder` returned. A
    /// wrong proof looks exactly like a missing order.
    pub async fn order_view(&self, out_trade_no: &str, proof: &PayerProof) -> Result<OrderView, PayError> {
        let no = out_trade_no.to_owned();
        let order = self.store.read(move |store| store.order(&no)).await?;
        match order {
            Some(order) if self.proves(&order, proof) => {
                Ok(OrderView { result: self.signed_result(&order), ..OrderView::from(&order) })
            }
            _ => Err(PayError::NotFound(out_trade_no.to_owned())),
        }
    }

    fn proves(&self, order: &Order, proof: &PayerProof) -> bool {
        use subtle::ConstantTimeEq;
        let same = |a: &str, b: &str| a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()));
        match proof {
            PayerProof::Openid(openid) => same(openid, &order.openid),
            PayerProof::Token(token) => same(token, &self.order_token(&order.out_trade_no)),
        }
    }

    /// The token that lets the payer's client read an order's status: an
    /// HMAC of the order number under a merchant secret (the v2 API key,
    /// or the APIv3 key), so nothing is stored.
    pub fn order_token(&self, out_trade_no: &str) -> String {
        use hmac::{Hmac, Mac};
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(self.token_secret.expose().as_bytes()).expect("any key length");
        mac.update(b"paybridge order token\0");
        mac.update(out_trade_no.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }
}
