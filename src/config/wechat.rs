//! `[wechat]`: the merchant's credentials and WeChat's endpoints, shared by
//! both API versions; what only one version needs is checked in
//! `wechat_v2.rs` (the key, the refund client certificate) or
//! `wechat_v3.rs` (the v3 keys).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::wechat_v2::ClientCertFiles;
use super::{invalid, sandbox_credentials, wechat_v2, wechat_v3, ConfigError, PayApi, TlsConfig};
use crate::domain::Mode;
use crate::secret::Secret;
use crate::wechat::sign::SignType;

pub use crate::wechat::settings::{WechatConfig, WECHAT_PAY_BASE_URL, WECHAT_SNS_BASE_URL};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWechat {
    pub appid: Option<String>,
    pub app_secret: Option<Secret>,
    pub mch_id: Option<String>,
    pub mch_key: Option<Secret>,
    pub sign_type: Option<String>,
    pub api_version: Option<String>,
    pub apiv3_key: Option<Secret>,
    pub merchant_key_file: Option<PathBuf>,
    pub merchant_serial: Option<String>,
    pub public_key_file: Option<PathBuf>,
    pub public_key_id: Option<String>,
    pub platform_certificates: Option<bool>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    pub client_p12_file: Option<PathBuf>,
    pub client_p12_password: Option<Secret>,
    pub secapi_base_url: Option<String>,
    pub secapi_ca_file: Option<PathBuf>,
    pub pay_base_url: Option<String>,
    pub sns_base_url: Option<String>,
    pub notify_url: Option<String>,
    pub timeout_ms: Option<u64>,
}

