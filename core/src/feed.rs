//! The certificate feed: the network form of the certs-dir contract, for edges that share no
//! filesystem with `berth-acme` (several hosts, Docker Swarm).
//!
//! `berth-acme` serves every certificate pair of its certs-dir, and the thumbprint of its ACME
//! account, as one JSON document at [`FEED_PATH`] on `acme.feed`, to clients that present the
//! bearer token of `acme.feed-token-file`. Each edge (`tls.feed`, the same token) mirrors the
//! document into its own certs-dir with atomic writes ([`mirror`]), where the certificate
//! watcher hot-loads it, and answers HTTP-01 challenges from the thumbprint.
//!
//! The token itself never crosses the network: both ends derive two keys from it
//! ([`FeedKeys`]). One is the bearer credential the edge presents; the other seals the
//! document (ChaCha20-Poly1305, a fresh random nonce per answer). So a client that learnt the
//! bearer (a service on the overlay posing as `berth-acme`, say) can fetch sealed bytes it
//! cannot read, and a document nobody holding the token made — a forged certificate or
//! thumbprint — does not open on an edge. Each request carries a fresh random `nonce` that
//! the feed seals into its answer, and an edge takes only the answer to its own request (an
//! old answer replayed does not count).
//!
//! The document carries an `ETag` (a digest of its content, [`FeedDocument::etag`]). An edge
//! asks with `If-None-Match` and `?wait=SECONDS`; the feed holds the request until something
//! changes or the wait runs out (then `304`), so a renewal reaches every edge at once without
//! polling traffic. "Unchanged" is authenticated like a document: the `304` carries
//! [`PROOF_HEADER`], the request's nonce and the tag it names sealed with the document key
//! ([`FeedKeys::prove_unchanged`]), and an edge takes a `304` only with a proof that opens, in
//! answer to its own `If-None-Match` — so a service posing as berth-acme cannot keep an edge
//! from ever mirroring a certificate.
//!
//! ```toml
//! # berth-acme                                # every edge
//! [acme]                                      [tls]
//! feed = "0.0.0.0:9182"                       feed = "http://berth-acme:9182"
//! feed-token-file = "/run/secrets/feed"       feed-token-file = "/run/secrets/feed"
//! ```

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::contract::valid_cert_name;
use crate::contract::CertDir;

/// Where the feed document is served.
pub const FEED_PATH: &str = "/v1/certificates";
/// The header of a `304` that proves "unchanged" ([`FeedKeys::prove_unchanged`]).
pub const PROOF_HEADER: &str = "berth-feed-proof";
/// The feed's port when `tls.feed` names none.
pub const DEFAULT_FEED_PORT: u16 = 9182;
/// Shortest token accepted: 16 characters (`openssl rand -hex 32` makes 64).
pub const MIN_TOKEN_LEN: usize = 16;
/// Largest document an edge reads (hundreds of certificates fit in a few MiB).
pub const MAX_DOCUMENT_BYTES: usize = 32 * 1024 * 1024;
/// Longest time the feed holds a request that asked to wait.
pub const MAX_WAIT_SECS: u64 = 60;
/// Most certificates one document may carry; an edge refuses a larger one whole.
pub const MAX_CERTIFICATES: usize = 10_000;
/// Largest certificate chain or key file served or written (a real chain is a few KiB).
pub use crate::contract::MAX_PEM_BYTES;

/// What the feed serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedDocument {
    /// The `nonce` of the request this answers, sealed with it: an edge takes only the
    /// answer to its own request. Not part of the [`FeedDocument::etag`].
    #[serde(default)]
    pub request_nonce: Option<String>,
    /// RFC 7638 thumbprint of the ACME account key, once the account exists.
    pub thumbprint: Option<String>,
    /// Certificate pairs, by name.
    pub certificates: Vec<FeedCert>,
}

/// One certificate pair of the certs-dir.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedCert {
    /// The file stem (`registry.example.com` for `registry.example.com.crt`).
    pub name: String,
    /// Full chain, PEM.
    pub crt: String,
    /// Private key, PEM.
    pub key: String,
}

