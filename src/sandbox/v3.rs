//! The simulator's API v3 side, as WeChat behaves: every request's
//! `Authorization` is checked (scheme, merchant, certificate serial,
//! timestamp, RSA signature over the exact bytes), and every reply —
//! errors included — is signed as WeChat signs: with the WeChat Pay public
//! key's private half under its `PUB_KEY_ID_…`, or with the platform
//! certificate's key under its serial, by the merchant's [`KeyMode`]
//! (which a test can change mid-run: WeChat's migration). Orders: JSAPI,
//! query by `out_trade_no` and by transaction id, close;
//! `/v3/certificates`; and refunds (in `v3/refunds.rs`).
//!
//! Its keys are sandbox keys in `src/sandbox/keys/`: public, like the v2
//! sandbox merchant's API key, and useless anywhere else. (ring cannot
//! generate RSA keys; the platform certificate itself is made at start-up
//! with rcgen, so its validity can be chosen.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::wechat::bill::{BillPayment, BillRefund};

use crate::secret::Secret;

mod refunds;
use crate::wechat::v3::crypto::{request_message, response_message, ApiV3Key, MerchantKey, PublicKey, SCHEME};
use refunds::SimRefund;

pub use super::keys::{
    APIV3_KEY, MERCHANT_PRIVATE_KEY, MERCHANT_PUBLIC_KEY, MERCHANT_SERIAL, WECHATPAY_PUBLIC_KEY,
    WECHATPAY_PUBLIC_KEY_ID,
};
/// The simulator's own private key, signing as WeChat.
const WECHATPAY_PRIVATE_KEY: &str = include_str!("keys/wechatpay-private.pem");
/// The private key of the simulated platform certificate.
const PLATFORM_CERT_PRIVATE_KEY: &str = include_str!("keys/platform-cert-private.pem");

/// Which of its keys WeChat signs a merchant's replies and notifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyMode {
    /// The WeChat Pay public key (new merchants); no certificates exist.
    PublicKey,
    /// Platform certificates only (older merchants).
    Certificates,
    /// WeChat's migration week: replies signed with the public key when the
    /// request names its id, notifies alternately with either.
    Migrating,
}

/// A fault for the next message the v3 side signs (a reply or a notify).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignFault {
    /// Signed with a key the merchant does not have, under the right serial.
    WrongKey,
    /// Signed under a serial no merchant configuration names.
    UnknownSerial,
    /// Stamped ten minutes ago.
    StaleTimestamp,
    /// WeChat's deliberate probe: `WECHATPAY/SIGNTEST/…`.
    Probe,
}

/// The simulated platform certificate.
#[derive(Debug, Clone)]
struct PlatformCert {
    serial: String,
    pem: String,
    not_after: time::OffsetDateTime,
}

fn make_certificate(serial: u64, valid_for: time::Duration) -> PlatformCert {
    let key = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(PLATFORM_CERT_PRIVATE_KEY, &rcgen::PKCS_RSA_SHA256)
        .expect("the sandbox key parses");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, "Tenpay.com Root CA (PayBridge SANDBOX)");
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial.to_be_bytes()));
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + valid_for;
    let cert = params.self_signed(&key).expect("a certificate for a valid key");
    PlatformCert { serial: hex::encode_upper(serial.to_be_bytes()), pem: cert.pem(), not_after: params.not_after }
}

/// The merchant the v3 simulator serves.
#[derive(Debug, Clone)]
pub struct V3Merchant {
    /// `mchid`
    pub mchid: String,
    /// The mini-program bound to it.
    pub appid: String,
    /// Its API certificate serial.
    pub serial_no: String,
    /// Its API public key.
    pub public_key: PublicKey,
}

