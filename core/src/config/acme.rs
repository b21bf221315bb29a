//! The `[acme]` section, read by both binaries: `berth` serves HTTP-01 challenges from
//! `challenge-dir`; `berth-acme` uses the rest to obtain and renew certificates.
//!
//! ```toml
//! [acme]
//! challenge-dir = "/var/lib/berth/challenges"
//! account-dir = "/var/lib/berth/acme"
//! directory = "https://acme-v02.api.letsencrypt.org/directory"
//! email = "ops@example.com"
//! ca-bundle = ""              # extra root for the directory's TLS (a test CA)
//! renew-before = "30d"
//! key-type = "ecdsa-p256"     # ecdsa-p256 | rsa2048 | rsa4096
//! eab-kid = ""                # external account binding, when the CA asks for one
//! eab-hmac-key = ""           # base64url, as the CA hands it out
//! metrics = "127.0.0.1:9181"  # berth-acme's own /metrics
//! retry-after = "1m"          # first wait after a failed order; doubles, up to 1 h
//! feed = "0.0.0.0:9182"       # several hosts: serve certificates to the edges (berth-acme)
//! feed-token-file = "/run/secrets/berth-feed-token"
//! account-thumbprint = ""     # an edge answers HTTP-01 from this when it has no feed
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::errors::Errors;
use super::units::check_ca_file;
use super::units::parse_duration;

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Where challenges live when `acme.challenge-dir` is not set.
pub const DEFAULT_CHALLENGE_DIR: &str = "berth-state/challenges";
/// Where ACME accounts live when `acme.account-dir` is not set.
pub const DEFAULT_ACCOUNT_DIR: &str = "berth-state/acme";

/// `[acme]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RawAcme {
    /// Shared with berth: HTTP-01 key authorizations.
    pub challenge_dir: Option<String>,
    /// Account credentials.
    pub account_dir: Option<String>,
    /// ACME directory URL.
    pub directory: Option<String>,
    /// Default account email.
    pub email: Option<String>,
    /// Extra root certificate (PEM) for the directory's TLS.
    pub ca_bundle: Option<String>,
    /// Renew this long before expiry.
    pub renew_before: Option<String>,
    /// Key type of new certificates.
    pub key_type: Option<String>,
    /// External account binding key id.
    pub eab_kid: Option<String>,
    /// External account binding HMAC key (base64url).
    pub eab_hmac_key: Option<String>,
    /// berth-acme's metrics listener.
    pub metrics: Option<String>,
    /// First wait after a failed order (doubles per failure, up to an hour).
    pub retry_after: Option<String>,
    /// berth-acme's certificate feed listener.
    pub feed: Option<String>,
    /// File holding the feed's bearer token.
    pub feed_token_file: Option<String>,
    /// The ACME account's key thumbprint, for stateless HTTP-01 answers on an edge.
    pub account_thumbprint: Option<String>,
}

/// Key type of issued certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on P-256 (the default: small, fast, accepted everywhere that matters).
    EcdsaP256,
    /// RSA, 2048 bits.
    Rsa2048,
    /// RSA, 4096 bits.
    Rsa4096,
}

/// An external account binding.
#[derive(Clone, PartialEq, Eq)]
pub struct Eab {
    /// Key id.
    pub kid: String,
    /// HMAC key, base64url as the CA gave it.
    pub hmac_key: String,
}

impl std::fmt::Debug for Eab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: never in logs.
        f.debug_struct("Eab")
            .field("kid", &self.kid)
            .field("hmac_key", &"<redacted>")
            .finish()
    }
}

/// Validated `[acme]`.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// Where key authorizations are written and served from.
    pub challenge_dir: PathBuf,
    /// Where account credentials are kept.
    pub account_dir: PathBuf,
    /// The ACME directory URL.
    pub directory: String,
    /// Account email when a container names none.
    pub email: Option<String>,
    /// Extra root for the directory's TLS.
    pub ca_bundle: Option<PathBuf>,
    /// Renew when a certificate expires sooner than this.
    pub renew_before: Duration,
    /// Key type of new certificates.
    pub key_type: KeyType,
    /// External account binding, when configured.
    pub eab: Option<Eab>,
    /// berth-acme's metrics listener.
    pub metrics: Option<SocketAddr>,
    /// First wait after a failed order; doubles per failure up to an hour.
    pub retry_after: Duration,
    /// berth-acme's certificate feed: listener and token file.
    pub feed: Option<(SocketAddr, PathBuf)>,
    /// Thumbprint an edge answers HTTP-01 challenges with (`<token>.<thumbprint>`).
    pub account_thumbprint: Option<String>,
}

