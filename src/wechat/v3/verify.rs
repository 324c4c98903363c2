//! Checking what WeChat signs (replies and notifies): the `Wechatpay-*`
//! headers, the timestamp window, the key the serial names, the signature
//! over the raw body. Nothing in a reply or notify is used before this
//! passes.

use super::crypto::{response_message, PublicKey};

/// How far `Wechatpay-Timestamp` may be from our clock.
pub const MAX_SKEW_SECS: i64 = 300;

/// The prefix of WeChat's deliberate probe signatures.
pub const PROBE_PREFIX: &str = "WECHATPAY/SIGNTEST/";

/// The signature headers as received.
#[derive(Debug, Clone, Copy, Default)]
pub struct SignedHeaders<'a> {
    /// `Wechatpay-Timestamp`
    pub timestamp: Option<&'a str>,
    /// `Wechatpay-Nonce`
    pub nonce: Option<&'a str>,
    /// `Wechatpay-Signature`
    pub signature: Option<&'a str>,
    /// `Wechatpay-Serial`: which key signed.
    pub serial: Option<&'a str>,
}

/// Why a reply or notify is not trusted. Safe to log and to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A `Wechatpay-*` header is missing.
    #[error("the {0} header is missing")]
    Missing(&'static str),
    /// The timestamp is not a number, or too far from our clock.
    #[error("Wechatpay-Timestamp is {0} seconds from this server's clock (at most 300 allowed)")]
    Stale(i64),
    /// No configured key has this serial.
    #[error("Wechatpay-Serial {0:?} names no key configured here (public key id or platform certificate serial)")]
    UnknownSerial(String),
    /// WeChat's probe: a signature that must fail, so that WeChat sees we verify.
    #[error("a WeChat signature probe (WECHATPAY/SIGNTEST/): refused as it must be")]
    Probe,
    /// The signature does not verify.
    #[error("the signature does not verify with the key of serial {0}")]
    BadSignature(String),
}

/// The keys WeChat signs with: the WeChat Pay public key under its
/// `PUB_KEY_ID_…`, platform certificates under their serials, or both
/// (during WeChat's migration from certificates to the public key).
#[derive(Debug, Clone, Default)]
pub struct Verifier {
    keys: Vec<(String, PublicKey)>,
}

impl Verifier {
    /// Adds (or replaces) the key of `serial`.
    pub fn add(&mut self, serial: &str, key: PublicKey) {
        self.keys.retain(|(s, _)| s != serial);
        self.keys.push((serial.to_owned(), key));
    }

    /// The serials known, in the order added.
    pub fn serials(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(s, _)| s.as_str())
    }

    /// Verifies a reply or notify `body` with its headers at `now_secs`.
    pub fn verify(&self, headers: &SignedHeaders, body: &[u8], now_secs: i64) -> Result<(), VerifyError> {
        let timestamp = headers.timestamp.ok_or(VerifyError::Missing("Wechatpay-Timestamp"))?;
        let nonce = headers.nonce.ok_or(VerifyError::Missing("Wechatpay-Nonce"))?;
        let signature = headers.signature.ok_or(VerifyError::Missing("Wechatpay-Signature"))?;
        let serial = headers.serial.ok_or(VerifyError::Missing("Wechatpay-Serial"))?;
        let at: i64 = timestamp.trim().parse().map_err(|_| VerifyError::Stale(i64::MAX))?;
        let skew = at - now_secs;
        if skew.abs() > MAX_SKEW_SECS {
            return Err(VerifyError::Stale(skew));
        }
        if signature.starts_with(PROBE_PREFIX) {
            return Err(VerifyError::Probe);
        }
        let Some((_, key)) = self.keys.iter().find(|(s, _)| s == serial) else {
            return Err(VerifyError::UnknownSerial(serial.chars().take(64).collect()));
        };
        match key.verify(&response_message(timestamp, nonce, body), signature) {
            true => Ok(()),
            false => Err(VerifyError::BadSignature(serial.to_owned())),
        }
    }
}
