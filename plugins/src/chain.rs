//! Routes with their plugin chains. The order of the chain is decided here, in one place.
//!
//! ```text
//! https → allow → rate-limit → auth | forward-auth → maintenance → forwarded → body-limit
//!       → timeouts → body-rate → upstream-tls → registry → compress
//! ```
//! The ACME challenge step ([`crate::builtin::AcmeChallenge`]) runs ahead of every chain, in
//! the proxy, because it answers for hosts that have no route yet; so neither a challenge nor
//! a redirect ever needs credentials.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::builtin::registry_token;
use crate::builtin::{
    Allow, AuthFiles, BasicAuth, BodyLimit, BodyRate, ClientCert, Compress, ForwardAuth, Forwarded,
    HttpsPolicy, Maintenance, OwnCertificate, RateLimiter, RegistryProfile, RepositoryRules,
    Sticky, Timeouts, UpstreamTlsOptions,
};
use crate::client::TrustedProxies;
use crate::health::{HealthBook, Probe, UpstreamHealth};
use crate::pages::ErrorPages;
use crate::plugin::{Plugin, Reply, RequestCtx, Scheme};
use berth_core::route::{HostPattern, Lb, Profile, RouteSpec, Upstream, UpstreamProto};
use berth_core::table::{Routable, RouteTable};
use pingora_core::upstreams::peer::HttpPeer;

/// What requests are served from: the routes, and the trusted proxies that decide who each
/// request's client is. They are swapped together, so no request meets a reload's trusted
/// proxies with the routes before it (or the other way round).
#[derive(Debug)]
pub struct Served {
    /// The route table.
    pub routes: RouteTable<Route>,
    /// `forwarded.trusted-proxies`.
    pub trust: TrustedProxies,
    /// The pages of `[defaults] error-pages`, for answers no route gives (no route).
    pub pages: Arc<ErrorPages>,
}

impl std::ops::Deref for Served {
    type Target = RouteTable<Route>;
    fn deref(&self) -> &RouteTable<Route> {
        &self.routes
    }
}

/// The live routes and trusted proxies, shared by everything that reads or swaps them:
/// requests read the snapshot they started with, the one writer swaps a whole new one in.
pub type SharedTable = std::sync::Arc<arc_swap::ArcSwap<Served>>;

/// What plugins need from outside their route when they are built.
#[derive(Clone, Default)]
pub struct ChainEnv {
    /// The HTTPS listener's port and the certificate lookup, when berth serves HTTPS.
    pub https: Option<(u16, Arc<dyn OwnCertificate>)>,
    /// The htpasswd files routes use, each opened once and watched for changes.
    pub auth_files: Arc<AuthFiles>,
    /// The health of checked upstreams, one state per distinct check.
    pub health: Arc<HealthBook>,
}

impl fmt::Debug for ChainEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainEnv")
            .field("https_port", &self.https.as_ref().map(|h| h.0))
            .finish()
    }
}

/// A route ready to serve: its spec, its plugin chain and its load-balancing state.
pub struct Route {
    /// The validated route.
    pub spec: RouteSpec,
    /// Plugins, in the order their hooks run.
    pub chain: Vec<Arc<dyn Plugin>>,
    /// The route's `error-pages`, read when it was built and again at each reload
    /// ([`Route::reread_pages`]).
    pub pages: arc_swap::ArcSwap<ErrorPages>,
    next: AtomicUsize,
    /// Requests in flight per upstream (counted for `least-conn`).
    active: Box<[AtomicUsize]>,
    /// When each upstream last refused a connection, in ms since [`epoch`] (0: never).
    refused: Box<[std::sync::atomic::AtomicU64]>,
    /// Each upstream's health, with `health-check` (empty without).
    health: Box<[Arc<UpstreamHealth>]>,
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.chain.iter().map(|p| p.name()).collect();
        f.debug_struct("Route")
            .field("spec", &self.spec)
            .field("chain", &names)
            .finish()
    }
}