impl std::fmt::Debug for FeedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: never in logs.
        f.debug_struct("FeedCert")
            .field("name", &self.name)
            .field("crt_bytes", &self.crt.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl FeedDocument {
    /// A strong entity tag for the document's content.
    pub fn etag(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.thumbprint.as_deref().unwrap_or("").as_bytes());
        for c in &self.certificates {
            for part in [&c.name, &c.crt, &c.key] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part.as_bytes());
            }
        }
        let digest = h.finalize();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("\"{hex}\"")
    }
}

/// The two keys both ends derive from the shared token (HMAC-SHA256 with fixed labels): the
/// bearer credential requests carry, and the key that seals documents.
pub struct FeedKeys {
    bearer: String,
    seal: ring::aead::LessSafeKey,
}

impl std::fmt::Debug for FeedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FeedKeys(<redacted>)")
    }
}

/// Why a sealed document did not open.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Too short to hold a nonce and a tag.
    #[error("the document is truncated")]
    Truncated,
    /// Authentication failed: another token, or not made by berth-acme.
    #[error("the document does not authenticate: not sealed with this token (a different token, or not berth-acme)")]
    Forged,
    /// It opened, but is not a feed document.
    #[error("the document opened but is not valid JSON: {0}")]
    Json(String),
    /// Sealing failed (no randomness).
    #[error("sealing failed")]
    Seal,
}

const NONCE_LEN: usize = ring::aead::NONCE_LEN;
/// Bound into every sealed document, so it opens only as what it is.
const SEAL_CONTEXT: &[u8] = b"berth feed v1 document";
/// Bound into every proof of "unchanged": a proof never opens as a document, nor the reverse.
const UNCHANGED_CONTEXT: &[u8] = b"berth feed v1 unchanged";

