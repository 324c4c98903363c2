//! WeChat Pay's daily trade bill (对账单), `bill_type=ALL`: the same text in
//! API v2 (`downloadbill`) and v3 (`tradebill`).
//!
//! ```text
//! 交易时间,公众账号ID,商户号,…,费率备注          ← detail header, no backticks
//! `2026-11-26 15:25:50,`wx…,`1900000109,…       ← one row per payment or refund
//! 总交易单数,应结订单总金额,退款总金额,…         ← summary header
//! `2,`0.02,`0.00,…                               ← summary row
//! ```
//!
//! Every value is prefixed with a backtick (an Excel guard); amounts are yuan
//! with two decimals, read here into integer fen without floating point.
//! Columns are found by name, so the parser does not care about the order
//! WeChat lists them in; a UTF-8 BOM and `\r\n` line ends are accepted.
//! [`render`] writes the same format (the simulator's bills).

use std::fmt::Write as _;

/// The `ALL` bill's detail columns, in WeChat's order.
pub const COLUMNS: [&str; 27] = [
    "交易时间",
    "公众账号ID",
    "商户号",
    "特约商户号",
    "设备号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "付款银行",
    "货币种类",
    "应结订单金额",
    "代金券金额",
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "充值券退款金额",
    "退款类型",
    "退款状态",
    "商品名称",
    "商户数据包",
    "手续费",
    "费率",
    "订单金额",
    "申请退款金额",
    "费率备注",
];

/// The summary columns of an `ALL` bill.
pub const SUMMARY_COLUMNS: [&str; 7] =
    ["总交易单数", "应结订单总金额", "退款总金额", "充值券退款总金额", "手续费总金额", "订单总金额", "申请退款总金额"];

/// A bill larger than this (uncompressed) is refused: about 80,000 rows.
pub const MAX_BILL_BYTES: usize = 32 * 1024 * 1024;

/// One payment row (交易状态 `SUCCESS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillPayment {
    /// 交易时间, `yyyy-MM-dd HH:mm:ss` Beijing time.
    pub time: String,
    /// 公众账号ID
    pub appid: String,
    /// 商户号
    pub mch_id: String,
    /// 微信订单号
    pub transaction_id: String,
    /// 商户订单号
    pub out_trade_no: String,
    /// 用户标识
    pub openid: String,
    /// 订单金额, fen: what the order asked for.
    pub total_fee: u64,
    /// 应结订单金额, fen: after coupons WeChat funds.
    pub settlement_fee: u64,
    /// 手续费, as written (5 decimals).
    pub fee: String,
    /// 商品名称
    pub body: String,
}

/// One refund row (交易状态 `REFUND`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillRefund {
    /// 交易时间: when the refund was asked for.
    pub time: String,
    /// 微信订单号
    pub transaction_id: String,
    /// 商户订单号
    pub out_trade_no: String,
    /// 微信退款单号
    pub refund_id: String,
    /// 商户退款单号
    pub out_refund_no: String,
    /// 退款金额, fen.
    pub amount: u64,
    /// 退款状态 as of the bill, in v3's names whichever API's bill it is
    /// (`SUCCESS`, `PROCESSING`, `CLOSED`, `ABNORMAL`; see
    /// [`normalise_refund_status`]).
    pub status: String,
    /// 订单金额, fen.
    pub total_fee: u64,
}

/// The summary row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BillSummary {
    /// 总交易单数
    pub count: u64,
    /// 应结订单总金额, fen.
    pub settlement_total: u64,
    /// 退款总金额, fen.
    pub refund_total: u64,
}

/// A parsed bill.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bill {
    /// Payment rows, in the bill's order.
    pub payments: Vec<BillPayment>,
    /// Refund rows, in the bill's order.
    pub refunds: Vec<BillRefund>,
    /// The summary.
    pub summary: BillSummary,
}

impl Bill {
    /// Where the summary disagrees with the rows, in words; `None` if it
    /// agrees. (What WeChat counts in 总交易单数 is not documented, so this is
    /// a warning for the merchant, not a reason to refuse the bill.)
    pub fn summary_disagreement(&self) -> Option<String> {
        let rows = (self.payments.len() + self.refunds.len()) as u64;
        let settled: u64 = self.payments.iter().map(|p| p.settlement_fee).sum();
        let refunded: u64 = self.refunds.iter().map(|r| r.amount).sum();
        let mut out = Vec::new();
        if self.summary.count != rows {
            out.push(format!("the summary counts {} rows, the bill has {rows}", self.summary.count));
        }
        if self.summary.settlement_total != settled {
            out.push(format!(
                "the summary's total is {} fen, the rows add up to {settled}",
                self.summary.settlement_total
            ));
        }
        if self.summary.refund_total != refunded {
            out.push(format!(
                "the summary's refund total is {} fen, the rows add up to {refunded}",
                self.summary.refund_total
            ));
        }
        (!out.is_empty()).then(|| out.join("; "))
    }
}

