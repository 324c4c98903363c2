//! The certificate rustls serves, swappable at run time.
//!
//! A renewed certificate is used by the next handshake: no restart, no
//! dropped connection. During a TLS-ALPN-01 challenge, a handshake that
//! offers only `acme-tls/1` gets the challenge certificate for its SNI.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwapOption;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Serves the current certificate, or a challenge certificate.
#[derive(Debug, Default)]
pub struct CertResolver {
    current: ArcSwapOption<CertifiedKey>,
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl CertResolver {
    /// Serves `key` from the next handshake on.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        self.current.store(Some(key));
    }

    /// Answers TLS-ALPN-01 handshakes for `domain` with `key`.
    pub fn add_challenge(&self, domain: &str, key: Arc<CertifiedKey>) {
        self.challenges.write().expect("challenge lock").insert(domain.to_ascii_lowercase(), key);
    }

    /// Stops answering TLS-ALPN-01 for `domain`.
    pub fn remove_challenge(&self, domain: &str) {
        self.challenges.write().expect("challenge lock").remove(&domain.to_ascii_lowercase());
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let only_acme = hello.alpn().is_some_and(|mut protocols| protocols.all(|p| p == ACME_TLS_ALPN));
        if only_acme {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self.challenges.read().expect("challenge lock").get(&name).cloned();
        }
        self.current.load_full()
    }
}

/// The HTTP-01 answers: token → key authorization.
#[derive(Debug, Default)]
pub struct HttpChallenges {
    answers: RwLock<HashMap<String, String>>,
}

impl HttpChallenges {
    /// Publishes an answer.
    pub fn insert(&self, token: &str, key_authorization: &str) {
        self.answers.write().expect("challenge lock").insert(token.to_owned(), key_authorization.to_owned());
    }

    /// Withdraws an answer.
    pub fn remove(&self, token: &str) {
        self.answers.write().expect("challenge lock").remove(token);
    }

    /// The answer for a token.
    pub fn get(&self, token: &str) -> Option<String> {
        self.answers.read().expect("challenge lock").get(token).cloned()
    }
}
