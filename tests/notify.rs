//! Payment notifies: forged, wrong, unknown, duplicate, concurrent, and with
//! fields no one has seen before.

mod common;

use common::{extra, notify_fields, signed_xml, with, Env, Opts, MCH_KEY};
use paybridge::store::{OrderFilter, OrderStatus, Verdict};
use paybridge::wechat::sign::SignType;
use serde_json::json;

/// An environment with one unpaid order of 100 fen.
async fn with_order(opts: Opts, no: &str) -> Env {
    let env = Env::start(opts).await;
    let openid = env.openid(&format!("code-{no}")).await;
    let (status, body) = env.order(no, 100, &openid).await;
    assert_eq!(status, 200, "{body}");
    env
}

#[tokio::test]
async fn refused_notifies_change_nothing_and_are_logged_with_their_reason() {
    let env = with_order(Opts::default(), "REFUSE0001").await;
    let before = env.app.store.order("REFUSE0001").unwrap().unwrap();
    let good = notify_fields("REFUSE0001", 100, "4200000000000000000000000001");

    // A valid notify with one field changed after signing: forged.
    let mut forged = signed_xml(good.clone(), MCH_KEY, SignType::Md5);
    forged = forged.replace("<total_fee><![CDATA[100]]>", "<total_fee><![CDATA[1]]>");
    let cases = [
        (forged, false, "signature"),
        (signed_xml(good.clone(), "ffffffffffffffffffffffffffffffff", SignType::Md5), false, "signature"),
        (
            signed_xml(with(good.clone(), &[("total_fee", "99"), ("cash_fee", "99")]), MCH_KEY, SignType::Md5),
            true,
            "amount mismatch",
        ),
        (signed_xml(with(good.clone(), &[("mch_id", "10000999")]), MCH_KEY, SignType::Md5), false, "mch_id"),
        (signed_xml(with(good.clone(), &[("appid", "wx0000000000000000")]), MCH_KEY, SignType::Md5), false, "appid"),
    ];
    let mut linked = 0;
    for (i, (body, acknowledged, reason)) in cases.iter().enumerate() {
        let (status, reply) = env.notify(body.clone()).await;
        assert_eq!(status, 200);
        let expected = if *acknowledged { "SUCCESS" } else { "FAIL" };
        assert_eq!(reply["return_code"], expected, "case {i} ({reason})");
        let entry = env.last_notify();
        assert_eq!(entry.verdict, Verdict::Rejected, "case {i}");
        assert!(entry.reason.contains(reason), "case {i}: {}", entry.reason);
        assert_eq!(entry.raw, body.as_bytes(), "the raw body is kept");
        assert_eq!(entry.out_trade_no.as_deref(), Some("REFUSE0001"), "it claims the order");
        // Only a notify whose signature verified belongs to the order.
        let verified = *reason != "signature";
        assert_eq!(entry.verified, verified, "case {i}");
        linked += usize::from(verified);
        assert_eq!(env.notifies("REFUSE0001").len(), linked, "case {i}");
        let now = env.app.store.order("REFUSE0001").unwrap().unwrap();
        assert_eq!(now.status, OrderStatus::Prepaid, "case {i}");
        assert_eq!(now.transaction_id, None);
        assert_eq!(now.paid_at, before.paid_at);
    }

    // A signed notify for an order PayBridge does not know.
    let unknown = signed_xml(notify_fields("NOSUCH0001", 100, "4200000000000000000000000002"), MCH_KEY, SignType::Md5);
    let (_, reply) = env.notify(unknown).await;
    assert_eq!(reply["return_code"], "FAIL");
    let log = env.notifies("NOSUCH0001");
    assert_eq!(log.len(), 1);
    assert!(log[0].reason.contains("unknown order"), "{}", log[0].reason);
    assert!(env.app.store.order("NOSUCH0001").unwrap().is_none());

    // The real payment still goes through afterwards.
    let (_, reply) = env.notify(signed_xml(good, MCH_KEY, SignType::Md5)).await;
    assert_eq!(reply["return_code"], "SUCCESS");
    assert_eq!(env.app.store.order("REFUSE0001").unwrap().unwrap().status, OrderStatus::Paid);
    env.stop().await;
}

