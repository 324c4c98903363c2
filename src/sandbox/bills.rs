//! The simulator's daily bills, in WeChat's exact format
//! ([`crate::wechat::bill`]), for API v2 (`/pay/downloadbill`) and v3
//! (`/v3/bill/tradebill`, then the file at its `download_url`).
//!
//! A day's bill holds the payments made that day (v2 and v3 orders of the
//! one merchant) and the refunds asked for that day. Like WeChat, a day's
//! bill exists only once the day is over: tests end a day with
//! [`Simulator::close_day`]; the sandbox demo makes every bill at once. The
//! knobs make the bill disagree with PayBridge on purpose.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde::Deserialize;

use super::simulator::{Simulator, TradeState};
use super::v3::{error, V3Reply};
use crate::wechat::bill::{self, BillPayment, BillRefund};

/// A way for the next bill download to go wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillFault {
    /// A row is cut short (a broken file).
    Malformed,
    /// v3: the signed `hash_value` is not the file's SHA-1.
    WrongHash,
    /// The file is sent as plain text although gzip was asked for.
    Plain,
}

/// Bills, their knobs, and v3's pending downloads.
#[derive(Default)]
pub(super) struct BillDesk {
    /// Every day's bill is ready at once (the sandbox demo).
    pub(super) ready_at_once: bool,
    knobs: Mutex<Knobs>,
    /// v3 download tokens → the file (gzip or plain, as asked).
    downloads: Mutex<HashMap<String, Vec<u8>>>,
}

impl BillDesk {
    pub(super) fn new(ready_at_once: bool) -> BillDesk {
        BillDesk { ready_at_once, ..BillDesk::default() }
    }
}

#[derive(Default)]
struct Knobs {
    closed_days: HashSet<String>,
    extra: Vec<(String, BillPayment)>,
    amounts: HashMap<String, u64>,
    omitted: HashSet<String>,
    /// Refund statuses written as given (another API's names, ...).
    refund_statuses: HashMap<String, String>,
    faults: Vec<BillFault>,
}

/// What a bill request gets.
pub(super) enum BillAnswer {
    /// The day is not over (WeChat: `Bill Creating` / `STATEMENT_CREATING`).
    NotReady,
    /// No payment and no refund that day (`No Bill Exist` / `NO_STATEMENT_EXIST`).
    Empty,
    /// The bill's text, and how to send it.
    Text {
        /// The text.
        text: Vec<u8>,
        /// Send it as plain text whatever was asked.
        plain: bool,
        /// v3: announce a wrong SHA-1.
        wrong_hash: bool,
    },
}

/// v2's `time_end` (`yyyyMMddHHmmss`) as a bill's time (`yyyy-MM-dd HH:mm:ss`).
fn bill_time_v2(time_end: &str) -> Option<String> {
    let d = |r: std::ops::Range<usize>| time_end.get(r);
    Some(format!("{}-{}-{} {}:{}:{}", d(0..4)?, d(4..6)?, d(6..8)?, d(8..10)?, d(10..12)?, d(12..14)?))
}

/// v3's RFC 3339 Beijing time as a bill's time.
pub(super) fn bill_time_v3(rfc3339: &str) -> Option<String> {
    rfc3339.get(..19).map(|t| t.replace('T', " "))
}

/// 0.6 % of `fen`, in yuan with five decimals (the 手续费 column).
pub(super) fn fee(fen: u64) -> String {
    let units = fen * 6; // units of 0.00001 yuan
    format!("{}.{:05}", units / 100_000, units % 100_000)
}

impl Simulator {
    /// Ends `day` (`yyyy-MM-dd`): its bill can be downloaded.
    pub fn close_day(&self, day: &str) {
        self.bills().knobs.lock().expect("bills lock").closed_days.insert(day.to_owned());
    }

    /// Puts a payment PayBridge never heard of on `day`'s bill.
    pub fn bill_extra_payment(&self, day: &str, out_trade_no: &str, fen: u64) {
        let payment = BillPayment {
            time: format!("{day} 12:00:00"),
            appid: self.config().appid.clone(),
            mch_id: self.config().mch_id.clone(),
            transaction_id: format!("42000{}", &hex::encode(rand::random::<[u8; 8]>())),
            out_trade_no: out_trade_no.to_owned(),
            openid: "oSimulatorStranger".into(),
            total_fee: fen,
            settlement_fee: fen,
            fee: fee(fen),
            body: "not from PayBridge".into(),
        };
        self.bills().knobs.lock().expect("bills lock").extra.push((day.to_owned(), payment));
    }

