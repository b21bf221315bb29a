//! The registry cache: blobs and manifests fetched by digest, served from the edge on routes
//! with `cache = true` (the registry profile). pingora-proxy's cache phases do the work — the
//! cache lock (one upstream fetch per digest), ranges on hits, `HEAD` on hits — over the disk
//! storage of [`crate::cache_storage`]; this module holds what berth adds: which requests the
//! cache may answer, and the read check that runs before any hit is served.
//!
//! A digest says what the bytes are, not who may read them, nor which repository holds them.
//! So before serving a hit, berth asks the registry the same question with a `HEAD` of the
//! same path, carrying the client's own credentials and the headers berth's chain adds
//! ([`RegistryCache::may_read`]); only a `200` lets the hit be served. Anything else (a `401`,
//! a `404` from a repository that does not hold the digest, no answer) turns the hit into a
//! miss: the request goes to the registry, which answers it as it would without the cache.
//!
//! ```toml
//! [cache]
//! dir = "berth-state/cache"
//! max-size = "20GiB"
//!
//! [[route]]
//! host = "registry.example.com"
//! upstreams = ["127.0.0.1:5000"]
//! profile = "registry"
//! cache = true
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora_core::connectors::http::v1::Connector;
use pingora_http::RequestHeader;
use pingora_proxy::Session;

use berth_core::config::cache::CacheConfig;
use berth_core::logging::shown;
use berth_core::route::{by_digest, Profile};

use crate::blob_store::{BlobStore, Digest};
use crate::cache_storage::DiskStorage;
use crate::chain::Route;
use crate::plugin::RequestCtx;

/// How long the first request for a digest may take to get the registry's answer head
/// before the requests waiting for it go to the registry themselves (its body is then read
/// by all of them as it arrives).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest a read check waits for the registry's answer; past it the request goes to
/// the registry itself.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// Request headers that are not sent on a read check: hop-by-hop headers, and those that ask
/// for part of an answer or a condition on it (the check asks for the whole answer's status).
const NOT_CHECKED: [http::HeaderName; 11] = [
    http::header::CONNECTION,
    http::header::TE,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::CONTENT_LENGTH,
    http::header::RANGE,
    http::header::IF_RANGE,
    http::header::IF_MATCH,
    http::header::IF_NONE_MATCH,
    http::header::IF_MODIFIED_SINCE,
    http::header::IF_UNMODIFIED_SINCE,
];

/// The cache every listener shares: its storage, once opened, and its lock. The store is
/// opened when a route first asks for it, so a berth without `cache = true` routes never
/// creates the directory.
pub struct RegistryCache {
    config: CacheConfig,
    opening: AtomicBool,
    /// A failure to start the opening thread was logged.
    told: AtomicBool,
    storage: Arc<OnceLock<&'static DiskStorage>>,
    lock: &'static CacheKeyLockImpl,
    connector: Connector,
}

impl std::fmt::Debug for RegistryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCache")
            .field("storage", &self.storage.get())
            .finish()
    }
}

/// What the cache made of a request on a route with `cache = true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// Not a request the cache answers (tags, uploads, ...), or the cache is not open.
    Bypass,
    /// Looked up by its digest.
    Lookup {
        /// The digest.
        digest: Digest,
        /// A manifest (else a blob).
        manifest: bool,
        /// A hit the registry let this client read was served.
        served: bool,
    },
}

impl CacheUse {
    /// What the request's cache use was, if it had one.
    pub fn of(ctx: &RequestCtx) -> Option<CacheUse> {
        ctx.slots.get::<CacheUse>().copied()
    }

    /// Records that the request was served from the cache.
    pub fn served(ctx: &mut RequestCtx) {
        if let Some(CacheUse::Lookup {
            digest, manifest, ..
        }) = CacheUse::of(ctx)
        {
            ctx.slots.insert(CacheUse::Lookup {
                digest,
                manifest,
                served: true,
            });
        }
    }

