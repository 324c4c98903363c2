//! A v3 payment notify: the JSON envelope, its AEAD_AES_256_GCM resource,
//! and the transaction inside. Call only after [`super::verify::Verifier`]
//! accepted the raw body.

use serde::Deserialize;

use super::crypto::{ApiV3Key, DecryptError};

/// The envelope WeChat POSTs.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    /// The event id, e.g. `EV-2018022511223320873` (kept in the notify log).
    pub id: String,
    /// `TRANSACTION.SUCCESS` for a payment.
    pub event_type: String,
    /// `encrypt-resource`.
    #[serde(default)]
    pub resource_type: String,
    /// The encrypted resource.
    pub resource: Resource,
}

/// The encrypted part of a notify.
#[derive(Debug, Clone, Deserialize)]
pub struct Resource {
    /// `AEAD_AES_256_GCM`.
    pub algorithm: String,
    /// `Base64(ciphertext ‖ tag)`.
    pub ciphertext: String,
    /// The AAD, e.g. `transaction` (may be empty).
    #[serde(default)]
    pub associated_data: String,
    /// 12 characters.
    pub nonce: String,
}

/// A decrypted `transaction` resource: what v2's notify fields say.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Transaction {
    /// The merchant.
    pub mchid: String,
    /// The mini-program.
    pub appid: String,
    /// Our order number.
    pub out_trade_no: String,
    /// WeChat's.
    pub transaction_id: String,
    /// `SUCCESS` for a payment.
    pub trade_state: String,
    /// RFC 3339, Beijing time.
    #[serde(default)]
    pub success_time: String,
    /// Who paid.
    pub payer: Payer,
    /// How much.
    pub amount: Amount,
    /// Echoed merchant data.
    #[serde(default)]
    pub attach: String,
}

/// `payer`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Payer {
    /// The payer's openid under `appid`.
    pub openid: String,
}

/// `amount`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Amount {
    /// The order's amount, fen.
    pub total: u64,
    /// `CNY`.
    #[serde(default)]
    pub currency: String,
}

/// Why a (verified) notify could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// The body is not the envelope.
    #[error("the notify is not the JSON WeChat sends: {0}")]
    Envelope(String),
    /// Another algorithm than AEAD_AES_256_GCM.
    #[error("unknown resource algorithm {0:?}")]
    Algorithm(String),
    /// The resource does not decrypt (a wrong APIv3 key, changed data).
    #[error(transparent)]
    Decrypt(#[from] DecryptError),
    /// It decrypts to something that is not a transaction.
    #[error("the decrypted resource is not a transaction: {0}")]
    Resource(String),
}

/// Reads the envelope of a verified notify body.
pub fn envelope(body: &[u8]) -> Result<Envelope, NotifyError> {
    serde_json::from_slice(body).map_err(|e| NotifyError::Envelope(e.to_string()))
}

/// Decrypts and reads the transaction of a `TRANSACTION.*` envelope.
pub fn transaction(envelope: &Envelope, key: &ApiV3Key) -> Result<Transaction, NotifyError> {
    let r = &envelope.resource;
    if r.algorithm != "AEAD_AES_256_GCM" {
        return Err(NotifyError::Algorithm(r.algorithm.chars().take(32).collect()));
    }
    let plain = key.decrypt(&r.nonce, &r.associated_data, &r.ciphertext)?;
    serde_json::from_slice(&plain).map_err(|e| NotifyError::Resource(e.to_string()))
}

/// A decrypted `refund` resource (`REFUND.SUCCESS`, `.ABNORMAL`, `.CLOSED`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RefundResource {
    /// The merchant.
    pub mchid: String,
    /// The order refunded.
    pub out_trade_no: String,
    /// Our refund number.
    pub out_refund_no: String,
    /// WeChat's refund id.
    pub refund_id: String,
    /// `SUCCESS`, `CLOSED`, `ABNORMAL`.
    pub refund_status: String,
    /// Fen.
    pub amount: RefundAmount,
}

/// `amount` of a refund.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RefundAmount {
    /// The order's amount.
    pub total: u64,
    /// This refund's.
    pub refund: u64,
}

/// Decrypts and reads the refund of a `REFUND.*` envelope.
pub fn refund(envelope: &Envelope, key: &ApiV3Key) -> Result<RefundResource, NotifyError> {
    let r = &envelope.resource;
    if r.algorithm != "AEAD_AES_256_GCM" {
        return Err(NotifyError::Algorithm(r.algorithm.chars().take(32).collect()));
    }
    let plain = key.decrypt(&r.nonce, &r.associated_data, &r.ciphertext)?;
    serde_json::from_slice(&plain).map_err(|e| NotifyError::Resource(e.to_string()))
}
