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

use crate::limit::PeerKey;
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
        self.create_at(Instant::now())
    }

    fn create_at(&self, now: Instant) -> (String, String) {
        let (token, csrf) = (random_token(), random_token());
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
        self.check_at(token, Instant::now())
    }

    fn check_at(&self, token: &str, now: Instant) -> Option<String> {
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

/// Login attempts allowed per address per window (counted before the
/// password is checked, so a burst cannot slip past the count).
const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Argon2 verifications at once: each takes ~19 MiB and a core for a while.
const MAX_VERIFYING: usize = 2;
/// How long an attempt waits for a verification slot before 429.
const SLOT_WAIT: Duration = Duration::from_secs(3);
/// Failures from all addresses in a minute that start the global back-off,
/// during which each verification holds its slot at least [`BACKOFF_SPACING`].
const GLOBAL_FAILURES: usize = 50;
const BACKOFF_SPACING: Duration = Duration::from_secs(1);
/// Addresses remembered at most; past it, ones without recent attempts go.
const MAX_ADDRESSES: usize = 10_000;

/// Why a login attempt may not be checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    /// This address used its attempts; it may try again after this long.
    Address(Duration),
    /// Too many logins are being checked at once; try again in a moment.
    Busy,
}

/// Limits on login attempts: per address, a bound on concurrent Argon2
/// verifications, and a short global back-off under a distributed attack
/// (which slows everyone a little but locks no one out).
pub struct LoginLimiter {
    /// By address, an IPv6 /64 counting as one (as every per-peer limit).
    attempts: Mutex<HashMap<PeerKey, VecDeque<Instant>>>,
    failures: Mutex<VecDeque<Instant>>,
    slots: tokio::sync::Semaphore,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        LoginLimiter {
            attempts: Mutex::new(HashMap::new()),
            failures: Mutex::new(VecDeque::new()),
            slots: tokio::sync::Semaphore::new(MAX_VERIFYING),
        }
    }
}

/// A counted attempt holding a verification slot.
pub struct Attempt<'a> {
    limiter: &'a LoginLimiter,
    key: PeerKey,
    started: Instant,
    _slot: tokio::sync::SemaphorePermit<'a>,
}

impl LoginLimiter {
    /// Counts an attempt from `ip` and waits (briefly) for a slot to check
    /// it in. The attempt counts against the address until it succeeds.
    pub async fn begin(&self, ip: IpAddr) -> Result<Attempt<'_>, Throttled> {
        let key = PeerKey::of(ip);
        {
            let now = Instant::now();
            let mut attempts = self.attempts.lock().expect("limiter lock");
            if attempts.len() >= MAX_ADDRESSES && !attempts.contains_key(&key) {
                attempts.retain(|_, t| t.back().is_some_and(|last| now.duration_since(*last) < FAILURE_WINDOW));
                if attempts.len() >= MAX_ADDRESSES {
                    return Err(Throttled::Busy);
                }
            }
            let times = attempts.entry(key).or_default();
            while times.front().is_some_and(|t| now.duration_since(*t) >= FAILURE_WINDOW) {
                times.pop_front();
            }
            if times.len() >= MAX_FAILURES {
                let first = *times.front().expect("full");
                return Err(Throttled::Address(FAILURE_WINDOW - now.duration_since(first)));
            }
            times.push_back(now);
        }
        match tokio::time::timeout(SLOT_WAIT, self.slots.acquire()).await {
            Ok(Ok(slot)) => Ok(Attempt { limiter: self, key, started: Instant::now(), _slot: slot }),
            _ => {
                // Not checked: it does not count.
                self.forget_one(key);
                Err(Throttled::Busy)
            }
        }
    }

    fn forget_one(&self, key: PeerKey) {
        if let Some(times) = self.attempts.lock().expect("limiter lock").get_mut(&key) {
            times.pop_back();
        }
    }

    fn under_attack(&self) -> bool {
        let now = Instant::now();
        let mut failures = self.failures.lock().expect("limiter lock");
        while failures.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
            failures.pop_front();
        }
        failures.len() >= GLOBAL_FAILURES
    }
}

