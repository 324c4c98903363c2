//! Routes for mini-program B: login, unified order, order status.
//!
//! The JSON matches the usual tutorial client (`outTradeNo`, `totalFee`,
//! `prepayId`, `sign`...), but the server decides everything that matters:
//! `notify_url`, `spbill_create_ip`, `trade_type`, `appid`, `mch_id`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use warp::filters::BoxedFilter;
use warp::reply::{self, Reply, Response};
use warp::Filter;

use super::error::pay_error;
use super::{body, with, PeerAddr};
use crate::pay::guard::Route;
use crate::pay::{NewOrder, PayError, PayerProof, Payments};
use crate::wechat::jsapi::PaySignType;

/// The largest `/pay/unifiedOrder` body: the fields are short.
const ORDER_BODY_LIMIT: usize = 16 * 1024;

/// The body of `POST /pay/unifiedOrder`. `spbillCreateIp`, `notifyURL` and
/// `tradeType` may be sent (the tutorial client does) and are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UnifiedOrderBody {
    /// Absent when a platform's `token` names the order.
    #[serde(default)]
    out_trade_no: String,
    #[serde(default, deserialize_with = "fen")]
    total_fee: Option<u64>,
    /// Required for client amounts; a product's name replaces it.
    #[serde(default)]
    body: String,
    #[serde(default)]
    attach: Option<String>,
    openid: String,
    #[serde(default)]
    product_id: Option<String>,
    #[serde(default)]
    quantity: Option<u32>,
    /// An order token from platform A (in `extraData`).
    #[serde(default)]
    token: Option<String>,
}

/// Accepts `7` or `"7"` (fen); refuses fractions, negatives and words.
fn fen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Fen;
    const EXPECTED: &str = "a whole number of fen, like 100 or \"100\" for 1.00 yuan";
    impl<'de> Visitor<'de> for Fen {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(EXPECTED)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v).map(Some).map_err(|_| E::custom(format!("totalFee {v} is negative; expected {EXPECTED}")))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Err(E::custom(format!("totalFee {v} is not {EXPECTED} (amounts are in fen, not yuan)")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                v.parse().map(Some).map_err(|_| E::custom(format!("totalFee {} is too large", crate::text::quote(v))))
            } else {
                Err(E::custom(format!("totalFee {} is not {EXPECTED}", crate::text::quote(v))))
            }
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(Fen)
}

/// The reply: what `wx.requestPayment` takes, plus what the tutorial client reads.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UnifiedOrderReply {
    out_trade_no: String,
    /// Lets this client read the order's status (`/pay/orders/{no}?token=`).
    order_token: String,
    app_id: String,
    time_stamp: String,
    nonce_str: String,
    package: String,
    sign_type: PaySignType,
    pay_sign: String,
    prepay_id: String,
    /// The tutorial client reads `sign`; it is `paySign`.
    sign: String,
    sandbox: bool,
}

