//! The merchant's admin page: what it shows and who may see it.
//!
//! [`auth`] holds the password, sessions and login limits; this module and
//! its view files (`overview`, `orders`, `bills`, [`integration`], [`csv`],
//! [`checkup`])
//! build the views (JSON-ready structs) from the store, so the routes in
//! [`crate::http::admin`] only parse and render.

pub mod auth;
mod bills;
pub mod checkup;
pub mod csv;
pub mod integration;
mod orders;
mod overview;

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::domain::Mode;
use crate::secret::Secret;
use crate::store::{Store, StoreError};
use crate::tls::{StatusHandle, TlsStatus};
use crate::wechat::settings::WechatConfig;

/// Everything the admin routes need.
pub struct Admin {
    /// The orders and notifies.
    pub store: Store,
    /// The Argon2id hash of the admin password; `None` disables logging in.
    pub password_hash: Option<Secret>,
    /// Logged-in sessions.
    pub sessions: auth::Sessions,
    /// Failed-login limits.
    pub limiter: auth::LoginLimiter,
    /// Certificate status, with TLS on.
    pub tls_status: Option<Arc<StatusHandle>>,
    /// The payment service: the catalogue in force, refunds.
    pub payments: Arc<crate::pay::Payments>,
    /// Where this server is reached (the Integration view).
    notify_url: url::Url,
    /// For re-sending a webhook.
    pub webhooks: Arc<crate::platform::webhook::Webhooks>,
    /// Runs a day's reconciliation again.
    pub reconciler: Arc<crate::pay::reconcile::Reconciler>,
    /// Orders moved out of the hot store: found by number, read-only (the
    /// server's moves run on another handle of the same folder).
    pub archive: crate::store::archive::Archive,
    started: Instant,
    system: SystemInfo,
    /// "Check credentials": the doctor, handed over by the wiring.
    checkups: Option<checkup::Checkups>,
}

/// What the System view shows of the configuration: no secret.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct SystemInfo {
    mode: &'static str,
    sandbox: bool,
    appid: String,
    mch_id: String,
    /// `v2` or `v3`.
    api_version: &'static str,
    /// v2: `MD5` or `HMAC-SHA256`.
    sign_type: Option<&'static str>,
    /// v3: how WeChat's signatures are verified (`public_key`, `certificates`, `both`).
    key_mode: Option<&'static str>,
    /// v3: the merchant API certificate's serial (public).
    merchant_serial: Option<String>,
    /// v3: the WeChat Pay public key's id (public).
    public_key_id: Option<String>,
    notify_url: String,
    pay_base_url: String,
    data_dir: String,
    accept_client_amount: bool,
}

/// What the admin page is told about the configuration.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    system: SystemInfo,
    /// Where WeChat posts notifies (the integration view shows it).
    notify_url: url::Url,
    /// The data directory's archive (read only here).
    archive: crate::store::archive::Archive,
}

impl AdminSettings {
    /// The System view's facts: no secret is kept.
    pub fn new(
        wechat: &WechatConfig,
        mode: Mode,
        data_dir: &std::path::Path,
        accept_client_amount: bool,
    ) -> AdminSettings {
        let v3 = match &wechat.api {
            crate::wechat::settings::PayApi::V3(keys) => Some(keys.as_ref()),
            crate::wechat::settings::PayApi::V2 { .. } => None,
        };
        let system = SystemInfo {
            mode: mode.as_str(),
            sandbox: mode == Mode::Sandbox,
            appid: wechat.appid.clone(),
            mch_id: wechat.mch_id.clone(),
            api_version: wechat.api.version(),
            sign_type: match &wechat.api {
                crate::wechat::settings::PayApi::V2 { sign_type, .. } => Some(sign_type.as_str()),
                crate::wechat::settings::PayApi::V3(_) => None,
            },
            key_mode: v3.map(|k| k.key_mode_code()),
            merchant_serial: v3.map(|k| k.merchant_serial.clone()),
            public_key_id: v3.and_then(|k| k.public_key.as_ref().map(|p| p.id.clone())),
            notify_url: wechat.notify_url.to_string(),
            pay_base_url: wechat.pay_base_url.to_string(),
            data_dir: data_dir.display().to_string(),
            accept_client_amount,
        };
        let archive = crate::store::archive::Archive::new(data_dir);
        AdminSettings { system, notify_url: wechat.notify_url.clone(), archive }
    }
}

