//! Storage in sled: orders, the notify log, and the indexes that page them.
//!
//! # Layout
//! | tree | key | value |
//! |---|---|---|
//! | `orders` | out_trade_no | [`Order`] |
//! | `orders_by_time` | created_ms (8, BE) ‖ seq (8, BE) | out_trade_no |
//! | `orders_by_status` | status (1) ‖ created_ms ‖ seq | out_trade_no |
//! | `orders_by_tx` | transaction_id | out_trade_no |
//! | `orders_by_openid` | openid ‖ 0x00 ‖ created_ms ‖ seq | out_trade_no |
//! | `orders_due` | queue (1) ‖ due_ms (8, BE) ‖ out_trade_no | empty ([`schedule`]: the lifecycle's work) |
//! | `stats` | `s` ‖ status / `d` ‖ day / `r` ‖ day | orders per status / paid count and fen / rejected notifies |
//! | `notifies` | id (8, BE) | [`NotifyRecord`] |
//! | `notifies_by_order` | out_trade_no ‖ 0x00 ‖ id | empty |
//! | `meta` | name | value (`mode`: live or sandbox; `index_version`) |
//! | `wechat_certificates` | serial | [`StoredCertificate`] (API v3 platform certificates) |
//!
//! and the platform API's trees, listed in [`platform`], the refunds', in
//! [`refund`], and the daily bills', in [`bill`].
//!
//! Index keys sort by time, so "newest first, from this cursor" is a reverse
//! range scan that reads only the page: its cost does not grow with the
//! number of orders. Counters make the overview O(days), not O(orders).
//! Every change is one sled transaction over all these trees, made on the
//! one writer thread ([`writer`]); a write's future resolves only after the
//! batch it was part of is `fdatasync`ed, so callers can acknowledge at once.

pub mod backup;
pub mod bill;
pub mod certificates;
pub mod codec;
pub mod notify;
pub mod order;
pub mod platform;
mod query;
pub mod refund;
pub mod schedule;
mod tx;
mod writer;

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use sled::transaction::{TransactionError, Transactional};
use sled::Tree;

pub use certificates::StoredCertificate;
pub use notify::{NotifyRecord, NotifySource, Verdict};
pub use order::{Order, OrderContents, OrderEvent, OrderSource, OrderStatus, Payment, PaymentOutcome, Prepay};
pub use platform::{Created, Delivery, DeliveryState, EventKind, RefundEvent};
pub use query::{DayTotal, OrderFilter};
pub use refund::{Refund, RefundCreated, RefundStatus};
pub use tx::{beijing_day, beijing_day_start, day_string, parse_day, MAX_NOTIFY_BYTES};
pub use writer::WriterStats;

use crate::domain::Mode;
use codec::CodecError;
use tx::{Tx, TxResult};
use writer::Writer;

/// The version of the index layout; a data directory with an older one has
/// its indexes rebuilt from the orders when opened.
/// Version 6 added `orders_due`.
const INDEX_VERSION: &[u8] = b"6";

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O, corruption).
    #[error("database error: {0}")]
    Sled(#[from] sled::Error),
    /// A record could not be decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Too many writes are waiting already; try again shortly.
    #[error("storage is busy: too many writes are waiting")]
    Busy,
    /// The writes of this batch did not reach the disk (full disk, I/O
    /// error); the cause is logged once by the writer.
    #[error("storage is unavailable (full disk or I/O error); try again shortly")]
    Unavailable,
    /// The store is shutting down.
    #[error("storage is shutting down")]
    Stopped,
    /// Another process holds the data directory.
    #[error("the data directory {dir} is in use: another PayBridge is probably running{}", pid.map_or(String::new(), |p| format!(" (pid {p})")))]
    Locked {
        /// The directory.
        dir: String,
        /// The pid in its `paybridge.pid`, if any.
        pid: Option<u32>,
    },
    /// The data directory belongs to the other mode.
    #[error("the data directory holds {found} data and cannot be used in {wanted} mode; use another data_dir")]
    ModeMismatch {
        /// What the directory is marked as.
        found: String,
        /// What was asked for.
        wanted: &'static str,
    },
}

impl From<TransactionError<CodecError>> for StoreError {
    fn from(e: TransactionError<CodecError>) -> Self {
        match e {
            TransactionError::Abort(e) => StoreError::Codec(e),
            TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

/// The trees and the database they live in. Readers use them directly;
/// only the writer thread changes them.
pub(crate) struct Trees {
    db: sled::Db,
    orders: Tree,
    orders_by_time: Tree,
    orders_by_status: Tree,
    orders_by_tx: Tree,
    orders_by_openid: Tree,
    orders_due: Tree,
    stats: Tree,
    notifies: Tree,
    notifies_by_order: Tree,
    platform_orders: Tree,
    platform_changes: Tree,
    nonces: Tree,
    outbox: Tree,
    outbox_pending: Tree,
    outbox_by_order: Tree,
    wechat_certificates: Tree,
    refunds: Tree,
    refunds_by_order: Tree,
    refunds_processing: Tree,
    bills: Tree,
    bill_files: Tree,
    /// sled's data file, opened again so the writer can `fdatasync` it.
    data_file: std::fs::File,
}

/// How the store uses memory and queues writes (`[storage]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    /// Writes that may wait for the writer; more are refused at once.
    pub max_pending_writes: usize,
    /// How long opening waits for the directory's lock. Within one process
    /// (a reopen after a failure, a restart in tests) sled may still be
    /// finishing the previous handle's last writes on its I/O threads.
    pub lock_wait: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 64 * 1024 * 1024,
            max_pending_writes: 4096,
            lock_wait: std::time::Duration::from_secs(10),
        }
    }
}

