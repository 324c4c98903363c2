//! The order and notify writes: inserting and changing an order, removing
//! an abandoned one, and appending a notify together with the change it
//! makes to its order. Each is one closure the writer runs in its batch's
//! transaction (see [`super::writer`]); the indexes, counters and the
//! outbox follow in the same transaction ([`super::tx`]).

use super::{NotifyRecord, Order, OrderStatus, Store, StoreError, Verdict, SMALL_WRITE};

impl Store {
    /// Inserts `order` unless its number exists, giving it the next sequence
    /// number. Returns the existing order (and writes nothing) when it does,
    /// so that concurrent creators agree; else the order as stored.
    pub async fn insert_order(&self, order: Order) -> Result<Result<Order, Order>, StoreError> {
        self.write(SMALL_WRITE, move |tx, id| {
            if let Some(existing) = tx.get_order(&order.out_trade_no)? {
                return Ok(Err(existing));
            }
            let mut order = order.clone();
            order.seq = id;
            tx.insert_order(&order)?;
            Ok(Ok(order))
        })
        .await
    }

    /// Changes an order in one transaction, keeping the indexes right.
    /// `change` may run more than once: it must be pure.
    /// Returns the order as stored, or `None` if there is no such order.
    pub async fn update_order(
        &self,
        out_trade_no: &str,
        change: impl Fn(&mut Order) + Send + 'static,
    ) -> Result<Option<Order>, StoreError> {
        let out_trade_no = out_trade_no.to_owned();
        self.write(SMALL_WRITE, move |tx, id| {
            let Some(before) = tx.get_order(&out_trade_no)? else { return Ok(None) };
            let mut order = before.clone();
            change(&mut order);
            if order != before {
                tx.put_order(&order, &before, id)?;
            }
            Ok(Some(order))
        })
        .await
    }

    /// Changes an order like [`Store::update_order`], or removes it when
    /// `change` returns false: one store step either way. Removal is only
    /// for an open order that was never paid and no platform vouched for
    /// (`change` must not ask for another); it goes with its index entries
    /// and counts. Returns the order as stored (`None` if removed or absent)
    /// and whether it was removed.
    pub async fn update_or_remove_order(
        &self,
        out_trade_no: &str,
        change: impl Fn(&mut Order) -> bool + Send + 'static,
    ) -> Result<(Option<Order>, bool), StoreError> {
        let out_trade_no = out_trade_no.to_owned();
        self.write(SMALL_WRITE, move |tx, id| {
            let Some(before) = tx.get_order(&out_trade_no)? else { return Ok((None, false)) };
            let mut order = before.clone();
            let keep = change(&mut order);
            let removable = matches!(before.status, OrderStatus::Created | OrderStatus::Prepaid)
                && before.source.platform().is_none();
            if !keep && removable {
                tx.remove_order(&before)?;
                return Ok((None, true));
            }
            if order != before {
                tx.put_order(&order, &before, id)?;
            }
            Ok((Some(order), false))
        })
        .await
    }

