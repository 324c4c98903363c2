//! The v3 HTTP client: sends what [`super::api`] signs, reads only replies
//! that verify, and reports failures as the same [`WechatError`] v2 uses,
//! so the payment flow above does not care which version runs.

use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::api::{self, JsapiAmount, JsapiOrder, JsapiPayer, ReplyError, Signer};
use super::crypto::{ApiV3Key, PublicKey};
use super::trust::{PlatformCertificate, Trust};
use super::verify::{SignedHeaders, Verifier, VerifyError};
use crate::wechat::client::{read_up_to, transport, WechatError};
use crate::wechat::xml::MAX_XML_BYTES;

/// A v3 client for one merchant.
pub struct V3Client {
    http: reqwest::Client,
    base: Url,
    appid: String,
    notify_url: String,
    signer: Signer,
    /// Whose signatures replies must carry; shared with the notify handler.
    trust: Arc<Trust>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// A reply as received, before verification.
struct RawReply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl RawReply {
    fn signed_headers(&self) -> SignedHeaders<'_> {
        let header = |name: &str| self.headers.get(name).and_then(|v| v.to_str().ok());
        SignedHeaders {
            timestamp: header("wechatpay-timestamp"),
            nonce: header("wechatpay-nonce"),
            signature: header("wechatpay-signature"),
            serial: header("wechatpay-serial"),
        }
    }

    fn read(&self, verifier: &Verifier) -> Result<Vec<u8>, WechatError> {
        let now = crate::clock::now_ms() / 1000;
        api::read_reply(self.status, &self.signed_headers(), &self.body, verifier, now).map_err(|e| match e {
            ReplyError::Unverified(e) => WechatError::BadReply(format!("its signature did not verify: {e}")),
            ReplyError::Api { code, message, .. } => WechatError::Business { code, description: message },
        })
    }
}

/// What a signed request got back, before anything in it is trusted: the
/// status, WeChat's `code` and `message`, and how its signature checked.
/// For `paybridge doctor`, which must tell a refused request from a reply
/// signed by a key it does not know, where [`V3Client::query`] only says
/// that the call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// HTTP status.
    pub status: u16,
    /// WeChat's `code` (`ORDER_NOT_EXIST`, `SIGN_ERROR`, …); empty on a 2xx.
    pub code: String,
    /// WeChat's `message` (at most 256 characters).
    pub message: String,
    /// The reply's `Wechatpay-Serial`: which key signed it.
    pub serial: Option<String>,
    /// `None`: the reply carries no signature; else whether it verified
    /// with the keys trusted now.
    pub verified: Option<Result<(), VerifyError>>,
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
    /// The last moment the user can pay (unix seconds), if the order expires.
    pub time_expire: Option<i64>,
}

/// A refund as PayBridge asks for it.
#[derive(Debug, Clone)]
pub struct Refund<'a> {
    /// The order.
    pub out_trade_no: &'a str,
    /// Our refund number.
    pub out_refund_no: &'a str,
    /// Shown to the payer (may be empty).
    pub reason: &'a str,
    /// Fen to refund.
    pub amount: u64,
    /// The order's amount, fen.
    pub total: u64,
}

