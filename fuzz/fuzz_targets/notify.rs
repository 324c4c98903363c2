//! Notify verification (v2): any body is parsed and its signature checked
//! under both algorithms without a panic; a forged body never verifies
//! unless it carries the right signature.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::notify(data));
