//! Opening the data directory: sled and its lock, the mode marker that keeps
//! sandbox and live data apart, and bringing the indexes up to date on the
//! first open after an upgrade (the index version in `meta`).

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::migrate;
use super::trees::{Trees, NEXT_ID};
use super::tx::{self, read_u64};
use super::writer::{self, Writer};
use super::{schedule, Delivery, NotifyRecord, Order, Store, StoreError, StoreOptions};
use crate::domain::Mode;

/// The version of the index layout; a data directory with an older one has
/// its indexes rebuilt from the orders when opened.
/// Version 6 added `orders_due`; version 7 leaves `orders_by_status` and
/// `orders_by_openid` without values (the number is in `orders_by_time`
/// under the same time key).
const INDEX_VERSION: &[u8] = b"7";

/// The file a running server writes its pid to, in the data directory.
pub const PID_FILE: &str = "paybridge.pid";

/// Where sled keeps its files, inside the data directory. Releases before
/// the compressed format kept them at the top of the data directory; such a
/// directory is copied into this one when first opened ([`migrate`]).
pub(super) const SLED_DIR: &str = "store";

/// zstd's level for sled's pages: the fastest. Higher levels saved little
/// more on the store-cost bench and cost more CPU per write (see
/// static/docs/engineering.md, "What the store costs").
const COMPRESSION_LEVEL: i32 = 1;

/// Whether `dir` holds a PayBridge database (without creating anything).
pub fn holds_data(dir: &Path) -> bool {
    dir.join(SLED_DIR).join("conf").is_file() || migrate::holds_old_format(dir)
}

/// sled's settings for the store in data directory `dir`.
pub(super) fn sled_config(dir: &Path, options: StoreOptions) -> sled::Config {
    sled::Config::new()
        .path(dir.join(SLED_DIR))
        .cache_capacity(options.cache_bytes)
        .flush_every_ms(None)
        .use_compression(true)
        .compression_factor(COMPRESSION_LEVEL)
}

/// `fsync`s a folder, so the names created, renamed or removed in it are
/// durable (the archive's files, a migrated store, a restored archive).
pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Opens sled with `config`, waiting up to `lock_wait` for the lock: within
/// one process (a reopen after a failure, a restart in tests) sled may still
/// be finishing the previous handle's last writes on its I/O threads.
/// Another process holding it is [`StoreError::Locked`].
pub(super) fn open_locked(
    config: &sled::Config,
    dir: &Path,
    lock_wait: std::time::Duration,
) -> Result<sled::Db, StoreError> {
    let started = std::time::Instant::now();
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if started.elapsed() >= lock_wait {
                    let pid = std::fs::read_to_string(dir.join(PID_FILE)).ok().and_then(|p| p.trim().parse().ok());
                    return Err(StoreError::Locked { dir: dir.display().to_string(), pid });
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            opened => return Ok(opened?),
        }
    }
}

impl Store {
    /// Opens (or creates) the database in `dir` for `mode` with the default
    /// [`StoreOptions`].
    pub fn open(dir: &Path, mode: Mode) -> Result<Store, StoreError> {
        Store::open_with(dir, mode, StoreOptions::default())
    }

    /// Opens (or creates) the database in `dir` for `mode`. A directory used
    /// by the other mode is refused, so sandbox orders never mix with real
    /// ones. Starts the writer thread.
    pub fn open_with(dir: &Path, mode: Mode, options: StoreOptions) -> Result<Store, StoreError> {
        let slot = Arc::new(ArcSwapOption::from_pointee(Trees::open(dir, mode, options)?));
        let writer = Writer::start(slot.clone(), writer::Reopen { dir: dir.to_owned(), mode, options })
            .map_err(sled::Error::Io)?;
        Ok(Store { trees: slot, writer: Arc::new(writer) })
    }
}

