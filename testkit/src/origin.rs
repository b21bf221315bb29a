//! An origin server for tests and benchmarks (hyper, HTTP/1.1, plain TCP).
//!
//! Every request body is read in full and hashed before the answer is sent, as a registry
//! does. The answer is JSON ([`Seen`]). Paths with a meaning:
//! - `/silent/<secs>`: wait that long before answering (upstream timeouts);
//! - `/status/<code>`: answer with that status;
//! - `/location?to=<url>`: answer 201 with that `Location` header;
//! - `/healthz`: answer with the status [`Origin::set_health`] set (200 at first; 0: never
//!   answer); these
//!   requests are not counted in [`Origin::hits`] ([`Origin::last_health_check`] keeps the
//!   last).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// What the origin saw of one request; the JSON body of its answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seen {
    /// The origin's name.
    pub origin: String,
    /// Request method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes received.
    pub body_bytes: u64,
    /// SHA-256 of the body, hex.
    pub body_sha256: String,
    /// Whether the body arrived complete (false if the stream broke).
    pub complete: bool,
}

impl Seen {
    /// Every value of a header (name compared case-insensitively).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        values_of(&self.headers, name)
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).first().copied()
    }
}

/// Every value of header `name` (compared case-insensitively) in recorded `headers`.
pub(crate) fn values_of<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// A running origin; stops when dropped.
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    hits: Arc<AtomicU64>,
    broken: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    active: Arc<AtomicU64>,
    peak: Arc<AtomicU64>,
    health: Arc<AtomicU16>,
    last_health: Arc<Mutex<Option<Seen>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Origin {
    /// Starts an origin named `name` on an ephemeral loopback port, on its own runtime.
    ///
    /// # Panics
    /// If the runtime or the listener cannot be set up (test environment broken).
    #[allow(clippy::unwrap_used)]
    pub fn start(name: &str) -> Origin {
        Self::start_on("127.0.0.1:0".parse().unwrap(), name)
    }

    /// Starts an origin on a given address (port 0 = ephemeral).
    ///
    /// # Panics
    /// If the runtime or the listener cannot be set up.
    #[allow(clippy::unwrap_used)]
    pub fn start_on(bind: SocketAddr, name: &str) -> Origin {
        let hits = Arc::new(AtomicU64::new(0));
        let broken = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let (active, peak) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let health = Arc::new(AtomicU16::new(200));
        let last_health: Arc<Mutex<Option<Seen>>> = Arc::default();
        let (hs, lh) = (health.clone(), last_health.clone());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let name = name.to_string();
        let (h, b, r) = (hits.clone(), broken.clone(), received.clone());
        let (a, p) = (active.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind(bind).await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let name: Arc<str> = name.into();
                let serve = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let (name, hits, broken) = (name.clone(), h.clone(), b.clone());
                        let (received, active, peak) = (r.clone(), a.clone(), p.clone());
                        let (health, last_health) = (hs.clone(), lh.clone());
                        tokio::spawn(async move {
                            let svc = service_fn(move |req| {
                                let counters = Counters {
                                    hits: hits.clone(),
                                    broken: broken.clone(),
                                    received: received.clone(),
                                    active: active.clone(),
                                    peak: peak.clone(),
                                    health: health.clone(),
                                    last_health: last_health.clone(),
                                };
                                handle(req, name.clone(), counters)
                            });
                            // Heads up to 2 MiB and 256 headers (Pingora's own limits): the
                            // proxy's limits are what is tested.
                            let _ = http1::Builder::new()
                                .max_buf_size(2 << 20)
                                .max_headers(256)
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stop_rx => {}
                }
            });
        });
        let addr = addr_rx.recv().unwrap();
        Origin {
            addr,
            hits,
            broken,
            received,
            active,
            peak,
            health,
            last_health,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Requests answered so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// Requests whose body stream broke before its end.
    pub fn broken_bodies(&self) -> u64 {
        self.broken.load(Ordering::SeqCst)
    }

    /// Body bytes received so far, counted as they arrive (requests still running included).
    pub fn bytes_received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    /// The most requests that were being received or answered at the same time, so far.
    pub fn peak_concurrent_requests(&self) -> u64 {
        self.peak.load(Ordering::SeqCst)
    }

    /// Requests being received or answered now.
    pub fn in_flight(&self) -> u64 {
        self.active.load(Ordering::SeqCst)
    }

    /// The status `/healthz` answers with from now on (0: no answer at all).
    pub fn set_health(&self, status: u16) {
        self.health.store(status, Ordering::SeqCst);
    }

    /// The last `/healthz` request, as the origin saw it.
    pub fn last_health_check(&self) -> Option<Seen> {
        self.last_health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The origin's live counters.
struct Counters {
    hits: Arc<AtomicU64>,
    broken: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    /// Requests being received or answered now, and the most there ever were.
    active: Arc<AtomicU64>,
    peak: Arc<AtomicU64>,
    /// `/healthz`'s status, and the last request for it.
    health: Arc<AtomicU16>,
    last_health: Arc<Mutex<Option<Seen>>>,
}

/// One request in the origin's `active` count, from its head until its answer (or until
/// hyper drops the handler).
struct Receiving(Arc<AtomicU64>);

impl Receiving {
    fn start(active: Arc<AtomicU64>, peak: &AtomicU64) -> Receiving {
        peak.fetch_max(active.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
        Receiving(active)
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(
    req: hyper::Request<Incoming>,
    name: Arc<str>,
    counters: Counters,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let Counters {
        hits,
        broken,
        received,
        active,
        peak,
        health,
        last_health,
    } = counters;
    let _receiving = Receiving::start(active, &peak);
    let method = req.method().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = req.into_body();
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut complete = true;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    bytes += data.len() as u64;
                    received.fetch_add(data.len() as u64, Ordering::SeqCst);
                    hasher.update(data);
                }
            }
            Err(_) => {
                complete = false;
                broken.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
    }
    let seen = Seen {
        origin: name.to_string(),
        method,
        target: target.clone(),
        headers,
        body_bytes: bytes,
        body_sha256: hex::encode(hasher.finalize()),
        complete,
    };
    let mut status = 200u16;
    let mut location = None;
    if target == "/healthz" {
        status = health.load(Ordering::SeqCst);
        if status == 0 {
            // No answer at all (a hung service).
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        *last_health.lock().unwrap_or_else(|p| p.into_inner()) = Some(seen.clone());
    } else if let Some(secs) = target.strip_prefix("/silent/") {
        let secs: f64 = secs.parse().unwrap_or(1.0);
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    } else if let Some(code) = target.strip_prefix("/status/") {
        status = code.parse().unwrap_or(500);
    } else if let Some(to) = target.strip_prefix("/location?to=") {
        status = 201;
        location = Some(to.to_string());
    }
    if target != "/healthz" {
        hits.fetch_add(1, Ordering::SeqCst);
    }
    let json = serde_json::to_vec(&seen).unwrap_or_default();
    let mut resp = hyper::Response::new(Full::new(Bytes::from(json)));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    if let Some(l) = location.and_then(|l| hyper::header::HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(hyper::header::LOCATION, l);
    }
    Ok(resp)
}
