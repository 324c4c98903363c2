//! The admin API: authentication everywhere, CSRF, login limits, paging
//! under concurrent inserts, filters, search, CSV and the overview.

mod common;

use std::collections::BTreeSet;

use common::{login, notify_fields, signed_xml, Env, Opts, ADMIN_PASSWORD, MCH_KEY};
use paybridge::wechat::sign::SignType;
use serde_json::json;

const ENDPOINTS: &[&str] = &[
    "/admin/api/session",
    "/admin/api/overview",
    "/admin/api/orders",
    "/admin/api/orders/ANYTHING01",
    "/admin/api/notifies",
    "/admin/api/system",
    "/admin/api/export/orders.csv",
];

#[tokio::test]
async fn every_endpoint_needs_a_session_and_changes_need_csrf() {
    let env = Env::start(Opts::default()).await;
    let openid = env.openid("code-auth").await;
    env.order("SECRET0001", 100, &openid).await;
    let anonymous = reqwest::Client::new();
    for path in ENDPOINTS {
        let r = anonymous.get(format!("{}{path}", env.base)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    // The page itself is a shell: no data before login.
    let page = anonymous.get(format!("{}/admin", env.base)).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("login-form") && !html.contains("SECRET0001"));
    assert!(!html.contains("<script>"), "no inline script");

    // Wrong password, cross-site login, form posts.
    let r = anonymous
        .post(format!("{}/admin/api/login", env.base))
        .json(&json!({ "password": "nope" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = anonymous
        .post(format!("{}/admin/api/login", env.base))
        .header("origin", "https://evil.example")
        .json(&json!({ "password": ADMIN_PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "cross-site login");
    let r = anonymous
        .post(format!("{}/admin/api/login", env.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("password=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415, "a form post cannot log in");

    let admin = login(&env).await;
    for path in ENDPOINTS {
        let r = admin.http.get(format!("{}{path}", env.base)).send().await.unwrap();
        let expected = if path.contains("ANYTHING01") { 404 } else { 200 };
        assert_eq!(r.status(), expected, "{path}");
    }
    // Logout needs the CSRF token and a same-site origin.
    let logout = format!("{}/admin/api/logout", env.base);
    assert_eq!(admin.http.post(&logout).send().await.unwrap().status(), 403);
    assert_eq!(admin.http.post(&logout).header("x-csrf-token", "forged").send().await.unwrap().status(), 403);
    let cross = admin.http.post(&logout).header("x-csrf-token", &admin.csrf).header("origin", "https://evil.example");
    assert_eq!(cross.send().await.unwrap().status(), 403);
    assert_eq!(admin.get("/admin/api/overview").await.0, 200, "still logged in");
    let r = admin.http.post(&logout).header("x-csrf-token", &admin.csrf).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(admin.get("/admin/api/overview").await.0, 401, "logged out");
    env.stop().await;
}

#[tokio::test]
async fn failed_logins_are_limited_per_address() {
    let env = Env::start(Opts::default()).await;
    let http = reqwest::Client::new();
    let url = format!("{}/admin/api/login", env.base);
    for _ in 0..5 {
        let r = http.post(&url).json(&json!({ "password": "guess" })).send().await.unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = http.post(&url).json(&json!({ "password": ADMIN_PASSWORD })).send().await.unwrap();
    assert_eq!(r.status(), 429, "even the right password waits");
    assert!(r.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() > 60);
    env.stop().await;
}

#[tokio::test]
async fn pages_stay_correct_while_orders_arrive() {
    let env = Env::start(Opts::default()).await;
    let openid = env.openid("code-paging").await;
    let mut expected = Vec::new();
    for i in 0..60 {
        let no = format!("PAGE{i:06}");
        assert_eq!(env.order(&no, 100 + i, &openid).await.0, 200);
        expected.push(no);
    }
    expected.reverse(); // newest first
    let admin = login(&env).await;

    // Page through while new orders keep arriving between pages.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut inserted = 0;
    loop {
        let (_, page) = admin.get(&format!("/admin/api/orders?limit=9&cursor={cursor}")).await;
        seen.extend(page["items"].as_array().unwrap().iter().map(|o| o["outTradeNo"].as_str().unwrap().to_owned()));
        for _ in 0..3 {
            let no = format!("LATE{inserted:06}");
            assert_eq!(env.order(&no, 1, &openid).await.0, 200);
            inserted += 1;
        }
        match page["next"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, expected, "every order once, newest first; later ones never shift the pages");
    let now = admin.all("").await;
    assert_eq!(now.len(), 60 + inserted);
    assert_eq!(now.iter().collect::<BTreeSet<_>>().len(), now.len(), "no duplicates");
    env.stop().await;
}

#[tokio::test]
async fn filters_search_csv_and_overview() {
    let env = Env::start(Opts::default()).await;
    let admin = login(&env).await;
    let alice = env.openid("code-alice").await;
    let bob = env.openid("code-bob").await;
    for (no, fee, who) in [("FILT000001", 1990, &alice), ("FILT000002", 500, &bob), ("FILT000003", 7, &alice)] {
        assert_eq!(env.order(no, fee, who).await.0, 200);
    }
    // A body that needs quoting and one that a spreadsheet would run as a formula.
    let tricky = json!({ "outTradeNo": "FILT000004", "totalFee": 1, "body": "=HYPERLINK(\"x\"),\"甲\"", "openid": bob,
                "attach": "\t=cmd|' /C calc'!A0" });
    assert_eq!(env.post_json("/pay/unifiedOrder", &tricky).await.0, 200);
    let tx1 = env.sim_pay(json!({ "out_trade_no": "FILT000001" })).await;
    env.sim_pay(json!({ "out_trade_no": "FILT000003" })).await;
    env.wait_acknowledged("FILT000001").await;
    env.wait_acknowledged("FILT000003").await;
    // A forged notify shows up as a problem.
    let forged = signed_xml(
        notify_fields("FILT000002", 500, "4200000000000000000000000009"),
        "f".repeat(32).as_str(),
        SignType::Md5,
    );
    env.notify(forged).await;

    assert_eq!(admin.all("status=PAID").await, ["FILT000003", "FILT000001"]);
    assert_eq!(admin.all("status=PREPAID").await, ["FILT000004", "FILT000002"]);
    let today = paybridge::admin::day_string(paybridge::store::beijing_day(paybridge::pay::now_ms()));
    let tomorrow = paybridge::admin::day_string(paybridge::store::beijing_day(paybridge::pay::now_ms()) + 1);
    assert_eq!(admin.all(&format!("from={today}&to={today}")).await.len(), 4);
    assert!(admin.all(&format!("from={tomorrow}")).await.is_empty());
    assert_eq!(admin.all(&format!("status=PAID&to={today}")).await.len(), 2);
    assert_eq!(admin.all("q=FILT000002").await, ["FILT000002"]);
    assert_eq!(admin.all(&format!("q={tx1}")).await, ["FILT000001"], "by transaction_id");
    assert_eq!(admin.all(&format!("q={alice}")).await, ["FILT000003", "FILT000001"], "by openid");
    assert_eq!(admin.all(&format!("q={alice}&status=PREPAID")).await, Vec::<String>::new());
    assert!(admin.all("q=NOTHING-LIKE-IT").await.is_empty());
    for bad in ["status=PENDING", "from=2026-13-01", "limit=0", "limit=1000"] {
        let (status, body) = admin.get(&format!("/admin/api/orders?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    let (status, content_type, csv) = admin.text("/admin/api/export/orders.csv?status=PAID").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/csv; charset=utf-8");
    assert!(csv.starts_with('\u{feff}'), "BOM for Excel");
    let lines: Vec<&str> = csv.trim_start_matches('\u{feff}').lines().collect();
    assert_eq!(
        lines[0],
        "out_trade_no,status,amount_yuan,created_at,paid_at,transaction_id,openid,body,attach,sandbox"
    );
    assert_eq!(lines.len(), 3);
    assert!(lines[1].starts_with("FILT000003,PAID,0.07,") && lines[2].starts_with("FILT000001,PAID,19.90,"), "{csv}");
    assert!(lines[2].contains(&tx1) && lines[2].contains("支付测试"));
    let (_, _, all) = admin.text("/admin/api/export/orders.csv").await;
    assert!(all.contains("\"'=HYPERLINK(\"\"x\"\"),\"\"甲\"\"\""), "quoted and defused: {all}");
    assert!(all.contains(",'\t=cmd|' /C calc'!A0,"), "a TAB before a formula is defused too: {all}");

    let (_, overview) = admin.get("/admin/api/overview").await;
    assert_eq!(overview["today"], json!({ "count": 2, "fen": 1997 }));
    assert_eq!(overview["month"]["fen"], 1997);
    // Refunds that went through sit next to the paid totals (none here).
    assert_eq!(overview["refundedToday"], json!({ "count": 0, "fen": 0 }));
    assert_eq!(overview["refundedMonth"], json!({ "count": 0, "fen": 0 }));
    assert_eq!((overview["reconciliationAttention"].as_u64(), overview["reconciledDays"].as_u64()), (Some(0), Some(0)));
    assert_eq!(overview["pending"], 2);
    assert_eq!(overview["rejectedNotifiesToday"], 1);
    let days = overview["days"].as_array().unwrap();
    assert_eq!(days.len(), 30);
    assert_eq!(days[29], json!({ "date": today, "count": 2, "fen": 1997 }));

    let (_, detail) = admin.get("/admin/api/orders/FILT000001").await;
    assert_eq!(detail["transactionId"], tx1.as_str());
    assert_eq!(detail["notifies"][0]["verdict"], "PAID");
    assert!(detail["notifies"][0]["raw"].as_str().unwrap().contains("<transaction_id>"));
    let (_, log) = admin.get("/admin/api/notifies").await;
    assert_eq!(log["items"][0]["verdict"], "REJECTED", "newest first, rejected ones included");

    let (_, system) = admin.get("/admin/api/system").await;
    assert_eq!(system["appid"], common::APPID);
    assert_eq!(system["mchId"], common::MCH_ID);
    let text = system.to_string();
    assert!(!text.contains(MCH_KEY) && !text.contains(common::APP_SECRET), "no secret in the system view");
    env.stop().await;
}
