//! The one writer: a dedicated thread that owns every mutation of the store.
//!
//! Callers hand it a [`Change`] over a bounded channel and wait on a oneshot,
//! never on a lock. The thread takes whatever has queued up (a batch, bounded
//! in count and bytes), applies the whole batch as one sled transaction, then
//! makes it durable once: `Db::flush()` and an `fdatasync` of sled's data
//! file. Only then is any caller in the batch answered. While one batch syncs
//! the next one queues, so one sync covers many acknowledgements under load
//! (group commit, as PostgreSQL's WAL flush does) and a lone caller pays one
//! write and one sync.
//!
//! One transaction per batch rather than per change: every sled transaction
//! writes sled's log buffer out (a `pwrite` and a `sync_file_range` on sled's
//! I/O threads), which the profile showed costing more than the changes
//! themselves. If the batch's transaction aborts (a record that does not
//! decode), each change is applied again in a transaction of its own, so a
//! bad change fails only its own caller.
//!
//! Why not sled's own `flush_async` on the request path: sled 0.34 deadlocks
//! when transactions and `flush_async` run on many threads at once (sled
//! issues #1308 and #1412), and its log writes are only `sync_file_range`d,
//! which neither flushes the drive's cache nor the file's metadata. Here only
//! this thread writes, and durability means `fdatasync` returned.
//!
//! A full queue is refused at once ([`StoreError::Busy`]); a failed write or
//! sync fails the callers of that batch ([`StoreError::Unavailable`]) and the
//! thread goes on, so the process keeps serving. sled 0.34 refuses every
//! operation after one I/O error (its "global error"), so after a failed
//! batch the writer closes the database and opens it again, at most once a
//! second, until that works: when space returns, writes succeed again.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use super::trees::{raised_floor, NEXT_ID};
use super::tx::{read_u64, Tx, TxResult};
use super::{StoreError, StoreOptions, Trees};
use crate::domain::Mode;

/// The most jobs one sync covers.
const MAX_BATCH_JOBS: usize = 1024;
/// The most bytes (as estimated by the callers) one batch carries.
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// How long between two attempts to reopen a failed database.
const REOPEN_EVERY: Duration = Duration::from_secs(1);
/// How long a reopen waits for readers to let go of the failed database.
const READERS_WAIT: Duration = Duration::from_secs(5);

/// One caller's change to the store, applied on the writer thread.
pub(super) trait Change: Send {
    /// Applies the change inside `tx`; `id` is unique to this change (for a
    /// new order's sequence number or a notify's id: sled's `generate_id`
    /// cannot run inside a transaction). It may run more than once (sled may
    /// retry; an aborted batch is applied again change by change), so it
    /// keeps only the outcome of its last run.
    fn apply(&mut self, tx: &Tx, id: u64) -> TxResult<()>;
    /// The transaction this change was last applied in failed.
    fn failed(&mut self, error: StoreError);
    /// Answers the caller: the outcome of the last run if the batch is
    /// durable, [`StoreError::Unavailable`] otherwise.
    fn answer(self: Box<Self>, durable: bool);
}

/// Work that needs the whole database at one point in time (a backup): it
/// runs between two batches, with `None` while the database is closed.
pub(super) type Exclusive = Box<dyn FnOnce(Option<&Trees>) + Send>;

/// What the writer needs to open the database again after a failure.
pub(super) struct Reopen {
    pub dir: std::path::PathBuf,
    pub mode: Mode,
    pub options: StoreOptions,
}

enum Message {
    Write {
        change: Box<dyn Change>,
        bytes: usize,
        queued_at: Instant,
    },
    Exclusive(Exclusive),
    /// Finish what is queued, sync, answer, and stop.
    Stop(tokio::sync::oneshot::Sender<()>),
}