impl FeedKeys {
    /// Derives the keys from `token`.
    pub fn derive(token: &str) -> FeedKeys {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token.as_bytes());
        let bearer = ring::hmac::sign(&key, b"berth feed v1 bearer");
        let seal = ring::hmac::sign(&key, b"berth feed v1 seal");
        let bearer = bearer.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        // 32 bytes of HMAC output make a ChaCha20 key; the length always fits.
        let unbound = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, seal.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC-SHA256 output is 32 bytes"));
        FeedKeys {
            bearer,
            seal: ring::aead::LessSafeKey::new(unbound),
        }
    }

    /// The `Authorization` header value an edge sends.
    pub fn authorization(&self) -> String {
        format!("Bearer {}", self.bearer)
    }

    /// Whether an `Authorization` header carries this bearer ([`bearer_matches`]).
    pub fn authorizes(&self, header: Option<&[u8]>) -> bool {
        bearer_matches(&self.bearer, header)
    }

    /// Seals `doc`: nonce, then ciphertext and tag.
    ///
    /// # Errors
    /// When no random nonce can be drawn.
    pub fn seal(&self, doc: &FeedDocument) -> Result<Vec<u8>, SealError> {
        let body = serde_json::to_vec(doc).map_err(|e| SealError::Json(e.to_string()))?;
        self.seal_bytes(SEAL_CONTEXT, body)
    }

    /// `plain` sealed under `context`: a fresh random nonce, then ciphertext and tag.
    fn seal_bytes(&self, context: &'static [u8], mut plain: Vec<u8>) -> Result<Vec<u8>, SealError> {
        use ring::rand::SecureRandom;
        let mut nonce = [0u8; NONCE_LEN];
        ring::rand::SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Seal)?;
        self.seal
            .seal_in_place_append_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(context),
                &mut plain,
            )
            .map_err(|_| SealError::Seal)?;
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&plain);
        Ok(out)
    }

    /// Opens what [`FeedKeys::seal_bytes`] sealed under `context`.
    fn open_bytes(&self, context: &'static [u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN + ring::aead::CHACHA20_POLY1305.tag_len() {
            return Err(SealError::Truncated);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let mut nonce_bytes = [0u8; NONCE_LEN];
        nonce_bytes.copy_from_slice(nonce);
        let mut body = rest.to_vec();
        let plain_len = self
            .seal
            .open_in_place(
                ring::aead::Nonce::assume_unique_for_key(nonce_bytes),
                ring::aead::Aad::from(context),
                &mut body,
            )
            .map_err(|_| SealError::Forged)?
            .len();
        body.truncate(plain_len);
        Ok(body)
    }

    /// The proof that the document tagged `etag` is still current, in answer to the request
    /// that carried `nonce`: both sealed with the document key, base64url, for
    /// [`PROOF_HEADER`].
    ///
    /// # Errors
    /// When no random nonce can be drawn.
    pub fn prove_unchanged(&self, nonce: &str, etag: &str) -> Result<String, SealError> {
        use base64::Engine;
        let sealed = self.seal_bytes(UNCHANGED_CONTEXT, format!("{nonce} {etag}").into_bytes())?;
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed))
    }

    /// Whether `proof` says, under this token, that the document tagged `etag` is unchanged,
    /// in answer to the request that carried `nonce`.
    pub fn unchanged_proven(&self, proof: &str, nonce: &str, etag: &str) -> bool {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(proof.trim())
            .ok()
            .and_then(|sealed| self.open_bytes(UNCHANGED_CONTEXT, &sealed).ok())
            .is_some_and(|plain| plain == format!("{nonce} {etag}").as_bytes())
    }

    /// Opens what [`FeedKeys::seal`] made.
    ///
    /// # Errors
    /// When the bytes were not sealed with this token, or are not a document.
    pub fn open(&self, sealed: &[u8]) -> Result<FeedDocument, SealError> {
        let plain = self.open_bytes(SEAL_CONTEXT, sealed)?;
        // serde's message may quote the document (keys): only where it went wrong.
        serde_json::from_slice(&plain).map_err(|e| {
            SealError::Json(format!(
                "{:?} at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ))
        })
    }
}

/// A fresh request nonce: 16 random bytes, hex.
///
/// # Errors
/// When the system has no randomness to give.
pub fn request_nonce() -> Result<String, SealError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SealError::Seal)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether a request nonce is acceptable: 16 to 64 hex digits.
pub fn valid_nonce(nonce: &str) -> bool {
    (16..=64).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `thumbprint` looks like a SHA-256 JWK thumbprint: 43 base64url characters.
pub fn valid_thumbprint(thumbprint: &str) -> bool {
    thumbprint.len() == 43
        && thumbprint
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Reads a bearer token from a file (a Swarm secret): surrounding whitespace trimmed, at
/// least [`MIN_TOKEN_LEN`] characters, no whitespace or control characters inside.
///
/// # Errors
/// A message naming the file and what is wrong, never the token.
pub fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read \"{}\": {e}", path.display()))?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "\"{}\" holds a token of {} characters; use at least {MIN_TOKEN_LEN} \
             (e.g. openssl rand -hex 32)",
            path.display(),
            token.len()
        ));
    }
    if token
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(format!(
            "\"{}\": the token has whitespace inside; one line, no spaces",
            path.display()
        ));
    }
    Ok(token.to_string())
}

