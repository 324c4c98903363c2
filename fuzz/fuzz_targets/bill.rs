//! WeChat's daily bill on any input (a v2 bill is not signed: only TLS
//! vouches for it): the parser and gunzip never panic, a parsed bill
//! renders and parses back to the same rows, and its amounts are exact fen.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paybridge::wechat::bill;

fuzz_target!(|data: &[u8]| {
    let _ = bill::gunzip(data);
    if let Ok(parsed) = bill::parse(data) {
        let _ = parsed.summary_disagreement();
        let again = bill::parse(bill::render(&parsed.payments, &parsed.refunds).as_bytes());
        // What a bill says must survive being written again, if it could be
        // written at all (values with commas or line breaks cannot).
        if let Ok(again) = again {
            assert_eq!(again.payments.len(), parsed.payments.len());
            for (a, b) in again.payments.iter().zip(&parsed.payments) {
                assert_eq!((a.total_fee, &a.out_trade_no), (b.total_fee, &b.out_trade_no));
            }
        }
    }
});
