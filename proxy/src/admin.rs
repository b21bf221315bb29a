//! The admin listener (`listen.metrics`, keep it private). It never runs on the public
//! listeners.
//!
//! - `GET /`: the dashboard, one self-contained page (HTML, CSS and a little JavaScript from
//!   the binary, nothing fetched elsewhere) that renders the endpoints below.
//! - `GET /metrics`: Prometheus text (see [`crate::metrics`]).
//! - `GET /routes`: the live route table as JSON — host, path, upstreams, where each route
//!   came from, its settings — plus what Docker discovery made of each labelled container,
//!   and the conflicts.
//! - `GET /certificates`: the certificates berth serves (names, SANs, issuer, validity, file)
//!   and, when `acme.metrics` is set, berth-acme's own view of them.
//! - `GET /traffic`: request, error and upload counters per route host, and open
//!   connections per listener (the page turns them into rates).
//! - `GET /status`: version, uptime, Docker and Swarm connection.
//! - `GET /healthz`: 200 while every listener serves; 503 naming a listener that could not be
//!   bound during an upgrade (a service that dies ends the process: [`crate::supervise`]).
//!
//! Nothing here shows a secret: htpasswd and secret-file paths, never their contents; the
//! query of every URL (a forward-auth URL, a bad label's value in a container's errors) is
//! cut.
//!
//! ```toml
//! [listen]
//! metrics = "127.0.0.1:9180"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde::Serialize;
use sha2::Digest;

use berth_core::docker::DockerStatus;
use berth_core::route::RouteSpec;
use berth_plugins::health::HealthView;

use crate::metrics::Metrics;
use crate::route_writer::Report;
use crate::tls::CertStore;
use berth_plugins::SharedTable;

/// The dashboard page.
const DASHBOARD: &str = include_str!("dashboard.html");
/// How long `/certificates` waits for berth-acme.
const ACME_TIMEOUT: Duration = Duration::from_secs(2);

/// What the admin endpoints read.
pub struct AdminState {
    /// The live route table.
    pub table: SharedTable,
    /// What discovery made of the containers.
    pub report: Arc<ArcSwap<Report>>,
    /// Docker discovery, when it runs.
    pub docker: Option<Arc<DockerStatus>>,
    /// The request metrics.
    pub metrics: Arc<Metrics>,
    /// The certificates served, with an HTTPS listener.
    pub certs: Option<Arc<ArcSwap<CertStore>>>,
    /// berth-acme's metrics listener (`acme.metrics`).
    pub acme: Option<SocketAddr>,
    /// What is wrong with the process, for `/healthz`.
    pub health: Arc<crate::supervise::Health>,
}

/// The admin listener's service.
pub struct Admin {
    state: AdminState,
    started: SystemTime,
    client: Client<HttpConnector, Empty<Bytes>>,
}

/// `/routes` as served.
#[derive(Serialize)]
struct RoutesPage<'a> {
    routes: Vec<RouteView<'a>>,
    docker: DockerPage,
    containers: &'a [crate::route_writer::ContainerReport],
    conflicts: &'a [String],
}

/// A route in `/routes`: its spec, and with `health-check` each upstream's health.
#[derive(Serialize)]
struct RouteView<'a> {
    #[serde(flatten)]
    spec: &'a RouteSpec,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    health: Vec<HealthView>,
}

#[derive(Serialize)]
struct DockerPage {
    enabled: bool,
    connected: bool,
    /// Swarm services are read (the daemon is a manager).
    swarm: bool,
}

#[derive(Serialize)]
struct StatusPage {
    version: &'static str,
    /// Unix seconds.
    started: u64,
    uptime_seconds: u64,
    docker: DockerPage,
}

#[derive(Serialize)]
struct CertificatesPage {
    certificates: Vec<CertificateView>,
    acme: AcmeView,
}

#[derive(Serialize)]
struct CertificateView {
    name: String,
    sans: Vec<String>,
    issuer: String,
    not_before: i64,
    not_after: i64,
    path: String,
}

#[derive(Serialize, Default)]
struct AcmeView {
    /// `acme.metrics` is set.
    configured: bool,
    address: Option<String>,
    reachable: bool,
    error: Option<String>,
    /// berth-acme's `/certificates` as it answered.
    certificates: serde_json::Value,
}

#[derive(Serialize)]
struct TrafficPage {
    /// Unix milliseconds of the reading.
    time_ms: u128,
    hosts: Vec<HostTraffic>,
    open_connections: BTreeMap<String, i64>,
}

