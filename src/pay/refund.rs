//! Refunds, from the admin page or platform A: recorded and reserved first
//! (so the refunds of an order never exceed what was paid, however many
//! are asked for at once), then asked of WeChat, then ended by WeChat's
//! answer, its refund notify, or a refund query.
//!
//! WeChat's errors are classified by one table, [`REFUND_CODES`], built
//! from WeChat's documented codes (both versions): a definitive refusal
//! ends the refund FAILED and frees its amount at once; a code WeChat
//! documents as retryable, a timeout or a lost reply keeps it PROCESSING
//! under the same `out_refund_no` (asking again with a new number could
//! refund twice), asked about and resent with back-off; a code not in the
//! table is treated the same way, and after [`NEEDS_LOOK_AFTER`] tries in
//! a row without an answer the admin page shows the refund as needing a
//! look.
//!
//! ABNORMAL is not an end: the merchant may complete the refund in the
//! merchant platform, and WeChat then reports SUCCESS. ABNORMAL refunds are
//! queried every [`ABNORMAL_QUERY_EVERY`] for [`ABNORMAL_WATCH`].

use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng;
use sha2::{Digest, Sha256};

use super::{now_ms, PayError, Payments};
use crate::store::refund::RefundNews;
use crate::store::{Refund, RefundCreated, RefundStatus};
use crate::wechat::client::{WechatError, NO_CLIENT_CERTIFICATE};
use crate::wechat::gateway::RefundRequest;

/// WeChat's limit on the reason (v3 `reason`, v2 `refund_desc`: string(80)),
/// counted as WeChat counts it, in UTF-8 bytes: 80 ASCII characters, or 26
/// Chinese ones.
pub const MAX_REASON_BYTES: usize = 80;

/// Tries in a row without a definite answer after which the admin page
/// shows a PROCESSING refund as needing a look.
pub const NEEDS_LOOK_AFTER: u32 = 3;

/// The first retry after a try without an answer; each next one waits twice
/// as long, up to [`RETRY_AT_MOST`].
pub const RETRY_FIRST: Duration = Duration::from_secs(60);

/// The longest wait between tries of a refund without an answer.
pub const RETRY_AT_MOST: Duration = Duration::from_secs(60 * 60);

/// How often an ABNORMAL refund is asked about.
pub const ABNORMAL_QUERY_EVERY: Duration = Duration::from_secs(60 * 60);

/// How long after it was asked for an ABNORMAL refund is watched: WeChat
/// refunds orders up to a year old, so it cannot be completed later. Then
/// its amount is released and the platform told `refund.failed`.
pub const ABNORMAL_WATCH: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Quoted WeChat text in replies and records is cut to this many characters.
const MAX_QUOTED_CHARS: usize = 100;

/// What WeChat's error means for a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundErrorKind {
    /// WeChat refused outright: nothing was refunded; the refund ends FAILED.
    Refused,
    /// WeChat documents it as retryable with the same number (or the
    /// outcome is unknown): the refund stays PROCESSING, asked about and
    /// resent with back-off.
    Retryable,
    /// A code not in [`REFUND_CODES`]: handled as retryable, and shown as
    /// needing a look after [`NEEDS_LOOK_AFTER`] tries.
    Unknown,
}

/// One of WeChat's refund error codes.
#[derive(Debug, Clone, Copy)]
pub struct RefundCode {
    /// WeChat's code (`err_code` in v2, `code` in v3).
    pub code: &'static str,
    /// Which API version documents it: `v2`, `v3` or `v2, v3`.
    pub api: &'static str,
    /// What PayBridge does.
    pub kind: RefundErrorKind,
    /// WeChat's meaning.
    pub meaning: &'static str,
}

const fn code(code: &'static str, api: &'static str, kind: RefundErrorKind, meaning: &'static str) -> RefundCode {
    RefundCode { code, api, kind, meaning }
}

use RefundErrorKind::{Refused, Retryable};

