//! Refunds on API v3, against the simulator: full and partial, from the
//! admin page (CSRF-protected) and from platform A (idempotent by its
//! refund id); never more than was paid, even with twenty at once; WeChat's
//! refund notify verified and decrypted before it ends a refund; a lost
//! refund notify found by query; a failed refund releasing its amount; and
//! API v2's clear refusal without the client certificate (with one, see
//! `tests/refund_v2.rs`).

mod common;
#[path = "common/platform_a.rs"]
mod platform_a;

use std::time::Duration;

use common::{Api, Env, Opts};
use paybridge::sandbox::v3::V3Notify;
use paybridge::store::{OrderStatus, Verdict};
use platform_a::{Backend, Receiver, KEY, PLATFORM};
use serde_json::{json, Value};

const V3: Api = Api::V3 { public_key: true, certificates: false };

async fn start(api: Api, receiver: &Receiver) -> Env {
    start_with(api, common::ClientCert::None, receiver).await
}

async fn start_with(api: Api, client_cert: common::ClientCert, receiver: &Receiver) -> Env {
    let opts = Opts {
        api,
        client_cert,
        extra: platform_a::platform_toml(PLATFORM, KEY, &receiver.url()),
        http_extra: "max_connections_per_ip = 2048",
        ..Opts::default()
    };
    Env::start(opts).await
}

/// A platform order of `amount` fen, paid.
async fn paid_order(env: &Env, order_id: &str, amount: u64) -> String {
    let (status, created) = Backend::new(&env.base).create(order_id, amount, "lesson").await;
    assert_eq!(status, 201, "{created}");
    let no = created["outTradeNo"].as_str().unwrap().to_owned();
    let openid = env.openid(&format!("code-{order_id}")).await;
    let (status, p) = env.post_json("/pay/unifiedOrder", &json!({ "outTradeNo": no, "openid": openid })).await;
    assert_eq!(status, 200, "{p}");
    env.sim_pay(json!({ "out_trade_no": no })).await;
    env.wait_acknowledged(&no).await;
    no
}

async fn platform_refund(env: &Env, no: &str, refund_id: &str, amount: u64) -> (u16, Value) {
    let body = json!({ "refundId": refund_id, "amount": amount, "reason": "退课" }).to_string();
    Backend::new(&env.base).call("POST", &format!("/platform/v1/orders/{no}/refunds"), body.as_bytes()).await
}

#[tokio::test]
async fn partial_then_full_refunds_from_the_admin_page_and_platform_a() {
    let receiver = Receiver::start(KEY).await;
    let env = start(V3, &receiver).await;
    let no = paid_order(&env, "A-REFUND-1", 1000).await;
    receiver.wait_for(1).await;

    // The admin page: a session and its CSRF token, both needed.
    let admin = common::login(&env).await;
    let url = format!("{}/admin/api/orders/{no}/refunds", env.base);
    let body = json!({ "amount": 300, "reason": "部分退款" });
    let refused = admin.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(refused.status(), 403, "no CSRF token");
    let r = admin.http.post(&url).header("x-csrf-token", &admin.csrf).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let row: Value = r.json().await.unwrap();
    assert!(row["requestedBy"].as_str().unwrap().starts_with("admin (session "), "{row}");
    env.refunds_settled(&no).await;
    let o = env.stored_order(&no);
    assert_eq!((o.status, o.refunded_fee, o.refund_pending_fee), (OrderStatus::PartiallyRefunded, 300, 0));

    // Platform A refunds the rest; the same request again is the same refund.
    let (status, first) = platform_refund(&env, &no, "RF-A-1", 700).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = platform_refund(&env, &no, "RF-A-1", 700).await;
    assert_eq!((status, &again["outRefundNo"]), (200, &first["outRefundNo"]), "{again}");
    let (status, other) = platform_refund(&env, &no, "RF-A-1", 5).await;
    assert_eq!((status, other["error"]["code"].as_str()), (409, Some("REFUND_CONFLICT")), "{other}");
    env.refunds_settled(&no).await;
    let o = env.stored_order(&no);
    assert_eq!((o.status, o.refunded_fee), (OrderStatus::Refunded, 1000));
    assert_eq!(env.sim.simulator.v3().refunded(&no), 1000, "WeChat refunded exactly that");
    let (_, view) = Backend::new(&env.base).call("GET", &format!("/platform/v1/orders/{no}"), b"").await;
    assert_eq!((view["status"].as_str(), view["refundedAmount"].as_u64()), (Some("REFUNDED"), Some(1000)), "{view}");
    let (status, more) = platform_refund(&env, &no, "RF-A-2", 1).await;
    assert_eq!((status, more["error"]["code"].as_str()), (409, Some("NOT_REFUNDABLE")), "{more}");

    // A hears of both refunds, signed, with the running total.
    let hooks = receiver.wait_for(3).await;
    let refunds: Vec<_> = hooks.iter().filter(|h| h.body["type"] == "order.refunded").collect();
    assert_eq!(refunds.len(), 2);
    assert!(refunds.iter().all(|h| h.verified));
    let last = &refunds[1].body;
    assert_eq!(
        (last["order"]["status"].as_str(), last["order"]["refundedAmount"].as_u64()),
        (Some("REFUNDED"), Some(1000))
    );
    assert_eq!(last["refund"]["refundId"], "RF-A-1");

    // The refund notifies are in the log, verified and decrypted.
    let refund_notifies = env.wait_notifies(&no, Verdict::Refund, 2).await;
    assert_eq!(refund_notifies.len(), 2);
    assert!(refund_notifies.iter().all(|n| n.verified && n.resource.is_some()));
    let (_, detail) = admin.get(&format!("/admin/api/orders/{no}")).await;
    assert_eq!(detail["refunds"].as_array().unwrap().len(), 2, "{detail}");
    assert_eq!(detail["refundedFee"], 1000);
    env.stop().await;
}

