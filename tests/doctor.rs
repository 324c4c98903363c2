//! `paybridge doctor` against the simulator: a healthy merchant passes
//! every check with one WeChat call each; each wrong credential (the
//! simulator knows the right one, PayBridge is given a wrong one) fails
//! its own line, with the fix that names where to set it; nothing secret
//! is printed; the exit code says whether anything failed. Every line
//! also comes in Chinese, for the admin page in 中文.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{client_cert_toml, config_text, start_simulator, Api, ClientCert, Opts, APP_SECRET, MCH_ID, MCH_KEY};
use paybridge::checkup::{Outcome, Report};
use paybridge::doctor::Scope;
use paybridge::sandbox::v3::{self as sim_keys, KeyMode};
use paybridge::sandbox::SimulatorHandle;
use paybridge::wechat::sign::SignType;

/// A private key the sandbox merchant's certificate is not for.
const OTHER_PRIVATE_KEY: &str = include_str!("../src/sandbox/keys/platform-cert-private.pem");

/// A live config file for the simulator's merchant in `dir`, changed by
/// `edit`: owner-only (else check-config warns), notify URL on https.
fn config_file(dir: &Path, sim: &SimulatorHandle, opts: &Opts, edit: impl Fn(String) -> String) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let mut text = config_text(&dir.join("data"), "127.0.0.1:1", &sim.url(), opts);
    text = text.replace(
        "notify_url = \"http://127.0.0.1:1/pay/notify\"",
        "notify_url = \"https://pay.example.com/pay/notify\"",
    );
    if opts.client_cert != ClientCert::None {
        text = text.replacen("[wechat]\n", &format!("[wechat]\n{}", client_cert_toml(dir, sim, opts.client_cert)), 1);
    }
    let path = dir.join("paybridge.toml");
    std::fs::write(&path, edit(text)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn v2(sign_type: SignType) -> Opts {
    Opts { sign_type, accept_client_amount: false, client_cert: ClientCert::Pem, ..Opts::default() }
}

fn v3(public_key: bool, certificates: bool) -> Opts {
    Opts { api: Api::V3 { public_key, certificates }, accept_client_amount: false, ..Opts::default() }
}

/// The outcome of the check `code`; panics (with the report) if it did not run.
fn outcome(report: &Report, code: &str) -> Outcome {
    let check = report.checks.iter().find(|c| c.code == code);
    check.unwrap_or_else(|| panic!("no {code} check in:\n{}", report.text())).outcome
}

/// Asserts the check `code` failed, its line says `detail` and its fix `fix`.
fn assert_failed(report: &Report, code: &str, detail: &str, fix: &str) {
    let text = report.text();
    let check = report.checks.iter().find(|c| c.code == code).unwrap_or_else(|| panic!("no {code} in:\n{text}"));
    assert_eq!(check.outcome, Outcome::Failed, "{code}:\n{text}");
    assert!(check.detail.contains(detail), "{code} should say {detail:?}:\n{text}");
    assert!(check.fix.as_deref().unwrap_or("").contains(fix), "{code}'s fix should say {fix:?}:\n{text}");
}

/// Asserts every line of `report` has its Chinese, fix included.
fn assert_all_in_chinese(report: &Report) {
    for check in &report.checks {
        assert!(check.has_zh(), "{} has no Chinese: {check:?}", check.code);
        let zh = check.detail_zh.as_deref().unwrap_or("");
        assert!(zh.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)), "{} is not Chinese: {zh}", check.code);
    }
}

fn calls(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Runs the doctor on a config made by `opts` and `edit`, against a fresh simulator set up by `prepare`.
async fn doctor(
    opts: Opts,
    prepare: impl FnOnce(&SimulatorHandle),
    edit: impl Fn(String) -> String,
) -> (Report, BTreeMap<String, u64>) {
    let sim = start_simulator().await;
    prepare(&sim);
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), &sim, &opts, edit);
    let report = paybridge::doctor::check_file(&path, Scope::Credentials).await;
    let calls = sim.simulator.calls();
    sim.stop().await;
    assert_all_in_chinese(&report);
    (report, calls)
}

