//! The worker: one pass looks at every wanted certificate, orders those that are due and
//! says when the next pass should run; the daemon repeats passes at that time or as soon as
//! Docker reports a change. Failures back off per certificate (`acme.retry-after`, 1 min by
//! default, doubling to 1 h, with the reason logged), so one failing host never holds up
//! the others and a broken setup does not hammer the CA. Orders are throttled
//! (`acme.max-orders-per-minute`), so a host with hundreds of containers does not run into
//! the CA's rate limits in one burst.

use berth_core::contract::CertDir;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use instant_acme::Account;

use berth_core::config::Config;
use berth_core::docker::Snapshot;

use crate::feed::Published;
use crate::issue::{issue, Outcome, Settings};
use crate::metrics::Metrics;
use crate::plan::{backoff, plan, Facts, Plan, Throttle, PASS_EVERY};
use crate::wanted::{ari_renew_at, due, read_leaf, renew_at, wanted, Due, Existing, Wanted};
use crate::Error;

/// How often an order refused for a stale nonce is placed again at once.
const STALE_NONCE_RETRIES: usize = 2;
/// With a feed: longest wait for an edge to read a newly published thumbprint (edges retry
/// an unreachable feed at least every 10 s).
pub const FEED_SETTLE: Duration = Duration::from_secs(12);

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
    /// Certificates due but put off by `acme.max-orders-per-minute`.
    pub throttled: Vec<String>,
}