/// The database handle; cheap to clone. Reads go straight to sled and never
/// wait for a sync; writes go to the one writer thread (see [`writer`]).
#[derive(Clone)]
pub struct Store {
    /// Empty only while the writer reopens the database after a failure.
    trees: Arc<ArcSwapOption<Trees>>,
    writer: Arc<Writer>,
}

/// How much of the notify log to keep (`[notifies]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Notifies older than this go.
    pub max_age_ms: i64,
    /// The oldest notifies go while the log holds more encoded bytes than this.
    pub max_bytes: u64,
}

/// One page of a newest-first listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items, newest first.
    pub items: Vec<T>,
    /// Pass this back to get the next (older) page; `None` at the end.
    pub next: Option<String>,
}

/// The file a running server writes its pid to, in the data directory.
pub const PID_FILE: &str = "paybridge.pid";

/// Whether `dir` holds a PayBridge database (without creating anything).
pub fn holds_data(dir: &Path) -> bool {
    dir.join("db").is_file() && dir.join("conf").is_file()
}

/// The bytes a write is counted as when it carries no large payload.
const SMALL_WRITE: usize = 1024;

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

    /// The open database, or `Unavailable` while the writer reopens it
    /// after a storage failure.
    fn trees(&self) -> Result<Arc<Trees>, StoreError> {
        self.trees.load_full().ok_or(StoreError::Unavailable)
    }

    /// Applies `f` on the writer thread, in the transaction of the batch it
    /// joins, and answers once that batch is durable. `bytes` estimates how
    /// much it writes (for batch bounds). `f` may run more than once.
    async fn write<R: Send + 'static>(
        &self,
        bytes: usize,
        f: impl FnMut(&Tx, u64) -> TxResult<R> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.writer.submit(Box::new(Pending { f, outcome: None, answer }), bytes)?;
        answered.await.unwrap_or(Err(StoreError::Stopped))
    }

    /// Runs `read` off the async threads. sled's reads take its global
    /// concurrency lock, which the writer holds while it applies a batch:
    /// brief, but not something an async worker may wait on.
    pub async fn read<R: Send + 'static>(
        &self,
        read: impl FnOnce(&Store) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || read(&store)).await.unwrap_or(Err(StoreError::Stopped))
    }

    /// Holds the writer inside a change until the returned sender is used
    /// (tests of what a hanging disk looks like).
    #[cfg(test)]
    pub(crate) async fn hold_writer(&self) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let blocker = tokio::spawn({
            let store = self.clone();
            async move { store.write(0, move |_, _| Ok(held.recv().ok())).await.map(drop).unwrap() }
        });
        while self.writer_stats().busy_for().is_none() {
            tokio::task::yield_now().await;
        }
        (release, blocker)
    }

    /// Finishes the queued writes, syncs, and stops the writer; later writes
    /// fail with [`StoreError::Stopped`]. Gives up after `timeout`.
    pub async fn close(&self, timeout: std::time::Duration) -> bool {
        self.writer.stop(timeout).await
    }

    /// What the writer is doing, read without waiting on it.
    pub fn writer_stats(&self) -> &WriterStats {
        &self.writer.stats
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.trees()?.db.size_on_disk()?)
    }

    /// The order with this number.
    pub fn order(&self, out_trade_no: &str) -> Result<Option<Order>, StoreError> {
        self.trees()?.order(out_trade_no)
    }

    /// Inserts `order` unless its number exists, giving it the next sequence
    /// number. Returns the existing order (and writes nothing) when it does,
    /// so that concurrent creators agree; else the order as stored.
    pub async fn insert_order(&self, order: Order) -> Result<Result<Order, Order>, StoreError> {
        self.write(SMALL_WRITE, move |tx, id| {
            if let Some(existing) = tx.get_order(&order.out_trade_no)? {
                return Ok(Err(existing));
            }
            let mut order = order.clone();
            order.seq = id;
            tx.insert_order(&order)?;
            Ok(Ok(order))
        })
        .await
    }

    /// Changes an order in one transaction, keeping the indexes right.
    /// `change` may run more than once: it must be pure.
    /// Returns the order as stored, or `None` if there is no such order.
    pub async fn update_order(
        &self,
        out_trade_no: &str,
        change: impl Fn(&mut Order) + Send + 'static,
    ) -> Result<Option<Order>, StoreError> {
        let out_trade_no = out_trade_no.to_owned();
        self.write(SMALL_WRITE, move |tx, id| {
            let Some(before) = tx.get_order(&out_trade_no)? else { return Ok(None) };
            let mut order = before.clone();
            change(&mut order);
            if order != before {
                tx.put_order(&order, &before, id)?;
            }
            Ok(Some(order))
        })
        .await
    }

    /// Changes an order like [`Store::update_order`], or removes it when
    /// `change` returns false: one store step either way. Removal is only
    /// for an open order that was never paid and no platform vouched for
    /// (`change` must not ask for another); it goes with its index entries
    /// and counts. Returns the order as stored (`None` if removed or absent)
    /// and whether it was removed.
    pub async fn update_or_remove_order(
        &self,
        out_trade_no: &str,
        change: impl Fn(&mut Order) -> bool + Send + 'static,
    ) -> Result<(Option<Order>, bool), StoreError> {
        let out_trade_no = out_trade_no.to_owned();
        self.write(SMALL_WRITE, move |tx, id| {
            let Some(before) = tx.get_order(&out_trade_no)? else { return Ok((None, false)) };
            let mut order = before.clone();
            let keep = change(&mut order);
            let removable = matches!(before.status, OrderStatus::Created | OrderStatus::Prepaid)
                && before.source.platform().is_none();
            if !keep && removable {
                tx.remove_order(&before)?;
                return Ok((None, true));
            }
            if order != before {
                tx.put_order(&order, &before, id)?;
            }
            Ok((Some(order), false))
        })
        .await
    }

    /// Orders of `queue` due at or before `now`, earliest first, at most
    /// `limit`: (due time, out_trade_no). A range scan of the due index:
    /// its cost is what is due, not how many orders are open.
    pub fn due_orders(&self, queue: schedule::Queue, now: i64, limit: usize) -> Result<Vec<(i64, String)>, StoreError> {
        let trees = self.trees()?;
        let mut out = Vec::new();
        for entry in trees.orders_due.range(schedule::due_range(queue, now)).take(limit) {
            let (key, _) = entry?;
            out.extend(schedule::parse_due_key(&key));
        }
        Ok(out)
    }

    /// How many open orders the due index holds (tests, migration checks).
    pub fn due_index_len(&self) -> Result<usize, StoreError> {
        Ok(self.trees()?.orders_due.len())
    }

    /// Appends a notify to the log (with the next id) and, in the same
    /// transaction, lets `decide` change the order it names. `decide` sees
    /// the order (or `None` if unknown) and returns the verdict, its reason,
    /// and anything the caller wants back; it may run more than once and
    /// must be pure. Returns the record as stored and that value.
    pub async fn record_notify<T: Send + 'static>(
        &self,
        mut record: NotifyRecord,
        decide: impl Fn(Option<&mut Order>) -> (Verdict, String, T) + Send + 'static,
    ) -> Result<(NotifyRecord, T), StoreError> {
        record.trim_unverified();
        self.write(SMALL_WRITE + record.raw.len(), move |tx, id| {
            let mut record = record.clone();
            record.id = id;
            let before = match &record.out_trade_no {
                Some(no) => tx.get_order(no)?,
                None => None,
            };
            let mut order = before.clone();
            let (verdict, reason, value) = decide(order.as_mut());
            record.verdict = verdict;
            record.reason = reason;
            record.trim_unverified();
            if let (Some(order), Some(before)) = (&order, &before) {
                if order != before {
                    tx.put_order(order, before, id)?;
                }
            }
            tx.append_notify(&record)?;
            Ok((record, value))
        })
        .await
    }

    /// The notify log, newest first, starting after `cursor`.
    pub fn list_notifies(&self, cursor: Option<u64>, limit: usize) -> Result<Page<NotifyRecord>, StoreError> {
        let end = cursor.unwrap_or(u64::MAX).to_be_bytes();
        let mut items = Vec::with_capacity(limit.min(1000));
        let trees = self.trees()?;
        for entry in trees.notifies.range(..end).rev().take(limit) {
            let (_, bytes) = entry?;
            items.push(NotifyRecord::decode(&bytes)?);
        }
        let next = (items.len() == limit).then(|| items.last().map(|r| r.id.to_string())).flatten();
        Ok(Page { items, next })
    }

    /// The verified notifies of an order, newest first, starting after
    /// `cursor` (unverified ones only claim an order and are not linked).
    pub fn notifies_for_order(
        &self,
        out_trade_no: &str,
        cursor: Option<u64>,
        limit: usize,
    ) -> Result<Page<NotifyRecord>, StoreError> {
        let prefix = tx::prefixed_key(out_trade_no, &[]);
        let end = tx::prefixed_key(out_trade_no, &cursor.unwrap_or(u64::MAX).to_be_bytes());
        let mut items = Vec::with_capacity(limit.min(1000));
        let trees = self.trees()?;
        for entry in trees.notifies_by_order.range(prefix.clone()..end).rev() {
            let (key, _) = entry?;
            if items.len() == limit {
                let next = items.last().map(|r: &NotifyRecord| r.id.to_string());
                return Ok(Page { items, next });
            }
            if let Some(bytes) = trees.notifies.get(&key[prefix.len()..])? {
                items.push(NotifyRecord::decode(&bytes)?);
            }
        }
        Ok(Page { items, next: None })
    }

    /// Keeps the notify log within `retention` for as long as it runs:
    /// checks every `every`, then prunes in small batches.
    pub async fn keep_notify_log(self, retention: Retention, every: std::time::Duration) {
        const BATCH: usize = 256;
        let mut failing = false;
        loop {
            let mut pruned = 0;
            loop {
                match self.prune_notifies(retention, crate::clock::now_ms(), BATCH).await {
                    Ok(n) => {
                        pruned += n;
                        failing = false;
                        if n < BATCH {
                            break;
                        }
                        // Let the writes queued behind this batch go first.
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, "cannot prune the notify log; will retry");
                        }
                        failing = true;
                        break;
                    }
                }
            }
            if pruned > 0 {
                tracing::info!(pruned, "old notifies removed (notifies.keep_days / keep_mb)");
            }
            tokio::time::sleep(every).await;
        }
    }

    /// The notify log's size: (records, encoded bytes), from its counter.
    pub fn notify_log_size(&self) -> Result<(u64, u64), StoreError> {
        let value = self.trees()?.stats.get(tx::NOTIFY_LOG_SIZE)?;
        Ok((tx::read_u64(value.as_deref(), 0), tx::read_u64(value.as_deref(), 8)))
    }

    /// Deletes the oldest notifies while the log is over `retention`, at
    /// most `batch` of them in one write; returns how many went. Call it
    /// again while it returns `batch`: small batches keep other writes from
    /// waiting behind a long prune.
    pub async fn prune_notifies(&self, retention: Retention, now_ms: i64, batch: usize) -> Result<usize, StoreError> {
        let oldest = self
            .read(move |store| {
                let (_, mut bytes) = store.notify_log_size()?;
                let mut doomed = Vec::new();
                for entry in store.trees()?.notifies.iter().take(batch) {
                    let (key, value) = entry?;
                    let record = NotifyRecord::decode(&value)?;
                    if bytes <= retention.max_bytes && record.received_at >= now_ms - retention.max_age_ms {
                        break;
                    }
                    bytes = bytes.saturating_sub(value.len() as u64);
                    doomed.push(u64::from_be_bytes(key.as_ref().try_into().map_err(|_| CodecError::Empty)?));
                }
                Ok(doomed)
            })
            .await?;
        if oldest.is_empty() {
            return Ok(0);
        }
        let count = oldest.len();
        self.write(SMALL_WRITE, move |tx, _| {
            for id in &oldest {
                tx.remove_notify(*id)?;
            }
            Ok(())
        })
        .await?;
        Ok(count)
    }

    /// How many orders are stored, from the maintained per-status counters
    /// (never a scan: this is on the admin page and in `/metrics`).
    pub fn order_count(&self) -> Result<u64, StoreError> {
        Ok(self.status_counts()?.iter().map(|(_, n)| n).sum())
    }
}

