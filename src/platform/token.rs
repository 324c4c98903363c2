//! Order tokens: an order a platform signs for mini-program A to carry in
//! `extraData`, so no server call from A is needed before the payment.
//!
//! A token is `pbt1.` + base64url (no padding) of a JSON object + `.` + hex
//! HMAC-SHA256, under the platform key, of everything before that last dot:
//!
//! ```json
//! {"platform":"shop-a","orderId":"A-1001","amount":1990,
//!  "description":"VIP month","attach":"","expiresAt":1764230400,"nonce":"k2J9..."}
//! ```
//!
//! `expiresAt` (unix seconds) is when the order stops being payable; the
//! nonce only makes two tokens for the same order differ.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::auth::{hmac_hex, hmac_matches};
use super::keys::Platforms;
use crate::secret::Secret;

/// The prefix that names the format.
pub const PREFIX: &str = "pbt1.";

/// The longest token read.
pub const MAX_TOKEN_BYTES: usize = 2048;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenClaims {
    /// The platform that signed it.
    pub platform: String,
    /// The platform's own order id.
    pub order_id: String,
    /// Amount in fen.
    pub amount: u64,
    /// The goods description.
    pub description: String,
    /// Echoed to the platform in webhooks.
    #[serde(default)]
    pub attach: String,
    /// Until when the order may be paid (unix seconds).
    pub expires_at: i64,
    /// Anything unique.
    #[serde(default)]
    pub nonce: String,
}

/// Why a token was refused. The messages are safe to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token at all.
    #[error("the order token is malformed: {0}")]
    Malformed(&'static str),
    /// Signed by no configured platform.
    #[error("the order token names platform {0:?}, which is not configured on this PayBridge")]
    UnknownPlatform(String),
    /// The signature does not match (tampered, or another key).
    #[error("the order token's signature does not match: it was changed, or signed with another key")]
    BadSignature,
    /// Too late.
    #[error("the order token expired at unix time {0}: ask platform A for a new one")]
    Expired(i64),
}

/// `prefix` + base64url JSON of `claims` + `.` + hex HMAC of all before the dot.
fn seal(prefix: &str, key: &Secret, claims: &impl Serialize) -> String {
    let payload = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("plain data")));
    let signature = hmac_hex(key, payload.as_bytes());
    format!("{payload}.{signature}")
}

/// The parts of a sealed text: (what is signed, the decoded JSON, the signature).
fn unseal<'a>(prefix: &str, text: &'a str) -> Result<(&'a str, Vec<u8>, &'a str), &'static str> {
    let body = text.strip_prefix(prefix).ok_or("it does not start with its prefix")?;
    let (payload, signature) = body.rsplit_once('.').ok_or("no signature part")?;
    let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| "the payload is not base64url")?;
    Ok((&text[..prefix.len() + payload.len()], json, signature))
}

/// Signs claims as a platform does (tests, the integration kit).
pub fn sign(key: &Secret, claims: &TokenClaims) -> String {
    seal(PREFIX, key, claims)
}

/// Verifies a token at `now_ms` and returns what it says. The order's own
/// fields (amount, description) are checked where the order is placed.
pub fn verify(platforms: &Platforms, token: &str, now_ms: i64) -> Result<TokenClaims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed("longer than 2048 bytes"));
    }
    if !token.starts_with(PREFIX) {
        return Err(TokenError::Malformed("it must start with pbt1."));
    }
    let (signed, json, signature) = unseal(PREFIX, token).map_err(TokenError::Malformed)?;
    let claims: TokenClaims =
        serde_json::from_slice(&json).map_err(|_| TokenError::Malformed("the payload is not the expected JSON"))?;
    let platform = platforms
        .get(&claims.platform)
        .ok_or_else(|| TokenError::UnknownPlatform(claims.platform.chars().take(32).collect()))?;
    if !hmac_matches(platform.keys_at(now_ms), signed.as_bytes(), signature) {
        return Err(TokenError::BadSignature);
    }
    if claims.expires_at.saturating_mul(1000) <= now_ms {
        return Err(TokenError::Expired(claims.expires_at));
    }
    Ok(claims)
}

