//! The store under the load a real day brings: hundreds of concurrent
//! clients on a multi-threaded server (and on a single worker thread), a
//! SIGKILL loop mid-load against the real binary, and `strace` proof that
//! every acknowledged notify was `fdatasync`ed before its SUCCESS left.

mod common;
#[path = "common/process.rs"]
mod process;
#[path = "common/tmpfs.rs"]
mod tmpfs;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{config_text, notify_fields, signed_xml, start_simulator, Env, Opts, MCH_KEY};
use paybridge::config::Mode;
use paybridge::store::{OrderFilter, OrderStatus, Store, Verdict};
use paybridge::wechat::sign::SignType;
use paybridge::wechat::xml;
use process::{after, Proc};
use serde_json::{json, Value};

/// A client for one PayBridge, cheap to clone into tasks.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(base: &str) -> Client {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        Client { http, base: base.to_owned() }
    }

    /// Places an order; `Some(body)` only when the payment parameters came back.
    async fn order(&self, no: &str, fee: u64, openid: &str) -> Result<(u16, Value), reqwest::Error> {
        let body = json!({ "outTradeNo": no, "totalFee": fee, "body": "负载测试", "openid": openid });
        let r = self.http.post(format!("{}/pay/unifiedOrder", self.base)).json(&body).send().await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await?))
    }

    /// Sends WeChat's signed notify for a payment; the XML reply's return_code.
    async fn notify(&self, no: &str, fee: u64) -> Result<String, reqwest::Error> {
        let body = signed_xml(notify_fields(no, fee, &transaction_id(no)), MCH_KEY, SignType::Md5);
        let r = self.http.post(format!("{}/pay/notify", self.base)).body(body).send().await?;
        let text = r.text().await?;
        Ok(xml::parse(text.as_bytes()).unwrap_or_default().get("return_code").cloned().unwrap_or(text))
    }

    /// Logs in with `code`; the openid.
    async fn openid(&self, code: &str) -> String {
        let r = self.http.get(format!("{}/pay/openid?code={code}", self.base)).send().await.unwrap();
        let login: Value = r.json().await.unwrap();
        login["openid"].as_str().unwrap().to_owned()
    }

    /// The order's status, as its payer (`openid`) sees it.
    async fn status(&self, no: &str, openid: &str) -> Result<String, reqwest::Error> {
        let url = format!("{}/pay/orders/{no}?openid={openid}", self.base);
        let v: Value = self.http.get(url).send().await?.json().await?;
        Ok(v["status"].as_str().unwrap_or("?").to_owned())
    }
}

/// Hundreds of clients from one address, as no real crowd comes: the
/// per-address connection cap (256, meant for strangers) must not be what
/// these tests measure.
fn load_opts() -> Opts {
    Opts { http_extra: "max_connections_per_ip = 2048", ..Opts::default() }
}

fn transaction_id(no: &str) -> String {
    format!("4200{:0>24}", no.bytes().map(|b| (b % 10).to_string()).collect::<String>())
}

fn fee(i: usize) -> u64 {
    100 + i as u64
}

/// Polls `/healthz` until told to stop; every answer must come within 2 s.
fn watch_health(client: Client, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut answered = 0;
        while !stop.load(Ordering::Relaxed) {
            let r = tokio::time::timeout(
                Duration::from_secs(2),
                client.http.get(format!("{}/healthz", client.base)).send(),
            )
            .await
            .expect("/healthz did not answer within 2 s under load")
            .unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
            answered += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        answered
    })
}

