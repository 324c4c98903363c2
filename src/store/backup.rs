//! Backups: a consistent copy of every tree, written while the server runs,
//! and restored into an empty data directory.
//!
//! Format: `PAYBRIDGE-BACKUP` and a version byte, then for each tree its name
//! and its entries (length-prefixed, big-endian), then (version 2) the
//! archive's files, each its name and its bytes (length 8 bytes), then a
//! SHA-256 of all that. Version 1 backups (no archive) still restore.
//! The copy of the trees is taken on the writer thread, so it is one point
//! in time: writes queue meanwhile (and are refused with 503 once the queue
//! is full); no move to the archive runs from before it until the archive's
//! files are read, so an order is in one or the other.
//!
//! A backup is written as it is read, to a file (or whatever `Write` it is
//! given): a store of millions of orders and years of archive never passes
//! through memory. [`KeepFree`] keeps it from taking the last of a disk.

use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::archive::{self, Archive};
use super::{Store, StoreError};

const MAGIC: &[u8] = b"PAYBRIDGE-BACKUP";
/// Version 2 added the archive's files.
const VERSION: u8 = 2;

/// Why a backup could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Not a PayBridge backup, or from a newer release.
    #[error("not a PayBridge backup (or one from a newer release)")]
    NotABackup,
    /// The checksum does not match: the file is damaged or truncated.
    #[error("the backup is damaged or truncated (checksum mismatch); nothing was restored")]
    Damaged,
    /// The target directory already holds data.
    #[error("{0} is not empty; restore only into an empty data directory")]
    NotEmpty(String),
    /// Reading failed.
    #[error("cannot read the backup: {0}")]
    Io(#[from] io::Error),
    /// Writing the database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a backup leaves free on the disk it is written to (the server's
/// spool is on the data directory's): a backup that would take the last of
/// it fails instead, and payments keep their room.
pub const DISK_RESERVE: u64 = 256 << 20;

/// How often (in bytes written) [`KeepFree`] asks how much room is left.
const CHECK_EVERY: u64 = 4 << 20;

/// A writer that fails, before each [`CHECK_EVERY`] bytes, once its disk
/// has less than `reserve` bytes left: a backup overshoots the reserve by
/// at most that much, and fails with a message saying what was left.
pub struct KeepFree<W> {
    inner: W,
    dir: PathBuf,
    reserve: u64,
    unchecked: u64,
}

impl<W: Write> KeepFree<W> {
    /// `inner` writes to a file in `dir`; checks the room at once.
    pub fn new(inner: W, dir: &Path, reserve: u64) -> io::Result<Self> {
        let keep = KeepFree { inner, dir: dir.to_owned(), reserve, unchecked: 0 };
        keep.check()?;
        Ok(keep)
    }

    /// The writer, to finish with.
    pub fn into_inner(self) -> W {
        self.inner
    }

    fn check(&self) -> io::Result<()> {
        let free = fs2::available_space(&self.dir)?;
        if free < self.reserve {
            let message = format!(
                "{} has {} MiB free, and a backup leaves at least {} MiB free (room for payments): free some \
                 space, or write the backup to another disk (with PayBridge stopped if the full disk is its data \
                 directory's)",
                self.dir.display(),
                free >> 20,
                self.reserve >> 20
            );
            return Err(io::Error::new(io::ErrorKind::StorageFull, message));
        }
        Ok(())
    }
}

impl<W: Write> Write for KeepFree<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.unchecked >= CHECK_EVERY {
            self.check()?;
            self.unchecked = 0;
        }
        let n = self.inner.write(buf)?;
        self.unchecked += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes everything it is given to `inner` and hashes and counts it on
/// the way (or hashes what it reads).
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

fn put(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    w.write_all(&(bytes.len() as u32).to_be_bytes())?;
    w.write_all(bytes)
}

fn get(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 64 * 1024 * 1024 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "entry too large"));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

