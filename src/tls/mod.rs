//! HTTPS: the certificate (ACME, files or self-signed), the rustls config
//! that serves it, and the status operators see.
//!
//! - [`resolver`]: the hot-swappable certificate and the challenge answers.
//! - [`acme`]: obtaining and renewing from Let's Encrypt (or any ACME CA).
//! - [`files`]: operator-supplied PEM files, reloaded on change.
//! - [`cert`]: PEM, certificate facts, private files.
//! - [`renewal`]: when to renew and how to back off (pure).
//! - [`status`]: what `paybridge cert status` shows.

pub mod acme;
pub mod cert;
pub mod files;
pub mod renewal;
pub mod resolver;
pub mod settings;
pub mod status;

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring;
use rustls::ServerConfig;

pub use resolver::{CertResolver, HttpChallenges, ACME_TLS_ALPN};
pub use status::{StatusHandle, TlsStatus};

use settings::{TlsConfig, TlsMode};

/// The rustls server configuration: TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 by
/// ALPN, plus `acme-tls/1` for TLS-ALPN-01 challenges.
pub fn server_config(resolver: Arc<CertResolver>) -> Arc<ServerConfig> {
    // AES-128-GCM with SHA-256 first, chosen by us rather than the client:
    // as secure for this use, and SHA-256 runs on the CPU's SHA extensions
    // where SHA-384 does not; the profile of new connections showed SHA-384
    // (HKDF over the handshake) as their largest cost.
    let mut provider = ring::default_provider();
    provider.cipher_suites.sort_by_key(|suite| match suite.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => 1,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => 2,
        _ => 3, // TLS 1.2 suites keep their order
    });
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    config.ignore_client_order = true;
    Arc::new(config)
}

/// The certificate machinery of a running server.
pub struct Tls {
    /// What rustls serves.
    pub resolver: Arc<CertResolver>,
    /// HTTP-01 answers for the plain listener.
    pub http_challenges: Arc<HttpChallenges>,
    /// The status operators see.
    pub status: Arc<StatusHandle>,
    /// The background task (ACME renewals, file reloads), if any.
    pub task: Option<tokio::task::JoinHandle<()>>,
}

/// Sets up the certificate source for `config` and starts its background
/// task. A self-signed or file certificate is in place when this returns;
/// an ACME one is served at once if stored and valid, else as soon as issued.
pub fn start(config: &TlsConfig, data_dir: &Path, http01_available: bool) -> anyhow::Result<Tls> {
    let tls_dir = data_dir.join("tls");
    std::fs::create_dir_all(&tls_dir)?;
    restrict(&tls_dir)?;
    let resolver = Arc::new(CertResolver::default());
    let http_challenges = Arc::new(HttpChallenges::default());
    let status = Arc::new(StatusHandle::open(data_dir, config.mode.as_str(), &config.domains));
    let task = match config.mode {
        TlsMode::Off => None,
        TlsMode::SelfSigned => {
            let names = if config.domains.is_empty() { vec!["localhost".to_owned()] } else { config.domains.clone() };
            let cert = cert::self_signed(&names)?;
            resolver.set(cert.key.clone());
            status.update(|s| {
                s.certificate = Some(cert.info.clone());
                s.next_renewal = None;
                s.last_error = None;
            });
            tracing::warn!(?names, "serving a self-signed certificate: clients will not trust it");
            None
        }
        TlsMode::Files => {
            let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
                anyhow::bail!("files mode needs tls.cert_file and tls.key_file");
            };
            let source = files::FilesSource::new(cert_file.clone(), key_file.clone(), resolver.clone(), status.clone());
            let loaded = source.load().map_err(|e| anyhow::anyhow!("tls.cert_file / tls.key_file: {e}"))?;
            Some(tokio::spawn(source.watch(loaded)))
        }
        TlsMode::Acme => {
            let manager = acme::AcmeManager::new(
                config,
                tls_dir,
                resolver.clone(),
                http_challenges.clone(),
                http01_available,
                status.clone(),
            );
            Some(tokio::spawn(manager.run()))
        }
    };
    Ok(Tls { resolver, http_challenges, status, task })
}

/// The TLS directory holds private keys: owner only.
fn restrict(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}
