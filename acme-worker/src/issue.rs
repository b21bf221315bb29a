//! One certificate order, start to finish: new order (with the profile and the certificate
//! it replaces, when asked) → the challenges answered — HTTP-01 key authorizations written
//! into the challenge directory (which berth serves), or DNS-01 TXT records published and
//! seen on every authoritative server — → ready → wait for validation → CSR with a fresh
//! key → finalize → download the chain → `<name>.key` then `<name>.crt` written atomically
//! into certs-dir, where berth's watcher picks them up. Challenge files and records are
//! removed again whatever the outcome; an order whose records never show is abandoned
//! (its authorizations deactivated), never left pending at the CA.

use std::path::PathBuf;
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, CertificateIdentifier, ChallengeType, Identifier, NewOrder,
    Order, OrderStatus, RetryPolicy,
};

use berth_core::config::acme::KeyType;
use berth_core::config::dns::DnsConfig;
use berth_core::contract::{write_atomic, CertDir, ChallengeDir};
use berth_core::route::Challenge;

use crate::dns::{ChallengeRecord, Dns};
use crate::wanted::Wanted;
use crate::Error;

/// How long validation and issuance may take before the order counts as failed.
const ORDER_TIMEOUT: Duration = Duration::from_secs(90);

/// Writes the key authorizations of an order, and removes them when dropped.
struct ChallengeFiles {
    written: Vec<PathBuf>,
}

impl ChallengeFiles {
    fn write(
        &mut self,
        dir: &ChallengeDir,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), Error> {
        let Some(path) = dir.token(token) else {
            return Err(Error::Order(format!(
                "the CA sent an invalid token {token:?}"
            )));
        };
        std::fs::create_dir_all(dir.tokens())?;
        write_atomic(&path, key_authorization.as_bytes(), 0o644)?;
        self.written.push(path);
        Ok(())
    }
}

impl Drop for ChallengeFiles {
    fn drop(&mut self) {
        for path in &self.written {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A new private key of `key_type`. RSA keys are generated with the `rsa` crate (ring, which
/// signs with them, cannot generate them); that takes a moment, so it runs off the async
/// threads.
async fn new_key(key_type: KeyType) -> Result<rcgen::KeyPair, Error> {
    let bits = match key_type {
        KeyType::EcdsaP256 => {
            return rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(Error::Key)
        }
        KeyType::Rsa2048 => 2048,
        KeyType::Rsa4096 => 4096,
    };
    let pem = tokio::task::spawn_blocking(move || {
        use rsa::pkcs8::EncodePrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), bits)
            .map_err(|e| Error::Order(format!("RSA key generation failed: {e}")))?;
        key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| Error::Order(format!("RSA key encoding failed: {e}")))
    })
    .await
    .map_err(|e| Error::Io(std::io::Error::other(e)))??;
    rcgen::KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).map_err(Error::Key)
}

/// How an order is carried out.
pub struct Settings<'a> {
    /// Where HTTP-01 key authorizations go (berth serves them).
    pub challenge_dir: &'a ChallengeDir,
    /// Where the certificate goes.
    pub certs_dir: &'a CertDir,
    /// Key type of the new certificate.
    pub key_type: KeyType,
    /// DNS-01 set-up, when configured.
    pub dns: Option<&'a DnsConfig>,
    /// The CA profile to ask for.
    pub profile: Option<&'a str>,
    /// The certificate this order renews (ARI `replaces`).
    pub replaces: Option<CertificateIdentifier<'static>>,
}

/// What an order took besides the certificate.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    /// DNS-01: the time the records took to reach every authoritative server.
    pub propagation: Option<Duration>,
}

/// Orders a certificate for `wanted` and installs it in `certs_dir`.
///
/// # Errors
/// Any failure of the order (the CA's problem document is in the message), of the challenge
/// records, of validation, or of writing the files; nothing in certs-dir is touched unless
/// the whole chain arrived.
pub async fn issue(
    account: &Account,
    wanted: &Wanted,
    how: &Settings<'_>,
) -> Result<Outcome, Error> {
    let identifiers: Vec<Identifier> = wanted
        .hosts
        .iter()
        .map(|h| Identifier::Dns(h.clone()))
        .collect();
    let mut new_order = NewOrder::new(&identifiers);
    if let Some(profile) = how.profile {
        new_order = new_order.profile(profile);
    }
    if let Some(replaces) = &how.replaces {
        new_order = new_order.replaces(replaces.clone());
    }
    // Known before the order exists, so that a missing provider leaves none pending.
    let dns = match wanted.challenge {
        Challenge::Http01 => None,
        Challenge::Dns01 => Some(Dns::new(how.dns.ok_or_else(|| {
            Error::Config("dns-01 needs acme.dns-provider (rfc2136 or exec)".into())
        })?)),
    };
    let mut order = account
        .new_order(&new_order)
        .await
        .map_err(Error::NewOrder)?;
    let retry = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .timeout(ORDER_TIMEOUT);
    let outcome = match dns {
        None => {
            let files = http01(&mut order, how.challenge_dir).await?;
            ready(&mut order, &retry).await?;
            drop(files);
            Outcome::default()
        }
        Some(dns) => {
            let mut records = Vec::new();
            let result = dns01(&mut order, &dns, &mut records, &retry).await;
            if result.is_err() {
                abandon(&mut order).await;
            }
            for record in &records {
                if let Err(e) = dns.cleanup(record).await {
                    tracing::warn!(
                        cert = %wanted.name,
                        record = %record.fqdn,
                        "acme: cannot remove a challenge record: {e}"
                    );
                }
            }
            Outcome {
                propagation: result?,
            }
        }
    };

    let key = new_key(how.key_type).await?;
    let params = rcgen::CertificateParams::new(wanted.hosts.clone()).map_err(Error::Key)?;
    let csr = params.serialize_request(&key).map_err(Error::Key)?;
    order.finalize_csr(csr.der()).await.map_err(Error::Acme)?;
    let chain = order.poll_certificate(&retry).await.map_err(Error::Acme)?;

    // Key first, then the certificate (CertDir::write): berth reloads when the .crt changes,
    // and by then the matching key is in place.
    let key_pem = key.serialize_pem();
    let (certs, name) = (how.certs_dir.clone(), wanted.name.clone());
    tokio::task::spawn_blocking(move || certs.write(&name, chain.as_bytes(), key_pem.as_bytes()))
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))??;
    Ok(outcome)
}

