//! Hostile traffic: what anonymous senders can make PayBridge keep or hold
//! open stays bounded, and the merchant's own clients keep being served.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{login, Env, Opts};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// These tests measure this process's peak memory and load the machine:
/// they run one at a time.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// Bytes in the files under `dir`.
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                dir_size(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

/// A junk notify of about 60 KiB; every other one names a real order.
fn junk(i: usize, order: &str) -> Vec<u8> {
    let padding = "x".repeat(60 * 1024);
    match i % 2 {
        0 => format!(
            "<xml><return_code>SUCCESS</return_code><result_code>SUCCESS</result_code>\
             <out_trade_no>{order}</out_trade_no><total_fee>1</total_fee><transaction_id>42{i:026}</transaction_id>\
             <pad>{padding}</pad><sign>{i:032}</sign></xml>"
        )
        .into_bytes(),
        _ => padding.into_bytes(),
    }
}

/// 20,000 unsigned 60 KiB notifies once grew the data directory to 1.6 GB
/// and an order's detail to 1.2 GB of JSON. Now a refused notify keeps a
/// bounded record, a peer gets only `refused_per_peer_per_minute` of them
/// recorded, and only verified notifies belong to an order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_junk_notify_flood_keeps_the_disk_and_the_order_bounded() {
    let _serial = serial().await;
    let total: usize = std::env::var("FLOOD_NOTIFIES").ok().and_then(|n| n.parse().ok()).unwrap_or(2000);
    let env = Env::start(Opts::default()).await;
    let openid = env.openid("code-flood").await;
    assert_eq!(env.order("FLOOD00001", 100, &openid).await.0, 200);
    let data = env.dir.path().join("data");
    let before = dir_size(&data);
    let peak_before = peak_rss_kib();

    let started = Instant::now();
    let senders: Vec<_> = (0..16)
        .map(|s| {
            let (http, url) = (env.http.clone(), format!("{}/pay/notify", env.base));
            tokio::spawn(async move {
                for i in (s..total).step_by(16) {
                    let r = http.post(&url).body(junk(i, "FLOOD00001")).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    assert!(r.text().await.unwrap().contains("FAIL"), "junk notify {i} was not refused");
                }
            })
        })
        .collect();
    for s in senders {
        s.await.unwrap();
    }
    let elapsed = started.elapsed();
    let (recorded, log_bytes) = env.app.store.notify_log_size().unwrap();
    // The budget: a burst of 30, then one every 2 seconds.
    let budget = 30 + elapsed.as_secs() / 2 + 2;
    assert!(recorded <= budget, "{recorded} junk notifies recorded in {elapsed:?} (budget {budget})");
    assert!(recorded >= 30, "the first ones are still recorded: {recorded}");
    let unrecorded = env.app.metrics.refused_count("notify_not_recorded");
    assert_eq!(unrecorded + recorded, total as u64, "every refused notify is counted");

    let after = dir_size(&data);
    println!(
        "{total} junk notifies in {elapsed:?}: {recorded} recorded ({log_bytes} bytes); data dir {before} -> {after} bytes"
    );
    assert!(after < before + 4 * 1024 * 1024, "the data dir grew from {before} to {after} bytes");
    // Server and clients share this process: its peak memory stays near where it was.
    let grown_mib = peak_rss_kib().saturating_sub(peak_before) / 1024;
    println!("peak memory grew by {grown_mib} MiB");
    assert!(grown_mib < 100, "peak memory grew by {grown_mib} MiB during the flood");

    // The order's detail lists no junk; the log shows what was claimed.
    let admin = login(&env).await;
    let (status, _, text) = admin.text("/admin/api/orders/FLOOD00001").await;
    assert_eq!(status, 200);
    assert!(text.len() < 8 * 1024, "order detail is {} bytes", text.len());
    let detail: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(detail["notifies"], json!([]), "unverified notifies are not the order's");
    let (_, log) = admin.get("/admin/api/notifies?limit=200").await;
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len() as u64, recorded.min(200));
    for item in items {
        assert_eq!(item["verified"], false);
        assert!(item["raw"].as_str().unwrap().len() <= 1024);
        assert!(item["size"].as_u64().unwrap() >= 60 * 1024);
        assert_eq!(item["sha256"].as_str().unwrap().len(), 64);
    }
    assert!(items.iter().any(|i| i["outTradeNo"] == "FLOOD00001"), "a claim names the order");
    let (status, page) = admin.get("/admin/api/notifies?limit=100000").await;
    assert_eq!(status, 400, "pages are capped at 200: {page}");
    assert!(page["error"]["message"].as_str().unwrap().contains("1 to 200"), "{page}");

    // WeChat's own notify still pays the order, and is the order's.
    env.sim_pay(json!({ "out_trade_no": "FLOOD00001" })).await;
    env.wait_acknowledged("FLOOD00001").await;
    let (_, detail) = admin.get("/admin/api/orders/FLOOD00001").await;
    assert_eq!(detail["status"], "PAID");
    assert_eq!(detail["notifies"].as_array().unwrap().len(), 1);
    assert_eq!(detail["notifies"][0]["verified"], true);
    env.stop().await;
}

