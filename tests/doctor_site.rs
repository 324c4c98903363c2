//! `paybridge doctor`'s checks of this server (live mode): the certificate
//! PayBridge serves (from its TLS status), the notify URL's form, whether it
//! answers as PayBridge (a real PayBridge on 127.0.0.1, and things that are
//! not), and the domain's addresses against this machine's.

mod common;

use common::{Env, Opts};
use paybridge::checkup::{Outcome, Report};
use paybridge::config::{Config, TlsMode};
use paybridge::doctor::Scope;
use paybridge::tls::cert::CertInfo;
use paybridge::tls::StatusHandle;

fn find<'a>(report: &'a Report, code: &str) -> &'a paybridge::checkup::Check {
    let text = report.text();
    report.checks.iter().find(|c| c.code == code).unwrap_or_else(|| panic!("no {code} in:\n{text}"))
}

fn assert_line(report: &Report, code: &str, outcome: Outcome, says: &str) {
    let check = find(report, code);
    assert_eq!(check.outcome, outcome, "{code}:\n{}", report.text());
    assert!(check.detail.contains(says), "{code} should say {says:?}:\n{}", report.text());
}

/// The doctor's report; every line of it comes in Chinese too (the admin page in 中文).
async fn run(config: &Config) -> Report {
    let report = paybridge::doctor::check(config, Scope::Everything).await;
    for check in &report.checks {
        assert!(check.has_zh(), "{} has no Chinese: {check:?}", check.code);
    }
    report
}

#[tokio::test]
async fn the_notify_url_reaches_paybridge_or_the_line_says_what_it_reached() {
    let env = Env::start(Opts::default()).await;
    // The test's PayBridge: plain HTTP on loopback. It answers as PayBridge,
    // but WeChat could reach neither the scheme nor the address.
    let report = run(&env.app.config).await;
    let url = env.app.config.wechat.notify_url.to_string();
    assert_line(&report, "notify_endpoint", Outcome::Passed, &format!("PayBridge answers at {url}"));
    assert_line(&report, "notify_url", Outcome::Failed, "is not https://");
    assert_line(&report, "dns", Outcome::Failed, "cannot reach a loopback or private address");
    assert_line(&report, "https_certificate", Outcome::Unproved, "plain HTTP");
    assert!(report.failed());

    // Something else answers there (the simulator), or nothing does.
    let mut elsewhere = env.app.config.clone();
    elsewhere.wechat.notify_url = format!("{}/pay/notify", env.sim.url()).parse().unwrap();
    assert_line(&run(&elsewhere).await, "notify_endpoint", Outcome::Failed, "but not as PayBridge does");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    elsewhere.wechat.notify_url = format!("https://{closed}/pay/notify").parse().unwrap();
    let report = run(&elsewhere).await;
    assert_line(&report, "notify_endpoint", Outcome::Failed, "did not answer");
    assert_line(&report, "notify_url", Outcome::Passed, "https, on this server's domain");
    env.stop().await;
}

#[tokio::test]
async fn paybridge_answers_a_get_of_its_notify_path_with_its_marker_and_changes_nothing() {
    let env = Env::start(Opts::default()).await;
    let before = env.app.store.notify_log_size().unwrap();
    let r = env.http.get(format!("{}/pay/notify", env.base)).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()[paybridge::http::notify::MARKER_HEADER], "1");
    assert_eq!(r.headers()["allow"], "POST");
    assert_eq!(r.text().await.unwrap(), "PayBridge: WeChat Pay notifies are POSTed here\n");
    assert_eq!(env.app.store.notify_log_size().unwrap(), before, "nothing recorded");
    env.stop().await;
}