/// The longest value a bill's field may hold.
pub const MAX_VALUE_BYTES: usize = 256;

/// Why a bill could not be read. Line numbers count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillError {
    /// Not UTF-8.
    #[error("the bill is not UTF-8 text")]
    NotText,
    /// No header line, or one without a needed column.
    #[error("the bill's header lacks the column {0}")]
    MissingColumn(&'static str),
    /// A row with the wrong number of values.
    #[error("line {line} has {found} values, the header {expected}")]
    Width {
        /// Where.
        line: usize,
        /// Values found.
        found: usize,
        /// Columns in the header.
        expected: usize,
    },
    /// A value that is not what its column holds.
    #[error("line {line}: {column} is {}, {problem}", crate::text::quote(value))]
    Value {
        /// Where.
        line: usize,
        /// Which column.
        column: &'static str,
        /// What it held.
        value: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A value longer than any field of a bill can be.
    #[error("line {line}: {column} is {len} bytes long, more than any bill field ({MAX_VALUE_BYTES} bytes)")]
    TooLong {
        /// Where.
        line: usize,
        /// The column's name in the header (cut to a bounded length).
        column: String,
        /// The value's length in bytes.
        len: usize,
    },
    /// No summary (the bill is cut short).
    #[error("the bill has no summary lines (is it complete?)")]
    NoSummary,
    /// Something after the summary.
    #[error("line {0}: text after the summary")]
    Trailing(usize),
}

/// A bill's refund status in one vocabulary, so bills of either API compare
/// alike: v2's names (`REFUNDCLOSE`, `CHANGE`) become v3's (`CLOSED`,
/// `ABNORMAL`); v3's names are kept; a name neither knows is kept as
/// written (it then matches nothing, and is reported).
pub fn normalise_refund_status(raw: &str) -> String {
    use crate::domain::RefundStatus;
    let raw = raw.trim();
    RefundStatus::parse(raw)
        .or_else(|| RefundStatus::parse_v2(raw))
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|| raw.to_owned())
}

