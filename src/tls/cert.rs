//! Certificates and keys: PEM in and out, what a certificate says, and the
//! files that hold them (written atomically, private key mode 0600).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A certificate that could not be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CertError(pub String);

fn err(what: impl std::fmt::Display) -> CertError {
    CertError(what.to_string())
}

/// What a leaf certificate says, for scheduling and for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertInfo {
    /// Start of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// DNS names (subject alternative names).
    pub names: Vec<String>,
}

/// A usable certificate: the rustls key plus the PEM it came from.
#[derive(Clone)]
pub struct LoadedCert {
    /// What rustls serves.
    pub key: Arc<CertifiedKey>,
    /// What the leaf says.
    pub info: CertInfo,
    /// The chain as PEM (leaf first).
    pub chain_pem: String,
    /// The private key as PEM.
    pub key_pem: String,
}

/// Reads what a DER certificate says.
pub fn info(der: &[u8]) -> Result<CertInfo, CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| err(format!("not a certificate: {e}")))?;
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(CertInfo {
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string().replace(':', ""),
        names,
    })
}

/// Parses a PEM chain and key and checks that they belong together.
pub fn load_pem(chain_pem: &str, key_pem: &str) -> Result<LoadedCert, CertError> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("certificate PEM: {e}")))?;
    let leaf = chain.first().ok_or_else(|| err("no certificate in the PEM"))?;
    let info = info(leaf)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| err(format!("private key PEM: {e}")))?;
    let certified = CertifiedKey::from_der(chain, key, &ring::default_provider())
        .map_err(|e| err(format!("certificate and key do not fit together: {e}")))?;
    Ok(LoadedCert { key: Arc::new(certified), info, chain_pem: chain_pem.to_owned(), key_pem: key_pem.to_owned() })
}

/// A self-signed certificate for `names` (ECDSA P-256), valid for a year.
pub fn self_signed(names: &[String]) -> Result<LoadedCert, CertError> {
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(err)?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "PayBridge self-signed");
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365);
    let cert = params.self_signed(&key).map_err(err)?;
    load_pem(&cert.pem(), &key.serialize_pem())
}

/// The TLS-ALPN-01 challenge certificate for `domain` (RFC 8737): self-signed,
/// with the critical acmeIdentifier extension holding SHA-256(key authorization).
pub fn alpn_challenge(domain: &str, key_authorization_digest: &[u8]) -> Result<Arc<CertifiedKey>, CertError> {
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()]).map_err(err)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(key_authorization_digest)];
    let cert = params.self_signed(&key).map_err(err)?;
    // webpki cannot parse the critical acmeIdentifier extension, so this
    // skips `CertifiedKey::from_der`'s check and loads the key directly.
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = ring::default_provider().key_provider.load_private_key(der).map_err(err)?;
    Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing)))
}

/// Writes `contents` to `path` atomically (temp file, fsync, rename) with mode 0600.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = PrivateFile::create(path)?;
    file.file().write_all(contents)?;
    file.commit()
}

/// A file with mode 0600 written under a temporary name of its own beside
/// `path`, which it replaces atomically on [`PrivateFile::commit`] (fsync,
/// rename, fsync of the folder); dropped uncommitted, it is removed.
pub struct PrivateFile {
    file: std::fs::File,
    tmp: std::path::PathBuf,
    path: std::path::PathBuf,
    committed: bool,
}

impl PrivateFile {
    /// Creates the temporary file: `path`, a dot, 16 hex digits, `.tmp`.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{:016x}.tmp", rand::random::<u64>()));
        let tmp = std::path::PathBuf::from(tmp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&tmp)?;
        Ok(PrivateFile { file, tmp, path: path.to_owned(), committed: false })
    }

    /// Removes the temporary files of writes to `path` that were killed
    /// outright (SIGKILL, power loss), which no `Drop` removed.
    pub fn remove_stale(path: &Path) {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return };
        let Ok(entries) = std::fs::read_dir(folder_of(path)) else { return };
        for entry in entries.filter_map(Result::ok) {
            let stale = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(name)?.strip_prefix('.')?.strip_suffix(".tmp"))
                .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
            if stale {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// The file, to write to.
    pub fn file(&mut self) -> &mut std::fs::File {
        &mut self.file
    }

    /// Makes the contents durable and puts them at `path`.
    pub fn commit(mut self) -> std::io::Result<()> {
        self.file.sync_all()?;
        std::fs::rename(&self.tmp, &self.path)?;
        self.committed = true;
        // The rename is durable only once the directory is synced.
        std::fs::File::open(folder_of(&self.path))?.sync_all()
    }
}

/// The folder `path` is in (a bare file name's is the current one).
pub fn folder_of(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

impl Drop for PrivateFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_round_trips_through_pem() {
        let names = vec!["pay.example.com".to_string(), "www.example.com".to_string()];
        let cert = self_signed(&names).unwrap();
        assert_eq!(cert.info.names, names);
        assert!(cert.info.not_after > OffsetDateTime::now_utc() + time::Duration::days(300));
        let again = load_pem(&cert.chain_pem, &cert.key_pem).unwrap();
        assert_eq!(again.info, cert.info);
    }

    #[test]
    fn mismatched_key_is_refused() {
        let a = self_signed(&["a.example.com".into()]).unwrap();
        let b = self_signed(&["b.example.com".into()]).unwrap();
        let e = load_pem(&a.chain_pem, &b.key_pem).err().unwrap();
        assert!(e.0.contains("do not fit"), "{e}");
        assert!(load_pem("nonsense", &a.key_pem).is_err());
    }

    #[test]
    fn alpn_challenge_cert_builds() {
        assert!(alpn_challenge("pay.example.com", &[7u8; 32]).is_ok());
    }

    #[test]
    fn private_files_are_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        write_private(&path, b"secret").unwrap();
        write_private(&path, b"secret2").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"secret2");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
