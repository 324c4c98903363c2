//! HTTPS without a CA: operator-supplied files (reloaded when they change)
//! and self-signed certificates.

mod common;

use std::time::{Duration, Instant};

use common::start_simulator;
use paybridge::app;
use paybridge::config::Config;
use paybridge::tls::cert;
use tokio::net::TcpListener;

async fn start(mode_lines: &str, dir: &std::path::Path) -> (app::Running, paybridge::sandbox::SimulatorHandle) {
    let sim = start_simulator().await;
    let text = format!(
        r#"
data_dir = "{data}"
[http]
listen = "off"
[tls]
listen = "127.0.0.1:0"
domains = ["files.paybridge.test"]
{mode_lines}
[metrics]
listen = "127.0.0.1:0"
{wechat}"#,
        data = dir.join("data").display(),
        wechat = common::wechat_toml(&sim.url()),
    );
    let config = Config::from_toml(&text, std::path::Path::new("t.toml"), std::iter::empty()).unwrap();
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    (app::start_with_listeners(config, None, Some(tls)).await.unwrap(), sim)
}

/// The serial of the certificate served at `addr`.
async fn served_serial(addr: std::net::SocketAddr) -> String {
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .http1_only()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let r = client.get(format!("https://{addr}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let der = r.extensions().get::<reqwest::tls::TlsInfo>().unwrap().peer_certificate().unwrap().to_vec();
    cert::info(&der).unwrap().serial
}

#[tokio::test]
async fn files_mode_reloads_a_replaced_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("chain.pem"), dir.path().join("key.pem"));
    let first = cert::self_signed(&["files.paybridge.test".into()]).unwrap();
    std::fs::write(&cert_file, &first.chain_pem).unwrap();
    std::fs::write(&key_file, &first.key_pem).unwrap();
    let lines =
        format!("mode = \"files\"\ncert_file = \"{}\"\nkey_file = \"{}\"", cert_file.display(), key_file.display());
    let (app, sim) = start(&lines, dir.path()).await;
    assert_eq!(served_serial(app.addr).await, first.info.serial);

    // A broken replacement is reported and the current certificate kept.
    std::fs::write(&cert_file, "not a certificate").unwrap();
    let status = app.tls_status.clone().unwrap();
    let start = Instant::now();
    while status.get().last_error.is_none() {
        assert!(start.elapsed() < Duration::from_secs(10), "the broken file is never reported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served_serial(app.addr).await, first.info.serial);

    // A valid replacement is served without a restart.
    let second = cert::self_signed(&["files.paybridge.test".into()]).unwrap();
    std::fs::write(&key_file, &second.key_pem).unwrap();
    std::fs::write(&cert_file, &second.chain_pem).unwrap();
    let start = Instant::now();
    while served_serial(app.addr).await != second.info.serial {
        assert!(start.elapsed() < Duration::from_secs(10), "the new certificate is never served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(status.get().last_error.is_none());
    app.stop().await;
    sim.stop().await;
}

#[tokio::test]
async fn files_mode_refuses_to_start_with_unusable_files() {
    let dir = tempfile::tempdir().unwrap();
    let lines = "mode = \"files\"\ncert_file = \"/nonexistent/chain.pem\"\nkey_file = \"/nonexistent/key.pem\"";
    let sim = start_simulator().await;
    let text = format!(
        "data_dir = \"{}\"\n[http]\nlisten = \"off\"\n[tls]\nlisten = \"127.0.0.1:0\"\n{lines}\n{}notify_url = \"https://x.test/pay/notify\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        dir.path().join("data").display(),
        common::wechat_toml(&sim.url())
    );
    let config = Config::from_toml(&text, std::path::Path::new("t.toml"), std::iter::empty()).unwrap();
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = app::start_with_listeners(config, None, Some(tls)).await.err().unwrap().to_string();
    assert!(err.contains("tls.cert_file") && err.contains("/nonexistent/chain.pem"), "{err}");
    sim.stop().await;
}

#[tokio::test]
async fn self_signed_mode_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (app, sim) = start("mode = \"self-signed\"", dir.path()).await;
    let serial = served_serial(app.addr).await;
    let status = app.tls_status.as_ref().unwrap().get();
    let served = status.certificate.unwrap();
    assert_eq!(served.serial, serial);
    assert_eq!(served.names, ["files.paybridge.test"]);
    app.stop().await;
    sim.stop().await;
}
