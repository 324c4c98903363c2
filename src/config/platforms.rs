//! `[[platforms]]`: the platforms (company A's backends) that create orders
//! through the signed platform API and receive result webhooks.

use std::path::PathBuf;

use serde::Deserialize;
use url::Url;

use super::{invalid, ConfigError};
use crate::secret::Secret;

pub use crate::platform::keys::{is_platform_id, Platform, Platforms, MIN_KEY_CHARS};

/// The most platforms one PayBridge serves.
const MAX_PLATFORMS: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlatform {
    pub id: String,
    #[serde(default)]
    pub key: Option<Secret>,
    /// A file holding the key (so the config itself need not).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub previous_key: Option<Secret>,
    /// RFC 3339, e.g. `2026-12-31T00:00:00+08:00`.
    #[serde(default)]
    pub previous_key_until: Option<String>,
    pub webhook_url: String,
    #[serde(default)]
    pub appid: Option<String>,
}

pub(super) fn platforms(raw: Vec<RawPlatform>) -> Result<Platforms, ConfigError> {
    if raw.len() > MAX_PLATFORMS {
        return Err(invalid("platforms", format!("at most {MAX_PLATFORMS} platforms")));
    }
    let mut platforms: Vec<Platform> = Vec::with_capacity(raw.len());
    for (i, p) in raw.into_iter().enumerate() {
        let key_name = |field: &str| format!("platforms[{i}].{field}");
        if !is_platform_id(&p.id) {
            return Err(invalid(&key_name("id"), format!("{:?} must be 1 to 32 of a-z 0-9 - _", p.id)));
        }
        if platforms.iter().any(|q| q.id == p.id) {
            return Err(invalid(&key_name("id"), format!("{:?} is used twice", p.id)));
        }
        let key = match (p.key, p.key_file) {
            (Some(key), None) => key,
            (None, Some(path)) => Secret::new(
                std::fs::read_to_string(&path)
                    .map_err(|e| invalid(&key_name("key_file"), format!("cannot read {}: {e}", path.display())))?
                    .trim_end_matches(['\r', '\n']),
            ),
            (Some(_), Some(_)) => return Err(invalid(&key_name("key"), "set key or key_file, not both")),
            (None, None) => {
                return Err(invalid(&key_name("key"), "is required (generate one with `openssl rand -hex 32`)"))
            }
        };
        check_key(&key_name("key"), &key)?;
        let previous_key = match (p.previous_key, p.previous_key_until) {
            (None, None) => None,
            (Some(old), Some(until)) => {
                check_key(&key_name("previous_key"), &old)?;
                let until = time::OffsetDateTime::parse(&until, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                        invalid(
                            &key_name("previous_key_until"),
                            format!("{until:?} is not an RFC 3339 time like \"2026-12-31T00:00:00+08:00\""),
                        )
                    })?;
                Some((old, (until.unix_timestamp_nanos() / 1_000_000) as i64))
            }
            (Some(_), None) => {
                return Err(invalid(
                    &key_name("previous_key_until"),
                    "is required with previous_key: until when the old key is accepted",
                ))
            }
            (None, Some(_)) => return Err(invalid(&key_name("previous_key"), "is required with previous_key_until")),
        };
        let webhook_url = Url::parse(&p.webhook_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                invalid(&key_name("webhook_url"), format!("{:?} is not an http:// or https:// URL", p.webhook_url))
            })?;
        if let Some(appid) = &p.appid {
            if !super::is_appid(appid) {
                return Err(invalid(&key_name("appid"), format!("{appid:?} is not a mini-program AppID")));
            }
        }
        platforms.push(Platform { id: p.id, key, previous_key, webhook_url, appid: p.appid });
    }
    Ok(Platforms::new(platforms))
}

fn check_key(name: &str, key: &Secret) -> Result<(), ConfigError> {
    let chars = key.expose().chars().count();
    if chars < MIN_KEY_CHARS || key.expose().chars().any(char::is_whitespace) {
        return Err(invalid(
            name,
            format!(
                "must be at least {MIN_KEY_CHARS} characters without spaces (generate one with `openssl rand -hex 32`)"
            ),
        ));
    }
    Ok(())
}
