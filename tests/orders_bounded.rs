//! Strangers cannot fill the disk or spend the merchant's WeChat quota
//! through orders: a refused order is not kept, one order's retries are
//! capped (429) and its history bounded, each address has a budget per
//! route, and calls to WeChat for strangers have a global budget (503).
//! Each limit is hit here, at the scale an attacker would use.

mod common;
#[path = "common/platform_a.rs"]
mod platform_a;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use common::{Env, Opts};
use paybridge::store::OrderStatus;
use platform_a::{Backend, Receiver, KEY, PLATFORM};
use serde_json::{json, Value};

/// Bytes under `dir`, all files.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| match e.file_type().unwrap().is_dir() {
            true => dir_bytes(&e.path()),
            false => e.metadata().unwrap().len(),
        })
        .sum()
}

/// A client whose connections come from 127.0.0.`n`: another address to
/// the per-address budgets.
fn client_from(n: u8) -> reqwest::Client {
    reqwest::Client::builder().local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))).build().unwrap()
}

/// Posts a unified order; returns (status, Retry-After, body).
async fn post(http: &reqwest::Client, base: &str, body: &Value) -> (u16, Option<u64>, Value) {
    let r = http.post(format!("{base}/pay/unifiedOrder")).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry, r.json().await.unwrap())
}

fn refused_order(no: &str, openid: &str) -> Value {
    json!({ "outTradeNo": no, "totalFee": 100, "body": "junk", "openid": openid })
}

/// Sends `total` requests from `addresses` loopback addresses, `per_address`
/// at a time each; returns the count of each status and one body of each.
async fn flood(
    env: &Env,
    addresses: u8,
    total: usize,
    body: impl Fn(usize) -> Value + Send + Sync + 'static,
) -> (std::collections::BTreeMap<u16, usize>, std::collections::BTreeMap<u16, (Option<u64>, Value)>) {
    let body = std::sync::Arc::new(body);
    let mut tasks = tokio::task::JoinSet::new();
    for a in 0..addresses {
        for lane in 0..4 {
            let (http, base, body) = (client_from(2 + a), env.base.clone(), body.clone());
            let stride = addresses as usize * 4;
            let first = a as usize * 4 + lane;
            tasks.spawn(async move {
                let mut seen = Vec::new();
                for i in (first..total).step_by(stride) {
                    seen.push(post(&http, &base, &body(i)).await);
                }
                seen
            });
        }
    }
    let (mut counts, mut samples) = (std::collections::BTreeMap::new(), std::collections::BTreeMap::new());
    while let Some(seen) = tasks.join_next().await {
        for (status, retry, body) in seen.unwrap() {
            *counts.entry(status).or_insert(0) += 1;
            samples.entry(status).or_insert((retry, body));
        }
    }
    (counts, samples)
}

/// 20,000 retries of one anonymous order with an openid WeChat never
/// issued: WeChat is asked `max_failed_prepays` times, every other retry
/// is a 429 with Retry-After, nothing is kept, the data directory barely grows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_thousand_retries_of_a_refused_order_keep_nothing() {
    let env = Env::start(Opts { http_extra: "max_connections_per_ip = 256", ..Opts::default() }).await;
    let data = env.dir.path().join("data");
    let before = dir_bytes(&data);
    let started = std::time::Instant::now();
    // 20,000 over 40 addresses: 500 each, under the default 1,200 a minute.
    let (counts, samples) = flood(&env, 40, 20_000, |i| refused_order("RETRY00001", &format!("fake-{}", i % 7))).await;
    let took = started.elapsed();
    let grown = dir_bytes(&data).saturating_sub(before);
    println!("20,000 retries in {took:?}: data dir grew {grown} bytes; {counts:?}");
    assert_eq!(counts.get(&502), Some(&10), "{counts:?}: WeChat asked max_failed_prepays (10) times");
    assert_eq!(counts.get(&429), Some(&19_990), "{counts:?}");
    let (retry, body) = &samples[&429];
    assert_eq!(body["error"]["code"], "TOO_MANY_REQUESTS", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("10 times in 10 minutes"), "{body}");
    assert!(retry.is_some_and(|s| (1..=600).contains(&s)), "Retry-After {retry:?}");
    let (_, refused) = &samples[&502];
    assert_eq!(refused["error"]["code"], "WECHAT_REFUSED", "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("not kept"), "{refused}");

    assert!(env.app.store.order("RETRY00001").unwrap().is_none(), "a refused order is not kept");
    assert_eq!(env.app.store.order_count().unwrap(), 0);
    assert_eq!(env.app.metrics.refused_count("failed_prepays_per_order"), 19_990);
    assert_eq!(env.app.metrics.refused_count("order_refused_by_wechat"), 10);
    assert!(grown < 5 * 1024 * 1024, "data dir grew {grown} bytes");
    env.stop().await;
}

