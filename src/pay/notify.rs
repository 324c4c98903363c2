//! Payment notifies: verify, decide, log, make durable, then acknowledge.
//!
//! Every verified notify is logged whole with its verdict. SUCCESS is
//! answered only after the order change and the log entry are flushed to
//! disk, so a crash can never lose a notify WeChat believes delivered.
//!
//! SECURITY: anyone can post here. A notify whose signature does not verify
//! is recorded in a bounded form (see [`crate::store::notify`]), and only
//! `[notifies] refused_per_peer_per_minute` of them
//! per peer; the rest are counted in a metric and summarised in one log line
//! a minute.

use std::net::SocketAddr;

use super::{now_ms, Payments};
use crate::store::{NotifyRecord, Payment, PaymentOutcome, RefundStatus, Verdict};
use crate::text::quote;
use crate::wechat::is_valid_out_trade_no;
use crate::wechat::sign::{self, Fields, SignType};
use crate::wechat::xml;

/// The reply to WeChat: success stops its retries, failure asks for them.
/// v2 answers `SUCCESS`/`FAIL` in XML with status 200; v3 answers 204, or
/// `status` with `{"code":"FAIL","message":…}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyAck {
    /// Whether to answer `SUCCESS` (v2) or 204 (v3).
    pub success: bool,
    /// `return_msg` (v2), `message` (v3).
    pub message: String,
    /// v3's HTTP status for a failure: 400 malformed or not for us, 401 not
    /// verified, 404 unknown order, 500 cannot process now.
    pub status: u16,
}

impl NotifyAck {
    pub(super) fn ok() -> NotifyAck {
        NotifyAck { success: true, message: "OK".into(), status: 200 }
    }

    pub(super) fn fail(message: impl Into<String>) -> NotifyAck {
        NotifyAck { success: false, message: message.into(), status: 400 }
    }

    pub(super) fn with_status(self, status: u16) -> NotifyAck {
        NotifyAck { status, ..self }
    }

    /// v3's JSON body of a failure.
    pub fn to_json(&self) -> String {
        serde_json::json!({ "code": "FAIL", "message": self.message }).to_string()
    }

    /// WeChat's XML reply.
    pub fn to_xml(&self) -> String {
        let code = if self.success { "SUCCESS" } else { "FAIL" };
        xml::write(&sign::fields([("return_code", code), ("return_msg", self.message.as_str())]))
    }
}

/// The checks that need no database: what the notify says, if it is authentic.
pub(super) enum Checked {
    /// Verified and a successful payment.
    Payment(Payment),
    /// Decided already: the verdict, the reason, the reply, and whether the
    /// signature verified.
    Decided(Verdict, String, NotifyAck, bool),
}

impl Payments {
    fn check_notify(&self, fields: &Fields) -> Checked {
        let unverified =
            |reason: String, reply: &str| Checked::Decided(Verdict::Rejected, reason, NotifyAck::fail(reply), false);
        let rejected =
            |reason: String, reply: &str| Checked::Decided(Verdict::Rejected, reason, NotifyAck::fail(reply), true);
        let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or("");
        if get("return_code") != "SUCCESS" {
            // Nothing signed to act on; acknowledge so it is not resent.
            let reason = format!("return_code {}: {}", quote(get("return_code")), quote(get("return_msg")));
            return Checked::Decided(Verdict::Ignored, reason, NotifyAck::ok(), false);
        }
        // WeChat signs notifies with the unified order's algorithm but often
        // omits sign_type; an MD5 notify is accepted under HMAC too.
        let crate::wechat::settings::PayApi::V2 { mch_key, sign_type } = &self.api else {
            return unverified("an API v2 (XML) notify, but this merchant uses API v3".into(), "API版本错误");
        };
        let accepted: &[SignType] = match sign_type {
            SignType::Md5 => &[SignType::Md5],
            SignType::HmacSha256 => &[SignType::HmacSha256, SignType::Md5],
        };
        if let Err(e) = sign::verify(fields, mch_key, accepted) {
            return Checked::Decided(
                Verdict::Rejected,
                format!("signature: {e}"),
                NotifyAck::fail("签名失败").with_status(401),
                false,
            );
        }
        if get("appid") != self.appid {
            return rejected(format!("appid {} is not this mini-program's", quote(get("appid"))), "appid不匹配");
        }
        if get("mch_id") != self.mch_id {
            return rejected(format!("mch_id {} is not this merchant's", quote(get("mch_id"))), "mch_id不匹配");
        }
        if get("result_code") != "SUCCESS" {
            let reason = format!("payment failed: {} {}", get("err_code"), get("err_code_des"));
            return Checked::Decided(Verdict::Ignored, reason, NotifyAck::ok(), true);
        }
        let Ok(total_fee) = get("total_fee").parse::<u64>() else {
            return rejected(format!("total_fee {} is not a whole number of fen", quote(get("total_fee"))), "参数错误");
        };
        if !matches!(get("fee_type"), "" | "CNY") {
            return rejected(format!("fee_type {} is not CNY", quote(get("fee_type"))), "参数错误");
        }
        if get("transaction_id").is_empty() {
            return rejected("no transaction_id".into(), "参数错误");
        }
        Checked::Payment(Payment {
            transaction_id: get("transaction_id").into(),
            total_fee,
            time_end: get("time_end").into(),
            openid: get("openid").into(),
        })
    }

