//! The archive against the real server, a real sled and the real binary:
//! orders placed, paid, refunded and closed, 401 days later moved out of
//! the hot store by the server's own schedule, then found by number (admin
//! API, search, `paybridge order`) read-only with their notifies and
//! refunds, in the CSV of their day, and still so after a restart; the
//! binary SIGKILLed during moves, again and again, with every order found
//! exactly once after each restart; `paybridge archive verify` on a clean
//! and on a damaged archive.

mod common;
#[path = "common/process.rs"]
mod process;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{config_text, start_simulator, Api, Env, Opts};
use paybridge::domain::Mode;
use paybridge::store::archive::{Archive, Found};
use paybridge::store::{NotifyRecord, Order, OrderContents, OrderStatus, Payment, Store, Verdict};
use process::{free_tcp_port, ChildGuard, Proc};
use serde_json::{json, Value};

const DAY: Duration = Duration::from_secs(86_400);
const V3: Api = Api::V3 { public_key: true, certificates: false };

/// Runs the real binary off the runtime's thread.
fn paybridge(args: &[&str]) -> impl std::future::Future<Output = std::process::Output> + 'static {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    async move {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_paybridge")).args(args).output().unwrap()
        })
        .await
        .unwrap()
    }
}

/// Places an order and has the simulator pay it.
async fn paid(env: &Env, no: &str, fee: u64, openid: &str) {
    let (status, body) = env.order(no, fee, openid).await;
    assert_eq!(status, 200, "{body}");
    env.sim_pay(json!({ "out_trade_no": no })).await;
    env.wait_acknowledged(no).await;
}