impl Attempt<'_> {
    /// The password was right: the address's attempts are forgiven.
    pub fn succeeded(self) {
        self.limiter.attempts.lock().expect("limiter lock").remove(&self.key);
    }

    /// The password was wrong: the attempt stays counted. Under the global
    /// back-off the slot is held a little longer, spacing all attempts.
    pub async fn failed(self) {
        {
            let mut failures = self.limiter.failures.lock().expect("limiter lock");
            if failures.len() < 4 * GLOBAL_FAILURES {
                failures.push_back(Instant::now());
            }
        }
        if self.limiter.under_attack() {
            tokio::time::sleep(BACKOFF_SPACING.saturating_sub(self.started.elapsed())).await;
        }
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
    fn sessions_expire_idle_and_absolutely() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let (idle, _) = sessions.create_at(start);
        assert!(sessions.check_at(&idle, start + SESSION_IDLE - Duration::from_secs(1)).is_some());
        // Used just now: the idle clock restarted.
        assert!(sessions.check_at(&idle, start + 2 * SESSION_IDLE - Duration::from_secs(2)).is_some());
        assert!(sessions.check_at(&idle, start + 3 * SESSION_IDLE).is_none(), "an hour unused ends it");
        assert!(sessions.check_at(&idle, start).is_none(), "and it stays ended");

        let (busy, _) = sessions.create_at(start);
        let mut at = start;
        while at + Duration::from_secs(1800) < start + SESSION_LIFETIME {
            at += Duration::from_secs(1800);
            assert!(sessions.check_at(&busy, at).is_some(), "used every half hour");
        }
        assert!(sessions.check_at(&busy, start + SESSION_LIFETIME).is_none(), "twelve hours end it, used or not");
    }

    #[tokio::test]
    async fn a_locked_out_address_waits_the_whole_window() {
        let limiter = LoginLimiter::default();
        let ip: IpAddr = "198.51.100.9".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            limiter.begin(ip).await.unwrap().failed().await;
        }
        let Err(Throttled::Address(wait)) = limiter.begin(ip).await else { panic!("not locked out") };
        assert!(wait > FAILURE_WINDOW - Duration::from_secs(5) && wait <= FAILURE_WINDOW, "{wait:?}");
        assert_eq!(FAILURE_WINDOW, Duration::from_secs(15 * 60), "the README says 15 minutes");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn attempts_are_counted_before_they_are_checked() {
        let limiter = std::sync::Arc::new(LoginLimiter::default());
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        for _ in 0..7 {
            limiter.begin(ip).await.unwrap().succeeded();
        }
        // 200 at once: five are checked, the rest refused without a check.
        let burst: Vec<_> = (0..200)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    match limiter.begin(ip).await {
                        Ok(attempt) => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            attempt.failed().await;
                            None
                        }
                        Err(throttled) => Some(throttled),
                    }
                })
            })
            .collect();
        let mut checked = 0;
        for task in burst {
            match task.await.unwrap() {
                None => checked += 1,
                Some(throttled) => assert!(matches!(throttled, Throttled::Address(_)), "{throttled:?}"),
            }
        }
        assert_eq!(checked, MAX_FAILURES);
        assert!(limiter.begin("::ffff:203.0.113.7".parse().unwrap()).await.is_err(), "mapped IPv4 is the same");
        // An IPv6 /64 is one address: rotating inside it buys nothing.
        let v6 = |i: u16| IpAddr::from([0x2001, 0xdb8, 0, 7, 0, 0, 0, i]);
        for i in 0..MAX_FAILURES as u16 {
            limiter.begin(v6(i)).await.unwrap().failed().await;
        }
        assert!(matches!(limiter.begin(v6(999)).await, Err(Throttled::Address(_))));
        assert!(limiter.begin("203.0.113.8".parse().unwrap()).await.is_ok(), "other addresses are not locked out");
    }

    #[tokio::test]
    async fn at_most_two_verifications_at_once() {
        let limiter = LoginLimiter::default();
        let one = limiter.begin("192.0.2.1".parse().unwrap()).await.unwrap();
        let two = limiter.begin("192.0.2.2".parse().unwrap()).await.unwrap();
        let started = Instant::now();
        assert_eq!(limiter.begin("192.0.2.3".parse().unwrap()).await.err(), Some(Throttled::Busy));
        assert!(started.elapsed() >= SLOT_WAIT);
        drop(one);
        assert!(limiter.begin("192.0.2.3".parse().unwrap()).await.is_ok(), "a freed slot is taken");
        drop(two);
    }
}
