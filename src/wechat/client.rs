//! The HTTP client for WeChat: login (`jscode2session`) and the pay API v2
//! (`unifiedorder`, `orderquery`, `closeorder`).
//!
//! Every pay reply goes through one path ([`WechatClient::call`]): size limit,
//! XML, `return_code`, signature, echoed `appid`/`mch_id`, then `result_code`.
//! Nothing in a reply is trusted before its signature is verified.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use url::Url;

use super::settings::{PayApi, WechatConfig};
use super::sign::{self, Fields, SignType};
use super::xml::{self, MAX_XML_BYTES};
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::text::{clip, quote, MAX_QUOTED_CHARS};

/// A failed call to WeChat. The messages are safe to show a client: they
/// carry WeChat's own words, never a URL (which may hold the app secret).
#[derive(Debug, Clone, thiserror::Error)]
pub enum WechatError {
    /// No reply within the configured time.
    #[error("WeChat did not answer within the time limit")]
    Timeout,
    /// Could not connect, or the connection broke.
    #[error("could not reach WeChat: {}", clip(.0, 200))]
    Transport(String),
    /// An HTTP status other than 200.
    #[error("WeChat answered with HTTP status {0}")]
    HttpStatus(u16),
    /// The reply is not a WeChat message.
    #[error("WeChat's reply could not be read: {}", clip(.0, 200))]
    BadReply(String),
    /// The reply's signature does not verify: it is not trusted at all.
    #[error("WeChat's reply failed signature verification ({0})")]
    BadSignature(sign::SignError),
    /// A signed reply for another appid or merchant.
    #[error("WeChat's reply names {field} {}, not this merchant's", quote(value))]
    WrongMerchant {
        /// `appid` or `mch_id`.
        field: &'static str,
        /// What it said.
        value: String,
    },
    /// `return_code=FAIL`: the request was not processed (bad signature, bad parameters).
    #[error("WeChat refused the request: {}", clip(.0, MAX_QUOTED_CHARS))]
    ReturnFail(String),
    /// `result_code=FAIL`: a business error such as `ORDERPAID` or `SYSTEMERROR`.
    #[error("WeChat error {}: {}", clip(code, 64), clip(description, MAX_QUOTED_CHARS))]
    Business {
        /// WeChat's `err_code`.
        code: String,
        /// WeChat's `err_code_des`.
        description: String,
    },
    /// `jscode2session` answered with an `errcode`.
    #[error("WeChat login error {errcode}: {}", clip(errmsg, MAX_QUOTED_CHARS))]
    Login {
        /// WeChat's `errcode` (40029 invalid code, 40163 code used, ...).
        errcode: i64,
        /// WeChat's `errmsg`.
        errmsg: String,
    },
}

impl WechatError {
    /// Whether the same request may simply be sent again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            WechatError::Timeout
            | WechatError::Transport(_)
            | WechatError::HttpStatus(_)
            | WechatError::BadReply(_)
            | WechatError::BadSignature(_) => true,
            WechatError::Business { code, .. } => {
                matches!(code.as_str(), "SYSTEMERROR" | "BIZERR_NEED_RETRY" | "FREQUENCY_LIMITED")
            }
            WechatError::Login { errcode, .. } => *errcode == -1 || *errcode == 45011,
            WechatError::WrongMerchant { .. } | WechatError::ReturnFail(_) => false,
        }
    }
}

pub(crate) fn transport(e: reqwest::Error) -> WechatError {
    if e.is_timeout() {
        WechatError::Timeout
    } else {
        // SECURITY: the jscode2session URL carries the app secret in its
        // query; reqwest puts the URL in its error text unless removed.
        WechatError::Transport(e.without_url().to_string())
    }
}

