//! WeChat's XML: any bytes parse or are refused, and what parses writes back
//! to the same fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paybridge::wechat::xml;

fuzz_target!(|data: &[u8]| {
    if let Ok(fields) = xml::parse(data) {
        let written = xml::write(&fields);
        let again = xml::parse(written.as_bytes()).expect("what PayBridge writes, it reads");
        assert_eq!(again, fields, "a round trip changes nothing");
    }
});