    /// Appends a notify to the log (with the next id) and, in the same
    /// transaction, lets `decide` change the order it names. `decide` sees
    /// the order (or `None` if unknown) and returns the verdict, its reason,
    /// and anything the caller wants back; it may run more than once and
    /// must be pure. Returns the record as stored and that value.
    pub async fn record_notify<T: Send + 'static>(
        &self,
        mut record: NotifyRecord,
        decide: impl Fn(Option<&mut Order>) -> (Verdict, String, T) + Send + 'static,
    ) -> Result<(NotifyRecord, T), StoreError> {
        record.trim_unverified();
        self.write(SMALL_WRITE + record.raw.len(), move |tx, id| {
            let mut record = record.clone();
            record.id = id;
            let before = match &record.out_trade_no {
                Some(no) => tx.get_order(no)?,
                None => None,
            };
            let mut order = before.clone();
            let (verdict, reason, value) = decide(order.as_mut());
            record.verdict = verdict;
            record.reason = reason;
            record.trim_unverified();
            if let (Some(order), Some(before)) = (&order, &before) {
                if order != before {
                    tx.put_order(order, before, id)?;
                }
            }
            tx.append_notify(&record)?;
            Ok((record, value))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec::CodecError;
    use crate::store::testing::{notify_at, open, order};
    use crate::store::{
        beijing_day, bill, order, refund, schedule, OrderFilter, Refund, RefundCreated, RefundStatus, MAX_NOTIFY_BYTES,
    };

    #[tokio::test]
    async fn insert_is_first_writer_wins() {
        let (_dir, store) = open();
        let first = store.insert_order(order("ORDER001", 1)).await.unwrap().unwrap();
        let mut b = order("ORDER001", 2);
        b.total_fee = 5;
        assert_eq!(store.insert_order(b).await.unwrap().unwrap_err(), first);
        assert_eq!(store.order("ORDER001").unwrap().unwrap().total_fee, 100);
        let second = store.insert_order(order("ORDER002", 1)).await.unwrap().unwrap();
        assert!(second.seq > first.seq, "the store numbers orders in insertion order");
    }

    #[tokio::test]
    async fn notify_log_and_order_change_in_one_transaction() {
        let (_dir, store) = open();
        store.insert_order(order("ORDER001", 1)).await.unwrap().unwrap();
        let rec = || NotifyRecord {
            out_trade_no: Some("ORDER001".into()),
            verified: true,
            ..NotifyRecord::received(b"<xml/>", 5, None, false)
        };
        let stored = store
            .record_notify(rec(), |o| {
                o.unwrap().status = OrderStatus::Paid;
                (Verdict::Paid, "ok".into(), ())
            })
            .await
            .unwrap()
            .0;
        assert_eq!(stored.verdict, Verdict::Paid);
        store.record_notify(rec(), |_| (Verdict::Duplicate, "dup".into(), ())).await.unwrap();
        assert_eq!(store.order("ORDER001").unwrap().unwrap().status, OrderStatus::Paid);
        assert_eq!(store.list_orders(&OrderFilter::status(OrderStatus::Paid), None, 10).unwrap().items.len(), 1);
        assert_eq!(store.list_orders(&OrderFilter::status(OrderStatus::Created), None, 10).unwrap().items.len(), 0);
        let log = store.notifies_for_order("ORDER001", None, 10).unwrap().items;
        assert_eq!(log.iter().map(|r| r.verdict).collect::<Vec<_>>(), [Verdict::Duplicate, Verdict::Paid]);
        assert!(log[0].id > log[1].id, "the store numbers notifies in arrival order");
        let page = store.list_notifies(None, 1).unwrap();
        assert_eq!(page.items[0].verdict, Verdict::Duplicate);
        let older = store.list_notifies(page.next.map(|c| c.parse().unwrap()), 1).unwrap();
        assert_eq!(older.items[0].verdict, Verdict::Paid);
    }

    /// A paid total that would wrap is refused, never stored wrong.
    #[tokio::test]
    async fn money_sums_never_wrap() {
        let (_dir, store) = open();
        let paid = |no: &str, fee: u64| {
            let mut o = order(no, 1);
            o.total_fee = fee;
            o.status = OrderStatus::Paid;
            o.paid_at = Some(1);
            o
        };
        store.insert_order(paid("HUGE000001", u64::MAX - 10)).await.unwrap().unwrap();
        let refused = store.insert_order(paid("HUGE000002", 11)).await;
        assert!(matches!(refused, Err(StoreError::Codec(CodecError::Overflow(_)))), "{refused:?}");
        store.insert_order(paid("HUGE000003", 10)).await.unwrap().unwrap();
        let day = store.paid_by_day(beijing_day(1), beijing_day(1)).unwrap()[0];
        assert_eq!((day.count, day.fen), (2, u64::MAX));
        assert!(store.order("HUGE000002").unwrap().is_none(), "the refused change left nothing behind");
    }

    /// An order over [`order::MAX_ORDER_BYTES`] is refused where it is
    /// written, whole: nothing changes, nothing is cut.
    #[tokio::test]
    async fn an_oversized_order_is_refused_not_truncated() {
        let (_dir, store) = open();
        store.insert_order(order("BIG0000001", 1)).await.unwrap().unwrap();
        let huge = "x".repeat(order::MAX_ORDER_BYTES);
        let body = huge.clone();
        let refused = store.update_order("BIG0000001", move |o| o.body = body.clone()).await;
        assert!(
            matches!(&refused, Err(StoreError::Codec(CodecError::Overflow(what))) if what.contains("MAX_ORDER_BYTES")),
            "{refused:?}"
        );
        assert_eq!(store.order("BIG0000001").unwrap().unwrap().body, "b");
        let mut big = order("BIG0000002", 1);
        big.attach = huge;
        assert!(matches!(store.insert_order(big).await, Err(StoreError::Codec(CodecError::Overflow(_)))));
        assert!(store.order("BIG0000002").unwrap().is_none());
        let mut record = notify_at("BIG0000001", 1, true, &vec![b'n'; MAX_NOTIFY_BYTES]);
        record.verified = true;
        let refused = store.record_notify(record, |_| (Verdict::Ignored, "r".into(), ())).await;
        assert!(matches!(refused, Err(StoreError::Codec(CodecError::Overflow(_)))), "{refused:?}");
        assert_eq!(store.notify_log_size().unwrap(), (0, 0));
    }

    /// The largest notify the route accepts is kept whole: a verified body
    /// at the route's limit, an API v3 resource as large (it is smaller
    /// than its base64 ciphertext in that body), every other field at its
    /// longest, fits [`MAX_NOTIFY_BYTES`].
    #[tokio::test]
    async fn the_largest_legal_notify_fits() {
        let (_dir, store) = open();
        let limit = crate::wechat::xml::MAX_XML_BYTES;
        let mut record = notify_at(&"N".repeat(32), 1, true, &vec![b'n'; limit]);
        record.peer = Some("[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535".into());
        record.transaction_id = Some("4".repeat(32));
        record.event_id = Some("e".repeat(64));
        record.resource = Some(vec![b'r'; limit]);
        let recorded = store.record_notify(record, |_| (Verdict::Ignored, "r".repeat(1024), ())).await;
        assert!(recorded.is_ok(), "{:?}", recorded.err());
        let (count, _) = store.notify_log_size().unwrap();
        assert_eq!(count, 1);
        let kept = store.list_notifies(None, 1).unwrap().items;
        assert_eq!((kept[0].raw.len(), kept[0].resource.as_ref().map(Vec::len)), (limit, Some(limit)), "kept whole");
    }

    /// Refunds, outbox deliveries and days of reconciliation have a
    /// maximum size too: the largest the rules allow fits, a larger one is
    /// refused whole where it is written.
    #[tokio::test]
    async fn every_record_kind_has_a_maximum_size() {
        use bill::{BillDay, BillState, Difference, DifferenceKind, MAX_BILL_DAY_BYTES, MAX_DIFFERENCES};
        use refund::MAX_REFUND_BYTES;
        let long = |n: usize| "長".repeat(n / 3);
        // The largest legal refund: numbers of 64 characters, an 80-byte
        // reason, WeChat's words quoted at 100 characters of 4 bytes.
        let mut largest = Refund {
            out_refund_no: "R".repeat(64),
            out_trade_no: "O".repeat(32),
            amount: u64::MAX,
            reason: long(80),
            status: RefundStatus::Processing,
            requested_by: format!("platform {}", "p".repeat(32)),
            platform_refund_id: Some("i".repeat(64)),
            refund_id: Some("w".repeat(64)),
            created_at: i64::MAX,
            updated_at: i64::MAX,
            last_result: Some("𝄞".repeat(140)),
            tries: u32::MAX,
            next_query_at: i64::MAX,
        };
        assert!(largest.encode().len() <= MAX_REFUND_BYTES / 4, "{} bytes", largest.encode().len());
        let (_dir, store) = open();
        store.insert_order(order("SIZE000001", 100)).await.unwrap().unwrap();
        store.update_order("SIZE000001", |o| o.status = OrderStatus::Paid).await.unwrap();
        largest.out_trade_no = "SIZE000001".into();
        largest.amount = 1;
        let mut oversized = largest.clone();
        oversized.out_refund_no = "RBIG".into();
        oversized.reason = "x".repeat(MAX_REFUND_BYTES);
        let refused = store.create_refund(oversized).await;
        assert!(
            matches!(&refused, Err(StoreError::Codec(CodecError::Overflow(what))) if what.contains("MAX_REFUND_BYTES")),
            "{refused:?}"
        );
        assert!(store.refund("RBIG").unwrap().is_none(), "nothing of it was written");
        assert!(matches!(store.create_refund(largest).await, Ok(RefundCreated::New(_))));

        // A day with every difference it may keep, each field at a bill's
        // longest value, fits; one with a longer error does not.
        let field = || Some("f".repeat(crate::wechat::bill::MAX_VALUE_BYTES));
        let difference = Difference {
            kind: DifferenceKind::AmountMismatch,
            out_trade_no: "d".repeat(crate::wechat::bill::MAX_VALUE_BYTES),
            out_refund_no: field(),
            transaction_id: field(),
            wechat_fen: Some(u64::MAX),
            local_fen: Some(u64::MAX),
            wechat_status: field(),
            local_status: field(),
        };
        let mut day = BillDay::attempt("2026-12-01", 1);
        day.state = BillState::Differences;
        day.differences = vec![difference; MAX_DIFFERENCES];
        day.error = Some(crate::text::clip(&"e".repeat(10_000), 400).into_owned());
        assert!(day.encode().len() <= MAX_BILL_DAY_BYTES, "{} bytes", day.encode().len());
        store.put_bill_day(day.clone(), None, "2026-01-01".into()).await.unwrap();
        day.day = "2026-12-02".into();
        day.error = Some("e".repeat(MAX_BILL_DAY_BYTES));
        let refused = store.put_bill_day(day, None, "2026-01-01".into()).await;
        assert!(matches!(refused, Err(StoreError::Codec(CodecError::Overflow(_)))), "{refused:?}");
        assert!(store.bill_day("2026-12-02").unwrap().is_none());
    }

    /// The due index follows every write, and removal takes an order's
    /// index entries and counts with it.
    #[tokio::test]
    async fn the_due_index_follows_the_orders() {
        let (_dir, store) = open();
        for i in 0..3 {
            let mut o = order(&format!("DUE000000{i}"), 1000);
            o.expires_at = Some(5000 + i);
            store.insert_order(o).await.unwrap().unwrap();
        }
        let due = |now| store.due_orders(schedule::Queue::Unpaid, now, 10).unwrap();
        assert_eq!(due(5001), [(5000, "DUE0000000".to_owned()), (5001, "DUE0000001".to_owned())]);
        store.update_order("DUE0000000", |o| o.close(2000, "x")).await.unwrap();
        assert_eq!(due(i64::MAX).len(), 2, "a closed order leaves the index");
        let (kept, removed) = store.update_or_remove_order("DUE0000001", |_| false).await.unwrap();
        assert_eq!((kept, removed), (None, true));
        assert!(store.order("DUE0000001").unwrap().is_none());
        assert_eq!(due(i64::MAX), [(5002, "DUE0000002".to_owned())]);
        assert_eq!(store.order_count().unwrap(), 2);
        assert_eq!(store.list_orders(&OrderFilter::default(), None, 10).unwrap().items.len(), 2);
        assert!(store.search_orders("o", &OrderFilter::default(), None, 10).unwrap().items.len() == 2);
    }
}