/// [`transport`], with the error's causes: a refused TLS handshake says why
/// only in a cause (`received fatal alert: CertificateExpired`).
fn with_causes(e: reqwest::Error) -> WechatError {
    if e.is_timeout() {
        return WechatError::Timeout;
    }
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    // SECURITY: as in `transport`, the URL is removed; the causes are
    // hyper's and TLS's own words, which carry no URL.
    let mut text = e.without_url().to_string();
    for cause in causes {
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    WechatError::Transport(text)
}

/// What `jscode2session` tells us. `session_key` is deliberately absent:
/// it is never deserialized, stored, logged or returned.
#[derive(Debug, Clone, Deserialize)]
pub struct Session {
    /// The user's id under our appid.
    pub openid: String,
    /// The user's id across the Open Platform account, if bound.
    pub unionid: Option<String>,
}

#[derive(Deserialize)]
struct LoginReply {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    openid: Option<String>,
    unionid: Option<String>,
}

/// The business fields of a unified order; the client adds the rest.
#[derive(Debug, Clone)]
pub struct UnifiedOrder<'a> {
    /// Merchant order number.
    pub out_trade_no: &'a str,
    /// Amount in fen.
    pub total_fee: u64,
    /// Goods description.
    pub body: &'a str,
    /// Merchant data echoed in the notify (may be empty).
    pub attach: &'a str,
    /// The payer's openid.
    pub openid: &'a str,
    /// The payer's IP address.
    pub spbill_create_ip: &'a str,
    /// The last moment the user can pay (`yyyyMMddHHmmss`, Beijing), if any.
    pub time_expire: Option<String>,
}

/// A client for one merchant.
#[derive(Clone)]
pub struct WechatClient {
    http: reqwest::Client,
    appid: String,
    app_secret: Secret,
    mch_id: String,
    mch_key: Secret,
    sign_type: SignType,
    pay_base_url: Url,
    sns_base_url: Url,
    notify_url: String,
    /// API v2 refunds: a client with the merchant's certificate, and where
    /// `/secapi/...` is.
    secapi: Option<(reqwest::Client, Url)>,
    metrics: Option<Arc<Metrics>>,
}

/// Why a v2 refund cannot be asked for without the client certificate.
pub const NO_CLIENT_CERTIFICATE: &str = "refunds through API v2 need the merchant's API certificate (mutual TLS): \
     set wechat.client_cert_file and client_key_file (apiclient_cert.pem, apiclient_key.pem) or client_p12_file \
     (apiclient_cert.p12), see \"Refunds\" in the README";

/// A v2 refund as PayBridge asks for it.
#[derive(Debug, Clone)]
pub struct RefundV2<'a> {
    /// The order.
    pub out_trade_no: &'a str,
    /// Our refund number.
    pub out_refund_no: &'a str,
    /// The order's amount, fen.
    pub total_fee: u64,
    /// This refund, fen.
    pub refund_fee: u64,
    /// Shown to the payer (may be empty).
    pub reason: &'a str,
}

fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}/{}", base.path().trim_end_matches('/'), path.trim_start_matches('/'));
    url.set_path(&joined);
    url
}

