//! What the payment flow calls: one interface over WeChat Pay API v2 and
//! v3. [`crate::pay`] places, signs for and closes orders through it and
//! never sees XML, JSON field names or signatures; the version is chosen
//! once, from `[wechat] api_version`.
//!
//! Errors are v2's [`WechatError`] in both versions, and v3's error codes
//! for the two cases the flow acts on are given v2's names (`ORDER_PAID` →
//! `ORDERPAID`, `ORDER_CLOSED` → `ORDERCLOSED`), so the flow has one rule.

use std::sync::Arc;

use super::client::{UnifiedOrder, WechatClient, WechatError};
use super::jsapi::PayParams;
use super::settings::{PayApi, V3Keys, WechatConfig};
use super::sign::SignType;
use super::v3::api::Signer;
use super::v3::client::{self as v3client, V3Client};
use super::v3::trust::Trust;
use crate::domain::RefundStatus;
use crate::metrics::Metrics;
use crate::secret::Secret;

/// An order as the flow places it, whatever the version.
#[derive(Debug, Clone)]
pub struct PrepayOrder<'a> {
    /// Our order number.
    pub out_trade_no: &'a str,
    /// Fen.
    pub total_fee: u64,
    /// Goods description.
    pub body: &'a str,
    /// Merchant data (may be empty).
    pub attach: &'a str,
    /// The payer.
    pub openid: &'a str,
    /// The payer's IP address (v2's `spbill_create_ip`).
    pub payer_ip: &'a str,
    /// The last moment the user can pay (unix seconds), sent as `time_expire`.
    pub expires_at: Option<i64>,
}

/// What WeChat says of an order when asked (`orderquery`, v3's query).
#[derive(Debug, Clone)]
pub enum Queried {
    /// WeChat took the money (`SUCCESS`, or `REFUND`: paid, then refunded).
    Paid {
        /// What the payment says, as a notify would.
        payment: crate::domain::Payment,
        /// The verified reply, kept in the notify log as the evidence.
        raw: Vec<u8>,
    },
    /// Not paid (yet): `NOTPAY`, `USERPAYING`, `PAYERROR`, …
    Unpaid(String),
    /// Closed or revoked at WeChat.
    Closed(String),
    /// WeChat has no such order (the unified order never reached it).
    NotFound,
}

/// The merchant's WeChat Pay, in the version configured.
pub struct Gateway {
    /// Logs users in (`jscode2session`), in both versions; in v2 it also pays.
    login: WechatClient,
    appid: String,
    mch_id: String,
    pay: Pay,
}

enum Pay {
    V2 { mch_key: Secret, sign_type: SignType },
    V3 { client: Box<V3Client>, keys: Arc<V3Keys> },
}

impl Gateway {
    /// The gateway for the merchant in `config`.
    pub fn new(config: &WechatConfig, metrics: Arc<Metrics>) -> Result<Gateway, reqwest::Error> {
        let login = WechatClient::new(config)?.with_metrics(metrics.clone());
        let pay = match &config.api {
            PayApi::V2 { mch_key, sign_type } => Pay::V2 { mch_key: mch_key.clone(), sign_type: *sign_type },
            PayApi::V3(keys) => {
                let public_key = keys.public_key.as_ref().map(|p| (p.id.clone(), p.key.clone()));
                let signer = Signer {
                    mchid: config.mch_id.clone(),
                    serial_no: keys.merchant_serial.clone(),
                    key: keys.merchant_key.clone(),
                    // Sending the id asks WeChat to sign replies with the public key.
                    public_key_id: public_key.as_ref().map(|(id, _)| id.clone()),
                };
                let client = V3Client::new(
                    config.pay_base_url.clone(),
                    &config.appid,
                    config.notify_url.as_str(),
                    signer,
                    Arc::new(Trust::new(public_key)),
                    config.timeout,
                )?
                .with_metrics(metrics);
                Pay::V3 { client: Box::new(client), keys: keys.clone() }
            }
        };
        Ok(Gateway { login, appid: config.appid.clone(), mch_id: config.mch_id.clone(), pay })
    }

