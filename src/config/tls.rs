//! `[tls]`: how PayBridge gets and serves its certificate.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::{invalid, parse_addr, ConfigError};

pub use crate::tls::settings::{TlsConfig, TlsMode, LETS_ENCRYPT_PRODUCTION, LETS_ENCRYPT_STAGING};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub mode: Option<String>,
    pub listen: Option<String>,
    pub domains: Option<Vec<String>>,
    pub acme_directory: Option<String>,
    pub acme_contact: Option<String>,
    pub acme_directory_ca: Option<PathBuf>,
    pub acme_retry_schedule_secs: Option<Vec<u64>>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl RawTls {
    /// Applies `PAYBRIDGE_TLS_<KEY>`; returns false for a name it does not know.
    pub fn set_from_env(&mut self, key: &str, value: String) -> bool {
        match key {
            "MODE" => self.mode = Some(value),
            "LISTEN" => self.listen = Some(value),
            "DOMAINS" => self.domains = Some(value.split(',').map(|d| d.trim().to_owned()).collect()),
            "ACME_DIRECTORY" => self.acme_directory = Some(value),
            "ACME_CONTACT" => self.acme_contact = Some(value),
            "ACME_DIRECTORY_CA" => self.acme_directory_ca = Some(value.into()),
            "CERT_FILE" => self.cert_file = Some(value.into()),
            "KEY_FILE" => self.key_file = Some(value.into()),
            _ => return false,
        }
        true
    }

    pub fn validate(self) -> Result<TlsConfig, ConfigError> {
        let domains = self.domains.unwrap_or_default();
        for d in &domains {
            if !is_dns_name(d) {
                return Err(invalid("tls.domains", format!("{d:?} is not a domain name like \"pay.example.com\"")));
            }
        }
        let mode = match self.mode.as_deref() {
            None if domains.is_empty() => TlsMode::Off,
            None | Some("acme") => TlsMode::Acme,
            Some("off") => TlsMode::Off,
            Some("files") => TlsMode::Files,
            Some("self-signed") => TlsMode::SelfSigned,
            Some(other) => {
                return Err(invalid(
                    "tls.mode",
                    format!("must be \"acme\", \"files\", \"self-signed\" or \"off\", not {other:?}"),
                ))
            }
        };
        if mode == TlsMode::Acme && domains.is_empty() {
            return Err(invalid("tls.domains", "acme mode needs at least one domain, e.g. [\"pay.example.com\"]"));
        }
        let listen = parse_addr("tls.listen", self.listen.as_deref().unwrap_or("0.0.0.0:443"))?;
        let directory = self.acme_directory.as_deref().unwrap_or(LETS_ENCRYPT_PRODUCTION);
        let acme_directory = match Url::parse(directory) {
            Ok(url) if url.scheme() == "https" => url,
            _ => return Err(invalid("tls.acme_directory", format!("{directory:?} must be an https:// URL"))),
        };
        let acme_contact = match self.acme_contact.map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()) {
            None => None,
            Some(c) if c.starts_with("mailto:") => Some(c),
            Some(c) if c.contains('@') && !c.contains(char::is_whitespace) => Some(format!("mailto:{c}")),
            Some(c) => return Err(invalid("tls.acme_contact", format!("{c:?} is not an email address"))),
        };
        if let Some(ca) = &self.acme_directory_ca {
            if !ca.is_file() {
                return Err(invalid("tls.acme_directory_ca", format!("{} is not a readable file", ca.display())));
            }
        }
        let schedule = self.acme_retry_schedule_secs.unwrap_or_else(|| vec![60, 600, 6000, 86400]);
        if schedule.is_empty() || schedule.contains(&0) {
            return Err(invalid("tls.acme_retry_schedule_secs", "must be a non-empty list of positive seconds"));
        }
        if mode == TlsMode::Files {
            for (key, value) in [("tls.cert_file", &self.cert_file), ("tls.key_file", &self.key_file)] {
                if value.is_none() {
                    return Err(invalid(key, "is required in files mode"));
                }
            }
        }
        Ok(TlsConfig {
            mode,
            listen,
            domains,
            acme_directory,
            acme_contact,
            acme_directory_ca: self.acme_directory_ca,
            acme_retry_schedule: schedule.into_iter().map(Duration::from_secs).collect(),
            cert_file: self.cert_file,
            key_file: self.key_file,
        })
    }
}

/// A host name an ACME CA can issue for: letters, digits, hyphens, dots.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(mode: Option<&str>, domains: &[&str]) -> Result<TlsConfig, ConfigError> {
        RawTls {
            mode: mode.map(Into::into),
            domains: Some(domains.iter().map(|d| d.to_string()).collect()),
            acme_contact: Some("ops@example.com".into()),
            ..RawTls::default()
        }
        .validate()
    }

    #[test]
    fn acme_is_the_default_with_domains() {
        let t = tls(None, &["pay.example.com"]).unwrap();
        assert_eq!(t.mode, TlsMode::Acme);
        assert_eq!(t.acme_directory.as_str(), LETS_ENCRYPT_PRODUCTION);
        assert_eq!(t.acme_contact.as_deref(), Some("mailto:ops@example.com"));
        assert_eq!(tls(None, &[]).unwrap().mode, TlsMode::Off);
    }

    #[test]
    fn errors_name_the_key() {
        assert!(tls(Some("acme"), &[]).unwrap_err().to_string().contains("tls.domains"));
        assert!(tls(None, &["bad name"]).unwrap_err().to_string().contains("tls.domains"));
        assert!(tls(Some("letsencrypt"), &["a.b"]).unwrap_err().to_string().contains("tls.mode"));
        assert!(tls(Some("files"), &["a.b"]).unwrap_err().to_string().contains("tls.cert_file"));
    }
}
