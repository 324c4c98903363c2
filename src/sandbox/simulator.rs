//! A WeChat Pay v2 server for tests and for sandbox mode.
//!
//! It behaves as WeChat does, as far as `WECHATPAY-V2.md` knows: it verifies
//! the signature of every request (over all fields), signs every reply with
//! the request's algorithm, answers protocol errors with the two-field FAIL
//! reply and business errors with a signed `result_code=FAIL`, keeps unified
//! orders idempotent, and delivers signed notifies on WeChat's retry
//! schedule. A control API (`/sandbox/...`, not WeChat's) lets a person or a
//! test "pay" an order and inject faults.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::notifier::{self, Delivery};
use crate::secret::Secret;
use crate::wechat::sign::{self, Fields, SignType};
use crate::wechat::{beijing_compact, is_valid_out_trade_no, nonce_str, xml};

/// The simulated merchant and the simulator's behaviour.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// The mini-program AppID it accepts.
    pub appid: String,
    /// The AppSecret `jscode2session` checks.
    pub app_secret: Secret,
    /// The merchant number it accepts.
    pub mch_id: String,
    /// The API key that signs everything.
    pub mch_key: Secret,
    /// Waits between notify attempts; WeChat's schedule by default.
    pub notify_schedule: Vec<Duration>,
    /// Put `sign_type` into notifies (WeChat usually leaves it out).
    pub sign_type_in_notify: bool,
    /// Every day's bill can be downloaded at once, today's too (the sandbox
    /// demo); otherwise only days ended with [`Simulator::close_day`].
    pub bills_ready_at_once: bool,
}

impl SimulatorConfig {
    /// A simulator for the given merchant, with WeChat's notify schedule.
    pub fn new(appid: &str, app_secret: &Secret, mch_id: &str, mch_key: &Secret) -> SimulatorConfig {
        SimulatorConfig {
            appid: appid.into(),
            app_secret: app_secret.clone(),
            mch_id: mch_id.into(),
            mch_key: mch_key.clone(),
            notify_schedule: notifier::WECHAT_SCHEDULE.to_vec(),
            sign_type_in_notify: false,
            bills_ready_at_once: false,
        }
    }
}

/// A fault to inject into the next pay API call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer normally, but only after this many milliseconds.
    Delay {
        /// The delay.
        ms: u64,
    },
    /// Answer with this HTTP status and an HTML page (as a broken proxy would).
    Http {
        /// The status.
        status: u16,
    },
    /// Answer `return_code=FAIL` with this message.
    ReturnFail {
        /// `return_msg`
        message: String,
    },
    /// Answer `result_code=FAIL` with this error (e.g. `SYSTEMERROR`).
    Business {
        /// `err_code`
        code: String,
        /// `err_code_des`
        description: String,
    },
    /// Answer normally but with a wrong signature (v3: signed with a wrong key).
    BadSign,
    /// v3: sign under a serial the merchant has never heard of.
    UnknownSerial,
    /// v3: sign with a timestamp ten minutes old.
    StaleTimestamp,
    /// v3: WeChat's deliberate signature probe (`WECHATPAY/SIGNTEST/…`).
    Probe,
}

impl Fault {
    /// The v3 signing fault this stands for, if any.
    pub fn v3_sign_fault(&self) -> Option<super::v3::SignFault> {
        use super::v3::SignFault;
        match self {
            Fault::BadSign => Some(SignFault::WrongKey),
            Fault::UnknownSerial => Some(SignFault::UnknownSerial),
            Fault::StaleTimestamp => Some(SignFault::StaleTimestamp),
            Fault::Probe => Some(SignFault::Probe),
            _ => None,
        }
    }
}

/// The state of a simulated order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TradeState {
    /// `NOTPAY`
    #[serde(rename = "NOTPAY")]
    NotPay,
    /// `SUCCESS`
    #[serde(rename = "SUCCESS")]
    Success,
    /// `CLOSED`
    #[serde(rename = "CLOSED")]
    Closed,
}