/// Junk orders WeChat refuses are not stored: "awaiting payment" does not
/// grow, and neither does the work of the lifecycle.
#[tokio::test]
async fn refused_junk_orders_are_not_stored() {
    let env = Env::start(Opts::default()).await;
    for i in 0..300 {
        let (status, retry, body) = post(&env.http, &env.base, &refused_order(&format!("JUNK{i:06}"), "forged")).await;
        assert_eq!((status, retry), (502, None), "{body}");
    }
    let counts = env.app.store.status_counts().unwrap();
    assert!(counts.iter().all(|(_, n)| *n == 0), "{counts:?}");
    assert_eq!(env.app.store.due_index_len().unwrap(), 0);
    assert_eq!(env.app.metrics.refused_count("order_refused_by_wechat"), 300);
    // A real payer's order is kept as before.
    let openid = env.openid("code-real").await;
    let (status, body) = env.order("REAL000001", 100, &openid).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(env.stored_order("REAL000001").status, OrderStatus::Prepaid);
    env.stop().await;
}

/// A platform's order (kept whatever WeChat says) retried with refused
/// openids: the failures are one counted history entry, the record stays
/// small, 429 after `max_failed_prepays`, and the real payer can still claim it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_platform_order_retried_stays_small_and_claimable() {
    let receiver = Receiver::start(KEY).await;
    let opts = Opts {
        extra: platform_a::platform_toml(PLATFORM, KEY, &receiver.url()),
        orders_extra: "max_failed_prepays = 1000",
        http_extra: "max_connections_per_ip = 256",
        ..Opts::default()
    };
    let env = Env::start(opts).await;
    let (status, created) = Backend::new(&env.base).create("A-LOCK-1", 990, "lesson").await;
    assert_eq!(status, 201, "{created}");
    let no = created["outTradeNo"].as_str().unwrap().to_owned();
    let data = env.dir.path().join("data");
    let before = dir_bytes(&data);
    let body_no = no.clone();
    let (counts, samples) =
        flood(&env, 4, 1_100, move |i| json!({ "outTradeNo": body_no, "openid": format!("fake-openid-{i}") })).await;
    let grown = dir_bytes(&data).saturating_sub(before);
    println!("1,100 platform-order retries: data dir grew {grown} bytes; {counts:?}");
    assert_eq!((counts.get(&502), counts.get(&429)), (Some(&1000), Some(&100)), "{counts:?}");
    assert_eq!(samples[&502].1["error"]["code"], "WECHAT_ERROR", "a platform order is kept: {}", samples[&502].1);

    let order = env.stored_order(&no);
    assert_eq!(order.openid, "", "a refused openid does not bind the order");
    assert_eq!(order.history.len(), 2, "{:?}", order.history);
    assert!(order.history[1].detail.starts_with("1000 times: "), "{:?}", order.history[1]);
    assert!(order.encode().len() < 2048, "{} bytes", order.encode().len());
    assert!(grown < 5 * 1024 * 1024, "data dir grew {grown} bytes");

    // The cap is per order, so the real payer waits out Retry-After (at
    // most ten minutes); the window lives in memory, so a restart stands
    // in for that wait here.
    let env = env.restart().await;
    let openid = env.openid("code-real-payer").await;
    let (status, p) = env.post_json("/pay/unifiedOrder", &json!({ "outTradeNo": no, "openid": openid })).await;
    assert_eq!(status, 200, "the real payer claims it: {p}");
    assert_eq!(env.stored_order(&no).openid, openid);
    let other = env.openid("code-someone-else").await;
    let (status, taken) = env.post_json("/pay/unifiedOrder", &json!({ "outTradeNo": no, "openid": other })).await;
    assert_eq!((status, taken["error"]["code"].as_str()), (409, Some("ORDER_TAKEN")), "{taken}");
    env.stop().await;
}