/// The prefix of a signed payment result.
pub const RESULT_PREFIX: &str = "pbr1.";

/// What a signed result says: mini-program B passes it back to A, whose
/// backend verifies it to show the outcome at once (the webhook stays the
/// source of truth).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultClaims {
    /// The platform.
    pub platform: String,
    /// The platform's order id.
    pub order_id: String,
    /// PayBridge's order number.
    pub out_trade_no: String,
    /// `PAID`, `PARTIALLY_REFUNDED` or `REFUNDED` when it was signed: only
    /// paid orders get a result.
    pub status: String,
    /// Amount in fen.
    pub amount: u64,
    /// WeChat's transaction id, once paid.
    pub transaction_id: Option<String>,
    /// When it was signed (unix seconds).
    pub at: i64,
}

/// Signs a result: `pbr1.` + base64url JSON + `.` + hex HMAC, as a token.
pub fn sign_result(key: &Secret, claims: &ResultClaims) -> String {
    seal(RESULT_PREFIX, key, claims)
}

/// Verifies a signed result (what A's backend does; tests).
pub fn verify_result(key: &Secret, signed: &str) -> Option<ResultClaims> {
    let (signed_part, json, signature) = unseal(RESULT_PREFIX, signed).ok()?;
    if !hmac_matches(std::iter::once(key), signed_part.as_bytes(), signature) {
        return None;
    }
    serde_json::from_slice(&json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::keys::Platform;

    const KEY: &str = "token-test-key-token-test-key-0123456789";

    fn platforms() -> Platforms {
        Platforms::new(vec![Platform {
            id: "shop-a".into(),
            key: Secret::new(KEY),
            previous_key: None,
            webhook_url: "https://a.example.com/hook".parse().unwrap(),
            appid: None,
        }])
    }

    fn claims() -> TokenClaims {
        TokenClaims {
            platform: "shop-a".into(),
            order_id: "A-1001".into(),
            amount: 1990,
            description: "VIP month".into(),
            attach: String::new(),
            expires_at: 2_000,
            nonce: "n1".into(),
        }
    }

    #[test]
    fn round_trip_and_every_refusal() {
        let token = sign(&Secret::new(KEY), &claims());
        assert!(token.starts_with(PREFIX));
        assert_eq!(verify(&platforms(), &token, 1_000_000).unwrap(), claims());
        assert_eq!(verify(&platforms(), &token, 2_000_000), Err(TokenError::Expired(2_000)));

        // Tampered: the amount changed, the signature kept.
        let cheap = sign(&Secret::new(KEY), &TokenClaims { amount: 1, ..claims() });
        let (payload, _) = cheap.rsplit_once('.').unwrap();
        let (_, signature) = token.rsplit_once('.').unwrap();
        assert_eq!(verify(&platforms(), &format!("{payload}.{signature}"), 1_000_000), Err(TokenError::BadSignature));
        // Foreign: another key, or a platform nobody configured.
        let foreign = sign(&Secret::new("another-key-another-key-another-key"), &claims());
        assert_eq!(verify(&platforms(), &foreign, 1_000_000), Err(TokenError::BadSignature));
        let stranger = sign(&Secret::new(KEY), &TokenClaims { platform: "shop-z".into(), ..claims() });
        assert_eq!(verify(&platforms(), &stranger, 1_000_000), Err(TokenError::UnknownPlatform("shop-z".into())));
        for junk in ["", "pbt1.", "pbt1.!!!.00", "pbt2.abc.def", &"x".repeat(3000)] {
            assert!(matches!(verify(&platforms(), junk, 1_000_000), Err(TokenError::Malformed(_))), "{junk:.20}");
        }
    }
}
