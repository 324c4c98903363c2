//! The environment layer: `PAYBRIDGE_<SECTION>_<KEY>` overrides the file's
//! `[section] key`, and a secret may come from the file named by
//! `PAYBRIDGE_<SECTION>_<KEY>_FILE` (systemd credentials, Docker secrets).
//!
//! One `match` names every variable, so an unknown one (a typo) is an error
//! rather than a setting silently ignored. It is long because the settings
//! are many, not because it does several things.

use super::{invalid, ConfigError, RawConfig};
use crate::secret::Secret;

/// Environment variables that are secrets: their value may come from `<NAME>_FILE`.
const SECRET_VARS: &[&str] =
    &["WECHAT_MCH_KEY", "WECHAT_APIV3_KEY", "WECHAT_APP_SECRET", "ADMIN_PASSWORD_HASH", "METRICS_TOKEN"];

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
            "STORAGE_ARCHIVE_AFTER_DAYS" => {
                self.storage.archive_after_days = Some(parsed(&var, &value, "expected a whole number")?)
            }
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

    /// Applies every `PAYBRIDGE_` variable of `vars`, in order; returns the
    /// error of each one that is wrong (all of them, for `check-config`).
    pub(super) fn apply_env(&mut self, vars: impl Iterator<Item = (String, String)>) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for (var, value) in vars {
            let Some(name) = var.strip_prefix("PAYBRIDGE_") else {
                continue;
            };
            if matches!(name, "CONFIG" | "LOG" | "ADMIN_PASSWORD") {
                continue; // read by the CLI, the logger and install.sh: not settings
            }
            let applied = match name.strip_suffix("_FILE").filter(|base| SECRET_VARS.contains(base)) {
                Some(base) => std::fs::read_to_string(&value)
                    .map_err(|e| invalid(&var, format!("cannot read {value}: {e}")))
                    .and_then(|content| self.set_from_env(base, content.trim_end_matches(['\r', '\n']).to_owned())),
                None => self.set_from_env(name, value),
            };
            errors.extend(applied.err());
        }
        errors
    }
}

/// An environment override's value as a number (or bool), or an error naming the variable.
fn parsed<T: std::str::FromStr>(var: &str, value: &str, expected: &str) -> Result<T, ConfigError> {
    value.parse().map_err(|_| invalid(var, expected))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{error, load, LIVE};

    #[test]
    fn environment_overrides_secrets_and_names_bad_values() {
        let c = load(LIVE, &[("PAYBRIDGE_WECHAT_MCH_KEY", "ffffffffffffffffffffffffffffffff")]).unwrap();
        assert_eq!(c.wechat.api.token_secret().expose(), "ffffffffffffffffffffffffffffffff");
        let e = error(LIVE, &[("PAYBRIDGE_ORDERS_ACCEPT_CLIENT_AMOUNT", "yes")]);
        assert!(e.contains("PAYBRIDGE_ORDERS_ACCEPT_CLIENT_AMOUNT") && e.contains("true or false"), "{e}");
        assert!(error(LIVE, &[("PAYBRIDGE_WECHAT_MCH_KY", "x")]).contains("PAYBRIDGE_WECHAT_MCH_KY"));
    }

    #[test]
    fn secret_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee\n").unwrap();
        let c = load(LIVE, &[("PAYBRIDGE_WECHAT_MCH_KEY_FILE", file.to_str().unwrap())]).unwrap();
        assert_eq!(c.wechat.api.token_secret().expose(), "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee");
    }
}
