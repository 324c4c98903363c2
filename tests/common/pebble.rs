//! Pebble, Let's Encrypt's test ACME server (Debian package `pebble`), and
//! its DNS companion pebble-challtestsrv, as child processes on free
//! loopback ports, killed when dropped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub use crate::process::free_tcp_port;
use crate::process::ChildGuard;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// How Pebble should behave.
#[derive(Clone)]
pub struct PebbleOptions {
    /// Where PayBridge's plain-HTTP listener is (HTTP-01).
    pub http_port: u16,
    /// Where PayBridge's HTTPS listener is (TLS-ALPN-01).
    pub tls_port: u16,
    /// Certificate lifetime in seconds (short ones test renewal).
    pub validity_secs: Option<u64>,
    /// Percentage of good nonces Pebble rejects.
    pub nonce_reject: u32,
}

/// A running Pebble with its DNS server.
pub struct Pebble {
    pub dir: PathBuf,
    /// The CA PayBridge must trust for the directory's own HTTPS.
    pub listener_ca: PathBuf,
    pub directory: String,
    pub management: String,
    pub options: PebbleOptions,
    listen_port: u16,
    management_port: u16,
    dns_port: u16,
    challtestsrv: Option<ChildGuard>,
    pebble: Option<ChildGuard>,
}

/// Writes a CA and a `localhost`/`127.0.0.1` certificate for Pebble's own listener
/// (Debian ships none).
fn listener_certs(dir: &Path) -> PathBuf {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "PayBridge test CA for Pebble");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &Issuer::from_params(&ca, &ca_key))
        .unwrap();
    std::fs::write(dir.join("listener-cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("listener-key.pem"), key.serialize_pem()).unwrap();
    let ca_path = dir.join("listener-ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    ca_path
}

impl Pebble {
    /// Prepares ports, certificates and config; does not start anything.
    pub fn new(dir: &Path, options: PebbleOptions) -> Pebble {
        let listener_ca = listener_certs(dir);
        let listen_port = free_tcp_port();
        let management_port = free_tcp_port();
        Pebble {
            dir: dir.to_owned(),
            listener_ca,
            directory: format!("https://127.0.0.1:{listen_port}/dir"),
            management: format!("https://127.0.0.1:{management_port}"),
            options,
            listen_port,
            management_port,
            dns_port: free_udp_port(),
            challtestsrv: None,
            pebble: None,
        }
    }

    /// Starts (or restarts) challtestsrv and Pebble and waits for the directory.
    pub async fn start(&mut self) {
        let mut config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{}", self.listen_port),
            "managementListenAddress": format!("127.0.0.1:{}", self.management_port),
            "certificate": self.dir.join("listener-cert.pem"),
            "privateKey": self.dir.join("listener-key.pem"),
            "httpPort": self.options.http_port,
            "tlsPort": self.options.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if let Some(secs) = self.options.validity_secs {
            config["pebble"]["certificateValidityPeriod"] = secs.into();
        }
        let config_path = self.dir.join("pebble-config.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let dns = format!("127.0.0.1:{}", self.dns_port);
        self.challtestsrv = Some(ChildGuard::spawn(Command::new("pebble-challtestsrv").args([
            "-dns01",
            &dns,
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            &format!("127.0.0.1:{}", free_tcp_port()),
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
        ])));
        self.pebble = Some(ChildGuard::spawn(
            Command::new("pebble")
                .args(["-config", config_path.to_str().unwrap(), "-dnsserver", &dns])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", self.options.nonce_reject.to_string())
                .env("PEBBLE_AUTHZREUSE", "0"),
        ));
        let client = self.client();
        let start = Instant::now();
        loop {
            if let Ok(r) = client.get(&self.directory).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(20), "Pebble did not start: {}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops both processes.
    pub fn stop(&mut self) {
        self.pebble = None;
        self.challtestsrv = None;
    }

    /// A client that trusts Pebble's listener.
    fn client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&self.listener_ca).unwrap()).unwrap();
        reqwest::Client::builder().add_root_certificate(ca).tls_built_in_root_certs(false).build().unwrap()
    }

    /// The root that issues PayBridge's certificates (new at every Pebble start).
    pub async fn issuing_root(&self) -> String {
        let r = self.client().get(format!("{}/roots/0", self.management)).send().await.unwrap();
        r.text().await.unwrap()
    }

    /// Pebble's log so far.
    pub fn log(&self) -> String {
        self.pebble.as_ref().map(ChildGuard::output).unwrap_or_default()
    }

    /// How many orders Pebble has been asked for.
    pub fn new_orders(&self) -> usize {
        self.log().matches("POST /order-plz").count()
    }
}
