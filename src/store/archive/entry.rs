//! One archived order as it is kept in a frame: the order and everything
//! that belonged to it in the hot store, each record in its own kind's
//! encoding (with that kind's version byte), so an archive written by one
//! release reads in the next exactly as the hot store's records do.

use serde::{Deserialize, Serialize};

use crate::store::codec::{self, CodecError};
use crate::store::{Delivery, NotifyRecord, Order, Refund};

/// The format version of [`Entry`].
const ENTRY_VERSION: u8 = 1;

/// An archived order as stored: each record as its kind encodes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Entry {
    /// The order's number (also inside `order`: here so the index can be
    /// rebuilt without decoding the order).
    pub out_trade_no: String,
    /// When the order was created (unix ms): which month file it is in.
    pub created_at: i64,
    /// When it was moved out of the hot store (unix ms).
    pub archived_at: i64,
    /// [`Order::encode`].
    pub order: Vec<u8>,
    /// Its verified notifies still in the log, newest first ([`NotifyRecord::encode`]).
    pub notifies: Vec<Vec<u8>>,
    /// Its refunds ([`Refund`]'s encoding).
    pub refunds: Vec<Vec<u8>>,
    /// Its finished webhook deliveries ([`Delivery::encode`]).
    pub deliveries: Vec<Vec<u8>>,
}

impl Entry {
    /// Encodes the current format.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(ENTRY_VERSION, self)
    }

    /// Decodes any format this release knows.
    pub fn decode(bytes: &[u8]) -> Result<Entry, CodecError> {
        match codec::split(bytes)? {
            (ENTRY_VERSION, payload) => codec::decode(payload),
            (other, _) => Err(CodecError::UnknownVersion(other)),
        }
    }
}

/// An order read from the archive, with what belonged to it. Read-only:
/// nothing changes an archived order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedOrder {
    /// The order as it was when it moved.
    pub order: Order,
    /// Its verified notifies that were still in the log, newest first.
    pub notifies: Vec<NotifyRecord>,
    /// Its refunds.
    pub refunds: Vec<Refund>,
    /// Its webhook deliveries (all finished).
    pub deliveries: Vec<Delivery>,
    /// When it moved out of the hot store (unix ms).
    pub archived_at: i64,
}

impl ArchivedOrder {
    /// The stored form.
    pub(super) fn to_entry(&self) -> Entry {
        Entry {
            out_trade_no: self.order.out_trade_no.clone(),
            created_at: self.order.created_at,
            archived_at: self.archived_at,
            order: self.order.encode(),
            notifies: self.notifies.iter().map(NotifyRecord::encode).collect(),
            refunds: self.refunds.iter().map(Refund::encode).collect(),
            deliveries: self.deliveries.iter().map(Delivery::encode).collect(),
        }
    }

    /// Every record of an entry decoded; any that does not is an error
    /// (the caller checks the order's number against the entry's).
    pub(super) fn from_entry(entry: &Entry) -> Result<ArchivedOrder, CodecError> {
        Ok(ArchivedOrder {
            order: Order::decode(&entry.order)?,
            notifies: entry.notifies.iter().map(|b| NotifyRecord::decode(b)).collect::<Result<_, _>>()?,
            refunds: entry.refunds.iter().map(|b| Refund::decode(b)).collect::<Result<_, _>>()?,
            deliveries: entry.deliveries.iter().map(|b| Delivery::decode(b)).collect::<Result<_, _>>()?,
            archived_at: entry.archived_at,
        })
    }
}
