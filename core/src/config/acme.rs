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
//! renew-before = "auto"      # a third of the lifetime (half under 10 days), or e.g. "30d"
//! max-orders-per-minute = 10  # orders started per minute, at most
//! profile = ""                # a certificate profile the CA offers (e.g. "shortlived")
//! key-type = "ecdsa-p256"     # ecdsa-p256 | rsa2048 | rsa4096
//! eab-kid = ""                # external account binding, when the CA asks for one
//! eab-hmac-key = ""           # base64url, as the CA hands it out
//! metrics = "127.0.0.1:9181"  # berth-acme's own /metrics
//! retry-after = "1m"          # first wait after a failed order; doubles, up to 1 h
//! feed = "0.0.0.0:9182"       # several hosts: serve certificates to the edges (berth-acme)
//! feed-token-file = "/run/secrets/berth-feed-token"
//! account-thumbprint = ""     # an edge answers HTTP-01 from this when it has no feed
//! ```
//!
//! DNS-01 (`dns-provider` and the other `dns-*` keys) is in [`super::dns`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::dns::{DnsConfig, RawDns};
use super::units::check_ca_file;
use super::units::parse_duration;
use crate::contract::ChallengeDir;
use crate::errors::Errors;

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
    /// Orders started per minute, at most.
    pub max_orders_per_minute: Option<u32>,
    /// A certificate profile the CA offers.
    pub profile: Option<String>,
    /// `rfc2136` or `exec`.
    pub dns_provider: Option<String>,
    /// rfc2136: the primary server.
    pub dns_server: Option<String>,
    /// rfc2136: TSIG key name.
    pub dns_tsig_key: Option<String>,
    /// rfc2136: TSIG algorithm.
    pub dns_tsig_algorithm: Option<String>,
    /// rfc2136: file holding the TSIG secret.
    pub dns_tsig_secret_file: Option<String>,
    /// exec: the program.
    pub dns_exec: Option<String>,
    /// Longest wait for the authoritative servers.
    pub dns_propagation_timeout: Option<String>,
    /// Recursive resolvers for finding zones.
    pub dns_resolvers: Vec<String>,
    /// Authoritative servers to wait for.
    pub dns_nameservers: Vec<String>,
    /// Names containers may have proved by DNS-01.
    pub dns_names: Vec<String>,
}

/// When a certificate is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewBefore {
    /// When a third of its lifetime remains (half, for lifetimes under 10 days).
    Auto,
    /// This long before it expires.
    Fixed(Duration),
}

impl RenewBefore {
    /// How long before `not_after` a certificate valid from `not_before` renews (seconds). A
    /// fixed time that is not shorter than the lifetime would make every new certificate due
    /// at once (ordered again at every pass, or every cron run): such a certificate renews
    /// as with `auto` instead.
    pub fn seconds_before_expiry(self, not_before: i64, not_after: i64) -> i64 {
        let lifetime = not_after.saturating_sub(not_before).max(0);
        match self {
            RenewBefore::Fixed(d) if !self.too_long_for(not_before, not_after) => {
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
            }
            _ if lifetime < 10 * 86_400 => lifetime / 2,
            _ => lifetime / 3,
        }
    }

    /// Whether this is a fixed time not shorter than the certificate's lifetime.
    pub fn too_long_for(self, not_before: i64, not_after: i64) -> bool {
        let lifetime = not_after.saturating_sub(not_before).max(0);
        matches!(self, RenewBefore::Fixed(d) if i64::try_from(d.as_secs()).unwrap_or(i64::MAX) >= lifetime)
    }
}

impl std::fmt::Display for RenewBefore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenewBefore::Auto => f.write_str("when a third of its lifetime remains"),
            RenewBefore::Fixed(d) if d.as_secs() % 86_400 == 0 => {
                write!(f, "{} days before expiry", d.as_secs() / 86_400)
            }
            RenewBefore::Fixed(d) => write!(f, "{}s before expiry", d.as_secs()),
        }
    }
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
    pub challenge_dir: ChallengeDir,
    /// Where account credentials are kept.
    pub account_dir: PathBuf,
    /// The ACME directory URL.
    pub directory: String,
    /// Account email when a container names none.
    pub email: Option<String>,
    /// Extra root for the directory's TLS.
    pub ca_bundle: Option<PathBuf>,
    /// When certificates renew.
    pub renew_before: RenewBefore,
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
    /// Orders started per minute, at most.
    pub max_orders_per_minute: u32,
    /// The CA certificate profile to ask for.
    pub profile: Option<String>,
    /// DNS-01: where records are published, when configured.
    pub dns: Option<DnsConfig>,
}

