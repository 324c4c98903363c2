//! Key encodings and the one transaction that keeps orders, indexes,
//! statistics and the notify log consistent.

use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::codec::CodecError;
use super::order::MAX_ORDER_BYTES;
use super::schedule::due_key;
use super::{NotifyRecord, Order, OrderStatus, Verdict};

/// The largest encoded notify record the store writes. A verified notify
/// is kept whole: its body is bounded by the notify route's limit (64 KiB),
/// plus, for API v3, the decrypted resource (smaller than its base64
/// ciphertext in that body); an unverified one keeps only its first kilobyte.
pub const MAX_NOTIFY_BYTES: usize = 160 * 1024;

/// Refuses a record over its kind's maximum: never truncated, never written.
pub(super) fn within(bytes: Vec<u8>, max: usize, what: &'static str) -> TxResult<Vec<u8>> {
    match bytes.len() <= max {
        true => Ok(bytes),
        false => Err(abort(CodecError::Overflow(what))),
    }
}

/// The order as stored, if it is within [`MAX_ORDER_BYTES`].
fn encoded(order: &Order) -> TxResult<Vec<u8>> {
    within(order.encode(), MAX_ORDER_BYTES, "the order record's size limit (store::order::MAX_ORDER_BYTES)")
}

pub(super) type TxResult<T> = Result<T, ConflictableTransactionError<CodecError>>;

pub use crate::clock::{beijing_day, beijing_day_start, day_string, parse_day};

/// `created_ms ‖ seq`: orders by time, unique.
pub(super) fn time_key(order: &Order) -> [u8; 16] {
    time_key_of(order.created_at, order.seq)
}

pub(super) fn time_key_of(created_ms: i64, seq: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&(created_ms.max(0) as u64).to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub(super) fn status_key(status: OrderStatus, time: &[u8; 16]) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = status.index_byte();
    key[1..].copy_from_slice(time);
    key
}

/// `openid ‖ 0x00 ‖ created_ms ‖ seq`: the payer index's key. Its value is
/// empty; the order's number is in `orders_by_time` under the time key.
pub(super) fn openid_key(openid: &str, time: &[u8; 16]) -> Vec<u8> {
    prefixed_key(openid, time)
}

/// `text ‖ 0x00 ‖ suffix`: an index entry under a text prefix.
pub(super) fn prefixed_key(text: &str, suffix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(text.len() + 1 + suffix.len());
    key.extend_from_slice(text.as_bytes());
    key.push(0);
    key.extend_from_slice(suffix);
    key
}

pub(super) fn status_count_key(status: OrderStatus) -> [u8; 2] {
    [b's', status.index_byte()]
}

/// Paid orders per day (`d`) and rejected notifies per day (`r`).
pub(super) fn day_key(kind: u8, day: i64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = kind;
    key[1..].copy_from_slice(&day.to_be_bytes());
    key
}

pub(super) const PAID_DAY: u8 = b'd';
pub(super) const REJECTED_DAY: u8 = b'r';

/// The notify log's size: record count and encoded bytes.
pub(super) const NOTIFY_LOG_SIZE: &[u8] = b"n";

/// Two counters in one value.
pub(super) fn pair(a: u64, b: u64) -> [u8; 16] {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&a.to_be_bytes());
    value[8..].copy_from_slice(&b.to_be_bytes());
    value
}

