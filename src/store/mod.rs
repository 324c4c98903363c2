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
//! | `stats` | `s` ‖ status / `d` ‖ day / `r` ‖ day | orders per status / paid count and fen / rejected notifies |
//! | `notifies` | id (8, BE) | [`NotifyRecord`] |
//! | `notifies_by_order` | out_trade_no ‖ 0x00 ‖ id | empty |
//! | `meta` | name | value (`mode`: live or sandbox; `index_version`) |
//!
//! Index keys sort by time, so "newest first, from this cursor" is a reverse
//! range scan that reads only the page: its cost does not grow with the
//! number of orders. Counters make the overview O(days), not O(orders).
//! Every change is one sled transaction over all these trees; callers
//! [`Store::flush`] before they acknowledge anything.

pub mod backup;
pub mod codec;
pub mod notify;
pub mod order;
mod query;
mod tx;

use std::path::Path;

use sled::transaction::{TransactionError, Transactional};
use sled::Tree;

pub use notify::{NotifyRecord, Verdict};
pub use order::{Order, OrderContents, OrderEvent, OrderStatus, Payment, PaymentOutcome, Prepay};
pub use query::{DayTotal, OrderFilter};
pub use tx::{beijing_day, beijing_day_start};

use crate::config::Mode;
use codec::CodecError;
use tx::{Tx, TxResult};

/// The version of the index layout; a data directory with an older one has
/// its indexes rebuilt from the orders when opened.
const INDEX_VERSION: &[u8] = b"3";

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O, corruption).
    #[error("database error: {0}")]
    Sled(#[from] sled::Error),
    /// A record could not be decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
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

/// The database handle; cheap to clone (sled trees are reference-counted).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    orders: Tree,
    orders_by_time: Tree,
    orders_by_status: Tree,
    orders_by_tx: Tree,
    orders_by_openid: Tree,
    stats: Tree,
    notifies: Tree,
    notifies_by_order: Tree,
    /// Writers share it; a backup takes it alone, so it sees one point in time.
    write_gate: std::sync::Arc<std::sync::RwLock<()>>,
}

/// One page of a newest-first listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items, newest first.
    pub items: Vec<T>,
    /// Pass this back to get the next (older) page; `None` at the end.
    pub next: Option<String>,
}

impl Store {
    /// Opens (or creates) the database in `dir` for `mode`. A directory used
    /// by the other mode is refused, so sandbox orders never mix with real ones.
    pub fn open(dir: &Path, mode: Mode) -> Result<Store, StoreError> {
        let db = sled::Config::new().path(dir).open()?;
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
        let store = Store {
            orders: db.open_tree("orders")?,
            orders_by_time: db.open_tree("orders_by_time")?,
            orders_by_status: db.open_tree("orders_by_status")?,
            orders_by_tx: db.open_tree("orders_by_tx")?,
            orders_by_openid: db.open_tree("orders_by_openid")?,
            stats: db.open_tree("stats")?,
            notifies: db.open_tree("notifies")?,
            notifies_by_order: db.open_tree("notifies_by_order")?,
            write_gate: Default::default(),
            db,
        };
        if meta.get("index_version")?.as_deref() != Some(INDEX_VERSION) {
            store.rebuild_indexes()?;
            meta.insert("index_version", INDEX_VERSION)?;
        }
        store.db.flush()?;
        Ok(store)
    }

    /// Rebuilds every order index and counter from the orders themselves
    /// (after an upgrade that added an index).
    fn rebuild_indexes(&self) -> Result<(), StoreError> {
        for tree in
            [&self.orders_by_time, &self.orders_by_status, &self.orders_by_tx, &self.orders_by_openid, &self.stats]
        {
            tree.clear()?;
        }
        let mut rebuilt = 0u64;
        for entry in self.orders.iter() {
            let (_, bytes) = entry?;
            let order = Order::decode(&bytes)?;
            self.transact(|tx| tx.insert_order(&order))?;
            rebuilt += 1;
        }
        for entry in self.notifies.iter() {
            let (_, bytes) = entry?;
            let record = NotifyRecord::decode(&bytes)?;
            if record.verdict == Verdict::Rejected {
                self.transact(|tx| tx.count_rejected(&record))?;
            }
        }
        if rebuilt > 0 {
            tracing::info!(orders = rebuilt, "order indexes rebuilt");
        }
        Ok(())
    }

