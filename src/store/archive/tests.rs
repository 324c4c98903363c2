//! Tests of the archive against a real store in a temporary directory:
//! what moves and what stays, that nothing of a moved order is left in
//! any tree, every point a move can stop at, and damage.

use super::*;
use crate::store::refund::RefundNews;
use crate::store::testing::{notify_at, open, order};
use crate::store::{
    Created, DeliveryState, OrderSource, OrderStatus, Payment, Refund, RefundCreated, RefundStatus, Verdict,
};

const DAY: i64 = 86_400_000;

/// "Now" in these tests, and when their old orders were made: 500 days before.
fn now() -> i64 {
    crate::clock::now_ms()
}
fn old() -> i64 {
    now() - 500 * DAY
}
fn cutoff() -> i64 {
    now() - 400 * DAY
}

async fn paid(store: &Store, no: &str, at: i64) {
    store.insert_order(order(no, at)).await.unwrap().unwrap();
    let payment = Payment {
        transaction_id: format!("42{no}"),
        total_fee: 100,
        time_end: "20240101120000".into(),
        openid: "o".into(),
    };
    store.update_order(no, move |o| drop(o.apply_payment(&payment, at + 1000))).await.unwrap();
    for i in 0..2 {
        let record = notify_at(no, at + 1000 + i, true, b"<xml>paid</xml>");
        store.record_notify(record, |_| (Verdict::Duplicate, "dup".into(), ())).await.unwrap();
    }
}

fn refund(no: &str, number: &str, at: i64) -> Refund {
    Refund {
        out_refund_no: number.into(),
        out_trade_no: no.into(),
        amount: 30,
        reason: "r".into(),
        status: RefundStatus::Processing,
        requested_by: "admin".into(),
        platform_refund_id: None,
        refund_id: None,
        created_at: at,
        updated_at: at,
        last_result: None,
        tries: 0,
        next_query_at: at,
    }
}

async fn refunded(store: &Store, no: &str, number: &str, at: i64, end: Option<RefundStatus>) {
    assert!(matches!(store.create_refund(refund(no, number, at)).await.unwrap(), RefundCreated::New(_)));
    if let Some(status) = end {
        let news = RefundNews {
            status,
            refund_id: Some(format!("W{number}")),
            result: "SUCCESS".into(),
            now: at + 1000,
            next_query_at: 0,
            unanswered: false,
            give_up: false,
            if_still: None,
        };
        store.update_refund(number, news).await.unwrap().unwrap();
    }
}

/// Every key and value of every tree that holds `needle` (the no-trace check).
fn traces(store: &Store, needle: &str) -> Vec<String> {
    let trees = store.trees().unwrap();
    let mut found = Vec::new();
    for name in trees.db.tree_names() {
        let tree = trees.db.open_tree(&name).unwrap();
        for entry in tree.iter() {
            let (k, v) = entry.unwrap();
            let holds = |b: &[u8]| b.windows(needle.len()).any(|w| w == needle.as_bytes());
            if holds(&k) || holds(&v) {
                found.push(format!("{}: {:?}", String::from_utf8_lossy(&name), String::from_utf8_lossy(&k)));
            }
        }
    }
    found
}