/// Bodies over an endpoint's limit are refused, counted and the server says
/// so; amounts have a ceiling.
#[tokio::test]
async fn oversized_bodies_are_counted_and_amounts_have_a_ceiling() {
    let _serial = serial().await;
    let env = Env::start(Opts { orders_extra: "max_total_fee = 50000", ..Opts::default() }).await;
    for _ in 0..3 {
        let r = env.http.post(format!("{}/pay/notify", env.base)).body(vec![b'x'; 100 * 1024]).send().await.unwrap();
        assert_eq!(r.status(), 413);
    }
    assert_eq!(env.app.metrics.refused_count("body_too_large"), 3);

    let openid = env.openid("code-cap").await;
    assert_eq!(env.order("CEILING001", 50_000, &openid).await.0, 200, "the ceiling itself is allowed");
    for fee in ["50001", "18446744073709551615"] {
        let (status, body) = env
            .post_json(
                "/pay/unifiedOrder",
                &json!({ "outTradeNo": format!("CEIL{fee:.6}"), "totalFee": fee, "body": "b", "openid": openid }),
            )
            .await;
        assert_eq!(status, 400, "{fee}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("orders.max_total_fee"), "{body}");
    }
    env.stop().await;
}

async fn connect_from(source: &str, to: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    socket.connect(to).await
}

/// Reads until the server closes the connection (or `limit` passes).
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

/// 2,000 connections from one address (silent, half-sent headers, stalled
/// bodies, half an HTTP/2 preface) take at most `max_connections_per_ip`
/// places; a client at another address is served throughout; every kind of
/// stalled connection is closed after its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_from_one_address_does_not_starve_another() {
    let _serial = serial().await;
    rlimit::increase_nofile_limit(16_384).unwrap();
    let env = Env::start(Opts {
        http_extra: "max_connections = 1500\nmax_connections_per_ip = 100\nfirst_request_timeout_secs = 3\n\
                     idle_timeout_secs = 3\nbody_timeout_secs = 3",
        ..Opts::default()
    })
    .await;
    let addr = env.app.addr;
    let openers = [
        &b""[..],
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
        b"POST /pay/notify HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n<xml>",
        b"PRI * HTTP/2.0\r\n",
        // A whole HTTP/2 preface and SETTINGS, then a HEADERS frame that never ends.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x64\x01\x04\x00\x00\x00\x01\x82",
    ];
    let mut held = Vec::new();
    for i in 0..2000 {
        // A refused connection may be reset before or after connect returns.
        if let Ok(mut s) = connect_from("127.0.0.1", addr).await {
            let _ = s.write_all(openers[i % openers.len()]).await;
            held.push(s);
        }
    }
    // Another client is served, over new connections and a kept-alive one.
    let other =
        reqwest::Client::builder().local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap()).build().unwrap();
    for i in 0..20 {
        let r = other.get(format!("{}/healthz", env.base)).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i} from another address");
    }
    let refused = env.app.metrics.refused_count("connection_limit_per_ip");
    assert!(refused >= 1800, "only {refused} of 2000 connections refused by the per-address cap");

    // Stalled connections of every kind are closed by the server; a stalled
    // body gets 408 first.
    let mut kinds = [0usize; 5];
    let started = Instant::now();
    for (i, s) in held.iter_mut().enumerate().take(400) {
        let Some(reply) = closed_within(s, Duration::from_secs(15)).await else {
            panic!("connection {i} (opener {}) still open after {:?}", i % openers.len(), started.elapsed());
        };
        if i % openers.len() == 2 && reply.contains("408") {
            kinds[2] += 1;
        } else {
            kinds[i % openers.len()] += 1;
        }
    }
    assert!(kinds[2] > 0, "no stalled body got 408: {kinds:?}");

    // An idle kept-alive connection is closed after idle_timeout_secs.
    let mut keep = connect_from("127.0.0.2", addr).await.unwrap();
    keep.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    assert!(keep.read(&mut buf).await.unwrap() > 0);
    let idle = Instant::now();
    assert!(closed_within(&mut keep, Duration::from_secs(15)).await.is_some(), "idle keep-alive never closed");
    assert!(idle.elapsed() >= Duration::from_secs(2), "closed too early: {:?}", idle.elapsed());
    env.stop().await;
}

