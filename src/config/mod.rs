//! Configuration: a TOML file, then `PAYBRIDGE_<SECTION>_<KEY>` environment
//! overrides, validated once at start-up into a [`Config`] the rest of the
//! program can trust.
//!
//! Every error names the key that is wrong. Secrets may also come from a file
//! named by `PAYBRIDGE_<SECTION>_<KEY>_FILE` (systemd credentials, Docker secrets).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::secret::Secret;
use crate::server::ConnectionLimits;
use crate::store::{Retention, StoreOptions};
use crate::wechat::sign::SignType;

mod platforms;
mod tls;
mod wechat_v2;
mod wechat_v3;

pub use platforms::{is_platform_id, Platform, Platforms, MIN_KEY_CHARS};
pub use tls::{TlsConfig, TlsMode, LETS_ENCRYPT_PRODUCTION, LETS_ENCRYPT_STAGING};
pub use wechat_v2::{RefundTls, SECAPI_BASE_URL};
pub use wechat_v3::{sandbox_v3_keys, PayApi, V3Keys, WechatPayPublicKey};

pub use crate::wechat::settings::{WECHAT_PAY_BASE_URL, WECHAT_SNS_BASE_URL};

pub use crate::domain::Mode;

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

pub use crate::pay::settings::{Catalogue, Product};

/// `[notifies]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifiesConfig {
    /// How long and how much of the notify log is kept.
    pub retention: Retention,
    /// Refused notifies recorded per peer and minute; the rest are only counted.
    pub refused_per_peer_per_minute: u32,
}

/// `[reconcile]`: the daily bill (对账).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileConfig {
    /// Download and compare yesterday's bill every day after 10:00 Beijing time.
    pub enabled: bool,
    /// Each day's bill file is kept this many days (the results stay).
    pub keep_bills_days: u32,
}

/// The largest amount an order may have by default: ¥100,000.
pub const DEFAULT_MAX_TOTAL_FEE: u64 = 10_000_000;

/// `[metrics]`
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Where `/metrics` is served; `None` when `"off"`. Never the public listeners.
    pub listen: Option<SocketAddr>,
    /// Bearer token for `/metrics`; required when `listen` is not loopback.
    pub token: Option<Secret>,
}

/// `[log]`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogConfig {
    /// Human-readable lines (default).
    #[default]
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

/// `[admin]`
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// Argon2id hash of the admin password (`paybridge admin set-password`);
    /// without it nobody can log in.
    pub password_hash: Option<Secret>,
}

/// `[http]`
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Address of the plain-HTTP listener; `None` when set to `"off"`
    /// (possible with TLS on: ACME then uses TLS-ALPN-01 only).
    pub listen: Option<SocketAddr>,
    /// Connection caps, for each listener.
    pub limits: ConnectionLimits,
}

pub use crate::wechat::settings::WechatConfig;

pub use crate::pay::settings::OrdersConfig;

/// `[sandbox]`
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Address of the simulated WeChat Pay server.
    pub simulator_listen: SocketAddr,
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
    http: RawHttp,
    #[serde(default)]
    tls: tls::RawTls,
    #[serde(default)]
    wechat: RawWechat,
    #[serde(default)]
    orders: RawOrders,
    #[serde(default)]
    sandbox: RawSandbox,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    notifies: RawNotifies,
    #[serde(default)]
    reconcile: RawReconcile,
    #[serde(default)]
    products: Vec<RawProduct>,
    #[serde(default)]
    platforms: Vec<platforms::RawPlatform>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProduct {
    id: String,
    name: String,
    price: u64,
}

/// The most products a catalogue holds (the admin page lists them all).
const MAX_PRODUCTS: usize = 1000;

fn catalogue(raw: Vec<RawProduct>, max_total_fee: u64) -> Result<Catalogue, ConfigError> {
    if raw.len() > MAX_PRODUCTS {
        return Err(invalid("products", format!("at most {MAX_PRODUCTS} products")));
    }
    let mut products: Vec<Product> = Vec::with_capacity(raw.len());
    for (i, p) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("products[{i}].{field}");
        let id_ok =
            (1..=32).contains(&p.id.len()) && p.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !id_ok {
            return Err(invalid(&key("id"), format!("{:?} must be 1 to 32 of A-Z a-z 0-9 - _", p.id)));
        }
        if products.iter().any(|q| q.id == p.id) {
            return Err(invalid(&key("id"), format!("{:?} is used twice", p.id)));
        }
        if p.name.trim().is_empty() || p.name.len() > 127 {
            return Err(invalid(&key("name"), "must be 1 to 127 bytes (WeChat's limit for the goods description)"));
        }
        if !(1..=max_total_fee).contains(&p.price) {
            return Err(invalid(&key("price"), format!("must be 1 to {max_total_fee} fen (orders.max_total_fee)")));
        }
        products.push(Product { id: p.id, name: p.name, price: p.price });
    }
    Ok(Catalogue::new(products))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotifies {
    keep_days: Option<u32>,
    keep_mb: Option<u64>,
    refused_per_peer_per_minute: Option<u32>,
}