impl Store {
    /// Writes a consistent backup of every tree, taken between two write
    /// batches, and of `archive`'s files (no move runs meanwhile) to `out`,
    /// a buffer at a time; returns `out` and the backup's length.
    pub async fn backup<W: Write + Send + 'static>(&self, archive: &Archive, out: W) -> Result<(W, u64), StoreError> {
        let _no_move = archive.hold().await;
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.writer.submit_exclusive(Box::new(move |trees| {
            let _ = answer.send(trees.ok_or(StoreError::Unavailable).and_then(|trees| trees.backup(out)));
        }))?;
        let mut w = answered.await.unwrap_or(Err(StoreError::Stopped))?;
        let archive = archive.clone();
        let done = tokio::task::spawn_blocking(move || {
            let files = archive.committed_files().map_err(|e| io::Error::other(e.to_string()))?;
            w.write_all(&(files.len() as u32).to_be_bytes())?;
            for file in files {
                put(&mut w, file.name.as_bytes())?;
                w.write_all(&file.len().to_be_bytes())?;
                file.copy(&mut w)?;
            }
            let Hashing { inner, hash, len } = w;
            let mut inner = inner.into_inner().map_err(io::IntoInnerError::into_error)?;
            inner.write_all(&hash.finalize())?;
            inner.flush()?;
            Ok::<_, io::Error>((inner, len + 32))
        });
        done.await.unwrap_or_else(|e| Err(io::Error::other(e))).map_err(StoreError::Backup)
    }
}

impl super::Trees {
    /// Writes the header and every tree to `out`; returns the writer, with
    /// the hash so far (the archive's files follow, then the digest).
    fn backup<W: Write>(&self, out: W) -> Result<Hashing<BufWriter<W>>, StoreError> {
        let mut w = Hashing { inner: BufWriter::with_capacity(256 << 10, out), hash: Sha256::new(), len: 0 };
        let io = StoreError::Backup;
        w.write_all(MAGIC).map_err(io)?;
        w.write_all(&[VERSION]).map_err(io)?;
        let names: Vec<_> = self.db.tree_names().into_iter().filter(|n| n.as_ref() != b"__sled__default").collect();
        w.write_all(&(names.len() as u32).to_be_bytes()).map_err(io)?;
        for name in names {
            let tree = self.db.open_tree(&name)?;
            put(&mut w, &name).map_err(io)?;
            w.write_all(&(tree.len() as u64).to_be_bytes()).map_err(io)?;
            for entry in tree.iter() {
                let (k, v) = entry?;
                put(&mut w, &k).map_err(io)?;
                put(&mut w, &v).map_err(io)?;
            }
        }
        Ok(w)
    }
}

impl Store {
    /// Restores a backup into the empty (or missing) directory `dir`.
    /// A damaged backup leaves nothing behind.
    pub fn restore(dir: &Path, input: impl Read) -> Result<(), RestoreError> {
        if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(RestoreError::NotEmpty(dir.display().to_string()));
        }
        let result = Store::restore_into(dir, input);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(dir);
        }
        result
    }

    fn restore_into(dir: &Path, input: impl Read) -> Result<(), RestoreError> {
        let mut r = Hashing { inner: input, hash: Sha256::new(), len: 0 };
        let mut magic = [0u8; 17];
        r.read_exact(&mut magic).map_err(|_| RestoreError::NotABackup)?;
        let version = magic[16];
        if &magic[..16] != MAGIC || !(1..=VERSION).contains(&version) {
            return Err(RestoreError::NotABackup);
        }
        let db = super::open::sled_config(dir, super::StoreOptions::default()).open().map_err(StoreError::from)?;
        let truncated = |_| RestoreError::Damaged;
        let mut count = [0u8; 4];
        r.read_exact(&mut count).map_err(truncated)?;
        for _ in 0..u32::from_be_bytes(count) {
            let name = get(&mut r).map_err(truncated)?;
            let tree = db.open_tree(name).map_err(StoreError::from)?;
            let mut entries = [0u8; 8];
            r.read_exact(&mut entries).map_err(truncated)?;
            for _ in 0..u64::from_be_bytes(entries) {
                let k = get(&mut r).map_err(truncated)?;
                let v = get(&mut r).map_err(truncated)?;
                tree.insert(k, v).map_err(StoreError::from)?;
            }
        }
        if version >= 2 {
            restore_archive(dir, &mut r)?;
        }
        let expected = r.hash.finalize();
        let mut stored = [0u8; 32];
        r.inner.read_exact(&mut stored).map_err(truncated)?;
        if expected.as_slice() != stored {
            return Err(RestoreError::Damaged);
        }
        // sled's id generator is not in any tree: new ids must stay above
        // the restored ones (see `trees::NEXT_ID`).
        let floor = super::trees::ids_in_use(&db).map_err(StoreError::from)?;
        db.open_tree("stats")
            .and_then(|t| t.insert(super::trees::NEXT_ID, &floor.to_be_bytes()))
            .map_err(StoreError::from)?;
        db.flush().map_err(StoreError::from)?;
        drop(db);
        // sled's flush only sync_file_ranges: make the restored data durable.
        let sled_dir = dir.join(super::open::SLED_DIR);
        super::writer::open_data_file(&sled_dir).and_then(|f| f.sync_all()).map_err(|e| StoreError::Sled(e.into()))?;
        Ok(())
    }
}

