//! No flood of junk orders starves the lifecycle: its work comes from the
//! store's due index (what is due, earliest first, prepaid orders in their
//! own queue), and closes, queries and refund queries take turns at the
//! pace. The junk is written straight into the store before PayBridge
//! starts, as an attacker's orders would have been; the clock is moved,
//! never slept.

mod common;
#[path = "common/platform_a.rs"]
mod platform_a;

use std::time::{Duration, Instant};

use common::{Api, Env, Opts};
use paybridge::config::Mode;
use paybridge::store::{Order, OrderContents, OrderStatus, RefundStatus, Store};
use platform_a::{Backend, Receiver, KEY, PLATFORM};
use serde_json::json;

const V3: Api = Api::V3 { public_key: true, certificates: false };

/// Writes `count` anonymous CREATED orders (no prepay) expiring at
/// `expires_at` into the data directory of `dir`, through the store's API.
async fn write_junk(dir: &tempfile::TempDir, count: usize, expires_at: i64) {
    let store = Store::open(&dir.path().join("data"), Mode::Live).unwrap();
    let now = paybridge::pay::now_ms();
    let mut writers = tokio::task::JoinSet::new();
    for chunk in 0..64 {
        let store = store.clone();
        writers.spawn(async move {
            for i in (chunk..count).step_by(64) {
                let contents =
                    OrderContents { total_fee: 1, body: "junk".into(), attach: String::new(), openid: "junk".into() };
                let mut order = Order::new(format!("JUNK{i:08}"), contents, false, now);
                order.expires_at = Some(expires_at);
                store.insert_order(order).await.unwrap().unwrap();
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    assert!(store.close(Duration::from_secs(30)).await);
}

/// A platform order with mini-program B's prepay, whose payment's notifies are all lost.
async fn lost_payment(env: &Env, order_id: &str) -> String {
    let (status, created) = Backend::new(&env.base).create(order_id, 990, "lesson").await;
    assert_eq!(status, 201, "{created}");
    let no = created["outTradeNo"].as_str().unwrap().to_owned();
    let openid = env.openid(&format!("code-{order_id}")).await;
    let (status, p) = env.post_json("/pay/unifiedOrder", &json!({ "outTradeNo": no, "openid": openid })).await;
    assert_eq!(status, 200, "{p}");
    env.sim_pay(json!({ "out_trade_no": no, "lose_notify": true })).await;
    no
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// 50,000 junk open orders beside one PREPAID order whose notify was lost:
/// the payment is found at its scheduled query, and a pass that finds
/// nothing due does not read the junk.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_payment_is_found_beside_fifty_thousand_junk_orders() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    write_junk(&dir, 50_000, paybridge::pay::now_ms() + 2 * 3600 * 1000).await;
    println!("50,000 junk orders written in {:?}", started.elapsed());
    let receiver = Receiver::start(KEY).await;
    let opts = Opts { extra: platform_a::platform_toml(PLATFORM, KEY, &receiver.url()), ..Opts::default() };
    let env = Env::start_in(dir, common::start_simulator().await, opts).await;
    assert_eq!(env.app.store.due_index_len().unwrap(), 50_000);
    let no = lost_payment(&env, "A-FLOOD-1").await;

    let pass = Instant::now();
    assert_eq!(env.app.lifecycle.tick().await.unwrap(), 0, "nothing is due yet");
    let idle_pass = pass.elapsed();
    env.app.lifecycle.clock().advance(Duration::from_secs(5 * 60 + 1));
    let store = env.app.store.clone();
    let found = wait_until("the lost payment found", Duration::from_secs(10), || {
        store.order(&no).unwrap().unwrap().status == OrderStatus::Paid
    })
    .await;
    println!("with 50,000 junk open orders: an idle pass took {idle_pass:?}; the lost payment was found {found:?} after its query fell due");
    assert!(idle_pass < Duration::from_secs(1), "{idle_pass:?}");
    assert_eq!(env.notifies(&no)[0].source, paybridge::store::NotifySource::Query);
    assert_eq!(receiver.wait_for(1).await[0].body["type"], "order.paid");
    env.stop().await;
}

/// Thousands of expired junk orders being closed at the pace delay neither
/// a PREPAID order's query nor a refund's query by more than a pass: each
/// queue takes its turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closing_expired_junk_does_not_delay_queries_or_refunds() {
    let dir = tempfile::tempdir().unwrap();
    write_junk(&dir, 5_000, paybridge::pay::now_ms() - 1).await;
    let receiver = Receiver::start(KEY).await;
    let opts = Opts {
        api: V3,
        extra: platform_a::platform_toml(PLATFORM, KEY, &receiver.url()),
        orders_extra: "queries_per_second = 10",
        ..Opts::default()
    };
    let env = Env::start_in(dir, common::start_simulator().await, opts).await;
    // The junk is being closed, ten a second: 500 seconds of work.
    let store = env.app.store.clone();
    wait_until("closing junk", Duration::from_secs(10), || {
        store.status_counts().unwrap().iter().any(|(s, n)| *s == OrderStatus::Closed && *n > 0)
    })
    .await;

    // A paid order whose refund's notify is lost.
    let (status, created) = Backend::new(&env.base).create("A-SHARE-PAID", 800, "lesson").await;
    assert_eq!(status, 201, "{created}");
    let paid = created["outTradeNo"].as_str().unwrap().to_owned();
    let openid = env.openid("code-share-paid").await;
    let (status, p) = env.post_json("/pay/unifiedOrder", &json!({ "outTradeNo": paid, "openid": openid })).await;
    assert_eq!(status, 200, "{p}");
    env.sim.simulator.lose_refund_notifies(true);
    env.sim_pay(json!({ "out_trade_no": paid })).await;
    env.wait_acknowledged(&paid).await;
    let body = json!({ "refundId": "RF-SHARE-1", "amount": 800, "reason": "退课" }).to_string();
    let (status, refund) =
        Backend::new(&env.base).call("POST", &format!("/platform/v1/orders/{paid}/refunds"), body.as_bytes()).await;
    assert_eq!((status, refund["status"].as_str()), (201, Some("PROCESSING")), "{refund}");
    // And a payment whose notifies are lost.
    let lost = lost_payment(&env, "A-SHARE-LOST").await;

    env.app.lifecycle.clock().advance(Duration::from_secs(5 * 60 + 1));
    let limit = Duration::from_secs(u64::from(paybridge::pay::lifecycle::PASS_SECONDS) + 5);
    let found = wait_until("the lost payment found", limit, || {
        store.order(&lost).unwrap().unwrap().status == OrderStatus::Paid
    })
    .await;
    let refunded = wait_until("the refund ended", limit, || {
        store.refunds_for_order(&paid).unwrap().iter().all(|r| r.status == RefundStatus::Success)
    })
    .await;
    let open = store.status_counts().unwrap().into_iter().find(|(s, _)| *s == OrderStatus::Created).unwrap().1;
    println!("with {open} expired junk orders still to close: payment found after {found:?}, refund ended {refunded:?} later");
    assert!(open > 4_000, "the junk was still being closed ({open} left)");
    assert_eq!(env.stored_order(&paid).status, OrderStatus::Refunded);
    env.stop().await;
}
