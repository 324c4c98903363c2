//! API v2 refunds against the simulator: `/secapi/pay/refund` over mutual
//! TLS with the merchant's certificate (PEM pair or `.p12`), the refund
//! notify's `req_info` decrypted with the API key, a tampered one refused,
//! a lost one found by `refundquery`, and a simulator that refuses a
//! connection without the certificate, as WeChat does.
//!
//! v2's codes: `SYSTEMERROR` keeps the refund PROCESSING and it is sent
//! again under the same number; `CHANGE` (ABNORMAL) is not an end and a
//! later SUCCESS found by `refundquery` refunds; an 81-byte `refund_desc`
//! is refused before WeChat. (Definitive refusals of both versions:
//! `tests/refund.rs`.)

mod common;

use std::time::Duration;

use common::{ClientCert, Env, Opts};
use paybridge::store::{OrderStatus, RefundStatus, Verdict};
use serde_json::{json, Value};

async fn start(client_cert: ClientCert) -> Env {
    Env::start(Opts { client_cert, ..Opts::default() }).await
}

async fn paid(env: &Env, no: &str, fen: u64) {
    let openid = env.openid(&format!("code-{no}")).await;
    assert_eq!(env.order(no, fen, &openid).await.0, 200);
    env.sim_pay(json!({ "out_trade_no": no })).await;
    env.wait_acknowledged(no).await;
}

async fn refund(admin: &common::Admin, no: &str, amount: u64) -> (u16, Value) {
    let url = format!("{}/admin/api/orders/{no}/refunds", admin.base);
    let body = json!({ "amount": amount, "reason": "v2 退款" });
    let r = admin.http.post(&url).header("x-csrf-token", &admin.csrf).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn partial_then_full_refund_over_mutual_tls() {
    let env = start(ClientCert::Pem).await;
    let admin = common::login(&env).await;
    paid(&env, "V2REFUND001", 1000).await;
    let (status, first) = refund(&admin, "V2REFUND001", 300).await;
    // Accepted; its notify may already have ended it by the time PayBridge answers.
    assert_eq!(status, 201, "{first}");
    assert!(matches!(first["status"].as_str(), Some("PROCESSING" | "SUCCESS")), "{first}");
    env.refunds_settled("V2REFUND001").await;
    let o = env.stored_order("V2REFUND001");
    assert_eq!((o.status, o.refunded_fee, o.refund_pending_fee), (OrderStatus::PartiallyRefunded, 300, 0));

    assert_eq!(refund(&admin, "V2REFUND001", 701).await.0, 409, "never more than was paid");
    assert_eq!(refund(&admin, "V2REFUND001", 700).await.0, 201);
    env.refunds_settled("V2REFUND001").await;
    let o = env.stored_order("V2REFUND001");
    assert_eq!((o.status, o.refunded_fee), (OrderStatus::Refunded, 1000));
    assert_eq!(env.sim.simulator.v3().refunded("V2REFUND001"), 1000, "WeChat refunded exactly that");

    // Both ended by v2 refund notifies, decrypted and kept in the log.
    let refunds = env.wait_notifies("V2REFUND001", Verdict::Refund, 2).await;
    assert_eq!(refunds.len(), 2);
    assert!(refunds.iter().all(|n| n.verified && n.resource.is_some() && n.reason.contains("SUCCESS")));
    let refund_ids: Vec<_> =
        env.app.store.refunds_for_order("V2REFUND001").unwrap().into_iter().map(|r| r.refund_id).collect();
    assert!(refund_ids.iter().all(|id| id.as_deref().is_some_and(|id| id.starts_with("50000"))), "{refund_ids:?}");
    env.stop().await;
}

#[tokio::test]
async fn a_tampered_refund_notify_is_refused_and_a_lost_one_is_found_by_refundquery() {
    // The certificate as WeChat hands it out: a .p12 whose password is the mch_id.
    let env = start(ClientCert::P12).await;
    let admin = common::login(&env).await;
    paid(&env, "V2REFUND002", 800).await;
    env.sim.simulator.lose_refund_notifies(true);
    let (status, asked) = refund(&admin, "V2REFUND002", 800).await;
    assert_eq!(status, 201, "{asked}");
    let out_refund_no = asked["outRefundNo"].as_str().unwrap().to_owned();

    // A notify whose req_info was sealed with another key, or altered on the
    // way, changes nothing and is logged with the reason.
    let info = paybridge::wechat::sign::fields([
        ("out_refund_no", out_refund_no.as_str()),
        ("out_trade_no", "V2REFUND002"),
        ("refund_id", "50000000000000000000000000001"),
        ("refund_fee", "800"),
        ("refund_status", "SUCCESS"),
    ]);
    let key = paybridge::secret::Secret::new(common::MCH_KEY);
    let genuine = paybridge::wechat::refund_info::encrypt(&info, &key);
    let forged = paybridge::wechat::refund_info::encrypt(&info, &paybridge::secret::Secret::new("not the key"));
    let mut bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &genuine).unwrap();
    bytes[20] ^= 0x40;
    let altered = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bytes);
    for (what, req_info) in [("another key", forged), ("altered", altered)] {
        let body = format!(
            "<xml><return_code>SUCCESS</return_code><appid>{}</appid><mch_id>{}</mch_id><nonce_str>n</nonce_str>\
             <req_info><![CDATA[{req_info}]]></req_info></xml>",
            common::APPID,
            common::MCH_ID
        );
        let r = env.http.post(format!("{}/pay/notify", env.base)).body(body).send().await.unwrap();
        // v2 answers with HTTP 200 and return_code FAIL, as WeChat expects.
        assert!(r.text().await.unwrap().contains("<return_code><![CDATA[FAIL]]>"), "{what}");
        let record = env.last_notify();
        assert_eq!(record.verdict, Verdict::Rejected, "{what}");
        assert!(record.reason.contains("does not decrypt with this merchant's API key"), "{what}: {}", record.reason);
        let o = env.stored_order("V2REFUND002");
        assert_eq!((o.status, o.refunded_fee, o.refund_pending_fee), (OrderStatus::Paid, 0, 800), "{what}");
    }

    // A minute on, the lifecycle asks WeChat (refundquery) and ends it.
    env.app.lifecycle.clock().advance(Duration::from_secs(61));
    env.app.lifecycle.tick().await.unwrap();
    let o = env.stored_order("V2REFUND002");
    assert_eq!((o.status, o.refunded_fee, o.refund_pending_fee), (OrderStatus::Refunded, 800, 0));
    env.stop().await;
}