/// What the rest of the process can see of the writer, without waiting on it.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Jobs handed over and not yet answered.
    pending: AtomicUsize,
    /// When the oldest job of the batch in progress was queued, as ms since
    /// [`WriterStats::epoch`]; 0 while the writer is idle.
    busy_since_ms: AtomicU64,
    /// Batches made durable (each is one `fdatasync`).
    syncs: AtomicU64,
    /// Jobs acknowledged after a successful sync.
    acknowledged: AtomicU64,
    /// Jobs refused because the queue was full.
    refused_busy: AtomicU64,
    /// Jobs failed by a write or sync error.
    failed: AtomicU64,
    /// Whether the last batch failed (so an episode is logged once).
    failing: AtomicBool,
    epoch: std::sync::OnceLock<Instant>,
}

impl WriterStats {
    fn now_ms(&self) -> u64 {
        let epoch = *self.epoch.get_or_init(Instant::now);
        // Never 0, which means idle.
        epoch.elapsed().as_millis() as u64 + 1
    }

    /// How long the writer has been working on its current batch (`None` when idle).
    pub fn busy_for(&self) -> Option<Duration> {
        match self.busy_since_ms.load(Ordering::Acquire) {
            0 => None,
            since => Some(Duration::from_millis(self.now_ms().saturating_sub(since))),
        }
    }

    /// Writes waiting for an answer.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// `fdatasync`s done so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Writes acknowledged as durable so far.
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::Relaxed)
    }

    /// Writes refused because the queue was full.
    pub fn refused_busy(&self) -> u64 {
        self.refused_busy.load(Ordering::Relaxed)
    }

    /// Writes failed by a storage error.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Whether the last batch failed to reach the disk.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }
}

/// The sending side, shared by every clone of the store. Dropping the last
/// one lets the thread finish, sync and close the database.
pub(super) struct Writer {
    queue: Option<SyncSender<Message>>,
    pub(super) stats: Arc<WriterStats>,
    /// Disconnects when the thread has ended (and released the database).
    /// (In a mutex only because a `Receiver` is not `Sync`; taken once, on drop.)
    exited: std::sync::Mutex<Receiver<()>>,
}

/// How long dropping the store waits for the writer to finish its queue.
const DROP_WAIT: Duration = Duration::from_secs(5);

impl Drop for Writer {
    fn drop(&mut self) {
        self.queue.take();
        // Bounded: a writer stuck on a dead disk must not hang the caller.
        if let Ok(exited) = self.exited.get_mut() {
            let _ = exited.recv_timeout(DROP_WAIT);
        }
    }
}

impl Writer {
    /// Starts the writer thread for the database in `slot`; at most
    /// `options.max_pending_writes` jobs wait.
    pub(super) fn start(slot: Arc<ArcSwapOption<Trees>>, reopen: Reopen) -> std::io::Result<Writer> {
        let (queue, jobs) = mpsc::sync_channel(reopen.options.max_pending_writes.max(1));
        let stats = Arc::new(WriterStats::default());
        stats.now_ms(); // fix the epoch
        let thread_stats = stats.clone();
        let (exit, exited) = mpsc::channel();
        std::thread::Builder::new().name("store-writer".into()).spawn(move || {
            run(&slot, &reopen, &jobs, &thread_stats);
            drop(exit);
        })?;
        Ok(Writer { queue: Some(queue), stats, exited: exited.into() })
    }

    /// Queues `change` (about `bytes` large). Refused at once when the queue
    /// is full or the writer has stopped: callers never wait for room.
    pub(super) fn submit(&self, change: Box<dyn Change>, bytes: usize) -> Result<(), StoreError> {
        self.send(Message::Write { change, bytes, queued_at: Instant::now() })
    }

    /// Queues work that runs alone between two batches.
    pub(super) fn submit_exclusive(&self, work: Exclusive) -> Result<(), StoreError> {
        self.send(Message::Exclusive(work))
    }

