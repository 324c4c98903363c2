//! What the one store writer delivers on this machine's disk.
//!
//! `cargo bench --bench storage` starts the real server (sandbox mode, its
//! simulator answering at once) on loopback and measures, in one run:
//! 1. a 512-byte write + `fdatasync` loop on the same disk (the baseline);
//! 2. durable notifies at 1, 16 and 256 concurrent senders (`wrk`
//!    connections, from outside the process): requests/s, p50 and p99, and
//!    the ratio to the baseline (every SUCCESS is on disk);
//! 3. unifiedOrder from 64 `wrk` connections: orders/s and the CPU time of
//!    this process (PayBridge and the simulator) per order;
//! 4. the real binary's resident memory idle, with 1,000 idle TLS
//!    connections, and after they close; its size, stripped.
//!
//! These machines are noisy: compare figures within one run only.
//! Under `cargo test` it runs once on a small load, checking the answers,
//! so the benchmark cannot rot.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

#[path = "common/wrk.rs"]
mod wrk;
use paybridge::app::Running;
use paybridge::config::Config;
use paybridge::store::{Order, OrderContents};
use paybridge::wechat::sign::{self, SignType};
use paybridge::wechat::xml;

/// 512-byte writes, each followed by `fdatasync`, for `duration`: syncs/s.
fn fdatasync_rate(dir: &Path, duration: Duration) -> f64 {
    let mut file = std::fs::File::create(dir.join("baseline")).unwrap();
    let block = [7u8; 512];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        file.write_all(&block).unwrap();
        file.sync_data().unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn notify_body(no: &str, config: &Config) -> String {
    let w = &config.wechat;
    let mut fields = sign::fields([
        ("return_code", "SUCCESS"),
        ("appid", w.appid.as_str()),
        ("mch_id", w.mch_id.as_str()),
        ("nonce_str", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"),
        ("result_code", "SUCCESS"),
        ("openid", "oBench"),
        ("trade_type", "JSAPI"),
        ("bank_type", "OTHERS"),
        ("total_fee", "100"),
        ("fee_type", "CNY"),
        ("cash_fee", "100"),
        ("transaction_id", &format!("4200{no:0>24}")),
        ("out_trade_no", no),
        ("time_end", "20261126120000"),
    ]);
    let paybridge::config::PayApi::V2 { mch_key, .. } = &w.api else { panic!("the bench runs the v2 sandbox") };
    let signature = sign::sign(&fields, mch_key, SignType::Md5);
    fields.insert("sign".into(), signature);
    xml::write(&fields)
}

/// Creates `count` orders named `prefix` + number, straight in the store.
async fn create_orders(app: &Running, prefix: &str, count: usize) -> Vec<String> {
    let orders: Vec<String> = (0..count).map(|i| format!("{prefix}{i:07}")).collect();
    let store = app.store.clone();
    futures_util::stream::iter(orders.clone())
        .map(|no| {
            let store = store.clone();
            let contents =
                OrderContents { total_fee: 100, body: "bench".into(), attach: String::new(), openid: "oBench".into() };
            async move { store.insert_order(Order::new(no, contents, true, 1)).await.unwrap().unwrap() }
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await;
    orders
}

/// Durable notifies from `senders` wrk connections for `duration`, each a
/// signed notify for one of `orders` (a repeat is acknowledged as a
/// duplicate: still a durable write of the notify log).
async fn notifies(app: &Running, dir: &Path, senders: usize, orders: &[String], duration: Duration) -> wrk::Load {
    let mut script = String::from("local bodies = {\n");
    for no in orders {
        script += &format!("[==[{}]==],\n", notify_body(no, &app.config));
    }
    script += "}\nlocal i = 0\ninit = function(args) i = math.random(#bodies) end\n\
               request = function()\n  i = i % #bodies + 1\n  \
               return wrk.format(\"POST\", \"/pay/notify\", {[\"Content-Type\"] = \"text/xml\"}, bodies[i])\nend\n";
    let url = format!("http://{}/pay/notify", app.addr);
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || wrk::run(&dir, &url, senders, duration, Some(&script), &[])).await.unwrap()
}

/// This process's CPU time so far (user + system), from /proc.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// Unified orders (each new) from 64 wrk connections for `duration`: the
/// figures, and this process's CPU (PayBridge and the simulator) per order.
async fn unified_orders(app: &Running, dir: &Path, duration: Duration) -> (wrk::Load, Duration) {
    let base = format!("http://{}", app.addr);
    let login: serde_json::Value =
        reqwest::get(format!("{base}/pay/openid?code=bench")).await.unwrap().json().await.unwrap();
    let openid = login["openid"].as_str().unwrap().to_owned();
    let script = format!(
        "local i = 0\nlocal prefix = \"\"\ninit = function(args) prefix = tostring(math.random(100000, 999999)) end\n\
         request = function()\n  i = i + 1\n  local body = string.format('{{\"outTradeNo\":\"W%s%09d\",\
         \"totalFee\":1,\"body\":\"bench\",\"openid\":\"{openid}\"}}', prefix, i)\n  \
         return wrk.format(\"POST\", \"/pay/unifiedOrder\", {{[\"Content-Type\"] = \"application/json\"}}, body)\nend\n"
    );
    let (url, dir) = (format!("{base}/pay/unifiedOrder"), dir.to_owned());
    let cpu = cpu_time();
    let load =
        tokio::task::spawn_blocking(move || wrk::run(&dir, &url, 64, duration, Some(&script), &[])).await.unwrap();
    let orders = load.per_second * duration.as_secs_f64();
    (load, (cpu_time() - cpu).div_f64(orders.max(1.0)))
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 =
        status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024.0
}

/// The real binary over self-signed HTTPS: RSS idle, with `connections`
/// idle TLS connections open, after they close, and after four rounds.
async fn memory(dir: &Path, connections: usize) -> (f64, f64, f64, f64) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.join("memory.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[http]\nlisten = \"off\"\nmax_connections_per_ip = 2048\n\
             first_request_timeout_secs = 600\nidle_timeout_secs = 600\n[tls]\nmode = \"self-signed\"\nlisten = \"127.0.0.1:{port}\"\n\
             domains = [\"bench.paybridge.test\"]\n[wechat]\nappid = \"wxd930ea5d5a258f4f\"\napp_secret = \"s\"\n\
             mch_id = \"10000100\"\nmch_key = \"192006250b4c09247ec02edce69f6a2d\"\n\
             notify_url = \"https://bench.paybridge.test/pay/notify\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
            dir.join("memory-data").display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_paybridge"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("PAYBRIDGE_LOG", "warn")
        .env("MALLOC_ARENA_MAX", "2") // as install.sh's unit sets it
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}/healthz");
    let client = || reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    while client().get(&url).send().await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_mib(child.id());
    // Rounds: what one leaves behind must be reused by the next.
    let mut figures = Vec::new();
    for _ in 0..4 {
        let mut open = Vec::new();
        for _ in 0..connections {
            let c = client();
            assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
            open.push(c); // keeps its connection open, idle
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let loaded = rss_mib(child.id());
        drop(open);
        tokio::time::sleep(Duration::from_secs(3)).await;
        figures.push((loaded, rss_mib(child.id())));
    }
    let _ = child.kill();
    let _ = child.wait();
    (idle, figures[0].0, figures[0].1, figures[3].1)
}

/// The binary's size once stripped, in MiB.
fn stripped_size(dir: &Path) -> f64 {
    let out = dir.join("paybridge.stripped");
    let ok = std::process::Command::new("strip")
        .args(["-o", out.to_str().unwrap(), env!("CARGO_BIN_EXE_paybridge")])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return f64::NAN;
    }
    std::fs::metadata(out).unwrap().len() as f64 / (1024.0 * 1024.0)
}

/// One row of the table: rate, p50 and p99 in ms, and a last column.
fn row(name: &str, load: &wrk::Load, last: &str) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("| {name} | {:.0} | {:.2} | {:.2} | {last} |", load.per_second, ms(load.p50), ms(load.p99));
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).unwrap_or("?");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {}", model.trim())
}

