//! WeChat Pay v3's protocol layer: the client against the simulator's v3
//! side over real HTTP. Each side checks the other's signatures as WeChat
//! and a careful merchant do. (The whole payment flow in v3 is in
//! `payment_v3.rs`.)

use std::time::Duration;

use paybridge::sandbox::v3::{self, SimulatorV3};
use paybridge::secret::Secret;
use paybridge::wechat::client::WechatError;
use paybridge::wechat::jsapi::PayParams;
use paybridge::wechat::v3::api::Signer;
use paybridge::wechat::v3::client::{Order, V3Client};
use paybridge::wechat::v3::crypto::{MerchantKey, PublicKey};
use paybridge::wechat::v3::trust::Trust;
use paybridge::wechat::v3::verify::Verifier;

const MCHID: &str = "1900009191";
const APPID: &str = "wxd930ea5d5a258f4f";

async fn simulator() -> (SimulatorV3, url::Url) {
    let sim = SimulatorV3::sandbox(MCHID, APPID);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(paybridge::server::run(listener, v3::routes(sim.clone()), Default::default(), std::future::pending()));
    (sim, url)
}

fn client(base: &url::Url, key_pem: &str, trusted: &str) -> V3Client {
    let signer = Signer {
        mchid: MCHID.into(),
        serial_no: v3::MERCHANT_SERIAL.into(),
        key: MerchantKey::from_pem(&Secret::new(key_pem)).unwrap().into(),
        public_key_id: Some(v3::WECHATPAY_PUBLIC_KEY_ID.into()),
    };
    let trust = Trust::new(Some((v3::WECHATPAY_PUBLIC_KEY_ID.into(), PublicKey::from_pem(trusted).unwrap())));
    V3Client::new(
        base.clone(),
        APPID,
        "https://pay.example.com/pay/notify",
        signer,
        std::sync::Arc::new(trust),
        Duration::from_secs(5),
    )
    .unwrap()
}

fn order(no: &str, total: u64) -> Order<'_> {
    Order {
        out_trade_no: no,
        total,
        description: "会员月卡",
        attach: "",
        openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
        time_expire: None,
    }
}

fn business(e: WechatError) -> String {
    match e {
        WechatError::Business { code, .. } => code,
        other => panic!("expected a business error, got {other:?}"),
    }
}

#[tokio::test]
async fn order_query_and_close_signed_both_ways() {
    let (sim, base) = simulator().await;
    let c = client(&base, v3::MERCHANT_PRIVATE_KEY, v3::WECHATPAY_PUBLIC_KEY);

    let prepay = c.jsapi(&order("V3ORDER0001", 1990)).await.unwrap();
    assert!(prepay.starts_with("wx") && prepay.len() == 36, "{prepay}");
    assert_eq!(c.jsapi(&order("V3ORDER0001", 1990)).await.unwrap(), prepay, "an identical re-submission");
    assert_eq!(business(c.jsapi(&order("V3ORDER0001", 1)).await.unwrap_err()), "INVALID_REQUEST");
    assert_eq!(business(c.jsapi(&order("V3ORDER0002", 0)).await.unwrap_err()), "PARAM_ERROR");

    // The mini-program's parameters are the merchant's: the WeChat client accepts them.
    let key = MerchantKey::from_pem(&Secret::new(v3::MERCHANT_PRIVATE_KEY)).unwrap();
    let p = PayParams::rsa(APPID, &prepay, &key, 1_764_226_800, "n0nce".into());
    assert!(sim.pay_sign_valid(&p.app_id, &p.time_stamp, &p.nonce_str, &p.package, &p.pay_sign));
    assert!(!sim.pay_sign_valid(&p.app_id, &p.time_stamp, &p.nonce_str, "prepay_id=wx0", &p.pay_sign));

    // Paid, it is found by WeChat's transaction id too.
    c.jsapi(&order("V3ORDER0009", 990)).await.unwrap();
    sim.pay("V3ORDER0009", paybridge::pay::now_ms() / 1000).unwrap();
    let paid = c.query("V3ORDER0009").await.unwrap();
    let tx = paid["transaction_id"].as_str().unwrap();
    assert_eq!(paid["trade_state"], "SUCCESS");
    assert_eq!(c.query_transaction(tx).await.unwrap()["out_trade_no"], "V3ORDER0009");
    assert_eq!(business(c.query_transaction("4200000000000000000000000000").await.unwrap_err()), "ORDER_NOT_EXIST");

    let found = c.query("V3ORDER0001").await.unwrap();
    assert_eq!((found["trade_state"].as_str(), found["amount"]["total"].as_u64()), (Some("NOTPAY"), Some(1990)));
    c.close("V3ORDER0001").await.unwrap();
    assert_eq!(sim.state("V3ORDER0001"), Some("CLOSED"));
    assert_eq!(business(c.close("V3ORDER0001").await.unwrap_err()), "ORDER_CLOSED");
    assert_eq!(business(c.jsapi(&order("V3ORDER0001", 1990)).await.unwrap_err()), "ORDER_CLOSED");
    assert_eq!(business(c.query("V3NOSUCH01").await.unwrap_err()), "ORDER_NOT_EXIST");
}

