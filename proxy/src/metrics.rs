//! Prometheus metrics (`GET /metrics` on the admin listener). Request metrics are recorded in
//! the `logging` phase, once per request; everything that is state rather than events
//! (routes, certificates, Docker) is read from the live snapshots when Prometheus scrapes,
//! so the request path never updates them.
//!
//! The `host` label is the host pattern of the route that took the request (`*.example.com`
//! for a wildcard route), or `_unknown` when no route did: a scanner sending random `Host`
//! headers cannot create new series.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use berth_core::docker::DockerStatus;

use crate::tls::feed::FeedStatus;
use berth_core::route::RouteSource;

use crate::tls::CertStore;
use berth_plugins::registry_cache::RegistryCache;
use berth_plugins::SharedTable;

/// `host` label value for requests no route took.
pub const UNKNOWN_HOST: &str = "_unknown";

/// Request duration buckets, seconds: from 1 ms API calls to 30-minute layer uploads.
const DURATION_BUCKETS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 1800.0,
];
/// Upstream connect buckets, seconds.
const CONNECT_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0,
];

/// Certificate reloads since start, counted by the certificate loader.
#[derive(Debug, Default)]
pub struct ReloadCounts {
    /// Pairs loaded (new or changed).
    pub ok: AtomicU64,
    /// Pairs that failed to load (the previous certificate kept serving).
    pub failed: AtomicU64,
}

/// The metric handles the request path records into.
pub struct Metrics {
    registry: Registry,
    /// `berth_requests_total{host,method,code}`.
    pub requests: IntCounterVec,
    /// `berth_request_duration_seconds{host}`.
    pub duration: HistogramVec,
    /// `berth_request_body_bytes_total{host}`.
    pub request_bytes: IntCounterVec,
    /// `berth_response_body_bytes_total{host}`.
    pub response_bytes: IntCounterVec,
    /// `berth_upstream_connect_seconds{host}`.
    pub upstream_connect: HistogramVec,
    /// `berth_open_connections{listener}`.
    pub open_connections: IntGaugeVec,
    /// `berth_connections_refused_total{listener,reason}`.
    pub refused_connections: IntCounterVec,
    /// `berth_config_reloads_total{result}`.
    pub config_reloads: IntCounterVec,
    /// `berth_registry_blob_upload_bytes_total{host}`.
    pub blob_bytes: IntCounterVec,
    /// `berth_registry_blob_uploads_total{host,result}`.
    pub blob_uploads: IntCounterVec,
    /// `berth_rate_limited_total{host}`.
    pub rate_limited: IntCounterVec,
    /// `berth_registry_denied_total{host,action}`.
    pub registry_denied: IntCounterVec,
    /// `berth_client_cert_errors_total{host,reason}`.
    pub client_cert_errors: IntCounterVec,
    /// `berth_cache_requests_total{host,result}`.
    pub cache_requests: IntCounterVec,
    /// `berth_cache_served_bytes_total{host}`.
    pub cache_served_bytes: IntCounterVec,
}

