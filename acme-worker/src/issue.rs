//! One certificate order, start to finish: new order → HTTP-01 key authorizations written
//! into the challenge directory (which berth serves) → ready → wait for validation → CSR
//! with a fresh key → finalize → download the chain → `<name>.key` then `<name>.crt`
//! written atomically into certs-dir, where berth's watcher picks them up. Challenge files
//! are removed again whatever the outcome.

use std::path::{Path, PathBuf};
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy,
};

use berth_core::config::acme::KeyType;
use berth_core::contract::valid_token;
use berth_core::contract::write_atomic;

use crate::wanted::Wanted;
use crate::Error;

/// How long validation and issuance may take before the order counts as failed.
const ORDER_TIMEOUT: Duration = Duration::from_secs(90);

/// Writes the key authorizations of an order, and removes them when dropped.
struct ChallengeFiles {
    written: Vec<PathBuf>,
}

impl ChallengeFiles {
    fn write(&mut self, dir: &Path, token: &str, key_authorization: &str) -> Result<(), Error> {
        if !valid_token(token) {
            return Err(Error::Order(format!(
                "the CA sent an invalid token {token:?}"
            )));
        }
        std::fs::create_dir_all(dir)?;
        let path = dir.join(token);
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

/// Orders a certificate for `wanted` and installs it in `certs_dir`.
///
/// # Errors
/// Any failure of the order (the CA's problem document is in the message), of validation,
/// or of writing the files; nothing in certs-dir is touched unless the whole chain arrived.
pub async fn issue(
    account: &Account,
    wanted: &Wanted,
    challenge_dir: &Path,
    certs_dir: &Path,
    key_type: KeyType,
) -> Result<(), Error> {
    let identifiers: Vec<Identifier> = wanted
        .hosts
        .iter()
        .map(|h| Identifier::Dns(h.clone()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(Error::Acme)?;
    let tokens_dir = challenge_dir.join(".well-known").join("acme-challenge");
    let mut files = ChallengeFiles {
        written: Vec::new(),
    };
    let mut authorizations = order.authorizations();
    while let Some(result) = authorizations.next().await {
        let mut authz = result.map_err(Error::Acme)?;
        match authz.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => {
                return Err(Error::Order(format!(
                    "authorization for {} is {other:?}",
                    authz.identifier()
                )))
            }
        }
        let mut challenge = authz
            .challenge(ChallengeType::Http01)
            .ok_or_else(|| Error::Order("the CA offers no http-01 challenge".into()))?;
        let key_authorization = challenge.key_authorization();
        files.write(&tokens_dir, &challenge.token, key_authorization.as_str())?;
        challenge.set_ready().await.map_err(Error::Acme)?;
    }
    let retry = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .timeout(ORDER_TIMEOUT);
    let status = order.poll_ready(&retry).await.map_err(Error::Acme)?;
    if status != OrderStatus::Ready {
        let why = order
            .state()
            .error
            .as_ref()
            .map_or_else(|| format!("{status:?}"), |p| p.to_string());
        return Err(Error::Order(format!("validation failed: {why}")));
    }
    drop(files);

    let key = new_key(key_type).await?;
    let params = rcgen::CertificateParams::new(wanted.hosts.clone()).map_err(Error::Key)?;
    let csr = params.serialize_request(&key).map_err(Error::Key)?;
    order.finalize_csr(csr.der()).await.map_err(Error::Acme)?;
    let chain = order.poll_certificate(&retry).await.map_err(Error::Acme)?;

    // Key first, then the certificate: berth reloads when the .crt changes, and by then the
    // matching key is in place.
    tokio::fs::create_dir_all(certs_dir).await?;
    let key_path = certs_dir.join(format!("{}.key", wanted.name));
    let crt_path = certs_dir.join(format!("{}.crt", wanted.name));
    let key_pem = key.serialize_pem();
    tokio::task::spawn_blocking(move || {
        write_atomic(&key_path, key_pem.as_bytes(), 0o600)?;
        write_atomic(&crt_path, chain.as_bytes(), 0o644)
    })
    .await
    .map_err(|e| Error::Io(std::io::Error::other(e)))??;
    Ok(())
}
