//! How PayBridge serves HTTPS: the mode (ACME, files, self-signed, off),
//! the domains, the listener and the ACME account. The TLS layer owns these
//! types; the configuration layer fills them from `[tls]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

/// Let's Encrypt's production directory, the default.
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory: try a set-up here first.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// Where the certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain HTTP only (local use, the sandbox, or behind a TLS terminator).
    Off,
    /// Obtained and renewed from an ACME CA (Let's Encrypt by default).
    Acme,
    /// Operator-supplied PEM files, reloaded when they change on disk.
    Files,
    /// Generated at start-up (a test box; browsers will warn).
    SelfSigned,
}

impl TlsMode {
    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Off => "off",
            TlsMode::Acme => "acme",
            TlsMode::Files => "files",
            TlsMode::SelfSigned => "self-signed",
        }
    }
}

/// The validated `[tls]` section.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Where the certificate comes from.
    pub mode: TlsMode,
    /// The HTTPS listener.
    pub listen: SocketAddr,
    /// The names the certificate covers; the first one is the main name.
    pub domains: Vec<String>,
    /// The ACME directory URL.
    pub acme_directory: Url,
    /// Contact for the ACME account (`mailto:` URL), if any.
    pub acme_contact: Option<String>,
    /// An extra root certificate (PEM) to trust for the directory's own HTTPS.
    pub acme_directory_ca: Option<PathBuf>,
    /// Waits between failed ACME attempts (the last one repeats).
    pub acme_retry_schedule: Vec<Duration>,
    /// `files` mode: the PEM certificate chain.
    pub cert_file: Option<PathBuf>,
    /// `files` mode: the PEM private key.
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// Whether HTTPS is served.
    pub fn enabled(&self) -> bool {
        self.mode != TlsMode::Off
    }
}