    /// Runs `f` as one transaction over every tree. It may run more than
    /// once on a conflict, so it must not have side effects outside `tx`.
    fn transact<R>(&self, f: impl Fn(&Tx) -> TxResult<R>) -> Result<R, StoreError> {
        let _writing = self.write_gate.read().expect("write gate");
        let trees = (
            &self.orders,
            &self.orders_by_time,
            &self.orders_by_status,
            &self.orders_by_tx,
            &self.orders_by_openid,
            &self.stats,
            &self.notifies,
            &self.notifies_by_order,
        );
        let result = trees.transaction(
            |(orders, by_time, by_status, by_tx, by_openid, stats, notifies, notifies_by_order)| {
                f(&Tx { orders, by_time, by_status, by_tx, by_openid, stats, notifies, notifies_by_order })
            },
        )?;
        Ok(result)
    }

    /// A unique, increasing number (survives restarts).
    pub fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    /// Makes every write so far durable. Call before acknowledging anything.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    /// The order with this number.
    pub fn order(&self, out_trade_no: &str) -> Result<Option<Order>, StoreError> {
        match self.orders.get(out_trade_no.as_bytes())? {
            Some(bytes) => Ok(Some(Order::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Inserts `order` unless its number exists. Returns the existing order
    /// (and writes nothing) when it does, so that concurrent creators agree.
    pub fn insert_order(&self, order: &Order) -> Result<Option<Order>, StoreError> {
        self.transact(|tx| match tx.get_order(&order.out_trade_no)? {
            Some(existing) => Ok(Some(existing)),
            None => tx.insert_order(order).map(|()| None),
        })
    }

    /// Changes an order in one transaction, keeping the indexes right.
    /// `change` may run more than once (on a write conflict): it must be pure.
    /// Returns the order as stored, or `None` if there is no such order.
    pub fn update_order(&self, out_trade_no: &str, change: impl Fn(&mut Order)) -> Result<Option<Order>, StoreError> {
        self.transact(|tx| {
            let Some(before) = tx.get_order(out_trade_no)? else { return Ok(None) };
            let mut order = before.clone();
            change(&mut order);
            if order != before {
                tx.put_order(&order, &before)?;
            }
            Ok(Some(order))
        })
    }

    /// Appends a notify to the log and, in the same transaction, lets
    /// `decide` change the order it names. `decide` sees the order (or `None`
    /// if unknown) and returns the verdict, its reason, and anything the
    /// caller wants back; it may run more than once and must be pure.
    /// Returns the record as stored and that value.
    pub fn record_notify<T>(
        &self,
        record: NotifyRecord,
        decide: impl Fn(Option<&mut Order>) -> (Verdict, String, T),
    ) -> Result<(NotifyRecord, T), StoreError> {
        self.transact(|tx| {
            let mut record = record.clone();
            let before = match &record.out_trade_no {
                Some(no) => tx.get_order(no)?,
                None => None,
            };
            let mut order = before.clone();
            let (verdict, reason, value) = decide(order.as_mut());
            record.verdict = verdict;
            record.reason = reason;
            if let (Some(order), Some(before)) = (&order, &before) {
                if order != before {
                    tx.put_order(order, before)?;
                }
            }
            tx.append_notify(&record)?;
            Ok((record, value))
        })
    }

    /// The notify log, newest first, starting after `cursor`.
    pub fn list_notifies(&self, cursor: Option<u64>, limit: usize) -> Result<Page<NotifyRecord>, StoreError> {
        let end = cursor.unwrap_or(u64::MAX).to_be_bytes();
        let mut items = Vec::with_capacity(limit.min(1000));
        for entry in self.notifies.range(..end).rev().take(limit) {
            let (_, bytes) = entry?;
            items.push(NotifyRecord::decode(&bytes)?);
        }
        let next = (items.len() == limit).then(|| items.last().map(|r| r.id.to_string())).flatten();
        Ok(Page { items, next })
    }

    /// Every notify received for an order, oldest first.
    pub fn notifies_for_order(&self, out_trade_no: &str) -> Result<Vec<NotifyRecord>, StoreError> {
        let prefix = tx::prefixed_key(out_trade_no, &[]);
        let mut out = Vec::new();
        for entry in self.notifies_by_order.scan_prefix(&prefix) {
            let (key, _) = entry?;
            if let Some(bytes) = self.notifies.get(&key[prefix.len()..])? {
                out.push(NotifyRecord::decode(&bytes)?);
            }
        }
        Ok(out)
    }

    /// How many orders are stored.
    pub fn order_count(&self) -> usize {
        self.orders.len()
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

    fn order(store: &Store, no: &str, at: i64) -> Order {
        let contents = OrderContents { total_fee: 100, body: "b".into(), attach: "".into(), openid: "o".into() };
        Order::new(no.into(), store.next_id().unwrap(), contents, false, at)
    }

    #[test]
    fn insert_is_first_writer_wins() {
        let (_dir, store) = open();
        let a = order(&store, "ORDER001", 1);
        assert!(store.insert_order(&a).unwrap().is_none());
        let mut b = order(&store, "ORDER001", 2);
        b.total_fee = 5;
        assert_eq!(store.insert_order(&b).unwrap().unwrap().total_fee, 100);
        assert_eq!(store.order("ORDER001").unwrap().unwrap().total_fee, 100);
    }

    #[test]
    fn pages_newest_first_with_status_filter() {
        let (_dir, store) = open();
        for i in 0..25 {
            store.insert_order(&order(&store, &format!("ORDER{i:03}"), 1000 + i)).unwrap();
        }
        for i in (0..25).step_by(5) {
            store.update_order(&format!("ORDER{i:03}"), |o| o.status = OrderStatus::Paid).unwrap();
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
    }

    #[test]
    fn mode_marker_refuses_the_other_mode() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), Mode::Sandbox).unwrap());
        let err = Store::open(dir.path(), Mode::Live).err().unwrap();
        assert!(err.to_string().contains("sandbox data"), "{err}");
    }

    #[test]
    fn notify_log_and_order_change_in_one_transaction() {
        let (_dir, store) = open();
        store.insert_order(&order(&store, "ORDER001", 1)).unwrap();
        let rec = |id| NotifyRecord {
            id,
            received_at: 5,
            peer: None,
            raw: b"<xml/>".to_vec(),
            out_trade_no: Some("ORDER001".into()),
            transaction_id: None,
            verdict: Verdict::Rejected,
            reason: String::new(),
            sandbox: false,
        };
        let stored = store
            .record_notify(rec(store.next_id().unwrap()), |o| {
                o.unwrap().status = OrderStatus::Paid;
                (Verdict::Paid, "ok".into(), ())
            })
            .unwrap()
            .0;
        assert_eq!(stored.verdict, Verdict::Paid);
        store.record_notify(rec(store.next_id().unwrap()), |_| (Verdict::Duplicate, "dup".into(), ())).unwrap();
        assert_eq!(store.order("ORDER001").unwrap().unwrap().status, OrderStatus::Paid);
        assert_eq!(store.list_orders(&OrderFilter::status(OrderStatus::Paid), None, 10).unwrap().items.len(), 1);
        assert_eq!(store.list_orders(&OrderFilter::status(OrderStatus::Created), None, 10).unwrap().items.len(), 0);
        let log = store.notifies_for_order("ORDER001").unwrap();
        assert_eq!(log.iter().map(|r| r.verdict).collect::<Vec<_>>(), [Verdict::Paid, Verdict::Duplicate]);
        let page = store.list_notifies(None, 1).unwrap();
        assert_eq!(page.items[0].verdict, Verdict::Duplicate);
        let older = store.list_notifies(page.next.map(|c| c.parse().unwrap()), 1).unwrap();
        assert_eq!(older.items[0].verdict, Verdict::Paid);
    }
}
