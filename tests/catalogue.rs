//! The merchant's catalogue as the source of the amount: mini-program B
//! sends a product id and a quantity, PayBridge sets the price and the
//! description, and a config reload (SIGHUP) changes the catalogue.

mod common;
#[path = "common/platform_a.rs"]
mod platform_a;
#[path = "common/process.rs"]
mod process;

use std::time::Duration;

use common::{config_text, login, start_simulator, Env, Opts};
use paybridge::store::{OrderSource, OrderStatus};
use process::Proc;
use serde_json::{json, Value};

const PRODUCTS: &str = "[[products]]\nid = \"vip-month\"\nname = \"会员月卡\"\nprice = 1990\n\
                        [[products]]\nid = \"lesson\"\nname = \"单次体验课\"\nprice = 990\n";

/// A live merchant that takes no client amount, only its catalogue.
fn catalogue_only() -> Opts {
    Opts { accept_client_amount: false, extra: PRODUCTS.into(), ..Opts::default() }
}

async fn order(env: &Env, body: Value) -> (u16, Value) {
    env.post_json("/pay/unifiedOrder", &body).await
}

#[tokio::test]
async fn a_product_order_charges_the_catalogue_price() {
    let env = Env::start(catalogue_only()).await;
    let openid = env.openid("code-cat-1").await;
    let (status, reply) = order(
        &env,
        json!({ "outTradeNo": "CAT0000001", "productId": "vip-month", "quantity": 2, "openid": openid,
                "body": "whatever the client says" }),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let stored = env.app.store.order("CAT0000001").unwrap().unwrap();
    assert_eq!(stored.total_fee, 3980);
    assert_eq!(stored.body, "会员月卡 ×2", "the description is the merchant's");
    assert_eq!(stored.source, OrderSource::Product { id: "vip-month".into(), quantity: 2 });
    // WeChat is asked for exactly that.
    assert_eq!(env.sim.simulator.report("CAT0000001").unwrap().total_fee, 3980);

    // The same amount sent along is fine; the same tap again gets the same answer.
    let again = json!({ "outTradeNo": "CAT0000001", "productId": "vip-month", "quantity": 2, "totalFee": 3980,
                        "openid": openid });
    let (status, second) = order(&env, again).await;
    assert_eq!((status, &second["paySign"]), (200, &reply["paySign"]));

    env.sim_pay(json!({ "out_trade_no": "CAT0000001" })).await;
    env.wait_acknowledged("CAT0000001").await;
    assert_eq!(env.app.store.order("CAT0000001").unwrap().unwrap().status, OrderStatus::Paid);

    // The admin page shows where the amount came from, and the catalogue.
    let admin = login(&env).await;
    let (_, detail) = admin.get("/admin/api/orders/CAT0000001").await;
    assert_eq!(detail["source"], "product vip-month ×2");
    let (_, system) = admin.get("/admin/api/system").await;
    assert_eq!(system["products"][0], json!({ "id": "vip-month", "name": "会员月卡", "price": 1990 }));
    assert_eq!(system["products"].as_array().unwrap().len(), 2);
    env.stop().await;
}

#[tokio::test]
async fn a_client_cannot_choose_the_price_of_a_product() {
    let env = Env::start(catalogue_only()).await;
    let openid = env.openid("code-cat-2").await;
    let cases = [
        (
            json!({ "outTradeNo": "CATBAD0001", "productId": "vip-month", "totalFee": 1, "openid": openid }),
            409,
            "AMOUNT_MISMATCH",
        ),
        (json!({ "outTradeNo": "CATBAD0002", "productId": "nope", "openid": openid }), 400, "catalogue"),
        (
            json!({ "outTradeNo": "CATBAD0003", "productId": "lesson", "quantity": 0, "openid": openid }),
            400,
            "quantity",
        ),
        (
            json!({ "outTradeNo": "CATBAD0004", "productId": "lesson", "quantity": 1000, "openid": openid }),
            400,
            "quantity",
        ),
        (
            json!({ "outTradeNo": "CATBAD0005", "quantity": 2, "totalFee": 1, "body": "b", "openid": openid }),
            400,
            "productId",
        ),
        (
            json!({ "outTradeNo": "CATBAD0006", "totalFee": 1, "body": "b", "openid": openid }),
            403,
            "CLIENT_AMOUNT_NOT_ALLOWED",
        ),
    ];
    for (body, status, needle) in cases {
        let (got, reply) = order(&env, body.clone()).await;
        assert_eq!(got, status, "{body}: {reply}");
        assert!(reply.to_string().contains(needle), "{body}: {reply}");
        let no = body["outTradeNo"].as_str().unwrap();
        assert!(env.app.store.order(no).unwrap().is_none(), "{no}: nothing stored");
    }
    // An order number already used for another product is a conflict.
    assert_eq!(
        order(&env, json!({ "outTradeNo": "CATDUP0001", "productId": "lesson", "openid": openid })).await.0,
        200
    );
    let (status, reply) =
        order(&env, json!({ "outTradeNo": "CATDUP0001", "productId": "vip-month", "openid": openid })).await;
    assert_eq!(status, 409, "{reply}");
    assert_eq!(reply["error"]["code"], "ORDER_CONFLICT");
    env.stop().await;
}

/// SIGHUP reloads the catalogue and the platforms from the config file; a
/// config that no longer loads changes nothing.
#[tokio::test]
async fn sighup_reloads_the_catalogue() {
    let sim = start_simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", process::free_tcp_port());
    let config = dir.path().join("paybridge.toml");
    let opts = Opts { accept_client_amount: false, ..Opts::default() };
    let base_text = config_text(&dir.path().join("data"), &addr, &sim.url(), &opts);
    std::fs::write(&config, format!("{base_text}[[products]]\nid = \"old\"\nname = \"Old\"\nprice = 100\n")).unwrap();
    let mut proc = Proc::spawn(&["serve", "--config", config.to_str().unwrap()], "info");
    proc.line("PayBridge listening on").await;
    let http = reqwest::Client::new();
    let login: Value =
        http.get(format!("http://{addr}/pay/openid?code=hup")).send().await.unwrap().json().await.unwrap();
    let place = |no: &str, product: &str| {
        let body = json!({ "outTradeNo": no, "productId": product, "openid": login["openid"] });
        let request = http.post(format!("http://{addr}/pay/unifiedOrder")).json(&body);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(place("HUP0000001", "new").await, 400, "not in the catalogue yet");
    let a = platform_a::Backend::new(&format!("http://{addr}"));
    assert_eq!(a.create("A-HUP-1", 100, "x").await.0, 401, "no such platform yet");

    let reloaded =
        |proc: &Proc, n: usize| proc.stderr.lock().unwrap().matches("catalogue and platforms reloaded").count() >= n;
    let platform = platform_a::platform_toml(platform_a::PLATFORM, platform_a::KEY, "http://127.0.0.1:9/hook");
    let text = format!("{base_text}[[products]]\nid = \"new\"\nname = \"New\"\nprice = 250\n{platform}");
    std::fs::write(&config, text).unwrap();
    proc.signal("HUP");
    wait_for(|| reloaded(&proc, 1)).await;
    assert_eq!(place("HUP0000002", "new").await, 200);
    assert_eq!(place("HUP0000003", "old").await, 400, "gone from the catalogue");
    assert_eq!(a.create("A-HUP-1", 100, "x").await.0, 201, "the new platform is served without a restart");

    // A broken config: logged, the catalogue stays as it was.
    std::fs::write(&config, format!("{base_text}[[products]]\nid = \"bad id\"\nname = \"x\"\nprice = 1\n")).unwrap();
    proc.signal("HUP");
    wait_for(|| proc.stderr.lock().unwrap().contains("nothing changed")).await;
    assert_eq!(place("HUP0000004", "new").await, 200);
    assert!(proc.terminate().await.success());
    sim.stop().await;
}

async fn wait_for(done: impl Fn() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("it did not happen within 5 s");
}
