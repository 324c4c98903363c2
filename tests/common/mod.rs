//! Shared test harness: a real simulator and a real PayBridge on
//! `127.0.0.1:0`, a real sled in a temp dir, and helpers that speak HTTP.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use paybridge::app::{self, Running};
use paybridge::config::Config;
use paybridge::sandbox::{self, Simulator, SimulatorConfig, SimulatorHandle};
use paybridge::secret::Secret;
use paybridge::store::NotifyRecord;
use paybridge::wechat::sign::{self, Fields, SignType};
use paybridge::wechat::xml;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::net::TcpListener;

pub const APPID: &str = "wxd930ea5d5a258f4f";
pub const APP_SECRET: &str = "app-secret-for-tests-0123456789";
pub const MCH_ID: &str = "10000100";
pub const MCH_KEY: &str = "192006250b4c09247ec02edce69f6a2d";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// The Argon2id hash of [`ADMIN_PASSWORD`], computed once per test binary.
pub fn admin_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| paybridge::admin::auth::hash_password(ADMIN_PASSWORD))
}

/// Which WeChat Pay API the test merchant uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    V2,
    /// v3 with the sandbox keys: the WeChat Pay public key, platform
    /// certificates, or both (the migration).
    V3 {
        public_key: bool,
        certificates: bool,
    },
}

/// How a test environment is set up.
#[derive(Clone)]
pub struct Opts {
    pub api: Api,
    pub sign_type: SignType,
    pub accept_client_amount: bool,
    pub timeout_ms: u64,
    /// More `[http]` keys (limits, timeouts).
    pub http_extra: &'static str,
    /// More `[orders]` keys.
    pub orders_extra: &'static str,
    /// More sections, appended to the config.
    pub extra: String,
    /// API v2: the merchant's client certificate for refunds.
    pub client_cert: ClientCert,
    /// Whether the daily bill's schedule runs (`[reconcile] enabled`). Off
    /// by default: after 10:00 Beijing it would reconcile yesterday at
    /// start-up, and a test's view of the reconciled days would depend on
    /// the hour it runs. The tests of the schedule turn it on.
    pub reconcile_schedule: bool,
}

/// How an API v2 merchant gives PayBridge its API certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientCert {
    /// Not at all (refunds are refused).
    None,
    /// `apiclient_cert.pem` + `apiclient_key.pem`.
    Pem,
    /// `apiclient_cert.p12`, password the mch_id.
    P12,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            api: Api::V2,
            sign_type: SignType::Md5,
            accept_client_amount: true,
            timeout_ms: 2000,
            http_extra: "",
            orders_extra: "",
            extra: String::new(),
            client_cert: ClientCert::None,
            reconcile_schedule: false,
        }
    }
}

/// A simulator with the test merchant and a fast notify schedule.
pub async fn start_simulator() -> SimulatorHandle {
    let mut config = SimulatorConfig::new(APPID, &Secret::new(APP_SECRET), MCH_ID, &Secret::new(MCH_KEY));
    config.notify_schedule = vec![Duration::from_millis(200); 5];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    sandbox::serve_simulator(Simulator::new(config), listener).unwrap()
}

/// The `[wechat]` keys of the simulator's client certificate (files written
/// into `dir`) and of its mutual-TLS port.
pub fn client_cert_toml(dir: &Path, sim: &SimulatorHandle, how: ClientCert) -> String {
    let tls = sim.simulator.merchant_tls();
    let ca = dir.join("simulator-ca.pem");
    std::fs::write(&ca, &tls.ca_pem).unwrap();
    let files = match how {
        ClientCert::None => return String::new(),
        ClientCert::Pem => {
            let (cert, key) = (dir.join("apiclient_cert.pem"), dir.join("apiclient_key.pem"));
            std::fs::write(&cert, &tls.client_cert_pem).unwrap();
            std::fs::write(&key, &tls.client_key_pem).unwrap();
            format!(
                "client_cert_file = {:?}\nclient_key_file = {:?}\n",
                cert.display().to_string(),
                key.display().to_string()
            )
        }
        ClientCert::P12 => {
            use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
            let der = |pem: &str| {
                let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, body).unwrap()
            };
            let key = PrivateKey::from_der(&der(&tls.client_key_pem)).unwrap();
            let cert = Certificate::from_der(&der(&tls.client_cert_pem)).unwrap();
            let mut store = KeyStore::new();
            store.add_entry(
                "apiclient",
                KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(vec![1u8; 20], key, [cert])),
            );
            let p12 = dir.join("apiclient_cert.p12");
            std::fs::write(&p12, store.writer(MCH_ID).write().unwrap()).unwrap();
            format!("client_p12_file = {:?}\n", p12.display().to_string())
        }
    };
    format!("{files}secapi_base_url = \"{}\"\nsecapi_ca_file = {:?}\n", sim.secapi_url(), ca.display().to_string())
}

