//! API v2's client certificate: refunds (`/secapi/pay/refund`) go over
//! mutual TLS with the merchant's API certificate, as WeChat hands it out:
//! `apiclient_cert.pem` + `apiclient_key.pem`, or `apiclient_cert.p12`
//! (PKCS#12, password the merchant number unless told otherwise).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use url::Url;

use super::{invalid, ConfigError};
use crate::secret::Secret;

pub use crate::wechat::settings::{RefundTls, SECAPI_BASE_URL};

/// Where API v2's client certificate was read from, for `check-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertFiles {
    /// Each file setting (`client_cert_file`, `client_key_file`,
    /// `client_p12_file`, `secapi_ca_file`) and the path read, relative
    /// ones resolved against the config file's folder.
    pub files: Vec<(&'static str, PathBuf)>,
    /// Whether `client_p12_password` is set (else the mch_id opened the `.p12`).
    pub p12_password_set: bool,
}

/// The `[wechat]` keys of the client certificate, as written.
#[derive(Debug, Default)]
pub(super) struct RawClientCert {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub p12_file: Option<PathBuf>,
    pub p12_password: Option<Secret>,
    pub secapi_base_url: Option<String>,
    pub secapi_ca_file: Option<PathBuf>,
}

impl RawClientCert {
    /// Whether any of it is set (v3 merchants must not set it).
    pub fn any(&self) -> Option<&'static str> {
        [
            ("client_cert_file", self.cert_file.is_some()),
            ("client_key_file", self.key_file.is_some()),
            ("client_p12_file", self.p12_file.is_some()),
            ("client_p12_password", self.p12_password.is_some()),
            ("secapi_base_url", self.secapi_base_url.is_some()),
            ("secapi_ca_file", self.secapi_ca_file.is_some()),
        ]
        .into_iter()
        .find_map(|(name, set)| set.then_some(name))
    }

    /// The files this names, before [`RawClientCert::validate`] takes them.
    pub fn files(&self) -> ClientCertFiles {
        let named = [
            ("client_cert_file", &self.cert_file),
            ("client_key_file", &self.key_file),
            ("client_p12_file", &self.p12_file),
            ("secapi_ca_file", &self.secapi_ca_file),
        ];
        ClientCertFiles {
            files: named.into_iter().filter_map(|(name, path)| Some((name, path.clone()?))).collect(),
            p12_password_set: self.p12_password.is_some(),
        }
    }

    /// Reads and checks the certificate; `None` when none is configured
    /// (refunds are then refused with a message saying what to set).
    pub fn validate(self, mch_id: &str) -> Result<Option<RefundTls>, ConfigError> {
        let read = |key: &str, path: &Path| {
            std::fs::read(path).map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))
        };
        let is_p12 = self.p12_file.is_some();
        let identity_pem = match (self.cert_file, self.key_file, self.p12_file) {
            (None, None, None) => return Ok(None),
            (Some(cert), Some(key), None) => {
                let cert = String::from_utf8(read("wechat.client_cert_file", &cert)?)
                    .map_err(|_| invalid("wechat.client_cert_file", "is not a PEM file"))?;
                let key = String::from_utf8(read("wechat.client_key_file", &key)?)
                    .map_err(|_| invalid("wechat.client_key_file", "is not a PEM file"))?;
                if !cert.contains("-----BEGIN CERTIFICATE-----") {
                    return Err(invalid("wechat.client_cert_file", "holds no certificate (apiclient_cert.pem)"));
                }
                if !key.contains("PRIVATE KEY-----") {
                    return Err(invalid("wechat.client_key_file", "holds no private key (apiclient_key.pem)"));
                }
                Secret::new(format!("{}\n{}", cert.trim_end(), key))
            }
            (None, None, Some(p12)) => {
                let password = self.p12_password.unwrap_or_else(|| Secret::new(mch_id));
                from_p12(&read("wechat.client_p12_file", &p12)?, &password)?
            }
            (_, _, Some(_)) => {
                return Err(invalid("wechat.client_p12_file", "or client_cert_file + client_key_file, not both"))
            }
            _ => {
                return Err(invalid(
                    "wechat.client_cert_file",
                    "and client_key_file go together (apiclient_cert.pem and apiclient_key.pem)",
                ))
            }
        };
        let identity = reqwest::Identity::from_pem(identity_pem.expose().as_bytes()).map_err(|_| {
            invalid("wechat.client_cert_file", "the certificate and key do not make a TLS client identity")
        })?;
        // rustls checks that the key is the certificate's only when a client
        // is built; found here, the error names the settings instead of
        // stopping start-up with "keys may not be consistent: KeyMismatch".
        // SECURITY: the builder's error is not quoted (it is about the key).
        if reqwest::Client::builder().use_rustls_tls().identity(identity).build().is_err() {
            return Err(match is_p12 {
                true => invalid(
                    "wechat.client_p12_file",
                    "holds a certificate and a private key that do not belong together (the key is not the certificate's)",
                ),
                false => invalid(
                    "wechat.client_cert_file",
                    "and wechat.client_key_file do not belong together: the private key is not the certificate's key \
                     (use apiclient_cert.pem and apiclient_key.pem from the same download)",
                ),
            });
        }
        let base_url = self.secapi_base_url.as_deref().unwrap_or(SECAPI_BASE_URL);
        let base_url = Url::parse(base_url)
            .ok()
            .filter(|u| u.scheme() == "https")
            .ok_or_else(|| invalid("wechat.secapi_base_url", "must be an https:// URL"))?;
        let ca_pem = match self.secapi_ca_file {
            None => None,
            Some(path) => {
                let pem = String::from_utf8(read("wechat.secapi_ca_file", &path)?)
                    .map_err(|_| invalid("wechat.secapi_ca_file", "is not a PEM file"))?;
                reqwest::Certificate::from_pem(pem.as_bytes())
                    .map_err(|_| invalid("wechat.secapi_ca_file", "holds no CA certificate"))?;
                Some(pem)
            }
        };
        Ok(Some(RefundTls { identity_pem, base_url, ca_pem }))
    }
}