    fn send(&self, message: Message) -> Result<(), StoreError> {
        self.stats.pending.fetch_add(1, Ordering::Relaxed);
        let queue = self.queue.as_ref().expect("present until dropped");
        match queue.try_send(message) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.stats.pending.fetch_sub(1, Ordering::Relaxed);
                match e {
                    TrySendError::Full(_) => {
                        self.stats.refused_busy.fetch_add(1, Ordering::Relaxed);
                        Err(StoreError::Busy)
                    }
                    TrySendError::Disconnected(_) => Err(StoreError::Stopped),
                }
            }
        }
    }

    /// Asks the writer to finish what is queued, sync and stop; waits at most
    /// `timeout` (a writer stuck on a dead disk must not hold up the exit).
    pub(super) async fn stop(&self, timeout: Duration) -> bool {
        let (done, finished) = tokio::sync::oneshot::channel();
        let queue = self.queue.clone().expect("present until dropped");
        // The queue may be full: wait for room off the async threads.
        let sent = tokio::task::spawn_blocking(move || queue.send(Message::Stop(done)).is_ok());
        tokio::time::timeout(timeout, async move { sent.await.unwrap_or(false) && finished.await.is_ok() })
            .await
            .unwrap_or(false)
    }
}

/// The writer thread's loop: batch, apply, sync, answer.
fn run(slot: &ArcSwapOption<Trees>, reopen: &Reopen, jobs: &Receiver<Message>, stats: &WriterStats) {
    let mut stop = None;
    let mut last_reopen: Option<Instant> = None;
    let mut needs_reopen = false;
    while stop.is_none() {
        // While failed, wake up on a timer too: with the database closed,
        // reads fail and no write may come to trigger the reopen.
        let received = match needs_reopen {
            false => jobs.recv().map_err(|_| RecvTimeoutError::Disconnected),
            true => jobs.recv_timeout(REOPEN_EVERY),
        };
        if needs_reopen && last_reopen.is_none_or(|at| at.elapsed() >= REOPEN_EVERY) {
            last_reopen = Some(Instant::now());
            needs_reopen = !try_reopen(slot, reopen);
        }
        let first = match received {
            Ok(first) => first,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = Vec::new();
        let mut exclusive = None;
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Write { change, bytes: size, queued_at } => {
                    if batch.is_empty() {
                        let age = queued_at.elapsed().as_millis() as u64;
                        stats.busy_since_ms.store(stats.now_ms().saturating_sub(age).max(1), Ordering::Release);
                    }
                    batch.push(change);
                    bytes += size;
                }
                Message::Exclusive(work) => {
                    exclusive = Some(work);
                    break;
                }
                Message::Stop(done) => {
                    stop = Some(done);
                    break;
                }
            }
            if batch.len() >= MAX_BATCH_JOBS || bytes >= MAX_BATCH_BYTES {
                break;
            }
            next = jobs.try_recv().ok();
        }
        let trees = slot.load_full();
        if !batch.is_empty() {
            let durable = match &trees {
                Some(trees) => {
                    apply(trees, &mut batch);
                    trees.sync()
                }
                None => Err(StoreError::Unavailable),
            };
            // Done with the disk: a caller that hears back sees the writer idle.
            stats.busy_since_ms.store(0, Ordering::Release);
            needs_reopen |= !finish_batch(batch, durable, stats);
        }
        if let Some(work) = exclusive {
            work(trees.as_deref());
            stats.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }
    // Nothing new is taken after a stop; make sure what is in sled is on disk.
    if let Some(trees) = slot.load_full() {
        if let Err(e) = trees.sync() {
            tracing::error!(error = %e, "final sync failed");
        }
    }
    // Once the last reader lets go too, sled closes and unlocks the directory.
    slot.store(None);
    if let Some(done) = stop {
        let _ = done.send(());
    }
}

