//! Registry bearer tokens, so that the Docker CLI pulls anonymously from a route with
//! `auth.anonymous-read` (registry profile).
//!
//! dockerd asks `GET /v2/` first; a `Basic` challenge without a login makes it stop with "no
//! basic auth credentials" before it asks for anything else. A `Bearer` challenge (the
//! registry token flow Docker Hub uses) makes it fetch a token — anonymously when it has no
//! login — and then ask with it. So on such a route berth challenges with
//!
//! ```text
//! WWW-Authenticate: Bearer realm="<scheme>://<host>/v2/_berth/token",service="<host>"
//! ```
//!
//! and answers that realm itself ([`TOKEN_PATH`]; `_berth` can never be a repository name):
//! without credentials it hands out an anonymous token, with valid `Basic` credentials (what
//! `docker login` and a logged-in push send) a token for that user, and with wrong ones
//! `401`. A request then carrying an anonymous token counts as one without credentials (it
//! passes only where reads are open); a user's token counts as that user's login. Either
//! reaches only the scopes it was granted ([`Scopes`]: what the client asked, where the
//! repository rules allow it).
//!
//! A token is `base64url(host NUL user NUL expiry NUL scopes) "." base64url(HMAC-SHA256)`,
//! valid for
//! [`TOKEN_LIFETIME`]. The key is an HMAC of the htpasswd file's entries
//! ([`super::Htpasswd::entries_digest`]) under a secret ([`secret_for`]): the contents of
//! `auth.token-secret-file`, shared by every berth serving the route (the edges of a Swarm,
//! the process after an upgrade), or else 32 random bytes of the process's own. Reading the
//! htpasswd file is not enough to sign a token, and a change of the file ends every token
//! signed before it. A token also names its host and is refused elsewhere.
//!
//! Basic credentials on the registry requests themselves keep working (curl, scripts).

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use berth_core::route::Scopes;

/// The realm's path on the route's host.
pub const TOKEN_PATH: &str = "/v2/_berth/token";
/// How long a token is valid (Docker Hub's figure; clients fetch a new one when it runs out).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// Who a valid token was issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bearer {
    /// Nobody: the request counts as one without credentials.
    Anonymous,
    /// A user of the htpasswd file.
    User(String),
}

/// The shortest `auth.token-secret-file`, in bytes.
pub const MIN_SECRET: usize = 32;

/// The largest token secret file berth reads.
pub const SECRET_LIMIT: u64 = 64 << 10;

/// Reads a token secret file (a regular file of at most [`SECRET_LIMIT`] bytes): at least [`MIN_SECRET`] bytes (surrounding whitespace aside),
/// used through a SHA-256 of them.
///
/// # Errors
/// When the file cannot be read or is too short, naming it (never quoting it).
pub fn read_secret(path: &Path) -> Result<[u8; 32], String> {
    let bytes = berth_core::files::read_regular(path, SECRET_LIMIT)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let secret = bytes.trim_ascii();
    if secret.len() < MIN_SECRET {
        return Err(format!(
            "{}: {} bytes; a token secret needs at least {MIN_SECRET} (e.g. `openssl rand -hex 32`)",
            path.display(),
            secret.len()
        ));
    }
    Ok(Sha256::digest(secret).into())
}

/// 32 random bytes, the same for the whole process (so a reload keeps its tokens).
pub fn process_secret() -> [u8; 32] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    *SECRET.get_or_init(|| {
        let mut bytes = [0u8; 32];
        if SystemRandom::new().fill(&mut bytes).is_err() {
            // The system's random source failing is fatal for TLS too; never sign with a
            // key anybody could know.
            panic!("the system random source failed");
        }
        bytes
    })
}

/// The secret for a route: its `auth.token-secret-file`, or the process's own. A file that
/// cannot be used is logged and the process's secret serves meanwhile (tokens then hold on
/// this process only).
pub fn secret_for(file: Option<&Path>) -> [u8; 32] {
    match file.map(read_secret) {
        Some(Ok(secret)) => secret,
        Some(Err(e)) => {
            tracing::error!("auth.token-secret-file {e}; tokens are signed with a secret of this process until it is fixed");
            process_secret()
        }
        None => process_secret(),
    }
}

