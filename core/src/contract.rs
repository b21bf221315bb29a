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

    /// Reads the certificate named `name`: its chain and its key, each a regular file of at
    /// most [`MAX_PEM_BYTES`] (symlinks followed; a FIFO or a device is refused at once, never
    /// waited on).
    ///
    /// # Errors
    /// The file that could not be read, and why.
    pub fn read(&self, name: &str) -> Result<(Vec<u8>, Vec<u8>), String> {
        let read = |path: PathBuf| {
            crate::files::read_regular(&path, MAX_PEM_BYTES)
                .map_err(|e| format!("{}: {e}", path.display()))
        };
        Ok((read(self.crt(name))?, read(self.key(name))?))
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

/// Checks that a certificate could be stored under `name` (a host name, or a wildcard's base
/// name): [`valid_cert_name`].
///
/// # Errors
/// A message naming what is wrong, for the config file and for labels.
pub fn check_cert_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_CERT_NAME {
        return Err(format!(
            "\"{name}\" is longer than {MAX_CERT_NAME} characters: its certificate could not \
             be stored as a file"
        ));
    }
    if !valid_cert_name(name) {
        return Err(format!(
            "\"{name}\" cannot name a certificate file (letters, digits, '.', '-' and '_')"
        ));
    }
    Ok(())
}

/// The longest certificate name: `<name>.crt` must fit in a file name (255 bytes).
pub const MAX_CERT_NAME: usize = 251;

/// The largest certificate or key file read from certs-dir.
pub const MAX_PEM_BYTES: u64 = 256 * 1024;

/// Whether `name` names a certificate in certs-dir: 1 to [`MAX_CERT_NAME`] characters of
/// letters, digits, `.`, `-` and `_`, not starting with `.` (a host name, or a wildcard's
/// base name).
pub fn valid_cert_name(name: &str) -> bool {
    (1..=MAX_CERT_NAME).contains(&name.len())
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
    if path.file_name().is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path has no file name",
        ));
    }
    // A name of its own per write, created exclusively (O_EXCL: an existing file or a
    // symlink planted under that name makes the write fail rather than be followed), so the
    // mode given is the mode the file has.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // Short, whatever the target's name: a target of 251 bytes plus a suffix must still be
    // a valid file name.
    let tmp = dir.join(format!(
        ".berth-tmp-{}-{}-{nanos}",
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
        let _ = std::fs::remove_dir_all(&dir);
        let certs = CertDir::new(dir.join("certs"));
        let longest = format!("{}.example", "a".repeat(MAX_CERT_NAME - 8));
        for name in ["b.example.com", "a.example.com", longest.as_str()] {
            assert!(valid_cert_name(name), "{name}");
            certs.write(name, b"chain", b"key").expect("write");
            assert_eq!(
                certs.read(name).expect("read"),
                (b"chain".to_vec(), b"key".to_vec())
            );
        }
        let too_long = format!("{longest}x");
        assert!(!valid_cert_name(&too_long));
        for odd in [
            ".hidden.crt",
            "with space.crt",
            "b\u{fc}cher.crt",
            "*.example.com.crt",
        ] {
            std::fs::write(certs.path().join(odd), "x").expect("odd");
        }
        assert_eq!(
            certs.names().expect("names"),
            ["a.example.com", longest.as_str(), "b.example.com"]
        );
        let mode = |p: PathBuf| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(certs.key("a.example.com")), 0o600);
        assert_eq!(mode(certs.crt("a.example.com")), 0o644);
        // Key first: when the chain cannot be written, the new key is already in place.
        std::fs::create_dir_all(certs.crt("c.example.com")).expect("a directory in the way");
        assert!(certs.write("c.example.com", b"chain", b"new key").is_err());
        assert_eq!(
            std::fs::read(certs.key("c.example.com")).expect("key"),
            b"new key"
        );
        // A FIFO is refused, not waited on.
        let fifo = certs.crt("d.example.com");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        std::fs::write(certs.key("d.example.com"), "key").expect("key");
        assert!(certs.read("d.example.com").is_err());
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
