//! The WeChat client against the simulator: every API, both algorithms,
//! WeChat's business errors as typed errors.

mod common;

use common::{start_simulator, APPID, APP_SECRET, MCH_ID, MCH_KEY};
use paybridge::config::{PayApi, WechatConfig};
use paybridge::secret::Secret;
use paybridge::wechat::client::{UnifiedOrder, WechatClient, WechatError};
use paybridge::wechat::sign::SignType;
use serde_json::json;
use url::Url;

fn client(sim_url: &str, sign_type: SignType) -> WechatClient {
    let url = Url::parse(sim_url).unwrap();
    WechatClient::new(&WechatConfig {
        appid: APPID.into(),
        app_secret: Secret::new(APP_SECRET),
        mch_id: MCH_ID.into(),
        api: PayApi::V2 { mch_key: Secret::new(MCH_KEY), sign_type },
        pay_base_url: url.clone(),
        sns_base_url: url,
        notify_url: Url::parse("http://127.0.0.1:9/pay/notify").unwrap(),
        timeout: std::time::Duration::from_secs(2),
        refund_tls: None,
    })
    .unwrap()
}

/// `openid` must be one the simulator issued: it refuses any other, as WeChat does.
fn order<'a>(no: &'a str, openid: &'a str) -> UnifiedOrder<'a> {
    UnifiedOrder {
        out_trade_no: no,
        total_fee: 88,
        body: "b",
        attach: "",
        openid,
        spbill_create_ip: "127.0.0.1",
        time_expire: None,
    }
}

#[tokio::test]
async fn order_query_and_close_order() {
    let sim = start_simulator().await;
    for sign_type in [SignType::Md5, SignType::HmacSha256] {
        let c = client(&sim.url(), sign_type);
        let openid = c.jscode2session(&format!("code-{}", sign_type.as_str())).await.unwrap().openid;
        let paid = format!("QUERY{}", sign_type.as_str().len());
        let prepay_id = c.unified_order(&order(&paid, &openid)).await.unwrap();
        assert!(prepay_id.starts_with("wx"));
        let q = c.order_query(&paid).await.unwrap();
        assert_eq!(q["trade_state"], "NOTPAY");

        let r = reqwest::Client::new()
            .post(format!("{}/sandbox/pay", sim.url()))
            .json(&json!({ "out_trade_no": paid }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let q = c.order_query(&paid).await.unwrap();
        assert_eq!(q["trade_state"], "SUCCESS");
        assert_eq!(q["total_fee"], "88");
        assert_eq!(q["transaction_id"].len(), 28);
        let e = c.close_order(&paid).await.unwrap_err();
        assert!(matches!(&e, WechatError::Business { code, .. } if code == "ORDERPAID"), "{e}");

        let open = format!("CLOSE{}", sign_type.as_str().len());
        c.unified_order(&order(&open, &openid)).await.unwrap();
        c.close_order(&open).await.unwrap();
        assert_eq!(c.order_query(&open).await.unwrap()["trade_state"], "CLOSED");
        let e = c.close_order(&open).await.unwrap_err();
        assert!(matches!(&e, WechatError::Business { code, .. } if code == "ORDERCLOSED"), "{e}");
        let e = c.unified_order(&order(&open, &openid)).await.unwrap_err();
        assert!(matches!(&e, WechatError::Business { code, .. } if code == "ORDERCLOSED"), "{e}");
    }
    let c = client(&sim.url(), SignType::Md5);
    let e = c.order_query("NOSUCHORDER").await.unwrap_err();
    assert!(matches!(&e, WechatError::Business { code, .. } if code == "ORDERNOTEXIST"), "{e}");
    sim.stop().await;
}

#[tokio::test]
async fn a_wrong_key_is_refused_by_the_simulator() {
    let sim = start_simulator().await;
    let url = Url::parse(&sim.url()).unwrap();
    let wrong = WechatClient::new(&WechatConfig {
        appid: APPID.into(),
        app_secret: Secret::new("wrong"),
        mch_id: MCH_ID.into(),
        api: PayApi::V2 { mch_key: Secret::new("ffffffffffffffffffffffffffffffff"), sign_type: SignType::Md5 },
        pay_base_url: url.clone(),
        sns_base_url: url,
        notify_url: Url::parse("http://127.0.0.1:9/pay/notify").unwrap(),
        timeout: std::time::Duration::from_secs(2),
        refund_tls: None,
    })
    .unwrap();
    let e = wrong.unified_order(&order("WRONGKEY01", "oNeverChecked")).await.unwrap_err();
    assert!(matches!(&e, WechatError::ReturnFail(m) if m == "签名错误"), "{e}");
    let e = wrong.jscode2session("c").await.unwrap_err();
    assert!(matches!(&e, WechatError::Login { errcode: 40125, .. }), "{e}");
    assert!(!e.to_string().contains("wrong"), "no secret in the error: {e}");
    sim.stop().await;
}
