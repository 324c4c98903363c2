//! Record encoding: one format-version byte, then postcard.
//!
//! postcard is compact and maintained (bincode's last release is a
//! `compile_error!`), but it is not self-describing: a record written by one
//! release must be read by the next. The leading version byte says which
//! struct to decode into; an old version is decoded into its old struct and
//! converted, so adding a field never strands existing data.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a stored record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The record is empty.
    #[error("empty record")]
    Empty,
    /// Written by a newer release (or damaged).
    #[error("record format version {0} is not known to this release")]
    UnknownVersion(u8),
    /// A sum would not fit: refused rather than wrapped.
    #[error("{0} would overflow")]
    Overflow(&'static str),
    /// The bytes do not decode.
    #[error("damaged record: {0}")]
    Damaged(#[from] postcard::Error),
}

/// Encodes `value` as version `version`.
pub fn encode<T: Serialize>(version: u8, value: &T) -> Vec<u8> {
    let mut out = vec![version];
    out.extend(postcard::to_stdvec(value).expect("serializing into a Vec cannot fail"));
    out
}

/// Splits a record into its version and payload.
pub fn split(bytes: &[u8]) -> Result<(u8, &[u8]), CodecError> {
    bytes.split_first().map(|(v, rest)| (*v, rest)).ok_or(CodecError::Empty)
}

/// Decodes a payload of a known version.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    Ok(postcard::from_bytes(payload)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_byte() {
        let bytes = encode(1, &("a".to_string(), 7u64));
        assert_eq!(bytes[0], 1);
        let (v, payload) = split(&bytes).unwrap();
        assert_eq!(v, 1);
        assert_eq!(decode::<(String, u64)>(payload).unwrap(), ("a".to_string(), 7));
        assert!(matches!(split(&[]), Err(CodecError::Empty)));
        assert!(decode::<(String, u64)>(&[200]).is_err());
    }
}