impl RawWechat {
    /// The section in `mode`. The notify URL defaults to `/pay/notify` on the
    /// first TLS domain, else on the plain `listen`er; the sandbox's endpoints
    /// are the simulator at `simulator_listen`. Also returns where API v2's
    /// client certificate was read from, if it was.
    pub fn validate(
        mut self,
        mode: Mode,
        tls: &TlsConfig,
        listen: Option<SocketAddr>,
        simulator_listen: SocketAddr,
    ) -> Result<(WechatConfig, Option<ClientCertFiles>), ConfigError> {
        let timeout = Duration::from_millis(self.timeout_ms.unwrap_or(10_000));
        if timeout.is_zero() {
            return Err(invalid("wechat.timeout_ms", "must be more than 0"));
        }
        let sign_type = match self.sign_type.as_deref() {
            None => SignType::Md5,
            Some(name) => SignType::parse(name).ok_or_else(|| {
                invalid("wechat.sign_type", format!("must be \"MD5\" or \"HMAC-SHA256\", not {name:?}"))
            })?,
        };
        let v3 = wechat_v3::RawV3 {
            apiv3_key: self.apiv3_key.take(),
            merchant_key_file: self.merchant_key_file.take(),
            merchant_serial: self.merchant_serial.take(),
            public_key_file: self.public_key_file.take(),
            public_key_id: self.public_key_id.take(),
            platform_certificates: self.platform_certificates.take(),
        };
        let client_cert = wechat_v2::RawClientCert {
            cert_file: self.client_cert_file.take(),
            key_file: self.client_key_file.take(),
            p12_file: self.client_p12_file.take(),
            p12_password: self.client_p12_password.take(),
            secapi_base_url: self.secapi_base_url.take(),
            secapi_ca_file: self.secapi_ca_file.take(),
        };
        let api_version = match self.api_version.as_deref().unwrap_or("v2") {
            "v2" => "v2",
            "v3" => "v3",
            other => return Err(invalid("wechat.api_version", format!("must be \"v2\" or \"v3\", not {other:?}"))),
        };
        if api_version == "v2" {
            if let Some(name) = v3.first_set() {
                return Err(invalid(
                    &format!("wechat.{name}"),
                    "is an API v3 setting: set api_version = \"v3\" too, or remove it",
                ));
            }
        } else if self.sign_type.is_some() {
            return Err(invalid("wechat.sign_type", "is an API v2 setting (v3 always signs with RSA): remove it"));
        } else if let Some(name) = client_cert.any() {
            return Err(invalid(
                &format!("wechat.{name}"),
                "is for API v2 refunds (mutual TLS); API v3 refunds need only the v3 keys: remove it",
            ));
        }
        // With TLS, WeChat reaches /pay/notify on the first domain; without,
        // on the plain listener (sandbox and local set-ups).
        let notify_default = match (tls.enabled(), tls.domains.first(), listen) {
            (true, Some(domain), _) if tls.listen.port() == 443 => format!("https://{domain}/pay/notify"),
            (true, Some(domain), _) => format!("https://{domain}:{}/pay/notify", tls.listen.port()),
            (_, _, Some(addr)) => format!("http://{addr}/pay/notify"),
            (_, _, None) => format!("https://{}/pay/notify", tls.listen),
        };

        let mut cert_files = None;
        let wechat = match mode {
            Mode::Sandbox => {
                // SECURITY: sandbox mode never takes real credentials or hosts, so that
                // it can never be mistaken for live mode or send anything to WeChat.
                let w = &self;
                let set = [
                    ("appid", w.appid.is_some()),
                    ("app_secret", w.app_secret.is_some()),
                    ("mch_id", w.mch_id.is_some()),
                    ("mch_key", w.mch_key.is_some()),
                    ("pay_base_url", w.pay_base_url.is_some()),
                    ("apiv3_key", v3.apiv3_key.is_some()),
                    ("merchant_key_file", v3.merchant_key_file.is_some()),
                    ("merchant_serial", v3.merchant_serial.is_some()),
                    ("public_key_file", v3.public_key_file.is_some()),
                    ("public_key_id", v3.public_key_id.is_some()),
                    ("platform_certificates", v3.platform_certificates.is_some()),
                    ("sns_base_url", w.sns_base_url.is_some()),
                ];
                let client_cert_key = client_cert.any().map(|name| (name, true));
                if let Some((name, _)) = set.iter().copied().find(|(_, is_set)| *is_set).or(client_cert_key) {
                    return Err(invalid(
                        &format!("wechat.{name}"),
                        "sandbox mode uses the simulator's built-in merchant; remove this key or set mode = \"live\"",
                    ));
                }
                // The simulator's real address is only known once it is bound.
                let sim = Url::parse(&format!("http://{simulator_listen}")).expect("an address makes a URL");
                WechatConfig {
                    appid: sandbox_credentials::APPID.into(),
                    app_secret: Secret::new(sandbox_credentials::APP_SECRET),
                    mch_id: sandbox_credentials::MCH_ID.into(),
                    api: match api_version {
                        "v3" => PayApi::V3(std::sync::Arc::new(wechat_v3::sandbox_v3_keys())),
                        _ => PayApi::V2 { mch_key: Secret::new(sandbox_credentials::MCH_KEY), sign_type },
                    },
                    pay_base_url: sim.clone(),
                    sns_base_url: sim,
                    notify_url: parse_notify_url(self.notify_url.as_deref().unwrap_or(&notify_default))?,
                    timeout,
                    // The simulator's, once it runs (API v2).
                    refund_tls: None,
                }
            }
            Mode::Live => {
                let w = self;
                let api = match api_version {
                    "v3" => {
                        if w.mch_key.is_some() {
                            return Err(invalid(
                                "wechat.mch_key",
                                "is the API v2 key; with api_version = \"v3\" PayBridge uses apiv3_key: remove it",
                            ));
                        }
                        PayApi::V3(std::sync::Arc::new(v3.validate()?))
                    }
                    _ => {
                        let mch_key = w
                            .mch_key
                            .filter(|k| !k.is_empty())
                            .ok_or_else(|| invalid("wechat.mch_key", "is required in live mode (API v2)"))?;
                        check_key_of_32(
                            "wechat.mch_key",
                            &mch_key,
                            "the API key (APIv2密钥) set in the merchant platform",
                        )?;
                        PayApi::V2 { mch_key, sign_type }
                    }
                };
                let app_secret = w
                    .app_secret
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| invalid("wechat.app_secret", "is required in live mode"))?;
                let mch_id = required("wechat.mch_id", w.mch_id)?;
                if !mch_id.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid("wechat.mch_id", format!("{mch_id:?} is not a merchant number (digits only)")));
                }
                let files = client_cert.files();
                let refund_tls = client_cert.validate(&mch_id)?;
                cert_files = refund_tls.as_ref().map(|_| files);
                let notify_url = match (w.notify_url, tls.enabled() && !tls.domains.is_empty()) {
                    (Some(url), _) => url,
                    (None, true) => notify_default,
                    (None, false) => {
                        return Err(invalid(
                            "wechat.notify_url",
                            "is required without [tls] domains: the https:// URL of /pay/notify on this server",
                        ))
                    }
                };
                let appid = required("wechat.appid", w.appid)?;
                if !is_appid(&appid) {
                    return Err(invalid(
                        "wechat.appid",
                        format!("{appid:?} is not a mini-program AppID (\"wx\" and 16 hex digits, as in the console)"),
                    ));
                }
                WechatConfig {
                    appid,
                    app_secret,
                    mch_id,
                    api,
                    pay_base_url: parse_base_url(
                        "wechat.pay_base_url",
                        w.pay_base_url.as_deref().unwrap_or(WECHAT_PAY_BASE_URL),
                    )?,
                    sns_base_url: parse_base_url(
                        "wechat.sns_base_url",
                        w.sns_base_url.as_deref().unwrap_or(WECHAT_SNS_BASE_URL),
                    )?,
                    notify_url: parse_notify_url(&notify_url)?,
                    timeout,
                    refund_tls,
                }
            }
        };
        Ok((wechat, cert_files))
    }
}

