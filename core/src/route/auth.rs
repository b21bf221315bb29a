//! Who may use a route: basic auth (`auth.htpasswd`, `auth.realm`, `auth.methods`,
//! `auth.anonymous-read`, `auth.token-secret-file`, and on the registry profile the
//! repository rules `auth.repositories` with `auth.groups`, [`super::repositories`]) or
//! forward auth (`auth.forward`,
//! `auth.forward-headers`, `auth.forward-cache`) — the `auth` table as written, its
//! validation, and what the auth plugins get.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::registry::{registry_read, Action, Profile};
use super::repositories::{validate_rules, RawRule, Rule, Rules, Who};
use crate::errors::Errors;
use crate::files::FilePath;
use crate::units::parse_duration;

/// Realm sent in `WWW-Authenticate` when a route's `auth.realm` names none.
pub const DEFAULT_REALM: &str = "berth";

/// Basic auth for a route (`auth.htpasswd`, `auth.realm`, `auth.methods`,
/// `auth.anonymous-read`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthSpec {
    /// The htpasswd file (bcrypt entries).
    pub htpasswd: std::path::PathBuf,
    /// The realm named in `WWW-Authenticate`.
    pub realm: String,
    /// Which requests may go without credentials.
    pub open: OpenAccess,
    /// The file holding the secret registry tokens are signed with (routes with the token
    /// flow, [`AuthSpec::tokens`]); `None`: a secret of the process's own.
    pub token_secret_file: Option<std::path::PathBuf>,
    /// Who may pull, push and delete which repository (`auth.repositories`, registry
    /// profile); `None`: every user may do everything.
    pub repositories: Option<Rules>,
    /// The groups file the rules' `@group`s come from (`auth.groups`).
    pub groups: Option<std::path::PathBuf>,
}

impl AuthSpec {
    /// Whether the route speaks the registry token flow: with `auth.anonymous-read`, so that
    /// the Docker CLI pulls without a login, and with repository rules, so that a token
    /// carries the scopes the rules grant and the Docker CLI reports a refusal at once.
    pub fn tokens(&self) -> bool {
        speaks_tokens(&self.open, self.repositories.as_ref())
    }
}

/// Whether a route with `open` and `rules` speaks the token flow ([`AuthSpec::tokens`]).
fn speaks_tokens(open: &OpenAccess, rules: Option<&Rules>) -> bool {
    *open == OpenAccess::RegistryReads || rules.is_some()
}

/// Forward auth for a route (`auth.forward`, `auth.forward-headers`, `auth.forward-cache`):
/// an auth service (Authelia, Authentik, oauth2-proxy) decides on every request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForwardAuthSpec {
    /// The auth service's URL: `http://host:port/path`.
    pub url: String,
    /// Headers of the service's 2xx answer copied onto the upstream request (lower case);
    /// a client never sets them itself.
    pub headers: Vec<String>,
    /// How long an allowed decision is reused for the same credentials; `None`: never.
    #[serde(serialize_with = "ser_duration_opt")]
    pub cache: Option<Duration>,
}

fn ser_duration_opt<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.collect_str(&humantime::format_duration(*d)),
        None => s.serialize_none(),
    }
}

/// Which requests of an authenticated route pass without credentials (credentials that are
/// sent are checked all the same: a wrong password is a 401 whatever the request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpenAccess {
    /// None: every request needs a valid user (the default).
    Nothing,
    /// Requests whose method is one of the standard [`METHODS`], spelled exactly so, and
    /// not in this list (`auth.methods`, upper case; `GET` brings `HEAD` with it).
    MethodsOtherThan(Vec<String>),
    /// Registry reads (`auth.anonymous-read`): GET and HEAD of manifests, blobs, tag lists
    /// and the catalog, spelled as the registry API spells them. Everything else — every
    /// write, upload status, and `GET /v2/`, which `docker login` asks to see challenged —
    /// needs a valid user.
    RegistryReads,
}

/// The HTTP methods `auth.methods` may name.
pub const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

