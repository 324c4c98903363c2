//! `[reconcile]`: the daily bill (对账) and how long its files are kept.

use serde::Deserialize;

use super::{invalid, ConfigError};

/// `[reconcile]`: the daily bill (对账).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileConfig {
    /// Download and compare yesterday's bill every day after 10:00 Beijing time.
    pub enabled: bool,
    /// Each day's bill file is kept this many days (the results stay).
    pub keep_bills_days: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReconcile {
    pub enabled: Option<bool>,
    pub keep_bills_days: Option<u32>,
}

impl RawReconcile {
    pub fn validate(self) -> Result<ReconcileConfig, ConfigError> {
        Ok(ReconcileConfig {
            enabled: self.enabled.unwrap_or(true),
            keep_bills_days: match self.keep_bills_days.unwrap_or(400) {
                d @ 1..=3650 => d,
                _ => return Err(invalid("reconcile.keep_bills_days", "must be from 1 to 3650 (days)")),
            },
        })
    }
}
