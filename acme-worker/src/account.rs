//! ACME accounts: created once per (directory, email) and kept in `acme.account-dir` as JSON
//! (mode 0600), so a restart reuses the account instead of registering a new one.

use std::path::{Path, PathBuf};

use instant_acme::{Account, AccountBuilder, AccountCredentials, ExternalAccountKey, NewAccount};
use sha2::{Digest, Sha256};

use berth_core::config::acme::AcmeConfig;
use berth_core::contract::write_atomic;

use crate::Error;

/// The file an account for `directory` and `email` is kept in.
pub fn account_file(dir: &Path, directory: &str, email: Option<&str>) -> PathBuf {
    let mut h = Sha256::new();
    h.update(directory.as_bytes());
    h.update([0]);
    h.update(email.unwrap_or("").as_bytes());
    let digest = h.finalize();
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    dir.join(format!("account-{hex}.json"))
}

fn builder(config: &AcmeConfig) -> Result<AccountBuilder, Error> {
    match &config.ca_bundle {
        Some(pem) => Account::builder_with_root(pem).map_err(Error::Acme),
        None => Account::builder().map_err(Error::Acme),
    }
}

/// Decodes a base64url EAB key as CAs hand it out (padding optional).
fn decode_base64url(text: &str) -> Result<Vec<u8>, Error> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim().trim_end_matches('='))
        .map_err(|e| Error::Config(format!("acme.eab-hmac-key is not base64url: {e}")))
}

/// The account kept for `email`, if one was registered before; never registers one.
///
/// # Errors
/// When the stored account cannot be used with the directory.
pub async fn existing_account(
    config: &AcmeConfig,
    email: Option<&str>,
) -> Result<Option<Account>, Error> {
    let file = account_file(&config.account_dir, &config.directory, email);
    let Ok(text) = tokio::fs::read(&file).await else {
        return Ok(None);
    };
    let Ok(credentials) = serde_json::from_slice::<AccountCredentials>(&text) else {
        return Ok(None);
    };
    builder(config)?
        .from_credentials(credentials)
        .await
        .map(Some)
        .map_err(Error::Acme)
}

/// The account for `email` at the configured directory: loaded from account-dir, or created
/// (with the EAB when configured) and saved there.
///
/// # Errors
/// When the directory cannot be reached, refuses the account, or the file cannot be written.
pub async fn account(config: &AcmeConfig, email: Option<&str>) -> Result<Account, Error> {
    let file = account_file(&config.account_dir, &config.directory, email);
    if let Ok(text) = tokio::fs::read(&file).await {
        match serde_json::from_slice::<AccountCredentials>(&text) {
            Ok(credentials) => {
                return builder(config)?
                    .from_credentials(credentials)
                    .await
                    .map_err(Error::Acme);
            }
            Err(e) => tracing::warn!(
                file = %file.display(),
                "acme: unreadable account file ({e}); registering a new account"
            ),
        }
    }
    let contact = email.map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let eab = match &config.eab {
        Some(eab) => Some(ExternalAccountKey::new(
            eab.kid.clone(),
            &decode_base64url(&eab.hmac_key)?,
        )),
        None => None,
    };
    let (account, credentials) = builder(config)?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            config.directory.clone(),
            eab.as_ref(),
        )
        .await
        .map_err(Error::Acme)?;
    let json = serde_json::to_vec_pretty(&credentials).map_err(|e| Error::Io(e.into()))?;
    tokio::fs::create_dir_all(&config.account_dir).await?;
    let path = file.clone();
    tokio::task::spawn_blocking(move || write_atomic(&path, &json, 0o600))
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))??;
    tracing::info!(
        directory = %config.directory,
        email = email.unwrap_or("(none)"),
        file = %file.display(),
        "acme: account registered"
    );
    Ok(account)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_per_directory_and_email() {
        let d = Path::new("/x");
        let a = account_file(d, "https://ca/dir", Some("a@example.com"));
        assert_eq!(a, account_file(d, "https://ca/dir", Some("a@example.com")));
        assert_ne!(a, account_file(d, "https://ca/dir", Some("b@example.com")));
        assert_ne!(
            a,
            account_file(d, "https://other/dir", Some("a@example.com"))
        );
        assert_ne!(a, account_file(d, "https://ca/dir", None));
    }

    #[test]
    fn base64url_keys_decode() {
        assert_eq!(decode_base64url("aGVsbG8").expect("ok"), b"hello");
        assert_eq!(decode_base64url("aGVsbG8=").expect("ok"), b"hello");
        assert_eq!(decode_base64url("-_8").expect("ok"), [0xfb, 0xff]);
        assert!(decode_base64url("a*b").is_err());
    }
}
