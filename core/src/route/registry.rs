//! The registry profile (`profile = "registry"`): its presets, and the registry API's
//! grammar — what a request does to which repository ([`access`]), which decides what a
//! registry read is and what the repository rules judge ([`super::repositories`]); what the
//! profile demands of the route's auth is [`super::auth::check_profile`].

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
                // Layers are compressed already, and digests name the bytes as stored.
                settings.compress = false;
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
    matches!(
        access("GET", path_and_query),
        Access::Catalog
            | Access::Repository {
                action: Action::Pull,
                ..
            }
    )
}

/// What a registry request does to its repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// GET and HEAD of manifests, blobs, tags and referrers.
    Pull,
    /// Uploads (POST, PATCH and PUT, their status and cancellation) and manifest PUTs.
    Push,
    /// DELETE of manifests and blobs.
    Delete,
}

impl Action {
    /// All of them, in the order they are written.
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    /// `pull`, `push` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    /// The action named `text`, if any.
    pub fn parse(text: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

/// What a request does, in the registry API's terms, read from its method and its path and
/// query exactly as sent: a spelling the API does not use (escapes, dot segments, doubled
/// slashes, a method it does not take there) is [`Access::Unknown`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// `GET` or `HEAD /v2/`: the API version check `docker login` makes.
    Base,
    /// `GET` or `HEAD /v2/_catalog`: every repository's name.
    Catalog,
    /// A request about one repository.
    Repository {
        /// The repository.
        name: String,
        /// What it does there.
        action: Action,
        /// A cross-repository blob mount's source (`POST .../blobs/uploads/?from=<name>`).
        mount_from: Option<String>,
    },
    /// Anything else.
    Unknown,
}

/// Reads `method` and `path_and_query` as the distribution API routes them: the path picks
/// the first of its routes whose shape it has (tags, manifests, blobs, upload start, upload
/// chunk, referrers — the order distribution registers them in; a repository name may itself
/// hold `manifests` or `blobs`), then the method picks what the request does there.
pub fn access(method: &str, path_and_query: &str) -> Access {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let read = matches!(method, "GET" | "HEAD");
    if path == "/v2/" {
        return if read { Access::Base } else { Access::Unknown };
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Access::Unknown;
    };
    if rest == "_catalog" {
        return if read {
            Access::Catalog
        } else {
            Access::Unknown
        };
    }
    let Some((route, name)) = registry_route(rest) else {
        return Access::Unknown;
    };
    let action = match (route, method) {
        (Route::Tags | Route::Referrers, "GET" | "HEAD") => Action::Pull,
        (Route::Manifest, "GET" | "HEAD") | (Route::Blob, "GET" | "HEAD") => Action::Pull,
        (Route::Manifest, "PUT") => Action::Push,
        (Route::Manifest | Route::Blob, "DELETE") => Action::Delete,
        (Route::UploadStart, "POST") => Action::Push,
        (Route::UploadChunk, "GET" | "HEAD" | "PATCH" | "PUT" | "DELETE") => Action::Push,
        _ => return Access::Unknown,
    };
    let mount_from = match (route, query.map(mount_source)) {
        (Route::UploadStart, Some(Err(()))) => return Access::Unknown,
        (Route::UploadStart, Some(Ok(from))) => from,
        _ => None,
    };
    Access::Repository {
        name: name.to_string(),
        action,
        mount_from,
    }
}

/// A request the registry cache may answer: a `GET` or `HEAD` of a blob or a manifest by its
/// digest (`sha256:<64 lowercase hex>`), with no query, read as the distribution API routes
/// it (a repository name may itself hold `manifests` or `blobs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByDigest<'a> {
    /// The repository.
    pub repository: &'a str,
    /// `sha256:<hex>`.
    pub digest: &'a str,
    /// A manifest (else a blob).
    pub manifest: bool,
}

/// The request as [`ByDigest`], when it is one.
pub fn by_digest<'a>(method: &str, path_and_query: &'a str) -> Option<ByDigest<'a>> {
    if !matches!(method, "GET" | "HEAD") || path_and_query.contains('?') {
        return None;
    }
    let rest = path_and_query.strip_prefix("/v2/")?;
    let (route, repository) = registry_route(rest)?;
    let digest = rest.rsplit_once('/').map(|(_, d)| d)?;
    let hex = digest.strip_prefix("sha256:")?;
    let sha256 = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match route {
        Route::Manifest | Route::Blob if sha256 => Some(ByDigest {
            repository,
            digest,
            manifest: route == Route::Manifest,
        }),
        _ => None,
    }
}

/// The routes of the distribution API under `/v2/<name>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Tags,
    Manifest,
    Blob,
    UploadStart,
    UploadChunk,
    Referrers,
}

