//! `[defaults]` and `[[route]]`: the per-route settings as written, and their conversion into
//! validated [`RouteSpec`]s. Docker labels go through the same [`RawRoute::validate`].
//!
//! ```toml
//! [[route]]
//! host = "registry.example.com"
//! upstreams = ["127.0.0.1:5000"]
//! profile = "registry"
//! auth.htpasswd = "/etc/berth/htpasswd"
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::errors::Errors;
use super::units::{check_ca_file, parse_duration, parse_size};
use crate::route::{
    AuthSpec, Challenge, ForwardAuthSpec, HostPattern, OpenAccess, Profile, RateLimit,
    RouteSettings, RouteSource, RouteSpec, Upstream, UpstreamProto, UpstreamTls, METHODS,
};

/// Realm sent in `WWW-Authenticate` when a route's `auth.realm` names none.
pub const DEFAULT_REALM: &str = "berth";

/// The per-route settings as written, in `[defaults]` or in a `[[route]]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RawSettings {
    /// `redirect`, `noredirect`, `nohttp` or `nohttps`.
    pub https: Option<String>,
    /// `Strict-Transport-Security` value, or `off`.
    pub hsts: Option<String>,
    /// Largest request body (`0` = unlimited).
    pub max_body: Option<String>,
    /// Upstream connect timeout.
    pub connect_timeout: Option<String>,
    /// Idle time allowed between reads.
    pub read_timeout: Option<String>,
    /// Time a write may block.
    pub write_timeout: Option<String>,
    /// Slowest average a request body may arrive at, after [`BODY_RATE_GRACE`].
    pub min_body_rate: Option<String>,
}

/// A `[[route]]` as written (or as assembled from a container's labels).
///
/// The settings keys repeat those of [`RawSettings`] rather than `#[serde(flatten)]` them:
/// with flatten, serde hands unknown keys to the flattened struct and drops them there, so
/// `serde_ignored` would never report a typo in a route.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RawRoute {
    /// Host pattern.
    pub host: Option<String>,
    /// Path prefix (default `/`).
    pub path: Option<String>,
    /// Upstream socket addresses.
    pub upstreams: Vec<String>,
    /// `http` (default) or `https`.
    pub proto: Option<String>,
    /// Optional preset: `registry`.
    pub profile: Option<String>,
    /// Certificate (file name stem in certs-dir) to serve instead of the host's own.
    pub cert_name: Option<String>,
    /// Extra CA certificates (PEM file) for verifying `https` upstreams.
    pub upstream_ca_file: Option<String>,
    /// SNI (and verified name) for `https` upstreams.
    pub upstream_sni: Option<String>,
    /// Accept any upstream certificate.
    pub dangerous_skip_verify: Option<bool>,
    /// Client CIDRs allowed; others get 403.
    pub allow: Option<Vec<String>>,
    /// Basic auth (`auth.htpasswd`, `auth.realm`, ...) or forward auth (`auth.forward`).
    pub auth: Option<RawAuth>,
    /// Requests per client: `"20r/s"`, `"100r/m"`.
    pub rate_limit: Option<String>,
    /// Requests a client may send at once (default: the rate's count).
    pub rate_burst: Option<u32>,
    /// berth-acme obtains and renews a certificate for this host.
    pub acme: Option<bool>,
    /// `http-01` or `dns-01`: how berth-acme proves the host.
    pub acme_challenge: Option<String>,
    /// `redirect`, `noredirect`, `nohttp` or `nohttps`.
    pub https: Option<String>,
    /// `Strict-Transport-Security` value, or `off`.
    pub hsts: Option<String>,
    /// Largest request body (`0` = unlimited).
    pub max_body: Option<String>,
    /// Upstream connect timeout.
    pub connect_timeout: Option<String>,
    /// Idle time allowed between reads.
    pub read_timeout: Option<String>,
    /// Time a write may block.
    pub write_timeout: Option<String>,
    /// Slowest average a request body may arrive at, after [`BODY_RATE_GRACE`].
    pub min_body_rate: Option<String>,
}

