//! WeChat's XML: any bytes parse or are refused, and what parses writes back
//! to the same fields.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::xml(data));