pub(super) fn read_u64(bytes: Option<&[u8]>, at: usize) -> u64 {
    bytes.and_then(|b| b.get(at..at + 8)).map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

/// The trees of one transaction.
pub(super) struct Tx<'a> {
    pub orders: &'a TransactionalTree,
    pub by_time: &'a TransactionalTree,
    pub by_status: &'a TransactionalTree,
    pub by_tx: &'a TransactionalTree,
    pub by_openid: &'a TransactionalTree,
    /// The lifecycle's work: `queue ‖ due ‖ out_trade_no` (see [`super::schedule`]).
    pub due: &'a TransactionalTree,
    pub stats: &'a TransactionalTree,
    pub notifies: &'a TransactionalTree,
    pub notifies_by_order: &'a TransactionalTree,
    pub platform_orders: &'a TransactionalTree,
    pub platform_changes: &'a TransactionalTree,
    pub nonces: &'a TransactionalTree,
    pub outbox: &'a TransactionalTree,
    pub outbox_pending: &'a TransactionalTree,
    pub outbox_by_order: &'a TransactionalTree,
    pub wechat_certificates: &'a TransactionalTree,
    pub refunds: &'a TransactionalTree,
    pub refunds_by_order: &'a TransactionalTree,
    pub refunds_processing: &'a TransactionalTree,
    pub bills: &'a TransactionalTree,
    pub bill_files: &'a TransactionalTree,
}

pub(super) fn abort(e: CodecError) -> ConflictableTransactionError<CodecError> {
    ConflictableTransactionError::Abort(e)
}