/// WeChat's documented refund error codes (v2 `/secapi/pay/refund` and
/// `refundquery`, v3 `/v3/refund/domestic/refunds`; WECHATPAY-V2.md §5.4,
/// WECHATPAY-V3.md §6.5 and §8): the one place they are classified.
pub const REFUND_CODES: &[RefundCode] = &[
    code("SYSTEMERROR", "v2", Retryable, "system timeout etc.: retry with the same out_refund_no"),
    code("SYSTEM_ERROR", "v3", Retryable, "system error: retry with the same out_refund_no"),
    code("BIZERR_NEED_RETRY", "v2", Retryable, "concurrency conflict: retry with the same out_refund_no"),
    code("FREQUENCY_LIMITED", "v2, v3", Retryable, "rate limited (v3: outcome unknown): back off, query, retry"),
    code("RATELIMIT_EXCEEDED", "v3", Retryable, "rate limited (generic table): back off, retry"),
    code("INVALID_REQ_TOO_MUCH", "v2", Retryable, "too many bad requests: retry after a minute"),
    code("NOTENOUGH", "v2", Retryable, "merchant's refundable balance too low: top up, retry the same number"),
    code("NOT_ENOUGH", "v3", Retryable, "merchant's refundable balance too low: top up, retry the same number"),
    code("SERVICE_UNAVAILABLE", "v3", Retryable, "service down or overloaded (502/503): retry later"),
    code("BANK_ERROR", "v3", Retryable, "bank system error (500, older tables): retry"),
    code("HTTP_ERROR", "v3", Retryable, "an HTTP error without WeChat's body (a proxy): outcome unknown"),
    code("TRADE_OVERDUE", "v2", Refused, "order older than one year: refund outside WeChat"),
    code("ERROR", "v2", Refused, "business error, the reason is in err_code_des"),
    code("USER_ACCOUNT_ABNORMAL", "v2, v3", Refused, "payer's account closed or abnormal: refund outside WeChat"),
    code("INVALID_TRANSACTIONID", "v2", Refused, "bad transaction_id"),
    code("PARAM_ERROR", "v2, v3", Refused, "bad parameter (amounts, reason too long ...)"),
    code("APPID_NOT_EXIST", "v2", Refused, "appid unknown: configuration"),
    code("MCHID_NOT_EXIST", "v2", Refused, "mch_id unknown: configuration"),
    code("ORDERNOTEXIST", "v2", Refused, "order missing or not paid"),
    code("REQUIRE_POST_METHOD", "v2", Refused, "format: not a POST"),
    code("SIGNERROR", "v2", Refused, "format: bad signature"),
    code("XML_FORMAT_ERROR", "v2", Refused, "format: bad XML"),
    code("REFUND_FEE_INVALID", "v2", Refused, "refund amount invalid"),
    code(
        "INVALID_REQUEST",
        "v3",
        Refused,
        "against the rules (e.g. more than is refundable, same number with other parameters)",
    ),
    code("SIGN_ERROR", "v3", Refused, "signature, serial or timestamp wrong"),
    code("NO_AUTH", "v3", Refused, "product not enabled or merchant restricted"),
    code("RESOURCE_NOT_EXISTS", "v3", Refused, "order missing or unpaid"),
    code("MCH_NOT_EXISTS", "v3", Refused, "mchid unknown"),
    code("APPID_MCHID_NOT_MATCH", "v3", Refused, "appid not bound to the mchid"),
];

/// What a failed refund request means: transport failures, timeouts and
/// replies that could not be read or trusted leave the outcome unknown
/// (retryable); `return_code=FAIL` was not processed at all (refused);
/// business codes go by [`REFUND_CODES`].
pub fn classify(e: &WechatError) -> RefundErrorKind {
    match e {
        WechatError::Timeout
        | WechatError::Transport(_)
        | WechatError::HttpStatus(_)
        | WechatError::BadReply(_)
        | WechatError::BadSignature(_) => RefundErrorKind::Retryable,
        WechatError::ReturnFail(_) => RefundErrorKind::Refused,
        WechatError::Business { code, .. } => {
            REFUND_CODES.iter().find(|c| c.code == code).map_or(RefundErrorKind::Unknown, |c| c.kind)
        }
        WechatError::WrongMerchant { .. } | WechatError::Login { .. } => RefundErrorKind::Unknown,
    }
}

