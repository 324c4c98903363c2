//! What sled 0.34 allows, whatever PayBridge writes: the same orders and
//! payments written to a bare sled with the fewest writes any record layout
//! could make, compressed and not, on the same disk in the same run.
//!
//! A placed order is its record alone (no index); a payment is two writes,
//! the notify record (the body kept, as the store keeps it) and a small
//! state record beside the order (status, time, transaction id): what a
//! complete split of immutable contents from mutable state would write if it
//! dropped every index, count and link. Payments are committed eight to a
//! transaction (about what 16 concurrent senders group into), each followed
//! by sled's `flush` and an `fdatasync` of its data file, as the store's
//! writer does, with the store's default page cache. Whatever layout
//! PayBridge chooses on sled costs at least this.

use std::path::Path;
use std::time::{Duration, Instant};

use sled::transaction::{ConflictableTransactionError, Transactional};

use super::{cpu_time, disk_bytes, median, status_mib};

/// Set to a bare sled's directory (and [`PROBE_ZSTD`] to 1 if compressed),
/// this binary opens it and prints `open_ms rss_mib` ([`probe`]).
pub const PROBE: &str = "STORE_COST_FLOOR_PROBE";
pub const PROBE_ZSTD: &str = "STORE_COST_FLOOR_ZSTD";

/// Payments per transaction while measuring the CPU.
const GROUP: u64 = 8;

/// What one run of [`measure`] found.
pub struct Floor {
    pub compress: bool,
    pub per_placed: f64,
    pub per_paid: f64,
    /// Start-up and idle RSS (MiB) of a fresh process opening the store, placed and paid.
    pub open_ms: [f64; 2],
    pub idle_rss: [f64; 2],
    pub one_sender: Duration,
    pub cpu_per_payment: Duration,
}

/// What the bench writes for order `i`: its number, its record as the
/// store encodes it, and the notify record and state a payment adds.
pub struct Records<'a> {
    pub number: &'a dyn Fn(u64) -> Vec<u8>,
    pub order: &'a dyn Fn(u64) -> (Vec<u8>, Vec<u8>),
    pub payment: &'a dyn Fn(u64) -> (Vec<u8>, Vec<u8>),
}

fn open(path: &Path, compress: bool) -> (sled::Db, sled::Tree, sled::Tree, sled::Tree, std::fs::File) {
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(paybridge::store::StoreOptions::default().cache_bytes)
        .flush_every_ms(None)
        .use_compression(compress)
        .compression_factor(1)
        .open()
        .unwrap();
    let (orders, state, notifies) =
        (db.open_tree("orders").unwrap(), db.open_tree("state").unwrap(), db.open_tree("notifies").unwrap());
    let file = std::fs::File::open(path.join("db")).unwrap();
    (db, orders, state, notifies, file)
}

/// The probe: opens the bare sled at `path` in this fresh process, waits
/// for its start-up work to settle, and prints `open_ms rss_mib`.
pub fn probe(path: &Path) {
    let compress = std::env::var(PROBE_ZSTD).is_ok_and(|z| z == "1");
    let started = Instant::now();
    let opened = open(path, compress);
    let open_ms = started.elapsed().as_secs_f64() * 1000.0;
    std::thread::sleep(Duration::from_millis(500));
    println!("{open_ms} {}", status_mib("VmRSS:"));
    drop(opened);
}

/// Start-up (ms) and idle RSS (MiB) of a fresh process opening `path`.
fn probe_fresh(path: &Path, compress: bool) -> (f64, f64) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(PROBE, path)
        .env(PROBE_ZSTD, if compress { "1" } else { "0" })
        .output()
        .expect("the probe runs");
    assert!(out.status.success(), "probe: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut figures = text.split_whitespace().map(|f| f.parse::<f64>().unwrap());
    (figures.next().unwrap(), figures.next().unwrap())
}

