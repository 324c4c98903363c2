//! The archive: orders that ended long ago, moved out of the hot store
//! (sled) into append-only, compressed, checksummed files, so the hot
//! store's size, start-up and memory do not grow with years of history.
//!
//! # What moves, and when
//! An order that *ended* more than `[storage] archive_after_days` ago
//! (default 400, at least 366: WeChat takes refunds for a year after the
//! payment): CLOSED, or paid (PAID, PARTIALLY_REFUNDED, REFUNDED) with no
//! refund still being processed and no webhook still to deliver, whose
//! last change (the order's, its refunds') is older than that. It moves
//! with its notify log entries, refunds and finished webhook deliveries;
//! its index entries, its platform's id for it and its change-feed entries
//! go with it. The per-day counters and the daily bills stay in the hot
//! store: the overview and the reconciliation views read only those.
//!
//! # Files
//! `<data_dir>/archive/YYYY-MM.pba`, one per Beijing month of the orders'
//! creation: frames appended one after another (`frame.rs`: a batch of
//! orders, DEFLATE-compressed, with a SHA-256), each order as its record
//! kinds encode it (`entry.rs`). Beside it `YYYY-MM.idx` (`index.rs`):
//! every order's frame, sorted by number, the file's committed length, and
//! its own SHA-256.
//!
//! # Moving, crash-safe (`mover.rs`)
//! For a batch of one month's orders: append a frame after the committed
//! length and `fsync` it; write the new index to a temporary file, `fsync`,
//! rename it over the old one, `fsync` the folder; only then delete the
//! orders from sled through the writer (each order in one transaction,
//! durable before the next step, and only if it did not change since it
//! was read). Whatever is killed when:
//! - before the index is renamed: the frame lies beyond the committed
//!   length and counts for nothing (the next move cuts it off); the orders
//!   are still in the hot store;
//! - after the rename, before the delete: the order is in both. Readers
//!   look in the hot store first, so it is shown once; the next move
//!   appends it again and the index then points at the newer frame (only
//!   frames the index points to count).
//!
//! So an order is in the hot store or the archive, never lost, never shown
//! twice. `paybridge archive verify` checks every file (`verify.rs`).
//!
//! # Reading
//! [`Archive::find`] looks an order up by number: for each month, newest
//! first, a binary search of the index (a few reads), then the one frame,
//! checked. [`Archive::created_in`] reads the orders of a date range (the
//! CSV export). The archive is read-only: nothing changes an archived order.

mod entry;
mod frame;
mod index;
mod month;
mod mover;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use entry::ArchivedOrder;
pub use mover::{is_ended, MoveReport};
pub use verify::{FileReport, VerifyReport};

use super::{Order, Store, StoreError};

/// The archive's folder in the data directory.
pub const ARCHIVE_DIR: &str = "archive";

/// The default of `[storage] archive_after_days`.
pub const DEFAULT_AFTER_DAYS: u32 = 400;

/// The least `[storage] archive_after_days` may be: WeChat accepts refunds
/// for a year after the payment, and an archived order takes none.
pub const MIN_AFTER_DAYS: u32 = 366;

/// Why the archive could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A file could not be read or written.
    #[error("archive file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file's content is wrong (a checksum, a record that does not decode).
    #[error("archive file {path} is damaged at byte {offset}: {what}")]
    Damaged {
        /// The file.
        path: String,
        /// Where.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// The hot store failed while orders were read from it or removed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The archive of one data directory; cheap to clone. Moves are one at a
/// time (the daily schedule and `paybridge archive run` may ask together).
#[derive(Clone)]
pub struct Archive {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    moving: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive").field("dir", &self.inner.dir).finish()
    }
}

/// The Beijing month (`YYYY-MM`) of a unix-ms time: an order's month file.
pub fn month_of(ms: i64) -> String {
    let mut day = crate::clock::day_string(crate::clock::beijing_day(ms));
    day.truncate(7);
    day
}

