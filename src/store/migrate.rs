//! Bringing a data directory written by an earlier release into the current
//! format, the first time it is opened.
//!
//! Format 1 (the releases before issue 22) kept sled's files (`conf`, `db`,
//! `snap.*`, `blobs/`) at the top of the data directory, uncompressed.
//! Format 2 keeps them in `store/`, with sled's zstd compression of its
//! pages. sled fixes compression when a database is created, so the change
//! is a copy: every tree, entry by entry, into `store.migrating/`, in chunks,
//! each committed with its progress (the tree and the last key copied) in
//! the copy's own `__migration` tree, so a copy that is interrupted resumes
//! after its last committed chunk. Once complete, the copy is synced and
//! renamed to `store/` in one step, and only then are the old files deleted.
//! Whatever is killed when, the data is whole in the old files or in
//! `store/`; old files beside a `store/` are what a clean-up left and are
//! deleted. Records keep their bytes (every decoder reads every format
//! version); sled's id generator, which no tree holds, is carried as the
//! id floor ([`super::trees::NEXT_ID`]).

use std::path::Path;
use std::time::Instant;

use super::open::{open_locked, sled_config, SLED_DIR};
use super::trees::{ids_in_use, NEXT_ID};
use super::{StoreError, StoreOptions};

/// Where the copy is built.
const MIGRATING: &str = "store.migrating";
/// The copy's own tree of progress: tree name → `[0] ‖ last key` or `[1]` (done).
const PROGRESS: &str = "__migration";
/// Entries copied between two commits of the progress.
const CHUNK: usize = 10_000;

/// Whether `dir` holds sled's files in the format of an earlier release.
pub(super) fn holds_old_format(dir: &Path) -> bool {
    dir.join("db").is_file() && dir.join("conf").is_file()
}

/// Copies an earlier release's store in `dir` into the current format, or
/// finishes a copy or a clean-up that was interrupted; does nothing to a
/// current (or new) directory.
pub(super) fn bring_up_to_date(dir: &Path, options: StoreOptions) -> Result<(), StoreError> {
    if dir.join(SLED_DIR).join("conf").is_file() {
        if holds_old_format(dir) {
            remove_old_files(dir)?;
        }
        return Ok(());
    }
    if !holds_old_format(dir) {
        return Ok(());
    }
    let started = Instant::now();
    let resuming = dir.join(MIGRATING).join("conf").is_file();
    tracing::info!(
        dir = %dir.display(),
        resuming,
        "this data directory is in an earlier release's format: copying it into the current one \
         (compressed, in {}/store); this happens once",
        dir.display()
    );
    let old = open_locked(&sled::Config::new().path(dir).cache_capacity(options.cache_bytes), dir, options.lock_wait)?;
    let copy_dir = dir.join(MIGRATING);
    let copy = open_locked(&sled_config(dir, options).path(&copy_dir), dir, options.lock_wait)?;
    let entries = copy_trees(&old, &copy)?;
    let floor = ids_in_use(&old)?;
    copy.open_tree("stats")?.insert(NEXT_ID, &floor.to_be_bytes())?;
    copy.drop_tree(PROGRESS)?;
    copy.flush()?;
    drop(copy);
    sync_files(&copy_dir)?;
    std::fs::rename(&copy_dir, dir.join(SLED_DIR)).map_err(sled::Error::Io)?;
    sync_dir(dir)?;
    drop(old);
    remove_old_files(dir)?;
    tracing::info!(
        entries,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "the data directory is now in the current format"
    );
    Ok(())
}

/// Copies every tree of `old` into `copy`, resuming after the progress the
/// copy records; returns the entries copied in this run.
fn copy_trees(old: &sled::Db, copy: &sled::Db) -> Result<u64, StoreError> {
    let progress = copy.open_tree(PROGRESS)?;
    let mut copied = 0u64;
    for name in old.tree_names() {
        let after = match progress.get(&name)? {
            Some(done) if done.first() == Some(&1) => continue,
            Some(at) => Some(at[1..].to_vec()),
            None => None,
        };
        let (from, to) = (old.open_tree(&name)?, copy.open_tree(&name)?);
        let entries = match &after {
            Some(key) => from.range::<&[u8], _>((std::ops::Bound::Excluded(&key[..]), std::ops::Bound::Unbounded)),
            None => from.iter(),
        };
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for entry in entries {
            let (key, value) = entry?;
            batch.insert(key.clone(), value);
            in_batch += 1;
            if in_batch == CHUNK {
                to.apply_batch(std::mem::take(&mut batch))?;
                progress.insert(&name, [&[0u8][..], &key].concat())?;
                copy.flush()?;
                copied += in_batch as u64;
                in_batch = 0;
            }
        }
        to.apply_batch(batch)?;
        progress.insert(&name, &[1u8][..])?;
        copy.flush()?;
        copied += in_batch as u64;
    }
    Ok(copied)
}

/// `fdatasync`s every file sled wrote in `dir`, and the directory.
fn sync_files(dir: &Path) -> Result<(), StoreError> {
    let io = |e| StoreError::Sled(sled::Error::Io(e));
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_file() {
            std::fs::File::open(&path).and_then(|f| f.sync_all()).map_err(io)?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    super::open::sync_dir(dir).map_err(|e| StoreError::Sled(sled::Error::Io(e)))
}

/// Deletes an earlier release's sled files from the top of `dir` (never
/// anything else that lives there: the pid file, the archive, certificates).
fn remove_old_files(dir: &Path) -> Result<(), StoreError> {
    let io = |e| StoreError::Sled(sled::Error::Io(e));
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name == "blobs" && path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(io)?;
        } else if (name == "db" || name == "conf" || name.starts_with("snap.")) && path.is_file() {
            std::fs::remove_file(&path).map_err(io)?;
        }
    }
    sync_dir(dir)
}
