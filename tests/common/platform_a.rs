//! A test platform A: its backend's signed calls to the platform API, and
//! a webhook receiver that verifies every signature the way A's would.

#![allow(dead_code)] // each test binary uses a different part

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};
use warp::reply::Reply;
use warp::Filter;

pub const PLATFORM: &str = "shop-a";
pub const KEY: &str = "shop-a-test-key-5f2b8c1e9d4a7f3b6e0c2d8a";

/// The `[[platforms]]` section for platform `id` with its webhook at `webhook`.
pub fn platform_toml(id: &str, key: &str, webhook: &str) -> String {
    format!("[[platforms]]\nid = \"{id}\"\nkey = \"{key}\"\nwebhook_url = \"{webhook}\"\n")
}

fn hmac_hex(key: &str, message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// A's backend: signs each request exactly as the README says, written
/// here from the README rather than from PayBridge's code.
#[derive(Clone)]
pub struct Backend {
    pub base: String,
    pub platform: String,
    pub key: String,
    pub http: reqwest::Client,
}

static NONCES: AtomicU64 = AtomicU64::new(0);

/// A fresh nonce: 16+ characters, never repeated in this process.
pub fn nonce() -> String {
    format!("n{:08x}{:016x}", std::process::id(), NONCES.fetch_add(1, Ordering::Relaxed))
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The signature headers for one request.
pub fn sign(key: &str, method: &str, path_and_query: &str, timestamp: i64, nonce: &str, body: &[u8]) -> String {
    let text = format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{}\n", hex::encode(Sha256::digest(body)));
    hmac_hex(key, text.as_bytes())
}

impl Backend {
    pub fn new(base: &str) -> Backend {
        Backend { base: base.into(), platform: PLATFORM.into(), key: KEY.into(), http: reqwest::Client::new() }
    }

    /// Sends a signed request with a fresh nonce and the current time.
    pub async fn call(&self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        self.call_with(method, path, body, now_secs(), &nonce()).await
    }

    pub async fn call_with(&self, method: &str, path: &str, body: &[u8], timestamp: i64, nonce: &str) -> (u16, Value) {
        let signature = sign(&self.key, method, path, timestamp, nonce, body);
        self.raw(
            method,
            path,
            body,
            &[
                ("PayBridge-Platform", self.platform.as_str()),
                ("PayBridge-Timestamp", &timestamp.to_string()),
                ("PayBridge-Nonce", nonce),
                ("PayBridge-Signature", &signature),
            ],
        )
        .await
    }

    pub async fn raw(&self, method: &str, path: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, Value) {
        let mut request =
            self.http.request(method.parse().unwrap(), format!("{}{path}", self.base)).body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let reply = request.send().await.unwrap();
        let status = reply.status().as_u16();
        let text = reply.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")))
    }

    /// Creates an order; returns (status, reply).
    pub async fn create(&self, order_id: &str, amount: u64, description: &str) -> (u16, Value) {
        let body = serde_json::json!({ "orderId": order_id, "amount": amount, "description": description });
        self.call("POST", "/platform/v1/orders", &serde_json::to_vec(&body).unwrap()).await
    }
}

/// One webhook as the receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub event_id: String,
    pub body: Value,
    /// The signature verified under the platform key.
    pub verified: bool,
    /// What the receiver answered.
    pub answered: u16,
}

/// A's webhook endpoint on `127.0.0.1`: verifies, records, answers with the
/// status it is set to (200 by default).
pub struct Receiver {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub status: Arc<AtomicU16>,
    /// Milliseconds to wait before answering.
    pub delay_ms: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Receiver {
    pub async fn start(key: &str) -> Receiver {
        Receiver::start_on(key, "127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(key: &str, addr: SocketAddr) -> Receiver {
        let received = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let key = key.to_owned();
        let (r, s, d) = (received.clone(), status.clone(), delay_ms.clone());
        let route = warp::post()
            .and(warp::path!("paybridge" / "webhook"))
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .then(move |headers: warp::http::HeaderMap, body: bytes::Bytes| {
                let (key, r, s, d) = (key.clone(), r.clone(), s.clone(), d.clone());
                async move {
                    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                    // What A's backend does: HMAC(key, timestamp + "\n" + body), and a fresh timestamp.
                    let timestamp = header("paybridge-timestamp");
                    let mut message = format!("{timestamp}\n").into_bytes();
                    message.extend_from_slice(&body);
                    let fresh = timestamp.parse::<i64>().is_ok_and(|t| (t - now_secs()).abs() <= 300);
                    let verified = fresh && hmac_hex(&key, &message) == header("paybridge-signature");
                    tokio::time::sleep(Duration::from_millis(d.load(Ordering::Relaxed))).await;
                    let answered = if verified { s.load(Ordering::Relaxed) } else { 401 };
                    r.lock().unwrap().push(Received {
                        event_id: header("paybridge-event-id"),
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                        verified,
                        answered,
                    });
                    warp::reply::with_status("ok", warp::http::StatusCode::from_u16(answered).unwrap()).into_response()
                }
            })
            .boxed();
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = paybridge::server::Serving { metrics: None, limits: Default::default() };
        tokio::spawn(paybridge::server::run(listener, route, serving, async {
            let _ = stopped.await;
        }));
        Receiver { addr, received, status, delay_ms, stop: Some(stop) }
    }

    pub fn url(&self) -> String {
        format!("http://{}/paybridge/webhook", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits (up to 15 s) until `n` webhooks arrived; returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..1500 {
            if self.received.lock().unwrap().len() >= n {
                return self.received();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} webhooks, got {:?}", self.received());
    }

    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}