/// A route's `auth` table as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RawAuth {
    /// Path of an htpasswd file with bcrypt entries.
    pub htpasswd: Option<String>,
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
    pub token_secret_file: Option<String>,
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
    /// Validates the `auth` table: basic auth or forward auth, never both.
    fn validate(
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
        let token_secret_file = match self.token_secret_file.as_deref().map(str::trim) {
            None => Some(None),
            Some(_) if open.as_ref() != Some(&OpenAccess::RegistryReads) => {
                errors.push(
                    key("auth.token-secret-file"),
                    "only with auth.anonymous-read, whose registry tokens it signs",
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

/// Built-in values of the `[defaults]` keys.
pub fn builtin_defaults() -> RouteSettings {
    RouteSettings {
        https: crate::route::HttpsMode::Redirect,
        hsts: Some(http::HeaderValue::from_static("max-age=31536000")),
        max_body: 0,
        connect_timeout: Duration::from_secs(10),
        read_timeout: Duration::from_secs(900),
        write_timeout: Duration::from_secs(900),
        min_body_rate: DEFAULT_MIN_BODY_RATE,
    }
}

/// `min-body-rate` when `[defaults]` sets none: Apache's `mod_reqtimeout` default, 500 bytes
/// a second, a tenth of what a poor mobile link carries.
pub const DEFAULT_MIN_BODY_RATE: u64 = 500;

/// How long a request body may take before `min-body-rate` applies (also the longest a client
/// may wait before its first body byte): Apache's `mod_reqtimeout` grace for bodies.
pub const BODY_RATE_GRACE: Duration = Duration::from_secs(20);

/// Parses a byte rate: `500B/s`, `1KiB/s`, or `0` (no minimum).
///
/// # Errors
/// A message naming the value otherwise.
pub fn parse_byte_rate(value: &str) -> Result<u64, String> {
    let v = value.trim();
    if v == "0" {
        return Ok(0);
    }
    v.strip_suffix("/s")
        .and_then(|size| parse_size(size).ok())
        .ok_or_else(|| {
            format!(
                "invalid rate \"{value}\": write e.g. \"500B/s\", \"1KiB/s\" or \"0\" (no minimum)"
            )
        })
}

/// Parses an HSTS setting: `off`, or a `Strict-Transport-Security` value that starts with
/// `max-age=<seconds>`.
///
/// # Errors
/// A message naming the value when it is neither.
pub fn parse_hsts(value: &str) -> Result<Option<http::HeaderValue>, String> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let max_age_ok = v
        .strip_prefix("max-age=")
        .map(|rest| rest.split(';').next().unwrap_or("").trim())
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if !max_age_ok {
        return Err(format!(
            "invalid hsts \"{value}\": expected \"off\" or e.g. \"max-age=31536000; includeSubDomains\""
        ));
    }
    http::HeaderValue::from_str(v)
        .map(Some)
        .map_err(|_| format!("invalid hsts \"{value}\": not a valid header value"))
}

/// Checks a certificate name: the stem of `<name>.crt` in certs-dir, so a host-like name
/// without path separators.
///
/// # Errors
/// Returns a message naming the value when it could not be a file stem in certs-dir.
pub fn parse_cert_name(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && !value.starts_with('.')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if ok {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(format!(
            "invalid cert-name \"{value}\": expected a name like \"example.com\" (the stem of example.com.crt)"
        ))
    }
}

/// Parses a CIDR (`10.0.0.0/8`) or a single address (`10.1.2.3`, taken as `/32` or `/128`).
///
/// # Errors
/// Returns a message naming the value when it is neither.
pub fn parse_cidr(value: &str) -> Result<IpNet, String> {
    let v = value.trim();
    v.parse::<IpNet>()
        .or_else(|_| v.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!("invalid CIDR \"{value}\"; write e.g. \"10.0.0.0/8\" or \"192.0.2.7\"")
        })
}

impl RawSettings {
    /// Overlays the keys that are set onto `base`, recording bad values under `prefix`.
    pub fn apply(&self, base: &RouteSettings, prefix: &str, errors: &mut Errors) -> RouteSettings {
        let mut s = base.clone();
        let key = |k: &str| format!("{prefix}.{k}");
        if let Some(v) = &self.https {
            if let Some(mode) = errors.check(&key("https"), crate::route::HttpsMode::parse(v)) {
                s.https = mode;
            }
        }
        if let Some(v) = &self.hsts {
            if let Some(h) = errors.check(&key("hsts"), parse_hsts(v)) {
                s.hsts = h;
            }
        }
        if let Some(v) = &self.max_body {
            if let Some(n) = errors.check(&key("max-body"), parse_size(v)) {
                s.max_body = n;
            }
        }
        for (name, value, slot) in [
            (
                "connect-timeout",
                &self.connect_timeout,
                &mut s.connect_timeout,
            ),
            ("read-timeout", &self.read_timeout, &mut s.read_timeout),
            ("write-timeout", &self.write_timeout, &mut s.write_timeout),
        ] {
            if let Some(v) = value {
                if let Some(d) = errors.check(&key(name), parse_duration(v)) {
                    *slot = d;
                }
            }
        }
        if let Some(v) = &self.min_body_rate {
            if let Some(n) = errors.check(&key("min-body-rate"), parse_byte_rate(v)) {
                s.min_body_rate = n;
            }
        }
        s
    }
}

/// Applies a profile's presets to settings that came from `[defaults]`.
fn apply_profile(profile: Profile, settings: &mut RouteSettings) {
    match profile {
        Profile::Registry => {
            settings.max_body = 0;
            settings.read_timeout = Duration::from_secs(900);
            // A layer may crawl over a poor link: the seed recipe's fourth failure.
            settings.min_body_rate = 0;
        }
    }
}

impl RawRoute {
    fn settings(&self) -> RawSettings {
        RawSettings {
            https: self.https.clone(),
            hsts: self.hsts.clone(),
            max_body: self.max_body.clone(),
            connect_timeout: self.connect_timeout.clone(),
            read_timeout: self.read_timeout.clone(),
            write_timeout: self.write_timeout.clone(),
            min_body_rate: self.min_body_rate.clone(),
        }
    }

    fn upstream_tls(&self, prefix: &str, proto: UpstreamProto, errors: &mut Errors) -> UpstreamTls {
        let key = |k: &str| format!("{prefix}.{k}");
        let set = self.upstream_ca_file.is_some()
            || self.upstream_sni.is_some()
            || self.dangerous_skip_verify.is_some();
        if set && proto != UpstreamProto::Https {
            errors.push(
                key("proto"),
                "upstream-ca-file, upstream-sni and dangerous-skip-verify need proto = \"https\"",
            );
        }
        let ca_file = self.upstream_ca_file.as_deref().and_then(|path| {
            errors
                .check(&key("upstream-ca-file"), check_ca_file(path))
                .map(|()| std::path::PathBuf::from(path))
        });
        let sni = self.upstream_sni.as_deref().and_then(|name| {
            errors.check(
                &key("upstream-sni"),
                crate::route::host_of(name)
                    .filter(|h| !h.contains(':') && !h.starts_with('['))
                    .ok_or_else(|| {
                        format!("invalid upstream-sni \"{name}\": expected a host name")
                    }),
            )
        });
        UpstreamTls {
            ca_file,
            sni,
            dangerous_skip_verify: self.dangerous_skip_verify.unwrap_or(false),
        }
    }

    /// Converts into a validated [`RouteSpec`]; `prefix` is the key path used in errors
    /// (`route[2]`, or a container's name and label for discovered routes).
    pub fn validate(
        &self,
        prefix: &str,
        defaults: &RouteSettings,
        source: RouteSource,
        errors: &mut Errors,
    ) -> Option<RouteSpec> {
        let before = errors.0.len();
        let key = |k: &str| format!("{prefix}.{k}");
        let host = match &self.host {
            Some(h) => errors.check(&key("host"), HostPattern::parse(h)),
            None => {
                errors.push(key("host"), "missing; every route needs a host");
                None
            }
        };
        let path = self.path.clone().unwrap_or_else(|| "/".to_string());
        if !path.starts_with('/') || path.contains(char::is_whitespace) {
            errors.push(
                key("path"),
                format!("invalid path \"{path}\": must start with \"/\""),
            );
        } else if crate::path::readings(&path)
            .iter()
            .any(|reading| reading != &path)
            && crate::path::route_path(&path) == path.as_str()
        {
            errors.push(
                key("path"),
                format!(
                    "path \"{path}\" can never match: upstreams read it in different ways \
                     (`;`, `\\`, `%2F`, `%5C` or `//`), so requests for it are refused"
                ),
            );
        } else if crate::path::route_path(&path) != path.as_str() {
            errors.push(
                key("path"),
                format!(
                    "path \"{path}\" can never match: requests are routed by their normalised \
                     path; write \"{}\"",
                    crate::path::route_path(&path)
                ),
            );
        }
        if self.upstreams.is_empty() {
            errors.push(
                key("upstreams"),
                "empty; every route needs at least one upstream",
            );
        }
        let upstreams: Vec<Upstream> = self
            .upstreams
            .iter()
            .enumerate()
            .filter_map(|(i, u)| {
                let parsed = u.trim().parse::<SocketAddr>().map_err(|_| {
                    format!("invalid socket address \"{u}\"; write e.g. \"127.0.0.1:5000\"")
                });
                errors.check(&format!("{}[{i}]", key("upstreams")), parsed)
            })
            .map(|addr| Upstream {
                addr,
                container: None,
            })
            .collect();
        let proto = match self.proto.as_deref().map(str::trim) {
            None => UpstreamProto::Http,
            Some(p) if p.eq_ignore_ascii_case("http") => UpstreamProto::Http,
            Some(p) if p.eq_ignore_ascii_case("https") => UpstreamProto::Https,
            Some(other) => {
                errors.push(
                    key("proto"),
                    format!("invalid proto \"{other}\": expected \"http\" or \"https\""),
                );
                UpstreamProto::Http
            }
        };
        let profile = match self.profile.as_deref().map(str::trim) {
            None | Some("") => None,
            Some("registry") => Some(Profile::Registry),
            Some(other) => {
                errors.push(
                    key("profile"),
                    format!("unknown profile \"{other}\": expected \"registry\""),
                );
                None
            }
        };
        let upstream_tls = self.upstream_tls(prefix, proto, errors);
        let cert_name = match self.cert_name.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(name) => errors.check(&key("cert-name"), parse_cert_name(name)),
        };
        let acme_challenge = match self.acme_challenge.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(v) => errors.check(&key("acme-challenge"), Challenge::parse(v)),
        };
        if self.acme == Some(true) {
            match host.as_ref().map(HostPattern::certificate_name) {
                Some(Some(name)) => {
                    if let Err(e) = Challenge::effective(acme_challenge, &[name]) {
                        errors.push(key("acme-challenge"), e);
                    }
                }
                Some(None) => errors.push(
                    key("acme"),
                    "needs a plain host name or a leading wildcard (*.example.com): a \
                     certificate cannot name a regex or a trailing wildcard",
                ),
                None => {}
            }
        }
        let allow = self
            .allow
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, v)| errors.check(&format!("{}[{i}]", key("allow")), parse_cidr(v)))
            .collect();
        let (auth, forward_auth) = self
            .auth
            .as_ref()
            .map_or((None, None), |a| a.validate(&key, errors));
        let rate_limit = match (&self.rate_limit, self.rate_burst) {
            (Some(rate), burst) => errors.check(&key("rate-limit"), RateLimit::parse(rate, burst)),
            (None, Some(_)) => {
                errors.push(
                    key("rate-burst"),
                    "needs rate-limit, the rate it adds a burst to",
                );
                None
            }
            (None, None) => None,
        };
        if profile == Some(Profile::Registry)
            && auth
                .as_ref()
                .is_some_and(|a| matches!(a.open, OpenAccess::MethodsOtherThan(_)))
        {
            errors.push(
                key("auth.methods"),
                "not on the registry profile: an open GET /v2/ tells docker login that no \
                 credentials are needed, and pushes then fail; use auth.anonymous-read",
            );
        }
        if auth
            .as_ref()
            .is_some_and(|a| a.open == OpenAccess::RegistryReads)
            && profile != Some(Profile::Registry)
        {
            errors.push(
                key("auth.anonymous-read"),
                "only for profile = \"registry\": it knows which registry requests are reads; \
                 elsewhere, list the methods that need credentials in auth.methods",
            );
        }
        if self.allow.as_ref().is_some_and(Vec::is_empty) {
            errors.push(
                key("allow"),
                "empty list would refuse every client; remove the key to allow everyone",
            );
        }
        let mut base = defaults.clone();
        if let Some(p) = profile {
            apply_profile(p, &mut base);
        }
        let settings = self.settings().apply(&base, prefix, errors);
        if errors.0.len() != before {
            return None;
        }
        Some(RouteSpec {
            host: host?,
            path,
            upstreams,
            proto,
            upstream_tls,
            profile,
            settings,
            cert_name,
            allow,
            auth,
            forward_auth,
            rate_limit,
            acme: self.acme.unwrap_or(false),
            acme_challenge,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_rates_are_sizes_a_second() {
        assert_eq!(parse_byte_rate("500B/s"), Ok(500));
        assert_eq!(parse_byte_rate(" 1KiB/s "), Ok(1024));
        assert_eq!(parse_byte_rate("0"), Ok(0));
        for bad in ["500", "fast", "-1B/s", "1KiB/m", ""] {
            let e = parse_byte_rate(bad).expect_err(bad);
            assert!(e.starts_with("invalid rate"), "{e}");
        }
    }
}