/// The key tokens are signed with: an HMAC of the htpasswd entries under the secret.
pub fn token_key(secret: &[u8; 32], entries_digest: &[u8; 32]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), entries_digest);
    let mut key = [0u8; 32];
    key.copy_from_slice(&tag.as_ref()[..32]);
    key
}

/// Signs a token for `user` (`None`: anonymous) on `host`, granting `scopes`, valid from
/// `now`.
pub fn mint(
    key: &[u8; 32],
    host: &str,
    user: Option<&str>,
    scopes: &Scopes,
    now: SystemTime,
) -> String {
    // Rounded up, so a token lasts at least the lifetime the answer announces.
    let expiry = now
        .checked_add(TOKEN_LIFETIME)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
    let payload = format!(
        "{host}\0{}\0{expiry}\0{}",
        user.unwrap_or(""),
        scopes.encode()
    );
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), payload.as_bytes());
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    )
}

/// Checks a token for `host` at `now`: its signature (in constant time), its host and its
/// expiry. Who it was issued to and what it grants; `None` for anything else.
pub fn verify(
    key: &[u8; 32],
    token: &str,
    host: &str,
    now: SystemTime,
) -> Option<(Bearer, Scopes)> {
    let (payload, tag) = token.split_once('.')?;
    let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, key), &payload, &tag).ok()?;
    let text = String::from_utf8(payload).ok()?;
    let mut parts = text.split('\0');
    let (signed_host, user, expiry, scopes) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || signed_host != host {
        return None;
    }
    let expiry = UNIX_EPOCH.checked_add(Duration::from_secs(expiry.parse().ok()?))?;
    if now >= expiry {
        return None;
    }
    let bearer = if user.is_empty() {
        Bearer::Anonymous
    } else {
        Bearer::User(user.to_string())
    };
    Some((bearer, Scopes::decode(scopes)?))
}

/// The token endpoint's JSON answer (the fields Docker and containers/image read).
pub fn token_json(token: &str, now: SystemTime) -> String {
    serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": TOKEN_LIFETIME.as_secs(),
        "issued_at": humantime::format_rfc3339_seconds(now).to_string(),
    })
    .to_string()
}

