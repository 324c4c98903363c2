//! The JSON bodies of the public endpoints (`/pay/unifiedOrder`, the admin
//! login): any bytes are read or refused with a message, never a panic.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::json_bodies(data));
