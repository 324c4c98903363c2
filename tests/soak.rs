//! A soak: the real binary over HTTPS under minutes of mixed traffic —
//! orders, notifies, admin pages and a new TLS connection per health check —
//! with its resident memory sampled. It must level off (the page cache is
//! bounded by `[storage] cache_mb`), and every request must be answered.
//!
//! `SOAK_SECS` sets the length (CI: the default, 150 s); the curve is printed.

mod common;
#[path = "common/process.rs"]
mod process;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{admin_hash, notify_fields, signed_xml, start_simulator, wechat_toml, ADMIN_PASSWORD, MCH_KEY};
use paybridge::wechat::sign::SignType;
use process::{after, Proc};
use serde_json::{json, Value};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn client(fresh_connections: bool) -> reqwest::Client {
    let builder = reqwest::Client::builder().danger_accept_invalid_certs(true).timeout(Duration::from_secs(10));
    let builder = if fresh_connections { builder.pool_max_idle_per_host(0) } else { builder };
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_levels_off_under_minutes_of_mixed_traffic() {
    let seconds: u64 = std::env::var("SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(150);
    let sim = start_simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("paybridge.toml");
    // All load comes from one address as fast as it can: the per-address
    // and WeChat-call budgets (tests/orders_bounded.rs) are lifted.
    let text = format!(
        "data_dir = \"{data}\"\n[http]\nlisten = \"off\"\n[tls]\nmode = \"self-signed\"\nlisten = \"127.0.0.1:{port}\"\n\
         domains = [\"soak.paybridge.test\"]\n{wechat}notify_url = \"https://soak.paybridge.test/pay/notify\"\n\
         [orders]\naccept_client_amount = true\nunified_orders_per_peer_per_minute = 1000000\n\
         wechat_calls_per_second = 10000\n[admin]\npassword_hash = \"{hash}\"\n[storage]\ncache_mb = 16\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        data = dir.path().join("data").display(),
        port = process::free_tcp_port(),
        wechat = wechat_toml(&sim.url()),
        hash = admin_hash(),
    );
    std::fs::write(&config, text).unwrap();
    let mut proc = Proc::spawn(&["serve", "--config", config.to_str().unwrap()], "warn");
    let base = after(&proc.line("PayBridge listening on").await, "listening on ");
    let pid = proc.child.id();

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let login: Value =
        client(false).get(format!("{base}/pay/openid?code=soak")).send().await.unwrap().json().await.unwrap();
    let openid = login["openid"].as_str().unwrap().to_owned();
    // Orders, each paid by a notify.
    for worker in 0..16 {
        let (stop, done, base, openid) = (stop.clone(), done.clone(), base.clone(), openid.clone());
        tasks.push(tokio::spawn(async move {
            let http = client(false);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let no = format!("SOAK{worker:02}{n:08}");
                let order = json!({ "outTradeNo": no, "totalFee": 100, "body": "soak", "openid": openid });
                let r = http.post(format!("{base}/pay/unifiedOrder")).json(&order).send().await.unwrap();
                assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
                let body =
                    signed_xml(notify_fields(&no, 100, &format!("42{worker:02}{n:024}")), MCH_KEY, SignType::Md5);
                let reply = http.post(format!("{base}/pay/notify")).body(body).send().await.unwrap();
                assert!(reply.text().await.unwrap().contains("SUCCESS"));
                n += 1;
                done.fetch_add(2, Ordering::Relaxed);
            }
        }));
    }
    // The admin looking around.
    {
        let (stop, done, base) = (stop.clone(), done.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let admin =
                reqwest::Client::builder().danger_accept_invalid_certs(true).cookie_store(true).build().unwrap();
            let r = admin.post(format!("{base}/admin/api/login")).json(&json!({ "password": ADMIN_PASSWORD }));
            assert_eq!(r.send().await.unwrap().status(), 200);
            while !stop.load(Ordering::Relaxed) {
                for path in ["overview", "orders?limit=50", "orders?status=PAID&limit=50", "notifies", "system"] {
                    let r = admin.get(format!("{base}/admin/api/{path}")).send().await.unwrap();
                    assert_eq!(r.status(), 200, "{path}");
                    done.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    // A new TLS connection for every health check.
    {
        let (stop, done, base) = (stop.clone(), done.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = client(true).get(format!("{base}/healthz")).send().await.unwrap();
                assert_eq!(r.status(), 200);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let start = Instant::now();
    let mut curve = Vec::new();
    while start.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        curve.push((start.elapsed().as_secs(), rss_kib(pid), done.load(Ordering::Relaxed)));
        assert!(!tasks.iter().any(|t| t.is_finished()), "a client failed");
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!("seconds  RSS MiB  requests");
    for (secs, rss, requests) in &curve {
        eprintln!("{secs:>7}  {:>7.1}  {requests:>8}", *rss as f64 / 1024.0);
    }
    // Levels off: the last third grows no more than 20% (plus 8 MiB of slack)
    // over the middle third, and the whole stays far below what a 1 GB VPS
    // has (a debug build; the release binary idles at about 10 MiB).
    let third = curve.len() / 3;
    let peak = |part: &[(u64, u64, u64)]| part.iter().map(|c| c.1).max().unwrap();
    let (middle, last) = (peak(&curve[third..2 * third]), peak(&curve[2 * third..]));
    assert!(last <= middle * 12 / 10 + 8 * 1024, "RSS still growing: {middle} KiB then {last} KiB");
    assert!(last < 300 * 1024, "RSS {last} KiB with a 16 MB cache");
    assert!(proc.terminate().await.success());
    sim.stop().await;
}
