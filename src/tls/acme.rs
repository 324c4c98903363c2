//! Obtaining and renewing the certificate from an ACME CA (Let's Encrypt by
//! default) with instant-acme.
//!
//! - The account is created once; its credentials are stored (0600) in the
//!   data directory and reused.
//! - HTTP-01 is answered by the plain-HTTP listener, TLS-ALPN-01 by the HTTPS
//!   listener itself; the type that worked last is tried first, the other on
//!   failure, so port 80 is optional.
//! - A stored, valid certificate is served at once on start; no order is
//!   placed until it is due: when a third of its lifetime remains, or inside
//!   the CA's ARI window when the directory offers ARI.
//! - Failures retry on a growing, jittered schedule and under local rate
//!   limits below the CA's; the old certificate is served meanwhile.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType, Identifier, NewAccount,
    NewOrder, Order, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::cert::{self, write_private, CertError, LoadedCert};
use super::renewal::{self, RateWindow};
use super::resolver::{CertResolver, HttpChallenges};
use super::settings::TlsConfig;
use super::status::StatusHandle;

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The CA or the connection to it failed.
    #[error("ACME error: {0}")]
    Acme(#[from] instant_acme::Error),
    /// The CA could not validate our control of a name.
    #[error("validation failed: {0}")]
    Validation(String),
    /// The certificate we got is unusable.
    #[error("certificate: {0}")]
    Cert(#[from] CertError),
    /// Reading or writing the data directory failed.
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
}

impl AcmeError {
    /// Whether the CA says our account does not exist (any more).
    fn account_is_gone(&self) -> bool {
        matches!(self, AcmeError::Acme(instant_acme::Error::Api(problem))
            if problem.r#type.as_deref() == Some("urn:ietf:params:acme:error:accountDoesNotExist"))
    }
}

/// Stored account: the directory it belongs to and instant-acme's credentials.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// What is withdrawn after an attempt.
enum Published {
    Http(String),
    Alpn(String),
}

/// The certificate manager for `mode = "acme"`.
pub struct AcmeManager {
    domains: Vec<String>,
    directory: String,
    contact: Option<String>,
    directory_ca: Option<PathBuf>,
    retry_schedule: Vec<Duration>,
    dir: PathBuf,
    resolver: Arc<CertResolver>,
    http_challenges: Arc<HttpChallenges>,
    http01_available: bool,
    status: Arc<StatusHandle>,
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn challenge_name(kind: &ChallengeType) -> &'static str {
    match kind {
        ChallengeType::Http01 => "http-01",
        ChallengeType::TlsAlpn01 => "tls-alpn-01",
        _ => "other",
    }
}

fn parse_times(stored: &[String]) -> impl Iterator<Item = OffsetDateTime> + '_ {
    stored.iter().filter_map(|t| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
}

fn format_times(times: Vec<OffsetDateTime>) -> Vec<String> {
    times.into_iter().filter_map(|t| t.format(&time::format_description::well_known::Rfc3339).ok()).collect()
}

impl AcmeManager {
    /// A manager for `config`, keeping its files in `tls_dir`.
    pub fn new(
        config: &TlsConfig,
        tls_dir: PathBuf,
        resolver: Arc<CertResolver>,
        http_challenges: Arc<HttpChallenges>,
        http01_available: bool,
        status: Arc<StatusHandle>,
    ) -> AcmeManager {
        AcmeManager {
            domains: config.domains.clone(),
            directory: config.acme_directory.to_string(),
            contact: config.acme_contact.clone(),
            directory_ca: config.acme_directory_ca.clone(),
            retry_schedule: config.acme_retry_schedule.clone(),
            dir: tls_dir,
            resolver,
            http_challenges,
            http01_available,
            status,
        }
    }

    fn covers_domains(&self, cert: &LoadedCert) -> bool {
        let mut have = cert.info.names.clone();
        let mut want = self.domains.clone();
        have.sort();
        want.sort();
        have == want
    }

    /// Loads the stored certificate and, if it is still good for the
    /// configured names, serves it right away.
    pub fn load_stored(&self) -> Option<LoadedCert> {
        let chain = std::fs::read_to_string(self.dir.join("cert.pem")).ok()?;
        let key = std::fs::read_to_string(self.dir.join("key.pem")).ok()?;
        let cert = match cert::load_pem(&chain, &key) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "the stored certificate is unusable; a new one will be ordered");
                return None;
            }
        };
        if cert.info.not_after <= now() {
            tracing::warn!("the stored certificate has expired; a new one will be ordered");
            return None;
        }
        if !self.covers_domains(&cert) {
            tracing::info!(have = ?cert.info.names, want = ?self.domains, "the configured domains changed; a new certificate will be ordered");
        }
        self.resolver.set(cert.key.clone());
        self.status.update(|s| s.certificate = Some(cert.info.clone()));
        tracing::info!(names = ?cert.info.names, not_after = %cert.info.not_after, "serving the stored certificate");
        Some(cert)
    }

    /// Whether the stored certificate came from the configured directory
    /// (switching from staging to production must not keep a staging certificate).
    fn stored_from_this_directory(&self) -> bool {
        std::fs::read_to_string(self.dir.join("cert-directory")).is_ok_and(|d| d.trim() == self.directory)
    }

    /// Runs forever: obtains the certificate when missing, renews it when due.
    pub async fn run(self) {
        let mut current = self.load_stored();
        if current.is_some() && !self.stored_from_this_directory() {
            tracing::info!(directory = %self.directory, "the stored certificate is from another ACME directory; ordering one here");
        }
        let mut from_this_directory = self.stored_from_this_directory();
        let mut account: Option<Account> = None;
        let mut failures = 0u32;
        let stored = self.status.get();
        let mut validations = RateWindow::new(4, time::Duration::hours(1));
        parse_times(&stored.failed_validations).for_each(|t| validations.record(t));
        let mut issuances = RateWindow::new(4, time::Duration::days(7));
        parse_times(&stored.issuances).for_each(|t| issuances.record(t));
        let mut preferred = match stored.challenge.as_deref() {
            Some("tls-alpn-01") => ChallengeType::TlsAlpn01,
            _ if self.http01_available => ChallengeType::Http01,
            _ => ChallengeType::TlsAlpn01,
        };

        loop {
            let due = match &current {
                Some(c) if self.covers_domains(c) && from_this_directory => self.due_time(&mut account, c).await,
                _ => now(),
            };
            let wait_for_limit = validations.next_allowed(now()).or_else(|| issuances.next_allowed(now()));
            let next = wait_for_limit.map_or(due, |t| t.max(due));
            self.status.update(|s| {
                s.next_renewal = Some(next);
                s.checked_at = Some(now());
            });
            if next > now() {
                if wait_for_limit.is_some_and(|t| t > now()) {
                    tracing::warn!(until = %next, "holding ACME attempts to stay under the CA's rate limits");
                }
                // Wake at least hourly: clocks jump, ARI windows move.
                let wait = (next - now()).unsigned_abs().min(Duration::from_secs(3600));
                tokio::time::sleep(wait).await;
                continue;
            }

            // Only a certificate from this directory can be named in `replaces`.
            let renewing = current.as_ref().filter(|_| from_this_directory);
            match self.attempt(&mut account, renewing, &mut preferred, &mut validations).await {
                Ok(cert) => {
                    issuances.record(now());
                    failures = 0;
                    from_this_directory = true;
                    let info = cert.info.clone();
                    self.status.update(|s| {
                        s.certificate = Some(info.clone());
                        s.challenge = Some(challenge_name(&preferred).into());
                        s.last_error = None;
                        s.consecutive_failures = 0;
                        s.last_success_at = Some(now());
                        s.issuances = format_times(issuances.events(now()));
                        s.failed_validations = format_times(validations.events(now()));
                    });
                    tracing::info!(
                        names = ?info.names, issuer = %info.issuer, not_after = %info.not_after,
                        renew_at = %renewal::renewal_time(info.not_before, info.not_after),
                        challenge = challenge_name(&preferred), "certificate obtained and in use"
                    );
                    current = Some(cert);
                }
                Err(e) => {
                    if e.account_is_gone() {
                        // Deactivated, or a CA that forgot it (a test CA restarted): start afresh.
                        tracing::warn!("the CA no longer knows our ACME account; a new one will be created");
                        let _ = std::fs::remove_file(self.dir.join("account.json"));
                        account = None;
                    }
                    failures += 1;
                    let delay = renewal::retry_delay(&self.retry_schedule, failures, rand::random());
                    let message = e.to_string();
                    let retry_at = now() + delay;
                    self.status.update(|s| {
                        s.last_error = Some(message.clone());
                        s.last_error_at = Some(now());
                        s.consecutive_failures = failures;
                        s.next_renewal = Some(retry_at);
                        s.failed_validations = format_times(validations.events(now()));
                    });
                    match &current {
                        Some(c) => tracing::warn!(
                            error = %message, failures, retry_in_secs = delay.as_secs(), still_serving_until = %c.info.not_after,
                            "certificate renewal failed; the current certificate stays in use"
                        ),
                        None => tracing::error!(
                            error = %message, failures, retry_in_secs = delay.as_secs(),
                            "cannot obtain a certificate; HTTPS has none to serve yet"
                        ),
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// When `cert` should be renewed: inside the CA's ARI window if it has
    /// one, else when a third of its lifetime remains.
    async fn due_time(&self, account: &mut Option<Account>, cert: &LoadedCert) -> OffsetDateTime {
        let fallback = renewal::renewal_time(cert.info.not_before, cert.info.not_after);
        if account.is_none() {
            *account = self.account().await.ok();
        }
        let (Some(acct), Some(der)) = (account.as_ref(), cert.key.cert.first()) else { return fallback };
        let Ok(id) = CertificateIdentifier::try_from(der) else { return fallback };
        match acct.renewal_info(&id).await {
            Ok((info, _)) => {
                let window = info.suggested_window;
                renewal::in_window(window.start, window.end, rand::random()).min(cert.info.not_after)
            }
            Err(instant_acme::Error::Unsupported(_)) => fallback,
            Err(e) => {
                tracing::debug!(error = %e, "ARI lookup failed; using the lifetime rule");
                fallback
            }
        }
    }

    /// The ACME account: stored credentials if they are for this directory,
    /// else a new account (stored for next time).
    async fn account(&self) -> Result<Account, AcmeError> {
        let builder = || match &self.directory_ca {
            Some(ca) => Account::builder_with_root(ca),
            None => Account::builder(),
        };
        let path = self.dir.join("account.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            match serde_json::from_str::<StoredAccount>(&text) {
                Ok(stored) if stored.directory == self.directory => {
                    return Ok(builder()?.from_credentials(stored.credentials).await?);
                }
                Ok(_) => tracing::info!("the ACME directory changed; creating an account there"),
                Err(e) => tracing::warn!(error = %e, "the stored ACME account is unreadable; creating a new one"),
            }
        }
        let contact: Vec<&str> = self.contact.iter().map(String::as_str).collect();
        let new = NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false };
        let (account, credentials) = builder()?.create(&new, self.directory.clone(), None).await?;
        let stored = StoredAccount { directory: self.directory.clone(), credentials };
        write_private(&path, &serde_json::to_vec(&stored).expect("credentials serialize"))?;
        tracing::info!(directory = %self.directory, "ACME account created");
        Ok(account)
    }

    /// One attempt: the preferred challenge type, then the other on a validation failure.
    async fn attempt(
        &self,
        account: &mut Option<Account>,
        current: Option<&LoadedCert>,
        preferred: &mut ChallengeType,
        validations: &mut RateWindow,
    ) -> Result<LoadedCert, AcmeError> {
        let acct = match account {
            Some(a) => a.clone(),
            None => {
                let a = self.account().await?;
                *account = Some(a.clone());
                a
            }
        };
        let replaces = current
            .filter(|c| self.covers_domains(c))
            .and_then(|c| c.key.cert.first())
            .and_then(|der| CertificateIdentifier::try_from(der).ok())
            .map(CertificateIdentifier::into_owned);
        let mut kinds = vec![preferred.clone()];
        let other = match preferred {
            ChallengeType::Http01 => ChallengeType::TlsAlpn01,
            _ => ChallengeType::Http01,
        };
        if other != ChallengeType::Http01 || self.http01_available {
            kinds.push(other);
        }
        let mut last = None;
        for kind in kinds {
            if validations.next_allowed(now()).is_some() {
                break;
            }
            match self.issue(&acct, &kind, replaces.clone()).await {
                Ok(cert) => {
                    *preferred = kind;
                    return Ok(cert);
                }
                Err(AcmeError::Validation(why)) => {
                    validations.record(now());
                    tracing::warn!(challenge = challenge_name(&kind), error = %why, "ACME validation failed");
                    last = Some(AcmeError::Validation(format!("{}: {why}", challenge_name(&kind))));
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| AcmeError::Validation("held back by the local rate limit".into())))
    }

    /// Places an order, answers its challenges with `kind`, and fetches the certificate.
    async fn issue(
        &self,
        account: &Account,
        kind: &ChallengeType,
        replaces: Option<CertificateIdentifier<'static>>,
    ) -> Result<LoadedCert, AcmeError> {
        let identifiers: Vec<Identifier> = self.domains.iter().map(|d| Identifier::Dns(d.clone())).collect();
        let mut order = match replaces {
            Some(id) => match account.new_order(&NewOrder::new(&identifiers).replaces(id)).await {
                // No ARI at this directory: order without `replaces`.
                Err(instant_acme::Error::Unsupported(_)) => account.new_order(&NewOrder::new(&identifiers)).await?,
                other => other?,
            },
            None => account.new_order(&NewOrder::new(&identifiers)).await?,
        };
        let mut published = Vec::new();
        let result = self.complete(&mut order, kind, &mut published).await;
        for p in published {
            match p {
                Published::Http(token) => self.http_challenges.remove(&token),
                Published::Alpn(domain) => self.resolver.remove_challenge(&domain),
            }
        }
        let cert = result?;
        write_private(&self.dir.join("key.pem"), cert.key_pem.as_bytes())?;
        write_private(&self.dir.join("cert.pem"), cert.chain_pem.as_bytes())?;
        write_private(&self.dir.join("cert-directory"), self.directory.as_bytes())?;
        self.resolver.set(cert.key.clone());
        Ok(cert)
    }

    async fn complete(
        &self,
        order: &mut Order,
        kind: &ChallengeType,
        published: &mut Vec<Published>,
    ) -> Result<LoadedCert, AcmeError> {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => return Err(AcmeError::Validation(format!("authorization is {other:?}"))),
            }
            let domain = authz.identifier().to_string();
            let Some(mut challenge) = authz.challenge(kind.clone()) else {
                return Err(AcmeError::Validation(format!("the CA offers no {} challenge", challenge_name(kind))));
            };
            let key_authorization = challenge.key_authorization();
            match kind {
                ChallengeType::Http01 => {
                    self.http_challenges.insert(&challenge.token, key_authorization.as_str());
                    published.push(Published::Http(challenge.token.clone()));
                }
                _ => {
                    let cert = cert::alpn_challenge(&domain, key_authorization.digest().as_ref())?;
                    self.resolver.add_challenge(&domain, cert);
                    published.push(Published::Alpn(domain.clone()));
                }
            }
            challenge.set_ready().await?;
        }
        let patience = RetryPolicy::new().timeout(Duration::from_secs(90));
        match order.poll_ready(&patience).await {
            Ok(OrderStatus::Ready) => {}
            Ok(_) | Err(instant_acme::Error::Api(_)) => return Err(AcmeError::Validation(explain(order).await)),
            Err(e) => return Err(e.into()),
        }
        let key_pem = order.finalize().await?;
        let chain_pem = order.poll_certificate(&patience).await?;
        Ok(cert::load_pem(&chain_pem, &key_pem)?)
    }
}

/// The CA's own words about why validation failed.
async fn explain(order: &mut Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        let _ = authz.refresh().await;
        let domain = authz.identifier().to_string();
        for challenge in &authz.challenges {
            if let Some(problem) = &challenge.error {
                reasons.push(format!("{domain}: {problem}"));
            }
        }
    }
    if reasons.is_empty() {
        "the CA marked the order invalid".into()
    } else {
        reasons.join("; ")
    }
}
