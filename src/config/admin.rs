//! `[admin]`: the admin page's password hash.

use serde::Deserialize;

use super::{invalid, ConfigError};
use crate::secret::Secret;

/// `[admin]`
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// Argon2id hash of the admin password (`paybridge admin set-password`);
    /// without it nobody can log in.
    pub password_hash: Option<Secret>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub password_hash: Option<Secret>,
}

impl RawAdmin {
    pub fn validate(self) -> Result<AdminConfig, ConfigError> {
        let password_hash = match self.password_hash.filter(|h| !h.is_empty()) {
            Some(hash) if crate::admin::auth::is_valid_hash(hash.expose()) => Some(hash),
            Some(_) => {
                return Err(invalid(
                    "admin.password_hash",
                    "is not an Argon2id hash; set it with `paybridge admin set-password --config FILE`",
                ))
            }
            None => None,
        };
        Ok(AdminConfig { password_hash })
    }
}
