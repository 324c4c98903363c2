//! A WeChat Pay v2 server for tests and for sandbox mode.
//!
//! It behaves as WeChat does, as far as `WECHATPAY-V2.md` knows: it verifies
//! the signature of every request (over all fields), signs every reply with
//! the request's algorithm, answers protocol errors with the two-field FAIL
//! reply and business errors with a signed `result_code=FAIL`, keeps unified
//! orders idempotent, and delivers signed notifies on WeChat's retry
//! schedule. A control API (`/sandbox/...`, not WeChat's) lets a person or a
//! test "pay" an order and inject faults.
//!
//! This file holds what the parts share: the merchant's configuration, the
//! state (orders, logins, faults, deliveries) and the signed envelope. The
//! parts: the v2 pay API in `simulator/v2.rs`, the login in
//! `simulator/login.rs`, the knobs and the control API in
//! `simulator/control.rs`.

mod control;
mod login;
mod v2;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

pub use control::{Fault, OrderReport, PayRequest};

use super::notifier::{self, Delivery};
use crate::secret::Secret;
use crate::wechat::sign::{self, Fields, SignType};
use crate::wechat::{nonce_str, xml};

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
    /// Every call to WeChat's APIs, by API (the control API not counted).
    calls: Mutex<std::collections::BTreeMap<String, u64>>,
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
                calls: Mutex::default(),
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

    /// The API v3 side of the same merchant.
    pub fn v3(&self) -> &super::v3::SimulatorV3 {
        &self.inner.v3
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