impl Archive {
    /// The archive in `data_dir` (its folder is made on the first move).
    pub fn new(data_dir: &Path) -> Archive {
        Archive { inner: Arc::new(Inner { dir: data_dir.join(ARCHIVE_DIR), moving: tokio::sync::Mutex::new(()) }) }
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The months that have files, oldest first.
    pub fn months(&self) -> Result<Vec<String>, ArchiveError> {
        let entries = match std::fs::read_dir(self.dir()) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(ArchiveError::Io { path: self.dir().display().to_string(), source }),
        };
        let mut months: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let stem = name.strip_suffix(".pba").or_else(|| name.strip_suffix(".idx"))?;
                is_month(stem).then(|| stem.to_owned())
            })
            .collect();
        months.sort();
        months.dedup();
        Ok(months)
    }

    fn month(&self, name: &str) -> month::Month {
        month::Month::new(self.dir(), name)
    }

    /// The order with this number, wherever it is: the hot store first (an
    /// order in both, from a move stopped between its two steps, is the hot
    /// one: shown once), else the archive. Blocking reads.
    pub fn lookup(&self, store: &Store, out_trade_no: &str) -> Result<Option<Found>, ArchiveError> {
        if let Some(order) = store.order(out_trade_no)? {
            return Ok(Some(Found::Hot(Box::new(order))));
        }
        Ok(self.find(out_trade_no)?.map(|a| Found::Archived(Box::new(a))))
    }

    /// The archived order with this number, newest month first. Blocking
    /// file reads: call it off the async threads.
    pub fn find(&self, out_trade_no: &str) -> Result<Option<ArchivedOrder>, ArchiveError> {
        let Some(key) = index::key_of(out_trade_no) else { return Ok(None) };
        for name in self.months()?.iter().rev() {
            if let Some(found) = self.month(name).find(&key)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The archived orders created in `[from_ms, to_ms)`, oldest month
    /// first, at most `limit`. Blocking file reads.
    pub fn created_in(&self, from_ms: i64, to_ms: i64, limit: usize) -> Result<Vec<ArchivedOrder>, ArchiveError> {
        // Years 1970 to 3000: what a calendar month here can name.
        let clamp = |ms: i64| ms.clamp(0, 32_503_680_000_000);
        let (first, last) = (month_of(clamp(from_ms)), month_of(clamp(to_ms.saturating_sub(1))));
        let mut out = Vec::new();
        for name in self.months()?.into_iter().filter(|m| *m >= first && *m <= last) {
            if out.len() >= limit {
                break;
            }
            let mut orders = self.month(&name).created_in(from_ms, to_ms)?;
            orders.sort_by_key(|o| (o.order.created_at, o.order.seq));
            out.extend(orders.into_iter().take(limit - out.len()));
        }
        Ok(out)
    }
}

/// Where an order was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// In the hot store: it may still change.
    Hot(Box<Order>),
    /// In the archive: read-only.
    Archived(Box<ArchivedOrder>),
}

impl Found {
    /// The order, wherever it was.
    pub fn order(&self) -> &Order {
        match self {
            Found::Hot(order) => order,
            Found::Archived(archived) => &archived.order,
        }
    }
}

impl Archive {
    /// Waits until no move runs and keeps moves out while the guard lives
    /// (a backup: the hot store and the archive at one point in time).
    pub(super) async fn hold(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.moving.lock().await
    }

    /// Every archive file a backup copies, by file name: a month file up
    /// to the length its index commits, and its index. A month without a
    /// readable index is copied whole (what is there is what a restore
    /// gets). Only the indexes are read here (a month's is small); the
    /// month files are read by [`Committed::copy`], so a backup never holds
    /// years of archive in memory. Blocking reads.
    pub(super) fn committed_files(&self) -> Result<Vec<Committed>, ArchiveError> {
        let mut files = Vec::new();
        for name in self.months()? {
            let month = self.month(&name);
            let io = |path: &Path| {
                let path = path.display().to_string();
                move |source| ArchiveError::Io { path, source }
            };
            let index = match std::fs::read(&month.idx) {
                Ok(bytes) => Some(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(io(&month.idx)(e)),
            };
            let on_disk = match std::fs::metadata(&month.pba) {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                Err(e) => return Err(io(&month.pba)(e)),
            };
            let covered = index.as_deref().and_then(|b| index::Index::decode(b).ok()).map(|i| i.covered);
            let len = covered.map_or(on_disk, |covered| covered.min(on_disk));
            files.push(Committed { name: format!("{name}.pba"), body: Body::Prefix(month.pba.clone(), len) });
            if let Some(index) = index {
                files.push(Committed { name: format!("{name}.idx"), body: Body::Bytes(index) });
            }
        }
        Ok(files)
    }
}

/// One archive file as a backup copies it.
pub(super) struct Committed {
    /// Its file name (`YYYY-MM.pba` or `.idx`).
    pub name: String,
    body: Body,
}

enum Body {
    /// Read already (an index).
    Bytes(Vec<u8>),
    /// The first bytes of a file: a month file is only appended to, and no
    /// move runs while a backup holds the archive, so they do not change.
    Prefix(PathBuf, u64),
}

impl Committed {
    /// How many bytes [`Committed::copy`] writes.
    pub fn len(&self) -> u64 {
        match &self.body {
            Body::Bytes(bytes) => bytes.len() as u64,
            Body::Prefix(_, len) => *len,
        }
    }

    /// Writes the file's committed bytes to `out`, a buffer at a time.
    pub fn copy(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        match &self.body {
            Body::Bytes(bytes) => out.write_all(bytes),
            // A month whose file is missing (its index alone is left) is
            // empty, as it was read before: nothing to open.
            Body::Prefix(_, 0) => Ok(()),
            Body::Prefix(path, len) => {
                let file = std::fs::File::open(path)?;
                let copied = std::io::copy(&mut std::io::Read::take(file, *len), out)?;
                if copied != *len {
                    let message =
                        format!("{} is shorter than its index says ({copied} of {len} bytes)", path.display());
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, message));
                }
                Ok(())
            }
        }
    }
}

/// Whether `name` is an archive file's name (`YYYY-MM.pba` or `.idx`):
/// SECURITY: a restore writes only such names, never a path a crafted
/// backup makes up.
pub fn is_file_name(name: &str) -> bool {
    name.strip_suffix(".pba").or_else(|| name.strip_suffix(".idx")).is_some_and(is_month)
}

/// Whether `name` looks like `YYYY-MM`.
fn is_month(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 7 && b[4] == b'-' && b.iter().enumerate().all(|(i, c)| i == 4 || c.is_ascii_digit())
}

#[cfg(test)]
mod tests;
