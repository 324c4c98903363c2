//! The domain's shared vocabulary, at the ground floor: what a payment,
//! a refund's state and the `wx.requestPayment` parameters are, and whether
//! this is sandbox or live. Plain data: every layer may use it, and it uses
//! nothing of the crate.

use serde::{Deserialize, Serialize};

/// Whether PayBridge talks to WeChat or to its own simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Real WeChat Pay with the merchant's credentials.
    Live,
    /// The built-in simulator with built-in credentials; no real money.
    Sandbox,
}

impl Mode {
    /// The name used in config files and in the data directory's marker.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::Sandbox => "sandbox",
        }
    }
}

/// What a verified payment notify says about an order.
#[derive(Debug, Clone)]
pub struct Payment {
    /// `transaction_id`
    pub transaction_id: String,
    /// `total_fee`, fen.
    pub total_fee: u64,
    /// `time_end`
    pub time_end: String,
    /// `openid`
    pub openid: String,
}

/// Where a refund is (WeChat's `refund_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefundStatus {
    /// Asked for; WeChat has not said how it ended.
    Processing,
    /// The money went back.
    Success,
    /// WeChat closed it without refunding.
    Closed,
    /// It failed at the bank (the user's card was closed...): the money is
    /// back in the merchant's account; someone completes it by hand in the
    /// merchant platform (then WeChat reports SUCCESS), so it is not an end.
    Abnormal,
    /// PayBridge's own end, not a WeChat state: WeChat refused the request
    /// outright (a code it documents as final), so nothing was refunded.
    /// Appended last: stored statuses are their position.
    Failed,
}

impl RefundStatus {
    /// WeChat's name.
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Processing => "PROCESSING",
            RefundStatus::Success => "SUCCESS",
            RefundStatus::Closed => "CLOSED",
            RefundStatus::Abnormal => "ABNORMAL",
            RefundStatus::Failed => "FAILED",
        }
    }

    /// Whether nothing more can happen to it (SUCCESS, CLOSED, FAILED).
    pub fn is_end(self) -> bool {
        matches!(self, RefundStatus::Success | RefundStatus::Closed | RefundStatus::Failed)
    }

    /// Parses WeChat's name (never `FAILED`, which is PayBridge's).
    pub fn parse(name: &str) -> Option<RefundStatus> {
        [RefundStatus::Processing, RefundStatus::Success, RefundStatus::Closed, RefundStatus::Abnormal]
            .into_iter()
            .find(|s| s.as_str() == name)
    }

    /// Parses API v2's name (`refund_status`: `REFUNDCLOSE` for CLOSED,
    /// `CHANGE` for ABNORMAL).
    pub fn parse_v2(name: &str) -> Option<RefundStatus> {
        match name {
            "REFUNDCLOSE" => Some(RefundStatus::Closed),
            "CHANGE" => Some(RefundStatus::Abnormal),
            "PROCESSING" | "SUCCESS" => RefundStatus::parse(name),
            _ => None,
        }
    }
}

/// `signType` of `wx.requestPayment`. (Stored with every prepay: the
/// variants keep their order, new ones go at the end.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaySignType {
    /// v2, `MD5`.
    #[serde(rename = "MD5")]
    Md5,
    /// v2, `HMAC-SHA256`.
    #[serde(rename = "HMAC-SHA256")]
    HmacSha256,
    /// v3, `RSA`.
    #[serde(rename = "RSA")]
    Rsa,
}

impl PaySignType {
    /// WeChat's name.
    pub fn as_str(self) -> &'static str {
        match self {
            PaySignType::Md5 => "MD5",
            PaySignType::HmacSha256 => "HMAC-SHA256",
            PaySignType::Rsa => "RSA",
        }
    }
}

/// What the mini-program passes to `wx.requestPayment`, plus `appId`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayParams {
    /// The mini-program's AppID, signed but not passed to `wx.requestPayment`.
    pub app_id: String,
    /// Seconds since the epoch, as a string (WeChat wants a string).
    pub time_stamp: String,
    /// A random string of at most 32 characters.
    pub nonce_str: String,
    /// `prepay_id=<prepay_id>`.
    pub package: String,
    /// `MD5` or `HMAC-SHA256` as used for the unified order (v2), or `RSA` (v3).
    pub sign_type: PaySignType,
    /// The signature over the five fields above.
    pub pay_sign: String,
}