impl Trees {
    /// Opens sled in `dir` and checks that it belongs to `mode`.
    pub(super) fn open(dir: &Path, mode: Mode, options: StoreOptions) -> Result<Trees, StoreError> {
        // sled's background flush is off: durability comes from the writer's
        // own sync after every batch, and tests must not pass thanks to a timer.
        migrate::bring_up_to_date(dir, options)?;
        let db = open_locked(&sled_config(dir, options), dir, options.lock_wait)?;
        let meta = db.open_tree("meta")?;
        match meta.get("mode")? {
            Some(found) if found.as_ref() != mode.as_str().as_bytes() => {
                return Err(StoreError::ModeMismatch {
                    found: String::from_utf8_lossy(&found).into_owned(),
                    wanted: mode.as_str(),
                })
            }
            Some(_) => {}
            None => {
                meta.insert("mode", mode.as_str())?;
            }
        }
        let trees = Trees {
            orders: db.open_tree("orders")?,
            orders_by_time: db.open_tree("orders_by_time")?,
            orders_by_status: db.open_tree("orders_by_status")?,
            orders_by_tx: db.open_tree("orders_by_tx")?,
            orders_by_openid: db.open_tree("orders_by_openid")?,
            orders_due: db.open_tree("orders_due")?,
            stats: db.open_tree("stats")?,
            notifies: db.open_tree("notifies")?,
            notifies_by_order: db.open_tree("notifies_by_order")?,
            platform_orders: db.open_tree("platform_orders")?,
            platform_changes: db.open_tree("platform_changes")?,
            nonces: db.open_tree("nonces")?,
            outbox: db.open_tree("outbox")?,
            outbox_pending: db.open_tree("outbox_pending")?,
            outbox_by_order: db.open_tree("outbox_by_order")?,
            wechat_certificates: db.open_tree("wechat_certificates")?,
            refunds: db.open_tree("refunds")?,
            refunds_by_order: db.open_tree("refunds_by_order")?,
            refunds_processing: db.open_tree("refunds_processing")?,
            bills: db.open_tree("bills")?,
            bill_files: db.open_tree("bill_files")?,
            data_file: writer::open_data_file(&dir.join(SLED_DIR)).map_err(sled::Error::Io)?,
            id_offset: 0,
            db,
        };
        let floor = read_u64(trees.stats.get(NEXT_ID)?.as_deref(), 0);
        let trees = Trees { id_offset: floor.saturating_sub(trees.db.generate_id()?), ..trees };
        match meta.get("index_version")?.as_deref() {
            Some(INDEX_VERSION) => {}
            // Versions 5 and 6 lack only what a later one changed: built
            // alone, so platforms' change feeds do not see every order again.
            Some(b"6") => {
                trees.rekey_order_indexes()?;
                meta.insert("index_version", INDEX_VERSION)?;
            }
            Some(b"5") => {
                trees.build_due_index()?;
                trees.rekey_order_indexes()?;
                meta.insert("index_version", INDEX_VERSION)?;
            }
            _ => {
                trees.rebuild_indexes()?;
                meta.insert("index_version", INDEX_VERSION)?;
            }
        }
        trees.sync()?;
        Ok(trees)
    }

    /// Builds the lifecycle's due index from the orders (a data directory
    /// from before it existed). Runs at open, before the writer starts.
    fn build_due_index(&self) -> Result<(), StoreError> {
        self.orders_due.clear()?;
        let mut open = 0u64;
        for entry in self.orders.iter() {
            let (_, bytes) = entry?;
            if let Some(key) = schedule::due_key(&Order::decode(&bytes)?) {
                self.orders_due.insert(key, &[])?;
                open += 1;
            }
        }
        tracing::info!(open_orders = open, "the lifecycle's due index was built");
        Ok(())
    }

    /// Writes the status and payer indexes in version 7's form (see
    /// [`INDEX_VERSION`]) from the orders. Runs at open, before the writer
    /// starts; interrupted, it runs again at the next open.
    fn rekey_order_indexes(&self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        self.orders_by_status.clear()?;
        self.orders_by_openid.clear()?;
        let (mut by_status, mut by_openid, mut done) = (sled::Batch::default(), sled::Batch::default(), 0u64);
        for entry in self.orders.iter() {
            let (_, bytes) = entry?;
            let order = Order::decode(&bytes)?;
            let time = tx::time_key(&order);
            by_status.insert(&tx::status_key(order.status, &time)[..], &[]);
            by_openid.insert(tx::openid_key(&order.openid, &time), &[]);
            done += 1;
            if done % 10_000 == 0 {
                self.orders_by_status.apply_batch(std::mem::take(&mut by_status))?;
                self.orders_by_openid.apply_batch(std::mem::take(&mut by_openid))?;
            }
        }
        self.orders_by_status.apply_batch(by_status)?;
        self.orders_by_openid.apply_batch(by_openid)?;
        tracing::info!(orders = done, ms = started.elapsed().as_millis() as u64, "status and payer indexes rewritten");
        Ok(())
    }