/// First wait after a failed order when `acme.retry-after` is not set.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl RawAcme {
    /// Converts into a validated [`AcmeConfig`], recording problems under `acme.*`.
    pub fn validate(&self, errors: &mut Errors) -> AcmeConfig {
        let directory = match non_empty(&self.directory) {
            None => LETS_ENCRYPT.to_string(),
            Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
                url.to_string()
            }
            Some(other) => {
                errors.push(
                    "acme.directory",
                    format!("invalid URL \"{other}\": expected https://..."),
                );
                LETS_ENCRYPT.to_string()
            }
        };
        let email = non_empty(&self.email).and_then(|e| {
            if e.contains('@') && !e.contains(char::is_whitespace) {
                Some(e.to_string())
            } else {
                errors.push("acme.email", format!("invalid email \"{e}\""));
                None
            }
        });
        let ca_bundle = non_empty(&self.ca_bundle).and_then(|p| {
            errors
                .check("acme.ca-bundle", check_ca_file(p))
                .map(|()| PathBuf::from(p))
        });
        let renew_before = match non_empty(&self.renew_before) {
            None => Duration::from_secs(30 * 86_400),
            Some(v) => errors
                .check("acme.renew-before", parse_duration(v))
                .unwrap_or(Duration::from_secs(30 * 86_400)),
        };
        let key_type = match non_empty(&self.key_type) {
            None | Some("ecdsa-p256") => KeyType::EcdsaP256,
            Some("rsa2048") => KeyType::Rsa2048,
            Some("rsa4096") => KeyType::Rsa4096,
            Some(other) => {
                errors.push(
                    "acme.key-type",
                    format!(
                        "invalid key type \"{other}\": expected ecdsa-p256, rsa2048 or rsa4096"
                    ),
                );
                KeyType::EcdsaP256
            }
        };
        let eab = match (non_empty(&self.eab_kid), non_empty(&self.eab_hmac_key)) {
            (None, None) => None,
            (Some(kid), Some(key)) => {
                let base64url = key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b));
                if base64url {
                    Some(Eab {
                        kid: kid.to_string(),
                        hmac_key: key.to_string(),
                    })
                } else {
                    errors.push(
                        "acme.eab-hmac-key",
                        "not base64url (as the CA hands it out)",
                    );
                    None
                }
            }
            _ => {
                errors.push(
                    "acme",
                    "eab-kid and eab-hmac-key go together: set both or neither",
                );
                None
            }
        };
        let metrics = non_empty(&self.metrics)
            .and_then(|v| errors.check("acme.metrics", super::units::parse_listen_addr(v)))
            .flatten();
        let retry_after = match non_empty(&self.retry_after) {
            None => DEFAULT_RETRY_AFTER,
            Some(v) => match errors.check("acme.retry-after", parse_duration(v)) {
                Some(d) if d >= Duration::from_secs(1) => d,
                Some(_) => {
                    errors.push("acme.retry-after", "must be at least 1s");
                    DEFAULT_RETRY_AFTER
                }
                None => DEFAULT_RETRY_AFTER,
            },
        };
        let feed = super::units::with_token_file(
            errors,
            "acme.feed",
            non_empty(&self.feed),
            non_empty(&self.feed_token_file),
            super::units::parse_listen_addr,
        )
        .and_then(|(addr, file)| addr.map(|a| (a, file)));
        let account_thumbprint = non_empty(&self.account_thumbprint).and_then(|t| {
            if crate::feed::valid_thumbprint(t) {
                Some(t.to_string())
            } else {
                errors.push(
                    "acme.account-thumbprint",
                    format!(
                        "invalid thumbprint \"{t}\": expected the 43 base64url characters \
                         berth-acme prints at start"
                    ),
                );
                None
            }
        });
        let dir = |v: &Option<String>, default: &str| {
            non_empty(v).map_or_else(|| PathBuf::from(default), PathBuf::from)
        };
        AcmeConfig {
            challenge_dir: dir(&self.challenge_dir, DEFAULT_CHALLENGE_DIR),
            account_dir: dir(&self.account_dir, DEFAULT_ACCOUNT_DIR),
            directory,
            email,
            ca_bundle,
            renew_before,
            key_type,
            eab,
            metrics,
            retry_after,
            feed,
            account_thumbprint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(raw: RawAcme) -> (AcmeConfig, Vec<String>) {
        let mut errors = Errors::default();
        let c = raw.validate(&mut errors);
        (
            c,
            errors
                .into_inner()
                .iter()
                .map(ToString::to_string)
                .collect(),
        )
    }

    #[test]
    fn defaults() {
        let (c, e) = validate(RawAcme::default());
        assert!(e.is_empty());
        assert_eq!(c.directory, LETS_ENCRYPT);
        assert_eq!(c.challenge_dir, PathBuf::from(DEFAULT_CHALLENGE_DIR));
        assert_eq!(c.renew_before, Duration::from_secs(30 * 86_400));
        assert_eq!(c.key_type, KeyType::EcdsaP256);
        assert!(c.eab.is_none() && c.metrics.is_none() && c.email.is_none());
    }

    #[test]
    fn every_bad_value_is_named() {
        let (_, e) = validate(RawAcme {
            directory: Some("ftp://x".into()),
            email: Some("nobody".into()),
            renew_before: Some("soon".into()),
            key_type: Some("dsa".into()),
            eab_kid: Some("kid".into()),
            metrics: Some("x".into()),
            feed: Some("0.0.0.0:9182".into()),
            account_thumbprint: Some("abc".into()),
            ..RawAcme::default()
        });
        for key in [
            "acme.directory",
            "acme.email",
            "acme.renew-before",
            "acme.key-type",
            "acme: eab-kid",
            "acme.metrics",
            "acme.feed-token-file: required",
            "acme.account-thumbprint: invalid thumbprint \"abc\"",
        ] {
            assert!(e.iter().any(|m| m.starts_with(key)), "{key} in {e:?}");
        }
    }

    #[test]
    fn eab_key_is_not_printed() {
        let (c, e) = validate(RawAcme {
            eab_kid: Some("kid-1".into()),
            eab_hmac_key: Some("c2VjcmV0LWhtYWMta2V5".into()),
            ..RawAcme::default()
        });
        assert!(e.is_empty());
        let shown = format!("{c:?}");
        assert!(shown.contains("kid-1") && !shown.contains("c2VjcmV0"));
    }
}