impl OpenAccess {
    /// Whether a request with `method` for `path_and_query` (as sent, not normalised) may
    /// go without credentials.
    pub fn lets_through(&self, method: &str, path_and_query: &str) -> bool {
        match self {
            OpenAccess::Nothing => false,
            // Fails closed: a method berth does not know by its exact standard name (a
            // lower-case `post`, `MKCOL`, `PURGE`) needs credentials, whatever the list says.
            OpenAccess::MethodsOtherThan(methods) => {
                METHODS.contains(&method) && !methods.iter().any(|m| m == method)
            }
            OpenAccess::RegistryReads => {
                (method == "GET" || method == "HEAD") && registry_read(path_and_query)
            }
        }
    }
}

/// A route's `auth` table as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RawAuth {
    /// Path of an htpasswd file with bcrypt entries.
    pub htpasswd: Option<FilePath>,
    /// Realm named in `WWW-Authenticate` (default `berth`).
    pub realm: Option<String>,
    /// Methods that need credentials (default: all).
    pub methods: Option<Vec<String>>,
    /// Registry profile: reads need no credentials, writes do.
    pub anonymous_read: Option<bool>,
    /// Forward auth: the URL of the auth service asked about every request.
    pub forward: Option<String>,
    /// Headers of the auth service's answer copied onto the upstream request.
    pub forward_headers: Option<Vec<String>>,
    /// How long an allowed decision is reused for the same credentials (default off).
    pub forward_cache: Option<String>,
    /// The secret registry tokens are signed with, shared by every berth serving the route.
    pub token_secret_file: Option<FilePath>,
    /// Registry profile: who may pull, push and delete which repositories; the first rule
    /// that matches the repository and the user decides.
    pub repositories: Option<Vec<RawRule>>,
    /// The same rules from a file of `[[rule]]` tables (what a container's label can name).
    pub repositories_file: Option<FilePath>,
    /// The groups file (`team-a: alice carol` lines) the rules' `@group`s come from.
    pub groups: Option<FilePath>,
}

/// Response headers of an auth service that may not be copied onto the upstream request:
/// they describe a message or a connection, not a user.
const NOT_COPIED: [&str; 11] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "te",
    "trailer",
    "expect",
];

/// The headers copied from a forward-auth answer when `auth.forward-headers` names none:
/// Authelia's (Authentik and oauth2-proxy name theirs in their documentation).
pub const FORWARD_HEADERS_DEFAULT: [&str; 4] = [
    "Remote-User",
    "Remote-Groups",
    "Remote-Name",
    "Remote-Email",
];

/// The longest `auth.forward-cache`.
pub const FORWARD_CACHE_MAX: Duration = Duration::from_secs(600);

/// `url` as error messages may show it: without user information (`//user:pass@`) and
/// without its query or fragment, which may carry secrets.
pub fn redact_url(url: &str) -> String {
    let mut shown = url.split(['?', '#']).next().unwrap_or_default().to_string();
    if url.contains(['?', '#']) {
        shown.push_str("?…");
    }
    if let Some(at) = shown.find('@') {
        let start = shown.find("://").map_or(0, |i| i + 3);
        if start <= at {
            shown.replace_range(start..=at, "…@");
        }
    }
    shown
}

/// Parses a forward-auth URL: `http://host[:port][/path][?query]`.
///
/// # Errors
/// A message naming the value otherwise.
pub fn parse_forward_url(value: &str) -> Result<String, String> {
    let shown = redact_url(value);
    let bad = |why: &str| format!("invalid auth.forward \"{shown}\": {why}");
    let uri: http::Uri = value.trim().parse().map_err(|_| {
        bad("not a URL; write e.g. \"http://authelia:9091/api/authz/forward-auth\"")
    })?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad(
                "https is not supported: reach the auth service over http on the internal \
                 network, as its documentation does",
            ))
        }
        _ => return Err(bad("expected an http:// URL")),
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(bad(
            "expected http://host[:port]/path, without user information",
        ));
    }
    Ok(value.trim().to_string())
}

