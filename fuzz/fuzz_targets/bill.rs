//! WeChat's daily bill on any input (a v2 bill is not signed: only TLS
//! vouches for it): the parser and gunzip never panic, a parsed bill
//! renders and parses back to the same rows, and its amounts are exact fen.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::bill(data));
