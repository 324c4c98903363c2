//! A data directory written by the release before the compressed store
//! format opens in this one: it is copied into the current format once,
//! holds exactly what it held, and a copy that is killed part-way resumes.
//!
//! `tests/fixtures/store-format-1.tar.gz` is a data directory written by
//! that release's store (commit b4a5e21, through its `Store` API, by a
//! throw-away test in a checkout of it): 300 orders of every status (paid,
//! paid twice, closed, prepaid, failed prepays; client, product and
//! platform orders), their notifies and a forged one, refunds processing and
//! succeeded, platform orders with their outbox deliveries, a used nonce.
//! `store-format-1.backup.gz` is that release's backup of the same store:
//! restored by this release, it is what the migrated directory must hold,
//! tree by tree and entry by entry.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use paybridge::config::Mode;
use paybridge::store::{NotifyRecord, Order, OrderFilter, OrderStatus, RefundStatus, Store, Verdict};
use sha2::{Digest, Sha256};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-format-1.tar.gz");
const FIXTURE_BACKUP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-format-1.backup.gz");

/// Unpacks the fixture into `dir`.
fn unpack(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let status = Command::new("tar").arg("xzf").arg(FIXTURE).arg("-C").arg(dir).status().unwrap();
    assert!(status.success());
    assert!(dir.join("db").is_file() && dir.join("conf").is_file(), "the fixture is in the old layout");
}

/// Every tree's entry count and digest, in name order, read with sled itself.
fn digests(db: &sled::Db) -> BTreeMap<String, (u64, [u8; 32])> {
    let mut out = BTreeMap::new();
    for name in db.tree_names() {
        let name_text = String::from_utf8_lossy(&name).into_owned();
        if name_text == "__sled__default" {
            continue;
        }
        let mut hash = Sha256::new();
        let mut entries = 0;
        for entry in db.open_tree(&name).unwrap().iter() {
            let (key, value) = entry.unwrap();
            for part in [&key, &value] {
                hash.update((part.len() as u64).to_be_bytes());
                hash.update(part);
            }
            entries += 1;
        }
        out.insert(name_text, (entries, hash.finalize().into()));
    }
    out
}

/// The same, from the store's own footprint.
fn store_digests(store: &Store) -> BTreeMap<String, (u64, [u8; 32])> {
    store
        .footprint()
        .unwrap()
        .into_iter()
        .filter(|p| p.name != "__sled__default")
        .map(|p| (p.name, (p.entries, p.digest)))
        .collect()
}

#[tokio::test]
async fn a_directory_of_the_previous_format_is_migrated_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    unpack(&data);

    let store = Store::open(&data, Mode::Live).unwrap();
    assert!(data.join("store").join("conf").is_file(), "the store now lives in store/");
    for old in ["db", "conf", "blobs", "store.migrating"] {
        assert!(!data.join(old).exists(), "{old} is gone after the migration");
    }

    // The previous release's backup of the same data, restored by this one.
    let mut backup = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(FIXTURE_BACKUP).unwrap()).read_to_end(&mut backup).unwrap();
    let restored_dir = tmp.path().join("restored");
    Store::restore(&restored_dir, &backup[..]).unwrap();
    let restored = Store::open(&restored_dir, Mode::Live).unwrap();
    let (migrated, expected) = (store_digests(&store), store_digests(&restored));
    assert_eq!(migrated.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "the same trees");
    for (tree, figures) in &expected {
        assert_eq!(&migrated[tree], figures, "tree {tree}: the same entries, byte for byte");
    }
    // 75 payments, 38 of them notified twice, one forged notify.
    assert_eq!((expected["orders"].0, expected["notifies"].0), (300, 75 + 38 + 1));
    assert!(expected["outbox"].0 > 0 && expected["refunds"].0 > 0 && expected["platform_orders"].0 > 0);

    // Every record reads, and says what the old release wrote.
    for i in 0..300u64 {
        let no = format!("FIX{i:06}");
        let order = store.order(&no).unwrap().unwrap_or_else(|| panic!("{no} is there"));
        assert_eq!(order.total_fee, 100 + i);
        assert_eq!(order.body, format!("商品 {i}"));
        let want = match i % 4 {
            0 => [OrderStatus::Paid, OrderStatus::PartiallyRefunded].as_slice(),
            1 => &[OrderStatus::Closed],
            2 => &[OrderStatus::Prepaid],
            _ => &[OrderStatus::Created],
        };
        assert!(want.contains(&order.status), "{no}: {:?}", order.status);
        let notifies = store.notifies_for_order(&no, None, 10).unwrap().items;
        let paid_notifies = match (i % 4, i % 8) {
            (0, 0) => 2,
            (0, _) => 1,
            _ => 0,
        };
        assert_eq!(notifies.len(), paid_notifies, "{no}: its notifies");
        assert!(notifies.iter().all(|n| n.verified && n.out_trade_no.as_deref() == Some(no.as_str())));
        if i % 5 == 0 {
            let platform = store.platform_order("shop", &format!("P{i}")).unwrap().unwrap();
            assert_eq!(platform.out_trade_no, no);
            let deliveries = store.deliveries_for_order(&no).unwrap();
            // order.paid or order.closed, and order.refunded after a refund.
            let want = usize::from(order.status.is_paid() || order.status == OrderStatus::Closed)
                + usize::from(order.status == OrderStatus::PartiallyRefunded);
            assert_eq!(deliveries.len(), want, "{no}: {:?}", order.status);
        }
        let refunds = store.refunds_for_order(&no).unwrap();
        if i % 12 == 0 {
            assert_eq!(refunds.len(), 1, "{no}: its refund");
            let want = if i % 24 == 0 { RefundStatus::Success } else { RefundStatus::Processing };
            assert_eq!(refunds[0].status, want);
        } else {
            assert!(refunds.is_empty());
        }
    }

    // The status and payer indexes, written in this release's form, find the same orders.
    let all: Vec<Order> = (0..300).map(|i| store.order(&format!("FIX{i:06}")).unwrap().unwrap()).collect();
    for status in OrderStatus::ALL {
        let listed = store.list_orders(&OrderFilter::status(status), None, 1000).unwrap().items;
        assert_eq!(listed.len(), all.iter().filter(|o| o.status == status).count(), "{status:?}");
        assert!(listed.iter().all(|o| o.status == status), "{status:?}");
    }
    let payers = all.iter().map(|o| o.openid.as_str()).collect::<BTreeSet<_>>();
    assert!(payers.len() > 1, "the fixture has several payers");
    for openid in payers {
        let found = store.search_orders(openid, &OrderFilter::default(), None, 1000).unwrap().items;
        assert_eq!(found.len(), all.iter().filter(|o| o.openid == openid).count(), "payer {openid:?}");
        assert!(found.iter().all(|o| o.openid == openid), "payer {openid:?}");
    }

    // New ids continue above the old ones: a new notify overwrites nothing.
    let before = store.list_notifies(None, 1000).unwrap().items;
    let newest_old = before.iter().map(|n| n.id).max().unwrap();
    let (record, ()) = store
        .record_notify(NotifyRecord::received(b"<xml>after</xml>", 1, None, false), |_| {
            (Verdict::Rejected, "test".into(), ())
        })
        .await
        .unwrap();
    assert!(record.id > newest_old, "new id {} above the old {newest_old}", record.id);
    let after = store.list_notifies(None, 1000).unwrap().items;
    assert_eq!(after.len(), before.len() + 1, "nothing overwritten");

    // Reopening does not migrate again.
    assert!(store.close(Duration::from_secs(10)).await);
    drop(store);
    let again = Store::open(&data, Mode::Live).unwrap();
    assert_eq!(again.order_count().unwrap(), 300);
}

