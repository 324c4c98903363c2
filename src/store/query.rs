//! Reads: an order by its number, filtered, paged order lists and search
//! for the admin page, the counters behind the overview, the lifecycle's
//! due orders, and the notify log's pages. None of them waits for the
//! writer, and none scans more than the page it returns (or the counters).

use serde::Serialize;

use super::tx::{day_key, prefixed_key, read_u64, status_count_key, time_key_of, PAID_DAY, REJECTED_DAY};
use super::{schedule, NotifyRecord, Order, OrderStatus, Page, Store, StoreError};

/// Which orders a listing shows. Times are unix ms; `to_ms` is exclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderFilter {
    /// Only this status.
    pub status: Option<OrderStatus>,
    /// Created at or after.
    pub from_ms: Option<i64>,
    /// Created before.
    pub to_ms: Option<i64>,
}

impl OrderFilter {
    /// Only orders of one status.
    pub fn status(status: OrderStatus) -> OrderFilter {
        OrderFilter { status: Some(status), ..OrderFilter::default() }
    }

    fn accepts(&self, order: &Order) -> bool {
        self.status.is_none_or(|s| s == order.status)
            && self.from_ms.is_none_or(|from| order.created_at >= from)
            && self.to_ms.is_none_or(|to| order.created_at < to)
    }

    /// The time-key bounds `[lower, upper)` for this filter after `cursor`.
    fn bounds(&self, cursor: Option<&str>) -> ([u8; 16], [u8; 16]) {
        let lower = time_key_of(self.from_ms.unwrap_or(0), 0);
        let mut upper = self.to_ms.map_or([0xff; 16], |to| time_key_of(to, 0));
        if let Some(c) = cursor.and_then(|c| hex::decode(c).ok()).and_then(|c| <[u8; 16]>::try_from(c).ok()) {
            upper = upper.min(c);
        }
        (lower, upper)
    }
}

/// Paid orders and amount on one Beijing calendar day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DayTotal {
    /// Days since 1970-01-01 (Beijing).
    pub day: i64,
    /// Orders paid.
    pub count: u64,
    /// Fen received.
    pub fen: u64,
}

/// The largest number of index entries one search page may skip over.
const SEARCH_SCAN_LIMIT: usize = 10_000;

impl Store {
    /// The order with this number.
    pub fn order(&self, out_trade_no: &str) -> Result<Option<Order>, StoreError> {
        self.trees()?.order(out_trade_no)
    }

