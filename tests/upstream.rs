//! WeChat failing: timeouts, 5xx, FAIL replies, bad signatures. The client
//! gets a clear error and the order stays retryable.

mod common;

use common::{Env, Opts};
use paybridge::store::OrderStatus;
use serde_json::json;

#[tokio::test]
async fn upstream_failures_leave_the_order_retryable() {
    let env = Env::start(Opts { timeout_ms: 300, ..Opts::default() }).await;
    let openid = env.openid("code-upstream").await;
    let cases = [
        (json!({ "kind": "delay", "ms": 1500 }), 504, "WECHAT_TIMEOUT", "time limit"),
        (json!({ "kind": "http", "status": 502 }), 502, "WECHAT_ERROR", "HTTP status 502"),
        (json!({ "kind": "http", "status": 500 }), 502, "WECHAT_ERROR", "HTTP status 500"),
        (json!({ "kind": "return_fail", "message": "参数格式校验错误" }), 502, "WECHAT_ERROR", "参数格式校验错误"),
        (
            json!({ "kind": "business", "code": "SYSTEMERROR", "description": "系统超时" }),
            502,
            "WECHAT_ERROR",
            "SYSTEMERROR",
        ),
        (json!({ "kind": "bad_sign" }), 502, "WECHAT_ERROR", "signature"),
    ];
    for (i, (fault, status, code, needle)) in cases.into_iter().enumerate() {
        let no = format!("UPSTREAM{i:02}");
        env.inject(json!([fault])).await;
        let (got, reply) = env.order(&no, 100, &openid).await;
        assert_eq!(got, status, "{no}: {reply}");
        assert_eq!(reply["error"]["code"], code, "{no}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle) && message.contains("retry"), "{no}: {message}");

        let stored = env.app.store.order(&no).unwrap().expect("the order is stored before WeChat is asked");
        assert_eq!(stored.status, OrderStatus::Created, "{no}");
        assert!(stored.last_error.is_some(), "{no}");

        // The retry (same outTradeNo, same contents) succeeds.
        let (got, reply) = env.order(&no, 100, &openid).await;
        assert_eq!(got, 200, "{no} retry: {reply}");
        let stored = env.app.store.order(&no).unwrap().unwrap();
        assert_eq!(stored.status, OrderStatus::Prepaid);
        assert_eq!(stored.last_error, None);
        assert!(stored.history.iter().any(|e| e.kind == "PREPAY_FAILED"));
    }

    // A paid order reported by WeChat as ORDERPAID is not retried as new.
    env.inject(json!([{ "kind": "business", "code": "ORDERPAID", "description": "该订单已支付" }])).await;
    let (got, reply) = env.order("UPSTREAM99", 100, &openid).await;
    assert_eq!(got, 409, "{reply}");
    assert_eq!(reply["error"]["code"], "ORDER_PAID");
    env.stop().await;
}

#[tokio::test]
async fn unreachable_wechat_is_a_clear_error() {
    let env = Env::start(Opts::default()).await;
    let openid = env.openid("code-unreachable").await;
    let (dir, sim) = (env.dir, env.sim);
    env.app.stop().await;
    let sim_url = sim.url();
    sim.stop().await;
    // A PayBridge whose WeChat is gone.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let text = common::config_text(&dir.path().join("data"), &addr, &sim_url, &Opts::default());
    let config = paybridge::config::Config::from_toml(&text, std::path::Path::new("t"), std::iter::empty()).unwrap();
    let app = paybridge::app::start_with_listener(config, listener).await.unwrap();
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/pay/unifiedOrder"))
        .json(&json!({ "outTradeNo": "UNREACH001", "totalFee": 1, "body": "b", "openid": openid }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("could not reach WeChat"), "{body}");
    assert_eq!(app.store.order("UNREACH001").unwrap().unwrap().status, OrderStatus::Created);
    app.stop().await;
}
