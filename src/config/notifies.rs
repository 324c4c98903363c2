//! `[notifies]`: how long and how much of the notify log is kept, and how
//! many refused notifies are recorded per peer.

use serde::Deserialize;

use super::{invalid, ConfigError};
use crate::store::Retention;

/// `[notifies]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifiesConfig {
    /// How long and how much of the notify log is kept.
    pub retention: Retention,
    /// Refused notifies recorded per peer and minute; the rest are only counted.
    pub refused_per_peer_per_minute: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotifies {
    pub keep_days: Option<u32>,
    pub keep_mb: Option<u64>,
    pub refused_per_peer_per_minute: Option<u32>,
}

impl RawNotifies {
    pub fn validate(self) -> Result<NotifiesConfig, ConfigError> {
        let days = match self.keep_days.unwrap_or(90) {
            d @ 1..=3650 => d,
            _ => return Err(invalid("notifies.keep_days", "must be from 1 to 3650 (days)")),
        };
        let mb = match self.keep_mb.unwrap_or(256) {
            mb @ 1..=1_048_576 => mb,
            _ => return Err(invalid("notifies.keep_mb", "must be from 1 to 1048576 (megabytes)")),
        };
        let per_minute = match self.refused_per_peer_per_minute.unwrap_or(30) {
            n @ 0..=100_000 => n,
            _ => return Err(invalid("notifies.refused_per_peer_per_minute", "must be from 0 to 100000")),
        };
        Ok(NotifiesConfig {
            retention: Retention { max_age_ms: i64::from(days) * 86_400_000, max_bytes: mb * 1024 * 1024 },
            refused_per_peer_per_minute: per_minute,
        })
    }
}