impl WechatClient {
    /// A client for the merchant in `config`. For a v3 merchant it only
    /// logs users in (its v2 pay calls refuse to run without the v2 key).
    pub fn new(config: &WechatConfig) -> Result<WechatClient, reqwest::Error> {
        let (mch_key, sign_type) = match &config.api {
            PayApi::V2 { mch_key, sign_type } => (mch_key.clone(), *sign_type),
            PayApi::V3(_) => (Secret::default(), SignType::Md5),
        };
        let builder = || {
            reqwest::Client::builder()
                .timeout(config.timeout)
                .connect_timeout(config.timeout.min(Duration::from_secs(5)))
                .user_agent(concat!("PayBridge/", env!("CARGO_PKG_VERSION")))
        };
        let http = builder().build()?;
        let secapi = match &config.refund_tls {
            None => None,
            Some(tls) => {
                let mut secure = builder().identity(reqwest::Identity::from_pem(tls.identity_pem.expose().as_bytes())?);
                if let Some(ca) = &tls.ca_pem {
                    secure = secure.add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes())?);
                }
                Some((secure.build()?, tls.base_url.clone()))
            }
        };
        Ok(WechatClient {
            http,
            appid: config.appid.clone(),
            app_secret: config.app_secret.clone(),
            mch_id: config.mch_id.clone(),
            mch_key,
            sign_type,
            pay_base_url: config.pay_base_url.clone(),
            sns_base_url: config.sns_base_url.clone(),
            notify_url: config.notify_url.to_string(),
            secapi,
            metrics: None,
        })
    }

    /// Records the latency of every call in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> WechatClient {
        self.metrics = Some(metrics);
        self
    }

    fn record(&self, api: &'static str, started: Instant) {
        if let Some(m) = &self.metrics {
            m.wechat_call(api, started.elapsed());
        }
    }

    /// The signature algorithm this client uses.
    pub fn sign_type(&self) -> SignType {
        self.sign_type
    }

    /// Exchanges a `wx.login` code for the user's openid.
    pub async fn jscode2session(&self, code: &str) -> Result<Session, WechatError> {
        let url = join(&self.sns_base_url, "/sns/jscode2session");
        let started = Instant::now();
        let reply = self
            .http
            .get(url)
            .query(&[
                ("appid", self.appid.as_str()),
                ("secret", self.app_secret.expose()),
                ("js_code", code),
                ("grant_type", "authorization_code"),
            ])
            .send()
            .await
            .map_err(transport)?;
        if reply.status() != reqwest::StatusCode::OK {
            return Err(WechatError::HttpStatus(reply.status().as_u16()));
        }
        let body = read_limited(reply).await?;
        self.record("jscode2session", started);
        let login: LoginReply =
            serde_json::from_slice(&body).map_err(|e| WechatError::BadReply(format!("not the expected JSON: {e}")))?;
        match login {
            LoginReply { errcode: 0, openid: Some(openid), unionid, .. } if !openid.is_empty() => {
                Ok(Session { openid, unionid })
            }
            LoginReply { errcode: 0, .. } => Err(WechatError::BadReply("no openid in the reply".into())),
            LoginReply { errcode, errmsg, .. } => Err(WechatError::Login { errcode, errmsg }),
        }
    }

    /// Places a JSAPI unified order and returns the prepay id.
    pub async fn unified_order(&self, order: &UnifiedOrder<'_>) -> Result<String, WechatError> {
        let total_fee = order.total_fee.to_string();
        let mut fields = sign::fields([
            ("body", order.body),
            ("attach", order.attach),
            ("out_trade_no", order.out_trade_no),
            ("total_fee", total_fee.as_str()),
            ("spbill_create_ip", order.spbill_create_ip),
            ("notify_url", self.notify_url.as_str()),
            ("trade_type", "JSAPI"),
            ("openid", order.openid),
            ("time_expire", order.time_expire.as_deref().unwrap_or("")),
        ]);
        fields.retain(|_, v| !v.is_empty());
        let reply = self.call("unifiedorder", fields).await?;
        reply
            .get("prepay_id")
            .filter(|id| !id.is_empty())
            .cloned()
            .ok_or_else(|| WechatError::BadReply("no prepay_id in a successful reply".into()))
    }

    /// Queries an order; returns WeChat's verified fields (`trade_state` ...).
    pub async fn order_query(&self, out_trade_no: &str) -> Result<Fields, WechatError> {
        self.call("orderquery", sign::fields([("out_trade_no", out_trade_no)])).await
    }

    /// Closes an unpaid order.
    pub async fn close_order(&self, out_trade_no: &str) -> Result<(), WechatError> {
        self.call("closeorder", sign::fields([("out_trade_no", out_trade_no)])).await.map(drop)
    }

    /// Downloads the `ALL` bill of `bill_date` (`yyyyMMdd`), gzip-compressed
    /// on the way; returns its text, or `None` when WeChat has no bill
    /// for that day (no payment, no refund). A bill not made yet is the
    /// business error `BILL_CREATING`.
    pub async fn download_bill(&self, bill_date: &str) -> Result<Option<Vec<u8>>, WechatError> {
        let fields = sign::fields([("bill_date", bill_date), ("bill_type", "ALL"), ("tar_type", "GZIP")]);
        let request = self.signed(fields)?;
        let started = Instant::now();
        let body = self.post_limited("downloadbill", request, super::bill::MAX_BILL_BYTES).await;
        self.record("downloadbill", started);
        let body = body?;
        // Success is the file itself, unsigned; failure is XML.
        if body.starts_with(&[0x1f, 0x8b]) {
            return super::bill::gunzip(&body).map(Some).map_err(WechatError::BadReply);
        }
        if !body.trim_ascii_start().starts_with(b"<") {
            return Ok(Some(body));
        }
        let reply = xml::parse(&body).map_err(|e| WechatError::BadReply(e.to_string()))?;
        let message = reply.get("return_msg").cloned().unwrap_or_default();
        match message.to_ascii_lowercase().as_str() {
            "no bill exist" => Ok(None),
            "bill creating" => Err(WechatError::Business { code: "BILL_CREATING".into(), description: message }),
            _ => {
                let code = reply.get("error_code").map(|c| format!(" (error_code {c})")).unwrap_or_default();
                Err(WechatError::ReturnFail(format!("{message}{code}")))
            }
        }
    }

    /// Asks for a refund over mutual TLS (`/secapi/pay/refund`); returns
    /// WeChat's verified reply. SUCCESS means accepted, not refunded: the
    /// end comes by refund notify or `refundquery`.
    pub async fn refund(&self, refund: &RefundV2<'_>) -> Result<Fields, WechatError> {
        let Some((http, base)) = &self.secapi else {
            return Err(WechatError::ReturnFail(NO_CLIENT_CERTIFICATE.into()));
        };
        let (total, amount) = (refund.total_fee.to_string(), refund.refund_fee.to_string());
        let mut fields = sign::fields([
            ("out_trade_no", refund.out_trade_no),
            ("out_refund_no", refund.out_refund_no),
            ("total_fee", &total),
            ("refund_fee", &amount),
            ("notify_url", &self.notify_url),
        ]);
        if !refund.reason.is_empty() {
            fields.insert("refund_desc".into(), refund.reason.to_owned());
        }
        let request = self.signed(fields)?;
        let started = Instant::now();
        let body = post_xml(http, join(base, "/secapi/pay/refund"), request, MAX_XML_BYTES).await;
        self.record("refund", started);
        self.check_reply(&body?)
    }

    /// Sends the refund host (`/secapi/pay/refund`) an empty request over
    /// mutual TLS with the API certificate, for `paybridge doctor`: once the
    /// handshake has accepted the certificate, WeChat answers an empty body
    /// with `return_code=FAIL` (`post数据为空`), and nothing can come of it.
    /// Returns the HTTP status and `return_msg` (when the body is WeChat's
    /// XML); a refused handshake is a `Transport` error with TLS's reason.
    pub async fn probe_refund_host(&self) -> Result<(u16, Option<String>), WechatError> {
        let Some((http, base)) = &self.secapi else {
            return Err(WechatError::ReturnFail(NO_CLIENT_CERTIFICATE.into()));
        };
        let started = Instant::now();
        let reply = http
            .post(join(base, "/secapi/pay/refund"))
            .header(reqwest::header::CONTENT_TYPE, "text/xml; charset=utf-8")
            .body("")
            .send()
            .await;
        self.record("refund", started);
        let reply = reply.map_err(with_causes)?;
        let status = reply.status().as_u16();
        let body = read_limited(reply).await?;
        let message = xml::parse(&body).ok().and_then(|f| f.get("return_msg").map(|m| clip(m, 200).to_string()));
        Ok((status, message))
    }

    /// Queries a refund by our number (`refundquery`, no certificate needed).
    pub async fn refund_query(&self, out_refund_no: &str) -> Result<Fields, WechatError> {
        self.call("refundquery", sign::fields([("out_refund_no", out_refund_no)])).await
    }

    /// Signs and sends one pay API request; returns the verified reply.
    async fn call(&self, api: &'static str, fields: Fields) -> Result<Fields, WechatError> {
        let request = self.signed(fields)?;
        let started = Instant::now();
        let body = self.post_limited(api, request, MAX_XML_BYTES).await;
        // Failures and timeouts are latencies too.
        self.record(api, started);
        self.check_reply(&body?)
    }

    /// A request's XML: `fields` with the merchant, a nonce and the signature.
    fn signed(&self, mut fields: Fields) -> Result<String, WechatError> {
        if self.mch_key.is_empty() {
            return Err(WechatError::ReturnFail("no API v2 key is configured (api_version = \"v3\")".into()));
        }
        fields.insert("appid".into(), self.appid.clone());
        fields.insert("mch_id".into(), self.mch_id.clone());
        fields.insert("nonce_str".into(), super::nonce_str());
        if self.sign_type != SignType::Md5 {
            fields.insert("sign_type".into(), self.sign_type.as_str().into());
        }
        let signature = sign::sign(&fields, &self.mch_key, self.sign_type);
        fields.insert("sign".into(), signature);
        Ok(xml::write(&fields))
    }

    async fn post_limited(&self, api: &str, xml: String, limit: usize) -> Result<Vec<u8>, WechatError> {
        post_xml(&self.http, join(&self.pay_base_url, &format!("/pay/{api}")), xml, limit).await
    }

    /// The reply checks, in WeChat's order; separate from I/O so it is easy to test.
    fn check_reply(&self, body: &[u8]) -> Result<Fields, WechatError> {
        let reply = xml::parse(body).map_err(|e| WechatError::BadReply(e.to_string()))?;
        match reply.get("return_code").map(String::as_str) {
            Some("SUCCESS") => {}
            Some("FAIL") => {
                let msg = reply.get("return_msg").or(reply.get("retmsg")).cloned().unwrap_or_default();
                return Err(WechatError::ReturnFail(msg));
            }
            _ => return Err(WechatError::BadReply("no return_code".into())),
        }
        sign::verify(&reply, &self.mch_key, &[self.sign_type]).map_err(WechatError::BadSignature)?;
        for (field, ours) in [("appid", &self.appid), ("mch_id", &self.mch_id)] {
            match reply.get(field) {
                Some(value) if value != ours => return Err(WechatError::WrongMerchant { field, value: value.clone() }),
                _ => {}
            }
        }
        match reply.get("result_code").map(String::as_str) {
            Some("SUCCESS") => Ok(reply),
            _ => Err(WechatError::Business {
                code: reply.get("err_code").cloned().unwrap_or_else(|| "UNKNOWN".into()),
                description: reply.get("err_code_des").cloned().unwrap_or_default(),
            }),
        }
    }
}

