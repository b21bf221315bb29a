//! The route model: what a `[[route]]` in the config file (or a container's labels)
//! turns into once validated. Pure data, no I/O; the proxy builds a plugin chain per route.
//!
//! ```toml
//! [[route]]
//! host = "registry.example.com"   # exact, "*.example.com", "www.example.*" or "~regex"
//! path = "/"
//! upstreams = ["127.0.0.1:5000"]
//! profile = "registry"
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use regex::Regex;
use serde::Serialize;

/// How a route's host is matched against the request's host name.
///
/// Lookup order (see [`crate::table::RouteTable`]): exact names, then leading wildcards
/// (longest suffix first), then trailing wildcards (longest prefix first), then regular
/// expressions in the order they were declared — the order nginx uses for `server_name`.
#[derive(Debug, Clone)]
pub enum HostPattern {
    /// `registry.example.com` (stored lowercase).
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com`, at any depth; stores `.example.com`.
    LeadingWildcard(String),
    /// `www.example.*`: any name starting with `www.example.`; stores `www.example.`.
    TrailingWildcard(String),
    /// `~^reg[0-9]+\.example\.com$`: a regular expression matched against the lowercase host
    /// name (unanchored unless the pattern anchors itself, like nginx).
    Regex(Regex),
}

impl HostPattern {
    /// The name a certificate carries for this pattern: the host, or `*.example.com` for a
    /// leading wildcard; `None` for patterns no certificate can name.
    pub fn certificate_name(&self) -> Option<String> {
        match self {
            HostPattern::Exact(h) => Some(h.clone()),
            HostPattern::LeadingWildcard(base) => Some(format!("*{base}")),
            HostPattern::TrailingWildcard(_) | HostPattern::Regex(_) => None,
        }
    }

    /// Parses a host pattern as written in the config or a label.
    ///
    /// # Errors
    /// Returns a message naming the pattern when it is empty, has a port, has a wildcard in
    /// the middle, has characters a host name cannot have, or is an invalid regex.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let text = text.trim();
        if let Some(re) = text.strip_prefix('~') {
            return Regex::new(re)
                .map(HostPattern::Regex)
                .map_err(|e| format!("invalid host regex \"{text}\": {e}"));
        }
        let lower = text.to_ascii_lowercase();
        if lower.is_empty() {
            return Err("empty host".to_string());
        }
        let (kind, name) = if let Some(rest) = lower.strip_prefix("*.") {
            ('l', rest)
        } else if let Some(rest) = lower.strip_suffix(".*") {
            ('t', rest)
        } else {
            ('e', lower.as_str())
        };
        let valid_label = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || !name.split('.').all(valid_label) {
            return Err(format!(
                "invalid host \"{text}\": expected a name like \"registry.example.com\", \
                 \"*.example.com\", \"www.example.*\" or \"~regex\" (no port, no scheme)"
            ));
        }
        Ok(match kind {
            'l' => HostPattern::LeadingWildcard(format!(".{name}")),
            't' => HostPattern::TrailingWildcard(format!("{name}.")),
            _ => HostPattern::Exact(name.to_string()),
        })
    }

    /// Whether `host` (lowercase, without port) matches this pattern.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host == name,
            HostPattern::LeadingWildcard(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
            HostPattern::TrailingWildcard(prefix) => {
                host.len() > prefix.len() && host.starts_with(prefix.as_str())
            }
            HostPattern::Regex(re) => re.is_match(host),
        }
    }

    /// Whether every name `other` matches, this pattern matches too (as far as can be told:
    /// a regular expression covers only the same expression, and is covered by nothing else).
    pub fn covers(&self, other: &HostPattern) -> bool {
        match other {
            HostPattern::Exact(name) => self.matches(name),
            HostPattern::LeadingWildcard(suffix) => match self {
                HostPattern::LeadingWildcard(mine) => suffix.ends_with(mine.as_str()),
                _ => false,
            },
            HostPattern::TrailingWildcard(prefix) => match self {
                HostPattern::TrailingWildcard(mine) => prefix.starts_with(mine.as_str()),
                _ => false,
            },
            HostPattern::Regex(re) => {
                matches!(self, HostPattern::Regex(mine) if mine.as_str() == re.as_str())
            }
        }
    }
}

/// `docker.allowed-hosts`: the hosts and host patterns containers may claim. Empty: any.
///
/// Whether a container may claim `claimed`.
pub fn may_claim(allowed: &[HostPattern], claimed: &HostPattern) -> bool {
    allowed.is_empty() || allowed.iter().any(|a| a.covers(claimed))
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::LeadingWildcard(suffix) => write!(f, "*{suffix}"),
            HostPattern::TrailingWildcard(prefix) => write!(f, "{prefix}*"),
            HostPattern::Regex(re) => write!(f, "~{}", re.as_str()),
        }
    }
}

impl Serialize for HostPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Protocol spoken to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProto {
    /// Plain HTTP/1.1.
    Http,
    /// HTTP/1.1 over TLS, certificate verified against the system roots.
    Https,
}

/// A preset of settings for a kind of upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// A Docker registry (distribution): unlimited body, 900 s read timeout, HTTP/1.1 upstream,
    /// `Docker-Distribution-Api-Version` on berth's own responses, `Location` rewriting.
    Registry,
}

/// How berth-acme proves control of a name to the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Challenge {
    /// `http-01`: a token served by berth on plain HTTP port 80 (the default).
    #[serde(rename = "http-01")]
    Http01,
    /// `dns-01`: a TXT record at `_acme-challenge.<name>`, published through
    /// `acme.dns-provider`; the only way to a wildcard certificate.
    #[serde(rename = "dns-01")]
    Dns01,
}

impl Challenge {
    /// Parses `http-01` or `dns-01` (any case: acme-companion's `ACME_CHALLENGE` says
    /// `DNS-01`).
    ///
    /// # Errors
    /// A message naming the value otherwise.
    pub fn parse(value: &str) -> Result<Challenge, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "http-01" => Ok(Challenge::Http01),
            "dns-01" => Ok(Challenge::Dns01),
            _ => Err(format!(
                "invalid challenge \"{value}\": expected http-01 or dns-01"
            )),
        }
    }

    /// The name the CA and the RFC use.
    pub fn as_str(self) -> &'static str {
        match self {
            Challenge::Http01 => "http-01",
            Challenge::Dns01 => "dns-01",
        }
    }

    /// The challenge for a certificate naming `hosts`: the one asked for, else `dns-01` when
    /// a name is a wildcard (nothing else can prove it), else `http-01`.
    ///
    /// # Errors
    /// `http-01` asked for a wildcard, with the fix.
    pub fn effective(asked: Option<Challenge>, hosts: &[String]) -> Result<Challenge, String> {
        let wildcard = hosts.iter().find(|h| h.starts_with("*."));
        match (asked, wildcard) {
            (Some(Challenge::Http01), Some(w)) => Err(format!(
                "\"{w}\" is a wildcard, and a wildcard certificate can only be proved with \
                 dns-01: ask for acme-challenge dns-01 (label berth.acme.challenge=dns-01, or \
                 ACME_CHALLENGE=DNS-01) and set acme.dns-provider"
            )),
            (Some(c), _) => Ok(c),
            (None, Some(_)) => Ok(Challenge::Dns01),
            (None, None) => Ok(Challenge::Http01),
        }
    }
}

impl std::fmt::Display for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do about plain HTTP versus HTTPS for a route (nginx-proxy's `HTTPS_METHOD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpsMode {
    /// Plain HTTP is redirected to HTTPS once the host has a certificate of its own.
    Redirect,
    /// Both are served, no redirect, no HSTS.
    NoRedirect,
    /// Only HTTPS is served.
    NoHttp,
    /// Only plain HTTP is served.
    NoHttps,
}

impl HttpsMode {
    /// Parses `redirect`, `noredirect`, `nohttp` or `nohttps`.
    ///
    /// # Errors
    /// A message naming the value otherwise.
    pub fn parse(value: &str) -> Result<HttpsMode, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "redirect" => Ok(HttpsMode::Redirect),
            "noredirect" => Ok(HttpsMode::NoRedirect),
            "nohttp" => Ok(HttpsMode::NoHttp),
            "nohttps" => Ok(HttpsMode::NoHttps),
            _ => Err(format!(
                "invalid https mode \"{value}\": expected redirect, noredirect, nohttp or nohttps"
            )),
        }
    }
}

