//! `[log]`: the log line format.

use serde::Deserialize;

use super::{invalid, ConfigError};

/// `[log]`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogConfig {
    /// Human-readable lines (default).
    #[default]
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub format: Option<String>,
}

impl RawLog {
    pub fn validate(self) -> Result<LogConfig, ConfigError> {
        match self.format.as_deref() {
            None | Some("human") => Ok(LogConfig::Human),
            Some("json") => Ok(LogConfig::Json),
            Some(other) => Err(invalid("log.format", format!("must be \"human\" or \"json\", not {other:?}"))),
        }
    }
}
