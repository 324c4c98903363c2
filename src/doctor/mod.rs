//! `paybridge doctor`: proves each credential and setting against WeChat
//! before the first real payment, and says what to fix and where.
//!
//! Everything `check-config` checks comes first (an invalid file stops
//! there); then one call to WeChat per credential, each one that cannot
//! change anything: a login with a code no `wx.login` issues
//! ([`login`]), a query of an order number no order has ([`v2`], [`v3`]),
//! the platform certificates' download, an empty request to the refund host
//! over mutual TLS ([`refund`]); then what WeChat needs of this server
//! ([`site`]). WeChat's answer to each tells a right
//! credential from a wrong one. Every line of the [`Report`] is checked
//! for the configured secrets before it leaves (see [`scrub`]).
//!
//! Above the configuration and below the wiring: the admin page, which may
//! not import this, gets the report through a function `app` hands it.

mod login;
pub mod places;
mod refund;
mod site;
mod v2;
mod v3;

use std::path::Path;
use std::sync::Arc;

use crate::checkup::{Check, Report};
use crate::config::{Config, PayApi};
use crate::wechat::client::{WechatClient, WechatError};

/// The configuration file's validity.
pub const CODE_CONFIG: &str = "config";
/// A warning of `check-config`.
pub const CODE_CONFIG_WARNING: &str = "config_warning";
/// The mini-program login: AppID and AppSecret.
pub const CODE_LOGIN: &str = "login";
/// API v2: merchant number and key.
pub const CODE_V2_KEY: &str = "v2_key";
/// API v3: the request's signature (merchant, serial, private key).
pub const CODE_V3_REQUEST: &str = "v3_request";
/// API v3: the reply's signature (public key, platform certificates).
pub const CODE_V3_REPLY: &str = "v3_reply";
/// API v3: the APIv3 key.
pub const CODE_APIV3_KEY: &str = "apiv3_key";
/// API v2 refunds: the API certificate's merchant and validity.
pub const CODE_REFUND_CERT: &str = "refund_certificate";
/// API v2 refunds: the mutual-TLS handshake.
pub const CODE_REFUND_TLS: &str = "refund_tls";
/// The certificate PayBridge serves.
pub const CODE_HTTPS: &str = "https_certificate";
/// The notify URL's form.
pub const CODE_NOTIFY_URL: &str = "notify_url";
/// The notify URL answers as PayBridge.
pub const CODE_NOTIFY_ENDPOINT: &str = "notify_endpoint";
/// The domain's addresses.
pub const CODE_DNS: &str = "dns";

/// What to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The credentials and, in live mode, this server's HTTPS, notify URL and DNS.
    Everything,
    /// Only the configuration and the credentials (`--credentials-only`: a
    /// machine that is not the server, before it is set up).
    Credentials,
}

/// Checks the configuration file at `path` as `check-config` does, then,
/// if it is valid, every credential in it ([`check`]).
pub async fn check_file(path: &Path, scope: Scope) -> Report {
    let mut report = Report::default();
    let config = match Config::check(path) {
        Ok(config) => config,
        Err(errors) => {
            for e in errors {
                report.push(Check::failed(
                    CODE_CONFIG,
                    "config",
                    e.to_string(),
                    format!(
                        "correct it in {} (or the PAYBRIDGE_… variable it names); WeChat was not asked anything",
                        path.display()
                    ),
                ));
            }
            return report;
        }
    };
    report.push(Check::passed(
        CODE_CONFIG,
        "config",
        format!(
            "{} is valid ({} mode, WeChat Pay API {})",
            path.display(),
            config.mode.as_str(),
            config.wechat.api.version()
        ),
    ));
    for warning in config.warnings(Some(path)) {
        report.push(Check::unproved(CODE_CONFIG_WARNING, "config warning", warning, None));
    }
    report.checks.extend(check(&config, scope).await.checks);
    report
}