#[tokio::test]
async fn duplicate_notify_changes_nothing() {
    let env = with_order(Opts::default(), "DUPLIC0001").await;
    let body = signed_xml(notify_fields("DUPLIC0001", 100, "4200000000000000000000000003"), MCH_KEY, SignType::Md5);
    let (_, first) = env.notify(body.clone()).await;
    assert_eq!(first["return_code"], "SUCCESS");
    let paid = env.app.store.order("DUPLIC0001").unwrap().unwrap();
    assert_eq!(paid.status, OrderStatus::Paid);
    for _ in 0..3 {
        let (_, again) = env.notify(body.clone()).await;
        assert_eq!(again["return_code"], "SUCCESS", "a duplicate is acknowledged");
    }
    assert_eq!(env.app.store.order("DUPLIC0001").unwrap().unwrap(), paid, "nothing changed");
    let verdicts: Vec<_> = env.notifies("DUPLIC0001").iter().map(|r| r.verdict).collect();
    assert_eq!(verdicts, [Verdict::Paid, Verdict::Duplicate, Verdict::Duplicate, Verdict::Duplicate]);

    // Another transaction for a paid order is an incident, not a payment.
    let other = signed_xml(notify_fields("DUPLIC0001", 100, "4200000000000000000000000004"), MCH_KEY, SignType::Md5);
    // Acknowledged (resending changes nothing), as the README's table says.
    assert_eq!(env.notify(other).await.1["return_code"], "SUCCESS");
    let after = env.app.store.order("DUPLIC0001").unwrap().unwrap();
    assert_eq!(after.transaction_id, paid.transaction_id);
    assert_eq!(env.notifies("DUPLIC0001").last().unwrap().verdict, Verdict::Rejected);
    env.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_copies_move_the_order_once() {
    let env = with_order(Opts::default(), "CONCUR0001").await;
    env.sim_pay(json!({ "out_trade_no": "CONCUR0001", "copies": 50 })).await;
    env.wait_acknowledged("CONCUR0001").await;
    let log = env.notifies("CONCUR0001");
    assert_eq!(log.len(), 50, "every copy is logged");
    assert_eq!(log.iter().filter(|r| r.verdict == Verdict::Paid).count(), 1);
    assert_eq!(log.iter().filter(|r| r.verdict == Verdict::Duplicate).count(), 49);
    let order = env.app.store.order("CONCUR0001").unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::Paid);
    assert_eq!(order.history.iter().filter(|e| e.kind == "PAID").count(), 1);
    assert_eq!(env.app.store.list_orders(&OrderFilter::status(OrderStatus::Paid), None, 10).unwrap().items.len(), 1);
    assert_eq!(env.app.store.list_orders(&OrderFilter::status(OrderStatus::Prepaid), None, 10).unwrap().items.len(), 0);
    env.stop().await;
}

#[tokio::test]
async fn fields_never_seen_before_still_verify() {
    let env = with_order(Opts::default(), "COUPON0001").await;
    let fields = extra(&[
        ("coupon_count", "1"),
        ("coupon_id_0", "10000000001"),
        ("coupon_fee_0", "10"),
        ("coupon_fee", "10"),
        ("cash_fee", "90"),
        ("settlement_total_fee", "90"),
        ("version", "1.0"),
        ("rate_value", "0.6"),
        ("made_up_field_2031", "新字段"),
    ]);
    env.sim_pay(json!({ "out_trade_no": "COUPON0001", "extra_fields": fields })).await;
    env.wait_acknowledged("COUPON0001").await;
    let log = env.notifies("COUPON0001");
    assert_eq!(log[0].verdict, Verdict::Paid, "{}", log[0].reason);
    assert!(String::from_utf8_lossy(&log[0].raw).contains("made_up_field_2031"));
    // total_fee is compared, not cash_fee (coupons lower cash_fee).
    assert_eq!(env.app.store.order("COUPON0001").unwrap().unwrap().status, OrderStatus::Paid);
    env.stop().await;
}

#[tokio::test]
async fn hmac_merchant_accepts_md5_signed_and_untyped_notifies() {
    let env = with_order(Opts { sign_type: SignType::HmacSha256, ..Opts::default() }, "HMAC000001").await;
    // WeChat's usual HMAC notify: no sign_type field, 64-hex sign.
    let md5 = signed_xml(notify_fields("HMAC000001", 100, "4200000000000000000000000005"), MCH_KEY, SignType::Md5);
    let (_, reply) = env.notify(md5).await;
    assert_eq!(reply["return_code"], "SUCCESS");
    assert_eq!(env.notifies("HMAC000001")[0].verdict, Verdict::Paid);

    let env2 = with_order(Opts { sign_type: SignType::HmacSha256, ..Opts::default() }, "HMAC000002").await;
    env2.sim_pay(json!({ "out_trade_no": "HMAC000002" })).await;
    env2.wait_acknowledged("HMAC000002").await;
    assert_eq!(env2.notifies("HMAC000002")[0].verdict, Verdict::Paid);
    env.stop().await;
    env2.stop().await;
}

#[tokio::test]
async fn a_notify_missed_while_down_is_redelivered_on_schedule() {
    let env = with_order(Opts::default(), "RETRY00001").await;
    let addr = env.app.addr;
    let opts = env.opts.clone();
    let (dir, sim) = env.stop().await;

    // WeChat notifies while PayBridge is down: the first attempt fails.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/sandbox/pay", sim.url()))
        .json(&json!({ "out_trade_no": "RETRY00001" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for _ in 0..100 {
        if sim.simulator.report("RETRY00001").unwrap().notify.attempts > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let report = sim.simulator.report("RETRY00001").unwrap();
    assert!(report.notify.attempts >= 1, "WeChat tried while PayBridge was down");
    assert!(!report.notify.acknowledged);

    // Back up on the same address: a retry on the schedule gets through.
    let env = Env::start_in_at(dir, sim, opts, &addr.to_string()).await;
    env.wait_acknowledged("RETRY00001").await;
    assert!(env.sim.simulator.report("RETRY00001").unwrap().notify.attempts >= 2);
    assert_eq!(env.app.store.order("RETRY00001").unwrap().unwrap().status, OrderStatus::Paid);
    env.stop().await;
}