impl Metrics {
    /// Creates and registers the request metrics.
    ///
    /// # Errors
    /// Only if a metric definition is invalid (a programming error).
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let histogram =
            |name: &str, help: &str, buckets: &[f64]| -> prometheus::Result<HistogramVec> {
                let h = HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                    &["host"],
                )?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        let open_connections = IntGaugeVec::new(
            Opts::new(
                "berth_open_connections",
                "Client connections open, by listener.",
            ),
            &["listener"],
        )?;
        registry.register(Box::new(open_connections.clone()))?;
        Ok(Metrics {
            requests: counter(
                "berth_requests_total",
                "Requests answered, by route host, method and status code.",
                &["host", "method", "code"],
            )?,
            duration: histogram(
                "berth_request_duration_seconds",
                "Time from the request's arrival to its last byte, by route host.",
                &DURATION_BUCKETS,
            )?,
            request_bytes: counter(
                "berth_request_body_bytes_total",
                "Request body bytes received from clients, by route host.",
                &["host"],
            )?,
            response_bytes: counter(
                "berth_response_body_bytes_total",
                "Response body bytes sent to clients, by route host.",
                &["host"],
            )?,
            upstream_connect: histogram(
                "berth_upstream_connect_seconds",
                "Time to establish a new upstream connection (TCP and TLS), by route host.",
                &CONNECT_BUCKETS,
            )?,
            open_connections,
            refused_connections: counter(
                "berth_connections_refused_total",
                "Client connections closed by a downstream limit, by listener and reason \
                 (max_connections, header_timeout, header_too_large, bad_request).",
                &["listener", "reason"],
            )?,
            config_reloads: counter(
                "berth_config_reloads_total",
                "Configuration reloads (SIGHUP) by result: ok, or error (the running \
                 configuration stayed).",
                &["result"],
            )?,
            blob_bytes: counter(
                "berth_registry_blob_upload_bytes_total",
                "Blob upload bytes received by registry-profile routes, by route host.",
                &["host"],
            )?,
            blob_uploads: counter(
                "berth_registry_blob_uploads_total",
                "Blob upload requests by route host and result (completed, client_aborted, \
                 rejected, upstream_error).",
                &["host", "result"],
            )?,
            rate_limited: counter(
                "berth_rate_limited_total",
                "Requests refused with 429 by a route's rate limit, by route host.",
                &["host"],
            )?,
            registry_denied: counter(
                "berth_registry_denied_total",
                "Registry requests of a logged-in user refused with 403 by the route's \
                 repository rules, by route host and action (pull, push, delete, unknown).",
                &["host", "action"],
            )?,
            client_cert_errors: counter(
                "berth_client_cert_errors_total",
                "TLS handshakes refused over a client certificate, by route host and reason \
                 (missing, unknown-ca, expired, invalid).",
                &["host", "reason"],
            )?,
            cache_requests: counter(
                "berth_cache_requests_total",
                "Requests on routes with cache = true, by route host and result: hit (served \
                 from the cache after the registry's read check), miss (answered by the \
                 registry; kept when a 200 hashes to its digest), bypass (not by digest).",
                &["host", "result"],
            )?,
            cache_served_bytes: counter(
                "berth_cache_served_bytes_total",
                "Response body bytes served from the registry cache, by route host.",
                &["host"],
            )?,
            registry,
        })
    }

    /// Adds a collector read at scrape time.
    ///
    /// # Errors
    /// When its metric names clash with registered ones (a programming error).
    pub fn register(&self, collector: Box<dyn Collector>) -> prometheus::Result<()> {
        self.registry.register(collector)
    }

    /// The exposition text of every metric.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// The method label: the standard methods by name, anything else `OTHER`.
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// The certificate store and its reload counts.
pub type CertState = (Arc<ArcSwap<CertStore>>, Arc<ReloadCounts>);

/// What runs besides the table, read at scrape time: each part only when it runs.
#[derive(Default)]
pub struct Live {
    /// The certificate store (with an HTTPS listener).
    pub certs: Option<CertState>,
    /// Docker discovery.
    pub docker: Option<Arc<DockerStatus>>,
    /// The certificate feed mirror (`tls.feed`).
    pub feed: Option<Arc<FeedStatus>>,
    /// The registry cache.
    pub cache: Option<Arc<RegistryCache>>,
}

/// State read at scrape time: routes and their upstreams' health, certificates, Docker, the
/// certificate feed.
pub struct LiveState {
    table: SharedTable,
    live: Live,
    routes: IntGaugeVec,
    cert_not_after: IntGaugeVec,
    cert_reloads: IntCounterVec,
    docker_connected: IntGauge,
    docker_events: IntCounterVec,
    feed_connected: IntGauge,
    upstream_healthy: IntGaugeVec,
    health_checks: IntCounterVec,
    cache_stored: IntCounter,
    cache_size: IntGauge,
    cache_entries: IntGauge,
    /// Serialises scrapes: each one resets and refills the vectors above.
    lock: Mutex<()>,
}

impl LiveState {
    /// Reads `table`, and the parts of `live` that run.
    ///
    /// # Errors
    /// Only if a metric definition is invalid (a programming error).
    pub fn new(table: SharedTable, live: Live) -> prometheus::Result<LiveState> {
        Ok(LiveState {
            table,
            live,
            routes: IntGaugeVec::new(
                Opts::new(
                    "berth_routes",
                    "Routes in the live table, by source (file, docker, swarm).",
                ),
                &["source"],
            )?,
            cert_not_after: IntGaugeVec::new(
                Opts::new(
                    "berth_tls_cert_not_after_seconds",
                    "Expiry (Unix time) of each loaded certificate, by file name.",
                ),
                &["cert"],
            )?,
            cert_reloads: IntCounterVec::new(
                Opts::new(
                    "berth_cert_reloads_total",
                    "Certificate files loaded since start, by result (ok, error).",
                ),
                &["result"],
            )?,
            docker_connected: IntGauge::new(
                "berth_docker_connected",
                "1 while the Docker events stream is up.",
            )?,
            docker_events: IntCounterVec::new(
                Opts::new(
                    "berth_docker_events_total",
                    "Docker events received, by action.",
                ),
                &["action"],
            )?,
            feed_connected: IntGauge::new(
                "berth_cert_feed_connected",
                "1 while the last exchange with the certificate feed (tls.feed) succeeded.",
            )?,
            upstream_healthy: IntGaugeVec::new(
                Opts::new(
                    "berth_upstream_healthy",
                    "Per upstream of a route with health-check: 1 in the rotation, 0 taken out by its checks.",
                ),
                &["host", "path", "upstream"],
            )?,
            health_checks: IntCounterVec::new(
                Opts::new(
                    "berth_health_checks_total",
                    "Health checks run, by route, upstream and result (ok, failed).",
                ),
                &["host", "path", "upstream", "result"],
            )?,
            cache_stored: IntCounter::new(
                "berth_cache_stored_bytes_total",
                "Body bytes of the entries the registry cache kept since start.",
            )?,
            cache_size: IntGauge::new(
                "berth_cache_size_bytes",
                "Body bytes the registry cache holds (at most cache.max-size).",
            )?,
            cache_entries: IntGauge::new(
                "berth_cache_entries",
                "Blobs and manifests the registry cache holds.",
            )?,
            lock: Mutex::new(()),
        })
    }
}

