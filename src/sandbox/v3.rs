//! The simulator's API v3 side, as WeChat behaves: every request's
//! `Authorization` is checked (scheme, merchant, certificate serial,
//! timestamp, RSA signature over the exact bytes), and every reply —
//! errors included — is signed with "WeChat's" key under its
//! `PUB_KEY_ID_…`. Orders: JSAPI, query by `out_trade_no`, close.
//!
//! Its keys are sandbox keys in `src/sandbox/keys/`: public, like the v2
//! sandbox merchant's API key, and useless anywhere else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::secret::Secret;
use crate::wechat::v3::crypto::{request_message, response_message, ApiV3Key, MerchantKey, PublicKey, SCHEME};

/// The sandbox merchant's API private key (PKCS#8).
pub const MERCHANT_PRIVATE_KEY: &str = include_str!("keys/merchant-private.pem");
/// Its public half, what the simulator verifies requests with.
pub const MERCHANT_PUBLIC_KEY: &str = include_str!("keys/merchant-public.pem");
/// The sandbox merchant's API certificate serial.
pub const MERCHANT_SERIAL: &str = "5A4D1C0E9B8F7A6D5C4B3A291807F6E5D4C3B2A1";
/// The simulated WeChat Pay public key and its id.
pub const WECHATPAY_PUBLIC_KEY: &str = include_str!("keys/wechatpay-public.pem");
/// The id of [`WECHATPAY_PUBLIC_KEY`].
pub const WECHATPAY_PUBLIC_KEY_ID: &str = "PUB_KEY_ID_0000000000000000000000000000000001";
/// The sandbox merchant's APIv3 key (32 characters), encrypting notifies.
pub const APIV3_KEY: &str = "SANDBOXapiv3KEYsandboxAPIV3key00";
/// The simulator's own private key, signing as WeChat.
const WECHATPAY_PRIVATE_KEY: &str = include_str!("keys/wechatpay-private.pem");

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
    orders: Mutex<HashMap<String, V3Order>>,
    api_v3_key: ApiV3Key,
    /// Sign replies with a key nobody configured (a fault for tests).
    sign_with_other_key: std::sync::atomic::AtomicBool,
}