/// A caller's change waiting in the writer's queue, with the outcome of its
/// last run and where to send it.
struct Pending<R, F> {
    f: F,
    outcome: Option<Result<R, StoreError>>,
    answer: tokio::sync::oneshot::Sender<Result<R, StoreError>>,
}

impl<R: Send, F: FnMut(&Tx, u64) -> TxResult<R> + Send> writer::Change for Pending<R, F> {
    fn apply(&mut self, tx: &Tx, id: u64) -> TxResult<()> {
        self.outcome = Some(Ok((self.f)(tx, id)?));
        Ok(())
    }

    fn failed(&mut self, error: StoreError) {
        self.outcome = Some(Err(error));
    }

    fn answer(self: Box<Self>, durable: bool) {
        let outcome = match (durable, self.outcome) {
            // sled failing inside the transaction (a full disk while it
            // wrote its log) is the same for the caller as a failed sync:
            // nothing was written, try again shortly (503, WeChat resends).
            (true, Some(Err(StoreError::Sled(_)))) => Err(StoreError::Unavailable),
            (true, Some(outcome)) => outcome,
            (_, Some(Err(e @ StoreError::Codec(_)))) => Err(e),
            _ => Err(StoreError::Unavailable),
        };
        let _ = self.answer.send(outcome);
    }
}

