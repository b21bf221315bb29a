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
//! passes only where reads are open); a user's token counts as that user's login.
//!
//! A token is `base64url(host NUL user NUL expiry) "." base64url(HMAC-SHA256)`, valid for
//! [`TOKEN_LIFETIME`]. The key is derived from the htpasswd file's entries
//! ([`super::Htpasswd::token_key`]): every berth that reads the same file — the edges of a
//! Swarm, the process after an upgrade — accepts the others' tokens, and a change of the
//! file ends every token it signed. A token also names its host and is refused elsewhere,
//! and a user's token is refused once the user is gone from the file.
//!
//! Basic credentials on the registry requests themselves keep working (curl, scripts).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;

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

/// Signs a token for `user` (`None`: anonymous) on `host`, valid from `now`.
pub fn mint(key: &[u8; 32], host: &str, user: Option<&str>, now: SystemTime) -> String {
    let expiry = now
        .checked_add(TOKEN_LIFETIME)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let payload = format!("{host}\0{}\0{expiry}", user.unwrap_or(""));
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), payload.as_bytes());
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    )
}

/// Checks a token for `host` at `now`: its signature (in constant time), its host and its
/// expiry. `None` for anything else.
pub fn verify(key: &[u8; 32], token: &str, host: &str, now: SystemTime) -> Option<Bearer> {
    let (payload, tag) = token.split_once('.')?;
    let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, key), &payload, &tag).ok()?;
    let text = String::from_utf8(payload).ok()?;
    let mut parts = text.split('\0');
    let (signed_host, user, expiry) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || signed_host != host {
        return None;
    }
    let expiry = UNIX_EPOCH.checked_add(Duration::from_secs(expiry.parse().ok()?))?;
    if now >= expiry {
        return None;
    }
    Some(if user.is_empty() {
        Bearer::Anonymous
    } else {
        Bearer::User(user.to_string())
    })
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
        let alice = mint(&KEY, "reg.test", Some("alice"), now);
        let anonymous = mint(&KEY, "reg.test", None, now);
        assert_eq!(
            verify(&KEY, &alice, "reg.test", now),
            Some(Bearer::User("alice".into()))
        );
        assert_eq!(
            verify(&KEY, &anonymous, "reg.test", now),
            Some(Bearer::Anonymous)
        );
        // Another host, another key, after expiry: refused.
        assert_eq!(verify(&KEY, &alice, "other.test", now), None);
        assert_eq!(verify(&[8; 32], &alice, "reg.test", now), None);
        let later = now + TOKEN_LIFETIME;
        assert_eq!(verify(&KEY, &alice, "reg.test", later), None);
        assert!(verify(&KEY, &alice, "reg.test", later - Duration::from_secs(2)).is_some());
    }

    #[test]
    fn forged_and_mangled_tokens_are_refused() {
        let now = SystemTime::now();
        let anonymous = mint(&KEY, "reg.test", None, now);
        let (payload, tag) = anonymous.split_once('.').expect("two parts");
        // The anonymous payload turned into alice's, with the anonymous signature.
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("utf8");
        let forged = text.replace("\0\0", "\0alice\0");
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(forged));
        assert_eq!(verify(&KEY, &forged, "reg.test", now), None);
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
    fn the_answer_has_what_clients_read() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let json: serde_json::Value = serde_json::from_str(&token_json("t.s", now)).expect("json");
        assert_eq!(json["token"], "t.s");
        assert_eq!(json["access_token"], "t.s");
        assert_eq!(json["expires_in"], 300);
        assert_eq!(json["issued_at"], "2027-01-15T08:00:00Z");
    }
}