impl TradeState {
    fn as_str(self) -> &'static str {
        match self {
            TradeState::NotPay => "NOTPAY",
            TradeState::Success => "SUCCESS",
            TradeState::Closed => "CLOSED",
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct SimOrder {
    /// The request's business fields (all but nonce, sign and sign_type): a re-submission must match.
    params: Fields,
    sign_type: SignType,
    prepay_id: String,
    pub(super) state: TradeState,
    pub(super) transaction_id: Option<String>,
    pub(super) time_end: Option<String>,
    delivery: Arc<Mutex<Delivery>>,
}

impl SimOrder {
    pub(super) fn field(&self, name: &str) -> &str {
        self.params.get(name).map(String::as_str).unwrap_or("")
    }
}

/// What the control API reports about an order.
#[derive(Debug, Clone, Serialize)]
pub struct OrderReport {
    /// `trade_state`
    pub trade_state: TradeState,
    /// The amount in fen.
    pub total_fee: u64,
    /// The prepay id issued.
    pub prepay_id: String,
    /// The transaction id, once paid.
    pub transaction_id: Option<String>,
    /// The `time_expire` the order was placed with, as sent.
    pub time_expire: Option<String>,
    /// Notify delivery.
    pub notify: Delivery,
}

/// A request to the control API to pay an order.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PayRequest {
    /// Which order.
    pub out_trade_no: String,
    /// Fields to add to (or override in) the notify: coupons, `version`, anything.
    #[serde(default)]
    pub extra_fields: BTreeMap<String, String>,
    /// Concurrent copies of the first delivery (default 1).
    #[serde(default)]
    pub copies: Option<usize>,
    /// The notify is lost: WeChat never delivers it (PayBridge must query).
    #[serde(default)]
    pub lose_notify: bool,
    /// v3: a signing fault for the notify's first attempt (`bad_sign`,
    /// `unknown_serial`, `stale_timestamp`, `probe`); the retries are
    /// signed correctly, as WeChat resends after a refused probe.
    #[serde(default)]
    pub fault: Option<Fault>,
}

/// The simulator; clone it freely (it is a handle).
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    config: SimulatorConfig,
    orders: Mutex<HashMap<String, SimOrder>>,
    used_codes: Mutex<HashSet<String>>,
    /// Every openid a login returned: WeChat refuses orders for any other.
    /// Shared with the v3 side: a login serves both.
    openids: Arc<Mutex<HashSet<String>>>,
    /// The same merchant's API v3.
    v3: super::v3::SimulatorV3,
    /// Every session_key handed out, so tests can prove none leaks.
    session_keys: Mutex<Vec<String>>,
    faults: Mutex<VecDeque<Fault>>,
    /// Notify delivery of v3 orders.
    v3_deliveries: Mutex<HashMap<String, Arc<Mutex<Delivery>>>>,
    /// When each order query (v2 or v3) arrived, to check a client's pace.
    queries: Mutex<Vec<std::time::Instant>>,
    /// Notify delivery of v3 refunds.
    refund_deliveries: Mutex<HashMap<String, Arc<Mutex<Delivery>>>>,
    /// Refund notifies are lost (a test of refund queries).
    lose_refund_notifies: std::sync::atomic::AtomicBool,
    /// Daily bills and their knobs.
    bills: super::bills::BillDesk,
    /// The mutual-TLS port's certificates (API v2 refunds).
    tls: super::secapi::MerchantTls,
    http: reqwest::Client,
}

/// A reply from the simulator's pay API: status and body.
pub struct SimReply {
    /// HTTP status.
    pub status: u16,
    /// Body (XML, HTML for injected HTTP faults, or a bill).
    pub body: Vec<u8>,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
}

impl SimReply {
    fn raw(body: Vec<u8>) -> SimReply {
        SimReply { status: 200, body, delay: None }
    }

    fn xml(body: String) -> SimReply {
        SimReply { status: 200, body: body.into_bytes(), delay: None }
    }
}

/// A two-field protocol failure, unsigned, as WeChat sends it.
pub(super) fn return_fail(message: &str) -> SimReply {
    SimReply::xml(xml::write(&sign::fields([("return_code", "FAIL"), ("return_msg", message)])))
}

impl Simulator {
    /// A simulator with no orders.
    pub fn new(config: SimulatorConfig) -> Simulator {
        let openids: Arc<Mutex<HashSet<String>>> = Arc::default();
        let v3 = super::v3::SimulatorV3::new(&config.mch_id, &config.appid, openids.clone());
        Simulator {
            inner: Arc::new(Inner {
                bills: super::bills::BillDesk::new(config.bills_ready_at_once),
                tls: super::secapi::MerchantTls::new(&config.mch_id),
                config,
                orders: Mutex::default(),
                used_codes: Mutex::default(),
                openids,
                v3,
                session_keys: Mutex::default(),
                faults: Mutex::default(),
                v3_deliveries: Mutex::default(),
                queries: Mutex::default(),
                refund_deliveries: Mutex::default(),
                lose_refund_notifies: Default::default(),
                http: reqwest::Client::new(),
            }),
        }
    }