impl Trees {
    /// Opens sled in `dir` and checks that it belongs to `mode`.
    fn open(dir: &Path, mode: Mode, options: StoreOptions) -> Result<Trees, StoreError> {
        // sled's background flush is off: durability comes from the writer's
        // own sync after every batch, and tests must not pass thanks to a timer.
        let config = sled::Config::new().path(dir).cache_capacity(options.cache_bytes).flush_every_ms(None);
        let started = std::time::Instant::now();
        let db = loop {
            match config.open() {
                // sled reports a held lock as `Other` with this text.
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                    if started.elapsed() >= options.lock_wait {
                        let pid = std::fs::read_to_string(dir.join(PID_FILE)).ok().and_then(|p| p.trim().parse().ok());
                        return Err(StoreError::Locked { dir: dir.display().to_string(), pid });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                opened => break opened?,
            }
        };
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
            data_file: writer::open_data_file(dir).map_err(sled::Error::Io)?,
            db,
        };
        match meta.get("index_version")?.as_deref() {
            Some(INDEX_VERSION) => {}
            // Version 5 lacks only the due index: built alone, so platforms'
            // change feeds do not see every order again.
            Some(b"5") => {
                trees.build_due_index()?;
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

    fn order(&self, out_trade_no: &str) -> Result<Option<Order>, StoreError> {
        match self.orders.get(out_trade_no.as_bytes())? {
            Some(bytes) => Ok(Some(Order::decode(&bytes)?)),
            None => Ok(None),
        }
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
            let change = if order.source.platform().is_some() { Some(self.db.generate_id()?) } else { None };
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

    /// Runs `f` as one transaction over every tree. Only the writer thread
    /// (and [`Store::open`], before it starts) calls this, so transactions
    /// never conflict; sled may still run `f` again, so it must be pure.
    fn transact<R>(&self, f: impl Fn(&Tx) -> TxResult<R>) -> Result<R, StoreError> {
        let trees: [&Tree; 21] = [
            &self.orders,
            &self.orders_by_time,
            &self.orders_by_status,
            &self.orders_by_tx,
            &self.orders_by_openid,
            &self.stats,
            &self.notifies,
            &self.notifies_by_order,
            &self.platform_orders,
            &self.platform_changes,
            &self.nonces,
            &self.outbox,
            &self.outbox_pending,
            &self.outbox_by_order,
            &self.wechat_certificates,
            &self.refunds,
            &self.refunds_by_order,
            &self.refunds_processing,
            &self.bills,
            &self.bill_files,
            &self.orders_due,
        ];
        let result = trees[..].transaction(|t| {
            f(&Tx {
                orders: &t[0],
                by_time: &t[1],
                by_status: &t[2],
                by_tx: &t[3],
                by_openid: &t[4],
                stats: &t[5],
                notifies: &t[6],
                notifies_by_order: &t[7],
                platform_orders: &t[8],
                platform_changes: &t[9],
                nonces: &t[10],
                outbox: &t[11],
                outbox_pending: &t[12],
                outbox_by_order: &t[13],
                wechat_certificates: &t[14],
                refunds: &t[15],
                refunds_by_order: &t[16],
                refunds_processing: &t[17],
                bills: &t[18],
                bill_files: &t[19],
                due: &t[20],
            })
        })?;
        Ok(result)
    }

    /// Makes every write so far durable: sled writes out its buffers, then
    /// the data file is `fdatasync`ed (sled alone only `sync_file_range`s).
    fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.data_file.sync_data().map_err(sled::Error::Io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Mode::Live).unwrap();
        (dir, store)
    }

    fn order(no: &str, at: i64) -> Order {
        let contents = OrderContents { total_fee: 100, body: "b".into(), attach: "".into(), openid: "o".into() };
        Order::new(no.into(), contents, false, at)
    }

    #[tokio::test]
    async fn insert_is_first_writer_wins() {
        let (_dir, store) = open();
        let first = store.insert_order(order("ORDER001", 1)).await.unwrap().unwrap();
        let mut b = order("ORDER001", 2);
        b.total_fee = 5;
        assert_eq!(store.insert_order(b).await.unwrap().unwrap_err(), first);
        assert_eq!(store.order("ORDER001").unwrap().unwrap().total_fee, 100);
        let second = store.insert_order(order("ORDER002", 1)).await.unwrap().unwrap();
        assert!(second.seq > first.seq, "the store numbers orders in insertion order");
    }

    #[tokio::test]
    async fn pages_newest_first_with_status_filter() {
        let (_dir, store) = open();
        for i in 0..25 {
            store.insert_order(order(&format!("ORDER{i:03}"), 1000 + i)).await.unwrap().unwrap();
        }
        for i in (0..25).step_by(5) {
            store.update_order(&format!("ORDER{i:03}"), |o| o.status = OrderStatus::Paid).await.unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store.list_orders(&OrderFilter::default(), cursor.as_deref(), 10).unwrap();
            seen.extend(page.items.iter().map(|o| o.out_trade_no.clone()));
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let expected: Vec<_> = (0..25).rev().map(|i| format!("ORDER{i:03}")).collect();
        assert_eq!(seen, expected);

        let paid = store.list_orders(&OrderFilter::status(OrderStatus::Paid), None, 3).unwrap();
        let names: Vec<_> = paid.items.iter().map(|o| o.out_trade_no.as_str()).collect();
        assert_eq!(names, ["ORDER020", "ORDER015", "ORDER010"]);
        let rest = store.list_orders(&OrderFilter::status(OrderStatus::Paid), paid.next.as_deref(), 3).unwrap();
        assert_eq!(rest.items.len(), 2);
        assert!(rest.next.is_none());
        assert_eq!(store.list_orders(&OrderFilter::status(OrderStatus::Created), None, 100).unwrap().items.len(), 20);
        assert_eq!(store.order_count().unwrap(), 25);
    }

    #[test]
    fn mode_marker_refuses_the_other_mode() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), Mode::Sandbox).unwrap());
        let err = Store::open(dir.path(), Mode::Live).err().unwrap();
        assert!(err.to_string().contains("sandbox data"), "{err}");
    }