impl RawAuth {
    /// Validates the `auth` table: basic auth or forward auth, never both; `key` names a
    /// key in errors.
    pub fn validate(
        &self,
        key: &dyn Fn(&str) -> String,
        errors: &mut Errors,
    ) -> (Option<AuthSpec>, Option<ForwardAuthSpec>) {
        if let Some(url) = &self.forward {
            return (None, self.validate_forward(url, key, errors));
        }
        for (name, set) in [
            ("auth.forward-headers", self.forward_headers.is_some()),
            ("auth.forward-cache", self.forward_cache.is_some()),
        ] {
            if set {
                errors.push(key(name), "needs auth.forward, the auth service to ask");
            }
        }
        (self.validate_basic(key, errors), None)
    }

    fn validate_forward(
        &self,
        url: &str,
        key: &dyn Fn(&str) -> String,
        errors: &mut Errors,
    ) -> Option<ForwardAuthSpec> {
        for (name, set) in [
            ("auth.htpasswd", self.htpasswd.is_some()),
            ("auth.realm", self.realm.is_some()),
            ("auth.methods", self.methods.is_some()),
            ("auth.anonymous-read", self.anonymous_read.is_some()),
            ("auth.token-secret-file", self.token_secret_file.is_some()),
            ("auth.repositories", self.repositories.is_some()),
            ("auth.groups", self.groups.is_some()),
        ] {
            if set {
                errors.push(
                    key(name),
                    "not with auth.forward: the auth service decides every request; keep one \
                     of the two",
                );
            }
        }
        let url = errors.check(&key("auth.forward"), parse_forward_url(url));
        let mut headers: Vec<String> = Vec::new();
        let listed = self.forward_headers.clone().unwrap_or_else(|| {
            FORWARD_HEADERS_DEFAULT
                .iter()
                .map(|h| (*h).to_string())
                .collect()
        });
        for (i, h) in listed.iter().enumerate() {
            let name = h.trim().to_ascii_lowercase();
            let path = format!("{}[{i}]", key("auth.forward-headers"));
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                errors.push(path, format!("\"{h}\" is not a header name"));
            } else if NOT_COPIED.contains(&name.as_str()) {
                errors.push(
                    path,
                    format!("\"{h}\" describes the auth service's answer, not a user; it is never copied"),
                );
            } else if !headers.contains(&name) {
                headers.push(name);
            }
        }
        let cache = match self.forward_cache.as_deref().map(str::trim) {
            None | Some("off" | "0") => Some(None),
            Some(v) => errors
                .check(
                    &key("auth.forward-cache"),
                    parse_duration(v).and_then(|d| {
                        if d > FORWARD_CACHE_MAX {
                            Err(format!(
                                "{v} is longer than 10m: a session ended at the auth service \
                                 would stay allowed that long"
                            ))
                        } else {
                            Ok(d)
                        }
                    }),
                )
                .map(|d| (!d.is_zero()).then_some(d)),
        };
        Some(ForwardAuthSpec {
            url: url?,
            headers,
            cache: cache?,
        })
    }

    fn validate_basic(
        &self,
        key: &dyn Fn(&str) -> String,
        errors: &mut Errors,
    ) -> Option<AuthSpec> {
        let realm = match self.realm.as_deref() {
            None => Some(DEFAULT_REALM.to_string()),
            Some(r) => errors.check(&key("auth.realm"), parse_realm(r)),
        };
        let open = match (&self.methods, self.anonymous_read) {
            (Some(_), Some(true)) => {
                errors.push(
                    key("auth"),
                    "methods and anonymous-read both say which requests go without \
                     credentials: keep one",
                );
                None
            }
            (_, Some(true)) => Some(OpenAccess::RegistryReads),
            (Some(methods), _) => {
                let mut upper = Vec::new();
                for (i, m) in methods.iter().enumerate() {
                    let m = m.trim().to_ascii_uppercase();
                    if METHODS.contains(&m.as_str()) {
                        if !upper.contains(&m) {
                            upper.push(m);
                        }
                    } else {
                        errors.push(
                            format!("{}[{i}]", key("auth.methods")),
                            format!(
                                "unknown method \"{m}\": expected one of {}",
                                METHODS.join(", ")
                            ),
                        );
                    }
                }
                // HEAD answers what GET would: it needs what GET needs.
                if upper.iter().any(|m| m == "GET") && !upper.iter().any(|m| m == "HEAD") {
                    upper.push("HEAD".to_string());
                }
                if methods.is_empty() {
                    errors.push(
                        key("auth.methods"),
                        "empty: no request would need credentials; remove auth to open the \
                         route, or list the methods that need a user",
                    );
                }
                Some(OpenAccess::MethodsOtherThan(upper))
            }
            (None, _) => Some(OpenAccess::Nothing),
        };
        let (repositories, groups) = self.validate_rules(open.as_ref(), key, errors);
        let tokens = speaks_tokens(
            open.as_ref().unwrap_or(&OpenAccess::Nothing),
            repositories.as_ref().and_then(Option::as_ref),
        );
        let token_secret_file = match self.token_secret_file.as_deref().map(str::trim) {
            None => Some(None),
            Some(_) if !tokens => {
                errors.push(
                    key("auth.token-secret-file"),
                    "only with auth.anonymous-read or auth.repositories, whose registry \
                     tokens it signs",
                );
                None
            }
            Some(path) if path.starts_with('/') => Some(Some(path.into())),
            Some(path) => {
                errors.push(
                    key("auth.token-secret-file"),
                    format!("\"{path}\" is not an absolute path"),
                );
                None
            }
        };
        match self.htpasswd.as_deref().map(str::trim) {
            Some(path) if path.starts_with('/') => Some(AuthSpec {
                htpasswd: path.into(),
                realm: realm?,
                open: open?,
                token_secret_file: token_secret_file?,
                repositories: repositories?,
                groups: groups?,
            }),
            Some(path) => {
                errors.push(
                    key("auth.htpasswd"),
                    format!("\"{path}\" is not an absolute path"),
                );
                None
            }
            None => {
                errors.push(
                    key("auth.htpasswd"),
                    "missing; basic auth needs the path of an htpasswd file",
                );
                None
            }
        }
    }
}

