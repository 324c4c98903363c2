//! Platform A → B → A against the real server, real sled and the simulator:
//! orders created through the signed platform API and from order tokens,
//! paid by mini-program B at the signed amount, and the result back to A by
//! a signed webhook and a signed `extraData` result.

mod common;
#[path = "common/platform_a.rs"]
mod platform_a;
#[path = "common/process.rs"]
mod process;

use std::time::Duration;

use common::{Env, Opts};
use paybridge::platform::token::{self, TokenClaims};
use paybridge::secret::Secret;
use paybridge::store::{DeliveryState, OrderSource, OrderStatus};
use platform_a::{Backend, Receiver, KEY, PLATFORM};
use serde_json::{json, Value};

fn opts(webhook: &str, accept_client_amount: bool) -> Opts {
    Opts { accept_client_amount, extra: platform_a::platform_toml(PLATFORM, KEY, webhook), ..Opts::default() }
}

/// Mini-program B pays an order by number or token: login, unifiedOrder,
/// the user pays in the simulator, and B reads the result for A.
async fn b_pays(env: &Env, order: Value, code: &str) -> (String, Value) {
    let openid = env.openid(code).await;
    b_pays_as(env, order, &openid).await
}

/// [`b_pays`] by a user already logged in.
async fn b_pays_as(env: &Env, order: Value, openid: &str) -> (String, Value) {
    let mut body = order;
    body["openid"] = json!(openid);
    let (status, reply) = env.post_json("/pay/unifiedOrder", &body).await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply["paySign"].is_string());
    let no = reply["outTradeNo"].as_str().unwrap().to_owned();
    env.sim_pay(json!({ "out_trade_no": no })).await;
    env.wait_acknowledged(&no).await;
    let (status, view) = env.get(&format!("/pay/orders/{no}?token={}", reply["orderToken"].as_str().unwrap())).await;
    assert_eq!(status, 200, "{view}");
    (no, view)
}

/// The whole flow with a platform order: A creates it, B pays exactly that
/// amount, A gets a verified webhook, reads the order, sees it in the
/// change feed, and can verify the result B hands back.
#[tokio::test]
async fn platform_order_from_a_to_b_and_back() {
    let receiver = Receiver::start(KEY).await;
    let env = Env::start(opts(&receiver.url(), false)).await;
    let a = Backend::new(&env.base);

    let (status, created) = a.create("A-1001", 1990, "VIP month").await;
    assert_eq!(status, 201, "{created}");
    let no = created["outTradeNo"].as_str().unwrap().to_owned();
    assert_eq!((created["amount"].as_u64(), created["status"].as_str()), (Some(1990), Some("CREATED")));
    // The same request again is the same order; other contents are refused.
    let (status, again) = a.create("A-1001", 1990, "VIP month").await;
    assert_eq!((status, again["outTradeNo"].as_str()), (200, Some(no.as_str())));
    let (status, conflict) = a.create("A-1001", 1, "VIP month").await;
    assert_eq!((status, conflict["error"]["code"].as_str()), (409, Some("ORDER_CONFLICT")), "{conflict}");

    // B may not change the amount, with or without the unsafe switch.
    let openid = env.openid("platform-payer").await;
    let cheap = json!({ "outTradeNo": no, "openid": openid, "totalFee": 1, "body": "x" });
    let (status, refused) = env.post_json("/pay/unifiedOrder", &cheap).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("AMOUNT_MISMATCH")), "{refused}");

    let (paid_no, view) = b_pays(&env, json!({ "outTradeNo": no, "totalFee": 1990 }), "platform-payer-2").await;
    assert_eq!(paid_no, no);
    assert_eq!(view["status"], "PAID");
    assert_eq!(env.sim.simulator.report(&no).unwrap().total_fee, 1990, "WeChat charged the signed amount");

    // The webhook: verified, de-duplicable, complete.
    let hooks = receiver.wait_for(1).await;
    let hook = &hooks[0];
    assert!(hook.verified, "{hook:?}");
    assert_eq!(hook.body["type"], "order.paid");
    assert_eq!(hook.body["id"].as_str(), Some(hook.event_id.as_str()));
    assert_eq!(hook.body["order"]["orderId"], "A-1001");
    assert_eq!(hook.body["order"]["outTradeNo"], no.as_str());
    assert_eq!(hook.body["order"]["amount"], 1990);
    assert!(hook.body["order"]["transactionId"].as_str().unwrap().starts_with("4200"));

    // The extraData result B gives back verifies under A's key.
    let result = token::verify_result(&Secret::new(KEY), view["result"].as_str().unwrap()).unwrap();
    assert_eq!((result.order_id.as_str(), result.status.as_str(), result.amount), ("A-1001", "PAID", 1990));
    assert!(token::verify_result(&Secret::new("x".repeat(40)), view["result"].as_str().unwrap()).is_none());

    // A reads it back, by either number, and in the change feed.
    let (status, read) = a.call("GET", &format!("/platform/v1/orders/{no}"), b"").await;
    assert_eq!((status, read["status"].as_str()), (200, Some("PAID")), "{read}");
    let (status, by_id) = a.call("GET", "/platform/v1/orders?orderId=A-1001", b"").await;
    assert_eq!((status, by_id["outTradeNo"].as_str()), (200, Some(no.as_str())));
    let (status, feed) = a.call("GET", "/platform/v1/changes?after=0&limit=10", b"").await;
    assert_eq!(status, 200, "{feed}");
    let items = feed["items"].as_array().unwrap();
    assert!(items.iter().all(|o| o["outTradeNo"] == no.as_str() && o["status"] == "PAID"), "{feed}");
    assert_eq!(items.len(), 3, "created, prepaid, paid: {feed}");
    let (_, rest) = a.call("GET", &format!("/platform/v1/changes?after={}", feed["next"].as_str().unwrap()), b"").await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 0);
    assert_eq!(rest["next"], feed["next"], "an empty page keeps the cursor");

    let order = env.app.store.order(&no).unwrap().unwrap();
    assert_eq!(order.source, OrderSource::Platform { platform: PLATFORM.into(), order_id: "A-1001".into() });
    // The merchant finds it by A's id too (A's support asks about "A-1001").
    let admin = common::login(&env).await;
    let (status, found) = admin.get("/admin/api/orders?q=A-1001").await;
    assert_eq!(status, 200);
    assert_eq!(found["items"][0]["outTradeNo"], no.as_str(), "{found}");
    env.stop().await;
}

