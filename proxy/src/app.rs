//! The `ProxyHttp` implementation: routing, then a thin loop over the matched route's
//! plugin chain in each of Pingora's phases. Everything route-specific lives in the plugins
//! (`berth-plugins`); this file only routes, picks upstreams and writes berth's own replies.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::{
    CacheKey, CacheMeta, ForcedFreshness, HitHandler, NoCacheReason, RespCacheable,
};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use berth_core::logging::without_queries;
use berth_core::route::Profile;
use berth_core::table::Routed;
use berth_plugins::builtin::AcmeChallenge;
use berth_plugins::cache_storage::set_read_size;
use berth_plugins::chain::InFlight;
use berth_plugins::registry_cache::{entry_header, kind_matches, CacheUse, RegistryCache};

/// Bytes a cache hit reads at a time for an HTTP/2 client.
const H2_READ_SIZE: usize = 16 << 10;
use berth_plugins::rescue::rescue;
use berth_plugins::routing::request_target;
use berth_plugins::{Flow, Page, Plugin, Reply, RequestCtx, Route, Scheme, SharedTable};

use crate::observe::Observer;
use arc_swap::ArcSwap;
use berth_core::config::limits::Limits;

/// The proxy application for one kind of listener (plain HTTP or HTTPS).
pub struct Berth {
    scheme: Scheme,
    table: SharedTable,
    observer: Arc<Observer>,
    /// The live `[limits]`, for what applies per request (`h2-stall-timeout`).
    limits: Arc<ArcSwap<Limits>>,
    /// ACME HTTP-01 challenges, answered ahead of every route's chain (plain HTTP only).
    challenge: Option<AcmeChallenge>,
    /// The registry cache, for routes with `cache = true`.
    cache: Arc<RegistryCache>,
}

impl Berth {
    /// A proxy for listeners of `scheme`, serving routes from `table`, recording each request
    /// into `observer`.
    pub fn new(
        scheme: Scheme,
        table: SharedTable,
        observer: Arc<Observer>,
        limits: Arc<ArcSwap<Limits>>,
        cache: Arc<RegistryCache>,
    ) -> Berth {
        Berth {
            scheme,
            table,
            observer,
            limits,
            challenge: None,
            cache,
        }
    }

    /// Answers ACME HTTP-01 challenges from `challenge` before anything else runs.
    pub fn with_challenges(mut self, challenge: AcmeChallenge) -> Berth {
        self.challenge = Some(challenge);
        self
    }

    /// Sends a reply berth generated itself, after the route's `response_filter`s.
    async fn respond(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        reply: Reply,
    ) -> Result<()> {
        // The operator's pages, or berth's own in the form the client reads best.
        // A refusal that stands for "no route" (a refused scheme) looks like one, with the
        // [defaults] pages.
        let req = session.req_header();
        let path = req.uri.path();
        let route = ctx.route.as_ref().filter(|_| reply.page != Page::NoRoute);
        let registry = route.is_some_and(|r| r.spec.profile == Some(Profile::Registry))
            && (path == "/v2" || path.starts_with("/v2/"));
        let accept = req.headers.get(http::header::ACCEPT);
        let reply = match route {
            Some(route) => route.pages.load().render(reply, accept, registry),
            None => self.table.load().pages.render(reply, accept, registry),
        };
        let mut header = reply.header()?;
        self.filter_generated(session, &mut header, ctx)?;
        session
            .as_downstream_mut()
            .write_error_response(header, reply.body)
            .await
    }

    fn filter_generated(
        &self,
        session: &Session,
        header: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.generated = true;
        if let Some(route) = ctx.route.clone() {
            for plugin in &route.chain {
                plugin.response_filter(session, header, ctx)?;
            }
        }
        Ok(())
    }

    fn route(ctx: &RequestCtx) -> Result<Arc<Route>> {
        ctx.route
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route in context"))
    }
}

