//! API v3 payment notifies: verify the raw body's signature first, then
//! decrypt, check and record exactly as v2's ([`super::notify`]) do, and
//! answer 204 only once the change is durable.
//!
//! SECURITY: anyone can post here. Nothing in the body is read before the
//! `Wechatpay-*` headers verify over the exact bytes received; a stale
//! timestamp, WeChat's `WECHATPAY/SIGNTEST/` probe, an unknown serial and a
//! forged signature are all refused (4xx, so WeChat sends it again if it
//! was really WeChat) and recorded in the bounded form unverified notifies
//! get. In certificate mode an unknown serial first triggers one download
//! of WeChat's certificates (at most one a minute, so strangers cannot make
//! PayBridge call WeChat at will).

use std::net::SocketAddr;

use super::notify::{Checked, NotifyAck};
use super::{now_ms, Payments};
use crate::store::{NotifyRecord, Payment, RefundStatus, Verdict};
use crate::text::quote;
use crate::wechat::is_valid_out_trade_no;
use crate::wechat::v3::notify::{self as v3notify, Envelope};
use crate::wechat::v3::verify::{SignedHeaders, VerifyError};

impl Payments {
    /// Handles one v3 notify from `peer`; returns the reply for WeChat.
    pub async fn handle_notify_v3(
        &self,
        headers: &SignedHeaders<'_>,
        raw: &[u8],
        peer: Option<SocketAddr>,
    ) -> NotifyAck {
        let mut record = NotifyRecord::received(raw, now_ms(), peer.map(|p| p.to_string()), self.sandbox);
        // Read only to label the record; nothing is trusted before it verifies.
        let envelope = v3notify::envelope(raw).ok();
        record.event_id = envelope.as_ref().map(|e| e.id.chars().take(64).collect());
        let checked = self.check_notify_v3(headers, raw, envelope, &mut record).await;
        self.settle(record, checked, peer).await
    }

    async fn check_notify_v3(
        &self,
        headers: &SignedHeaders<'_>,
        raw: &[u8],
        envelope: Option<Envelope>,
        record: &mut NotifyRecord,
    ) -> Checked {
        let refused = |reason: String, status: u16| {
            Checked::Decided(Verdict::Rejected, reason, NotifyAck::fail("失败").with_status(status), false)
        };
        let rejected = |reason: String, status: u16| {
            Checked::Decided(Verdict::Rejected, reason, NotifyAck::fail("失败").with_status(status), true)
        };
        let Some((_, keys)) = self.gateway.v3() else {
            return refused("a v3 notify, but this merchant uses API v2".into(), 400);
        };
        if raw.trim_ascii_start().starts_with(b"<") {
            return refused(
                "an API v2 (XML) notify, but this merchant uses API v3 (api_version = \"v3\"): an order placed \
                 under v2 before the switch? its payment is found by querying WeChat"
                    .into(),
                400,
            );
        }
        if let Err(e) = self.verify_v3(headers, raw).await {
            let status = match e {
                VerifyError::Missing(_) => 400,
                _ => 401,
            };
            return refused(format!("signature: {e}"), status);
        }
        let Some(envelope) = envelope else {
            let reason = v3notify::envelope(raw).err().map(|e| e.to_string()).unwrap_or_default();
            return rejected(reason, 400);
        };
        if envelope.event_type.starts_with("REFUND.") {
            return self.check_refund_notify(&envelope, keys, record).await;
        }
        if !envelope.event_type.starts_with("TRANSACTION.") {
            let reason = format!("event {} is not a payment; nothing to do", quote(&envelope.event_type));
            return Checked::Decided(Verdict::Ignored, reason, NotifyAck::ok(), true);
        }
        let transaction = match v3notify::transaction(&envelope, &keys.apiv3_key) {
            Ok(t) => t,
            // Verified, so from WeChat: the APIv3 key here is wrong (reset in
            // the merchant platform?). 500 makes WeChat resend once it is fixed.
            Err(e) => return rejected(format!("{e}; check wechat.apiv3_key"), 500),
        };
        record.resource = serde_json::to_vec(&serde_json::json!({
            "mchid": transaction.mchid, "appid": transaction.appid, "out_trade_no": transaction.out_trade_no,
            "transaction_id": transaction.transaction_id, "trade_state": transaction.trade_state,
            "success_time": transaction.success_time, "payer": { "openid": transaction.payer.openid },
            "amount": { "total": transaction.amount.total, "currency": transaction.amount.currency },
            "attach": transaction.attach,
        }))
        .ok();
        record.out_trade_no = Some(transaction.out_trade_no.clone()).filter(|no| is_valid_out_trade_no(no));
        record.transaction_id = Some(transaction.transaction_id.clone()).filter(|t| !t.is_empty() && t.len() <= 64);
        if transaction.appid != self.appid {
            return rejected(format!("appid {} is not this mini-program's", quote(&transaction.appid)), 400);
        }
        if transaction.mchid != self.mch_id {
            return rejected(format!("mchid {} is not this merchant's", quote(&transaction.mchid)), 400);
        }
        if transaction.trade_state != "SUCCESS" {
            let reason = format!("trade_state {}: not a payment", quote(&transaction.trade_state));
            return Checked::Decided(Verdict::Ignored, reason, NotifyAck::ok(), true);
        }
        if !matches!(transaction.amount.currency.as_str(), "" | "CNY") {
            return rejected(format!("currency {} is not CNY", quote(&transaction.amount.currency)), 400);
        }
        if transaction.transaction_id.is_empty() {
            return rejected("no transaction_id".into(), 400);
        }
        Checked::Payment(Payment {
            transaction_id: transaction.transaction_id,
            // amount.total, not payer_total: coupons lower what the payer paid.
            total_fee: transaction.amount.total,
            time_end: crate::wechat::compact_from_rfc3339(&transaction.success_time),
            openid: transaction.payer.openid,
        })
    }