/// Settings every route has; `[defaults]` supplies them, a profile presets some, and the
/// route itself may override each one.
#[derive(Debug, Clone, Serialize)]
pub struct RouteSettings {
    /// HTTP/HTTPS behaviour.
    pub https: HttpsMode,
    /// `Strict-Transport-Security` value for HTTPS responses; `None` = off.
    #[serde(serialize_with = "ser_header_opt")]
    pub hsts: Option<http::HeaderValue>,
    /// Largest request body accepted, in bytes; 0 = unlimited.
    pub max_body: u64,
    /// Time allowed to establish the upstream connection.
    #[serde(serialize_with = "ser_duration")]
    pub connect_timeout: Duration,
    /// Longest idle time between two reads (from the client or from the upstream).
    #[serde(serialize_with = "ser_duration")]
    pub read_timeout: Duration,
    /// Longest time a write (to the client or to the upstream) may block.
    #[serde(serialize_with = "ser_duration")]
    pub write_timeout: Duration,
    /// Slowest average, in bytes a second, a request body may arrive at once
    /// [`crate::config::BODY_RATE_GRACE`] has passed; 0 = no minimum.
    pub min_body_rate: u64,
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

fn ser_header_opt<S: serde::Serializer>(
    h: &Option<http::HeaderValue>,
    s: S,
) -> Result<S::Ok, S::Error> {
    // Escaped, so that two values never read the same (a value need not be UTF-8).
    match h {
        Some(v) => s.collect_str(&v.as_bytes().escape_ascii()),
        None => s.serialize_str("off"),
    }
}

/// One upstream server of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Upstream {
    /// Address to connect to.
    pub addr: SocketAddr,
    /// The container behind this address, for discovered routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// How berth talks TLS to a route's upstreams (`proto = "https"`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpstreamTls {
    /// A PEM file of extra CA certificates trusted besides the system roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// The name sent as SNI and verified in the upstream's certificate; default: the
    /// request's host.
    pub sni: Option<String>,
    /// Accept any certificate. Named so that nobody sets it by accident.
    pub dangerous_skip_verify: bool,
}

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
    /// The file holding the secret registry tokens are signed with (`auth.anonymous-read`
    /// routes); `None`: a secret of the process's own.
    pub token_secret_file: Option<std::path::PathBuf>,
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