    #[tokio::test]
    async fn notify_log_and_order_change_in_one_transaction() {
        let (_dir, store) = open();
        store.insert_order(order("ORDER001", 1)).await.unwrap().unwrap();
        let rec = || NotifyRecord {
            out_trade_no: Some("ORDER001".into()),
            verified: true,
            ..NotifyRecord::received(b"<xml/>", 5, None, false)
        };
        let stored = store
            .record_notify(rec(), |o| {
                o.unwrap().status = OrderStatus::Paid;
                (Verdict::Paid, "ok".into(), ())
            })
            .await
            .unwrap()
            .0;
        assert_eq!(stored.verdict, Verdict::Paid);
        store.record_notify(rec(), |_| (Verdict::Duplicate, "dup".into(), ())).await.unwrap();
        assert_eq!(store.order("ORDER001").unwrap().unwrap().status, OrderStatus::Paid);
        assert_eq!(store.list_orders(&OrderFilter::status(OrderStatus::Paid), None, 10).unwrap().items.len(), 1);
        assert_eq!(store.list_orders(&OrderFilter::status(OrderStatus::Created), None, 10).unwrap().items.len(), 0);
        let log = store.notifies_for_order("ORDER001", None, 10).unwrap().items;
        assert_eq!(log.iter().map(|r| r.verdict).collect::<Vec<_>>(), [Verdict::Duplicate, Verdict::Paid]);
        assert!(log[0].id > log[1].id, "the store numbers notifies in arrival order");
        let page = store.list_notifies(None, 1).unwrap();
        assert_eq!(page.items[0].verdict, Verdict::Duplicate);
        let older = store.list_notifies(page.next.map(|c| c.parse().unwrap()), 1).unwrap();
        assert_eq!(older.items[0].verdict, Verdict::Paid);
    }

