//! `[storage]`: the store's memory and write queue, and when ended orders
//! move to the archive.

use serde::Deserialize;

use super::{invalid, ConfigError};
use crate::store::archive::{DEFAULT_AFTER_DAYS, MIN_AFTER_DAYS};
use crate::store::StoreOptions;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    pub cache_mb: Option<u64>,
    pub max_pending_writes: Option<usize>,
    pub archive_after_days: Option<u32>,
}

impl RawStorage {
    /// Days after its end an order moves to the archive: at least
    /// [`MIN_AFTER_DAYS`], since WeChat takes refunds for a year.
    pub fn archive_after_days(&self) -> Result<u32, ConfigError> {
        match self.archive_after_days.unwrap_or(DEFAULT_AFTER_DAYS) {
            d @ MIN_AFTER_DAYS..=36_500 => Ok(d),
            _ => Err(invalid(
                "storage.archive_after_days",
                format!(
                    "must be from {MIN_AFTER_DAYS} to 36500 (days): WeChat accepts refunds for a year after \
                     the payment, and an archived order takes none"
                ),
            )),
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    /// WeChat takes refunds for a year: the archive may not take orders sooner.
    #[test]
    fn archive_after_days_is_at_least_a_year_and_a_day() {
        let days = |d| RawStorage { archive_after_days: d, ..RawStorage::default() }.archive_after_days();
        assert_eq!(days(None).unwrap(), 400);
        assert_eq!(days(Some(366)).unwrap(), 366);
        let refused = days(Some(365)).unwrap_err().to_string();
        assert!(refused.contains("storage.archive_after_days") && refused.contains("refunds"), "{refused}");
        assert!(days(Some(0)).is_err() && days(Some(36_501)).is_err());
    }
}