/// The first route `rest` (the path after `/v2/`) has the shape of, with its repository.
fn registry_route(rest: &str) -> Option<(Route, &str)> {
    fn named(name: &str) -> Option<&str> {
        repository_name(name).then_some(name)
    }
    let split = |marker: &str, last: fn(&str) -> bool| {
        rest.rsplit_once(marker)
            .filter(|(_, l)| last(l))
            .and_then(|(name, _)| named(name))
    };
    if let Some(name) = rest.strip_suffix("/tags/list").and_then(named) {
        return Some((Route::Tags, name));
    }
    if let Some(name) = split("/manifests/", |r| tag(r) || digest(r)) {
        return Some((Route::Manifest, name));
    }
    if let Some(name) = split("/blobs/", digest) {
        return Some((Route::Blob, name));
    }
    if let Some(name) = rest.strip_suffix("/blobs/uploads/").and_then(named) {
        return Some((Route::UploadStart, name));
    }
    if let Some(name) = split("/blobs/uploads/", upload_id) {
        return Some((Route::UploadChunk, name));
    }
    split("/referrers/", digest).map(|name| (Route::Referrers, name))
}

/// An upload's id as distribution's route takes it: `[a-zA-Z0-9-_.=]+`.
fn upload_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 512
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.=".contains(&b))
}

/// The `from` of an upload's query, read as Go's `url.ParseQuery` reads it (names and
/// values percent-decoded, `+` a space): `Ok(None)` without one; `Err` when it cannot be
/// read one way only — named twice, a `;` (which Go refuses), a bad escape, or a value
/// that is not a repository name.
fn mount_source(query: &str) -> Result<Option<String>, ()> {
    if query.contains(';') {
        return Err(());
    }
    let mut from = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if form_decode(k).ok_or(())? != "from" {
            continue;
        }
        if from.is_some() {
            return Err(());
        }
        let name = form_decode(v).ok_or(())?;
        if !repository_name(&name) {
            return Err(());
        }
        from = Some(name);
    }
    Ok(from)
}

