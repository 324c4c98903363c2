//! Configuration: a TOML file, then `PAYBRIDGE_<SECTION>_<KEY>` environment
//! overrides, validated once at start-up into a [`Config`] the rest of the
//! program can trust.
//!
//! Every error names the key that is wrong. Secrets may also come from a file
//! named by `PAYBRIDGE_<SECTION>_<KEY>_FILE` (systemd credentials, Docker secrets).
//!
//! # Layout
//!
//! This file holds [`Config`], loading, [`ConfigError`] and the glue that
//! validates the sections in order. Each section's file holds its settings,
//! its raw (TOML) form and its checks: `http.rs`, `tls.rs`, `wechat.rs` (with
//! `wechat_v2.rs` and `wechat_v3.rs` for what one API version needs),
//! `orders.rs` (`[orders]` and `[[products]]`), `platforms.rs`, `notifies.rs`,
//! `reconcile.rs`, `storage.rs`, `metrics.rs`, `admin.rs`, `log.rs`,
//! `sandbox.rs`. `env.rs` layers the environment over the file, and
//! `describe.rs` prints the effective settings and the warnings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::secret::Secret;
use crate::store::StoreOptions;

mod admin;
mod describe;
mod env;
mod http;
mod log;
mod metrics;
mod notifies;
mod orders;
mod platforms;
mod reconcile;
mod sandbox;
mod storage;
mod tls;
mod wechat;
mod wechat_v2;
mod wechat_v3;

pub use admin::AdminConfig;
pub use http::HttpConfig;
pub use log::LogConfig;
pub use metrics::MetricsConfig;
pub use notifies::NotifiesConfig;
pub use orders::{Catalogue, OrdersConfig, Product, DEFAULT_MAX_TOTAL_FEE};
pub use platforms::{is_platform_id, Platform, Platforms, MIN_KEY_CHARS};
pub use reconcile::ReconcileConfig;
pub use sandbox::SandboxConfig;
pub use tls::{TlsConfig, TlsMode, LETS_ENCRYPT_PRODUCTION, LETS_ENCRYPT_STAGING};
pub use wechat::{WechatConfig, WECHAT_PAY_BASE_URL, WECHAT_SNS_BASE_URL};
pub use wechat_v2::{ClientCertFiles, RefundTls, SECAPI_BASE_URL};
pub use wechat_v3::{sandbox_v3_keys, PayApi, V3Keys, WechatPayPublicKey};

pub use crate::domain::Mode;

/// The sandbox's built-in credentials (public: sandbox only).
pub use crate::sandbox::keys as sandbox_credentials;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Live or sandbox; decides where WeChat calls go and how orders are marked.
    pub mode: Mode,
    /// Where sled keeps orders and the notify log.
    pub data_dir: PathBuf,
    /// The plain-HTTP listener.
    pub http: HttpConfig,
    /// HTTPS and certificates.
    pub tls: TlsConfig,
    /// WeChat credentials and endpoints.
    pub wechat: WechatConfig,
    /// Where API v2's client certificate (refunds) was read from, when it
    /// is set; `check-config` shows it.
    pub client_certificate: Option<ClientCertFiles>,
    /// Order policy.
    pub orders: OrdersConfig,
    /// Sandbox settings (only used in sandbox mode).
    pub sandbox: SandboxConfig,
    /// The admin page.
    pub admin: AdminConfig,
    /// `/metrics`.
    pub metrics: MetricsConfig,
    /// Logging.
    pub log: LogConfig,
    /// The store's memory and write queue (`[storage]`).
    pub storage: StoreOptions,
    /// Days after its end an order moves to the archive (`[storage] archive_after_days`).
    pub archive_after_days: u32,
    /// The notify log's bounds (`[notifies]`).
    pub notifies: NotifiesConfig,
    /// The daily bill (`[reconcile]`).
    pub reconcile: ReconcileConfig,
    /// What mini-program B may sell by id (`[[products]]`); reloaded on SIGHUP.
    pub products: Catalogue,
    /// Platforms (company A's backends) that create orders and get webhooks
    /// (`[[platforms]]`); reloaded on SIGHUP.
    pub platforms: Platforms,
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a wrong type.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What toml said, with the key and line.
        message: String,
    },
    /// A key has a bad value.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// The key, as `section.key`, or the environment variable.
        key: String,
        /// What is wrong, in plain words.
        message: String,
    },
}

/// A [`ConfigError::Invalid`] for `key`.
pub(crate) fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.to_owned(), message: message.into() }
}