    /// Handles one notify body from `peer`; returns the reply for WeChat.
    pub async fn handle_notify(&self, raw: &[u8], peer: Option<SocketAddr>) -> NotifyAck {
        let parsed = xml::parse(raw);
        if let Some(fields) = parsed.as_ref().ok().filter(|f| f.contains_key("req_info")) {
            let mut record = NotifyRecord::received(raw, now_ms(), peer.map(|p| p.to_string()), self.sandbox);
            let checked = self.check_refund_notify_v2(fields, &mut record).await;
            return self.settle(record, checked, peer).await;
        }
        let field = |name: &str| parsed.as_ref().ok().and_then(|f| f.get(name)).filter(|v| !v.is_empty()).cloned();
        let out_trade_no = field("out_trade_no").filter(|no| is_valid_out_trade_no(no));
        let mut record = NotifyRecord::received(raw, now_ms(), peer.map(|p| p.to_string()), self.sandbox);
        record.transaction_id = field("transaction_id").filter(|t| t.len() <= 64);
        let checked = match &parsed {
            Ok(fields) => self.check_notify(fields),
            Err(e) => Checked::Decided(Verdict::Rejected, e.to_string(), NotifyAck::fail("XML格式错误"), false),
        };
        record.out_trade_no = out_trade_no;
        self.settle(record, checked, peer).await
    }

    /// API v2's refund notify: not signed; its `req_info` is encrypted with
    /// the API key. Believed only if it decrypts to WeChat's XML and names
    /// a refund PayBridge asked for, for the same order and amount.
    async fn check_refund_notify_v2(&self, fields: &Fields, record: &mut NotifyRecord) -> Checked {
        let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or("");
        if get("return_code") != "SUCCESS" {
            let reason = format!("return_code {}: {}", quote(get("return_code")), quote(get("return_msg")));
            return Checked::Decided(Verdict::Ignored, reason, NotifyAck::ok(), false);
        }
        let crate::wechat::settings::PayApi::V2 { mch_key, .. } = &self.api else {
            let ack = NotifyAck::fail("API版本错误");
            return Checked::Decided(
                Verdict::Rejected,
                "an API v2 refund notify, but this merchant uses API v3".into(),
                ack,
                false,
            );
        };
        if get("appid") != self.appid || get("mch_id") != self.mch_id {
            let reason =
                format!("appid {} / mch_id {} are not this merchant's", quote(get("appid")), quote(get("mch_id")));
            return Checked::Decided(Verdict::Rejected, reason, NotifyAck::fail("商户不匹配"), false);
        }
        let info = match crate::wechat::refund_info::decrypt(get("req_info"), mch_key) {
            Ok(info) => info,
            Err(e) => {
                return Checked::Decided(Verdict::Rejected, e, NotifyAck::fail("解密失败").with_status(401), false)
            }
        };
        let text = |k: &str| info.get(k).map(String::as_str).unwrap_or("");
        record.resource = serde_json::to_vec(&info).ok();
        record.out_trade_no = Some(text("out_trade_no").to_owned()).filter(|no| is_valid_out_trade_no(no));
        record.transaction_id = Some(text("transaction_id").to_owned()).filter(|t| !t.is_empty() && t.len() <= 64);
        let rejected = |reason: String, status: u16| {
            Checked::Decided(Verdict::Rejected, reason, NotifyAck::fail("失败").with_status(status), true)
        };
        let Some(status) = RefundStatus::parse_v2(text("refund_status")).filter(|s| *s != RefundStatus::Processing)
        else {
            return rejected(format!("refund_status {} is not an end", quote(text("refund_status"))), 400);
        };
        let Ok(amount) = text("refund_fee").parse::<u64>() else {
            return rejected(format!("refund_fee {:?} is not a whole number of fen", text("refund_fee")), 400);
        };
        let ended = super::refund::EndedRefund {
            out_refund_no: text("out_refund_no"),
            out_trade_no: text("out_trade_no"),
            amount,
            status,
            refund_id: text("refund_id"),
            via: &format!("refund_status {}", text("refund_status")),
        };
        match self.refund_notified(ended).await {
            Ok(reason) => Checked::Decided(Verdict::Refund, reason, NotifyAck::ok(), true),
            Err((reason, status)) => rejected(reason, status),
        }
    }