/// 64 clients place 256 distinct orders at once, then 256 senders notify
/// all of them at once; `/healthz` answers throughout; a restart finds every
/// order PAID and the counters right.
async fn orders_and_notifies_at_once() {
    let env = Env::start(load_opts()).await;
    let client = Client::new(&env.base);
    let openid = env.openid("code-load").await;
    let stop = Arc::new(AtomicBool::new(false));
    let health = watch_health(client.clone(), stop.clone());

    let placers: Vec<_> = (0..64)
        .map(|c| {
            let (client, openid) = (client.clone(), openid.clone());
            tokio::spawn(async move {
                for k in 0..4 {
                    let i = c * 4 + k;
                    let (status, body) = client.order(&format!("LOAD{i:05}"), fee(i), &openid).await.unwrap();
                    assert_eq!(status, 200, "{body}");
                    assert!(body["package"].as_str().is_some_and(|p| p.starts_with("prepay_id=")), "{body}");
                }
            })
        })
        .collect();
    for p in placers {
        p.await.unwrap();
    }
    let senders: Vec<_> = (0..256)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.notify(&format!("LOAD{i:05}"), fee(i)).await.unwrap() })
        })
        .collect();
    for s in senders {
        assert_eq!(s.await.unwrap(), "SUCCESS");
    }
    stop.store(true, Ordering::Relaxed);
    assert!(health.await.unwrap() > 0, "/healthz was polled during the load");

    let stats = env.app.store.writer_stats();
    // 256 inserts, 256 prepay updates, 256 notifies: one sync covers many.
    assert!(stats.acknowledged() >= 768, "{}", stats.acknowledged());
    // Group commit: one sync covers several writes (4–8 here; at least 2 required).
    assert!(stats.syncs() * 2 < stats.acknowledged(), "{} syncs for {} writes", stats.syncs(), stats.acknowledged());

    let env = env.restart().await;
    // A fresh client: pooled connections died with the old server.
    let client = Client::new(&env.base);
    for i in 0..256 {
        assert_eq!(client.status(&format!("LOAD{i:05}"), &openid).await.unwrap(), "PAID", "LOAD{i:05}");
    }
    let counts: BTreeMap<_, _> =
        env.app.store.status_counts().unwrap().into_iter().map(|(s, n)| (s.as_str(), n)).collect();
    assert_eq!(counts["PAID"], 256);
    assert_eq!(env.app.store.order_count().unwrap(), 256);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_clients_on_a_multi_threaded_server() {
    orders_and_notifies_at_once().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn hundreds_of_clients_on_one_worker_thread() {
    orders_and_notifies_at_once().await;
}

/// What the clients were told, which a crash must not take back.
#[derive(Default)]
struct Promises {
    /// Orders whose payment parameters reached a client.
    placed: BTreeSet<String>,
    /// Orders whose notify was answered SUCCESS.
    paid: BTreeSet<String>,
}

/// SIGKILL the real binary 10 times while 200 requests (new orders and
/// notifies) are in flight; after each restart every promise holds, and at
/// the end the store opens cleanly, no order is PAID twice and the counters
/// equal a recount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loop_mid_load_keeps_every_promise() {
    let sim = start_simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = process::free_tcp_port();
    let config = dir.path().join("paybridge.toml");
    std::fs::write(&config, config_text(&data, &format!("127.0.0.1:{port}"), &sim.url(), &load_opts())).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut promises = Promises::default();
    let mut fees = BTreeMap::new();
    let mut next = 0usize;

    let mut openid = String::new();
    for round in 0..10 {
        let mut proc = Proc::spawn(&["serve", "--config", config.to_str().unwrap()], "warn");
        proc.line("PayBridge listening on").await;
        // A fresh client each round: pooled connections died with the killed process.
        let client = Client::new(&base);
        if round == 0 {
            openid = client.openid("crash").await;
        }
        for no in &promises.placed {
            let status = client.status(no, &openid).await.unwrap();
            let expected: &[&str] = if promises.paid.contains(no) { &["PAID"] } else { &["PREPAID", "PAID"] };
            assert!(expected.contains(&status.as_str()), "round {round}: {no} is {status}");
        }
        if round == 0 {
            // Orders for the first round's notifies.
            for _ in 0..100 {
                let no = format!("CRASH{next:05}");
                assert_eq!(client.order(&no, fee(next), &openid).await.unwrap().0, 200);
                fees.insert(no.clone(), fee(next));
                promises.placed.insert(no);
                next += 1;
            }
        }

        // 100 new orders and 100 notifies (some repeats) in flight at once.
        let unpaid: Vec<String> = promises.placed.difference(&promises.paid).take(90).cloned().collect();
        let repeats: Vec<String> = promises.paid.iter().take(10).cloned().collect();
        let placed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let paid = Arc::new(std::sync::Mutex::new(Vec::new()));
        let answered = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in next..next + 100 {
            let no = format!("CRASH{i:05}");
            fees.insert(no.clone(), fee(i));
            let (client, openid, placed, answered) = (client.clone(), openid.clone(), placed.clone(), answered.clone());
            tasks.push(tokio::spawn(async move {
                if let Ok((200, _)) = client.order(&no, fee(i), &openid).await {
                    placed.lock().unwrap().push(no);
                }
                answered.fetch_add(1, Ordering::Relaxed);
            }));
        }
        next += 100;
        for no in unpaid.into_iter().chain(repeats) {
            let (client, paid, answered, fee) = (client.clone(), paid.clone(), answered.clone(), fees[&no]);
            tasks.push(tokio::spawn(async move {
                if client.notify(&no, fee).await.is_ok_and(|code| code == "SUCCESS") {
                    paid.lock().unwrap().push(no);
                }
                answered.fetch_add(1, Ordering::Relaxed);
            }));
        }
        // Kill while requests are still in flight (some answered, most not).
        let threshold = 5 + round * 7;
        while answered.load(Ordering::Relaxed) < threshold {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        proc.signal("KILL");
        drop(proc);
        for t in tasks {
            t.await.unwrap();
        }
        let in_flight = 200 - answered.load(Ordering::Relaxed).min(200);
        eprintln!("round {round}: killed with about {in_flight} requests unanswered");
        promises.placed.extend(placed.lock().unwrap().drain(..));
        promises.paid.extend(paid.lock().unwrap().drain(..));
    }
    assert!(promises.paid.len() > 100, "the load did pay orders: {}", promises.paid.len());

    // The store opens cleanly and keeps every promise.
    let store = Store::open(&data, Mode::Live).unwrap();
    for no in &promises.placed {
        let order = store.order(no).unwrap().unwrap_or_else(|| panic!("{no} was placed and is gone"));
        if promises.paid.contains(no) {
            assert_eq!(order.status, OrderStatus::Paid, "{no}");
        }
    }
    // Never PAID twice: at most one PAID verdict per order.
    let mut counted = BTreeMap::new();
    let mut cursor = None;
    loop {
        let page = store.list_orders(&OrderFilter::default(), cursor.as_deref(), 500).unwrap();
        for order in &page.items {
            *counted.entry(order.status.as_str()).or_insert(0u64) += 1;
            let notifies = store.notifies_for_order(&order.out_trade_no, None, 1000).unwrap().items;
            let paid = notifies.iter().filter(|n| n.verdict == Verdict::Paid).count();
            assert!(paid <= 1, "{} was PAID {paid} times", order.out_trade_no);
            assert_eq!(paid == 1, order.status == OrderStatus::Paid, "{}", order.out_trade_no);
        }
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    // The maintained counters equal a recount.
    for (status, count) in store.status_counts().unwrap() {
        assert_eq!(count, counted.get(status.as_str()).copied().unwrap_or(0), "{status:?}");
    }
    sim.stop().await;
}

/// Under `strace`, with one sender at a time: between receiving each notify
/// and sending its SUCCESS, the writer `fdatasync`ed sled's data file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_success_follows_an_fdatasync_of_the_data() {
    let sim = start_simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let trace = dir.path().join("strace.txt");
    let config = dir.path().join("paybridge.toml");
    std::fs::write(&config, config_text(&data, "127.0.0.1:0", &sim.url(), &load_opts())).unwrap();
    let mut proc = Proc::spawn_program(
        "strace",
        &[
            "-f",
            "-s",
            "300",
            "-e",
            "trace=openat,fdatasync,fsync,read,recvfrom,write,writev,sendto",
            "-o",
            trace.to_str().unwrap(),
            env!("CARGO_BIN_EXE_paybridge"),
            "serve",
            "--config",
            config.to_str().unwrap(),
        ],
        "warn",
    );
    let base = format!("http://{}", after(&proc.line("PayBridge listening on").await, "listening on http://"));
    let client = Client::new(&base);
    let openid = client.openid("strace").await;
    for i in 0..30 {
        assert_eq!(client.order(&format!("TRACE{i:03}"), fee(i), &openid).await.unwrap().0, 200);
    }
    for i in 0..30 {
        assert_eq!(client.notify(&format!("TRACE{i:03}"), fee(i)).await.unwrap(), "SUCCESS");
    }
    // Stop PayBridge itself (strace's child); strace exits with it.
    let stopped =
        std::process::Command::new("pkill").args(["-TERM", "-P", &proc.child.id().to_string()]).status().unwrap();
    assert!(stopped.success());
    assert!(proc.wait().await.success());

    let trace = std::fs::read_to_string(&trace).unwrap();
    // The descriptor the writer syncs: sled's data file, opened read-only.
    let data_fd: String = trace
        .lines()
        .find(|l| l.contains("openat(") && l.contains("/data/store/db\"") && l.contains("O_RDONLY"))
        .and_then(|l| l.rsplit("= ").next())
        .expect("the data file is opened for syncing")
        .trim()
        .to_owned();
    let synced = |l: &str| {
        (l.contains(&format!("fdatasync({data_fd})")) && !l.contains("unfinished"))
            || (l.contains("<... fdatasync resumed>") && l.trim_end().ends_with("= 0"))
    };
    // PayBridge never sends a notify, so any line with one is a read (or its
    // `<... read resumed>` half, when the call blocked first).
    let received = |l: &str| l.contains("POST /pay/notify");
    let answered = |l: &str| {
        (l.contains("write(") || l.contains("writev(") || l.contains("sendto(")) && l.contains("CDATA[SUCCESS]")
    };
    let mut notifies = 0;
    let mut syncs_since_request = None;
    for line in trace.lines() {
        if received(line) {
            syncs_since_request = Some(0);
        } else if synced(line) {
            syncs_since_request = syncs_since_request.map(|n| n + 1);
        } else if answered(line) {
            let syncs = syncs_since_request.take().expect("a SUCCESS answers a notify");
            assert!(syncs >= 1, "a SUCCESS left before its notify was fdatasynced:\n{line}");
            notifies += 1;
        }
    }
    assert_eq!(notifies, 30, "every SUCCESS was seen in the trace");
    sim.stop().await;
}

/// The disk fills up mid-load: writes fail with 503 and FAIL (so WeChat
/// resends), nothing acknowledged is lost, `/healthz` keeps answering and
/// says so, and once space is freed the server recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_and_recovers_when_space_returns() {
    let disk = tmpfs::Tmpfs::mount(16);
    let sim = start_simulator().await;
    let env = Env::start_in(tempfile::tempdir_in(disk.dir.path()).unwrap(), sim, load_opts()).await;
    let client = Client::new(&env.base);
    let openid = env.openid("code-full").await;
    let mut promises = Promises::default();
    for i in 0..100 {
        let no = format!("FULL{i:05}");
        assert_eq!(client.order(&no, fee(i), &openid).await.unwrap().0, 200);
        promises.placed.insert(no);
    }

    let filler = disk.fill();
    let placers: Vec<_> = (100..300)
        .map(|i| {
            let (client, openid) = (client.clone(), openid.clone());
            tokio::spawn(async move {
                let no = format!("FULL{i:05}");
                let (status, body) = client.order(&no, fee(i), &openid).await.unwrap();
                assert!(status == 200 || status == 503, "{status} {body}");
                if status == 503 {
                    assert_eq!(body["error"]["code"], "STORAGE_UNAVAILABLE", "{body}");
                }
                (no, status == 200)
            })
        })
        .collect();
    let senders: Vec<_> = (0..100)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let no = format!("FULL{i:05}");
                let code = client.notify(&no, fee(i)).await.unwrap();
                assert!(code == "SUCCESS" || code == "FAIL", "{code}");
                (no, code == "SUCCESS")
            })
        })
        .collect();
    let mut refused = 0;
    for task in placers {
        match task.await.unwrap() {
            (no, true) => drop(promises.placed.insert(no)),
            (_, false) => refused += 1,
        }
    }
    for task in senders {
        match task.await.unwrap() {
            (no, true) => drop(promises.paid.insert(no)),
            (_, false) => refused += 1,
        }
    }
    assert!(refused > 0, "a full disk refused some writes");
    let health = client.http.get(format!("{}/healthz", client.base)).send().await.unwrap();
    assert_eq!(health.status(), 503);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "storage failing");

    // Space returns: the server recovers without a restart.
    std::fs::remove_file(filler).unwrap();
    let mut recovered = false;
    for attempt in 0..100 {
        let no = format!("AFTER{attempt:03}");
        if client.order(&no, 1, &openid).await.unwrap().0 == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "writes work again once space is freed");
    for i in 0..100 {
        assert_eq!(client.notify(&format!("FULL{i:05}"), fee(i)).await.unwrap(), "SUCCESS", "WeChat's resend");
    }
    let health = client.http.get(format!("{}/healthz", client.base)).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let env = env.restart().await;
    // A fresh client: pooled connections died with the old server.
    let client = Client::new(&env.base);
    for no in &promises.placed {
        let expected: &[&str] = if promises.paid.contains(no) { &["PAID"] } else { &["PREPAID", "PAID"] };
        let status = client.status(no, &openid).await.unwrap();
        assert!(expected.contains(&status.as_str()), "{no} is {status}");
    }
    for i in 0..100 {
        assert_eq!(client.status(&format!("FULL{i:05}"), &openid).await.unwrap(), "PAID");
    }
    env.stop().await;
}

