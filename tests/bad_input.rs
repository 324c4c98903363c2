//! Bad input gets a clear error, loses nothing, and the server keeps serving.

mod common;

use common::{Env, Opts};
use paybridge::store::Verdict;
use serde_json::json;

/// After the abuse, the whole flow still works.
async fn still_serving(env: &Env, no: &str) {
    let openid = env.openid(&format!("code-{no}")).await;
    let (status, body) = env.order(no, 1, &openid).await;
    assert_eq!(status, 200, "{body}");
    env.sim_pay(json!({ "out_trade_no": no })).await;
    env.wait_acknowledged(no).await;
    assert_eq!(env.get(&format!("/pay/orders/{no}?openid={openid}")).await.1["status"], "PAID");
}

#[tokio::test]
async fn bad_notify_bodies_are_refused_and_logged() {
    let env = Env::start(Opts::default()).await;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("malformed", b"<xml><return_code>SUCCESS</xml>".to_vec(), "malformed XML"),
        ("not xml", b"return_code=SUCCESS".to_vec(), "malformed XML"),
        (
            "doctype",
            b"<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><xml><out_trade_no>&xxe;</out_trade_no></xml>"
                .to_vec(),
            "DOCTYPE",
        ),
        ("invalid utf-8", b"<xml><return_code>SUCC\xff\xfeESS</return_code></xml>".to_vec(), "UTF-8"),
        ("empty", Vec::new(), "empty"),
    ];
    for (name, body, reason) in &cases {
        let (status, reply) = env.notify(body.clone()).await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(reply["return_code"], "FAIL", "{name}");
        let log = env.app.store.list_notifies(None, 1).unwrap().items;
        assert_eq!(log[0].verdict, Verdict::Rejected, "{name}");
        assert!(log[0].reason.contains(reason), "{name}: {}", log[0].reason);
        assert_eq!(&log[0].raw, body, "{name}: kept as received");
    }

    let huge = vec![b'x'; 10 * 1024 * 1024];
    let r = env.http.post(format!("{}/pay/notify", env.base)).body(huge).send().await.unwrap();
    assert_eq!(r.status(), 413);
    let text = r.text().await.unwrap();
    assert!(text.contains("BODY_TOO_LARGE") && text.contains("65536"), "{text}");

    still_serving(&env, "AFTERBAD01").await;
    env.stop().await;
}

#[tokio::test]
async fn bad_order_requests_get_clear_errors() {
    let env = Env::start(Opts::default()).await;
    let cases: Vec<(Vec<u8>, u16, &str, &str)> = vec![
        (b"{\"outTradeNo\": ".to_vec(), 400, "INVALID_JSON", "EOF"),
        (b"".to_vec(), 400, "INVALID_JSON", "JSON object"),
        (b"[1,2,3]".to_vec(), 400, "INVALID_JSON", "JSON object"),
        (b"{\"outTradeNo\":\"ABC123456\",\"body\":\"\xff\"}".to_vec(), 400, "INVALID_JSON", "UTF-8"),
        (br#"{"totalFee":1,"body":"b","openid":"o"}"#.to_vec(), 400, "INVALID_REQUEST", "outTradeNo is required"),
        (br#"{"outTradeNo":"ABC123456","totalFee":1.5,"body":"b","openid":"o"}"#.to_vec(), 400, "INVALID_JSON", "fen"),
        (br#"{"outTradeNo":"ABC123456","totalFee":"-1","body":"b","openid":"o"}"#.to_vec(), 400, "INVALID_JSON", "fen"),
        (
            br#"{"outTradeNo":"ABC123456","totalFee":0,"body":"b","openid":"o"}"#.to_vec(),
            400,
            "INVALID_REQUEST",
            "1 fen",
        ),
        (br#"{"outTradeNo":"ABC123456","body":"b","openid":"o"}"#.to_vec(), 400, "INVALID_REQUEST", "totalFee"),
        (
            br#"{"outTradeNo":"no spaces!","totalFee":1,"body":"b","openid":"o"}"#.to_vec(),
            400,
            "INVALID_REQUEST",
            "outTradeNo",
        ),
        (br#"{"outTradeNo":"ABC123456","totalFee":1,"body":"","openid":"o"}"#.to_vec(), 400, "INVALID_REQUEST", "body"),
        (vec![b' '; 10 * 1024 * 1024], 413, "BODY_TOO_LARGE", "16384"),
    ];
    for (body, status, code, needle) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        let (got, reply) = env.post_raw("/pay/unifiedOrder", body).await;
        assert_eq!(got, status, "{shown}: {reply}");
        assert_eq!(reply["error"]["code"], code, "{shown}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{shown}: {message}");
    }
    assert_eq!(env.app.store.order_count().unwrap(), 0, "nothing was stored");

    // A message that quotes input quotes a bounded part of it, however much was sent.
    let long = "9".repeat(12_000);
    let quoting = [
        format!(r#"{{"outTradeNo":"ABC123456","totalFee":"{long}","body":"b","openid":"o"}}"#),
        format!(r#"{{"outTradeNo":"ABC123456","quantity":"{long}","body":"b","openid":"o"}}"#),
        format!(r#"{{"outTradeNo":"ABC123456","productId":"{long}","openid":"o"}}"#),
    ];
    for body in quoting {
        let (status, reply) = env.post_raw("/pay/unifiedOrder", body.into_bytes()).await;
        assert!(status == 400 || status == 403, "{status}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.chars().count() <= 250, "{} characters: {message}", message.chars().count());
    }
    let (status, reply) = env.get(&format!("/pay/orders/{}?openid=o", "A".repeat(2000))).await;
    assert_eq!(status, 404, "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().len() < 200, "{reply}");

    let (status, reply) = env.get("/no/such/endpoint").await;
    assert_eq!(status, 404);
    assert_eq!(reply["error"]["code"], "NOT_FOUND");
    let r = env.http.get(format!("{}/pay/unifiedOrder", env.base)).send().await.unwrap();
    assert_eq!(r.status(), 405);

    still_serving(&env, "AFTERBAD02").await;
    env.stop().await;
}
