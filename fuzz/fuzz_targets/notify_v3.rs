//! Notify handling (API v3) on any input: the `Wechatpay-*` headers (the
//! input's first four lines) and the body (the rest) go through signature
//! verification, the envelope and the AES-GCM resource without a panic; a
//! resource decrypts only if it was sealed with this key over exactly its
//! nonce and associated data.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::notify_v3(data));
