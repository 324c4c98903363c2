//! WeChat Pay API v2 and v3 and the mini-program login API, as WeChat defines them.
//!
//! Pure protocol code ([`sign`], [`xml`], [`jsapi`], and v3's in [`v3`]) is
//! separate from the HTTP clients ([`client`], [`v3::client`]) so that the
//! simulator in [`crate::sandbox`] signs and verifies with exactly the same
//! functions as the clients. [`gateway`] is the one interface the payment
//! flow uses, whichever version the merchant runs.

pub mod bill;
pub mod client;
pub mod gateway;
pub mod jsapi;
pub mod refund_info;
pub mod settings;
pub mod sign;
pub mod v3;
pub mod xml;

use rand::distr::{Alphanumeric, SampleString};
use time::format_description::well_known::Rfc3339;
use time::macros::{format_description, offset};
use time::OffsetDateTime;

/// A fresh `nonce_str`: 32 random alphanumeric characters (WeChat's maximum).
pub fn nonce_str() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

/// `yyyyMMddHHmmss` in Beijing time (UTC+8), the format of `time_end` and friends.
pub fn beijing_compact(at: OffsetDateTime) -> String {
    at.to_offset(offset!(+8))
        .format(format_description!("[year][month][day][hour][minute][second]"))
        .expect("a valid date formats")
}

/// Unix seconds as RFC 3339 in Beijing time (`2026-11-27T15:30:05+08:00`),
/// the form of v3's `time_expire`, `success_time` and friends.
pub fn beijing_rfc3339(unix_secs: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp(unix_secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    at.to_offset(offset!(+8)).format(&Rfc3339).expect("a valid date formats")
}

/// A v3 time (RFC 3339) as v2's `yyyyMMddHHmmss` in Beijing time, the form
/// orders keep whatever the version; empty if it does not parse.
pub fn compact_from_rfc3339(text: &str) -> String {
    OffsetDateTime::parse(text, &Rfc3339).map(beijing_compact).unwrap_or_default()
}

/// Whether `s` is a valid merchant order number: 6 to 32 characters of
/// `[0-9A-Za-z_-|*]` (WeChat's rule for `out_trade_no`).
pub fn is_valid_out_trade_no(s: &str) -> bool {
    (6..=32).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_is_32_alphanumeric() {
        let n = nonce_str();
        assert_eq!(n.len(), 32);
        assert!(n.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(n, nonce_str());
    }

    #[test]
    fn beijing_time_is_utc_plus_8() {
        let t = time::macros::datetime!(2020-05-26 07:25:50 UTC);
        assert_eq!(beijing_compact(t), "20200526152550");
    }

    #[test]
    fn v3_times_are_beijing_rfc3339() {
        let t = time::macros::datetime!(2018-06-08 02:34:56 UTC).unix_timestamp();
        assert_eq!(beijing_rfc3339(t), "2018-06-08T10:34:56+08:00");
        assert_eq!(compact_from_rfc3339("2018-06-08T10:34:56+08:00"), "20180608103456");
        assert_eq!(compact_from_rfc3339("2018-06-08T02:34:56Z"), "20180608103456");
        assert_eq!(compact_from_rfc3339("yesterday"), "");
    }

    #[test]
    fn out_trade_no_rule() {
        assert!(is_valid_out_trade_no("20150806125346"));
        assert!(is_valid_out_trade_no("A-b_c|d*e"));
        assert!(!is_valid_out_trade_no("short"));
        assert!(!is_valid_out_trade_no(&"x".repeat(33)));
        assert!(!is_valid_out_trade_no("has space1"));
        assert!(!is_valid_out_trade_no("订单号123456"));
    }
}