impl Tx<'_> {
    pub fn get_order(&self, out_trade_no: &str) -> TxResult<Option<Order>> {
        match self.orders.get(out_trade_no.as_bytes())? {
            Some(bytes) => Ok(Some(Order::decode(&bytes).map_err(abort)?)),
            None => Ok(None),
        }
    }

    fn bump_status(&self, status: OrderStatus, delta: i64) -> TxResult<()> {
        let key = status_count_key(status);
        let now = self.stats.get(key)?;
        let count = (read_u64(now.as_deref(), 0) as i64 + delta).max(0) as u64;
        self.stats.insert(&key[..], &count.to_be_bytes()[..])?;
        Ok(())
    }

    fn add_paid(&self, order: &Order) -> TxResult<()> {
        let key = day_key(PAID_DAY, beijing_day(order.paid_at.unwrap_or(order.updated_at)));
        let now = self.stats.get(key)?;
        // Checked: a sum that would wrap is refused, never stored wrong.
        let fen = read_u64(now.as_deref(), 8)
            .checked_add(order.total_fee)
            .ok_or_else(|| abort(CodecError::Overflow("the day's paid total")))?;
        self.stats.insert(&key[..], &pair(read_u64(now.as_deref(), 0) + 1, fen)[..])?;
        Ok(())
    }

    /// Writes a new order with all its index entries.
    pub fn insert_order(&self, order: &Order) -> TxResult<()> {
        let time = time_key(order);
        self.orders.insert(order.out_trade_no.as_bytes(), encoded(order)?)?;
        if let Some(key) = due_key(order) {
            self.due.insert(key, &[])?;
        }
        self.by_time.insert(&time[..], order.out_trade_no.as_bytes())?;
        self.by_status.insert(&status_key(order.status, &time)[..], &[])?;
        self.by_openid.insert(openid_key(&order.openid, &time), &[])?;
        self.bump_status(order.status, 1)?;
        if order.status.is_paid() {
            self.paid(order)?;
        }
        self.index_platform_order(order)
    }

    fn paid(&self, order: &Order) -> TxResult<()> {
        if let Some(tx) = &order.transaction_id {
            self.by_tx.insert(tx.as_bytes(), order.out_trade_no.as_bytes())?;
        }
        self.add_paid(order)
    }

    /// Writes a changed order, moving its index entries and statistics;
    /// `id` is the change's own (see [`super::writer::Change::apply`]).
    pub fn put_order(&self, order: &Order, before: &Order, id: u64) -> TxResult<()> {
        self.orders.insert(order.out_trade_no.as_bytes(), encoded(order)?)?;
        let (due_before, due_now) = (due_key(before), due_key(order));
        if due_before != due_now {
            if let Some(key) = due_before {
                self.due.remove(key)?;
            }
            if let Some(key) = due_now {
                self.due.insert(key, &[])?;
            }
        }
        let time = time_key(order);
        if before.openid != order.openid {
            // A platform's order learns its payer when mini-program B pays it.
            self.by_openid.remove(openid_key(&before.openid, &time))?;
            self.by_openid.insert(openid_key(&order.openid, &time), &[])?;
        }
        if before.status != order.status {
            self.platform_order_changed(order, id)?;
            self.by_status.remove(&status_key(before.status, &time)[..])?;
            self.by_status.insert(&status_key(order.status, &time)[..], &[])?;
            self.bump_status(before.status, -1)?;
            self.bump_status(order.status, 1)?;
            if order.status == OrderStatus::Paid {
                self.paid(order)?;
            }
        }
        Ok(())
    }

    /// Removes an order that never reached WeChat's books, with every index
    /// entry and count it had. Only for an open order that was never paid:
    /// nothing else (notifies, refunds, platform feeds) can refer to it.
    pub fn remove_order(&self, order: &Order) -> TxResult<()> {
        debug_assert!(!order.status.is_paid() && order.source.platform().is_none());
        let time = time_key(order);
        self.orders.remove(order.out_trade_no.as_bytes())?;
        if let Some(key) = due_key(order) {
            self.due.remove(key)?;
        }
        self.by_time.remove(&time[..])?;
        self.by_status.remove(&status_key(order.status, &time)[..])?;
        self.by_openid.remove(openid_key(&order.openid, &time))?;
        self.bump_status(order.status, -1)
    }

    /// Counts a rejected notify on its day.
    pub fn count_rejected(&self, record: &NotifyRecord) -> TxResult<()> {
        let key = day_key(REJECTED_DAY, beijing_day(record.received_at));
        let count = read_u64(self.stats.get(key)?.as_deref(), 0) + 1;
        self.stats.insert(&key[..], &count.to_be_bytes()[..])?;
        Ok(())
    }

    /// Appends a notify to the log (and counts it if rejected). Only a
    /// verified notify is linked to the order it names.
    pub fn append_notify(&self, record: &NotifyRecord) -> TxResult<()> {
        let encoded = within(record.encode(), MAX_NOTIFY_BYTES, "the notify record's size limit (MAX_NOTIFY_BYTES)")?;
        self.index_notify(record, encoded.len())?;
        self.notifies.insert(&record.id.to_be_bytes(), encoded)?;
        Ok(())
    }

    /// Counts and links a notify stored as `encoded_len` bytes.
    pub fn index_notify(&self, record: &NotifyRecord, encoded_len: usize) -> TxResult<()> {
        self.resize_log(1, encoded_len as i64)?;
        if record.verdict == Verdict::Rejected {
            self.count_rejected(record)?;
        }
        if let (Some(no), true) = (&record.out_trade_no, record.verified) {
            self.notifies_by_order.insert(prefixed_key(no, &record.id.to_be_bytes()), &[])?;
        }
        Ok(())
    }

    /// Removes a notify from the log (retention); false if it was gone.
    pub fn remove_notify(&self, id: u64) -> TxResult<bool> {
        let Some(encoded) = self.notifies.remove(&id.to_be_bytes())? else { return Ok(false) };
        self.resize_log(-1, -(encoded.len() as i64))?;
        let record = NotifyRecord::decode(&encoded).map_err(abort)?;
        if let Some(no) = &record.out_trade_no {
            self.notifies_by_order.remove(prefixed_key(no, &id.to_be_bytes()))?;
        }
        Ok(true)
    }

    fn resize_log(&self, count: i64, bytes: i64) -> TxResult<()> {
        let now = self.stats.get(NOTIFY_LOG_SIZE)?;
        let add = |at: usize, delta: i64| read_u64(now.as_deref(), at).saturating_add_signed(delta);
        self.stats.insert(NOTIFY_LOG_SIZE, &pair(add(0, count), add(8, bytes))[..])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beijing_days() {
        // 2026-01-01 15:59:59 UTC is 23:59:59 in Beijing; a second later it is the 2nd.
        let ms = time::macros::datetime!(2026-01-01 15:59:59 UTC).unix_timestamp() * 1000;
        let day = beijing_day(ms);
        assert_eq!(beijing_day(ms + 1000), day + 1);
        assert_eq!(beijing_day_start(day + 1), ms + 1000);
    }
}
