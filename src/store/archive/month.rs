//! One month's pair of files: `YYYY-MM.pba` (frames, append-only) and
//! `YYYY-MM.idx` (its index). Appending, committing, and reading back.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::entry::{ArchivedOrder, Entry};
use super::frame::{self, FrameError};
use super::index::{self, Index, Key, Record};
use super::ArchiveError;

/// A month's files.
pub(super) struct Month {
    /// `YYYY-MM`.
    pub name: String,
    pub pba: PathBuf,
    pub idx: PathBuf,
}

/// What scanning a month file's frames found.
pub(super) struct Scan {
    /// Every frame's offset and entries, in file order.
    pub frames: Vec<(u64, Vec<Entry>)>,
    /// Where the last whole frame ends.
    pub end: u64,
    /// Why the scan stopped before the end of the file, if it did: a
    /// frame cut short (an append that did not finish).
    pub torn_at: Option<u64>,
}

impl Month {
    pub fn new(dir: &Path, name: &str) -> Month {
        Month { name: name.to_owned(), pba: dir.join(format!("{name}.pba")), idx: dir.join(format!("{name}.idx")) }
    }

    fn io(&self, path: &Path) -> impl Fn(std::io::Error) -> ArchiveError + '_ {
        let path = path.display().to_string();
        move |source| ArchiveError::Io { path: path.clone(), source }
    }

    fn damaged(&self, path: &Path, offset: u64, what: impl Into<String>) -> ArchiveError {
        ArchiveError::Damaged { path: path.display().to_string(), offset, what: what.into() }
    }

    /// The index as committed, checked. Without one (a first move into the
    /// month stopped before its index, or the index was lost), it is
    /// rebuilt from the frames: every whole frame is safe to count.
    pub fn committed(&self) -> Result<Index, ArchiveError> {
        match std::fs::read(&self.idx) {
            Ok(bytes) => Index::decode(&bytes).map_err(|what| self.damaged(&self.idx, 0, what)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.rebuild(),
            Err(e) => Err(self.io(&self.idx)(e)),
        }
    }

    /// An index made from the frames themselves: each order at its newest
    /// frame, committed up to the last whole frame.
    fn rebuild(&self) -> Result<Index, ArchiveError> {
        let scan = self.scan(None)?;
        let mut index = Index::default();
        for (offset, entries) in &scan.frames {
            index.merge(entries.iter().filter_map(|e| record_of(e, *offset)), scan.end);
        }
        index.covered = scan.end;
        Ok(index)
    }

    /// Reads every frame from the start up to `limit` (default: the file's
    /// length). A frame cut short at the end is reported, not an error; a
    /// damaged frame is.
    pub fn scan(&self, limit: Option<u64>) -> Result<Scan, ArchiveError> {
        let file = match File::open(&self.pba) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Scan { frames: Vec::new(), end: 0, torn_at: None })
            }
            Err(e) => return Err(self.io(&self.pba)(e)),
        };
        let len = file.metadata().map_err(self.io(&self.pba))?.len();
        let limit = limit.unwrap_or(len).min(len);
        let mut frames = Vec::new();
        let mut offset = 0;
        while offset < limit {
            match frame::read_at(&file, offset, limit) {
                Ok((raw, size)) => {
                    let mut entries = Vec::with_capacity(raw.len());
                    for bytes in raw {
                        let entry = Entry::decode(&bytes)
                            .map_err(|e| self.damaged(&self.pba, offset, format!("an entry does not decode: {e}")))?;
                        entries.push(entry);
                    }
                    frames.push((offset, entries));
                    offset += size;
                }
                Err(FrameError::Torn) => return Ok(Scan { frames, end: offset, torn_at: Some(offset) }),
                // A damaged frame that runs to the very end is an append
                // that did not finish (the file grew, its bytes never came).
                Err(FrameError::Damaged(_)) if self.runs_to_end(&file, offset, limit) => {
                    return Ok(Scan { frames, end: offset, torn_at: Some(offset) })
                }
                Err(FrameError::Damaged(what)) => return Err(self.damaged(&self.pba, offset, what)),
                Err(FrameError::Io(e)) => return Err(self.io(&self.pba)(e)),
            }
        }
        Ok(Scan { frames, end: offset, torn_at: None })
    }

    /// Whether the frame at `offset` claims to end exactly at `limit`.
    fn runs_to_end(&self, file: &File, offset: u64, limit: u64) -> bool {
        let mut len = [0u8; 4];
        file.read_exact_at(&mut len, offset + 4).is_ok()
            && offset + frame::HEADER + u64::from(u32::from_be_bytes(len)) == limit
    }

    /// Appends `entries` as one frame after the committed part (cutting
    /// off whatever an interrupted move left beyond it), makes it durable,
    /// then commits the index that points at it. Only after this returns
    /// may the orders leave the hot store. Returns the frame's size.
    pub fn append(&self, entries: &[Entry]) -> Result<u64, ArchiveError> {
        let mut index = self.committed()?;
        let dir = self.pba.parent().expect("a month file lives in a folder");
        let created = !self.pba.exists();
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&self.pba);
        let file = file.map_err(self.io(&self.pba))?;
        let len = file.metadata().map_err(self.io(&self.pba))?.len();
        if len < index.covered {
            return Err(self.damaged(
                &self.pba,
                len,
                format!("the file is shorter than its index says ({})", index.covered),
            ));
        }
        if len > index.covered {
            tracing::info!(
                file = %self.pba.display(), bytes = len - index.covered,
                "archive: removing what an interrupted move left after the committed frames"
            );
            file.set_len(index.covered).map_err(self.io(&self.pba))?;
        }
        let encoded: Vec<Vec<u8>> = entries.iter().map(Entry::encode).collect();
        let bytes = frame::build(&encoded);
        let offset = index.covered;
        file.write_all_at(&bytes, offset).map_err(self.io(&self.pba))?;
        file.sync_all().map_err(self.io(&self.pba))?;
        if created {
            index::sync_dir(dir).map_err(self.io(dir))?;
        }
        index.merge(entries.iter().filter_map(|e| record_of(e, offset)), offset + bytes.len() as u64);
        index.write(&self.idx).map_err(self.io(&self.idx))?;
        Ok(bytes.len() as u64)
    }

    /// The order `key` names, if this month's index has it.
    pub fn find(&self, key: &Key) -> Result<Option<ArchivedOrder>, ArchiveError> {
        let idx = match File::open(&self.idx) {
            Ok(file) => file,
            // No index yet: the month has nothing committed, or its first
            // move stopped before the index; either way nothing left the
            // hot store for it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(&self.idx)(e)),
        };
        let Some((covered, record)) = index::lookup(&idx, key).map_err(self.io(&self.idx))? else { return Ok(None) };
        let mut found =
            self.read_frame(record.offset, covered, |e| e.out_trade_no.as_bytes() == index::number_of(key).as_bytes())?;
        Ok(found.pop())
    }

    /// The entries of the frame at `offset` that `keep` accepts, decoded.
    fn read_frame(
        &self,
        offset: u64,
        covered: u64,
        keep: impl Fn(&Entry) -> bool,
    ) -> Result<Vec<ArchivedOrder>, ArchiveError> {
        let file = File::open(&self.pba).map_err(self.io(&self.pba))?;
        let (raw, _) = frame::read_at(&file, offset, covered).map_err(|e| match e {
            FrameError::Io(e) => self.io(&self.pba)(e),
            FrameError::Torn => self.damaged(&self.pba, offset, "a frame the index counts is cut short"),
            FrameError::Damaged(what) => self.damaged(&self.pba, offset, what),
        })?;
        let mut out = Vec::new();
        for bytes in raw {
            let entry = Entry::decode(&bytes).map_err(|e| self.damaged(&self.pba, offset, e.to_string()))?;
            if keep(&entry) {
                out.push(self.decoded(&entry, offset)?);
            }
        }
        Ok(out)
    }

    /// An entry's records, decoded and checked against its number.
    pub fn decoded(&self, entry: &Entry, offset: u64) -> Result<ArchivedOrder, ArchiveError> {
        let order = ArchivedOrder::from_entry(entry).map_err(|e| self.damaged(&self.pba, offset, e.to_string()))?;
        if order.order.out_trade_no != entry.out_trade_no {
            return Err(self.damaged(&self.pba, offset, "an entry holds an order of another number"));
        }
        Ok(order)
    }

    /// The committed orders created in `[from_ms, to_ms)`, each once (its
    /// newest copy), by number.
    pub fn created_in(&self, from_ms: i64, to_ms: i64) -> Result<Vec<ArchivedOrder>, ArchiveError> {
        if !self.idx.exists() {
            return Ok(Vec::new());
        }
        let index = self.committed()?;
        let mut frames: BTreeMap<u64, std::collections::HashSet<String>> = BTreeMap::new();
        for r in index.records.iter().filter(|r| (from_ms..to_ms).contains(&r.created_at)) {
            frames.entry(r.offset).or_default().insert(index::number_of(&r.key));
        }
        let mut out = Vec::new();
        for (offset, numbers) in frames {
            out.extend(self.read_frame(offset, index.covered, |e| numbers.contains(&e.out_trade_no))?);
        }
        out.sort_by(|a, b| a.order.out_trade_no.cmp(&b.order.out_trade_no));
        out.dedup_by(|a, b| a.order.out_trade_no == b.order.out_trade_no);
        Ok(out)
    }
}

/// An entry's index record in the frame at `offset` (none for a number
/// the index cannot hold: the mover never writes one).
fn record_of(entry: &Entry, offset: u64) -> Option<Record> {
    Some(Record { key: index::key_of(&entry.out_trade_no)?, offset, created_at: entry.created_at })
}
