//! A frame: one batch of archived orders, appended to a month file as one
//! unit. Layout (integers big-endian):
//!
//! | bytes | what |
//! |---|---|
//! | 4 | `PBAF` |
//! | 4 | length of the compressed body |
//! | 4 | entries in it |
//! | 32 | SHA-256 of the 12 bytes above and the compressed body |
//! | … | the body: DEFLATE of each entry as its length (4) and its bytes |
//!
//! A frame is read only whole and only when its checksum holds, so a torn
//! or damaged frame is never taken for orders.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 4] = b"PBAF";

/// The header's length.
pub(super) const HEADER: u64 = 44;

/// The most entries one frame holds: each frame rewrites its month's
/// index and deletes its orders from the hot store in a few writes.
pub(super) const MAX_ENTRIES: usize = 1000;

/// The most entry bytes (before compression) a frame is built from; a
/// single larger order still gets a frame of its own.
pub(super) const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The most a frame's body may inflate to when read: a bound on what a
/// damaged file can make a reader allocate.
const MAX_INFLATED: u64 = 512 * 1024 * 1024;

/// Why a frame could not be read.
#[derive(Debug)]
pub(super) enum FrameError {
    /// Reading failed.
    Io(std::io::Error),
    /// The frame runs past `limit` (the end of the file or of what the
    /// index covers): an append that did not finish.
    Torn,
    /// The bytes are there but wrong.
    Damaged(String),
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// A frame's bytes for `entries` (each already encoded).
pub(super) fn build(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut body = DeflateEncoder::new(Vec::new(), Compression::default());
    for entry in entries {
        let len = u32::try_from(entry.len()).expect("an entry under 4 GiB");
        body.write_all(&len.to_be_bytes()).expect("writing into a Vec");
        body.write_all(entry).expect("writing into a Vec");
    }
    let body = body.finish().expect("writing into a Vec");
    let mut head = Vec::with_capacity(HEADER as usize + body.len());
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&u32::try_from(body.len()).expect("a frame under 4 GiB").to_be_bytes());
    head.extend_from_slice(&u32::try_from(entries.len()).expect("entries fit u32").to_be_bytes());
    let sum = Sha256::new().chain_update(&head).chain_update(&body).finalize();
    head.extend_from_slice(&sum);
    head.extend_from_slice(&body);
    head
}

/// Reads the frame at `offset`, which must end at or before `limit`.
/// Returns its entries and its length.
pub(super) fn read_at(file: &File, offset: u64, limit: u64) -> Result<(Vec<Vec<u8>>, u64), FrameError> {
    if offset + HEADER > limit {
        return Err(FrameError::Torn);
    }
    let mut head = [0u8; HEADER as usize];
    file.read_exact_at(&mut head, offset).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Torn,
        _ => FrameError::Io(e),
    })?;
    if &head[..4] != MAGIC {
        return Err(FrameError::Damaged("no frame starts here".into()));
    }
    let stored = u64::from(u32::from_be_bytes(head[4..8].try_into().expect("4 bytes")));
    let count = u32::from_be_bytes(head[8..12].try_into().expect("4 bytes")) as usize;
    let end = offset + HEADER + stored;
    if end > limit {
        return Err(FrameError::Torn);
    }
    let mut body = vec![0u8; stored as usize];
    file.read_exact_at(&mut body, offset + HEADER).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Torn,
        _ => FrameError::Io(e),
    })?;
    let sum = Sha256::new().chain_update(&head[..12]).chain_update(&body).finalize();
    if sum.as_slice() != &head[12..] {
        return Err(FrameError::Damaged("checksum mismatch".into()));
    }
    let mut inflated = Vec::new();
    DeflateDecoder::new(&body[..])
        .take(MAX_INFLATED)
        .read_to_end(&mut inflated)
        .map_err(|e| FrameError::Damaged(format!("does not inflate: {e}")))?;
    let mut entries = Vec::with_capacity(count.min(MAX_ENTRIES));
    let mut rest = &inflated[..];
    while !rest.is_empty() {
        let Some((len, after)) = rest.split_first_chunk::<4>() else {
            return Err(FrameError::Damaged("an entry's length is cut".into()));
        };
        let len = u32::from_be_bytes(*len) as usize;
        if after.len() < len {
            return Err(FrameError::Damaged("an entry is cut".into()));
        }
        entries.push(after[..len].to_vec());
        rest = &after[len..];
    }
    if entries.len() != count {
        return Err(FrameError::Damaged(format!("{} entries where the header says {count}", entries.len())));
    }
    Ok((entries, end - offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_refuse_damage_and_tears() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let entries = vec![b"one".to_vec(), Vec::new(), vec![7u8; 100_000]];
        let frame = build(&entries);
        assert!(frame.len() < 2_000, "compressed: {} bytes", frame.len());
        std::fs::write(&path, [&frame[..], &frame[..]].concat()).unwrap();
        let file = File::open(&path).unwrap();
        let len = frame.len() as u64;
        let (read, size) = read_at(&file, len, 2 * len).unwrap();
        assert_eq!((read, size), (entries.clone(), len));
        assert!(matches!(read_at(&file, len, 2 * len - 1), Err(FrameError::Torn)));
        assert!(matches!(read_at(&file, 3, 2 * len), Err(FrameError::Damaged(_))));
        for at in [5, 12, 50, frame.len() - 1] {
            let mut bad = frame.clone();
            bad[at] ^= 0x20;
            std::fs::write(&path, &bad).unwrap();
            let file = File::open(&path).unwrap();
            assert!(read_at(&file, 0, u64::MAX).is_err(), "a flipped byte at {at} is noticed");
        }
    }
}
