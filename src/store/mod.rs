//! Storage in sled: orders, the notify log, and the indexes that page them.
//!
//! # Layout
//! | tree | key | value |
//! |---|---|---|
//! | `orders` | out_trade_no | [`Order`] |
//! | `orders_by_time` | created_ms (8, BE) ‖ seq (8, BE) | out_trade_no |
//! | `orders_by_status` | status (1) ‖ created_ms ‖ seq | empty (the number: `orders_by_time`) |
//! | `orders_by_tx` | transaction_id | out_trade_no |
//! | `orders_by_openid` | openid ‖ 0x00 ‖ created_ms ‖ seq | empty (as above) |
//! | `orders_due` | queue (1) ‖ due_ms (8, BE) ‖ out_trade_no | empty ([`schedule`]: the lifecycle's work) |
//! | `stats` | `s` ‖ status / `d` ‖ day / `r` ‖ day / `n` / `i` | orders per status / paid count and fen / rejected notifies / the notify log's size / the id floor |
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
//!
//! # On disk
//! sled's files live in `<data_dir>/store/`, its pages compressed with zstd
//! (format 2). A data directory of an earlier release (sled's files at its
//! top, uncompressed) is copied into this format the first time it is
//! opened (`migrate.rs`). sled's id generator is kept above every id in use
//! by a floor in `stats` (`trees::NEXT_ID`), so that restored and copied
//! stores never hand out an id twice.
//!
//! # Files
//! This file holds [`Store`], its errors and options, and the glue between
//! callers and the writer. Then, one concept each: `trees.rs` (the trees and
//! the transaction over them), `open.rs` (opening the directory, the mode
//! marker, index versions and rebuilds), `migrate.rs` (an earlier format
//! copied into this one), `footprint.rs` (what each tree holds), `write.rs` (order and notify
//! writes), `query.rs` (reads), `prune.rs` (what is forgotten: old
//! notifies, nonces, bill files), `tx.rs` (keys and index upkeep inside a
//! transaction), `writer.rs` (the writer thread); and a file per record
//! kind: [`order`], [`notify`], [`refund`], [`platform`], [`bill`],
//! [`certificates`], with [`schedule`], [`backup`] and [`codec`]; and
//! [`archive`]: ended orders moved out of sled into files of their own.

pub mod archive;
pub mod backup;
pub mod bill;
pub mod certificates;
pub mod codec;
mod footprint;
mod migrate;
pub mod notify;
mod open;
pub mod order;
pub mod platform;
mod prune;
mod query;
pub mod refund;
pub mod schedule;
mod trees;
mod tx;
mod write;
mod writer;

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use sled::transaction::TransactionError;

pub use certificates::StoredCertificate;
pub use footprint::TreeFootprint;
pub use notify::{NotifyRecord, NotifySource, Verdict};
pub use open::{holds_data, PID_FILE};
pub use order::{Order, OrderContents, OrderEvent, OrderSource, OrderStatus, Payment, PaymentOutcome, Prepay};
pub use platform::{Created, Delivery, DeliveryState, EventKind, RefundEvent};
pub use prune::Retention;
pub use query::{DayTotal, OrderFilter};
pub use refund::{Refund, RefundCreated, RefundStatus};
pub use tx::{beijing_day, beijing_day_start, day_string, parse_day, MAX_NOTIFY_BYTES};
pub use writer::WriterStats;

use codec::CodecError;
pub(crate) use trees::Trees;
use tx::{Tx, TxResult};
use writer::Writer;

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
    /// A backup could not be written (where it goes, or the archive's
    /// files it copies); the store itself is unharmed.
    #[error("cannot write the backup: {0}")]
    Backup(std::io::Error),
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

/// One page of a newest-first listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items, newest first.
    pub items: Vec<T>,
    /// Pass this back to get the next (older) page; `None` at the end.
    pub next: Option<String>,
}

/// The bytes a write is counted as when it carries no large payload.
const SMALL_WRITE: usize = 1024;

impl Store {
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

#[cfg(test)]
mod testing;