/// Whether an authorization still needs proving; a failed or expired one fails the order.
fn needs_proof(status: &AuthorizationStatus, identifier: &str) -> Result<bool, Error> {
    match status {
        AuthorizationStatus::Valid => Ok(false),
        AuthorizationStatus::Pending => Ok(true),
        other => Err(Error::Order(format!(
            "authorization for {identifier} is {other:?}"
        ))),
    }
}

/// Writes the key authorization of every pending HTTP-01 challenge and tells the CA.
async fn http01(order: &mut Order, challenge_dir: &ChallengeDir) -> Result<ChallengeFiles, Error> {
    let mut files = ChallengeFiles {
        written: Vec::new(),
    };
    let mut authorizations = order.authorizations();
    while let Some(result) = authorizations.next().await {
        let mut authz = result.map_err(Error::Acme)?;
        if !needs_proof(&authz.status, &authz.identifier().to_string())? {
            continue;
        }
        let mut challenge = authz
            .challenge(ChallengeType::Http01)
            .ok_or_else(|| Error::Order("the CA offers no http-01 challenge".into()))?;
        let key_authorization = challenge.key_authorization();
        files.write(challenge_dir, &challenge.token, key_authorization.as_str())?;
        challenge.set_ready().await.map_err(Error::Acme)?;
    }
    Ok(files)
}

/// Publishes a TXT record for every pending DNS-01 challenge (each one pushed onto `records`
/// before it is published, so the caller removes whatever may be out, even after a failure
/// half-way), waits until every authoritative server answers them all, then tells the CA and
/// waits for validation. Returns the propagation time; `None` when the CA still held valid
/// authorizations for every name and nothing was published.
async fn dns01(
    order: &mut Order,
    dns: &Dns<'_>,
    records: &mut Vec<ChallengeRecord>,
    retry: &RetryPolicy,
) -> Result<Option<Duration>, Error> {
    let mut authorizations = order.authorizations();
    while let Some(result) = authorizations.next().await {
        let mut authz = result.map_err(Error::Acme)?;
        let identifier = authz.identifier().to_string();
        if !needs_proof(&authz.status, &identifier)? {
            continue;
        }
        let challenge = authz.challenge(ChallengeType::Dns01).ok_or_else(|| {
            Error::Order(format!(
                "the CA offers no dns-01 challenge for {identifier}"
            ))
        })?;
        let record = ChallengeRecord::new(&identifier, challenge.key_authorization().dns_value())
            .map_err(Error::Dns)?;
        records.push(record.clone());
        dns.present(&record)
            .await
            .map_err(|e| Error::Dns(format!("publishing {}: {e}", record.fqdn)))?;
        tracing::debug!(record = %record.fqdn, "acme: challenge record published");
    }
    if records.is_empty() {
        ready(order, retry).await?;
        return Ok(None);
    }
    let took = dns.wait_for(records).await.map_err(Error::Dns)?;
    tracing::info!(
        seconds = took.as_secs_f64(),
        records = records.len(),
        "acme: challenge records answered by every authoritative server"
    );
    let mut authorizations = order.authorizations();
    while let Some(result) = authorizations.next().await {
        let mut authz = result.map_err(Error::Acme)?;
        if !needs_proof(&authz.status, &authz.identifier().to_string())? {
            continue;
        }
        if let Some(mut challenge) = authz.challenge(ChallengeType::Dns01) {
            challenge.set_ready().await.map_err(Error::Acme)?;
        }
    }
    ready(order, retry).await?;
    Ok(Some(took))
}

/// Deactivates the order's pending authorizations, so that the CA does not keep it open
/// (the order turns invalid); failures are logged, the order's own error is what counts.
async fn abandon(order: &mut Order) {
    let mut authorizations = order.authorizations();
    while let Some(result) = authorizations.next().await {
        let Ok(mut authz) = result else { continue };
        if authz.status == AuthorizationStatus::Pending {
            let identifier = authz.identifier().to_string();
            match authz.deactivate().await {
                Ok(_) => tracing::info!(%identifier, "acme: authorization deactivated"),
                Err(e) => {
                    tracing::debug!(%identifier, "acme: cannot deactivate the authorization: {e}")
                }
            }
        }
    }
}

/// Waits until the CA has validated the order.
async fn ready(order: &mut Order, retry: &RetryPolicy) -> Result<(), Error> {
    let status = order.poll_ready(retry).await.map_err(Error::Acme)?;
    if status == OrderStatus::Ready {
        return Ok(());
    }
    let why = order
        .state()
        .error
        .as_ref()
        .map_or_else(|| format!("{status:?}"), |p| p.to_string());
    Err(Error::Order(format!("validation failed: {why}")))
}