// The file as written: every key optional, unknown keys refused so that a typo
// (`acept_client_amount`) is an error rather than a silently ignored setting.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    mode: Option<String>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    http: http::RawHttp,
    #[serde(default)]
    tls: tls::RawTls,
    #[serde(default)]
    wechat: wechat::RawWechat,
    #[serde(default)]
    orders: orders::RawOrders,
    #[serde(default)]
    sandbox: sandbox::RawSandbox,
    #[serde(default)]
    admin: admin::RawAdmin,
    #[serde(default)]
    metrics: metrics::RawMetrics,
    #[serde(default)]
    log: log::RawLog,
    #[serde(default)]
    storage: storage::RawStorage,
    #[serde(default)]
    notifies: notifies::RawNotifies,
    #[serde(default)]
    reconcile: reconcile::RawReconcile,
    #[serde(default)]
    products: Vec<orders::RawProduct>,
    #[serde(default)]
    platforms: Vec<platforms::RawPlatform>,
}

impl Config {
    /// What the admin page shows of this configuration.
    pub fn admin_settings(&self) -> crate::admin::AdminSettings {
        crate::admin::AdminSettings::new(&self.wechat, self.mode, &self.data_dir, self.orders.accept_client_amount)
    }

    /// The payment service's settings.
    pub fn pay_settings(&self) -> crate::pay::settings::PaySettings {
        crate::pay::settings::PaySettings {
            mode: self.mode,
            wechat: self.wechat.clone(),
            orders: self.orders.clone(),
            refused_notifies_per_peer_per_minute: self.notifies.refused_per_peer_per_minute,
            products: self.products.clone(),
            platforms: self.platforms.clone(),
        }
    }
}

impl Config {
    /// Reads `path`, applies the process environment, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Config::from_toml(&text, path, std::env::vars())
    }

    /// Parses `text` (read from `path`, named in errors), applies `env`, validates.
    pub fn from_toml(
        text: &str,
        path: &Path,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Config::from_toml_all(text, path, env).map_err(|mut errors| errors.swap_remove(0))
    }

    /// Like [`Config::load`], but every problem rather than the first
    /// (`check-config`): each wrong environment variable and the first
    /// problem of each section. A section that needs another one that is
    /// wrong (`[wechat]` needs `mode`, `[tls]`, `[http]`) waits for it to be
    /// fixed. Never empty on error.
    pub fn check(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| vec![ConfigError::Read { path: path.to_owned(), source }])?;
        Config::from_toml_all(&text, path, std::env::vars())
    }

    /// [`Config::from_toml`] with every problem, the first one first.
    pub fn from_toml_all(
        text: &str,
        path: &Path,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, Vec<ConfigError>> {
        let mut raw: RawConfig = toml::from_str(text)
            .map_err(|e| vec![ConfigError::Parse { path: path.to_owned(), message: e.to_string() }])?;
        raw.resolve_paths(path);
        let mut errors = raw.apply_env(env);
        match raw.validate() {
            Ok(config) if errors.is_empty() => Ok(config),
            Ok(_) => Err(errors),
            Err(found) => {
                errors.extend(found);
                Err(errors)
            }
        }
    }

    /// The built-in sandbox configuration: simulator, loopback ports, a data
    /// directory in the working directory, client amounts allowed.
    pub fn sandbox_default() -> Config {
        Config::sandbox_with_api("v2")
    }

    /// [`Config::sandbox_default`] on WeChat Pay API `version` (`v2` or
    /// `v3`; v3 with the sandbox merchant's RSA keys, in public-key mode).
    pub fn sandbox_with_api(version: &str) -> Config {
        // A small catalogue, so the demo shows the safe way to set an amount.
        let product = |id: &str, name: &str, price| orders::RawProduct { id: id.into(), name: name.into(), price };
        // And a demo platform A, whose webhooks the simulator's port receives
        // (the address is fixed once the simulator is bound).
        let demo = platforms::RawPlatform {
            id: sandbox_credentials::DEMO_PLATFORM.into(),
            key: Some(Secret::new(sandbox_credentials::DEMO_PLATFORM_KEY)),
            key_file: None,
            previous_key: None,
            previous_key_until: None,
            webhook_url: format!("http://127.0.0.1:8081{}", sandbox_credentials::DEMO_WEBHOOK_PATH),
            appid: None,
        };
        let raw = RawConfig {
            mode: Some("sandbox".into()),
            wechat: wechat::RawWechat { api_version: Some(version.into()), ..wechat::RawWechat::default() },
            products: vec![product("demo", "PayBridge demo", 1), product("vip-month", "会员月卡", 1990)],
            platforms: vec![demo],
            ..RawConfig::default()
        };
        raw.validate().expect("the built-in sandbox config is valid")
    }

    /// Overrides the listeners and data directory (the `sandbox` command's flags).
    pub fn with_overrides(
        mut self,
        listen: Option<SocketAddr>,
        simulator_listen: Option<SocketAddr>,
        data_dir: Option<PathBuf>,
    ) -> Config {
        if let Some(listen) = listen {
            self.http.listen = Some(listen);
        }
        if let Some(sim) = simulator_listen {
            self.sandbox.simulator_listen = sim;
        }
        if let Some(dir) = data_dir {
            self.data_dir = dir;
        }
        self
    }
}

