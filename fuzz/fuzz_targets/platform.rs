//! What platform A (or anyone pretending to be it) sends: signed request
//! headers, order tokens and order bodies. Nothing panics, and whatever
//! verifies was really signed with the platform key.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::platform(data));