/// Pays orders `range` in one transaction, then makes it durable.
fn pay(db: &sled::Db, trees: [&sled::Tree; 2], file: &std::fs::File, range: std::ops::Range<u64>, records: &Records) {
    // Each payment's (notify key, notify record) and (order number, state record).
    let writes: Vec<[(Vec<u8>, Vec<u8>); 2]> = range
        .map(|i| {
            let (notify, state) = (records.payment)(i);
            [(i.to_be_bytes().to_vec(), notify), ((records.number)(i), state)]
        })
        .collect();
    trees
        .transaction(|trees| {
            let (state, notifies) = (&trees[0], &trees[1]);
            for [(id, notify), (no, record)] in &writes {
                notifies.insert(&id[..], &notify[..])?;
                state.insert(&no[..], &record[..])?;
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        })
        .unwrap();
    db.flush().unwrap();
    file.sync_data().unwrap();
}

/// Fills `dir` with `count` orders and pays half, the first `rounds` one at a time.
pub fn measure(dir: &Path, count: u64, rounds: u64, compress: bool, records: &Records) -> Floor {
    let path = dir.join(if compress { "floor-zstd" } else { "floor-plain" });
    let (db, orders, _, _, file) = open(&path, compress);
    for start in (0..count).step_by(64) {
        let batch: Vec<(Vec<u8>, Vec<u8>)> = (start..(start + 64).min(count)).map(records.order).collect();
        orders
            .transaction(|orders| {
                for (no, order) in &batch {
                    orders.insert(&no[..], &order[..])?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .unwrap();
        db.flush().unwrap();
    }
    file.sync_data().unwrap();
    drop((db, orders, file));
    // sled writes its snapshot when it opens: the probe starts as a server
    // restarted after a restart, like the store's probe.
    drop(open(&path, compress));
    let (placed_open, placed_rss) = probe_fresh(&path, compress);
    let (db, orders, state, notifies, file) = open(&path, compress);
    std::thread::sleep(Duration::from_millis(500));
    let placed = disk_bytes(&path);

    let paid = count / 2;
    let one: Vec<Duration> = (0..rounds)
        .map(|i| {
            let start = Instant::now();
            pay(&db, [&state, &notifies], &file, i..i + 1, records);
            start.elapsed()
        })
        .collect();
    let cpu = cpu_time();
    for start in (rounds..paid).step_by(GROUP as usize) {
        pay(&db, [&state, &notifies], &file, start..(start + GROUP).min(paid), records);
    }
    let paying = cpu_time() - cpu;
    // Making the records is the bench's work, not sled's: timed alone and taken off.
    let cpu = cpu_time();
    for i in rounds..paid {
        std::hint::black_box(((records.payment)(i), (records.number)(i)));
    }
    let cpu_per_payment = paying.saturating_sub(cpu_time() - cpu).div_f64((paid - rounds) as f64);
    drop((db, orders, state, notifies, file));

    let (db, orders, state, notifies, file) = open(&path, compress);
    std::thread::sleep(Duration::from_millis(500));
    let paid_bytes = disk_bytes(&path);
    assert_eq!(orders.len() as u64, count, "every order record is read back");
    assert_eq!((state.len() as u64, notifies.len() as u64), (paid, paid), "every payment is read back");
    for i in [0, paid - 1, count - 1] {
        let (no, order) = (records.order)(i);
        assert_eq!(orders.get(&no).unwrap().as_deref(), Some(&order[..]), "order {i} reads as written");
    }
    drop((db, orders, state, notifies, file));
    let (paid_open, paid_rss) = probe_fresh(&path, compress);
    std::fs::remove_dir_all(&path).unwrap();
    Floor {
        compress,
        per_placed: placed as f64 / count as f64,
        per_paid: (paid_bytes as f64 - placed as f64) / paid as f64,
        open_ms: [placed_open, paid_open],
        idle_rss: [placed_rss, paid_rss],
        one_sender: median(one),
        cpu_per_payment,
    }
}