async fn post_xml(http: &reqwest::Client, url: Url, xml: String, limit: usize) -> Result<Vec<u8>, WechatError> {
    let reply = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "text/xml; charset=utf-8")
        .body(xml)
        .send()
        .await
        .map_err(transport)?;
    if reply.status() != reqwest::StatusCode::OK {
        return Err(WechatError::HttpStatus(reply.status().as_u16()));
    }
    read_up_to(reply, limit).await
}

/// Reads a reply body, refusing more than [`MAX_XML_BYTES`].
pub(crate) async fn read_limited(reply: reqwest::Response) -> Result<Vec<u8>, WechatError> {
    read_up_to(reply, MAX_XML_BYTES).await
}

/// Reads a reply body, refusing more than `limit` bytes.
pub(crate) async fn read_up_to(mut reply: reqwest::Response, limit: usize) -> Result<Vec<u8>, WechatError> {
    let mut body = Vec::new();
    while let Some(chunk) = reply.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > limit {
            return Err(WechatError::BadReply(format!("larger than {limit} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn client() -> WechatClient {
        WechatClient::new(&Config::sandbox_default().wechat).unwrap()
    }

    fn signed(c: &WechatClient, pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut f = sign::fields(pairs.iter().copied());
        let s = sign::sign(&f, &c.mch_key, SignType::Md5);
        f.insert("sign".into(), s);
        xml::write(&f).into_bytes()
    }

    #[test]
    fn reply_checks_in_order() {
        let c = client();
        let ok = [
            ("return_code", "SUCCESS"),
            ("appid", c.appid.as_str()),
            ("mch_id", c.mch_id.as_str()),
            ("result_code", "SUCCESS"),
            ("prepay_id", "wx1"),
        ];
        assert_eq!(c.check_reply(&signed(&c, &ok)).unwrap()["prepay_id"], "wx1");

        let fail = b"<xml><return_code>FAIL</return_code><return_msg>\xe7\xad\xbe\xe5\x90\x8d\xe9\x94\x99\xe8\xaf\xaf</return_msg></xml>";
        assert!(matches!(c.check_reply(fail), Err(WechatError::ReturnFail(m)) if m == "签名错误"));

        let mut forged = signed(&c, &ok);
        let at = forged.windows(3).position(|w| w == b"wx1").unwrap();
        forged[at + 2] = b'2';
        assert!(matches!(c.check_reply(&forged), Err(WechatError::BadSignature(_))));

        let other = [("return_code", "SUCCESS"), ("appid", "wxother"), ("result_code", "SUCCESS")];
        assert!(matches!(c.check_reply(&signed(&c, &other)), Err(WechatError::WrongMerchant { field: "appid", .. })));

        let business = [
            ("return_code", "SUCCESS"),
            ("result_code", "FAIL"),
            ("err_code", "ORDERPAID"),
            ("err_code_des", "已支付"),
        ];
        let e = c.check_reply(&signed(&c, &business)).unwrap_err();
        assert!(matches!(&e, WechatError::Business { code, .. } if code == "ORDERPAID"));
        assert!(!e.is_retryable());
        assert!(matches!(c.check_reply(b"<html>502</html>"), Err(WechatError::BadReply(_))));
    }

    #[test]
    fn base_url_paths_join() {
        let base = Url::parse("http://127.0.0.1:9/sim/").unwrap();
        assert_eq!(join(&base, "/pay/unifiedorder").as_str(), "http://127.0.0.1:9/sim/pay/unifiedorder");
        let root = Url::parse("https://api.mch.weixin.qq.com").unwrap();
        assert_eq!(join(&root, "/pay/orderquery").as_str(), "https://api.mch.weixin.qq.com/pay/orderquery");
    }
}