/// A route's request rate limit (`rate-limit = "20r/s"`, `rate-burst`), per client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    /// Requests allowed per `per`.
    pub requests: u32,
    /// The period `requests` are counted over: one second, minute or hour.
    #[serde(serialize_with = "ser_duration")]
    pub per: Duration,
    /// Requests a client may send at once before the rate applies.
    pub burst: u32,
}

impl RateLimit {
    /// Parses `"<n>r/s"`, `"<n>r/m"` or `"<n>r/h"` (nginx's spelling), with `burst` or, by
    /// default, a burst of `n`.
    ///
    /// # Errors
    /// A message naming the value when it is not a rate (1 to 1000000 requests), or the
    /// burst is not 1 to 1000000.
    pub fn parse(rate: &str, burst: Option<u32>) -> Result<RateLimit, String> {
        let bad = || {
            format!(
                "invalid rate-limit \"{rate}\": expected requests per second, minute or hour, \
                 e.g. \"20r/s\", \"100r/m\""
            )
        };
        let (n, unit) = rate.trim().split_once("r/").ok_or_else(bad)?;
        let per = match unit {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        let requests: u32 = n
            .parse()
            .ok()
            .filter(|n| (1..=1_000_000).contains(n))
            .ok_or_else(bad)?;
        let burst = match burst {
            Some(0) => {
                return Err("rate-burst 0 would refuse every request: use 1 or more".to_string())
            }
            Some(b) if b > 1_000_000 => return Err(format!("rate-burst {b} is more than 1000000")),
            Some(b) => b,
            None => requests,
        };
        Ok(RateLimit {
            requests,
            per,
            burst,
        })
    }

    /// The time one request's allowance takes to come back.
    pub fn interval(&self) -> Duration {
        self.per / self.requests.max(1)
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

/// Where a route came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "names")]
pub enum RouteSource {
    /// The config file.
    File,
    /// Docker containers (their names, sorted); several when they are load-balanced.
    Containers(Vec<String>),
    /// Swarm services (their names, sorted): each one's tasks, or its virtual IP.
    Services(Vec<String>),
}

impl fmt::Display for RouteSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteSource::File => f.write_str("file"),
            RouteSource::Containers(names) => write!(f, "container {}", names.join(", ")),
            RouteSource::Services(names) => write!(f, "service {}", names.join(", ")),
        }
    }
}