/// A reply as the simulator sends it.
#[derive(Debug, Clone)]
pub struct V3Reply {
    /// HTTP status.
    pub status: u16,
    /// `Wechatpay-*` headers (none on a reply to a request whose own signature failed).
    pub headers: Vec<(&'static str, String)>,
    /// JSON, or empty for 204.
    pub body: Vec<u8>,
}

#[derive(Debug, Clone)]
struct V3Order {
    /// The order as first requested, to compare a re-submission with.
    request: Value,
    prepay_id: String,
    state: &'static str,
    transaction_id: Option<String>,
    success_time: Option<String>,
}

/// The v3 simulator; cheap to clone.
#[derive(Clone)]
pub struct SimulatorV3 {
    inner: Arc<Inner>,
}

struct Inner {
    merchant: V3Merchant,
    wechat_key: MerchantKey,
    wechat_key_id: String,
    /// The platform certificate's key, and the certificate (replaced on rotation).
    cert_key: MerchantKey,
    cert: Mutex<PlatformCert>,
    key_mode: Mutex<KeyMode>,
    /// Alternates notify keys while migrating.
    migrating_turn: std::sync::atomic::AtomicBool,
    orders: Mutex<HashMap<String, V3Order>>,
    api_v3_key: ApiV3Key,
    /// Every openid a login returned (shared with the v2 side): WeChat
    /// refuses orders for any other.
    openids: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Sign replies with a key nobody configured (a fault for tests).
    sign_with_other_key: std::sync::atomic::AtomicBool,
    /// Faults for the next signed messages.
    faults: Mutex<std::collections::VecDeque<SignFault>>,
    /// How often `/v3/certificates` was called.
    certificate_downloads: std::sync::atomic::AtomicU64,
    /// Refunds by `out_refund_no`.
    refunds: Mutex<HashMap<String, SimRefund>>,
    /// Refunds accepted since the last look: their end and notify follow.
    new_refunds: Mutex<Vec<String>>,
    /// How the next refunds end (`SUCCESS` when none is queued).
    refund_outcomes: Mutex<std::collections::VecDeque<&'static str>>,
    /// Errors for the next refund requests, and the requests seen.
    refund_knobs: Mutex<refunds::RefundKnobs>,
}

impl SimulatorV3 {
    /// The sandbox merchant for `mchid` and `appid`, with the sandbox keys,
    /// in public-key mode, knowing only the openids in `openids`.
    pub fn new(mchid: &str, appid: &str, openids: Arc<Mutex<std::collections::HashSet<String>>>) -> SimulatorV3 {
        let merchant = V3Merchant {
            mchid: mchid.to_owned(),
            appid: appid.to_owned(),
            serial_no: MERCHANT_SERIAL.to_owned(),
            public_key: PublicKey::from_pem(MERCHANT_PUBLIC_KEY).expect("the sandbox key parses"),
        };
        let wechat_key = MerchantKey::from_pem(&Secret::new(WECHATPAY_PRIVATE_KEY)).expect("the sandbox key parses");
        SimulatorV3 {
            inner: Arc::new(Inner {
                merchant,
                wechat_key,
                wechat_key_id: WECHATPAY_PUBLIC_KEY_ID.to_owned(),
                cert_key: MerchantKey::from_pem(&Secret::new(PLATFORM_CERT_PRIVATE_KEY))
                    .expect("the sandbox key parses"),
                cert: Mutex::new(make_certificate(0x5157_4543_4841_5431, time::Duration::days(5 * 365))),
                key_mode: Mutex::new(KeyMode::PublicKey),
                migrating_turn: Default::default(),
                orders: Mutex::new(HashMap::new()),
                api_v3_key: ApiV3Key::new(&Secret::new(APIV3_KEY)).expect("32 characters"),
                openids,
                sign_with_other_key: Default::default(),
                faults: Mutex::default(),
                certificate_downloads: Default::default(),
                refunds: Mutex::default(),
                new_refunds: Mutex::default(),
                refund_outcomes: Mutex::default(),
                refund_knobs: Mutex::default(),
            }),
        }
    }

    /// A simulator that trusts any openid (unit tests of the protocol).
    pub fn sandbox(mchid: &str, appid: &str) -> SimulatorV3 {
        let sim = SimulatorV3::new(mchid, appid, Arc::default());
        sim.inner.openids.lock().expect("openids lock").insert("*".into());
        sim
    }

    /// Switches how WeChat signs for this merchant (WeChat's migration).
    pub fn set_key_mode(&self, mode: KeyMode) {
        *self.inner.key_mode.lock().expect("key mode lock") = mode;
    }

    /// The key mode in force.
    pub fn key_mode(&self) -> KeyMode {
        *self.inner.key_mode.lock().expect("key mode lock")
    }