#[tokio::main]
async fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    if !wrk::available() {
        println!("storage: wrk is not installed (apt-get install wrk); nothing measured");
        return;
    }
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "target".into())).unwrap();
    let mut config = Config::sandbox_default();
    config.data_dir = dir.path().join("data");
    config.http.listen = Some("127.0.0.1:0".parse().unwrap());
    config.sandbox.simulator_listen = "127.0.0.1:0".parse().unwrap();
    // wrk's 256 connections come from one address, as no real client's would.
    config.http.limits.per_ip = config.http.limits.total;
    // And its unified orders: the per-address and WeChat-call budgets are lifted.
    config.orders.unified_orders_per_peer_per_minute = 1_000_000;
    config.orders.wechat_calls_per_second = 1_000_000;
    let app = paybridge::app::start(config).await.unwrap();

    let sync_rate = fdatasync_rate(dir.path(), if bench { Duration::from_secs(3) } else { Duration::from_millis(200) });
    let seconds = Duration::from_secs(if bench { 2 } else { 1 });
    println!("machine: {}; disk: {}; load from wrk, outside this process", machine(), dir.path().display());
    println!("| measure | per second | p50 ms | p99 ms | × fdatasync rate |");
    println!("|---|---|---|---|---|");
    println!("| 512-byte write + fdatasync loop | {sync_rate:.0} | | | 1.00 |");
    // Each level pays orders of its own, enough that (almost) every notify
    // pays a fresh order: a repeat would be a cheaper duplicate.
    for (senders, orders) in [(1, 5_000), (16, 30_000), (256, 50_000)] {
        let orders = create_orders(&app, &format!("N{senders}x"), if bench { orders } else { 200 }).await;
        let load = notifies(&app, dir.path(), senders, &orders, seconds).await;
        assert_eq!(load.errors, 0, "every notify answered");
        row(&format!("durable notifies, {senders} senders"), &load, &format!("{:.2}", load.per_second / sync_rate));
    }
    let (load, cpu) = unified_orders(&app, dir.path(), seconds).await;
    assert_eq!(load.errors, 0, "every order answered");
    let cpu = format!("CPU {:.3} ms/order (PayBridge and simulator)", cpu.as_secs_f64() * 1000.0);
    row("unifiedOrder, 64 clients", &load, &cpu);
    assert_eq!(app.store.writer_stats().failed() + app.store.writer_stats().refused_busy(), 0);
    let paid = app.store.status_counts().unwrap().into_iter().find(|(s, _)| s.as_str() == "PAID").map_or(0, |(_, n)| n);
    assert!(paid > 0, "the notifies verified and paid orders");
    let stats = app.store.writer_stats();
    println!("store: {} writes acknowledged by {} fdatasyncs", stats.acknowledged(), stats.syncs());
    app.stop().await;
    let (idle, loaded, after, again) = memory(dir.path(), if bench { 1000 } else { 20 }).await;
    println!(
        "binary RSS: idle {idle:.1} MiB, with {} idle TLS connections {loaded:.1} MiB, after they close {after:.1} MiB, \
         after four rounds {again:.1} MiB; binary {:.1} MiB stripped",
        if bench { 1000 } else { 20 },
        stripped_size(dir.path())
    );
}
