//! The whole flow against the simulator: openid → unifiedOrder → pay → notify → PAID.

mod common;

use common::{Env, Opts, MCH_KEY};
use paybridge::secret::Secret;
use paybridge::store::{OrderStatus, Verdict};
use paybridge::wechat::jsapi::PayParams;
use paybridge::wechat::sign::SignType;
use serde_json::json;

async fn full_flow(sign_type: SignType) {
    let env = Env::start(Opts { sign_type, ..Opts::default() }).await;

    let (status, login) = env.get("/pay/openid?code=code-1").await;
    assert_eq!(status, 200);
    assert_eq!(login.as_object().unwrap().keys().collect::<Vec<_>>(), ["openid"], "only the openid: {login}");
    let openid = login["openid"].as_str().unwrap();
    assert_eq!(openid, env.sim.simulator.openid_for("code-1"));

    let (status, reply) = env.order("FLOW000001", 1234, openid).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["outTradeNo"], "FLOW000001");
    assert_eq!(reply["signType"], sign_type.as_str());
    assert_eq!(reply["sign"], reply["paySign"]);
    assert_eq!(reply["package"], format!("prepay_id={}", reply["prepayId"].as_str().unwrap()));
    assert_eq!(reply["sandbox"], false);
    // The paySign is what WeChat's client will check.
    let params: PayParams = serde_json::from_value(reply.clone()).unwrap();
    assert!(params.verify(&Secret::new(MCH_KEY)));
    assert!(!params.verify(&Secret::new("ffffffffffffffffffffffffffffffff")));
    // The server, not the client, chose the notify URL and the amount came through.
    let sim_order = env.sim.simulator.report("FLOW000001").unwrap();
    assert_eq!(sim_order.total_fee, 1234);
    assert_eq!(sim_order.prepay_id, reply["prepayId"]);

    // Only the payer reads the order: by openid or by the order's token.
    let (status, refused) = env.get("/pay/orders/FLOW000001").await;
    assert_eq!(status, 400, "no proof: {refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("?openid="), "{refused}");
    for wrong in ["openid=oSomeoneElse", "token=00000000000000000000000000000000"] {
        let (status, body) = env.get(&format!("/pay/orders/FLOW000001?{wrong}")).await;
        assert_eq!(status, 404, "{wrong}: looks like no order at all: {body}");
    }
    let token = reply["orderToken"].as_str().unwrap();
    assert_eq!(token.len(), 32);
    let (_, before) = env.get(&format!("/pay/orders/FLOW000001?token={token}")).await;
    assert_eq!(before["status"], "PREPAID");
    assert_eq!(before["paid"], false);

    let transaction_id = env.sim_pay(json!({ "out_trade_no": "FLOW000001" })).await;
    env.wait_acknowledged("FLOW000001").await;

    let (status, view) = env.get(&format!("/pay/orders/FLOW000001?openid={openid}")).await;
    assert_eq!(status, 200);
    assert_eq!(view["status"], "PAID");
    assert_eq!(view["paid"], true);
    assert_eq!(view["totalFee"], 1234);
    assert_eq!(view["transactionId"], transaction_id.as_str());
    assert!(view.get("openid").is_none(), "no openid in the public view: {view}");

    let log = env.notifies("FLOW000001");
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].verdict, Verdict::Paid);
    assert_eq!(log[0].peer.as_deref().map(|p| p.starts_with("127.0.0.1:")), Some(true));
    let order = env.app.store.order("FLOW000001").unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::Paid);
    let kinds: Vec<_> = order.history.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["CREATED", "PREPAY", "PAID"]);
    env.stop().await;
}

#[tokio::test]
async fn full_flow_md5() {
    full_flow(SignType::Md5).await;
}

#[tokio::test]
async fn full_flow_hmac_sha256() {
    full_flow(SignType::HmacSha256).await;
}

#[tokio::test]
async fn repeated_tap_returns_the_same_prepay_and_different_contents_are_refused() {
    let env = Env::start(Opts::default()).await;
    let openid = env.openid("code-tap").await;
    let (s1, first) = env.order("TAP0000001", 500, &openid).await;
    let (s2, second) = env.order("TAP0000001", 500, &openid).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first, second, "a repeated tap gets the very same answer");

    let (status, err) = env.order("TAP0000001", 501, &openid).await;
    assert_eq!(status, 409);
    assert_eq!(err["error"]["code"], "ORDER_CONFLICT");
    let order = env.app.store.order("TAP0000001").unwrap().unwrap();
    assert_eq!(order.total_fee, 500);
    assert_eq!(order.history.iter().filter(|e| e.kind == "PREPAY").count(), 1, "one unified order only");

    env.sim_pay(json!({ "out_trade_no": "TAP0000001" })).await;
    env.wait_acknowledged("TAP0000001").await;
    let (status, err) = env.order("TAP0000001", 500, &openid).await;
    assert_eq!(status, 409);
    assert_eq!(err["error"]["code"], "ORDER_PAID");
    env.stop().await;
}

#[tokio::test]
async fn client_amounts_are_refused_unless_configured() {
    let env = Env::start(Opts { accept_client_amount: false, ..Opts::default() }).await;
    let (status, err) = env.order("AMOUNT0001", 100, "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o").await;
    assert_eq!(status, 403);
    assert_eq!(err["error"]["code"], "CLIENT_AMOUNT_NOT_ALLOWED");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("orders.accept_client_amount") && message.contains("README"), "{message}");
    assert!(env.app.store.order("AMOUNT0001").unwrap().is_none(), "nothing stored");
    assert!(env.sim.simulator.report("AMOUNT0001").is_none(), "WeChat never asked");
    env.stop().await;
}

#[tokio::test]
async fn login_errors_are_clear() {
    let env = Env::start(Opts::default()).await;
    let (status, body) = env.get("/pay/openid?code=invalid-code").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "INVALID_LOGIN_CODE");
    assert!(body["error"]["message"].as_str().unwrap().contains("40029"));

    let (status, _) = env.get("/pay/openid?code=once").await;
    assert_eq!(status, 200);
    let (status, body) = env.get("/pay/openid?code=once").await;
    assert_eq!(status, 400, "a used code: {body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("40163"));

    let (status, body) = env.get("/pay/openid").await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("code"));
    env.stop().await;
}
