//! Refunds on API v3, against the simulator: full and partial, from the
//! admin page (CSRF-protected) and from platform A (idempotent by its
//! refund id); never more than was paid, even with twenty at once; WeChat's
//! refund notify verified and decrypted before it ends a refund; a lost
//! refund notify found by query; a failed refund releasing its amount; and
//! API v2's clear refusal without the client certificate (with one, see
//! `tests/refund_v2.rs`).
//!
//! WeChat's answers by code, in both versions: a definitive refusal ends the
//! refund FAILED at once; SYSTEMERROR and codes PayBridge does not know stay
//! PROCESSING under the same number, retried with back-off and, after a few
//! tries, flagged for a look; ABNORMAL is not an end, and a SUCCESS after it
//! (by notify or by query) refunds; a reason over 80 bytes never reaches
//! WeChat.

mod common;
#[path = "common/platform_a.rs"]
mod platform_a;

use std::time::Duration;

use common::{Api, Env, Opts};
use paybridge::sandbox::v3::V3Notify;
use paybridge::store::{OrderStatus, RefundStatus, Verdict};
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

/// A refund that ends CLOSED frees its amount and tells A.
#[tokio::test]
async fn a_failed_refund_releases_its_amount() {
    let receiver = Receiver::start(KEY).await;
    let env = start(V3, &receiver).await;
    let no = paid_order(&env, "A-REFUND-F", 500).await;
    env.sim.simulator.v3().queue_refund_outcomes(["CLOSED"]);
    let (status, _) = platform_refund(&env, &no, "RF-F-1", 500).await;
    assert_eq!(status, 201);
    env.refunds_settled(&no).await;
    let o = env.stored_order(&no);
    assert_eq!((o.status, o.refunded_fee, o.refund_pending_fee), (OrderStatus::Paid, 0, 0));
    let hooks = receiver.wait_for(2).await;
    assert_eq!(
        (hooks[1].body["type"].as_str(), hooks[1].body["refund"]["status"].as_str()),
        (Some("refund.failed"), Some("CLOSED"))
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
    assert_eq!((status, body["error"]["code"].as_str()), (502, Some("REFUND_REFUSED")), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("client_cert_file") && !message.contains("outTradeNo"), "{body}");
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

/// One refund pass as the lifecycle makes it from `Payments::refunds_to_query`
/// (see the one-line change in the branch's report), `ahead` on the clock:
/// every refund due then, one step each. The background lifecycle's clock is
/// not moved, so it does not step these refunds itself.
async fn refund_pass(env: &Env, ahead: Duration) -> Vec<&'static str> {
    let now = paybridge::pay::now_ms() + ahead.as_millis() as i64;
    let due = env.app.payments.refunds_to_query(now, 10_000).await.unwrap();
    let mut steps = Vec::new();
    for refund in &due {
        steps.push(env.app.payments.refund_step(refund).await.unwrap());
    }
    steps
}

/// The stored refund with this number.
fn stored_refund(env: &Env, out_refund_no: &str) -> paybridge::store::Refund {
    env.app.store.refund(out_refund_no).unwrap().unwrap()
}

/// Waits until the refund is `status`.
async fn wait_refund(env: &Env, out_refund_no: &str, status: RefundStatus) -> paybridge::store::Refund {
    for _ in 0..500 {
        let refund = stored_refund(env, out_refund_no);
        if refund.status == status {
            return refund;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{out_refund_no} never became {status:?}: {:?}", stored_refund(env, out_refund_no));
}

/// Refusals WeChat documents as final, in both versions: the refund ends
/// FAILED at once, A is told `refund.failed`, the reply quotes WeChat's code
/// (and speaks of refunds, not orders), and the full amount can be refunded
/// again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_definitive_refusal_ends_failed_and_frees_the_amount() {
    refused(V3, common::ClientCert::None, "USER_ACCOUNT_ABNORMAL", "用户账户异常").await;
    refused(V3, common::ClientCert::None, "INVALID_REQUEST", "请求参数符合参数格式，但不符合业务规则").await;
    refused(Api::V2, common::ClientCert::Pem, "TRADE_OVERDUE", "订单已经超过退款期限").await;
    refused(Api::V2, common::ClientCert::Pem, "ERROR", &"退款失败".repeat(40)).await;
}

async fn refused(api: Api, client_cert: common::ClientCert, code: &str, description: &str) {
    let receiver = Receiver::start(KEY).await;
    let env = start_with(api, client_cert, &receiver).await;
    let sim = env.sim.simulator.v3();
    let no = paid_order(&env, &format!("A-REFUSED-{code}"), 700).await;
    receiver.wait_for(1).await;
    sim.queue_refund_errors([(code, description)]);
    let (status, body) = platform_refund(&env, &no, "RF-REFUSED-1", 700).await;
    assert_eq!((status, body["error"]["code"].as_str()), (502, Some("REFUND_REFUSED")), "{code}: {body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(code) && !message.contains("outTradeNo"), "{message}");
    // WeChat's words are quoted, at most 100 characters of them.
    assert!(message.chars().count() < 260, "{message}");
    let o = env.stored_order(&no);
    assert_eq!((o.status, o.refunded_fee, o.refund_pending_fee), (OrderStatus::Paid, 0, 0), "{code}");
    let refunds = env.app.store.refunds_for_order(&no).unwrap();
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].status, RefundStatus::Failed);
    assert!(refunds[0].last_result.as_deref().unwrap().contains(code));
    assert!(env.app.payments.refunds_to_query(i64::MAX, 10).await.unwrap().is_empty(), "not asked about again");
    let hooks = receiver.wait_for(2).await;
    assert_eq!(
        (hooks[1].body["type"].as_str(), hooks[1].body["refund"]["status"].as_str()),
        (Some("refund.failed"), Some("FAILED")),
        "{code}"
    );
    // The same request again is the same (failed) refund; a new one for the full amount goes through.
    let (status, again) = platform_refund(&env, &no, "RF-REFUSED-1", 700).await;
    assert_eq!((status, again["status"].as_str()), (200, Some("FAILED")), "{again}");
    let (status, second) = platform_refund(&env, &no, "RF-REFUSED-2", 700).await;
    assert_eq!(status, 201, "{second}");
    env.refunds_settled(&no).await;
    let o = env.stored_order(&no);
    assert_eq!((o.status, o.refunded_fee), (OrderStatus::Refunded, 700), "{code}");
    assert_eq!(sim.refund_requests().len(), 2, "one refused, one accepted");
    env.stop().await;
}

/// A code PayBridge does not know: the refund stays PROCESSING, reserved,
/// and is tried again under the same number after 1, 2, 4 … minutes, not
/// sooner; after three tries the admin page shows it as needing a look;
/// once WeChat takes it, it ends as usual.
#[tokio::test]
async fn an_unknown_code_is_retried_with_back_off_then_flagged() {
    let receiver = Receiver::start(KEY).await;
    let env = start(V3, &receiver).await;
    let sim = env.sim.simulator.v3();
    let no = paid_order(&env, "A-REFUND-UNKNOWN", 400).await;
    let odd = ("SOMETHING_WECHAT_ADDED", "新的错误");
    sim.queue_refund_errors([odd, odd, odd]);
    let (status, refund) = platform_refund(&env, &no, "RF-UNKNOWN-1", 400).await;
    assert_eq!((status, refund["status"].as_str()), (201, Some("PROCESSING")), "{refund}");
    let number = refund["outRefundNo"].as_str().unwrap().to_owned();
    assert_eq!(stored_refund(&env, &number).tries, 1);
    assert_eq!(env.stored_order(&no).refund_pending_fee, 400, "still reserved");

    let minute = |n: u64| Duration::from_secs(n * 60 + 1);
    assert_eq!(refund_pass(&env, Duration::from_secs(30)).await, Vec::<&str>::new(), "not before a minute");
    assert_eq!(refund_pass(&env, minute(1)).await, ["refund_resent"], "asked, not found, sent again");
    assert_eq!(stored_refund(&env, &number).tries, 2);
    assert_eq!(refund_pass(&env, minute(2)).await, Vec::<&str>::new(), "the next try waits two minutes");
    assert_eq!(refund_pass(&env, minute(3)).await, ["refund_resent"]);
    let flagged = stored_refund(&env, &number);
    assert_eq!((flagged.status, flagged.tries), (RefundStatus::Processing, 3));
    assert!(flagged.last_result.as_deref().unwrap().contains("SOMETHING_WECHAT_ADDED"), "{flagged:?}");
    let admin = common::login(&env).await;
    let (_, detail) = admin.get(&format!("/admin/api/orders/{no}")).await;
    assert_eq!(
        (detail["refunds"][0]["needsLook"].as_bool(), detail["refunds"][0]["tries"].as_u64()),
        (Some(true), Some(3))
    );
    assert_eq!(refund_pass(&env, minute(6)).await, Vec::<&str>::new(), "then four minutes");
    assert_eq!(refund_pass(&env, minute(7)).await, ["refund_resent"], "WeChat takes it now");
    wait_refund(&env, &number, RefundStatus::Success).await;
    assert_eq!(env.stored_order(&no).status, OrderStatus::Refunded);
    assert_eq!(sim.refund_requests(), vec![number.clone(); 4], "always the same number");
    assert_eq!(sim.refunded(&no), 400);
    let (_, detail) = admin.get(&format!("/admin/api/orders/{no}")).await;
    assert_eq!(detail["refunds"][0]["needsLook"].as_bool(), Some(false));
    env.stop().await;
}

/// SYSTEM_ERROR from WeChat's refund knob: documented as retryable, so the
/// refund stays PROCESSING, and the next pass asks, finds WeChat never got
/// it, and sends it again under the same number.
#[tokio::test]
async fn system_error_stays_processing_and_is_resent_under_the_same_number() {
    let receiver = Receiver::start(KEY).await;
    let env = start(V3, &receiver).await;
    let sim = env.sim.simulator.v3();
    let no = paid_order(&env, "A-REFUND-SYS", 300).await;
    sim.queue_refund_errors([("SYSTEM_ERROR", "系统错误")]);
    let (status, refund) = platform_refund(&env, &no, "RF-SYS-1", 300).await;
    assert_eq!((status, refund["status"].as_str()), (201, Some("PROCESSING")), "{refund}");
    let number = refund["outRefundNo"].as_str().unwrap().to_owned();
    assert_eq!(refund_pass(&env, Duration::from_secs(61)).await, ["refund_resent"]);
    wait_refund(&env, &number, RefundStatus::Success).await;
    assert_eq!(sim.refund_requests(), [number.clone(), number]);
    assert_eq!(env.stored_order(&no).status, OrderStatus::Refunded);
    env.stop().await;
}

/// ABNORMAL, then the merchant completes the refund in the merchant
/// platform and WeChat notifies REFUND.SUCCESS: the refund ends SUCCESS,
/// the order is refunded and A hears `order.refunded` (and never a
/// `refund.failed` before it). Meanwhile the amount stays reserved and the
/// admin page flags it.
#[tokio::test]
async fn abnormal_then_success_by_notify_refunds() {
    let receiver = Receiver::start(KEY).await;
    let env = start(V3, &receiver).await;
    let sim = env.sim.simulator.v3();
    let no = paid_order(&env, "A-REFUND-AB-N", 900).await;
    receiver.wait_for(1).await;
    sim.queue_refund_outcomes(["ABNORMAL"]);
    let (status, refund) = platform_refund(&env, &no, "RF-AB-N-1", 900).await;
    assert_eq!(status, 201, "{refund}");
    let number = refund["outRefundNo"].as_str().unwrap().to_owned();
    let abnormal = wait_refund(&env, &number, RefundStatus::Abnormal).await;
    assert!(abnormal.next_query_at >= paybridge::pay::now_ms() + 59 * 60_000, "hourly: {abnormal:?}");
    let o = env.stored_order(&no);
    assert_eq!((o.status, o.refunded_fee, o.refund_pending_fee), (OrderStatus::Paid, 0, 900), "still reserved");
    let (status, more) = platform_refund(&env, &no, "RF-AB-N-2", 1).await;
    assert_eq!((status, more["error"]["code"].as_str()), (409, Some("REFUND_EXCEEDS_PAID")), "{more}");
    let admin = common::login(&env).await;
    let (_, detail) = admin.get(&format!("/admin/api/orders/{no}")).await;
    assert_eq!(
        (detail["refunds"][0]["status"].as_str(), detail["refunds"][0]["needsLook"].as_bool()),
        (Some("ABNORMAL"), Some(true))
    );

    assert!(sim.complete_abnormal_refund(&number));
    env.sim.simulator.end_new_refunds();
    wait_refund(&env, &number, RefundStatus::Success).await;
    let o = env.stored_order(&no);
    assert_eq!((o.status, o.refunded_fee, o.refund_pending_fee), (OrderStatus::Refunded, 900, 0));
    let hooks = receiver.wait_for(2).await;
    let types: Vec<_> = hooks.iter().map(|h| h.body["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(types, ["order.paid", "order.refunded"]);
    assert_eq!(hooks[1].body["order"]["refundedAmount"], 900);
    assert_eq!(env.wait_notifies(&no, Verdict::Refund, 2).await.len(), 2, "REFUND.ABNORMAL, then REFUND.SUCCESS");
    env.stop().await;
}

/// ABNORMAL, completed in the merchant platform, the SUCCESS notify lost:
/// the hourly query finds it (not the minute one), and it ends as any
/// success.
#[tokio::test]
async fn abnormal_then_success_by_query_refunds() {
    let receiver = Receiver::start(KEY).await;
    let env = start(V3, &receiver).await;
    let sim = env.sim.simulator.v3();
    let no = paid_order(&env, "A-REFUND-AB-Q", 500).await;
    receiver.wait_for(1).await;
    sim.queue_refund_outcomes(["ABNORMAL"]);
    let (_, refund) = platform_refund(&env, &no, "RF-AB-Q-1", 500).await;
    let number = refund["outRefundNo"].as_str().unwrap().to_owned();
    wait_refund(&env, &number, RefundStatus::Abnormal).await;
    // Still ABNORMAL at WeChat an hour on: asked, and asked again an hour later.
    assert_eq!(refund_pass(&env, Duration::from_secs(61)).await, Vec::<&str>::new(), "hourly, not every minute");
    assert_eq!(refund_pass(&env, Duration::from_secs(3601)).await, ["refund_abnormal"]);
    assert_eq!(refund_pass(&env, Duration::from_secs(3700)).await, Vec::<&str>::new());

    env.sim.simulator.lose_refund_notifies(true);
    assert!(sim.complete_abnormal_refund(&number));
    env.sim.simulator.end_new_refunds();
    assert_eq!(sim.refund_status(&number), Some("SUCCESS"));
    assert_eq!(stored_refund(&env, &number).status, RefundStatus::Abnormal, "the notify was lost");
    assert_eq!(refund_pass(&env, Duration::from_secs(2 * 3600 + 1)).await, ["refund_ended"]);
    let o = env.stored_order(&no);
    assert_eq!((o.status, o.refunded_fee, o.refund_pending_fee), (OrderStatus::Refunded, 500, 0));
    let hooks = receiver.wait_for(2).await;
    assert_eq!(hooks[1].body["type"], "order.refunded");
    env.stop().await;
}

/// WeChat counts a refund's reason in bytes (80): 27 Chinese characters (81
/// bytes) are refused with a 400 before anything is sent; 26 and two
/// letters (80 bytes) go through.
#[tokio::test]
async fn a_reason_over_80_bytes_is_refused_before_wechat() {
    let receiver = Receiver::start(KEY).await;
    let env = start(V3, &receiver).await;
    let sim = env.sim.simulator.v3();
    let no = paid_order(&env, "A-REFUND-REASON", 200).await;
    let backend = Backend::new(&env.base);
    let ask = |id: &str, reason: String| {
        let body = json!({ "refundId": id, "amount": 100, "reason": reason }).to_string();
        let path = format!("/platform/v1/orders/{no}/refunds");
        let backend = &backend;
        async move { backend.call("POST", &path, body.as_bytes()).await }
    };
    let too_long = "退".repeat(27);
    assert_eq!(too_long.len(), 81);
    let (status, body) = ask("RF-REASON-1", too_long).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("INVALID_REQUEST")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("81 bytes"), "{body}");
    assert!(sim.refund_requests().is_empty(), "nothing reached WeChat");
    assert!(env.app.store.refunds_for_order(&no).unwrap().is_empty(), "nothing recorded");
    assert_eq!(env.stored_order(&no).refund_pending_fee, 0);
    // The admin page says the same.
    let admin = common::login(&env).await;
    let url = format!("{}/admin/api/orders/{no}/refunds", env.base);
    let r = admin
        .http
        .post(&url)
        .header("x-csrf-token", &admin.csrf)
        .json(&json!({ "amount": 1, "reason": "退".repeat(27) }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(sim.refund_requests().is_empty());

    let longest = format!("{}ab", "退".repeat(26));
    assert_eq!(longest.len(), 80);
    let (status, body) = ask("RF-REASON-2", longest).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(sim.refund_requests().len(), 1);
    env.refunds_settled(&no).await;
    assert_eq!(env.stored_order(&no).refunded_fee, 100);
    env.stop().await;
}

/// An ABNORMAL refund nobody completes is watched for a year (WeChat's
/// refund window); then its amount is released and A told `refund.failed`.
#[tokio::test]
async fn an_abnormal_refund_is_given_up_after_its_window() {
    let receiver = Receiver::start(KEY).await;
    let env = start(V3, &receiver).await;
    let no = paid_order(&env, "A-REFUND-AB-Y", 300).await;
    receiver.wait_for(1).await;
    env.sim.simulator.v3().queue_refund_outcomes(["ABNORMAL"]);
    let (_, refund) = platform_refund(&env, &no, "RF-AB-Y-1", 300).await;
    let number = refund["outRefundNo"].as_str().unwrap().to_owned();
    wait_refund(&env, &number, RefundStatus::Abnormal).await;
    let day = 86_400;
    assert_eq!(refund_pass(&env, Duration::from_secs(364 * day)).await, ["refund_abnormal"], "within the window");
    assert_eq!(refund_pass(&env, Duration::from_secs(366 * day)).await, ["refund_given_up"]);
    let o = env.stored_order(&no);
    assert_eq!((o.status, o.refunded_fee, o.refund_pending_fee), (OrderStatus::Paid, 0, 0));
    assert!(env.app.payments.refunds_to_query(i64::MAX, 10).await.unwrap().is_empty(), "no longer watched");
    let hooks = receiver.wait_for(2).await;
    assert_eq!(
        (hooks[1].body["type"].as_str(), hooks[1].body["refund"]["status"].as_str()),
        (Some("refund.failed"), Some("ABNORMAL"))
    );
    assert!(stored_refund(&env, &number).last_result.unwrap().contains("given up"));
    env.stop().await;
}
