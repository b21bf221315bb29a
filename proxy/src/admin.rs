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
//! - `GET /healthz`: 200 once the listeners are up.
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
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde::Serialize;

use berth_core::docker::DockerStatus;
use berth_core::route::RouteSpec;

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
    routes: Vec<&'a RouteSpec>,
    docker: DockerPage,
    containers: &'a [crate::route_writer::ContainerReport],
    conflicts: &'a [String],
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
            routes: table.routes().iter().map(|r| &r.spec).collect(),
            docker: self.docker_page(),
            containers: &report.containers,
            conflicts: &report.conflicts,
        };
        let mut value = serde_json::to_value(&page).unwrap_or_default();
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
                    Ok(Ok(mut value)) => {
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

/// Cuts the query of every URL in every string of `value` (`http://a/b?token=x` becomes
/// `http://a/b?…`).
fn without_queries(value: &mut serde_json::Value) {
    static URL_QUERY: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    let pattern = r##"(?i)(\b[a-z][a-z0-9+.-]*://[^\s"?#]*)\?[^\s"#]*"##;
    let Some(re) = URL_QUERY.get_or_init(|| regex::Regex::new(pattern).ok()) else {
        return;
    };
    match value {
        serde_json::Value::String(text) => {
            if let std::borrow::Cow::Owned(cut) = re.replace_all(text, "$1?…") {
                *text = cut;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(without_queries),
        serde_json::Value::Object(map) => map.values_mut().for_each(without_queries),
        _ => {}
    }
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
        http::HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
        ),
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
            "/healthz" => reply(StatusCode::OK, text, b"ok\n".to_vec()),
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
    }
}