    /// Records a checked notify (either version) with its verdict and the
    /// order change in one durable write; returns the reply for WeChat.
    pub(super) async fn settle(
        &self,
        mut record: NotifyRecord,
        checked: Checked,
        peer: Option<SocketAddr>,
    ) -> NotifyAck {
        let checked = match (checked, &record.out_trade_no) {
            (Checked::Payment(_), None) => Checked::Decided(
                Verdict::Rejected,
                "out_trade_no is missing or malformed".into(),
                NotifyAck::fail("参数错误"),
                true,
            ),
            (checked, _) => checked,
        };
        record.verified = !matches!(checked, Checked::Decided(_, _, _, false));
        if let Checked::Decided(verdict, _, ack, false) = &checked {
            if !peer.is_none_or(|p| self.refused_budget.allow(p.ip())) {
                return self.unrecorded(*verdict, ack.clone(), peer);
            }
        }

        let now = record.received_at;
        let result = match checked {
            Checked::Decided(verdict, reason, ack, _) => {
                self.store.record_notify(record, move |_| (verdict, reason.clone(), ack.clone())).await
            }
            Checked::Payment(payment) => {
                self.store
                    .record_notify(record, move |order| match order {
                        // FAIL: WeChat resends for 24 h, time to restore a backup.
                        None => (
                            Verdict::Rejected,
                            "unknown order: PayBridge has no such out_trade_no".into(),
                            NotifyAck::fail("订单不存在").with_status(404),
                        ),
                        Some(order) => match order.apply_payment(&payment, now) {
                            PaymentOutcome::Paid => (Verdict::Paid, "order marked PAID".into(), NotifyAck::ok()),
                            PaymentOutcome::Duplicate => {
                                (Verdict::Duplicate, "already PAID by this transaction".into(), NotifyAck::ok())
                            }
                            // A signed notify that does not fit is an incident, not a
                            // forgery: record it and acknowledge, since resending changes nothing.
                            PaymentOutcome::Conflict(reason) => (
                                Verdict::Rejected,
                                format!("{reason}; order not changed, needs reconciliation"),
                                NotifyAck::ok(),
                            ),
                        },
                    })
                    .await
            }
        };
        // The store answers only once the notify is on disk: an error means
        // nothing was acknowledged, and FAIL makes WeChat send it again.
        let (record, ack) = match result {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(error = %e, "cannot store a notify; asking WeChat to resend");
                self.metrics.notify("store_error");
                return NotifyAck::fail("系统繁忙").with_status(500);
            }
        };
        self.metrics.notify(record.verdict.as_str());
        match record.verdict {
            Verdict::Rejected => tracing::warn!(
                notify_id = record.id, out_trade_no = ?record.out_trade_no, peer = ?record.peer,
                reason = %record.reason, "payment notify rejected"
            ),
            verdict => tracing::info!(
                notify_id = record.id, out_trade_no = ?record.out_trade_no, verdict = verdict.as_str(),
                sandbox = self.sandbox, "payment notify"
            ),
        }
        ack
    }

    /// Answers an unverified notify over its peer's budget without storing it.
    fn unrecorded(&self, verdict: Verdict, ack: NotifyAck, peer: Option<SocketAddr>) -> NotifyAck {
        self.metrics.notify(verdict.as_str());
        self.metrics.refused("notify_not_recorded");
        if let Some(count) = self.unrecorded.event() {
            tracing::warn!(
                count, last_peer = ?peer,
                "unverified notifies over the per-peer budget (notifies.refused_per_peer_per_minute) were refused \
                 without being recorded"
            );
        }
        ack
    }
}
