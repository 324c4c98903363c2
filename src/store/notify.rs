//! The notify log: every verified payment notify in full, and a bounded
//! trace of the ones that were refused.
//!
//! SECURITY: anyone can post to `/pay/notify`. Only a notify whose signature
//! verified is kept whole and linked to the order it names; a refused one
//! keeps its verdict, reason, peer, size, SHA-256 and at most
//! [`REFUSED_KEPT_BYTES`] of its body, so a flood of junk costs a bounded
//! amount of disk per record (and [`crate::pay::Payments`] limits how many
//! refused ones a peer gets recorded). The log as a whole is pruned by age and
//! size ([`super::Store::prune_notifies`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::codec::{self, CodecError};

/// The format version written by this release.
pub const NOTIFY_VERSION: u8 = 4;

/// What older versions lack at the end, encoded: version 2 `event_id` and
/// `resource` (`None`: 0) and `source` (`Notify`: variant 0); version 3
/// `source`.
const MISSING_SINCE_V2: &[u8] = &[0, 0, 0];
const MISSING_SINCE_V3: &[u8] = &[0];

/// How PayBridge learned what a record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum NotifySource {
    /// WeChat posted it to `/pay/notify`.
    #[default]
    Notify,
    /// PayBridge asked WeChat (`orderquery`, v3's query): the reconciler.
    Query,
}

impl NotifySource {
    /// `notify` or `query`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifySource::Notify => "notify",
            NotifySource::Query => "query",
        }
    }
}

/// How much of a refused notify's body is kept.
pub const REFUSED_KEPT_BYTES: usize = 1024;

/// The longest reason kept (it may quote the sender's text).
pub const MAX_REASON_BYTES: usize = 512;

/// What PayBridge decided about a notify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Verified; the order moved to PAID.
    Paid,
    /// Verified; the order was already PAID by this transaction.
    Duplicate,
    /// Not a successful payment (`result_code=FAIL`, or no signed content at
    /// all): acknowledged, nothing changed.
    Ignored,
    /// Refused: nothing changed. The reason says why.
    Rejected,
    /// A verified refund notify: the refund it names was updated.
    Refund,
}

impl Verdict {
    /// The upper-case name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Paid => "PAID",
            Verdict::Duplicate => "DUPLICATE",
            Verdict::Ignored => "IGNORED",
            Verdict::Rejected => "REJECTED",
            Verdict::Refund => "REFUND",
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
    /// The body as received (it may not even be UTF-8): whole if the
    /// signature verified, else its first [`REFUSED_KEPT_BYTES`].
    pub raw: Vec<u8>,
    /// The body's length as received.
    pub size: u64,
    /// SHA-256 of the whole body, hex.
    pub sha256: String,
    /// Whether its signature verified. Only verified notifies belong to the
    /// order they name; the others merely claim it.
    pub verified: bool,
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
    /// API v3: the notify's event id (`id` of the envelope), if it could be read.
    pub event_id: Option<String>,
    /// API v3: the decrypted resource (JSON), kept only once the notify
    /// verified; `raw` holds the envelope as received.
    pub resource: Option<Vec<u8>>,
    /// A notify WeChat sent, or the verified answer to a query.
    pub source: NotifySource,
}

/// Version 1: every body kept whole, no size, hash or verified flag.
#[derive(Deserialize)]
struct NotifyRecordV1 {
    id: u64,
    received_at: i64,
    peer: Option<String>,
    raw: Vec<u8>,
    out_trade_no: Option<String>,
    transaction_id: Option<String>,
    verdict: Verdict,
    reason: String,
    sandbox: bool,
}

impl From<NotifyRecordV1> for NotifyRecord {
    fn from(v1: NotifyRecordV1) -> NotifyRecord {
        NotifyRecord {
            size: v1.raw.len() as u64,
            sha256: hex::encode(Sha256::digest(&v1.raw)),
            // Version 1 kept no flag; these two verdicts need a valid signature.
            verified: matches!(v1.verdict, Verdict::Paid | Verdict::Duplicate),
            id: v1.id,
            received_at: v1.received_at,
            peer: v1.peer,
            raw: v1.raw,
            out_trade_no: v1.out_trade_no,
            transaction_id: v1.transaction_id,
            verdict: v1.verdict,
            reason: v1.reason,
            sandbox: v1.sandbox,
            event_id: None,
            resource: None,
            source: NotifySource::Notify,
        }
    }
}