impl RawAuth {
    /// Validates `auth.repositories` and `auth.groups`: the rules, with `auth.anonymous-read`
    /// as their last rule (anonymous pulls of every repository); `@group`s only with a
    /// groups file; never with `auth.methods`. `None` in a slot: an error was recorded.
    #[allow(clippy::type_complexity)]
    fn validate_rules(
        &self,
        open: Option<&OpenAccess>,
        key: &dyn Fn(&str) -> String,
        errors: &mut Errors,
    ) -> (Option<Option<Rules>>, Option<Option<std::path::PathBuf>>) {
        let groups = match self.groups.as_deref().map(str::trim) {
            None => Some(None),
            Some(_) if self.repositories.is_none() && self.repositories_file.is_none() => {
                errors.push(
                    key("auth.groups"),
                    "only with auth.repositories, whose @group names it defines",
                );
                None
            }
            Some(path) if path.starts_with('/') => Some(Some(path.into())),
            Some(path) => {
                errors.push(
                    key("auth.groups"),
                    format!("\"{path}\" is not an absolute path"),
                );
                None
            }
        };
        let from_file;
        let file_key = |k: &str| key(&k.replacen("auth.repositories", "auth.repositories-file", 1));
        let (raw, key): (&[RawRule], &dyn Fn(&str) -> String) =
            match (&self.repositories, self.repositories_file.as_deref()) {
                (None, None) => return (Some(None), groups),
                (Some(raw), None) => (raw, key),
                (Some(_), Some(_)) => {
                    errors.push(
                        key("auth.repositories-file"),
                        "not with auth.repositories: the rules are in one place or the other",
                    );
                    return (None, groups);
                }
                (None, Some(path)) => match read_rules_file(std::path::Path::new(path)) {
                    Ok(raw) => {
                        from_file = raw;
                        (&from_file, &file_key)
                    }
                    Err(e) => {
                        errors.push(key("auth.repositories-file"), e);
                        return (None, groups);
                    }
                },
            };
        if matches!(open, Some(OpenAccess::MethodsOtherThan(_))) {
            errors.push(
                key("auth.repositories"),
                "not with auth.methods: the rules say what each user may do",
            );
            return (None, groups);
        }
        let Some(mut rules) = validate_rules(raw, key, errors) else {
            return (None, groups);
        };
        let names_group = rules
            .0
            .iter()
            .flat_map(|r| &r.users)
            .any(|w| matches!(w, Who::Group(_)));
        if names_group && self.groups.is_none() {
            errors.push(
                key("auth.repositories"),
                "a rule names a @group: auth.groups must name the groups file",
            );
            return (None, groups);
        }
        if open == Some(&OpenAccess::RegistryReads) {
            // A rule that refuses pulls to users, and not to requests without credentials,
            // would be walked around by not logging in.
            let mut walked_around = false;
            for (i, rule) in rules.0.iter().enumerate() {
                if !rule.allow.contains(&Action::Pull) && !rule.users.contains(&Who::Anonymous) {
                    errors.push(
                        format!("{}[{i}]", key("auth.repositories")),
                        "refuses pulls to users, but auth.anonymous-read lets requests without \
                         credentials pull every repository: name \"anonymous\" in this rule \
                         too, or replace auth.anonymous-read with a rule naming anonymous for \
                         what is public",
                    );
                    walked_around = true;
                }
            }
            if walked_around {
                return (None, groups);
            }
            rules.0.push(Rule::anonymous_pulls());
        }
        (Some(Some(rules)), groups)
    }
}

