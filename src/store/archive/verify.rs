//! `paybridge archive verify`: every month file read whole — each frame's
//! checksum, each record decoded — and its index compared with what the
//! frames say.

use std::collections::BTreeMap;

use serde::Serialize;

use super::index::{self, Index, Key};
use super::month::Month;
use super::{Archive, ArchiveError};

/// The most problems listed per file (the count says if there were more).
const MAX_LISTED: usize = 20;

/// What was found in one month's files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileReport {
    /// `YYYY-MM`.
    pub month: String,
    /// Committed frames read.
    pub frames: u64,
    /// Orders the index counts.
    pub orders: u64,
    /// The month file's committed length.
    pub bytes: u64,
    /// Bytes after the committed length: what an interrupted move left
    /// (not damage; the next move into this month cuts them off).
    pub uncommitted_bytes: u64,
    /// Damage found, in words (at most 20 listed).
    pub problems: Vec<String>,
    /// How many problems there were in all.
    pub problem_count: u64,
}

/// What `verify` found in every file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// One per month, oldest first.
    pub files: Vec<FileReport>,
}

impl VerifyReport {
    /// Whether any file is damaged.
    pub fn damaged(&self) -> bool {
        self.files.iter().any(|f| f.problem_count > 0)
    }

    /// For people: a line per month and a total.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for f in &self.files {
            let state = match f.problem_count {
                0 => "OK".to_owned(),
                n => format!("DAMAGED ({n} problem{})", if n == 1 { "" } else { "s" }),
            };
            out += &format!("{}: {} orders in {} frames, {} bytes: {state}\n", f.month, f.orders, f.frames, f.bytes);
            if f.uncommitted_bytes > 0 {
                out += &format!(
                    "  {} bytes after the committed frames (an interrupted move; not damage)\n",
                    f.uncommitted_bytes
                );
            }
            for p in &f.problems {
                out += &format!("  - {p}\n");
            }
        }
        let orders: u64 = self.files.iter().map(|f| f.orders).sum();
        let damaged = self.files.iter().filter(|f| f.problem_count > 0).count();
        out += &format!(
            "{} archive file(s), {orders} orders: {}\n",
            self.files.len(),
            if damaged == 0 { "all OK".to_owned() } else { format!("{damaged} DAMAGED") }
        );
        out
    }
}

impl FileReport {
    fn problem(&mut self, what: impl Into<String>) {
        self.problem_count += 1;
        if self.problems.len() < MAX_LISTED {
            self.problems.push(what.into());
        }
    }
}

impl Archive {
    /// Reads every archive file whole and checks it. Blocking reads. An
    /// error only when the archive's folder cannot be listed.
    pub fn verify(&self) -> Result<VerifyReport, ArchiveError> {
        let mut report = VerifyReport::default();
        for name in self.months()? {
            report.files.push(verify_month(&self.month(&name)));
        }
        Ok(report)
    }
}

fn verify_month(month: &Month) -> FileReport {
    let mut report = FileReport { month: month.name.clone(), ..FileReport::default() };
    let length = std::fs::metadata(&month.pba).map(|m| m.len()).unwrap_or(0);
    let index = match std::fs::read(&month.idx) {
        Ok(bytes) => match Index::decode(&bytes) {
            Ok(index) => Some(index),
            Err(what) => {
                report.problem(format!("{}: {what}", month.idx.display()));
                return report;
            }
        },
        // A first move into this month stopped before its index: nothing
        // is committed, and the next move counts the whole frames again.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            report.problem(format!("{}: {e}", month.idx.display()));
            return report;
        }
    };
    let covered = index.as_ref().map_or(0, |i| i.covered);
    if length < covered {
        report.problem(format!("{} is {length} bytes; its index counts {covered}", month.pba.display()));
        return report;
    }
    report.bytes = covered;
    report.uncommitted_bytes = length - covered;
    let Some(index) = index else { return report };
    let scan = match month.scan(Some(covered)) {
        Ok(scan) => scan,
        Err(e) => {
            report.problem(e.to_string());
            return report;
        }
    };
    if let Some(at) = scan.torn_at {
        report.problem(format!("{}: the frame at byte {at} is cut short or damaged", month.pba.display()));
    }
    // Each number's newest frame, as the frames say.
    let mut newest: BTreeMap<Key, (u64, i64)> = BTreeMap::new();
    for (offset, entries) in &scan.frames {
        report.frames += 1;
        for entry in entries {
            if let Err(e) = month.decoded(entry, *offset) {
                report.problem(e.to_string());
            }
            match index::key_of(&entry.out_trade_no) {
                Some(key) => {
                    newest.insert(key, (*offset, entry.created_at));
                }
                None => report.problem(format!("frame at byte {offset}: an order number the index cannot hold")),
            }
        }
    }
    report.orders = index.records.len() as u64;
    for record in &index.records {
        let no = index::number_of(&record.key);
        match newest.remove(&record.key) {
            Some((offset, created_at)) if offset == record.offset && created_at == record.created_at => {}
            Some((offset, _)) => report.problem(format!(
                "order {no}: the index says the frame at byte {}, the newest is at {offset}",
                record.offset
            )),
            None => report.problem(format!("order {no}: in the index, in no frame")),
        }
    }
    for key in newest.keys() {
        report.problem(format!("order {}: in a frame, not in the index", index::number_of(key)));
    }
    report
}