/// Nobody can read or close another platform's order, and a closed order
/// cannot be paid: WeChat is told first, then A by webhook.
#[tokio::test]
async fn close_and_isolation() {
    let receiver = Receiver::start(KEY).await;
    let mut o = opts(&receiver.url(), false);
    o.extra += &platform_a::platform_toml("shop-b", "shop-b-key-shop-b-key-shop-b-key-0000", &receiver.url());
    let env = Env::start(o).await;
    let a = Backend::new(&env.base);
    let b = Backend { platform: "shop-b".into(), key: "shop-b-key-shop-b-key-shop-b-key-0000".into(), ..a.clone() };

    let (_, created) = a.create("A-2001", 500, "Ticket").await;
    let no = created["outTradeNo"].as_str().unwrap().to_owned();
    let (status, _) = b.call("GET", &format!("/platform/v1/orders/{no}"), b"").await;
    assert_eq!(status, 404, "another platform's order looks missing");
    let (status, _) = b.call("POST", &format!("/platform/v1/orders/{no}/close"), b"").await;
    assert_eq!(status, 404);

    // B got a prepay; A closes; the simulator's order is closed too.
    let openid = env.openid("closer").await;
    let (status, prepaid) = env.post_json("/pay/unifiedOrder", &json!({ "outTradeNo": no, "openid": openid })).await;
    assert_eq!(status, 200);
    // A receipt means paid: the payer of an unpaid order gets none to hand back.
    let view_path = format!("/pay/orders/{no}?token={}", prepaid["orderToken"].as_str().unwrap());
    let (status, view) = env.get(&view_path).await;
    assert_eq!((status, view["status"].as_str()), (200, Some("PREPAID")), "{view}");
    assert!(view.get("result").is_none(), "no signed result for an unpaid order: {view}");
    let (status, closed) = a.call("POST", &format!("/platform/v1/orders/{no}/close"), b"").await;
    assert_eq!((status, closed["status"].as_str()), (200, Some("CLOSED")), "{closed}");
    let (status, view) = env.get(&view_path).await;
    assert_eq!((status, view["status"].as_str()), (200, Some("CLOSED")), "{view}");
    assert!(view.get("result").is_none(), "no signed result for a closed order: {view}");
    let paying = env.http.post(format!("{}/sandbox/pay", env.sim.url())).json(&json!({ "out_trade_no": no }));
    assert_ne!(paying.send().await.unwrap().status(), 200, "WeChat refuses to pay a closed order");
    let (status, again) = env.post_json("/pay/unifiedOrder", &json!({ "outTradeNo": no, "openid": openid })).await;
    assert_eq!((status, again["error"]["code"].as_str()), (409, Some("ORDER_CLOSED")));
    let hooks = receiver.wait_for(1).await;
    assert_eq!((hooks[0].body["type"].as_str(), hooks[0].verified), (Some("order.closed"), true));
    env.stop().await;
}

