//! The real `paybridge` binary as a child process: the README's sandbox
//! walkthrough, a crash (SIGKILL) and restart that loses nothing, graceful
//! SIGTERM, and logs that never contain a secret.

mod common;
#[path = "common/process.rs"]
mod process;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{config_text, start_simulator, Opts, ADMIN_PASSWORD, APP_SECRET, MCH_KEY};
use paybridge::config::Mode;
use paybridge::store::{OrderFilter, OrderStatus, Store, Verdict};
use process::{after, free_tcp_port as free_port, Proc};
use serde_json::{json, Value};

#[tokio::test]
async fn sandbox_walkthrough_works_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("sandbox-data");
    let mut proc = Proc::spawn(
        &[
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--simulator-listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        "info",
    );
    let base = after(&proc.line("PayBridge SANDBOX listening on").await, "listening on ");
    let banner = proc.stdout.lock().unwrap().clone();
    assert!(banner.contains("SANDBOX") && banner.contains("no real money"), "{banner}");
    assert!(proc.stderr.lock().unwrap().contains("SANDBOX"), "the log says SANDBOX too");

    // Run the printed curl commands, in order, as a merchant would.
    let commands: Vec<String> = {
        let mut out = Vec::new();
        let mut current = String::new();
        for line in banner.lines().map(str::trim) {
            if line.starts_with("curl") || !current.is_empty() {
                current.push_str(line.trim_end_matches('\\'));
                current.push(' ');
                if !line.ends_with('\\') {
                    out.push(std::mem::take(&mut current));
                }
            }
        }
        out
    };
    assert_eq!(commands.len(), 4, "{commands:?}");
    let run = |cmd: &str| {
        let out = Command::new("sh").args(["-c", &format!("{cmd} --silent --show-error")]).output().unwrap();
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let login = run(&commands[0]);
    let openid = login["openid"].as_str().unwrap();
    let order = run(&commands[1].replace("<openid from step 1>", openid));
    assert_eq!(order["sandbox"], true);
    assert!(order["paySign"].is_string());
    run(&commands[2]);
    let mut view = Value::Null;
    for _ in 0..200 {
        view = run(&commands[3]);
        if view["status"] == "PAID" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(view["status"], "PAID", "{view}");
    assert_eq!(view["sandbox"], true);

    let r = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(r.headers()["x-paybridge-mode"], "SANDBOX");

    assert!(proc.terminate().await.success(), "SIGTERM exits 0");
    // The sandbox data directory can never be opened as live data.
    assert!(Store::open(&data, Mode::Live).is_err());
    let store = Store::open(&data, Mode::Sandbox).unwrap();
    let orders = store.list_orders(&OrderFilter::default(), None, 10).unwrap().items;
    assert!(orders.iter().all(|o| o.sandbox) && orders.len() == 1);
}

#[tokio::test]
async fn a_crash_loses_no_acknowledged_notify_and_logs_hold_no_secrets() {
    // Secrets checked below: the merchant key, the app secret, every session key the
    // simulator handed out, the admin password (right and wrong ones) and its hash.
    let sim = start_simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("paybridge.toml");
    std::fs::write(&config, config_text(&data, &addr, &sim.url(), &Opts::default())).unwrap();
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();

    // Trace level: even the most talkative logs must not hold a secret.
    let mut first = Proc::spawn(&["serve", "--config", config.to_str().unwrap()], "trace");
    first.line("PayBridge listening on").await;
    let mut orders = Vec::new();
    for i in 0..12 {
        let code = format!("crash-code-{i}");
        let login: Value =
            http.get(format!("{base}/pay/openid?code={code}")).send().await.unwrap().json().await.unwrap();
        let no = format!("CRASH{i:05}");
        let r = http
            .post(format!("{base}/pay/unifiedOrder"))
            .json(&json!({ "outTradeNo": no, "totalFee": 100 + i, "body": "崩溃测试", "openid": login["openid"] }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        orders.push(no);
    }
    for no in orders.iter().step_by(2) {
        http.post(format!("{}/sandbox/pay", sim.url())).json(&json!({ "out_trade_no": no })).send().await.unwrap();
    }
    for no in orders.iter().step_by(2) {
        let start = Instant::now();
        while !sim.simulator.report(no).unwrap().notify.acknowledged {
            assert!(start.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // The admin logs in (right and wrong passwords) and looks around.
    let admin = reqwest::Client::builder().cookie_store(true).build().unwrap();
    for password in ["a wrong password 123", ADMIN_PASSWORD] {
        admin.post(format!("{base}/admin/api/login")).json(&json!({ "password": password })).send().await.unwrap();
    }
    let detail = admin.get(format!("{base}/admin/api/orders/CRASH00000")).send().await.unwrap();
    assert_eq!(detail.status(), 200);
    // Acknowledged means durable: pull the plug at once.
    first.signal("KILL");
    let logs = first.logs();
    drop(first);

    let mut second = Proc::spawn(&["serve", "--config", config.to_str().unwrap()], "info");
    second.line("PayBridge listening on").await;
    for (i, no) in orders.iter().enumerate() {
        let view: Value = http.get(format!("{base}/pay/orders/{no}")).send().await.unwrap().json().await.unwrap();
        let expected = if i % 2 == 0 { "PAID" } else { "PREPAID" };
        assert_eq!(view["status"], expected, "{no}");
        assert_eq!(view["totalFee"], 100 + i as u64);
    }
    assert!(second.terminate().await.success());
    let logs = format!("{logs}\n{}", second.logs());
    drop(second);

    let store = Store::open(&data, Mode::Live).unwrap();
    assert_eq!(store.order_count().unwrap(), 12);
    let notifies = store.list_notifies(None, 100).unwrap().items;
    assert_eq!(notifies.len(), 6);
    assert!(notifies.iter().all(|n| n.verdict == Verdict::Paid));
    assert_eq!(store.list_orders(&OrderFilter::status(OrderStatus::Paid), None, 100).unwrap().items.len(), 6);

    let session_keys = sim.simulator.issued_session_keys();
    assert_eq!(session_keys.len(), 12);
    assert!(logs.contains("unified order placed") && logs.contains("TRACE"), "the trace logs were captured");
    assert!(logs.contains("admin logged in") && logs.contains("admin login failed"), "the logins were logged");
    for secret in [MCH_KEY, APP_SECRET, ADMIN_PASSWORD, "a wrong password 123", common::admin_hash()]
        .iter()
        .map(|s| s.to_string())
        .chain(session_keys)
    {
        assert!(!logs.contains(&secret), "a secret reached the logs: {secret}");
    }
    sim.stop().await;
}