/// The value of an `Authorization: Bearer ...` header, if it is one.
pub fn bearer_value(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn tokens_name_their_host_user_and_expiry() {
        let now = SystemTime::now();
        let pushes = Scopes::asked("scope=repository:team-a/app:pull,push");
        let alice = mint(&KEY, "reg.test", Some("alice"), &pushes, now);
        let anonymous = mint(&KEY, "reg.test", None, &Scopes::default(), now);
        assert_eq!(
            verify(&KEY, &alice, "reg.test", now),
            Some((Bearer::User("alice".into()), pushes))
        );
        assert_eq!(
            verify(&KEY, &anonymous, "reg.test", now),
            Some((Bearer::Anonymous, Scopes::default()))
        );
        // Another host, another key, after expiry: refused.
        assert_eq!(verify(&KEY, &alice, "other.test", now), None);
        assert_eq!(verify(&[8; 32], &alice, "reg.test", now), None);
        // At a whole second, the token is valid until exactly the lifetime has passed; at a
        // fraction of one, until the next whole second after it.
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let t = mint(&KEY, "reg.test", Some("alice"), &Scopes::default(), start);
        let end = start + TOKEN_LIFETIME;
        assert!(verify(&KEY, &t, "reg.test", end - Duration::from_nanos(1)).is_some());
        assert_eq!(verify(&KEY, &t, "reg.test", end), None);
        let t = mint(
            &KEY,
            "reg.test",
            None,
            &Scopes::default(),
            start + Duration::from_millis(10),
        );
        assert!(verify(&KEY, &t, "reg.test", end + Duration::from_millis(999)).is_some());
        assert_eq!(
            verify(&KEY, &t, "reg.test", end + Duration::from_secs(1)),
            None
        );
    }

    #[test]
    fn forged_and_mangled_tokens_are_refused() {
        let now = SystemTime::now();
        let pulls = Scopes::asked("scope=repository:app:pull");
        let anonymous = mint(&KEY, "reg.test", None, &pulls, now);
        let (payload, tag) = anonymous.split_once('.').expect("two parts");
        // The anonymous payload turned into alice's, or given more scopes, with the
        // anonymous signature.
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("utf8");
        assert!(text.ends_with("\0repository:app:pull"), "{text:?}");
        for forged in [
            text.replacen("\0\0", "\0alice\0", 1),
            text.replace(":pull", ":pull,push"),
        ] {
            assert_ne!(forged, text);
            let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(forged));
            assert_eq!(verify(&KEY, &forged, "reg.test", now), None);
        }
        // A token in an older form (no scopes), validly signed: refused, so the client
        // fetches a new one.
        let signed = |payload: &str| {
            let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &KEY), payload.as_bytes());
            format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(payload),
                URL_SAFE_NO_PAD.encode(tag.as_ref())
            )
        };
        let old = signed(concat!("reg.test\0alice\0", "4102444800"));
        assert_eq!(verify(&KEY, &old, "reg.test", now), None);
        // Validly signed scopes that are not in berth's own form: refused.
        let odd = signed(concat!(
            "reg.test\0alice\0",
            "4102444800\0repository:app:push,pull"
        ));
        assert_eq!(verify(&KEY, &odd, "reg.test", now), None);
        // The same payload in berth's form is taken: the refusals above are the form's.
        let fine = signed(concat!(
            "reg.test\0alice\0",
            "4102444800\0repository:app:pull,push"
        ));
        assert!(verify(&KEY, &fine, "reg.test", now).is_some());
        for bad in [
            "",
            ".",
            "abc",
            &format!("{payload}."),
            &format!("{payload}.{tag}x"),
            &format!("{payload}x.{tag}"),
            &format!("{payload}.{tag}.{tag}"),
        ] {
            assert_eq!(verify(&KEY, bad, "reg.test", now), None, "{bad:?}");
        }
        assert_eq!(bearer_value(b"Bearer abc.def"), Some("abc.def"));
        assert_eq!(bearer_value(b"bearer  abc"), Some("abc"));
        assert_eq!(bearer_value(b"Basic abc"), None);
        assert_eq!(bearer_value(b"Bearer"), None);
    }

    #[test]
    fn keys_come_from_the_secret_and_the_entries() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(token_key(&a, &[9; 32]), token_key(&a, &[9; 32]));
        assert_ne!(
            token_key(&a, &[9; 32]),
            token_key(&b, &[9; 32]),
            "the secret"
        );
        assert_ne!(
            token_key(&a, &[9; 32]),
            token_key(&a, &[8; 32]),
            "the entries"
        );
        assert_eq!(process_secret(), process_secret());
        assert_ne!(process_secret(), [0; 32]);

        let dir = std::env::temp_dir().join(format!("berth-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("secret");
        std::fs::write(&file, "short\n").expect("write");
        let e = read_secret(&file).expect_err("too short");
        assert!(
            e.ends_with("5 bytes; a token secret needs at least 32 (e.g. `openssl rand -hex 32`)"),
            "{e}"
        );
        assert!(!e.contains("short"), "the secret is quoted: {e}");
        assert_eq!(
            secret_for(Some(&file)),
            process_secret(),
            "a bad file: the process's own"
        );
        std::fs::write(&file, format!("{}\n", "ab".repeat(32))).expect("write");
        let s1 = read_secret(&file).expect("64 hex digits");
        assert_eq!(secret_for(Some(&file)), s1);
        assert_ne!(s1, process_secret());
        assert!(read_secret(&dir.join("missing"))
            .expect_err("missing")
            .contains("cannot read"));
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn the_answer_has_what_clients_read() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let json: serde_json::Value = serde_json::from_str(&token_json("t.s", now)).expect("json");
        assert_eq!(json["token"], "t.s");
        assert_eq!(json["access_token"], "t.s");
        assert_eq!(json["expires_in"], 300);
        assert_eq!(json["issued_at"], "2027-01-15T08:00:00Z");
    }
}
