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

mod acme;
mod auth;
mod balance;
mod client_auth;
mod health;
mod host;
mod rate_limit;
mod registry;
mod repositories;
mod scopes;
mod settings;
mod upstream_tls;

use std::fmt;
use std::net::SocketAddr;

use serde::Serialize;

pub use acme::{validate as validate_acme, Challenge};
pub use auth::{
    check_profile as check_registry_auth, parse_forward_url, parse_realm, redact_url, AuthSpec,
    ForwardAuthSpec, OpenAccess, RawAuth, DEFAULT_REALM, FORWARD_CACHE_MAX,
    FORWARD_HEADERS_DEFAULT, METHODS,
};
pub use balance::Lb;
pub use client_auth::{validate_client_auth, ClientAuth, ClientAuthMode, CERT_USER_PREFIX};
pub use health::{HealthCheck, RawHealth};
pub use host::{host_of, may_claim, HostPattern};
pub use rate_limit::RateLimit;
pub use registry::{
    access, by_digest, registry_read, repository_name, Access, Action, ByDigest, Profile,
};
pub use repositories::{
    parse_groups, validate_rules, Decision, Groups, Pattern, RawRule, Rule, Rules, Who,
};
pub use scopes::{Scopes, MAX_SCOPED_REPOSITORIES};
pub use settings::{
    builtin_defaults, parse_byte_rate, parse_hsts, HttpsMode, RawSettings, RouteSettings,
    BODY_RATE_GRACE, DEFAULT_MIN_BODY_RATE,
};
pub use upstream_tls::{RawUpstreamTls, UpstreamProto, UpstreamTls};

/// One upstream server of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Upstream {
    /// Address to connect to.
    pub addr: SocketAddr,
    /// The container behind this address, for discovered routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
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
    /// Upstream servers, load-balanced by `lb`.
    pub upstreams: Vec<Upstream>,
    /// How an upstream is chosen for each request.
    pub lb: Lb,
    /// Active checks of each upstream (`health-check`), when the route asks for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
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
    /// Client certificates the host verifies (`client-ca`, `client-auth`).
    pub client_auth: Option<ClientAuth>,
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
    /// Blobs and manifests fetched by digest are served from the registry cache (`cache`).
    pub cache: bool,
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
            "compress = false".into(),
            "lb = \"least-conn\"".into(),
            "lb = \"cookie\"".into(),
            "health-check = \"/healthz\"".into(),
            "health-check = \"/healthz\"\nhealth-interval = \"10s\"".into(),
            "health-check = \"/healthz\"\nhealth-timeout = \"1s\"".into(),
            "health-check = \"/healthz\"\nhealth-fails = 1".into(),
            "health-check = \"/healthz\"\nhealth-passes = 1".into(),
            "health-check = \"/ready\"".into(),
            "error-pages = \"/a\"".into(),
            "maintenance = true".into(),
            "maintenance = true\nmaintenance-reads = true".into(),
            "profile = \"registry\"\ncache = true".into(),
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
