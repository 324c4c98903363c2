//! The JSON bodies of the public endpoints (`/pay/unifiedOrder`, the admin
//! login): any bytes are read or refused with a message, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paybridge::http::admin::parse_login;
use paybridge::http::miniprogram::parse_unified_order;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = parse_unified_order(data) {
        assert!(!e.to_string().is_empty());
    }
    let _ = parse_login(data);
});
