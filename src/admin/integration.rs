//! The admin page's Integration view: the integration kit's files (under
//! `static/integration/`) with this merchant's API address, mini-program B's
//! AppID, and a platform's id and AppID filled in. Never a key.

use serde::Serialize;

use crate::platform::keys::Platforms;

/// The kit: file name, what it is for, its text with placeholders.
const KIT: [(&str, &str, &str); 4] = [
    (
        "a-miniprogram.js",
        "Mini-program A: go to B, read the result",
        include_str!("../../static/integration/a-miniprogram.js"),
    ),
    ("b-pay.js", "Mini-program B: the pay page", include_str!("../../static/integration/b-pay.js")),
    ("a-backend.js", "Platform A's backend (Node.js)", include_str!("../../static/integration/a-backend.js")),
    ("a-backend.sh", "Platform A's backend (curl and openssl)", include_str!("../../static/integration/a-backend.sh")),
];

/// One platform as the view shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformRow {
    id: String,
    appid: Option<String>,
    webhook_url: String,
}

/// One file of the kit, filled in.
#[derive(Debug, Clone, Serialize)]
pub struct KitFile {
    name: &'static str,
    purpose: &'static str,
    text: String,
}

/// The Integration view.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IntegrationView {
    /// Where mini-program B and platform A reach this PayBridge.
    api_base: String,
    /// Mini-program B's AppID (the merchant's).
    b_appid: String,
    platforms: Vec<PlatformRow>,
    files: Vec<KitFile>,
}

/// The public base URL: the notify URL without its path.
pub fn api_base(notify_url: &url::Url) -> String {
    let mut base = notify_url.clone();
    base.set_path("");
    base.to_string().trim_end_matches('/').to_owned()
}

/// The view for these settings; the files name the first platform.
pub fn view(api_base: &str, b_appid: &str, platforms: &Platforms) -> IntegrationView {
    let first = platforms.all().first();
    let platform_id = first.map_or("your-platform-id", |p| p.id.as_str());
    let a_appid = first.and_then(|p| p.appid.as_deref()).unwrap_or("wx-your-a-appid");
    let fill = |text: &str| {
        text.replace("__PAYBRIDGE_API__", api_base)
            .replace("__B_APPID__", b_appid)
            .replace("__PLATFORM_ID__", platform_id)
            .replace("__A_APPID__", a_appid)
    };
    IntegrationView {
        api_base: api_base.to_owned(),
        b_appid: b_appid.to_owned(),
        platforms: platforms
            .all()
            .iter()
            .map(|p| PlatformRow { id: p.id.clone(), appid: p.appid.clone(), webhook_url: p.webhook_url.to_string() })
            .collect(),
        files: KIT.iter().map(|(name, purpose, text)| KitFile { name, purpose, text: fill(text) }).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_every_placeholder_and_no_key() {
        let platforms = Platforms::new(vec![crate::platform::keys::Platform {
            id: "shop-a".into(),
            key: crate::secret::Secret::new("the-platform-key-the-platform-key-0000"),
            previous_key: None,
            webhook_url: "https://a.example.com/hook".parse().unwrap(),
            appid: Some("wx0123456789abcdef".into()),
        }]);
        let base = api_base(&"https://pay.example.com/pay/notify".parse().unwrap());
        assert_eq!(base, "https://pay.example.com");
        let v = view(&base, "wxfedcba9876543210", &platforms);
        let all = serde_json::to_string(&v).unwrap();
        assert!(!all.contains("__"), "a placeholder is left");
        assert!(!all.contains("the-platform-key"));
        assert!(v.files.iter().any(|f| f.text.contains("'wxfedcba9876543210'")));
        assert!(v.files.iter().any(|f| f.text.contains("https://pay.example.com")));
    }
}