/// Orders per minute when `acme.max-orders-per-minute` is not set.
pub const DEFAULT_MAX_ORDERS_PER_MINUTE: u32 = 10;

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
            None | Some("auto") => RenewBefore::Auto,
            Some(v) => errors
                .check(
                    "acme.renew-before",
                    parse_duration(v).map_err(|e| format!("{e}, or \"auto\"")),
                )
                .map_or(RenewBefore::Auto, RenewBefore::Fixed),
        };
        let max_orders_per_minute = match self.max_orders_per_minute {
            None => DEFAULT_MAX_ORDERS_PER_MINUTE,
            Some(0) => {
                errors.push(
                    "acme.max-orders-per-minute",
                    "must be at least 1 (0 would never order)",
                );
                DEFAULT_MAX_ORDERS_PER_MINUTE
            }
            Some(n) => n,
        };
        let profile = non_empty(&self.profile).and_then(|p| {
            if p.bytes().all(|b| b.is_ascii_graphic()) && p.len() <= 64 {
                Some(p.to_string())
            } else {
                errors.push("acme.profile", format!("invalid profile name \"{p}\""));
                None
            }
        });
        let dns = RawDns {
            provider: non_empty(&self.dns_provider),
            server: non_empty(&self.dns_server),
            tsig_key: non_empty(&self.dns_tsig_key),
            tsig_algorithm: non_empty(&self.dns_tsig_algorithm),
            tsig_secret_file: non_empty(&self.dns_tsig_secret_file),
            exec: non_empty(&self.dns_exec),
            propagation_timeout: non_empty(&self.dns_propagation_timeout),
            resolvers: &self.dns_resolvers,
            nameservers: &self.dns_nameservers,
            names: &self.dns_names,
        }
        .validate(errors);
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
            challenge_dir: ChallengeDir::new(dir(&self.challenge_dir, DEFAULT_CHALLENGE_DIR)),
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
            max_orders_per_minute,
            profile,
            dns,
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
        assert_eq!(c.challenge_dir, ChallengeDir::new(DEFAULT_CHALLENGE_DIR));
        assert_eq!(c.renew_before, RenewBefore::Auto);
        assert_eq!(c.max_orders_per_minute, DEFAULT_MAX_ORDERS_PER_MINUTE);
        assert!(c.dns.is_none() && c.profile.is_none());
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
            max_orders_per_minute: Some(0),
            profile: Some("short lived".into()),
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
            "acme.max-orders-per-minute: must be at least 1",
            "acme.profile: invalid profile name",
        ] {
            assert!(e.iter().any(|m| m.starts_with(key)), "{key} in {e:?}");
        }
    }

    #[test]
    fn auto_renewal_leaves_a_third_of_the_lifetime_or_half_of_a_short_one() {
        let day = 86_400;
        let auto = |days: i64| RenewBefore::Auto.seconds_before_expiry(1_000, 1_000 + days * day);
        assert_eq!(
            auto(90),
            30 * day,
            "90-day certificates renew with 30 days left"
        );
        assert_eq!(
            auto(45),
            15 * day,
            "45-day certificates renew with 15 days left"
        );
        assert_eq!(
            auto(6),
            3 * day,
            "6-day certificates renew with 3 days left"
        );
        assert_eq!(auto(10), 10 * day / 3, "from 10 days, a third");
        assert_eq!(
            RenewBefore::Auto.seconds_before_expiry(1_000, 1_000 + 9 * day + day / 2),
            (9 * day + day / 2) / 2,
            "under 10 days, half"
        );
        assert_eq!(RenewBefore::Auto.seconds_before_expiry(1_000, 900), 0);
        let fixed = RenewBefore::Fixed(Duration::from_secs(30 * 86_400));
        assert_eq!(fixed.seconds_before_expiry(0, 90 * day), 30 * day);
        assert_eq!(
            fixed.seconds_before_expiry(0, 6 * day),
            3 * day,
            "a fixed time longer than the lifetime renews as auto"
        );
        assert_eq!(
            fixed.seconds_before_expiry(0, 30 * day),
            10 * day,
            "as long as it: auto"
        );
        assert_eq!(
            fixed.seconds_before_expiry(0, 30 * day + 1),
            30 * day,
            "shorter: as written"
        );
        assert!(fixed.too_long_for(0, 6 * day) && !fixed.too_long_for(0, 90 * day));
        assert!(!RenewBefore::Auto.too_long_for(0, 1));
    }

    #[test]
    fn renew_before_values() {
        for (text, want) in [
            (None, RenewBefore::Auto),
            (Some("auto"), RenewBefore::Auto),
            (
                Some("30d"),
                RenewBefore::Fixed(Duration::from_secs(30 * 86_400)),
            ),
        ] {
            let (c, e) = validate(RawAcme {
                renew_before: text.map(Into::into),
                ..RawAcme::default()
            });
            assert!(e.is_empty(), "{e:?}");
            assert_eq!(c.renew_before, want, "{text:?}");
        }
        let (_, e) = validate(RawAcme {
            renew_before: Some("soon".into()),
            ..RawAcme::default()
        });
        assert!(e[0].contains("or \"auto\""), "{e:?}");
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