/// Ended orders move with their notifies, refunds, deliveries and feed
/// entries, leaving nothing in any tree; open, recent and still-refunding
/// ones stay; a second move finds nothing more.
#[tokio::test]
async fn ended_orders_move_with_everything_and_leave_no_trace() {
    let (dir, store) = open();
    let archive = Archive::new(dir.path());
    paid(&store, "OLDPAID001", old()).await;
    refunded(&store, "OLDPAID001", "RF-OLD-01", old() + 2000, Some(RefundStatus::Success)).await;
    store.insert_order(order("OLDCLOSED1", old())).await.unwrap().unwrap();
    store.update_order("OLDCLOSED1", |o| o.close(old() + 5, "expired")).await.unwrap();
    let mut platform = order("OLDPLATF01", old());
    platform.source = OrderSource::Platform { platform: "shop-a".into(), order_id: "A-77".into() };
    assert!(matches!(store.create_platform_order(platform).await.unwrap(), Created::New(_)));
    store.update_order("OLDPLATF01", |o| o.status = OrderStatus::Paid).await.unwrap();
    store.update_order("OLDPLATF01", |o| o.updated_at = o.created_at + 9).await.unwrap();
    let delivery = store.deliveries_for_order("OLDPLATF01").unwrap()[0].id;
    // Stays: a refund still processing, a recent change, an open order.
    paid(&store, "OLDREFUND1", old()).await;
    refunded(&store, "OLDREFUND1", "RF-OLD-02", old() + 2000, None).await;
    paid(&store, "OLDBUTNEW1", old()).await;
    store.update_order("OLDBUTNEW1", |o| o.note(now(), "QUERIED", "late".into())).await.unwrap();
    store.insert_order(order("OLDOPEN001", old())).await.unwrap().unwrap();
    paid(&store, "NEWPAID001", now()).await;
    let before = store.order_count().unwrap();

    // A pending webhook keeps the platform's order hot, until it is delivered.
    let first = archive.move_ended(&store, cutoff(), now()).await.unwrap();
    assert_eq!((first.moved, first.changed), (2, 0), "{first:?}");
    assert!(store.order("OLDPLATF01").unwrap().is_some());
    store.update_delivery(delivery, |d| d.state = DeliveryState::Delivered).await.unwrap();
    let second = archive.move_ended(&store, cutoff(), now()).await.unwrap();
    assert_eq!(second.moved, 1, "{second:?}");
    assert_eq!(second.months, [month_of(old())]);

    for no in ["OLDPAID001", "OLDCLOSED1", "OLDPLATF01"] {
        assert!(store.order(no).unwrap().is_none(), "{no} left the hot store");
        assert_eq!(traces(&store, no), Vec::<String>::new(), "nothing of {no} is left in any tree");
        assert!(matches!(archive.lookup(&store, no).unwrap(), Some(Found::Archived(_))), "{no}");
    }
    assert!(traces(&store, "RF-OLD-01").is_empty() && traces(&store, "A-77").is_empty());
    for no in ["OLDREFUND1", "OLDBUTNEW1", "OLDOPEN001", "NEWPAID001"] {
        assert!(matches!(archive.lookup(&store, no).unwrap(), Some(Found::Hot(_))), "{no} stays hot");
        assert!(archive.find(no).unwrap().is_none(), "{no} is not archived");
    }
    assert_eq!(store.order_count().unwrap(), before - 3, "the status counters follow");

    let paid = archive.find("OLDPAID001").unwrap().unwrap();
    assert_eq!(paid.order.status, OrderStatus::PartiallyRefunded);
    assert_eq!(paid.notifies.len(), 2);
    assert!(paid.notifies.iter().all(|n| n.out_trade_no.as_deref() == Some("OLDPAID001")));
    assert_eq!(paid.refunds.len(), 1);
    assert_eq!((paid.refunds[0].out_refund_no.as_str(), paid.refunds[0].status), ("RF-OLD-01", RefundStatus::Success));
    let platform = archive.find("OLDPLATF01").unwrap().unwrap();
    assert_eq!(platform.deliveries.len(), 1);
    assert_eq!(store.platform_order("shop-a", "A-77").unwrap(), None);
    assert!(store.platform_changes("shop-a", 0, 100).unwrap().is_empty());
    let (count, _) = store.notify_log_size().unwrap();
    assert_eq!(count, 6, "the moved notifies left the log's counter too");

    let in_range = archive.created_in(old() - DAY, old() + DAY, 100).unwrap();
    let numbers: Vec<_> = in_range.iter().map(|a| a.order.out_trade_no.as_str()).collect();
    assert_eq!(numbers.len(), 3, "{numbers:?}");
    assert!(archive.created_in(old() + DAY, now(), 100).unwrap().is_empty());

    let again = archive.move_ended(&store, cutoff(), now()).await.unwrap();
    assert_eq!((again.moved, again.frames), (0, 0), "nothing more is due");
    let report = archive.verify().unwrap();
    assert!(!report.damaged(), "{}", report.summary());
    assert_eq!(report.files[0].orders, 3);
}

