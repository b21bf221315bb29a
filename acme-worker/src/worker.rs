//! The worker: one pass looks at every wanted certificate, orders those that are due and
//! says when the next pass should run; the daemon repeats passes at that time or as soon as
//! Docker reports a change. Failures back off per certificate (`acme.retry-after`, 1 min by
//! default, doubling to 1 h, with the reason logged), so one failing host never holds up the others and a broken setup
//! does not hammer the CA.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use instant_acme::Account;

use berth_core::config::Config;
use berth_core::docker::Snapshot;

use crate::feed::Published;
use crate::issue::issue;
use crate::metrics::Metrics;
use crate::wanted::{ari_renew_at, due, read_leaf, wanted, Due, Existing, Wanted};
use crate::Error;

/// Longest wait after failures (the first is `acme.retry-after`, doubling per failure).
pub const BACKOFF_MAX: Duration = Duration::from_secs(3600);
/// With a feed: longest wait for an edge to read a newly published thumbprint (edges retry
/// an unreachable feed at least every 10 s).
pub const FEED_SETTLE: Duration = Duration::from_secs(12);
/// Longest time between passes, even when nothing is due.
pub const PASS_EVERY: Duration = Duration::from_secs(3600);

/// Failures of one certificate in a row, and when to try again.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    retry_at: Instant,
}

/// What a pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Certificates ordered and installed.
    pub issued: Vec<String>,
    /// Certificates whose order failed.
    pub failed: Vec<String>,
}

/// The certificate worker's state between passes.
pub struct Worker {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    accounts: HashMap<Option<String>, Account>,
    backoff: HashMap<String, Backoff>,
    reported: Vec<String>,
    /// The directory has no `renewalInfo` (ACME Renewal Information): use the fixed window.
    ari_unsupported: bool,
    /// With `acme.feed`: where the thumbprint and certificate changes are published, and
    /// how many documents with the thumbprint the feed has served.
    feed: Option<(
        tokio::sync::watch::Sender<Published>,
        tokio::sync::watch::Receiver<u64>,
    )>,
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Whether an error is the CA refusing a stale nonce (transient by definition).
fn is_bad_nonce(e: &Error) -> bool {
    matches!(e, Error::Acme(instant_acme::Error::Api(p))
        if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:badNonce"))
}

/// Where in a renewal window this certificate renews, in 0..1: fixed per name, so restarts
/// keep the same moment and different certificates spread out.
fn spread(name: &str) -> f64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) as f64 / u64::MAX as f64
}

async fn existing(certs_dir: &Path, name: &str) -> Option<Existing> {
    let pem = tokio::fs::read(certs_dir.join(format!("{name}.crt")))
        .await
        .ok()?;
    // A certificate without its key is no certificate: order a new pair.
    tokio::fs::metadata(certs_dir.join(format!("{name}.key")))
        .await
        .ok()?;
    read_leaf(&pem).ok()
}