/// A validated route: which requests it takes and where they go.
#[derive(Debug, Clone, Serialize)]
pub struct RouteSpec {
    /// Host pattern.
    pub host: HostPattern,
    /// Path prefix, always starting with `/`.
    pub path: String,
    /// Upstream servers, load-balanced round robin.
    pub upstreams: Vec<Upstream>,
    /// Protocol to the upstreams.
    pub proto: UpstreamProto,
    /// TLS options towards the upstreams.
    pub upstream_tls: UpstreamTls,
    /// Preset applied before the route's own settings.
    pub profile: Option<Profile>,
    /// The effective settings.
    pub settings: RouteSettings,
    /// Certificate to serve instead of the host's own (stem of `<name>.crt`).
    pub cert_name: Option<String>,
    /// Client networks allowed; empty = everyone.
    pub allow: Vec<ipnet::IpNet>,
    /// Basic auth, when the route asks for it.
    pub auth: Option<AuthSpec>,
    /// Forward auth, when the route asks for it (never together with basic auth).
    pub forward_auth: Option<ForwardAuthSpec>,
    /// Requests per client, when the route limits them.
    pub rate_limit: Option<RateLimit>,
    /// berth-acme keeps a certificate for this host (`acme = true`; containers ask through
    /// their labels instead).
    pub acme: bool,
    /// How berth-acme proves the host (`acme-challenge`); `None`: `dns-01` for a wildcard,
    /// else `http-01`.
    pub acme_challenge: Option<Challenge>,
    /// Where the route came from.
    pub source: RouteSource,
}

impl RouteSpec {
    /// Everything the route says, as one string: two specs with the same fingerprint build
    /// the same route from the same files (a route naming a file, such as `upstream-ca-file`,
    /// is built again when the file may have changed). Serialising plain data cannot fail;
    /// if it ever did, the debug form stands in, never an empty key two different routes
    /// could share.
    pub fn fingerprint(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| format!("{self:?}"))
    }
}

/// The host name of an authority (`Host` header value): lowercase, port and trailing dot
/// removed; `None` when it is empty or has characters no host name has.
pub fn host_of(authority: &str) -> Option<String> {
    if authority.contains('@') {
        return None;
    }
    let name = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let rest = &authority[end + 1..];
        if !(rest.is_empty() || rest.strip_prefix(':').is_some_and(valid_port)) {
            return None;
        }
        &authority[..=end]
    } else {
        match authority.rsplit_once(':') {
            Some((name, port)) if valid_port(port) => name,
            Some(_) => return None,
            None => authority,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    // No empty label (`a..b`, `.a`), as nginx: such a name matches no pattern as written.
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b));
    ok.then_some(name)
}