/// The largest `auth.repositories-file` berth reads.
const RULES_FILE_LIMIT: u64 = 1 << 20;

/// A file of repository rules: `[[rule]]` tables, each as an entry of `auth.repositories`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<RawRule>,
}

/// Reads an `auth.repositories-file`.
///
/// # Errors
/// When the file cannot be read or is not a list of rules, naming the file.
fn read_rules_file(path: &std::path::Path) -> Result<Vec<RawRule>, String> {
    let bytes = crate::files::read_regular(path, RULES_FILE_LIMIT)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let text =
        String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
    let file: RulesFile = toml::from_str(&text).map_err(|e| {
        format!(
            "{}: not a list of [[rule]] tables: {}",
            path.display(),
            crate::logging::shown(e.message(), 256)
        )
    })?;
    if file.rule.is_empty() {
        return Err(format!(
            "{}: holds no [[rule]]; a route with no rule lets nobody do anything",
            path.display()
        ));
    }
    Ok(file.rule)
}

/// A realm is quoted in `WWW-Authenticate`: printable ASCII without quotes or backslashes.
///
/// # Errors
/// A message naming the value otherwise.
pub fn parse_realm(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
    if ok {
        Ok(value.to_string())
    } else {
        Err(format!(
            "invalid realm \"{}\": use up to 128 printable ASCII characters without quotes or backslashes",
            value.escape_debug()
        ))
    }
}

/// What the registry profile, or its absence, demands of a route's auth: the registry
/// profile opens reads with `auth.anonymous-read`, never with `auth.methods`, and
/// `auth.anonymous-read` is only for it.
pub fn check_profile(
    profile: Option<Profile>,
    auth: Option<&AuthSpec>,
    key: &dyn Fn(&str) -> String,
    errors: &mut Errors,
) {
    let open = auth.map(|a| &a.open);
    if profile == Some(Profile::Registry) && matches!(open, Some(OpenAccess::MethodsOtherThan(_))) {
        errors.push(
            key("auth.methods"),
            "not on the registry profile: an open GET /v2/ tells docker login that no \
             credentials are needed, and pushes then fail; use auth.anonymous-read",
        );
    }
    if auth.is_some_and(|a| a.repositories.is_some()) && profile != Some(Profile::Registry) {
        errors.push(
            key("auth.repositories"),
            "only for profile = \"registry\": the rules are about registry repositories",
        );
    }
    if open == Some(&OpenAccess::RegistryReads) && profile != Some(Profile::Registry) {
        errors.push(
            key("auth.anonymous-read"),
            "only for profile = \"registry\": it knows which registry requests are reads; \
             elsewhere, list the methods that need credentials in auth.methods",
        );
    }
}