impl RawConfig {
    /// Validates every section, keeping the first problem of each, in an
    /// order that keeps the very first the same as when validation stopped
    /// there: mode, tls, admin, http, sandbox, wechat, orders and products,
    /// platforms, then the rest.
    fn validate(self) -> Result<Config, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mode = keep(
            &mut errors,
            match self.mode.as_deref() {
                None | Some("live") => Ok(Mode::Live),
                Some("sandbox") => Ok(Mode::Sandbox),
                Some(other) => Err(invalid("mode", format!("must be \"live\" or \"sandbox\", not {other:?}"))),
            },
        );
        let tls = keep(&mut errors, self.tls.validate());
        let admin = keep(&mut errors, self.admin.validate());
        // With [tls] wrong, whether http.listen may be "off" waits for it.
        let http = keep(&mut errors, self.http.validate(tls.as_ref().is_none_or(|t| t.enabled())));
        let sandbox = keep(&mut errors, self.sandbox.validate());
        let wechat = match (mode, &tls, &http, &sandbox) {
            (Some(mode), Some(tls), Some(http), Some(sandbox)) => {
                keep(&mut errors, self.wechat.validate(mode, tls, http.listen, sandbox.simulator_listen))
            }
            _ => None,
        };
        let max_total_fee = keep(&mut errors, self.orders.max_total_fee());
        let products = max_total_fee.and_then(|max| keep(&mut errors, orders::catalogue(self.products, max)));
        let platforms = keep(&mut errors, platforms::platforms(self.platforms));
        let orders = match (mode, max_total_fee) {
            (Some(mode), Some(max)) => keep(&mut errors, self.orders.validate(mode, max)),
            _ => None,
        };
        let metrics = mode.and_then(|mode| keep(&mut errors, self.metrics.validate(mode)));
        let log = keep(&mut errors, self.log.validate());
        let archive_after_days = keep(&mut errors, self.storage.archive_after_days());
        let storage = keep(&mut errors, self.storage.validate());
        let notifies = keep(&mut errors, self.notifies.validate());
        let reconcile = keep(&mut errors, self.reconcile.validate());
        let (
            Some(mode),
            Some(tls),
            Some(admin),
            Some(http),
            Some(sandbox),
            Some((wechat, client_certificate)),
            Some(products),
            Some(platforms),
            Some(orders),
            Some(metrics),
            Some(log),
            Some(storage),
            Some(notifies),
            Some(reconcile),
            Some(archive_after_days),
        ) = (
            mode,
            tls,
            admin,
            http,
            sandbox,
            wechat,
            products,
            platforms,
            orders,
            metrics,
            log,
            storage,
            notifies,
            reconcile,
            archive_after_days,
        )
        else {
            return Err(errors);
        };
        let data_dir = self.data_dir.unwrap_or_else(|| match mode {
            Mode::Live => PathBuf::from("/var/lib/paybridge"),
            Mode::Sandbox => PathBuf::from("paybridge-sandbox-data"),
        });
        Ok(Config {
            products,
            platforms,
            mode,
            data_dir,
            http,
            tls,
            wechat,
            client_certificate,
            orders,
            sandbox,
            admin,
            metrics,
            log,
            storage,
            archive_after_days,
            notifies,
            reconcile,
        })
    }
}

/// `found`'s value, or `None` with its error added to `errors`.
fn keep<T>(errors: &mut Vec<ConfigError>, found: Result<T, ConfigError>) -> Option<T> {
    found.map_err(|e| errors.push(e)).ok()
}

impl RawConfig {
    /// Makes the file's relative key and certificate paths relative to the
    /// folder of `config_file`, not to the working directory (which is `/`
    /// under systemd), so `merchant_key_file = "apiclient_key.pem"` beside
    /// the config works wherever PayBridge is started from. Paths from the
    /// environment are applied afterwards and stay as given, like every
    /// `PAYBRIDGE_…_FILE`.
    fn resolve_paths(&mut self, config_file: &Path) {
        let absolute = std::path::absolute(config_file).unwrap_or_else(|_| config_file.to_owned());
        let Some(folder) = absolute.parent() else {
            return;
        };
        let w = &mut self.wechat;
        let t = &mut self.tls;
        let paths = [
            &mut w.merchant_key_file,
            &mut w.public_key_file,
            &mut w.client_cert_file,
            &mut w.client_key_file,
            &mut w.client_p12_file,
            &mut w.secapi_ca_file,
            &mut t.cert_file,
            &mut t.key_file,
            &mut t.acme_directory_ca,
        ];
        let platforms = self.platforms.iter_mut().map(|p| &mut p.key_file);
        for path in paths.into_iter().chain(platforms).flatten() {
            if path.is_relative() {
                *path = folder.join(&*path);
            }
        }
    }
}