/// Like WeChat, the simulator's `/secapi` takes no connection without the
/// merchant's certificate: the TLS handshake fails before any request.
#[tokio::test]
async fn secapi_needs_the_client_certificate() {
    let env = start(ClientCert::Pem).await;
    let tls = env.sim.simulator.merchant_tls();
    let ca = reqwest::Certificate::from_pem(tls.ca_pem.as_bytes()).unwrap();
    let anonymous = reqwest::Client::builder().add_root_certificate(ca.clone()).build().unwrap();
    let url = format!("{}/secapi/pay/refund", env.sim.secapi_url());
    assert!(anonymous.post(&url).body("<xml></xml>").send().await.is_err(), "no certificate, no connection");
    let identity =
        reqwest::Identity::from_pem(format!("{}{}", tls.client_cert_pem, tls.client_key_pem).as_bytes()).unwrap();
    let merchant = reqwest::Client::builder().add_root_certificate(ca).identity(identity).build().unwrap();
    let answer = merchant.post(&url).body("<xml></xml>").send().await.unwrap().text().await.unwrap();
    assert!(answer.contains("FAIL"), "with it, WeChat reads the request (and refuses an unsigned one): {answer}");
    // And the plain API has no /secapi at all.
    let plain = env.http.post(format!("{}/secapi/pay/refund", env.sim.url())).body("<xml></xml>").send().await.unwrap();
    assert_ne!(plain.status(), 200);
    env.stop().await;
}

/// One refund pass as the lifecycle makes it from `Payments::refunds_to_query`,
/// `ahead` on the clock (the background lifecycle's clock is not moved).
async fn refund_pass(env: &Env, ahead: Duration) -> Vec<&'static str> {
    let now = paybridge::pay::now_ms() + ahead.as_millis() as i64;
    let due = env.app.payments.refunds_to_query(now, 10_000).await.unwrap();
    let mut steps = Vec::new();
    for refund in &due {
        steps.push(env.app.payments.refund_step(refund).await.unwrap());
    }
    steps
}