    /// The bill says `fen` for this order instead of what was paid.
    pub fn bill_amount(&self, out_trade_no: &str, fen: u64) {
        self.bills().knobs.lock().expect("bills lock").amounts.insert(out_trade_no.to_owned(), fen);
    }

    /// The bill leaves this order (or refund) out.
    pub fn bill_omit(&self, out_trade_or_refund_no: &str) {
        self.bills().knobs.lock().expect("bills lock").omitted.insert(out_trade_or_refund_no.to_owned());
    }

    /// The bill gives this refund the status `status` as written (for
    /// instance v2's `REFUNDCLOSE` in a v3 bill, or v3's `CLOSED` in a v2 one).
    pub fn bill_refund_status(&self, out_refund_no: &str, status: &str) {
        let mut knobs = self.bills().knobs.lock().expect("bills lock");
        knobs.refund_statuses.insert(out_refund_no.to_owned(), status.to_owned());
    }

    /// The next bill download goes wrong this way.
    pub fn bill_fault(&self, fault: BillFault) {
        self.bills().knobs.lock().expect("bills lock").faults.push(fault);
    }

    /// `day`'s bill as WeChat would answer for it now.
    pub(super) fn bill(&self, day: &str) -> BillAnswer {
        let mut knobs = self.bills().knobs.lock().expect("bills lock");
        if !self.bills().ready_at_once && !knobs.closed_days.contains(day) {
            return BillAnswer::NotReady;
        }
        let (mut payments, mut refunds) = self.v2_bill_rows(day);
        let (v3_payments, v3_refunds) = self.v3().bill_rows(day);
        payments.extend(v3_payments);
        refunds.extend(v3_refunds);
        payments.extend(knobs.extra.iter().filter(|(d, _)| d == day).map(|(_, p)| p.clone()));
        payments.retain(|p| !knobs.omitted.contains(&p.out_trade_no));
        refunds.retain(|r| !knobs.omitted.contains(&r.out_refund_no));
        for p in &mut payments {
            if let Some(&fen) = knobs.amounts.get(&p.out_trade_no) {
                (p.total_fee, p.settlement_fee, p.fee) = (fen, fen, fee(fen));
            }
        }
        for r in &mut refunds {
            if let Some(status) = knobs.refund_statuses.get(&r.out_refund_no) {
                r.status = status.clone();
            }
        }
        payments.sort_by(|a, b| a.time.cmp(&b.time));
        refunds.sort_by(|a, b| a.time.cmp(&b.time));
        if payments.is_empty() && refunds.is_empty() {
            return BillAnswer::Empty;
        }
        let faults = std::mem::take(&mut knobs.faults);
        let mut text = bill::render(&payments, &refunds);
        if faults.contains(&BillFault::Malformed) {
            // The first row loses its last value.
            let first_row_end = text.find('\n').and_then(|h| text[h + 1..].find('\n').map(|e| h + 1 + e));
            if let Some(end) = first_row_end {
                let cut = text[..end].rfind(',').unwrap_or(end);
                text.replace_range(cut..end, "");
            }
        }
        BillAnswer::Text {
            text: text.into_bytes(),
            plain: faults.contains(&BillFault::Plain),
            wrong_hash: faults.contains(&BillFault::WrongHash),
        }
    }

    /// The paid v2 orders of `day`.
    fn v2_bill_rows(&self, day: &str) -> (Vec<BillPayment>, Vec<BillRefund>) {
        let compact = day.replace('-', "");
        let orders = self.orders();
        let payments = orders
            .iter()
            .filter(|(_, o)| {
                o.state == TradeState::Success && o.time_end.as_deref().is_some_and(|t| t.starts_with(&compact))
            })
            .filter_map(|(no, o)| {
                let total_fee = o.field("total_fee").parse().ok()?;
                Some(BillPayment {
                    time: bill_time_v2(o.time_end.as_deref()?)?,
                    appid: o.field("appid").to_owned(),
                    mch_id: self.config().mch_id.clone(),
                    transaction_id: o.transaction_id.clone()?,
                    out_trade_no: no.clone(),
                    openid: o.field("openid").to_owned(),
                    total_fee,
                    settlement_fee: total_fee,
                    fee: fee(total_fee),
                    body: o.field("body").to_owned(),
                })
            })
            .collect();
        (payments, Vec::new())
    }