/// The same order cannot be paid by two WeChat users, nor after it expired.
#[tokio::test]
async fn first_payer_keeps_the_order_and_expiry_holds() {
    let env = Env::start(opts("http://127.0.0.1:9/unused", false)).await;
    let a = Backend::new(&env.base);
    let (_, created) = a.create("A-3001", 100, "Coffee").await;
    let no = created["outTradeNo"].as_str().unwrap();
    let first = env.openid("first").await;
    let second = env.openid("second").await;
    assert_eq!(env.post_json("/pay/unifiedOrder", &json!({ "outTradeNo": no, "openid": first })).await.0, 200);
    let (status, taken) = env.post_json("/pay/unifiedOrder", &json!({ "outTradeNo": no, "openid": second })).await;
    assert_eq!((status, taken["error"]["code"].as_str()), (409, Some("ORDER_TAKEN")));
    assert_eq!(env.app.store.order(no).unwrap().unwrap().openid, first);

    let body = json!({ "orderId": "A-3002", "amount": 100, "description": "Coffee", "expiresIn": 30 });
    let (status, short) = a.call("POST", "/platform/v1/orders", body.to_string().as_bytes()).await;
    assert_eq!((status, short["error"]["code"].as_str()), (400, Some("INVALID_REQUEST")), "{short}");
    // A token whose expiry passed is refused, nothing created.
    let claims = TokenClaims {
        platform: PLATFORM.into(),
        order_id: "A-3003".into(),
        amount: 100,
        description: "Coffee".into(),
        attach: String::new(),
        expires_at: platform_a::now_secs() - 1,
        nonce: platform_a::nonce(),
    };
    let expired = token::sign(&Secret::new(KEY), &claims);
    let (status, refused) = env.post_json("/pay/unifiedOrder", &json!({ "token": expired, "openid": first })).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (400, Some("INVALID_ORDER_TOKEN")), "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("expired"));
    assert!(env.app.store.platform_order(PLATFORM, "A-3003").unwrap().is_none());
    env.stop().await;
}

fn claims(order_id: &str, amount: u64) -> TokenClaims {
    TokenClaims {
        platform: PLATFORM.into(),
        order_id: order_id.into(),
        amount,
        description: "Game pass".into(),
        attach: "from-a".into(),
        expires_at: platform_a::now_secs() + 600,
        nonce: platform_a::nonce(),
    }
}