    /// A business reply with the envelope WeChat puts on it, signed.
    pub(super) fn signed_reply(&self, mut reply: Fields, sign_type: SignType) -> SimReply {
        let cfg = &self.inner.config;
        reply.insert("return_code".into(), "SUCCESS".into());
        reply.insert("return_msg".into(), "OK".into());
        reply.insert("appid".into(), cfg.appid.clone());
        reply.insert("mch_id".into(), cfg.mch_id.clone());
        reply.insert("nonce_str".into(), nonce_str());
        let signature = sign::sign(&reply, &cfg.mch_key, sign_type);
        reply.insert("sign".into(), signature);
        SimReply::raw(xml::write(&reply).into_bytes())
    }

    /// The certificates of the mutual-TLS port.
    pub fn merchant_tls(&self) -> &super::secapi::MerchantTls {
        &self.inner.tls
    }

    pub(super) fn bills(&self) -> &super::bills::BillDesk {
        &self.inner.bills
    }

    pub(super) fn config(&self) -> &SimulatorConfig {
        &self.inner.config
    }

    pub(super) fn orders(&self) -> std::sync::MutexGuard<'_, HashMap<String, SimOrder>> {
        self.inner.orders.lock().expect("orders lock")
    }

    /// v2's `downloadbill`: the bill itself (gzip when `tar_type=GZIP`), or
    /// an unsigned XML failure.
    fn download_bill(&self, request: &Fields) -> SimReply {
        use super::bills::{v2_bill_failure, BillAnswer};
        let get = |k: &str| request.get(k).map(String::as_str).unwrap_or("");
        let date = get("bill_date");
        if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return SimReply::raw(v2_bill_failure("invalid bill_date", Some("20001")));
        }
        if !matches!(get("bill_type"), "" | "ALL") {
            return SimReply::raw(v2_bill_failure("invalid bill_type (this simulator makes ALL bills)", Some("20001")));
        }
        let day = format!("{}-{}-{}", &date[..4], &date[4..6], &date[6..]);
        match self.bill(&day) {
            BillAnswer::NotReady => SimReply::raw(v2_bill_failure("Bill Creating", None)),
            BillAnswer::Empty => SimReply::raw(v2_bill_failure("No Bill Exist", Some("20002"))),
            BillAnswer::Text { text, plain, .. } => match get("tar_type") == "GZIP" && !plain {
                true => SimReply::raw(crate::wechat::bill::gzip(&text)),
                false => SimReply::raw(text),
            },
        }
    }

    /// The openid this simulator issues for a login code: stable per code.
    pub fn openid_for(&self, code: &str) -> String {
        let digest = Sha256::digest(format!("{}:{code}", self.inner.config.appid));
        format!("o{}", &hex::encode(digest)[..27])
    }

    /// `GET /sns/jscode2session`: returns the JSON reply.
    pub fn jscode2session(&self, query: &HashMap<String, String>) -> serde_json::Value {
        let get = |k: &str| query.get(k).map(String::as_str).unwrap_or("");
        let cfg = &self.inner.config;
        let error = |errcode: i64, errmsg: &str| {
            let rid = &nonce_str()[..8];
            serde_json::json!({ "errcode": errcode, "errmsg": format!("{errmsg}, rid: {rid}") })
        };
        if get("appid") != cfg.appid {
            return error(40013, "invalid appid");
        }
        if get("secret") != cfg.app_secret.expose() {
            return error(40125, "invalid appsecret");
        }
        if get("grant_type") != "authorization_code" {
            return error(40002, "invalid grant_type");
        }
        let code = get("js_code");
        if code.is_empty() || code.starts_with("invalid") {
            return error(40029, "invalid code");
        }
        if !self.inner.used_codes.lock().expect("codes lock").insert(code.to_owned()) {
            return error(40163, "code been used");
        }
        // A real session_key is returned, as WeChat does: PayBridge must drop it.
        let session_key = format!("SK{}", &nonce_str()[..22]);
        self.inner.session_keys.lock().expect("keys lock").push(session_key.clone());
        let openid = self.openid_for(code);
        self.inner.openids.lock().expect("openids lock").insert(openid.clone());
        serde_json::json!({ "openid": openid, "session_key": session_key })
    }

    /// Every `session_key` this simulator has issued.
    pub fn issued_session_keys(&self) -> Vec<String> {
        self.inner.session_keys.lock().expect("keys lock").clone()
    }

    /// Queues faults for the next pay API calls, one per call.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.inner.faults.lock().expect("faults lock").extend(faults);
    }

    /// The next queued fault, if any.
    pub fn next_fault(&self) -> Option<Fault> {
        self.inner.faults.lock().expect("faults lock").pop_front()
    }

    /// Notes an order query (either version).
    pub fn count_query(&self) {
        self.inner.queries.lock().expect("queries lock").push(std::time::Instant::now());
    }

    /// When each order query arrived, oldest first.
    pub fn queries(&self) -> Vec<std::time::Instant> {
        self.inner.queries.lock().expect("queries lock").clone()
    }

    /// The API v3 side of the same merchant.
    pub fn v3(&self) -> &super::v3::SimulatorV3 {
        &self.inner.v3
    }

    /// Handles one pay API call (`unifiedorder`, `orderquery`, `closeorder`).
    pub fn pay_api(&self, api: &str, method_is_post: bool, body: &[u8]) -> SimReply {
        if !method_is_post {
            return return_fail("请使用post方法");
        }
        if body.is_empty() {
            return return_fail("post数据为空");
        }
        let fault = self.inner.faults.lock().expect("faults lock").pop_front();
        match &fault {
            Some(Fault::Http { status }) => {
                let page = format!("<html><body><h1>{status}</h1>upstream error</body></html>");
                return SimReply { status: *status, body: page.into_bytes(), delay: None };
            }
            Some(Fault::ReturnFail { message }) => return return_fail(message),
            _ => {}
        }
        let request = match xml::parse(body) {
            Ok(f) => f,
            Err(_) => return return_fail("XML格式错误"),
        };
        let cfg = &self.inner.config;
        if request.get("mch_id").map(String::as_str) != Some(cfg.mch_id.as_str()) {
            return return_fail("mch_id参数错误");
        }
        let sign_type = match request.get("sign_type").map(String::as_str) {
            None | Some("") | Some("MD5") => SignType::Md5,
            Some("HMAC-SHA256") => SignType::HmacSha256,
            Some(_) => return return_fail("sign_type参数错误"),
        };
        if sign::verify(&request, &cfg.mch_key, &[sign_type]).is_err() {
            return return_fail("签名错误");
        }
        for required in ["appid", "nonce_str"] {
            if request.get(required).is_none_or(|v| v.is_empty()) {
                return return_fail(&format!("缺少参数{required}"));
            }
        }
        if api == "orderquery" {
            self.count_query();
        }
        if api == "downloadbill" {
            return match request["appid"] == cfg.appid {
                true => self.download_bill(&request),
                false => return_fail("appid和mch_id不匹配"),
            };
        }
        let mut reply = match (&fault, api) {
            // WeChat did not process the request: no order is created.
            (Some(Fault::Business { code, description }), _) => business_error(code, description),
            (_, "unifiedorder") => self.unified_order(&request, sign_type),
            (_, "orderquery") => self.order_query(&request),
            (_, "closeorder") => self.close_order(&request),
            (_, "refundquery") => self.refund_query_v2(&request),
            _ => return return_fail("不支持的接口"),
        };
        if request["appid"] != cfg.appid {
            reply = business_error("APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配");
        }
        reply.insert("return_code".into(), "SUCCESS".into());
        reply.insert("return_msg".into(), "OK".into());
        reply.insert("appid".into(), request["appid"].clone());
        reply.insert("mch_id".into(), cfg.mch_id.clone());
        reply.insert("nonce_str".into(), nonce_str());
        let key = match fault {
            Some(Fault::BadSign) => Secret::new("not-the-merchant-key"),
            _ => cfg.mch_key.clone(),
        };
        let signature = sign::sign(&reply, &key, sign_type);
        reply.insert("sign".into(), signature);
        let delay = match fault {
            Some(Fault::Delay { ms }) => Some(Duration::from_millis(ms)),
            _ => None,
        };
        SimReply { status: 200, body: xml::write(&reply).into_bytes(), delay }
    }

    fn unified_order(&self, request: &Fields, sign_type: SignType) -> Fields {
        let get = |k: &str| request.get(k).map(String::as_str).unwrap_or("");
        for required in ["body", "out_trade_no", "total_fee", "spbill_create_ip", "notify_url", "trade_type"] {
            if get(required).is_empty() {
                return business_error("LACK_PARAMS", &format!("缺少参数{required}"));
            }
        }
        if get("trade_type") != "JSAPI" {
            return business_error("INVALID_REQUEST", "此模拟器只支持JSAPI");
        }
        if get("openid").is_empty() {
            return business_error("LACK_PARAMS", "JSAPI支付必须传openid");
        }
        // Like WeChat: an openid is only good for the appid whose login issued it.
        if !self.inner.openids.lock().expect("openids lock").contains(get("openid")) {
            return business_error("PARAM_ERROR", "appid和openid不匹配");
        }
        if !is_valid_out_trade_no(get("out_trade_no")) {
            return business_error("INVALID_REQUEST", "out_trade_no参数格式错误");
        }
        if !matches!(get("total_fee").parse::<u64>(), Ok(fee) if fee > 0) {
            return business_error("INVALID_REQUEST", "total_fee参数格式错误");
        }
        if get("body").chars().count() > 128 || get("attach").chars().count() > 127 {
            return business_error("INVALID_REQUEST", "body或attach超过长度限制");
        }
        match url::Url::parse(get("notify_url")) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.query().is_none() => {}
            _ => return business_error("INVALID_REQUEST", "notify_url参数错误"),
        }
        if !get("time_expire").is_empty() {
            match parse_beijing(get("time_expire")) {
                None => return business_error("INVALID_REQUEST", "time_expire参数格式错误"),
                // WeChat's current rule: at least a minute ahead.
                Some(at) if at < time::OffsetDateTime::now_utc() + time::Duration::minutes(1) => {
                    return business_error("INVALID_REQUEST", "time_expire时间过短，刷卡至少1分钟，其他5分钟")
                }
                Some(_) => {}
            }
        }
        let mut params = request.clone();
        params.remove("nonce_str");
        params.remove("sign");
        params.remove("sign_type");

        let mut orders = self.inner.orders.lock().expect("orders lock");
        let prepay_id = match orders.get(get("out_trade_no")) {
            Some(existing) if existing.state == TradeState::Success => {
                return business_error("ORDERPAID", "该订单已支付");
            }
            Some(existing) if existing.state == TradeState::Closed => {
                return business_error("ORDERCLOSED", "该订单已关");
            }
            Some(existing) if existing.params != params => {
                return business_error("INVALID_REQUEST", "201 商户订单号重复");
            }
            Some(existing) => existing.prepay_id.clone(),
            None => {
                let prepay_id = format!(
                    "wx{}{}",
                    beijing_compact(time::OffsetDateTime::now_utc()),
                    &hex::encode(rand::random::<[u8; 10]>())
                );
                orders.insert(
                    get("out_trade_no").to_owned(),
                    SimOrder {
                        params,
                        sign_type,
                        prepay_id: prepay_id.clone(),
                        state: TradeState::NotPay,
                        transaction_id: None,
                        time_end: None,
                        delivery: Arc::default(),
                    },
                );
                prepay_id
            }
        };
        sign::fields([("result_code", "SUCCESS"), ("trade_type", "JSAPI"), ("prepay_id", prepay_id.as_str())])
    }

    fn order_query(&self, request: &Fields) -> Fields {
        let orders = self.inner.orders.lock().expect("orders lock");
        let found = match request.get("transaction_id").filter(|t| !t.is_empty()) {
            Some(tx) => orders.values().find(|o| o.transaction_id.as_ref() == Some(tx)),
            None => request.get("out_trade_no").and_then(|no| orders.get(no)),
        };
        let Some(order) = found else {
            return business_error("ORDERNOTEXIST", "order not exist");
        };
        let mut reply = sign::fields([
            ("result_code", "SUCCESS"),
            ("trade_state", order.state.as_str()),
            ("out_trade_no", order.field("out_trade_no")),
            ("total_fee", order.field("total_fee")),
        ]);
        match order.state {
            TradeState::Success => {
                reply.extend(sign::fields([
                    ("trade_state_desc", "支付成功"),
                    ("openid", order.field("openid")),
                    ("trade_type", "JSAPI"),
                    ("bank_type", "OTHERS"),
                    ("fee_type", "CNY"),
                    ("cash_fee", order.field("total_fee")),
                    ("attach", order.field("attach")),
                    ("is_subscribe", "N"),
                ]));
                reply.insert("transaction_id".into(), order.transaction_id.clone().unwrap_or_default());
                reply.insert("time_end".into(), order.time_end.clone().unwrap_or_default());
            }
            TradeState::NotPay => {
                reply.insert("trade_state_desc".into(), "订单未支付".into());
            }
            TradeState::Closed => {
                reply.insert("trade_state_desc".into(), "订单已关闭".into());
            }
        }
        reply.retain(|_, v| !v.is_empty());
        reply
    }

    fn close_order(&self, request: &Fields) -> Fields {
        let mut orders = self.inner.orders.lock().expect("orders lock");
        let Some(order) = request.get("out_trade_no").and_then(|no| orders.get_mut(no)) else {
            return business_error("ORDERNOTEXIST", "order not exist");
        };
        match order.state {
            TradeState::Success => business_error("ORDERPAID", "订单已支付，不能发起关单"),
            TradeState::Closed => business_error("ORDERCLOSED", "订单已关闭，无法重复关闭"),
            TradeState::NotPay => {
                order.state = TradeState::Closed;
                sign::fields([("result_code", "SUCCESS"), ("result_msg", "OK")])
            }
        }
    }

    /// Control API: the user pays. Marks the order SUCCESS and starts
    /// delivering the signed notify. Returns the transaction id.
    pub fn pay(&self, request: &PayRequest) -> Result<String, String> {
        let is_v2 = self.inner.orders.lock().expect("orders lock").contains_key(&request.out_trade_no);
        if !is_v2 && self.inner.v3.has_order(&request.out_trade_no) {
            return self.pay_v3(request);
        }
        let cfg = &self.inner.config;
        let (notify, url, delivery) = {
            let mut orders = self.inner.orders.lock().expect("orders lock");
            let order = orders
                .get_mut(&request.out_trade_no)
                .ok_or_else(|| format!("no unified order {:?} in the simulator", request.out_trade_no))?;
            match order.state {
                TradeState::NotPay => {}
                TradeState::Success => return Err("the order is already paid".into()),
                TradeState::Closed => return Err("the order is closed and cannot be paid".into()),
            }
            let now = time::OffsetDateTime::now_utc();
            if parse_beijing(order.field("time_expire")).is_some_and(|at| at < now) {
                return Err("the order expired at WeChat (time_expire): it can no longer be paid".into());
            }
            let transaction_id = format!("4200000{:021}", rand::rng().random_range(0..10u128.pow(21)));
            order.state = TradeState::Success;
            order.transaction_id = Some(transaction_id.clone());
            order.time_end = Some(beijing_compact(now));

            let mut notify = sign::fields([
                ("return_code", "SUCCESS"),
                ("return_msg", "OK"),
                ("appid", cfg.appid.as_str()),
                ("mch_id", cfg.mch_id.as_str()),
                ("result_code", "SUCCESS"),
                ("openid", order.field("openid")),
                ("is_subscribe", "N"),
                ("trade_type", "JSAPI"),
                ("bank_type", "OTHERS"),
                ("total_fee", order.field("total_fee")),
                ("fee_type", "CNY"),
                ("cash_fee", order.field("total_fee")),
                ("transaction_id", transaction_id.as_str()),
                ("out_trade_no", request.out_trade_no.as_str()),
                ("attach", order.field("attach")),
                ("time_end", order.time_end.as_deref().unwrap_or_default()),
            ]);
            notify.insert("nonce_str".into(), nonce_str());
            if cfg.sign_type_in_notify && order.sign_type != SignType::Md5 {
                notify.insert("sign_type".into(), order.sign_type.as_str().into());
            }
            notify.extend(request.extra_fields.clone());
            notify.retain(|_, v| !v.is_empty());
            let signature = sign::sign(&notify, &cfg.mch_key, order.sign_type);
            notify.insert("sign".into(), signature);
            (notify, order.field("notify_url").to_owned(), order.delivery.clone())
        };
        tracing::info!(target: "sandbox", out_trade_no = %request.out_trade_no, "SANDBOX simulator: order paid, delivering notify");
        let outgoing = notifier::Outgoing { headers: Vec::new(), body: xml::write(&notify).into_bytes(), v3: false };
        if request.lose_notify {
            tracing::info!(target: "sandbox", out_trade_no = %request.out_trade_no, "SANDBOX simulator: notify lost, as asked");
            return Ok(notify["transaction_id"].clone());
        }
        tokio::spawn(notifier::deliver(
            self.inner.http.clone(),
            url,
            move || outgoing.clone(),
            request.copies.unwrap_or(1),
            cfg.notify_schedule.clone(),
            delivery,
        ));
        Ok(notify["transaction_id"].clone())
    }

    /// Ends the v3 refunds accepted since the last call and delivers their
    /// notifies (unless `lose` is set), as WeChat does after a refund.
    pub fn end_new_refunds(&self) {
        let v3 = self.inner.v3.clone();
        for no in v3.take_new_refunds() {
            let Some((url, resource, v2)) = v3.end_refund_of(&no) else { continue };
            if self.inner.lose_refund_notifies.load(std::sync::atomic::Ordering::Relaxed) {
                continue;
            }
            let event_id = format!("EV-RF-{}", &nonce_str()[..16]);
            let (v3, sim) = (v3.clone(), self.clone());
            let make = move || match v2 {
                true => notifier::Outgoing { headers: Vec::new(), body: sim.refund_notify_v2(&resource), v3: false },
                false => {
                    let n = v3.refund_notify(&resource, &event_id, crate::clock::now_ms() / 1000).expect("encrypts");
                    notifier::Outgoing { headers: n.headers, body: n.body, v3: true }
                }
            };
            let delivery: Arc<Mutex<Delivery>> = Arc::default();
            self.inner.refund_deliveries.lock().expect("deliveries lock").insert(no, delivery.clone());
            tokio::spawn(notifier::deliver(
                self.inner.http.clone(),
                url,
                make,
                1,
                self.inner.config.notify_schedule.clone(),
                delivery,
            ));
        }
    }

    /// Whether refund notifies are lost from now on (PayBridge must query).
    pub fn lose_refund_notifies(&self, lose: bool) {
        self.inner.lose_refund_notifies.store(lose, std::sync::atomic::Ordering::Relaxed);
    }

    /// The delivery of a refund's notify.
    pub fn refund_delivery(&self, out_refund_no: &str) -> Option<Delivery> {
        let deliveries = self.inner.refund_deliveries.lock().expect("deliveries lock");
        deliveries.get(out_refund_no).map(|d| d.lock().expect("delivery lock").clone())
    }

    /// [`Simulator::pay`] for an order placed through API v3.
    fn pay_v3(&self, request: &PayRequest) -> Result<String, String> {
        let v3 = self.inner.v3.clone();
        let no = request.out_trade_no.clone();
        let now = || crate::clock::now_ms() / 1000;
        let first = v3.pay(&no, now())?;
        let event_id = serde_json::from_slice::<serde_json::Value>(&first.body)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let (url, _, transaction_id) = v3.order_facts(&no).ok_or("the order vanished")?;
        let transaction = v3.paid_transaction(&no).ok_or("the order is not paid")?;
        if let Some(fault) = request.fault.as_ref().and_then(Fault::v3_sign_fault) {
            v3.inject([fault]);
        }
        if request.lose_notify {
            return Ok(transaction_id.unwrap_or_default());
        }
        let delivery: Arc<Mutex<Delivery>> = Arc::default();
        self.inner.v3_deliveries.lock().expect("deliveries lock").insert(no.clone(), delivery.clone());
        tracing::info!(target: "sandbox", out_trade_no = %no, "SANDBOX simulator: order paid (API v3), delivering notify");
        let make = move || {
            let notify = v3.notify(&transaction, &event_id, now()).expect("a paid order's notify encrypts");
            notifier::Outgoing { headers: notify.headers, body: notify.body, v3: true }
        };
        tokio::spawn(notifier::deliver(
            self.inner.http.clone(),
            url,
            make,
            request.copies.unwrap_or(1),
            self.inner.config.notify_schedule.clone(),
            delivery,
        ));
        Ok(transaction_id.unwrap_or_default())
    }

    /// Control API: what the simulator knows of an order.
    pub fn report(&self, out_trade_no: &str) -> Option<OrderReport> {
        if let Some((_, total_fee, transaction_id)) = self.inner.v3.order_facts(out_trade_no) {
            let delivery = self.inner.v3_deliveries.lock().expect("deliveries lock").get(out_trade_no).cloned();
            return Some(OrderReport {
                trade_state: match self.inner.v3.state(out_trade_no) {
                    Some("SUCCESS") => TradeState::Success,
                    Some("CLOSED") => TradeState::Closed,
                    _ => TradeState::NotPay,
                },
                total_fee,
                prepay_id: String::new(),
                transaction_id,
                time_expire: self.inner.v3.time_expire(out_trade_no),
                notify: delivery.map(|d| d.lock().expect("delivery lock").clone()).unwrap_or_default(),
            });
        }
        let orders = self.inner.orders.lock().expect("orders lock");
        orders.get(out_trade_no).map(|o| OrderReport {
            trade_state: o.state,
            total_fee: o.field("total_fee").parse().unwrap_or(0),
            prepay_id: o.prepay_id.clone(),
            transaction_id: o.transaction_id.clone(),
            time_expire: o.params.get("time_expire").cloned(),
            notify: o.delivery.lock().expect("delivery lock").clone(),
        })
    }
}

