//! Property test of an order's state machine through the real server (API
//! v3): a random sequence of what can happen to a platform order — the
//! user pays (its notify delivered or lost), WeChat's notify again, a
//! signed notify for another transaction or amount, platform A closing it,
//! refunds (their notifies delivered or lost), the lifecycle's queries, its
//! expiry — and after every step: never paid twice, PAID stays paid (only
//! refunds move it on), CLOSED becomes PAID only when WeChat really took the
//! money, refunds never exceed the amount paid, the sums match the refunds,
//! and every state change has its one webhook event in the outbox. At the
//! end PayBridge and WeChat agree on the money.

mod common;
#[path = "common/platform_a.rs"]
mod platform_a;

use std::time::Duration;

use common::{Api, Env, Opts};
use paybridge::store::{EventKind, OrderStatus, RefundStatus, Verdict};
use platform_a::{Backend, KEY, PLATFORM};
use proptest::prelude::*;
use serde_json::json;

#[derive(Debug, Clone)]
enum Step {
    /// The user pays in WeChat; its notify arrives, or is lost.
    Pay { lose_notify: bool },
    /// WeChat delivers the payment's notify again.
    Replay,
    /// Platform A refunds a quarter, a half or three quarters of the order.
    Refund { quarters: u64, lose_notify: bool },
    /// A signed notify with another amount, or (for a paid order) another transaction.
    Conflicting { other_amount: bool },
    /// Platform A closes the order.
    Close,
    /// The lifecycle's query comes due.
    Query,
    /// The order expires.
    Expire,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        any::<bool>().prop_map(|lose_notify| Step::Pay { lose_notify }),
        Just(Step::Replay),
        (1..=3u64, any::<bool>()).prop_map(|(quarters, lose_notify)| Step::Refund { quarters, lose_notify }),
        any::<bool>().prop_map(|other_amount| Step::Conflicting { other_amount }),
        Just(Step::Close),
        Just(Step::Query),
        Just(Step::Expire),
    ]
}

/// The order and its refunds once nothing is in flight (a refund notify
/// may still be on its way after a step): two equal readings in a row.
async fn settled(env: &Env, no: &str) -> (paybridge::store::Order, Vec<paybridge::store::Refund>) {
    let read = || (env.app.store.order(no).unwrap().unwrap(), env.app.store.refunds_for_order(no).unwrap());
    let mut last = read();
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let now = read();
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("order {no} never settled");
}