fn valid_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_changes_with_every_setting() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let ca = dir.path().join("ca.pem");
        let other = dir.path().join("other.pem");
        for file in [&ca, &other] {
            std::fs::write(file, "-----BEGIN CERTIFICATE-----\n").unwrap_or_else(|e| panic!("{e}"));
        }
        let (ca, other) = (ca.display(), other.display());
        let https = "proto = \"https\"";
        let settings = [
            String::new(),
            "path = \"/v2\"".into(),
            "upstreams = [\"127.0.0.1:2\"]".into(),
            "upstreams = [\"127.0.0.1:1\", \"127.0.0.1:2\"]".into(),
            https.into(),
            "profile = \"registry\"".into(),
            "cert-name = \"other\"".into(),
            format!("{https}\nupstream-ca-file = \"{ca}\""),
            format!("{https}\nupstream-ca-file = \"{other}\""),
            format!("{https}\nupstream-sni = \"b.test\""),
            format!("{https}\ndangerous-skip-verify = true"),
            "allow = [\"10.0.0.0/8\"]".into(),
            "allow = [\"10.0.0.0/16\"]".into(),
            "auth.htpasswd = \"/a\"".into(),
            "auth.htpasswd = \"/b\"".into(),
            "auth.htpasswd = \"/a\"\nauth.realm = \"r\"".into(),
            "acme = true".into(),
            "acme = true\nacme-challenge = \"http-01\"".into(),
            "https = \"nohttp\"".into(),
            "hsts = \"off\"".into(),
            "hsts = \"max-age=1\"".into(),
            "hsts = \"max-age=1; caf\u{e9}\"".into(),
            "hsts = \"max-age=1; caf\u{e8}\"".into(),
            "max-body = \"1m\"".into(),
            "connect-timeout = \"1s\"".into(),
            "read-timeout = \"1s\"".into(),
            "write-timeout = \"1s\"".into(),
            "min-body-rate = \"1KiB/s\"".into(),
        ];
        let mut seen = std::collections::HashMap::new();
        for extra in &settings {
            let text = format!(
                "[listen]\nhttp = \"127.0.0.1:8080\"\n[docker]\nenabled = false\n[[route]]\nhost = \"a.test\"\n\
                 upstreams = [\"127.0.0.1:1\"]\n{extra}"
            );
            // A key given twice (upstreams) is the later one's.
            let text = text.replacen("upstreams = [\"127.0.0.1:1\"]\nupstreams", "upstreams", 1);
            let config =
                crate::config::parse_config(&text).unwrap_or_else(|e| panic!("{extra}: {e}"));
            let print = config.routes[0].fingerprint();
            if let Some(before) = seen.insert(print, extra) {
                panic!("{before:?} and {extra:?} have the same fingerprint");
            }
        }
    }

    #[test]
    fn registry_reads_are_spelled_as_the_api_spells_them() {
        let d = "sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945";
        let reads = [
            "/v2/_catalog".to_string(),
            "/v2/_catalog?n=10&last=a".to_string(),
            "/v2/library/busybox/tags/list".to_string(),
            "/v2/berth/auth/manifests/v1".to_string(),
            format!("/v2/berth/auth/manifests/{d}"),
            format!("/v2/a.b_c-d/e__f/blobs/{d}"),
            "/v2/x/manifests/latest?ns=docker.io".to_string(),
            format!("/v2/a/manifests/b/blobs/{d}"),
            format!("/v2/x/referrers/{d}"),
        ];
        for r in &reads {
            assert!(registry_read(r), "{r}");
        }
        let not = [
            "/v2/".to_string(),
            "/v2".to_string(),
            "/v2/x/blobs/uploads/".to_string(),
            "/v2/x/blobs/uploads/5f9c1b0e-1d1b-4b0b-9b8e-0f3b6d1c2a3e".to_string(),
            format!("/v2/x/blobs/uploads/{d}"),
            "/v2/x/manifests/".to_string(),
            "/v2/x/manifests/a/b".to_string(),
            "/v2/X/manifests/v1".to_string(),
            "/v2//x/manifests/v1".to_string(),
            "/v2/x/../y/manifests/v1".to_string(),
            "/v2/./x/manifests/v1".to_string(),
            "/v2/x%2fy/manifests/v1".to_string(),
            "/v2/x/manifests/v1%2f..".to_string(),
            "/v2/x/blobs/v1".to_string(),
            "/v2/x/tags/list/".to_string(),
            "/V2/x/manifests/v1".to_string(),
            "/other/v2/x/manifests/v1".to_string(),
            format!("/v2/-x/blobs/{d}"),
            format!("/v2/x-/blobs/{d}"),
        ];
        for r in &not {
            assert!(!registry_read(r), "{r}");
        }
        let open = OpenAccess::RegistryReads;
        assert!(open.lets_through("GET", "/v2/x/manifests/v1"));
        assert!(open.lets_through("HEAD", "/v2/x/manifests/v1"));
        for method in ["PUT", "POST", "PATCH", "DELETE", "OPTIONS", "get"] {
            assert!(!open.lets_through(method, "/v2/x/manifests/v1"), "{method}");
        }
        let methods = OpenAccess::MethodsOtherThan(vec!["POST".into(), "DELETE".into()]);
        assert!(methods.lets_through("GET", "/anything"));
        assert!(methods.lets_through("PUT", "/anything"));
        assert!(!methods.lets_through("POST", "/anything"));
        assert!(!methods.lets_through("DELETE", "/"));
        // Fails closed: spellings and methods it does not know need credentials.
        for method in ["post", "Post", "get", "MKCOL", "PURGE", "FOO", ""] {
            assert!(!methods.lets_through(method, "/anything"), "{method}");
        }
        assert!(!OpenAccess::Nothing.lets_through("GET", "/v2/x/manifests/v1"));
    }

    #[test]
    fn host_patterns_parse_and_match() {
        // (pattern, host, expected)
        let table = [
            ("registry.example.com", "registry.example.com", true),
            ("Registry.Example.COM", "registry.example.com", true),
            ("registry.example.com", "other.example.com", false),
            ("*.example.com", "a.example.com", true),
            ("*.example.com", "a.b.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "badexample.com", false),
            ("www.example.*", "www.example.org", true),
            ("www.example.*", "www.example.", false),
            ("~^reg[0-9]+\\.example\\.com$", "reg12.example.com", true),
            ("~^reg[0-9]+\\.example\\.com$", "regx.example.com", false),
            ("~example", "anything.example.net", true),
        ];
        for (pattern, host, expected) in table {
            let p = HostPattern::parse(pattern).expect(pattern);
            assert_eq!(p.matches(host), expected, "{pattern} vs {host}");
        }
    }

    #[test]
    fn allowed_patterns_cover_what_they_match_and_no_more() {
        let p = |t: &str| HostPattern::parse(t).expect(t);
        let allowed = [
            p("*.apps.example.com"),
            p("registry.example.com"),
            p("www.*"),
        ];
        for ok in [
            "registry.example.com",
            "a.apps.example.com",
            "*.apps.example.com",
            "*.x.apps.example.com",
            "www.example.*",
            "www.other.org",
        ] {
            assert!(may_claim(&allowed, &p(ok)), "{ok}");
        }
        for refused in [
            "example.com",
            "apps.example.com",
            "evil.test",
            "*.example.com",
            "~.",
            "~^a\\.apps\\.example\\.com$",
            "api.*",
            "registry.example.com.evil.test",
        ] {
            assert!(!may_claim(&allowed, &p(refused)), "{refused}");
        }
        assert!(may_claim(&[], &p("~.")), "no list: anything");
        assert!(may_claim(&[p("~.")], &p("~.")), "the same expression");
    }

    #[test]
    fn host_patterns_reject_garbage() {
        for bad in [
            "",
            "example.com:443",
            "http://example.com",
            "a.*.example.com",
            "exa mple.com",
            "*.",
            "~(unclosed",
            "a..b",
        ] {
            let err = HostPattern::parse(bad).expect_err(bad);
            assert!(!err.is_empty());
        }
    }

    #[test]
    fn host_patterns_display_as_written() {
        for text in ["a.example.com", "*.example.com", "www.example.*", "~^a$"] {
            assert_eq!(HostPattern::parse(text).expect(text).to_string(), text);
        }
    }
    #[test]
    fn host_is_lowercased_without_port() {
        let cases = [
            ("Registry.Example.com:8443", Some("registry.example.com")),
            ("registry.example.com.", Some("registry.example.com")),
            ("registry.example.com", Some("registry.example.com")),
            ("[::1]:8080", Some("[::1]")),
            ("127.0.0.1:80", Some("127.0.0.1")),
            ("", None),
            ("a b", None),
            ("user@host", None),
            ("host:port", None),
            ("host:", None),
            ("[::1]x", None),
            ("a..example.com", None),
            (".example.com", None),
            ("example.com..", None),
        ];
        for (authority, expected) in cases {
            assert_eq!(host_of(authority).as_deref(), expected, "{authority:?}");
        }
    }
}
