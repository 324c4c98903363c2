//! WeChat Pay v2 signatures: MD5 or HMAC-SHA256 over the ASCII-sorted fields.
//!
//! The same algorithm signs requests, replies, payment notifies and the
//! `wx.requestPayment` "second signature". Verification runs over every field
//! the message carried, known or not: WeChat adds fields without notice, and a
//! verifier that rebuilds the map from a fixed struct rejects real notifies.

use std::collections::BTreeMap;
use std::fmt;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::secret::Secret;

/// The fields of a flat WeChat Pay message. A `BTreeMap` orders keys by bytes,
/// which is exactly the ASCII order the signature needs.
pub type Fields = BTreeMap<String, String>;

/// A signature algorithm of WeChat Pay v2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SignType {
    /// `MD5`, WeChat's default when `sign_type` is absent.
    #[serde(rename = "MD5")]
    Md5,
    /// `HMAC-SHA256`, keyed with the merchant API key.
    #[serde(rename = "HMAC-SHA256")]
    HmacSha256,
}

impl SignType {
    /// The name WeChat uses in `sign_type` and `signType`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignType::Md5 => "MD5",
            SignType::HmacSha256 => "HMAC-SHA256",
        }
    }

    /// Parses WeChat's name of an algorithm.
    pub fn parse(name: &str) -> Option<SignType> {
        match name {
            "MD5" => Some(SignType::Md5),
            "HMAC-SHA256" => Some(SignType::HmacSha256),
            _ => None,
        }
    }

    /// The algorithm a message declares: its `sign_type` field when present,
    /// else guessed from the signature's length (32 hex digits for MD5, 64 for
    /// HMAC-SHA256), because WeChat omits `sign_type` from most notifies.
    pub fn of_message(fields: &Fields) -> Option<SignType> {
        match fields.get("sign_type").map(String::as_str) {
            Some(name) if !name.is_empty() => SignType::parse(name),
            _ => match fields.get("sign").map(String::len) {
                Some(64) => Some(SignType::HmacSha256),
                _ => Some(SignType::Md5),
            },
        }
    }
}

impl fmt::Display for SignType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The message has no `sign` field.
    #[error("the message has no sign field")]
    Missing,
    /// `sign_type` names an algorithm WeChat does not have.
    #[error("unknown sign_type {0:?}")]
    UnknownType(String),
    /// The algorithm is valid but not one this check accepts.
    #[error("sign_type {0} is not accepted here")]
    TypeNotAccepted(SignType),
    /// The signature does not match the fields and the merchant key.
    #[error("the signature does not match")]
    Mismatch,
}

/// The string that is hashed: `k1=v1&k2=v2...&key=<api key>`, over every
/// non-empty field but `sign`, in ASCII order.
///
/// SECURITY: the result contains the merchant key. It must never be logged or
/// returned; it lives only inside [`sign`].
fn string_to_sign(fields: &Fields, key: &Secret) -> String {
    let mut s = String::with_capacity(256);
    for (name, value) in fields {
        if name == "sign" || value.is_empty() {
            continue;
        }
        s.push_str(name);
        s.push('=');
        s.push_str(value);
        s.push('&');
    }
    s.push_str("key=");
    s.push_str(key.expose());
    s
}

/// Signs `fields` (its `sign`, if any, is ignored) and returns uppercase hex.
pub fn sign(fields: &Fields, key: &Secret, sign_type: SignType) -> String {
    let input = string_to_sign(fields, key);
    match sign_type {
        SignType::Md5 => hex::encode_upper(Md5::digest(input.as_bytes())),
        SignType::HmacSha256 => {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()).expect("HMAC takes a key of any length");
            mac.update(input.as_bytes());
            hex::encode_upper(mac.finalize().into_bytes())
        }
    }
}

/// Verifies the `sign` of a received message over all its fields.
///
/// The algorithm is the one the message declares (see [`SignType::of_message`]);
/// it must be among `accepted`. Returns the algorithm that verified.
/// The comparison is constant-time and ignores the case of the received hex.
pub fn verify(fields: &Fields, key: &Secret, accepted: &[SignType]) -> Result<SignType, SignError> {
    let received = fields.get("sign").filter(|s| !s.is_empty()).ok_or(SignError::Missing)?;
    let sign_type = match SignType::of_message(fields) {
        Some(t) => t,
        None => return Err(SignError::UnknownType(fields["sign_type"].clone())),
    };
    if !accepted.contains(&sign_type) {
        return Err(SignError::TypeNotAccepted(sign_type));
    }
    let expected = sign(fields, key, sign_type);
    let received = received.to_ascii_uppercase();
    if expected.as_bytes().ct_eq(received.as_bytes()).into() {
        Ok(sign_type)
    } else {
        Err(SignError::Mismatch)
    }
}