/// The overall cap holds too, whoever connects (no reserve here: the
/// reserve is tests/stalling.rs's).
#[tokio::test]
async fn the_overall_connection_cap_closes_the_excess() {
    let _serial = serial().await;
    let env = Env::start(Opts {
        http_extra: "max_connections = 20\nmax_connections_per_ip = 20\nreserved_connections = 0",
        ..Opts::default()
    })
    .await;
    let mut held = Vec::new();
    for i in 0..40 {
        if let Ok(s) = connect_from(&format!("127.0.0.{}", 10 + i % 4), env.app.addr).await {
            held.push(s);
        }
    }
    // Let the accept loop see all of them.
    let mut refused = 0;
    for _ in 0..100 {
        refused = env.app.metrics.refused_count("connection_limit");
        if refused >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(refused, 20, "40 connections, 20 places");
    drop(held);
    // Places come back when connections close.
    for _ in 0..100 {
        if env.http.get(format!("{}/healthz", env.base)).send().await.is_ok_and(|r| r.status() == 200) {
            env.stop().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no place came back after the connections closed");
}

/// The peak resident memory of this process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// 200 wrong passwords at once from one address were all checked (211
/// Argon2 threads, 3.46 GB). Now five are checked, the rest get 429 without
/// a check, memory stays flat, and the merchant elsewhere still logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_burst_is_counted_before_it_is_checked() {
    let _serial = serial().await;
    let env = Env::start(Opts::default()).await;
    let peak_before = peak_rss_kib();
    let burst: Vec<_> = (0..200)
        .map(|_| {
            let (http, url) = (env.http.clone(), format!("{}/admin/api/login", env.base));
            tokio::spawn(async move {
                let r = http.post(url).json(&json!({ "password": "wrong password" })).send().await.unwrap();
                let retry_after = r.headers().get("retry-after").is_some();
                (r.status().as_u16(), retry_after)
            })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for task in burst {
        let (status, retry_after) = task.await.unwrap();
        assert_eq!(retry_after, status == 429);
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert_eq!(statuses, [(401, 5), (429, 195)].into_iter().collect(), "{statuses:?}");
    let grown_mib = peak_rss_kib().saturating_sub(peak_before) / 1024;
    assert!(grown_mib < 200, "peak memory grew by {grown_mib} MiB");

    let elsewhere =
        reqwest::Client::builder().local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap()).build().unwrap();
    let r = elsewhere
        .post(format!("{}/admin/api/login", env.base))
        .json(&json!({ "password": common::ADMIN_PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the merchant is not locked out from another address");
    env.stop().await;
}

/// On a dual-stack listener (`[::]:port`) an IPv4 client is seen as itself,
/// not as `::ffff:127.0.0.1`: limits and logs count one address.
#[tokio::test]
async fn dual_stack_listeners_see_ipv4_clients_as_ipv4() {
    let _serial = serial().await;
    if std::net::TcpListener::bind("[::]:0").is_err() {
        panic!("this machine has no IPv6; the dual-stack test needs it");
    }
    let sim = common::start_simulator().await;
    let env = Env::start_in_at(tempfile::tempdir().unwrap(), sim, Opts::default(), "[::]:0").await;
    let port = env.app.addr.port();
    let r = env.http.post(format!("http://127.0.0.1:{port}/pay/notify")).body("<xml>junk</xml>").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let peer = env.last_notify().peer.unwrap();
    assert!(peer.starts_with("127.0.0.1:"), "peer recorded as {peer}");
    env.stop().await;
}