    /// Issues a new platform certificate (a new serial) valid for `valid_for`,
    /// as WeChat rotates them; returns its serial.
    pub fn rotate_certificate(&self, valid_for: time::Duration) -> String {
        let mut cert = self.inner.cert.lock().expect("cert lock");
        let next = u64::from_str_radix(&cert.serial, 16).unwrap_or(1).wrapping_add(1);
        *cert = make_certificate(next, valid_for);
        cert.serial.clone()
    }

    /// The current platform certificate's serial.
    pub fn certificate_serial(&self) -> String {
        self.inner.cert.lock().expect("cert lock").serial.clone()
    }

    /// Queues faults for the next signed messages, one each.
    pub fn inject(&self, faults: impl IntoIterator<Item = SignFault>) {
        self.inner.faults.lock().expect("faults lock").extend(faults);
    }

    /// From now on, signs replies with a key the merchant does not have.
    pub fn sign_with_other_key(&self, on: bool) {
        self.inner.sign_with_other_key.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether `paySign` is the merchant's signature of these parameters, as
    /// the WeChat client checks it before showing the payment sheet.
    pub fn pay_sign_valid(
        &self,
        app_id: &str,
        time_stamp: &str,
        nonce_str: &str,
        package: &str,
        pay_sign: &str,
    ) -> bool {
        let message = crate::wechat::v3::crypto::pay_sign_message(app_id, time_stamp, nonce_str, package);
        app_id == self.inner.merchant.appid && self.inner.merchant.public_key.verify(message.as_bytes(), pay_sign)
    }

    /// The trade state of an order (`NOTPAY`, `CLOSED`, `SUCCESS`).
    pub fn state(&self, out_trade_no: &str) -> Option<&'static str> {
        self.inner.orders.lock().expect("orders lock").get(out_trade_no).map(|o| o.state)
    }

    /// Handles one v3 API request at `now_secs`.
    pub fn handle(
        &self,
        method: &str,
        path_and_query: &str,
        authorization: Option<&str>,
        body: &[u8],
        now_secs: i64,
    ) -> V3Reply {
        self.handle_with_serial(method, path_and_query, authorization, None, body, now_secs)
    }

    /// [`SimulatorV3::handle`], with the request's `Wechatpay-Serial`
    /// (which key the merchant asks replies to be signed with).
    pub fn handle_with_serial(
        &self,
        method: &str,
        path_and_query: &str,
        authorization: Option<&str>,
        wants_serial: Option<&str>,
        body: &[u8],
        now_secs: i64,
    ) -> V3Reply {
        if let Err(message) = self.authenticate(method, path_and_query, authorization, body, now_secs) {
            // WeChat does not sign its answer to a request it could not authenticate.
            let body = json!({ "code": "SIGN_ERROR", "message": message }).to_string().into_bytes();
            return V3Reply { status: 401, headers: Vec::new(), body };
        }
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        let (status, reply) = match (method, path.strip_prefix("/v3/pay/transactions/")) {
            ("GET", None) if path == "/v3/certificates" => self.certificates(),
            ("POST", None) if path == "/v3/refund/domestic/refunds" => self.refund_create(body, now_secs),
            ("GET", None) if path.starts_with("/v3/refund/domestic/refunds/") => {
                self.refund_get(&path["/v3/refund/domestic/refunds/".len()..])
            }
            ("POST", Some("jsapi")) => self.jsapi(body),
            ("GET", Some(rest)) if rest.starts_with("out-trade-no/") => {
                self.query(&rest["out-trade-no/".len()..], query)
            }
            ("GET", Some(rest)) if rest.starts_with("id/") => {
                let orders = self.inner.orders.lock().expect("orders lock");
                let tx = &rest["id/".len()..];
                match orders.iter().find(|(_, o)| o.transaction_id.as_deref() == Some(tx)) {
                    Some((no, _)) => {
                        let no = no.clone();
                        drop(orders);
                        self.query(&no, query)
                    }
                    None => (404, Some(error("ORDER_NOT_EXIST", "订单不存在"))),
                }
            }
            ("POST", Some(rest)) if rest.starts_with("out-trade-no/") && rest.ends_with("/close") => {
                self.close(&rest["out-trade-no/".len()..rest.len() - "/close".len()], body)
            }
            _ => (404, Some(error("RESOURCE_NOT_EXISTS", "无可用的接口"))),
        };
        self.reply_as_asked(status, reply, wants_serial, now_secs)
    }