async fn run(steps: Vec<Step>) {
    let receiver = platform_a::Receiver::start(KEY).await;
    let opts = Opts {
        api: Api::V3 { public_key: true, certificates: false },
        extra: platform_a::platform_toml(PLATFORM, KEY, &receiver.url()),
        orders_extra: "queries_per_second = 100",
        ..Opts::default()
    };
    let env = Env::start(opts).await;
    let (_, created) = Backend::new(&env.base).create("A-PROP-1", 800, "lesson").await;
    let no = created["outTradeNo"].as_str().unwrap().to_owned();
    let openid = env.openid("prop-payer").await;
    let (status, _) = env.post_json("/pay/unifiedOrder", &json!({ "outTradeNo": no, "openid": openid })).await;
    assert_eq!(status, 200);

    let sim = env.sim.simulator.v3().clone();
    let now = || paybridge::pay::now_ms() / 1000;
    let post = |notify: paybridge::sandbox::v3::V3Notify| {
        let mut request = env.http.post(format!("{}/pay/notify", env.base)).body(notify.body);
        for (name, value) in &notify.headers {
            request = request.header(*name, value);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let mut was_closed = false;
    let mut refunds = 0;
    for step in &steps {
        let before = env.app.store.order(&no).unwrap().unwrap();
        match step {
            Step::Pay { lose_notify } => {
                let r = env
                    .http
                    .post(format!("{}/sandbox/pay", env.sim.url()))
                    .json(&json!({ "out_trade_no": no, "lose_notify": lose_notify }))
                    .send()
                    .await
                    .unwrap();
                if r.status() == 200 && !lose_notify {
                    env.wait_acknowledged(&no).await;
                }
            }
            Step::Replay => {
                if let Some(transaction) = sim.paid_transaction(&no) {
                    assert_eq!(post(sim.notify(&transaction, "EV-replay", now()).unwrap()).await, 204);
                }
            }
            Step::Refund { quarters, lose_notify } => {
                refunds += 1;
                env.sim.simulator.lose_refund_notifies(*lose_notify);
                let body = json!({ "refundId": format!("RF-{refunds}"), "amount": 200 * quarters }).to_string();
                let path = format!("/platform/v1/orders/{no}/refunds");
                let (status, reply) = Backend::new(&env.base).call("POST", &path, body.as_bytes()).await;
                assert!(matches!(status, 201 | 409), "{status} {reply}: {steps:?}");
            }
            // A signed notify is WeChat speaking: one with another amount can
            // come at any time; one with a second transaction only for an
            // order already paid (the user paid twice).
            Step::Conflicting { other_amount: true } => {
                let mut transaction = sim.paid_transaction(&no).unwrap_or_else(|| {
                    json!({ "mchid": common::MCH_ID, "appid": common::APPID, "out_trade_no": no,
                            "transaction_id": "4200000000000000000000000001", "trade_state": "SUCCESS",
                            "success_time": "2026-11-27T12:00:00+08:00", "payer": { "openid": "o" },
                            "amount": { "total": 800, "currency": "CNY" } })
                });
                transaction["amount"]["total"] = json!(1);
                post(sim.notify(&transaction, "EV-amount", now()).unwrap()).await;
            }
            Step::Conflicting { other_amount: false } => {
                if let Some(mut transaction) = sim.paid_transaction(&no).filter(|_| before.status.is_paid()) {
                    transaction["transaction_id"] = json!("4200000000000000000000000002");
                    post(sim.notify(&transaction, "EV-second", now()).unwrap()).await;
                }
            }
            Step::Close => {
                let (status, _) =
                    Backend::new(&env.base).call("POST", &format!("/platform/v1/orders/{no}/close"), b"").await;
                assert!(matches!(status, 200 | 409), "{status}");
            }
            Step::Query => {
                env.app.lifecycle.clock().advance(Duration::from_secs(6 * 60));
                env.app.lifecycle.tick().await.unwrap();
            }
            Step::Expire => {
                env.app.lifecycle.clock().advance(Duration::from_secs(3 * 3600));
                env.app.lifecycle.tick().await.unwrap();
            }
        }
        let (after, stored) = settled(&env, &no).await;
        let wechat = env.sim.simulator.report(&no).unwrap();
        let paid = OrderStatus::is_paid;
        // Paid stays paid, by the same transaction: never paid twice.
        if paid(before.status) {
            assert!(paid(after.status), "{steps:?}");
            assert_eq!(after.transaction_id, before.transaction_id, "{steps:?}");
        }
        if paid(after.status) {
            // Only WeChat's own transaction pays it.
            assert_eq!(after.transaction_id, wechat.transaction_id, "{steps:?}");
        }
        // CLOSED only ever becomes PAID, and only because the money moved.
        if before.status == OrderStatus::Closed {
            assert!(matches!(after.status, OrderStatus::Closed | OrderStatus::Paid), "{steps:?}");
        }
        was_closed |= after.status == OrderStatus::Closed;
        // Refunds: never more than paid; the sums are the refunds'; the status follows the sums.
        let sum = |status: RefundStatus| stored.iter().filter(|r| r.status == status).map(|r| r.amount).sum::<u64>();
        assert!(after.refunded_fee + after.refund_pending_fee <= after.total_fee, "{steps:?}");
        assert_eq!(
            (after.refunded_fee, after.refund_pending_fee),
            (sum(RefundStatus::Success), sum(RefundStatus::Processing))
        );
        let expected = match after.refunded_fee {
            0 => None,
            fee if fee == after.total_fee => Some(OrderStatus::Refunded),
            _ => Some(OrderStatus::PartiallyRefunded),
        };
        if let Some(expected) = expected {
            assert_eq!(after.status, expected, "{steps:?}");
        }
        let paid_verdicts = env.notifies(&no).iter().filter(|n| n.verdict == Verdict::Paid).count();
        assert!(paid_verdicts <= 1, "{steps:?}");
        // Each state change has exactly one event, written with it.
        let events = env.app.store.deliveries_for_order(&no).unwrap();
        let count = |kind: EventKind| events.iter().filter(|d| d.kind == kind).count();
        assert_eq!(count(EventKind::Paid), usize::from(paid(after.status)), "{steps:?}");
        assert_eq!(count(EventKind::Closed), usize::from(was_closed), "{steps:?}");
        let ended = |status: RefundStatus| stored.iter().filter(|r| r.status == status).count();
        assert_eq!(count(EventKind::Refunded), ended(RefundStatus::Success), "{steps:?}");
        assert_eq!(count(EventKind::RefundFailed), ended(RefundStatus::Closed) + ended(RefundStatus::Abnormal));
    }
    // After expiry (and a refund query), PayBridge and WeChat agree on the money.
    env.app.lifecycle.clock().advance(Duration::from_secs(3 * 3600));
    env.app.lifecycle.tick().await.unwrap();
    let (last, _) = settled(&env, &no).await;
    let wechat = env.sim.simulator.report(&no).unwrap();
    let wechat_state = serde_json::to_value(wechat.trade_state).unwrap();
    match last.status {
        OrderStatus::Paid | OrderStatus::PartiallyRefunded | OrderStatus::Refunded => {
            assert_eq!(wechat_state, "SUCCESS", "{steps:?}")
        }
        OrderStatus::Closed => assert_eq!(wechat_state, "CLOSED", "{steps:?}"),
        other => panic!("{other:?} after expiry: {steps:?}"),
    }
    assert_eq!(last.refund_pending_fee, 0, "every refund ended: {steps:?}");
    assert_eq!(last.refunded_fee, sim.refunded(&no), "{steps:?}");
    env.stop().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn money_and_states_stay_consistent(steps in proptest::collection::vec(step(), 1..8)) {
        tokio::runtime::Runtime::new().unwrap().block_on(run(steps));
    }
}

/// The sequence that once caught the test reading the order and its refunds
/// while a refund notify was landing.
#[test]
fn a_refund_notify_landing_between_readings() {
    let steps = vec![
        Step::Query,
        Step::Replay,
        Step::Pay { lose_notify: false },
        Step::Expire,
        Step::Replay,
        Step::Replay,
        Step::Refund { quarters: 3, lose_notify: false },
    ];
    tokio::runtime::Runtime::new().unwrap().block_on(run(steps));
}
