//! Moving ended orders out of the hot store: read a page of old orders,
//! keep the ended ones with what belongs to them, append them to their
//! month's file a frame at a time, commit its index, then delete them from
//! sled through the writer (the protocol is in [`super`]'s module doc).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::entry::{ArchivedOrder, Entry};
use super::{frame, index, month_of, Archive, ArchiveError};
use crate::clock::Clock;
use crate::store::schedule::due_key;
use crate::store::tx::{self, prefixed_key, read_u64, status_count_key, status_key, time_key, Tx, TxResult};
use crate::store::{Delivery, DeliveryState, Order, OrderFilter, OrderStatus, Refund, Store, StoreError};

/// Orders read from the hot store per page.
const PAGE: usize = 500;

/// Orders deleted from the hot store per write: small, so payments queued
/// behind a move wait for one short transaction at most.
const DELETE_BATCH: usize = 64;

/// The most change-feed entries read to find one platform order's own.
const FEED_SCAN_LIMIT: usize = 100_000;

/// A day, in ms.
const DAY_MS: i64 = 86_400_000;

/// What one move did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MoveReport {
    /// Orders that left the hot store for the archive.
    pub moved: u64,
    /// Orders that changed while they were being moved: they stay in the
    /// hot store (their archived copy counts for nothing while they are
    /// there) and move on a later run.
    pub changed: u64,
    /// Frames appended.
    pub frames: u64,
    /// Bytes appended to the archive files.
    pub bytes: u64,
    /// The months written to.
    pub months: Vec<String>,
    /// Months whose file could not be written (the reason is logged; their
    /// orders stay in the hot store).
    pub failed_months: Vec<String>,
}

/// Whether an order has ended by `cutoff_ms`: closed, or paid with every
/// refund ended and every webhook delivered (or given up), and nothing of
/// it changed since `cutoff_ms`.
pub fn is_ended(order: &Order, refunds: &[Refund], deliveries: &[Delivery], cutoff_ms: i64) -> bool {
    (order.status == OrderStatus::Closed || order.status.is_paid())
        && order.refund_pending_fee == 0
        && order.updated_at < cutoff_ms
        && refunds.iter().all(|r| r.status.is_end() && r.updated_at < cutoff_ms)
        && deliveries.iter().all(|d| d.state != DeliveryState::Pending)
}

/// An order on its way: what is archived, and the change-feed keys that
/// name it (found by a scan, removed with it).
#[derive(Clone)]
struct Moving {
    archived: ArchivedOrder,
    feed: Vec<Vec<u8>>,
}

/// A month's orders waiting for their frame, and their size.
#[derive(Default)]
struct Batch {
    orders: Vec<Moving>,
    bytes: usize,
}

