//! The lifecycle of open orders, on API v2 and v3 alike: `time_expire`
//! goes to WeChat, expired orders are closed there and here (and A hears
//! `order.closed`), a close that finds a payment records it, a payment
//! whose notifies were all lost is found by query and webhooked once, and a
//! PayBridge restarted after an outage catches up at its pace. The
//! schedule's clock is moved, never slept.

mod common;
#[path = "common/platform_a.rs"]
mod platform_a;

use std::time::Duration;

use common::{Api, Env, Opts};
use paybridge::store::{NotifySource, OrderStatus, Verdict};
use platform_a::{Backend, Receiver, KEY, PLATFORM};
use serde_json::json;

const APIS: [Api; 2] = [Api::V2, Api::V3 { public_key: true, certificates: false }];

fn opts(api: Api, webhook: &str) -> Opts {
    Opts { api, extra: platform_a::platform_toml(PLATFORM, KEY, webhook), ..Opts::default() }
}

fn status_of(env: &Env, no: &str) -> OrderStatus {
    env.app.store.order(no).unwrap().unwrap().status
}

/// Creates a platform order and has mini-program B get its prepay.
async fn prepaid_platform_order(env: &Env, order_id: &str) -> String {
    let (status, created) = Backend::new(&env.base).create(order_id, 990, "lesson").await;
    assert_eq!(status, 201, "{created}");
    let no = created["outTradeNo"].as_str().unwrap().to_owned();
    let openid = env.openid(&format!("code-{order_id}")).await;
    let (status, p) = env.post_json("/pay/unifiedOrder", &json!({ "outTradeNo": no, "openid": openid })).await;
    assert_eq!(status, 200, "{p}");
    no
}

#[tokio::test]
async fn an_expired_order_is_closed_at_wechat_and_a_hears_of_it() {
    for api in APIS {
        let receiver = Receiver::start(KEY).await;
        let env = Env::start(opts(api, &receiver.url())).await;
        let no = prepaid_platform_order(&env, "A-EXPIRE-1").await;
        // time_expire went to WeChat: the order's own expiry, in the version's format.
        let expires_at = env.app.store.order(&no).unwrap().unwrap().expires_at.unwrap();
        let sent = env.sim.simulator.report(&no).unwrap().time_expire.expect("time_expire sent");
        let beijing =
            time::OffsetDateTime::from_unix_timestamp(expires_at / 1000).unwrap().to_offset(time::macros::offset!(+8));
        let expected = match api {
            Api::V2 => paybridge::wechat::beijing_compact(beijing),
            Api::V3 { .. } => beijing.format(&time::format_description::well_known::Rfc3339).unwrap(),
        };
        assert_eq!(sent, expected, "{api:?}");

        // Before expiry the queries find nothing to do but note NOTPAY.
        env.app.lifecycle.clock().advance(Duration::from_secs(6 * 60));
        env.app.lifecycle.tick().await.unwrap();
        assert_eq!(status_of(&env, &no), OrderStatus::Prepaid, "{api:?}");
        let history = env.app.store.order(&no).unwrap().unwrap().history;
        assert!(history.iter().any(|e| e.kind == "QUERIED" && e.detail.contains("NOTPAY")), "{api:?}: {history:?}");

        env.app.lifecycle.clock().advance(Duration::from_secs(2 * 3600));
        env.app.lifecycle.tick().await.unwrap();
        assert_eq!(status_of(&env, &no), OrderStatus::Closed, "{api:?}");
        let report = env.sim.simulator.report(&no).unwrap();
        assert_eq!(serde_json::to_value(report.trade_state).unwrap(), "CLOSED", "{api:?}: closed at WeChat first");
        let hooks = receiver.wait_for(1).await;
        assert_eq!((hooks[0].body["type"].as_str(), hooks[0].verified), (Some("order.closed"), true), "{api:?}");
        // Closed is terminal: B cannot pay it any more.
        let (status, body) = env.order(&no, 990, "anyone").await;
        assert_eq!(status, 409, "{api:?}: {body}");
        assert_eq!(env.app.lifecycle.tick().await.unwrap(), 0, "nothing left to do");
        env.stop().await;
    }
}