    /// A reply signed with the key the merchant's mode (and, while
    /// migrating, its `Wechatpay-Serial`) calls for.
    pub(super) fn reply_as_asked(
        &self,
        status: u16,
        reply: Option<Value>,
        wants_serial: Option<&str>,
        now_secs: i64,
    ) -> V3Reply {
        let body = reply.map_or_else(Vec::new, |v| v.to_string().into_bytes());
        let use_public_key = match self.key_mode() {
            KeyMode::PublicKey => true,
            KeyMode::Certificates => false,
            KeyMode::Migrating => wants_serial == Some(self.inner.wechat_key_id.as_str()),
        };
        self.signed(status, body, now_secs, use_public_key)
    }

    /// The payments and refunds of a Beijing day (`yyyy-MM-dd`), as bill rows.
    pub(super) fn bill_rows(&self, day: &str) -> (Vec<BillPayment>, Vec<BillRefund>) {
        use super::bills::{bill_time_v3, fee};
        let orders = self.inner.orders.lock().expect("orders lock");
        let payments = orders
            .iter()
            .filter(|(_, o)| o.state == "SUCCESS" && o.success_time.as_deref().is_some_and(|t| t.starts_with(day)))
            .filter_map(|(no, o)| {
                let r = &o.request;
                let total_fee = r["amount"]["total"].as_u64()?;
                Some(BillPayment {
                    time: bill_time_v3(o.success_time.as_deref()?)?,
                    appid: r["appid"].as_str()?.to_owned(),
                    mch_id: self.inner.merchant.mchid.clone(),
                    transaction_id: o.transaction_id.clone()?,
                    out_trade_no: no.clone(),
                    openid: r["payer"]["openid"].as_str()?.to_owned(),
                    total_fee,
                    settlement_fee: total_fee,
                    fee: fee(total_fee),
                    body: r["description"].as_str().unwrap_or("").to_owned(),
                })
            })
            .collect();
        let refunds = self.inner.refunds.lock().expect("refunds lock");
        let refunds = refunds
            .iter()
            .filter(|(_, r)| r.create_time.starts_with(day))
            .filter_map(|(no, r)| {
                let out_trade_no = r.request["out_trade_no"].as_str()?.to_owned();
                Some(BillRefund {
                    time: bill_time_v3(&r.create_time)?,
                    transaction_id: orders
                        .get(&out_trade_no)
                        .and_then(|o| o.transaction_id.clone())
                        .unwrap_or_default(),
                    out_trade_no,
                    refund_id: r.refund_id.clone(),
                    out_refund_no: no.clone(),
                    amount: r.request["amount"]["refund"].as_u64()?,
                    status: r.status.to_owned(),
                    total_fee: r.request["amount"]["total"].as_u64()?,
                })
            })
            .collect();
        (payments, refunds)
    }

