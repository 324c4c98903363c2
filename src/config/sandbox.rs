//! `[sandbox]`: where the simulated WeChat Pay server listens (sandbox mode only).

use std::net::SocketAddr;

use serde::Deserialize;

use super::{parse_addr, ConfigError};

/// `[sandbox]`
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Address of the simulated WeChat Pay server.
    pub simulator_listen: SocketAddr,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSandbox {
    pub simulator_listen: Option<String>,
}

impl RawSandbox {
    pub fn validate(self) -> Result<SandboxConfig, ConfigError> {
        let simulator_listen =
            parse_addr("sandbox.simulator_listen", self.simulator_listen.as_deref().unwrap_or("127.0.0.1:8081"))?;
        Ok(SandboxConfig { simulator_listen })
    }
}
