//! WeChat Pay API v3 end to end: the real server on `127.0.0.1:0`, real
//! sled, and the simulator's v3 side, in both key modes and through
//! WeChat's migration from certificates to the public key. The simulator
//! checks every request's RSA signature and the mini-program's `paySign`
//! as WeChat does, and signs and encrypts every reply and notify.

mod common;
#[path = "common/platform_a.rs"]
mod platform_a;

use common::{Api, Env, Opts};
use paybridge::sandbox::v3::{KeyMode, V3Notify};
use paybridge::store::{NotifyRecord, OrderStatus, Verdict};
use serde_json::{json, Value};

fn v3(public_key: bool, certificates: bool) -> Opts {
    Opts { api: Api::V3 { public_key, certificates }, ..Opts::default() }
}

/// A PayBridge on v3 against a simulator whose merchant is in `mode`.
async fn start(opts: Opts, mode: KeyMode) -> Env {
    let sim = common::start_simulator().await;
    sim.simulator.v3().set_key_mode(mode);
    Env::start_in(tempfile::tempdir().unwrap(), sim, opts).await
}

fn now() -> i64 {
    paybridge::pay::now_ms() / 1000
}

/// Posts a notify as WeChat would; returns the status and the body.
async fn post(env: &Env, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    let mut request = env.http.post(format!("{}/pay/notify", env.base)).body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn post_notify(env: &Env, notify: &V3Notify) -> (u16, String) {
    post(env, &notify.headers, &notify.body).await
}

/// Logs in and places an order; returns the openid and the reply.
async fn place(env: &Env, no: &str, fee: u64) -> (String, Value) {
    let openid = env.openid(&format!("code-{no}")).await;
    let (status, body) = env.order(no, fee, &openid).await;
    assert_eq!(status, 200, "{body}");
    (openid, body)
}

fn status_of(env: &Env, no: &str) -> OrderStatus {
    env.app.store.order(no).unwrap().unwrap().status
}

/// The notify log, newest first.
fn log(env: &Env) -> Vec<NotifyRecord> {
    env.app.store.list_notifies(None, 500).unwrap().items
}

fn header<'a>(notify: &'a V3Notify, name: &str) -> &'a str {
    &notify.headers.iter().find(|(n, _)| *n == name).unwrap().1
}

fn with_header(notify: &V3Notify, name: &str, value: String) -> Vec<(&'static str, String)> {
    notify.headers.iter().map(|(n, v)| (*n, if *n == name { value.clone() } else { v.clone() })).collect()
}

