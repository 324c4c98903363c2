//! The v3 calls PayBridge makes, as pure functions: the JSAPI order body,
//! signing a request, reading WeChat's reply (verified before anything in
//! it is used, errors mapped from WeChat's `{"code","message"}`). The HTTP
//! client sends what these build; `wx.requestPayment`'s RSA parameters are
//! [`crate::wechat::jsapi::PayParams::rsa`].

use serde::Serialize;

use super::crypto::{authorization, request_message, MerchantKey};
use super::verify::{SignedHeaders, Verifier, VerifyError};

/// Who signs requests: the merchant, its API certificate's serial, and the
/// WeChat Pay public key id it can verify replies with (sent as
/// `Wechatpay-Serial`, which also asks WeChat to sign replies with that key).
#[derive(Debug)]
pub struct Signer {
    /// The merchant number.
    pub mchid: String,
    /// The merchant API certificate's serial (40 hex digits).
    pub serial_no: String,
    /// The merchant API private key.
    pub key: std::sync::Arc<MerchantKey>,
    /// `PUB_KEY_ID_…`, in public-key mode.
    pub public_key_id: Option<String>,
}

/// A request ready to send, byte for byte as signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// `GET`, `POST`.
    pub method: &'static str,
    /// The path with its query, as sent.
    pub path_and_query: String,
    /// The body (empty for a GET).
    pub body: Vec<u8>,
    /// `Authorization`, `Accept`, `Content-Type`, and `Wechatpay-Serial` when known.
    pub headers: Vec<(&'static str, String)>,
}

impl Signer {
    /// Signs a request at `timestamp` (unix seconds) with `nonce`.
    pub fn sign(
        &self,
        method: &'static str,
        path_and_query: &str,
        body: Vec<u8>,
        timestamp: i64,
        nonce: &str,
    ) -> SignedRequest {
        let signature = self.key.sign(&request_message(method, path_and_query, timestamp, nonce, &body));
        let mut headers = vec![
            ("authorization", authorization(&self.mchid, &self.serial_no, timestamp, nonce, &signature)),
            ("accept", "application/json".to_owned()),
        ];
        if !body.is_empty() {
            headers.push(("content-type", "application/json".to_owned()));
        }
        if let Some(id) = &self.public_key_id {
            headers.push(("wechatpay-serial", id.clone()));
        }
        SignedRequest { method, path_and_query: path_and_query.to_owned(), body, headers }
    }
}

/// `POST /v3/pay/transactions/jsapi`: fields in the documented order.
#[derive(Debug, Clone, Serialize)]
pub struct JsapiOrder<'a> {
    /// The mini-program.
    pub appid: &'a str,
    /// The merchant.
    pub mchid: &'a str,
    /// Goods description (≤ 127 characters).
    pub description: &'a str,
    /// Our order number.
    pub out_trade_no: &'a str,
    /// RFC 3339: the last moment the user can pay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_expire: Option<&'a str>,
    /// Echoed merchant data; omitted when empty (WeChat refuses nulls).
    #[serde(skip_serializing_if = "str::is_empty")]
    pub attach: &'a str,
    /// Where WeChat sends the notify.
    pub notify_url: &'a str,
    /// How much.
    pub amount: JsapiAmount,
    /// Who pays.
    pub payer: JsapiPayer<'a>,
}

/// `amount` of an order.
#[derive(Debug, Clone, Serialize)]
pub struct JsapiAmount {
    /// Fen.
    pub total: u64,
    /// `CNY`.
    pub currency: &'static str,
}

/// `payer` of an order.
#[derive(Debug, Clone, Serialize)]
pub struct JsapiPayer<'a> {
    /// The payer's openid under `appid`.
    pub openid: &'a str,
}

impl JsapiOrder<'_> {
    /// The body, exactly as it is signed and sent.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain data")
    }
}

/// What a reply from WeChat amounts to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The reply's signature did not verify: nothing in it is trusted.
    #[error("WeChat's reply failed verification ({0})")]
    Unverified(VerifyError),
    /// WeChat refused or failed: its status, `code` and `message`.
    #[error("WeChat error {code} (HTTP {status}): {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// WeChat's `code`, e.g. `PARAM_ERROR`, `ORDER_CLOSED`.
        code: String,
        /// WeChat's `message`.
        message: String,
    },
}

/// Reads a reply at `now_secs`. A 2xx reply must verify; so must an error
/// reply that carries a signature (WeChat signs business errors). An
/// unsigned error (a 401 to a badly signed request, a proxy's 502) is
/// reported as an error without trusting more than its status and code.
pub fn read_reply(
    status: u16,
    headers: &SignedHeaders,
    body: &[u8],
    verifier: &Verifier,
    now_secs: i64,
) -> Result<Vec<u8>, ReplyError> {
    let signed = headers.signature.is_some();
    if (200..300).contains(&status) || signed {
        verifier.verify(headers, body, now_secs).map_err(ReplyError::Unverified)?;
    }
    if (200..300).contains(&status) {
        return Ok(body.to_vec());
    }
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        code: String,
        #[serde(default)]
        message: String,
    }
    let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => (e.code, e.message),
        Err(_) => ("HTTP_ERROR".to_owned(), format!("HTTP {status} without WeChat's error body")),
    };
    Err(ReplyError::Api { status, code, message: message.chars().take(256).collect() })
}
