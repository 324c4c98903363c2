//! The CSV writer: whatever text an order holds, its row reads back as
//! exactly the ten columns of the header, and no cell starts a formula.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paybridge::admin::{csv, OrderRow};
use paybridge::store::{Order, OrderContents};

/// RFC 4180 cells of one row.
fn cells(row: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut chars = row.strip_suffix("\r\n").expect("a row ends with CRLF").chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', false) => quoted = true,
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                out.last_mut().unwrap().push('"');
            }
            ('"', true) => quoted = false,
            (',', false) => out.push(String::new()),
            (c, _) => out.last_mut().unwrap().push(c),
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\u{1f}');
    let (body, attach, openid, no) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let contents =
        OrderContents { total_fee: data.len() as u64, body: body.into(), attach: attach.into(), openid: openid.into() };
    let order = Order::new(no.into(), contents, false, 1_700_000_000_000);
    let mut out = String::new();
    csv::write_row(&mut out, &OrderRow::from(&order));
    let cells = cells(&out);
    assert_eq!(cells.len(), csv::HEADER.split(',').count(), "{out:?}");
    for cell in &cells {
        assert!(!cell.starts_with(['=', '+', '-', '@']), "a formula: {cell:?} in {out:?}");
    }
});
