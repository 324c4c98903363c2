//! What platform A (or anyone pretending to be it) sends: signed request
//! headers, order tokens and order bodies. Nothing panics, and whatever
//! verifies was really signed with the platform key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paybridge::config::{Platform, Platforms};
use paybridge::http::platform::parse_create;
use paybridge::platform::{auth, token};
use paybridge::secret::Secret;

const KEY: &str = "fuzz-platform-key-fuzz-platform-key-0000";
const NOW_MS: i64 = 1_764_226_800_000;

fn platforms() -> Platforms {
    Platforms::new(vec![Platform {
        id: "shop-a".into(),
        key: Secret::new(KEY),
        previous_key: None,
        webhook_url: "https://a.example.com/hook".parse().unwrap(),
        appid: None,
    }])
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let platforms = platforms();

    // An order token.
    if let Ok(claims) = token::verify(&platforms, &text, NOW_MS) {
        let (payload, signature) = text.rsplit_once('.').unwrap();
        assert_eq!(signature.to_ascii_lowercase(), auth::hmac_hex(&Secret::new(KEY), payload.as_bytes()));
        assert!(claims.expires_at * 1000 > NOW_MS);
    }

    // A signed request: platform, timestamp, nonce, signature, method, path, then the body.
    let mut lines = text.splitn(7, '\n');
    let mut next = || lines.next();
    let headers = auth::Headers { platform: next(), timestamp: next(), nonce: next(), signature: next() };
    let (method, path, body) = (next().unwrap_or(""), next().unwrap_or(""), next().unwrap_or(""));
    let request = auth::Request { method, path_and_query: path, body: body.as_bytes() };
    match auth::verify(&platforms, &headers, &request, NOW_MS) {
        Ok(verified) => {
            let expected = auth::sign(&Secret::new(KEY), &request, verified.timestamp, &verified.nonce);
            assert_eq!(headers.signature.unwrap().to_ascii_lowercase(), expected);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }

    // An order body.
    if let Err(e) = parse_create(data, NOW_MS, 7200) {
        assert!(!e.to_string().is_empty());
    }
});