/// A copy killed at any point resumes, and ends with the same data: the
/// real binary's `backup` (which opens the stopped server's store, and so
/// migrates it) is SIGKILLed after a growing delay until one run finishes.
#[tokio::test]
async fn a_migration_killed_part_way_resumes_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    unpack(&data);
    // Enough old-format data that the copy takes a while: nonces, which the
    // store keeps per platform request (their content does not matter here).
    {
        let db = sled::Config::new().path(&data).open().unwrap();
        let nonces = db.open_tree("nonces").unwrap();
        let mut batch = sled::Batch::default();
        for i in 0..200_000u64 {
            batch.insert(format!("shop\0{:016}\0nonce-{i:08}", 1_790_000_000 + i).as_bytes(), &[][..]);
        }
        nonces.apply_batch(batch).unwrap();
        db.flush().unwrap();
    }
    let expected = {
        let db = sled::Config::new().path(&data).open().unwrap();
        digests(&db)
    };

    let config = tmp.path().join("paybridge.toml");
    std::fs::write(&config, common::config_text(&data, "127.0.0.1:0", "http://127.0.0.1:9", &common::Opts::default()))
        .unwrap();
    let mut kills = 0;
    let mut interrupted_copies = 0;
    let mut delay = Duration::from_millis(20);
    loop {
        let mut child = Command::new(env!("CARGO_BIN_EXE_paybridge"))
            .args(["backup", "--config"])
            .arg(&config)
            .arg("--to")
            .arg(tmp.path().join("backup.bin"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let finished = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() >= delay {
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        match finished {
            Some(status) => {
                assert!(status.success(), "backup failed: {status}");
                break;
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                interrupted_copies += usize::from(data.join("store.migrating").exists());
                delay += Duration::from_millis(40);
            }
        }
        assert!(kills < 200, "the migration never finished");
    }
    assert!(kills >= 3 && interrupted_copies >= 1, "{kills} kills, {interrupted_copies} during the copy");
    let store = Store::open(&data, Mode::Live).unwrap();
    for old in ["db", "conf", "store.migrating"] {
        assert!(!data.join(old).exists(), "{old} is gone");
    }
    let migrated = store_digests(&store);
    for (tree, figures) in &expected {
        match tree.as_str() {
            // The id floor; the index version.
            "stats" | "meta" => continue,
            // Rewritten in index version 7's form: the same entries, other bytes.
            "orders_by_status" | "orders_by_openid" => {
                assert_eq!(migrated[tree].0, figures.0, "tree {tree} after {kills} kills")
            }
            _ => assert_eq!(&migrated[tree], figures, "tree {tree} after {kills} kills"),
        }
    }
    assert_eq!(store.order_count().unwrap(), 300);
}
