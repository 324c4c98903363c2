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
            if !super::wechat::is_appid(appid) {
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

#[cfg(test)]
mod tests {
    use super::super::testing::{error, load, LIVE};

    #[test]
    fn platforms_are_checked_and_their_keys_masked() {
        const KEY: &str = "0123456789abcdef0123456789abcdef-platform";
        let with = |fields: &str| format!("{LIVE}\n[[platforms]]\n{fields}\n");
        let good = format!(
            "id = \"shop-a\"\nkey = \"{KEY}\"\nwebhook_url = \"http://a.example.com/hook\"\n\
             appid = \"wx0123456789abcdef\"\nprevious_key = \"{KEY}-old\"\n\
             previous_key_until = \"2026-12-31T00:00:00+08:00\""
        );
        let c = load(&with(&good), &[]).unwrap();
        let p = c.platforms.get("shop-a").unwrap();
        assert_eq!((p.key.expose(), p.previous_key.as_ref().unwrap().1), (KEY, 1_798_646_400_000));
        assert_eq!(p.keys_at(1_798_646_399_999).count(), 2, "both keys before the deadline");
        assert_eq!(p.keys_at(1_798_646_400_000).count(), 1, "only the new one after");
        let shown = c.describe();
        assert!(shown.contains("[[platforms]]\nid = \"shop-a\"") && !shown.contains(KEY), "{shown}");
        assert!(c.warnings(None).iter().any(|w| w.contains("webhook_url http://a.example.com/hook")));

        let url = "webhook_url = \"https://a.example.com/hook\"";
        for (bad, key) in [
            (format!("id = \"Shop A\"\nkey = \"{KEY}\"\n{url}"), "platforms[0].id"),
            (format!("id = \"a\"\nkey = \"short\"\n{url}"), "platforms[0].key"),
            (format!("id = \"a\"\n{url}"), "platforms[0].key"),
            (format!("id = \"a\"\nkey = \"{KEY}\"\nkey_file = \"/x\"\n{url}"), "platforms[0].key"),
            (format!("id = \"a\"\nkey_file = \"/nonexistent/key\"\n{url}"), "platforms[0].key_file"),
            (format!("id = \"a\"\nkey = \"{KEY}\"\nwebhook_url = \"ftp://x/y\""), "platforms[0].webhook_url"),
            (format!("id = \"a\"\nkey = \"{KEY}\"\n{url}\nappid = \"wx1\""), "platforms[0].appid"),
            (format!("id = \"a\"\nkey = \"{KEY}\"\n{url}\nprevious_key = \"{KEY}\""), "previous_key_until"),
            (
                format!("id = \"a\"\nkey = \"{KEY}\"\n{url}\nprevious_key = \"{KEY}\"\nprevious_key_until = \"soon\""),
                "previous_key_until",
            ),
        ] {
            let e = error(&with(&bad), &[]);
            assert!(e.contains(key) && !e.contains(KEY), "{bad}: {e}");
        }
        let twice = format!("{LIVE}\n[[platforms]]\n{good}\n[[platforms]]\n{good}\n");
        assert!(error(&twice, &[]).contains("used twice"));
    }
}