impl NotifyRecord {
    /// A record of `body` as received, not yet decided (`Rejected`, unverified).
    pub fn received(body: &[u8], received_at: i64, peer: Option<String>, sandbox: bool) -> NotifyRecord {
        NotifyRecord {
            id: 0,
            received_at,
            peer,
            raw: body.to_vec(),
            size: body.len() as u64,
            sha256: hex::encode(Sha256::digest(body)),
            verified: false,
            out_trade_no: None,
            transaction_id: None,
            verdict: Verdict::Rejected,
            reason: String::new(),
            sandbox,
            event_id: None,
            resource: None,
            source: NotifySource::Notify,
        }
    }

    /// Drops all but the first [`REFUSED_KEPT_BYTES`] of an unverified body,
    /// and all but [`MAX_REASON_BYTES`] of the reason.
    pub fn trim_unverified(&mut self) {
        if !self.verified {
            self.raw.truncate(REFUSED_KEPT_BYTES);
            self.resource = None;
        }
        if self.reason.len() > MAX_REASON_BYTES {
            let mut end = MAX_REASON_BYTES;
            while !self.reason.is_char_boundary(end) {
                end -= 1;
            }
            self.reason.truncate(end);
            self.reason.push('…');
        }
    }

    /// Encodes the current format.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(NOTIFY_VERSION, self)
    }

    /// Decodes any format this release knows.
    pub fn decode(bytes: &[u8]) -> Result<NotifyRecord, CodecError> {
        match codec::split(bytes)? {
            (NOTIFY_VERSION, payload) => codec::decode(payload),
            (3, payload) => codec::decode([payload, MISSING_SINCE_V3].concat().as_slice()),
            (2, payload) => codec::decode([payload, MISSING_SINCE_V2].concat().as_slice()),
            (1, payload) => Ok(codec::decode::<NotifyRecordV1>(payload)?.into()),
            (other, _) => Err(CodecError::UnknownVersion(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct V1<'a> {
        id: u64,
        received_at: i64,
        peer: Option<String>,
        raw: &'a [u8],
        out_trade_no: Option<String>,
        transaction_id: Option<String>,
        verdict: Verdict,
        reason: String,
        sandbox: bool,
    }

    #[test]
    fn version_1_records_still_read() {
        let v1 = V1 {
            id: 7,
            received_at: 5,
            peer: None,
            raw: b"<xml/>",
            out_trade_no: Some("A1".into()),
            transaction_id: None,
            verdict: Verdict::Paid,
            reason: "ok".into(),
            sandbox: false,
        };
        let record = NotifyRecord::decode(&codec::encode(1, &v1)).unwrap();
        assert_eq!((record.id, record.size, record.verified), (7, 6, true));
        assert_eq!(record.sha256, hex::encode(Sha256::digest(b"<xml/>")));
        assert_eq!(NotifyRecord::decode(&record.encode()).unwrap(), record);
    }

    #[test]
    fn versions_2_and_3_still_read() {
        let mut record = NotifyRecord::received(b"<xml/>", 1, Some("1.2.3.4:5".into()), true);
        record.reason = "ok".into();
        // Versions 2 and 3 are the current struct without its last fields.
        for (version, missing) in [(2, MISSING_SINCE_V2), (3, MISSING_SINCE_V3)] {
            let mut old = codec::encode(version, &record);
            old.truncate(old.len() - missing.len());
            assert_eq!(NotifyRecord::decode(&old).unwrap(), record);
        }
        record.event_id = Some("EV-1".into());
        record.source = NotifySource::Query;
        assert_eq!(NotifyRecord::decode(&record.encode()).unwrap(), record);
    }

    #[test]
    fn unverified_bodies_are_trimmed() {
        let body = vec![b'x'; 60 * 1024];
        let mut record = NotifyRecord::received(&body, 1, None, false);
        record.trim_unverified();
        assert_eq!((record.raw.len(), record.size), (REFUSED_KEPT_BYTES, body.len() as u64));
        let mut verified = NotifyRecord::received(&body, 1, None, false);
        verified.verified = true;
        verified.trim_unverified();
        assert_eq!(verified.raw.len(), body.len());
    }
}
