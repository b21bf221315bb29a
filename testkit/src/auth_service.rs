//! A forward-auth service for tests, keeping the contract Authelia publishes for its
//! forward-auth endpoint (`/api/authz/forward-auth`, the one Traefik's `forwardAuth` calls):
//! it reads the request from `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri` and `-For`,
//! the user from the session cookie or `Authorization`, and answers
//! - `200` with `Remote-User`, `Remote-Groups`, `Remote-Name` and `Remote-Email` for a user;
//! - `401` with a JSON body for a request without a user that is not a browser's
//!   (`X-Requested-With: XMLHttpRequest`, or an `Accept` without `text/html`);
//! - `302` (GET, HEAD) or `303` (other methods) to its portal with
//!   `rd=<proto>://<host><uri>` and a `Set-Cookie`, for a browser without a user.
//!
//! Users: the cookie `session=alice` or `Authorization: Basic alice:secret` is alice. Paths
//! under `/public` are open to anyone (`200` without user headers), as an Authelia `bypass`
//! rule makes them. Odd answers, by cookie: `session=hang` gets no answer at all,
//! `session=big` a 401 with a 100 KiB body, `session=chunked` a 401 sent chunked with
//! `Connection: close`. Every request is recorded, and can be waited for.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The portal a browser without a session is sent to.
pub const PORTAL: &str = "https://auth.example.test/";

/// One request the service answered (or was asked and held).
#[derive(Debug, Clone)]
pub struct Asked {
    /// Method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes received.
    pub body_bytes: usize,
}

impl Asked {
    /// Every value of a header.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        crate::origin::values_of(&self.headers, name)
    }

    /// The only value of a header; `None` when absent.
    ///
    /// # Panics
    /// When the header appears more than once.
    pub fn header(&self, name: &str) -> Option<&str> {
        let all = self.header_all(name);
        assert!(all.len() <= 1, "{name} sent {} times: {all:?}", all.len());
        all.first().copied()
    }
}

#[derive(Default)]
struct Log {
    asked: Mutex<VecDeque<Asked>>,
    count: Mutex<usize>,
    changed: Condvar,
}

/// A running auth service; stops when dropped.
pub struct AuthService {
    /// Where it listens.
    pub addr: SocketAddr,
    log: Arc<Log>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AuthService {
    /// Starts the service on an ephemeral loopback port, on its own runtime.
    ///
    /// # Panics
    /// If the runtime or the listener cannot be set up.
    #[allow(clippy::unwrap_used)]
    pub fn start() -> AuthService {
        let log = Arc::new(Log::default());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let shared = log.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let serve = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let log = shared.clone();
                        tokio::spawn(async move {
                            let svc = service_fn(move |req| handle(req, log.clone()));
                            let _ = http1::Builder::new()
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
        AuthService {
            addr,
            log,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// The URL berth is configured with.
    pub fn url(&self) -> String {
        format!("http://{}/api/authz/forward-auth", self.addr)
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        *self
            .log
            .count
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits (up to `limit`) for the next request not yet taken, and takes it.
    pub fn next(&self, limit: Duration) -> Option<Asked> {
        let asked = self
            .log
            .asked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut asked, _) = self
            .log
            .changed
            .wait_timeout_while(asked, limit, |q| q.is_empty())
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        asked.pop_front()
    }
}

impl Drop for AuthService {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn user_of(asked: &Asked) -> Option<&'static str> {
    let cookie = asked.header_all("cookie").join("; ");
    if cookie.split(';').any(|c| c.trim() == "session=alice") {
        return Some("alice");
    }
    // "alice:secret"
    if asked.header("authorization") == Some("Basic YWxpY2U6c2VjcmV0") {
        return Some("alice");
    }
    None
}

/// A body of unknown length, so hyper sends it chunked.
struct Chunked(Option<Bytes>);

impl hyper::body::Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.take().map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

type Answer = hyper::Response<BoxBody<Bytes, Infallible>>;

fn full(b: impl Into<Bytes>) -> BoxBody<Bytes, Infallible> {
    Full::new(b.into()).boxed()
}

async fn handle(req: hyper::Request<Incoming>, log: Arc<Log>) -> Result<Answer, Infallible> {
    let (parts, body) = req.into_parts();
    let body_bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let asked = Asked {
        method: parts.method.to_string(),
        target: parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_bytes,
    };
    {
        let mut q = log
            .asked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        q.push_back(asked.clone());
        *log.count
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        log.changed.notify_all();
    }
    let cookie = asked.header_all("cookie").join("; ");
    if cookie.contains("session=hang") {
        std::future::pending::<()>().await;
    }
    let builder = hyper::Response::builder();
    let response = if cookie.contains("session=big") {
        builder.status(401).body(full(vec![b'x'; 100 * 1024]))
    } else if cookie.contains("session=chunked") {
        builder
            .status(401)
            .header("Connection", "close")
            .header("Content-Type", "text/plain")
            .body(Chunked(Some(Bytes::from_static(b"sent in chunks"))).boxed())
    } else if asked
        .header("x-forwarded-uri")
        .is_some_and(|u| u.starts_with("/public"))
    {
        builder.status(200).body(full(Bytes::new()))
    } else if let Some(user) = user_of(&asked) {
        builder
            .status(200)
            .header("Remote-User", user)
            .header("Remote-Groups", "admins,dev")
            .header("Remote-Name", "Alice Liddell")
            .header("Remote-Email", "alice@example.test")
            .body(full(Bytes::new()))
    } else {
        let browser = asked.header("x-requested-with") != Some("XMLHttpRequest")
            && asked
                .header("accept")
                .is_some_and(|a| a.contains("text/html"));
        if browser {
            let get = matches!(asked.header("x-forwarded-method"), Some("GET" | "HEAD"));
            let rd = format!(
                "{}://{}{}",
                asked.header("x-forwarded-proto").unwrap_or("?"),
                asked.header("x-forwarded-host").unwrap_or("?"),
                asked.header("x-forwarded-uri").unwrap_or("?"),
            );
            let location = format!("{PORTAL}?rd={rd}");
            builder
                .status(if get { 302 } else { 303 })
                .header("Location", location.as_str())
                .header("Set-Cookie", "flow=started; Path=/; HttpOnly")
                .header("Content-Type", "text/html; charset=utf-8")
                .body(full(format!("<a href=\"{location}\">Found</a>")))
        } else {
            builder
                .status(401)
                .header("Content-Type", "application/json")
                .header("WWW-Authenticate", "Basic realm=\"Authelia\"")
                .body(full(Bytes::from_static(b"{\"status\":\"KO\"}")))
        }
    };
    Ok(response.unwrap_or_else(|_| hyper::Response::new(full(Bytes::new()))))
}