/// `GET /pay/openid`, `POST /pay/unifiedOrder`, `GET /pay/orders/{outTradeNo}`.
pub fn routes(pay: Arc<Payments>) -> BoxedFilter<(Response,)> {
    let openid = warp::path!("pay" / "openid")
        .and(warp::get())
        .and(warp::ext::optional::<PeerAddr>())
        .and(warp::query::<HashMap<String, String>>())
        .and(with(pay.clone()))
        .then(|peer: Option<PeerAddr>, query: HashMap<String, String>, pay: Arc<Payments>| async move {
            if let Some(Err(e)) = peer.map(|p| pay.admit(Route::Openid, p.0.ip())) {
                return pay_error(&e);
            }
            let code = query.get("code").map(String::as_str).unwrap_or("");
            match pay.openid(code).await {
                Ok(openid) => reply::json(&serde_json::json!({ "openid": openid })).into_response(),
                Err(e) => pay_error(&e),
            }
        });

    let unified_order = warp::path!("pay" / "unifiedOrder")
        .and(warp::post())
        .and(warp::ext::optional::<PeerAddr>())
        .and(body::limited(ORDER_BODY_LIMIT))
        .and(with(pay.clone()))
        .then(|peer: Option<PeerAddr>, body: bytes::Bytes, pay: Arc<Payments>| async move {
            if let Some(Err(e)) = peer.map(|p| pay.admit(Route::UnifiedOrder, p.0.ip())) {
                return pay_error(&e);
            }
            let new = match parse_unified_order(&body) {
                Ok(new) => new,
                Err(e) => return pay_error(&e),
            };
            let payer_ip = peer.map(|p| p.0.ip().to_string()).unwrap_or_else(|| "127.0.0.1".into());
            match pay.unified_order(new, &payer_ip).await {
                Ok((order, p)) => reply::json(&UnifiedOrderReply {
                    order_token: pay.order_token(&order.out_trade_no),
                    out_trade_no: order.out_trade_no,
                    prepay_id: p.package.trim_start_matches("prepay_id=").to_owned(),
                    sign: p.pay_sign.clone(),
                    app_id: p.app_id,
                    time_stamp: p.time_stamp,
                    nonce_str: p.nonce_str,
                    package: p.package,
                    sign_type: p.sign_type,
                    pay_sign: p.pay_sign,
                    sandbox: order.sandbox,
                })
                .into_response(),
                Err(e) => pay_error(&e),
            }
        });

    let order = warp::path!("pay" / "orders" / String)
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with(pay))
        .then(|no: String, query: HashMap<String, String>, pay: Arc<Payments>| async move {
            let given = |k: &str| query.get(k).filter(|v| !v.is_empty()).cloned();
            let proof = match (given("openid"), given("token")) {
                (_, Some(token)) => PayerProof::Token(token),
                (Some(openid), None) => PayerProof::Openid(openid),
                (None, None) => {
                    return pay_error(&PayError::Invalid(
                        "pass ?openid= (the payer's, from /pay/openid) or ?token= (orderToken from unifiedOrder)"
                            .into(),
                    ))
                }
            };
            match pay.order_view(&no, &proof).await {
                Ok(view) => reply::json(&view).into_response(),
                Err(e) => pay_error(&e),
            }
        });

    openid.or(unified_order).unify().or(order).unify().boxed()
}

/// Reads a `POST /pay/unifiedOrder` body (the tutorial client's fields are
/// accepted, the ones the server decides are ignored).
pub fn parse_unified_order(body: &[u8]) -> Result<NewOrder, PayError> {
    let request: UnifiedOrderBody = parse_json(body)?;
    Ok(NewOrder {
        out_trade_no: request.out_trade_no,
        total_fee: request.total_fee,
        body: request.body,
        attach: request.attach.unwrap_or_default(),
        openid: request.openid,
        product_id: request.product_id,
        quantity: request.quantity,
        token: request.token.filter(|t| !t.is_empty()),
    })
}

/// Parses a JSON body, with an error that says what is wrong and where.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, PayError> {
    if std::str::from_utf8(body).is_err() {
        return Err(PayError::InvalidJson("it is not valid UTF-8".into()));
    }
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(PayError::InvalidJson("it must be a JSON object, {...}".into()));
    }
    // serde quotes the value it met: cut, so a message never carries much of the input.
    serde_json::from_slice(body).map_err(|e| PayError::InvalidJson(crate::text::clip(&e.to_string(), 160).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<UnifiedOrderBody, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn tutorial_client_body_is_accepted() {
        let b = parse(
            r#"{"outTradeNo":"abc1234","totalFee":"7","body":"支付测试","attach":"云塔山香烟",
                "spbillCreateIp":"123.267.12.2","notifyURL":"https://evil.example/x","tradeType":"JSAPI","openid":"o1"}"#,
        )
        .unwrap();
        assert_eq!(b.total_fee, Some(7));
        assert_eq!(b.attach.as_deref(), Some("云塔山香烟"));
    }

    #[test]
    fn amounts_are_whole_fen() {
        let body = |fee: &str| format!(r#"{{"outTradeNo":"abc1234","totalFee":{fee},"body":"b","openid":"o"}}"#);
        assert_eq!(parse(&body("100")).unwrap().total_fee, Some(100));
        assert_eq!(parse(&body("null")).unwrap().total_fee, None);
        for bad in ["1.5", "-3", "\"7.00\"", "\"abc\"", "\"\"", "true"] {
            let e = parse(&body(bad)).unwrap_err();
            assert!(e.contains("fen"), "{bad}: {e}");
        }
    }
}
