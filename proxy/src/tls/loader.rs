//! Loads certs-dir into a [`CertStore`]: `<name>.crt` (PEM chain, leaf first) with
//! `<name>.key` (PEM private key), symlinks followed. Runs off the request path (at start-up
//! and in the watcher's blocking task).
//!
//! A rescan only parses files whose metadata changed since the last scan. A pair that fails
//! to parse — garbage, half a file — is logged once with its file name and counted, and the
//! certificate that was serving under that name keeps serving. A key that does not match its
//! certificate is first taken for a renewal in progress (writers rename the key into place,
//! then the certificate): berth keeps serving the previous pair and waits [`PAIR_SETTLE`]
//! for the other half; only a mismatch that outlasts it is an error. A pair whose `.crt` is
//! gone is dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How long a key and a certificate that do not match may stay so before it is an error: a
/// writer renames the key into place, then the certificate, within this.
pub const PAIR_SETTLE: Duration = Duration::from_secs(2);

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::store::{CertEntry, CertStore};
use berth_core::contract::CertDir;

/// Why a certificate pair was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No certificate in the `.crt` file.
    #[error("{0}: no PEM certificate found")]
    NoCertificate(PathBuf),
    /// The certificate could not be parsed.
    #[error("{path}: invalid certificate: {reason}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// No usable private key in the `.key` file.
    #[error("{path}: invalid private key: {reason}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The key does not belong to the certificate.
    #[error("{key}: private key does not match the certificate in {crt}")]
    Mismatch {
        /// The certificate file.
        crt: PathBuf,
        /// The key file.
        key: PathBuf,
    },
}

/// What a certificate file says besides the chain and key rustls serves.
#[derive(Debug, Clone)]
pub struct LeafFacts {
    /// DNS names of the leaf's subjectAltName (lowercase).
    pub sans: Vec<String>,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// Expiry, Unix seconds.
    pub not_after: i64,
    /// The issuer's common name (or its whole name when it has none).
    pub issuer: String,
}

/// Parses a PEM chain and key into what rustls serves, plus facts about the leaf.
///
/// # Errors
/// When either does not parse or the key does not match the leaf.
pub fn parse_pair(
    crt_path: &Path,
    crt_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<(CertifiedKey, LeafFacts), CertError> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &crt_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::BadCertificate {
            path: crt_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let leaf = chain
        .first()
        .ok_or_else(|| CertError::NoCertificate(crt_path.to_path_buf()))?;
    let (_, x509) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| {
        CertError::BadCertificate {
            path: crt_path.to_path_buf(),
            reason: e.to_string(),
        }
    })?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = x509.subject_alternative_name() {
        for name in &ext.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                sans.push(dns.to_ascii_lowercase());
            }
        }
    }
    let issuer = x509
        .issuer()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map_or_else(|| x509.issuer().to_string(), str::to_string);
    let facts = LeafFacts {
        sans,
        not_before: x509.validity().not_before.timestamp(),
        not_after: x509.validity().not_after.timestamp(),
        issuer,
    };
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| CertError::BadKey {
            path: key_path.to_path_buf(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| CertError::BadKey {
            path: key_path.to_path_buf(),
            reason: "no PEM private key found".to_string(),
        })?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| CertError::BadKey {
            path: key_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    if certified.keys_match().is_err() {
        return Err(CertError::Mismatch {
            crt: crt_path.to_path_buf(),
            key: key_path.to_path_buf(),
        });
    }
    Ok((certified, facts))
}

/// What identifies a version of a file: size, modification time and inode (after
/// following symlinks), so a rename over it or a rewrite is noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    crt: (u64, Option<SystemTime>, u64),
    key: Option<(u64, Option<SystemTime>, u64)>,
}

fn stat(path: &Path) -> Option<(u64, Option<SystemTime>, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok(), m.ino()))
}

/// The outcome of the last scan, per name.
#[derive(Debug)]
pub struct Loader {
    dir: CertDir,
    seen: HashMap<String, Fingerprint>,
    /// Names whose key and certificate disagree, since when (not reported yet).
    halves: HashMap<String, Instant>,
    /// Pairs loaded and pairs that failed, since start (exported as
    /// `berth_cert_reloads_total`).
    pub counts: std::sync::Arc<crate::metrics::ReloadCounts>,
}

impl Loader {
    /// A loader for `dir`.
    pub fn new(dir: CertDir) -> Loader {
        Loader {
            dir,
            seen: HashMap::new(),
            halves: HashMap::new(),
            counts: std::sync::Arc::default(),
        }
    }

    /// The directory it loads.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// When the next rescan is due to judge a pair whose halves disagree, if any.
    pub fn settle_deadline(&self) -> Option<Instant> {
        self.halves.values().min().map(|since| *since + PAIR_SETTLE)
    }