/// Waits until none of `numbers` is in the hot store.
async fn until_moved(env: &Env, numbers: &[&str]) {
    for _ in 0..500 {
        if numbers.iter().all(|no| env.app.store.order(no).unwrap().is_none()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not all of {numbers:?} left the hot store");
}

/// What the admin API and the CSV show of the archived orders.
async fn check_archived(env: &Env, day: &str) {
    let admin = common::login(env).await;
    for no in ["ARCPAID001", "ARCREFUND1", "ARCCLOSED1"] {
        assert!(env.app.store.order(no).unwrap().is_none(), "{no} is not in the hot store");
        let (status, o) = admin.get(&format!("/admin/api/orders/{no}")).await;
        assert_eq!(status, 200, "{o}");
        assert_eq!((o["outTradeNo"].as_str(), o["archived"].as_bool()), (Some(no), Some(true)), "{o}");
        // The search box finds it too, marked.
        let (_, page) = admin.get(&format!("/admin/api/orders?q={no}")).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
        assert_eq!(page["items"][0]["archived"], true);
    }
    let (_, paid) = admin.get("/admin/api/orders/ARCPAID001").await;
    assert_eq!(paid["status"], "PAID");
    let verdicts: Vec<&str> =
        paid["notifies"].as_array().unwrap().iter().map(|n| n["verdict"].as_str().unwrap()).collect();
    assert!(verdicts.contains(&"PAID"), "its notify moved with it: {verdicts:?}");
    let (_, refunded) = admin.get("/admin/api/orders/ARCREFUND1").await;
    assert_eq!(
        (refunded["status"].as_str(), refunded["refundedFee"].as_u64()),
        (Some("PARTIALLY_REFUNDED"), Some(300))
    );
    let refunds = refunded["refunds"].as_array().unwrap();
    assert_eq!((refunds.len(), refunds[0]["status"].as_str()), (1, Some("SUCCESS")), "{refunded}");
    let (_, closed) = admin.get("/admin/api/orders/ARCCLOSED1").await;
    assert_eq!(closed["status"], "CLOSED");
    assert!(closed["notifies"].as_array().unwrap().is_empty());

    // Read-only: a refund of an archived order is refused, nothing changes.
    let url = format!("{}/admin/api/orders/ARCPAID001/refunds", env.base);
    let r = admin
        .http
        .post(&url)
        .header("x-csrf-token", &admin.csrf)
        .json(&json!({ "amount": 100, "reason": "late" }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    assert!(env.app.store.order("ARCPAID001").unwrap().is_none());

    // The CSV of the orders' day has each once; the order list stays hot-only.
    let (status, _, csv) = admin.text(&format!("/admin/api/export/orders.csv?from={day}&to={day}")).await;
    assert_eq!(status, 200);
    for no in ["ARCPAID001", "ARCREFUND1", "ARCCLOSED1"] {
        assert_eq!(csv.matches(no).count(), 1, "{no} once in:\n{csv}");
    }
    assert!(csv.contains("ARCHOTPAID"), "the hot order of that day too:\n{csv}");
    let listed = admin.all("").await;
    assert_eq!(listed, ["ARCHOTPAID"], "listing pages cover the hot store only");
}

/// The admin page in headless Chromium (see `tests/admin_browser.rs`):
/// an archived order's page says so and offers no refund, and a search by
/// its number lists it with the badge.
async fn archived_in_the_browser(env: &Env) {
    use fantoccini::{ClientBuilder, Locator};
    let port = free_tcp_port();
    let driver = ChildGuard::spawn(std::process::Command::new("chromedriver").arg(format!("--port={port}")));
    let url = format!("http://127.0.0.1:{port}");
    let start = std::time::Instant::now();
    while reqwest::get(format!("{url}/status")).await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "chromedriver did not start: {}", driver.output());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let profile = tempfile::tempdir().unwrap();
    let options = json!({ "goog:chromeOptions": {
        "binary": "/usr/bin/chromium",
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
            "--lang=en", format!("--user-data-dir={}", profile.path().display())],
    }});
    let Value::Object(capabilities) = options else { unreachable!() };
    let client = ClientBuilder::rustls().unwrap().capabilities(capabilities).connect(&url).await.unwrap();
    let wait = |css: String| {
        let client = client.clone();
        async move {
            let found = client.wait().at_most(Duration::from_secs(15)).for_element(Locator::Css(&css)).await;
            found.unwrap_or_else(|e| panic!("no {css}: {e}"))
        }
    };
    client.goto(&format!("{}/admin", env.base)).await.unwrap();
    wait("#password".into()).await.send_keys(common::ADMIN_PASSWORD).await.unwrap();
    wait("#login-submit".into()).await.click().await.unwrap();
    wait("body[data-view=\"overview\"]".into()).await;

    client.goto(&format!("{}/admin#/orders/ARCREFUND1", env.base)).await.unwrap();
    wait("body[data-view=\"orders/ARCREFUND1\"]".into()).await;
    let note = wait("#order-archived".into()).await.text().await.unwrap();
    assert!(note.contains("archive"), "{note}");
    assert!(client.find(Locator::Css("#refund-form")).await.is_err(), "no refund form for an archived order");
    let refunds = client.find_all(Locator::Css(".card.refund")).await.unwrap();
    assert_eq!(refunds.len(), 1, "its refund is listed");

    client.goto(&format!("{}/admin#/orders?q=ARCPAID001", env.base)).await.unwrap();
    wait("body[data-view=\"orders?q=ARCPAID001\"]".into()).await;
    let badge = wait("a.row.order[data-no=\"ARCPAID001\"] .status.archived".into()).await;
    assert_eq!(badge.text().await.unwrap(), "Archived");
    client.close().await.unwrap();
}

/// The round trip: the orders a day brings, 401 days later in the archive
/// (moved by the server's own daily schedule), found by number with their
/// notifies and refunds, in the CSV, out of the hot store; after a restart
/// all the same.
#[tokio::test]
async fn ended_orders_move_to_the_archive_and_are_still_found() {
    let env = Env::start(Opts { api: V3, ..Opts::default() }).await;
    let openid = env.openid("code-archive").await;
    paid(&env, "ARCPAID001", 1000, &openid).await;
    paid(&env, "ARCREFUND1", 1000, &openid).await;
    let admin = common::login(&env).await;
    let r = admin
        .http
        .post(format!("{}/admin/api/orders/ARCREFUND1/refunds", env.base))
        .header("x-csrf-token", &admin.csrf)
        .json(&json!({ "amount": 300, "reason": "部分退款" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    env.refunds_settled("ARCREFUND1").await;
    assert_eq!(env.order("ARCCLOSED1", 500, &openid).await.0, 200);
    // Expired three hours later; the lifecycle closes it.
    env.app.lifecycle.clock().advance(Duration::from_secs(3 * 3600));
    for _ in 0..500 {
        if env.stored_order("ARCCLOSED1").status == OrderStatus::Closed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(env.stored_order("ARCCLOSED1").status, OrderStatus::Closed);
    let day = paybridge::store::day_string(paybridge::store::beijing_day(env.stored_order("ARCPAID001").created_at));

    // 401 days on: the schedule moves them. One paid order changed since
    // (a refund then) stays.
    paid(&env, "ARCHOTPAID", 700, &openid).await;
    let late = paybridge::clock::now_ms() + 401 * 86_400_000;
    env.app.store.update_order("ARCHOTPAID", move |o| o.note(late, "NOTE", "late".into())).await.unwrap();
    env.app.lifecycle.clock().advance(401 * DAY);
    until_moved(&env, &["ARCPAID001", "ARCREFUND1", "ARCCLOSED1"]).await;
    assert!(env.app.store.order("ARCHOTPAID").unwrap().is_some(), "changed within the year: stays hot");
    assert!(env.app.store.notifies_for_order("ARCPAID001", None, 10).unwrap().items.is_empty());
    assert!(env.app.store.refunds_for_order("ARCREFUND1").unwrap().is_empty());
    check_archived(&env, &day).await;
    archived_in_the_browser(&env).await;

    // The CLI finds it through the running server's control socket.
    let data = env.dir.path().join("data");
    let out = paybridge(&["order", "--data-dir", data.to_str().unwrap(), "ARCREFUND1"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((shown["archived"].as_bool(), shown["refunds"].as_array().map(Vec::len)), (Some(true), Some(1)));
    let out = paybridge(&["order", "--data-dir", data.to_str().unwrap(), "NOSUCH0001"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no order NOSUCH0001"), "{out:?}");

    // Reconciling that day again reads its orders and refunds from the
    // archive: WeChat's bill matches them.
    env.sim.simulator.close_day(&day);
    let result = env.app.reconciler.run_day(&day).await.unwrap();
    assert_eq!(result.state, paybridge::store::bill::BillState::Matched, "{result:?}");
    assert_eq!((result.payments, result.refunds), (3, 1), "{result:?}");

    // A run asked for now finds nothing more to move.
    let report: Value = serde_json::from_slice(&paybridge::control::archive(&data).await.unwrap().unwrap()).unwrap();
    assert_eq!(report["moved"], 0, "{report}");

    let env = env.restart().await;
    check_archived(&env, &day).await;
    let config = env.dir.path().join("paybridge.toml");
    std::fs::write(&config, config_text(&data, "127.0.0.1:1", &env.sim.url(), &env.opts)).unwrap();
    let out = paybridge(&["archive", "verify", "--config", config.to_str().unwrap()]).await;
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{summary}{}", String::from_utf8_lossy(&out.stderr));
    assert!(summary.contains("3 orders: all OK"), "{summary}");
}

/// `paybridge archive verify`: clean, then a flipped byte in a month file
/// (a non-zero exit naming the month), then a flipped byte in its index.
#[tokio::test]
async fn verify_finds_a_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let numbers = seed(&data, 40, 1).await;
    let store = Store::open(&data, Mode::Live).unwrap();
    let now = paybridge::clock::now_ms();
    let report = Archive::new(&data).move_ended(&store, now - 400 * 86_400_000, now).await.unwrap();
    assert_eq!(report.moved, numbers.len() as u64);
    store.close(Duration::from_secs(10)).await;
    drop(store);
    let config = dir.path().join("paybridge.toml");
    std::fs::write(&config, config_text(&data, "127.0.0.1:1", "http://127.0.0.1:1", &Opts::default())).unwrap();
    let verify = || paybridge(&["archive", "verify", "--config", config.to_str().unwrap()]);
    let clean = verify().await;
    assert!(clean.status.success(), "{}", String::from_utf8_lossy(&clean.stderr));
    assert!(String::from_utf8_lossy(&clean.stdout).contains("40 orders: all OK"));

    let month = report.months[0].clone();
    for (file, at) in [(format!("{month}.pba"), 0.5), (format!("{month}.idx"), 0.3)] {
        let path = data.join("archive").join(&file);
        let good = std::fs::read(&path).unwrap();
        let mut bad = good.clone();
        let i = (good.len() as f64 * at) as usize;
        bad[i] ^= 0x04;
        std::fs::write(&path, &bad).unwrap();
        let damaged = verify().await;
        let text = format!("{}{}", String::from_utf8_lossy(&damaged.stdout), String::from_utf8_lossy(&damaged.stderr));
        assert!(!damaged.status.success(), "{file}: {text}");
        assert!(text.contains(&format!("{month}:")) && text.contains("DAMAGED"), "{file}: {text}");
        std::fs::write(&path, &good).unwrap();
        assert!(verify().await.status.success(), "{file} restored");
    }
}

/// Fills a data directory with `count` orders made 500 days ago (across
/// `months` months): even ones paid with a notify, odd ones closed.
/// Returns each number and its status.
async fn seed(data: &Path, count: usize, months: i64) -> BTreeMap<String, OrderStatus> {
    let store = Store::open(data, Mode::Live).unwrap();
    let base = paybridge::clock::now_ms() - 500 * 86_400_000;
    let mut expected = BTreeMap::new();
    let mut tasks = Vec::new();
    for i in 0..count {
        let (store, no) = (store.clone(), format!("KILL{i:06}"));
        let at = base - (i as i64 % months) * 31 * 86_400_000 + i as i64;
        let paid = i % 2 == 0;
        expected.insert(no.clone(), if paid { OrderStatus::Paid } else { OrderStatus::Closed });
        tasks.push(tokio::spawn(async move {
            let contents = OrderContents { total_fee: 100, body: "b".into(), attach: "".into(), openid: "o".into() };
            store.insert_order(Order::new(no.clone(), contents, false, at)).await.unwrap().unwrap();
            if paid {
                let payment = Payment {
                    transaction_id: format!("42{no}"),
                    total_fee: 100,
                    time_end: "20250101120000".into(),
                    openid: "o".into(),
                };
                let record = NotifyRecord {
                    out_trade_no: Some(no.clone()),
                    verified: true,
                    ..NotifyRecord::received(b"<xml>paid</xml>", at + 1000, None, false)
                };
                store
                    .record_notify(record, move |o| {
                        o.unwrap().apply_payment(&payment, at + 1000);
                        (Verdict::Paid, "paid".into(), ())
                    })
                    .await
                    .unwrap();
            } else {
                store.update_order(&no, move |o| o.close(at + 5, "expired")).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(store.close(Duration::from_secs(10)).await);
    expected
}

/// Every order of `expected` is found exactly once, as it was: in the hot
/// store or the archive, never both counted, never lost (every order by a
/// date-range read, the CSV's; every 25th by number too). Returns how many
/// are archived (and no longer hot).
async fn found_exactly_once(data: &Path, expected: &BTreeMap<String, OrderStatus>) -> usize {
    let store = Store::open(data, Mode::Live).unwrap();
    let archive = Archive::new(data);
    let listed = archive.created_in(0, i64::MAX, usize::MAX).unwrap();
    let mut archived = BTreeMap::new();
    for a in listed {
        let no = a.order.out_trade_no.clone();
        assert!(archived.insert(no.clone(), a).is_none(), "{no} is in the archive twice");
    }
    let hot = store.list_orders(&Default::default(), None, 100_000).unwrap().items;
    let mut shown: BTreeMap<String, Order> = hot.into_iter().map(|o| (o.out_trade_no.clone(), o)).collect();
    let mut archived_only = 0;
    for (no, a) in &archived {
        if !shown.contains_key(no) {
            archived_only += 1;
            let paid = a.order.status == OrderStatus::Paid;
            assert_eq!(a.notifies.len(), usize::from(paid), "{no}'s notify moved with it");
            shown.insert(no.clone(), a.order.clone());
        }
    }
    let statuses: BTreeMap<String, OrderStatus> = shown.iter().map(|(no, o)| (no.clone(), o.status)).collect();
    assert_eq!(&statuses, expected, "each order shown once, as it was");
    for (no, status) in expected.iter().step_by(25) {
        let found = archive.lookup(&store, no).unwrap().unwrap_or_else(|| panic!("{no} was lost"));
        assert_eq!(found.order().status, *status, "{no}");
        assert_eq!(matches!(found, Found::Archived(_)), store.order(no).unwrap().is_none(), "{no}");
    }
    let report = archive.verify().unwrap();
    assert!(!report.damaged(), "{}", report.summary());
    store.close(Duration::from_secs(10)).await;
    drop(store);
    archived_only
}

/// The binary, SIGKILLed at varying moments of moves: started, asked to
/// move many orders (`paybridge archive run`), killed, started again.
/// After every kill each order is found exactly once, nothing lost, the
/// archive verifies; the last run moves the rest.
#[tokio::test]
async fn kill_9_during_moves_loses_nothing_and_shows_nothing_twice() {
    let sim = start_simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let expected = seed(&data, 3000, 3).await;
    let config = dir.path().join("paybridge.toml");
    // The notify log keeps these 500-day-old notifies (by default it keeps
    // 90 days), so each one is checked to move with its order.
    let opts = Opts { extra: "[notifies]\nkeep_days = 3650\n".into(), ..Opts::default() };
    std::fs::write(&config, config_text(&data, "127.0.0.1:0", &sim.url(), &opts)).unwrap();
    let config = config.to_str().unwrap().to_owned();

    let mut archived = 0;
    let mut interrupted = 0;
    for delay_ms in [100u64, 180, 240, 290, 340, 400, 470, 550, 650, 800] {
        let mut server = Proc::spawn(&["serve", "--config", &config], "info");
        server.line("PayBridge listening").await;
        // What `paybridge archive run` asks over the control socket.
        let socket_data = data.clone();
        let mover = tokio::spawn(async move { paybridge::control::archive(&socket_data).await });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        server.signal("KILL");
        server.wait().await;
        let _ = mover.await;
        let started = std::time::Instant::now();
        let now = found_exactly_once(&data, &expected).await;
        eprintln!("killed after {delay_ms} ms: {now} archived (checked in {:?})", started.elapsed());
        assert!(now >= archived, "an archived order went back");
        if now > archived && now < expected.len() {
            interrupted += 1;
        }
        archived = now;
    }
    assert!(interrupted >= 1, "at least one kill landed in the middle of a move ({archived} archived)");

    // A run left alone finishes: everything is archived, nothing is hot.
    let mut server = Proc::spawn(&["serve", "--config", &config], "info");
    server.line("PayBridge listening").await;
    let out = paybridge(&["archive", "run", "--config", &config]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(server.terminate().await.code(), Some(0));
    assert_eq!(found_exactly_once(&data, &expected).await, expected.len());
    let out = paybridge(&["archive", "verify", "--config", &config]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}