#[derive(Serialize, Default)]
struct HostTraffic {
    host: String,
    requests: u64,
    /// Answers with a 5xx status.
    errors: u64,
    /// Registry blob upload bytes.
    upload_bytes: u64,
    /// Requests served from the registry cache.
    cache_hits: u64,
    /// Requests by digest the registry cache sent to the registry.
    cache_misses: u64,
}

impl Admin {
    /// Serves `state`.
    pub fn new(state: AdminState) -> Admin {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(ACME_TIMEOUT));
        Admin {
            state,
            started: SystemTime::now(),
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    fn docker_page(&self) -> DockerPage {
        let docker = self.state.docker.as_ref();
        DockerPage {
            enabled: docker.is_some(),
            connected: docker.is_some_and(|d| d.connected()),
            swarm: docker.is_some_and(|d| d.swarm()),
        }
    }

    fn routes_json(&self) -> Vec<u8> {
        let table = self.state.table.load();
        let report = self.state.report.load();
        let page = RoutesPage {
            routes: table
                .routes()
                .iter()
                .map(|r| RouteView {
                    spec: &r.spec,
                    health: r.health().iter().map(|h| h.view()).collect(),
                })
                .collect(),
            docker: self.docker_page(),
            containers: &report.containers,
            conflicts: &report.conflicts,
        };
        let mut value = serde_json::to_value(&page).unwrap_or_default();
        // A health check's query may carry a token, as a URL's may.
        if let Some(routes) = value.get_mut("routes").and_then(|r| r.as_array_mut()) {
            for route in routes {
                if let Some(path) = route.pointer_mut("/health_check/path") {
                    if let Some(text) = path.as_str() {
                        *path = berth_core::logging::without_queries(text)
                            .into_owned()
                            .into();
                    }
                }
            }
        }
        // A URL's query may carry a secret (a forward-auth URL, or a bad label's value quoted
        // in a container's errors).
        without_queries(&mut value);
        json(&value)
    }

    fn status_json(&self) -> Vec<u8> {
        let started = self
            .started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        json(&StatusPage {
            version: env!("CARGO_PKG_VERSION"),
            started,
            uptime_seconds: self.started.elapsed().map_or(0, |d| d.as_secs()),
            docker: self.docker_page(),
        })
    }

    async fn certificates_json(&self) -> Vec<u8> {
        let mut certificates: Vec<CertificateView> = self
            .state
            .certs
            .as_ref()
            .map(|store| {
                store
                    .load()
                    .entries()
                    .map(|e| CertificateView {
                        name: e.name.clone(),
                        sans: e.sans.clone(),
                        issuer: e.issuer.clone(),
                        not_before: e.not_before,
                        not_after: e.not_after,
                        path: e.path.display().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        certificates.sort_by(|a, b| a.name.cmp(&b.name));
        let acme = match self.state.acme {
            None => AcmeView::default(),
            Some(addr) => {
                let mut view = AcmeView {
                    configured: true,
                    address: Some(addr.to_string()),
                    ..AcmeView::default()
                };
                match tokio::time::timeout(ACME_TIMEOUT, self.acme_certificates(addr)).await {
                    Ok(Ok(value)) => {
                        let mut value = acme_fields(value);
                        without_queries(&mut value);
                        view.reachable = true;
                        view.certificates = value;
                    }
                    Ok(Err(e)) => view.error = Some(e),
                    Err(_) => view.error = Some(format!("no answer within {ACME_TIMEOUT:?}")),
                }
                view
            }
        };
        json(&CertificatesPage { certificates, acme })
    }

    /// berth-acme's `GET /certificates`.
    async fn acme_certificates(&self, addr: SocketAddr) -> Result<serde_json::Value, String> {
        let uri: http::Uri = format!("http://{addr}/certificates")
            .parse()
            .map_err(|e: http::uri::InvalidUri| e.to_string())?;
        let response = self.client.get(uri).await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let body = Limited::new(response.into_body(), 4 << 20)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    }

    fn traffic_json(&self) -> Vec<u8> {
        let metrics = &self.state.metrics;
        let mut hosts: BTreeMap<String, HostTraffic> = BTreeMap::new();
        for (labels, value) in counters(&metrics.requests) {
            let host = labels.get("host").cloned().unwrap_or_default();
            let entry = hosts.entry(host.clone()).or_insert_with(|| HostTraffic {
                host,
                ..HostTraffic::default()
            });
            entry.requests += value;
            if labels.get("code").is_some_and(|c| c.starts_with('5')) {
                entry.errors += value;
            }
        }
        for (labels, value) in counters(&metrics.blob_bytes) {
            let host = labels.get("host").cloned().unwrap_or_default();
            hosts
                .entry(host.clone())
                .or_insert_with(|| HostTraffic {
                    host,
                    ..HostTraffic::default()
                })
                .upload_bytes += value;
        }
        for (labels, value) in counters(&metrics.cache_requests) {
            let host = labels.get("host").cloned().unwrap_or_default();
            let entry = hosts.entry(host.clone()).or_insert_with(|| HostTraffic {
                host,
                ..HostTraffic::default()
            });
            match labels.get("result").map(String::as_str) {
                Some("hit") => entry.cache_hits += value,
                Some("miss") => entry.cache_misses += value,
                _ => {}
            }
        }
        let mut open_connections = BTreeMap::new();
        for family in prometheus::core::Collector::collect(&metrics.open_connections) {
            for m in family.get_metric() {
                let listener = m
                    .get_label()
                    .iter()
                    .find(|l| l.name() == "listener")
                    .map(|l| l.value().to_string())
                    .unwrap_or_default();
                open_connections.insert(listener, m.get_gauge().get_value() as i64);
            }
        }
        json(&TrafficPage {
            time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
            hosts: hosts.into_values().collect(),
            open_connections,
        })
    }
}

/// Every sample of a counter vector: its labels and value.
fn counters(vec: &prometheus::IntCounterVec) -> Vec<(BTreeMap<String, String>, u64)> {
    prometheus::core::Collector::collect(vec)
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|m| {
            let labels = m
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect();
            (labels, m.get_counter().get_value() as u64)
        })
        .collect()
}

/// Cuts what may be a secret from every URL in every string of `value`: user information
/// (`http://user:pass@a/` becomes `http://…@a/`) and the query and fragment
/// (`http://a/b?token=x` becomes `http://a/b?…`).
fn without_queries(value: &mut serde_json::Value) {
    static PATTERNS: std::sync::OnceLock<Option<(regex::Regex, regex::Regex)>> =
        std::sync::OnceLock::new();
    let Some((userinfo, query)) = PATTERNS.get_or_init(|| {
        let userinfo = regex::Regex::new(r##"(?i)(\b[a-z][a-z0-9+.-]*://)[^\s"/?#@]*@"##).ok()?;
        let query =
            regex::Regex::new(r##"(?i)(\b[a-z][a-z0-9+.-]*://[^\s"?#]*)[?#][^\s"]*"##).ok()?;
        Some((userinfo, query))
    }) else {
        return;
    };
    match value {
        serde_json::Value::String(text) => {
            let cut = userinfo.replace_all(text, "$1…@");
            let cut = query.replace_all(&cut, "$1?…").into_owned();
            *text = cut;
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(without_queries),
        serde_json::Value::Object(map) => map.values_mut().for_each(without_queries),
        _ => {}
    }
}

/// berth-acme's answer, keeping only the fields the dashboard shows, per certificate.
fn acme_fields(value: serde_json::Value) -> serde_json::Value {
    const KEPT: [&str; 7] = [
        "hosts",
        "challenge",
        "state",
        "not_after",
        "renew_at",
        "failures",
        "last_error",
    ];
    let serde_json::Value::Object(certificates) = value else {
        return serde_json::Value::Object(serde_json::Map::new());
    };
    certificates
        .into_iter()
        .filter_map(|(name, status)| {
            let serde_json::Value::Object(fields) = status else {
                return None;
            };
            let kept: serde_json::Map<String, serde_json::Value> = fields
                .into_iter()
                .filter(|(k, _)| KEPT.contains(&k.as_str()))
                .collect();
            Some((name, serde_json::Value::Object(kept)))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Whether a `Host` header names this listener in a way a browser uses for it: an IP
/// address or `localhost`, with or without a port. Any other name may be a DNS rebinding
/// (a web page whose own name now resolves to this address), and gets 421.
fn local_host(host: Option<&str>) -> bool {
    let Some(host) = host else {
        return true;
    };
    // Nothing may follow the name but a port: `[::1]evil` is no address of this listener.
    let port_ok = |port: Option<&str>| {
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    };
    if let Some(rest) = host.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(p) => Some(p),
                None => return false,
            },
        };
        return ip.parse::<std::net::Ipv6Addr>().is_ok() && port_ok(port);
    }
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    (name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok())
        && port_ok(port)
}

fn json(value: &impl Serialize) -> Vec<u8> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    body
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut response = Response::new(Vec::new());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_str(content_type)
            .unwrap_or(http::HeaderValue::from_static("text/plain")),
    );
    headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(body.len()),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    *response.body_mut() = body;
    response
}

/// The page's policy: only its own inline script and style run (by their SHA-256), it talks
/// only to this listener, and nothing may frame it or build HTML from strings.
fn content_security_policy() -> &'static str {
    static CSP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CSP.get_or_init(|| {
        let hash = |open: &str, close: &str| {
            let body = DASHBOARD
                .split_once(open)
                .and_then(|(_, rest)| rest.split_once(close))
                .map_or("", |(body, _)| body);
            let digest = sha2::Sha256::digest(body.as_bytes());
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        };
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src data:; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
             require-trusted-types-for 'script'",
            hash("<script>", "</script>"),
            hash("<style>", "</style>")
        )
    })
}

/// The dashboard, with a policy that lets it run only its own inline code and talk only to
/// this listener, and never be framed.
fn dashboard() -> Response<Vec<u8>> {
    let mut response = reply(
        StatusCode::OK,
        "text/html; charset=utf-8",
        DASHBOARD.as_bytes().to_vec(),
    );
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_str(content_security_policy())
            .unwrap_or(http::HeaderValue::from_static("default-src 'none'")),
    );
    headers.insert(
        http::header::X_FRAME_OPTIONS,
        http::HeaderValue::from_static("DENY"),
    );
    response
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let text = "text/plain; charset=utf-8";
        let data = "application/json";
        if req.method != http::Method::GET {
            return reply(StatusCode::METHOD_NOT_ALLOWED, text, b"GET only\n".to_vec());
        }
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok());
        if !local_host(host) {
            return reply(
                StatusCode::MISDIRECTED_REQUEST,
                text,
                b"the admin listener answers to an IP address or localhost only\n".to_vec(),
            );
        }
        match req.uri.path() {
            "/" => dashboard(),
            "/metrics" => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.state.metrics.encode(),
            ),
            "/routes" => reply(StatusCode::OK, data, self.routes_json()),
            "/certificates" => reply(StatusCode::OK, data, self.certificates_json().await),
            "/traffic" => reply(StatusCode::OK, data, self.traffic_json()),
            "/status" => reply(StatusCode::OK, data, self.status_json()),
            "/healthz" => {
                let failures = self.state.health.failures();
                if failures.is_empty() {
                    reply(StatusCode::OK, text, b"ok\n".to_vec())
                } else {
                    reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        text,
                        format!("{}\n", failures.join("\n")).into_bytes(),
                    )
                }
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                text,
                b"not found; try /, /metrics, /routes, /certificates, /traffic, /status or /healthz\n"
                    .to_vec(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::without_queries;

    #[test]
    fn urls_lose_their_queries_everywhere() {
        let mut value = serde_json::json!({
            "routes": [{ "forward_auth": { "url": "http://authelia:9091/api/verify?token=s3cret" } }],
            "containers": [{ "detail": ["label berth.auth.forward: invalid auth.forward \"ftp://x/?k=s3cret\": expected"] }],
            "plain": "a?b and /path?x=1 stay",
        });
        without_queries(&mut value);
        let text = value.to_string();
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(
            value["routes"][0]["forward_auth"]["url"],
            "http://authelia:9091/api/verify?…"
        );
        assert_eq!(value["plain"], "a?b and /path?x=1 stay");

        let mut value = serde_json::json!([
            "invalid \"http://u:s3cret@auth/verify\": user information",
            "http://a/b#s3cret and https://x:y@h/p?q=s3cret",
        ]);
        without_queries(&mut value);
        assert!(!value.to_string().contains("s3cret"), "{value}");
        assert_eq!(
            value[0],
            "invalid \"http://…@auth/verify\": user information"
        );
    }

    #[test]
    fn only_local_names_reach_the_admin_listener() {
        for host in [
            None,
            Some("127.0.0.1:9180"),
            Some("localhost:9180"),
            Some("LOCALHOST"),
            Some("[::1]:9180"),
            Some("[::1]"),
            Some("10.0.0.5"),
        ] {
            assert!(super::local_host(host), "{host:?}");
        }
        for host in [
            "evil.example",
            "evil.example:9180",
            "127.0.0.1.nip.io",
            "[evil]:1",
            "[::1]evil",
            "[::1]:9180evil",
            "[::1]:",
            "127.0.0.1:evil",
            "localhost:9180:1",
            "[::1",
        ] {
            assert!(!super::local_host(Some(host)), "{host}");
        }
    }

    #[test]
    fn berth_acme_answers_keep_the_fields_shown() {
        let value = super::acme_fields(serde_json::json!({
            "a.test": { "hosts": ["a.test"], "state": "valid", "secret_thing": "x" },
            "b.test": null,
        }));
        assert_eq!(
            value,
            serde_json::json!({ "a.test": { "hosts": ["a.test"], "state": "valid" } })
        );
        assert_eq!(
            super::acme_fields(serde_json::json!([1, 2])),
            serde_json::json!({})
        );
    }
}