/// Every point a move can stop at: a frame beyond the committed length
/// (killed before the index), an order committed to the archive but still
/// in the hot store (killed before the delete), an index never written.
/// Each order is found exactly once, and the next move tidies up.
#[tokio::test]
async fn a_move_stopped_at_any_step_loses_nothing_and_shows_nothing_twice() {
    let (dir, store) = open();
    let archive = Archive::new(dir.path());
    for i in 0..5 {
        paid(&store, &format!("STOP{i:06}"), old() + i).await;
    }
    let month = archive.month(&month_of(old()));

    // Killed after the frame, before the index: a first move leaves no index.
    let snapshot = |no: &str| {
        let order = store.order(no).unwrap().unwrap();
        let notifies = store.notifies_for_order(no, None, 100).unwrap().items;
        ArchivedOrder { order, notifies, refunds: Vec::new(), deliveries: Vec::new(), archived_at: now() }
    };
    std::fs::create_dir_all(archive.dir()).unwrap();
    month.append(&[snapshot("STOP000000").to_entry()]).unwrap();
    std::fs::remove_file(&month.idx).unwrap();
    assert_eq!(archive.find("STOP000000").unwrap(), None, "nothing committed without an index");
    assert!(!archive.verify().unwrap().damaged());

    // Killed after the index, before the delete: in both, shown once (hot).
    month.append(&[snapshot("STOP000001").to_entry()]).unwrap();
    assert!(archive.find("STOP000001").unwrap().is_some());
    assert!(matches!(archive.lookup(&store, "STOP000001").unwrap(), Some(Found::Hot(_))));

    // Killed while appending the next frame: a torn tail.
    let mut pba = std::fs::OpenOptions::new().append(true).open(&month.pba).unwrap();
    std::io::Write::write_all(&mut pba, b"PBAF\0\0\x10\0 a frame cut short").unwrap();
    drop(pba);
    let torn = archive.verify().unwrap();
    assert!(!torn.damaged(), "{}", torn.summary());
    assert!(torn.files[0].uncommitted_bytes > 0);

    // The next move re-appends what is still hot, cuts the tail off, and
    // the index points at the newest copies.
    let report = archive.move_ended(&store, cutoff(), now()).await.unwrap();
    assert_eq!(report.moved, 5, "{report:?}");
    for i in 0..5 {
        let no = format!("STOP{i:06}");
        assert!(store.order(&no).unwrap().is_none());
        let found = archive.find(&no).unwrap().unwrap();
        assert_eq!(found.notifies.len(), 2, "{no}");
    }
    let clean = archive.verify().unwrap();
    assert!(!clean.damaged(), "{}", clean.summary());
    assert_eq!((clean.files[0].orders, clean.files[0].uncommitted_bytes), (5, 0));
    assert_eq!(clean.files[0].frames, 3, "the lost-index frame, the committed one, the move's");
    let all = archive.created_in(0, i64::MAX, 100).unwrap();
    assert_eq!(all.len(), 5, "each once");
}

/// An order that changes between being read and being deleted stays in
/// the hot store, whole; the archive's copy counts for nothing while it does.
#[tokio::test]
async fn an_order_that_changes_during_a_move_stays_hot() {
    let (dir, store) = open();
    let archive = Archive::new(dir.path());
    paid(&store, "RACE000001", old()).await;
    let (tx_count_before, _) = store.notify_log_size().unwrap();
    let page = store.read(move |s| mover::ended_page_for_tests(s, cutoff(), now())).await.unwrap();
    assert_eq!(page.len(), 1);
    store.update_order("RACE000001", |o| o.note(old() + 5, "QUERIED", "changed".into())).await.unwrap();
    let (moved, changed) = mover::forget_for_tests(&store, page).await;
    assert_eq!((moved, changed), (0, 1));
    let still = store.order("RACE000001").unwrap().unwrap();
    assert_eq!(still.history.last().unwrap().detail, "changed");
    assert_eq!(store.notify_log_size().unwrap().0, tx_count_before, "its notifies stay with it");
    assert_eq!(archive.move_ended(&store, cutoff(), now()).await.unwrap().moved, 1, "it moves next time");
}

/// `verify` notices a flipped byte in a frame and in an index, and a
/// lookup refuses a damaged frame rather than return what is in it.
#[tokio::test]
async fn verify_and_lookups_notice_damage() {
    let (dir, store) = open();
    let archive = Archive::new(dir.path());
    for i in 0..20 {
        paid(&store, &format!("DMG{i:07}"), old() + i).await;
    }
    archive.move_ended(&store, cutoff(), now()).await.unwrap();
    let month = archive.month(&month_of(old()));
    let clean = std::fs::read(&month.pba).unwrap();
    let mut bad = clean.clone();
    bad[clean.len() / 2] ^= 0x01;
    std::fs::write(&month.pba, &bad).unwrap();
    let report = archive.verify().unwrap();
    assert!(report.damaged(), "{}", report.summary());
    assert!(report.summary().contains("DAMAGED"), "{}", report.summary());
    assert!(matches!(archive.find("DMG0000003"), Err(ArchiveError::Damaged { .. })));
    std::fs::write(&month.pba, &clean).unwrap();
    assert!(!archive.verify().unwrap().damaged());

    let idx = std::fs::read(&month.idx).unwrap();
    let mut bad = idx.clone();
    bad[20] ^= 0x01;
    std::fs::write(&month.idx, &bad).unwrap();
    assert!(archive.verify().unwrap().damaged());
    // A damaged index is not written over: its month takes no more orders.
    paid(&store, "DMGLATE001", old()).await;
    let refused = archive.move_ended(&store, cutoff(), now()).await.unwrap();
    assert_eq!((refused.moved, refused.failed_months.len()), (0, 1));
    assert!(store.order("DMGLATE001").unwrap().is_some(), "it stays hot");
}
