//! `mode = "files"`: the operator's PEM chain and key, reloaded when they
//! change on disk (after certbot, a corporate CA, a manual swap).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::cert::{self, CertError, LoadedCert};
use super::resolver::CertResolver;
use super::status::StatusHandle;

/// How often the files are checked.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Watches a certificate and key file pair.
pub struct FilesSource {
    cert_file: PathBuf,
    key_file: PathBuf,
    resolver: Arc<CertResolver>,
    status: Arc<StatusHandle>,
}

impl FilesSource {
    /// A source for the two files.
    pub fn new(cert_file: PathBuf, key_file: PathBuf, resolver: Arc<CertResolver>, status: Arc<StatusHandle>) -> Self {
        FilesSource { cert_file, key_file, resolver, status }
    }

    fn read(&self) -> Result<(String, String), CertError> {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).map_err(|e| CertError(format!("cannot read {}: {e}", p.display())))
        };
        Ok((read(&self.cert_file)?, read(&self.key_file)?))
    }

    fn install(&self, cert: &LoadedCert) {
        self.resolver.set(cert.key.clone());
        let info = cert.info.clone();
        self.status.update(|s| {
            s.certificate = Some(info);
            s.last_error = None;
            s.consecutive_failures = 0;
            s.last_success_at = Some(time::OffsetDateTime::now_utc());
        });
    }

    /// Loads the files now; an error here stops start-up.
    pub fn load(&self) -> Result<(String, String), CertError> {
        let (chain, key) = self.read()?;
        let cert = cert::load_pem(&chain, &key)?;
        self.install(&cert);
        tracing::info!(names = ?cert.info.names, not_after = %cert.info.not_after, "serving the certificate from files");
        Ok((chain, key))
    }

    /// Checks the files forever; a changed, valid pair replaces the served
    /// certificate, a broken one is reported and the old one kept.
    pub async fn watch(self, mut loaded: (String, String)) {
        loop {
            tokio::time::sleep(RELOAD_INTERVAL).await;
            let Ok(now) = self.read() else { continue };
            if now == loaded {
                continue;
            }
            match cert::load_pem(&now.0, &now.1) {
                Ok(cert) => {
                    self.install(&cert);
                    tracing::info!(names = ?cert.info.names, serial = %cert.info.serial, "certificate files changed; new certificate in use");
                    loaded = now;
                }
                Err(e) => {
                    // A half-written pair is common (cert copied before key): retry next tick.
                    let message = e.to_string();
                    tracing::warn!(error = %message, "certificate files changed but are unusable; keeping the current certificate");
                    self.status.update(|s| {
                        s.last_error = Some(message);
                        s.last_error_at = Some(time::OffsetDateTime::now_utc());
                    });
                }
            }
        }
    }
}
