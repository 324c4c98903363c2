//! Admin authentication: the Argon2id password hash, sessions with a CSRF
//! token, and a per-address limit on failed logins.
//!
//! SECURITY: only the hash of the password is ever stored (in the config);
//! session tokens live in memory only (a restart logs everyone out) and are
//! compared in constant time.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

/// The shortest password `admin set-password` accepts.
pub const MIN_PASSWORD_LEN: usize = 10;

/// Hashes a password with Argon2id (default, OWASP-recommended parameters).
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("16 bytes make a valid salt");
    Argon2::default().hash_password(password.as_bytes(), &salt).expect("Argon2 hashes any password").to_string()
}

/// Whether `hash` is an Argon2id PHC string PayBridge can verify against.
pub fn is_valid_hash(hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| h.algorithm.as_str() == "argon2id")
}

/// Checks a password against a stored hash. Slow by design: call it off the
/// async threads (`spawn_blocking`).
pub fn verify_password(password: &str, hash: &Secret) -> bool {
    match PasswordHash::new(hash.expose()) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// How long a session lives at most, and without use.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
const SESSION_IDLE: Duration = Duration::from_secs(3600);
/// At most this many sessions; the oldest goes first.
const MAX_SESSIONS: usize = 256;

struct Session {
    csrf: String,
    created: Instant,
    last_seen: Instant,
}

/// The logged-in sessions, keyed by SHA-256 of the cookie token.
#[derive(Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<[u8; 32], Session>>,
}

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn token_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    /// Opens a session; returns (cookie token, CSRF token).
    pub fn create(&self) -> (String, String) {
        let (token, csrf) = (random_token(), random_token());
        let now = Instant::now();
        let mut sessions = self.sessions.lock().expect("sessions lock");
        sessions.retain(|_, s| alive(s, now));
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| *k) {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(token_key(&token), Session { csrf: csrf.clone(), created: now, last_seen: now });
        (token, csrf)
    }

    /// The CSRF token of a live session (and marks it used), or `None`.
    pub fn check(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let key = token_key(token);
        match sessions.get_mut(&key) {
            Some(s) if alive(s, now) => {
                s.last_seen = now;
                Some(s.csrf.clone())
            }
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends a session.
    pub fn remove(&self, token: &str) {
        self.sessions.lock().expect("sessions lock").remove(&token_key(token));
    }
}

fn alive(s: &Session, now: Instant) -> bool {
    now.duration_since(s.created) < SESSION_LIFETIME && now.duration_since(s.last_seen) < SESSION_IDLE
}

/// Compares a CSRF token from a request with the session's, in constant time.
pub fn csrf_matches(expected: &str, given: &str) -> bool {
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// Failed logins allowed per address per window.
const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Counts failed logins per client address.
#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl LoginLimiter {
    /// `Some(wait)` if `ip` must wait before trying again.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let mut failures = self.failures.lock().expect("limiter lock");
        let times = failures.get_mut(&ip)?;
        while times.front().is_some_and(|t| now.duration_since(*t) >= FAILURE_WINDOW) {
            times.pop_front();
        }
        if times.len() < MAX_FAILURES {
            return None;
        }
        times.front().map(|first| FAILURE_WINDOW - now.duration_since(*first))
    }

    /// Records a failed login from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut failures = self.failures.lock().expect("limiter lock");
        if failures.len() > 10_000 {
            // Bound the memory an address-spraying attacker can take.
            failures.retain(|_, t| t.back().is_some_and(|last| now.duration_since(*last) < FAILURE_WINDOW));
        }
        failures.entry(ip).or_default().push_back(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let hash = hash_password("correct horse battery");
        assert!(hash.starts_with("$argon2id$"));
        assert!(is_valid_hash(&hash));
        assert!(!is_valid_hash("plaintext"));
        assert!(verify_password("correct horse battery", &Secret::new(hash.clone())));
        assert!(!verify_password("wrong horse battery", &Secret::new(hash)));
    }

    #[test]
    fn sessions_and_csrf() {
        let sessions = Sessions::default();
        let (token, csrf) = sessions.create();
        assert_eq!(sessions.check(&token).as_deref(), Some(csrf.as_str()));
        assert!(csrf_matches(&csrf, &csrf.clone()));
        assert!(!csrf_matches(&csrf, "nope"));
        assert_eq!(sessions.check("forged"), None);
        sessions.remove(&token);
        assert_eq!(sessions.check(&token), None);
    }

    #[test]
    fn limiter_blocks_after_five_failures() {
        let limiter = LoginLimiter::default();
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(limiter.blocked(ip), None);
            limiter.failed(ip);
        }
        assert!(limiter.blocked(ip).is_some());
        assert_eq!(limiter.blocked("203.0.113.8".parse().unwrap()), None);
    }
}
