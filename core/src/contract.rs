//! The contract between `berth` and `berth-acme` over their shared directories, written once
//! and used by both:
//!
//! - `tls.certs-dir`: a certificate named `<name>` is `<name>.crt` (full chain, PEM) and
//!   `<name>.key` ([`cert_files`]);
//! - `acme.challenge-dir`: HTTP-01 key authorizations under `.well-known/acme-challenge/`
//!   ([`challenge_tokens_dir`]), one file per token, served at [`CHALLENGE_PREFIX`]`<token>`;
//!   only base64url tokens exist ([`valid_token`]);
//! - every write is atomic ([`write_atomic`]): a temporary file in the same directory,
//!   fsynced, renamed over the target. A reader sees the old file or the new one, never half
//!   of one.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The URL path under which berth serves challenge tokens, on plain HTTP, for any host.
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Where the key authorizations live under `acme.challenge-dir`.
pub fn challenge_tokens_dir(challenge_dir: &Path) -> PathBuf {
    challenge_dir.join(".well-known").join("acme-challenge")
}

/// Whether `token` is a base64url token (RFC 8555 §8.1: `[A-Za-z0-9_-]+`), and not
/// absurdly long: nothing else is ever written or served as a token.
pub fn valid_token(token: &str) -> bool {
    (1..=256).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The certificate and key files of the certificate named `name` in `certs_dir`.
pub fn cert_files(certs_dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        certs_dir.join(format!("{name}.crt")),
        certs_dir.join(format!("{name}.key")),
    )
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