/// The certificate worker's state between passes.
pub struct Worker {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    accounts: HashMap<Option<String>, Account>,
    backoff: HashMap<String, Backoff>,
    reported: Vec<String>,
    /// The directory has no `renewalInfo` (ACME Renewal Information): use our own window.
    ari_unsupported: bool,
    /// The directory answered a `renewalInfo` request: renewals say what they replace.
    ari_supported: bool,
    /// `acme.profile` is set and the CA offers no profiles; said once.
    profile_warned: bool,
    throttle: Throttle,
    /// Certificates already warned about: a fixed `renew-before` not shorter than their
    /// lifetime (they renew as with `auto`).
    warned_window: std::collections::HashSet<String>,
    /// `--force-renewal`: the next pass orders every certificate, due or not.
    force: bool,
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
    matches!(e, Error::Acme(instant_acme::Error::Api(p)) | Error::NewOrder(instant_acme::Error::Api(p))
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

async fn existing(certs: &CertDir, name: &str) -> Option<Existing> {
    // A certificate without its key is no certificate: order a new pair. Read as every reader
    // of certs-dir reads (CertDir::read), so berth-acme counts what berth and the feed serve.
    let (certs, owned) = (certs.clone(), name.to_string());
    let (pem, _key) = tokio::task::spawn_blocking(move || certs.read(&owned))
        .await
        .ok()?
        .ok()?;
    read_leaf(&pem).ok()
}

impl Worker {
    /// A worker for `config`, recording into `metrics`.
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>) -> Worker {
        Worker {
            throttle: Throttle::new(config.acme.max_orders_per_minute),
            config,
            metrics,
            accounts: HashMap::new(),
            backoff: HashMap::new(),
            reported: Vec::new(),
            ari_unsupported: false,
            ari_supported: false,
            profile_warned: false,
            warned_window: std::collections::HashSet::new(),
            force: false,
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

    /// Makes the next pass order every certificate, due or not (`--force-renewal`: a key
    /// that may have leaked, a changed key type).
    #[must_use]
    pub fn force_renewal(mut self, force: bool) -> Worker {
        self.force = force;
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

    /// The profile to ask for: `acme.profile` when the CA offers it; none (said once) when
    /// the CA offers no profiles at all.
    ///
    /// # Errors
    /// The CA offers profiles, but not that one: the order would be refused.
    fn profile_for(&mut self, account: &Account) -> Result<Option<String>, Error> {
        let Some(wanted) = self.config.acme.profile.as_deref() else {
            return Ok(None);
        };
        let offered: Vec<String> = account.profiles().map(|p| p.name.to_string()).collect();
        if offered.is_empty() {
            if !self.profile_warned {
                tracing::warn!(
                    profile = wanted,
                    directory = %self.config.acme.directory,
                    "acme: the CA offers no certificate profiles; ordering without acme.profile"
                );
                self.profile_warned = true;
            }
            return Ok(None);
        }
        if offered.iter().any(|p| p == wanted) {
            Ok(Some(wanted.to_string()))
        } else {
            Err(Error::Config(format!(
                "acme.profile \"{wanted}\": the CA offers {}",
                offered.join(", ")
            )))
        }
    }

    /// Orders `w`; an order that fails only on stale nonces (`badNonce`, which the client
    /// already retried three times per request) is started again at once, twice at most,
    /// rather than waiting out a backoff for a fault that is not the certificate's. A
    /// renewal whose new order the CA refuses while it names the certificate it replaces is
    /// ordered once more without (the CA may not take it as replaced: already replaced, or
    /// ordered by another account).
    async fn order(&mut self, w: &Wanted, replaces: Option<&Existing>) -> Result<Outcome, Error> {
        let email = self.email_for(w);
        let config = self.config.clone();
        let mut replaces = replaces.filter(|_| self.ari_supported).and_then(|e| {
            let der = rustls_pki_types::CertificateDer::from(e.der.clone());
            instant_acme::CertificateIdentifier::try_from(&der)
                .ok()
                .map(|id| id.into_owned())
        });
        let mut attempts = 0;
        loop {
            attempts += 1;
            let account = self.account(email.clone()).await?;
            let profile = self.profile_for(&account)?;
            let settings = Settings {
                challenge_dir: &config.acme.challenge_dir,
                certs_dir: &config.tls.certs_dir,
                key_type: config.acme.key_type,
                dns: config.acme.dns.as_ref(),
                profile: profile.as_deref(),
                replaces: replaces.clone(),
            };
            match issue(&account, w, &settings).await {
                Err(e) if is_bad_nonce(&e) && attempts < 3 => {
                    tracing::info!(cert = %w.name, "acme: the CA refused a nonce; ordering again");
                }
                Err(Error::NewOrder(instant_acme::Error::Api(p))) if replaces.is_some() => {
                    tracing::info!(
                        cert = %w.name,
                        "acme: the CA refused the order as a replacement ({p}); ordering it plainly"
                    );
                    replaces = None;
                }
                other => return other,
            }
        }
    }

    /// Looks at every wanted certificate once, orders the due ones, and returns what it did
    /// and how long until the next pass should run.
    pub async fn pass(&mut self, containers: &Snapshot) -> (PassReport, Duration) {
        let (wanted, errors) = wanted(
            &self.config.routes,
            containers,
            self.config.acme.dns.as_ref(),
            &self.config.docker.allowed_hosts,
        );
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        for m in messages.iter().filter(|m| !self.reported.contains(m)) {
            tracing::warn!("acme: {}", berth_core::logging::shown(m, 1024));
        }
        self.reported = messages;
        self.publish_thumbprint().await;

        let renew_before = self.config.acme.renew_before;
        let certs_dir = self.config.tls.certs_dir.clone();
        let mut report = PassReport::default();
        let mut next = PASS_EVERY;
        self.metrics
            .forget_except(wanted.iter().map(|w| w.name.as_str()));
        for w in &wanted {
            let current = existing(&certs_dir, &w.name).await;
            let now = now_unix();
            if let Some(e) = &current {
                if renew_before.too_long_for(e.not_before, e.not_after)
                    && self.warned_window.insert(w.name.clone())
                {
                    tracing::warn!(
                        cert = %w.name,
                        lifetime_secs = e.not_after - e.not_before,
                        "acme: acme.renew-before ({renew_before}) is not shorter than this \
                         certificate's lifetime; renewing it when a third of its lifetime is \
                         left (half, under 10 days) instead, as with renew-before = \"auto\""
                    );
                }
            }
            let decision = due(current.as_ref(), &w.hosts, renew_before, now);
            let ari = match (&current, decision) {
                (Some(e), Due::NotUntil(_) | Due::Expiring) => self.ari_renew_at(w, e).await,
                _ => None,
            };
            let facts = Facts {
                due: decision,
                ari,
                forced: self.force,
                backoff_left: self.backoff.get(&w.name).map_or(Duration::ZERO, |b| {
                    b.retry_at.saturating_duration_since(Instant::now())
                }),
                now,
            };
            let reason = match plan(&facts, &mut self.throttle, Instant::now()) {
                Plan::Wait { at, next: look } => {
                    self.record(w, current.as_ref(), Some(at));
                    self.backoff.remove(&w.name);
                    next = next.min(look);
                    continue;
                }
                Plan::BackingOff(left) => {
                    next = next.min(left);
                    continue;
                }
                Plan::Throttled(wait) => {
                    tracing::info!(
                        cert = %w.name,
                        wait_secs = wait.as_secs_f64().ceil(),
                        "acme: {} orders started in the last minute (acme.max-orders-per-minute); \
                         this one waits",
                        self.config.acme.max_orders_per_minute
                    );
                    self.metrics.throttled.inc();
                    report.throttled.push(w.name.clone());
                    next = next.min(wait);
                    continue;
                }
                Plan::Order(reason) => reason,
            };
            tracing::info!(
                cert = %w.name,
                hosts = ?w.hosts,
                source = %w.source,
                challenge = %w.challenge,
                "acme: ordering a certificate: {reason}"
            );
            self.metrics.update(&w.name, |s| s.state = "ordering");
            let started = Instant::now();
            let renewing = current.as_ref().filter(|_| decision != Due::Missing);
            let mut result = self.order(w, renewing).await;
            // A nonce the CA refused (RFC 8555 §6.5: the client tries again). instant-acme
            // retries a request twice; a third refusal in a row fails the order, which is then
            // placed again at once rather than after the back-off (CAs refuse nonces at
            // random: pebble one request in twenty).
            for _ in 0..STALE_NONCE_RETRIES {
                match &result {
                    Err(e)
                        if e.to_string()
                            .contains("urn:ietf:params:acme:error:badNonce") =>
                    {
                        tracing::info!(cert = %w.name, "acme: the CA refused a nonce; ordering again");
                        result = self.order(w, renewing).await;
                    }
                    _ => break,
                }
            }
            match result {
                Ok(outcome) => {
                    let wait = self.installed(w, &outcome, started).await;
                    next = next.min(wait);
                    report.issued.push(w.name.clone());
                }
                Err(e) => {
                    next = next.min(self.failed(w, &e));
                    report.failed.push(w.name.clone());
                }
            }
        }
        self.force = false;
        if let (Some((feed, _)), false) = (&self.feed, report.issued.is_empty()) {
            feed.send_modify(|p| p.generation += 1);
        }
        (report, next)
    }

    /// Records a certificate just installed; returns when the next pass should look at it.
    async fn installed(&mut self, w: &Wanted, outcome: &Outcome, started: Instant) -> Duration {
        self.metrics
            .orders
            .with_label_values(&["ok", w.challenge.as_str()])
            .inc();
        if let Some(took) = outcome.propagation {
            self.metrics.propagation.observe(took.as_secs_f64());
        }
        self.backoff.remove(&w.name);
        let fresh = existing(&self.config.tls.certs_dir, &w.name).await;
        let at = fresh
            .as_ref()
            .map(|e| renew_at(e, self.config.acme.renew_before));
        self.record(w, fresh.as_ref(), at);
        self.metrics.update(&w.name, |s| {
            s.failures = 0;
            s.last_error = None;
            s.retry_at = None;
            if let Some(took) = outcome.propagation {
                s.last_propagation_seconds = Some(took.as_secs_f64());
            }
        });
        tracing::info!(
            cert = %w.name,
            seconds = started.elapsed().as_secs_f64(),
            not_after = fresh.as_ref().map_or(0, |e| e.not_after),
            renew_at = at.unwrap_or(0),
            "acme: certificate installed"
        );
        at.map_or(PASS_EVERY, |at| {
            Duration::from_secs(u64::try_from(at - now_unix()).unwrap_or(0).max(1))
        })
    }

    /// Records a failed order and its back-off; returns the back-off.
    fn failed(&mut self, w: &Wanted, e: &Error) -> Duration {
        self.metrics
            .orders
            .with_label_values(&["error", w.challenge.as_str()])
            .inc();
        let failures = self.backoff.get(&w.name).map_or(0, |b| b.failures) + 1;
        let wait = backoff(failures, self.config.acme.retry_after);
        self.backoff.insert(
            w.name.clone(),
            Backoff {
                failures,
                retry_at: Instant::now() + wait,
            },
        );
        let message = e.to_string();
        // A hook's stderr is for the log only.
        let shown = message
            .split(crate::dns::exec::STDERR_MARK)
            .next()
            .unwrap_or_default()
            .to_string();
        self.metrics.update(&w.name, |s| {
            s.state = "failed";
            s.failures = failures;
            s.last_error = Some(shown);
            s.retry_at = Some(now_unix() + i64::try_from(wait.as_secs()).unwrap_or(0));
        });
        tracing::warn!(
            cert = %w.name,
            challenge = w.challenge.as_str(),
            failures,
            retry_in_secs = wait.as_secs(),
            "acme: order failed: {message}"
        );
        wait
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
                self.ari_supported = true;
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
                    "acme: the CA publishes no renewal information; renewing {}",
                    self.config.acme.renew_before
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

    fn record(&self, w: &Wanted, existing: Option<&Existing>, renew_at: Option<i64>) {
        if let Some(e) = existing {
            self.metrics
                .not_after
                .with_label_values(&[&w.name])
                .set(e.not_after);
        }
        if let Some(at) = renew_at {
            self.metrics
                .next_renewal
                .with_label_values(&[&w.name])
                .set(at);
        }
        let failing = self.backoff.contains_key(&w.name);
        self.metrics.update(&w.name, |s| {
            s.hosts.clone_from(&w.hosts);
            s.challenge = w.challenge.as_str();
            s.source.clone_from(&w.source);
            s.not_after = existing.map(|e| e.not_after);
            s.renew_at = renew_at;
            if !failing {
                s.state = if existing.is_some() {
                    "valid"
                } else {
                    "missing"
                };
            }
        });
    }
}
