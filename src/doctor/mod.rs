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
                report.push(
                    Check::failed(
                        CODE_CONFIG,
                        "config",
                        e.to_string(),
                        format!(
                            "correct it in {} (or the PAYBRIDGE_… variable it names); WeChat was not asked anything",
                            path.display()
                        ),
                    )
                    // The configuration's own message stays as it is written.
                    .zh(format!("配置文件有误：{e}"))
                    .zh_fix(format!(
                        "在 {} 中改正（或改正它提到的 PAYBRIDGE_… 环境变量）；尚未向微信发出任何请求",
                        path.display()
                    )),
                );
            }
            return report;
        }
    };
    let (mode, api) = (config.mode.as_str(), config.wechat.api.version());
    report.push(
        Check::passed(
            CODE_CONFIG,
            "config",
            format!("{} is valid ({mode} mode, WeChat Pay API {api})", path.display()),
        )
        .zh(format!("{} 有效（{mode} 模式，微信支付 API {api}）", path.display())),
    );
    for warning in config.warnings(Some(path)) {
        let zh = format!("配置警告：{warning}");
        report.push(Check::unproved(CODE_CONFIG_WARNING, "config warning", warning, None).zh(zh));
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
            let why = e.without_url().to_string();
            report.push(
                Check::failed(
                    CODE_CONFIG,
                    "WeChat client",
                    format!("cannot build the HTTPS client: {why}"),
                    "check the client certificate settings (wechat.client_cert_file, client_key_file, secapi_ca_file)",
                )
                .zh(format!("无法建立 HTTPS 客户端：{why}"))
                .zh_fix("检查客户端证书的设置（wechat.client_cert_file、client_key_file、secapi_ca_file）"),
            );
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
                None => report.push(
                    Check::unproved(
                        CODE_REFUND_CERT,
                        "API certificate (v2 refunds)",
                        "not configured: PayBridge refuses refunds",
                        Some(format!(
                            "to refund, download the API certificate at {} and set wechat.client_cert_file and \
                             client_key_file (or client_p12_file)",
                            places::PAY_API_CERTIFICATE
                        )),
                    )
                    .zh("未配置：PayBridge 拒绝退款")
                    .zh_fix(format!(
                        "要退款，请在 {} 下载 API 证书，并设置 wechat.client_cert_file 和 client_key_file（或 \
                         client_p12_file）",
                        places::PAY_API_CERTIFICATE
                    )),
                ),
            }
        }
        PayApi::V3(_) => {
            let metrics = Arc::new(crate::metrics::Metrics::default());
            match crate::wechat::gateway::Gateway::new(w, metrics) {
                Ok(gateway) => {
                    let (client, keys) = gateway.v3().expect("a v3 merchant's gateway is v3");
                    report.checks.extend(v3::check(client, keys, &w.mch_id).await);
                }
                Err(e) => {
                    let why = e.without_url().to_string();
                    report.push(
                        Check::failed(
                            CODE_V3_REQUEST,
                            "WeChat client",
                            format!("cannot build the HTTPS client: {why}"),
                            "report this as a bug: the configuration was valid",
                        )
                        .zh(format!("无法建立 HTTPS 客户端：{why}"))
                        .zh_fix("配置有效却出现此错误：请作为缺陷报告"),
                    )
                }
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
    .zh(format!("无法访问 {what}：{e}"))
    .zh_fix("让本机能通过 HTTPS 访问微信（DNS、防火墙、出站代理），然后再运行一次 doctor")
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
        for text in [&mut check.fix, &mut check.detail_zh, &mut check.fix_zh].into_iter().flatten() {
            hide(text);
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
        report.push(
            Check::failed("login", "login", format!("WeChat echoed {secret}"), format!("not {key}"))
                .zh(format!("微信返回了 {secret}"))
                .zh_fix(format!("不是 {key}")),
        );
        scrub(&mut report, &config);
        let text = report.text();
        assert!(!text.contains(secret) && !text.contains(key), "{text}");
        let check = &report.checks[0];
        assert_eq!((check.detail_zh.as_deref(), check.fix_zh.as_deref()), (Some("微信返回了 ***"), Some("不是 ***")));
        assert!(text.contains("WeChat echoed ***") && text.contains("fix: not ***"), "{text}");
    }
}