/// [`REFUND_CODES`] as a Markdown table (for the README).
pub fn refund_codes_markdown() -> String {
    let mut out = String::from("| code | API | PayBridge | WeChat's meaning |\n|---|---|---|---|\n");
    for c in REFUND_CODES {
        let kind = match c.kind {
            RefundErrorKind::Refused => "FAILED at once, amount freed, `refund.failed`",
            RefundErrorKind::Retryable => "stays PROCESSING, asked about and resent with back-off",
            RefundErrorKind::Unknown => "as retryable, needs a look after 3 tries",
        };
        out.push_str(&format!("| `{}` | {} | {kind} | {} |\n", c.code, c.api, c.meaning));
    }
    out
}

/// The wait before the next try after `tries` tries in a row without an
/// answer: 1, 2, 4 … minutes, at most [`RETRY_AT_MOST`].
pub fn retry_after(tries: u32) -> Duration {
    let doublings = tries.saturating_sub(1).min(16);
    (RETRY_FIRST * 2u32.pow(doublings)).min(RETRY_AT_MOST)
}

/// The wait before asking again about a refund WeChat says is PROCESSING,
/// `age` after it was asked for: a minute at first, then half its age, at
/// most an hour (card refunds take days; most take minutes).
pub fn requery_after(age: Duration) -> Duration {
    (age / 2).clamp(RETRY_FIRST, RETRY_AT_MOST)
}

/// At most [`MAX_QUOTED_CHARS`] characters of `text` (WeChat's words).
fn quote(text: &str) -> String {
    quote_at_most(text, MAX_QUOTED_CHARS)
}

