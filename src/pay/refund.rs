//! Refunds, from the admin page or platform A: recorded and reserved first
//! (so the refunds of an order never exceed what was paid, however many
//! are asked for at once), then asked of WeChat, then ended by WeChat's
//! answer, its refund notify, or a refund query.
//!
//! An unknown outcome (a timeout) keeps the refund PROCESSING under the same
//! `out_refund_no`: asking again with a new number could refund twice.

use rand::Rng;
use sha2::{Digest, Sha256};

use super::{now_ms, PayError, Payments};
use crate::store::{Refund, RefundCreated, RefundStatus};
use crate::wechat::client::WechatError;
use crate::wechat::gateway::RefundRequest;

/// WeChat's limit on `reason`, in characters.
pub const MAX_REASON_CHARS: usize = 80;

/// Whether WeChat's answer means the refund certainly did not happen. Only
/// these free the amount again; anything else (a timeout, `SYSTEM_ERROR`,
/// a code PayBridge does not know) leaves the refund PROCESSING, to be
/// asked about and retried under the same number: guessing "failed" when
/// WeChat did refund would let the money go back twice.
fn refused(e: &WechatError) -> bool {
    match e {
        // Not processed at all (v2's protocol refusals, v2 refunds not supported here).
        WechatError::ReturnFail(_) => true,
        WechatError::Business { code, .. } => matches!(
            code.as_str(),
            // v3
            "PARAM_ERROR" | "INVALID_REQUEST" | "NOT_ENOUGH" | "RESOURCE_NOT_EXISTS" | "USER_ACCOUNT_ABNORMAL"
                | "NO_AUTH" | "MCH_NOT_EXISTS" | "SIGN_ERROR"
                // v2
                | "ORDERNOTEXIST" | "INVALID_TRANSACTIONID" | "REFUND_FEE_INVALID"
        ),
        _ => false,
    }
}

/// What a verified refund notify (either version) says of a refund.
pub(super) struct EndedRefund<'a> {
    pub out_refund_no: &'a str,
    pub out_trade_no: &'a str,
    /// Fen.
    pub amount: u64,
    pub status: RefundStatus,
    /// WeChat's refund id.
    pub refund_id: &'a str,
    /// Which notify said so (`REFUND.SUCCESS`, v2's `refund_status`).
    pub via: &'a str,
}

/// A refund as asked for.
#[derive(Debug, Clone)]
pub struct NewRefund {
    /// The order.
    pub out_trade_no: String,
    /// Fen.
    pub amount: u64,
    /// Shown to the payer.
    pub reason: String,
    /// `admin`, `platform shop-a`.
    pub requested_by: String,
    /// The platform's own refund id (the idempotency key of its requests).
    pub platform_refund_id: Option<String>,
}

impl NewRefund {
    /// Our refund number: derived from the platform's refund id (so the same
    /// request is the same refund), or new for the admin page.
    fn out_refund_no(&self, platform: Option<&str>) -> String {
        match (&self.platform_refund_id, platform) {
            (Some(id), Some(platform)) => {
                let digest = Sha256::digest(format!("{platform}\0{id}"));
                format!("PR{}", &hex::encode(digest)[..30])
            }
            _ => {
                let stamp = crate::wechat::beijing_compact(time::OffsetDateTime::now_utc());
                format!("RF{stamp}{:010}", rand::rng().random_range(0..10_000_000_000u64))
            }
        }
    }
}

impl Payments {
    /// Ends the refund a verified notify names, if it is one PayBridge asked
    /// for, for the same order and amount; durably. `Ok`: what happened, for
    /// the notify log. `Err`: why not, and the HTTP status for WeChat.
    pub(super) async fn refund_notified(&self, notified: EndedRefund<'_>) -> Result<String, (String, u16)> {
        let no = notified.out_refund_no.to_owned();
        match self.store.read(move |store| store.refund(&no)).await {
            Ok(Some(ours)) if ours.out_trade_no == notified.out_trade_no && ours.amount == notified.amount => {}
            Ok(Some(_)) => return Err(("the refund it names has another order or amount here".into(), 400)),
            Ok(None) => return Err((format!("unknown refund {}", notified.out_refund_no), 404)),
            Err(e) => return Err((format!("storage: {e}"), 500)),
        }
        let result = format!("notify {}", notified.via);
        let refund_id = Some(notified.refund_id.to_owned());
        match self.end_refund(notified.out_refund_no, notified.status, refund_id, result).await {
            Ok(ended) => Ok(format!("refund {} is {}", ended.out_refund_no, ended.status.as_str())),
            Err(e) => Err((format!("cannot record the refund: {e}"), 500)),
        }
    }

