//! The users of a route: an htpasswd file, read, watched and checked against credentials.
//! Basic auth lets them in ([`super::auth`]), registry tokens name them
//! ([`super::registry_token`]), and the rate limiter counts per user ([`super::rate_limit`]).
//!
//! The file holds `user:hash` lines with bcrypt hashes (`$2y$`, `$2b$`, `$2a$`, as written by
//! `htpasswd -B`); blank lines and `#` comments are skipped. It is read when the route is
//! built and re-read by a watcher whenever it changes ([`AuthFiles::refresh`]); a file that
//! cannot be read or holds a bad line keeps the previous users and logs each problem with its
//! line number. A file that was never readable lets nobody in.
//!
//! bcrypt runs on the blocking pool. A successful check is remembered (a SHA-256 of user,
//! password and hash, at most [`VERIFIED_CACHE`] per file, forgotten when the file changes),
//! so a `docker push` of many requests costs one bcrypt check rather than one per request.
//! An unknown user is checked against another entry's hash, so a miss takes as long as a
//! wrong password.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;
use sha2::{Digest, Sha256};

use super::watched::{Contents, Reload, Watched};
use berth_core::sync::lock;

/// Successful checks remembered per file; the set is emptied when it is full.
pub const VERIFIED_CACHE: usize = 1024;

/// The users of one htpasswd file: name → bcrypt hash.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Htpasswd {
    users: HashMap<String, String>,
    entries_digest: [u8; 32],
}

impl Htpasswd {
    /// The number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file names nobody.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The hash of `user`, if the file names them.
    pub fn hash_of(&self, user: &str) -> Option<&str> {
        self.users.get(user).map(String::as_str)
    }

    /// A SHA-256 of the entries: part of the key registry tokens are signed with
    /// ([`super::registry_token::token_key`]), so a change of the users ends every token
    /// signed before.
    pub fn entries_digest(&self) -> &[u8; 32] {
        &self.entries_digest
    }

    /// Some entry's hash, used to spend the same time on unknown users.
    fn any_hash(&self) -> Option<&str> {
        self.users.values().next().map(String::as_str)
    }
}

/// The largest htpasswd file berth reads: about 60,000 bcrypt entries.
pub const HTPASSWD_LIMIT: u64 = 4 << 20;

/// Reads and parses the htpasswd file at `path`: a regular file of at most
/// [`HTPASSWD_LIMIT`] bytes ([`berth_core::files::read_regular`]: a FIFO or a device is
/// refused, never waited on). Blocking file I/O.
///
/// # Errors
/// What is wrong with the file, or every bad line, as [`parse_htpasswd`] says.
pub fn read_htpasswd(path: &Path) -> Result<Htpasswd, Vec<String>> {
    let bytes = berth_core::files::read_regular(path, HTPASSWD_LIMIT).map_err(|e| vec![e])?;
    let text = String::from_utf8(bytes).map_err(|_| vec!["not UTF-8 text".to_string()])?;
    parse_htpasswd(&text)
}

/// Parses htpasswd text.
///
/// # Errors
/// Every bad line, as `line N: ...` and what is wrong with it, never quoting the line: a
/// file a label names may be anything (`/etc/shadow`), and its content must not reach the
/// log.
pub fn parse_htpasswd(text: &str) -> Result<Htpasswd, Vec<String>> {
    let mut users = HashMap::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let Some((user, hash)) = line.split_once(':') else {
            errors.push(format!("line {n}: expected \"user:hash\""));
            continue;
        };
        if user.is_empty() {
            errors.push(format!("line {n}: empty user name"));
            continue;
        }
        if let Err(e) = check_hash(hash) {
            errors.push(format!("line {n}: {e}"));
            continue;
        }
        if users.insert(user.to_string(), hash.to_string()).is_some() {
            errors.push(format!("line {n}: a user named on an earlier line again"));
        }
    }
    if errors.is_empty() {
        let mut entries: Vec<(&String, &String)> = users.iter().collect();
        entries.sort();
        let mut h = Sha256::new();
        h.update(b"berth registry token key v1");
        for (user, hash) in entries {
            for part in [user.as_bytes(), hash.as_bytes()] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part);
            }
        }
        let entries_digest = h.finalize().into();
        Ok(Htpasswd {
            users,
            entries_digest,
        })
    } else {
        Err(errors)
    }
}

/// Accepts bcrypt hashes only, naming the scheme of anything else.
fn check_hash(hash: &str) -> Result<(), String> {
    let scheme = if hash.starts_with("$apr1$") {
        Some("MD5 (apr1)")
    } else if hash.starts_with("{SHA}") {
        Some("SHA-1")
    } else if hash.starts_with("$1$") || hash.starts_with("$5$") || hash.starts_with("$6$") {
        Some("crypt")
    } else {
        None
    };
    if let Some(scheme) = scheme {
        return Err(format!(
            "{scheme} hashes are not accepted; create the entry with `htpasswd -B`"
        ));
    }
    let bcrypt_prefix = ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p));
    if !bcrypt_prefix || hash.len() != 60 || hash.parse::<bcrypt::HashParts>().is_err() {
        return Err("not a bcrypt hash (\"$2y$...\", 60 characters)".to_string());
    }
    Ok(())
}

