//! The platforms (company A's backends) PayBridge serves, and their keys:
//! who may sign requests, order tokens and results, and where webhooks go.
//! The configuration fills these from `[[platforms]]`.

use url::Url;

use crate::secret::Secret;

/// The shortest platform key accepted: 32 characters (128 bits from a hex
/// or base64 generator); `openssl rand -hex 32` gives 64.
pub const MIN_KEY_CHARS: usize = 32;

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

/// A platform id: 1 to 32 of `a-z 0-9 - _`.
pub fn is_platform_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}