/// At most `limit` characters of `text`, and `…` if there was more.
fn quote_at_most(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// WeChat's code and words for a failed request, quoted short.
fn said(e: &WechatError) -> String {
    match e {
        // WeChat's codes are string(32).
        WechatError::Business { code, description } => format!("{} {}", quote_at_most(code, 32), quote(description)),
        // Ours, not WeChat's: says which settings to add.
        WechatError::ReturnFail(message) if message == NO_CLIENT_CERTIFICATE => message.clone(),
        WechatError::ReturnFail(message) => format!("return_code FAIL {}", quote(message)),
        other => quote(&other.to_string()),
    }
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
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
        let ours = match self.store.read(move |store| store.refund(&no)).await {
            Ok(Some(ours)) if ours.out_trade_no == notified.out_trade_no && ours.amount == notified.amount => ours,
            Ok(Some(_)) => return Err(("the refund it names has another order or amount here".into(), 400)),
            Ok(None) => return Err((format!("unknown refund {}", notified.out_refund_no), 404)),
            Err(e) => return Err((format!("storage: {e}"), 500)),
        };
        let result = format!("notify {}", notified.via);
        let refund_id = Some(notified.refund_id.to_owned());
        let mut news = self.news(&ours, notified.status, refund_id, result, now_ms(), false);
        // A notify is the newest news, whatever was recorded before.
        news.if_still = None;
        match self.end_refund(notified.out_refund_no, news).await {
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
        if new.reason.len() > MAX_REASON_BYTES {
            return Err(PayError::Invalid(format!(
                "reason is {} bytes: WeChat takes at most {MAX_REASON_BYTES} bytes of UTF-8 \
                 (80 letters or digits, 26 Chinese characters)",
                new.reason.len()
            )));
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
            tries: 0,
            // If WeChat's answer is lost, the lifecycle asks in a minute.
            next_query_at: now + ms(RETRY_FIRST),
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
        self.send_refund(&refund, now).await.map(|refund| (refund, true))
    }

    /// Sends a recorded refund to WeChat and records the answer. `base`:
    /// what the next query's time counts from.
    async fn send_refund(&self, refund: &Refund, base: i64) -> Result<Refund, PayError> {
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
                self.record(refund, state.status, state.refund_id, result, base, false).await
            }
            Err(e) => match classify(&e) {
                // WeChat said no: nothing was refunded, the amount is free again.
                RefundErrorKind::Refused => {
                    let why = said(&e);
                    let news = self.news(refund, RefundStatus::Failed, None, format!("refused: {why}"), base, false);
                    self.end_refund(no, news).await?;
                    tracing::warn!(out_refund_no = %no, why = %why, "WeChat refused a refund");
                    Err(PayError::RefundRefused(format!(
                        "WeChat refused the refund ({why}); nothing was refunded, and the amount can be refunded again"
                    )))
                }
                // Unknown outcome: stays PROCESSING; the lifecycle asks WeChat again with this number.
                kind => {
                    let what = if kind == RefundErrorKind::Unknown { "unknown code" } else { "outcome unknown" };
                    let result = format!("{what}: {}", said(&e));
                    self.record(refund, RefundStatus::Processing, None, result, base, true).await
                }
            },
        }
    }

    /// What to record of `refund` now: when it is next due follows from its
    /// status, `base` (the time the step was due, or now) and, for a try
    /// without an answer, the tries so far.
    fn news(
        &self,
        refund: &Refund,
        status: RefundStatus,
        refund_id: Option<String>,
        result: String,
        base: i64,
        unanswered: bool,
    ) -> RefundNews {
        let now = now_ms();
        let wait = match (status, unanswered) {
            (RefundStatus::Abnormal, true) => retry_after(refund.tries.saturating_add(1)).max(ABNORMAL_QUERY_EVERY),
            (_, true) => retry_after(refund.tries.saturating_add(1)),
            (RefundStatus::Abnormal, false) => ABNORMAL_QUERY_EVERY,
            _ => requery_after(Duration::from_millis(base.saturating_sub(refund.created_at).max(0) as u64)),
        };
        // Only WeChat saying ABNORMAL again ends the watch, never a failed query.
        let give_up = status == RefundStatus::Abnormal && !unanswered && base >= refund.created_at + ms(ABNORMAL_WATCH);
        let result = match give_up {
            true => format!("{result}; watched for {} days: given up", ABNORMAL_WATCH.as_secs() / 86_400),
            false => result,
        };
        // What was asked in one state must not undo a notify that came meanwhile.
        let if_still = Some(refund.status);
        RefundNews { status, refund_id, result, now, next_query_at: base + ms(wait), unanswered, give_up, if_still }
    }

    /// Records what is known of `refund` (see [`Payments::news`]).
    async fn record(
        &self,
        refund: &Refund,
        status: RefundStatus,
        refund_id: Option<String>,
        result: String,
        base: i64,
        unanswered: bool,
    ) -> Result<Refund, PayError> {
        let news = self.news(refund, status, refund_id, result, base, unanswered);
        self.end_refund(&refund.out_refund_no, news).await
    }

    /// Records news of a refund (ending it if its status is an end).
    async fn end_refund(&self, out_refund_no: &str, news: RefundNews) -> Result<Refund, PayError> {
        let refund = self.store.update_refund(out_refund_no, news).await?;
        let refund = refund.ok_or_else(|| PayError::NotFound(out_refund_no.to_owned()))?;
        if refund.status != RefundStatus::Processing {
            tracing::info!(out_refund_no, status = refund.status.as_str(), "refund ended or abnormal");
        }
        Ok(refund)
    }

    /// The refunds the lifecycle asks WeChat about at `now` (its clock), at
    /// most `limit`: PROCESSING ones whose back-off has passed, and ABNORMAL
    /// ones due on their slow schedule.
    pub async fn refunds_to_query(&self, now: i64, limit: usize) -> Result<Vec<Refund>, PayError> {
        // The steps that follow schedule from the lifecycle's clock (tests move it).
        self.refund_pass_at.store(now, Ordering::Relaxed);
        Ok(self.store.read(move |store| store.refunds_to_query(now, limit)).await?)
    }

    /// The lifecycle's step for a watched refund: ask WeChat where it is;
    /// one WeChat never received is sent again, same number. The next step
    /// counts from the lifecycle's clock at [`Payments::refunds_to_query`]
    /// (or now, if later), so a test moving that clock sees the same
    /// schedule as production.
    pub async fn refund_step(&self, refund: &Refund) -> Result<&'static str, PayError> {
        let base = self.refund_pass_at.load(Ordering::Relaxed).max(now_ms());
        match self.gateway.refund_query(&refund.out_refund_no).await {
            Ok(state) if state.status == RefundStatus::Processing => {
                self.record(refund, state.status, state.refund_id, "WeChat: PROCESSING".into(), base, false).await?;
                Ok("refund_processing")
            }
            Ok(state) if state.status == RefundStatus::Abnormal => {
                let news =
                    self.news(refund, state.status, state.refund_id, "WeChat (query): ABNORMAL".into(), base, false);
                let given_up = news.give_up;
                self.end_refund(&refund.out_refund_no, news).await?;
                Ok(if given_up { "refund_given_up" } else { "refund_abnormal" })
            }
            Ok(state) => {
                let result = format!("WeChat (query): {}", state.status.as_str());
                self.record(refund, state.status, state.refund_id, result, base, false).await?;
                Ok("refund_ended")
            }
            // Only a refund never accepted is sent again; an ABNORMAL one WeChat knows.
            Err(WechatError::Business { code, .. })
                if code == "RESOURCE_NOT_EXISTS" && refund.status == RefundStatus::Processing =>
            {
                match self.send_refund(refund, base).await {
                    Ok(_) => Ok("refund_resent"),
                    Err(PayError::RefundRefused(_)) => Ok("refund_refused"),
                    Err(PayError::Store(e)) => Err(PayError::Store(e)),
                    Err(_) => Ok("refund_error"),
                }
            }
            Err(e) => {
                let result = format!("query failed: {}", said(&e));
                self.record(refund, refund.status, None, result, base, true).await?;
                Ok("refund_error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn business(code: &str) -> WechatError {
        WechatError::Business { code: code.into(), description: "说明".into() }
    }

    #[test]
    fn codes_are_classified_from_the_table() {
        for refused in ["TRADE_OVERDUE", "ERROR", "USER_ACCOUNT_ABNORMAL", "PARAM_ERROR", "INVALID_REQUEST", "NO_AUTH"]
        {
            assert_eq!(classify(&business(refused)), RefundErrorKind::Refused, "{refused}");
        }
        for retry in
            ["SYSTEMERROR", "SYSTEM_ERROR", "BIZERR_NEED_RETRY", "FREQUENCY_LIMITED", "NOTENOUGH", "NOT_ENOUGH"]
        {
            assert_eq!(classify(&business(retry)), RefundErrorKind::Retryable, "{retry}");
        }
        assert_eq!(classify(&business("SOMETHING_NEW")), RefundErrorKind::Unknown);
        assert_eq!(classify(&WechatError::Timeout), RefundErrorKind::Retryable, "a lost reply");
        assert_eq!(classify(&WechatError::HttpStatus(502)), RefundErrorKind::Retryable);
        assert_eq!(classify(&WechatError::ReturnFail("签名错误".into())), RefundErrorKind::Refused, "not processed");
        // One row per code.
        let mut codes: Vec<_> = REFUND_CODES.iter().map(|c| c.code).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), REFUND_CODES.len());
        let table = refund_codes_markdown();
        assert_eq!(table.lines().count(), REFUND_CODES.len() + 2);
        assert!(table.contains("| `TRADE_OVERDUE` | v2 | FAILED at once"), "{table}");
    }

    #[test]
    fn retries_back_off_to_an_hour() {
        let minutes: Vec<u64> = (1..=9).map(|t| retry_after(t).as_secs() / 60).collect();
        assert_eq!(minutes, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_after(u32::MAX), RETRY_AT_MOST);
        assert_eq!(requery_after(Duration::ZERO), RETRY_FIRST);
        assert_eq!(requery_after(Duration::from_secs(20 * 60)), Duration::from_secs(10 * 60));
        assert_eq!(requery_after(Duration::from_secs(3 * 86_400)), RETRY_AT_MOST);
    }

    #[test]
    fn wechat_words_are_quoted_short() {
        let long = "错".repeat(300);
        let said = said(&WechatError::Business { code: "ERROR".into(), description: long });
        assert!(said.starts_with("ERROR 错") && said.chars().count() <= 6 + MAX_QUOTED_CHARS + 1, "{said}");
        // Ours is not cut: it says which settings to add.
        assert!(said_no_cert().contains("client_p12_file"));
    }

    fn said_no_cert() -> String {
        said(&WechatError::ReturnFail(NO_CLIENT_CERTIFICATE.into()))
    }
}