/// The whole flow with an order token: no server call from A first.
#[tokio::test]
async fn token_order_from_a_to_b_and_back() {
    let receiver = Receiver::start(KEY).await;
    let env = Env::start(opts(&receiver.url(), false)).await;
    let signed = token::sign(&Secret::new(KEY), &claims("A-4001", 2500));

    // The same token twice is one order (a repeated tap).
    let openid = env.openid("token-payer").await;
    let (status, first) = env.post_json("/pay/unifiedOrder", &json!({ "token": signed, "openid": openid })).await;
    assert_eq!(status, 200, "{first}");
    let (status, second) = env.post_json("/pay/unifiedOrder", &json!({ "token": signed, "openid": openid })).await;
    assert_eq!((status, &second["outTradeNo"]), (200, &first["outTradeNo"]));
    // The same order id, other contents: refused. A client amount: refused.
    let other = token::sign(&Secret::new(KEY), &claims("A-4001", 1));
    let (status, refused) = env.post_json("/pay/unifiedOrder", &json!({ "token": other, "openid": openid })).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("ORDER_CONFLICT")), "{refused}");
    let with_fee = json!({ "token": signed, "openid": openid, "totalFee": 1 });
    assert_eq!(env.post_json("/pay/unifiedOrder", &with_fee).await.0, 409);

    let (no, view) = b_pays_as(&env, json!({ "token": signed }), &openid).await;
    assert_eq!(no, first["outTradeNo"].as_str().unwrap());
    assert_eq!(env.sim.simulator.report(&no).unwrap().total_fee, 2500);
    let result = token::verify_result(&Secret::new(KEY), view["result"].as_str().unwrap()).unwrap();
    assert_eq!((result.order_id.as_str(), result.status.as_str()), ("A-4001", "PAID"));
    let hooks = receiver.wait_for(1).await;
    assert!(hooks[0].verified);
    assert_eq!(hooks[0].body["order"]["orderId"], "A-4001");
    let order = env.app.store.order(&no).unwrap().unwrap();
    assert_eq!(order.source, OrderSource::Token { platform: PLATFORM.into(), order_id: "A-4001".into() });
    assert_eq!(order.attach, "from-a");

    // Tampered and foreign tokens: refused, nothing created.
    let count = env.app.store.order_count().unwrap();
    let (payload, _) = signed.rsplit_once('.').unwrap();
    let tampered = format!("{payload}.{}", "0".repeat(64));
    let foreign = token::sign(&Secret::new("someone-else-key-someone-else-key"), &claims("A-4002", 1));
    for bad in [tampered, foreign, "pbt1.nonsense".into()] {
        let (status, refused) = env.post_json("/pay/unifiedOrder", &json!({ "token": bad, "openid": openid })).await;
        assert_eq!((status, refused["error"]["code"].as_str()), (400, Some("INVALID_ORDER_TOKEN")), "{refused}");
    }
    assert_eq!(env.app.store.order_count().unwrap(), count);
    env.stop().await;
}

/// `accept_client_amount = false` refuses client amounts and nothing else.
#[tokio::test]
async fn safe_default_refuses_only_client_amounts() {
    let mut o = opts("http://127.0.0.1:9/x", false);
    o.extra += "[[products]]\nid = \"demo\"\nname = \"Demo\"\nprice = 1\n";
    let env = Env::start(o).await;
    let openid = env.openid("policy").await;
    let (status, refused) = env.order("CLIENT0001", 1, &openid).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (403, Some("CLIENT_AMOUNT_NOT_ALLOWED")));
    let product = json!({ "outTradeNo": "PRODUCT001", "productId": "demo", "openid": openid });
    assert_eq!(env.post_json("/pay/unifiedOrder", &product).await.0, 200);
    let a = Backend::new(&env.base);
    let (_, created) = a.create("A-5001", 300, "Platform order").await;
    let platform = json!({ "outTradeNo": created["outTradeNo"], "openid": openid });
    assert_eq!(env.post_json("/pay/unifiedOrder", &platform).await.0, 200);
    let token = token::sign(&Secret::new(KEY), &claims("A-5002", 300));
    assert_eq!(env.post_json("/pay/unifiedOrder", &json!({ "token": token, "openid": openid })).await.0, 200);
    env.stop().await;
}