impl Archive {
    /// Moves every order that ended before `cutoff_ms` to the archive
    /// (`now_ms` is recorded as when). One move at a time.
    pub async fn move_ended(&self, store: &Store, cutoff_ms: i64, now_ms: i64) -> Result<MoveReport, ArchiveError> {
        let _one = self.inner.moving.lock().await;
        let started = std::time::Instant::now();
        let mut report = MoveReport::default();
        let mut batches: BTreeMap<String, Batch> = BTreeMap::new();
        let mut cursor: Option<String> = None;
        loop {
            let after = cursor.take();
            let (found, next) = store.read(move |s| ended_page(s, after.as_deref(), cutoff_ms, now_ms)).await?;
            for moving in found {
                let month = month_of(moving.archived.order.created_at);
                let size = moving.archived.order.encode().len()
                    + moving.archived.notifies.iter().map(|n| n.raw.len() + 512).sum::<usize>();
                let batch = batches.entry(month.clone()).or_default();
                batch.bytes += size;
                batch.orders.push(moving);
                if batch.orders.len() >= frame::MAX_ENTRIES || batch.bytes >= frame::MAX_BODY_BYTES {
                    let full = batches.remove(&month).expect("just filled");
                    self.flush(store, &month, full, &mut report).await?;
                }
            }
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        for (month, batch) in batches {
            self.flush(store, &month, batch, &mut report).await?;
        }
        report.months.sort();
        report.months.dedup();
        if report.moved > 0 || report.changed > 0 || !report.failed_months.is_empty() {
            tracing::info!(
                moved = report.moved, changed = report.changed, frames = report.frames, bytes = report.bytes,
                months = ?report.months, failed = ?report.failed_months, ms = started.elapsed().as_millis() as u64,
                "archive: ended orders moved out of the hot store"
            );
        }
        Ok(report)
    }

    /// Appends one month's batch as a frame, commits its index, then
    /// deletes the orders from the hot store.
    async fn flush(
        &self,
        store: &Store,
        month: &str,
        batch: Batch,
        report: &mut MoveReport,
    ) -> Result<(), ArchiveError> {
        if batch.orders.is_empty() {
            return Ok(());
        }
        let entries: Vec<Entry> = batch.orders.iter().map(|m| m.archived.to_entry()).collect();
        let (archive, name) = (self.clone(), month.to_owned());
        let appended = tokio::task::spawn_blocking(move || {
            archive.make_dir()?;
            archive.month(&name).append(&entries)
        })
        .await
        .unwrap_or_else(|e| Err(ArchiveError::Io { path: month.to_owned(), source: std::io::Error::other(e) }));
        let bytes = match appended {
            Ok(bytes) => bytes,
            Err(e) => {
                // Nothing left the hot store: the orders wait for the next run.
                tracing::error!(error = %e, month, "archive: cannot append to the month's file; its orders stay");
                report.failed_months.push(month.to_owned());
                return Ok(());
            }
        };
        report.frames += 1;
        report.bytes += bytes;
        report.months.push(month.to_owned());
        for chunk in batch.orders.chunks(DELETE_BATCH) {
            let chunk = chunk.to_vec();
            let (removed, changed) = store
                .write(DELETE_BATCH * 1024, move |tx, _| {
                    let mut counts = (0u64, 0u64);
                    for moving in &chunk {
                        match forget(tx, moving)? {
                            true => counts.0 += 1,
                            false => counts.1 += 1,
                        }
                    }
                    Ok(counts)
                })
                .await?;
            report.moved += removed;
            report.changed += changed;
        }
        Ok(())
    }

    /// Makes the archive's folder (and makes its name durable).
    fn make_dir(&self) -> Result<(), ArchiveError> {
        let dir = self.dir();
        if dir.is_dir() {
            return Ok(());
        }
        let io = |source| ArchiveError::Io { path: dir.display().to_string(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        index::sync_dir(dir.parent().expect("the archive is in the data directory")).map_err(io)
    }

    /// Moves what is due every day, on `clock`, for as long as it runs: the
    /// first time ten minutes after start-up, then every 24 hours (and
    /// whenever the clock is moved, which tests do).
    pub async fn keep_moving(self, store: Store, after_days: u32, clock: Arc<Clock>) {
        const FIRST_AFTER: i64 = 10 * 60_000;
        let mut next = clock.now_ms() + FIRST_AFTER;
        loop {
            while clock.now_ms() < next {
                let wait = Duration::from_millis((next - clock.now_ms()).clamp(0, 3_600_000) as u64);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = clock.moved() => {}
                }
            }
            let now = clock.now_ms();
            if let Err(e) = self.move_ended(&store, now - i64::from(after_days) * DAY_MS, now).await {
                tracing::warn!(error = %e, "archive: the daily move failed; it runs again tomorrow");
            }
            next = now + DAY_MS;
        }
    }
}

/// One page of orders created before `cutoff_ms` (newest first, after
/// `cursor`): the ended ones with what belongs to them, and where the next
/// page starts.
fn ended_page(
    store: &Store,
    cursor: Option<&str>,
    cutoff_ms: i64,
    now_ms: i64,
) -> Result<(Vec<Moving>, Option<String>), StoreError> {
    let filter = OrderFilter { to_ms: Some(cutoff_ms), ..OrderFilter::default() };
    let page = store.list_orders(&filter, cursor, PAGE)?;
    let mut found = Vec::new();
    for order in page.items {
        let quick = (order.status == OrderStatus::Closed || order.status.is_paid())
            && order.updated_at < cutoff_ms
            && order.refund_pending_fee == 0
            && index::key_of(&order.out_trade_no).is_some();
        if !quick {
            continue;
        }
        let no = order.out_trade_no.clone();
        let refunds = store.refunds_for_order(&no)?;
        let deliveries = store.deliveries_for_order(&no)?;
        if !is_ended(&order, &refunds, &deliveries, cutoff_ms) {
            continue;
        }
        let mut notifies = Vec::new();
        let mut after = None;
        loop {
            let page = store.notifies_for_order(&no, after, 200)?;
            notifies.extend(page.items);
            match page.next.and_then(|n| n.parse().ok()) {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let feed = feed_keys(store, &order, &deliveries)?;
        found.push(Moving {
            archived: ArchivedOrder { order, notifies, refunds, deliveries, archived_at: now_ms },
            feed,
        });
    }
    Ok((found, page.next))
}

/// The change-feed keys that name a platform's order: its changes have ids
/// from its sequence number (its creation) to its last event's.
fn feed_keys(store: &Store, order: &Order, deliveries: &[Delivery]) -> Result<Vec<Vec<u8>>, StoreError> {
    let Some((platform, _)) = order.source.platform() else { return Ok(Vec::new()) };
    let last = deliveries.iter().map(|d| d.id).max().unwrap_or(order.seq).max(order.seq);
    let trees = store.trees()?;
    let range = prefixed_key(platform, &order.seq.to_be_bytes())..=prefixed_key(platform, &last.to_be_bytes());
    let mut keys = Vec::new();
    for entry in trees.platform_changes.range(range).take(FEED_SCAN_LIMIT) {
        let (key, no) = entry?;
        if no.as_ref() == order.out_trade_no.as_bytes() {
            keys.push(key.to_vec());
        }
    }
    Ok(keys)
}

/// Deletes an archived order and everything of it from the hot store, in
/// the writer's transaction, if nothing of it changed since it was read
/// (else false, and nothing is touched). Mirrors [`Tx::insert_order`] and
/// the refund, notify and outbox writes: a tree they write an order into
/// is a tree this removes it from.
fn forget(tx: &Tx, moving: &Moving) -> TxResult<bool> {
    let ArchivedOrder { order, notifies, refunds, deliveries, .. } = &moving.archived;
    let no = order.out_trade_no.as_str();
    if tx.get_order(no)?.as_ref() != Some(order) {
        return Ok(false);
    }
    for refund in refunds {
        let now = tx.refunds.get(refund.out_refund_no.as_bytes())?;
        if now.map(|b| Refund::decode(&b)).transpose().map_err(tx::abort)?.as_ref() != Some(refund) {
            return Ok(false);
        }
    }
    for delivery in deliveries {
        let now = tx.outbox.get(delivery.id.to_be_bytes())?;
        if now.map(|b| Delivery::decode(&b)).transpose().map_err(tx::abort)?.as_ref() != Some(delivery) {
            return Ok(false);
        }
    }
    let time = time_key(order);
    tx.orders.remove(no.as_bytes())?;
    if let Some(key) = due_key(order) {
        tx.due.remove(key)?;
    }
    tx.by_time.remove(&time[..])?;
    tx.by_status.remove(&status_key(order.status, &time)[..])?;
    tx.by_openid.remove(tx::openid_key(&order.openid, &time))?;
    if let Some(id) = &order.transaction_id {
        if tx.by_tx.get(id.as_bytes())?.as_deref() == Some(no.as_bytes()) {
            tx.by_tx.remove(id.as_bytes())?;
        }
    }
    let count = status_count_key(order.status);
    let left = read_u64(tx.stats.get(count)?.as_deref(), 0).saturating_sub(1);
    tx.stats.insert(&count[..], &left.to_be_bytes()[..])?;
    if let Some((platform, order_id)) = order.source.platform() {
        let key = prefixed_key(platform, order_id.as_bytes());
        if tx.platform_orders.get(&key)?.as_deref() == Some(no.as_bytes()) {
            tx.platform_orders.remove(key)?;
        }
    }
    for key in &moving.feed {
        tx.platform_changes.remove(key.as_slice())?;
    }
    for notify in notifies {
        tx.remove_notify(notify.id)?;
    }
    for refund in refunds {
        let number = refund.out_refund_no.as_bytes();
        tx.refunds.remove(number)?;
        tx.refunds_by_order.remove(prefixed_key(no, number))?;
        tx.refunds_processing.remove(number)?;
    }
    for delivery in deliveries {
        let id = delivery.id.to_be_bytes();
        tx.outbox.remove(&id)?;
        tx.outbox_by_order.remove(prefixed_key(no, &id))?;
    }
    // Finished deliveries have no place in the pending queue: nothing to remove there.
    Ok(true)
}

/// The ended orders among the first page before `cutoff_ms` (the tests
/// of what a move does between its steps).
#[cfg(test)]
pub(super) fn ended_page_for_tests(
    store: &Store,
    cutoff_ms: i64,
    now_ms: i64,
) -> Result<Vec<ArchivedOrder>, StoreError> {
    Ok(ended_page(store, None, cutoff_ms, now_ms)?.0.into_iter().map(|m| m.archived).collect())
}

/// Deletes `orders` as a move's last step does: (removed, changed).
#[cfg(test)]
pub(super) async fn forget_for_tests(store: &Store, orders: Vec<ArchivedOrder>) -> (u64, u64) {
    let moving: Vec<Moving> = orders.into_iter().map(|archived| Moving { archived, feed: Vec::new() }).collect();
    store
        .write(0, move |tx, _| {
            let mut counts = (0, 0);
            for m in &moving {
                if forget(tx, m)? {
                    counts.0 += 1
                } else {
                    counts.1 += 1
                }
            }
            Ok(counts)
        })
        .await
        .unwrap()
}
