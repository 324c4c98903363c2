//! The v3 HTTP client: sends what [`super::api`] signs, reads only replies
//! that verify, and reports failures as the same [`WechatError`] v2 uses,
//! so the payment flow above does not care which version runs.

use std::time::Duration;

use url::Url;

use super::api::{self, JsapiAmount, JsapiOrder, JsapiPayer, ReplyError, Signer};
use super::verify::{SignedHeaders, Verifier};
use crate::wechat::client::{read_limited, transport, WechatError};

/// A v3 client for one merchant.
pub struct V3Client {
    http: reqwest::Client,
    base: Url,
    appid: String,
    notify_url: String,
    signer: Signer,
    verifier: Verifier,
}

/// An order as PayBridge places it.
#[derive(Debug, Clone)]
pub struct Order<'a> {
    /// Our order number.
    pub out_trade_no: &'a str,
    /// Fen.
    pub total: u64,
    /// Goods description.
    pub description: &'a str,
    /// Merchant data (may be empty).
    pub attach: &'a str,
    /// The payer.
    pub openid: &'a str,
}

impl V3Client {
    /// A client for `base` (WeChat's host, or the simulator's).
    pub fn new(
        base: Url,
        appid: &str,
        notify_url: &str,
        signer: Signer,
        verifier: Verifier,
        timeout: Duration,
    ) -> Result<V3Client, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("PayBridge/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(V3Client { http, base, appid: appid.to_owned(), notify_url: notify_url.to_owned(), signer, verifier })
    }

    /// Signs and sends one request; returns the verified 2xx body.
    async fn call(&self, method: &'static str, path_and_query: &str, body: Vec<u8>) -> Result<Vec<u8>, WechatError> {
        let now = crate::pay::now_ms() / 1000;
        let request = self.signer.sign(method, path_and_query, body, now, &crate::wechat::nonce_str());
        let url = self.base.join(path_and_query).map_err(|e| WechatError::Transport(e.to_string()))?;
        let mut builder = self.http.request(method.parse().expect("GET or POST"), url).body(request.body);
        for (name, value) in &request.headers {
            builder = builder.header(*name, value);
        }
        let reply = builder.send().await.map_err(transport)?;
        let status = reply.status().as_u16();
        let headers = reply.headers().clone();
        let body = read_limited(reply).await?;
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let signed = SignedHeaders {
            timestamp: header("wechatpay-timestamp"),
            nonce: header("wechatpay-nonce"),
            signature: header("wechatpay-signature"),
            serial: header("wechatpay-serial"),
        };
        api::read_reply(status, &signed, &body, &self.verifier, crate::pay::now_ms() / 1000).map_err(|e| match e {
            ReplyError::Unverified(e) => WechatError::BadReply(format!("its signature did not verify: {e}")),
            ReplyError::Api { code, message, .. } => WechatError::Business { code, description: message },
        })
    }

    /// Places a JSAPI order; returns the prepay id.
    pub async fn jsapi(&self, order: &Order<'_>) -> Result<String, WechatError> {
        let body = JsapiOrder {
            appid: &self.appid,
            mchid: &self.signer.mchid,
            description: order.description,
            out_trade_no: order.out_trade_no,
            time_expire: None,
            attach: order.attach,
            notify_url: &self.notify_url,
            amount: JsapiAmount { total: order.total, currency: "CNY" },
            payer: JsapiPayer { openid: order.openid },
        }
        .body();
        let reply = self.call("POST", "/v3/pay/transactions/jsapi", body).await?;
        #[derive(serde::Deserialize)]
        struct Prepay {
            prepay_id: String,
        }
        serde_json::from_slice::<Prepay>(&reply)
            .map(|p| p.prepay_id)
            .map_err(|e| WechatError::BadReply(format!("no prepay_id in a successful reply: {e}")))
    }

    /// Queries an order by our number; returns WeChat's verified JSON.
    pub async fn query(&self, out_trade_no: &str) -> Result<serde_json::Value, WechatError> {
        let path = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={}", self.signer.mchid);
        let reply = self.call("GET", &path, Vec::new()).await?;
        serde_json::from_slice(&reply).map_err(|e| WechatError::BadReply(e.to_string()))
    }

    /// Closes an unpaid order.
    pub async fn close(&self, out_trade_no: &str) -> Result<(), WechatError> {
        let path = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}/close");
        let body = serde_json::json!({ "mchid": self.signer.mchid }).to_string().into_bytes();
        self.call("POST", &path, body).await.map(drop)
    }
}
