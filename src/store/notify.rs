//! The notify log: every payment notify received, whatever its verdict.
//!
//! It is append-only. A forged notify or a misconfigured key shows up here as
//! a rejected entry with its reason, next to the raw body as received.

use serde::{Deserialize, Serialize};

use super::codec::{self, CodecError};

/// The format version written by this release.
pub const NOTIFY_VERSION: u8 = 1;

/// What PayBridge decided about a notify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Verified; the order moved to PAID.
    Paid,
    /// Verified; the order was already PAID by this transaction.
    Duplicate,
    /// Verified, but not a successful payment (`result_code=FAIL`): acknowledged, nothing changed.
    Ignored,
    /// Refused: nothing changed. The reason says why.
    Rejected,
}

impl Verdict {
    /// The upper-case name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Paid => "PAID",
            Verdict::Duplicate => "DUPLICATE",
            Verdict::Ignored => "IGNORED",
            Verdict::Rejected => "REJECTED",
        }
    }
}

/// One received notify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyRecord {
    /// Unique, increasing id (the log's key).
    pub id: u64,
    /// When it arrived (unix ms).
    pub received_at: i64,
    /// The sender's address, as seen by the socket.
    pub peer: Option<String>,
    /// The body exactly as received (it may not even be UTF-8).
    pub raw: Vec<u8>,
    /// The order it names, if it could be read.
    pub out_trade_no: Option<String>,
    /// WeChat's transaction id, if it could be read.
    pub transaction_id: Option<String>,
    /// The decision.
    pub verdict: Verdict,
    /// Why, in words.
    pub reason: String,
    /// Received in sandbox mode.
    pub sandbox: bool,
}

impl NotifyRecord {
    /// Encodes the current format.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(NOTIFY_VERSION, self)
    }

    /// Decodes any format this release knows.
    pub fn decode(bytes: &[u8]) -> Result<NotifyRecord, CodecError> {
        match codec::split(bytes)? {
            (NOTIFY_VERSION, payload) => codec::decode(payload),
            (other, _) => Err(CodecError::UnknownVersion(other)),
        }
    }
}
