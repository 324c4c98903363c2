//! Read-side queries for the admin page: filtered, paged order lists,
//! search, and the counters behind the overview.

use serde::Serialize;

use super::tx::{day_key, prefixed_key, read_u64, status_count_key, time_key_of, PAID_DAY, REJECTED_DAY};
use super::{Order, OrderStatus, Page, Store, StoreError};

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

    /// Collects a page from index entries whose keys end in a time key.
    fn page(
        &self,
        entries: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
        prefix_len: usize,
        limit: usize,
        keep: impl Fn(&Order) -> bool,
    ) -> Result<Page<Order>, StoreError> {
        let mut items = Vec::with_capacity(limit.min(1000));
        let mut last_key = None;
        for entry in entries {
            let (key, no) = entry?;
            let Some(order) = self.order(&String::from_utf8_lossy(&no))? else { continue };
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
}
