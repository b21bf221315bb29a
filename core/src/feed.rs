//! The certificate feed: the network form of the certs-dir contract, for edges that share no
//! filesystem with `berth-acme` (several hosts, Docker Swarm).
//!
//! `berth-acme` serves every certificate pair of its certs-dir, and the thumbprint of its ACME
//! account, as one JSON document at [`FEED_PATH`] on `acme.feed`, to clients that present the
//! bearer token of `acme.feed-token-file`. Each edge (`tls.feed`, the same token) mirrors the
//! document into its own certs-dir with atomic writes ([`mirror`]), where the certificate
//! watcher hot-loads it, and answers HTTP-01 challenges from the thumbprint.
//!
//! The document carries an `ETag` (a digest of its content, [`FeedDocument::etag`]). An edge
//! asks with `If-None-Match` and `?wait=SECONDS`; the feed holds the request until something
//! changes or the wait runs out (then `304`), so a renewal reaches every edge at once without
//! polling traffic.
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

use crate::contract::{cert_files, write_atomic};

/// Where the feed document is served.
pub const FEED_PATH: &str = "/v1/certificates";
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
pub const MAX_PEM_BYTES: u64 = 256 * 1024;

/// What the feed serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedDocument {
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

/// Whether `name` may name a certificate file: what a host name or a certificate name can be
/// (letters, digits, `.`, `-`, `_`), not starting with `.`, at most 253 characters. Anything
/// else (`/`, `..`, a leading dot) is refused by both ends of the feed.
pub fn valid_cert_name(name: &str) -> bool {
    (1..=253).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
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

/// Every certificate pair in `certs_dir` (`<name>.crt` with `<name>.key`, symlinks followed),
/// sorted by name, with `thumbprint`. A `.crt` without its key, or a name
/// [`valid_cert_name`] refuses, is left out.
///
/// # Errors
/// When the directory cannot be listed.
pub fn collect(certs_dir: &Path, thumbprint: Option<String>) -> io::Result<FeedDocument> {
    let mut certificates = Vec::new();
    for entry in std::fs::read_dir(certs_dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".crt")) else {
            continue;
        };
        if !valid_cert_name(name) {
            continue;
        }
        let (crt_path, key_path) = cert_files(certs_dir, name);
        let small = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.len() <= MAX_PEM_BYTES);
        if !small(&crt_path) || !small(&key_path) {
            continue;
        }
        let (Ok(crt), Ok(key)) = (
            std::fs::read_to_string(&crt_path),
            std::fs::read_to_string(&key_path),
        ) else {
            continue;
        };
        if !looks_like_pair(&crt, &key) {
            continue;
        }
        certificates.push(FeedCert {
            name: name.to_string(),
            crt,
            key,
        });
    }
    certificates.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(FeedDocument {
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
}

/// Writes the document's certificates into `certs_dir`: each pair whose files differ from the
/// feed is written atomically, the key (mode 600) before the certificate, so the watcher
/// never pairs a new certificate with an old key. Files the feed does not name are left
/// alone: an edge keeps what it has.
pub fn mirror(doc: &FeedDocument, certs_dir: &Path) -> Mirrored {
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
        let (crt_path, key_path) = cert_files(certs_dir, &c.name);
        let same =
            |path: &Path, want: &str| std::fs::read(path).is_ok_and(|b| b == want.as_bytes());
        if same(&crt_path, &c.crt) && same(&key_path, &c.key) {
            out.unchanged += 1;
            continue;
        }
        let written = write_atomic(&key_path, c.key.as_bytes(), 0o600)
            .and_then(|()| write_atomic(&crt_path, c.crt.as_bytes(), 0o644));
        match written {
            Ok(()) => out.written.push(c.name.clone()),
            Err(e) => out.failed.push((c.name.clone(), e.to_string())),
        }
    }
    out
}

/// At most 64 characters of `text`, control characters escaped: safe to log whatever a
/// document carries.
pub fn printable(text: &str) -> String {
    let mut out: String = text.chars().take(64).flat_map(char::escape_debug).collect();
    if text.chars().count() > 64 {
        out.push('…');
    }
    out
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
        let doc = collect(src.path(), Some("t".into())).expect("collect");
        let names: Vec<&str> = doc.certificates.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["a.example.com"],
            "a .crt without its key is left out"
        );

        let first = mirror(&doc, dst.path());
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
        let again = mirror(&doc, dst.path());
        assert_eq!((again.written.len(), again.unchanged), (0, 1));

        std::fs::write(dst.path().join("kept.crt"), CRT).expect("w");
        let renewed = FeedDocument {
            thumbprint: None,
            certificates: vec![cert("a.example.com", &format!("{CRT}{CRT}"))],
        };
        assert_ne!(renewed.etag(), doc.etag());
        assert_eq!(mirror(&renewed, dst.path()).written, ["a.example.com"]);
        assert!(
            dst.path().join("kept.crt").exists(),
            "files the feed does not name stay"
        );
    }

    #[test]
    fn a_hostile_document_writes_nothing_outside_the_directory() {
        let dst = tempfile::tempdir().expect("dst");
        let doc = FeedDocument {
            thumbprint: None,
            certificates: vec![
                cert("../escape", CRT),
                cert(".hidden", CRT),
                cert("fine", "not pem"),
            ],
        };
        let out = mirror(&doc, dst.path());
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
            thumbprint: None,
            certificates: vec![cert("a", CRT)],
        };
        let out = mirror(&doc, dst.path());
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
            thumbprint: None,
            certificates: (0..=MAX_CERTIFICATES)
                .map(|i| cert(&format!("c{i}"), CRT))
                .collect(),
        };
        let out = mirror(&many, dst.path());
        assert!(
            out.written.is_empty() && out.failed.len() == 1,
            "{:?}",
            out.failed
        );
        let huge = FeedDocument {
            thumbprint: None,
            certificates: vec![cert("big", &CRT.repeat(5000))],
        };
        assert_eq!(mirror(&huge, dst.path()).failed.len(), 1);
        assert_eq!(printable("a\nb"), "a\\nb");
        assert_eq!(printable(&"x".repeat(70)).chars().count(), 65);
    }

    #[test]
    fn keys_never_show_in_debug_output() {
        let shown = format!("{:?}", cert("a", CRT));
        assert!(!shown.contains("BBBB") && shown.contains("redacted"));
    }

    #[test]
    fn etag_depends_on_every_part() {
        let base = FeedDocument {
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
