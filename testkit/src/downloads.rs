//! An HTTP/1.1 origin of large responses: `GET /N` streams N bytes (a fixed pattern, so a
//! client can check them), as fast as the reader takes them; `GET /events` is an event stream
//! that sends one event and then stays open and quiet, as server-sent events do between events. It counts its open connections,
//! so a test sees when a proxy gives its upstream connections back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The byte at `offset` of every response.
pub fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8
}

const CHUNK: usize = 64 << 10;

/// A running download origin; stops when dropped.
pub struct Downloads {
    /// Where it listens.
    pub addr: SocketAddr,
    open: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One open connection in the count, until dropped.
struct Open(Arc<AtomicU64>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Downloads {
    /// Starts the origin on an ephemeral loopback port, on its own runtime.
    ///
    /// # Panics
    /// If the runtime or the listener cannot be set up.
    #[allow(clippy::unwrap_used)]
    pub fn start() -> Downloads {
        let open = Arc::new(AtomicU64::new(0));
        let counted = open.clone();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
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
                        counted.fetch_add(1, Ordering::SeqCst);
                        let open = Open(counted.clone());
                        tokio::spawn(async move {
                            let _open = open;
                            let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| {
                                if req.uri().path() == "/events" {
                                    return std::future::ready(Ok::<_, Infallible>(events()));
                                }
                                let len: u64 = req
                                    .uri()
                                    .path()
                                    .trim_start_matches('/')
                                    .parse()
                                    .unwrap_or(0);
                                std::future::ready(Ok::<_, Infallible>(answer(len)))
                            });
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
        Downloads {
            addr: addr_rx.recv().unwrap(),
            open,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Connections open now.
    pub fn open_connections(&self) -> u64 {
        self.open.load(Ordering::SeqCst)
    }
}

type Body = StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

/// `len` bytes of the pattern, produced one chunk at a time as the connection takes them.
fn answer(len: u64) -> hyper::Response<Body> {
    use futures_util::StreamExt;
    // A chunk starts anywhere in the first 251 bytes of the block and is at most CHUNK long.
    let block: Bytes = (0..(251 * 263) as u64)
        .map(pattern)
        .collect::<Vec<u8>>()
        .into();
    let stream = futures_util::stream::unfold(0u64, move |sent| {
        let block = block.clone();
        async move {
            if sent >= len {
                return None;
            }
            let n = (len - sent).min(CHUNK as u64) as usize;
            // Every chunk starts at a multiple of 251 bytes into the block.
            let start = (sent % 251) as usize;
            let chunk = block.slice(start..start + n);
            Some((Ok(Frame::data(chunk)), sent + n as u64))
        }
    })
    .boxed();
    let mut resp = hyper::Response::new(StreamBody::new(stream));
    resp.headers_mut().insert(
        hyper::header::CONTENT_LENGTH,
        hyper::header::HeaderValue::from(len),
    );
    resp
}

/// One event, then an open stream that sends nothing more.
fn events() -> hyper::Response<Body> {
    use futures_util::StreamExt;
    let first = Frame::data(Bytes::from_static(b"data: hello\n\n"));
    let stream = futures_util::stream::once(std::future::ready(Ok(first)))
        .chain(futures_util::stream::pending())
        .boxed();
    let mut resp = hyper::Response::new(StreamBody::new(stream));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    resp
}

impl Drop for Downloads {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