    /// How many times `/v3/certificates` was called.
    pub fn certificate_downloads(&self) -> u64 {
        self.inner.certificate_downloads.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn certificates(&self) -> (u16, Option<Value>) {
        self.inner.certificate_downloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.key_mode() == KeyMode::PublicKey {
            let message = "无可用的平台证书，请在商户平台-API安全申请使用微信支付公钥。";
            return (404, Some(error("RESOURCE_NOT_EXISTS", message)));
        }
        let cert = self.inner.cert.lock().expect("cert lock").clone();
        let nonce = &crate::wechat::nonce_str()[..12];
        let Ok(ciphertext) = self.inner.api_v3_key.encrypt(nonce, "certificate", cert.pem.as_bytes()) else {
            return (500, Some(error("SYSTEM_ERROR", "系统错误")));
        };
        let rfc3339 = |t: time::OffsetDateTime| crate::wechat::beijing_rfc3339(t.unix_timestamp());
        let effective = cert.not_after - time::Duration::days(5 * 365);
        (
            200,
            Some(json!({ "data": [{
                "serial_no": cert.serial, "effective_time": rfc3339(effective), "expire_time": rfc3339(cert.not_after),
                "encrypt_certificate": {
                    "algorithm": "AEAD_AES_256_GCM", "nonce": nonce, "associated_data": "certificate",
                    "ciphertext": ciphertext,
                },
            }] })),
        )
    }

    pub(super) fn authenticate(
        &self,
        method: &str,
        path_and_query: &str,
        authorization: Option<&str>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), &'static str> {
        const BAD_FORMAT: &str = "Http头Authorization值格式错误,请参考《微信支付商户REST API签名规则》";
        let header = authorization.ok_or(BAD_FORMAT)?;
        let params = header
            .strip_prefix(SCHEME)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or("Http头Authorization认证类型不正确")?;
        let mut fields = HashMap::new();
        for pair in params.split(',') {
            let (key, value) = pair.split_once('=').ok_or(BAD_FORMAT)?;
            let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).ok_or(BAD_FORMAT)?;
            fields.insert(key, value);
        }
        let field = |name: &str| fields.get(name).copied().ok_or(BAD_FORMAT);
        let merchant = &self.inner.merchant;
        if field("mchid")? != merchant.mchid {
            return Err("商户号不存在");
        }
        if field("serial_no")? != merchant.serial_no {
            return Err("商户证书序列号有误。");
        }
        let timestamp: i64 = field("timestamp")?.parse().map_err(|_| BAD_FORMAT)?;
        if (timestamp - now_secs).abs() > 300 {
            return Err("请求时间戳超出有效范围");
        }
        let message = request_message(method, path_and_query, timestamp, field("nonce_str")?, body);
        match merchant.public_key.verify(&message, field("signature")?) {
            true => Ok(()),
            false => Err("签名错误,请检查后再试"),
        }
    }

    /// Signs a reply or notify as WeChat: with the public key's private
    /// half under its id, or the certificate's key under its serial.
    fn signed(&self, status: u16, body: Vec<u8>, now_secs: i64, use_public_key: bool) -> V3Reply {
        let fault = self.inner.faults.lock().expect("faults lock").pop_front();
        let nonce = crate::wechat::nonce_str();
        let stamped = if fault == Some(SignFault::StaleTimestamp) { now_secs - 600 } else { now_secs };
        let timestamp = stamped.to_string();
        let message = response_message(&timestamp, &nonce, &body);
        let cert_serial = self.inner.cert.lock().expect("cert lock").serial.clone();
        let (key, mut serial) = match use_public_key {
            true => (&self.inner.wechat_key, self.inner.wechat_key_id.clone()),
            false => (&self.inner.cert_key, cert_serial),
        };
        let other;
        let key = match fault == Some(SignFault::WrongKey)
            || self.inner.sign_with_other_key.load(std::sync::atomic::Ordering::Relaxed)
        {
            true => {
                other = MerchantKey::from_pem(&Secret::new(MERCHANT_PRIVATE_KEY)).expect("the sandbox key parses");
                &other
            }
            false => key,
        };
        let mut signature = key.sign(&message);
        match fault {
            Some(SignFault::UnknownSerial) => serial = "7E57000000000000000000000000000000000000".to_owned(),
            Some(SignFault::Probe) => signature = format!("WECHATPAY/SIGNTEST/{}", &signature[..40]),
            _ => {}
        }
        let headers = vec![
            ("wechatpay-timestamp", timestamp),
            ("wechatpay-nonce", nonce),
            ("wechatpay-signature", signature),
            ("wechatpay-serial", serial),
            ("wechatpay-signature-type", SCHEME.to_owned()),
            ("content-type", "application/json".to_owned()),
        ];
        V3Reply { status, headers, body }
    }