#[async_trait]
impl ProxyHttp for Berth {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.scheme)
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // The routes and trusted proxies of one configuration, for the whole request.
        let table = self.table.load();
        // Who the client is, once, for every step after (and the access log).
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.downstream.client = table.trust.client(peer, &session.req_header().headers);
        ctx.downstream.local_port = session
            .server_addr()
            .and_then(|a| a.as_inet())
            .map_or(0, |a| a.port());

        let target = match request_target(session.req_header()) {
            Ok(t) => t,
            Err(reply) => {
                self.respond(session, ctx, reply).await?;
                return Ok(true);
            }
        };
        if target.absolute_form {
            // Forward in origin form, with the Host the target named.
            let req = session.req_header_mut();
            let origin = req
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            req.set_raw_path(origin.as_bytes())?;
            req.insert_header(http::header::HOST, target.authority.as_str())?;
        }
        ctx.host = target.host;
        ctx.authority = target.authority;

        let route = match table.route_request(&ctx.host, session.req_header().uri.path()) {
            Routed::Route(r) => Some(r.clone()),
            Routed::None => None,
            Routed::Ambiguous => {
                let reply = Reply::text(
                    http::StatusCode::BAD_REQUEST,
                    "ambiguous path: it names different routes depending on how it is read",
                );
                self.respond(session, ctx, reply).await?;
                return Ok(true);
            }
            Routed::TooLong => {
                let reply = Reply::text(
                    http::StatusCode::URI_TOO_LONG,
                    "path longer than 8 KiB with escapes, `;`, `\\` or dot segments",
                );
                self.respond(session, ctx, reply).await?;
                return Ok(true);
            }
        };
        ctx.route.clone_from(&route);
        // Challenges come first, for any host, routed or not: a certificate is often wanted
        // before its route is (the plugin itself stays out of `nohttp` routes).
        if let Some(challenge) = &self.challenge {
            if let Flow::Respond(reply) = challenge.request_filter(session, ctx).await? {
                self.respond(session, ctx, reply).await?;
                return Ok(true);
            }
        }
        let Some(route) = route else {
            self.respond(session, ctx, Reply::no_route()).await?;
            return Ok(true);
        };
        for plugin in &route.chain {
            if let Flow::Respond(reply) = plugin.request_filter(session, ctx).await? {
                self.respond(session, ctx, reply).await?;
                return Ok(true);
            }
        }
        // Every upstream taken out by its checks: none is asked.
        if route.all_out() {
            self.respond(session, ctx, route.all_out_reply()).await?;
            return Ok(true);
        }
        ctx.body_wait_began = Some(std::time::Instant::now());
        // An HTTP/2 stream waits for its client's window at most h2-stall-timeout (each write
        // of a response body waits for room in the window): a client that opens streams and
        // never lets them be written would otherwise hold their upstream connections for the
        // route's whole write-timeout.
        if session.as_downstream().is_http2() {
            let stall = self.limits.load().h2_stall_timeout;
            let write = route.spec.settings.write_timeout;
            let shortest = [stall, write].into_iter().filter(|d| !d.is_zero()).min();
            session.set_write_timeout(shortest);
        }
        Ok(false)
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        // After the route's request filters: its auth has decided, as for any request.
        let Some(route) = ctx.route.clone() else {
            return Ok(());
        };
        if let Some(storage) = self.cache.wants(&route, session, ctx) {
            session
                .cache
                .enable(storage, None, None, Some(self.cache.lock()), None);
        }
        Ok(())
    }

    fn cache_key_callback(&self, _session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        // The digest, whichever repository or client asks; tagged with the route's upstreams,
        // so an entry being written is followed only by requests to the same registry (a kept
        // entry, checked, serves every route).
        match CacheUse::of(ctx) {
            Some(CacheUse::Lookup { digest, .. }) => {
                let route = Self::route(ctx)?;
                let origin: Vec<String> = route
                    .spec
                    .upstreams
                    .iter()
                    .map(|u| u.addr.to_string())
                    .collect();
                let tag = format!("{:?} {}", route.spec.proto, origin.join(","));
                Ok(CacheKey::new(digest.to_string(), tag))
            }
            _ => Error::e_explain(ErrorType::InternalError, "cache: a request with no digest"),
        }
    }

    fn cache_miss(&self, session: &mut Session, _ctx: &mut RequestCtx) {
        // A HEAD the cache could not answer goes to the registry as it is: fetching the
        // whole blob to answer it would cost a layer's bytes for a status line.
        if session.req_header().method == http::Method::HEAD {
            session.cache.disable(NoCacheReason::Custom(
                "a HEAD is never fetched to fill the cache",
            ));
        } else {
            session.cache.cache_miss();
        }
    }

    async fn cache_hit_filter(
        &self,
        session: &mut Session,
        meta: &CacheMeta,
        hit_handler: &mut HitHandler,
        _is_fresh: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<ForcedFreshness>> {
        // What a digest names never changes, but who may read it does: the registry says,
        // for this client and this repository, before a byte is served.
        let Some(CacheUse::Lookup {
            digest, manifest, ..
        }) = CacheUse::of(ctx)
        else {
            return Ok(Some(ForcedFreshness::ForceMiss));
        };
        // The same bytes kept as the other kind (a manifest's bytes pushed as a blob): asked
        // for again, and kept with this kind's headers.
        if !kind_matches(meta.headers(), manifest) {
            return Ok(Some(ForcedFreshness::ForceMiss));
        }
        let route = Self::route(ctx)?;
        if let Err(why) = self.cache.may_read(&route, session, ctx).await {
            tracing::debug!(
                request = %self.request_summary(session, ctx),
                "cache: the read check did not pass ({why}); asking the registry"
            );
            return Ok(Some(ForcedFreshness::ForceMiss));
        }
        // Only then, for an entry a previous run left: hashed once before its first use.
        if let Some(storage) = self.cache.storage() {
            match storage.ensure_intact(digest, hit_handler).await {
                Ok(true) => {}
                Ok(false) => return Ok(Some(ForcedFreshness::ForceMiss)),
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "cache: cannot read an entry; asking the registry");
                    return Ok(Some(ForcedFreshness::ForceMiss));
                }
            }
        }
        // An HTTP/2 client's window may admit little at a time: smaller reads, so a stream that
        // waits holds less.
        if session.as_downstream().is_http2() {
            set_read_size(hit_handler, H2_READ_SIZE);
        }
        CacheUse::served(ctx);
        Ok(Some(ForcedFreshness::ForceFresh))
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        // A 200 of its kind and length only (kept if its body hashes to the digest), with the
        // headers that describe the bytes: redirects to object storage, errors, partial and
        // encoded answers pass through.
        let manifest = matches!(
            CacheUse::of(ctx),
            Some(CacheUse::Lookup { manifest: true, .. })
        );
        let status = resp.status.as_u16();
        if matches!(status, 401 | 403 | 429) || status >= 500 {
            // This client's refusal (or a passing failure) says nothing of the next one's:
            // requests waiting for this answer compete to fetch it again.
            return Ok(RespCacheable::Uncacheable(NoCacheReason::UpstreamError));
        }
        let Some(kept) = entry_header(resp, manifest) else {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::OriginNotCache));
        };
        let now = std::time::SystemTime::now();
        // Fresh for as long as the entry is kept: a digest's bytes never change.
        let forever = now + std::time::Duration::from_secs(100 * 365 * 86_400);
        Ok(RespCacheable::Cacheable(CacheMeta::new(
            forever, now, 0, 0, kept,
        )))
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let route = Self::route(ctx)?;
        if ctx.upstream.is_none() {
            ctx.first_upstream = route.first_choice(ctx);
        }
        // Only a connection that could not be made moves the next attempt on
        // (`attempt_failed`): a retry after a pooled connection failed as it was reused (the
        // upstream had just closed it) goes to the same upstream again, on a new connection.
        let Some(upstream) = route.next_attempt(ctx) else {
            // Every upstream went out since the request was routed (or those left were).
            if route.all_out() {
                let reply = route.all_out_reply();
                let code = reply.status.as_u16();
                ctx.pending_reply = Some(reply);
                return Err(Error::explain(
                    ErrorType::HTTPStatus(code),
                    "every upstream is out of the rotation",
                ));
            }
            return Err(Error::explain(
                ErrorType::ConnectNoRoute,
                "every upstream failed",
            ));
        };
        ctx.upstream = Some(upstream.addr);
        ctx.connect_started = Some(std::time::Instant::now());
        // Idle upstream connections are pooled per thread (`thread_local_connections`): one
        // released here is reused here, without a wake-up from another thread.
        let peer = route.peer(upstream, &ctx.host, ctx);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing reached the upstream yet, so trying the next one is safe for any method.
        let remaining = ctx
            .route
            .clone()
            .is_some_and(|route| route.attempt_failed(ctx, &describe(&e)));
        if remaining {
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let route = Self::route(ctx)?;
        for plugin in &route.chain {
            plugin
                .upstream_request_filter(session, upstream_request, ctx)
                .await?;
        }
        // A cached answer is kept as the digest names it: never content-encoded.
        if matches!(CacheUse::of(ctx), Some(CacheUse::Lookup { .. })) {
            upstream_request.remove_header(&http::header::ACCEPT_ENCODING);
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(chunk) = body.as_ref().filter(|c| !c.is_empty()) {
            ctx.body_bytes += chunk.len() as u64;
            ctx.body_started.get_or_insert_with(std::time::Instant::now);
        }
        let route = Self::route(ctx)?;
        for plugin in &route.chain {
            if let Flow::Respond(reply) = plugin
                .request_body_filter(session, body, end_of_stream, ctx)
                .await?
            {
                let code = reply.status.as_u16();
                ctx.pending_reply = Some(reply);
                return Err(Error::explain(
                    ErrorType::HTTPStatus(code),
                    format!("request body refused by {}", plugin.name()),
                ));
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let route = Self::route(ctx)?;
        for plugin in &route.chain {
            plugin.upstream_response_filter(session, upstream_response, ctx)?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(route) = ctx.route.clone() {
            for plugin in &route.chain {
                plugin.response_filter(session, response, ctx)?;
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if end_of_stream {
            if let Some(counted) = ctx.slots.get::<InFlight>() {
                counted.finish();
            }
        }
        if let Some(route) = ctx.route.clone() {
            for plugin in &route.chain {
                plugin.response_body_filter(body, end_of_stream, ctx)?;
            }
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let reply = ctx.pending_reply.take().or_else(|| rescue(e));
        let code = reply.as_ref().map_or(0, |r| r.status.as_u16());
        log_failure(&self.request_summary(session, ctx), ctx, e, code);
        if let Some(reply) = reply {
            if let Err(write_error) = self.respond(session, ctx, reply).await {
                tracing::debug!(error = %write_error, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _error: &Error) -> bool {
        // `fail_to_proxy` logs every failure itself (`log_failure`), without the query string
        // Pingora's line carries and at the level the failure deserves.
        true
    }

    /// The request in log lines (Pingora's retry warnings among them): method, path and host,
    /// never the query string, which may carry tokens (a registry's upload `_state`).
    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        let req = session.req_header();
        format!("{} {}, Host: {}", req.method, req.uri.path(), ctx.host)
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.observer.connected(ctx, reused);
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(route) = ctx.route.clone() {
            for plugin in &route.chain {
                plugin.logging(session, e, ctx).await;
            }
        }
        if self.observer.is_active() {
            self.observer.request_done(session, e, ctx);
        }
    }
}

/// Logs a request that failed, at the level it deserves: an ERROR means an operator should
/// act. A client that went away is routine (debug); an upstream that failed is a warning with
/// the upstream named; anything else is an error. A deliberate refusal (413 and the like) is
/// an answer, not a failure, and is not logged here. `summary` never holds a query string.
fn log_failure(summary: &str, ctx: &RequestCtx, e: &Error, code: u16) {
    use pingora_error::ErrorSource;
    if matches!(e.etype(), ErrorType::HTTPStatus(c) if *c < 500) {
        return;
    }
    let upstream = ctx.upstream.map(|u| u.to_string()).unwrap_or_default();
    let error = describe(e);
    match e.esource() {
        ErrorSource::Downstream => {
            tracing::debug!(request = %summary, %error, "the client went away or sent no more");
        }
        ErrorSource::Upstream => {
            tracing::warn!(request = %summary, status = code, %upstream, %error, "upstream failed");
        }
        _ => {
            tracing::error!(request = %summary, status = code, %upstream, %error, "request failed")
        }
    }
}

/// What went wrong, for the log: each error of the chain with its kind and context, down to
/// the root cause ("connection refused", "invalid peer certificate: UnknownIssuer") — except
/// the contexts in which Pingora quotes the bytes of a request or response head (`buf: …`,
/// query strings and all), which are left out, and anything that reads like a query string
/// elsewhere (`?` up to the next space or quote), which is cut to `?…`.
fn describe(e: &Error) -> String {
    let mut out = String::new();
    let mut next: Option<&(dyn std::error::Error + Send + Sync)> = Some(e);
    while let Some(current) = next {
        if !out.is_empty() {
            out.push_str(": ");
        }
        let pingora = current
            .downcast_ref::<Error>()
            .or_else(|| current.downcast_ref::<Box<Error>>().map(|b| b.as_ref()));
        match pingora {
            Some(p) => {
                out.push_str(&format!("{:?}", p.etype()));
                match p.context.as_ref().map(|c| c.as_str()) {
                    Some(c) if c.starts_with("buf:") => out.push_str(" (head not logged)"),
                    Some(c) if !c.is_empty() => {
                        out.push(' ');
                        out.push_str(&without_queries(c));
                    }
                    _ => {}
                }
                next = p.cause.as_deref();
            }
            None => {
                out.push_str(&without_queries(&current.to_string()));
                next = None;
            }
        }
    }
    out
}

#[cfg(test)]
mod describe_tests {
    use super::*;

    #[test]
    fn failures_are_described_without_heads_or_query_strings() {
        let uri = Error::explain(
            ErrorType::InvalidHTTPHeader,
            "invalid uri /v2/x?token=s3cret",
        );
        let head = Error::explain(ErrorType::InvalidHTTPHeader, "buf: GET /?token=s3cret");
        let mut outer = Error::new(ErrorType::ConnectRefused);
        outer.context = Some("upstream 10.0.0.1:80".into());
        outer.cause = Some(Box::new(*uri));
        let said = [describe(&outer), describe(&head)];
        for line in &said {
            assert!(!line.contains("s3cret"), "{line}");
        }
        assert_eq!(
            said[0],
            "ConnectRefused upstream 10.0.0.1:80: InvalidHTTPHeader invalid uri /v2/x?…"
        );
        assert_eq!(said[1], "InvalidHTTPHeader (head not logged)");
        assert_eq!(without_queries("a \"b?c=d\" e?f g"), "a \"b?…\" e?… g");
    }
}