impl RawNotifies {
    fn validate(self) -> Result<NotifiesConfig, ConfigError> {
        let days = match self.keep_days.unwrap_or(90) {
            d @ 1..=3650 => d,
            _ => return Err(invalid("notifies.keep_days", "must be from 1 to 3650 (days)")),
        };
        let mb = match self.keep_mb.unwrap_or(256) {
            mb @ 1..=1_048_576 => mb,
            _ => return Err(invalid("notifies.keep_mb", "must be from 1 to 1048576 (megabytes)")),
        };
        let per_minute = match self.refused_per_peer_per_minute.unwrap_or(30) {
            n @ 0..=100_000 => n,
            _ => return Err(invalid("notifies.refused_per_peer_per_minute", "must be from 0 to 100000")),
        };
        Ok(NotifiesConfig {
            retention: Retention { max_age_ms: i64::from(days) * 86_400_000, max_bytes: mb * 1024 * 1024 },
            refused_per_peer_per_minute: per_minute,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReconcile {
    enabled: Option<bool>,
    keep_bills_days: Option<u32>,
}

impl RawReconcile {
    fn validate(self) -> Result<ReconcileConfig, ConfigError> {
        Ok(ReconcileConfig {
            enabled: self.enabled.unwrap_or(true),
            keep_bills_days: match self.keep_bills_days.unwrap_or(400) {
                d @ 1..=3650 => d,
                _ => return Err(invalid("reconcile.keep_bills_days", "must be from 1 to 3650 (days)")),
            },
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    cache_mb: Option<u64>,
    max_pending_writes: Option<usize>,
}

impl RawStorage {
    fn validate(self) -> Result<StoreOptions, ConfigError> {
        let defaults = StoreOptions::default();
        let cache_bytes = match self.cache_mb {
            None => defaults.cache_bytes,
            Some(mb @ 8..=65_536) => mb * 1024 * 1024,
            Some(_) => return Err(invalid("storage.cache_mb", "must be from 8 to 65536 (megabytes)")),
        };
        let max_pending_writes = match self.max_pending_writes {
            None => defaults.max_pending_writes,
            Some(n @ 1..=1_000_000) => n,
            Some(_) => return Err(invalid("storage.max_pending_writes", "must be from 1 to 1000000")),
        };
        Ok(StoreOptions { cache_bytes, max_pending_writes, ..defaults })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
    token: Option<Secret>,
}

impl RawMetrics {
    fn validate(self, mode: Mode) -> Result<MetricsConfig, ConfigError> {
        // The sandbox picks a free port, so a demo never collides with a live server.
        let default = if mode == Mode::Sandbox { "127.0.0.1:0" } else { "127.0.0.1:9464" };
        let token = self.token.filter(|t| !t.is_empty());
        let listen = match self.listen.as_deref().unwrap_or(default) {
            "off" => None,
            addr => Some(parse_addr("metrics.listen", addr)?),
        };
        if listen.is_some_and(|a| !a.ip().is_loopback()) && token.is_none() {
            return Err(invalid(
                "metrics.listen",
                "is not a loopback address: set [metrics] token too, or anyone who reaches it reads your figures",
            ));
        }
        Ok(MetricsConfig { listen, token })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    password_hash: Option<Secret>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<String>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    reserved_connections: Option<usize>,
    reserved_connections_per_ip: Option<usize>,
    first_request_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    body_timeout_secs: Option<u64>,
    write_timeout_secs: Option<u64>,
}

impl RawHttp {
    fn limits(&self) -> Result<ConnectionLimits, ConfigError> {
        let defaults = ConnectionLimits::default();
        let total = match self.max_connections.unwrap_or(defaults.total) {
            n @ 1..=1_000_000 => n,
            _ => return Err(invalid("http.max_connections", "must be from 1 to 1000000")),
        };
        let per_ip = match self.max_connections_per_ip.unwrap_or(defaults.per_ip.min(total)) {
            n if (1..=total).contains(&n) => n,
            _ => return Err(invalid("http.max_connections_per_ip", "must be from 1 to http.max_connections")),
        };
        // A quarter of the places by default, whatever max_connections is.
        let reserved = match self.reserved_connections.unwrap_or(total / 4) {
            n if n <= total => n,
            _ => return Err(invalid("http.reserved_connections", "must be from 0 to http.max_connections")),
        };
        let reserved_per_ip = match self.reserved_connections_per_ip.unwrap_or(defaults.reserved_per_ip.min(per_ip)) {
            n if (1..=per_ip).contains(&n) => n,
            _ => {
                return Err(invalid(
                    "http.reserved_connections_per_ip",
                    "must be from 1 to http.max_connections_per_ip",
                ))
            }
        };
        let secs = |key: &str, value: Option<u64>, default: Duration| match value {
            None => Ok(default),
            Some(n @ 1..=3600) => Ok(Duration::from_secs(n)),
            Some(_) => Err(invalid(key, "must be from 1 to 3600 (seconds)")),
        };
        Ok(ConnectionLimits {
            total,
            per_ip,
            reserved,
            reserved_per_ip,
            first_request: secs(
                "http.first_request_timeout_secs",
                self.first_request_timeout_secs,
                defaults.first_request,
            )?,
            idle: secs("http.idle_timeout_secs", self.idle_timeout_secs, defaults.idle)?,
            body: secs("http.body_timeout_secs", self.body_timeout_secs, defaults.body)?,
            write: secs("http.write_timeout_secs", self.write_timeout_secs, defaults.write)?,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWechat {
    appid: Option<String>,
    app_secret: Option<Secret>,
    mch_id: Option<String>,
    mch_key: Option<Secret>,
    sign_type: Option<String>,
    api_version: Option<String>,
    apiv3_key: Option<Secret>,
    merchant_key_file: Option<PathBuf>,
    merchant_serial: Option<String>,
    public_key_file: Option<PathBuf>,
    public_key_id: Option<String>,
    platform_certificates: Option<bool>,
    client_cert_file: Option<PathBuf>,
    client_key_file: Option<PathBuf>,
    client_p12_file: Option<PathBuf>,
    client_p12_password: Option<Secret>,
    secapi_base_url: Option<String>,
    secapi_ca_file: Option<PathBuf>,
    pay_base_url: Option<String>,
    sns_base_url: Option<String>,
    notify_url: Option<String>,
    timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrders {
    accept_client_amount: Option<bool>,
    max_total_fee: Option<u64>,
    expire_minutes: Option<u64>,
    queries_per_second: Option<u32>,
    unified_orders_per_peer_per_minute: Option<u32>,
    openid_per_peer_per_minute: Option<u32>,
    wechat_calls_per_second: Option<u32>,
    max_failed_prepays: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSandbox {
    simulator_listen: Option<String>,
}

/// Environment variables that are secrets: their value may come from `<NAME>_FILE`.
const SECRET_VARS: &[&str] =
    &["WECHAT_MCH_KEY", "WECHAT_APIV3_KEY", "WECHAT_APP_SECRET", "ADMIN_PASSWORD_HASH", "METRICS_TOKEN"];

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

impl RawConfig {
    /// Applies one `PAYBRIDGE_<NAME>` override; `name` is without the prefix.
    fn set_from_env(&mut self, name: &str, value: String) -> Result<(), ConfigError> {
        let var = format!("PAYBRIDGE_{name}");
        match name {
            "MODE" => self.mode = Some(value),
            "DATA_DIR" => self.data_dir = Some(value.into()),
            "HTTP_LISTEN" => self.http.listen = Some(value),
            "HTTP_MAX_CONNECTIONS" => {
                self.http.max_connections = Some(parsed(&var, &value, "expected a whole number")?)
            }
            "HTTP_FIRST_REQUEST_TIMEOUT_SECS" => {
                self.http.first_request_timeout_secs = Some(parsed(&var, &value, "expected seconds")?)
            }
            "HTTP_BODY_TIMEOUT_SECS" => self.http.body_timeout_secs = Some(parsed(&var, &value, "expected seconds")?),
            "HTTP_IDLE_TIMEOUT_SECS" => self.http.idle_timeout_secs = Some(parsed(&var, &value, "expected seconds")?),
            "HTTP_WRITE_TIMEOUT_SECS" => self.http.write_timeout_secs = Some(parsed(&var, &value, "expected seconds")?),
            "HTTP_MAX_CONNECTIONS_PER_IP" => {
                self.http.max_connections_per_ip = Some(parsed(&var, &value, "expected a whole number")?)
            }
            "HTTP_RESERVED_CONNECTIONS" => {
                self.http.reserved_connections = Some(parsed(&var, &value, "expected a whole number")?)
            }
            "HTTP_RESERVED_CONNECTIONS_PER_IP" => {
                self.http.reserved_connections_per_ip = Some(parsed(&var, &value, "expected a whole number")?)
            }
            "WECHAT_APPID" => self.wechat.appid = Some(value),
            "WECHAT_APP_SECRET" => self.wechat.app_secret = Some(Secret::new(value)),
            "WECHAT_MCH_ID" => self.wechat.mch_id = Some(value),
            "WECHAT_MCH_KEY" => self.wechat.mch_key = Some(Secret::new(value)),
            "WECHAT_SIGN_TYPE" => self.wechat.sign_type = Some(value),
            "WECHAT_API_VERSION" => self.wechat.api_version = Some(value),
            "WECHAT_APIV3_KEY" => self.wechat.apiv3_key = Some(Secret::new(value)),
            "WECHAT_MERCHANT_KEY_FILE" => self.wechat.merchant_key_file = Some(value.into()),
            "WECHAT_MERCHANT_SERIAL" => self.wechat.merchant_serial = Some(value),
            "WECHAT_PUBLIC_KEY_FILE" => self.wechat.public_key_file = Some(value.into()),
            "WECHAT_PUBLIC_KEY_ID" => self.wechat.public_key_id = Some(value),
            "WECHAT_PLATFORM_CERTIFICATES" => {
                self.wechat.platform_certificates = Some(parsed(&var, &value, "expected true or false")?)
            }
            "WECHAT_PAY_BASE_URL" => self.wechat.pay_base_url = Some(value),
            "WECHAT_SNS_BASE_URL" => self.wechat.sns_base_url = Some(value),
            "WECHAT_NOTIFY_URL" => self.wechat.notify_url = Some(value),
            "WECHAT_TIMEOUT_MS" => {
                self.wechat.timeout_ms = Some(parsed(&var, &value, "expected a whole number of milliseconds")?)
            }
            "ORDERS_ACCEPT_CLIENT_AMOUNT" => {
                self.orders.accept_client_amount = Some(parsed(&var, &value, "expected true or false")?)
            }
            "ORDERS_MAX_TOTAL_FEE" => self.orders.max_total_fee = Some(parsed(&var, &value, "expected fen")?),
            "ORDERS_EXPIRE_MINUTES" => {
                self.orders.expire_minutes = Some(parsed(&var, &value, "expected a whole number of minutes")?)
            }
            "ORDERS_QUERIES_PER_SECOND" => {
                self.orders.queries_per_second = Some(parsed(&var, &value, "expected a whole number")?)
            }
            "ORDERS_UNIFIED_ORDERS_PER_PEER_PER_MINUTE" => {
                self.orders.unified_orders_per_peer_per_minute = Some(parsed(&var, &value, "expected a whole number")?)
            }
            "ORDERS_OPENID_PER_PEER_PER_MINUTE" => {
                self.orders.openid_per_peer_per_minute = Some(parsed(&var, &value, "expected a whole number")?)
            }
            "ORDERS_WECHAT_CALLS_PER_SECOND" => {
                self.orders.wechat_calls_per_second = Some(parsed(&var, &value, "expected a whole number")?)
            }
            "ORDERS_MAX_FAILED_PREPAYS" => {
                self.orders.max_failed_prepays = Some(parsed(&var, &value, "expected a whole number")?)
            }
            "RECONCILE_ENABLED" => self.reconcile.enabled = Some(parsed(&var, &value, "expected true or false")?),
            "RECONCILE_KEEP_BILLS_DAYS" => {
                self.reconcile.keep_bills_days = Some(parsed(&var, &value, "expected days")?)
            }
            "NOTIFIES_KEEP_DAYS" => self.notifies.keep_days = Some(parsed(&var, &value, "expected days")?),
            "NOTIFIES_KEEP_MB" => self.notifies.keep_mb = Some(parsed(&var, &value, "expected megabytes")?),
            "NOTIFIES_REFUSED_PER_PEER_PER_MINUTE" => {
                self.notifies.refused_per_peer_per_minute = Some(parsed(&var, &value, "expected a whole number")?)
            }
            "SANDBOX_SIMULATOR_LISTEN" => self.sandbox.simulator_listen = Some(value),
            "ADMIN_PASSWORD_HASH" => self.admin.password_hash = Some(Secret::new(value)),
            "METRICS_TOKEN" => self.metrics.token = Some(Secret::new(value)),
            "METRICS_LISTEN" => self.metrics.listen = Some(value),
            "LOG_FORMAT" => self.log.format = Some(value),
            "STORAGE_CACHE_MB" => self.storage.cache_mb = Some(parsed(&var, &value, "expected a whole number")?),
            "STORAGE_MAX_PENDING_WRITES" => {
                self.storage.max_pending_writes = Some(parsed(&var, &value, "expected a whole number")?)
            }
            _ => {
                let known = name.strip_prefix("TLS_").is_some_and(|key| self.tls.set_from_env(key, value));
                if !known {
                    return Err(invalid(&var, "unknown setting (see the README's config reference)"));
                }
            }
        }
        Ok(())
    }

    fn apply_env(&mut self, vars: impl Iterator<Item = (String, String)>) -> Result<(), ConfigError> {
        for (var, value) in vars {
            let Some(name) = var.strip_prefix("PAYBRIDGE_") else {
                continue;
            };
            if matches!(name, "CONFIG" | "LOG" | "ADMIN_PASSWORD") {
                continue; // read by the CLI, the logger and install.sh: not settings
            }
            match name.strip_suffix("_FILE").filter(|base| SECRET_VARS.contains(base)) {
                Some(base) => {
                    let content = std::fs::read_to_string(&value)
                        .map_err(|e| invalid(&var, format!("cannot read {value}: {e}")))?;
                    self.set_from_env(base, content.trim_end_matches(['\r', '\n']).to_owned())?;
                }
                None => self.set_from_env(name, value)?,
            }
        }
        Ok(())
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
        let mut raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?;
        raw.apply_env(env)?;
        raw.validate()
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
        let product = |id: &str, name: &str, price| RawProduct { id: id.into(), name: name.into(), price };
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
            wechat: RawWechat { api_version: Some(version.into()), ..RawWechat::default() },
            products: vec![product("demo", "PayBridge demo", 1), product("vip-month", "会员月卡", 1990)],
            platforms: vec![demo],
            ..RawConfig::default()
        };
        raw.validate().expect("the built-in sandbox config is valid")
    }

    /// The effective settings as TOML-like text, secrets masked (`check-config`).
    pub fn describe(&self) -> String {
        let masked = |s: &Secret| if s.is_empty() { "(not set)" } else { "\"***\" (set)" };
        let opt = |p: &Option<PathBuf>| {
            p.as_ref().map_or("(not set)".to_owned(), |p| format!("{:?}", p.display().to_string()))
        };
        let w = &self.wechat;
        let t = &self.tls;
        let mut out =
            format!("mode = {:?}\ndata_dir = {:?}\n\n", self.mode.as_str(), self.data_dir.display().to_string());
        out += &format!(
            "[http]\nlisten = {}\nmax_connections = {}\nmax_connections_per_ip = {}\nreserved_connections = {}\n\
             reserved_connections_per_ip = {}\n\
             first_request_timeout_secs = {}\nidle_timeout_secs = {}\nbody_timeout_secs = {}\n\
             write_timeout_secs = {}\n\n",
            self.http.listen.map_or("\"off\"".to_owned(), |a| format!("\"{a}\"")),
            self.http.limits.total,
            self.http.limits.per_ip,
            self.http.limits.reserved,
            self.http.limits.reserved_per_ip,
            self.http.limits.first_request.as_secs(),
            self.http.limits.idle.as_secs(),
            self.http.limits.body.as_secs(),
            self.http.limits.write.as_secs()
        );
        out += &format!("[tls]\nmode = {:?}\n", t.mode.as_str());
        if t.enabled() {
            out += &format!("listen = \"{}\"\ndomains = {:?}\n", t.listen, t.domains);
            if t.mode == TlsMode::Acme {
                out += &format!(
                    "acme_directory = \"{}\"\nacme_contact = {:?}\nacme_directory_ca = {}\n",
                    t.acme_directory,
                    t.acme_contact.as_deref().unwrap_or("(not set)"),
                    opt(&t.acme_directory_ca)
                );
            }
            if t.mode == TlsMode::Files {
                out += &format!("cert_file = {}\nkey_file = {}\n", opt(&t.cert_file), opt(&t.key_file));
            }
        }
        out += &format!(
            "\n[wechat]\napi_version = {:?}\nappid = {:?}\napp_secret = {}\nmch_id = {:?}\n",
            w.api.version(),
            w.appid,
            masked(&w.app_secret),
            w.mch_id
        );
        match &w.api {
            PayApi::V2 { mch_key, sign_type } => {
                out += &format!("mch_key = {}\nsign_type = {:?}\n", masked(mch_key), sign_type.as_str())
            }
            PayApi::V3(keys) => {
                out += &format!(
                    "apiv3_key = {}\nmerchant_key_file = {} (an RSA private key: read and checked)\nmerchant_serial = {:?}\n",
                    masked(&keys.apiv3_key_text),
                    opt(&keys.merchant_key_file),
                    keys.merchant_serial
                );
                if let Some(public) = &keys.public_key {
                    out += &format!("public_key_file = {}\npublic_key_id = {:?}\n", opt(&public.file), public.id);
                }
                out += &format!(
                    "platform_certificates = {}\n# verifies WeChat with: {}\n",
                    keys.platform_certificates,
                    keys.key_mode()
                );
            }
        }
        out += &format!(
            "pay_base_url = \"{}\"\nsns_base_url = \"{}\"\nnotify_url = \"{}\"\ntimeout_ms = {}\n\n",
            w.pay_base_url,
            w.sns_base_url,
            w.notify_url,
            w.timeout.as_millis()
        );
        out += &format!(
            "[orders]\naccept_client_amount = {}\nmax_total_fee = {}\nexpire_minutes = {}\nqueries_per_second = {}\n\
             unified_orders_per_peer_per_minute = {}\nopenid_per_peer_per_minute = {}\nwechat_calls_per_second = {}\n\
             max_failed_prepays = {}\n\n",
            self.orders.accept_client_amount,
            self.orders.max_total_fee,
            self.orders.expire_after.as_secs() / 60,
            self.orders.queries_per_second,
            self.orders.unified_orders_per_peer_per_minute,
            self.orders.openid_per_peer_per_minute,
            self.orders.wechat_calls_per_second,
            self.orders.max_failed_prepays
        );
        for p in self.products.all() {
            out += &format!("[[products]]\nid = {:?}\nname = {:?}\nprice = {}\n\n", p.id, p.name, p.price);
        }
        for p in self.platforms.all() {
            out +=
                &format!("[[platforms]]\nid = {:?}\nkey = \"***\" (set)\nwebhook_url = \"{}\"\n", p.id, p.webhook_url);
            if let Some(appid) = &p.appid {
                out += &format!("appid = {appid:?}\n");
            }
            if let Some((_, until)) = &p.previous_key {
                out += &format!("previous_key = \"***\" (set, accepted until unix ms {until})\n");
            }
            out += "\n";
        }
        out += &format!(
            "[notifies]\nkeep_days = {}\nkeep_mb = {}\nrefused_per_peer_per_minute = {}\n\n",
            self.notifies.retention.max_age_ms / 86_400_000,
            self.notifies.retention.max_bytes / (1024 * 1024),
            self.notifies.refused_per_peer_per_minute
        );
        out += &format!(
            "[reconcile]\nenabled = {}\nkeep_bills_days = {}\n\n",
            self.reconcile.enabled, self.reconcile.keep_bills_days
        );
        out += &format!(
            "[storage]\ncache_mb = {}\nmax_pending_writes = {}\n\n",
            self.storage.cache_bytes / (1024 * 1024),
            self.storage.max_pending_writes
        );
        out += &format!(
            "[metrics]\nlisten = {}\ntoken = {}\n\n",
            self.metrics.listen.map_or("\"off\"".to_owned(), |a| format!("\"{a}\"")),
            self.metrics.token.as_ref().map_or("(not set)", masked)
        );
        out += &format!(
            "[admin]\npassword_hash = {}\n",
            match &self.admin.password_hash {
                Some(_) => "\"***\" (set)",
                None => "(not set: the admin page is locked; run `paybridge admin set-password`)",
            }
        );
        if self.mode == Mode::Sandbox {
            out += &format!("\n[sandbox]\nsimulator_listen = \"{}\"\n", self.sandbox.simulator_listen);
        }
        out
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

/// An environment override's value as a number (or bool), or an error naming the variable.
fn parsed<T: std::str::FromStr>(var: &str, value: &str, expected: &str) -> Result<T, ConfigError> {
    value.parse().map_err(|_| invalid(var, expected))
}

pub(crate) fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| invalid(key, format!("{value:?} is not an address like \"127.0.0.1:8080\"")))
}

fn parse_base_url(key: &str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value).map_err(|e| invalid(key, format!("{value:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(key, format!("{value:?} must be an http:// or https:// URL")));
    }
    Ok(url)
}

fn required(key: &str, value: Option<String>) -> Result<String, ConfigError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(invalid(key, "is required in live mode")),
    }
}

/// The sandbox's built-in credentials (public: sandbox only).
pub use crate::sandbox::keys as sandbox_credentials;

impl RawConfig {
    fn validate(mut self) -> Result<Config, ConfigError> {
        let mode = match self.mode.as_deref() {
            None | Some("live") => Mode::Live,
            Some("sandbox") => Mode::Sandbox,
            Some(other) => return Err(invalid("mode", format!("must be \"live\" or \"sandbox\", not {other:?}"))),
        };
        let tls = self.tls.validate()?;
        let password_hash = match self.admin.password_hash.filter(|h| !h.is_empty()) {
            Some(hash) if crate::admin::auth::is_valid_hash(hash.expose()) => Some(hash),
            Some(_) => {
                return Err(invalid(
                    "admin.password_hash",
                    "is not an Argon2id hash; set it with `paybridge admin set-password --config FILE`",
                ))
            }
            None => None,
        };
        let limits = self.http.limits()?;
        let listen = match self.http.listen.as_deref().unwrap_or("127.0.0.1:8080") {
            "off" if tls.enabled() => None,
            "off" => return Err(invalid("http.listen", "cannot be \"off\" while [tls] mode is \"off\"")),
            addr => Some(parse_addr("http.listen", addr)?),
        };
        let simulator_listen = parse_addr(
            "sandbox.simulator_listen",
            self.sandbox.simulator_listen.as_deref().unwrap_or("127.0.0.1:8081"),
        )?;
        let timeout = Duration::from_millis(self.wechat.timeout_ms.unwrap_or(10_000));
        if timeout.is_zero() {
            return Err(invalid("wechat.timeout_ms", "must be more than 0"));
        }
        let sign_type = match self.wechat.sign_type.as_deref() {
            None => SignType::Md5,
            Some(name) => SignType::parse(name).ok_or_else(|| {
                invalid("wechat.sign_type", format!("must be \"MD5\" or \"HMAC-SHA256\", not {name:?}"))
            })?,
        };
        let v3 = {
            let w = &mut self.wechat;
            wechat_v3::RawV3 {
                apiv3_key: w.apiv3_key.take(),
                merchant_key_file: w.merchant_key_file.take(),
                merchant_serial: w.merchant_serial.take(),
                public_key_file: w.public_key_file.take(),
                public_key_id: w.public_key_id.take(),
                platform_certificates: w.platform_certificates.take(),
            }
        };
        let client_cert = {
            let w = &mut self.wechat;
            wechat_v2::RawClientCert {
                cert_file: w.client_cert_file.take(),
                key_file: w.client_key_file.take(),
                p12_file: w.client_p12_file.take(),
                p12_password: w.client_p12_password.take(),
                secapi_base_url: w.secapi_base_url.take(),
                secapi_ca_file: w.secapi_ca_file.take(),
            }
        };
        let api_version = match self.wechat.api_version.as_deref().unwrap_or("v2") {
            "v2" => "v2",
            "v3" => "v3",
            other => return Err(invalid("wechat.api_version", format!("must be \"v2\" or \"v3\", not {other:?}"))),
        };
        if api_version == "v2" {
            if let Some(name) = v3.first_set() {
                return Err(invalid(
                    &format!("wechat.{name}"),
                    "is an API v3 setting: set api_version = \"v3\" too, or remove it",
                ));
            }
        } else if self.wechat.sign_type.is_some() {
            return Err(invalid("wechat.sign_type", "is an API v2 setting (v3 always signs with RSA): remove it"));
        } else if let Some(name) = client_cert.any() {
            return Err(invalid(
                &format!("wechat.{name}"),
                "is for API v2 refunds (mutual TLS); API v3 refunds need only the v3 keys: remove it",
            ));
        }
        let data_dir = self.data_dir.unwrap_or_else(|| match mode {
            Mode::Live => PathBuf::from("/var/lib/paybridge"),
            Mode::Sandbox => PathBuf::from("paybridge-sandbox-data"),
        });
        // With TLS, WeChat reaches /pay/notify on the first domain; without,
        // on the plain listener (sandbox and local set-ups).
        let notify_default = match (tls.enabled(), tls.domains.first(), listen) {
            (true, Some(domain), _) if tls.listen.port() == 443 => format!("https://{domain}/pay/notify"),
            (true, Some(domain), _) => format!("https://{domain}:{}/pay/notify", tls.listen.port()),
            (_, _, Some(addr)) => format!("http://{addr}/pay/notify"),
            (_, _, None) => format!("https://{}/pay/notify", tls.listen),
        };

        let wechat = match mode {
            Mode::Sandbox => {
                // SECURITY: sandbox mode never takes real credentials or hosts, so that
                // it can never be mistaken for live mode or send anything to WeChat.
                let w = &self.wechat;
                let set = [
                    ("appid", w.appid.is_some()),
                    ("app_secret", w.app_secret.is_some()),
                    ("mch_id", w.mch_id.is_some()),
                    ("mch_key", w.mch_key.is_some()),
                    ("pay_base_url", w.pay_base_url.is_some()),
                    ("apiv3_key", v3.apiv3_key.is_some()),
                    ("merchant_key_file", v3.merchant_key_file.is_some()),
                    ("merchant_serial", v3.merchant_serial.is_some()),
                    ("public_key_file", v3.public_key_file.is_some()),
                    ("public_key_id", v3.public_key_id.is_some()),
                    ("platform_certificates", v3.platform_certificates.is_some()),
                    ("sns_base_url", w.sns_base_url.is_some()),
                ];
                let client_cert_key = client_cert.any().map(|name| (name, true));
                if let Some((name, _)) = set.iter().copied().find(|(_, is_set)| *is_set).or(client_cert_key) {
                    return Err(invalid(
                        &format!("wechat.{name}"),
                        "sandbox mode uses the simulator's built-in merchant; remove this key or set mode = \"live\"",
                    ));
                }
                // The simulator's real address is only known once it is bound.
                let sim = Url::parse(&format!("http://{simulator_listen}")).expect("an address makes a URL");
                WechatConfig {
                    appid: sandbox_credentials::APPID.into(),
                    app_secret: Secret::new(sandbox_credentials::APP_SECRET),
                    mch_id: sandbox_credentials::MCH_ID.into(),
                    api: match api_version {
                        "v3" => PayApi::V3(std::sync::Arc::new(sandbox_v3_keys())),
                        _ => PayApi::V2 { mch_key: Secret::new(sandbox_credentials::MCH_KEY), sign_type },
                    },
                    pay_base_url: sim.clone(),
                    sns_base_url: sim,
                    notify_url: parse_notify_url(self.wechat.notify_url.as_deref().unwrap_or(&notify_default))?,
                    timeout,
                    // The simulator's, once it runs (API v2).
                    refund_tls: None,
                }
            }
            Mode::Live => {
                let w = self.wechat;
                let api = match api_version {
                    "v3" => {
                        if w.mch_key.is_some() {
                            return Err(invalid(
                                "wechat.mch_key",
                                "is the API v2 key; with api_version = \"v3\" PayBridge uses apiv3_key: remove it",
                            ));
                        }
                        PayApi::V3(std::sync::Arc::new(v3.validate()?))
                    }
                    _ => {
                        let mch_key = w
                            .mch_key
                            .filter(|k| !k.is_empty())
                            .ok_or_else(|| invalid("wechat.mch_key", "is required in live mode (API v2)"))?;
                        if mch_key.expose().chars().count() != 32 {
                            return Err(invalid(
                                "wechat.mch_key",
                                "must be the 32-character API key from the merchant platform",
                            ));
                        }
                        PayApi::V2 { mch_key, sign_type }
                    }
                };
                let app_secret = w
                    .app_secret
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| invalid("wechat.app_secret", "is required in live mode"))?;
                let mch_id = required("wechat.mch_id", w.mch_id)?;
                if !mch_id.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid("wechat.mch_id", format!("{mch_id:?} is not a merchant number (digits only)")));
                }
                let refund_tls = client_cert.validate(&mch_id)?;
                let notify_url = match (w.notify_url, tls.enabled() && !tls.domains.is_empty()) {
                    (Some(url), _) => url,
                    (None, true) => notify_default,
                    (None, false) => {
                        return Err(invalid(
                            "wechat.notify_url",
                            "is required without [tls] domains: the https:// URL of /pay/notify on this server",
                        ))
                    }
                };
                let appid = required("wechat.appid", w.appid)?;
                if !is_appid(&appid) {
                    return Err(invalid(
                        "wechat.appid",
                        format!("{appid:?} is not a mini-program AppID (\"wx\" and 16 hex digits, as in the console)"),
                    ));
                }
                WechatConfig {
                    appid,
                    app_secret,
                    mch_id,
                    api,
                    pay_base_url: parse_base_url(
                        "wechat.pay_base_url",
                        w.pay_base_url.as_deref().unwrap_or(WECHAT_PAY_BASE_URL),
                    )?,
                    sns_base_url: parse_base_url(
                        "wechat.sns_base_url",
                        w.sns_base_url.as_deref().unwrap_or(WECHAT_SNS_BASE_URL),
                    )?,
                    notify_url: parse_notify_url(&notify_url)?,
                    timeout,
                    refund_tls,
                }
            }
        };
        let max_total_fee = match self.orders.max_total_fee.unwrap_or(DEFAULT_MAX_TOTAL_FEE) {
            // WeChat's own ceiling for total_fee is far below this; a sum
            // of such orders still cannot overflow a u64.
            fen @ 1..=100_000_000_000 => fen,
            _ => return Err(invalid("orders.max_total_fee", "must be from 1 to 100000000000 (fen)")),
        };
        Ok(Config {
            products: catalogue(self.products, max_total_fee)?,
            platforms: platforms::platforms(self.platforms)?,
            mode,
            data_dir,
            http: HttpConfig { listen, limits },
            tls,
            wechat,
            orders: OrdersConfig {
                accept_client_amount: self.orders.accept_client_amount.unwrap_or(mode == Mode::Sandbox),
                max_total_fee,
                expire_after: match self.orders.expire_minutes.unwrap_or(120) {
                    // WeChat wants at least a few minutes; a prepay id lives 2 hours but
                    // an order may stay payable longer (a new prepay is fetched).
                    m @ 5..=10_080 => Duration::from_secs(m * 60),
                    _ => return Err(invalid("orders.expire_minutes", "must be from 5 to 10080 (7 days)")),
                },
                queries_per_second: match self.orders.queries_per_second.unwrap_or(5) {
                    n @ 1..=100 => n,
                    _ => return Err(invalid("orders.queries_per_second", "must be from 1 to 100")),
                },
                unified_orders_per_peer_per_minute: match self.orders.unified_orders_per_peer_per_minute.unwrap_or(1200)
                {
                    n @ 1..=1_000_000 => n,
                    _ => return Err(invalid("orders.unified_orders_per_peer_per_minute", "must be from 1 to 1000000")),
                },
                openid_per_peer_per_minute: match self.orders.openid_per_peer_per_minute.unwrap_or(1200) {
                    n @ 1..=1_000_000 => n,
                    _ => return Err(invalid("orders.openid_per_peer_per_minute", "must be from 1 to 1000000")),
                },
                wechat_calls_per_second: match self.orders.wechat_calls_per_second.unwrap_or(400) {
                    n @ 1..=10_000 => n,
                    _ => return Err(invalid("orders.wechat_calls_per_second", "must be from 1 to 10000")),
                },
                max_failed_prepays: match self.orders.max_failed_prepays.unwrap_or(10) {
                    n @ 1..=1000 => n,
                    _ => return Err(invalid("orders.max_failed_prepays", "must be from 1 to 1000")),
                },
            },
            sandbox: SandboxConfig { simulator_listen },
            admin: AdminConfig { password_hash },
            metrics: self.metrics.validate(mode)?,
            log: match self.log.format.as_deref() {
                None | Some("human") => LogConfig::Human,
                Some("json") => LogConfig::Json,
                Some(other) => {
                    return Err(invalid("log.format", format!("must be \"human\" or \"json\", not {other:?}")))
                }
            },
            storage: self.storage.validate()?,
            notifies: self.notifies.validate()?,
            reconcile: self.reconcile.validate()?,
        })
    }
}

/// A mini-program AppID: `wx` and 16 lowercase hex digits.
pub(crate) fn is_appid(appid: &str) -> bool {
    appid.len() == 18
        && appid.starts_with("wx")
        && appid[2..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Config {
    /// What is valid but likely wrong, for `check-config` and the start-up
    /// log. `path` is the config file, if any.
    pub fn warnings(&self, path: Option<&Path>) -> Vec<String> {
        let mut out = Vec::new();
        if self.mode == Mode::Live {
            if self.wechat.notify_url.scheme() != "https" {
                out.push(format!(
                    "wechat.notify_url {} is not https://: WeChat Pay may refuse it, and notifies would cross the \
                     internet unencrypted",
                    self.wechat.notify_url
                ));
            }
            if self.wechat.notify_url.host_str().is_some_and(|h| h == "localhost" || h.starts_with("127.")) {
                out.push(format!(
                    "wechat.notify_url {} is not reachable from WeChat's servers",
                    self.wechat.notify_url
                ));
            }
            for p in self.platforms.all() {
                if p.webhook_url.scheme() != "https" {
                    out.push(format!(
                        "platforms {:?}: webhook_url {} is not https://: payment results would cross the internet \
                         unencrypted",
                        p.id, p.webhook_url
                    ));
                }
            }
            if self.orders.accept_client_amount {
                out.push(
                    "orders.accept_client_amount = true: the mini-program chooses what it pays (UNSAFE; see \
                     \"Amounts\" in the README)"
                        .into(),
                );
            }
        }
        let limits = &self.http.limits;
        if limits.reserved_per_ip.saturating_mul(crate::server::STALLING_ADDRESSES) >= limits.reserved {
            out.push(format!(
                "http.reserved_connections = {} with reserved_connections_per_ip = {}: {} addresses holding their \
                 connections can take every place, and new payers are refused",
                limits.reserved,
                limits.reserved_per_ip,
                crate::server::STALLING_ADDRESSES
            ));
        }
        if let Some(path) = path {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path) {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o004 != 0 {
                    out.push(format!(
                        "{} is readable by every user of this machine (mode {mode:03o}) and holds secrets: \
                         chmod 640 it",
                        path.display()
                    ));
                }
            }
        }
        out
    }
}

fn parse_notify_url(value: &str) -> Result<Url, ConfigError> {
    let url = parse_base_url("wechat.notify_url", value)?;
    if url.query().is_some() {
        return Err(invalid("wechat.notify_url", "WeChat refuses a notify URL with a query string"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: &str = r#"
        data_dir = "/tmp/pb"
        [http]
        listen = "127.0.0.1:9000"
        [wechat]
        appid = "wxd930ea5d5a258f4f"
        app_secret = "s3cr3t"
        mch_id = "10000100"
        mch_key = "192006250b4c09247ec02edce69f6a2d"
        sign_type = "HMAC-SHA256"
        notify_url = "https://pay.example.com/pay/notify"
    "#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        Config::from_toml(text, Path::new("test.toml"), env.into_iter())
    }

    fn error(text: &str, env: &[(&str, &str)]) -> String {
        load(text, env).unwrap_err().to_string()
    }

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
    fn environment_overrides_secrets_and_names_bad_values() {
        let c = load(LIVE, &[("PAYBRIDGE_WECHAT_MCH_KEY", "ffffffffffffffffffffffffffffffff")]).unwrap();
        assert_eq!(c.wechat.api.token_secret().expose(), "ffffffffffffffffffffffffffffffff");
        let e = error(LIVE, &[("PAYBRIDGE_ORDERS_ACCEPT_CLIENT_AMOUNT", "yes")]);
        assert!(e.contains("PAYBRIDGE_ORDERS_ACCEPT_CLIENT_AMOUNT") && e.contains("true or false"), "{e}");
        assert!(error(LIVE, &[("PAYBRIDGE_WECHAT_MCH_KY", "x")]).contains("PAYBRIDGE_WECHAT_MCH_KY"));
    }

    #[test]
    fn connection_limits_have_keys_overrides_and_a_warning() {
        let c = load(LIVE, &[]).unwrap();
        assert_eq!(c.http.limits, ConnectionLimits::default());
        assert_eq!(c.http.limits.write, Duration::from_secs(30));
        assert!(!c.warnings(None).iter().any(|w| w.contains("max_connections_per_ip")), "defaults leave room");
        let c = load(&LIVE.replace("[http]", "[http]\nwrite_timeout_secs = 7"), &[]).unwrap();
        assert_eq!(c.http.limits.write, Duration::from_secs(7));
        let c = load(LIVE, &[("PAYBRIDGE_HTTP_WRITE_TIMEOUT_SECS", "9")]).unwrap();
        assert_eq!(c.http.limits.write, Duration::from_secs(9));
        assert!(c.describe().contains("write_timeout_secs = 9"));
        let e = error(&LIVE.replace("[http]", "[http]\nwrite_timeout_secs = 0"), &[]);
        assert!(e.contains("http.write_timeout_secs") && e.contains("1 to 3600"), "{e}");
        let e = error(LIVE, &[("PAYBRIDGE_HTTP_WRITE_TIMEOUT_SECS", "soon")]);
        assert!(e.contains("PAYBRIDGE_HTTP_WRITE_TIMEOUT_SECS") && e.contains("seconds"), "{e}");
        assert!(c.describe().contains("reserved_connections = 512\nreserved_connections_per_ip = 4\n"));
        let c = load(
            LIVE,
            &[("PAYBRIDGE_HTTP_MAX_CONNECTIONS", "400"), ("PAYBRIDGE_HTTP_RESERVED_CONNECTIONS_PER_IP", "2")],
        )
        .unwrap();
        assert_eq!((c.http.limits.reserved, c.http.limits.reserved_per_ip), (100, 2), "a quarter by default");
        let e = error(&LIVE.replace("[http]", "[http]\nmax_connections = 10\nreserved_connections = 11"), &[]);
        assert!(e.contains("http.reserved_connections") && e.contains("0 to http.max_connections"), "{e}");
        let e =
            error(&LIVE.replace("[http]", "[http]\nmax_connections_per_ip = 3\nreserved_connections_per_ip = 4"), &[]);
        assert!(e.contains("http.reserved_connections_per_ip"), "{e}");
        // A reserve 64 addresses can fill protects nobody.
        let c = load(LIVE, &[("PAYBRIDGE_HTTP_RESERVED_CONNECTIONS", "0")]).unwrap();
        let warnings = c.warnings(None);
        assert!(warnings.iter().any(|w| w.contains("http.reserved_connections = 0")), "{warnings:?}");
    }

    #[test]
    fn secret_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee\n").unwrap();
        let c = load(LIVE, &[("PAYBRIDGE_WECHAT_MCH_KEY_FILE", file.to_str().unwrap())]).unwrap();
        assert_eq!(c.wechat.api.token_secret().expose(), "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee");
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
    fn errors_and_debug_never_show_secrets() {
        let c = load(LIVE, &[]).unwrap();
        let described = c.describe();
        assert!(described.contains("mch_key = \"***\" (set)") && described.contains("appid = \"wxd930ea5d5a258f4f\""));
        assert!(described.contains("password_hash = (not set"));
        let printed = format!("{c:?}{described}");
        assert!(!printed.contains("192006250b4c09247ec02edce69f6a2d") && !printed.contains("s3cr3t"));
    }

    #[test]
    fn tls_domains_give_the_notify_url() {
        let text = LIVE.replace("notify_url = \"https://pay.example.com/pay/notify\"", "")
            + "[tls]\ndomains = [\"pay.example.com\"]\nacme_contact = \"ops@example.com\"\n";
        let c = load(&text, &[]).unwrap();
        assert_eq!(c.tls.mode, TlsMode::Acme);
        assert_eq!(c.wechat.notify_url.as_str(), "https://pay.example.com/pay/notify");
        let off = text.replace("listen = \"127.0.0.1:9000\"", "listen = \"off\"");
        assert_eq!(load(&off, &[]).unwrap().http.listen, None);
        let e = error(&LIVE.replace("listen = \"127.0.0.1:9000\"", "listen = \"off\""), &[]);
        assert!(e.contains("http.listen"), "{e}");
        let c = load(&text, &[("PAYBRIDGE_TLS_DOMAINS", "a.example.com, b.example.com")]).unwrap();
        assert_eq!(c.tls.domains, ["a.example.com", "b.example.com"]);
    }

    #[test]
    fn appids_and_what_wechat_would_refuse() {
        let e = error(LIVE, &[("PAYBRIDGE_WECHAT_APPID", "1234")]);
        assert!(e.contains("wechat.appid") && e.contains("16 hex"), "{e}");
        assert!(error(LIVE, &[("PAYBRIDGE_WECHAT_APPID", "wxD930EA5D5A258F4F")]).contains("wechat.appid"));
        let c = load(LIVE, &[("PAYBRIDGE_WECHAT_NOTIFY_URL", "http://pay.example.com/pay/notify")]).unwrap();
        let warnings = c.warnings(None);
        assert!(warnings.iter().any(|w| w.contains("not https://")), "{warnings:?}");
        let c = load(LIVE, &[("PAYBRIDGE_WECHAT_NOTIFY_URL", "https://pay.example.com/pay/notify")]).unwrap();
        assert!(c.warnings(None).is_empty(), "{:?}", c.warnings(None));

        use std::os::unix::fs::PermissionsExt;
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let warnings = c.warnings(Some(file.path()));
        assert!(warnings.iter().any(|w| w.contains("readable by every user") && w.contains("644")), "{warnings:?}");
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(c.warnings(Some(file.path())).is_empty());
    }

    #[test]
    fn products_are_checked() {
        let with = |products: &str| format!("{LIVE}\n{products}");
        let c = load(&with("[[products]]\nid = \"vip-month\"\nname = \"会员月卡\"\nprice = 1990\n"), &[]).unwrap();
        assert_eq!(c.products.get("vip-month").unwrap().price, 1990);
        assert!(c.describe().contains("[[products]]\nid = \"vip-month\""));
        for (bad, key) in [
            ("id = \"a b\"\nname = \"x\"\nprice = 1", "products[0].id"),
            ("id = \"a\"\nname = \"\"\nprice = 1", "products[0].name"),
            ("id = \"a\"\nname = \"x\"\nprice = 0", "products[0].price"),
            ("id = \"a\"\nname = \"x\"\nprice = 10000001", "products[0].price"),
        ] {
            let e = error(&with(&format!("[[products]]\n{bad}\n")), &[]);
            assert!(e.contains(key), "{bad}: {e}");
        }
        let twice =
            "[[products]]\nid = \"a\"\nname = \"x\"\nprice = 1\n[[products]]\nid = \"a\"\nname = \"y\"\nprice = 2\n";
        assert!(error(&with(twice), &[]).contains("used twice"));
    }

    #[test]
    fn platforms_are_checked_and_their_keys_masked() {
        const KEY: &str = "0123456789abcdef0123456789abcdef-platform";
        let with = |fields: &str| format!("{LIVE}\n[[platforms]]\n{fields}\n");
        let good = format!(
            "id = \"shop-a\"\nkey = \"{KEY}\"\nwebhook_url = \"http://a.example.com/hook\"\n\
             appid = \"wx0123456789abcdef\"\nprevious_key = \"{KEY}-old\"\n\
             previous_key_until = \"2026-12-31T00:00:00+08:00\""
        );
        let c = load(&with(&good), &[]).unwrap();
        let p = c.platforms.get("shop-a").unwrap();
        assert_eq!((p.key.expose(), p.previous_key.as_ref().unwrap().1), (KEY, 1_798_646_400_000));
        assert_eq!(p.keys_at(1_798_646_399_999).count(), 2, "both keys before the deadline");
        assert_eq!(p.keys_at(1_798_646_400_000).count(), 1, "only the new one after");
        let shown = c.describe();
        assert!(shown.contains("[[platforms]]\nid = \"shop-a\"") && !shown.contains(KEY), "{shown}");
        assert!(c.warnings(None).iter().any(|w| w.contains("webhook_url http://a.example.com/hook")));

        let url = "webhook_url = \"https://a.example.com/hook\"";
        for (bad, key) in [
            (format!("id = \"Shop A\"\nkey = \"{KEY}\"\n{url}"), "platforms[0].id"),
            (format!("id = \"a\"\nkey = \"short\"\n{url}"), "platforms[0].key"),
            (format!("id = \"a\"\n{url}"), "platforms[0].key"),
            (format!("id = \"a\"\nkey = \"{KEY}\"\nkey_file = \"/x\"\n{url}"), "platforms[0].key"),
            (format!("id = \"a\"\nkey_file = \"/nonexistent/key\"\n{url}"), "platforms[0].key_file"),
            (format!("id = \"a\"\nkey = \"{KEY}\"\nwebhook_url = \"ftp://x/y\""), "platforms[0].webhook_url"),
            (format!("id = \"a\"\nkey = \"{KEY}\"\n{url}\nappid = \"wx1\""), "platforms[0].appid"),
            (format!("id = \"a\"\nkey = \"{KEY}\"\n{url}\nprevious_key = \"{KEY}\""), "previous_key_until"),
            (
                format!("id = \"a\"\nkey = \"{KEY}\"\n{url}\nprevious_key = \"{KEY}\"\nprevious_key_until = \"soon\""),
                "previous_key_until",
            ),
        ] {
            let e = error(&with(&bad), &[]);
            assert!(e.contains(key) && !e.contains(KEY), "{bad}: {e}");
        }
        let twice = format!("{LIVE}\n[[platforms]]\n{good}\n[[platforms]]\n{good}\n");
        assert!(error(&twice, &[]).contains("used twice"));
    }

    #[test]
    fn sandbox_refuses_real_credentials() {
        let e = error(&format!("mode = \"sandbox\"\n{LIVE}"), &[]);
        assert!(e.contains("wechat.appid") && e.contains("sandbox"), "{e}");
        let c = Config::sandbox_default();
        assert_eq!(c.mode, Mode::Sandbox);
        assert!(c.orders.accept_client_amount);
        assert_eq!(c.wechat.pay_base_url.host_str(), Some("127.0.0.1"));
    }
}
