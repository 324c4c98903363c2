//! What `check-config` and the start-up log print of a [`Config`]: the
//! effective settings with every secret masked, and the warnings for what
//! is valid but likely wrong.

use std::path::{Path, PathBuf};

use super::{Config, PayApi, TlsMode};
use crate::domain::Mode;
use crate::secret::Secret;

impl Config {
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
                out += &format!("mch_key = {}\nsign_type = {:?}\n", masked(mch_key), sign_type.as_str());
                // The sandbox's refunds use the simulator's certificate.
                if self.mode == Mode::Live {
                    out += &self.describe_client_certificate();
                }
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
            "[storage]\ncache_mb = {}\nmax_pending_writes = {}\narchive_after_days = {}\n\n",
            self.storage.cache_bytes / (1024 * 1024),
            self.storage.max_pending_writes,
            self.archive_after_days
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

    /// API v2's client certificate for refunds: which files were read, and
    /// that the key belongs to the certificate (checked while loading).
    fn describe_client_certificate(&self) -> String {
        let (Some(files), Some(tls)) = (&self.client_certificate, &self.wechat.refund_tls) else {
            return "# refunds: no client certificate (client_cert_file and client_key_file, or client_p12_file): \
                    refunds are refused\n"
                .to_owned();
        };
        let mut out = String::new();
        for (name, path) in &files.files {
            out += &format!("{name} = {:?}\n", path.display().to_string());
        }
        if files.files.iter().any(|(name, _)| *name == "client_p12_file") {
            out += match files.p12_password_set {
                true => "client_p12_password = \"***\" (set)\n",
                false => "client_p12_password = (not set: the mch_id opened it)\n",
            };
        }
        out += &format!("secapi_base_url = \"{}\"\n", tls.base_url);
        out + "# refunds: the client certificate and its private key were read, and the key is the certificate's\n"
    }

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

#[cfg(test)]
mod tests {
    use super::super::testing::{load, LIVE};

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
    fn a_config_file_every_user_can_read_is_a_warning() {
        use std::os::unix::fs::PermissionsExt;
        let c = load(LIVE, &[]).unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let warnings = c.warnings(Some(file.path()));
        assert!(warnings.iter().any(|w| w.contains("readable by every user") && w.contains("644")), "{warnings:?}");
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(c.warnings(Some(file.path())).is_empty());
    }

    #[test]
    fn the_v2_client_certificate_is_shown_read_and_matched() {
        let c = load(LIVE, &[]).unwrap();
        assert!(c.describe().contains("# refunds: no client certificate"), "{}", c.describe());
        let dir = tempfile::tempdir().unwrap();
        let tls = crate::sandbox::secapi::MerchantTls::new("10000100");
        let (cert, key) = (dir.path().join("apiclient_cert.pem"), dir.path().join("apiclient_key.pem"));
        std::fs::write(&cert, &tls.client_cert_pem).unwrap();
        std::fs::write(&key, &tls.client_key_pem).unwrap();
        let text = format!("{LIVE}\nclient_cert_file = {:?}\nclient_key_file = {:?}\n", cert.display(), key.display());
        let shown = load(&text, &[]).unwrap().describe();
        let wanted = format!(
            "client_cert_file = {:?}\nclient_key_file = {:?}\nsecapi_base_url = \"https://api.mch.weixin.qq.com/\"\n\
             # refunds: the client certificate and its private key were read, and the key is the certificate's\n",
            cert.display().to_string(),
            key.display().to_string()
        );
        assert!(shown.contains(&wanted), "{shown}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        // The sandbox's refunds are the simulator's: nothing to show.
        assert!(!super::super::Config::sandbox_default().describe().contains("# refunds"));
    }
}