    /// The `result` label of `berth_cache_requests_total`: `hit`, `miss` or `bypass`.
    pub fn result(self) -> &'static str {
        match self {
            CacheUse::Bypass => "bypass",
            CacheUse::Lookup { served: true, .. } => "hit",
            CacheUse::Lookup { served: false, .. } => "miss",
        }
    }
}

impl RegistryCache {
    /// A cache for `config`, with nothing open yet (every request passes through until
    /// [`Self::open_in_background`] has opened it).
    pub fn new(config: CacheConfig) -> RegistryCache {
        let lock: Box<CacheKeyLockImpl> = CacheLock::new_boxed(LOCK_TIMEOUT);
        RegistryCache {
            config,
            opening: AtomicBool::new(false),
            told: AtomicBool::new(false),
            storage: Arc::new(OnceLock::new()),
            lock: Box::leak(lock),
            connector: Connector::new(None),
        }
    }

    /// Starts opening the store on a thread of its own, once (later calls do nothing):
    /// indexing a large cache takes a while, and requests pass through until it is open.
    pub fn open_in_background(&self) {
        if self.opening.load(Ordering::Acquire) || self.opening.swap(true, Ordering::AcqRel) {
            return;
        }
        let (storage, config) = (self.storage.clone(), self.config.clone());
        if let Err(e) = std::thread::Builder::new()
            .name("berth-cache-open".into())
            .spawn(move || open(&storage, &config))
        {
            // Tried again by the next request that wants the cache (said once).
            self.opening.store(false, Ordering::Release);
            if !self.told.swap(true, Ordering::AcqRel) {
                tracing::error!(
                    error = %e,
                    "cache: cannot start the thread that opens the cache; requests pass \
                     through to the registry until it starts"
                );
            }
        }
    }

    /// The storage, once open.
    pub fn storage(&self) -> Option<&'static DiskStorage> {
        self.storage.get().copied()
    }

    /// The cache lock every cached request takes.
    pub fn lock(&self) -> &'static CacheKeyLockImpl {
        self.lock
    }

    /// Whether the cache answers this request, recorded in its context: a `GET` or `HEAD`
    /// of a blob or manifest by digest, on a route with `cache = true`. A `HEAD` is answered
    /// only from an entry already kept (a `HEAD` that is not, as a push asks for each layer,
    /// is never turned into a fetch of the whole blob). The storage to look it up in; `None`: the
    /// cache is not for it.
    pub fn wants(
        &self,
        route: &Route,
        session: &Session,
        ctx: &mut RequestCtx,
    ) -> Option<&'static DiskStorage> {
        if !route.spec.cache || route.spec.profile != Some(Profile::Registry) {
            return None;
        }
        self.open_in_background();
        let req = session.req_header();
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let found = by_digest(req.method.as_str(), path)
            .and_then(|b| Digest::parse(b.digest).map(|d| (d, b.manifest)))
            .zip(self.storage());
        let Some(((digest, manifest), storage)) = found else {
            ctx.slots.insert(CacheUse::Bypass);
            return None;
        };
        if req.method == http::Method::HEAD && !storage.store().contains(&digest) {
            ctx.slots.insert(CacheUse::Bypass);
            return None;
        }
        ctx.slots.insert(CacheUse::Lookup {
            digest,
            manifest,
            served: false,
        });
        Some(storage)
    }

    /// The read check before a hit is served: a `HEAD` of the request's path to the route's
    /// registry, with the client's headers (its credentials among them) and those the route's
    /// chain adds to every upstream request. `Ok` only when the registry answers `200`; the
    /// error says what it answered instead.
    ///
    /// # Errors
    /// The registry's answer when it is not `200`, or why there was none.
    pub async fn may_read(
        &self,
        route: &Arc<Route>,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<(), String> {
        let mut head = self.check_request(session, ctx)?;
        for plugin in &route.chain {
            plugin
                .upstream_request_filter(session, &mut head, ctx)
                .await
                .map_err(|e| e.to_string())?;
        }
        let index = route.first_choice(ctx);
        let upstream = route
            .spec
            .upstreams
            .get(index)
            .ok_or_else(|| "no upstream".to_string())?;
        let peer = route.peer(upstream, &ctx.host, ctx);
        let ask = async {
            let (mut upstream, _) = self
                .connector
                .get_http_session(&peer)
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            upstream
                .write_request_header(Box::new(head))
                .await
                .map_err(|e| format!("cannot send the check: {e}"))?;
            upstream
                .read_response()
                .await
                .map_err(|e| format!("no answer: {e}"))?;
            let status = upstream
                .get_status()
                .ok_or_else(|| "no status in the answer".to_string())?;
            self.connector
                .release_http_session(upstream, &peer, Some(Duration::from_secs(60)))
                .await;
            if status == http::StatusCode::OK {
                Ok(())
            } else {
                Err(format!("the registry answered {status}"))
            }
        };
        let timeout =
            CHECK_TIMEOUT.min(route.spec.settings.read_timeout.max(Duration::from_secs(1)));
        tokio::time::timeout(timeout, ask)
            .await
            .unwrap_or_else(|_| Err("no answer in time".to_string()))
    }

    /// The check's request head: `HEAD`, the request's path, its headers but those in
    /// [`NOT_CHECKED`], and the `Host` it was sent to.
    fn check_request(&self, session: &Session, ctx: &RequestCtx) -> Result<RequestHeader, String> {
        let req = session.req_header();
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut head = RequestHeader::build("HEAD", path.as_bytes(), Some(req.headers.len() + 2))
            .map_err(|e| e.to_string())?;
        for (name, value) in &req.headers {
            if !NOT_CHECKED.contains(name) && *name != http::header::HOST {
                head.append_header(name.clone(), value.clone())
                    .map_err(|e| e.to_string())?;
            }
        }
        head.insert_header(http::header::HOST, ctx.authority.as_str())
            .map_err(|e| e.to_string())?;
        Ok(head)
    }
}