impl SimulatorV3 {
    /// The sandbox merchant for `mchid` and `appid`, with the sandbox keys.
    pub fn sandbox(mchid: &str, appid: &str) -> SimulatorV3 {
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
                orders: Mutex::new(HashMap::new()),
                api_v3_key: ApiV3Key::new(&Secret::new(APIV3_KEY)).expect("32 characters"),
                sign_with_other_key: Default::default(),
            }),
        }
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
        if let Err(message) = self.authenticate(method, path_and_query, authorization, body, now_secs) {
            // WeChat does not sign its answer to a request it could not authenticate.
            let body = json!({ "code": "SIGN_ERROR", "message": message }).to_string().into_bytes();
            return V3Reply { status: 401, headers: Vec::new(), body };
        }
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        let (status, reply) = match (method, path.strip_prefix("/v3/pay/transactions/")) {
            ("POST", Some("jsapi")) => self.jsapi(body),
            ("GET", Some(rest)) if rest.starts_with("out-trade-no/") => {
                self.query(&rest["out-trade-no/".len()..], query)
            }
            ("POST", Some(rest)) if rest.starts_with("out-trade-no/") && rest.ends_with("/close") => {
                self.close(&rest["out-trade-no/".len()..rest.len() - "/close".len()], body)
            }
            _ => (404, Some(error("RESOURCE_NOT_EXISTS", "无可用的接口"))),
        };
        let body = reply.map_or_else(Vec::new, |v| v.to_string().into_bytes());
        self.signed(status, body, now_secs)
    }

    fn authenticate(
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

    fn signed(&self, status: u16, body: Vec<u8>, now_secs: i64) -> V3Reply {
        let nonce = crate::wechat::nonce_str();
        let timestamp = now_secs.to_string();
        let message = response_message(&timestamp, &nonce, &body);
        let other;
        let key = match self.inner.sign_with_other_key.load(std::sync::atomic::Ordering::Relaxed) {
            true => {
                other = MerchantKey::from_pem(&Secret::new(MERCHANT_PRIVATE_KEY)).expect("the sandbox key parses");
                &other
            }
            false => &self.inner.wechat_key,
        };
        let headers = vec![
            ("wechatpay-timestamp", timestamp),
            ("wechatpay-nonce", nonce),
            ("wechatpay-signature", key.sign(&message)),
            ("wechatpay-serial", self.inner.wechat_key_id.clone()),
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
        if request.pointer("/amount/total").and_then(Value::as_u64).unwrap_or(0) == 0 {
            return (400, Some(error("PARAM_ERROR", "参数超出取值范围")));
        }
        if text("/description").is_empty() || text("/notify_url").is_empty() || text("/out_trade_no").is_empty() {
            return (400, Some(error("PARAM_ERROR", "参数非法")));
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
        orders.insert(no, V3Order { request, prepay_id: prepay_id.clone(), state: "NOTPAY" });
        (200, Some(json!({ "prepay_id": prepay_id })))
    }

    fn query(&self, no: &str, query: &str) -> (u16, Option<Value>) {
        if query != format!("mchid={}", self.inner.merchant.mchid) {
            return (400, Some(error("PARAM_ERROR", "mchid不匹配")));
        }
        let orders = self.inner.orders.lock().expect("orders lock");
        let Some(order) = orders.get(no) else { return (404, Some(error("ORDER_NOT_EXIST", "订单不存在"))) };
        let r = &order.request;
        (
            200,
            Some(json!({
                "appid": r["appid"], "mchid": r["mchid"], "out_trade_no": no, "trade_state": order.state,
                "trade_state_desc": match order.state { "SUCCESS" => "支付成功", "CLOSED" => "已关闭", _ => "订单未支付" },
                "amount": { "total": r["amount"]["total"], "currency": "CNY" },
                "payer": { "openid": r["payer"]["openid"] },
            })),
        )
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

fn error(code: &str, message: &str) -> Value {
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
    /// The user pays an order at `now_secs`: it becomes `SUCCESS` and this
    /// is the notify WeChat sends (`TRANSACTION.SUCCESS`, resource encrypted
    /// with the APIv3 key, the whole body signed as WeChat).
    pub fn pay(&self, out_trade_no: &str, now_secs: i64) -> Result<V3Notify, String> {
        let mut orders = self.inner.orders.lock().expect("orders lock");
        let order = orders.get_mut(out_trade_no).ok_or_else(|| format!("no v3 order {out_trade_no:?}"))?;
        if order.state != "NOTPAY" {
            return Err(format!("the order is {}, it cannot be paid", order.state));
        }
        order.state = "SUCCESS";
        let r = &order.request;
        let at = time::OffsetDateTime::from_unix_timestamp(now_secs).map_err(|e| e.to_string())?;
        let success_time = at
            .to_offset(time::macros::offset!(+8))
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| e.to_string())?;
        let transaction_id = format!("4200000{:021}", rand::Rng::random_range(&mut rand::rng(), 0..10u128.pow(21)));
        let transaction = json!({
            "mchid": r["mchid"], "appid": r["appid"], "out_trade_no": out_trade_no,
            "transaction_id": transaction_id, "trade_type": "JSAPI", "trade_state": "SUCCESS",
            "trade_state_desc": "支付成功", "bank_type": "OTHERS", "attach": r.get("attach").cloned().unwrap_or(json!("")),
            "success_time": success_time, "payer": { "openid": r["payer"]["openid"] },
            "amount": { "total": r["amount"]["total"], "payer_total": r["amount"]["total"], "currency": "CNY", "payer_currency": "CNY" },
        });
        let nonce = &crate::wechat::nonce_str()[..12];
        let ciphertext = self
            .inner
            .api_v3_key
            .encrypt(nonce, "transaction", transaction.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
        let body = json!({
            "id": format!("EV-{}", &crate::wechat::nonce_str()[..20]),
            "create_time": success_time, "resource_type": "encrypt-resource",
            "event_type": "TRANSACTION.SUCCESS", "summary": "支付成功",
            "resource": {
                "original_type": "transaction", "algorithm": "AEAD_AES_256_GCM", "ciphertext": ciphertext,
                "associated_data": "transaction", "nonce": nonce,
            },
        })
        .to_string()
        .into_bytes();
        let signed = self.signed(200, body, now_secs);
        let headers = signed.headers.into_iter().filter(|(name, _)| name.starts_with("wechatpay-")).collect();
        Ok(V3Notify { headers, body: signed.body })
    }
}

/// The v3 API's routes (`/v3/...`), as the simulator serves them.
pub fn routes(sim: SimulatorV3) -> warp::filters::BoxedFilter<(warp::reply::Response,)> {
    use warp::Filter;
    warp::path("v3")
        .and(warp::method())
        .and(crate::http::path_and_query())
        .and(warp::header::optional::<String>("authorization"))
        .and(crate::http::body::limited(64 * 1024))
        .map(
            move |method: warp::http::Method,
                  path_and_query: String,
                  authorization: Option<String>,
                  body: bytes::Bytes| {
                let now = crate::pay::now_ms() / 1000;
                let reply = sim.handle(method.as_str(), &path_and_query, authorization.as_deref(), &body, now);
                let mut response = warp::http::Response::new(reply.body.into());
                *response.status_mut() = warp::http::StatusCode::from_u16(reply.status)
                    .unwrap_or(warp::http::StatusCode::INTERNAL_SERVER_ERROR);
                for (name, value) in reply.headers {
                    if let Ok(value) = warp::http::HeaderValue::from_str(&value) {
                        response.headers_mut().insert(name, value);
                    }
                }
                response
            },
        )
        .boxed()
}