/// The `[wechat]` section for the test merchant, talking to the simulator at `sim_url`.
pub fn wechat_toml(sim_url: &str) -> String {
    format!(
        "[wechat]\nappid = \"{APPID}\"\napp_secret = \"{APP_SECRET}\"\nmch_id = \"{MCH_ID}\"\nmch_key = \"{MCH_KEY}\"\n\
         pay_base_url = \"{sim_url}\"\nsns_base_url = \"{sim_url}\"\n"
    )
}

/// The `[wechat]` keys of the API in `opts`; v3's key files are written
/// next to `data_dir`.
fn api_keys(data_dir: &Path, opts: &Opts) -> String {
    use paybridge::sandbox::v3 as sim;
    match opts.api {
        Api::V2 => format!("mch_key = \"{MCH_KEY}\"\nsign_type = \"{}\"\n", opts.sign_type.as_str()),
        Api::V3 { public_key, certificates } => {
            let dir = data_dir.parent().unwrap();
            std::fs::create_dir_all(dir).unwrap();
            let key_file = dir.join("apiclient_key.pem");
            std::fs::write(&key_file, sim::MERCHANT_PRIVATE_KEY).unwrap();
            let mut keys = format!(
                "api_version = \"v3\"\napiv3_key = \"{}\"\nmerchant_key_file = \"{}\"\nmerchant_serial = \"{}\"\n\
                 platform_certificates = {certificates}\n",
                sim::APIV3_KEY,
                key_file.display(),
                sim::MERCHANT_SERIAL
            );
            if public_key {
                let pub_file = dir.join("pub_key.pem");
                std::fs::write(&pub_file, sim::WECHATPAY_PUBLIC_KEY).unwrap();
                keys += &format!(
                    "public_key_file = \"{}\"\npublic_key_id = \"{}\"\n",
                    pub_file.display(),
                    sim::WECHATPAY_PUBLIC_KEY_ID
                );
            }
            keys
        }
    }
}

/// The live-mode config text for a PayBridge at `addr` talking to `sim_url`.
pub fn config_text(data_dir: &Path, addr: &str, sim_url: &str, opts: &Opts) -> String {
    format!(
        r#"
data_dir = "{data_dir}"
[http]
listen = "{addr}"
{http_extra}
[wechat]
appid = "{APPID}"
app_secret = "{APP_SECRET}"
mch_id = "{MCH_ID}"
{api_keys}pay_base_url = "{sim_url}"
sns_base_url = "{sim_url}"
notify_url = "http://{addr}/pay/notify"
timeout_ms = {timeout_ms}
[orders]
accept_client_amount = {accept}
{orders_extra}
[admin]
password_hash = "{hash}"
[reconcile]
enabled = {reconcile_schedule}
[metrics]
listen = "127.0.0.1:0"
{extra}
"#,
        http_extra = opts.http_extra,
        orders_extra = opts.orders_extra,
        extra = opts.extra,
        hash = admin_hash(),
        data_dir = data_dir.display(),
        api_keys = api_keys(data_dir, opts),
        timeout_ms = opts.timeout_ms,
        accept = opts.accept_client_amount,
        reconcile_schedule = opts.reconcile_schedule,
    )
}

/// A running PayBridge (live mode) with its simulator and data directory.
pub struct Env {
    pub dir: TempDir,
    pub sim: SimulatorHandle,
    pub app: Running,
    pub base: String,
    pub http: reqwest::Client,
    pub opts: Opts,
}

