//! What the certificate machinery is doing, kept in `tls/status.json` in
//! the data directory so `paybridge cert status` (and later the admin page)
//! can show it without asking the server.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::cert::{write_private, CertInfo};

/// The state shown to operators.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TlsStatus {
    /// `acme`, `files` or `self-signed`.
    pub mode: String,
    /// The configured names.
    pub domains: Vec<String>,
    /// The certificate being served.
    pub certificate: Option<CertInfo>,
    /// When the next renewal attempt is planned.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub next_renewal: Option<OffsetDateTime>,
    /// When the renewal task last decided whether to renew.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub checked_at: Option<OffsetDateTime>,
    /// The challenge type that last worked (`http-01` or `tls-alpn-01`).
    pub challenge: Option<String>,
    /// The last error, until the next success.
    pub last_error: Option<String>,
    /// When it happened.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_error_at: Option<OffsetDateTime>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// When the last certificate was obtained.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_success_at: Option<OffsetDateTime>,
    /// Recent failed validations (rate-limit guard).
    #[serde(default)]
    pub failed_validations: Vec<String>,
    /// Recent issuances (rate-limit guard).
    #[serde(default)]
    pub issuances: Vec<String>,
}

impl TlsStatus {
    /// Reads the status file of a data directory.
    pub fn read(data_dir: &Path) -> std::io::Result<TlsStatus> {
        let text = std::fs::read_to_string(status_path(data_dir))?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }

    /// A report for people.
    pub fn report(&self) -> String {
        let time = |t: Option<OffsetDateTime>| {
            t.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()).unwrap_or_else(|| "-".into())
        };
        let mut out = format!("mode:          {}\ndomains:       {}\n", self.mode, self.domains.join(", "));
        match &self.certificate {
            Some(c) => {
                out.push_str(&format!(
                    "issuer:        {}\nnames:         {}\nserial:        {}\nnot before:    {}\nnot after:     {}\n",
                    c.issuer,
                    c.names.join(", "),
                    c.serial,
                    time(Some(c.not_before)),
                    time(Some(c.not_after)),
                ));
            }
            None => out.push_str("certificate:   none yet\n"),
        }
        out.push_str(&format!("next renewal:  {}\n", time(self.next_renewal)));
        out.push_str(&format!("last checked:  {}\n", time(self.checked_at)));
        if let Some(ch) = &self.challenge {
            out.push_str(&format!("challenge:     {ch}\n"));
        }
        match &self.last_error {
            Some(e) => out.push_str(&format!(
                "last error:    {e} (at {}, {} failure(s) in a row)\n",
                time(self.last_error_at),
                self.consecutive_failures
            )),
            None => out.push_str("last error:    none\n"),
        }
        out
    }
}

/// Where the status file lives.
pub fn status_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("status.json")
}

/// The live status, written to disk on every change.
#[derive(Debug)]
pub struct StatusHandle {
    path: PathBuf,
    status: Mutex<TlsStatus>,
}

impl StatusHandle {
    /// Starts from the stored status, if any, with the current mode and domains.
    pub fn open(data_dir: &Path, mode: &str, domains: &[String]) -> StatusHandle {
        let mut status = TlsStatus::read(data_dir).unwrap_or_default();
        status.mode = mode.to_owned();
        status.domains = domains.to_vec();
        StatusHandle { path: status_path(data_dir), status: Mutex::new(status) }
    }

    /// A copy of the status.
    pub fn get(&self) -> TlsStatus {
        self.status.lock().expect("status lock").clone()
    }

    /// Changes the status and stores it.
    pub fn update(&self, change: impl FnOnce(&mut TlsStatus)) {
        let mut status = self.status.lock().expect("status lock");
        change(&mut status);
        let json = serde_json::to_vec_pretty(&*status).expect("status serializes");
        if let Err(e) = write_private(&self.path, &json) {
            tracing::warn!(error = %e, path = %self.path.display(), "cannot store the TLS status");
        }
    }
}
