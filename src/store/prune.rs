//! Pruning: what the store forgets, and when. The notify log is kept within
//! an age and a size ([`Retention`], `[notifies]`); platform request nonces
//! go once their timestamp is refused anyway; bill files go after
//! `[reconcile] keep_bills_days` (in the same write that records a day).
//!
//! Each prune reads what to remove off the async threads, then removes it
//! in small batches through the writer, so other writes never queue behind
//! a long one.

use super::codec::CodecError;
use super::{tx, NotifyRecord, Store, StoreError, SMALL_WRITE};

/// How much of the notify log to keep (`[notifies]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Notifies older than this go.
    pub max_age_ms: i64,
    /// The oldest notifies go while the log holds more encoded bytes than this.
    pub max_bytes: u64,
}

impl Store {
    /// Keeps the notify log within `retention` for as long as it runs:
    /// checks every `every`, then prunes in small batches.
    pub async fn keep_notify_log(self, retention: Retention, every: std::time::Duration) {
        const BATCH: usize = 256;
        let mut failing = false;
        loop {
            let mut pruned = 0;
            loop {
                match self.prune_notifies(retention, crate::clock::now_ms(), BATCH).await {
                    Ok(n) => {
                        pruned += n;
                        failing = false;
                        if n < BATCH {
                            break;
                        }
                        // Let the writes queued behind this batch go first.
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, "cannot prune the notify log; will retry");
                        }
                        failing = true;
                        break;
                    }
                }
            }
            if pruned > 0 {
                tracing::info!(pruned, "old notifies removed (notifies.keep_days / keep_mb)");
            }
            tokio::time::sleep(every).await;
        }
    }

    /// The notify log's size: (records, encoded bytes), from its counter.
    pub fn notify_log_size(&self) -> Result<(u64, u64), StoreError> {
        let value = self.trees()?.stats.get(tx::NOTIFY_LOG_SIZE)?;
        Ok((tx::read_u64(value.as_deref(), 0), tx::read_u64(value.as_deref(), 8)))
    }

    /// Deletes the oldest notifies while the log is over `retention`, at
    /// most `batch` of them in one write; returns how many went. Call it
    /// again while it returns `batch`: small batches keep other writes from
    /// waiting behind a long prune.
    pub async fn prune_notifies(&self, retention: Retention, now_ms: i64, batch: usize) -> Result<usize, StoreError> {
        let oldest = self
            .read(move |store| {
                let (_, mut bytes) = store.notify_log_size()?;
                let mut doomed = Vec::new();
                for entry in store.trees()?.notifies.iter().take(batch) {
                    let (key, value) = entry?;
                    let record = NotifyRecord::decode(&value)?;
                    if bytes <= retention.max_bytes && record.received_at >= now_ms - retention.max_age_ms {
                        break;
                    }
                    bytes = bytes.saturating_sub(value.len() as u64);
                    doomed.push(u64::from_be_bytes(key.as_ref().try_into().map_err(|_| CodecError::Empty)?));
                }
                Ok(doomed)
            })
            .await?;
        if oldest.is_empty() {
            return Ok(0);
        }
        let count = oldest.len();
        self.write(SMALL_WRITE, move |tx, _| {
            for id in &oldest {
                tx.remove_notify(*id)?;
            }
            Ok(())
        })
        .await?;
        Ok(count)
    }

    /// Forgets nonces of requests stamped before `before` (unix seconds):
    /// those are refused by their timestamp anyway. Returns how many went.
    pub async fn prune_nonces(&self, before: i64, batch: usize) -> Result<usize, StoreError> {
        let end = before.max(0).to_be_bytes();
        let doomed = self
            .read(move |store| {
                let trees = store.trees()?;
                let keys = trees.nonces.range(..end.as_slice()).keys().take(batch);
                Ok(keys.collect::<Result<Vec<_>, _>>()?)
            })
            .await?;
        let count = doomed.len();
        if count > 0 {
            self.write(SMALL_WRITE, move |tx, _| {
                for key in &doomed {
                    tx.nonces.remove(key)?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(count)
    }

    /// The keys of the bill files of days before `day` (`yyyy-MM-dd`): the
    /// ones past their retention, which [`Store::put_bill_day`] removes in
    /// the write that records a day.
    pub(super) fn bill_files_before(&self, day: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let trees = self.trees()?;
        Ok(trees.bill_files.range(..day.as_bytes()).keys().filter_map(Result::ok).map(|k| k.to_vec()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{notify_at, open};
    use crate::store::Verdict;

    /// Retention removes the oldest notifies, by age and by size, in batches,
    /// and keeps the counters and the order links right.
    #[tokio::test]
    async fn retention_prunes_by_age_and_size() {
        let (_dir, store) = open();
        let day = 86_400_000;
        for i in 0..100 {
            let record = notify_at(&format!("ORDER{:03}", i % 3), i * day, true, &[b'x'; 1000]);
            store.record_notify(record, |_| (Verdict::Ignored, "r".into(), ())).await.unwrap();
        }
        let (_, total) = store.notify_log_size().unwrap();
        let keep_all = Retention { max_age_ms: 1000 * day, max_bytes: u64::MAX };
        assert_eq!(store.prune_notifies(keep_all, 100 * day, 16).await.unwrap(), 0);

        // Age: everything received before day 60 goes, 16 at a time.
        let by_age = Retention { max_age_ms: 40 * day, max_bytes: u64::MAX };
        let mut pruned = Vec::new();
        loop {
            let n = store.prune_notifies(by_age, 100 * day, 16).await.unwrap();
            pruned.push(n);
            if n < 16 {
                break;
            }
        }
        assert_eq!(pruned, [16, 16, 16, 12]);
        let left = store.list_notifies(None, 1000).unwrap().items;
        assert_eq!(left.len(), 40);
        assert_eq!(left.last().unwrap().received_at, 60 * day);
        let (count, bytes) = store.notify_log_size().unwrap();
        assert_eq!(count, 40);
        assert!(bytes < total / 2);

        // Size: the oldest go until the log fits.
        let by_size = Retention { max_age_ms: 1000 * day, max_bytes: bytes / 4 };
        while store.prune_notifies(by_size, 100 * day, 16).await.unwrap() > 0 {}
        let (count, bytes_now) = store.notify_log_size().unwrap();
        assert_eq!(count, 10);
        assert!(bytes_now <= bytes / 4);
        let linked: usize =
            (0..3).map(|i| store.notifies_for_order(&format!("ORDER{i:03}"), None, 100).unwrap().items.len()).sum();
        assert_eq!(linked, 10, "links of pruned notifies went with them");
    }
}