#[tokio::test]
async fn a_healthy_v2_merchant_passes_every_check_with_one_call_each() {
    for sign_type in [SignType::Md5, SignType::HmacSha256] {
        let (report, calls_made) = doctor(v2(sign_type), |_| {}, |t| t).await;
        let text = report.text();
        assert!(report.checks.iter().all(|c| c.outcome == Outcome::Passed), "{text}");
        let codes: Vec<&str> = report.checks.iter().map(|c| c.code.as_str()).collect();
        assert_eq!(codes, ["config", "login", "v2_key", "refund_certificate", "refund_tls"], "{text}");
        assert!(text.contains(&format!("API v2 key ({})", sign_type.as_str())), "{text}");
        assert!(text.contains("40029 invalid code") && text.contains("ORDERNOTEXIST"), "{text}");
        assert_eq!(calls_made, calls(&[("jscode2session", 1), ("pay/orderquery", 1), ("secapi/pay/refund", 1)]));
    }
}

#[tokio::test]
async fn a_wrong_app_secret_or_appid_fails_the_login_with_where_to_find_them() {
    let (report, calls_made) =
        doctor(v2(SignType::Md5), |_| {}, |t| t.replace(APP_SECRET, "an-old-app-secret-0123456789")).await;
    assert_failed(&report, "login", "40125 invalid appsecret", "mp.weixin.qq.com → 开发管理 → 开发设置");
    assert!(report.checks.iter().find(|c| c.code == "login").unwrap().fix.as_ref().unwrap().contains("AppSecret"));
    assert_eq!(outcome(&report, "v2_key"), Outcome::Passed, "the other checks still run");
    assert_eq!(calls_made["jscode2session"], 1);

    let (report, _) = doctor(v2(SignType::Md5), |_| {}, |t| t.replace(common::APPID, "wx0123456789abcdef")).await;
    assert_failed(&report, "login", "40013", "AppID(小程序ID)");
}