impl Env {
    pub async fn start(opts: Opts) -> Env {
        let sim = start_simulator().await;
        let dir = tempfile::tempdir().unwrap();
        Env::start_in(dir, sim, opts).await
    }

    /// Starts PayBridge on a data directory that may already hold data.
    pub async fn start_in(dir: TempDir, sim: SimulatorHandle, opts: Opts) -> Env {
        Env::start_in_at(dir, sim, opts, "127.0.0.1:0").await
    }

    /// Stops PayBridge and starts it again on the same address and data.
    pub async fn restart(self) -> Env {
        let addr = self.app.addr.to_string();
        let opts = self.opts.clone();
        let (dir, sim) = self.stop().await;
        Env::start_in_at(dir, sim, opts, &addr).await
    }

    pub async fn start_in_at(dir: TempDir, sim: SimulatorHandle, opts: Opts, addr: &str) -> Env {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut text = config_text(&dir.path().join("data"), &addr, &sim.url(), &opts);
        if opts.client_cert != ClientCert::None {
            text = text.replacen(
                "[wechat]\n",
                &format!("[wechat]\n{}", client_cert_toml(dir.path(), &sim, opts.client_cert)),
                1,
            );
        }
        let config = Config::from_toml(&text, Path::new("test.toml"), std::iter::empty()).unwrap();
        let app = app::start_with_listener(config, listener).await.unwrap();
        Env { base: format!("http://{addr}"), dir, sim, app, http: reqwest::Client::new(), opts }
    }