/// The user pays in the last second and the notify is lost: the close at
/// expiry meets "already paid", and PayBridge records the payment instead.
#[tokio::test]
async fn a_close_that_finds_a_payment_records_it() {
    for api in APIS {
        let receiver = Receiver::start(KEY).await;
        let env = Env::start(opts(api, &receiver.url())).await;
        let no = prepaid_platform_order(&env, "A-RACE-1").await;
        let tx = env.sim_pay(json!({ "out_trade_no": no, "lose_notify": true })).await;
        // Straight to expiry: the first step due is the close.
        env.app.lifecycle.clock().advance(Duration::from_secs(3 * 3600));
        env.app.lifecycle.tick().await.unwrap();
        let order = env.app.store.order(&no).unwrap().unwrap();
        assert_eq!((order.status, order.transaction_id.as_deref()), (OrderStatus::Paid, Some(tx.as_str())), "{api:?}");
        let found = env.notifies(&no);
        assert_eq!(found.len(), 1, "{api:?}");
        assert_eq!((found[0].source, found[0].verdict, found[0].verified), (NotifySource::Query, Verdict::Paid, true));
        let hooks = receiver.wait_for(1).await;
        assert_eq!(hooks[0].body["type"], "order.paid", "{api:?}");
        env.stop().await;
    }
}

/// Every notify of a payment is lost; the query five minutes after the
/// prepay finds it, with the same checks and effects as a notify, once.
#[tokio::test]
async fn a_payment_whose_notifies_are_lost_is_found_and_webhooked_once() {
    for api in APIS {
        let receiver = Receiver::start(KEY).await;
        let env = Env::start(opts(api, &receiver.url())).await;
        let no = prepaid_platform_order(&env, "A-LOST-1").await;
        env.sim_pay(json!({ "out_trade_no": no, "lose_notify": true })).await;
        env.app.lifecycle.tick().await.unwrap();
        assert_eq!(status_of(&env, &no), OrderStatus::Prepaid, "{api:?}: not due before five minutes");
        env.app.lifecycle.clock().advance(Duration::from_secs(5 * 60 + 1));
        assert_eq!(env.app.lifecycle.tick().await.unwrap(), 1);
        assert_eq!(status_of(&env, &no), OrderStatus::Paid, "{api:?}");
        assert_eq!(env.notifies(&no)[0].source, NotifySource::Query);
        // Later passes have nothing to do; A hears of it exactly once.
        env.app.lifecycle.clock().advance(Duration::from_secs(3 * 3600));
        assert_eq!(env.app.lifecycle.tick().await.unwrap(), 0);
        receiver.wait_for(1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(receiver.received().len(), 1, "{api:?}");
        let (_, admin_view) = common::login(&env).await.get(&format!("/admin/api/orders/{no}")).await;
        assert_eq!(admin_view["notifies"][0]["source"], "query", "{api:?}: the admin page shows the source");
        env.stop().await;
    }
}

/// A PayBridge that was down while 20 payments happened (their notifies
/// lost) finds all of them after a restart, never faster than
/// `orders.queries_per_second`.
#[tokio::test]
async fn a_restart_after_an_outage_catches_up_at_its_pace() {
    for api in APIS {
        let receiver = Receiver::start(KEY).await;
        let opts = Opts { orders_extra: "queries_per_second = 5", ..opts(api, &receiver.url()) };
        let env = Env::start(opts).await;
        let mut orders = Vec::new();
        for i in 0..20 {
            let no = prepaid_platform_order(&env, &format!("A-OUTAGE-{i}")).await;
            env.sim_pay(json!({ "out_trade_no": no, "lose_notify": true })).await;
            orders.push(no);
        }
        let env = env.restart().await;
        let queries_before = env.sim.simulator.queries().len();
        env.app.lifecycle.clock().advance(Duration::from_secs(10 * 60));
        assert_eq!(env.app.lifecycle.tick().await.unwrap(), 20);
        assert!(orders.iter().all(|no| status_of(&env, no) == OrderStatus::Paid), "{api:?}");
        let queries = env.sim.simulator.queries()[queries_before..].to_vec();
        assert_eq!(queries.len(), 20, "{api:?}: one query each");
        // Sent five a second: a query and the fifth after it are a second
        // apart when sent. They are timed here as they arrive, and one can
        // arrive late on a busy machine (CI once saw six in a second that
        // way), so 250 ms of that is allowed; unpaced, all twenty would come
        // within a few milliseconds.
        let jitter = Duration::from_millis(250);
        for (first, sixth) in queries.iter().zip(&queries[5..]) {
            let gap = sixth.duration_since(*first);
            assert!(gap + jitter >= Duration::from_secs(1), "{api:?}: six queries within {gap:?}");
        }
        let all = queries[19].duration_since(queries[0]);
        assert!(all + jitter >= Duration::from_millis(19 * 200), "{api:?}: twenty queries within {all:?}");
        assert_eq!(receiver.wait_for(20).await.len(), 20);
        env.stop().await;
    }
}