#[tokio::test]
async fn a_wrong_api_v2_key_fails_with_the_sign_type_and_where_to_set_it() {
    for sign_type in [SignType::Md5, SignType::HmacSha256] {
        let (report, calls_made) =
            doctor(v2(sign_type), |_| {}, |t| t.replace(MCH_KEY, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")).await;
        assert_failed(&report, "v2_key", "签名错误", "账户中心 → API安全 → APIv2密钥");
        assert!(report.text().contains(&format!("signed with wechat.mch_key ({})", sign_type.as_str())));
        assert_eq!(outcome(&report, "login"), Outcome::Passed);
        assert_eq!(calls_made["pay/orderquery"], 1);
    }
    // A merchant number WeChat does not know.
    let (report, _) = doctor(v2(SignType::Md5), |_| {}, |t| t.replace(MCH_ID, "10000999")).await;
    assert_failed(&report, "v2_key", "mch_id", "商户信息 → 微信支付商户号");
}

#[tokio::test]
async fn an_expired_api_certificate_fails_the_refund_checks() {
    let now = time::OffsetDateTime::now_utc();
    let swap =
        |sim: &SimulatorHandle, cn: &str, from, until| sim.simulator.merchant_tls().client_certificate(cn, from, until);

    // Expired yesterday: the certificate line says so, and the refund host refuses it in the handshake.
    let sim = start_simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), &sim, &v2(SignType::Md5), |t| t);
    let (cert, key) = swap(&sim, MCH_ID, now - time::Duration::days(400), now - time::Duration::days(1));
    std::fs::write(dir.path().join("apiclient_cert.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("apiclient_key.pem"), &key).unwrap();
    let report = paybridge::doctor::check_file(&path, Scope::Credentials).await;
    assert_failed(&report, "refund_certificate", "expired on", "商户API证书");
    assert_failed(&report, "refund_tls", "refused the API certificate", "商户API证书");
    assert!(report.text().contains("CertificateExpired"), "TLS's reason: {}", report.text());
    assert!(!report.text().contains("PRIVATE KEY"));

    // Ten days left: a warning, and the handshake works.
    let (cert, key) = swap(&sim, MCH_ID, now - time::Duration::days(355), now + time::Duration::days(10));
    std::fs::write(dir.path().join("apiclient_cert.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("apiclient_key.pem"), &key).unwrap();
    let report = paybridge::doctor::check_file(&path, Scope::Credentials).await;
    assert_eq!(outcome(&report, "refund_certificate"), Outcome::Unproved, "{}", report.text());
    assert!(report.text().contains("in 9 days") || report.text().contains("in 10 days"), "{}", report.text());
    assert_eq!(outcome(&report, "refund_tls"), Outcome::Passed, "{}", report.text());

    // Another merchant's certificate.
    let (cert, key) = swap(&sim, "1230000109", now - time::Duration::days(1), now + time::Duration::days(300));
    std::fs::write(dir.path().join("apiclient_cert.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("apiclient_key.pem"), &key).unwrap();
    let report = paybridge::doctor::check_file(&path, Scope::Credentials).await;
    assert_failed(&report, "refund_certificate", "not 10000100's", "apiclient_cert.pem");
    // WeChat documents no TLS refusal of another merchant's certificate (nor
    // does the simulator make one up): the line above is what catches it.
    assert_eq!(outcome(&report, "refund_tls"), Outcome::Passed, "{}", report.text());
    assert_all_in_chinese(&report);
    sim.stop().await;
}

#[tokio::test]
async fn a_healthy_v3_merchant_passes_with_one_call_each() {
    let v3_calls =
        calls(&[("GET /v3/certificates", 1), ("GET /v3/pay/transactions/out-trade-no", 1), ("jscode2session", 1)]);
    // WeChat Pay public key, and the platform certificates kept since the
    // switch: decrypting them proves the APIv3 key.
    let (report, calls_made) = doctor(v3(true, false), |_| {}, |t| t).await;
    let text = report.text();
    assert!(report.checks.iter().all(|c| c.outcome == Outcome::Passed), "{text}");
    assert!(text.contains("404 ORDER_NOT_EXIST") && text.contains("PUB_KEY_ID_"), "{text}");
    assert!(text.contains("decrypted the platform certificate list") && text.contains("verifies with the public key"));
    assert_eq!(calls_made, v3_calls);

    // A merchant with the public key only (new since 2024): WeChat has no
    // certificates to send, so the APIv3 key waits for the first notify.
    let no_certificates = |sim: &SimulatorHandle| sim.simulator.v3().set_platform_certificates(false);
    let (report, calls_made) = doctor(v3(true, false), no_certificates, |t| t).await;
    let text = report.text();
    for code in ["config", "login", "v3_request", "v3_reply"] {
        assert_eq!(outcome(&report, code), Outcome::Passed, "{code}:\n{text}");
    }
    assert_eq!(outcome(&report, "apiv3_key"), Outcome::Unproved, "{text}");
    assert!(!report.failed(), "{text}");
    assert!(
        text.contains("no platform certificates for this merchant (RESOURCE_NOT_EXISTS 无可用的平台证书"),
        "{text}"
    );
    assert!(text.contains("next: the first notify proves it"), "{text}");
    assert_eq!(calls_made, v3_calls);

    // Platform certificates: their download proves the APIv3 key, and verifies the query's reply.
    let certificates = |sim: &SimulatorHandle| sim.simulator.v3().set_key_mode(KeyMode::Certificates);
    let (report, calls_made) = doctor(v3(false, true), certificates, |t| t).await;
    let text = report.text();
    assert!(report.checks.iter().all(|c| c.outcome == Outcome::Passed), "{text}");
    assert!(
        text.contains("decrypted the platform certificate list") && text.contains("platform certificate "),
        "{text}"
    );
    assert_eq!(calls_made, v3_calls);
}

#[tokio::test]
async fn a_wrong_v3_serial_or_private_key_is_named() {
    let (report, _) = doctor(
        v3(true, false),
        |_| {},
        |t| t.replace(sim_keys::MERCHANT_SERIAL, "1234567890ABCDEF1234567890ABCDEF12345678"),
    )
    .await;
    assert_failed(&report, "v3_request", "WeChat knows no API certificate 1234567890ABCDEF", "证书序列号");
    assert_eq!(outcome(&report, "v3_reply"), Outcome::Unproved, "a refused request's answer is not signed");

    let other_key = |t: String| {
        let path = t.split("merchant_key_file = \"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        std::fs::write(&path, OTHER_PRIVATE_KEY).unwrap();
        t
    };
    let (report, _) = doctor(v3(true, false), |_| {}, other_key).await;
    assert_failed(&report, "v3_request", "merchant_key_file is not that certificate's private key", "商户API证书");
    let text = report.text();
    assert!(!text.contains("PRIVATE KEY") && !text.contains("MII"), "{text}");
}

#[tokio::test]
async fn a_public_key_of_another_merchant_or_another_migration_state_is_named() {
    // Another merchant's public key and id.
    let other_id = "PUB_KEY_ID_0000000000000000000000000000000002";
    let another = |t: String| {
        let path = t.split("public_key_file = \"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        std::fs::write(&path, sim_keys::MERCHANT_PUBLIC_KEY).unwrap();
        t.replace(sim_keys::WECHATPAY_PUBLIC_KEY_ID, other_id)
    };
    let (report, _) = doctor(v3(true, false), |_| {}, another).await;
    assert_failed(&report, "v3_reply", "belongs to another merchant", "API安全 → 微信支付公钥");
    assert_eq!(outcome(&report, "v3_request"), Outcome::Unproved, "not proved by an unverified reply");

    // The right id, another key in the file.
    let wrong_file = |t: String| {
        let path = t.split("public_key_file = \"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        std::fs::write(&path, sim_keys::MERCHANT_PUBLIC_KEY).unwrap();
        t
    };
    let (report, _) = doctor(v3(true, false), |_| {}, wrong_file).await;
    assert_failed(&report, "v3_reply", "does not verify with wechat.public_key_file", "微信支付公钥");

    // WeChat still signs with certificates; PayBridge has only the public key.
    let certificates = |sim: &SimulatorHandle| sim.simulator.v3().set_key_mode(KeyMode::Certificates);
    let (report, _) = doctor(v3(true, false), certificates, |t| t).await;
    assert_failed(&report, "v3_reply", "has not (fully) switched", "platform_certificates = true");

    // WeChat has switched to the public key; PayBridge has only certificates.
    let (report, calls_made) = doctor(v3(false, true), |_| {}, |t| t).await;
    assert_failed(&report, "v3_reply", "the switch to the WeChat Pay public key has begun", "微信支付公钥");
    assert_eq!(outcome(&report, "apiv3_key"), Outcome::Unproved, "its download's reply did not verify either");
    assert_eq!(calls_made["GET /v3/certificates"], 1);
}

#[tokio::test]
async fn a_wrong_apiv3_key_fails_where_the_certificates_prove_it() {
    let certificates = |sim: &SimulatorHandle| sim.simulator.v3().set_key_mode(KeyMode::Certificates);
    let wrong = "0123456789abcdef0123456789ABCDEF";
    let (report, _) = doctor(v3(false, true), certificates, |t| t.replace(sim_keys::APIV3_KEY, wrong)).await;
    assert_failed(&report, "apiv3_key", "do not decrypt with wechat.apiv3_key", "API安全 → APIv3密钥");
    // The reply is signed with a certificate the download could not bring: the APIv3 key is the culprit.
    assert_eq!(outcome(&report, "v3_reply"), Outcome::Unproved, "{}", report.text());
    assert!(report.text().contains("see the APIv3 key line"), "{}", report.text());
    assert!(!report.text().contains(wrong), "{}", report.text());

    // Public-key mode, the certificates kept: the same ✗, the rest proved.
    let (report, calls_made) = doctor(v3(true, false), |_| {}, |t| t.replace(sim_keys::APIV3_KEY, wrong)).await;
    assert_failed(&report, "apiv3_key", "do not decrypt with wechat.apiv3_key", "API安全 → APIv3密钥");
    let check = report.checks.iter().find(|c| c.code == "apiv3_key").unwrap();
    assert!(check.fix_zh.as_deref().unwrap().contains("重新设置 APIv3 密钥"), "{check:?}");
    for code in ["v3_request", "v3_reply"] {
        assert_eq!(outcome(&report, code), Outcome::Passed, "{code}:\n{}", report.text());
    }
    assert!(!report.text().contains(wrong), "{}", report.text());
    assert_eq!(calls_made["GET /v3/certificates"], 1);
}

#[tokio::test]
async fn an_invalid_config_stops_before_any_wechat_call() {
    let (report, calls_made) = doctor(v2(SignType::Md5), |_| {}, |t| t.replace(MCH_ID, "not-a-number")).await;
    assert_failed(&report, "config", "wechat.mch_id", "paybridge.toml");
    assert_eq!(report.checks.len(), 1, "{}", report.text());
    assert!(calls_made.is_empty(), "{calls_made:?}");
}

/// The binary: exit 0 and ✓ lines when all is right; exit 1 naming the
/// failures otherwise; no secret, right or wrong, on stdout or stderr.
#[tokio::test]
async fn the_binary_prints_the_report_and_exits_non_zero_on_a_failure() {
    let sim = start_simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let run = |path: PathBuf| async move {
        // Off the runtime's thread: the simulator answers on it meanwhile.
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_paybridge"))
                .args(["doctor", "--credentials-only", "--config", path.to_str().unwrap()])
                .env("PAYBRIDGE_LOG", "debug")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let healthy = config_file(dir.path(), &sim, &v2(SignType::HmacSha256), |t| t);
    let (code, stdout, stderr) = run(healthy).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("✓ ")).count(), 5, "{stdout}");
    assert!(stdout.ends_with("5 passed, 0 failed, 0 not proved\n"), "{stdout}");
    assert!(!stdout.contains(APP_SECRET) && !stdout.contains(MCH_KEY) && !stderr.contains(MCH_KEY), "{stdout}");

    let (wrong_secret, wrong_key) = ("an-old-app-secret-0123456789", "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB");
    let broken = config_file(dir.path(), &sim, &v2(SignType::Md5), |t| {
        t.replace(APP_SECRET, wrong_secret).replace(MCH_KEY, wrong_key)
    });
    let (code, stdout, stderr) = run(broken).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("✗ ")).count(), 2, "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("    fix: ")).count(), 2, "{stdout}");
    assert!(stderr.contains("2 check(s) failed"), "{stderr}");
    for secret in [APP_SECRET, MCH_KEY, wrong_secret, wrong_key, "PRIVATE KEY"] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "{secret} printed:\n{stdout}{stderr}");
    }

    // A file that does not parse: exit 1, and WeChat was never asked.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[wechat\n").unwrap();
    let before = sim.simulator.calls();
    let (code, stdout, _) = run(bad).await;
    assert_eq!(code, Some(1));
    assert!(stdout.starts_with("✗ config: config file"), "{stdout}");
    assert_eq!(sim.simulator.calls(), before);
    sim.stop().await;
}