impl Collector for LiveState {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = Vec::new();
        d.extend(self.routes.desc());
        d.extend(self.cert_not_after.desc());
        d.extend(self.cert_reloads.desc());
        d.extend(self.docker_connected.desc());
        d.extend(self.docker_events.desc());
        d.extend(self.feed_connected.desc());
        d.extend(self.upstream_healthy.desc());
        d.extend(self.health_checks.desc());
        d.extend(self.cache_stored.desc());
        d.extend(self.cache_size.desc());
        d.extend(self.cache_entries.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _serial = self.lock.lock();
        let table = self.table.load();
        let (mut file, mut docker, mut swarm) = (0, 0, 0);
        for r in table.routes() {
            match r.spec.source {
                RouteSource::File => file += 1,
                RouteSource::Containers(_) => docker += 1,
                RouteSource::Services(_) => swarm += 1,
            }
        }
        self.routes.with_label_values(&["file"]).set(file);
        self.routes.with_label_values(&["docker"]).set(docker);
        self.routes.with_label_values(&["swarm"]).set(swarm);
        let mut families = self.routes.collect();
        // Checked upstreams, read from the routes that hold them: a route gone takes its
        // series with it.
        self.upstream_healthy.reset();
        self.health_checks.reset();
        for r in table.routes() {
            let host = r.spec.host.to_string();
            for health in r.health() {
                let view = health.view();
                let labels = [host.as_str(), r.spec.path.as_str(), view.upstream.as_str()];
                self.upstream_healthy
                    .with_label_values(&labels)
                    .set(i64::from(view.healthy));
                for (result, n) in [("ok", view.checks_ok), ("failed", view.checks_failed)] {
                    let [host, path, upstream] = labels;
                    self.health_checks
                        .with_label_values(&[host, path, upstream, result])
                        .inc_by(n);
                }
            }
        }
        families.extend(self.upstream_healthy.collect());
        families.extend(self.health_checks.collect());

        if let Some((store, counts)) = &self.live.certs {
            self.cert_not_after.reset();
            for entry in store.load().entries() {
                self.cert_not_after
                    .with_label_values(&[entry.name.as_str()])
                    .set(entry.not_after);
            }
            self.cert_reloads.reset();
            self.cert_reloads
                .with_label_values(&["ok"])
                .inc_by(counts.ok.load(Ordering::Relaxed));
            self.cert_reloads
                .with_label_values(&["error"])
                .inc_by(counts.failed.load(Ordering::Relaxed));
            families.extend(self.cert_not_after.collect());
            families.extend(self.cert_reloads.collect());
        }
        if let Some(status) = &self.live.feed {
            self.feed_connected.set(i64::from(status.connected()));
            families.extend(self.feed_connected.collect());
        }
        if let Some(status) = &self.live.docker {
            self.docker_connected.set(i64::from(status.connected()));
            self.docker_events.reset();
            for (action, n) in status.events() {
                self.docker_events
                    .with_label_values(&[action.as_str()])
                    .inc_by(n);
            }
            families.extend(self.docker_connected.collect());
            families.extend(self.docker_events.collect());
        }
        if let Some(storage) = self.live.cache.as_ref().and_then(|c| c.storage()) {
            let (entries, bytes) = storage.store().usage();
            self.cache_stored.reset();
            self.cache_stored.inc_by(storage.stored_bytes());
            self.cache_size
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            self.cache_entries
                .set(i64::try_from(entries).unwrap_or(i64::MAX));
            families.extend(self.cache_stored.collect());
            families.extend(self.cache_size.collect());
            families.extend(self.cache_entries.collect());
        }
        families
    }
}
