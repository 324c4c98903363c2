//! Authenticating platform API requests: HMAC-SHA256 over the method, the
//! path with its query, a timestamp, a nonce and the body's SHA-256.
//!
//! The string to sign is five lines, each ended by `\n`:
//!
//! ```text
//! POST
//! /platform/v1/orders
//! 1764226800
//! 3f1c0a9e5b7d4c2a
//! <hex SHA-256 of the body; of nothing for a GET>
//! ```
//!
//! and the request carries `PayBridge-Platform`, `PayBridge-Timestamp`
//! (unix seconds), `PayBridge-Nonce` and `PayBridge-Signature` (hex
//! HMAC-SHA256 of that string under the platform key). The README's
//! "Integrating platform A" works one example through with `openssl`; the
//! test below checks the same numbers.
//!
//! SECURITY: comparisons are constant-time; a failure's message says which
//! check failed and never includes a key or the expected signature.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::keys::{is_platform_id, Platform, Platforms};
use crate::secret::Secret;

/// How far a request's timestamp may be from PayBridge's clock.
pub const MAX_SKEW_SECS: i64 = 300;

/// The headers a signed request carries.
pub const PLATFORM_HEADER: &str = "paybridge-platform";
/// Unix seconds.
pub const TIMESTAMP_HEADER: &str = "paybridge-timestamp";
/// 16 to 64 of `A-Z a-z 0-9 - _`, never reused within the window.
pub const NONCE_HEADER: &str = "paybridge-nonce";
/// Hex HMAC-SHA256 of the string to sign.
pub const SIGNATURE_HEADER: &str = "paybridge-signature";

/// Why a request was not authenticated. The messages are safe to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A header is missing or empty.
    #[error("the {0} header is required (see \"Integrating platform A\" in the PayBridge README)")]
    Missing(&'static str),
    /// No such platform in `[[platforms]]`.
    #[error("no platform {0:?} is configured on this PayBridge")]
    UnknownPlatform(String),
    /// The timestamp is not unix seconds.
    #[error("PayBridge-Timestamp must be unix seconds, like 1764226800")]
    BadTimestamp,
    /// The timestamp is outside the window.
    #[error("PayBridge-Timestamp is {0} seconds away from this server's clock (at most 300 allowed): check the clock")]
    Stale(i64),
    /// The nonce is malformed.
    #[error("PayBridge-Nonce must be 16 to 64 of A-Z a-z 0-9 - _")]
    BadNonce,
    /// The signature does not match.
    #[error(
        "the signature does not match: sign METHOD, path with query, timestamp, nonce and the body's hex SHA-256, \
         one per line, each ending in \\n, with HMAC-SHA256 under the platform key"
    )]
    BadSignature,
    /// The nonce was used before with this timestamp.
    #[error("this nonce was already used: every request needs a new PayBridge-Nonce")]
    Replayed,
}

/// The parts of a request that are signed.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `POST`.
    pub method: &'a str,
    /// The path with its query, as sent: `/platform/v1/changes?after=0`.
    pub path_and_query: &'a str,
    /// The body (empty for a GET).
    pub body: &'a [u8],
}

/// The headers of a signed request, as received.
#[derive(Debug, Clone, Copy, Default)]
pub struct Headers<'a> {
    /// `PayBridge-Platform`
    pub platform: Option<&'a str>,
    /// `PayBridge-Timestamp`
    pub timestamp: Option<&'a str>,
    /// `PayBridge-Nonce`
    pub nonce: Option<&'a str>,
    /// `PayBridge-Signature`
    pub signature: Option<&'a str>,
}

/// A request whose signature verified; its nonce is still to be used up.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The platform that signed it.
    pub platform: Platform,
    /// Its timestamp (unix seconds).
    pub timestamp: i64,
    /// Its nonce.
    pub nonce: String,
}

/// The string a request's signature covers.
pub fn string_to_sign(request: &Request, timestamp: &str, nonce: &str) -> String {
    format!(
        "{}\n{}\n{timestamp}\n{nonce}\n{}\n",
        request.method,
        request.path_and_query,
        hex::encode(Sha256::digest(request.body))
    )
}

