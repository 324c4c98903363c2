//! How long one page of the admin order list takes as the store grows.
//!
//! `cargo bench --bench orders_list` fills a real sled store with 10k, 100k
//! and 1M orders (through the same transaction the server uses), starts the
//! real server on it, logs in, and times pages of the admin API over HTTP:
//! the newest page, a page 20 pages deep (by cursor), a status-filtered page
//! and an openid search. A page should cost the same at every size.
//!
//! Under `cargo test` (no `--bench` argument) it runs once on a small store,
//! checking the pages, so the benchmark cannot rot.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use paybridge::config::Config;
use paybridge::store::{Order, OrderContents, Payment, Store};
use serde_json::Value;

const PASSWORD: &str = "benchmark password";

async fn fill(dir: &Path, count: u64) -> Duration {
    let store = Store::open(dir, paybridge::config::Mode::Live).unwrap();
    let start = Instant::now();
    let base = 1_790_000_000_000i64;
    // Many writers at once, as a busy server has: the store syncs them in groups.
    let writes = futures_util::stream::iter(0..count).map(|i| {
        let store = store.clone();
        async move { insert(&store, base, i).await }
    });
    writes.buffer_unordered(512).collect::<Vec<()>>().await;
    assert!(store.close(Duration::from_secs(60)).await);
    start.elapsed()
}

async fn insert(store: &Store, base: i64, i: u64) {
    let contents = OrderContents {
        total_fee: 100 + i % 1000,
        body: format!("商品 {i}"),
        attach: String::new(),
        openid: format!("o{:027}", i % 5000),
    };
    let no = format!("BENCH{i:010}");
    let order = Order::new(no.clone(), contents, false, base + i as i64 * 1000);
    store.insert_order(order).await.unwrap().unwrap();
    if i.is_multiple_of(3) {
        let payment = Payment {
            transaction_id: format!("42{i:026}"),
            total_fee: 100 + i % 1000,
            time_end: String::new(),
            openid: String::new(),
        };
        store
            .update_order(&no, move |o| {
                o.apply_payment(&payment, base + i as i64 * 1000 + 500);
            })
            .await
            .unwrap();
    }
}

struct Timing {
    median: Duration,
    p99: Duration,
}

/// Times `rounds` GETs of `url`; a list must hold `expect` items.
async fn time(client: &reqwest::Client, url: &str, rounds: usize, expect: Option<usize>) -> Timing {
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        let reply = client.get(url).send().await.unwrap();
        assert_eq!(reply.status(), 200, "{url}");
        let page: Value = reply.json().await.unwrap();
        samples.push(start.elapsed());
        if let Some(expect) = expect {
            assert_eq!(page["items"].as_array().map(Vec::len), Some(expect), "{url}");
        }
    }
    samples.sort();
    Timing { median: samples[samples.len() / 2], p99: samples[samples.len() * 99 / 100] }
}

async fn measure(count: u64, rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fill_time = fill(&data, count).await;
    let hash = paybridge::admin::auth::hash_password(PASSWORD);
    let text = format!(
        "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[wechat]\nappid = \"wxd930ea5d5a258f4f\"\napp_secret = \"s\"\n\
         mch_id = \"10000100\"\nmch_key = \"192006250b4c09247ec02edce69f6a2d\"\nnotify_url = \"https://x.test/pay/notify\"\n\
         [admin]\npassword_hash = \"{hash}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        data.display()
    );
    let config = Config::from_toml(&text, Path::new("bench.toml"), std::iter::empty()).unwrap();
    let app = paybridge::app::start(config).await.unwrap();
    let base = format!("http://{}", app.addr);
    let client = reqwest::Client::builder().cookie_store(true).build().unwrap();
    let r = client
        .post(format!("{base}/admin/api/login"))
        .json(&serde_json::json!({ "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A cursor 20 pages deep.
    let mut cursor = String::new();
    for _ in 0..20 {
        let page: Value = client
            .get(format!("{base}/admin/api/orders?limit=50&cursor={cursor}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        cursor = page["next"].as_str().unwrap().to_owned();
    }
    let first = time(&client, &format!("{base}/admin/api/orders?limit=50"), rounds, Some(50)).await;
    let deep = time(&client, &format!("{base}/admin/api/orders?limit=50&cursor={cursor}"), rounds, Some(50)).await;
    let paid = time(&client, &format!("{base}/admin/api/orders?limit=50&status=PAID"), rounds, Some(50)).await;
    let openid = format!("o{:027}", 7);
    let search = time(
        &client,
        &format!("{base}/admin/api/orders?limit=50&q={openid}"),
        rounds,
        Some(((count as usize - 8) / 5000 + 1).min(50)),
    )
    .await;
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
    println!(
        "| {count:>9} | {:>6.1} s | {:>6} / {:>6} | {:>6} / {:>6} | {:>6} / {:>6} | {:>6} / {:>6} |",
        fill_time.as_secs_f64(),
        ms(first.median),
        ms(first.p99),
        ms(deep.median),
        ms(deep.p99),
        ms(paid.median),
        ms(paid.p99),
        ms(search.median),
        ms(search.p99),
    );
    let mut others = Vec::new();
    for path in ["overview", "system", "notifies?limit=50", "orders/BENCH0000000007", "session"] {
        others.push((path, time(&client, &format!("{base}/admin/api/{path}"), rounds, None).await));
    }
    let config = app.config.clone();
    app.stop().await;

    // Start-up on this store: from start to the first answered request.
    let start = Instant::now();
    let app = paybridge::app::start(config).await.unwrap();
    let r = reqwest::get(format!("http://{}/healthz", app.addr)).await.unwrap();
    assert_eq!(r.status(), 200);
    let startup = start.elapsed();
    app.stop().await;
    let others: Vec<String> =
        others.iter().map(|(path, t)| format!("`{path}` {} / {}", ms(t.median), ms(t.p99))).collect();
    println!(
        "|           | other admin endpoints, ms: {}; start-up to first answer: {} ms |",
        others.join(", "),
        ms(startup)
    );
}

#[tokio::main]
async fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    println!("| orders    | fill     | newest page ms (median / p99) | 20 pages deep | status=PAID | openid search |");
    println!("|-----------|----------|------|------|------|------|");
    if bench {
        for count in [10_000, 100_000, 1_000_000] {
            measure(count, 300).await;
        }
    } else {
        measure(3_000, 5).await;
    }
}