#[tokio::test]
async fn public_key_mode_pays_with_an_rsa_pay_sign_and_counts_a_payment_once() {
    let env = start(v3(true, false), KeyMode::PublicKey).await;
    let sim = env.sim.simulator.v3();
    let (openid, p) = place(&env, "V3FLOW0001", 1990).await;
    assert_eq!(p["signType"], "RSA");
    // What the WeChat client checks before it shows the payment sheet.
    let valid = |p: &Value, package: &str| {
        let s = |k: &str| p[k].as_str().unwrap().to_owned();
        sim.pay_sign_valid(&s("appId"), &s("timeStamp"), &s("nonceStr"), package, &s("paySign"))
    };
    assert!(valid(&p, p["package"].as_str().unwrap()));
    assert!(!valid(&p, "prepay_id=wx00000000000000000000000000000000"));
    // A repeated tap gets the same prepay.
    let (_, again) = env.order("V3FLOW0001", 1990, &openid).await;
    assert_eq!(again["package"], p["package"]);

    // Three concurrent copies of the notify: one payment.
    let tx = env.sim_pay(json!({ "out_trade_no": "V3FLOW0001", "copies": 3 })).await;
    env.wait_acknowledged("V3FLOW0001").await;
    let (status, view) = env.get(&format!("/pay/orders/V3FLOW0001?openid={openid}")).await;
    assert_eq!(status, 200);
    assert_eq!((view["status"].as_str(), view["transactionId"].as_str()), (Some("PAID"), Some(tx.as_str())));
    assert_eq!(view["timeEnd"].as_str().unwrap().len(), 14, "kept as yyyyMMddHHmmss, as in v2");
    let notifies = env.notifies("V3FLOW0001");
    assert_eq!(notifies.len(), 3);
    assert_eq!(notifies.iter().filter(|n| n.verdict == Verdict::Paid).count(), 1);
    assert!(notifies.iter().all(|n| n.verified && matches!(n.verdict, Verdict::Paid | Verdict::Duplicate)));
    let event = notifies[0].event_id.clone().unwrap();
    assert!(event.starts_with("EV-") && notifies.iter().all(|n| n.event_id.as_deref() == Some(event.as_str())));
    let resource: Value = serde_json::from_slice(notifies[0].resource.as_ref().unwrap()).unwrap();
    assert_eq!((resource["amount"]["total"].as_u64(), resource["transaction_id"].as_str()), (Some(1990), Some(&*tx)));

    // Every call to WeChat is measured, by API.
    let metrics = reqwest::get(format!("http://{}/metrics", env.app.config.metrics.listen.unwrap())).await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains("paybridge_wechat_request_duration_seconds_count{api=\"v3_jsapi\"} 1"), "{metrics}");

    // The order is paid at WeChat too: ordering it again is refused there and here.
    let (status, body) = env.order("V3FLOW0001", 1990, &openid).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("ORDER_PAID")), "{body}");
}

/// Two hundred payers at once, each with their own RSA-signed order and notify.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_payers_at_once() {
    // All payers come from 127.0.0.1 here, behind one "carrier NAT".
    let opts = Opts { http_extra: "max_connections_per_ip = 2048", ..v3(true, false) };
    let env = std::sync::Arc::new(start(opts, KeyMode::PublicKey).await);
    let tasks = (0..200).map(|i| {
        let env = env.clone();
        tokio::spawn(async move {
            let no = format!("V3LOAD{i:04}");
            place(&env, &no, 100 + i).await;
            env.sim_pay(json!({ "out_trade_no": no })).await;
            env.wait_acknowledged(&no).await;
            no
        })
    });
    for task in futures_util::future::join_all(tasks).await {
        let no = task.unwrap();
        assert_eq!(status_of(&env, &no), OrderStatus::Paid, "{no}");
    }
    assert!(log(&env).iter().all(|n| n.verdict == Verdict::Paid), "no notify refused");
}

