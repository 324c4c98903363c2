//! WeChat Pay v3 platform certificates, as downloaded from
//! `/v3/certificates` (certificate mode): kept so that a restart verifies
//! notifies at once, before WeChat can be asked again.

use serde::{Deserialize, Serialize};

use super::codec::{self, CodecError};
use super::{Store, StoreError, SMALL_WRITE};

/// The format version written by this release.
const CERTIFICATE_VERSION: u8 = 1;

/// One platform certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCertificate {
    /// Its serial, upper-case hex: what WeChat puts in `Wechatpay-Serial`.
    pub serial: String,
    /// The certificate, PEM (decrypted; public data).
    pub pem: String,
    /// When it stops being valid (unix seconds).
    pub not_after: i64,
    /// When PayBridge downloaded it (unix ms).
    pub fetched_at: i64,
}

impl StoredCertificate {
    fn encode(&self) -> Vec<u8> {
        codec::encode(CERTIFICATE_VERSION, self)
    }

    fn decode(bytes: &[u8]) -> Result<StoredCertificate, CodecError> {
        match codec::split(bytes)? {
            (CERTIFICATE_VERSION, payload) => codec::decode(payload),
            (other, _) => Err(CodecError::UnknownVersion(other)),
        }
    }
}

impl Store {
    /// Replaces the stored platform certificates with `certificates` (what
    /// WeChat lists is every certificate currently valid), durably.
    pub async fn put_wechat_certificates(&self, certificates: Vec<StoredCertificate>) -> Result<(), StoreError> {
        let old = self.wechat_certificates()?;
        self.write(SMALL_WRITE, move |tx, _| {
            for gone in old.iter().filter(|o| !certificates.iter().any(|c| c.serial == o.serial)) {
                tx.wechat_certificates.remove(gone.serial.as_bytes())?;
            }
            for c in &certificates {
                tx.wechat_certificates.insert(c.serial.as_bytes(), c.encode())?;
            }
            Ok(())
        })
        .await
    }

    /// The stored platform certificates.
    pub fn wechat_certificates(&self) -> Result<Vec<StoredCertificate>, StoreError> {
        let trees = self.trees()?;
        let mut out = Vec::new();
        for entry in trees.wechat_certificates.iter() {
            let (_, bytes) = entry?;
            out.push(StoredCertificate::decode(&bytes)?);
        }
        Ok(out)
    }
}