#[tokio::test]
async fn the_served_certificate_is_read_from_the_tls_status() {
    let env = Env::start(Opts::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = env.app.config.clone();
    config.data_dir = dir.path().to_owned();
    config.tls.mode = TlsMode::Acme;
    config.tls.domains = vec!["pay.example.com".into()];
    assert_line(&run(&config).await, "https_certificate", Outcome::Unproved, "has PayBridge run?");

    std::fs::create_dir_all(dir.path().join("tls")).unwrap();
    let status = StatusHandle::open(dir.path(), "acme", &config.tls.domains);
    let now = time::OffsetDateTime::now_utc();
    let set = |names: &[&str], days: i64| {
        status.update(|s| {
            s.certificate = Some(CertInfo {
                not_before: now - time::Duration::days(30),
                not_after: now + time::Duration::days(days),
                issuer: "C=US, O=Let's Encrypt, CN=R11".into(),
                serial: "03ab".into(),
                names: names.iter().map(|n| n.to_string()).collect(),
            })
        })
    };
    set(&["pay.example.com"], 60);
    assert_line(&run(&config).await, "https_certificate", Outcome::Passed, "issued by C=US, O=Let's Encrypt, CN=R11");
    set(&["pay.example.com"], 5);
    assert_line(&run(&config).await, "https_certificate", Outcome::Unproved, "renewal is late");
    set(&["pay.example.com"], -2);
    assert_line(&run(&config).await, "https_certificate", Outcome::Failed, "expired on");
    set(&["old.example.com"], 60);
    assert_line(&run(&config).await, "https_certificate", Outcome::Failed, "does not name [\"pay.example.com\"]");
    config.tls.mode = TlsMode::SelfSigned;
    assert_line(&run(&config).await, "https_certificate", Outcome::Failed, "self-signed");

    // A notify URL off the configured domain.
    config.tls.mode = TlsMode::Acme;
    config.wechat.notify_url = "https://other.example.com/pay/notify".parse().unwrap();
    let report = run(&config).await;
    assert_line(&report, "notify_url", Outcome::Failed, "is not on this server's domain (pay.example.com)");
    assert!(find(&report, "notify_url").fix.as_deref().unwrap().contains("[tls] domains"));
    env.stop().await;
}

#[tokio::test]
async fn a_domain_elsewhere_is_not_proved_and_a_loopback_one_fails() {
    let env = Env::start(Opts::default()).await;
    let mut config = env.app.config.clone();
    // A public address that is not this machine's (TEST-NET-3): behind NAT
    // that is right, so it is not proved rather than failed.
    config.wechat.notify_url = "https://203.0.113.7/pay/notify".parse().unwrap();
    config.wechat.timeout = std::time::Duration::from_millis(300);
    let report = run(&config).await;
    assert_line(
        &report,
        "dns",
        Outcome::Unproved,
        "names an address, not a domain: 203.0.113.7, not an address of this machine",
    );
    config.wechat.notify_url = "https://localhost/pay/notify".parse().unwrap();
    assert_line(&run(&config).await, "dns", Outcome::Failed, "cannot reach a loopback or private address");
    env.stop().await;
}

/// The admin page's System view runs the same doctor for the running
/// configuration: behind a session and the CSRF token, at most once per 10 s.
#[tokio::test]
async fn the_admin_api_runs_the_doctor_for_the_running_config_once_per_10_s() {
    let env = Env::start(Opts { client_cert: common::ClientCert::Pem, ..Opts::default() }).await;
    let admin = common::login(&env).await;
    let url = format!("{}/admin/api/system/checkup", env.base);
    assert_eq!(admin.http.post(&url).send().await.unwrap().status(), 403, "a change needs the CSRF token");
    assert!(env.sim.simulator.calls().is_empty());

    let r = admin.http.post(&url).header("x-csrf-token", &admin.csrf).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    let outcome = |code: &str| {
        let check = body["checks"].as_array().unwrap().iter().find(|c| c["code"] == code);
        check.unwrap_or_else(|| panic!("no {code}: {text}"))["outcome"].as_str().unwrap().to_owned()
    };
    for code in ["login", "v2_key", "refund_certificate", "refund_tls", "notify_endpoint"] {
        assert_eq!(outcome(code), "passed", "{code}: {text}");
    }
    assert_eq!(outcome("notify_url"), "failed", "plain HTTP on loopback: {text}");
    assert_eq!(body["failed"], true);
    for secret in [common::APP_SECRET, common::MCH_KEY, "PRIVATE KEY"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let calls = env.sim.simulator.calls();
    assert_eq!(calls.values().sum::<u64>(), 3, "{calls:?}");
    assert!(calls.values().all(|n| *n == 1), "{calls:?}");

    let r = admin.http.post(&url).header("x-csrf-token", &admin.csrf).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.text().await.unwrap().contains("less than 10 s ago"));
    assert_eq!(env.sim.simulator.calls(), calls, "no second run");
    env.stop().await;
}
