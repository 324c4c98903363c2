//! The simulator's API v3 side, as WeChat behaves: every request's
//! `Authorization` is checked (scheme, merchant, certificate serial,
//! timestamp, RSA signature over the exact bytes), and every reply —
//! errors included — is signed as WeChat signs: with the WeChat Pay public
//! key's private half under its `PUB_KEY_ID_…`, or with the platform
//! certificate's key under its serial, by the merchant's [`KeyMode`]
//! (which a test can change mid-run: WeChat's migration). Orders: JSAPI,
//! query by `out_trade_no` and by transaction id, close;
//! `/v3/certificates`; and refunds.
//!
//! This file holds the merchant's state, the dispatch of a request and the
//! routes; the parts: signatures, the platform certificate and the key
//! modes in `v3/signing.rs`, orders and their notifies in `v3/orders.rs`,
//! refunds in `v3/refunds.rs`.
//!
//! Its keys are sandbox keys in `src/sandbox/keys/`: public, like the v2
//! sandbox merchant's API key, and useless anywhere else. (ring cannot
//! generate RSA keys; the platform certificate itself is made at start-up
//! with rcgen, so its validity can be chosen.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::secret::Secret;

mod orders;
mod refunds;
mod signing;
use crate::wechat::v3::crypto::{ApiV3Key, MerchantKey, PublicKey};
use orders::V3Order;
use refunds::SimRefund;
use signing::{make_certificate, PlatformCert};

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
    /// The WeChat Pay public key, for replies and notifies alike: a new
    /// merchant, or one whose switch is complete. Whether it still has
    /// platform certificates to download is a separate knob
    /// ([`SimulatorV3::set_platform_certificates`]).
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
    /// In public-key mode, the merchant has no platform certificates (new
    /// merchants since 2024, or voided after the switch): `/v3/certificates`
    /// answers 404 `RESOURCE_NOT_EXISTS`. Off: a merchant that switched and
    /// kept them, which WeChat still lets download them.
    no_platform_certificates: std::sync::atomic::AtomicBool,
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
                no_platform_certificates: Default::default(),
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

    /// Whether the merchant still has platform certificates in public-key
    /// mode (the default: it switched and kept them). `false`: a merchant
    /// onboarded since 2024, or one that voided them after the switch; its
    /// `/v3/certificates` answers 404 `RESOURCE_NOT_EXISTS` "无可用的平台证书".
    /// (In certificate and migrating modes they always exist.)
    pub fn set_platform_certificates(&self, kept: bool) {
        self.inner.no_platform_certificates.store(!kept, std::sync::atomic::Ordering::Relaxed);
    }

    /// The key mode in force.
    pub fn key_mode(&self) -> KeyMode {
        *self.inner.key_mode.lock().expect("key mode lock")
    }

    /// Queues faults for the next signed messages, one each.
    pub fn inject(&self, faults: impl IntoIterator<Item = SignFault>) {
        self.inner.faults.lock().expect("faults lock").extend(faults);
    }

    /// From now on, signs replies with a key the merchant does not have.
    pub fn sign_with_other_key(&self, on: bool) {
        self.inner.sign_with_other_key.store(on, std::sync::atomic::Ordering::Relaxed);
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