    /// Scans the directory and returns the new store when anything changed, or `None`.
    /// `current` supplies the certificates to keep when a changed pair does not load.
    pub fn rescan(&mut self, current: &CertStore) -> Option<CertStore> {
        let names = match self.dir.names() {
            Ok(names) => names,
            Err(e) => {
                tracing::error!(dir = %self.dir.path().display(), error = %e, "cannot list the certificate directory; keeping the certificates loaded");
                return None;
            }
        };
        let mut changed = false;
        let mut next = Vec::new();
        for name in &names {
            let (crt, key) = (self.dir.crt(name), self.dir.key(name));
            let Some(crt_stat) = stat(&crt) else {
                // A dangling symlink: treated as absent, with nothing left to wait for.
                self.halves.remove(name);
                continue;
            };
            let fp = Fingerprint {
                crt: crt_stat,
                key: stat(&key),
            };
            if self.seen.get(name) == Some(&fp) {
                if let Some(e) = current.get(name) {
                    next.push(e.clone());
                }
                self.report_lasting_mismatch(name, &crt, &key);
                continue;
            }
            self.seen.insert(name.clone(), fp);
            match load_pair(&crt, &key, name) {
                Err(CertError::Mismatch { .. }) if self.await_other_half(name) => {
                    tracing::info!(cert = %name, "certificate and key differ: waiting for the other half (a renewal in progress)");
                    if let Some(e) = current.get(name) {
                        next.push(e.clone());
                    }
                }
                Ok(entry) => {
                    self.halves.remove(name);
                    changed = true;
                    self.counts
                        .ok
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(cert = %name, sans = ?entry.sans, "certificate loaded");
                    next.push(Arc::new(entry));
                }
                Err(e) => {
                    self.halves.remove(name);
                    self.counts
                        .failed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    match current.get(name) {
                        Some(old) => {
                            tracing::error!(cert = %name, error = %e, "certificate not loaded; the previous one keeps serving");
                            next.push(old.clone());
                        }
                        None => tracing::error!(cert = %name, error = %e, "certificate not loaded"),
                    }
                }
            }
        }
        self.seen.retain(|n, _| names.contains(n));
        self.halves.retain(|n, _| names.contains(n));
        for gone in current
            .entries()
            .filter(|e| !next.iter().any(|n| Arc::ptr_eq(n, e)))
        {
            tracing::info!(cert = %gone.name, "certificate removed or replaced");
            changed = true;
        }
        changed.then(|| CertStore::new(next))
    }
}

impl Loader {
    /// Whether a mismatch of `name` is still within its settle time (starting it now if new).
    fn await_other_half(&mut self, name: &str) -> bool {
        let since = *self
            .halves
            .entry(name.to_string())
            .or_insert_with(Instant::now);
        since.elapsed() < PAIR_SETTLE
    }

    /// Reports, once, a mismatch of `name` that has outlasted [`PAIR_SETTLE`] unchanged.
    fn report_lasting_mismatch(&mut self, name: &str, crt: &Path, key: &Path) {
        let Some(since) = self.halves.get(name) else {
            return;
        };
        if since.elapsed() < PAIR_SETTLE {
            return;
        }
        self.halves.remove(name);
        self.counts
            .failed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let e = CertError::Mismatch {
            crt: crt.to_path_buf(),
            key: key.to_path_buf(),
        };
        tracing::error!(cert = %name, error = %e, "certificate not loaded: its key has not matched for {}s; the previous one (if any) keeps serving", PAIR_SETTLE.as_secs());
    }
}

fn load_pair(crt: &Path, key: &Path, name: &str) -> Result<CertEntry, CertError> {
    // Regular files of a bounded size only, as every reader of certs-dir: a FIFO there is
    // refused at once rather than stalling the watcher.
    let read = |p: &Path| {
        berth_core::files::read_regular(p, berth_core::contract::MAX_PEM_BYTES).map_err(|e| {
            CertError::Read {
                path: p.to_path_buf(),
                source: std::io::Error::other(e),
            }
        })
    };
    let (crt_pem, key_pem) = (read(crt)?, read(key)?);
    let (certified, facts) = parse_pair(crt, &crt_pem, key, &key_pem)?;
    Ok(CertEntry {
        name: name.to_string(),
        key: Arc::new(certified),
        sans: facts.sans,
        not_before: facts.not_before,
        not_after: facts.not_after,
        issuer: facts.issuer,
        path: crt.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_pending_mismatch_is_dropped_when_its_certificate_goes() {
        let dir = tempfile::tempdir().expect("dir");
        let (crt, key) = pair("a.test");
        std::fs::write(dir.path().join("a.test.crt"), &crt).expect("crt");
        std::fs::write(dir.path().join("a.test.key"), &key).expect("key");
        let mut loader = Loader::new(CertDir::new(dir.path()));
        let store = loader.rescan(&CertStore::default()).expect("loaded");
        assert!(store.get("a.test").is_some());

        // A new key beside the old certificate: waited on, the old pair still served.
        let (_, other_key) = pair("a.test");
        std::fs::write(dir.path().join("a.test.key"), &other_key).expect("key");
        let unchanged = loader.rescan(&store);
        assert!(unchanged.is_none(), "nothing to swap while waiting");
        assert!(loader.settle_deadline().is_some());

        // The certificate becomes a dangling link: nothing is left to wait for, and the
        // deadline must not stay behind (the watcher would rescan in a loop).
        std::fs::remove_file(dir.path().join("a.test.crt")).expect("rm");
        std::os::unix::fs::symlink("./gone/fullchain.pem", dir.path().join("a.test.crt"))
            .expect("link");
        let _ = loader.rescan(&store);
        assert_eq!(loader.settle_deadline(), None);
    }
}
