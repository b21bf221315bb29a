//! The registry profile (`profile = "registry"`): its presets, and the registry API's
//! grammar, which decides what a registry read is (what it demands of the route's auth is
//! [`super::auth::check_profile`]).

use std::time::Duration;

use serde::Serialize;

use super::settings::RouteSettings;

/// A preset of settings for a kind of upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// A Docker registry (distribution): unlimited body, 900 s read timeout, HTTP/1.1 upstream,
    /// `Docker-Distribution-Api-Version` on berth's own responses, `Location` rewriting.
    Registry,
}

impl Profile {
    /// Parses a route's `profile`: `registry`, or nothing (absent or empty).
    ///
    /// # Errors
    /// A message naming any other value.
    pub fn parse(value: Option<&str>) -> Result<Option<Profile>, String> {
        match value.map(str::trim) {
            None | Some("") => Ok(None),
            Some("registry") => Ok(Some(Profile::Registry)),
            Some(other) => Err(format!(
                "unknown profile \"{other}\": expected \"registry\""
            )),
        }
    }

    /// Applies the profile's presets to settings that came from `[defaults]`.
    pub fn preset(self, settings: &mut RouteSettings) {
        match self {
            Profile::Registry => {
                settings.max_body = 0;
                settings.read_timeout = Duration::from_secs(900);
                // A layer may crawl over a poor link: the seed recipe's fourth failure.
                settings.min_body_rate = 0;
            }
        }
    }
}

/// Whether `path_and_query` is a registry read spelled exactly as the distribution API
/// does: `/v2/_catalog`, `/v2/<name>/tags/list`, `/v2/<name>/manifests/<tag or digest>`,
/// `/v2/<name>/blobs/<digest>`, `/v2/<name>/referrers/<digest>` (OCI 1.1). Any other
/// spelling (escapes, dot segments, doubled slashes, upload URLs) is not, so no path trick
/// turns a request into an anonymous one.
pub fn registry_read(path_and_query: &str) -> bool {
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(p, _)| p);
    let Some(rest) = path.strip_prefix("/v2/") else {
        return false;
    };
    if rest == "_catalog" {
        return true;
    }
    let ends = |marker: &str, reference: fn(&str) -> bool| {
        rest.rsplit_once(marker)
            .is_some_and(|(name, r)| repository_name(name) && reference(r))
    };
    rest.strip_suffix("/tags/list").is_some_and(repository_name)
        || ends("/manifests/", |r| tag(r) || digest(r))
        || ends("/blobs/", digest)
        || ends("/referrers/", digest)
}

/// A repository name as the distribution spec writes it: components of `[a-z0-9]+` joined
/// by `.`, `_`, `__` or a run of `-`, separated by `/`, at most 255 characters.
fn repository_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.split('/').all(name_component)
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn name_component(c: &str) -> bool {
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let b = c.as_bytes();
    let mut i = 0;
    loop {
        // A run of letters and digits.
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        // One separator: `.`, `_`, `__` or any run of `-`.
        match b[i] {
            b'.' => i += 1,
            b'_' => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && t.bytes()
            .all(|x| x.is_ascii_alphanumeric() || b"_.-".contains(&x))
}

/// A digest as the OCI image spec writes it: `algorithm:encoded` (`sha256:` and 64 hex
/// digits, or another algorithm), the encoded part at least 32 characters.
fn digest(d: &str) -> bool {
    let Some((algorithm, encoded)) = d.split_once(':') else {
        return false;
    };
    // `[a-z0-9]+([+._-][a-z0-9]+)*`: components joined by one separator each.
    algorithm.split(['+', '.', '_', '-']).all(|part| {
        !part.is_empty()
            && part
                .bytes()
                .all(|x| x.is_ascii_lowercase() || x.is_ascii_digit())
    }) && encoded.len() >= 32
        && encoded
            .bytes()
            .all(|x| x.is_ascii_alphanumeric() || b"=_-".contains(&x))
}