    fn notify_at(no: &str, at: i64, verified: bool, body: &[u8]) -> NotifyRecord {
        NotifyRecord { out_trade_no: Some(no.into()), verified, ..NotifyRecord::received(body, at, None, false) }
    }

    /// Only verified notifies are linked to their order, and its list pages.
    #[tokio::test]
    async fn unverified_notifies_only_claim_their_order() {
        let (_dir, store) = open();
        store.insert_order(order("ORDER001", 1)).await.unwrap().unwrap();
        let junk = vec![b'j'; 60 * 1024];
        for i in 0..30 {
            let record = notify_at("ORDER001", i, false, &junk);
            store.record_notify(record, |_| (Verdict::Rejected, "signature".repeat(200), ())).await.unwrap();
        }
        for i in 0..25 {
            store
                .record_notify(notify_at("ORDER001", 100 + i, true, b"<xml/>"), |_| {
                    (Verdict::Duplicate, "dup".into(), ())
                })
                .await
                .unwrap();
        }
        let first = store.notifies_for_order("ORDER001", None, 20).unwrap();
        assert_eq!(first.items.len(), 20);
        assert!(first.items.iter().all(|r| r.verified));
        let rest = store.notifies_for_order("ORDER001", first.next.map(|c| c.parse().unwrap()), 20).unwrap();
        assert_eq!((rest.items.len(), rest.next), (5, None));
        let junk_entry = &store.list_notifies(None, 100).unwrap().items[25];
        assert!(!junk_entry.verified);
        assert_eq!((junk_entry.raw.len(), junk_entry.size), (notify::REFUSED_KEPT_BYTES, 60 * 1024));
        assert!(junk_entry.reason.len() <= notify::MAX_REASON_BYTES + 3, "{}", junk_entry.reason.len());
        let (count, bytes) = store.notify_log_size().unwrap();
        assert_eq!(count, 55);
        assert!(bytes < 30 * 2048 + 25 * 512, "{bytes} bytes for 55 small records");
    }

    /// A paid total that would wrap is refused, never stored wrong.
    #[tokio::test]
    async fn money_sums_never_wrap() {
        let (_dir, store) = open();
        let paid = |no: &str, fee: u64| {
            let mut o = order(no, 1);
            o.total_fee = fee;
            o.status = OrderStatus::Paid;
            o.paid_at = Some(1);
            o
        };
        store.insert_order(paid("HUGE000001", u64::MAX - 10)).await.unwrap().unwrap();
        let refused = store.insert_order(paid("HUGE000002", 11)).await;
        assert!(matches!(refused, Err(StoreError::Codec(CodecError::Overflow(_)))), "{refused:?}");
        store.insert_order(paid("HUGE000003", 10)).await.unwrap().unwrap();
        let day = store.paid_by_day(beijing_day(1), beijing_day(1)).unwrap()[0];
        assert_eq!((day.count, day.fen), (2, u64::MAX));
        assert!(store.order("HUGE000002").unwrap().is_none(), "the refused change left nothing behind");
    }

    /// Retention removes the oldest notifies, by age and by size, in batches,
    /// and keeps the counters and the order links right.
    #[tokio::test]
    async fn retention_prunes_by_age_and_size() {
        let (_dir, store) = open();
        let day = 86_400_000;
        for i in 0..100 {
            let record = notify_at(&format!("ORDER{:03}", i % 3), i * day, true, &[b'x'; 1000]);
            store.record_notify(record, |_| (Verdict::Ignored, "r".into(), ())).await.unwrap();
        }
        let (_, total) = store.notify_log_size().unwrap();
        let keep_all = Retention { max_age_ms: 1000 * day, max_bytes: u64::MAX };
        assert_eq!(store.prune_notifies(keep_all, 100 * day, 16).await.unwrap(), 0);

        // Age: everything received before day 60 goes, 16 at a time.
        let by_age = Retention { max_age_ms: 40 * day, max_bytes: u64::MAX };
        let mut pruned = Vec::new();
        loop {
            let n = store.prune_notifies(by_age, 100 * day, 16).await.unwrap();
            pruned.push(n);
            if n < 16 {
                break;
            }
        }
        assert_eq!(pruned, [16, 16, 16, 12]);
        let left = store.list_notifies(None, 1000).unwrap().items;
        assert_eq!(left.len(), 40);
        assert_eq!(left.last().unwrap().received_at, 60 * day);
        let (count, bytes) = store.notify_log_size().unwrap();
        assert_eq!(count, 40);
        assert!(bytes < total / 2);

        // Size: the oldest go until the log fits.
        let by_size = Retention { max_age_ms: 1000 * day, max_bytes: bytes / 4 };
        while store.prune_notifies(by_size, 100 * day, 16).await.unwrap() > 0 {}
        let (count, bytes_now) = store.notify_log_size().unwrap();
        assert_eq!(count, 10);
        assert!(bytes_now <= bytes / 4);
        let linked: usize =
            (0..3).map(|i| store.notifies_for_order(&format!("ORDER{i:03}"), None, 100).unwrap().items.len()).sum();
        assert_eq!(linked, 10, "links of pruned notifies went with them");
    }