impl Routable for Route {
    fn host(&self) -> &HostPattern {
        &self.spec.host
    }
    fn path(&self) -> &str {
        &self.spec.path
    }
}

impl Route {
    /// Builds the route's chain from its settings.
    pub fn build(spec: RouteSpec, env: &ChainEnv) -> Route {
        let pages = arc_swap::ArcSwap::new(Route::pages_of(&spec));
        let chain = build_chain(&spec, env);
        let health = match &spec.health_check {
            None => Box::default(),
            Some(check) => {
                // A check connects as the route's requests do: the chain sets the peer up.
                let ctx = RequestCtx::new(Scheme::Http);
                spec.upstreams
                    .iter()
                    .map(|u| {
                        env.health.entry(Probe {
                            peer: peer_for(&spec, &chain, u, "", &ctx),
                            host: match &spec.host {
                                HostPattern::Exact(name) => name.clone(),
                                _ => u.addr.to_string(),
                            },
                            check: check.clone(),
                        })
                    })
                    .collect()
            }
        };
        Route {
            chain,
            health,
            pages,
            active: spec.upstreams.iter().map(|_| AtomicUsize::new(0)).collect(),
            refused: spec
                .upstreams
                .iter()
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
            spec,
            next: AtomicUsize::new(0),
        }
    }

    fn pages_of(spec: &RouteSpec) -> Arc<ErrorPages> {
        spec.settings
            .error_pages
            .as_deref()
            .map(ErrorPages::shared)
            .unwrap_or_default()
    }

    /// Reads the route's `error-pages` again (a reload), keeping its chain and its state.
    pub fn reread_pages(&self) {
        if self.spec.settings.error_pages.is_some() {
            self.pages.store(Route::pages_of(&self.spec));
        }
    }

    /// The index of the upstream a new request tries first, by the route's `lb`, among the
    /// upstreams in the rotation ([`Route::in_rotation`]): the next in turn; the one with the
    /// fewest requests in flight (ties: the next in turn); the client address's; or the one
    /// the request's sticky cookie names (else the next in turn). A client whose address or
    /// cookie names an upstream that is out goes to one that is in.
    pub fn first_choice(&self, ctx: &RequestCtx) -> usize {
        let n = self.spec.upstreams.len().max(1);
        match self.spec.lb {
            Lb::RoundRobin => self.in_turn(),
            Lb::LeastConn => {
                let start = self.in_turn();
                // An upstream that refused a connection lately has no requests in flight and
                // would otherwise be the emptiest: it comes last for REFUSED_FOR; one that is
                // out of the rotation has none either, and comes after every other.
                (0..n)
                    .map(|i| (start + i) % n)
                    .min_by_key(|&i| {
                        (
                            !self.in_rotation(i),
                            self.refused_lately(i),
                            self.active.get(i).map_or(0, |a| a.load(Ordering::Relaxed)),
                        )
                    })
                    .unwrap_or(0)
            }
            Lb::IpHash => {
                let client = ctx.downstream.client.address.or(ctx.downstream.client.peer);
                match client {
                    None => self.in_turn(),
                    Some(ip) => {
                        let hash = ip_hash(ip);
                        let i = index_of(hash, n);
                        if self.in_rotation(i) {
                            i
                        } else {
                            self.nth_in(hash)
                        }
                    }
                }
            }
            Lb::Cookie => Sticky::named(ctx)
                .filter(|&i| self.in_rotation(i))
                .unwrap_or_else(|| self.in_turn()),
        }
    }

    /// The next upstream in turn among those in the rotation.
    fn in_turn(&self) -> usize {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        self.nth_in(turn as u64)
    }

    /// The index of upstream `k` (modulo their number) among those in the rotation, in the
    /// route's order; of upstream `k` among all of them when none is in.
    fn nth_in(&self, k: u64) -> usize {
        let n = self.spec.upstreams.len().max(1);
        let fallback = index_of(k, n);
        if self.health.is_empty() {
            return fallback;
        }
        let ins = (0..n).filter(|&i| self.in_rotation(i)).count() as u64;
        if ins == 0 {
            return fallback;
        }
        (0..n)
            .filter(|&i| self.in_rotation(i))
            .nth(usize::try_from(k % ins).unwrap_or(0))
            .unwrap_or(fallback)
    }