/// The headers an entry keeps from the registry's answer: what describes the bytes, nothing
/// about the client or the moment (no cookies, no dates, no hop-by-hop headers).
const KEPT: [http::HeaderName; 5] = [
    http::header::CONTENT_TYPE,
    http::header::CONTENT_LENGTH,
    http::header::ETAG,
    http::HeaderName::from_static("docker-content-digest"),
    http::HeaderName::from_static("docker-distribution-api-version"),
];

/// Whether `content_type` is a manifest's media type (Docker's or OCI's manifests and
/// indexes), as a registry serves a manifest: `application/vnd.<...>+json` (or `+prettyjws`)
/// naming a manifest or an index.
pub fn is_manifest_type(content_type: Option<&http::HeaderValue>) -> bool {
    let Some(t) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let t = t
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    t.starts_with("application/vnd.")
        && (t.ends_with("+json") || t.ends_with("+prettyjws"))
        && (t.contains(".manifest.") || t.contains(".index."))
}

/// The answer as an entry keeps it, when it may be kept: a `200` of a known length, not
/// content-encoded (the digest names the bytes as stored), a manifest's media type for a
/// manifest request; only the headers that describe the bytes (`Content-Type`,
/// `Content-Length`, `ETag`, `Docker-Content-Digest`, `Docker-Distribution-Api-Version`).
/// `None`: passed through, not kept.
pub fn entry_header(
    resp: &pingora_http::ResponseHeader,
    manifest: bool,
) -> Option<pingora_http::ResponseHeader> {
    let headers = &resp.headers;
    let encoded = headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"));
    if resp.status != http::StatusCode::OK
        || encoded
        || !headers.contains_key(http::header::CONTENT_LENGTH)
        || manifest != is_manifest_type(headers.get(http::header::CONTENT_TYPE))
    {
        return None;
    }
    let mut kept = pingora_http::ResponseHeader::build(200, Some(KEPT.len())).ok()?;
    for name in &KEPT {
        for value in headers.get_all(name) {
            kept.append_header(name.clone(), value.clone()).ok()?;
        }
    }
    Some(kept)
}

