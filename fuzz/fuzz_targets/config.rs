//! Config parsing: any text is a config or an error that names a key or a
//! line, never a panic, and secrets never appear in the error.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::config(data));
