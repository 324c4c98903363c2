//! `[wechat] api_version`: which WeChat Pay API the merchant uses, and the
//! keys each needs. v2 signs with one 32-character API key; v3 signs with
//! the merchant's RSA key and verifies WeChat with its public key (the
//! default for merchants since late 2024), with platform certificates
//! downloaded from WeChat, or with both during WeChat's migration.
//!
//! Every key is read and parsed here, at start-up, so a wrong file is an
//! error naming the setting rather than a failed payment later.

use std::path::PathBuf;
use std::sync::Arc;

use super::{invalid, ConfigError};
use crate::secret::Secret;
use crate::wechat::v3::crypto::{ApiV3Key, MerchantKey, PublicKey};

pub use crate::wechat::settings::{PayApi, V3Keys, WechatPayPublicKey};

/// The v3 keys as written in the file (or the environment).
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct RawV3 {
    pub apiv3_key: Option<Secret>,
    pub merchant_key_file: Option<PathBuf>,
    pub merchant_serial: Option<String>,
    pub public_key_file: Option<PathBuf>,
    pub public_key_id: Option<String>,
    pub platform_certificates: Option<bool>,
}

impl RawV3 {
    /// Whether any v3 key is set (an error under `api_version = "v2"`).
    pub(super) fn first_set(&self) -> Option<&'static str> {
        [
            ("apiv3_key", self.apiv3_key.is_some()),
            ("merchant_key_file", self.merchant_key_file.is_some()),
            ("merchant_serial", self.merchant_serial.is_some()),
            ("public_key_file", self.public_key_file.is_some()),
            ("public_key_id", self.public_key_id.is_some()),
            ("platform_certificates", self.platform_certificates.is_some()),
        ]
        .into_iter()
        .find_map(|(name, set)| set.then_some(name))
    }

    /// Reads and checks every v3 key.
    pub(super) fn validate(self) -> Result<V3Keys, ConfigError> {
        let read = |key: &str, path: &PathBuf| {
            std::fs::read_to_string(path).map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))
        };
        let apiv3_key_text = self
            .apiv3_key
            .filter(|k| !k.is_empty())
            .ok_or_else(|| invalid("wechat.apiv3_key", "is required with api_version = \"v3\" (APIv3密钥)"))?;
        super::wechat::check_key_of_32(
            "wechat.apiv3_key",
            &apiv3_key_text,
            "the APIv3 key (APIv3密钥) set in the merchant platform, not the APIv2 key, not a file name",
        )?;
        let apiv3_key = ApiV3Key::new(&apiv3_key_text)
            .map_err(|_| invalid("wechat.apiv3_key", "must be exactly 32 letters and digits"))?;
        let key_path = self.merchant_key_file.ok_or_else(|| {
            invalid("wechat.merchant_key_file", "is required with api_version = \"v3\": the path of apiclient_key.pem")
        })?;
        let merchant_key = MerchantKey::from_pem(&Secret::new(read("wechat.merchant_key_file", &key_path)?))
            .map(Arc::new)
            .map_err(|e| {
                invalid(
                    "wechat.merchant_key_file",
                    format!(
                        "{} is not the merchant API private key: {e} (apiclient_key.pem, \"-----BEGIN PRIVATE KEY-----\")",
                        key_path.display()
                    ),
                )
            })?;
        let merchant_serial =
            self.merchant_serial.map(|s| s.trim().to_ascii_uppercase()).filter(|s| !s.is_empty()).ok_or_else(|| {
                invalid("wechat.merchant_serial", "is required with api_version = \"v3\": the API certificate's serial")
            })?;
        if merchant_serial.len() > 64 || !merchant_serial.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                "wechat.merchant_serial",
                "is the merchant API certificate's serial number: hex digits (40 of them, as shown in the merchant \
                 platform or by `openssl x509 -noout -serial -in apiclient_cert.pem`)",
            ));
        }
        let public_key = match (self.public_key_file, self.public_key_id) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid("wechat.public_key_id", "is required with public_key_file: the PUB_KEY_ID_… id"))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "wechat.public_key_file",
                    "is required with public_key_id: the path of pub_key.pem",
                ))
            }
            (Some(path), Some(id)) => {
                let id = id.trim().to_owned();
                if !id.starts_with("PUB_KEY_ID_") || id.len() > 64 {
                    return Err(invalid(
                        "wechat.public_key_id",
                        format!("{id:?} is not a WeChat Pay public key id (\"PUB_KEY_ID_\" and digits)"),
                    ));
                }
                let key = PublicKey::from_pem(&read("wechat.public_key_file", &path)?).map_err(|e| {
                    invalid(
                        "wechat.public_key_file",
                        format!(
                            "{} is not the WeChat Pay public key: {e} (pub_key.pem, \"-----BEGIN PUBLIC KEY-----\")",
                            path.display()
                        ),
                    )
                })?;
                Some(WechatPayPublicKey { id, key, file: Some(path) })
            }
        };
        let platform_certificates = self.platform_certificates.unwrap_or(false);
        if public_key.is_none() && !platform_certificates {
            return Err(invalid(
                "wechat.public_key_file",
                "v3 needs a way to verify WeChat: set public_key_file and public_key_id (the WeChat Pay public key), \
                 or platform_certificates = true (older merchants), or both while WeChat migrates you",
            ));
        }
        Ok(V3Keys {
            apiv3_key,
            apiv3_key_text,
            merchant_key,
            merchant_key_file: Some(key_path),
            merchant_serial,
            public_key,
            platform_certificates,
        })
    }
}