/// Parses an `ALL` bill.
pub fn parse(bytes: &[u8]) -> Result<Bill, BillError> {
    let text = std::str::from_utf8(bytes).map_err(|_| BillError::NotText)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l)).filter(|(_, l)| !l.trim().is_empty());

    let header: Vec<&str> = lines.next().map(|(_, l)| l.split(',').map(str::trim).collect()).unwrap_or_default();
    let column = |name: &'static str| header.iter().position(|h| *h == name).ok_or(BillError::MissingColumn(name));
    let at = Columns {
        time: column("交易时间")?,
        appid: column("公众账号ID")?,
        mch_id: column("商户号")?,
        transaction_id: column("微信订单号")?,
        out_trade_no: column("商户订单号")?,
        openid: column("用户标识")?,
        state: column("交易状态")?,
        settlement_fee: column("应结订单金额")?,
        refund_id: column("微信退款单号")?,
        out_refund_no: column("商户退款单号")?,
        refund_amount: column("退款金额")?,
        refund_status: column("退款状态")?,
        body: column("商品名称")?,
        fee: column("手续费")?,
        total_fee: column("订单金额")?,
    };

    let mut bill = Bill::default();
    loop {
        let Some((line, text)) = lines.next() else { return Err(BillError::NoSummary) };
        if text.starts_with(SUMMARY_COLUMNS[0]) {
            let names: Vec<&str> = text.split(',').map(str::trim).collect();
            let (line, row) = lines.next().ok_or(BillError::NoSummary)?;
            let values = values(row, line, names.len())?;
            let get = |name: &'static str| {
                let i = names.iter().position(|n| *n == name).ok_or(BillError::MissingColumn(name))?;
                Ok::<_, BillError>(values[i])
            };
            let count = get("总交易单数")?;
            bill.summary = BillSummary {
                count: count.parse().map_err(|_| invalid(line, "总交易单数", count, "not a count"))?,
                settlement_total: fen(get("应结订单总金额")?, line, "应结订单总金额")?,
                refund_total: fen(get("退款总金额")?, line, "退款总金额")?,
            };
            if let Some((line, _)) = lines.next() {
                return Err(BillError::Trailing(line));
            }
            return Ok(bill);
        }
        let v = values(text, line, header.len())?;
        // Every field of a bill is short (ids of at most 64 characters, a
        // description of 128 bytes): a longer value is not WeChat's, and
        // copying it into the day's differences would make that record huge.
        if let Some(i) = v.iter().position(|value| value.len() > MAX_VALUE_BYTES) {
            let column = crate::text::clip(header[i], 32).into_owned();
            return Err(BillError::TooLong { line, column, len: v[i].len() });
        }
        match v[at.state] {
            "REFUND" => bill.refunds.push(BillRefund {
                time: v[at.time].to_owned(),
                transaction_id: v[at.transaction_id].to_owned(),
                out_trade_no: v[at.out_trade_no].to_owned(),
                refund_id: v[at.refund_id].to_owned(),
                out_refund_no: v[at.out_refund_no].to_owned(),
                amount: fen(v[at.refund_amount], line, "退款金额")?,
                status: normalise_refund_status(v[at.refund_status]),
                total_fee: fen(v[at.total_fee], line, "订单金额")?,
            }),
            // Other states (REVOKED, …) do not occur in JSAPI bills; a
            // payment row is what any non-refund row is.
            _ => bill.payments.push(BillPayment {
                time: v[at.time].to_owned(),
                appid: v[at.appid].to_owned(),
                mch_id: v[at.mch_id].to_owned(),
                transaction_id: v[at.transaction_id].to_owned(),
                out_trade_no: v[at.out_trade_no].to_owned(),
                openid: v[at.openid].to_owned(),
                total_fee: fen(v[at.total_fee], line, "订单金额")?,
                settlement_fee: fen(v[at.settlement_fee], line, "应结订单金额")?,
                fee: v[at.fee].to_owned(),
                body: v[at.body].to_owned(),
            }),
        }
        if bill.payments.last().is_some_and(|p| p.out_trade_no.is_empty()) {
            return Err(invalid(line, "商户订单号", "", "empty"));
        }
    }
}

struct Columns {
    time: usize,
    appid: usize,
    mch_id: usize,
    transaction_id: usize,
    out_trade_no: usize,
    openid: usize,
    state: usize,
    settlement_fee: usize,
    refund_id: usize,
    out_refund_no: usize,
    refund_amount: usize,
    refund_status: usize,
    body: usize,
    fee: usize,
    total_fee: usize,
}

/// A row's values with their backticks taken off.
fn values(row: &str, line: usize, expected: usize) -> Result<Vec<&str>, BillError> {
    let values: Vec<&str> = row.split(',').map(|v| v.trim().strip_prefix('`').unwrap_or(v.trim())).collect();
    if values.len() != expected {
        return Err(BillError::Width { line, found: values.len(), expected });
    }
    Ok(values)
}

fn invalid(line: usize, column: &'static str, value: &str, problem: &'static str) -> BillError {
    BillError::Value { line, column, value: value.to_owned(), problem }
}

/// `"12.34"` yuan → 1234 fen; exactly two decimals (or none), no sign.
fn fen(value: &str, line: usize, column: &'static str) -> Result<u64, BillError> {
    let bad = || invalid(line, column, value, "not an amount in yuan (like 12.34)");
    let (yuan, cents) = value.split_once('.').unwrap_or((value, "00"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(yuan) || !digits(cents) || cents.len() != 2 || yuan.len() > 12 {
        return Err(bad());
    }
    Ok(yuan.parse::<u64>().map_err(|_| bad())? * 100 + cents.parse::<u64>().map_err(|_| bad())?)
}

/// Decompresses a gzip bill, refusing more than [`MAX_BILL_BYTES`] of text
/// (a small download must not become gigabytes in memory).
pub fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    gunzip_at_most(bytes, MAX_BILL_BYTES)
}

fn gunzip_at_most(bytes: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let mut out = Vec::new();
    let reader = flate2::read::GzDecoder::new(bytes);
    reader.take(limit as u64 + 1).read_to_end(&mut out).map_err(|e| format!("the bill is not valid gzip: {e}"))?;
    if out.len() > limit {
        return Err(format!("the bill is larger than {limit} bytes uncompressed"));
    }
    Ok(out)
}

/// Compresses a bill with gzip.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

/// The lower-case hex SHA-1 of a bill: v3's `hash_value`.
pub fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes))
}