/// Issue 6 on its own: one refused openid, then the real payer, at once.
#[tokio::test]
async fn a_refused_openid_does_not_lock_a_platform_order() {
    let receiver = Receiver::start(KEY).await;
    let env =
        Env::start(Opts { extra: platform_a::platform_toml(PLATFORM, KEY, &receiver.url()), ..Opts::default() }).await;
    let (_, created) = Backend::new(&env.base).create("A-LOCK-2", 500, "lesson").await;
    let no = created["outTradeNo"].as_str().unwrap().to_owned();
    let (status, body) = env.post_json("/pay/unifiedOrder", &json!({ "outTradeNo": no, "openid": "forged" })).await;
    assert_eq!(status, 502, "{body}");
    let openid = env.openid("code-payer").await;
    let (status, body) = env.post_json("/pay/unifiedOrder", &json!({ "outTradeNo": no, "openid": openid })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(env.stored_order(&no).openid, openid);
    env.stop().await;
}

/// Each address has its budget per route (429 with Retry-After past it,
/// other addresses unaffected), counted in its metric.
#[tokio::test]
async fn each_address_has_a_budget_per_route() {
    let opts = Opts {
        orders_extra: "unified_orders_per_peer_per_minute = 5\nopenid_per_peer_per_minute = 3",
        ..Opts::default()
    };
    let env = Env::start(opts).await;
    let (a, b) = (client_from(2), client_from(3));
    for i in 0..5 {
        let (status, _, body) = post(&a, &env.base, &refused_order(&format!("PEER{i:06}"), "forged")).await;
        assert_eq!(status, 502, "{body}");
    }
    let (status, retry, body) = post(&a, &env.base, &refused_order("PEER999999", "forged")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("TOO_MANY_REQUESTS")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("unified_orders_per_peer_per_minute"), "{body}");
    assert_eq!(retry, Some(12));
    assert!(env.app.store.order("PEER999999").unwrap().is_none(), "refused before anything is stored");
    let (status, _, body) = post(&b, &env.base, &refused_order("PEER888888", "forged")).await;
    assert_eq!(status, 502, "another address has its own budget: {body}");
    assert_eq!(env.app.metrics.refused_count("unified_order_per_peer"), 1);

    let login = |http: &reqwest::Client, code: &str| {
        let request = http.get(format!("{}/pay/openid?code={code}", env.base));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    for i in 0..3 {
        assert_eq!(login(&a, &format!("code-{i}")).await, 200);
    }
    assert_eq!(login(&a, "code-4").await, 429);
    assert_eq!(login(&b, "code-5").await, 200);
    assert_eq!(env.app.metrics.refused_count("openid_per_peer"), 1);
    env.stop().await;
}

/// Calls to WeChat for strangers share one budget a second: past it, 503
/// with Retry-After, before WeChat is called and before anything is stored.
#[tokio::test]
async fn calls_to_wechat_for_strangers_have_a_global_budget() {
    let opts = Opts { orders_extra: "wechat_calls_per_second = 3", ..Opts::default() };
    let env = Env::start(opts).await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let r = env.http.get(format!("{}/pay/openid?code=budget-{i}", env.base)).send().await.unwrap();
        statuses.push((r.status().as_u16(), r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned())));
    }
    let refused: Vec<_> = statuses.iter().filter(|(s, _)| *s == 503).collect();
    assert!(refused.len() >= 2, "{statuses:?}");
    assert!(refused.iter().all(|(_, retry)| retry.as_deref() == Some("1")), "{statuses:?}");
    let (status, _, body) = post(&env.http, &env.base, &refused_order("BUDGET0001", "forged")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("WECHAT_BUDGET_SPENT")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("wechat_calls_per_second"), "{body}");
    assert!(env.app.store.order("BUDGET0001").unwrap().is_none());
    // A refused login never reached WeChat: its single-use code still works.
    let code = (0..6).zip(&statuses).find(|(_, (s, _))| *s == 503).unwrap().0;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = env.http.get(format!("{}/pay/openid?code=budget-{code}", env.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(env.app.metrics.refused_count("wechat_calls_per_second") >= 3);
    env.stop().await;
}