    /// Asks for a refund; returns it and whether it is new (a platform
    /// repeating its request gets the same refund back).
    pub async fn refund(&self, new: NewRefund, platform: Option<&str>) -> Result<(Refund, bool), PayError> {
        if new.amount == 0 {
            return Err(PayError::Invalid("amount must be at least 1 fen".into()));
        }
        if new.reason.chars().count() > MAX_REASON_CHARS {
            return Err(PayError::Invalid(format!("reason must be at most {MAX_REASON_CHARS} characters")));
        }
        let now = now_ms();
        let refund = Refund {
            out_refund_no: new.out_refund_no(platform),
            out_trade_no: new.out_trade_no.clone(),
            amount: new.amount,
            reason: new.reason.clone(),
            status: RefundStatus::Processing,
            requested_by: new.requested_by.clone(),
            platform_refund_id: new.platform_refund_id.clone(),
            refund_id: None,
            created_at: now,
            updated_at: now,
            last_result: None,
        };
        let refund = match self.store.create_refund(refund).await? {
            RefundCreated::New(refund) => refund,
            RefundCreated::Existing(refund) => return Ok((refund, false)),
            RefundCreated::NumberTaken(_) => {
                return Err(PayError::Conflict {
                    code: "REFUND_CONFLICT",
                    message: "this refundId was used for another order or amount".into(),
                })
            }
            RefundCreated::NoOrder => return Err(PayError::NotFound(new.out_trade_no)),
            RefundCreated::NotRefundable(status) => {
                return Err(PayError::Conflict {
                    code: "NOT_REFUNDABLE",
                    message: format!("the order is {}: only a paid order can be refunded", status.as_str()),
                })
            }
            RefundCreated::TooMany => {
                return Err(PayError::Conflict {
                    code: "TOO_MANY_REFUNDS",
                    message: format!(
                        "an order can have at most {} refunds (WeChat's limit)",
                        crate::store::refund::MAX_REFUNDS_PER_ORDER
                    ),
                })
            }
            RefundCreated::TooMuch(left) => {
                return Err(PayError::Conflict {
                    code: "REFUND_EXCEEDS_PAID",
                    message: format!("at most {left} fen of this order can still be refunded"),
                })
            }
        };
        tracing::info!(out_trade_no = %refund.out_trade_no, out_refund_no = %refund.out_refund_no, amount = refund.amount, by = %refund.requested_by, "refund requested");
        self.send_refund(&refund).await.map(|refund| (refund, true))
    }

    /// Sends a recorded refund to WeChat and records the answer.
    async fn send_refund(&self, refund: &Refund) -> Result<Refund, PayError> {
        let no = refund.out_trade_no.clone();
        let order = self.store.read(move |store| store.order(&no)).await?;
        let order = order.ok_or_else(|| PayError::NotFound(refund.out_trade_no.clone()))?;
        let asked = self
            .gateway
            .refund(&RefundRequest {
                out_trade_no: &refund.out_trade_no,
                out_refund_no: &refund.out_refund_no,
                reason: &refund.reason,
                amount: refund.amount,
                total: order.total_fee,
            })
            .await;
        let no = &refund.out_refund_no;
        match asked {
            Ok(state) => {
                let result = format!("WeChat: {}", state.status.as_str());
                self.end_refund(no, state.status, state.refund_id, result).await
            }
            // WeChat said no: nothing was refunded, the amount is free again.
            Err(e) if refused(&e) => {
                self.end_refund(no, RefundStatus::Closed, None, format!("refused: {e}")).await?;
                Err(PayError::Upstream(e))
            }
            // Unknown outcome: stays PROCESSING; the lifecycle asks WeChat again with this number.
            Err(e) => self.end_refund(no, RefundStatus::Processing, None, format!("outcome unknown: {e}")).await,
        }
    }

    /// Records what is known of a refund (ending it if `status` is final).
    pub(super) async fn end_refund(
        &self,
        out_refund_no: &str,
        status: RefundStatus,
        refund_id: Option<String>,
        result: String,
    ) -> Result<Refund, PayError> {
        let refund = self.store.update_refund(out_refund_no, status, refund_id, result, now_ms()).await?;
        let refund = refund.ok_or_else(|| PayError::NotFound(out_refund_no.to_owned()))?;
        if refund.status != RefundStatus::Processing {
            tracing::info!(out_refund_no, status = refund.status.as_str(), "refund ended");
        }
        Ok(refund)
    }

    /// The lifecycle's step for a refund still processing: ask WeChat where
    /// it is; one WeChat never received is sent again, same number.
    pub(super) async fn refund_step(&self, refund: &Refund) -> Result<&'static str, PayError> {
        match self.gateway.refund_query(&refund.out_refund_no).await {
            Ok(state) if state.status == RefundStatus::Processing => {
                self.end_refund(&refund.out_refund_no, state.status, state.refund_id, "WeChat: PROCESSING".into())
                    .await?;
                Ok("refund_processing")
            }
            Ok(state) => {
                let result = format!("WeChat (query): {}", state.status.as_str());
                self.end_refund(&refund.out_refund_no, state.status, state.refund_id, result).await?;
                Ok("refund_ended")
            }
            Err(WechatError::Business { code, .. }) if code == "RESOURCE_NOT_EXISTS" => {
                self.send_refund(refund).await.map(|_| "refund_resent").or(Ok("refund_error"))
            }
            Err(e) => {
                self.end_refund(&refund.out_refund_no, RefundStatus::Processing, None, format!("query failed: {e}"))
                    .await?;
                Ok("refund_error")
            }
        }
    }
}