    /// Stops PayBridge, keeping the simulator and the data directory.
    pub async fn stop(self) -> (TempDir, SimulatorHandle) {
        self.app.stop().await;
        (self.dir, self.sim)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.base)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, serde_json::to_vec(body).unwrap()).await
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let r = self.http.post(format!("{}{path}", self.base)).body(body).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")))
    }

    /// Logs in with a fresh code; returns the openid.
    pub async fn openid(&self, code: &str) -> String {
        let (status, body) = self.get(&format!("/pay/openid?code={code}")).await;
        assert_eq!(status, 200, "{body}");
        body["openid"].as_str().unwrap().to_owned()
    }

    /// Places an order the way the tutorial client does.
    pub async fn order(&self, out_trade_no: &str, total_fee: u64, openid: &str) -> (u16, Value) {
        let body = json!({
            "outTradeNo": out_trade_no, "totalFee": total_fee.to_string(), "body": "支付测试",
            "attach": "云塔山", "openid": openid,
            "spbillCreateIp": "123.267.12.2", "notifyURL": "https://evil.example/steal", "tradeType": "JSAPI",
        });
        self.post_json("/pay/unifiedOrder", &body).await
    }

    /// Asks the simulator to pay an order (and deliver the notify).
    pub async fn sim_pay(&self, request: Value) -> String {
        let r = self.http.post(format!("{}/sandbox/pay", self.sim.url())).json(&request).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        v["transaction_id"].as_str().unwrap().to_owned()
    }

    /// Injects faults into the simulator's next pay API calls.
    pub async fn inject(&self, faults: Value) {
        let r = self.http.post(format!("{}/sandbox/faults", self.sim.url())).json(&faults).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }

    /// Waits until the order's notify log holds `count` records with
    /// `verdict` (a refund's notify is recorded just after the refund ends).
    pub async fn wait_notifies(
        &self,
        out_trade_no: &str,
        verdict: paybridge::store::Verdict,
        count: usize,
    ) -> Vec<NotifyRecord> {
        for _ in 0..500 {
            let found: Vec<_> = self.notifies(out_trade_no).into_iter().filter(|n| n.verdict == verdict).collect();
            if found.len() >= count {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("never {count} {verdict:?} notifies for {out_trade_no}");
    }

    /// The order as stored.
    pub fn stored_order(&self, out_trade_no: &str) -> paybridge::store::Order {
        self.app.store.order(out_trade_no).unwrap().unwrap()
    }

    /// Waits until every refund of the order has ended (SUCCESS, CLOSED, ABNORMAL).
    pub async fn refunds_settled(&self, out_trade_no: &str) {
        for _ in 0..500 {
            let refunds = self.app.store.refunds_for_order(out_trade_no).unwrap();
            if refunds.iter().all(|r| r.status != paybridge::store::RefundStatus::Processing) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("refunds of {out_trade_no} never ended");
    }

    /// Waits until the simulator's notify for this order was acknowledged.
    pub async fn wait_acknowledged(&self, out_trade_no: &str) {
        for _ in 0..1500 {
            let report = self.sim.simulator.report(out_trade_no).unwrap();
            if report.notify.acknowledged {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("notify for {out_trade_no} was never acknowledged");
    }

    /// Posts a raw notify body; returns (HTTP status, parsed XML reply).
    pub async fn notify(&self, body: impl Into<Vec<u8>>) -> (u16, Fields) {
        let r = self.http.post(format!("{}/pay/notify", self.base)).body(body.into()).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, xml::parse(text.as_bytes()).unwrap_or_default())
    }

    /// The verified notifies of an order, oldest first.
    pub fn notifies(&self, out_trade_no: &str) -> Vec<NotifyRecord> {
        let mut items = self.app.store.notifies_for_order(out_trade_no, None, 1000).unwrap().items;
        items.reverse();
        items
    }

    /// The newest entry of the notify log, whatever it names.
    pub fn last_notify(&self) -> NotifyRecord {
        self.app.store.list_notifies(None, 1).unwrap().items.remove(0)
    }
}

/// A logged-in admin (a cookie-keeping client and the CSRF token).
pub struct Admin {
    pub http: reqwest::Client,
    pub base: String,
    pub csrf: String,
}

pub async fn login(env: &Env) -> Admin {
    let http = reqwest::Client::builder().cookie_store(true).build().unwrap();
    let r = http
        .post(format!("{}/admin/api/login", env.base))
        .json(&json!({ "password": ADMIN_PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "no Secure flag over plain HTTP: {cookie}");
    let body: Value = r.json().await.unwrap();
    Admin { http, base: env.base.clone(), csrf: body["csrf"].as_str().unwrap().to_owned() }
}

impl Admin {
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.base)).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn text(&self, path: &str) -> (u16, String, String) {
        let r = self.http.get(format!("{}{path}", self.base)).send().await.unwrap();
        let content_type = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        (r.status().as_u16(), content_type, r.text().await.unwrap())
    }

    /// Every order number of a listing, following `next` to the end.
    pub async fn all(&self, query: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cursor = String::new();
        loop {
            let (status, page) = self.get(&format!("/admin/api/orders?limit=7&{query}&cursor={cursor}")).await;
            assert_eq!(status, 200, "{page}");
            out.extend(page["items"].as_array().unwrap().iter().map(|o| o["outTradeNo"].as_str().unwrap().to_owned()));
            match page["next"].as_str() {
                Some(next) => cursor = next.to_owned(),
                None => return out,
            }
        }
    }
}

/// A notify as WeChat sends it for an order, signed with `key`.
pub fn notify_fields(out_trade_no: &str, total_fee: u64, transaction_id: &str) -> Fields {
    let fee = total_fee.to_string();
    sign::fields([
        ("return_code", "SUCCESS"),
        ("appid", APPID),
        ("mch_id", MCH_ID),
        ("nonce_str", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"),
        ("result_code", "SUCCESS"),
        ("openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
        ("is_subscribe", "N"),
        ("trade_type", "JSAPI"),
        ("bank_type", "OTHERS"),
        ("total_fee", fee.as_str()),
        ("fee_type", "CNY"),
        ("cash_fee", fee.as_str()),
        ("transaction_id", transaction_id),
        ("out_trade_no", out_trade_no),
        ("time_end", "20261126120000"),
    ])
}

/// Signs `fields` and writes the XML.
pub fn signed_xml(mut fields: Fields, key: &str, sign_type: SignType) -> String {
    fields.remove("sign");
    let s = sign::sign(&fields, &Secret::new(key), sign_type);
    fields.insert("sign".into(), s);
    xml::write(&fields)
}

/// Overrides fields of a map.
pub fn with(mut fields: Fields, changes: &[(&str, &str)]) -> Fields {
    fields.extend(changes.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    fields
}

pub fn extra(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}