/// The certificate and key of a PKCS#12 file, as PEM.
fn from_p12(bytes: &[u8], password: &Secret) -> Result<Secret, ConfigError> {
    use p12_keystore::{KeyStore, KeyStoreEntry, Pkcs12ImportPolicy};
    let key = "wechat.client_p12_file";
    let store = KeyStore::from_pkcs12(bytes, password.expose(), Pkcs12ImportPolicy::Strict).map_err(|_| {
        invalid(
            key,
            "cannot be opened: not a .p12 file, or the password (client_p12_password, by default the mch_id) is wrong",
        )
    })?;
    let chain = store
        .entries()
        .find_map(|(_, entry)| match entry {
            KeyStoreEntry::PrivateKeyChain(chain) => Some(chain),
            _ => None,
        })
        .ok_or_else(|| invalid(key, "holds no private key"))?;
    let cert = chain.certs().first().ok_or_else(|| invalid(key, "holds no certificate for its key"))?;
    Ok(Secret::new(format!("{}{}", pem("CERTIFICATE", cert.as_der()), pem("PRIVATE KEY", chain.key().as_der()))))
}

fn pem(label: &str, der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = text.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("base64")).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(dir: &Path, files: &[(&str, &str)]) -> RawClientCert {
        let mut raw = RawClientCert::default();
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            match *name {
                "cert.pem" => raw.cert_file = Some(path),
                "key.pem" => raw.key_file = Some(path),
                _ => raw.p12_file = Some(path),
            }
        }
        raw
    }

    #[test]
    fn each_mistake_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let tls = crate::sandbox::secapi::MerchantTls::new("1900000109");
        let (cert, key) = (tls.client_cert_pem.as_str(), tls.client_key_pem.as_str());
        let message = |r: Result<Option<RefundTls>, ConfigError>| r.unwrap_err().to_string();
        assert!(raw(dir.path(), &[]).validate("1").unwrap().is_none(), "none configured: refunds refused");
        let ok = raw(dir.path(), &[("cert.pem", cert), ("key.pem", key)]).validate("1").unwrap().unwrap();
        assert_eq!(ok.base_url.as_str(), "https://api.mch.weixin.qq.com/");
        assert!(message(raw(dir.path(), &[("cert.pem", cert)]).validate("1")).contains("go together"));
        assert!(message(raw(dir.path(), &[("cert.pem", key), ("key.pem", key)]).validate("1"))
            .contains("holds no certificate"));
        assert!(message(raw(dir.path(), &[("cert.pem", cert), ("key.pem", cert)]).validate("1"))
            .contains("holds no private key"));
        let both = raw(dir.path(), &[("cert.pem", cert), ("key.pem", key), ("a.p12", "x")]);
        assert!(message(both.validate("1")).contains("not both"));
        let p12 = raw(dir.path(), &[("a.p12", "not a p12")]);
        assert!(
            message(p12.validate("1")).contains("the password (client_p12_password, by default the mch_id) is wrong")
        );
        let mut http = raw(dir.path(), &[("cert.pem", cert), ("key.pem", key)]);
        http.secapi_base_url = Some("http://api.mch.weixin.qq.com".into());
        assert!(message(http.validate("1")).contains("must be an https:// URL"));
        // A certificate and the key of another: both settings named, start-up
        // does not fail later with rustls's "KeyMismatch".
        let other = crate::sandbox::secapi::MerchantTls::new("1900000109");
        let said = message(raw(dir.path(), &[("cert.pem", cert), ("key.pem", &other.client_key_pem)]).validate("1"));
        assert!(
            said.contains("wechat.client_cert_file")
                && said.contains("wechat.client_key_file")
                && said.contains("do not belong together")
                && !said.contains("KeyMismatch")
                && !said.contains("PRIVATE KEY"),
            "{said}"
        );
        // The key never appears in an error.
        let mut missing = raw(dir.path(), &[("key.pem", key)]);
        missing.cert_file = Some(dir.path().join("absent.pem"));
        let said = message(missing.validate("1"));
        assert!(said.contains("cannot read") && !said.contains("PRIVATE KEY"), "{said}");
    }
}