    /// Rebuilds every order index and counter from the orders themselves
    /// (after an upgrade that added an index).
    fn rebuild_indexes(&self) -> Result<(), StoreError> {
        for tree in [
            &self.orders_by_time,
            &self.orders_by_status,
            &self.orders_by_tx,
            &self.orders_by_openid,
            &self.orders_due,
            &self.stats,
            &self.notifies_by_order,
            &self.platform_orders,
            &self.platform_changes,
            &self.outbox_pending,
            &self.outbox_by_order,
        ] {
            tree.clear()?;
        }
        let mut rebuilt = 0u64;
        for entry in self.orders.iter() {
            let (_, bytes) = entry?;
            let order = Order::decode(&bytes)?;
            // A platform's order is in its change feed as changed now: the
            // feed's history is not in the orders, and a platform reading
            // from an older cursor must not miss it.
            let change = if order.source.platform().is_some() { Some(self.next_id()?) } else { None };
            self.transact(|tx| {
                tx.insert_order(&order)?;
                change.map_or(Ok(()), |id| tx.note_platform_change(&order, id))
            })?;
            rebuilt += 1;
        }
        for entry in self.notifies.iter() {
            let (_, bytes) = entry?;
            let record = NotifyRecord::decode(&bytes)?;
            self.transact(|tx| tx.index_notify(&record, bytes.len()))?;
        }
        for entry in self.outbox.iter() {
            let (_, bytes) = entry?;
            let delivery = Delivery::decode(&bytes)?;
            self.transact(|tx| tx.put_delivery(&delivery, None))?;
        }
        if rebuilt > 0 {
            tracing::info!(orders = rebuilt, "order indexes rebuilt");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::order;

    #[test]
    fn mode_marker_refuses_the_other_mode() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), Mode::Sandbox).unwrap());
        let err = Store::open(dir.path(), Mode::Live).err().unwrap();
        assert!(err.to_string().contains("sandbox data"), "{err}");
    }

    /// A data directory of index version 6 (both indexes holding the
    /// order's number) gets them rewritten when opened, and lists and
    /// searches find the same orders.
    #[tokio::test]
    async fn version_6_indexes_are_rewritten_when_opened() {
        use crate::store::{OrderFilter, OrderStatus};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Mode::Live).unwrap();
        for i in 0..30 {
            let mut o = order(&format!("SIX{i:07}"), 1000 + i);
            o.openid = format!("payer-{}", i % 3);
            store.insert_order(o).await.unwrap().unwrap();
        }
        for i in 0..10 {
            store.update_order(&format!("SIX{i:07}"), |o| o.close(5000, "x")).await.unwrap();
        }
        // What version 6 wrote.
        let trees = store.trees().unwrap();
        trees.orders_by_status.clear().unwrap();
        trees.orders_by_openid.clear().unwrap();
        for entry in trees.orders.iter() {
            let (no, bytes) = entry.unwrap();
            let o = Order::decode(&bytes).unwrap();
            let time = tx::time_key(&o);
            trees.orders_by_status.insert(&tx::status_key(o.status, &time)[..], no.clone()).unwrap();
            trees.orders_by_openid.insert(tx::prefixed_key(&o.openid, &time), no).unwrap();
        }
        trees.db.open_tree("meta").unwrap().insert("index_version", &b"6"[..]).unwrap();
        drop(trees);
        assert!(store.close(std::time::Duration::from_secs(5)).await);
        drop(store);

        let store = Store::open(dir.path(), Mode::Live).unwrap();
        let trees = store.trees().unwrap();
        let values = trees.orders_by_openid.iter().values().chain(trees.orders_by_status.iter().values());
        assert!(values.map(Result::unwrap).all(|v| v.is_empty()), "version 7: no values");
        assert_eq!(trees.orders_by_openid.len() + trees.orders_by_status.len(), 60);
        let closed = store.list_orders(&OrderFilter::status(OrderStatus::Closed), None, 100).unwrap().items;
        assert_eq!(closed.len(), 10);
        let open = store.list_orders(&OrderFilter::status(OrderStatus::Created), None, 100).unwrap().items;
        assert_eq!(open.len(), 20);
        assert_eq!(open[0].out_trade_no, "SIX0000029", "newest first");
        let payer = store.search_orders("payer-1", &OrderFilter::default(), None, 100).unwrap().items;
        assert_eq!(payer.len(), 10);
        assert!(payer.iter().all(|o| o.openid == "payer-1"));
    }

    /// A data directory from before the due index gets it built when opened.
    #[tokio::test]
    async fn the_due_index_is_built_for_an_older_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Mode::Live).unwrap();
        for i in 0..20 {
            store.insert_order(order(&format!("OLD{i:07}"), 1000)).await.unwrap().unwrap();
        }
        store.update_order("OLD0000019", |o| o.close(2000, "x")).await.unwrap();
        let trees = store.trees().unwrap();
        trees.orders_due.clear().unwrap();
        trees.db.open_tree("meta").unwrap().insert("index_version", &b"5"[..]).unwrap();
        drop(trees);
        assert!(store.close(std::time::Duration::from_secs(5)).await);
        drop(store);
        let store = Store::open(dir.path(), Mode::Live).unwrap();
        assert_eq!(store.due_index_len().unwrap(), 19, "open orders only");
        let due = store.due_orders(schedule::Queue::Unpaid, i64::MAX, 100).unwrap();
        assert_eq!(due[0], (1000 + schedule::LEGACY_EXPIRY_MS, "OLD0000000".to_owned()));
    }
}