impl V3Client {
    /// A client for `base` (WeChat's host, or the simulator's).
    pub fn new(
        base: Url,
        appid: &str,
        notify_url: &str,
        signer: Signer,
        trust: Arc<Trust>,
        timeout: Duration,
    ) -> Result<V3Client, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("PayBridge/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(V3Client {
            http,
            base,
            appid: appid.to_owned(),
            notify_url: notify_url.to_owned(),
            signer,
            trust,
            metrics: None,
        })
    }

    /// Records the latency of every call in `metrics` (`api="v3_jsapi"`, …).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> V3Client {
        self.metrics = Some(metrics);
        self
    }

    /// The keys replies are verified with.
    pub fn trust(&self) -> &Arc<Trust> {
        &self.trust
    }

    /// Signs and sends one request; returns the reply unverified.
    async fn send(&self, method: &'static str, path_and_query: &str, body: Vec<u8>) -> Result<RawReply, WechatError> {
        let api = match path_and_query {
            p if p.starts_with("/v3/certificates") => "v3_certificates",
            p if p.ends_with("/close") => "v3_close",
            "/v3/pay/transactions/jsapi" => "v3_jsapi",
            p if p.starts_with("/v3/refund/") => "v3_refund",
            p if p.starts_with("/v3/billdownload/") => "v3_bill_download",
            p if p.starts_with("/v3/bill/") => "v3_bill",
            _ => "v3_query",
        };
        // Only the bill file is larger than a message.
        let limit = if api == "v3_bill_download" { crate::wechat::bill::MAX_BILL_BYTES } else { MAX_XML_BYTES };
        let started = std::time::Instant::now();
        let reply = self.send_unmeasured(method, path_and_query, body, limit).await;
        // Failures and timeouts are latencies too.
        if let Some(m) = &self.metrics {
            m.wechat_call(api, started.elapsed());
        }
        reply
    }

    async fn send_unmeasured(
        &self,
        method: &'static str,
        path_and_query: &str,
        body: Vec<u8>,
        limit: usize,
    ) -> Result<RawReply, WechatError> {
        let now = crate::clock::now_ms() / 1000;
        let request = self.signer.sign(method, path_and_query, body, now, &crate::wechat::nonce_str());
        let url = self.base.join(path_and_query).map_err(|e| WechatError::Transport(e.to_string()))?;
        let mut builder = self.http.request(method.parse().expect("GET or POST"), url).body(request.body);
        for (name, value) in &request.headers {
            builder = builder.header(*name, value);
        }
        let reply = builder.send().await.map_err(transport)?;
        let status = reply.status().as_u16();
        let headers = reply.headers().clone();
        let body = read_up_to(reply, limit).await?;
        Ok(RawReply { status, headers, body })
    }

    /// Signs and sends one request; returns the verified 2xx body.
    async fn call(&self, method: &'static str, path_and_query: &str, body: Vec<u8>) -> Result<Vec<u8>, WechatError> {
        self.send(method, path_and_query, body).await?.read(&self.trust.verifier())
    }

    /// Places a JSAPI order; returns the prepay id.
    pub async fn jsapi(&self, order: &Order<'_>) -> Result<String, WechatError> {
        let time_expire = order.time_expire.map(crate::wechat::beijing_rfc3339);
        let body = JsapiOrder {
            appid: &self.appid,
            mchid: &self.signer.mchid,
            description: order.description,
            out_trade_no: order.out_trade_no,
            time_expire: time_expire.as_deref(),
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

    /// Queries an order by our number and returns what came back, verified
    /// or not (see [`Probe`]); nothing in it is used beyond the report.
    pub async fn probe_query(&self, out_trade_no: &str) -> Result<Probe, WechatError> {
        let path = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={}", self.signer.mchid);
        let reply = self.send("GET", &path, Vec::new()).await?;
        let headers = reply.signed_headers();
        let now = crate::clock::now_ms() / 1000;
        let verified = headers.signature.map(|_| self.trust.verifier().verify(&headers, &reply.body, now));
        #[derive(serde::Deserialize, Default)]
        struct ErrorBody {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
        }
        let error = match (200..300).contains(&reply.status) {
            true => ErrorBody::default(),
            false => serde_json::from_slice(&reply.body).unwrap_or_default(),
        };
        Ok(Probe {
            status: reply.status,
            code: error.code.chars().take(64).collect(),
            message: error.message.chars().take(256).collect(),
            serial: headers.serial.map(|s| s.chars().take(64).collect()),
            verified,
        })
    }

    /// Queries an order by WeChat's transaction id; returns WeChat's verified JSON.
    pub async fn query_transaction(&self, transaction_id: &str) -> Result<serde_json::Value, WechatError> {
        if !transaction_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(WechatError::BadReply("a transaction id is letters and digits".into()));
        }
        let path = format!("/v3/pay/transactions/id/{transaction_id}?mchid={}", self.signer.mchid);
        let reply = self.call("GET", &path, Vec::new()).await?;
        serde_json::from_slice(&reply).map_err(|e| WechatError::BadReply(e.to_string()))
    }

    /// Asks for a refund (`POST /v3/refund/domestic/refunds`); returns
    /// WeChat's verified refund object. The same `out_refund_no` again is
    /// the same refund (WeChat's idempotency).
    pub async fn refund(&self, refund: &Refund<'_>) -> Result<serde_json::Value, WechatError> {
        let body = serde_json::json!({
            "out_trade_no": refund.out_trade_no, "out_refund_no": refund.out_refund_no,
            "reason": refund.reason, "notify_url": self.notify_url,
            "amount": { "refund": refund.amount, "total": refund.total, "currency": "CNY" },
        });
        let reply = self.call("POST", "/v3/refund/domestic/refunds", body.to_string().into_bytes()).await?;
        serde_json::from_slice(&reply).map_err(|e| WechatError::BadReply(e.to_string()))
    }

    /// Queries a refund by our number.
    pub async fn refund_query(&self, out_refund_no: &str) -> Result<serde_json::Value, WechatError> {
        let path = format!("/v3/refund/domestic/refunds/{out_refund_no}");
        let reply = self.call("GET", &path, Vec::new()).await?;
        serde_json::from_slice(&reply).map_err(|e| WechatError::BadReply(e.to_string()))
    }

    /// Downloads the platform certificates (`GET /v3/certificates`),
    /// decrypts each with the APIv3 key and checks it, then verifies the
    /// reply itself with the keys already trusted plus the ones it brings
    /// (the first download has nothing else to verify with: it rests on the
    /// APIv3 key's authenticated encryption, as WeChat's SDKs do).
    pub async fn certificates(&self, apiv3_key: &ApiV3Key) -> Result<Vec<PlatformCertificate>, WechatError> {
        let reply = self.send("GET", "/v3/certificates?algorithm_type=RSA", Vec::new()).await?;
        if !(200..300).contains(&reply.status) {
            return reply.read(&self.trust.verifier()).map(|_| Vec::new());
        }
        #[derive(serde::Deserialize)]
        struct List {
            data: Vec<Entry>,
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            serial_no: String,
            encrypt_certificate: super::notify::Resource,
        }
        let list: List = serde_json::from_slice(&reply.body)
            .map_err(|e| WechatError::BadReply(format!("not the certificate list: {e}")))?;
        let mut downloaded = Vec::new();
        let mut verifier = (*self.trust.verifier()).clone();
        for entry in list.data {
            let r = &entry.encrypt_certificate;
            let pem = apiv3_key
                .decrypt(&r.nonce, &r.associated_data, &r.ciphertext)
                .map_err(|e| WechatError::BadReply(format!("certificate {}: {e}", entry.serial_no)))?;
            let pem = String::from_utf8(pem).map_err(|_| WechatError::BadReply("a certificate is not text".into()))?;
            let (serial, key, not_after) = PublicKey::certificate(&pem)
                .map_err(|e| WechatError::BadReply(format!("certificate {}: {e}", entry.serial_no)))?;
            if serial != entry.serial_no.to_ascii_uppercase() {
                return Err(WechatError::BadReply(format!(
                    "certificate listed as {} has serial {serial}",
                    entry.serial_no
                )));
            }
            verifier.add(&serial, key.clone());
            downloaded.push(PlatformCertificate { serial, key, not_after, pem });
        }
        reply.read(&verifier)?;
        Ok(downloaded)
    }

    /// Downloads the `ALL` trade bill of `bill_date` (`yyyy-MM-dd`): asks
    /// for it (`GET /v3/bill/tradebill`, a signed reply with the file's
    /// SHA-1 and a download URL), fetches the file (unsigned, gzip) from
    /// that URL only if it is on WeChat's own host, and checks the SHA-1 of
    /// the text. `None`: WeChat has no bill for the day. A bill not made
    /// yet is the business error `BILL_CREATING`, as in v2.
    pub async fn trade_bill(&self, bill_date: &str) -> Result<Option<Vec<u8>>, WechatError> {
        let path = format!("/v3/bill/tradebill?bill_date={bill_date}&bill_type=ALL&tar_type=GZIP");
        let reply = match self.call("GET", &path, Vec::new()).await {
            Err(WechatError::Business { code, .. }) if code == "NO_STATEMENT_EXIST" => return Ok(None),
            Err(WechatError::Business { code, description }) if code == "STATEMENT_CREATING" => {
                return Err(WechatError::Business { code: "BILL_CREATING".into(), description })
            }
            reply => reply?,
        };
        #[derive(serde::Deserialize)]
        struct Applied {
            hash_type: String,
            hash_value: String,
            download_url: String,
        }
        let applied: Applied =
            serde_json::from_slice(&reply).map_err(|e| WechatError::BadReply(format!("not a bill's address: {e}")))?;
        if !applied.hash_type.eq_ignore_ascii_case("SHA1") {
            return Err(WechatError::BadReply(format!("unknown hash_type {:?}", applied.hash_type)));
        }
        let url = Url::parse(&applied.download_url)
            .map_err(|e| WechatError::BadReply(format!("download_url does not parse: {e}")))?;
        if url.origin() != self.base.origin() {
            return Err(WechatError::BadReply("download_url is not on WeChat's host; not followed".into()));
        }
        let file_path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let file = self.send("GET", &file_path, Vec::new()).await?;
        if file.status != 200 {
            // Errors are ordinary (signed) JSON errors.
            return file.read(&self.trust.verifier()).and(Err(WechatError::HttpStatus(file.status)));
        }
        // The file itself is not signed: its SHA-1, from the signed reply, vouches for it.
        let text = match file.body.starts_with(&[0x1f, 0x8b]) {
            true => crate::wechat::bill::gunzip(&file.body).map_err(WechatError::BadReply)?,
            false => file.body,
        };
        let hash = crate::wechat::bill::sha1_hex(&text);
        if !hash.eq_ignore_ascii_case(&applied.hash_value) {
            return Err(WechatError::BadReply(format!(
                "the bill's SHA-1 is {hash}, WeChat's signed reply says {}",
                applied.hash_value
            )));
        }
        Ok(Some(text))
    }

    /// Closes an unpaid order.
    pub async fn close(&self, out_trade_no: &str) -> Result<(), WechatError> {
        let path = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}/close");
        let body = serde_json::json!({ "mchid": self.signer.mchid }).to_string().into_bytes();
        self.call("POST", &path, body).await.map(drop)
    }
}
