//! The CSV writer: whatever text an order holds, its row reads back as
//! exactly the ten columns of the header, and no cell starts a formula.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::csv(data));
