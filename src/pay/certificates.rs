//! API v3 certificate mode: WeChat's platform certificates are downloaded
//! from `/v3/certificates`, kept in sled, trusted for replies and notifies,
//! and downloaded again every [`REFRESH_EVERY`] (WeChat publishes a new one
//! a day before it signs with it) and when a notify names a serial we do
//! not have.

use std::time::Duration;

use super::{now_ms, PayError, Payments};
use crate::store::StoredCertificate;
use crate::wechat::v3::trust::PlatformCertificate;

/// How often certificates are downloaded again (WeChat: at least every 12 h).
pub const REFRESH_EVERY: Duration = Duration::from_secs(12 * 3600);

/// The wait after a failed download.
pub const RETRY_AFTER: Duration = Duration::from_secs(300);

/// The least time between two downloads that an unknown serial triggers.
const UNKNOWN_SERIAL_EVERY: Duration = Duration::from_secs(60);

/// A certificate expiring within this is shown with a warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);

impl Payments {
    /// Whether this merchant verifies WeChat with downloaded certificates.
    pub fn uses_platform_certificates(&self) -> bool {
        self.gateway.v3().is_some_and(|(_, keys)| keys.platform_certificates)
    }

    /// The platform certificates trusted now (v3 certificate mode).
    pub fn platform_certificates(&self) -> Vec<PlatformCertificate> {
        self.gateway.v3().map(|(client, _)| client.trust().certificates()).unwrap_or_default()
    }

    /// Trusts the certificates kept from the last run (at start-up).
    pub async fn load_certificates(&self) -> Result<usize, PayError> {
        let Some((client, _)) = self.gateway.v3() else { return Ok(0) };
        let stored = self.store.read(|store| store.wechat_certificates()).await?;
        let mut certificates = Vec::new();
        for c in stored {
            match crate::wechat::v3::crypto::PublicKey::certificate(&c.pem) {
                Ok((serial, key, not_after)) => {
                    certificates.push(PlatformCertificate { serial, key, not_after, pem: c.pem })
                }
                Err(e) => tracing::warn!(serial = %c.serial, error = %e, "a stored platform certificate is unreadable"),
            }
        }
        let count = certificates.len();
        client.trust().set_certificates(certificates, now_ms() / 1000);
        Ok(count)
    }

    /// Downloads WeChat's certificates, keeps them, and trusts them.
    pub async fn refresh_certificates(&self) -> Result<usize, PayError> {
        let Some((client, keys)) = self.gateway.v3() else { return Ok(0) };
        let _one_at_a_time = self.certificate_refresh.lock().await;
        let downloaded = client.certificates(&keys.apiv3_key).await.map_err(PayError::Upstream)?;
        if downloaded.is_empty() {
            return Err(PayError::Invalid("WeChat listed no platform certificate".into()));
        }
        let fetched_at = now_ms();
        let stored = downloaded
            .iter()
            .map(|c| StoredCertificate {
                serial: c.serial.clone(),
                pem: c.pem.clone(),
                not_after: c.not_after,
                fetched_at,
            })
            .collect();
        self.store.put_wechat_certificates(stored).await?;
        let serials: Vec<String> = downloaded.iter().map(|c| c.serial.clone()).collect();
        let count = downloaded.len();
        client.trust().set_certificates(downloaded, fetched_at / 1000);
        tracing::info!(?serials, "WeChat Pay platform certificates downloaded");
        Ok(count)
    }

    /// A notify named `serial`, which no trusted key has: downloads the
    /// certificates once (at most once a minute). Returns whether it did.
    pub(super) async fn refresh_certificates_for_unknown_serial(&self, serial: &str) -> bool {
        {
            let mut last = self.unknown_serial_refresh.lock().expect("refresh time lock");
            if last.is_some_and(|at| at.elapsed() < UNKNOWN_SERIAL_EVERY) {
                return false;
            }
            *last = Some(std::time::Instant::now());
        }
        tracing::warn!(serial = %serial.chars().take(64).collect::<String>(), "a notify names an unknown Wechatpay-Serial: downloading WeChat's certificates once");
        match self.refresh_certificates().await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot download WeChat Pay platform certificates");
                false
            }
        }
    }

    /// Certificate mode at start-up: trusts the stored certificates, then
    /// downloads them once before serving (a failure is logged; the
    /// background task tries again).
    pub async fn start_certificates(&self) {
        match self.load_certificates().await {
            Ok(n) if n > 0 => tracing::info!(certificates = n, "stored WeChat Pay platform certificates trusted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the stored platform certificates"),
        }
        if let Err(e) = self.refresh_certificates().await {
            tracing::warn!(error = %e, retry_in_secs = RETRY_AFTER.as_secs(), "cannot download WeChat Pay platform certificates");
        }
    }

    /// Certificate mode's background task: downloads the certificates every
    /// [`REFRESH_EVERY`] (after a failure, every [`RETRY_AFTER`]).
    pub async fn run_certificate_refresh(self: std::sync::Arc<Self>) {
        let mut wait = REFRESH_EVERY;
        loop {
            tokio::time::sleep(wait).await;
            wait = match self.refresh_certificates().await {
                Ok(_) => REFRESH_EVERY,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_secs = RETRY_AFTER.as_secs(), "cannot download WeChat Pay platform certificates");
                    RETRY_AFTER
                }
            };
        }
    }
}
