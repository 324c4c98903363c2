//! The v3 simulator's refunds, as WeChat handles them: idempotent on
//! `out_refund_no`, never more than the order's amount, a reason of at most
//! 80 bytes, `PROCESSING` at first, then an end (`SUCCESS` unless a test
//! queued another) announced by a `REFUND.*` notify encrypted with the
//! APIv3 key (AAD `refund`).
//!
//! Knobs for tests, shared with the v2 side: the next requests answered with
//! a chosen error code (signed, as WeChat answers), every request counted,
//! and an ABNORMAL refund completed later (as the merchant does in the
//! merchant platform), which WeChat then reports as SUCCESS.

use std::collections::VecDeque;

use serde_json::{json, Value};

use super::{error, SimulatorV3, V3Notify};

/// A refund WeChat accepted.
#[derive(Debug, Clone)]
pub(super) struct SimRefund {
    /// The request as first made, to compare a re-submission with.
    pub(super) request: Value,
    pub(super) refund_id: String,
    pub(super) status: &'static str,
    pub(super) create_time: String,
    /// Asked for through API v2 (its notify is v2's `req_info`).
    pub(super) v2: bool,
    /// How it ends next, whatever is queued (an ABNORMAL refund completed).
    pub(super) then: Option<&'static str>,
}

/// The refund knobs tests turn.
#[derive(Debug, Default)]
pub(super) struct RefundKnobs {
    /// The next refund requests are answered with these errors, in order.
    errors: VecDeque<(String, String)>,
    /// The `out_refund_no` of every refund request that reached WeChat.
    requests: Vec<String>,
}

/// WeChat's longest refund reason (v3 `reason`, v2 `refund_desc`), in bytes.
const MAX_REASON_BYTES: usize = 80;

/// The HTTP status WeChat answers a v3 refund error code with
/// (WECHATPAY-V3.md §6.5); a code it does not list gets 403.
fn v3_status(code: &str) -> u16 {
    match code {
        "PARAM_ERROR" | "INVALID_REQUEST" => 400,
        "SIGN_ERROR" => 401,
        "RESOURCE_NOT_EXISTS" | "MCH_NOT_EXISTS" => 404,
        "FREQUENCY_LIMITED" => 429,
        "SYSTEM_ERROR" | "BANK_ERROR" => 500,
        "SERVICE_UNAVAILABLE" => 503,
        _ => 403,
    }
}

impl SimulatorV3 {
    /// Makes the next refunds end with these statuses (`CLOSED`, `ABNORMAL`).
    pub fn queue_refund_outcomes(&self, outcomes: impl IntoIterator<Item = &'static str>) {
        self.inner.refund_outcomes.lock().expect("outcomes lock").extend(outcomes);
    }