/// Checks a merchant key that is 32 letters and digits (`mch_key`,
/// `apiv3_key`; `what` says which). Counted in characters, not bytes, so a
/// pasted key with two Chinese characters is not taken for 32 bytes.
/// SECURITY: the message gives the length and a position, never the key.
pub(super) fn check_key_of_32(key: &str, value: &Secret, what: &str) -> Result<(), ConfigError> {
    let text = value.expose();
    let length = text.chars().count();
    let wanted = format!("exactly 32 letters and digits: {what}");
    if text.trim() != text {
        return Err(invalid(
            key,
            format!(
                "is {length} characters long, with spaces or a line break at its start or end: remove them; \
                 it must be {wanted}"
            ),
        ));
    }
    if length != 32 {
        return Err(invalid(key, format!("is {length} characters long, and must be {wanted}")));
    }
    if let Some(at) = text.chars().position(|c| !c.is_ascii_alphanumeric()) {
        return Err(invalid(
            key,
            format!("has a character that is not a letter or digit at position {}; it must be {wanted}", at + 1),
        ));
    }
    Ok(())
}

fn required(key: &str, value: Option<String>) -> Result<String, ConfigError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(invalid(key, "is required in live mode")),
    }
}

fn parse_base_url(key: &str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value).map_err(|e| invalid(key, format!("{value:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(key, format!("{value:?} must be an http:// or https:// URL")));
    }
    Ok(url)
}

fn parse_notify_url(value: &str) -> Result<Url, ConfigError> {
    let url = parse_base_url("wechat.notify_url", value)?;
    if url.query().is_some() {
        return Err(invalid("wechat.notify_url", "WeChat refuses a notify URL with a query string"));
    }
    Ok(url)
}

/// A mini-program AppID: `wx` and 16 lowercase hex digits.
pub(crate) fn is_appid(appid: &str) -> bool {
    appid.len() == 18
        && appid.starts_with("wx")
        && appid[2..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{error, load, LIVE};
    use super::super::{Config, TlsMode};
    use crate::domain::Mode;

    #[test]
    fn tls_domains_give_the_notify_url() {
        let text = LIVE.replace("notify_url = \"https://pay.example.com/pay/notify\"", "")
            + "[tls]\ndomains = [\"pay.example.com\"]\nacme_contact = \"ops@example.com\"\n";
        let c = load(&text, &[]).unwrap();
        assert_eq!(c.tls.mode, TlsMode::Acme);
        assert_eq!(c.wechat.notify_url.as_str(), "https://pay.example.com/pay/notify");
        let off = text.replace("listen = \"127.0.0.1:9000\"", "listen = \"off\"");
        assert_eq!(load(&off, &[]).unwrap().http.listen, None);
        let e = error(&LIVE.replace("listen = \"127.0.0.1:9000\"", "listen = \"off\""), &[]);
        assert!(e.contains("http.listen"), "{e}");
        let c = load(&text, &[("PAYBRIDGE_TLS_DOMAINS", "a.example.com, b.example.com")]).unwrap();
        assert_eq!(c.tls.domains, ["a.example.com", "b.example.com"]);
    }

    #[test]
    fn appids_and_what_wechat_would_refuse() {
        let e = error(LIVE, &[("PAYBRIDGE_WECHAT_APPID", "1234")]);
        assert!(e.contains("wechat.appid") && e.contains("16 hex"), "{e}");
        assert!(error(LIVE, &[("PAYBRIDGE_WECHAT_APPID", "wxD930EA5D5A258F4F")]).contains("wechat.appid"));
        let c = load(LIVE, &[("PAYBRIDGE_WECHAT_NOTIFY_URL", "http://pay.example.com/pay/notify")]).unwrap();
        let warnings = c.warnings(None);
        assert!(warnings.iter().any(|w| w.contains("not https://")), "{warnings:?}");
        let c = load(LIVE, &[("PAYBRIDGE_WECHAT_NOTIFY_URL", "https://pay.example.com/pay/notify")]).unwrap();
        assert!(c.warnings(None).is_empty(), "{:?}", c.warnings(None));
    }

    #[test]
    fn sandbox_refuses_real_credentials() {
        let e = error(&format!("mode = \"sandbox\"\n{LIVE}"), &[]);
        assert!(e.contains("wechat.appid") && e.contains("sandbox"), "{e}");
        let c = Config::sandbox_default();
        assert_eq!(c.mode, Mode::Sandbox);
        assert!(c.orders.accept_client_amount);
        assert_eq!(c.wechat.pay_base_url.host_str(), Some("127.0.0.1"));
    }

    #[test]
    fn a_key_of_the_wrong_length_says_its_length_and_never_its_value() {
        const KEY: &str = "192006250b4c09247ec02edce69f6a2d";
        // 26 ASCII and 2 Chinese characters: 32 bytes, 28 characters.
        let chinese = format!("{}密钥", &KEY[..26]);
        assert_eq!(chinese.len(), 32);
        let e = error(LIVE, &[("PAYBRIDGE_WECHAT_MCH_KEY", &chinese)]);
        assert!(e.contains("`wechat.mch_key`: is 28 characters long") && e.contains("32 letters and digits"), "{e}");
        let e = error(LIVE, &[("PAYBRIDGE_WECHAT_MCH_KEY", &format!(" {KEY}\n"))]);
        assert!(e.contains("is 34 characters long") && e.contains("at its start or end"), "{e}");
        let e = error(LIVE, &[("PAYBRIDGE_WECHAT_MCH_KEY", &format!("{}-", &KEY[..31]))]);
        assert!(e.contains("not a letter or digit at position 32"), "{e}");
        let e = error(LIVE, &[("PAYBRIDGE_WECHAT_MCH_KEY", &KEY[..30])]);
        assert!(e.contains("is 30 characters long"), "{e}");
        for bad in [chinese, format!(" {KEY}\n")] {
            let e = error(LIVE, &[("PAYBRIDGE_WECHAT_MCH_KEY", &bad)]);
            assert!(!e.contains(&KEY[..26]), "the key is never quoted: {e}");
        }
    }
}
