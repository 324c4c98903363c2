//! Automatic HTTPS against a real ACME server: Pebble (Debian package
//! `pebble`), with real listeners, a real sled and real TLS clients.

mod common;
#[path = "common/pebble.rs"]
mod pebble;
#[path = "common/process.rs"]
mod process;

use std::path::Path;
use std::time::{Duration, Instant};

use common::start_simulator;
use paybridge::app::{self, Running};
use paybridge::config::Config;
use paybridge::sandbox::SimulatorHandle;
use paybridge::tls::cert::CertInfo;
use pebble::{free_tcp_port, Pebble, PebbleOptions};
use tokio::net::TcpListener;

const DOMAIN: &str = "pay.paybridge.test";

/// The config text of a PayBridge that gets its certificate from `pebble`.
fn config_text(
    data_dir: &Path,
    domains: &[&str],
    http: Option<u16>,
    tls_port: u16,
    pebble: &Pebble,
    sim: &SimulatorHandle,
) -> String {
    let http = match http {
        Some(port) => format!("127.0.0.1:{port}"),
        None => "off".into(),
    };
    format!(
        r#"
data_dir = "{data}"
[http]
listen = "{http}"
[tls]
mode = "acme"
listen = "127.0.0.1:{tls_port}"
domains = {domains:?}
acme_directory = "{directory}"
acme_contact = "ops@paybridge.test"
acme_directory_ca = "{ca}"
acme_retry_schedule_secs = [1, 1, 2]
[metrics]
listen = "127.0.0.1:0"
{wechat}"#,
        data = data_dir.display(),
        directory = pebble.directory,
        ca = pebble.listener_ca.display(),
        wechat = common::wechat_toml(&sim.url()),
    )
}

/// Everything one test needs: Pebble, the simulator, ports and a data directory.
struct Setup {
    /// The listeners, held from the start so no other test takes the ports.
    listeners: std::sync::Mutex<(Option<std::net::TcpListener>, Option<std::net::TcpListener>)>,
    dir: tempfile::TempDir,
    domains: Vec<&'static str>,
    pebble: Pebble,
    sim: SimulatorHandle,
    http_port: Option<u16>,
    tls_port: u16,
}

impl Setup {
    async fn new(with_http: bool, validity_secs: Option<u64>, nonce_reject: u32) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let bind = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let http = with_http.then(bind);
        let tls = bind();
        let http_port = http.as_ref().map(|l| l.local_addr().unwrap().port());
        let tls_port = tls.local_addr().unwrap().port();
        let options = PebbleOptions { http_port: http_port.unwrap_or(1), tls_port, validity_secs, nonce_reject };
        let pebble = Pebble::new(dir.path(), options);
        let listeners = std::sync::Mutex::new((http, Some(tls)));
        Setup { listeners, sim: start_simulator().await, dir, domains: vec![DOMAIN], pebble, http_port, tls_port }
    }

    fn config_path(&self) -> std::path::PathBuf {
        let path = self.dir.path().join("paybridge.toml");
        let data = self.dir.path().join("data");
        let text = config_text(&data, &self.domains, self.http_port, self.tls_port, &self.pebble, &self.sim);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts PayBridge on the held listeners, or (on a restart) on the same ports again.
    async fn start_paybridge(&self) -> Running {
        let config = Config::load(&self.config_path()).unwrap();
        let held = std::mem::take(&mut *self.listeners.lock().unwrap());
        let listener = |held: Option<std::net::TcpListener>, port: u16| {
            let l = held.unwrap_or_else(|| std::net::TcpListener::bind(("127.0.0.1", port)).unwrap());
            l.set_nonblocking(true).unwrap();
            TcpListener::from_std(l).unwrap()
        };
        let http = self.http_port.map(|port| listener(held.0, port));
        let tls = listener(held.1, self.tls_port);
        app::start_with_listeners(config, http, Some(tls)).await.unwrap()
    }

    /// A client that trusts only `root` and reaches DOMAIN at our HTTPS port.
    fn client(&self, root_pem: &str) -> reqwest::Client {
        client_for(root_pem, self.tls_port)
    }

    fn url(&self, path: &str) -> String {
        format!("https://{DOMAIN}:{}{path}", self.tls_port)
    }
}