/// Whether an `Authorization` header value carries `Bearer <token>`. Compares digests, so the
/// time taken says nothing about how much of the token was right.
pub fn bearer_matches(token: &str, header: Option<&[u8]>) -> bool {
    let Some(given) = header.and_then(|h| {
        let (scheme, rest) = h.split_at(h.len().min(7));
        scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
    }) else {
        return false;
    };
    let a = Sha256::digest(token.as_bytes());
    let b = Sha256::digest(given);
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Every certificate pair in `certs` (`<name>.crt` with `<name>.key`, symlinks followed),
/// sorted by name, with `thumbprint`. A `.crt` without its key, a file that is not a regular
/// file of at most [`MAX_PEM_BYTES`], or a name [`valid_cert_name`] refuses, is left out.
///
/// # Errors
/// When the directory cannot be listed.
pub fn collect(certs: &CertDir, thumbprint: Option<String>) -> io::Result<FeedDocument> {
    let mut certificates = Vec::new();
    for name in certs.names()? {
        let Ok((crt, key)) = certs.read(&name) else {
            continue;
        };
        let (Ok(crt), Ok(key)) = (String::from_utf8(crt), String::from_utf8(key)) else {
            continue;
        };
        if looks_like_pair(&crt, &key) {
            certificates.push(FeedCert { name, crt, key });
        }
    }
    Ok(FeedDocument {
        request_nonce: None,
        thumbprint,
        certificates,
    })
}

/// Whether the texts look like a PEM chain and a PEM private key, of sane sizes.
fn looks_like_pair(crt: &str, key: &str) -> bool {
    let sane = |t: &str| u64::try_from(t.len()).is_ok_and(|n| n <= MAX_PEM_BYTES);
    sane(crt)
        && sane(key)
        && crt.contains("-----BEGIN CERTIFICATE-----")
        && key.contains("PRIVATE KEY-----")
}

/// What [`mirror`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Mirrored {
    /// Names whose files were written (new or changed).
    pub written: Vec<String>,
    /// Names already on disk as they are in the feed.
    pub unchanged: usize,
    /// Names refused or that could not be written, with the reason.
    pub failed: Vec<(String, String)>,
    /// Whether a write failed (rather than a refusal, which the same document repeats):
    /// worth trying again.
    pub retry: bool,
}

/// Writes the document's certificates into `certs`: each pair whose files differ from the
/// feed is written as [`CertDir::write`] writes, the key (mode 600) before the certificate,
/// so the watcher never pairs a new certificate with an old key. Files the feed does not
/// name are left alone: an edge keeps what it has.
pub fn mirror(doc: &FeedDocument, certs: &CertDir) -> Mirrored {
    let mut out = Mirrored::default();
    if doc.certificates.len() > MAX_CERTIFICATES {
        out.failed.push((
            format!("({} certificates)", doc.certificates.len()),
            format!("more than {MAX_CERTIFICATES}: the whole document is refused"),
        ));
        return out;
    }
    for c in &doc.certificates {
        if !valid_cert_name(&c.name) {
            out.failed
                .push((printable(&c.name), "invalid name".to_string()));
            continue;
        }
        if !looks_like_pair(&c.crt, &c.key) {
            out.failed.push((
                c.name.clone(),
                "not a PEM certificate and key (or too large)".to_string(),
            ));
            continue;
        }
        let on_disk = certs.read(&c.name);
        if on_disk.is_ok_and(|(crt, key)| crt == c.crt.as_bytes() && key == c.key.as_bytes()) {
            out.unchanged += 1;
            continue;
        }
        let written = certs.write(&c.name, c.crt.as_bytes(), c.key.as_bytes());
        match written {
            Ok(()) => out.written.push(c.name.clone()),
            Err(e) => {
                out.failed.push((c.name.clone(), e.to_string()));
                out.retry = true;
            }
        }
    }
    out
}