impl Worker {
    /// A worker for `config`, recording into `metrics`.
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>) -> Worker {
        Worker {
            config,
            metrics,
            accounts: HashMap::new(),
            backoff: HashMap::new(),
            reported: Vec::new(),
            ari_unsupported: false,
            feed: None,
        }
    }

    /// Publishes to the certificate feed: the thumbprint of the one account every order then
    /// uses (the edges answer HTTP-01 with it, so it cannot vary per container), and a change
    /// after certificates are written. `served` counts documents the feed handed out with
    /// the thumbprint.
    #[must_use]
    pub fn with_feed(
        mut self,
        published: tokio::sync::watch::Sender<Published>,
        served: tokio::sync::watch::Receiver<u64>,
    ) -> Worker {
        self.feed = Some((published, served));
        self
    }

    /// The account email for `w`: its own, else `acme.email`; with a feed always `acme.email`.
    fn email_for(&self, w: &Wanted) -> Option<String> {
        match (&self.feed, &w.email) {
            (None, Some(own)) => Some(own.clone()),
            _ => self.config.acme.email.clone(),
        }
    }

    /// With a feed: loads (or registers) the account and publishes its thumbprint, then
    /// gives the edges up to [`FEED_SETTLE`] to read it (an edge waiting on the feed has it
    /// at once), so that the first challenges find edges that can answer them.
    async fn publish_thumbprint(&mut self) {
        let Some((feed, mut served)) = self.feed.clone() else {
            return;
        };
        if feed.borrow().thumbprint.is_some() {
            return;
        }
        let thumbprint = match self.account(self.config.acme.email.clone()).await {
            Ok(account) => account.key_thumbprint().to_string(),
            Err(e) => {
                tracing::warn!("acme: cannot load or register the account: {e}");
                return;
            }
        };
        tracing::info!(%thumbprint, "acme: account thumbprint published on the feed");
        let before = *served.borrow_and_update();
        feed.send_modify(|p| p.thumbprint = Some(thumbprint));
        let read = tokio::time::timeout(FEED_SETTLE, served.wait_for(|n| *n > before)).await;
        if read.is_err() {
            tracing::warn!(
                "acme: no edge has read the certificate feed in {}s; ordering anyway \
                 (challenges fail on edges that do not know the thumbprint yet)",
                FEED_SETTLE.as_secs()
            );
        }
    }

    async fn account(&mut self, email: Option<String>) -> Result<Account, Error> {
        if let Some(a) = self.accounts.get(&email) {
            return Ok(a.clone());
        }
        let a = crate::account::account(&self.config.acme, email.as_deref()).await?;
        self.accounts.insert(email, a.clone());
        Ok(a)
    }

    /// Orders `w`; an order that fails only on stale nonces (`badNonce`, which the client
    /// already retried three times per request) is started again at once, twice at most,
    /// rather than waiting out a backoff for a fault that is not the certificate's.
    async fn order(&mut self, w: &Wanted) -> Result<(), Error> {
        let email = self.email_for(w);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = match self.account(email.clone()).await {
                Ok(account) => {
                    issue(
                        &account,
                        w,
                        &self.config.acme.challenge_dir,
                        &self.config.tls.certs_dir,
                        self.config.acme.key_type,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            match result {
                Err(e) if is_bad_nonce(&e) && attempts < 3 => {
                    tracing::info!(cert = %w.name, "acme: the CA refused a nonce; ordering again");
                }
                other => return other,
            }
        }
    }

    /// Looks at every wanted certificate once, orders the due ones, and returns what it did
    /// and how long until the next pass should run.
    pub async fn pass(&mut self, containers: &Snapshot) -> (PassReport, Duration) {
        let (wanted, errors) = wanted(&self.config.routes, containers);
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        for m in messages.iter().filter(|m| !self.reported.contains(m)) {
            tracing::warn!("acme: {m}; no certificate for that container");
        }
        self.reported = messages;
        self.publish_thumbprint().await;

        let renew_before =
            i64::try_from(self.config.acme.renew_before.as_secs()).unwrap_or(i64::MAX);
        let certs_dir = self.config.tls.certs_dir.clone();
        let mut report = PassReport::default();
        let mut next = PASS_EVERY;
        for w in &wanted {
            let current = existing(&certs_dir, &w.name).await;
            let now = now_unix();
            let reason = match due(current.as_ref(), &w.hosts, renew_before, now) {
                Due::NotUntil(fixed) => {
                    // The CA's own window, when it publishes one, comes first.
                    let ari = match &current {
                        Some(e) => self.ari_renew_at(w, e).await,
                        None => None,
                    };
                    let (at, recheck) = match ari {
                        Some((at, _)) if at <= now => (at, Duration::ZERO),
                        Some((at, recheck)) => (at.min(fixed), recheck),
                        None => (fixed, PASS_EVERY),
                    };
                    if at > now {
                        self.record(&w.name, current.as_ref(), Some(at));
                        self.backoff.remove(&w.name);
                        let wait = Duration::from_secs(u64::try_from(at - now).unwrap_or(0));
                        next = next.min(wait).min(recheck.max(Duration::from_secs(60)));
                        continue;
                    }
                    "the CA's renewal window (ARI) has opened"
                }
                Due::Missing => "no certificate yet",
                Due::Uncovered => "the certificate does not name every host",
                Due::Expiring => "the certificate is in its renewal window",
            };
            if let Some(b) = self.backoff.get(&w.name) {
                let left = b.retry_at.saturating_duration_since(Instant::now());
                if !left.is_zero() {
                    next = next.min(left);
                    continue;
                }
            }
            tracing::info!(cert = %w.name, hosts = ?w.hosts, source = %w.source, "acme: ordering a certificate: {reason}");
            let started = Instant::now();
            match self.order(w).await {
                Ok(()) => {
                    self.metrics.orders.with_label_values(&["ok"]).inc();
                    self.backoff.remove(&w.name);
                    let fresh = existing(&certs_dir, &w.name).await;
                    let at = fresh.as_ref().map(|e| e.not_after - renew_before);
                    self.record(&w.name, fresh.as_ref(), at);
                    tracing::info!(
                        cert = %w.name,
                        seconds = started.elapsed().as_secs_f64(),
                        not_after = fresh.as_ref().map_or(0, |e| e.not_after),
                        "acme: certificate installed"
                    );
                    report.issued.push(w.name.clone());
                }
                Err(e) => {
                    self.metrics.orders.with_label_values(&["error"]).inc();
                    let failures = self.backoff.get(&w.name).map_or(0, |b| b.failures) + 1;
                    let wait = self
                        .config
                        .acme
                        .retry_after
                        .saturating_mul(1 << (failures - 1).min(16))
                        .min(BACKOFF_MAX);
                    self.backoff.insert(
                        w.name.clone(),
                        Backoff {
                            failures,
                            retry_at: Instant::now() + wait,
                        },
                    );
                    next = next.min(wait);
                    tracing::warn!(
                        cert = %w.name,
                        failures,
                        retry_in_secs = wait.as_secs(),
                        "acme: order failed: {e}"
                    );
                    report.failed.push(w.name.clone());
                }
            }
        }
        if let (Some((feed, _)), false) = (&self.feed, report.issued.is_empty()) {
            feed.send_modify(|p| p.generation += 1);
        }
        (report, next)
    }

    /// When the CA suggests renewing this certificate (ACME Renewal Information), and when
    /// to ask again; `None` when the CA does not say (no `renewalInfo`, no account yet for
    /// this email — one is never registered just to ask — or an error, which is logged).
    async fn ari_renew_at(&mut self, w: &Wanted, existing: &Existing) -> Option<(i64, Duration)> {
        if self.ari_unsupported {
            return None;
        }
        let email = self.email_for(w);
        let account = match self.accounts.get(&email) {
            Some(a) => a.clone(),
            None => {
                match crate::account::existing_account(&self.config.acme, email.as_deref()).await {
                    Ok(Some(a)) => {
                        self.accounts.insert(email, a.clone());
                        a
                    }
                    _ => return None,
                }
            }
        };
        let der = rustls_pki_types::CertificateDer::from(existing.der.clone());
        let id = instant_acme::CertificateIdentifier::try_from(&der).ok()?;
        match account.renewal_info(&id).await {
            Ok((info, recheck)) => {
                let window = &info.suggested_window;
                let at = ari_renew_at(
                    window.start.unix_timestamp(),
                    window.end.unix_timestamp(),
                    spread(&w.name),
                );
                Some((at, recheck))
            }
            Err(instant_acme::Error::Unsupported(_)) => {
                tracing::info!(
                    directory = %self.config.acme.directory,
                    "acme: the CA publishes no renewal information; renewing {} days before expiry",
                    self.config.acme.renew_before.as_secs() / 86_400
                );
                self.ari_unsupported = true;
                None
            }
            Err(e) => {
                tracing::debug!(cert = %w.name, "acme: renewal information unavailable: {e}");
                None
            }
        }
    }

    fn record(&self, name: &str, existing: Option<&Existing>, renew_at: Option<i64>) {
        if let Some(e) = existing {
            self.metrics
                .not_after
                .with_label_values(&[name])
                .set(e.not_after);
        }
        if let Some(at) = renew_at {
            self.metrics.next_renewal.with_label_values(&[name]).set(at);
        }
    }
}
