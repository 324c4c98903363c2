//! Notify handling (API v3) on any input: the `Wechatpay-*` headers (the
//! input's first four lines) and the body (the rest) go through signature
//! verification, the envelope and the AES-GCM resource without a panic; a
//! resource decrypts only if it was sealed with this key over exactly its
//! nonce and associated data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paybridge::secret::Secret;
use paybridge::wechat::v3::crypto::{ApiV3Key, PublicKey};
use paybridge::wechat::v3::notify;
use paybridge::wechat::v3::verify::{SignedHeaders, Verifier};

/// The APIv3 key of WECHATPAY-V3.md's vector V12 (the seed's ciphertext).
const KEY: &str = "WeChatPayV3SimulatorKey000000001";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(5, '\n');
    let (timestamp, nonce, signature, serial) = (parts.next(), parts.next(), parts.next(), parts.next());
    let body = parts.next().unwrap_or("").as_bytes();
    let mut verifier = Verifier::default();
    let public = PublicKey::from_pem(paybridge::sandbox::v3::WECHATPAY_PUBLIC_KEY).unwrap();
    verifier.add(paybridge::sandbox::v3::WECHATPAY_PUBLIC_KEY_ID, public);
    let headers = SignedHeaders { timestamp, nonce, signature, serial };
    let now = timestamp.and_then(|t| t.parse().ok()).unwrap_or(0);
    // No RSA signature can be forged here: nothing verifies.
    assert!(verifier.verify(&headers, body, now).is_err());

    let key = ApiV3Key::new(&Secret::new(KEY)).unwrap();
    let Ok(envelope) = notify::envelope(body) else { return };
    let r = &envelope.resource;
    if let Ok(plain) = key.decrypt(&r.nonce, &r.associated_data, &r.ciphertext) {
        let sealed = key.encrypt(&r.nonce, &r.associated_data, &plain).unwrap();
        assert_eq!(sealed, r.ciphertext, "only what this key sealed over this nonce and AAD decrypts");
    }
    let _ = notify::transaction(&envelope, &key);
});