/// Fen as yuan with two decimals: 1 → `0.01`.
pub fn yuan(fen: u64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

/// Writes an `ALL` bill in WeChat's layout (the simulator's bills, and test
/// fixtures). Lines end with `\n`; there is no BOM.
pub fn render(payments: &[BillPayment], refunds: &[BillRefund]) -> String {
    let mut out = COLUMNS.join(",");
    out.push('\n');
    let row = |out: &mut String, values: [&str; 27]| {
        let cells: Vec<String> = values.iter().map(|v| format!("`{v}")).collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    };
    for p in payments {
        let (total, settled) = (yuan(p.total_fee), yuan(p.settlement_fee));
        row(
            &mut out,
            [
                &p.time,
                &p.appid,
                &p.mch_id,
                "0",
                "",
                &p.transaction_id,
                &p.out_trade_no,
                &p.openid,
                "JSAPI",
                "SUCCESS",
                "OTHERS",
                "CNY",
                &settled,
                "0.00",
                "0",
                "0",
                "0.00",
                "0.00",
                "",
                "",
                &p.body,
                "",
                &p.fee,
                "0.60%",
                &total,
                "0.00",
                "",
            ],
        );
    }
    for r in refunds {
        let (amount, total) = (yuan(r.amount), yuan(r.total_fee));
        row(
            &mut out,
            [
                &r.time,
                "",
                "",
                "0",
                "",
                &r.transaction_id,
                &r.out_trade_no,
                "",
                "JSAPI",
                "REFUND",
                "OTHERS",
                "CNY",
                "0.00",
                "0.00",
                &r.refund_id,
                &r.out_refund_no,
                &amount,
                "0.00",
                "ORIGINAL",
                &r.status,
                "",
                "",
                "0.00000",
                "0.60%",
                &total,
                &amount,
                "",
            ],
        );
    }
    let settled: u64 = payments.iter().map(|p| p.settlement_fee).sum();
    let refunded: u64 = refunds.iter().map(|r| r.amount).sum();
    let total: u64 = payments.iter().map(|p| p.total_fee).sum();
    out.push_str(&SUMMARY_COLUMNS.join(","));
    let _ = writeln!(
        out,
        "\n`{},`{},`{},`0.00,`0.00000,`{},`{}",
        payments.len() + refunds.len(),
        yuan(settled),
        yuan(refunded),
        yuan(total),
        yuan(refunded)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// WECHATPAY-V3.md vector V15 (also v2's layout), byte for byte.
    const V15: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注\n`2023-05-06 15:17:31,`wxd678efh567hg6787,`1900007291,`0,`,`4200001863202305068344507881,`1217752501201407033233368018,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`JSAPI,`SUCCESS,`OTHERS,`CNY,`1.00,`0.00,`0,`0,`0.00,`0.00,`,`,`Image形象店-深圳腾大-QQ公仔,`,`0.00600,`0.60%,`1.00,`0.00,`\n总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\n`1,`1.00,`0.00,`0.00,`0.00600,`1.00,`0.00\n";

    #[test]
    fn reads_vector_v15() {
        assert_eq!(V15.len(), 845);
        let bill = parse(V15.as_bytes()).unwrap();
        assert_eq!(bill.payments.len(), 1);
        let p = &bill.payments[0];
        assert_eq!(p.out_trade_no, "1217752501201407033233368018");
        assert_eq!(p.transaction_id, "4200001863202305068344507881");
        assert_eq!((p.total_fee, p.settlement_fee), (100, 100));
        assert_eq!(p.time, "2023-05-06 15:17:31");
        assert_eq!(p.body, "Image形象店-深圳腾大-QQ公仔");
        assert_eq!(bill.summary, BillSummary { count: 1, settlement_total: 100, refund_total: 0 });
        assert_eq!(bill.summary_disagreement(), None);
        // Its SHA-1 is the hash_value WeChat sends with it.
        assert_eq!(sha1_hex(V15.as_bytes()), "a0cb6387ccf1fa9fdc352bd6e5c9a70f67b1f04c");
        assert_eq!(gunzip(&gzip(V15.as_bytes())).unwrap(), V15.as_bytes());
        assert!(gunzip(b"not gzip").unwrap_err().starts_with("the bill is not valid gzip"));
        // A small download that would unpack into too much is refused
        // (the same code with a smaller limit, so the test stays fast).
        let bomb = gzip(&vec![b'`'; 100_001]);
        assert!(bomb.len() < 1000);
        assert_eq!(gunzip_at_most(&bomb, 100_000).unwrap_err(), "the bill is larger than 100000 bytes uncompressed");
        assert_eq!(gunzip_at_most(&bomb, 100_001).unwrap().len(), 100_001);
    }

    #[test]
    fn render_and_parse_agree_and_accept_bom_and_crlf() {
        let payment = BillPayment {
            time: "2026-11-26 10:00:00".into(),
            appid: "wxapp".into(),
            mch_id: "1900000109".into(),
            transaction_id: "4200000001".into(),
            out_trade_no: "ORDER0001".into(),
            openid: "oUser".into(),
            total_fee: 1990,
            settlement_fee: 1990,
            fee: "0.11940".into(),
            body: "商品".into(),
        };
        let refund = BillRefund {
            time: "2026-11-26 11:00:00".into(),
            transaction_id: "4200000001".into(),
            out_trade_no: "ORDER0001".into(),
            refund_id: "50300000001".into(),
            out_refund_no: "R1".into(),
            amount: 500,
            status: "SUCCESS".into(),
            total_fee: 1990,
        };
        let text = render(std::slice::from_ref(&payment), std::slice::from_ref(&refund));
        let bill = parse(text.as_bytes()).unwrap();
        assert_eq!((bill.payments, bill.refunds), (vec![payment.clone()], vec![refund.clone()]));
        assert_eq!(bill.summary, BillSummary { count: 2, settlement_total: 1990, refund_total: 500 });

        let windows = format!("\u{feff}{}", text.replace('\n', "\r\n"));
        assert_eq!(parse(windows.as_bytes()).unwrap().payments, vec![payment]);
        let empty = render(&[], &[]);
        assert_eq!(parse(empty.as_bytes()).unwrap(), Bill::default());
    }

    #[test]
    fn malformed_bills_say_what_is_wrong() {
        let cases: [(String, &str); 7] = [
            (String::new(), "the bill's header lacks the column 交易时间"),
            (V15.replace("商户订单号", "订单"), "the bill's header lacks the column 商户订单号"),
            (V15.replace("`1.00,`0.00,`0", "`1.00,`0.00"), "line 2 has 26 values, the header 27"),
            (V15.replace("`CNY,`1.00", "`CNY,`1,00"), "line 2 has 28 values, the header 27"),
            (
                V15.replace("`CNY,`1.00", "`CNY,`1.5"),
                "line 2: 应结订单金额 is \"1.5\", not an amount in yuan (like 12.34)",
            ),
            (V15.split("总交易单数").next().unwrap().to_owned(), "the bill has no summary lines (is it complete?)"),
            (format!("{V15}more\n"), "line 5: text after the summary"),
        ];
        for (text, message) in cases {
            assert_eq!(parse(text.as_bytes()).unwrap_err().to_string(), message, "{text}");
        }
        assert_eq!(parse(&[0xff, 0xfe]).unwrap_err(), BillError::NotText);
        assert_eq!(
            fen("-1.00", 1, "x").unwrap_err().to_string(),
            "line 1: x is \"-1.00\", not an amount in yuan (like 12.34)"
        );
        assert_eq!(fen("12", 1, "x"), Ok(1200));
        assert_eq!(yuan(5), "0.05");
    }

    #[test]
    fn an_error_quotes_at_most_a_hundred_characters_of_a_huge_value() {
        let huge = "9".repeat(3_000_000);
        let bill = V15.replace("`CNY,`1.00", &format!("`CNY,`{huge}.5"));
        let message = parse(bill.as_bytes()).unwrap_err().to_string();
        assert!(message.len() < 250, "{} bytes", message.len());
        assert_eq!(message, "line 2: 应结订单金额 is 3000002 bytes long, more than any bill field (256 bytes)");
        // A value short enough to be a field but not an amount is quoted, cut to 100 characters.
        let bill = V15.replace("`CNY,`1.00", &format!("`CNY,`{}", "9".repeat(200)));
        let message = parse(bill.as_bytes()).unwrap_err().to_string();
        assert!(message.contains("…\" (200 bytes), not an amount in yuan"), "{message}");
    }

    #[test]
    fn a_summary_that_disagrees_is_reported() {
        let bill = parse(V15.replace("`1,`1.00,`0.00", "`2,`1.50,`0.00").as_bytes()).unwrap();
        assert_eq!(
            bill.summary_disagreement().unwrap(),
            "the summary counts 2 rows, the bill has 1; the summary's total is 150 fen, the rows add up to 100"
        );
    }
}