    fn jsapi(&self, body: &[u8]) -> (u16, Option<Value>) {
        let Ok(request) = serde_json::from_slice::<Value>(body) else {
            return (400, Some(error("PARAM_ERROR", "输入源“/body”映射到值字段“请求体”字符串规则校验失败")));
        };
        let merchant = &self.inner.merchant;
        let text = |pointer: &str| request.pointer(pointer).and_then(Value::as_str).unwrap_or("");
        if text("/mchid") != merchant.mchid {
            return (400, Some(error("PARAM_ERROR", "http header中的mchid与post payload中的mchid不匹配")));
        }
        if text("/appid") != merchant.appid {
            return (400, Some(error("APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配")));
        }
        if text("/payer/openid").is_empty() {
            return (400, Some(error("PARAM_ERROR", "JSAPI支付必须传openid")));
        }
        let openids = self.inner.openids.lock().expect("openids lock");
        if !openids.contains("*") && !openids.contains(text("/payer/openid")) {
            return (400, Some(error("PARAM_ERROR", "appid和openid不匹配")));
        }
        drop(openids);
        if request.pointer("/amount/total").and_then(Value::as_u64).unwrap_or(0) == 0 {
            return (400, Some(error("PARAM_ERROR", "参数超出取值范围")));
        }
        if text("/description").is_empty() || text("/notify_url").is_empty() || text("/out_trade_no").is_empty() {
            return (400, Some(error("PARAM_ERROR", "参数非法")));
        }
        if request.get("time_expire").is_some() {
            let rfc3339 = &time::format_description::well_known::Rfc3339;
            match time::OffsetDateTime::parse(text("/time_expire"), rfc3339) {
                Err(_) => return (400, Some(error("PARAM_ERROR", "time_expire格式错误，应为RFC3339"))),
                Ok(at) if at < time::OffsetDateTime::now_utc() + time::Duration::minutes(1) => {
                    return (400, Some(error("PARAM_ERROR", "time_expire时间过短")))
                }
                Ok(_) => {}
            }
        }
        let no = text("/out_trade_no").to_owned();
        let mut orders = self.inner.orders.lock().expect("orders lock");
        if let Some(existing) = orders.get(&no) {
            return match existing.state {
                "SUCCESS" => (400, Some(error("ORDERPAID", "订单已支付"))),
                "CLOSED" => (400, Some(error("ORDER_CLOSED", "该订单已失效"))),
                _ if existing.request != request => {
                    (400, Some(error("INVALID_REQUEST", "请求重入时,参数与首次请求时不一致")))
                }
                _ => (200, Some(json!({ "prepay_id": existing.prepay_id }))),
            };
        }
        let stamp = crate::wechat::beijing_compact(time::OffsetDateTime::now_utc());
        let prepay_id = format!("wx{stamp}{}", &hex::encode(crate::wechat::nonce_str())[..20]);
        orders.insert(
            no,
            V3Order {
                request,
                prepay_id: prepay_id.clone(),
                state: "NOTPAY",
                transaction_id: None,
                success_time: None,
            },
        );
        (200, Some(json!({ "prepay_id": prepay_id })))
    }

    fn query(&self, no: &str, query: &str) -> (u16, Option<Value>) {
        if query != format!("mchid={}", self.inner.merchant.mchid) {
            return (400, Some(error("PARAM_ERROR", "mchid不匹配")));
        }
        let orders = self.inner.orders.lock().expect("orders lock");
        let Some(order) = orders.get(no) else { return (404, Some(error("ORDER_NOT_EXIST", "订单不存在"))) };
        let r = &order.request;
        let mut reply = json!({
            "appid": r["appid"], "mchid": r["mchid"], "out_trade_no": no, "trade_state": order.state,
            "trade_state_desc": match order.state { "SUCCESS" => "支付成功", "CLOSED" => "已关闭", _ => "订单未支付" },
            "amount": { "total": r["amount"]["total"], "currency": "CNY" },
            "payer": { "openid": r["payer"]["openid"] },
        });
        if let (Some(tx), Some(at)) = (&order.transaction_id, &order.success_time) {
            reply["transaction_id"] = json!(tx);
            reply["success_time"] = json!(at);
            reply["trade_type"] = json!("JSAPI");
        }
        (200, Some(reply))
    }