/// A client that trusts only `root_pem` and finds the test domain on loopback.
fn client_for(root_pem: &str, tls_port: u16) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .resolve(DOMAIN, ([127, 0, 0, 1], tls_port).into())
        .tls_info(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Waits until PayBridge serves a certificate other than `not_serial`.
async fn wait_for_certificate(app: &Running, not_serial: Option<&str>, limit: Duration) -> CertInfo {
    let status = app.tls_status.as_ref().expect("TLS is on");
    let start = Instant::now();
    loop {
        let s = status.get();
        if let Some(cert) = s.certificate.filter(|c| Some(c.serial.as_str()) != not_serial) {
            return cert;
        }
        assert!(start.elapsed() < limit, "no certificate after {limit:?}; status: {:?}", status.get());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the certificate status reports an error; returns the status.
async fn wait_for_failure(app: &Running, limit: Duration) -> paybridge::tls::TlsStatus {
    let status = app.tls_status.as_ref().expect("TLS is on");
    let start = Instant::now();
    loop {
        let s = status.get();
        if s.last_error.is_some() {
            return s;
        }
        assert!(start.elapsed() < limit, "the failure is never reported: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GETs `url` and returns the status and the serial of the certificate served.
async fn get_with_serial(client: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
    let r = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    let der = r
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .ok_or("no peer certificate")?;
    let info = paybridge::tls::cert::info(&der).map_err(|e| e.to_string())?;
    Ok((r.status().as_u16(), info.serial))
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn http01_issuance_is_served_verified_and_reported() {
    let mut setup = Setup::new(true, None, 0).await;
    setup.domains.push("www.paybridge.test");
    setup.pebble.start().await;
    let app = setup.start_paybridge().await;
    let cert = wait_for_certificate(&app, None, Duration::from_secs(60)).await;
    let mut names = cert.names.clone();
    names.sort();
    assert_eq!(names, [DOMAIN, "www.paybridge.test"], "one certificate for every configured name");
    assert!(cert.issuer.contains("Pebble"), "{}", cert.issuer);
    assert_eq!(app.tls_status.as_ref().unwrap().get().challenge.as_deref(), Some("http-01"));

    // A real HTTPS request, verified against Pebble's root only.
    let root = setup.pebble.issuing_root().await;
    let client = setup.client(&root);
    let (status, serial) = get_with_serial(&client, &setup.url("/healthz")).await.unwrap();
    assert_eq!((status, serial), (200, cert.serial.clone()));
    // The API is served over HTTPS; the notify URL defaults to the domain.
    let r = client.get(setup.url("/pay/openid?code=tls-code")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.config.wechat.notify_url.as_str(), format!("https://{DOMAIN}:{}/pay/notify", setup.tls_port));

    // HTTP/2 by ALPN, checked by curl.
    let root_file = setup.dir.path().join("root.pem");
    std::fs::write(&root_file, &root).unwrap();
    let args = [
        "--silent".to_string(),
        "--http2".into(),
        "--cacert".into(),
        root_file.to_str().unwrap().into(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_version}".into(),
        "--resolve".into(),
        format!("{DOMAIN}:{}:127.0.0.1", setup.tls_port),
        setup.url("/healthz"),
    ];
    // curl talks to this very runtime: run it off the runtime's thread.
    let out = tokio::task::spawn_blocking(move || std::process::Command::new("curl").args(args).output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2", "{}", String::from_utf8_lossy(&out.stderr));

    // Plain HTTP redirects to HTTPS (method-preserving 308).
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = plain
        .post(format!("http://127.0.0.1:{}/pay/notify?x=1", setup.http_port.unwrap()))
        .header("host", format!("{DOMAIN}:{}", setup.http_port.unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], format!("https://{DOMAIN}:{}/pay/notify?x=1", setup.tls_port));

    // Account, key and certificate are stored owner-only.
    let tls_dir = setup.dir.path().join("data").join("tls");
    for file in ["account.json", "key.pem", "cert.pem"] {
        assert_eq!(mode(&tls_dir.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&tls_dir), 0o700);

    // `paybridge cert status` reads what the server stored.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paybridge"))
        .args(["cert", "status", "--config", setup.config_path().to_str().unwrap()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    for needle in [DOMAIN, "Pebble", &cert.serial, "next renewal", "last error:    none", "http-01"] {
        assert!(report.contains(needle), "{needle:?} missing from:\n{report}");
    }
    app.stop().await;
}

#[tokio::test]
async fn tls_alpn01_issuance_without_the_plain_listener() {
    let mut setup = Setup::new(false, None, 0).await;
    setup.pebble.start().await;
    let app = setup.start_paybridge().await;
    assert!(app.http_addr.is_none());
    let cert = wait_for_certificate(&app, None, Duration::from_secs(60)).await;
    assert_eq!(app.tls_status.as_ref().unwrap().get().challenge.as_deref(), Some("tls-alpn-01"));
    let client = setup.client(&setup.pebble.issuing_root().await);
    assert_eq!(get_with_serial(&client, &setup.url("/healthz")).await.unwrap(), (200, cert.serial));
    app.stop().await;
}

#[tokio::test]
async fn a_failing_challenge_type_falls_back_to_the_other() {
    let mut setup = Setup::new(true, None, 0).await;
    // Pebble validates HTTP-01 on a port where nothing listens: HTTP-01 fails.
    setup.pebble.options.http_port = free_tcp_port();
    setup.pebble.start().await;
    let app = setup.start_paybridge().await;
    let cert = wait_for_certificate(&app, None, Duration::from_secs(60)).await;
    let status = app.tls_status.as_ref().unwrap().get();
    assert_eq!(status.challenge.as_deref(), Some("tls-alpn-01"));
    assert_eq!(status.failed_validations.len(), 1, "one failed HTTP-01 validation, recorded for the rate guard");
    let client = setup.client(&setup.pebble.issuing_root().await);
    assert_eq!(get_with_serial(&client, &setup.url("/healthz")).await.unwrap(), (200, cert.serial));
    app.stop().await;
}

/// 32 clients open a new TLS connection for every request while the
/// certificate is renewed under them: not one request fails, and the new
/// certificate is served once it is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_certificate_renews_while_clients_connect() {
    let mut setup = Setup::new(true, Some(24), 0).await;
    setup.pebble.start().await;
    let app = setup.start_paybridge().await;
    let first = wait_for_certificate(&app, None, Duration::from_secs(60)).await;
    let root = setup.pebble.issuing_root().await;

    let start = Instant::now();
    let serials = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let (serials, requests) = (serials.clone(), requests.clone());
            let (url, root, port) = (setup.url("/healthz"), root.clone(), setup.tls_port);
            tokio::spawn(async move {
                while start.elapsed() < Duration::from_secs(60) && serials.lock().unwrap().len() < 2 {
                    // A new client: a new connection and handshake.
                    let client = client_for(&root, port);
                    let (status, serial) = get_with_serial(&client, &url).await.expect("no request may fail");
                    assert_eq!(status, 200);
                    requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    serials.lock().unwrap().insert(serial);
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let serials = serials.lock().unwrap().clone();
    let requests = requests.load(std::sync::atomic::Ordering::Relaxed);
    assert!(serials.len() >= 2, "no new serial served after {requests} requests: {serials:?}");
    assert!(serials.contains(&first.serial));
    assert!(requests >= 64, "the renewal happened under load: {requests} requests");
    let renewed = app.tls_status.as_ref().unwrap().get();
    assert!(renewed.last_error.is_none(), "{:?}", renewed.last_error);
    assert!(renewed.next_renewal.unwrap() > renewed.certificate.unwrap().not_before);
    app.stop().await;
}

#[tokio::test]
async fn restart_with_a_stored_certificate_serves_at_once_and_orders_nothing_until_the_directory_changes() {
    let mut setup = Setup::new(true, None, 0).await;
    setup.pebble.start().await;
    let app = setup.start_paybridge().await;
    let cert = wait_for_certificate(&app, None, Duration::from_secs(60)).await;
    app.stop().await;
    let orders = setup.pebble.new_orders();
    assert!(orders >= 1);

    let restarted = time::OffsetDateTime::now_utc();
    let app = setup.start_paybridge().await;
    // Served at once: no waiting for any ACME exchange.
    let client = setup.client(&setup.pebble.issuing_root().await);
    assert_eq!(get_with_serial(&client, &setup.url("/healthz")).await.unwrap(), (200, cert.serial.clone()));
    // Once the renewal task has checked since the restart it has decided: nothing to order now.
    let start = std::time::Instant::now();
    while app.tls_status.as_ref().unwrap().get().checked_at.is_none_or(|t| t < restarted) {
        assert!(start.elapsed() < Duration::from_secs(10), "the renewal task never decided");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(setup.pebble.new_orders(), orders, "no new order while the certificate is good");
    assert_eq!(setup.pebble.log().matches("POST /sign-me-up").count(), 1, "the stored account is reused");
    let status = app.tls_status.as_ref().unwrap().get();
    assert!(status.next_renewal.unwrap() > time::OffsetDateTime::now_utc() + time::Duration::days(30));
    app.stop().await;

    // Another directory (as when moving from staging to production): the
    // stored certificate is served meanwhile, and a new one is ordered there.
    setup.pebble.directory = setup.pebble.directory.replace("127.0.0.1", "localhost");
    let app = setup.start_paybridge().await;
    assert_eq!(get_with_serial(&client, &setup.url("/healthz")).await.unwrap(), (200, cert.serial.clone()));
    let new = wait_for_certificate(&app, Some(&cert.serial), Duration::from_secs(60)).await;
    assert_eq!(setup.pebble.new_orders(), orders + 1);
    assert_eq!(setup.pebble.log().matches("POST /sign-me-up").count(), 2, "an account at the new directory");
    let client = setup.client(&setup.pebble.issuing_root().await);
    assert_eq!(get_with_serial(&client, &setup.url("/healthz")).await.unwrap(), (200, new.serial));
    app.stop().await;
}

#[tokio::test]
async fn certificate_is_obtained_when_pebble_rejects_half_the_nonces() {
    let mut setup = Setup::new(true, None, 50).await;
    setup.pebble.start().await;
    let app = setup.start_paybridge().await;
    let cert = wait_for_certificate(&app, None, Duration::from_secs(90)).await;
    let client = setup.client(&setup.pebble.issuing_root().await);
    assert_eq!(get_with_serial(&client, &setup.url("/healthz")).await.unwrap(), (200, cert.serial));
    assert!(setup.pebble.log().contains("reject 50% of good nonces"));
    app.stop().await;
}

#[tokio::test]
async fn directory_down_at_start_without_a_certificate() {
    let mut setup = Setup::new(true, None, 0).await;
    // PayBridge starts while the CA is unreachable.
    let app = setup.start_paybridge().await;
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let http = format!("http://127.0.0.1:{}", setup.http_port.unwrap());
    let r = plain.get(format!("{http}/.well-known/acme-challenge/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404, "the plain listener is up");
    let r = plain.get(format!("{http}/healthz")).header("host", DOMAIN).send().await.unwrap();
    assert_eq!(r.status(), 308);
    let status = app.tls_status.as_ref().unwrap();
    let reported = wait_for_failure(&app, Duration::from_secs(20)).await;
    assert!(reported.certificate.is_none());
    assert!(reported.last_error.as_deref().unwrap().contains("ACME"), "{:?}", reported.last_error);

    // The CA comes back: the certificate follows.
    setup.pebble.start().await;
    let cert = wait_for_certificate(&app, None, Duration::from_secs(60)).await;
    let client = setup.client(&setup.pebble.issuing_root().await);
    assert_eq!(get_with_serial(&client, &setup.url("/healthz")).await.unwrap(), (200, cert.serial));
    assert!(status.get().last_error.is_none());
    app.stop().await;
}

#[tokio::test]
async fn directory_down_with_a_stored_certificate_due_for_renewal() {
    let mut setup = Setup::new(true, Some(40), 0).await;
    setup.pebble.start().await;
    let app = setup.start_paybridge().await;
    let old = wait_for_certificate(&app, None, Duration::from_secs(60)).await;
    let old_root = setup.pebble.issuing_root().await;
    app.stop().await;
    setup.pebble.stop();

    // Wait until the stored certificate is due for renewal (but still valid).
    let due = paybridge::tls::renewal::renewal_time(old.not_before, old.not_after);
    let wait = (due - time::OffsetDateTime::now_utc()).unsigned_abs() + Duration::from_millis(500);
    tokio::time::sleep(wait).await;

    let app = setup.start_paybridge().await;
    // Served at once with the stored certificate, although the CA is down.
    let client = setup.client(&old_root);
    assert_eq!(get_with_serial(&client, &setup.url("/healthz")).await.unwrap(), (200, old.serial.clone()));
    wait_for_failure(&app, Duration::from_secs(10)).await;
    // Still serving the old certificate while renewal fails.
    assert_eq!(get_with_serial(&client, &setup.url("/healthz")).await.unwrap(), (200, old.serial.clone()));

    // The CA comes back (a fresh Pebble: new root, our account forgotten).
    setup.pebble.start().await;
    let new = wait_for_certificate(&app, Some(&old.serial), Duration::from_secs(60)).await;
    let client = setup.client(&setup.pebble.issuing_root().await);
    assert_eq!(get_with_serial(&client, &setup.url("/healthz")).await.unwrap(), (200, new.serial));
    app.stop().await;
}