/// Whether an entry kept with `headers` answers a request for a manifest (`manifest`) or a
/// blob: the same bytes may be both (a manifest's bytes pushed as a blob), and each is served
/// with its own headers.
pub fn kind_matches(headers: &http::HeaderMap, manifest: bool) -> bool {
    manifest == is_manifest_type(headers.get(http::header::CONTENT_TYPE))
}

/// Opens the store in `config.dir` (indexing what a previous run kept) into `storage`; on
/// failure the cache stays closed, said once at error level, and every request passes through.
fn open(storage: &OnceLock<&'static DiskStorage>, config: &CacheConfig) {
    let dir = shown(&config.dir.display().to_string(), 300);
    match BlobStore::open(&config.dir, config.max_size) {
        Ok(store) => {
            let (entries, bytes) = store.usage();
            let opened: &'static DiskStorage = Box::leak(Box::new(DiskStorage::new(store)));
            if storage.set(opened).is_ok() {
                tracing::info!(
                    %dir,
                    entries,
                    bytes,
                    max_size = config.max_size,
                    "registry cache open"
                );
            }
        }
        Err(e) => tracing::error!(
            %dir,
            error = %e,
            "cache: cannot use the cache directory; routes with cache = true pass every \
             request to their registry"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&str, &str)]) -> pingora_http::ResponseHeader {
        let mut resp =
            pingora_http::ResponseHeader::build(status, None).unwrap_or_else(|e| panic!("{e}"));
        for (name, value) in headers {
            resp.append_header(name.to_string(), *value)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        resp
    }

    #[test]
    fn manifest_types_are_told_from_the_rest() {
        for t in [
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.index.v1+json; charset=utf-8",
            "Application/VND.OCI.image.index.v1+JSON",
        ] {
            assert!(
                is_manifest_type(Some(&http::HeaderValue::from_static(t))),
                "{t}"
            );
        }
        for t in [
            "application/octet-stream",
            "application/json",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.config.v1+json",
            "text/plain",
        ] {
            assert!(
                !is_manifest_type(Some(&http::HeaderValue::from_static(t))),
                "{t}"
            );
        }
        assert!(!is_manifest_type(None));
    }

    #[test]
    fn only_a_plain_200_of_its_kind_and_length_is_kept_with_its_describing_headers() {
        let blob = [
            ("content-type", "application/octet-stream"),
            ("content-length", "10"),
            ("docker-content-digest", "sha256:x"),
            ("set-cookie", "a=b"),
            ("date", "Sun, 06 Dec 2026 05:00:00 GMT"),
            ("x-anything", "y"),
        ];
        let kept = entry_header(&answer(200, &blob), false).unwrap_or_else(|| panic!("kept"));
        let names: Vec<&str> = kept.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(
            names,
            ["content-type", "content-length", "docker-content-digest"]
        );
        // The same bytes asked for as a manifest: not with a blob's type.
        assert!(entry_header(&answer(200, &blob), true).is_none());
        let manifest = [
            ("content-type", "application/vnd.oci.image.manifest.v1+json"),
            ("content-length", "10"),
        ];
        assert!(entry_header(&answer(200, &manifest), true).is_some());
        assert!(entry_header(&answer(200, &manifest), false).is_none());
        for refused in [
            answer(206, &blob),
            answer(307, &blob),
            answer(200, &[("content-type", "application/octet-stream")]),
            answer(
                200,
                &[("content-length", "10"), ("content-encoding", "gzip")],
            ),
        ] {
            assert!(
                entry_header(&refused, false).is_none(),
                "{:?}",
                refused.status
            );
        }
        let identity = [("content-length", "10"), ("content-encoding", "identity")];
        assert!(entry_header(&answer(200, &identity), false).is_some());
        assert!(kind_matches(&kept.headers, false));
        assert!(!kind_matches(&kept.headers, true));
    }
}