    /// A verified refund notify: the refund it names ends as WeChat says
    /// (durably, before the notify is recorded and answered).
    async fn check_refund_notify(
        &self,
        envelope: &Envelope,
        keys: &crate::wechat::settings::V3Keys,
        record: &mut NotifyRecord,
    ) -> Checked {
        let rejected = |reason: String, status: u16| {
            Checked::Decided(Verdict::Rejected, reason, NotifyAck::fail("失败").with_status(status), true)
        };
        let refund = match v3notify::refund(envelope, &keys.apiv3_key) {
            Ok(r) => r,
            Err(e) => return rejected(format!("{e}; check wechat.apiv3_key"), 500),
        };
        record.resource = serde_json::to_vec(&serde_json::json!({
            "mchid": refund.mchid, "out_trade_no": refund.out_trade_no, "out_refund_no": refund.out_refund_no,
            "refund_id": refund.refund_id, "refund_status": refund.refund_status,
            "amount": { "total": refund.amount.total, "refund": refund.amount.refund },
        }))
        .ok();
        record.out_trade_no = Some(refund.out_trade_no.clone()).filter(|no| is_valid_out_trade_no(no));
        if refund.mchid != self.mch_id {
            return rejected(format!("mchid {} is not this merchant's", quote(&refund.mchid)), 400);
        }
        let Some(status) = RefundStatus::parse(&refund.refund_status) else {
            return rejected(format!("refund_status {} is unknown", quote(&refund.refund_status)), 400);
        };
        let ended = super::refund::EndedRefund {
            out_refund_no: &refund.out_refund_no,
            out_trade_no: &refund.out_trade_no,
            amount: refund.amount.refund,
            status,
            refund_id: &refund.refund_id,
            via: &envelope.event_type,
        };
        match self.refund_notified(ended).await {
            Ok(reason) => Checked::Decided(Verdict::Refund, reason, NotifyAck::ok(), true),
            Err((reason, status)) => rejected(reason, status),
        }
    }

    /// Verifies a v3 body. In certificate mode a serial PayBridge has no
    /// certificate for (WeChat rotated them) triggers one download first.
    async fn verify_v3(&self, headers: &SignedHeaders<'_>, raw: &[u8]) -> Result<(), VerifyError> {
        let Some((client, keys)) = self.gateway.v3() else { return Err(VerifyError::Missing("v3 keys")) };
        let now = now_ms() / 1000;
        match client.trust().verifier().verify(headers, raw, now) {
            Err(VerifyError::UnknownSerial(serial)) if keys.platform_certificates => {
                if self.refresh_certificates_for_unknown_serial(&serial).await {
                    client.trust().verifier().verify(headers, raw, now)
                } else {
                    Err(VerifyError::UnknownSerial(serial))
                }
            }
            verified => verified,
        }
    }
}