/// Every way a request can fail authentication: refused with a reason,
/// nothing created; a nonce stays used across a restart.
#[tokio::test]
async fn refusals_say_why_and_create_nothing() {
    let env = Env::start(opts("http://127.0.0.1:9/x", false)).await;
    let a = Backend::new(&env.base);
    let body = br#"{"orderId":"A-6001","amount":100,"description":"x"}"#;
    let path = "/platform/v1/orders";
    let now = platform_a::now_secs();

    let check = |(status, reply): (u16, Value), code: &str, words: &str| {
        assert_eq!((status, reply["error"]["code"].as_str()), (401, Some(code)), "{reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{message}");
        assert!(!message.contains(KEY));
    };
    check(a.raw("POST", path, body, &[]).await, "AUTH_HEADERS_INVALID", "PayBridge-Platform");
    let stranger = Backend { platform: "shop-z".into(), ..a.clone() };
    check(stranger.call("POST", path, body).await, "UNKNOWN_PLATFORM", "shop-z");
    let wrong_key = Backend { key: "not-the-key-not-the-key-not-the-key".into(), ..a.clone() };
    check(wrong_key.call("POST", path, body).await, "SIGNATURE_MISMATCH", "signature");
    check(a.call_with("POST", path, body, now - 600, &platform_a::nonce()).await, "TIMESTAMP_OUT_OF_WINDOW", "clock");
    check(a.call_with("POST", path, body, now, "short").await, "AUTH_HEADERS_INVALID", "Nonce");
    // Signed for another body or path: refused.
    let nonce = platform_a::nonce();
    let signature = platform_a::sign(KEY, "POST", path, now, &nonce, b"{}");
    let headers = [
        ("PayBridge-Platform", PLATFORM),
        ("PayBridge-Timestamp", &now.to_string()),
        ("PayBridge-Nonce", &nonce),
        ("PayBridge-Signature", &signature),
    ];
    check(a.raw("POST", path, body, &headers).await, "SIGNATURE_MISMATCH", "signature");
    assert_eq!(env.app.store.order_count().unwrap(), 0);

    // A replay: the first use works, the second is refused, also after a restart.
    let nonce = platform_a::nonce();
    assert_eq!(a.call_with("POST", path, body, now, &nonce).await.0, 201);
    check(a.call_with("POST", path, body, now, &nonce).await, "NONCE_REUSED", "nonce");
    assert_eq!(env.app.metrics.refused_count("platform_auth"), 7, "each refusal counted");
    let env = env.restart().await;
    let a = Backend::new(&env.base);
    check(a.call_with("POST", path, body, now, &nonce).await, "NONCE_REUSED", "nonce");

    // Oversized and malformed bodies, signed or not: clear errors.
    let big = vec![b' '; 17 * 1024];
    let (status, reply) = a.call("POST", path, &big).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (413, Some("BODY_TOO_LARGE")));
    for (bad, words) in [
        (&br#"{"orderId":"A-6002","amount":1.5,"description":"x"}"#[..], "amount"),
        (br#"{"orderId":"A-6002","amount":100,"description":"x","totalFee":1}"#, "totalFee"),
        (br#"[1]"#, "JSON object"),
        (br#"{"orderId":"A 6002","amount":100,"description":"x"}"#, "orderId"),
        (br#"{"orderId":"A-6002","amount":0,"description":"x"}"#, "amount"),
    ] {
        let (status, reply) = a.call("POST", path, bad).await;
        assert_eq!(status, 400, "{reply}");
        assert!(reply["error"]["message"].as_str().unwrap().contains(words), "{reply}");
    }
    let (status, reply) = a.call("GET", "/platform/v1/changes?limit=1000", b"").await;
    assert_eq!((status, reply["error"]["code"].as_str()), (400, Some("INVALID_REQUEST")), "{reply}");
    assert_eq!(env.app.store.order_count().unwrap(), 1);
    env.stop().await;
}

/// A receiver answering 500 is retried on WeChat's schedule (the clock is
/// moved, not slept through), then the delivery is FAILED; a re-send from
/// the admin page delivers it once the receiver is fixed.
#[tokio::test]
async fn failing_receiver_is_retried_on_schedule() {
    let receiver = Receiver::start(KEY).await;
    receiver.status.store(500, std::sync::atomic::Ordering::Relaxed);
    let env = Env::start(opts(&receiver.url(), true)).await;
    let a = Backend::new(&env.base);
    let (_, created) = a.create("A-7001", 100, "Retry").await;
    let no = created["outTradeNo"].as_str().unwrap().to_owned();
    // Even with accept_client_amount = true, a platform's amount is the platform's.
    let openid = env.openid("retry-cheap").await;
    let cheap = json!({ "outTradeNo": no, "openid": openid, "totalFee": 1 });
    assert_eq!(env.post_json("/pay/unifiedOrder", &cheap).await.0, 409);
    b_pays_as(&env, json!({ "outTradeNo": no }), &openid).await;
    receiver.wait_for(1).await;
    while env.app.store.deliveries_for_order(&no).unwrap()[0].attempts == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let url = format!("http://{}/metrics", env.app.metrics_addr.unwrap());
    let metrics = env.http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("paybridge_webhooks_pending 1\n"), "{metrics}");
    assert!(metrics.contains("paybridge_webhook_attempts_total{result=\"failed\"} 1\n"), "{metrics}");

    let clock = env.app.webhooks.clock();
    for (attempt, wait) in paybridge::platform::webhook::RETRY_SCHEDULE_SECS.iter().enumerate() {
        // One second short of the wait: nothing is sent.
        clock.advance(Duration::from_secs((*wait - 1) as u64));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(receiver.received().len(), attempt + 1, "early retry before {wait} s");
        clock.advance(Duration::from_secs(1));
        receiver.wait_for(attempt + 2).await;
    }
    let deliveries = wait_delivery_state(&env, &no, DeliveryState::Failed).await;
    assert_eq!(deliveries[0].attempts, 16);
    assert_eq!(deliveries[0].last_result.as_deref(), Some("HTTP 500"));
    let hooks = receiver.received();
    assert!(hooks.iter().all(|h| h.verified && h.event_id == hooks[0].event_id), "one event, the same id every time");

    // Fixed, then re-sent by the merchant (CSRF-protected).
    receiver.status.store(200, std::sync::atomic::Ordering::Relaxed);
    let admin = common::login(&env).await;
    let id = deliveries[0].id;
    let resend = format!("{}/admin/api/deliveries/{id}/resend", env.base);
    assert_eq!(admin.http.post(&resend).send().await.unwrap().status(), 403, "no CSRF token: refused");
    let r = admin.http.post(&resend).header("x-csrf-token", &admin.csrf).send().await.unwrap();
    assert_eq!(r.status(), 200);
    receiver.wait_for(17).await;
    let delivered = wait_delivery_state(&env, &no, DeliveryState::Delivered).await;
    assert_eq!(delivered[0].attempts, 17);
    let metrics = env.http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("paybridge_webhooks_pending 0\n"), "{metrics}");
    let (status, detail) = admin.get(&format!("/admin/api/orders/{no}")).await;
    assert_eq!(status, 200);
    assert_eq!(detail["deliveries"][0]["state"], "DELIVERED", "{detail}");
    assert_eq!(detail["source"], "platform shop-a order A-7001");
    env.stop().await;
}

async fn wait_delivery_state(env: &Env, no: &str, state: DeliveryState) -> Vec<paybridge::store::Delivery> {
    for _ in 0..500 {
        let deliveries = env.app.store.deliveries_for_order(no).unwrap();
        if deliveries.first().is_some_and(|d| d.state == state) {
            return deliveries;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{no}: never {state:?}: {:?}", env.app.store.deliveries_for_order(no).unwrap());
}

/// A receiver that hangs delays only its own platform's events.
#[tokio::test]
async fn a_slow_receiver_delays_nobody_else() {
    let slow = Receiver::start(KEY).await;
    slow.delay_ms.store(60_000, std::sync::atomic::Ordering::Relaxed);
    let fast_key = "fast-platform-key-fast-platform-key-00";
    let fast = Receiver::start(fast_key).await;
    let mut o = opts(&slow.url(), true);
    o.extra += &platform_a::platform_toml("fast", fast_key, &fast.url());
    let env = Env::start(o).await;
    let slow_a = Backend::new(&env.base);
    let fast_a = Backend { platform: "fast".into(), key: fast_key.into(), ..slow_a.clone() };
    let mut orders = Vec::new();
    for i in 0..5 {
        for (a, prefix) in [(&slow_a, "S"), (&fast_a, "F")] {
            let (status, created) = a.create(&format!("{prefix}-{i}"), 100, "x").await;
            assert_eq!(status, 201);
            orders.push(created["outTradeNo"].as_str().unwrap().to_owned());
        }
    }
    for (i, no) in orders.iter().enumerate() {
        b_pays(&env, json!({ "outTradeNo": no }), &format!("slow-{i}")).await;
    }
    let started = std::time::Instant::now();
    let hooks = fast.wait_for(5).await;
    assert!(started.elapsed() < Duration::from_secs(5), "the fast platform waited {:?}", started.elapsed());
    assert!(hooks.iter().all(|h| h.verified && h.body["platform"] == "fast"));
    assert!(slow.received().len() <= 1, "the slow receiver holds its first event");
    let store = &env.app.store;
    assert_eq!(store.order_count().unwrap(), 10);
    assert!(orders.iter().all(|no| store.order(no).unwrap().unwrap().status == OrderStatus::Paid));
    env.stop().await;
}

/// The receiver is down while orders are paid; PayBridge is SIGKILLed,
/// restarted, stopped and started again; then the receiver comes up: every
/// event arrives, verified, and an order's repeats carry one event id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_survive_a_dead_receiver_sigkill_and_restart() {
    use process::Proc;
    let sim = common::start_simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let port = process::free_tcp_port();
    let receiver_addr: std::net::SocketAddr = format!("127.0.0.1:{}", process::free_tcp_port()).parse().unwrap();
    let webhook = format!("http://{receiver_addr}/paybridge/webhook");
    let config = dir.path().join("paybridge.toml");
    let text =
        common::config_text(&dir.path().join("data"), &format!("127.0.0.1:{port}"), &sim.url(), &opts(&webhook, false));
    std::fs::write(&config, text).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let serve = || Proc::spawn(&["serve", "--config", config.to_str().unwrap()], "info");
    let http = reqwest::Client::new();
    let mut order_ids = Vec::new();

    let pay_some = |round: usize| {
        let (base, http, sim_url, sim) = (base.clone(), http.clone(), sim.url(), sim.simulator.clone());
        async move {
            let a = Backend::new(&base);
            let login: Value =
                http.get(format!("{base}/pay/openid?code=crash-{round}")).send().await.unwrap().json().await.unwrap();
            let mut ids = Vec::new();
            for i in 0..10 {
                let id = format!("K{round}-{i}");
                let (status, created) = a.create(&id, 100 + i, "Crash test").await;
                assert_eq!(status, 201, "{created}");
                let body = json!({ "outTradeNo": created["outTradeNo"], "openid": login["openid"] });
                let r = http.post(format!("{base}/pay/unifiedOrder")).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let no = created["outTradeNo"].as_str().unwrap().to_owned();
                let paid = http.post(format!("{sim_url}/sandbox/pay")).json(&json!({ "out_trade_no": no }));
                assert_eq!(paid.send().await.unwrap().status(), 200);
                for _ in 0..500 {
                    if sim.report(&no).unwrap().notify.acknowledged {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                assert!(sim.report(&no).unwrap().notify.acknowledged, "{no} paid");
                ids.push(id);
            }
            ids
        }
    };

    let mut proc = serve();
    proc.line("PayBridge listening on").await;
    order_ids.extend(pay_some(0).await);
    proc.signal("KILL");
    proc.wait().await;

    let mut proc = serve();
    proc.line("PayBridge listening on").await;
    order_ids.extend(pay_some(1).await);
    assert!(proc.terminate().await.success());

    let receiver = Receiver::start_on(KEY, receiver_addr).await;
    let mut proc = serve();
    proc.line("PayBridge listening on").await;
    // The first retries come 15 and 30 seconds after the first failures.
    let mut seen = std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    for _ in 0..900 {
        seen.clear();
        for hook in receiver.received() {
            assert!(hook.verified, "{hook:?}");
            seen.entry(hook.body["order"]["orderId"].as_str().unwrap().to_owned()).or_default().insert(hook.event_id);
        }
        if seen.len() == order_ids.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = proc.logs();
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        {
            let mut ids = order_ids.clone();
            ids.sort();
            ids
        },
        "{logs}"
    );
    assert!(seen.values().all(|ids| ids.len() == 1), "one event id per order: {seen:?}");
    assert!(proc.terminate().await.success());
}

/// Hundreds of clients at once: A's backend retrying one create, B's taps on
/// one token, and 200 platform orders paid together: one order each, one
/// verified webhook per payment, each with its own event id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_concurrent_clients() {
    let receiver = Receiver::start(KEY).await;
    let env = Env::start(Opts { http_extra: "max_connections_per_ip = 2048", ..opts(&receiver.url(), false) }).await;
    let a = Backend::new(&env.base);

    // 200 copies of one create: one order, the others 200 with the same number.
    let creates: Vec<_> = (0..200)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move { a.create("A-SAME", 700, "Same order").await })
        })
        .collect();
    let mut numbers = std::collections::BTreeSet::new();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for c in creates {
        let (status, order) = c.await.unwrap();
        *statuses.entry(status).or_default() += 1;
        numbers.insert(order["outTradeNo"].as_str().unwrap().to_owned());
    }
    assert_eq!(numbers.len(), 1, "{numbers:?}");
    assert_eq!(statuses, [(200, 199), (201, 1)].into(), "one created, the rest repeats");

    // 200 taps on one token by one user: one order, one prepay.
    let openid = env.openid("concurrent-taps").await;
    let signed = token::sign(&Secret::new(KEY), &claims("A-TAPS", 800));
    let taps: Vec<_> = (0..200)
        .map(|_| {
            let (http, base, body) = (env.http.clone(), env.base.clone(), json!({ "token": signed, "openid": openid }));
            tokio::spawn(async move {
                let r = http.post(format!("{base}/pay/unifiedOrder")).json(&body).send().await.unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut prepays = std::collections::BTreeSet::new();
    for t in taps {
        let (status, reply) = t.await.unwrap();
        assert_eq!(status, 200, "{reply}");
        prepays.insert(reply["prepayId"].as_str().unwrap().to_owned());
    }
    assert_eq!(prepays.len(), 1, "one WeChat order for all the taps");
    assert_eq!(env.app.store.order_count().unwrap(), 2);

    // 200 orders created, placed and paid at once.
    let flows: Vec<_> = (0..200)
        .map(|i| {
            let (a, http, base, sim) = (a.clone(), env.http.clone(), env.base.clone(), env.sim.url());
            let openid = openid.clone();
            tokio::spawn(async move {
                let (status, created) = a.create(&format!("A-LOAD-{i}"), 100 + i, "Load").await;
                assert_eq!(status, 201, "{created}");
                let no = created["outTradeNo"].as_str().unwrap().to_owned();
                let body = json!({ "outTradeNo": no, "openid": openid });
                let r = http.post(format!("{base}/pay/unifiedOrder")).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let paid = http.post(format!("{sim}/sandbox/pay")).json(&json!({ "out_trade_no": no }));
                assert_eq!(paid.send().await.unwrap().status(), 200);
                no
            })
        })
        .collect();
    for f in flows {
        f.await.unwrap();
    }
    receiver.wait_for(200).await;
    // A healthy receiver gets each event once: nothing was failed, so nothing is repeated.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hooks = receiver.received();
    assert_eq!(hooks.len(), 200);
    assert!(hooks.iter().all(|h| h.verified && h.body["type"] == "order.paid"));
    let ids: std::collections::BTreeSet<_> = hooks.iter().map(|h| h.event_id.clone()).collect();
    let orders: std::collections::BTreeSet<_> = hooks.iter().map(|h| h.body["order"]["orderId"].to_string()).collect();
    assert_eq!((ids.len(), orders.len()), (200, 200), "one event per payment, each its own id");
    env.stop().await;
}

/// A key rotation: the old key keeps working until its deadline, with no
/// restart (the reload swaps the platforms), and webhooks use the new key.
#[tokio::test]
async fn keys_rotate_without_downtime() {
    let receiver = Receiver::start("the-new-key-the-new-key-the-new-key-00").await;
    let env = Env::start(opts(&receiver.url(), false)).await;
    let old = Backend::new(&env.base);
    assert_eq!(old.create("A-ROT-1", 100, "x").await.0, 201);

    let rotated = |until: &str| {
        let text = format!(
            "{}previous_key = \"{KEY}\"\nprevious_key_until = \"{until}\"\n",
            platform_a::platform_toml(PLATFORM, "the-new-key-the-new-key-the-new-key-00", &receiver.url())
        );
        let config = format!(
            "{}\n{text}",
            common::config_text(env.dir.path(), "127.0.0.1:1", "http://127.0.0.1:1", &Opts::default())
        );
        paybridge::config::Config::from_toml(&config, std::path::Path::new("t.toml"), std::iter::empty())
            .unwrap()
            .platforms
    };
    env.app.payments.set_platforms(rotated("2099-01-01T00:00:00+08:00"));
    let new = Backend { key: "the-new-key-the-new-key-the-new-key-00".into(), ..old.clone() };
    assert_eq!(new.create("A-ROT-2", 100, "x").await.0, 201, "the new key works at once");
    assert_eq!(old.create("A-ROT-3", 100, "x").await.0, 201, "the old one during its grace period");
    env.app.payments.set_platforms(rotated("2020-01-01T00:00:00+08:00"));
    let (status, refused) = old.create("A-ROT-4", 100, "x").await;
    assert_eq!((status, refused["error"]["code"].as_str()), (401, Some("SIGNATURE_MISMATCH")));

    let (_, created) = new.call("GET", "/platform/v1/orders?orderId=A-ROT-2", b"").await;
    b_pays(&env, json!({ "outTradeNo": created["outTradeNo"] }), "rotation").await;
    assert!(receiver.wait_for(1).await[0].verified, "signed with the new key");
    env.stop().await;
}