    /// An order over [`order::MAX_ORDER_BYTES`] is refused where it is
    /// written, whole: nothing changes, nothing is cut.
    #[tokio::test]
    async fn an_oversized_order_is_refused_not_truncated() {
        let (_dir, store) = open();
        store.insert_order(order("BIG0000001", 1)).await.unwrap().unwrap();
        let huge = "x".repeat(order::MAX_ORDER_BYTES);
        let body = huge.clone();
        let refused = store.update_order("BIG0000001", move |o| o.body = body.clone()).await;
        assert!(
            matches!(&refused, Err(StoreError::Codec(CodecError::Overflow(what))) if what.contains("MAX_ORDER_BYTES")),
            "{refused:?}"
        );
        assert_eq!(store.order("BIG0000001").unwrap().unwrap().body, "b");
        let mut big = order("BIG0000002", 1);
        big.attach = huge;
        assert!(matches!(store.insert_order(big).await, Err(StoreError::Codec(CodecError::Overflow(_)))));
        assert!(store.order("BIG0000002").unwrap().is_none());
        let mut record = notify_at("BIG0000001", 1, true, &vec![b'n'; MAX_NOTIFY_BYTES]);
        record.verified = true;
        let refused = store.record_notify(record, |_| (Verdict::Ignored, "r".into(), ())).await;
        assert!(matches!(refused, Err(StoreError::Codec(CodecError::Overflow(_)))), "{refused:?}");
        assert_eq!(store.notify_log_size().unwrap(), (0, 0));
    }

    /// Refunds, outbox deliveries and days of reconciliation have a
    /// maximum size too: the largest the rules allow fits, a larger one is
    /// refused whole where it is written.
    #[tokio::test]
    async fn every_record_kind_has_a_maximum_size() {
        use bill::{BillDay, BillState, Difference, DifferenceKind, MAX_BILL_DAY_BYTES, MAX_DIFFERENCES};
        use refund::MAX_REFUND_BYTES;
        let long = |n: usize| "長".repeat(n / 3);
        // The largest legal refund: numbers of 64 characters, an 80-byte
        // reason, WeChat's words quoted at 100 characters of 4 bytes.
        let mut largest = Refund {
            out_refund_no: "R".repeat(64),
            out_trade_no: "O".repeat(32),
            amount: u64::MAX,
            reason: long(80),
            status: RefundStatus::Processing,
            requested_by: format!("platform {}", "p".repeat(32)),
            platform_refund_id: Some("i".repeat(64)),
            refund_id: Some("w".repeat(64)),
            created_at: i64::MAX,
            updated_at: i64::MAX,
            last_result: Some("𝄞".repeat(140)),
            tries: u32::MAX,
            next_query_at: i64::MAX,
        };
        assert!(largest.encode().len() <= MAX_REFUND_BYTES / 4, "{} bytes", largest.encode().len());
        let (_dir, store) = open();
        store.insert_order(order("SIZE000001", 100)).await.unwrap().unwrap();
        store.update_order("SIZE000001", |o| o.status = OrderStatus::Paid).await.unwrap();
        largest.out_trade_no = "SIZE000001".into();
        largest.amount = 1;
        let mut oversized = largest.clone();
        oversized.out_refund_no = "RBIG".into();
        oversized.reason = "x".repeat(MAX_REFUND_BYTES);
        let refused = store.create_refund(oversized).await;
        assert!(
            matches!(&refused, Err(StoreError::Codec(CodecError::Overflow(what))) if what.contains("MAX_REFUND_BYTES")),
            "{refused:?}"
        );
        assert!(store.refund("RBIG").unwrap().is_none(), "nothing of it was written");
        assert!(matches!(store.create_refund(largest).await, Ok(RefundCreated::New(_))));

        // A day with every difference it may keep, each field at a bill's
        // longest value, fits; one with a longer error does not.
        let field = || Some("f".repeat(crate::wechat::bill::MAX_VALUE_BYTES));
        let difference = Difference {
            kind: DifferenceKind::AmountMismatch,
            out_trade_no: "d".repeat(crate::wechat::bill::MAX_VALUE_BYTES),
            out_refund_no: field(),
            transaction_id: field(),
            wechat_fen: Some(u64::MAX),
            local_fen: Some(u64::MAX),
            wechat_status: field(),
            local_status: field(),
        };
        let mut day = BillDay::attempt("2026-12-01", 1);
        day.state = BillState::Differences;
        day.differences = vec![difference; MAX_DIFFERENCES];
        day.error = Some(crate::text::clip(&"e".repeat(10_000), 400).into_owned());
        assert!(day.encode().len() <= MAX_BILL_DAY_BYTES, "{} bytes", day.encode().len());
        store.put_bill_day(day.clone(), None, "2026-01-01".into()).await.unwrap();
        day.day = "2026-12-02".into();
        day.error = Some("e".repeat(MAX_BILL_DAY_BYTES));
        let refused = store.put_bill_day(day, None, "2026-01-01".into()).await;
        assert!(matches!(refused, Err(StoreError::Codec(CodecError::Overflow(_)))), "{refused:?}");
        assert!(store.bill_day("2026-12-02").unwrap().is_none());
    }