/// A request signed with another key is refused by "WeChat"; a reply signed
/// with another key is not believed by PayBridge: no prepay id comes out.
#[tokio::test]
async fn neither_side_trusts_a_wrong_signature() {
    let (sim, base) = simulator().await;
    // Signed with a key that is not the merchant's (here: the simulator's own).
    let wrong_signer =
        client(&base, include_str!("../src/sandbox/keys/wechatpay-private.pem"), v3::WECHATPAY_PUBLIC_KEY);
    assert_eq!(business(wrong_signer.jsapi(&order("V3ORDER0003", 100)).await.unwrap_err()), "SIGN_ERROR");
    assert_eq!(sim.state("V3ORDER0003"), None, "nothing was created");

    let c = client(&base, v3::MERCHANT_PRIVATE_KEY, v3::WECHATPAY_PUBLIC_KEY);
    sim.sign_with_other_key(true);
    match c.jsapi(&order("V3ORDER0004", 100)).await {
        Err(WechatError::BadReply(reason)) => assert!(reason.contains("did not verify"), "{reason}"),
        other => panic!("a reply with a bad signature was trusted: {other:?}"),
    }
    sim.sign_with_other_key(false);
    // Trusting only another key, even a correct reply is refused.
    let suspicious = client(&base, v3::MERCHANT_PRIVATE_KEY, v3::MERCHANT_PUBLIC_KEY);
    assert!(matches!(suspicious.jsapi(&order("V3ORDER0005", 100)).await, Err(WechatError::BadReply(_))));
}

/// The simulator's payment notify, read the way PayBridge's notify handler
/// will: verified over the raw body with the WeChat Pay public key, then
/// decrypted with the APIv3 key; one changed byte and it is refused.
#[tokio::test]
async fn the_simulators_notify_verifies_and_opens() {
    use paybridge::wechat::v3::crypto::ApiV3Key;
    use paybridge::wechat::v3::notify;
    use paybridge::wechat::v3::verify::{SignedHeaders, VerifyError};
    let (sim, base) = simulator().await;
    let c = client(&base, v3::MERCHANT_PRIVATE_KEY, v3::WECHATPAY_PUBLIC_KEY);
    c.jsapi(&order("V3PAID0001", 990)).await.unwrap();
    let now = paybridge::pay::now_ms() / 1000;
    let paid = sim.pay("V3PAID0001", now).unwrap();
    assert!(sim.pay("V3PAID0001", now).is_err(), "paid once");

    let header = |name: &str| paid.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
    let headers = SignedHeaders {
        timestamp: header("wechatpay-timestamp"),
        nonce: header("wechatpay-nonce"),
        signature: header("wechatpay-signature"),
        serial: header("wechatpay-serial"),
    };
    let mut verifier = Verifier::default();
    verifier.add(v3::WECHATPAY_PUBLIC_KEY_ID, PublicKey::from_pem(v3::WECHATPAY_PUBLIC_KEY).unwrap());
    verifier.verify(&headers, &paid.body, now).unwrap();
    let mut changed = paid.body.clone();
    let at = changed.len() / 2;
    changed[at] ^= 1;
    assert!(matches!(verifier.verify(&headers, &changed, now), Err(VerifyError::BadSignature(_))));

    let envelope = notify::envelope(&paid.body).unwrap();
    assert_eq!(envelope.event_type, "TRANSACTION.SUCCESS");
    let key = ApiV3Key::new(&Secret::new(v3::APIV3_KEY)).unwrap();
    let transaction = notify::transaction(&envelope, &key).unwrap();
    assert_eq!((transaction.out_trade_no.as_str(), transaction.amount.total), ("V3PAID0001", 990));
    assert_eq!((transaction.mchid.as_str(), transaction.appid.as_str()), (MCHID, APPID));
    assert_eq!(transaction.trade_state, "SUCCESS");
    assert!(transaction.transaction_id.starts_with("4200000") && transaction.transaction_id.len() == 28);
    assert_eq!(c.query("V3PAID0001").await.unwrap()["trade_state"], "SUCCESS");
    assert_eq!(business(c.close("V3PAID0001").await.unwrap_err()), "ORDER_PAID");
}
