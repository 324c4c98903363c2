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
    walkthrough("v2").await;
}

/// `paybridge sandbox --api v3`: the same walkthrough, WeChat Pay API v3.
#[tokio::test]
async fn sandbox_walkthrough_works_as_printed_on_api_v3() {
    walkthrough("v3").await;
}

async fn walkthrough(api: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("sandbox-data");
    let mut proc = Proc::spawn(
        &[
            "sandbox",
            "--api",
            api,
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
    assert!(banner.contains(&format!("WeChat Pay API:       API {api}")), "{banner}");
    // The doctor ran against the simulator: every credential proved (API
    // v3's APIv3 key by decrypting the platform certificates the sandbox
    // merchant kept after its switch to the public key).
    let proved = "4 passed, 0 failed, 0 not proved";
    assert!(banner.contains("`paybridge doctor` against the simulator:") && banner.contains(proved), "{banner}");
    if api == "v3" {
        assert!(banner.contains("✓ APIv3 key: decrypted the platform certificate list"), "{banner}");
    }
    assert!(!banner.contains("\n✗ "), "{banner}");
    assert!(!banner.contains("\n! "), "all ✓: {banner}");
    // stdout and stderr are read by separate threads: wait for the log rather
    // than assume it has been read by the time the banner has.
    proc.log_line("SANDBOX").await;

    // Paste the printed commands into one shell, in order, as a merchant would.
    let commands: Vec<String> = {
        let mut out = Vec::new();
        let mut current = String::new();
        for line in banner.lines().map(str::trim) {
            let command = ["curl", "OPENID=", "KEY=", "SIG=", "NO=", "JAR="].iter().any(|p| line.starts_with(p))
                || line.contains(" reconcile --data-dir ");
            if command || !current.is_empty() {
                current.push_str(line.trim_end_matches('\\'));
                current.push(' ');
                if !line.ends_with('\\') {
                    out.push(std::mem::take(&mut current));
                }
            }
        }
        out
    };
    assert_eq!(commands.len(), 12, "{commands:?}");
    assert!(!banner.contains("<openid"), "nothing to fill in by hand: {banner}");
    let shell = |script: String| {
        let out = Command::new("sh").args(["-c", &format!("set -e\n{script}")]).output().unwrap();
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let pasted = shell(commands[..4].join("\n"));
    let (openid, replies) = pasted.split_once('\n').unwrap();
    assert!(openid.starts_with('o') && openid.len() > 10, "{pasted}");
    // curl prints each reply without a newline: a stream of JSON values.
    let order: Value = serde_json::Deserializer::from_str(replies).into_iter().next().unwrap().unwrap();
    assert_eq!(order["sandbox"], true, "{pasted}");
    assert!(order["paySign"].is_string());
    let sign_type = if api == "v3" { "RSA" } else { "MD5" };
    assert_eq!(order["signType"], sign_type, "{order}");
    // The payment's notify is on its way: step 4 again until it shows.
    let mut view = Value::Null;
    for _ in 0..200 {
        view = serde_json::from_str(&shell(format!("OPENID={openid}\n{}", commands[3]))).unwrap();
        if view["status"] == "PAID" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(view["status"], "PAID", "{view}");
    assert_eq!(view["sandbox"], true);
    assert_eq!(view["totalFee"], 1, "the catalogue's price for product demo");

    // Steps 5 to 7: platform A signs an order with openssl, B pays it, A's
    // demo receiver verifies the webhook. Pasted in the same shell as step 1.
    let platform = shell(format!("OPENID={openid}\n{}", commands[4..9].join("\n")));
    let no = platform.lines().next().unwrap_or_default().to_owned();
    assert!(no.starts_with("PB") && no.len() == 26, "{platform}");
    let receipt = proc.log_line("SANDBOX demo platform A: signature verified, order.paid").await;
    assert!(receipt.contains(&no), "{receipt}");

    // An openid the simulator never issued is refused, as WeChat would refuse it.
    let r = reqwest::Client::new()
        .post(format!("{base}/pay/unifiedOrder"))
        .json(&json!({ "outTradeNo": "NOTISSUED1", "totalFee": 1, "body": "b", "openid": "<openid from step 1>" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    assert!(text.contains("openid"), "{text}");

    let r = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(r.headers()["x-paybridge-mode"], "SANDBOX");

    // Steps 8 and 9: sign in to the admin page with the printed password
    // and refund part of A's order, in one shell as printed.
    let refunded = shell(format!("NO={no}\n{}", commands[9..11].join("\n")));
    let (csrf, refund) = refunded.split_once('\n').unwrap();
    assert_eq!(csrf.len(), 64, "step 8 prints the session's CSRF token: {refunded}");
    let refund: Value = serde_json::from_str(refund).unwrap_or_else(|e| panic!("{e}: {refunded}"));
    assert_eq!((refund["amount"].as_u64(), refund["outTradeNo"].as_str()), (Some(500), Some(no.as_str())), "{refund}");
    // Step 9's promise: the simulator ends it, demo platform A is told.
    let told = proc.log_line("SANDBOX demo platform A: signature verified, order.refunded").await;
    assert!(told.contains(&no), "{told}");
    assert!(told.contains("amount=500") && told.contains("refunded_total=500"), "the refund's amount: {told}");

    // Step 10, `reconcile` through the running sandbox's control socket with
    // the binary's path as printed: the two payments and the refund match,
    // and it prints what step 10 says it prints.
    let today = paybridge::store::day_string(paybridge::store::beijing_day(paybridge::pay::now_ms()));
    let expected = format!("{today}: MATCHED (2 payments, ¥19.91; 1 refunds, ¥5.00)");
    assert!(banner.contains(&format!("prints \"{expected}\"")), "{banner}");
    assert!(commands[11].contains(env!("CARGO_BIN_EXE_paybridge")), "{}", commands[11]);
    let printed = shell(commands[11].clone());
    assert_eq!(printed.trim(), expected);
    let reconcile = |date: &str| {
        Command::new(env!("CARGO_BIN_EXE_paybridge"))
            .args(["reconcile", "--data-dir", data.to_str().unwrap(), "--date", date])
            .output()
            .unwrap()
    };
    let out = reconcile("2026-02-30");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"2026-02-30\" is not a date (YYYY-MM-DD)"));

    assert!(proc.terminate().await.success(), "SIGTERM exits 0");
    // The sandbox data directory can never be opened as live data.
    assert!(Store::open(&data, Mode::Live).is_err());
    let store = Store::open(&data, Mode::Sandbox).unwrap();
    let orders = store.list_orders(&OrderFilter::default(), None, 10).unwrap().items;
    // The order WeChat refused (an openid it never issued) was not kept.
    assert!(orders.iter().all(|o| o.sandbox) && orders.len() == 2, "the demo orders only");
    let paid = orders.iter().find(|o| o.out_trade_no.starts_with("PB")).unwrap();
    assert_eq!((paid.status, paid.total_fee), (paybridge::store::OrderStatus::PartiallyRefunded, 1990));
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
    let mut openids = Vec::new();
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
        openids.push(login["openid"].as_str().unwrap().to_owned());
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
    // Every line it wrote, the pipes read to their end: the secret scan below sees them all.
    let logs = first.all_logs().await;
    drop(first);

    let mut second = Proc::spawn(&["serve", "--config", config.to_str().unwrap()], "info");
    second.line("PayBridge listening on").await;
    for (i, no) in orders.iter().enumerate() {
        let url = format!("{base}/pay/orders/{no}?openid={}", openids[i]);
        let view: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        let expected = if i % 2 == 0 { "PAID" } else { "PREPAID" };
        assert_eq!(view["status"], expected, "{no}");
        assert_eq!(view["totalFee"], 100 + i as u64);
    }
    assert!(second.terminate().await.success());
    let logs = format!("{logs}\n{}", second.all_logs().await);
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

/// A busy port in the sandbox names the flag to change, not a config key
/// the sandbox user never wrote.
#[tokio::test]
async fn a_busy_sandbox_port_names_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_paybridge"))
            .args(["sandbox", "--listen", &addr, "--simulator-listen", "127.0.0.1:0"])
            .args(["--data-dir", dir.path().join("d").to_str().unwrap()])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--listen") && stderr.contains("Address already in use"), "{stderr}");
    assert_eq!(stderr.matches("Address already in use").count(), 1, "the cause once: {stderr}");
    drop(taken);
}
