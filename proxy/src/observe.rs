//! What berth records about each request when it ends (Pingora's `logging` phase): the
//! request metrics and the access-log line. Both are optional — no metrics listener, no
//! metrics; `log.access = "off"`, no lines — and both run for every request, routed or not.

use std::sync::Arc;

use pingora_error::{Error, ErrorSource};
use pingora_proxy::Session;

use berth_core::route::Profile;
use berth_plugins::builtin::{is_blob_upload, BasicAuth, RateLimiter, UploadResult};
use berth_plugins::registry_cache::CacheUse;
use berth_plugins::RequestCtx;

use crate::access_log::{self, AccessLogger, Entry};
use crate::metrics::{method_label, Metrics, UNKNOWN_HOST};

/// Status logged for a request whose client went away before any answer (nginx's 499).
pub const CLIENT_CLOSED: u16 = 499;

/// Request metrics and the access log.
#[derive(Default)]
pub struct Observer {
    /// Where request metrics go; `None` without a metrics listener.
    pub metrics: Option<Arc<Metrics>>,
    /// The access log; `None` when it is off.
    pub access: Option<AccessLogger>,
}

impl Observer {
    /// Whether there is anything to record.
    pub fn is_active(&self) -> bool {
        self.metrics.is_some() || self.access.is_some()
    }

    /// Records a finished request.
    pub fn request_done(&self, session: &Session, error: Option<&Error>, ctx: &RequestCtx) {
        let req = session.req_header();
        let written = session.response_written().map(|r| r.status.as_u16());
        let status = match written {
            Some(code) => code,
            None if error.is_some_and(|e| *e.esource() == ErrorSource::Downstream) => CLIENT_CLOSED,
            None => 0,
        };
        let bytes_out = session.as_downstream().body_bytes_sent() as u64;
        let elapsed = ctx.started.elapsed();
        let path = req.uri.path();

        if let Some(m) = &self.metrics {
            let host = host_label(ctx);
            let method = method_label(&req.method);
            let code = status.to_string();
            m.requests
                .with_label_values(&[host.as_str(), method, code.as_str()])
                .inc();
            m.duration
                .with_label_values(&[host.as_str()])
                .observe(elapsed.as_secs_f64());
            m.request_bytes
                .with_label_values(&[host.as_str()])
                .inc_by(ctx.body_bytes);
            m.response_bytes
                .with_label_values(&[host.as_str()])
                .inc_by(bytes_out);
            if RateLimiter::refused(ctx) {
                m.rate_limited.with_label_values(&[host.as_str()]).inc();
            }
            if let Some(cache) = CacheUse::of(ctx) {
                m.cache_requests
                    .with_label_values(&[host.as_str(), cache.result()])
                    .inc();
                if cache.result() == "hit" {
                    m.cache_served_bytes
                        .with_label_values(&[host.as_str()])
                        .inc_by(bytes_out);
                }
            }
            if let Some(action) = BasicAuth::denied(ctx) {
                m.registry_denied
                    .with_label_values(&[host.as_str(), action])
                    .inc();
            }
            let registry = ctx
                .route
                .as_ref()
                .is_some_and(|r| r.spec.profile == Some(Profile::Registry));
            if registry
                && is_blob_upload(&req.method, path)
                && (ctx.body_bytes > 0 || error.is_some())
            {
                m.blob_bytes
                    .with_label_values(&[host.as_str()])
                    .inc_by(ctx.body_bytes);
                let result = UploadResult::of(status, error);
                m.blob_uploads
                    .with_label_values(&[host.as_str(), result.as_str()])
                    .inc();
            }
        }

        if let Some(log) = &self.access {
            let route = ctx.route.as_ref().map(|r| r.spec.source.to_string());
            log.log(&Entry {
                time: access_log::now(),
                client: ctx.downstream.client.address,
                peer: ctx.downstream.client.peer,
                host: &ctx.host,
                method: req.method.as_str(),
                path,
                status,
                bytes_in: ctx.body_bytes,
                bytes_out,
                duration_ms: (elapsed.as_secs_f64() * 1e6).round() / 1e3,
                upstream: ctx.upstream,
                route,
            });
        }
    }

    /// Records the time a new upstream connection took.
    pub fn connected(&self, ctx: &RequestCtx, reused: bool) {
        let (Some(m), Some(started), false) = (&self.metrics, ctx.connect_started, reused) else {
            return;
        };
        let host = host_label(ctx);
        m.upstream_connect
            .with_label_values(&[host.as_str()])
            .observe(started.elapsed().as_secs_f64());
    }
}

/// The `host` label: the matched route's host pattern, or `_unknown`.
fn host_label(ctx: &RequestCtx) -> String {
    ctx.route
        .as_ref()
        .map_or_else(|| UNKNOWN_HOST.to_string(), |r| r.spec.host.to_string())
}

/// Makes the pieces from the configuration.
///
/// # Errors
/// When the access-log file cannot be opened.
pub fn observer(
    metrics: Option<Arc<Metrics>>,
    access: &berth_core::config::AccessLog,
) -> std::io::Result<Arc<Observer>> {
    Ok(Arc::new(Observer {
        metrics,
        access: AccessLogger::start(access)?,
    }))
}