    fn close(&self, no: &str, body: &[u8]) -> (u16, Option<Value>) {
        let mchid = serde_json::from_slice::<Value>(body).ok().and_then(|v| v["mchid"].as_str().map(str::to_owned));
        if mchid.as_deref() != Some(self.inner.merchant.mchid.as_str()) {
            return (400, Some(error("PARAM_ERROR", "mchid不匹配")));
        }
        let mut orders = self.inner.orders.lock().expect("orders lock");
        let Some(order) = orders.get_mut(no) else { return (404, Some(error("ORDER_NOT_EXIST", "订单不存在"))) };
        match order.state {
            "SUCCESS" => (400, Some(error("ORDER_PAID", "订单已支付"))),
            "CLOSED" => (400, Some(error("ORDER_CLOSED", "订单已关闭"))),
            _ => {
                order.state = "CLOSED";
                (204, None)
            }
        }
    }
}

pub(super) fn error(code: &str, message: &str) -> Value {
    json!({ "code": code, "message": message })
}

/// A payment notify as WeChat POSTs it: signed headers and the JSON body.
#[derive(Debug, Clone)]
pub struct V3Notify {
    /// `Wechatpay-Timestamp`, `-Nonce`, `-Signature`, `-Serial`, `-Signature-Type`.
    pub headers: Vec<(&'static str, String)>,
    /// The envelope, its resource encrypted with the APIv3 key.
    pub body: Vec<u8>,
}

impl SimulatorV3 {
    /// The `time_expire` an order was placed with.
    pub fn time_expire(&self, out_trade_no: &str) -> Option<String> {
        let orders = self.inner.orders.lock().expect("orders lock");
        orders.get(out_trade_no).and_then(|o| o.request["time_expire"].as_str().map(str::to_owned))
    }

    /// Whether this side holds the order.
    pub fn has_order(&self, out_trade_no: &str) -> bool {
        self.inner.orders.lock().expect("orders lock").contains_key(out_trade_no)
    }

    /// The order's `notify_url`, amount and transaction id.
    pub fn order_facts(&self, out_trade_no: &str) -> Option<(String, u64, Option<String>)> {
        let orders = self.inner.orders.lock().expect("orders lock");
        orders.get(out_trade_no).map(|o| {
            let url = o.request["notify_url"].as_str().unwrap_or("").to_owned();
            (url, o.request["amount"]["total"].as_u64().unwrap_or(0), o.transaction_id.clone())
        })
    }

    /// The user pays an order at `now_secs`: it becomes `SUCCESS` and this
    /// is the notify WeChat sends (`TRANSACTION.SUCCESS`, resource encrypted
    /// with the APIv3 key, the whole body signed as WeChat).
    pub fn pay(&self, out_trade_no: &str, now_secs: i64) -> Result<V3Notify, String> {
        let transaction = {
            let mut orders = self.inner.orders.lock().expect("orders lock");
            let order = orders.get_mut(out_trade_no).ok_or_else(|| format!("no v3 order {out_trade_no:?}"))?;
            if order.state != "NOTPAY" {
                return Err(format!("the order is {}, it cannot be paid", order.state));
            }
            let expire = order.request["time_expire"].as_str().unwrap_or("");
            let rfc3339 = &time::format_description::well_known::Rfc3339;
            if time::OffsetDateTime::parse(expire, rfc3339).is_ok_and(|at| at.unix_timestamp() < now_secs) {
                return Err("the order expired at WeChat (time_expire): 该订单已失效".into());
            }
            order.state = "SUCCESS";
            let success_time = crate::wechat::beijing_rfc3339(now_secs);
            let transaction_id = format!("4200000{:021}", rand::Rng::random_range(&mut rand::rng(), 0..10u128.pow(21)));
            order.transaction_id = Some(transaction_id);
            order.success_time = Some(success_time);
            self.transaction(order, out_trade_no)
        };
        self.notify(&transaction, &format!("EV-{}", &crate::wechat::nonce_str()[..20]), now_secs)
    }

    /// The transaction resource of a paid order (what its notify carries).
    pub fn paid_transaction(&self, out_trade_no: &str) -> Option<Value> {
        let orders = self.inner.orders.lock().expect("orders lock");
        orders.get(out_trade_no).filter(|o| o.state == "SUCCESS").map(|o| self.transaction(o, out_trade_no))
    }