/// Percent-decoding with `+` as a space; `None` for a bad escape or bytes that are not
/// UTF-8.
pub(super) fn form_decode(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |x: u8| (x as char).to_digit(16);
                let (hi, lo) = (hex(*b.get(i + 1)?)?, hex(*b.get(i + 2)?)?);
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A repository name as the distribution spec writes it: components of `[a-z0-9]+` joined
/// by `.`, `_`, `__` or a run of `-`, separated by `/`, at most 255 characters.
pub fn repository_name(name: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn repo(name: &str, action: Action) -> Access {
        Access::Repository {
            name: name.into(),
            action,
            mount_from: None,
        }
    }

    #[test]
    fn every_request_of_the_api_is_read_as_distribution_routes_it() {
        let cases: Vec<(&str, String, Access)> = vec![
            ("GET", "/v2/".into(), Access::Base),
            ("HEAD", "/v2/".into(), Access::Base),
            ("POST", "/v2/".into(), Access::Unknown),
            ("GET", "/v2/_catalog?n=10".into(), Access::Catalog),
            ("GET", "/v2/a/b/tags/list".into(), repo("a/b", Action::Pull)),
            (
                "GET",
                "/v2/a/manifests/latest".into(),
                repo("a", Action::Pull),
            ),
            (
                "HEAD",
                format!("/v2/a/manifests/{D}"),
                repo("a", Action::Pull),
            ),
            ("PUT", "/v2/a/manifests/v1".into(), repo("a", Action::Push)),
            (
                "DELETE",
                format!("/v2/a/manifests/{D}"),
                repo("a", Action::Delete),
            ),
            ("GET", format!("/v2/a/blobs/{D}"), repo("a", Action::Pull)),
            (
                "DELETE",
                format!("/v2/a/blobs/{D}"),
                repo("a", Action::Delete),
            ),
            ("PUT", format!("/v2/a/blobs/{D}"), Access::Unknown),
            (
                "POST",
                "/v2/a/blobs/uploads/".into(),
                repo("a", Action::Push),
            ),
            ("GET", "/v2/a/blobs/uploads/".into(), Access::Unknown),
            (
                "PATCH",
                "/v2/a/blobs/uploads/3f-9c_1.x=".into(),
                repo("a", Action::Push),
            ),
            (
                "PUT",
                format!("/v2/a/blobs/uploads/u1?digest={D}"),
                repo("a", Action::Push),
            ),
            (
                "GET",
                "/v2/a/blobs/uploads/u1".into(),
                repo("a", Action::Push),
            ),
            (
                "DELETE",
                "/v2/a/blobs/uploads/u1".into(),
                repo("a", Action::Push),
            ),
            (
                "GET",
                format!("/v2/a/referrers/{D}"),
                repo("a", Action::Pull),
            ),
            // A repository's name may hold the words of the routes.
            (
                "GET",
                "/v2/a/blobs/uploads/b/manifests/latest".into(),
                repo("a/blobs/uploads/b", Action::Pull),
            ),
            (
                "GET",
                format!("/v2/a/manifests/x/blobs/{D}"),
                repo("a/manifests/x", Action::Pull),
            ),
            // Spellings the API does not use.
            ("GET", "/v2/A/manifests/latest".into(), Access::Unknown),
            ("GET", "/v2/a%2Fb/manifests/latest".into(), Access::Unknown),
            ("GET", "/v2/a//b/manifests/latest".into(), Access::Unknown),
            ("GET", "/v2/a/../b/manifests/latest".into(), Access::Unknown),
            ("GET", "/v2/a/manifests/".into(), Access::Unknown),
            ("GET", "/v2/a/manifests/a/b".into(), Access::Unknown),
            ("GET", "/v2/a/blobs/uploads/u/1".into(), Access::Unknown),
            ("GET", "/v2/a/blobs/uploads/u~1".into(), Access::Unknown),
            // distribution starts an upload (a mount too) on POST to an upload's URL: never
            // a push without its mount read.
            ("POST", "/v2/a/blobs/uploads/u1".into(), Access::Unknown),
            ("get", "/v2/a/manifests/latest".into(), Access::Unknown),
            ("OPTIONS", "/v2/a/manifests/latest".into(), Access::Unknown),
            ("GET", "/v2".into(), Access::Unknown),
            ("GET", "/v1/a/manifests/latest".into(), Access::Unknown),
            ("GET", "/".into(), Access::Unknown),
        ];
        for (method, path, expected) in cases {
            assert_eq!(access(method, &path), expected, "{method} {path}");
        }
    }

    #[test]
    fn a_mount_names_its_source_as_go_reads_the_query() {
        let mount = |query: &str| access("POST", &format!("/v2/a/blobs/uploads/?{query}"));
        let from = |name: &str| Access::Repository {
            name: "a".into(),
            action: Action::Push,
            mount_from: Some(name.into()),
        };
        assert_eq!(mount(&format!("mount={D}&from=b/c")), from("b/c"));
        assert_eq!(mount(&format!("from=b%2Fc&mount={D}")), from("b/c"));
        // The name of the parameter escaped: Go decodes names too.
        assert_eq!(mount("fr%6Fm=secret"), from("secret"));
        assert_eq!(mount("digest=x"), repo("a", Action::Push));
        // Read two ways, or not a repository: refused.
        for bad in [
            "from=b&from=c",
            "from=b;x=1",
            "from=B",
            "from=b%2",
            "from=b%+f",
            "from=b+c",
            "from=%ff",
            "from=",
        ] {
            assert_eq!(mount(bad), Access::Unknown, "{bad}");
        }
    }

    #[test]
    fn reads_are_what_anonymous_read_opens() {
        assert!(registry_read("/v2/_catalog"));
        assert!(registry_read(&format!("/v2/a/blobs/{D}")));
        assert!(registry_read("/v2/a/tags/list?n=1"));
        assert!(!registry_read("/v2/"));
        assert!(!registry_read("/v2/a/blobs/uploads/u1"));
        assert!(!registry_read("/v2/a/blobs/uploads/"));
    }

    #[test]
    fn by_digest_takes_blobs_and_manifests_named_by_sha256_only() {
        let hex = "0123456789abcdef".repeat(4);
        let d = format!("sha256:{hex}");
        let got = |method: &str, path: &str| {
            by_digest(method, path)
                .map(|b| (b.repository.to_string(), b.digest.to_string(), b.manifest))
        };
        assert_eq!(
            got("GET", &format!("/v2/a/b/blobs/{d}")),
            Some(("a/b".into(), d.clone(), false))
        );
        assert_eq!(
            got("HEAD", &format!("/v2/a/manifests/{d}")),
            Some(("a".into(), d.clone(), true))
        );
        // A repository name that holds "blobs": routed as distribution routes it.
        assert_eq!(
            got("GET", &format!("/v2/x/blobs/y/manifests/{d}")),
            Some(("x/blobs/y".into(), d.clone(), true))
        );
        let upper = format!("sha256:{}", hex.to_uppercase());
        for (method, path) in [
            ("PUT", format!("/v2/a/manifests/{d}")),
            ("DELETE", format!("/v2/a/blobs/{d}")),
            ("GET", "/v2/a/manifests/latest".to_string()),
            ("GET", format!("/v2/a/blobs/{d}?x=1")),
            ("GET", format!("/v2/a/blobs/{upper}")),
            ("GET", format!("/v2/a/blobs/sha512:{hex}{hex}")),
            ("GET", format!("/v2/a/blobs/sha256:{}", &hex[1..])),
            ("GET", format!("/v2/A/blobs/{d}")),
            ("GET", format!("/v2/a/blobs/uploads/{d}")),
            ("GET", format!("/v2/a/referrers/{d}")),
            ("GET", format!("/v3/a/blobs/{d}")),
        ] {
            assert_eq!(got(method, &path), None, "{method} {path}");
        }
    }
}
