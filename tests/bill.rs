//! The daily bill (对账) in both API versions, against the simulator's
//! bills in WeChat's format: a day not over yet, a matching day, each kind
//! of difference, a malformed bill, gzip and plain, v3's SHA-1 check, the
//! bill kept for audit, and the schedule that reconciles yesterday after
//! 10:00 Beijing time by itself; refund statuses in either API's names
//! (`REFUNDCLOSE` / `CLOSED`, `CHANGE` / `ABNORMAL`) compared alike.

mod common;

use std::time::Duration;

use common::{Api, Env, Opts};
use paybridge::sandbox::BillFault;
use paybridge::store::{beijing_day, beijing_day_start, day_string};
use serde_json::{json, Value};

const V3: Api = Api::V3 { public_key: true, certificates: false };

fn today() -> String {
    day_string(beijing_day(paybridge::pay::now_ms()))
}

/// Places and pays an order; waits until PayBridge has it.
async fn paid(env: &Env, no: &str, fen: u64) {
    let openid = env.openid(&format!("code-{no}")).await;
    let (status, body) = env.order(no, fen, &openid).await;
    assert_eq!(status, 200, "{body}");
    env.sim_pay(json!({ "out_trade_no": no })).await;
    env.wait_acknowledged(no).await;
}

async fn run(admin: &common::Admin, day: &str) -> Value {
    let url = format!("{}/admin/api/reconciliation/{day}/run", admin.base);
    let r = admin.http.post(&url).header("x-csrf-token", &admin.csrf).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// A difference as (kind, order, refund, WeChat's fen, ours).
type Row = (String, String, Option<String>, Option<u64>, Option<u64>);

fn differences(day: &Value) -> Vec<Row> {
    let mut out: Vec<_> = day["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_owned(),
                d["outTradeNo"].as_str().unwrap().to_owned(),
                d["outRefundNo"].as_str().map(str::to_owned),
                d["wechatFen"].as_u64(),
                d["localFen"].as_u64(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_day_reconciled_on_api_v2() {
    a_day_reconciled(Api::V2).await;
}

#[tokio::test]
async fn a_day_reconciled_on_api_v3() {
    a_day_reconciled(V3).await;
}

async fn a_day_reconciled(api: Api) {
    let v3 = matches!(api, Api::V3 { .. });
    // v2 refunds need the merchant's certificate (mutual TLS).
    let client_cert = if v3 { common::ClientCert::None } else { common::ClientCert::Pem };
    let env = Env::start(Opts { api, client_cert, ..Opts::default() }).await;
    let sim = &env.sim.simulator;
    let admin = common::login(&env).await;
    let day = today();
    for (no, fen) in [("BILLA0001", 100), ("BILLB0001", 200), ("BILLC0001", 300)] {
        paid(&env, no, fen).await;
    }
    {
        let url = format!("{}/admin/api/orders/BILLA0001/refunds", env.base);
        let body = json!({ "amount": 50, "reason": "对账测试" });
        let r = admin.http.post(&url).header("x-csrf-token", &admin.csrf).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 201);
        env.refunds_settled("BILLA0001").await;
    }

    // A change: the admin's CSRF token is needed.
    let url = format!("{}/admin/api/reconciliation/{day}/run", env.base);
    assert_eq!(admin.http.post(&url).send().await.unwrap().status(), 403);
    // Today is not over: WeChat has no bill yet.
    let not_ready = run(&admin, &day).await;
    assert_eq!(not_ready["state"], "NOT_READY", "{not_ready}");
    assert!(not_ready["error"].as_str().unwrap().contains("not made this bill yet"));

    sim.close_day(&day);
    let matched = run(&admin, &day).await;
    assert_eq!(matched["state"], "MATCHED", "{matched}");
    assert_eq!((matched["payments"].as_u64(), matched["paymentFen"].as_u64()), (Some(3), Some(600)));
    assert_eq!((matched["refunds"].as_u64(), matched["refundFen"].as_u64()), (Some(1), Some(50)));
    assert_eq!(matched["summaryWarning"], Value::Null);
    let (_, overview) = admin.get("/admin/api/overview").await;
    assert_eq!(overview["reconciliationAttention"], 0);

    // The bill is kept, compressed, for audit: WeChat's file, byte for byte the format.
    let r = admin.http.get(format!("{}/admin/api/reconciliation/{day}/bill", env.base)).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/gzip");
    let kept = paybridge::wechat::bill::gunzip(&r.bytes().await.unwrap()).unwrap();
    let bill = paybridge::wechat::bill::parse(&kept).unwrap();
    assert_eq!(bill.payments.len(), 3);
    assert!(String::from_utf8(kept).unwrap().starts_with("交易时间,公众账号ID,商户号"));

    // Now WeChat and PayBridge disagree, one way of each kind.
    sim.bill_extra_payment(&day, "STRANGER0001", 999);
    sim.bill_amount("BILLB0001", 150);
    sim.bill_omit("BILLC0001");
    let openid = env.openid("code-unpaid").await;
    assert_eq!(env.order("BILLD0001", 400, &openid).await.0, 200);
    env.sim_pay(json!({ "out_trade_no": "BILLD0001", "lose_notify": true })).await;
    let expected = vec![
        ("AMOUNT_MISMATCH".to_owned(), "BILLB0001".to_owned(), None, Some(150), Some(200)),
        ("ONLY_AT_WECHAT".to_owned(), "STRANGER0001".to_owned(), None, Some(999), None),
        ("ONLY_HERE".to_owned(), "BILLC0001".to_owned(), None, None, Some(300)),
        ("STATUS_MISMATCH".to_owned(), "BILLD0001".to_owned(), None, Some(400), Some(400)),
    ];
    let differs = run(&admin, &day).await;
    assert_eq!(differs["state"], "DIFFERENCES", "{differs}");
    assert_eq!(differences(&differs), expected);
    let status = differs["differences"].as_array().unwrap().iter().find(|d| d["kind"] == "STATUS_MISMATCH").unwrap();
    assert_eq!((&status["wechatStatus"], &status["localStatus"]), (&json!("SUCCESS"), &json!("PREPAID")));
    let (status, shown) = admin.get(&format!("/admin/api/reconciliation/{day}")).await;
    assert_eq!(status, 200);
    assert_eq!(differences(&shown), expected, "the day as the admin page reads it");
    let (_, overview) = admin.get("/admin/api/overview").await;
    assert_eq!(overview["reconciliationAttention"], 1, "the overview's badge");

    // A plain-text bill (no gzip) reads the same.
    sim.bill_fault(BillFault::Plain);
    let plain = run(&admin, &day).await;
    assert_eq!((plain["error"].clone(), differences(&plain)), (Value::Null, expected.clone()));

    // A re-run whose bill cannot be read keeps the earlier result and says why.
    sim.bill_fault(BillFault::Malformed);
    let broken = run(&admin, &day).await;
    assert_eq!(broken["state"], "DIFFERENCES");
    assert_eq!(broken["error"], "the bill could not be read: line 2 has 26 values, the header 27", "{broken}");
    if v3 {
        sim.bill_fault(BillFault::WrongHash);
        let forged = run(&admin, &day).await;
        let error = forged["error"].as_str().unwrap();
        assert!(error.contains("the bill's SHA-1 is") && error.contains("WeChat's signed reply says"), "{error}");
    }

    // A first run on a malformed bill: FAILED, nothing counted as matched.
    let yesterday = day_string(beijing_day(paybridge::pay::now_ms()) - 1);
    sim.bill_extra_payment(&yesterday, "STRANGER0002", 5);
    sim.close_day(&yesterday);
    sim.bill_fault(BillFault::Malformed);
    let failed = run(&admin, &yesterday).await;
    assert_eq!(failed["state"], "FAILED", "{failed}");
    assert_eq!((failed["reconciledAt"].clone(), failed["payments"].as_u64()), (Value::Null, Some(0)));
    let r = admin.http.get(format!("{}/admin/api/reconciliation/{yesterday}/bill", env.base)).send().await.unwrap();
    assert_eq!(r.status(), 200, "a bill that could not be read is kept too");

    // A day with nothing at WeChat and nothing here.
    let quiet = day_string(beijing_day(paybridge::pay::now_ms()) - 2);
    sim.close_day(&quiet);
    assert_eq!(run(&admin, &quiet).await["state"], "NO_BILL");

    // The list, newest first; bad days and queries say what is wrong.
    let (_, list) = admin.get("/admin/api/reconciliation?limit=2").await;
    let days: Vec<&str> = list["items"].as_array().unwrap().iter().map(|d| d["day"].as_str().unwrap()).collect();
    assert_eq!(days, [day.as_str(), yesterday.as_str()]);
    let (_, rest) =
        admin.get(&format!("/admin/api/reconciliation?limit=2&before={}", list["next"].as_str().unwrap())).await;
    assert_eq!(rest["items"][0]["day"], quiet.as_str());
    assert_eq!(admin.get("/admin/api/reconciliation?limit=101").await.0, 400);
    assert_eq!(admin.get("/admin/api/reconciliation?before=yesterday").await.0, 400);
    let r = admin.http.post(format!("{}/admin/api/reconciliation/2026-13-01/run", env.base));
    let r = r.header("x-csrf-token", &admin.csrf).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("is not a date (YYYY-MM-DD)"));
    let tomorrow = day_string(beijing_day(paybridge::pay::now_ms()) + 1);
    let r = admin.http.post(format!("{}/admin/api/reconciliation/{tomorrow}/run", env.base));
    let r = r.header("x-csrf-token", &admin.csrf).send().await.unwrap();
    assert_eq!(r.status(), 400, "a day that has not happened yet");
    assert_eq!(admin.get("/admin/api/reconciliation/2020-01-01").await.0, 404);
    let (status, _) = env.get("/admin/api/reconciliation").await;
    assert_eq!(status, 401, "a session is needed to read");
}

/// A bill full of strangers' payments: every difference is counted, the
/// first 500 are kept with the day.
#[tokio::test]
async fn a_day_keeps_at_most_500_differences() {
    let env = Env::start(Opts::default()).await;
    let admin = common::login(&env).await;
    let day = today();
    for i in 0..501 {
        env.sim.simulator.bill_extra_payment(&day, &format!("STRANGER{i:04}"), 100);
    }
    env.sim.simulator.close_day(&day);
    let done = run(&admin, &day).await;
    assert_eq!((done["state"].as_str(), done["differenceCount"].as_u64()), (Some("DIFFERENCES"), Some(501)));
    assert_eq!(done["differences"].as_array().unwrap().len(), 500);
    assert_eq!((done["payments"].as_u64(), done["paymentFen"].as_u64()), (Some(501), Some(50_100)));
}

/// Nobody asks: once it is 10:00 Beijing time the next day, PayBridge
/// downloads the day's bill and reconciles it by itself.
#[tokio::test]
async fn yesterday_is_reconciled_by_itself_after_ten() {
    let env = Env::start(Opts { reconcile_schedule: true, ..Opts::default() }).await;
    let day = today();
    paid(&env, "SCHEDULED01", 100).await;
    env.sim.simulator.close_day(&day);
    assert!(env.app.store.bill_day(&day).unwrap().is_none());

    let now = paybridge::pay::now_ms();
    let tomorrow_at_ten_thirty = beijing_day_start(beijing_day(now) + 1) + 10 * 3_600_000 + 30 * 60_000;
    env.app.webhooks.shared_clock().advance(Duration::from_millis((tomorrow_at_ten_thirty - now) as u64));
    for _ in 0..500 {
        if let Some(done) = env.app.store.bill_day(&day).unwrap() {
            assert_eq!(done.state, paybridge::store::bill::BillState::Matched, "{done:?}");
            assert_eq!((done.payments, done.payment_fen, done.runs), (1, 100, 1));
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the day was never reconciled");
}

/// `paybridge reconcile --config` with PayBridge stopped opens the data
/// itself; without a server or a config it says what to do. (Worker
/// threads: the simulator answers while the test waits for the command.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_reconciles_a_stopped_paybridge() {
    let env = Env::start(Opts::default()).await;
    paid(&env, "OFFLINE0001", 1990).await;
    let opts = env.opts.clone();
    let (dir, sim) = env.stop().await;
    let data = dir.path().join("data");
    let config = dir.path().join("paybridge.toml");
    std::fs::write(&config, common::config_text(&data, "127.0.0.1:0", &sim.url(), &opts)).unwrap();
    let day = today();
    let reconcile = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_paybridge"))
            .args(["reconcile", "--date", &day])
            .args(args)
            .output()
            .unwrap()
    };
    let out = reconcile(&["--config", config.to_str().unwrap()]);
    assert!(!out.status.success(), "not ready is not success");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("WeChat has not made this bill yet"), "{said}{}", String::from_utf8_lossy(&out.stdout));

    sim.simulator.close_day(&day);
    let out = reconcile(&["--config", config.to_str().unwrap()]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(printed.trim(), format!("{day}: MATCHED (1 payments, ¥19.90; 0 refunds, ¥0.00)"));

    let out = reconcile(&["--data-dir", data.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("start it, or pass --config"));
    // What the command found is kept, like a scheduled run.
    let store = paybridge::store::Store::open(&data, paybridge::config::Mode::Live).unwrap();
    assert_eq!(store.bill_day(&day).unwrap().unwrap().runs, 2);
}

/// Refunds of a day whose bill names their status in either API's words:
/// v2's `REFUNDCLOSE` in a v3 bill and v3's `CLOSED` in a v2 bill mean the
/// same as ours; a refund that ended differently at WeChat is flagged, with
/// WeChat's status in one vocabulary.
#[tokio::test]
async fn refund_statuses_of_either_api_are_compared_alike() {
    // In a v3 bill, v2 names; in a v2 bill, v3's names and v2's own.
    refund_statuses(V3, &[("REFUNDCLOSE", "SUCCESS", Some("CLOSED")), ("REFUNDCLOSE", "CLOSED", None)]).await;
    refund_statuses(Api::V2, &[("CHANGE", "SUCCESS", Some("ABNORMAL")), ("CLOSED", "CLOSED", None)]).await;
}

/// For each (the bill's status, ours, the difference's WeChat status): a refund.
async fn refund_statuses(api: Api, cases: &[(&str, &str, Option<&str>)]) {
    let v3 = matches!(api, Api::V3 { .. });
    let client_cert = if v3 { common::ClientCert::None } else { common::ClientCert::Pem };
    let env = Env::start(Opts { api, client_cert, ..Opts::default() }).await;
    let sim = &env.sim.simulator;
    let admin = common::login(&env).await;
    let day = today();
    let mut expected = Vec::new();
    for (i, (in_bill, ours, flagged)) in cases.iter().enumerate() {
        let no = format!("BILLR{i}{}", if v3 { "V3" } else { "V2" });
        paid(&env, &no, 100).await;
        if *ours == "CLOSED" {
            sim.v3().queue_refund_outcomes(["CLOSED"]);
        }
        let url = format!("{}/admin/api/orders/{no}/refunds", env.base);
        let body = json!({ "amount": 40, "reason": "对账" });
        let r = admin.http.post(&url).header("x-csrf-token", &admin.csrf).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 201);
        env.refunds_settled(&no).await;
        let refund = env.app.store.refunds_for_order(&no).unwrap().remove(0);
        assert_eq!(refund.status.as_str(), *ours);
        sim.bill_refund_status(&refund.out_refund_no, in_bill);
        if let Some(theirs) = flagged {
            expected.push((refund.out_refund_no.clone(), theirs.to_string(), ours.to_string()));
        }
    }
    sim.close_day(&day);
    let result = run(&admin, &day).await;
    let found: Vec<_> = result["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["kind"], "STATUS_MISMATCH", "{d}");
            let text = |k: &str| d[k].as_str().unwrap().to_owned();
            (text("outRefundNo"), text("wechatStatus"), text("localStatus"))
        })
        .collect();
    assert_eq!(found, expected, "{result}");
    env.stop().await;
}