    /// The `transaction` resource of a paid order.
    fn transaction(&self, order: &V3Order, out_trade_no: &str) -> Value {
        let r = &order.request;
        let success_time = order.success_time.clone().unwrap_or_default();
        let transaction_id = order.transaction_id.clone().unwrap_or_default();
        json!({
            "mchid": r["mchid"], "appid": r["appid"], "out_trade_no": out_trade_no,
            "transaction_id": transaction_id, "trade_type": "JSAPI", "trade_state": "SUCCESS",
            "trade_state_desc": "支付成功", "bank_type": "OTHERS", "attach": r.get("attach").cloned().unwrap_or(json!("")),
            "success_time": success_time, "payer": { "openid": r["payer"]["openid"] },
            "amount": { "total": r["amount"]["total"], "payer_total": r["amount"]["total"], "currency": "CNY", "payer_currency": "CNY" },
        })
    }

    /// The notify for `transaction`, encrypted and signed at `now_secs`
    /// with the key the merchant's mode calls for (again for each attempt,
    /// as WeChat re-signs its retries).
    pub fn notify(&self, transaction: &Value, event_id: &str, now_secs: i64) -> Result<V3Notify, String> {
        let success_time = transaction["success_time"].as_str().unwrap_or("").to_owned();
        let nonce = &crate::wechat::nonce_str()[..12];
        let ciphertext = self
            .inner
            .api_v3_key
            .encrypt(nonce, "transaction", transaction.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
        let body = json!({
            "id": event_id,
            "create_time": success_time, "resource_type": "encrypt-resource",
            "event_type": "TRANSACTION.SUCCESS", "summary": "支付成功",
            "resource": {
                "original_type": "transaction", "algorithm": "AEAD_AES_256_GCM", "ciphertext": ciphertext,
                "associated_data": "transaction", "nonce": nonce,
            },
        })
        .to_string()
        .into_bytes();
        let use_public_key = match self.key_mode() {
            KeyMode::PublicKey => true,
            KeyMode::Certificates => false,
            KeyMode::Migrating => !self.inner.migrating_turn.fetch_xor(true, std::sync::atomic::Ordering::Relaxed),
        };
        let signed = self.signed(200, body, now_secs, use_public_key);
        let headers = signed.headers.into_iter().filter(|(name, _)| name.starts_with("wechatpay-")).collect();
        Ok(V3Notify { headers, body: signed.body })
    }
}

/// The v3 API's routes (`/v3/...`) of a simulator with only a v3 side.
pub fn routes(sim: SimulatorV3) -> warp::filters::BoxedFilter<(warp::reply::Response,)> {
    use warp::Filter;
    warp::path("v3")
        .and(warp::method())
        .and(crate::http::path_and_query())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>("wechatpay-serial"))
        .and(crate::http::body::limited(64 * 1024))
        .map(
            move |method: warp::http::Method,
                  path_and_query: String,
                  authorization: Option<String>,
                  wants_serial: Option<String>,
                  body: bytes::Bytes| {
                let now = crate::clock::now_ms() / 1000;
                into_response(sim.handle_with_serial(
                    method.as_str(),
                    &path_and_query,
                    authorization.as_deref(),
                    wants_serial.as_deref(),
                    &body,
                    now,
                ))
            },
        )
        .boxed()
}

/// A reply as an HTTP response.
pub fn into_response(reply: V3Reply) -> warp::reply::Response {
    let mut response = warp::http::Response::new(reply.body.into());
    *response.status_mut() =
        warp::http::StatusCode::from_u16(reply.status).unwrap_or(warp::http::StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in reply.headers {
        if let Ok(value) = warp::http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

impl SimulatorV3 {
    /// Signs any notify body as WeChat would sign it now (tests build
    /// tampered notifies that still carry a valid signature with this).
    pub fn sign_notify(&self, body: Vec<u8>, now_secs: i64) -> V3Notify {
        let signed = self.signed(200, body, now_secs, self.key_mode() != KeyMode::Certificates);
        let headers = signed.headers.into_iter().filter(|(name, _)| name.starts_with("wechatpay-")).collect();
        V3Notify { headers, body: signed.body }
    }

    /// A signed error reply (an injected business error).
    pub fn error_reply(&self, status: u16, code: &str, message: &str, now_secs: i64) -> V3Reply {
        let body = error(code, message).to_string().into_bytes();
        self.signed(status, body, now_secs, self.key_mode() != KeyMode::Certificates)
    }
}