/// Decodes an `Authorization: Basic ...` value into user and password.
pub fn parse_basic(value: &[u8]) -> Option<(String, Vec<u8>)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim_start())
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

impl Contents for Htpasswd {
    const WHAT: &'static str = "htpasswd";
    const ENTRIES: &'static str = "users";

    fn read(path: &Path) -> Result<Htpasswd, Vec<String>> {
        read_htpasswd(path)
    }

    fn entries(&self) -> usize {
        self.len()
    }
}

/// One htpasswd file, shared by every route that names it, with its live users.
#[derive(Debug)]
pub struct HtpasswdFile {
    file: Watched<Htpasswd>,
    verified: Mutex<HashSet<[u8; 32]>>,
    bcrypt_checks: std::sync::atomic::AtomicU64,
}

impl HtpasswdFile {
    /// Reads `path` now (logging any problem; an unusable file lets nobody in until it is
    /// fixed).
    pub fn open(path: &Path) -> HtpasswdFile {
        HtpasswdFile {
            file: Watched::open(path),
            verified: Mutex::new(HashSet::new()),
            bcrypt_checks: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The users in effect.
    pub fn users(&self) -> Arc<Htpasswd> {
        self.file.get()
    }

    /// Re-reads the file if it changed since the last look (forgetting the checks made
    /// against the previous users). Blocking file I/O: call it from a background task.
    pub fn reload(&self) -> Reload {
        let outcome = self.file.reload();
        if matches!(outcome, Reload::Loaded(_)) {
            lock(&self.verified).clear();
        }
        outcome
    }

    /// Logs what a reload did.
    pub fn log(&self, outcome: &Reload) {
        self.file.log(outcome);
    }

    /// How many bcrypt verifications this file has run (each costs the same: one hash of the
    /// file's cost factor).
    pub fn bcrypt_checks(&self) -> u64 {
        self.bcrypt_checks
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether `user` with `password` was verified before and the file has not changed
    /// since: a lookup, never a bcrypt check.
    pub fn known(&self, user: &str, password: &[u8]) -> bool {
        let users = self.file.get();
        users
            .hash_of(user)
            .is_some_and(|hash| lock(&self.verified).contains(&cache_key(user, password, hash)))
    }

    /// Whether `user` with `password` is in the file. bcrypt runs on the blocking pool.
    pub async fn verify(&self, user: &str, password: &[u8]) -> bool {
        let users = self.file.get();
        let known = users.hash_of(user).map(str::to_string);
        let Some(hash) = known
            .clone()
            .or_else(|| users.any_hash().map(str::to_string))
        else {
            return false;
        };
        let key = cache_key(user, password, &hash);
        if known.is_some() && lock(&self.verified).contains(&key) {
            return true;
        }
        let password = password.to_vec();
        // Counted once the hash has been computed, not when it is asked for: the count is
        // what was spent.
        let ran = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash)).await;
        if matches!(ran, Ok(Ok(_))) {
            self.bcrypt_checks
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let checked = matches!(ran, Ok(Ok(true)));
        let ok = checked && known.is_some();
        if ok {
            let mut verified = lock(&self.verified);
            if verified.len() >= VERIFIED_CACHE {
                verified.clear();
            }
            verified.insert(key);
        }
        ok
    }
}

fn cache_key(user: &str, password: &[u8], hash: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [user.as_bytes(), password, hash.as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    // `htpasswd -nbB alice secret` and `htpasswd -nbB bob hunter2` (cost 5).
    const ALICE: &str = "alice:$2y$05$1nL5FI/UUYxJTje7P22Sge0bXeZRJhcHOG1EkNC6BPEyU8hlr0nle";
    const BOB: &str = "bob:$2y$05$f9nE/6.jh1s8OKTkoJ/ic.5uPOjsJt/YrBpul6WLY4ClJu59Ctj/i";

    #[test]
    fn htpasswd_lines_parse() {
        let text = format!("# users\n\n{ALICE}\n  {BOB}  \n");
        let users = parse_htpasswd(&text).expect("valid");
        assert_eq!(users.len(), 2);
        assert!(users
            .hash_of("alice")
            .is_some_and(|h| h.starts_with("$2y$05$")));
        assert!(users.hash_of("carol").is_none());
    }

    #[test]
    fn htpasswd_bad_lines_are_named() {
        let text = format!(
            "{ALICE}\nnocolon\n:$2y$05$x\nmd5:$apr1$abc$def\nsha:{{SHA}}abc=\nshort:$2y$05$abc\n{ALICE}\n"
        );
        let errors = parse_htpasswd(&text).expect_err("bad lines");
        assert_eq!(errors.len(), 6, "{errors:?}");
        assert!(errors[0].starts_with("line 2: expected"), "{}", errors[0]);
        assert!(errors[1].starts_with("line 3: empty user"), "{}", errors[1]);
        assert!(errors[2].contains("MD5 (apr1)"), "{}", errors[2]);
        assert!(errors[3].contains("SHA-1"), "{}", errors[3]);
        assert!(errors[4].contains("not a bcrypt hash"), "{}", errors[4]);
        assert!(
            errors[5].contains("named on an earlier line"),
            "{}",
            errors[5]
        );
        // No message quotes anything of the file: a hash, or a user name (the first field
        // of each line of /etc/shadow, say).
        for e in &errors {
            for quoted in [
                "$2y$05$1nL",
                "alice",
                "nocolon",
                "md5",
                "sha",
                "short",
                "abc",
            ] {
                assert!(!e.contains(quoted), "{e} quotes {quoted}");
            }
        }
    }

    #[test]
    fn basic_credentials_decode() {
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        type Expected<'a> = Option<(&'a str, &'a [u8])>;
        let table: [(String, Expected); 9] = [
            (
                format!("Basic {}", enc("alice:secret")),
                Some(("alice", b"secret")),
            ),
            (
                format!("basic   {}", enc("alice:se:cr:et")),
                Some(("alice", b"se:cr:et")),
            ),
            (format!("BASIC {}", enc("alice:")), Some(("alice", b""))),
            (format!("Basic {}", enc(":pw")), Some(("", b"pw"))),
            (format!("Basic {}", enc("nocolon")), None),
            ("Basic !!!notbase64".to_string(), None),
            (format!("Bearer {}", enc("alice:secret")), None),
            ("Basic".to_string(), None),
            (String::new(), None),
        ];
        for (header, expected) in table {
            let got = parse_basic(header.as_bytes());
            let got = got.as_ref().map(|(u, p)| (u.as_str(), p.as_slice()));
            assert_eq!(got, expected, "{header}");
        }
    }

    #[tokio::test]
    async fn verify_checks_and_remembers() {
        let dir = std::env::temp_dir().join(format!("berth-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("htpasswd");
        std::fs::write(&path, format!("{ALICE}\n")).expect("write");
        let file = HtpasswdFile::open(&path);
        assert!(file.verify("alice", b"secret").await);
        assert!(file.verify("alice", b"secret").await, "cached");
        assert!(!file.verify("alice", b"Secret").await);
        assert!(!file.verify("bob", b"hunter2").await, "not in the file yet");

        // A bad file keeps the users in effect.
        std::fs::write(&path, "garbage\n").expect("write");
        assert!(matches!(file.reload(), Reload::Kept(e) if e[0].starts_with("line 1")));
        assert!(file.verify("alice", b"secret").await);

        // A good one replaces them, and forgets what was verified.
        std::fs::write(&path, format!("{BOB}\n")).expect("write");
        assert_eq!(file.reload(), Reload::Loaded(1));
        assert_eq!(file.reload(), Reload::Unchanged);
        assert!(file.verify("bob", b"hunter2").await);
        assert!(!file.verify("alice", b"secret").await);

        // A file that vanishes keeps the last users, reported once.
        std::fs::remove_file(&path).expect("rm");
        assert!(matches!(file.reload(), Reload::Kept(_)));
        assert_eq!(file.reload(), Reload::Unchanged);
        assert!(file.verify("bob", b"hunter2").await);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An unknown user costs what a wrong password costs: one bcrypt verification against a
    /// hash of the file (the same cost factor), counted rather than timed.
    #[tokio::test]
    async fn unknown_users_cost_one_bcrypt_check_like_wrong_passwords() {
        let dir = std::env::temp_dir().join(format!("berth-auth-cost-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("htpasswd");
        std::fs::write(&path, format!("{ALICE}\n")).expect("write");
        let file = HtpasswdFile::open(&path);
        let cost = |before: u64| file.bcrypt_checks() - before;
        let n = file.bcrypt_checks();
        assert!(!file.verify("mallory", b"secret").await);
        assert_eq!(cost(n), 1, "unknown user");
        let n = file.bcrypt_checks();
        assert!(!file.verify("alice", b"wrong").await);
        assert_eq!(cost(n), 1, "wrong password");
        let n = file.bcrypt_checks();
        assert!(file.verify("alice", b"secret").await);
        assert!(file.verify("alice", b"secret").await);
        assert_eq!(cost(n), 1, "right password: checked once, then remembered");
        // An unknown user is never remembered, whatever the password.
        let n = file.bcrypt_checks();
        assert!(!file.verify("mallory", b"secret").await);
        assert!(!file.verify("mallory", b"secret").await);
        assert_eq!(cost(n), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_missing_file_lets_nobody_in() {
        let file = HtpasswdFile::open(Path::new("/nonexistent/berth/htpasswd"));
        assert!(file.users().is_empty());
        // Reported when opened, not again on every look.
        assert_eq!(file.reload(), Reload::Unchanged);
        assert!(!file.verify("alice", b"secret").await);
    }
}