/// Twenty refunds of 300 fen at once against a 1,000-fen order: three go
/// through, the others are refused, and WeChat refunds 900. Both versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_refunds_never_exceed_what_was_paid() {
    twenty_concurrent_refunds(V3, common::ClientCert::None).await;
    twenty_concurrent_refunds(Api::V2, common::ClientCert::Pem).await;
}

async fn twenty_concurrent_refunds(api: Api, client_cert: common::ClientCert) {
    let receiver = Receiver::start(KEY).await;
    let env = std::sync::Arc::new(start_with(api, client_cert, &receiver).await);
    let no = paid_order(&env, "A-REFUND-20", 1000).await;
    let tasks = (0..20).map(|i| {
        let (env, no) = (env.clone(), no.clone());
        tokio::spawn(async move { platform_refund(&env, &no, &format!("RF-CONC-{i}"), 300).await })
    });
    let mut accepted = 0;
    for task in futures_util::future::join_all(tasks).await {
        let (status, body) = task.unwrap();
        match status {
            201 => accepted += 1,
            409 => assert_eq!(body["error"]["code"], "REFUND_EXCEEDS_PAID", "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(accepted, 3);
    env.refunds_settled(&no).await;
    let o = env.stored_order(&no);
    assert_eq!((o.refunded_fee, o.refund_pending_fee, o.status), (900, 0, OrderStatus::PartiallyRefunded));
    assert_eq!(env.sim.simulator.v3().refunded(&no), 900);
}

#[tokio::test]
async fn a_tampered_refund_notify_is_refused_and_a_lost_one_is_found_by_query() {
    let receiver = Receiver::start(KEY).await;
    let env = start(V3, &receiver).await;
    let sim = env.sim.simulator.v3();
    let no = paid_order(&env, "A-REFUND-T", 800).await;
    // The refund's notify will be lost: PayBridge has only WeChat's first answer.
    env.sim.simulator.lose_refund_notifies(true);
    let (status, refund) = platform_refund(&env, &no, "RF-T-1", 800).await;
    assert_eq!((status, refund["status"].as_str()), (201, Some("PROCESSING")), "{refund}");
    let out_refund_no = refund["outRefundNo"].as_str().unwrap().to_owned();
    assert_eq!(sim.refund_status(&out_refund_no), Some("SUCCESS"), "ended at WeChat");

    // Forged and tampered notifies for it change nothing.
    let resource = json!({
        "mchid": common::MCH_ID, "out_trade_no": no, "out_refund_no": out_refund_no, "refund_id": "50000000000000000000000000001",
        "refund_status": "SUCCESS", "amount": { "total": 800, "refund": 800, "payer_total": 800, "payer_refund": 800 },
    });
    let genuine = sim.refund_notify(&resource, "EV-RF-1", paybridge::pay::now_ms() / 1000).unwrap();
    let mut envelope: Value = serde_json::from_slice(&genuine.body).unwrap();
    let ciphertext = envelope["resource"]["ciphertext"].as_str().unwrap().to_owned();
    let flipped = format!("{}{}", if ciphertext.starts_with('A') { "B" } else { "A" }, &ciphertext[1..]);
    envelope["resource"]["ciphertext"] = json!(flipped);
    let tampered_body = envelope.to_string().into_bytes();
    let resigned = sim.sign_notify(tampered_body.clone(), paybridge::pay::now_ms() / 1000);
    for (what, notify, status, reason) in [
        ("unsigned change", V3Notify { headers: genuine.headers.clone(), body: tampered_body }, 401, "does not verify"),
        ("signed, bad ciphertext", resigned, 500, "does not authenticate"),
    ] {
        let mut request = env.http.post(format!("{}/pay/notify", env.base)).body(notify.body.clone());
        for (name, value) in &notify.headers {
            request = request.header(*name, value);
        }
        assert_eq!(request.send().await.unwrap().status().as_u16(), status, "{what}");
        let record = env.last_notify();
        assert_eq!(record.verdict, Verdict::Rejected, "{what}");
        assert!(record.reason.contains(reason), "{what}: {}", record.reason);
        let o = env.stored_order(&no);
        assert_eq!((o.status, o.refunded_fee, o.refund_pending_fee), (OrderStatus::Paid, 0, 800), "{what}");
    }

    // A minute on, the lifecycle asks WeChat and ends the refund.
    env.app.lifecycle.clock().advance(Duration::from_secs(61));
    env.app.lifecycle.tick().await.unwrap();
    let o = env.stored_order(&no);
    assert_eq!((o.status, o.refunded_fee, o.refund_pending_fee), (OrderStatus::Refunded, 800, 0));
    let hooks = receiver.wait_for(2).await;
    assert_eq!(hooks[1].body["type"], "order.refunded");
    env.stop().await;
}

/// A refund that ends ABNORMAL or CLOSED frees its amount and tells A.
#[tokio::test]
async fn a_failed_refund_releases_its_amount() {
    let receiver = Receiver::start(KEY).await;
    let env = start(V3, &receiver).await;
    let no = paid_order(&env, "A-REFUND-F", 500).await;
    env.sim.simulator.v3().queue_refund_outcomes(["ABNORMAL"]);
    let (status, _) = platform_refund(&env, &no, "RF-F-1", 500).await;
    assert_eq!(status, 201);
    env.refunds_settled(&no).await;
    let o = env.stored_order(&no);
    assert_eq!((o.status, o.refunded_fee, o.refund_pending_fee), (OrderStatus::Paid, 0, 0));
    let hooks = receiver.wait_for(2).await;
    assert_eq!(
        (hooks[1].body["type"].as_str(), hooks[1].body["refund"]["status"].as_str()),
        (Some("refund.failed"), Some("ABNORMAL"))
    );
    // The amount is free again.
    let (status, _) = platform_refund(&env, &no, "RF-F-2", 500).await;
    assert_eq!(status, 201);
    env.refunds_settled(&no).await;
    assert_eq!(env.stored_order(&no).status, OrderStatus::Refunded);
    env.stop().await;
}

/// API v2 refunds need the merchant's client certificate; without one
/// configured the refusal says what to set, and nothing stays reserved.
#[tokio::test]
async fn v2_refunds_are_refused_clearly_and_reserve_nothing() {
    let receiver = Receiver::start(KEY).await;
    let env = start(Api::V2, &receiver).await;
    let no = paid_order(&env, "A-REFUND-V2", 500).await;
    let (status, body) = platform_refund(&env, &no, "RF-V2-1", 100).await;
    assert_eq!((status, body["error"]["code"].as_str()), (502, Some("WECHAT_ERROR")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("client_cert_file"), "{body}");
    let o = env.stored_order(&no);
    assert_eq!((o.status, o.refunded_fee, o.refund_pending_fee), (OrderStatus::Paid, 0, 0));
    env.stop().await;
}

/// WeChat allows 50 refunds per order; so does PayBridge, counted in the
/// same transaction that records each one.
#[tokio::test]
async fn an_order_takes_at_most_fifty_refunds() {
    let receiver = Receiver::start(KEY).await;
    let env = start(V3, &receiver).await;
    let no = paid_order(&env, "A-REFUND-50", 100).await;
    for i in 0..50 {
        let (status, body) = platform_refund(&env, &no, &format!("RF-50-{i}"), 1).await;
        assert_eq!(status, 201, "{i}: {body}");
    }
    let (status, body) = platform_refund(&env, &no, "RF-50-50", 1).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("TOO_MANY_REFUNDS")), "{body}");
    env.refunds_settled(&no).await;
    let o = env.stored_order(&no);
    assert_eq!((o.refunded_fee, o.status), (50, OrderStatus::PartiallyRefunded));
    env.stop().await;
}

/// WeChat answers a refund with SYSTEM_ERROR: the outcome is unknown, so
/// the refund stays PROCESSING under its number (never a new one); the
/// lifecycle asks, finds WeChat never got it, and sends it again.
#[tokio::test]
async fn an_unknown_outcome_is_retried_under_the_same_number() {
    let receiver = Receiver::start(KEY).await;
    let env = start(V3, &receiver).await;
    let no = paid_order(&env, "A-REFUND-U", 600).await;
    env.inject(json!([{ "kind": "business", "code": "SYSTEM_ERROR", "description": "系统错误" }])).await;
    let (status, refund) = platform_refund(&env, &no, "RF-U-1", 600).await;
    assert_eq!((status, refund["status"].as_str()), (201, Some("PROCESSING")), "{refund}");
    let o = env.stored_order(&no);
    assert_eq!((o.refund_pending_fee, o.refunded_fee), (600, 0), "still reserved");
    let (status, again) = platform_refund(&env, &no, "RF-U-2", 1).await;
    assert_eq!((status, again["error"]["code"].as_str()), (409, Some("REFUND_EXCEEDS_PAID")), "{again}");

    env.app.lifecycle.clock().advance(Duration::from_secs(61));
    env.app.lifecycle.tick().await.unwrap();
    env.refunds_settled(&no).await;
    let o = env.stored_order(&no);
    assert_eq!((o.status, o.refunded_fee), (OrderStatus::Refunded, 600));
    let out_refund_no = refund["outRefundNo"].as_str().unwrap();
    assert_eq!(env.sim.simulator.v3().refund_status(out_refund_no), Some("SUCCESS"), "the same number, once");
    assert_eq!(env.sim.simulator.v3().refunded(&no), 600);
    env.stop().await;
}