/// At most 64 characters of `text`, control characters escaped: safe to log whatever a
/// document carries.
pub fn printable(text: &str) -> String {
    crate::logging::shown(text, 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRT: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n";

    fn cert(name: &str, crt: &str) -> FeedCert {
        FeedCert {
            name: name.into(),
            crt: crt.into(),
            key: KEY.into(),
        }
    }

    #[test]
    fn names_that_could_leave_the_directory_are_refused() {
        for ok in ["registry.example.com", "example.com", "default", "a_b-c"] {
            assert!(valid_cert_name(ok), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "..",
            "*.example.com",
            "a b",
            "x\0",
        ] {
            assert!(!valid_cert_name(bad), "{bad:?}");
        }
        assert!(!valid_cert_name(&"a".repeat(254)));
    }

    #[test]
    fn bearer_tokens_must_match_whole() {
        let t = "0123456789abcdef0123";
        assert!(bearer_matches(t, Some(b"Bearer 0123456789abcdef0123")));
        assert!(bearer_matches(t, Some(b"bearer 0123456789abcdef0123")));
        assert!(!bearer_matches(t, Some(b"Bearer 0123456789abcdef012")));
        assert!(!bearer_matches(t, Some(b"Bearer 0123456789abcdef01234")));
        assert!(!bearer_matches(t, Some(b"Basic 0123456789abcdef0123")));
        assert!(!bearer_matches(t, Some(b"0123456789abcdef0123")));
        assert!(!bearer_matches(t, Some(b"Bearer")));
        assert!(!bearer_matches(t, None));
    }

    #[test]
    fn tokens_are_read_trimmed_and_must_be_long_enough() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("token");
        std::fs::write(&path, "  0123456789abcdef\n").expect("write");
        assert_eq!(read_token(&path).as_deref(), Ok("0123456789abcdef"));
        std::fs::write(&path, "short\n").expect("write");
        let e = read_token(&path).expect_err("short");
        assert!(e.contains("5 characters") && !e.contains("short"), "{e}");
        std::fs::write(&path, "0123456789 abcdef0123").expect("write");
        let e = read_token(&path).expect_err("space");
        assert!(e.contains("whitespace") && !e.contains("abcdef"), "{e}");
        assert!(read_token(&dir.path().join("none"))
            .expect_err("missing")
            .contains("cannot read"));
    }

    #[test]
    fn thumbprints_are_43_base64url_characters() {
        assert!(valid_thumbprint(
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        ));
        assert!(!valid_thumbprint("short"));
        assert!(!valid_thumbprint(&format!("{}=", "a".repeat(42))));
        assert!(!valid_thumbprint(&format!("{}/", "a".repeat(42))));
    }

    #[test]
    fn collect_then_mirror_copies_pairs_and_only_what_changed() {
        let src = tempfile::tempdir().expect("src");
        let dst = tempfile::tempdir().expect("dst");
        std::fs::write(src.path().join("a.example.com.crt"), CRT).expect("w");
        std::fs::write(src.path().join("a.example.com.key"), KEY).expect("w");
        std::fs::write(src.path().join("lonely.crt"), CRT).expect("w");
        std::fs::write(src.path().join("notes.txt"), "x").expect("w");
        let doc = collect(&CertDir::new(src.path()), Some("t".into())).expect("collect");
        let names: Vec<&str> = doc.certificates.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["a.example.com"],
            "a .crt without its key is left out"
        );

        let first = mirror(&doc, &CertDir::new(dst.path()));
        assert_eq!(first.written, ["a.example.com"]);
        assert_eq!(
            std::fs::read_to_string(dst.path().join("a.example.com.key")).expect("key"),
            KEY
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dst.path().join("a.example.com.key"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = mirror(&doc, &CertDir::new(dst.path()));
        assert_eq!((again.written.len(), again.unchanged), (0, 1));

        std::fs::write(dst.path().join("kept.crt"), CRT).expect("w");
        let renewed = FeedDocument {
            request_nonce: None,
            thumbprint: None,
            certificates: vec![cert("a.example.com", &format!("{CRT}{CRT}"))],
        };
        assert_ne!(renewed.etag(), doc.etag());
        assert_eq!(
            mirror(&renewed, &CertDir::new(dst.path())).written,
            ["a.example.com"]
        );
        assert!(
            dst.path().join("kept.crt").exists(),
            "files the feed does not name stay"
        );
    }

    #[test]
    fn a_hostile_document_writes_nothing_outside_the_directory() {
        let dst = tempfile::tempdir().expect("dst");
        let doc = FeedDocument {
            request_nonce: None,
            thumbprint: None,
            certificates: vec![
                cert("../escape", CRT),
                cert(".hidden", CRT),
                cert("fine", "not pem"),
            ],
        };
        let out = mirror(&doc, &CertDir::new(dst.path()));
        assert!(out.written.is_empty());
        assert_eq!(out.failed.len(), 3);
        assert_eq!(std::fs::read_dir(dst.path()).expect("ls").count(), 0);
        assert!(!dst
            .path()
            .parent()
            .expect("parent")
            .join("escape.crt")
            .exists());
    }

    #[test]
    fn a_planted_symlink_is_not_followed_and_oversized_documents_are_refused() {
        let dst = tempfile::tempdir().expect("dst");
        let outside = tempfile::tempdir().expect("outside");
        let target = outside.path().join("victim");
        std::fs::write(&target, "keep").expect("w");
        std::os::unix::fs::symlink(&target, dst.path().join("a.key")).expect("symlink");
        let doc = FeedDocument {
            request_nonce: None,
            thumbprint: None,
            certificates: vec![cert("a", CRT)],
        };
        let out = mirror(&doc, &CertDir::new(dst.path()));
        assert_eq!(out.written, ["a"]);
        assert_eq!(
            std::fs::read_to_string(&target).expect("r"),
            "keep",
            "symlink target untouched"
        );
        assert!(
            !dst.path().join("a.key").is_symlink(),
            "replaced by the key file"
        );

        let many = FeedDocument {
            request_nonce: None,
            thumbprint: None,
            certificates: (0..=MAX_CERTIFICATES)
                .map(|i| cert(&format!("c{i}"), CRT))
                .collect(),
        };
        let out = mirror(&many, &CertDir::new(dst.path()));
        assert!(
            out.written.is_empty() && out.failed.len() == 1,
            "{:?}",
            out.failed
        );
        let huge = FeedDocument {
            request_nonce: None,
            thumbprint: None,
            certificates: vec![cert("big", &CRT.repeat(5000))],
        };
        assert_eq!(mirror(&huge, &CertDir::new(dst.path())).failed.len(), 1);
        assert_eq!(printable("a\nb"), "a\\nb");
        assert_eq!(printable(&"x".repeat(70)).chars().count(), 65);
    }

    #[test]
    fn documents_open_only_with_the_token_they_were_sealed_with() {
        let keys = FeedKeys::derive("0123456789abcdef0123");
        let doc = FeedDocument {
            request_nonce: Some("n".into()),
            thumbprint: Some("t".into()),
            certificates: vec![cert("a", CRT)],
        };
        let sealed = keys.seal(&doc).expect("seal");
        assert!(
            !String::from_utf8_lossy(&sealed).contains("BBBB"),
            "the key is not readable"
        );
        assert_ne!(
            sealed,
            keys.seal(&doc).expect("seal"),
            "a fresh nonce each time"
        );
        assert_eq!(keys.open(&sealed).expect("open"), doc);

        let other = FeedKeys::derive("0123456789abcdef0124");
        assert!(matches!(other.open(&sealed), Err(SealError::Forged)));
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(keys.open(&flipped), Err(SealError::Forged)));
        assert!(matches!(
            keys.open(&sealed[..20]),
            Err(SealError::Truncated)
        ));

        // The bearer is derived: the token is never sent, and the bearer does not open
        // documents.
        let auth = keys.authorization();
        assert!(!auth.contains("0123456789abcdef0123"));
        assert!(keys.authorizes(Some(auth.as_bytes())));
        assert!(!other.authorizes(Some(auth.as_bytes())));
        let bearer_as_token = FeedKeys::derive(auth.trim_start_matches("Bearer "));
        assert!(bearer_as_token.open(&sealed).is_err());
        assert_eq!(format!("{keys:?}"), "FeedKeys(<redacted>)");
    }

    /// Known answers, fixed when feed v1 was defined: a change to how keys are derived or how
    /// documents are sealed fails here before it fails an edge in a rolling upgrade (an old
    /// berth-acme and a new edge must still understand each other).
    #[test]
    fn known_answers_fix_the_keys_and_the_sealing() {
        const TOKEN: &str = "berth-feed-known-answer-token-0001";
        const BEARER: &str = "56daf2cb0de11fd0e31646cb638f275009cadad0998b33950224db02fc1185f1";
        const SEALED: &str = "fe6f7b77d00680f4ef138303989e11b9de375fded30950acaeae5cd9363f671f9fed1324df6c04b856efc1f2f4451f82f315c3bcd8b12f73ac753399b43fa48b7c71510551dc07352b3909a6fdbdac8e0265da771aafea4f94e6daa40b9336493826d2fc69713696ae2d944a735921776580e7da7c316904feec9fd0f8fbd6c201080a115db5215d4e5268a08b28a37a4f72cd9300f3e798ceca78eb9bf3b07254c33484fe72748afe5df0d48106df87a8dcea9d63e90ccb6b10186736e9325506d4871acfc7a880e5a5f32560fa51d72a3ec8591596550a855982cd94785e864a5c712afcbb9ee5a18c03fd0f364bc12b6f7f149330f8ca576a2eb6e20bc151fb5d414811bb54413a10d085e6be200533ca1e1b23648cc38f4bad548d1a19fc650e83ea20aa93499f51145cd624122a7113b26ffee1fda4a5f6b0ec128ad3efdfad835836def798b827";
        const NONCE: &str = "00112233445566778899aabbccddeeff";
        const ETAG: &str = "\"b90fe5819d23365bee2a2b0f5fd47f85\"";
        const PROOF: &str = "niHwszEAluGD7cNDDbgaOAERrMIplT7U42ANd1ArkHif4-VuOHfSdnZLpUZTFjjxS8B8f5Mhcx7VeqVY8XqF3LgVD9GEsm0-duxRvpMSwGPC3u4jlR8XRzkwhf3fXsw";
        let hex = |text: &str| -> Vec<u8> {
            (0..text.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
                .collect()
        };
        let keys = FeedKeys::derive(TOKEN);
        assert_eq!(keys.authorization(), format!("Bearer {BEARER}"));
        let doc = keys.open(&hex(SEALED)).expect("the v1 document opens");
        assert_eq!(doc.request_nonce.as_deref(), Some(NONCE));
        assert_eq!(doc.certificates.len(), 1);
        assert_eq!(doc.certificates[0].name, "registry.example.com");
        assert_eq!(doc.etag(), ETAG);
        assert!(keys.unchanged_proven(PROOF, NONCE, ETAG));
        // Whoever knows the bearer (anyone the edge ever sent it to) holds a key built from
        // it: that key opens neither the document nor the proof.
        for material in [hex(BEARER), BEARER.as_bytes()[..32].to_vec()] {
            let key = ring::aead::LessSafeKey::new(
                ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &material)
                    .expect("32 bytes"),
            );
            let as_keys = FeedKeys {
                bearer: BEARER.to_string(),
                seal: key,
            };
            assert!(as_keys.open(&hex(SEALED)).is_err());
            assert!(!as_keys.unchanged_proven(PROOF, NONCE, ETAG));
        }
        // A proof is for one request and one tag, and is no document.
        assert!(!keys.unchanged_proven(PROOF, "ffeeddccbbaa99887766554433221100", ETAG));
        assert!(!keys.unchanged_proven(PROOF, NONCE, "\"0\""));
        assert!(!FeedKeys::derive("another-token-of-enough-length")
            .unchanged_proven(PROOF, NONCE, ETAG));
        assert!(keys.open(&hex(SEALED)).is_ok());
        let proof_bytes = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(PROOF)
                .expect("base64")
        };
        assert!(keys.open(&proof_bytes).is_err());
    }

    #[test]
    fn keys_never_show_in_debug_output() {
        let shown = format!("{:?}", cert("a", CRT));
        assert!(!shown.contains("BBBB") && shown.contains("redacted"));
    }

    #[test]
    fn etag_depends_on_every_part() {
        let base = FeedDocument {
            request_nonce: None,
            thumbprint: Some("t".into()),
            certificates: vec![cert("a", CRT)],
        };
        let mut other = base.clone();
        other.thumbprint = None;
        assert_ne!(base.etag(), other.etag());
        let mut other = base.clone();
        other.certificates[0].key.push('x');
        assert_ne!(base.etag(), other.etag());
        let mut other = base.clone();
        other.certificates[0].crt.push('x');
        assert_ne!(base.etag(), other.etag());
        let mut other = base.clone();
        other.certificates[0].name.push('x');
        assert_ne!(base.etag(), other.etag());
        // Lengths are part of the digest: moving a byte from one field to the next changes it.
        let mut other = base.clone();
        other.certificates[0].name = "aB".into();
        other.certificates[0].crt = CRT[1..].into();
        let mut shifted = base.clone();
        shifted.certificates[0].crt = format!("B{}", &CRT[1..]);
        assert_ne!(other.etag(), shifted.etag());
    }
}
