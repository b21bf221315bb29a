//! The contract between `berth` and `berth-acme` over their shared directories, written once
//! and used by both:
//!
//! - `tls.certs-dir` ([`CertDir`]): a certificate named `<name>` is `<name>.crt` (full chain,
//!   PEM) and `<name>.key`; the names that count are those [`valid_cert_name`] accepts, and a
//!   pair is written key first ([`CertDir::write`]);
//! - `acme.challenge-dir` ([`ChallengeDir`]): HTTP-01 key authorizations under
//!   `.well-known/acme-challenge/`, one file per token, served at [`CHALLENGE_PREFIX`]`<token>`;
//!   only base64url tokens exist ([`valid_token`]);
//! - every write is atomic ([`write_atomic`]): a temporary file in the same directory,
//!   fsynced, renamed over the target. A reader sees the old file or the new one, never half
//!   of one.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The URL path under which berth serves challenge tokens, on plain HTTP, for any host.
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// `acme.challenge-dir`: where berth-acme writes HTTP-01 key authorizations and berth reads
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeDir(PathBuf);

impl ChallengeDir {
    /// The challenge directory at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> ChallengeDir {
        ChallengeDir(dir.into())
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Where the key authorizations live: `.well-known/acme-challenge/` under it.
    pub fn tokens(&self) -> PathBuf {
        self.0.join(".well-known").join("acme-challenge")
    }

    /// The file of `token`; `None` when it is no token ([`valid_token`]), so no other name is
    /// ever written or read there.
    pub fn token(&self, token: &str) -> Option<PathBuf> {
        valid_token(token).then(|| self.tokens().join(token))
    }
}

/// Whether `token` is a base64url token (RFC 8555 §8.1: `[A-Za-z0-9_-]+`), and not
/// absurdly long: nothing else is ever written or served as a token.
pub fn valid_token(token: &str) -> bool {
    (1..=256).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `tls.certs-dir`: the certificates, by name. berth loads them, berth-acme and the feed
/// mirror write them, `default-cert = "generate"` creates one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertDir(PathBuf);

impl CertDir {
    /// The certificate directory at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> CertDir {
        CertDir(dir.into())
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The certificate chain of the certificate named `name`: `<name>.crt`.
    pub fn crt(&self, name: &str) -> PathBuf {
        self.0.join(format!("{name}.crt"))
    }

    /// The private key of the certificate named `name`: `<name>.key`.
    pub fn key(&self, name: &str) -> PathBuf {
        self.0.join(format!("{name}.key"))
    }

    /// The names of the certificates in the directory, sorted: every `<name>.crt` whose name
    /// [`valid_cert_name`] accepts (temporary files, hidden files and odd names are not
    /// certificates). Whether its key is there is the reader's to judge.
    ///
    /// # Errors
    /// When the directory cannot be listed.
    pub fn names(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.0)? {
            let file = entry?.file_name();
            if let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".crt")) {
                if valid_cert_name(name) {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Writes the certificate named `name`: the key first, then the chain, each atomically,
    /// so that a reader who sees the new chain finds its key in place (berth reloads when a
    /// `.crt` changes). Creates the directory if needed.
    ///
    /// # Errors
    /// Any I/O error; a pair may then be half written (the new key, the old chain), which
    /// berth judges as a renewal in progress and a retry completes.
    pub fn write(&self, name: &str, chain: &[u8], key: &[u8]) -> io::Result<()> {
        std::fs::create_dir_all(&self.0)?;
        write_atomic(&self.key(name), key, 0o600)?;
        write_atomic(&self.crt(name), chain, 0o644)
    }
}

/// Whether `name` names a certificate in certs-dir: 1 to 253 characters of letters, digits,
/// `.`, `-` and `_`, not starting with `.` (a host name, or a wildcard's base name).
pub fn valid_cert_name(name: &str) -> bool {
    (1..=253).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

/// Writes `bytes` to `path` atomically, with Unix permissions `mode` (e.g. `0o600` for keys).
///
/// # Errors
/// Any I/O error; the target is then unchanged.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    // A name of its own per write, created exclusively (O_EXCL: an existing file or a
    // symlink planted under that name makes the write fail rather than be followed), so the
    // mode given is the mode the file has.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}-{nanos}",
        name.to_string_lossy(),
        std::process::id(),
        WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_cert_dir_names_its_pairs_and_writes_them_key_first() {
        let dir = std::env::temp_dir().join(format!("berth-certdir-{}", std::process::id()));
        let certs = CertDir::new(dir.join("certs"));
        certs
            .write("b.example.com", b"chain", b"key")
            .expect("write");
        certs
            .write("a.example.com", b"chain", b"key")
            .expect("write");
        for odd in [
            ".hidden.crt",
            "with space.crt",
            "x.crt.tmp",
            ".a.example.com.crt.tmp-1-2-3",
        ] {
            std::fs::write(certs.path().join(odd), "x").expect("odd");
        }
        assert_eq!(
            certs.names().expect("names"),
            ["a.example.com", "b.example.com"]
        );
        assert_eq!(
            std::fs::read(certs.key("a.example.com")).expect("key"),
            b"key"
        );
        let mode = |p: PathBuf| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(certs.key("a.example.com")), 0o600);
        assert_eq!(mode(certs.crt("a.example.com")), 0o644);
        // Key first: a chain newer than its key never exists.
        let modified = |p: PathBuf| {
            std::fs::metadata(p)
                .expect("meta")
                .modified()
                .expect("mtime")
        };
        assert!(modified(certs.key("b.example.com")) <= modified(certs.crt("b.example.com")));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn only_base64url_tokens() {
        for ok in ["abc", "A-b_9", &"x".repeat(256)] {
            assert!(valid_token(ok), "{ok}");
        }
        for bad in [
            "",
            "..",
            "a/b",
            "%2e%2e",
            "a.b",
            "a b",
            "ä",
            &"x".repeat(257),
            "a\\b",
        ] {
            assert!(!valid_token(bad), "{bad}");
        }
    }

    #[test]
    fn a_challenge_dir_holds_tokens_only() {
        let dir = ChallengeDir::new("/srv/challenges");
        assert_eq!(
            dir.token("tok_EN-1"),
            Some(PathBuf::from(
                "/srv/challenges/.well-known/acme-challenge/tok_EN-1"
            ))
        );
        for bad in ["", "../x", "a/b", "a.b", "%2e"] {
            assert_eq!(dir.token(bad), None, "{bad}");
        }
    }

    #[test]
    fn replaces_the_file_whole_with_the_mode_asked() {
        let dir = std::env::temp_dir().join(format!("berth-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("a.key");
        write_atomic(&path, b"one", 0o600).expect("write");
        write_atomic(&path, b"two", 0o600).expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers = std::fs::read_dir(&dir).expect("ls").count();
        assert_eq!(leftovers, 1, "no temporary file left behind");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