    /// The upstream for an attempt of a request whose first choice was `start`: the first
    /// upstream in the rotation at offset `from` or after (offsets count from `start`,
    /// wrapping round), as `(offset, index, upstream)`; `None` when none is left.
    fn upstream_for(&self, start: usize, from: usize) -> Option<(usize, usize, &Upstream)> {
        let n = self.spec.upstreams.len();
        (from..n)
            .map(|offset| (offset, (start + offset) % n))
            .find(|&(_, index)| self.in_rotation(index))
            .and_then(|(offset, index)| self.spec.upstreams.get(index).map(|u| (offset, index, u)))
    }

    /// The upstream of the request's next attempt: the first in the rotation from where
    /// [`RequestCtx::tries`] says to look, which is recorded there with its index; `None` when
    /// none is left. With `least-conn` the request counts as in flight to it until its
    /// context is dropped (or the next attempt's count replaces it).
    pub fn next_attempt(self: &Arc<Self>, ctx: &mut RequestCtx) -> Option<&Upstream> {
        let (offset, index, upstream) = self.upstream_for(ctx.first_upstream, ctx.tries)?;
        ctx.tries = offset;
        ctx.upstream_index = Some(index);
        if self.spec.lb == Lb::LeastConn {
            ctx.slots.insert(self.in_flight(index));
        }
        Some(upstream)
    }

    /// The request's attempt could not connect (`why`): a failed check of its upstream, and
    /// the next attempt looks past it. Whether an upstream is left to try.
    pub fn attempt_failed(&self, ctx: &mut RequestCtx, why: &str) -> bool {
        if let Some(index) = ctx.upstream_index {
            self.connect_failed(index, why);
        }
        ctx.tries += 1;
        self.upstream_for(ctx.first_upstream, ctx.tries).is_some()
    }

    /// The answer when every upstream is out of the rotation: `503`, and `Retry-After` the
    /// time an upstream needs to come back (its passes, one interval apart).
    pub fn all_out_reply(&self) -> Reply {
        let back = self
            .spec
            .health_check
            .as_ref()
            .map_or(0, |c| (c.interval * c.passes).as_secs_f64().ceil() as u64);
        let mut reply = Reply::text(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "no healthy upstream: every upstream of this route failed its health checks",
        );
        reply
            .headers
            .push((http::header::RETRY_AFTER, http::HeaderValue::from(back)));
        reply
    }

    /// Upstream `index` may be sent requests: it has no checks, or they have not taken it
    /// out.
    pub fn in_rotation(&self, index: usize) -> bool {
        self.health.get(index).is_none_or(|h| h.up())
    }

    /// The route checks its upstreams and every one of them is out.
    pub fn all_out(&self) -> bool {
        !self.health.is_empty() && self.health.iter().all(|h| !h.up())
    }

    /// The health of each upstream, in the order of the route's upstreams (empty without
    /// `health-check`).
    pub fn health(&self) -> &[Arc<UpstreamHealth>] {
        &self.health
    }

    /// The connection to `upstream` for a request to `host`, set up by the chain.
    pub fn peer(&self, upstream: &Upstream, host: &str, ctx: &RequestCtx) -> HttpPeer {
        peer_for(&self.spec, &self.chain, upstream, host, ctx)
    }

