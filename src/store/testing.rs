//! What the store's unit tests share: a store in a temporary directory, a
//! plain order, a notify.

use crate::domain::Mode;

use super::{NotifyRecord, Order, OrderContents, Store};

/// A live store in a new temporary directory (kept while the guard lives).
pub(super) fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Mode::Live).unwrap();
    (dir, store)
}

/// An order of 100 fen for openid `o`, created at `at`.
pub(super) fn order(no: &str, at: i64) -> Order {
    let contents = OrderContents { total_fee: 100, body: "b".into(), attach: "".into(), openid: "o".into() };
    Order::new(no.into(), contents, false, at)
}

/// A notify for order `no` received at `at`.
pub(super) fn notify_at(no: &str, at: i64, verified: bool, body: &[u8]) -> NotifyRecord {
    NotifyRecord { out_trade_no: Some(no.into()), verified, ..NotifyRecord::received(body, at, None, false) }
}