/// Hex HMAC-SHA256 of `message` under `key`.
pub fn hmac_hex(key: &Secret, message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()).expect("any key length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `given` (hex, any case) is the HMAC of `message` under one of `keys`.
pub fn hmac_matches<'k>(keys: impl Iterator<Item = &'k Secret>, message: &[u8], given: &str) -> bool {
    let given = given.to_ascii_lowercase();
    let mut any = subtle::Choice::from(0);
    for key in keys {
        let expected = hmac_hex(key, message);
        // Lengths are public (64 hex digits); the contents are compared in constant time.
        any |=
            subtle::Choice::from(u8::from(expected.len() == given.len())) & expected.as_bytes().ct_eq(given.as_bytes());
    }
    any.into()
}

/// Signs a request as a platform does (tests, the integration kit's examples).
pub fn sign(key: &Secret, request: &Request, timestamp: i64, nonce: &str) -> String {
    hmac_hex(key, string_to_sign(request, &timestamp.to_string(), nonce).as_bytes())
}

fn is_nonce(nonce: &str) -> bool {
    (16..=64).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks a request's headers and signature at `now_ms`. The caller then
/// uses up the nonce ([`crate::store::Store::use_nonce`]).
pub fn verify(platforms: &Platforms, headers: &Headers, request: &Request, now_ms: i64) -> Result<Verified, AuthError> {
    fn given<'a>(value: Option<&'a str>, name: &'static str) -> Result<&'a str, AuthError> {
        value.filter(|v| !v.is_empty()).ok_or(AuthError::Missing(name))
    }
    let id = given(headers.platform, "PayBridge-Platform")?;
    let timestamp_text = given(headers.timestamp, "PayBridge-Timestamp")?;
    let nonce = given(headers.nonce, "PayBridge-Nonce")?;
    let signature = given(headers.signature, "PayBridge-Signature")?;
    let platform = match is_platform_id(id).then(|| platforms.get(id)).flatten() {
        Some(platform) => platform,
        None => return Err(AuthError::UnknownPlatform(id.chars().take(32).collect())),
    };
    let timestamp: i64 = match timestamp_text.len() <= 12 && timestamp_text.bytes().all(|b| b.is_ascii_digit()) {
        true => timestamp_text.parse().map_err(|_| AuthError::BadTimestamp)?,
        false => return Err(AuthError::BadTimestamp),
    };
    let skew = timestamp - now_ms.div_euclid(1000);
    if skew.abs() > MAX_SKEW_SECS {
        return Err(AuthError::Stale(skew));
    }
    if !is_nonce(nonce) {
        return Err(AuthError::BadNonce);
    }
    let message = string_to_sign(request, timestamp_text, nonce);
    if !hmac_matches(platform.keys_at(now_ms), message.as_bytes(), signature) {
        return Err(AuthError::BadSignature);
    }
    Ok(Verified { platform: platform.clone(), timestamp, nonce: nonce.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's worked example: the same inputs give the same signature.
    const EXAMPLE_KEY: &str = "3c9f0b6e2a4d8c1f7e5a9b3d6c0f2e4a8b1d7c5e9f3a6b0c2d4e8f1a3b5c7d9e";
    const EXAMPLE_BODY: &str = r#"{"orderId":"A-20261127-0001","amount":1990,"description":"VIP month"}"#;

    fn platforms() -> Platforms {
        Platforms::new(vec![Platform {
            id: "shop-a".into(),
            key: Secret::new(EXAMPLE_KEY),
            previous_key: Some((Secret::new("old-key-old-key-old-key-old-key-old-key"), 1_764_300_000_000)),
            webhook_url: "https://a.example.com/hook".parse().unwrap(),
            appid: None,
        }])
    }

    fn request() -> Request<'static> {
        Request { method: "POST", path_and_query: "/platform/v1/orders", body: EXAMPLE_BODY.as_bytes() }
    }

    #[test]
    fn worked_example_from_the_readme() {
        let text = string_to_sign(&request(), "1764226800", "3f1c0a9e5b7d4c2a8e6f");
        let expected = format!("POST\n/platform/v1/orders\n1764226800\n3f1c0a9e5b7d4c2a8e6f\n{EXAMPLE_BODY_SHA256}\n");
        assert_eq!(text, expected);
        assert_eq!(
            sign(&Secret::new(EXAMPLE_KEY), &request(), 1_764_226_800, "3f1c0a9e5b7d4c2a8e6f"),
            EXAMPLE_SIGNATURE
        );
    }

    /// Filled in from `openssl` (see the README); a change here is a change to the protocol.
    const EXAMPLE_BODY_SHA256: &str = "2c60e554573efff9d483105a7b96c8fac83e14ccd7d5c8fb4d90d74b876e34e5";
    const EXAMPLE_SIGNATURE: &str = "87455b768548eb3f1fb2fc7f8d16536865c88a56b498500020bb6b2c5ebdd855";

    fn headers<'a>(timestamp: &'a str, nonce: &'a str, signature: &'a str) -> Headers<'a> {
        Headers { platform: Some("shop-a"), timestamp: Some(timestamp), nonce: Some(nonce), signature: Some(signature) }
    }

    #[test]
    fn each_check_says_what_failed() {
        let now = 1_764_226_800_000;
        let nonce = "3f1c0a9e5b7d4c2a8e6f";
        let good = sign(&Secret::new(EXAMPLE_KEY), &request(), 1_764_226_800, nonce);
        let verified = verify(&platforms(), &headers("1764226800", nonce, &good), &request(), now).unwrap();
        assert_eq!((verified.platform.id.as_str(), verified.timestamp), ("shop-a", 1_764_226_800));
        let upper = good.to_ascii_uppercase();
        assert!(verify(&platforms(), &headers("1764226800", nonce, &upper), &request(), now).is_ok());

        let check = |h: Headers, r: Request, now| verify(&platforms(), &h, &r, now).unwrap_err();
        assert_eq!(check(Headers::default(), request(), now), AuthError::Missing("PayBridge-Platform"));
        let other = Headers { platform: Some("shop-b"), ..headers("1764226800", nonce, &good) };
        assert_eq!(check(other, request(), now), AuthError::UnknownPlatform("shop-b".into()));
        assert_eq!(check(headers("17642268.0", nonce, &good), request(), now), AuthError::BadTimestamp);
        assert_eq!(check(headers("1764226800", nonce, &good), request(), now + 301_000), AuthError::Stale(-301));
        assert!(verify(&platforms(), &headers("1764226800", nonce, &good), &request(), now - 299_000).is_ok());
        assert_eq!(check(headers("1764226800", "short", &good), request(), now), AuthError::BadNonce);
        let tampered = Request { body: b"{\"orderId\":\"A-1\",\"amount\":1}", ..request() };
        assert_eq!(check(headers("1764226800", nonce, &good), tampered, now), AuthError::BadSignature);
        let moved = Request { path_and_query: "/platform/v1/orders?x=1", ..request() };
        assert_eq!(check(headers("1764226800", nonce, &good), moved, now), AuthError::BadSignature);
        for e in [AuthError::BadSignature, AuthError::Stale(-301)] {
            assert!(!e.to_string().contains(EXAMPLE_KEY) && !e.to_string().contains(&good));
        }
    }

    #[test]
    fn the_previous_key_works_until_its_time() {
        let old = Secret::new("old-key-old-key-old-key-old-key-old-key");
        let nonce = "abcdefghijklmnop";
        let ts = 1_764_226_800;
        let signed = sign(&old, &request(), ts, nonce);
        let before = 1_764_226_800_000;
        assert!(verify(&platforms(), &headers("1764226800", nonce, &signed), &request(), before).is_ok());
        let mut after = platforms();
        after = Platforms::new(
            after
                .all()
                .iter()
                .cloned()
                .map(|mut p| {
                    p.previous_key = Some((old.clone(), before - 1));
                    p
                })
                .collect(),
        );
        let e = verify(&after, &headers("1764226800", nonce, &signed), &request(), before).unwrap_err();
        assert_eq!(e, AuthError::BadSignature);
    }
}