    /// v3: keeps the file for one download under a fresh token.
    pub(super) fn bill_download_token(&self, file: Vec<u8>) -> String {
        let token = hex::encode(rand::random::<[u8; 16]>());
        let mut downloads = self.bills().downloads.lock().expect("downloads lock");
        if downloads.len() > 64 {
            downloads.clear();
        }
        downloads.insert(token.clone(), file);
        token
    }

    /// v3: the file behind a download token (each token works once).
    pub(super) fn bill_download(&self, token: &str) -> Option<Vec<u8>> {
        self.bills().downloads.lock().expect("downloads lock").remove(token)
    }
}

impl Simulator {
    /// v3's `GET /v3/bill/tradebill` (a signed reply with the file's SHA-1
    /// and where to fetch it) and `GET /v3/billdownload/file` (the file,
    /// unsigned); both need a signed request. `None` for other paths.
    /// `host` is the simulator's own address, for the download URL.
    pub(super) fn v3_bill(
        &self,
        method: &str,
        path_and_query: &str,
        authorization: Option<&str>,
        wants_serial: Option<&str>,
        host: &str,
        now_secs: i64,
    ) -> Option<V3Reply> {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        if !matches!(path, "/v3/bill/tradebill" | "/v3/billdownload/file") {
            return None;
        }
        if let Err(message) = self.v3().authenticate(method, path_and_query, authorization, b"", now_secs) {
            let body = serde_json::json!({ "code": "SIGN_ERROR", "message": message }).to_string().into_bytes();
            return Some(V3Reply { status: 401, headers: Vec::new(), body });
        }
        let param = |name: &str| {
            query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v.to_owned())
        };
        let signed = |status: u16, reply: serde_json::Value| {
            Some(self.v3().reply_as_asked(status, Some(reply), wants_serial, now_secs))
        };
        if path == "/v3/billdownload/file" {
            return match param("token").and_then(|t| self.bill_download(&t)) {
                Some(file) => Some(V3Reply { status: 200, headers: Vec::new(), body: file }),
                None => signed(400, error("INVALID_REQUEST", "下载链接已过期，请重新申请")),
            };
        }
        let day = param("bill_date").unwrap_or_default();
        let valid_day = time::Date::parse(&day, time::macros::format_description!("[year]-[month]-[day]")).is_ok();
        if method != "GET" || !valid_day {
            return signed(400, error("PARAM_ERROR", "bill_date格式错误"));
        }
        if !matches!(param("bill_type").as_deref(), None | Some("ALL")) {
            return signed(400, error("PARAM_ERROR", "此模拟器只提供ALL账单"));
        }
        let (text, plain, wrong_hash) = match self.bill(&day) {
            BillAnswer::NotReady => return signed(400, error("STATEMENT_CREATING", "账单生成中")),
            BillAnswer::Empty => return signed(400, error("NO_STATEMENT_EXIST", "账单不存在")),
            BillAnswer::Text { text, plain, wrong_hash } => (text, plain, wrong_hash),
        };
        let hash = match wrong_hash {
            true => bill::sha1_hex(b"another file"),
            false => bill::sha1_hex(&text),
        };
        let gzip = param("tar_type").as_deref() == Some("GZIP") && !plain;
        let token = self.bill_download_token(if gzip { bill::gzip(&text) } else { text });
        let download_url = format!("http://{host}/v3/billdownload/file?token={token}");
        signed(200, serde_json::json!({ "hash_type": "SHA1", "hash_value": hash, "download_url": download_url }))
    }
}

/// The v2 failure reply for a bill (XML, unsigned, with `error_code`).
pub(super) fn v2_bill_failure(message: &str, error_code: Option<&str>) -> Vec<u8> {
    let code = error_code.map(|c| format!("<error_code><![CDATA[{c}]]></error_code>")).unwrap_or_default();
    format!(
        "<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[{message}]]></return_msg>{code}</xml>"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_fees_as_wechat_writes_them() {
        assert_eq!(bill_time_v2("20261126153001").unwrap(), "2026-11-26 15:30:01");
        assert_eq!(bill_time_v2("2026"), None);
        assert_eq!(bill_time_v3("2026-11-26T15:30:01+08:00").unwrap(), "2026-11-26 15:30:01");
        assert_eq!(fee(100), "0.00600", "vector V15: 1.00 yuan costs 0.00600");
        assert_eq!(fee(1990), "0.11940");
    }
}