    /// Answers the next refund requests (either version) with these errors
    /// (`code`, `message`), one each, in order, without recording a refund:
    /// v3 with the code's HTTP status, v2 as `result_code=FAIL`, both signed.
    pub fn queue_refund_errors<'a>(&self, errors: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut knobs = self.inner.refund_knobs.lock().expect("refund knobs lock");
        knobs.errors.extend(errors.into_iter().map(|(c, m)| (c.to_owned(), m.to_owned())));
    }

    /// The `out_refund_no` of every refund request received (either
    /// version, answered or refused), oldest first.
    pub fn refund_requests(&self) -> Vec<String> {
        self.inner.refund_knobs.lock().expect("refund knobs lock").requests.clone()
    }

    /// Counts a refund request; the error queued for it, if any.
    pub(in crate::sandbox) fn refund_requested(&self, out_refund_no: &str) -> Option<(String, String)> {
        let mut knobs = self.inner.refund_knobs.lock().expect("refund knobs lock");
        knobs.requests.push(out_refund_no.to_owned());
        knobs.errors.pop_front()
    }

    /// Completes an ABNORMAL refund, as the merchant does in the merchant
    /// platform: it ends SUCCESS at the next [`crate::sandbox::Simulator::end_new_refunds`],
    /// with its `REFUND.SUCCESS` notify (unless notifies are lost), and a
    /// query finds it SUCCESS from then. `false` if it is not ABNORMAL.
    pub fn complete_abnormal_refund(&self, out_refund_no: &str) -> bool {
        let mut refunds = self.inner.refunds.lock().expect("refunds lock");
        match refunds.get_mut(out_refund_no) {
            Some(refund) if refund.status == "ABNORMAL" => refund.then = Some("SUCCESS"),
            _ => return false,
        }
        self.inner.new_refunds.lock().expect("refunds lock").push(out_refund_no.to_owned());
        true
    }

    /// Refunds accepted since the last call (their end is due).
    pub fn take_new_refunds(&self) -> Vec<String> {
        std::mem::take(&mut *self.inner.new_refunds.lock().expect("refunds lock"))
    }

    /// The status of a refund (`PROCESSING`, `SUCCESS`, ...).
    pub fn refund_status(&self, out_refund_no: &str) -> Option<&'static str> {
        self.inner.refunds.lock().expect("refunds lock").get(out_refund_no).map(|r| r.status)
    }

    /// The sum of an order's refunds that did not fail, fen.
    pub fn refunded(&self, out_trade_no: &str) -> u64 {
        let refunds = self.inner.refunds.lock().expect("refunds lock");
        refunds
            .values()
            .filter(|r| r.request["out_trade_no"] == out_trade_no && matches!(r.status, "PROCESSING" | "SUCCESS"))
            .map(|r| r.request["amount"]["refund"].as_u64().unwrap_or(0))
            .sum()
    }

    pub(super) fn refund_create(&self, body: &[u8], now_secs: i64) -> (u16, Option<Value>) {
        let Ok(request) = serde_json::from_slice::<Value>(body) else {
            return (400, Some(error("PARAM_ERROR", "请求体格式错误")));
        };
        let text = |pointer: &str| request.pointer(pointer).and_then(Value::as_str).unwrap_or("").to_owned();
        if let Some((code, message)) = self.refund_requested(&text("/out_refund_no")) {
            return (v3_status(&code), Some(error(&code, &message)));
        }
        let out_trade_no = text("/out_trade_no");
        let paid = {
            let orders = self.inner.orders.lock().expect("orders lock");
            orders
                .get(&out_trade_no)
                .filter(|o| o.state == "SUCCESS")
                .and_then(|o| o.request["amount"]["total"].as_u64())
        };
        self.accept_refund(request, paid, false, now_secs)
    }

    /// A refund request (in v3's shape) for an order paid `paid` fen (`None`:
    /// no such paid order), as WeChat accepts or refuses it.
    pub(in crate::sandbox) fn accept_refund(
        &self,
        request: Value,
        paid: Option<u64>,
        v2: bool,
        now_secs: i64,
    ) -> (u16, Option<Value>) {
        let text = |pointer: &str| request.pointer(pointer).and_then(Value::as_str).unwrap_or("").to_owned();
        let number = |pointer: &str| request.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
        let (no, out_trade_no, amount, total) =
            (text("/out_refund_no"), text("/out_trade_no"), number("/amount/refund"), number("/amount/total"));
        if no.is_empty() || amount == 0 || text("/amount/currency") != "CNY" {
            return (400, Some(error("PARAM_ERROR", "参数错误")));
        }
        if text("/reason").len() > MAX_REASON_BYTES {
            return (400, Some(error("PARAM_ERROR", "退款原因长度超过限制")));
        }
        let mut refunds = self.inner.refunds.lock().expect("refunds lock");
        if let Some(existing) = refunds.get(&no) {
            return match existing.request == request {
                true => (200, Some(self.refund_object(&no, existing))),
                false => (400, Some(error("INVALID_REQUEST", "请求重入时,参数与首次请求时不一致"))),
            };
        }
        let Some(paid) = paid else {
            return (404, Some(error("RESOURCE_NOT_EXISTS", "订单不存在")));
        };
        if paid != total {
            return (400, Some(error("PARAM_ERROR", "订单金额不一致")));
        }
        let refunded: u64 = refunds
            .values()
            .filter(|r| {
                r.request["out_trade_no"] == out_trade_no.as_str() && matches!(r.status, "PROCESSING" | "SUCCESS")
            })
            .map(|r| r.request["amount"]["refund"].as_u64().unwrap_or(0))
            .sum();
        if refunded + amount > total {
            return (400, Some(error("INVALID_REQUEST", "申请退款金额超过订单可退金额")));
        }
        let create_time = crate::wechat::beijing_rfc3339(now_secs);
        let refund_id = format!("50000{:024}", rand::Rng::random_range(&mut rand::rng(), 0..10u128.pow(24)));
        let refund = SimRefund { request, refund_id, status: "PROCESSING", create_time, v2, then: None };
        let reply = self.refund_object(&no, &refund);
        refunds.insert(no.clone(), refund);
        self.inner.new_refunds.lock().expect("refunds lock").push(no);
        (200, Some(reply))
    }

    pub(super) fn refund_get(&self, no: &str) -> (u16, Option<Value>) {
        let refunds = self.inner.refunds.lock().expect("refunds lock");
        match refunds.get(no) {
            Some(refund) => (200, Some(self.refund_object(no, refund))),
            None => (404, Some(error("RESOURCE_NOT_EXISTS", "退款单不存在"))),
        }
    }

    fn refund_object(&self, no: &str, refund: &SimRefund) -> Value {
        let r = &refund.request;
        json!({
            "refund_id": refund.refund_id, "out_refund_no": no, "out_trade_no": r["out_trade_no"],
            "channel": "ORIGINAL", "user_received_account": "支付用户零钱", "create_time": refund.create_time,
            "status": refund.status,
            "amount": { "total": r["amount"]["total"], "refund": r["amount"]["refund"],
                        "payer_total": r["amount"]["total"], "payer_refund": r["amount"]["refund"], "currency": "CNY" },
        })
    }

    /// Ends a refund as queued (`SUCCESS` by default); returns where its
    /// notify goes and the notify's resource.
    pub fn end_refund(&self, no: &str) -> Option<(String, Value)> {
        self.end_refund_of(no).map(|(url, resource, _)| (url, resource))
    }

    /// [`SimulatorV3::end_refund`], and whether it was asked for through API v2.
    pub(in crate::sandbox) fn end_refund_of(&self, no: &str) -> Option<(String, Value, bool)> {
        let mut refunds = self.inner.refunds.lock().expect("refunds lock");
        let refund = refunds.get_mut(no)?;
        let outcome = match refund.then.take() {
            Some(then) => then,
            None => self.inner.refund_outcomes.lock().expect("outcomes lock").pop_front().unwrap_or("SUCCESS"),
        };
        refund.status = outcome;
        let r = &refund.request;
        let resource = json!({
            "mchid": self.inner.merchant.mchid, "out_trade_no": r["out_trade_no"], "transaction_id": "",
            "out_refund_no": no, "refund_id": refund.refund_id, "refund_status": outcome,
            "success_time": refund.create_time, "user_received_account": "支付用户零钱",
            "amount": { "total": r["amount"]["total"], "refund": r["amount"]["refund"],
                        "payer_total": r["amount"]["total"], "payer_refund": r["amount"]["refund"] },
        });
        Some((r["notify_url"].as_str().unwrap_or("").to_owned(), resource, refund.v2))
    }

    /// A refund's request (v3's shape), status, id and creation time.
    pub(in crate::sandbox) fn refund_facts(&self, no: &str) -> Option<(Value, &'static str, String, String)> {
        let refunds = self.inner.refunds.lock().expect("refunds lock");
        refunds.get(no).map(|r| (r.request.clone(), r.status, r.refund_id.clone(), r.create_time.clone()))
    }

    /// The refund notify for `resource`, encrypted (AAD `refund`) and signed now.
    pub fn refund_notify(&self, resource: &Value, event_id: &str, now_secs: i64) -> Result<V3Notify, String> {
        let nonce = &crate::wechat::nonce_str()[..12];
        let ciphertext = self
            .inner
            .api_v3_key
            .encrypt(nonce, "refund", resource.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
        let status = resource["refund_status"].as_str().unwrap_or("SUCCESS");
        let body = json!({
            "id": event_id, "create_time": resource["success_time"], "resource_type": "encrypt-resource",
            "event_type": format!("REFUND.{status}"), "summary": "退款状态变更",
            "resource": {
                "original_type": "refund", "algorithm": "AEAD_AES_256_GCM", "ciphertext": ciphertext,
                "associated_data": "refund", "nonce": nonce,
            },
        })
        .to_string()
        .into_bytes();
        Ok(self.sign_notify(body, now_secs))
    }
}
