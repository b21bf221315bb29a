//! The admin listener (`listen.metrics`, keep it private): `GET /metrics` in the Prometheus
//! text format (see [`crate::metrics`]), `GET /routes` shows the live route
//! table as JSON — host, path, upstreams, where each route came from, its settings — plus
//! what Docker discovery made of each labelled container; `GET /healthz` answers 200 once
//! the listeners are up. It never runs on the public listeners.
//!
//! ```toml
//! [listen]
//! metrics = "127.0.0.1:9180"
//! ```

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde::Serialize;

use berth_core::docker::DockerStatus;
use berth_core::route::RouteSpec;

use crate::metrics::Metrics;
use crate::route_writer::Report;
use berth_plugins::SharedTable;

/// State the admin endpoints read.
pub struct Admin {
    table: SharedTable,
    report: Arc<ArcSwap<Report>>,
    docker: Option<Arc<DockerStatus>>,
    metrics: Arc<Metrics>,
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

impl Admin {
    /// Serves `table`, the discovery `report`, when discovery runs its `docker` status, and
    /// `metrics`.
    pub fn new(
        table: SharedTable,
        report: Arc<ArcSwap<Report>>,
        docker: Option<Arc<DockerStatus>>,
        metrics: Arc<Metrics>,
    ) -> Admin {
        Admin {
            table,
            report,
            docker,
            metrics,
        }
    }

    fn routes_json(&self) -> Vec<u8> {
        let table = self.table.load();
        let report = self.report.load();
        let page = RoutesPage {
            routes: table.routes().iter().map(|r| &r.spec).collect(),
            docker: DockerPage {
                enabled: self.docker.is_some(),
                connected: self.docker.as_ref().is_some_and(|d| d.connected()),
                swarm: self.docker.as_ref().is_some_and(|d| d.swarm()),
            },
            containers: &report.containers,
            conflicts: &report.conflicts,
        };
        let mut body = serde_json::to_vec_pretty(&page).unwrap_or_default();
        body.push(b'\n');
        body
    }
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
    *response.body_mut() = body;
    response
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let text = "text/plain; charset=utf-8";
        if req.method != http::Method::GET {
            return reply(StatusCode::METHOD_NOT_ALLOWED, text, b"GET only\n".to_vec());
        }
        match req.uri.path() {
            "/metrics" => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.encode(),
            ),
            "/routes" => reply(StatusCode::OK, "application/json", self.routes_json()),
            "/healthz" => reply(StatusCode::OK, text, b"ok\n".to_vec()),
            _ => reply(
                StatusCode::NOT_FOUND,
                text,
                b"not found; try /metrics, /routes or /healthz\n".to_vec(),
            ),
        }
    }
}
