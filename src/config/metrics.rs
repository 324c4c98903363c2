//! `[metrics]`: where `/metrics` is served and the token that guards it.

use std::net::SocketAddr;

use serde::Deserialize;

use super::{invalid, parse_addr, ConfigError};
use crate::domain::Mode;
use crate::secret::Secret;

/// `[metrics]`
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Where `/metrics` is served; `None` when `"off"`. Never the public listeners.
    pub listen: Option<SocketAddr>,
    /// Bearer token for `/metrics`; required when `listen` is not loopback.
    pub token: Option<Secret>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub listen: Option<String>,
    pub token: Option<Secret>,
}

impl RawMetrics {
    pub fn validate(self, mode: Mode) -> Result<MetricsConfig, ConfigError> {
        // The sandbox picks a free port, so a demo never collides with a live server.
        let default = if mode == Mode::Sandbox { "127.0.0.1:0" } else { "127.0.0.1:9464" };
        let token = self.token.filter(|t| !t.is_empty());
        let listen = match self.listen.as_deref().unwrap_or(default) {
            "off" => None,
            addr => Some(parse_addr("metrics.listen", addr)?),
        };
        if listen.is_some_and(|a| !a.ip().is_loopback()) && token.is_none() {
            return Err(invalid(
                "metrics.listen",
                "is not a loopback address: set [metrics] token too, or anyone who reaches it reads your figures",
            ));
        }
        Ok(MetricsConfig { listen, token })
    }
}
