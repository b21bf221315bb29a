//! berth-acme's metrics (`acme.metrics`, e.g. `127.0.0.1:9181`): `GET /metrics` in the
//! Prometheus text format.
//!
//! - `berth_acme_orders_total{result}`: orders finished, `ok` or `error`;
//! - `berth_acme_cert_not_after_seconds{host}`: expiry of each kept certificate (by name);
//! - `berth_acme_next_renewal_seconds{host}`: when each enters its renewal window (Unix time).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// The worker's metric handles.
pub struct Metrics {
    registry: Registry,
    /// `berth_acme_orders_total{result}`.
    pub orders: IntCounterVec,
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
                "ACME orders finished, by result (ok, error).",
            ),
            &["result"],
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
        registry.register(Box::new(not_after.clone()))?;
        registry.register(Box::new(next_renewal.clone()))?;
        for result in ["ok", "error"] {
            orders.with_label_values(&[result]);
        }
        Ok(Metrics {
            registry,
            orders,
            not_after,
            next_renewal,
        })
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
                            let response =
                                if req.uri().path() == "/metrics" {
                                    Response::builder()
                                        .header(
                                            "content-type",
                                            "text/plain; version=0.0.4; charset=utf-8",
                                        )
                                        .body(Full::new(Bytes::from(metrics.encode())))
                                } else {
                                    Response::builder().status(404).body(Full::new(
                                        Bytes::from_static(b"not found; try /metrics\n"),
                                    ))
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