    /// `"v2"` or `"v3"`.
    pub fn version(&self) -> &'static str {
        match self.pay {
            Pay::V2 { .. } => "v2",
            Pay::V3 { .. } => "v3",
        }
    }

    /// The v3 side (client and keys), for notifies and certificates.
    pub fn v3(&self) -> Option<(&V3Client, &Arc<V3Keys>)> {
        match &self.pay {
            Pay::V3 { client, keys } => Some((client, keys)),
            Pay::V2 { .. } => None,
        }
    }

    /// Exchanges a `wx.login` code for the user's openid. `session_key`
    /// never leaves [`WechatClient::jscode2session`].
    pub async fn openid(&self, code: &str) -> Result<String, WechatError> {
        self.login.jscode2session(code).await.map(|session| session.openid)
    }

    /// Places the order at WeChat; returns the prepay id.
    pub async fn prepay(&self, order: &PrepayOrder<'_>) -> Result<String, WechatError> {
        match &self.pay {
            Pay::V2 { .. } => {
                self.login
                    .unified_order(&UnifiedOrder {
                        out_trade_no: order.out_trade_no,
                        total_fee: order.total_fee,
                        body: order.body,
                        attach: order.attach,
                        openid: order.openid,
                        spbill_create_ip: order.payer_ip,
                        time_expire: order.expires_at.map(|secs| {
                            super::beijing_compact(
                                time::OffsetDateTime::from_unix_timestamp(secs)
                                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
                            )
                        }),
                    })
                    .await
            }
            Pay::V3 { client, .. } => client
                .jsapi(&v3client::Order {
                    out_trade_no: order.out_trade_no,
                    total: order.total_fee,
                    description: order.body,
                    attach: order.attach,
                    openid: order.openid,
                    time_expire: order.expires_at,
                })
                .await
                .map_err(v2_names),
        }
    }

    /// Signs `wx.requestPayment`'s parameters for a prepay id.
    pub fn pay_params(&self, prepay_id: &str, now_secs: i64) -> PayParams {
        let nonce = super::nonce_str();
        match &self.pay {
            Pay::V2 { mch_key, sign_type } => {
                PayParams::new(&self.appid, prepay_id, mch_key, *sign_type, now_secs, nonce)
            }
            Pay::V3 { keys, .. } => PayParams::rsa(&self.appid, prepay_id, &keys.merchant_key, now_secs, nonce),
        }
    }

    /// Closes an unpaid order at WeChat.
    pub async fn close(&self, out_trade_no: &str) -> Result<(), WechatError> {
        match &self.pay {
            Pay::V2 { .. } => self.login.close_order(out_trade_no).await,
            Pay::V3 { client, .. } => client.close(out_trade_no).await.map_err(v2_names),
        }
    }
}

/// A refund as the flow asks for it.
#[derive(Debug, Clone)]
pub struct RefundRequest<'a> {
    /// The order.
    pub out_trade_no: &'a str,
    /// Our refund number.
    pub out_refund_no: &'a str,
    /// Shown to the payer.
    pub reason: &'a str,
    /// Fen to refund.
    pub amount: u64,
    /// The order's amount, fen.
    pub total: u64,
}

/// What WeChat says of a refund.
#[derive(Debug, Clone)]
pub struct RefundState {
    /// PROCESSING, SUCCESS, CLOSED or ABNORMAL.
    pub status: crate::domain::RefundStatus,
    /// WeChat's refund id.
    pub refund_id: Option<String>,
}

impl Gateway {
    /// Asks WeChat to refund. A business refusal is an error; so is an
    /// unknown outcome (a timeout), which the caller must retry with the
    /// same `out_refund_no`, never a new one.
    pub async fn refund(&self, refund: &RefundRequest<'_>) -> Result<RefundState, WechatError> {
        match &self.pay {
            Pay::V2 { .. } => {
                let reply = self
                    .login
                    .refund(&super::client::RefundV2 {
                        out_trade_no: refund.out_trade_no,
                        out_refund_no: refund.out_refund_no,
                        total_fee: refund.total,
                        refund_fee: refund.amount,
                        reason: refund.reason,
                    })
                    .await?;
                Ok(RefundState { status: RefundStatus::Processing, refund_id: reply.get("refund_id").cloned() })
            }
            Pay::V3 { client, .. } => {
                let reply = client
                    .refund(&v3client::Refund {
                        out_trade_no: refund.out_trade_no,
                        out_refund_no: refund.out_refund_no,
                        reason: refund.reason,
                        amount: refund.amount,
                        total: refund.total,
                    })
                    .await?;
                refund_state(&reply)
            }
        }
    }

    /// Asks WeChat where a refund is.
    pub async fn refund_query(&self, out_refund_no: &str) -> Result<RefundState, WechatError> {
        match &self.pay {
            Pay::V2 { .. } => match self.login.refund_query(out_refund_no).await {
                Ok(reply) => {
                    let status = reply.get("refund_status_0").map(String::as_str).unwrap_or("");
                    Ok(RefundState {
                        status: RefundStatus::parse_v2(status)
                            .ok_or_else(|| WechatError::BadReply(format!("unknown refund_status {status:?}")))?,
                        refund_id: reply.get("refund_id_0").cloned(),
                    })
                }
                // What v3 calls it: the caller resends under the same number.
                Err(WechatError::Business { code, description }) if code == "REFUNDNOTEXIST" => {
                    Err(WechatError::Business { code: "RESOURCE_NOT_EXISTS".into(), description })
                }
                Err(e) => Err(e),
            },
            Pay::V3 { client, .. } => refund_state(&client.refund_query(out_refund_no).await?),
        }
    }
}

