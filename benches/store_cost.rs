//! What the store costs as it grows: disk, memory, start-up and CPU (issue 22).
//!
//! `cargo bench --bench store_cost` fills a real sled store (default
//! [`StoreOptions`], a temp dir on the same disk as `target/`) with
//! `STORE_COST_ORDERS` orders (default 1,000,000) through the public write
//! path, `Store::insert_order`, then pays half of them by `record_notify`
//! exactly as `pay::notify` settles a verified v2 notify (the raw XML body
//! kept, the order changed in the same write). It prints, in one run:
//! - bytes on disk (allocated blocks of the data directory, after a close and
//!   a reopen) per placed order, and what paying adds per paid order;
//! - start-up (the time `Store::open` takes on the filled directory) and the
//!   idle RSS after it, both in a fresh process (this binary, run again as a
//!   probe), as a restarted server would see them; and this process's peak
//!   RSS (VmHWM) while filling;
//! - what each tree holds (entries, live key and value bytes), beside which
//!   the bytes on disk are sled's own overhead;
//! - the p50 of one notify written at a time, beside the p50 of a 512-byte
//!   write + `fdatasync` loop in the same directory (the disk's floor), both
//!   overwriting a preallocated file in place (as sled writes its log) and
//!   appending (each sync also commits the file's new size);
//! - CPU time (all threads: the writer, sled's, tokio's) per notify at 16
//!   concurrent writers, and the resident memory before, at the peak and 2 s
//!   after, in a fresh process that pays the rest of the half;
//! - then the same orders and payments on a bare sled, compressed and not,
//!   with the fewest writes any record layout could make (`floor.rs`): what
//!   sled itself costs, beside the store's figures.
//!
//! Nothing here tunes the store.
//! Under `cargo test` (no `--bench` argument) it runs once on a small store
//! and checks its answers, so the benchmark cannot rot.

#[path = "store_cost/floor.rs"]
mod floor;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use paybridge::config::Mode;
use paybridge::store::{
    NotifyRecord, Order, OrderContents, OrderStatus, Payment, PaymentOutcome, Store, StoreOptions, Verdict,
};

/// When the orders were placed (unix ms); one second apart.
const BASE_MS: i64 = 1_790_000_000_000;
/// Writers at once while filling, as a busy server has: the store syncs them in groups.
const FILL_WRITERS: usize = 512;
/// Concurrent notify writers for the CPU figure (the brief's figure).
const NOTIFY_WRITERS: usize = 16;

fn order_no(i: u64) -> String {
    format!("COST{i:010}")
}

fn fee(i: u64) -> u64 {
    100 + i % 1000
}

fn transaction_id(i: u64) -> String {
    format!("4200{i:024}")
}

/// A v2 payment notify body of the size WeChat sends (the store keeps it
/// whole, so its size is part of the cost). The signature is not checked
/// here: the store is what is measured, not the protocol.
fn notify_body(i: u64) -> String {
    format!(
        "<xml><appid><![CDATA[wxd930ea5d5a258f4f]]></appid><bank_type><![CDATA[OTHERS]]></bank_type>\
         <cash_fee><![CDATA[{fee}]]></cash_fee><fee_type><![CDATA[CNY]]></fee_type>\
         <is_subscribe><![CDATA[N]]></is_subscribe><mch_id><![CDATA[10000100]]></mch_id>\
         <nonce_str><![CDATA[5K8264ILTKCH16CQ2502SI8ZNMTM67VS]]></nonce_str>\
         <openid><![CDATA[{openid}]]></openid><out_trade_no><![CDATA[{no}]]></out_trade_no>\
         <result_code><![CDATA[SUCCESS]]></result_code><return_code><![CDATA[SUCCESS]]></return_code>\
         <sign><![CDATA[C380BEC2BFD727A4B6845133519F3AD6]]></sign><time_end><![CDATA[20261126120000]]></time_end>\
         <total_fee>{fee}</total_fee><trade_type><![CDATA[JSAPI]]></trade_type>\
         <transaction_id><![CDATA[{tx}]]></transaction_id></xml>",
        fee = fee(i),
        openid = openid(i),
        no = order_no(i),
        tx = transaction_id(i),
    )
}

fn openid(i: u64) -> String {
    format!("o{:027}", i % 5000)
}

async fn place(store: &Store, i: u64) {
    store.insert_order(new_order(i)).await.unwrap().expect("each order number is new");
}

