//! A month file's index (`YYYY-MM.idx`): which frame holds each order, and
//! how much of the month file is committed. Layout (big-endian):
//!
//! | bytes | what |
//! |---|---|
//! | 4 | `PBAI` |
//! | 8 | the month file's committed length: frames beyond it do not count |
//! | 4 | records |
//! | 48 each | out_trade_no (32, NUL-padded), frame offset (8), created_at ms (8), sorted by number |
//! | 32 | SHA-256 of everything above |
//!
//! Written whole to a temporary file, `fsync`ed, renamed over the old one
//! and the directory `fsync`ed: a reader sees the old index or the new one.
//! The fixed-width records let a lookup binary-search the file with a few
//! reads instead of loading it.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

pub(super) use crate::store::open::sync_dir;

const MAGIC: &[u8; 4] = b"PBAI";
const HEAD: u64 = 16;
const SUM: usize = 32;

/// The longest order number the archive takes (WeChat's `out_trade_no`
/// is at most 32 characters; a longer one stays in the hot store).
pub(super) const KEY_WIDTH: usize = 32;
const RECORD: u64 = KEY_WIDTH as u64 + 16;

/// An order number as an index key, if it fits one.
pub(super) type Key = [u8; KEY_WIDTH];

/// `no` as a key; `None` if it is empty, too long or holds a NUL.
pub(super) fn key_of(no: &str) -> Option<Key> {
    let bytes = no.as_bytes();
    if bytes.is_empty() || bytes.len() > KEY_WIDTH || bytes.contains(&0) {
        return None;
    }
    let mut key = [0u8; KEY_WIDTH];
    key[..bytes.len()].copy_from_slice(bytes);
    Some(key)
}

/// The order number a key holds.
pub(super) fn number_of(key: &Key) -> String {
    let end = key.iter().position(|b| *b == 0).unwrap_or(KEY_WIDTH);
    String::from_utf8_lossy(&key[..end]).into_owned()
}

/// One order's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Record {
    /// Its number.
    pub key: Key,
    /// Where the frame holding its newest copy starts.
    pub offset: u64,
    /// When it was created (unix ms), for date ranges.
    pub created_at: i64,
}

/// A whole index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Index {
    /// The month file's committed length.
    pub covered: u64,
    /// Sorted by key, one per order.
    pub records: Vec<Record>,
}

impl Index {
    /// The bytes of the file.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEAD as usize + self.records.len() * RECORD as usize + SUM);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.covered.to_be_bytes());
        out.extend_from_slice(&u32::try_from(self.records.len()).expect("records fit u32").to_be_bytes());
        for r in &self.records {
            out.extend_from_slice(&r.key);
            out.extend_from_slice(&r.offset.to_be_bytes());
            out.extend_from_slice(&r.created_at.to_be_bytes());
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Reads the file's bytes; the message says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Index, String> {
        if bytes.len() < HEAD as usize + SUM || &bytes[..4] != MAGIC {
            return Err("not an archive index".into());
        }
        let (body, sum) = bytes.split_at(bytes.len() - SUM);
        if Sha256::digest(body).as_slice() != sum {
            return Err("the index's checksum does not match".into());
        }
        let covered = u64::from_be_bytes(body[4..12].try_into().expect("8 bytes"));
        let count = u32::from_be_bytes(body[12..16].try_into().expect("4 bytes")) as usize;
        let records = &body[HEAD as usize..];
        if records.len() != count * RECORD as usize {
            return Err(format!("{} bytes of records for {count} records", records.len()));
        }
        let records: Vec<Record> = records.chunks_exact(RECORD as usize).map(record).collect();
        if records.windows(2).any(|w| w[0].key >= w[1].key) {
            return Err("the records are not sorted by number".into());
        }
        if let Some(r) = records.iter().find(|r| r.offset >= covered) {
            return Err(format!("order {} points past the committed length", number_of(&r.key)));
        }
        Ok(Index { covered, records })
    }

    /// Points each of `records` at its new frame (a number already in the
    /// index moves to the newer copy) and sets the committed length.
    pub fn merge(&mut self, records: impl IntoIterator<Item = Record>, covered: u64) {
        let mut by_key: std::collections::BTreeMap<Key, Record> = self.records.iter().map(|r| (r.key, *r)).collect();
        by_key.extend(records.into_iter().map(|r| (r.key, r)));
        self.records = by_key.into_values().collect();
        self.covered = covered;
    }

    /// Writes the index at `path` crash-safely: a temporary file, synced,
    /// renamed over it, and the folder synced.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("idx.tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(&self.encode())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        sync_dir(path.parent().expect("an index lives in a folder"))
    }
}

fn record(bytes: &[u8]) -> Record {
    Record {
        key: bytes[..KEY_WIDTH].try_into().expect("a key"),
        offset: u64::from_be_bytes(bytes[KEY_WIDTH..KEY_WIDTH + 8].try_into().expect("8 bytes")),
        created_at: i64::from_be_bytes(bytes[KEY_WIDTH + 8..].try_into().expect("8 bytes")),
    }
}

/// Finds `key` in the index file by binary search, reading a few records
/// (the checksum is not checked here: the frame's own checksum guards
/// what a lookup returns). Returns the committed length and the record.
pub(super) fn lookup(file: &File, key: &Key) -> std::io::Result<Option<(u64, Record)>> {
    let mut head = [0u8; HEAD as usize];
    file.read_exact_at(&mut head, 0)?;
    if &head[..4] != MAGIC {
        return Ok(None);
    }
    let covered = u64::from_be_bytes(head[4..12].try_into().expect("8 bytes"));
    let count = u64::from(u32::from_be_bytes(head[12..16].try_into().expect("4 bytes")));
    let (mut low, mut high) = (0u64, count);
    let mut buf = [0u8; RECORD as usize];
    while low < high {
        let middle = low + (high - low) / 2;
        file.read_exact_at(&mut buf, HEAD + middle * RECORD)?;
        let found = record(&buf);
        match found.key.cmp(key) {
            std::cmp::Ordering::Equal => return Ok(Some((covered, found))),
            std::cmp::Ordering::Less => low = middle + 1,
            std::cmp::Ordering::Greater => high = middle,
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_round_trips_is_found_by_binary_search_and_refuses_damage() {
        let mut index = Index::default();
        let rec = |no: &str, offset| Record { key: key_of(no).unwrap(), offset, created_at: 7 };
        index.merge((0..500).map(|i| rec(&format!("N{:05}", i * 2), 0)), 100);
        index.merge([rec("N00010", 50), rec("N00011", 50)], 200);
        assert_eq!(index.records.len(), 501);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2025-03.idx");
        index.write(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(Index::decode(&bytes).unwrap(), index);
        let file = File::open(&path).unwrap();
        assert_eq!(lookup(&file, &key_of("N00010").unwrap()).unwrap(), Some((200, rec("N00010", 50))));
        assert_eq!(lookup(&file, &key_of("N00998").unwrap()).unwrap(), Some((200, rec("N00998", 0))));
        assert_eq!(lookup(&file, &key_of("N00001").unwrap()).unwrap(), None);
        assert_eq!(lookup(&file, &key_of("N99999").unwrap()).unwrap(), None);
        let mut bad = bytes.clone();
        bad[100] ^= 1;
        assert!(Index::decode(&bad).unwrap_err().contains("checksum"));
        assert_eq!(key_of(&"x".repeat(KEY_WIDTH + 1)), None);
        assert_eq!(number_of(&key_of("AB12").unwrap()), "AB12");
    }
}