    /// The due index follows every write, and removal takes an order's
    /// index entries and counts with it.
    #[tokio::test]
    async fn the_due_index_follows_the_orders() {
        let (_dir, store) = open();
        for i in 0..3 {
            let mut o = order(&format!("DUE000000{i}"), 1000);
            o.expires_at = Some(5000 + i);
            store.insert_order(o).await.unwrap().unwrap();
        }
        let due = |now| store.due_orders(schedule::Queue::Unpaid, now, 10).unwrap();
        assert_eq!(due(5001), [(5000, "DUE0000000".to_owned()), (5001, "DUE0000001".to_owned())]);
        store.update_order("DUE0000000", |o| o.close(2000, "x")).await.unwrap();
        assert_eq!(due(i64::MAX).len(), 2, "a closed order leaves the index");
        let (kept, removed) = store.update_or_remove_order("DUE0000001", |_| false).await.unwrap();
        assert_eq!((kept, removed), (None, true));
        assert!(store.order("DUE0000001").unwrap().is_none());
        assert_eq!(due(i64::MAX), [(5002, "DUE0000002".to_owned())]);
        assert_eq!(store.order_count().unwrap(), 2);
        assert_eq!(store.list_orders(&OrderFilter::default(), None, 10).unwrap().items.len(), 2);
        assert!(store.search_orders("o", &OrderFilter::default(), None, 10).unwrap().items.len() == 2);
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

    /// Writes from many threads at once are all applied, each answered only
    /// after a sync, and one sync covers several of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_share_syncs() {
        let (_dir, store) = open();
        let writers: Vec<_> = (0..256)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.insert_order(order(&format!("C{i:05}"), i)).await })
            })
            .collect();
        for w in writers {
            w.await.unwrap().unwrap().unwrap();
        }
        let stats = store.writer_stats();
        assert_eq!(store.order_count().unwrap(), 256);
        assert_eq!(stats.acknowledged(), 256);
        assert!(stats.syncs() < 256, "group commit: {} syncs for 256 writes", stats.syncs());
        assert_eq!(stats.pending(), 0);
    }

    /// Changes that queue together share one transaction; when one of them
    /// aborts it, the others still go through and only that caller fails.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_change_fails_alone() {
        let (_dir, store) = open();
        store.trees().unwrap().orders.insert("CORRUPT", &b"not a record"[..]).unwrap();
        let (release, blocker) = store.hold_writer().await;
        let bad = tokio::spawn({
            let store = store.clone();
            async move { store.update_order("CORRUPT", |o| o.total_fee = 1).await }
        });
        let good: Vec<_> = (0..10)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.insert_order(order(&format!("GOOD{i}"), i)).await })
            })
            .collect();
        while store.writer_stats().pending() < 12 {
            tokio::task::yield_now().await;
        }
        let syncs = store.writer_stats().syncs();
        release.send(()).unwrap();
        blocker.await.unwrap();
        assert!(matches!(bad.await.unwrap(), Err(StoreError::Codec(_))));
        for g in good {
            g.await.unwrap().unwrap().unwrap();
        }
        assert_eq!(store.order_count().unwrap(), 10);
        // One sync for the holding batch, then one for all eleven queued changes.
        assert_eq!(store.writer_stats().syncs(), syncs + 2);
    }

    /// A full queue is refused at once instead of making callers wait.
    #[tokio::test]
    async fn full_queue_refuses_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions { max_pending_writes: 1, ..StoreOptions::default() };
        let store = Store::open_with(dir.path(), Mode::Live, options).unwrap();
        let (release, blocker) = store.hold_writer().await;
        let queued = tokio::spawn({
            let store = store.clone();
            async move { store.insert_order(order("QUEUED", 1)).await }
        });
        while store.writer_stats().pending() < 2 {
            tokio::task::yield_now().await;
        }
        let refused = store.insert_order(order("REFUSED", 1)).await;
        assert!(matches!(refused, Err(StoreError::Busy)), "{refused:?}");
        assert_eq!(store.writer_stats().refused_busy(), 1);
        release.send(()).unwrap();
        blocker.await.unwrap();
        queued.await.unwrap().unwrap().unwrap();
        assert!(store.order("REFUSED").unwrap().is_none());

        assert!(store.close(std::time::Duration::from_secs(5)).await);
        assert!(matches!(store.insert_order(order("LATE", 1)).await, Err(StoreError::Stopped)));
    }
}
