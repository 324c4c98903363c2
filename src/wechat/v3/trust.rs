//! The keys PayBridge trusts WeChat's signatures with, shared by the client
//! (replies) and the notify handler: the WeChat Pay public key under its
//! `PUB_KEY_ID_…`, the platform certificates downloaded in certificate
//! mode, or both while WeChat migrates a merchant from one to the other.
//! [`super::verify::Verifier`] picks among them by `Wechatpay-Serial`.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::crypto::PublicKey;
use super::verify::Verifier;

/// A platform certificate PayBridge trusts.
#[derive(Debug, Clone)]
pub struct PlatformCertificate {
    /// Upper-case hex serial, as in `Wechatpay-Serial`.
    pub serial: String,
    /// Its public key.
    pub key: PublicKey,
    /// End of validity (unix seconds).
    pub not_after: i64,
    /// The certificate, PEM.
    pub pem: String,
}

/// The trusted keys; cheap to read on every request.
#[derive(Debug)]
pub struct Trust {
    public_key: Option<(String, PublicKey)>,
    certificates: Mutex<Vec<PlatformCertificate>>,
    verifier: ArcSwap<Verifier>,
}

impl Trust {
    /// Trusts the WeChat Pay public key `(id, key)`, if any, and no certificate yet.
    pub fn new(public_key: Option<(String, PublicKey)>) -> Trust {
        let trust = Trust {
            public_key,
            certificates: Mutex::new(Vec::new()),
            verifier: ArcSwap::from_pointee(Verifier::default()),
        };
        trust.rebuild();
        trust
    }

    /// The verifier in force.
    pub fn verifier(&self) -> Arc<Verifier> {
        self.verifier.load_full()
    }

    /// Replaces the platform certificates (after a download, or at start-up
    /// from the store). Expired ones are dropped: WeChat no longer signs with them.
    pub fn set_certificates(&self, mut certificates: Vec<PlatformCertificate>, now_secs: i64) {
        certificates.retain(|c| c.not_after > now_secs);
        *self.certificates.lock().expect("certificates lock") = certificates;
        self.rebuild();
    }

    /// The platform certificates trusted now.
    pub fn certificates(&self) -> Vec<PlatformCertificate> {
        self.certificates.lock().expect("certificates lock").clone()
    }

    /// The WeChat Pay public key id, if one is configured.
    pub fn public_key_id(&self) -> Option<&str> {
        self.public_key.as_ref().map(|(id, _)| id.as_str())
    }

    fn rebuild(&self) {
        let mut verifier = Verifier::default();
        if let Some((id, key)) = &self.public_key {
            verifier.add(id, key.clone());
        }
        for c in self.certificates.lock().expect("certificates lock").iter() {
            verifier.add(&c.serial, c.key.clone());
        }
        self.verifier.store(Arc::new(verifier));
    }
}
