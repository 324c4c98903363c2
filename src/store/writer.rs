//! The one writer: a dedicated thread that owns every mutation of the store.
//!
//! Callers hand it a job over a bounded channel and wait on a oneshot, never
//! on a lock. The thread takes whatever has queued up (a batch, bounded in
//! count and bytes), applies each job as its own sled transaction, then makes
//! the whole batch durable once: `Db::flush()` and an `fdatasync` of sled's
//! data file. Only then is any caller in the batch answered. While one batch
//! syncs the next one queues, so one sync covers many acknowledgements under
//! load (group commit, as PostgreSQL's WAL flush does) and a lone caller pays
//! one write and one sync.
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

use super::{StoreError, StoreOptions, Trees};
use crate::config::Mode;

/// The most jobs one sync covers.
const MAX_BATCH_JOBS: usize = 1024;
/// The most bytes (as estimated by the callers) one batch carries.
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// How long between two attempts to reopen a failed database.
const REOPEN_EVERY: Duration = Duration::from_secs(1);
/// How long a reopen waits for readers to let go of the failed database.
const READERS_WAIT: Duration = Duration::from_secs(5);

/// What a job tells its caller once it is known whether its batch is on disk.
pub(super) type Answer = Box<dyn FnOnce(bool) + Send>;
/// A mutation: runs on the writer thread (with `None` while the database is
/// closed after a failure), returns how to answer its caller.
pub(super) type Job = Box<dyn FnOnce(Option<&Trees>) -> Answer + Send>;

/// What the writer needs to open the database again after a failure.
pub(super) struct Reopen {
    pub dir: std::path::PathBuf,
    pub mode: Mode,
    pub options: StoreOptions,
}

enum Message {
    Write {
        job: Job,
        bytes: usize,
        queued_at: Instant,
    },
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
const DROP_WAIT: Duration = Duration::from_secs(30);

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

    /// Queues `job` (about `bytes` large). Refused at once when the queue is
    /// full or the writer has stopped: callers never wait for room.
    pub(super) fn submit(&self, job: Job, bytes: usize) -> Result<(), StoreError> {
        self.stats.pending.fetch_add(1, Ordering::Relaxed);
        let queue = self.queue.as_ref().expect("present until dropped");
        match queue.try_send(Message::Write { job, bytes, queued_at: Instant::now() }) {
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
        let trees = slot.load_full();
        let mut answers = Vec::new();
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Write { job, bytes: size, queued_at } => {
                    if answers.is_empty() {
                        let age = queued_at.elapsed().as_millis() as u64;
                        stats.busy_since_ms.store(stats.now_ms().saturating_sub(age).max(1), Ordering::Release);
                    }
                    answers.push(job(trees.as_deref()));
                    bytes += size;
                }
                Message::Stop(done) => {
                    stop = Some(done);
                    break;
                }
            }
            if answers.len() >= MAX_BATCH_JOBS || bytes >= MAX_BATCH_BYTES {
                break;
            }
            next = jobs.try_recv().ok();
        }
        let synced = match &trees {
            Some(trees) => trees.sync(),
            None => Err(StoreError::Unavailable),
        };
        needs_reopen |= !finish_batch(answers, synced, stats);
        stats.busy_since_ms.store(0, Ordering::Release);
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
fn finish_batch(answers: Vec<Answer>, synced: Result<(), StoreError>, stats: &WriterStats) -> bool {
    let count = answers.len();
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
    for answer in answers {
        answer(synced.is_ok());
    }
    stats.pending.fetch_sub(count, Ordering::Relaxed);
    synced.is_ok()
}

/// The file sled 0.34 keeps its log and pages in; `fdatasync` on it is what
/// makes a batch durable (sled's own syncs are `sync_file_range`).
pub(super) fn open_data_file(dir: &Path) -> std::io::Result<File> {
    File::open(dir.join("db"))
}