/// Checks every credential of a valid configuration against WeChat (the
/// simulator in sandbox mode), one call each; then, in live mode, what
/// WeChat needs of this server ([`site`]: HTTPS, the notify URL, DNS).
pub async fn check(config: &Config, scope: Scope) -> Report {
    let mut report = Report::default();
    let w = &config.wechat;
    let client = match WechatClient::new(w) {
        Ok(client) => client,
        Err(e) => {
            report.push(Check::failed(
                CODE_CONFIG,
                "WeChat client",
                format!("cannot build the HTTPS client: {}", e.without_url()),
                "check the client certificate settings (wechat.client_cert_file, client_key_file, secapi_ca_file)",
            ));
            return report;
        }
    };
    report.push(login::check(&client, &w.appid).await);
    match &w.api {
        PayApi::V2 { sign_type, .. } => {
            report.push(v2::check(&client, &w.appid, &w.mch_id, *sign_type).await);
            match &w.refund_tls {
                Some(tls) => {
                    let now = crate::clock::now_ms() / 1000;
                    report.push(refund::certificate(&tls.identity_pem, &w.mch_id, now));
                    let host = match (tls.base_url.host_str(), tls.base_url.port()) {
                        (Some(host), Some(port)) => format!("{host}:{port}"),
                        (host, _) => host.unwrap_or("the refund host").to_owned(),
                    };
                    report.push(refund::handshake(&client, &host).await);
                }
                None => report.push(Check::unproved(
                    CODE_REFUND_CERT,
                    "API certificate (v2 refunds)",
                    "not configured: PayBridge refuses refunds",
                    Some(format!(
                        "to refund, download the API certificate at {} and set wechat.client_cert_file and \
                         client_key_file (or client_p12_file)",
                        places::PAY_API_CERTIFICATE
                    )),
                )),
            }
        }
        PayApi::V3(_) => {
            let metrics = Arc::new(crate::metrics::Metrics::default());
            match crate::wechat::gateway::Gateway::new(w, metrics) {
                Ok(gateway) => {
                    let (client, keys) = gateway.v3().expect("a v3 merchant's gateway is v3");
                    report.checks.extend(v3::check(client, keys, &w.mch_id).await);
                }
                Err(e) => report.push(Check::failed(
                    CODE_V3_REQUEST,
                    "WeChat client",
                    format!("cannot build the HTTPS client: {}", e.without_url()),
                    "report this as a bug: the configuration was valid",
                )),
            }
        }
    }
    if config.mode == crate::config::Mode::Live && scope == Scope::Everything {
        report.checks.extend(site::check(config).await);
    }
    scrub(&mut report, config);
    report
}

/// A check that could not ask WeChat at all (`what`: which host).
fn unreachable(code: &str, name: &str, what: &str, e: &WechatError) -> Check {
    Check::failed(
        code,
        name,
        format!("could not ask {what}: {e}"),
        "let this machine reach WeChat over HTTPS (DNS, firewall, outbound proxy), then run the doctor again",
    )
}

/// SECURITY: no line may carry a configured secret, whatever a reply or an
/// error put in it: each one found is replaced by `***`.
fn scrub(report: &mut Report, config: &Config) {
    let w = &config.wechat;
    let secrets = [w.app_secret.expose(), w.api.token_secret().expose()];
    let hide = |text: &mut String| {
        for secret in secrets.iter().filter(|s| s.len() >= 8) {
            if text.contains(secret) {
                *text = text.replace(secret, "***");
            }
        }
    };
    for check in &mut report.checks {
        hide(&mut check.detail);
        if let Some(fix) = &mut check.fix {
            hide(fix);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_secret_never_leaves_in_a_line() {
        let config = Config::sandbox_default();
        let secret = crate::sandbox::keys::APP_SECRET;
        let key = crate::sandbox::keys::MCH_KEY;
        let mut report = Report::default();
        report.push(Check::failed("login", "login", format!("WeChat echoed {secret}"), format!("not {key}")));
        scrub(&mut report, &config);
        let text = report.text();
        assert!(!text.contains(secret) && !text.contains(key), "{text}");
        assert!(text.contains("WeChat echoed ***") && text.contains("fix: not ***"), "{text}");
    }
}
