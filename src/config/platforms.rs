//! `[[platforms]]`: the platforms (company A's backends) that create orders
//! through the signed platform API and receive result webhooks.

use std::path::PathBuf;

use serde::Deserialize;
use url::Url;

use super::{invalid, ConfigError};
use crate::secret::Secret;

/// The shortest platform key accepted: 32 characters (128 bits from a hex
/// or base64 generator); `openssl rand -hex 32` gives 64.
pub const MIN_KEY_CHARS: usize = 32;

/// The most platforms one PayBridge serves.
const MAX_PLATFORMS: usize = 100;

/// One platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// Its id, sent in the `PayBridge-Platform` header and in order tokens.
    pub id: String,
    /// The shared secret: signs requests, tokens and webhooks.
    pub key: Secret,
    /// The key before the last rotation, still accepted until the given
    /// time (unix ms); webhooks are always signed with `key`.
    pub previous_key: Option<(Secret, i64)>,
    /// Where events (`order.paid`, `order.closed`) are POSTed.
    pub webhook_url: Url,
    /// Mini-program A's AppID, shown in the integration kit.
    pub appid: Option<String>,
}

impl Platform {
    /// The keys that verify a request or token at `now_ms`: the current one,
    /// then the previous one during its grace period.
    pub fn keys_at(&self, now_ms: i64) -> impl Iterator<Item = &Secret> {
        let previous = self.previous_key.as_ref().filter(|(_, until)| now_ms < *until).map(|(key, _)| key);
        std::iter::once(&self.key).chain(previous)
    }
}

/// Every configured platform, in config order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Platforms {
    platforms: Vec<Platform>,
}

impl Platforms {
    /// The platform with this id.
    pub fn get(&self, id: &str) -> Option<&Platform> {
        self.platforms.iter().find(|p| p.id == id)
    }

    /// Every platform.
    pub fn all(&self) -> &[Platform] {
        &self.platforms
    }

    /// The same set with platform `id`'s webhook moved to `url` (the
    /// sandbox's demo platform, once the simulator's port is known).
    pub fn with_webhook(mut self, id: &str, url: Url) -> Platforms {
        for p in self.platforms.iter_mut().filter(|p| p.id == id) {
            p.webhook_url = url.clone();
        }
        self
    }

    /// Builds a set directly (sandbox defaults, tests).
    pub fn new(platforms: Vec<Platform>) -> Platforms {
        Platforms { platforms }
    }
}

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

/// A platform id: 1 to 32 of `a-z 0-9 - _`.
pub fn is_platform_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
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
    Ok(Platforms { platforms })
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