/// A `host:port` address, or an error naming `key`.
pub(crate) fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| invalid(key, format!("{value:?} is not an address like \"127.0.0.1:8080\"")))
}

#[cfg(test)]
mod tests {
    use super::testing::{error, load, LIVE};
    use super::*;
    use crate::wechat::sign::SignType;

    #[test]
    fn live_config_with_defaults() {
        let c = load(LIVE, &[]).unwrap();
        assert_eq!(c.mode, Mode::Live);
        assert!(matches!(c.wechat.api, PayApi::V2 { sign_type: SignType::HmacSha256, .. }));
        assert_eq!(c.wechat.pay_base_url.as_str(), "https://api.mch.weixin.qq.com/");
        assert!(!c.orders.accept_client_amount);
        assert_eq!(c.http.listen.unwrap().port(), 9000);
        assert_eq!(c.tls.mode, TlsMode::Off);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (LIVE.replace("HMAC-SHA256", "SHA1"), "wechat.sign_type"),
            (LIVE.replace("127.0.0.1:9000", "nine thousand"), "http.listen"),
            (LIVE.replace("10000100", "abc"), "wechat.mch_id"),
            (LIVE.replace("192006250b4c09247ec02edce69f6a2d", "short"), "wechat.mch_key"),
            (LIVE.replace("/pay/notify\"", "/pay/notify?x=1\""), "wechat.notify_url"),
            (LIVE.replace("mch_key =", "mch_kee ="), "mch_kee"),
            (LIVE.replace("[http]", "[orders]\naccept_client_amount = \"yes\"\n[http]"), "accept_client_amount"),
            (LIVE.replace("appid = \"wxd930ea5d5a258f4f\"", ""), "wechat.appid"),
            (format!("mode = \"test\"\n{LIVE}"), "mode"),
        ];
        for (text, key) in cases {
            let e = error(&text, &[]);
            assert!(e.contains(key), "expected {key} in: {e}");
        }
    }

    #[test]
    fn relative_key_paths_are_read_beside_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("paybridge.toml");
        let v2_cert = format!("{LIVE}\nclient_cert_file = \"certs/apiclient_cert.pem\"\nclient_key_file = \"k.pem\"\n");
        std::fs::write(&file, &v2_cert).unwrap();
        let e = Config::load(&file).unwrap_err().to_string();
        let wanted = dir.path().join("certs/apiclient_cert.pem");
        assert!(e.contains(&format!("`wechat.client_cert_file`: cannot read {}:", wanted.display())), "{e}");

        // A path from the environment is as given, like every PAYBRIDGE_…_FILE.
        let files =
            LIVE.replace("[wechat]", "[tls]\nmode = \"files\"\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n[wechat]");
        let env = [("PAYBRIDGE_TLS_KEY_FILE".to_owned(), "other.pem".to_owned())];
        let c = Config::from_toml(&files, &file, env.into_iter()).unwrap();
        assert_eq!(c.tls.cert_file.unwrap(), dir.path().join("c.pem"));
        assert_eq!(c.tls.key_file.unwrap(), Path::new("other.pem"));
    }

    #[test]
    fn check_config_finds_every_problem_and_load_stops_at_the_first() {
        let text = format!(
            "{}\n[admin]\npassword_hash = \"nope\"\n[log]\nformat = \"xml\"\n[storage]\ncache_mb = 1\n",
            LIVE.replace("10000100", "abc")
        );
        let env = [("PAYBRIDGE_ORDERS_MAX_TOTAL_FEE", "lots"), ("PAYBRIDGE_METRICS_LISTEN", "nowhere")];
        let vars = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let errors = Config::from_toml_all(&text, Path::new("test.toml"), vars).unwrap_err();
        let keys: Vec<&str> = errors
            .iter()
            .map(|e| match e {
                ConfigError::Invalid { key, .. } => key.as_str(),
                other => panic!("{other}"),
            })
            .collect();
        assert_eq!(
            keys,
            [
                "PAYBRIDGE_ORDERS_MAX_TOTAL_FEE",
                "admin.password_hash",
                "wechat.mch_id",
                "metrics.listen",
                "log.format",
                "storage.cache_mb"
            ]
        );
        assert_eq!(error(&text, &env), errors[0].to_string(), "load stops at the first");
        // [wechat] needs [http]: with http wrong, wechat waits rather than guess.
        let errors = Config::from_toml_all(
            &LIVE.replace("127.0.0.1:9000", "nine").replace("10000100", "abc"),
            Path::new("test.toml"),
            std::iter::empty(),
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
    }
}

#[cfg(test)]
mod testing;