#[tokio::test]
async fn forged_tampered_stale_probe_and_wrong_amount_notifies_never_pay() {
    let env = start(v3(true, false), KeyMode::PublicKey).await;
    let sim = env.sim.simulator.v3();
    place(&env, "V3FORGE001", 500).await;
    // The user pays; the simulator hands us WeChat's notify without delivering it.
    let genuine = sim.pay("V3FORGE001", now()).unwrap();
    let envelope: Value = serde_json::from_slice(&genuine.body).unwrap();
    let changed = |pointer: &str| {
        let mut e = envelope.clone();
        let text = e.pointer(pointer).unwrap().as_str().unwrap().to_owned();
        // One character of the value, replaced.
        let mut bytes = text.into_bytes();
        bytes[4] = if bytes[4] == b'A' { b'B' } else { b'A' };
        *e.pointer_mut(pointer).unwrap() = Value::String(String::from_utf8(bytes).unwrap());
        e.to_string().into_bytes()
    };
    let one_byte = {
        let mut body = genuine.body.clone();
        let at = body.len() / 2;
        body[at] ^= 1;
        body
    };
    let stale = with_header(&genuine, "wechatpay-timestamp", (now() - 400).to_string());
    let probe = with_header(&genuine, "wechatpay-signature", "WECHATPAY/SIGNTEST/aGVsbG8=".into());
    let unknown = with_header(&genuine, "wechatpay-serial", "PUB_KEY_ID_0000000000000000000000000000009999".into());
    let resigned_ciphertext = sim.sign_notify(changed("/resource/ciphertext"), now());
    let resigned_aad = sim.sign_notify(changed("/resource/associated_data"), now());
    let xml = b"<xml><return_code>SUCCESS</return_code><out_trade_no>V3FORGE001</out_trade_no></xml>".to_vec();

    // (what, headers, body, the status WeChat gets, the reason recorded)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("body", genuine.headers.clone(), one_byte, 401, "does not verify"),
        ("ciphertext", genuine.headers.clone(), changed("/resource/ciphertext"), 401, "does not verify"),
        ("associated data", genuine.headers.clone(), changed("/resource/associated_data"), 401, "does not verify"),
        ("stale", stale, genuine.body.clone(), 401, "seconds from this server's clock"),
        ("probe", probe, genuine.body.clone(), 401, "probe"),
        ("unknown serial", unknown, genuine.body.clone(), 401, "names no key configured here"),
        ("no headers", Vec::new(), genuine.body.clone(), 400, "header is missing"),
        ("v2 XML", Vec::new(), xml, 400, "API v2 (XML) notify"),
        ("re-signed ciphertext", resigned_ciphertext.headers, resigned_ciphertext.body, 500, "does not authenticate"),
        ("re-signed AAD", resigned_aad.headers, resigned_aad.body, 500, "does not authenticate"),
    ];
    for (name, headers, body, status, reason) in cases {
        let (got, reply) = post(&env, &headers, &body).await;
        assert_eq!(got, status, "{name}: {reply}");
        let reply: Value = serde_json::from_str(&reply).unwrap_or_else(|_| panic!("{name}: JSON error body"));
        assert_eq!(reply["code"], "FAIL", "{name}");
        let record = env.last_notify();
        assert_eq!(record.verdict, Verdict::Rejected, "{name}");
        assert!(record.reason.contains(reason), "{name}: {}", record.reason);
        assert_eq!(status_of(&env, "V3FORGE001"), OrderStatus::Prepaid, "{name} must not pay");
    }

    // A verified notify with another amount: recorded and acknowledged (an
    // incident to reconcile, not a forgery to retry), the order unpaid.
    let mut transaction = sim.paid_transaction("V3FORGE001").unwrap();
    transaction["amount"]["total"] = json!(1);
    let wrong_amount = sim.notify(&transaction, "EV-wrong-amount", now()).unwrap();
    assert_eq!(post_notify(&env, &wrong_amount).await.0, 204);
    let record = env.last_notify();
    assert_eq!((record.verdict, record.verified), (Verdict::Rejected, true));
    assert!(record.reason.contains("amount") || record.reason.contains("total"), "{}", record.reason);
    assert_eq!(status_of(&env, "V3FORGE001"), OrderStatus::Prepaid);

    // The genuine one pays; replayed, it changes nothing.
    assert_eq!(post_notify(&env, &genuine).await, (204, String::new()));
    assert_eq!(status_of(&env, "V3FORGE001"), OrderStatus::Paid);
    assert_eq!(post_notify(&env, &genuine).await.0, 204);
    assert_eq!(env.last_notify().verdict, Verdict::Duplicate);
    assert_eq!(log(&env).iter().filter(|n| n.verdict == Verdict::Paid).count(), 1);
}

/// WeChat resends a notify PayBridge refused: a probe, a stale timestamp,
/// an unknown serial, a wrong key on the first attempt, then the real one.
#[tokio::test]
async fn refused_deliveries_are_resent_and_then_pay() {
    let env = start(v3(true, false), KeyMode::PublicKey).await;
    for (i, fault) in ["probe", "stale_timestamp", "unknown_serial", "bad_sign"].into_iter().enumerate() {
        let no = format!("V3RETRY00{i}");
        place(&env, &no, 300).await;
        env.sim_pay(json!({ "out_trade_no": no, "fault": { "kind": fault } })).await;
        env.wait_acknowledged(&no).await;
        assert_eq!(status_of(&env, &no), OrderStatus::Paid, "{fault}");
        let report = env.sim.simulator.report(&no).unwrap();
        assert_eq!(report.notify.attempts, 2, "{fault}: refused once, then acknowledged");
    }
    let refused: Vec<_> = log(&env).into_iter().filter(|n| n.verdict == Verdict::Rejected).collect();
    assert_eq!(refused.len(), 4);
    assert!(refused.iter().all(|n| !n.verified && n.reason.starts_with("signature:")), "{refused:?}");
}

