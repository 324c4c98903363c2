//! `[storage]`: the store's memory and write queue.

use serde::Deserialize;

use super::{invalid, ConfigError};
use crate::store::StoreOptions;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    pub cache_mb: Option<u64>,
    pub max_pending_writes: Option<usize>,
}

impl RawStorage {
    pub fn validate(self) -> Result<StoreOptions, ConfigError> {
        let defaults = StoreOptions::default();
        let cache_bytes = match self.cache_mb {
            None => defaults.cache_bytes,
            Some(mb @ 8..=65_536) => mb * 1024 * 1024,
            Some(_) => return Err(invalid("storage.cache_mb", "must be from 8 to 65536 (megabytes)")),
        };
        let max_pending_writes = match self.max_pending_writes {
            None => defaults.max_pending_writes,
            Some(n @ 1..=1_000_000) => n,
            Some(_) => return Err(invalid("storage.max_pending_writes", "must be from 1 to 1000000")),
        };
        Ok(StoreOptions { cache_bytes, max_pending_writes, ..defaults })
    }
}