/// The System view.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemView {
    version: &'static str,
    uptime_secs: u64,
    data_bytes: u64,
    orders: u64,
    #[serde(flatten)]
    config: SystemInfo,
    tls: Option<TlsStatus>,
    /// The catalogue in force (`[[products]]`, reloaded on SIGHUP).
    products: Vec<crate::pay::settings::Product>,
    /// v3 certificate mode: the platform certificates trusted now.
    platform_certificates: Vec<CertificateInfo>,
}

/// A WeChat Pay platform certificate, as the System view shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateInfo {
    serial: String,
    /// End of validity, unix seconds.
    not_after: i64,
    /// Whether it expires within 30 days (WeChat should have issued the
    /// next one by then; if not, something is wrong with the downloads).
    expires_soon: bool,
}

pub use crate::store::{day_string, parse_day};
pub use bills::{BillDayView, MAX_DAYS_PER_PAGE};
pub use orders::{
    order_detail, AmountSource, DeliveryRow, NotifyRow, OrderDetail, OrderRow, RefundRow, ORDER_NOTIFIES,
};
pub use overview::{Day, Overview, Total};

impl Admin {
    /// The admin state for a running server.
    pub fn new(
        settings: AdminSettings,
        store: Store,
        password_hash: Option<Secret>,
        tls_status: Option<Arc<StatusHandle>>,
        payments: Arc<crate::pay::Payments>,
        webhooks: Arc<crate::platform::webhook::Webhooks>,
        reconciler: Arc<crate::pay::reconcile::Reconciler>,
    ) -> Admin {
        Admin {
            archive: settings.archive,
            payments,
            webhooks,
            reconciler,
            notify_url: settings.notify_url,
            store,
            password_hash,
            sessions: auth::Sessions::default(),
            limiter: auth::LoginLimiter::default(),
            tls_status,
            started: Instant::now(),
            system: settings.system,
            checkups: None,
        }
    }

    /// Lets the System view run `run` (the doctor for the running config).
    pub fn with_checkups(mut self, run: checkup::RunCheckup) -> Admin {
        self.checkups = Some(checkup::Checkups::new(run));
        self
    }

    /// Runs the checkup; `None` when none was handed over.
    pub async fn checkup(&self) -> Option<Result<crate::checkup::Report, checkup::Refused>> {
        match &self.checkups {
            Some(checkups) => Some(checkups.run().await),
            None => None,
        }
    }

    /// Whether this is sandbox mode.
    pub fn sandbox(&self) -> bool {
        self.system.sandbox
    }

    /// The Integration view: the kit with this merchant's values filled in.
    pub fn integration(&self) -> integration::IntegrationView {
        let base = integration::api_base(&self.notify_url);
        integration::view(&base, &self.system.appid, &self.payments.platforms())
    }

    /// The System view.
    pub fn system(&self) -> Result<SystemView, StoreError> {
        Ok(SystemView {
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: self.started.elapsed().as_secs(),
            data_bytes: self.store.size_on_disk()?,
            orders: self.store.order_count()?,
            config: self.system.clone(),
            tls: self.tls_status.as_ref().map(|s| s.get()),
            products: self.payments.catalogue().all().to_vec(),
            platform_certificates: {
                let now = crate::clock::now_ms() / 1000;
                let warn_within = crate::pay::certificates::EXPIRY_WARNING.as_secs() as i64;
                self.payments
                    .platform_certificates()
                    .into_iter()
                    .map(|c| CertificateInfo {
                        expires_soon: c.not_after - now < warn_within,
                        serial: c.serial,
                        not_after: c.not_after,
                    })
                    .collect()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip() {
        assert_eq!(day_string(0), "1970-01-01");
        let day = parse_day("2026-11-27").unwrap();
        assert_eq!(day_string(day), "2026-11-27");
        assert_eq!(parse_day("2026-13-01"), None);
        assert_eq!(parse_day("yesterday"), None);
    }
}