/// Writes the archive's files of a version 2 backup into `dir`'s archive.
fn restore_archive(dir: &Path, r: &mut impl Read) -> Result<(), RestoreError> {
    let truncated = |_| RestoreError::Damaged;
    let mut count = [0u8; 4];
    r.read_exact(&mut count).map_err(truncated)?;
    let folder = dir.join(archive::ARCHIVE_DIR);
    for _ in 0..u32::from_be_bytes(count) {
        let name = String::from_utf8(get(r).map_err(truncated)?).map_err(|_| RestoreError::Damaged)?;
        if !archive::is_file_name(&name) {
            return Err(RestoreError::Damaged);
        }
        let mut len = [0u8; 8];
        r.read_exact(&mut len).map_err(truncated)?;
        let len = u64::from_be_bytes(len);
        std::fs::create_dir_all(&folder)?;
        let mut file = std::fs::File::create(folder.join(&name))?;
        let copied = io::copy(&mut r.take(len), &mut file)?;
        if copied != len {
            return Err(RestoreError::Damaged);
        }
        file.sync_all()?;
    }
    if folder.is_dir() {
        super::open::sync_dir(&folder)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Mode;
    use crate::store::{Order, OrderContents};

    #[tokio::test]
    async fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a"), Mode::Live).unwrap();
        let contents = OrderContents { total_fee: 5, body: "b".into(), attach: "".into(), openid: "o".into() };
        store.insert_order(Order::new("BACKUP0001".into(), contents, false, 7)).await.unwrap().unwrap();
        let bytes = store.backup(&Archive::new(&dir.path().join("a")), Vec::new()).await.unwrap().0;

        Store::restore(&dir.path().join("b"), &bytes[..]).unwrap();
        let restored = Store::open(&dir.path().join("b"), Mode::Live).unwrap();
        assert_eq!(restored.order("BACKUP0001").unwrap(), store.order("BACKUP0001").unwrap());
        assert!(matches!(Store::restore(&dir.path().join("b"), &bytes[..]), Err(RestoreError::NotEmpty(_))));

        let mut damaged = bytes.clone();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 1;
        assert!(matches!(Store::restore(&dir.path().join("c"), &damaged[..]), Err(RestoreError::Damaged)));
        assert!(!dir.path().join("c").exists(), "nothing left behind");
        assert!(matches!(Store::restore(&dir.path().join("d"), &b"hello"[..]), Err(RestoreError::NotABackup)));

        // A version 1 backup (no archive section) still restores.
        let mut v1 = bytes[..bytes.len() - 32 - 4].to_vec();
        assert_eq!(&bytes[bytes.len() - 36..bytes.len() - 32], &[0, 0, 0, 0], "an empty archive section");
        v1[16] = 1;
        let digest = Sha256::digest(&v1);
        v1.extend_from_slice(&digest);
        Store::restore(&dir.path().join("v1"), &v1[..]).unwrap();
        let restored = Store::open(&dir.path().join("v1"), Mode::Live).unwrap();
        assert_eq!(restored.order("BACKUP0001").unwrap(), store.order("BACKUP0001").unwrap());
    }

    /// The archive's files are in the backup and a restore puts them back:
    /// the archived orders are found and verify; the hot ones are hot.
    #[tokio::test]
    async fn the_archive_goes_with_the_backup() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let store = Store::open(&a, Mode::Live).unwrap();
        let old = crate::clock::now_ms() - 500 * 86_400_000;
        for i in 0..30 {
            let contents = OrderContents { total_fee: 5, body: "b".into(), attach: "".into(), openid: "o".into() };
            let no = format!("BACKUP{i:04}");
            store.insert_order(Order::new(no.clone(), contents, false, old + i)).await.unwrap().unwrap();
            if i < 20 {
                store.update_order(&no, move |o| o.close(old + i + 1, "x")).await.unwrap();
            }
        }
        let archive = Archive::new(&a);
        let now = crate::clock::now_ms();
        assert_eq!(archive.move_ended(&store, now - 400 * 86_400_000, now).await.unwrap().moved, 20);
        // A torn tail is not copied: only what the index commits.
        let month = &archive.months().unwrap()[0];
        let pba = archive.dir().join(format!("{month}.pba"));
        let committed = std::fs::metadata(&pba).unwrap().len();
        std::fs::OpenOptions::new().append(true).open(&pba).unwrap().write_all(b"PBAF torn").unwrap();
        let bytes = store.backup(&archive, Vec::new()).await.unwrap().0;

        Store::restore(&b, &bytes[..]).unwrap();
        let copy = Archive::new(&b);
        assert_eq!(std::fs::metadata(copy.dir().join(format!("{month}.pba"))).unwrap().len(), committed);
        let report = copy.verify().unwrap();
        assert!(!report.damaged() && report.files[0].orders == 20, "{}", report.summary());
        let restored = Store::open(&b, Mode::Live).unwrap();
        for i in 0..30 {
            let no = format!("BACKUP{i:04}");
            let found = copy.lookup(&restored, &no).unwrap().unwrap();
            assert_eq!(matches!(found, archive::Found::Archived(_)), i < 20, "{no}");
        }

        // A crafted name never becomes a path.
        let mut evil = bytes.clone();
        let at = evil.windows(11).position(|w| w == format!("{month}.pba").as_bytes()).unwrap();
        evil[at..at + 11].copy_from_slice(b"../evil.pba");
        let len = evil.len();
        let digest = Sha256::digest(&evil[..len - 32]);
        evil[len - 32..].copy_from_slice(&digest);
        assert!(matches!(Store::restore(&dir.path().join("c"), &evil[..]), Err(RestoreError::Damaged)));
        assert!(!dir.path().join("evil.pba").exists() && !dir.path().join("c").exists());

        // A month whose file is gone (its index alone is left) does not stop
        // every later backup: it is copied empty, as it is found.
        std::fs::remove_file(&pba).unwrap();
        let bytes = store.backup(&archive, Vec::new()).await.unwrap().0;
        Store::restore(&dir.path().join("d"), &bytes[..]).unwrap();
        let copy = Archive::new(&dir.path().join("d"));
        assert_eq!(std::fs::metadata(copy.dir().join(format!("{month}.pba"))).unwrap().len(), 0);
    }

    /// sled's id generator is not in the backup: without the id floor, the
    /// restored store handed out ids from 0 again, and its first notifies
    /// overwrote the restored notify log.
    #[tokio::test]
    async fn a_restored_store_hands_out_ids_above_the_restored_ones() {
        use crate::store::testing::notify_at;
        use crate::store::Verdict;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a"), Mode::Live).unwrap();
        for i in 0..20 {
            store
                .record_notify(notify_at("N", i, false, b"<xml/>"), |_| (Verdict::Rejected, "x".into(), ()))
                .await
                .unwrap();
        }
        let newest = store.list_notifies(None, 100).unwrap().items[0].id;
        Store::restore(
            &dir.path().join("b"),
            &store.backup(&Archive::new(&dir.path().join("a")), Vec::new()).await.unwrap().0[..],
        )
        .unwrap();
        let restored = Store::open(&dir.path().join("b"), Mode::Live).unwrap();
        let (record, ()) = restored
            .record_notify(notify_at("N", 99, false, b"<xml>new</xml>"), |_| (Verdict::Rejected, "x".into(), ()))
            .await
            .unwrap();
        assert!(record.id > newest, "id {} after the restored {newest}", record.id);
        assert_eq!(restored.list_notifies(None, 100).unwrap().items.len(), 21, "nothing overwritten");
    }
}