#[tokio::test]
async fn a_reply_that_does_not_verify_hands_out_no_prepay() {
    let env = start(v3(true, false), KeyMode::PublicKey).await;
    let openid = env.openid("code-reply").await;
    for fault in ["bad_sign", "unknown_serial", "stale_timestamp", "probe"] {
        env.inject(json!([{ "kind": fault }])).await;
        let (status, body) = env.order("V3REPLY001", 700, &openid).await;
        assert_eq!((status, body["error"]["code"].as_str()), (502, Some("WECHAT_ERROR")), "{fault}: {body}");
        assert!(body.get("package").is_none() && body.get("paySign").is_none(), "{fault}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("did not verify"), "{fault}: {body}");
    }
    // A clean retry with the same number works (WeChat's re-submission rules).
    let (status, body) = env.order("V3REPLY001", 700, &openid).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(status_of(&env, "V3REPLY001"), OrderStatus::Prepaid);
}

#[tokio::test]
async fn certificate_mode_downloads_keeps_and_follows_a_new_certificate() {
    let env = start(v3(false, true), KeyMode::Certificates).await;
    let sim = env.sim.simulator.v3();
    let first = sim.certificate_serial();
    let stored = env.app.store.wechat_certificates().unwrap();
    assert_eq!(stored.iter().map(|c| c.serial.as_str()).collect::<Vec<_>>(), [first.as_str()]);
    place(&env, "V3CERT0001", 800).await;
    env.sim_pay(json!({ "out_trade_no": "V3CERT0001" })).await;
    env.wait_acknowledged("V3CERT0001").await;
    assert_eq!(status_of(&env, "V3CERT0001"), OrderStatus::Paid);

    // WeChat rotates its certificate and signs with the new one: the first
    // notify naming it makes PayBridge download the list once.
    place(&env, "V3CERT0002", 800).await;
    let rotated = sim.rotate_certificate(time::Duration::days(20));
    assert_ne!(rotated, first);
    env.sim_pay(json!({ "out_trade_no": "V3CERT0002" })).await;
    env.wait_acknowledged("V3CERT0002").await;
    assert_eq!(status_of(&env, "V3CERT0002"), OrderStatus::Paid);
    assert_eq!(env.sim.simulator.report("V3CERT0002").unwrap().notify.attempts, 1, "accepted at once");
    let stored = env.app.store.wechat_certificates().unwrap();
    assert_eq!(stored.iter().map(|c| c.serial.as_str()).collect::<Vec<_>>(), [rotated.as_str()]);

    // Strangers naming unknown serials cannot make PayBridge call WeChat at
    // will: the rotation's download was the last one this minute.
    let downloads = sim.certificate_downloads();
    let genuine = sim.notify(&sim.paid_transaction("V3CERT0002").unwrap(), "EV-x", now()).unwrap();
    for i in 0..5 {
        let serial = format!("{:040X}", 0xBAD0 + i);
        let (status, _) = post(&env, &with_header(&genuine, "wechatpay-serial", serial.clone()), &genuine.body).await;
        assert_eq!(status, 401);
        assert!(env.last_notify().reason.contains(&serial));
    }
    assert_eq!(sim.certificate_downloads(), downloads);

    // The admin page shows the mode, the serials, and warns of an expiry within 30 days.
    let admin = common::login(&env).await;
    let (status, system) = admin.get("/admin/api/system").await;
    assert_eq!(status, 200);
    assert_eq!((system["apiVersion"].as_str(), system["keyMode"].as_str()), (Some("v3"), Some("certificates")));
    assert_eq!(system["merchantSerial"], paybridge::sandbox::v3::MERCHANT_SERIAL);
    assert_eq!(system["platformCertificates"][0]["serial"], rotated.as_str());
    assert_eq!(system["platformCertificates"][0]["expiresSoon"], true);
    assert!(!system.to_string().contains(paybridge::sandbox::v3::APIV3_KEY), "no secret in the page");

    // Restarted with WeChat unreachable, the kept certificate still verifies notifies.
    let (dir, sim_handle) = env.stop().await;
    let v3sim = sim_handle.simulator.v3().clone();
    let url = sim_handle.url();
    sim_handle.stop().await;
    let opts = Opts { timeout_ms: 300, ..v3(false, true) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let text = common::config_text(&dir.path().join("data"), &addr, &url, &opts);
    let config =
        paybridge::config::Config::from_toml(&text, std::path::Path::new("t.toml"), std::iter::empty()).unwrap();
    let app = paybridge::app::start_with_listener(config, listener).await.unwrap();
    assert_eq!(app.payments.platform_certificates().len(), 1, "trusted from sled");
    let mut transaction = v3sim.paid_transaction("V3CERT0002").unwrap();
    transaction["out_trade_no"] = json!("V3CERT0002");
    let notify = v3sim.notify(&transaction, "EV-after-restart", now()).unwrap();
    let mut request = reqwest::Client::new().post(format!("http://{addr}/pay/notify")).body(notify.body.clone());
    for (name, value) in &notify.headers {
        request = request.header(*name, value);
    }
    assert_eq!(request.send().await.unwrap().status().as_u16(), 204, "verified with the stored certificate");
    app.stop().await;
}

/// WeChat moves a merchant from certificates to the public key while
/// payments go on: notifies come signed by either, then by the public key
/// alone; PayBridge, configured with both, refuses none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migration_from_certificates_to_the_public_key_refuses_nothing() {
    let env = std::sync::Arc::new(start(v3(true, true), KeyMode::Certificates).await);
    let sim = env.sim.simulator.v3();
    let mut paid = Vec::new();
    for (phase, mode) in [KeyMode::Certificates, KeyMode::Migrating, KeyMode::PublicKey].into_iter().enumerate() {
        sim.set_key_mode(mode);
        let tasks = (0..20).map(|i| {
            let env = env.clone();
            tokio::spawn(async move {
                let no = format!("V3MIG{phase}{i:03}");
                place(&env, &no, 1000 + i).await;
                env.sim_pay(json!({ "out_trade_no": no })).await;
                env.wait_acknowledged(&no).await;
                no
            })
        });
        for task in futures_util::future::join_all(tasks).await {
            paid.push(task.unwrap());
        }
    }
    assert!(paid.iter().all(|no| status_of(&env, no) == OrderStatus::Paid));
    let log = log(&env);
    assert_eq!(log.len(), 60);
    assert!(log.iter().all(|n| n.verdict == Verdict::Paid), "{:?}", log.iter().find(|n| n.verdict != Verdict::Paid));
    // While migrating, WeChat's notifies really alternate between the keys,
    // and both kinds verify.
    sim.set_key_mode(KeyMode::Migrating);
    let transaction = sim.paid_transaction(&paid[0]).unwrap();
    let notifies: Vec<_> = (0..2).map(|i| sim.notify(&transaction, &format!("EV-both-{i}"), now()).unwrap()).collect();
    let serials: std::collections::HashSet<_> =
        notifies.iter().map(|n| header(n, "wechatpay-serial").to_owned()).collect();
    let expected = [paybridge::sandbox::v3::WECHATPAY_PUBLIC_KEY_ID.to_owned(), sim.certificate_serial()];
    assert_eq!(serials, expected.into_iter().collect());
    for notify in &notifies {
        assert_eq!(post_notify(&env, notify).await.0, 204);
        assert_eq!(env.last_notify().verdict, Verdict::Duplicate);
    }
}

/// Platform A's flow is the same on v3: A signs the order, B pays it through
/// v3, A gets a signed `order.paid`; A closes another, and WeChat's v3
/// order is closed too before `order.closed` goes out.
#[tokio::test]
async fn platform_orders_and_webhooks_are_the_same_on_v3() {
    use platform_a::{Backend, Receiver, KEY, PLATFORM};
    let receiver = Receiver::start(KEY).await;
    let opts = Opts { extra: platform_a::platform_toml(PLATFORM, KEY, &receiver.url()), ..v3(true, false) };
    let env = start(opts, KeyMode::PublicKey).await;
    let a = Backend::new(&env.base);

    let (status, created) = a.create("A-V3-1", 1990, "VIP month").await;
    assert_eq!(status, 201, "{created}");
    let no = created["outTradeNo"].as_str().unwrap().to_owned();
    let openid = env.openid("v3-platform-payer").await;
    let (status, p) = env.post_json("/pay/unifiedOrder", &json!({ "outTradeNo": no, "openid": openid })).await;
    assert_eq!((status, p["signType"].as_str()), (200, Some("RSA")), "{p}");
    env.sim_pay(json!({ "out_trade_no": no })).await;
    let hooks = receiver.wait_for(1).await;
    assert!(hooks[0].verified);
    assert_eq!(
        (hooks[0].body["type"].as_str(), hooks[0].body["order"]["amount"].as_u64()),
        (Some("order.paid"), Some(1990))
    );
    let (_, view) = env.get(&format!("/pay/orders/{no}?openid={openid}")).await;
    let result = paybridge::platform::token::verify_result(
        &paybridge::secret::Secret::new(KEY),
        view["result"].as_str().unwrap(),
    );
    assert_eq!(result.unwrap().status, "PAID");

    let (_, second) = a.create("A-V3-2", 500, "lesson").await;
    let second = second["outTradeNo"].as_str().unwrap().to_owned();
    let (status, _) = env.post_json("/pay/unifiedOrder", &json!({ "outTradeNo": second, "openid": openid })).await;
    assert_eq!(status, 200);
    let (status, closed) = a.call("POST", &format!("/platform/v1/orders/{second}/close"), b"").await;
    assert_eq!((status, closed["status"].as_str()), (200, Some("CLOSED")), "{closed}");
    assert_eq!(env.sim.simulator.v3().state(&second), Some("CLOSED"), "closed at WeChat first");
    let hooks = receiver.wait_for(2).await;
    assert_eq!(hooks[1].body["type"], "order.closed");
}

/// The faults v2 has: a proxy's error page, a slow WeChat, a signed
/// business error. None hands out a prepay; the order is kept for a retry.
#[tokio::test]
async fn upstream_faults_on_v3_keep_the_order_for_a_retry() {
    let env = start(Opts { timeout_ms: 500, ..v3(true, false) }, KeyMode::PublicKey).await;
    let openid = env.openid("code-faults").await;
    for (fault, status, code) in [
        (json!({ "kind": "http", "status": 502 }), 502, "WECHAT_ERROR"),
        (json!({ "kind": "delay", "ms": 1500 }), 504, "WECHAT_TIMEOUT"),
        (json!({ "kind": "business", "code": "SYSTEM_ERROR", "description": "系统错误" }), 502, "WECHAT_ERROR"),
    ] {
        env.inject(json!([fault])).await;
        let (got, body) = env.order("V3FAULT001", 600, &openid).await;
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{fault}: {body}");
        assert_eq!(status_of(&env, "V3FAULT001"), OrderStatus::Created, "{fault}");
    }
    let (status, body) = env.order("V3FAULT001", 600, &openid).await;
    assert_eq!((status, body["signType"].as_str()), (200, Some("RSA")), "{body}");
}
