//! CSV export of orders: UTF-8 with a BOM so Excel reads Chinese text right,
//! RFC 4180 quoting, amounts in yuan with two decimals.

use super::OrderRow;

/// The byte-order mark Excel needs to detect UTF-8.
pub const BOM: &str = "\u{feff}";

/// The header line.
pub const HEADER: &str =
    "out_trade_no,status,amount_yuan,created_at,paid_at,transaction_id,openid,body,attach,sandbox\r\n";

/// Fen as yuan with two decimals: 1990 → "19.90".
pub fn yuan(fen: u64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

/// A unix-ms time as Beijing `YYYY-MM-DD HH:MM:SS`.
pub fn beijing_time(ms: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)) else { return String::new() };
    let t = t.to_offset(time::macros::offset!(+8));
    t.format(time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]")).unwrap_or_default()
}

/// What a spreadsheet may read as the start of a formula: the four formula
/// characters, and TAB, CR and LF, which some spreadsheets skip before one
/// (OWASP's CSV injection list).
const FORMULA_LEADERS: [char; 7] = ['=', '+', '-', '@', '\t', '\r', '\n'];

/// Quotes a field when it needs it. A field led by one of
/// [`FORMULA_LEADERS`] is prefixed with `'` so a spreadsheet never runs it
/// as a formula.
fn field(out: &mut String, value: &str) {
    let defused;
    let value = if value.starts_with(FORMULA_LEADERS) {
        defused = format!("'{value}");
        defused.as_str()
    } else {
        value
    };
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

/// Appends one order as a CSV line.
pub fn write_row(out: &mut String, o: &OrderRow) {
    let cells = [
        o.out_trade_no.clone(),
        o.status.to_owned(),
        yuan(o.total_fee),
        beijing_time(o.created_at),
        o.paid_at.map(beijing_time).unwrap_or_default(),
        o.transaction_id.clone().unwrap_or_default(),
        o.openid.clone(),
        o.body.clone(),
        o.attach.clone(),
        o.sandbox.to_string(),
    ];
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        field(out, cell);
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_has_two_decimals() {
        assert_eq!(yuan(0), "0.00");
        assert_eq!(yuan(7), "0.07");
        assert_eq!(yuan(1990), "19.90");
        assert_eq!(yuan(123456), "1234.56");
    }

    #[test]
    fn quoting_and_formula_defusing() {
        let mut out = String::new();
        field(&mut out, "a,\"b\"");
        out.push('|');
        field(&mut out, "=HYPERLINK(\"x\")");
        out.push('|');
        field(&mut out, "支付测试");
        assert_eq!(out, "\"a,\"\"b\"\"\"|\"'=HYPERLINK(\"\"x\"\")\"|支付测试");
        // Every character a spreadsheet starts a formula with is defused.
        for (cell, defused) in [("+1+1", "'+1+1"), ("-2-2", "'-2-2"), ("@SUM(A1)", "'@SUM(A1)"), ("a=1", "a=1")] {
            let mut out = String::new();
            field(&mut out, cell);
            assert_eq!(out, defused, "{cell}");
        }
        // TAB, CR and LF before a formula are defused too (and quoted where
        // they must be); inside a cell they are plain text.
        for (cell, defused) in
            [("\t=1+1", "'\t=1+1"), ("\r=1+1", "\"'\r=1+1\""), ("\n=1+1", "\"'\n=1+1\""), ("a\t=1", "a\t=1")]
        {
            let mut out = String::new();
            field(&mut out, cell);
            assert_eq!(out, defused, "{cell:?}");
        }
        for leader in FORMULA_LEADERS {
            let mut out = String::new();
            field(&mut out, &format!("{leader}HYPERLINK(1)"));
            assert!(out.trim_start_matches('"').starts_with('\''), "{leader:?} is defused: {out:?}");
        }
    }

    #[test]
    fn beijing_times() {
        assert_eq!(beijing_time(0), "1970-01-01 08:00:00");
    }
}