fn refund_state(reply: &serde_json::Value) -> Result<RefundState, WechatError> {
    let status = reply["status"].as_str().unwrap_or("");
    Ok(RefundState {
        status: crate::domain::RefundStatus::parse(status)
            .ok_or_else(|| WechatError::BadReply(format!("unknown refund status {status:?}")))?,
        refund_id: reply["refund_id"].as_str().map(str::to_owned),
    })
}

impl Gateway {
    /// Asks WeChat about an order. Only a verified reply for this merchant
    /// is believed (the clients check signatures and, in v2, the echoed
    /// `appid` and `mch_id`; v3's are checked here).
    pub async fn query(&self, out_trade_no: &str) -> Result<Queried, WechatError> {
        match &self.pay {
            Pay::V2 { .. } => match self.login.order_query(out_trade_no).await {
                Ok(reply) => Ok(queried_v2(&reply)),
                Err(WechatError::Business { code, .. }) if code == "ORDERNOTEXIST" => Ok(Queried::NotFound),
                Err(e) => Err(e),
            },
            Pay::V3 { client, keys: _ } => match client.query(out_trade_no).await.map_err(v2_names) {
                Ok(reply) => self.queried_v3(&reply),
                Err(WechatError::Business { code, .. }) if code == "ORDER_NOT_EXIST" => Ok(Queried::NotFound),
                Err(e) => Err(e),
            },
        }
    }

    fn queried_v3(&self, reply: &serde_json::Value) -> Result<Queried, WechatError> {
        let text = |pointer: &str| reply.pointer(pointer).and_then(serde_json::Value::as_str).unwrap_or("");
        if text("/appid") != self.appid {
            return Err(WechatError::WrongMerchant { field: "appid", value: text("/appid").to_owned() });
        }
        if text("/mchid") != self.mch_id {
            return Err(WechatError::WrongMerchant { field: "mch_id", value: text("/mchid").to_owned() });
        }
        let state = text("/trade_state").to_owned();
        Ok(match state.as_str() {
            "SUCCESS" | "REFUND" => Queried::Paid {
                payment: crate::domain::Payment {
                    transaction_id: text("/transaction_id").to_owned(),
                    total_fee: reply.pointer("/amount/total").and_then(serde_json::Value::as_u64).unwrap_or(0),
                    time_end: super::compact_from_rfc3339(text("/success_time")),
                    openid: text("/payer/openid").to_owned(),
                },
                raw: reply.to_string().into_bytes(),
            },
            "CLOSED" | "REVOKED" => Queried::Closed(state),
            _ => Queried::Unpaid(state),
        })
    }
}

fn queried_v2(reply: &super::sign::Fields) -> Queried {
    let get = |k: &str| reply.get(k).cloned().unwrap_or_default();
    let state = get("trade_state");
    match state.as_str() {
        "SUCCESS" | "REFUND" => Queried::Paid {
            payment: crate::domain::Payment {
                transaction_id: get("transaction_id"),
                total_fee: get("total_fee").parse().unwrap_or(0),
                time_end: get("time_end"),
                openid: get("openid"),
            },
            raw: super::xml::write(reply).into_bytes(),
        },
        "CLOSED" | "REVOKED" => Queried::Closed(state),
        _ => Queried::Unpaid(state),
    }
}

/// v3's codes for the cases the flow acts on, under v2's names.
fn v2_names(e: WechatError) -> WechatError {
    match e {
        WechatError::Business { code, description } => {
            let code = match code.as_str() {
                "ORDER_PAID" => "ORDERPAID".to_owned(),
                "ORDER_CLOSED" => "ORDERCLOSED".to_owned(),
                _ => code,
            };
            WechatError::Business { code, description }
        }
        e => e,
    }
}

impl Gateway {
    /// The `ALL` bill of a Beijing day (`yyyy-MM-dd`), as text: `downloadbill`
    /// in v2, `tradebill` and its download in v3, gzip on the way in both.
    /// `None`: no payment and no refund that day. A bill WeChat has not made
    /// yet is the business error `BILL_CREATING` in both versions.
    pub async fn bill(&self, day: &str) -> Result<Option<Vec<u8>>, WechatError> {
        match &self.pay {
            Pay::V2 { .. } => self.login.download_bill(&day.replace('-', "")).await,
            Pay::V3 { client, .. } => client.trade_bill(day).await,
        }
    }
}