/// The sandbox merchant's v3 keys: public, built in, sandbox only.
pub fn sandbox_v3_keys() -> V3Keys {
    use crate::sandbox::keys as sim;
    V3Keys {
        apiv3_key: ApiV3Key::new(&Secret::new(sim::APIV3_KEY)).expect("32 characters"),
        apiv3_key_text: Secret::new(sim::APIV3_KEY),
        merchant_key: Arc::new(
            MerchantKey::from_pem(&Secret::new(sim::MERCHANT_PRIVATE_KEY)).expect("the sandbox key parses"),
        ),
        merchant_key_file: None,
        merchant_serial: sim::MERCHANT_SERIAL.to_owned(),
        public_key: Some(WechatPayPublicKey {
            id: sim::WECHATPAY_PUBLIC_KEY_ID.to_owned(),
            key: PublicKey::from_pem(sim::WECHATPAY_PUBLIC_KEY).expect("the sandbox key parses"),
            file: None,
        }),
        platform_certificates: false,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, PayApi};
    use crate::sandbox::keys as sim;

    /// A live v3 config with its key files in `dir`; `wechat` is appended to `[wechat]`.
    fn config(dir: &Path, wechat: &str) -> String {
        let key = dir.join("apiclient_key.pem");
        let public = dir.join("pub_key.pem");
        std::fs::write(&key, sim::MERCHANT_PRIVATE_KEY).unwrap();
        std::fs::write(&public, sim::WECHATPAY_PUBLIC_KEY).unwrap();
        format!(
            r#"
            data_dir = "/tmp/pb"
            [http]
            listen = "127.0.0.1:9000"
            [wechat]
            api_version = "v3"
            appid = "wxd930ea5d5a258f4f"
            app_secret = "s3cr3t"
            mch_id = "1900009191"
            notify_url = "https://pay.example.com/pay/notify"
            apiv3_key = "{}"
            merchant_key_file = "{}"
            merchant_serial = "{}"
            public_key_file = "{}"
            public_key_id = "{}"
            {wechat}
            "#,
            sim::APIV3_KEY,
            key.display(),
            sim::MERCHANT_SERIAL,
            public.display(),
            sim::WECHATPAY_PUBLIC_KEY_ID,
        )
    }

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, crate::config::ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_toml(text, Path::new("test.toml"), env.collect::<Vec<_>>().into_iter())
    }

    #[test]
    fn a_v3_merchant_with_the_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let c = load(&config(dir.path(), ""), &[]).unwrap();
        let PayApi::V3(keys) = &c.wechat.api else { panic!("v3") };
        assert_eq!(keys.key_mode(), "WeChat Pay public key");
        assert_eq!(keys.public_key.as_ref().unwrap().id, sim::WECHATPAY_PUBLIC_KEY_ID);
        let described = c.describe();
        assert!(described.contains("api_version = \"v3\"") && described.contains("apiv3_key = \"***\" (set)"));
        assert!(!described.contains(sim::APIV3_KEY) && !described.contains("PRIVATE KEY"), "{described}");
        assert!(!format!("{c:?}").contains(sim::APIV3_KEY), "Debug masks the key too");

        // Both at once during WeChat's migration; certificates alone for older merchants.
        let both = load(&config(dir.path(), "platform_certificates = true"), &[]).unwrap();
        let PayApi::V3(keys) = &both.wechat.api else { panic!("v3") };
        assert!(keys.key_mode().contains("migration"));
        let text = config(dir.path(), "platform_certificates = true")
            .replace("public_key_file", "# public_key_file")
            .replace("public_key_id", "# public_key_id");
        let PayApi::V3(keys) = &load(&text, &[]).unwrap().wechat.api else { panic!("v3") };
        assert_eq!(keys.key_mode(), "platform certificates");
    }

    #[test]
    fn the_apiv3_key_may_come_from_the_environment_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let text = config(dir.path(), "").replace(&format!("apiv3_key = \"{}\"", sim::APIV3_KEY), "");
        let key_file = dir.path().join("apiv3");
        std::fs::write(&key_file, format!("{}\n", sim::APIV3_KEY)).unwrap();
        for env in [
            vec![("PAYBRIDGE_WECHAT_APIV3_KEY", sim::APIV3_KEY)],
            vec![("PAYBRIDGE_WECHAT_APIV3_KEY_FILE", key_file.to_str().unwrap())],
        ] {
            let c = load(&text, &env).unwrap();
            assert_eq!(c.wechat.api.token_secret().expose(), sim::APIV3_KEY, "{env:?}");
        }
        let missing = load(&text, &[]).unwrap_err().to_string();
        assert!(missing.contains("wechat.apiv3_key"), "{missing}");
    }

    #[test]
    fn each_wrong_v3_setting_is_named_and_no_key_is_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let good = config(dir.path(), "");
        let key = dir.path().join("apiclient_key.pem").display().to_string();
        let public = dir.path().join("pub_key.pem").display().to_string();
        let cases = [
            // The public key where the private key belongs, and the other way round.
            (
                good.replace(&format!("merchant_key_file = \"{key}\""), &format!("merchant_key_file = \"{public}\"")),
                "wechat.merchant_key_file",
            ),
            (
                good.replace(&format!("public_key_file = \"{public}\""), &format!("public_key_file = \"{key}\"")),
                "wechat.public_key_file",
            ),
            (good.replace(&key, "/nonexistent/apiclient_key.pem"), "wechat.merchant_key_file"),
            (good.replace(sim::APIV3_KEY, "SANDBOXapiv3KEYsandboxAPIV3key0"), "wechat.apiv3_key"),
            (good.replace(sim::MERCHANT_SERIAL, "not-a-serial"), "wechat.merchant_serial"),
            (good.replace(sim::WECHATPAY_PUBLIC_KEY_ID, "1234"), "wechat.public_key_id"),
            (good.replace("public_key_id", "# public_key_id"), "wechat.public_key_id"),
            (
                good.replace("public_key_file", "# public_key_file").replace("public_key_id", "# public_key_id"),
                "wechat.public_key_file",
            ),
            (good.replace("api_version = \"v3\"", "api_version = \"v4\""), "wechat.api_version"),
            (format!("{good}\nmch_key = \"192006250b4c09247ec02edce69f6a2d\""), "wechat.mch_key"),
            (format!("{good}\nsign_type = \"MD5\""), "wechat.sign_type"),
            // A v3 setting while the merchant is on v2.
            (
                good.replace(
                    "api_version = \"v3\"",
                    "api_version = \"v2\"\nmch_key = \"192006250b4c09247ec02edce69f6a2d\"",
                ),
                "wechat.apiv3_key",
            ),
        ];
        for (text, key_name) in cases {
            let e = load(&text, &[]).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key_name}`")), "{key_name}: {e}");
            // PEM bodies start "MII": no key material, only the hint of what belongs there.
            assert!(!e.contains("MII") && !e.contains(sim::APIV3_KEY), "{e}");
        }
    }

    #[test]
    fn the_sandbox_runs_either_version_without_real_keys() {
        assert_eq!(Config::sandbox_with_api("v3").wechat.api.version(), "v3");
        assert_eq!(Config::sandbox_default().wechat.api.version(), "v2");
        let text = "mode = \"sandbox\"\n[wechat]\napi_version = \"v3\"\napiv3_key = \"x\"";
        let e = load(text, &[]).unwrap_err().to_string();
        assert!(e.contains("`wechat.apiv3_key`") && e.contains("sandbox"), "{e}");
    }

    #[test]
    fn the_apiv3_key_is_counted_in_characters_not_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let good = config(dir.path(), "");
        // 26 ASCII and 2 Chinese characters make 32 bytes but only 28 characters.
        let pasted = format!("{}密钥", &sim::APIV3_KEY[..26]);
        let e = load(&good.replace(sim::APIV3_KEY, &pasted), &[]).unwrap_err().to_string();
        assert!(e.contains("`wechat.apiv3_key`: is 28 characters long") && !e.contains(&sim::APIV3_KEY[..26]), "{e}");
        let spaced = format!(" {} ", sim::APIV3_KEY);
        let e = load(&good.replace(sim::APIV3_KEY, &spaced), &[]).unwrap_err().to_string();
        assert!(e.contains("is 34 characters long, with spaces") && !e.contains(sim::APIV3_KEY), "{e}");
    }
}
