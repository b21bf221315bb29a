//! The certificate store: an immutable snapshot of every certificate in certs-dir, and the
//! selection rule for an SNI name. Pure: loading from disk is in [`super::loader`].
//!
//! Selection for a name: the route's `cert-name` → the name's own certificate → the
//! wildcard parent (`a.example.com` → `example.com.crt`) → `default.crt` → none (the
//! handshake is refused). Every step but the default only counts when the certificate's
//! SAN list covers the name.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::sign::CertifiedKey;

/// The file stem of the default certificate.
pub const DEFAULT_NAME: &str = "default";

/// One loaded certificate.
pub struct CertEntry {
    /// File stem (`registry.example.com` for `registry.example.com.crt`).
    pub name: String,
    /// Chain and signing key, as rustls serves them.
    pub key: Arc<CertifiedKey>,
    /// DNS names of the leaf's subjectAltName (lowercase; wildcards as `*.example.com`).
    pub sans: Vec<String>,
    /// Start of the leaf's validity, Unix seconds.
    pub not_before: i64,
    /// Expiry of the leaf, Unix seconds.
    pub not_after: i64,
    /// Who issued the leaf (its issuer's common name).
    pub issuer: String,
    /// The `.crt` file it came from.
    pub path: PathBuf,
}

impl fmt::Debug for CertEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertEntry")
            .field("name", &self.name)
            .field("sans", &self.sans)
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// Whether a certificate for `sans` may be served for `name` (lowercase). A wildcard covers
/// exactly one label: `*.example.com` covers `a.example.com`, not `a.b.example.com` nor
/// `example.com` (RFC 6125); a wildcard directly under a top-level name (`*.com`) covers
/// nothing, since TLS clients refuse it.
pub fn covers(sans: &[String], name: &str) -> bool {
    sans.iter().any(|san| {
        if let Some(suffix) = san.strip_prefix("*.") {
            suffix.contains('.')
                && name
                    .split_once('.')
                    .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix)
        } else {
            san == name
        }
    })
}

/// Every certificate by name.
#[derive(Debug, Default)]
pub struct CertStore {
    entries: HashMap<String, Arc<CertEntry>>,
}

impl CertStore {
    /// A store holding these entries.
    pub fn new(entries: impl IntoIterator<Item = Arc<CertEntry>>) -> CertStore {
        CertStore {
            entries: entries.into_iter().map(|e| (e.name.clone(), e)).collect(),
        }
    }

    /// The entry stored under `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<CertEntry>> {
        self.entries.get(name)
    }

    /// Every entry.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<CertEntry>> {
        self.entries.values()
    }

    /// Picks the certificate for an SNI name (lowercase; `None` when the client sent none),
    /// given the `cert-name` of the route that serves it, if any.
    pub fn select(&self, sni: Option<&str>, cert_name: Option<&str>) -> Option<&Arc<CertEntry>> {
        let covering = |stem: &str, name: &str| self.get(stem).filter(|e| covers(&e.sans, name));
        if let Some(name) = sni {
            let found = cert_name
                .and_then(|c| covering(c, name))
                .or_else(|| covering(name, name))
                .or_else(|| {
                    name.split_once('.')
                        .and_then(|(_, parent)| covering(parent, name))
                });
            if found.is_some() {
                return found;
            }
        }
        self.get(DEFAULT_NAME)
    }
}

/// The live store, as the HTTPS policy asks it whether a host has a certificate of its own.
pub struct LiveStore(pub Arc<arc_swap::ArcSwap<CertStore>>);

impl berth_plugins::builtin::OwnCertificate for LiveStore {
    fn has_own_certificate(&self, host: &str, cert_name: Option<&str>) -> bool {
        self.0
            .load()
            .select(Some(host), cert_name)
            .is_some_and(|e| e.name != DEFAULT_NAME || covers(&e.sans, host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn san_coverage() {
        let sans = vec!["example.com".to_string(), "*.example.com".to_string()];
        let cases = [
            ("example.com", true),
            ("a.example.com", true),
            ("a.b.example.com", false),
            ("other.com", false),
            (".example.com", false),
            ("aexample.com", false),
        ];
        for (name, expected) in cases {
            assert_eq!(covers(&sans, name), expected, "{name}");
        }
        // A wildcard under a top-level name covers nothing: clients refuse it.
        assert!(!covers(&["*.test".to_string()], "a.test"));
    }
}