    /// Counts a request in flight to upstream `index` until the returned guard is dropped
    /// (with the request's context), for `least-conn`.
    fn in_flight(self: &Arc<Self>, index: usize) -> InFlight {
        if let Some(a) = self.active.get(index) {
            a.fetch_add(1, Ordering::Relaxed);
        }
        InFlight {
            counted: Arc::new(Counted {
                route: self.clone(),
                index,
                done: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Upstream `index` refused a connection (or did not accept it in time, or failed its
    /// TLS handshake): `why`, a failed check.
    pub fn connect_failed(&self, index: usize, why: &str) {
        if let Some(at) = self.refused.get(index) {
            at.store(
                epoch().elapsed().as_millis().max(1) as u64,
                Ordering::Relaxed,
            );
        }
        if let Some(health) = self.health.get(index) {
            health.connect_failed(why);
        }
    }

    fn refused_lately(&self, index: usize) -> bool {
        let at = self
            .refused
            .get(index)
            .map_or(0, |a| a.load(Ordering::Relaxed));
        at != 0
            && (epoch().elapsed().as_millis() as u64).saturating_sub(at)
                < REFUSED_FOR.as_millis() as u64
    }

    /// Requests in flight to each upstream (counted for `least-conn` only).
    pub fn active(&self) -> Vec<usize> {
        self.active
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect()
    }
}

/// How long `least-conn` puts an upstream that refused a connection last.
pub const REFUSED_FOR: std::time::Duration = std::time::Duration::from_secs(10);

fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

/// A request in flight to one upstream of a route, counted until [`InFlight::finish`] or
/// until it is dropped, whichever comes first.
#[derive(Clone)]
pub struct InFlight {
    counted: Arc<Counted>,
}

impl InFlight {
    /// The upstream's answer is complete: no longer counted (before its last bytes reach the
    /// client, so a client's next request finds the count already down).
    pub fn finish(&self) {
        self.counted.finish();
    }
}

struct Counted {
    route: Arc<Route>,
    index: usize,
    done: std::sync::atomic::AtomicBool,
}

impl Counted {
    fn finish(&self) {
        if !self.done.swap(true, Ordering::Relaxed) {
            if let Some(a) = self.route.active.get(self.index) {
                a.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `ip-hash`: a client address's hash, the same in every berth of the same version (a fixed
/// hash, FNV-1a, over the address's bytes).
pub fn ip_hash(ip: std::net::IpAddr) -> u64 {
    let bytes = match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// `k` modulo `n`, as an index.
fn index_of(k: u64, n: usize) -> usize {
    usize::try_from(k % n.max(1) as u64).unwrap_or(0)
}

/// The connection to `upstream` of the route of `spec` for a request to `host` (the SNI of a
/// route whose host is a pattern), set up by `chain`'s `upstream_peer` steps.
fn peer_for(
    spec: &RouteSpec,
    chain: &[Arc<dyn Plugin>],
    upstream: &Upstream,
    host: &str,
    ctx: &RequestCtx,
) -> HttpPeer {
    let tls = spec.proto == UpstreamProto::Https;
    let sni = match (&spec.host, tls) {
        (_, false) => String::new(),
        (HostPattern::Exact(name), true) => name.clone(),
        (_, true) => host.to_string(),
    };
    let mut peer = HttpPeer::new(upstream.addr, tls, sni);
    for plugin in chain {
        plugin.upstream_peer(&mut peer, ctx);
    }
    peer
}

/// The chain for a route, in order. Each step says why it sits where it does.
pub fn build_chain(spec: &RouteSpec, env: &ChainEnv) -> Vec<Arc<dyn Plugin>> {
    let mut chain: Vec<Arc<dyn Plugin>> = Vec::new();
    // HTTPS policy first: a redirect or a refusal answers before anything else runs, and
    // its HSTS header goes on every HTTPS response, berth's own errors included.
    chain.push(Arc::new(HttpsPolicy::new(
        spec.settings.https,
        spec.settings.hsts.clone(),
        spec.profile == Some(Profile::Registry),
        spec.cert_name.clone(),
        env.https.clone(),
    )));
    // The allowlist answers 403 before anything about the request is looked at further; it
    // comes after the HTTPS policy so a redirect to HTTPS never depends on the address.
    if !spec.allow.is_empty() {
        chain.push(Arc::new(Allow::new(spec.allow.clone())));
    }
    // A client certificate is a login: it is read before anything asks for credentials.
    if let Some(client_auth) = &spec.client_auth {
        let ca = env.auth_files.client_ca(&client_auth.ca);
        chain.push(Arc::new(ClientCert::new(client_auth.clone(), ca)));
    }
    let users = spec.auth.as_ref().map(|a| env.auth_files.get(&a.htpasswd));
    // Registry tokens (auth.anonymous-read, auth.repositories): the secret they are
    // signed with.
    let token_secret = spec
        .auth
        .as_ref()
        .filter(|a| a.tokens())
        .map(|a| registry_token::secret_for(a.token_secret_file.as_deref()));
    // The rate limit comes before auth: a client guessing passwords is slowed before a
    // bcrypt check (or a call to the auth service) runs for it.
    if let Some(limit) = spec.rate_limit {
        chain.push(Arc::new(
            RateLimiter::new(limit, users.clone()).with_token_secret(token_secret),
        ));
    }
    // Credentials are asked for only once the client may be served at all: after the HTTPS
    // redirect (no password over plain HTTP when HTTPS is there) and the allowlist.
    if let (Some(auth), Some(users)) = (&spec.auth, users) {
        let rules = auth.repositories.clone().map(|rules| {
            let groups = auth.groups.as_deref().map(|g| env.auth_files.groups(g));
            RepositoryRules::new(rules, groups)
        });
        chain.push(Arc::new(
            BasicAuth::new(users, &auth.realm, auth.open.clone(), token_secret).with_rules(rules),
        ));
    }
    // Forward auth sits where basic auth would (a route has one or the other), and before
    // anything reads the request body, so an upload waits for the decision unbuffered.
    if let Some(forward) = &spec.forward_auth {
        chain.push(Arc::new(ForwardAuth::new(forward)));
    }
    // Maintenance answers once the client is known (a registry's token endpoint and logins
    // still work, so a client reaches the request maintenance refuses and reads why).
    if spec.settings.maintenance {
        chain.push(Arc::new(Maintenance::new(
            spec.settings.maintenance_reads,
            spec.profile == Some(Profile::Registry),
        )));
    }
    // Forwarding headers describe the client as berth saw it; they come first so that every
    // later step (and the upstream) sees the same, de-spoofed view.
    chain.push(Arc::new(Forwarded));
    // Body limits refuse an oversized upload before a byte of it goes upstream (and keep
    // counting for chunked bodies, whose size is only known at the end).
    if spec.settings.max_body > 0 {
        chain.push(Arc::new(BodyLimit::new(spec.settings.max_body)));
    }
    // Timeouts apply to the client connection as soon as the route is known and to the
    // upstream connection when it is made.
    chain.push(Arc::new(Timeouts::new(&spec.settings)));
    // The body's pace comes after the timeouts: it shortens the read timeout they set to what
    // the minimum rate still allows.
    if spec.settings.min_body_rate > 0 {
        chain.push(Arc::new(BodyRate::new(
            spec.settings.min_body_rate,
            berth_core::route::BODY_RATE_GRACE,
            spec.settings.read_timeout,
        )));
    }
    // TLS options only concern the upstream connection; they are set with the timeouts.
    if spec.proto == UpstreamProto::Https {
        chain.push(Arc::new(UpstreamTlsOptions::new(&spec.upstream_tls)));
    }
    // The registry profile runs last: it fixes up what the upstream answered, after
    // everything else has had its say.
    if spec.profile == Some(Profile::Registry) {
        chain.push(Arc::new(RegistryProfile));
    }
    // The sticky cookie is set on the answer, whoever wrote it before.
    if spec.lb == Lb::Cookie {
        chain.push(Arc::new(Sticky::new(
            &spec.host,
            &spec.path,
            &spec.upstreams,
        )));
    }
    // Compression comes after every step that writes response headers: it decides on the
    // response as the client would otherwise get it, and is the only step that rewrites the
    // body.
    if spec.settings.compress {
        chain.push(Arc::new(Compress));
    }
    chain
}

/// Builds the table the proxy serves from validated specs.
pub fn build_table(specs: Vec<RouteSpec>, env: &ChainEnv) -> RouteTable<Route> {
    RouteTable::new(specs.into_iter().map(|s| Arc::new(Route::build(s, env))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route to three upstreams (127.0.0.1:1, :2, :3) with `extra` keys.
    fn three(extra: &str) -> Arc<Route> {
        let text = format!(
            "[listen]\nhttp = \"127.0.0.1:1\"\n[docker]\nenabled = false\n[[route]]\n\
             host = \"a.test\"\nupstreams = [\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:3\"]\n{extra}\n"
        );
        let spec = berth_core::config::parse_config(&text)
            .unwrap_or_else(|e| panic!("{e:?}"))
            .routes
            .remove(0);
        Arc::new(Route::build(spec, &ChainEnv::default()))
    }

    #[test]
    fn every_policy_chooses_among_the_upstreams_in_the_rotation() {
        let checked = "health-check = \"/\"\nhealth-fails = 1";
        for lb in ["round-robin", "least-conn", "ip-hash", "cookie"] {
            let route = three(&format!("{checked}\nlb = \"{lb}\""));
            route.health()[0].record(Err("answered 500".into()));
            assert!(!route.in_rotation(0));
            // Requests in flight to the upstreams in: the one out has none, and least-conn
            // still does not choose it.
            let _busy = [route.in_flight(1), route.in_flight(2)];
            let mut seen = [0; 3];
            for i in 0..30u8 {
                let mut ctx = RequestCtx::new(Scheme::Http);
                ctx.downstream.client.address = Some(std::net::IpAddr::from([10, 0, 0, i]));
                seen[route.first_choice(&ctx)] += 1;
            }
            assert_eq!(seen[0], 0, "{lb}: {seen:?}");
            if lb != "ip-hash" {
                assert_eq!(seen, [0, 15, 15], "{lb}: the others share evenly");
            } else {
                assert!(seen[1] > 0 && seen[2] > 0, "{lb}: {seen:?}");
            }
        }
    }

    #[test]
    fn an_attempt_looks_past_upstreams_out_and_tries_each_once() {
        // 127.0.0.1:2 out; the others refuse, each once, and are not tried again.
        let route = three("health-check = \"/\"\nhealth-fails = 2");
        for _ in 0..2 {
            route.health()[1].record(Err("answered 500".into()));
        }
        let mut ctx = RequestCtx::new(Scheme::Http);
        ctx.first_upstream = 0;
        let mut tried = Vec::new();
        while let Some(upstream) = route.next_attempt(&mut ctx) {
            tried.push(upstream.addr.port());
            if !route.attempt_failed(&mut ctx, "connection refused") {
                break;
            }
        }
        assert_eq!(tried, [1, 3]);
        assert!(route.next_attempt(&mut ctx).is_none());
        assert!(
            route.in_rotation(0) && route.in_rotation(2),
            "one failure each"
        );
        // All out: the 503 says when one may be back (two passes, 5 s apart).
        for i in [0, 2] {
            route.health()[i].record(Err("answered 500".into()));
        }
        assert!(route.all_out());
        let reply = route.all_out_reply();
        assert_eq!(reply.status, 503);
        assert!(reply
            .headers
            .iter()
            .any(|(n, v)| n == http::header::RETRY_AFTER && v == "10"));
    }

    #[test]
    fn least_conn_puts_an_upstream_that_refused_last() {
        let text = "[listen]\nhttp = \"127.0.0.1:1\"\n[docker]\nenabled = false\n[[route]]\n\
                    host = \"a.test\"\nupstreams = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n\
                    lb = \"least-conn\"\n";
        let spec = berth_core::config::parse_config(text)
            .unwrap_or_else(|e| panic!("{e:?}"))
            .routes
            .remove(0);
        let route = Route::build(spec, &ChainEnv::default());
        let ctx = RequestCtx::new(Scheme::Http);
        let firsts: Vec<usize> = (0..4).map(|_| route.first_choice(&ctx)).collect();
        assert_eq!(firsts, [0, 1, 0, 1], "ties go round robin");
        route.connect_failed(0, "connection refused");
        for _ in 0..4 {
            assert_eq!(route.first_choice(&ctx), 1);
        }
    }
}
