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
//! thread goes on, so the process keeps serving and recovers when the disk does.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{StoreError, Trees};

/// The most jobs one sync covers.
const MAX_BATCH_JOBS: usize = 1024;
/// The most bytes (as estimated by the callers) one batch carries.
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// What a job tells its caller once the batch's sync is known.
pub(super) type Answer = Box<dyn FnOnce(Result<(), &str>) + Send>;
/// A mutation: runs on the writer thread, returns how to answer its caller.
pub(super) type Job = Box<dyn FnOnce(&Trees) -> Answer + Send>;

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
    /// Starts the writer thread for `trees`; at most `capacity` jobs wait.
    pub(super) fn start(trees: Arc<Trees>, capacity: usize) -> std::io::Result<Writer> {
        let (queue, jobs) = mpsc::sync_channel(capacity.max(1));
        let stats = Arc::new(WriterStats::default());
        stats.now_ms(); // fix the epoch
        let thread_stats = stats.clone();
        let (exit, exited) = mpsc::channel();
        std::thread::Builder::new().name("store-writer".into()).spawn(move || {
            run(trees, &jobs, &thread_stats);
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
fn run(trees: Arc<Trees>, jobs: &Receiver<Message>, stats: &WriterStats) {
    let mut stop = None;
    while stop.is_none() {
        let Ok(first) = jobs.recv() else { break };
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
                    answers.push(job(&trees));
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
            next = match jobs.try_recv() {
                Ok(message) => Some(message),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
            };
        }
        let synced = trees.sync();
        finish_batch(answers, synced, stats);
        stats.busy_since_ms.store(0, Ordering::Release);
    }
    // Nothing new is taken after a stop; make sure what is in sled is on disk.
    if let Err(e) = trees.sync() {
        tracing::error!(error = %e, "final sync failed");
    }
    // Once the last reader lets go too, sled closes and unlocks the directory.
    drop(trees);
    if let Some(done) = stop {
        let _ = done.send(());
    }
}

/// Answers every caller of a batch: their own result if the batch is on
/// disk, the sync error otherwise.
fn finish_batch(answers: Vec<Answer>, synced: Result<(), StoreError>, stats: &WriterStats) {
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
    let message = synced.as_ref().err().map(ToString::to_string);
    for answer in answers {
        answer(match &message {
            None => Ok(()),
            Some(m) => Err(m),
        });
    }
    stats.pending.fetch_sub(count, Ordering::Relaxed);
}

/// The file sled 0.34 keeps its log and pages in; `fdatasync` on it is what
/// makes a batch durable (sled's own syncs are `sync_file_range`).
pub(super) fn open_data_file(dir: &Path) -> std::io::Result<File> {
    File::open(dir.join("db"))
}