async fn wait_refund(env: &Env, out_refund_no: &str, status: RefundStatus) {
    for _ in 0..500 {
        if env.app.store.refund(out_refund_no).unwrap().unwrap().status == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{out_refund_no} never became {status:?}");
}

#[tokio::test]
async fn systemerror_stays_processing_and_is_resent_under_the_same_number() {
    let env = start(ClientCert::Pem).await;
    let admin = common::login(&env).await;
    let sim = env.sim.simulator.v3();
    paid(&env, "V2REFUND003", 600).await;
    sim.queue_refund_errors([("SYSTEMERROR", "系统超时")]);
    let (status, asked) = refund(&admin, "V2REFUND003", 600).await;
    assert_eq!((status, asked["status"].as_str()), (201, Some("PROCESSING")), "{asked}");
    let number = asked["outRefundNo"].as_str().unwrap().to_owned();
    assert_eq!(env.stored_order("V2REFUND003").refund_pending_fee, 600, "still reserved");
    assert_eq!(refund_pass(&env, Duration::from_secs(30)).await, Vec::<&str>::new());
    // refundquery: REFUNDNOTEXIST, so it is sent again, same number.
    assert_eq!(refund_pass(&env, Duration::from_secs(61)).await, ["refund_resent"]);
    wait_refund(&env, &number, RefundStatus::Success).await;
    assert_eq!(sim.refund_requests(), [number.clone(), number]);
    assert_eq!(env.stored_order("V2REFUND003").status, OrderStatus::Refunded);
    env.stop().await;
}

#[tokio::test]
async fn change_then_success_by_refundquery_refunds() {
    let env = start(ClientCert::Pem).await;
    let admin = common::login(&env).await;
    let sim = env.sim.simulator.v3();
    paid(&env, "V2REFUND004", 500).await;
    sim.queue_refund_outcomes(["ABNORMAL"]);
    let (status, asked) = refund(&admin, "V2REFUND004", 500).await;
    assert_eq!(status, 201, "{asked}");
    let number = asked["outRefundNo"].as_str().unwrap().to_owned();
    // The v2 notify says CHANGE: not an end, the amount stays reserved.
    wait_refund(&env, &number, RefundStatus::Abnormal).await;
    let o = env.stored_order("V2REFUND004");
    assert_eq!((o.status, o.refund_pending_fee), (OrderStatus::Paid, 500));
    env.sim.simulator.lose_refund_notifies(true);
    assert!(sim.complete_abnormal_refund(&number));
    env.sim.simulator.end_new_refunds();
    assert_eq!(refund_pass(&env, Duration::from_secs(61)).await, Vec::<&str>::new(), "hourly");
    assert_eq!(refund_pass(&env, Duration::from_secs(3601)).await, ["refund_ended"]);
    let o = env.stored_order("V2REFUND004");
    assert_eq!((o.status, o.refunded_fee, o.refund_pending_fee), (OrderStatus::Refunded, 500, 0));
    env.stop().await;
}

#[tokio::test]
async fn a_refund_desc_over_80_bytes_is_refused_before_wechat() {
    let env = start(ClientCert::Pem).await;
    let admin = common::login(&env).await;
    paid(&env, "V2REFUND005", 300).await;
    let url = format!("{}/admin/api/orders/V2REFUND005/refunds", admin.base);
    let body = json!({ "amount": 100, "reason": "a".repeat(81) });
    let r = admin.http.post(&url).header("x-csrf-token", &admin.csrf).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let said: Value = r.json().await.unwrap();
    assert!(said["error"]["message"].as_str().unwrap().contains("at most 80 bytes"), "{said}");
    assert!(env.sim.simulator.v3().refund_requests().is_empty(), "nothing reached WeChat");
    let body = json!({ "amount": 100, "reason": "a".repeat(80) });
    let r = admin.http.post(&url).header("x-csrf-token", &admin.csrf).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    env.refunds_settled("V2REFUND005").await;
    assert_eq!(env.stored_order("V2REFUND005").refunded_fee, 100);
    env.stop().await;
}