    /// Orders newest first, filtered, starting after `cursor`. Reads only the
    /// page (plus one entry): the cost does not grow with the store.
    pub fn list_orders(
        &self,
        filter: &OrderFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<Order>, StoreError> {
        let prefix: Vec<u8> = filter.status.map(|s| vec![s.index_byte()]).unwrap_or_default();
        let trees = self.trees()?;
        let index = if filter.status.is_some() { &trees.orders_by_status } else { &trees.orders_by_time };
        let (lower, upper) = filter.bounds(cursor);
        let range = [&prefix[..], &lower].concat()..[&prefix[..], &upper].concat();
        self.page(index.range(range).rev(), prefix.len(), limit, |_| true)
    }

    /// Orders matching `query`: an exact out_trade_no or transaction_id, or
    /// every order of an openid (newest first, paged), within `filter`.
    pub fn search_orders(
        &self,
        query: &str,
        filter: &OrderFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<Order>, StoreError> {
        let query = query.trim();
        let exact = match self.order(query)? {
            Some(order) => Some(order),
            None => match self.trees()?.orders_by_tx.get(query.as_bytes())? {
                Some(no) => self.order(&String::from_utf8_lossy(&no))?,
                None => None,
            },
        };
        if let Some(order) = exact {
            let items = if cursor.is_none() && filter.accepts(&order) { vec![order] } else { Vec::new() };
            return Ok(Page { items, next: None });
        }
        let prefix = prefixed_key(query, &[]);
        let (lower, upper) = filter.bounds(cursor);
        let range = [&prefix[..], &lower].concat()..[&prefix[..], &upper].concat();
        let trees = self.trees()?;
        let entries = trees.orders_by_openid.range(range).rev().take(SEARCH_SCAN_LIMIT);
        self.page(entries, prefix.len(), limit, |order| filter.accepts(order))
    }

    /// Collects a page from index entries whose keys end in a time key. An
    /// entry's value is the order's number, or empty where the number is
    /// found in `orders_by_time` under that time key.
    fn page(
        &self,
        entries: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
        prefix_len: usize,
        limit: usize,
        keep: impl Fn(&Order) -> bool,
    ) -> Result<Page<Order>, StoreError> {
        let trees = self.trees()?;
        let mut items = Vec::with_capacity(limit.min(1000));
        let mut last_key = None;
        for entry in entries {
            let (key, value) = entry?;
            let no = match value.is_empty() {
                false => value,
                true => match trees.orders_by_time.get(&key[prefix_len..])? {
                    Some(no) => no,
                    None => continue,
                },
            };
            let Some(order) = trees.order(&String::from_utf8_lossy(&no))? else { continue };
            if !keep(&order) {
                continue;
            }
            if items.len() == limit {
                // One more exists: the page ends at the last item taken.
                return Ok(Page { items, next: last_key });
            }
            items.push(order);
            last_key = Some(hex::encode(&key[prefix_len..]));
        }
        Ok(Page { items, next: None })
    }

    /// How many orders are stored, from the maintained per-status counters
    /// (never a scan: this is on the admin page and in `/metrics`).
    pub fn order_count(&self) -> Result<u64, StoreError> {
        Ok(self.status_counts()?.iter().map(|(_, n)| n).sum())
    }

    /// How many orders are in each status.
    pub fn status_counts(&self) -> Result<Vec<(OrderStatus, u64)>, StoreError> {
        let trees = self.trees()?;
        OrderStatus::ALL
            .into_iter()
            .map(|s| Ok((s, read_u64(trees.stats.get(status_count_key(s))?.as_deref(), 0))))
            .collect()
    }

    /// Paid totals for each Beijing day in `first..=last` (days since the epoch).
    pub fn paid_by_day(&self, first: i64, last: i64) -> Result<Vec<DayTotal>, StoreError> {
        let trees = self.trees()?;
        (first..=last)
            .map(|day| {
                let value = trees.stats.get(day_key(PAID_DAY, day))?;
                Ok(DayTotal { day, count: read_u64(value.as_deref(), 0), fen: read_u64(value.as_deref(), 8) })
            })
            .collect()
    }

    /// Rejected notifies received in the Beijing days `first..=last`.
    pub fn rejected_notifies(&self, first: i64, last: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        let trees = self.trees()?;
        for day in first..=last {
            total += read_u64(trees.stats.get(day_key(REJECTED_DAY, day))?.as_deref(), 0);
        }
        Ok(total)
    }

    /// Orders of `queue` due at or before `now`, earliest first, at most
    /// `limit`: (due time, out_trade_no). A range scan of the due index:
    /// its cost is what is due, not how many orders are open.
    pub fn due_orders(&self, queue: schedule::Queue, now: i64, limit: usize) -> Result<Vec<(i64, String)>, StoreError> {
        let trees = self.trees()?;
        let mut out = Vec::new();
        for entry in trees.orders_due.range(schedule::due_range(queue, now)).take(limit) {
            let (key, _) = entry?;
            out.extend(schedule::parse_due_key(&key));
        }
        Ok(out)
    }

    /// How many open orders the due index holds (tests, migration checks).
    pub fn due_index_len(&self) -> Result<usize, StoreError> {
        Ok(self.trees()?.orders_due.len())
    }

    /// The notify log, newest first, starting after `cursor`.
    pub fn list_notifies(&self, cursor: Option<u64>, limit: usize) -> Result<Page<NotifyRecord>, StoreError> {
        let end = cursor.unwrap_or(u64::MAX).to_be_bytes();
        let mut items = Vec::with_capacity(limit.min(1000));
        let trees = self.trees()?;
        for entry in trees.notifies.range(..end).rev().take(limit) {
            let (_, bytes) = entry?;
            items.push(NotifyRecord::decode(&bytes)?);
        }
        let next = (items.len() == limit).then(|| items.last().map(|r| r.id.to_string())).flatten();
        Ok(Page { items, next })
    }

    /// The verified notifies of an order, newest first, starting after
    /// `cursor` (unverified ones only claim an order and are not linked).
    pub fn notifies_for_order(
        &self,
        out_trade_no: &str,
        cursor: Option<u64>,
        limit: usize,
    ) -> Result<Page<NotifyRecord>, StoreError> {
        let prefix = prefixed_key(out_trade_no, &[]);
        let end = prefixed_key(out_trade_no, &cursor.unwrap_or(u64::MAX).to_be_bytes());
        let mut items = Vec::with_capacity(limit.min(1000));
        let trees = self.trees()?;
        for entry in trees.notifies_by_order.range(prefix.clone()..end).rev() {
            let (key, _) = entry?;
            if items.len() == limit {
                let next = items.last().map(|r: &NotifyRecord| r.id.to_string());
                return Ok(Page { items, next });
            }
            if let Some(bytes) = trees.notifies.get(&key[prefix.len()..])? {
                items.push(NotifyRecord::decode(&bytes)?);
            }
        }
        Ok(Page { items, next: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{notify_at, open, order};
    use crate::store::{notify, Verdict};

    #[tokio::test]
    async fn pages_newest_first_with_status_filter() {
        let (_dir, store) = open();
        for i in 0..25 {
            store.insert_order(order(&format!("ORDER{i:03}"), 1000 + i)).await.unwrap().unwrap();
        }
        for i in (0..25).step_by(5) {
            store.update_order(&format!("ORDER{i:03}"), |o| o.status = OrderStatus::Paid).await.unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store.list_orders(&OrderFilter::default(), cursor.as_deref(), 10).unwrap();
            seen.extend(page.items.iter().map(|o| o.out_trade_no.clone()));
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let expected: Vec<_> = (0..25).rev().map(|i| format!("ORDER{i:03}")).collect();
        assert_eq!(seen, expected);

        let paid = store.list_orders(&OrderFilter::status(OrderStatus::Paid), None, 3).unwrap();
        let names: Vec<_> = paid.items.iter().map(|o| o.out_trade_no.as_str()).collect();
        assert_eq!(names, ["ORDER020", "ORDER015", "ORDER010"]);
        let rest = store.list_orders(&OrderFilter::status(OrderStatus::Paid), paid.next.as_deref(), 3).unwrap();
        assert_eq!(rest.items.len(), 2);
        assert!(rest.next.is_none());
        assert_eq!(store.list_orders(&OrderFilter::status(OrderStatus::Created), None, 100).unwrap().items.len(), 20);
        assert_eq!(store.order_count().unwrap(), 25);
    }

    /// Only verified notifies are linked to their order, and its list pages.
    #[tokio::test]
    async fn unverified_notifies_only_claim_their_order() {
        let (_dir, store) = open();
        store.insert_order(order("ORDER001", 1)).await.unwrap().unwrap();
        let junk = vec![b'j'; 60 * 1024];
        for i in 0..30 {
            let record = notify_at("ORDER001", i, false, &junk);
            store.record_notify(record, |_| (Verdict::Rejected, "signature".repeat(200), ())).await.unwrap();
        }
        for i in 0..25 {
            store
                .record_notify(notify_at("ORDER001", 100 + i, true, b"<xml/>"), |_| {
                    (Verdict::Duplicate, "dup".into(), ())
                })
                .await
                .unwrap();
        }
        let first = store.notifies_for_order("ORDER001", None, 20).unwrap();
        assert_eq!(first.items.len(), 20);
        assert!(first.items.iter().all(|r| r.verified));
        let rest = store.notifies_for_order("ORDER001", first.next.map(|c| c.parse().unwrap()), 20).unwrap();
        assert_eq!((rest.items.len(), rest.next), (5, None));
        let junk_entry = &store.list_notifies(None, 100).unwrap().items[25];
        assert!(!junk_entry.verified);
        assert_eq!((junk_entry.raw.len(), junk_entry.size), (notify::REFUSED_KEPT_BYTES, 60 * 1024));
        assert!(junk_entry.reason.len() <= notify::MAX_REASON_BYTES + 3, "{}", junk_entry.reason.len());
        let (count, bytes) = store.notify_log_size().unwrap();
        assert_eq!(count, 55);
        assert!(bytes < 30 * 2048 + 25 * 512, "{bytes} bytes for 55 small records");
    }
}