/// Applies a batch as one transaction; if that fails, each change alone.
fn apply(trees: &Trees, batch: &mut [Box<dyn Change>]) {
    let ids = match batch.iter().map(|_| trees.next_id()).collect::<Result<Vec<u64>, _>>() {
        Ok(ids) => ids,
        Err(e) => {
            batch.iter_mut().for_each(|change| change.failed(StoreError::Sled(e.clone())));
            return;
        }
    };
    let highest = ids.iter().copied().max().unwrap_or(0);
    let record_floor = |tx: &Tx| -> TxResult<()> {
        if let Some(floor) = raised_floor(read_u64(tx.stats.get(NEXT_ID)?.as_deref(), 0), highest) {
            tx.stats.insert(NEXT_ID, &floor.to_be_bytes()[..])?;
        }
        Ok(())
    };
    let batch = std::cell::RefCell::new(batch);
    let together = trees.transact(|tx| {
        for (change, id) in batch.borrow_mut().iter_mut().zip(&ids) {
            change.apply(tx, *id)?;
        }
        record_floor(tx)
    });
    if together.is_ok() {
        return;
    }
    for (change, id) in batch.into_inner().iter_mut().zip(ids) {
        let change = std::cell::RefCell::new(change);
        let apply = |tx: &Tx| {
            change.borrow_mut().apply(tx, id)?;
            record_floor(tx)
        };
        if let Err(e) = trees.transact(apply) {
            change.into_inner().failed(e);
        }
    }
}

/// Closes the failed database and opens it again. sled allows one open
/// handle per directory, so the readers must have let go of the old one
/// first; they hold it for one request at most.
fn try_reopen(slot: &ArcSwapOption<Trees>, reopen: &Reopen) -> bool {
    if let Some(old) = slot.swap(None) {
        let deadline = Instant::now() + READERS_WAIT;
        while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if Arc::strong_count(&old) > 1 {
            tracing::warn!("readers still hold the failed database; reopening later");
            slot.store(Some(old));
            return false;
        }
    }
    match Trees::open(&reopen.dir, reopen.mode, reopen.options) {
        Ok(trees) => {
            tracing::warn!("database reopened after a storage failure");
            slot.store(Some(Arc::new(trees)));
            true
        }
        Err(e) => {
            tracing::debug!(error = %e, "database cannot be reopened yet");
            false
        }
    }
}

/// Answers every caller of a batch: their own result if the batch is on
/// disk, `Unavailable` otherwise. Returns whether it was on disk.
fn finish_batch(batch: Vec<Box<dyn Change>>, synced: Result<(), StoreError>, stats: &WriterStats) -> bool {
    let count = batch.len();
    match &synced {
        Ok(()) => {
            stats.syncs.fetch_add(1, Ordering::Relaxed);
            stats.acknowledged.fetch_add(count as u64, Ordering::Relaxed);
            if stats.failing.swap(false, Ordering::Relaxed) {
                tracing::warn!("storage writes succeed again");
            }
        }
        Err(e) => {
            stats.failed.fetch_add(count as u64, Ordering::Relaxed);
            if !stats.failing.swap(true, Ordering::Relaxed) {
                tracing::error!(error = %e, writes = count, "storage sync failed; failing writes until it works again");
            }
        }
    }
    // Counted as done before the callers hear of it: a caller that looks at
    // the figures after its answer sees its own write finished.
    stats.pending.fetch_sub(count, Ordering::Relaxed);
    for change in batch {
        change.answer(synced.is_ok());
    }
    synced.is_ok()
}

/// The file sled 0.34 keeps its log and pages in; `fdatasync` on it is what
/// makes a batch durable (sled's own syncs are `sync_file_range`).
pub(super) fn open_data_file(dir: &Path) -> std::io::Result<File> {
    File::open(dir.join("db"))
}

#[cfg(test)]
mod tests {
    use crate::domain::Mode;
    use crate::store::testing::{open, order};
    use crate::store::{Store, StoreError, StoreOptions};

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
