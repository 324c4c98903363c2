//! Property test of an order's state machine through the real server: a
//! random sequence of what can happen to a platform order — the user pays
//! (its notify delivered or lost), WeChat's notify replayed, a signed
//! notify for another transaction or amount, platform A closing it, the
//! lifecycle's query, its expiry — and after every step: never paid twice,
//! PAID stays PAID, CLOSED becomes PAID only when WeChat really took the
//! money, and every state change has its one webhook event in the outbox.
//! (Refunds join this test with the refund release.)

mod common;
#[path = "common/platform_a.rs"]
mod platform_a;

use std::time::Duration;

use common::{notify_fields, signed_xml, Env, Opts, MCH_KEY};
use paybridge::store::{EventKind, OrderStatus, Verdict};
use paybridge::wechat::sign::SignType;
use platform_a::{Backend, KEY, PLATFORM};
use proptest::prelude::*;
use serde_json::json;

#[derive(Debug, Clone)]
enum Step {
    /// The user pays in WeChat; its notify arrives, or is lost.
    Pay { lose_notify: bool },
    /// WeChat delivers the last notify body again.
    Replay,
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
        any::<bool>().prop_map(|other_amount| Step::Conflicting { other_amount }),
        Just(Step::Close),
        Just(Step::Query),
        Just(Step::Expire),
    ]
}

async fn run(steps: Vec<Step>) {
    let receiver = platform_a::Receiver::start(KEY).await;
    let opts = Opts {
        extra: platform_a::platform_toml(PLATFORM, KEY, &receiver.url()),
        orders_extra: "queries_per_second = 100",
        ..Opts::default()
    };
    let env = Env::start(opts).await;
    let (_, created) = Backend::new(&env.base).create("A-PROP-1", 700, "lesson").await;
    let no = created["outTradeNo"].as_str().unwrap().to_owned();
    let openid = env.openid("prop-payer").await;
    let (status, _) = env.post_json("/pay/unifiedOrder", &json!({ "outTradeNo": no, "openid": openid })).await;
    assert_eq!(status, 200);

    let mut last_notify: Option<String> = None;
    let mut paid_by: Option<String> = None;
    let mut was_closed = false;
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
                    last_notify = env.notifies(&no).last().map(|n| String::from_utf8_lossy(&n.raw).into_owned());
                }
            }
            Step::Replay => {
                if let Some(body) = &last_notify {
                    let (status, reply) = env.notify(body.clone()).await;
                    assert_eq!((status, reply.get("return_code").map(String::as_str)), (200, Some("SUCCESS")));
                }
            }
            // A signed notify is WeChat speaking: one with another amount can
            // come at any time; one with a second transaction only for an
            // order already paid (the user paid twice).
            Step::Conflicting { other_amount: true } => {
                let body = signed_xml(notify_fields(&no, 1, "4200000000000000000000000001"), MCH_KEY, SignType::Md5);
                env.notify(body).await;
            }
            Step::Conflicting { other_amount: false } => {
                if before.status == OrderStatus::Paid {
                    let tx = "4200000000000000000000000002";
                    env.notify(signed_xml(notify_fields(&no, 700, tx), MCH_KEY, SignType::Md5)).await;
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
        let after = env.app.store.order(&no).unwrap().unwrap();
        let wechat = env.sim.simulator.report(&no).unwrap();
        // PAID stays PAID, by the same transaction: never paid twice.
        if before.status == OrderStatus::Paid {
            assert_eq!((after.status, &after.transaction_id), (OrderStatus::Paid, &before.transaction_id), "{steps:?}");
        }
        if after.status == OrderStatus::Paid {
            // Only WeChat's own transaction pays it, at the order's amount.
            assert_eq!(after.transaction_id, wechat.transaction_id, "{steps:?}");
            paid_by.get_or_insert(after.transaction_id.clone().unwrap());
        }
        // CLOSED only ever becomes PAID, and only because the money moved.
        if before.status == OrderStatus::Closed {
            assert!(matches!(after.status, OrderStatus::Closed | OrderStatus::Paid), "{steps:?}");
        }
        was_closed |= after.status == OrderStatus::Closed;
        let paid_verdicts = env.notifies(&no).iter().filter(|n| n.verdict == Verdict::Paid).count();
        assert!(paid_verdicts <= 1, "{steps:?}");
        // Each state change has exactly one event, written with it.
        let events = env.app.store.deliveries_for_order(&no).unwrap();
        let count = |kind: EventKind| events.iter().filter(|d| d.kind == kind).count();
        assert_eq!(count(EventKind::Paid), usize::from(after.status == OrderStatus::Paid), "{steps:?}");
        assert_eq!(count(EventKind::Closed), usize::from(was_closed), "{steps:?}");
    }
    // After expiry, PayBridge and WeChat agree.
    env.app.lifecycle.clock().advance(Duration::from_secs(3 * 3600));
    env.app.lifecycle.tick().await.unwrap();
    let last = env.app.store.order(&no).unwrap().unwrap();
    let wechat = env.sim.simulator.report(&no).unwrap();
    let wechat_state = serde_json::to_value(wechat.trade_state).unwrap();
    match last.status {
        OrderStatus::Paid => assert_eq!(wechat_state, "SUCCESS", "{steps:?}"),
        OrderStatus::Closed => assert_eq!(wechat_state, "CLOSED", "{steps:?}"),
        other => panic!("{other:?} after expiry: {steps:?}"),
    }
    env.stop().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn money_and_states_stay_consistent(steps in proptest::collection::vec(step(), 1..8)) {
        tokio::runtime::Runtime::new().unwrap().block_on(run(steps));
    }
}