/// A backup taken while 200 clients write is one point in time: restored,
/// its counters equal a recount and every notify's order is in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_is_consistent() {
    let env = Env::start(load_opts()).await;
    let client = Client::new(&env.base);
    let openid = env.openid("code-backup").await;
    let writers: Vec<_> = (0..200)
        .map(|i| {
            let (client, openid) = (client.clone(), openid.clone());
            tokio::spawn(async move {
                let no = format!("BACKUP{i:05}");
                assert_eq!(client.order(&no, fee(i), &openid).await.unwrap().0, 200);
                assert_eq!(client.notify(&no, fee(i)).await.unwrap(), "SUCCESS");
            })
        })
        .collect();
    // Three backups while the writers run.
    let mut backups = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let mut bytes = Vec::new();
        let len = paybridge::control::backup(&env.dir.path().join("data"), &mut bytes).await.unwrap();
        assert_eq!(len, Some(bytes.len() as u64), "the server answers on its control socket");
        backups.push(bytes);
    }
    for w in writers {
        w.await.unwrap();
    }
    for (n, bytes) in backups.iter().enumerate() {
        let dir = env.dir.path().join(format!("restored{n}"));
        Store::restore(&dir, &bytes[..]).unwrap();
        let store = Store::open(&dir, Mode::Live).unwrap();
        let mut counted = BTreeMap::new();
        let mut cursor = None;
        loop {
            let page = store.list_orders(&OrderFilter::default(), cursor.as_deref(), 500).unwrap();
            for order in &page.items {
                *counted.entry(order.status.as_str()).or_insert(0u64) += 1;
            }
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        for (status, count) in store.status_counts().unwrap() {
            assert_eq!(count, counted.get(status.as_str()).copied().unwrap_or(0), "backup {n}: {status:?}");
        }
        let notifies = store.list_notifies(None, 1000).unwrap().items;
        for notify in &notifies {
            let no = notify.out_trade_no.as_deref().unwrap();
            assert!(store.order(no).unwrap().is_some(), "backup {n}: notify for {no} without its order");
        }
        eprintln!("backup {n}: {} orders, {} notifies", counted.values().sum::<u64>(), notifies.len());
    }
    env.stop().await;
}