/// Order `i` as the store keeps it when placed.
fn new_order(i: u64) -> Order {
    let contents =
        OrderContents { total_fee: fee(i), body: format!("商品 {i}"), attach: String::new(), openid: openid(i) };
    Order::new(order_no(i), contents, false, BASE_MS + i as i64 * 1000)
}

/// When order `i` is paid.
fn paid_at(i: u64) -> i64 {
    BASE_MS + i as i64 * 1000 + 500
}

/// The verified notify that pays order `i`, before the store decides on it.
fn notify_record(i: u64) -> NotifyRecord {
    let mut record =
        NotifyRecord::received(notify_body(i).as_bytes(), paid_at(i), Some("127.0.0.1:4000".into()), false);
    record.verified = true;
    record.out_trade_no = Some(order_no(i));
    record.transaction_id = Some(transaction_id(i));
    record
}

/// Pays order `i` the way `pay::notify` settles a verified v2 payment notify.
async fn pay(store: &Store, i: u64) {
    let now = paid_at(i);
    let record = notify_record(i);
    let payment = Payment {
        transaction_id: transaction_id(i),
        total_fee: fee(i),
        time_end: "20261126120000".into(),
        openid: openid(i),
    };
    let (stored, ()) = store
        .record_notify(record, move |order| match order {
            None => (Verdict::Rejected, "unknown order".into(), ()),
            Some(order) => match order.apply_payment(&payment, now) {
                PaymentOutcome::Paid => (Verdict::Paid, "order marked PAID".into(), ()),
                PaymentOutcome::Duplicate => (Verdict::Duplicate, "already PAID by this transaction".into(), ()),
                PaymentOutcome::Conflict(reason) => (Verdict::Rejected, reason, ()),
            },
        })
        .await
        .unwrap();
    assert_eq!(stored.verdict, Verdict::Paid, "order {i}: {}", stored.reason);
}

/// Runs `job(i)` for every `i` in `range`, `at_once` at a time.
async fn run<F, Fut>(range: std::ops::Range<u64>, at_once: usize, job: F)
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    futures_util::stream::iter(range).map(job).buffer_unordered(at_once).collect::<Vec<()>>().await;
}

/// Bytes allocated on disk (blocks, not lengths) under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() { disk_bytes(&entry.path()) } else { meta.blocks() * 512 };
    }
    total
}

/// A `VmRSS:`-style line of /proc/self/status, in MiB.
fn status_mib(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 =
        status.lines().find(|l| l.starts_with(key)).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024.0
}

/// Resets this process's peak resident memory (VmHWM) to what it holds now.
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("/proc/self/clear_refs takes 5 (reset the peak RSS)");
}

/// This process's CPU time so far (user + system, all threads), from /proc.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// `rounds` 512-byte writes, each followed by `fdatasync`: the p50 of one.
/// Appending (`overwrite` false) grows the file, so each sync also commits
/// the new size to the file system's journal; overwriting a preallocated
/// file in place, as sled writes its log segments, syncs the data alone.
fn fdatasync_p50(dir: &Path, rounds: usize, overwrite: bool) -> Duration {
    use std::os::unix::fs::FileExt;
    const SPAN: u64 = 1024 * 1024;
    let path = dir.join("baseline");
    let mut file = std::fs::File::create(&path).unwrap();
    if overwrite {
        file.write_all(&vec![0u8; SPAN as usize]).unwrap();
        file.sync_all().unwrap();
    }
    let block = [7u8; 512];
    let samples = (0..rounds as u64)
        .map(|i| {
            let start = Instant::now();
            match overwrite {
                true => file.write_all_at(&block, i * 4096 % SPAN).unwrap(),
                false => file.write_all(&block).unwrap(),
            }
            file.sync_data().unwrap();
            start.elapsed()
        })
        .collect();
    drop(file);
    std::fs::remove_file(path).unwrap();
    median(samples)
}

/// The probe: opens the store at `dir` in this fresh process, waits for
/// sled's start-up work to settle, and prints `open_ms rss_mib`.
fn probe(dir: &Path) {
    let mut options = StoreOptions::default();
    // STORE_COST_CACHE_MB: the probe opens with this page cache (`[storage] cache_mb`).
    if let Some(mb) = std::env::var("STORE_COST_CACHE_MB").ok().and_then(|mb| mb.parse::<u64>().ok()) {
        options.cache_bytes = mb * 1024 * 1024;
    }
    let start = Instant::now();
    let store = Store::open_with(dir, Mode::Live, options).unwrap();
    let open = start.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    println!("{} {}", open.as_secs_f64() * 1000.0, status_mib("VmRSS:"));
    drop(store);
}