/// Builds a [`Fields`] map from pairs; handy for requests and tests.
pub fn fields<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Fields {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "192006250b4c09247ec02edce69f6a2d";

    fn official() -> Fields {
        fields([
            ("appid", "wxd930ea5d5a258f4f"),
            ("mch_id", "10000100"),
            ("device_info", "1000"),
            ("body", "test"),
            ("nonce_str", "ibuaiVcKdpRxkhJA"),
        ])
    }

    #[test]
    fn official_example_md5_and_hmac() {
        let key = Secret::new(KEY);
        assert_eq!(sign(&official(), &key, SignType::Md5), "9A0A8659F005D6984697E2CA0A9CF3B7");
        assert_eq!(
            sign(&official(), &key, SignType::HmacSha256),
            "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
        );
    }

    #[test]
    fn wechatpy_vector() {
        let key = Secret::new(KEY);
        let f = fields([("test1", "test1"), ("test2", "test2")]);
        assert_eq!(sign(&f, &key, SignType::Md5), "1E3A8D73B5A4AEE787C0F68B5DAB8520");
        assert_eq!(
            sign(&f, &key, SignType::HmacSha256),
            "EDAC6D70D2FDF5A2382F8204FC96A1918017E46ACC5297F565ED1A7610ACF659"
        );
    }

    fn notify_vector() -> Fields {
        fields([
            ("appid", "wxd930ea5d5a258f4f"),
            ("bank_type", "OTHERS"),
            ("cash_fee", "1"),
            ("fee_type", "CNY"),
            ("is_subscribe", "N"),
            ("mch_id", "10000100"),
            ("nonce_str", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"),
            ("openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
            ("out_trade_no", "20150806125346"),
            ("result_code", "SUCCESS"),
            ("return_code", "SUCCESS"),
            ("time_end", "20200526152550"),
            ("total_fee", "1"),
            ("trade_type", "JSAPI"),
            ("transaction_id", "4200000540202005267407409907"),
        ])
    }

    #[test]
    fn notify_vector_signs_and_empty_values_are_left_out() {
        let key = Secret::new(KEY);
        let mut f = notify_vector();
        assert_eq!(sign(&f, &key, SignType::Md5), "775595061263830379D50DD2671F8476");
        f.insert("attach".into(), String::new());
        assert_eq!(sign(&f, &key, SignType::Md5), "775595061263830379D50DD2671F8476");
        assert_eq!(
            sign(&f, &key, SignType::HmacSha256),
            "EC86C7250E0A9B0C1D6622A42D33108E8B50F411D406CFC89373CEBE2C589C7D"
        );
    }

    #[test]
    fn verify_picks_the_algorithm_by_length_when_sign_type_is_absent() {
        let key = Secret::new(KEY);
        let both = [SignType::Md5, SignType::HmacSha256];
        let mut f = notify_vector();
        f.insert("sign".into(), "EC86C7250E0A9B0C1D6622A42D33108E8B50F411D406CFC89373CEBE2C589C7D".into());
        assert_eq!(verify(&f, &key, &both), Ok(SignType::HmacSha256));
        f.insert("sign".into(), "775595061263830379d50dd2671f8476".into());
        assert_eq!(verify(&f, &key, &both), Ok(SignType::Md5));
        assert_eq!(verify(&f, &key, &[SignType::HmacSha256]), Err(SignError::TypeNotAccepted(SignType::Md5)));
    }

    #[test]
    fn verify_covers_unknown_fields() {
        let key = Secret::new(KEY);
        let mut f = notify_vector();
        f.insert("coupon_count".into(), "1".into());
        f.insert("coupon_id_0".into(), "10000000001".into());
        f.insert("made_up_field".into(), "x".into());
        let s = sign(&f, &key, SignType::Md5);
        f.insert("sign".into(), s);
        assert!(verify(&f, &key, &[SignType::Md5]).is_ok());
        // Changing an unknown field breaks the signature: it was covered.
        f.insert("made_up_field".into(), "y".into());
        assert_eq!(verify(&f, &key, &[SignType::Md5]), Err(SignError::Mismatch));
    }

    #[test]
    fn verify_refuses_missing_and_unknown_types() {
        let key = Secret::new(KEY);
        let mut f = notify_vector();
        assert_eq!(verify(&f, &key, &[SignType::Md5]), Err(SignError::Missing));
        f.insert("sign".into(), "00".into());
        f.insert("sign_type".into(), "SHA1".into());
        assert_eq!(verify(&f, &key, &[SignType::Md5]), Err(SignError::UnknownType("SHA1".into())));
    }
}