/// `yyyyMMddHHmmss` in Beijing time.
fn parse_beijing(text: &str) -> Option<time::OffsetDateTime> {
    let format = time::macros::format_description!("[year][month][day][hour][minute][second]");
    time::PrimitiveDateTime::parse(text, format).ok().map(|t| t.assume_offset(time::macros::offset!(+8)))
}

pub(super) fn business_error(code: &str, description: &str) -> Fields {
    sign::fields([("result_code", "FAIL"), ("err_code", code), ("err_code_des", description)])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulator that has issued the openid `o1` (as if after a login).
    fn sim() -> Simulator {
        let sim = Simulator::new(SimulatorConfig::new(
            "wxd930ea5d5a258f4f",
            &Secret::new("s"),
            "10000100",
            &Secret::new("192006250b4c09247ec02edce69f6a2d"),
        ));
        sim.inner.openids.lock().unwrap().insert("o1".into());
        sim
    }

    #[test]
    fn an_openid_no_login_issued_is_refused() {
        let sim = sim();
        let mut stranger = ORDER.to_vec();
        stranger[6] = ("openid", "<openid from step 1>");
        let key = "192006250b4c09247ec02edce69f6a2d";
        let r = reply(sim.pay_api("unifiedorder", true, &request(&sim, &stranger, SignType::Md5)), key, SignType::Md5);
        assert_eq!((r["err_code"].as_str(), r["err_code_des"].as_str()), ("PARAM_ERROR", "appid和openid不匹配"));
    }

    fn request(sim: &Simulator, pairs: &[(&str, &str)], sign_type: SignType) -> Vec<u8> {
        let mut f = sign::fields(pairs.iter().copied());
        f.insert("appid".into(), "wxd930ea5d5a258f4f".into());
        f.insert("mch_id".into(), "10000100".into());
        f.insert("nonce_str".into(), nonce_str());
        if sign_type == SignType::HmacSha256 {
            f.insert("sign_type".into(), "HMAC-SHA256".into());
        }
        let s = sign::sign(&f, &sim.inner.config.mch_key, sign_type);
        f.insert("sign".into(), s);
        xml::write(&f).into_bytes()
    }

    const ORDER: &[(&str, &str)] = &[
        ("body", "test"),
        ("out_trade_no", "ORDER0001"),
        ("total_fee", "100"),
        ("spbill_create_ip", "127.0.0.1"),
        ("notify_url", "http://127.0.0.1:1/pay/notify"),
        ("trade_type", "JSAPI"),
        ("openid", "o1"),
    ];

    fn reply(r: SimReply, key: &str, t: SignType) -> Fields {
        let f = xml::parse(&r.body).unwrap();
        if f["return_code"] == "SUCCESS" {
            sign::verify(&f, &Secret::new(key), &[t]).expect("the simulator signs its replies");
        } else {
            assert!(!f.contains_key("sign"), "a FAIL reply is not signed");
        }
        f
    }

    #[test]
    fn unified_order_signs_with_the_request_algorithm_and_is_idempotent() {
        let sim = sim();
        let key = "192006250b4c09247ec02edce69f6a2d";
        for t in [SignType::HmacSha256, SignType::Md5] {
            let r = reply(sim.pay_api("unifiedorder", true, &request(&sim, ORDER, t)), key, t);
            assert_eq!(r["result_code"], "SUCCESS");
            assert_eq!(r["prepay_id"].len(), 36);
        }
        let mut changed = ORDER.to_vec();
        changed[2] = ("total_fee", "101");
        let r = reply(
            sim.pay_api("unifiedorder", true, &request(&sim, &changed, SignType::HmacSha256)),
            key,
            SignType::HmacSha256,
        );
        assert_eq!(r["err_code_des"], "201 商户订单号重复");
    }

    #[test]
    fn protocol_failures_are_unsigned_fail_replies() {
        let sim = sim();
        let mut bad = request(&sim, ORDER, SignType::Md5);
        let at = bad.windows(4).position(|w| w == b"test").unwrap();
        bad[at] = b'T';
        let key = "192006250b4c09247ec02edce69f6a2d";
        assert_eq!(reply(sim.pay_api("unifiedorder", true, &bad), key, SignType::Md5)["return_msg"], "签名错误");
        assert_eq!(
            reply(sim.pay_api("unifiedorder", true, b"<xml><a>"), key, SignType::Md5)["return_msg"],
            "XML格式错误"
        );
        assert_eq!(reply(sim.pay_api("unifiedorder", false, b""), key, SignType::Md5)["return_code"], "FAIL");
    }

    #[test]
    fn login_codes_are_single_use_and_checked() {
        let sim = sim();
        let q = |code: &str, secret: &str| {
            [
                ("appid", "wxd930ea5d5a258f4f"),
                ("secret", secret),
                ("js_code", code),
                ("grant_type", "authorization_code"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>()
        };
        let ok = sim.jscode2session(&q("c1", "s"));
        assert_eq!(ok["openid"], sim.openid_for("c1"));
        assert!(ok["session_key"].is_string());
        assert_eq!(sim.jscode2session(&q("c1", "s"))["errcode"], 40163);
        assert_eq!(sim.jscode2session(&q("c2", "wrong"))["errcode"], 40125);
        assert_eq!(sim.jscode2session(&q("invalid-1", "s"))["errcode"], 40029);
    }
}