/// Start-up time (ms) and idle RSS (MiB) of a fresh process opening `dir`.
fn probe_fresh(dir: &Path) -> (f64, f64) {
    let out =
        std::process::Command::new(std::env::current_exe().unwrap()).env(PROBE, dir).output().expect("the probe runs");
    assert!(out.status.success(), "probe: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut figures = text.split_whitespace().map(|f| f.parse::<f64>().unwrap());
    (figures.next().unwrap(), figures.next().unwrap())
}

/// Set to a data directory, this binary is the probe of [`probe`].
const PROBE: &str = "STORE_COST_PROBE";

/// Set to `first,end` (with [`PROBE`]'s data directory in [`PAY_DIR`]), this
/// binary pays those orders at [`NOTIFY_WRITERS`] and prints what it cost ([`paying`]).
const PAY_RANGE: &str = "STORE_COST_PAY";
const PAY_DIR: &str = "STORE_COST_PAY_DIR";

/// What paying at [`NOTIFY_WRITERS`] cost in a fresh process.
struct Load {
    /// CPU seconds per notify (all threads).
    cpu_per_notify: f64,
    /// Notifies a second.
    rate: f64,
    /// Resident MiB: open and idle before, the peak while paying, 2 s after.
    rss: [f64; 3],
}

/// The paying process: opens the store at `dir`, pays `range` at
/// [`NOTIFY_WRITERS`], and prints `cpu_per_notify rate before peak after`.
async fn paying(dir: &Path, range: std::ops::Range<u64>) {
    let store = Store::open(dir, Mode::Live).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = status_mib("VmRSS:");
    reset_peak_rss();
    let count = range.end - range.start;
    let (cpu, started) = (cpu_time(), Instant::now());
    run(range, NOTIFY_WRITERS, |i| {
        let store = store.clone();
        async move { pay(&store, i).await }
    })
    .await;
    let rate = count as f64 / started.elapsed().as_secs_f64();
    let cpu_per_notify = (cpu_time() - cpu).as_secs_f64() / count as f64;
    let peak = status_mib("VmHWM:");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = status_mib("VmRSS:");
    assert!(store.close(Duration::from_secs(120)).await);
    println!("{cpu_per_notify} {rate} {before} {peak} {after}");
}

/// Runs [`paying`] in a fresh process.
fn paying_fresh(dir: &Path, range: std::ops::Range<u64>) -> Load {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(PAY_DIR, dir)
        .env(PAY_RANGE, format!("{},{}", range.start, range.end))
        .output()
        .expect("the paying process runs");
    assert!(out.status.success(), "paying: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let f: Vec<f64> = text.split_whitespace().map(|f| f.parse::<f64>().unwrap()).collect();
    Load { cpu_per_notify: f[0], rate: f[1], rss: [f[2], f[3], f[4]] }
}

/// Closes `store` and opens the directory again. sled may still be
/// finishing the closed handle's last writes on its threads; opening waits
/// for its lock (`lock_wait`).
async fn reopen(store: Store, data: &Path) -> Store {
    assert!(store.close(Duration::from_secs(120)).await, "the writer finishes its queue");
    drop(store);
    Store::open(data, Mode::Live).unwrap()
}

/// Every order is there, and exactly the first `paid` of them are PAID.
fn check_orders(store: &Store, count: u64, paid: u64) {
    for i in 0..count {
        let order = store.order(&order_no(i)).unwrap().unwrap_or_else(|| panic!("order {i} was not read back"));
        assert_eq!(order.total_fee, fee(i));
        let want = if i < paid { OrderStatus::Paid } else { OrderStatus::Created };
        assert_eq!(order.status, want, "order {i}");
    }
}

async fn measure(count: u64, one_sender_rounds: u64) {
    assert!(count >= 2 * one_sender_rounds && count >= 4, "too few orders to pay half");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // STORE_COST_KEEP=DIR keeps the filled store there, to profile its opening.
    let data = std::env::var_os("STORE_COST_KEEP").map_or_else(|| dir.path().join("data"), Into::into);
    let paid = count / 2;

    let started = Instant::now();
    let store = Store::open(&data, Mode::Live).unwrap();
    run(0..count, FILL_WRITERS, |i| {
        let store = store.clone();
        async move { place(&store, i).await }
    })
    .await;
    let fill = started.elapsed();
    let store = reopen(store, &data).await;
    assert!(store.close(Duration::from_secs(120)).await);
    drop(store);
    let (startup, idle_rss) = probe_fresh(&data);
    let store = Store::open(&data, Mode::Live).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let placed_bytes = disk_bytes(&data);
    check_orders(&store, count, 0);

    // One sender: the first notifies one at a time, beside the disk's floor.
    let sync_p50 = fdatasync_p50(dir.path(), one_sender_rounds as usize, true);
    let append_p50 = fdatasync_p50(dir.path(), one_sender_rounds as usize, false);
    let mut samples = Vec::new();
    for i in 0..one_sender_rounds {
        let start = Instant::now();
        pay(&store, i).await;
        samples.push(start.elapsed());
    }
    let one_p50 = median(samples);

    // The rest of the half at 16 concurrent writers, in a fresh process
    // (as a restarted server would take them), with the CPU and memory they cost.
    assert!(store.close(Duration::from_secs(120)).await);
    drop(store);
    let load = paying_fresh(&data, one_sender_rounds..paid);
    let store = Store::open(&data, Mode::Live).unwrap();
    let store = reopen(store, &data).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let paid_bytes = disk_bytes(&data);
    check_orders(&store, count, paid);
    let prints = store.footprint().unwrap();
    assert!(store.close(Duration::from_secs(120)).await);
    drop(store);
    let peak_rss = status_mib("VmHWM:");
    let (paid_startup, paid_idle_rss) = probe_fresh(&data);
    let live: u64 = prints.iter().map(|p| p.key_bytes + p.value_bytes).sum();
    let orders = prints.iter().find(|p| p.name == "orders").expect("the orders tree");
    assert_eq!(orders.entries, count, "every order is in the orders tree");

    let per_placed = placed_bytes as f64 / count as f64;
    let per_paid = (paid_bytes as f64 - placed_bytes as f64) / paid as f64;
    for (name, figure) in [("per placed order", per_placed), ("per paid order", per_paid)] {
        assert!(figure.is_finite() && figure > 0.0, "bytes {name}: {figure}");
    }
    assert!(idle_rss > 0.0 && paid_idle_rss > 0.0 && peak_rss > 0.0, "RSS idle {idle_rss} MiB, peak {peak_rss} MiB");
    assert!(live > 0 && live < paid_bytes * 4, "live bytes {live} beside {paid_bytes} on disk");

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| {count:>9} | {:>7.1} s | {:>6.0} | {:>6.0} | {:>8.1} | {:>6.1} | {:>6.1} | {:>8.1} | {:>6.2} / {:>6.2} | {:>7.0} | {:>6.0} |",
        fill.as_secs_f64(),
        per_placed,
        per_paid,
        paid_bytes as f64 / (1024.0 * 1024.0),
        idle_rss,
        peak_rss,
        startup,
        ms(one_p50),
        ms(sync_p50),
        load.cpu_per_notify * 1e6,
        load.rate,
    );
    println!(
        "paying at {NOTIFY_WRITERS} writers in a fresh process (page cache {} MiB): resident {:.1} MiB before, \
         {:.1} MiB at the peak, {:.1} MiB 2 s after",
        StoreOptions::default().cache_bytes >> 20,
        load.rss[0],
        load.rss[1],
        load.rss[2]
    );
    assert!(load.rss[1] >= load.rss[2] && load.rss[2] > 0.0, "RSS under load: {:?} MiB", load.rss);
    println!(
        "fdatasync p50: {:.2} ms overwriting in place (the column above), {:.2} ms appending",
        ms(sync_p50),
        ms(append_p50)
    );
    println!(
        "after paying: start-up {paid_startup:.1} ms, idle RSS {paid_idle_rss:.1} MiB; \
         live data {:.0} B per order ({:.1} MiB) beside {:.1} MiB on disk",
        live as f64 / count as f64,
        live as f64 / (1024.0 * 1024.0),
        paid_bytes as f64 / (1024.0 * 1024.0)
    );
    println!("| tree | entries | key B | value B | B per order |");
    println!("|---|--:|--:|--:|--:|");
    for p in prints.iter().filter(|p| p.entries > 0) {
        println!(
            "| {} | {} | {} | {} | {:.1} |",
            p.name,
            p.entries,
            p.key_bytes,
            p.value_bytes,
            (p.key_bytes + p.value_bytes) as f64 / count as f64
        );
    }
}

#[tokio::main]
async fn main() {
    if let Some(dir) = std::env::var_os(PROBE) {
        return probe(Path::new(&dir));
    }
    if let Some(dir) = std::env::var_os(floor::PROBE) {
        return floor::probe(Path::new(&dir));
    }
    if let (Some(dir), Ok(range)) = (std::env::var_os(PAY_DIR), std::env::var(PAY_RANGE)) {
        let (first, end) = range.split_once(',').expect("first,end");
        return paying(Path::new(&dir), first.parse().unwrap()..end.parse().unwrap()).await;
    }
    let bench = std::env::args().any(|a| a == "--bench");
    let default = if bench { 1_000_000 } else { 2_000 };
    let count = std::env::var("STORE_COST_ORDERS")
        .ok()
        .map(|v| v.replace(['_', ','], "").parse::<u64>().expect("STORE_COST_ORDERS is a whole number"))
        .unwrap_or(default);
    let one_sender_rounds = if bench { 500 } else { 30 }.min(count / 2);
    println!(
        "| orders    | fill      | B/placed | B/paid | disk MiB | idle RSS MiB | peak RSS MiB | open ms | \
         one sender p50 / fdatasync p50 ms | CPU µs/notify (16) | notifies/s (16) |"
    );
    println!("|----------:|----------:|-------:|-------:|---------:|-------:|-------:|---------:|----------------:|--------:|-------:|");
    measure(count, one_sender_rounds).await;
    sled_alone(count, one_sender_rounds);
}

/// The same orders and payments on a bare sled with the fewest writes any
/// layout could make ([`floor`]), compressed and not: what sled itself
/// costs, beside the store's figures above.
fn sled_alone(count: u64, rounds: u64) {
    let order = |i: u64| (order_no(i).into_bytes(), new_order(i).encode());
    let payment = |i: u64| {
        let mut record = notify_record(i);
        (record.verdict, record.reason) = (Verdict::Paid, "order marked PAID".into());
        let mut state = vec![b'P'];
        state.extend_from_slice(&paid_at(i).to_be_bytes());
        state.extend_from_slice(transaction_id(i).as_bytes());
        (record.encode(), state)
    };
    let number = |i: u64| order_no(i).into_bytes();
    let records = floor::Records { number: &number, order: &order, payment: &payment };
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let sync_p50 = fdatasync_p50(dir.path(), rounds as usize, true);
    println!();
    println!("sled alone, an order's record and a payment's two records (no index), same disk:");
    println!(
        "| sled | B/placed | B/paid | open ms placed / paid | idle RSS MiB placed / paid | \
         one payment p50 / fdatasync p50 ms | CPU µs/payment (8 per commit) |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|");
    let floors: Vec<floor::Floor> = [true, false]
        .into_iter()
        .map(|compress| floor::measure(dir.path(), count, rounds, compress, &records))
        .collect();
    for f in &floors {
        println!(
            "| {} | {:.0} | {:.0} | {:.1} / {:.1} | {:.1} / {:.1} | {:.2} / {:.2} | {:.0} |",
            if f.compress { "zstd level 1" } else { "uncompressed" },
            f.per_placed,
            f.per_paid,
            f.open_ms[0],
            f.open_ms[1],
            f.idle_rss[0],
            f.idle_rss[1],
            f.one_sender.as_secs_f64() * 1000.0,
            sync_p50.as_secs_f64() * 1000.0,
            f.cpu_per_payment.as_secs_f64() * 1e6,
        );
        assert!(f.per_placed > 0.0 && f.per_paid > 0.0 && f.one_sender > Duration::ZERO, "sled alone: figures");
        assert!(f.idle_rss.iter().chain(&f.open_ms).all(|x| x.is_finite() && *x > 0.0), "sled alone: probes");
    }
    let (zstd, plain) = (&floors[0], &floors[1]);
    assert!(
        zstd.per_placed + zstd.per_paid < plain.per_placed + plain.per_paid,
        "compression must save disk: {:.0} + {:.0} B compressed, {:.0} + {:.0} B not",
        zstd.per_placed,
        zstd.per_paid,
        plain.per_placed,
        plain.per_paid
    );
}
