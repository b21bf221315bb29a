//! berth-acme's metrics and status (`acme.metrics`, e.g. `127.0.0.1:9181`): `GET /metrics` in
//! the Prometheus text format, `GET /certificates` as JSON.
//!
//! - `berth_acme_orders_total{result,challenge}`: orders finished, `ok` or `error`, by
//!   challenge type (`http-01`, `dns-01`);
//! - `berth_acme_dns_propagation_seconds`: how long DNS-01 records took to reach every
//!   authoritative server (histogram);
//! - `berth_acme_orders_throttled_total`: orders put off by `acme.max-orders-per-minute`;
//! - `berth_acme_cert_not_after_seconds{host}`: expiry of each kept certificate (by name);
//! - `berth_acme_next_renewal_seconds{host}`: when each enters its renewal window (Unix time).
//!
//! `/certificates` lists every certificate berth-acme keeps: its hosts, challenge, source,
//! expiry, renewal time, state (`valid`, `missing`, `ordering`, `failed`), the last error
//! and the last DNS propagation time.

use berth_core::logging::shown;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use serde::Serialize;

/// What `/certificates` says about one certificate.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CertStatus {
    /// Names on the certificate.
    pub hosts: Vec<String>,
    /// `http-01` or `dns-01`.
    pub challenge: &'static str,
    /// Who asked for it (`file`, `container registry`, `service web`).
    pub source: String,
    /// `valid`, `missing`, `ordering` or `failed`.
    pub state: &'static str,
    /// Expiry of the certificate in certs-dir (Unix time).
    pub not_after: Option<i64>,
    /// When it renews (Unix time).
    pub renew_at: Option<i64>,
    /// Failed orders in a row.
    pub failures: u32,
    /// Why the last order failed.
    pub last_error: Option<String>,
    /// When the next attempt is due after a failure (Unix time).
    pub retry_at: Option<i64>,
    /// DNS-01: seconds the last order's records took to reach every authoritative server.
    pub last_propagation_seconds: Option<f64>,
}

/// The worker's metric handles.
pub struct Metrics {
    registry: Registry,
    /// `berth_acme_orders_total{result,challenge}`.
    pub orders: IntCounterVec,
    /// `berth_acme_dns_propagation_seconds`.
    pub propagation: Histogram,
    /// `berth_acme_orders_throttled_total`.
    pub throttled: IntCounter,
    status: std::sync::Mutex<std::collections::BTreeMap<String, CertStatus>>,
    /// `berth_acme_cert_not_after_seconds{host}`.
    pub not_after: IntGaugeVec,
    /// `berth_acme_next_renewal_seconds{host}`.
    pub next_renewal: IntGaugeVec,
}

impl Metrics {
    /// Creates and registers the metrics.
    ///
    /// # Errors
    /// Only if a definition is invalid (a programming error).
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let orders = IntCounterVec::new(
            Opts::new(
                "berth_acme_orders_total",
                "ACME orders finished, by result (ok, error) and challenge (http-01, dns-01).",
            ),
            &["result", "challenge"],
        )?;
        let propagation = Histogram::with_opts(
            HistogramOpts::new(
                "berth_acme_dns_propagation_seconds",
                "Time DNS-01 challenge records took to reach every authoritative server.",
            )
            .buckets(vec![0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]),
        )?;
        let throttled = IntCounter::new(
            "berth_acme_orders_throttled_total",
            "Orders put off because acme.max-orders-per-minute were already started.",
        )?;
        let not_after = IntGaugeVec::new(
            Opts::new(
                "berth_acme_cert_not_after_seconds",
                "Expiry (Unix time) of each certificate berth-acme keeps, by name.",
            ),
            &["host"],
        )?;
        let next_renewal = IntGaugeVec::new(
            Opts::new(
                "berth_acme_next_renewal_seconds",
                "When each certificate enters its renewal window (Unix time), by name.",
            ),
            &["host"],
        )?;
        registry.register(Box::new(orders.clone()))?;
        registry.register(Box::new(propagation.clone()))?;
        registry.register(Box::new(throttled.clone()))?;
        registry.register(Box::new(not_after.clone()))?;
        registry.register(Box::new(next_renewal.clone()))?;
        for result in ["ok", "error"] {
            for challenge in ["http-01", "dns-01"] {
                orders.with_label_values(&[result, challenge]);
            }
        }
        Ok(Metrics {
            registry,
            orders,
            propagation,
            throttled,
            status: std::sync::Mutex::default(),
            not_after,
            next_renewal,
        })
    }

    /// Changes what `/certificates` says about `name`.
    pub fn update(&self, name: &str, change: impl FnOnce(&mut CertStatus)) {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(status.entry(name.to_string()).or_default());
    }

    /// Forgets certificates no longer wanted (status and per-certificate gauges).
    pub fn forget_except<'a>(&self, names: impl Iterator<Item = &'a str>) {
        let keep: std::collections::BTreeSet<&str> = names.collect();
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let gone: Vec<String> = status
            .keys()
            .filter(|k| !keep.contains(k.as_str()))
            .cloned()
            .collect();
        for name in gone {
            status.remove(&name);
            let _ = self.not_after.remove_label_values(&[&name]);
            let _ = self.next_renewal.remove_label_values(&[&name]);
        }
    }

    /// `/certificates`: every certificate's status, by name, as JSON.
    pub fn certificates_json(&self) -> Vec<u8> {
        let status = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Host names and errors can come from containers' labels: escaped and cut.
        let shown: std::collections::BTreeMap<String, CertStatus> = status
            .iter()
            .map(|(name, s)| {
                let mut s = s.clone();
                s.hosts = s.hosts.iter().map(|h| shown(h, 256)).collect();
                s.source = shown(&s.source, 256);
                s.last_error = s.last_error.as_deref().map(|e| shown(e, 1024));
                (shown(name, 256), s)
            })
            .collect();
        serde_json::to_vec_pretty(&shown).unwrap_or_default()
    }

    /// The exposition text.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// Serves `/metrics` on `addr` until the process ends.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let metrics = metrics.clone();
                        async move {
                            let response = match req.uri().path() {
                                "/metrics" => Response::builder()
                                    .header(
                                        "content-type",
                                        "text/plain; version=0.0.4; charset=utf-8",
                                    )
                                    .body(Full::new(Bytes::from(metrics.encode()))),
                                "/certificates" => Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(metrics.certificates_json()))),
                                _ => Response::builder().status(404).body(Full::new(
                                    Bytes::from_static(
                                        b"not found; try /metrics or /certificates\n",
                                    ),
                                )),
                            };
                            Ok::<_, Infallible>(response.unwrap_or_default())
                        }
                    });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    Ok(())
}
