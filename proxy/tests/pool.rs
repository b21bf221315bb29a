//! Upstream connections are pooled and reused: many requests, on one client connection or on
//! many, open at most one upstream connection per berth thread; an upstream that closes an
//! idle pooled connection — at any moment, the moment berth reuses it included — never fails
//! a request, and berth lets go of its end; a thread's pool keeps at most
//! `upstream_keepalive_pool_size` idle connections; routes to one TLS upstream share its pooled
//! connections only when they trust the same CA certificates. Requests without a body take
//! their own path through berth: responses without a body, in pieces, or cut short leave
//! the upstream connection reusable exactly when they were read to their end, and a client
//! that leaves while its request waits closes the upstream side.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_testkit::process::{wait_until, BerthProcess};
use common::{berth, config, route};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The upstreams' answer to every request they answer.
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Reads the next request head on an upstream connection (the tests send no bodies) and takes
/// it out of `buf`; `false` when the connection closed first.
async fn next_head(s: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            return true;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Waits until the other end (berth) closes `s`.
async fn until_closed(s: &mut TcpStream) {
    let mut chunk = [0u8; 4096];
    while let Ok(n) = s.read(&mut chunk).await {
        if n == 0 {
            break;
        }
    }
}

/// An HTTP/1.1 upstream that answers `ok` to every request, keeps connections alive, and
/// closes a connection `idle` after its last answer (`None`: never). Counts the connections
/// it accepted.
async fn upstream(idle: Option<Duration>) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let read = next_head(&mut s, &mut buf);
                    let got = match idle {
                        Some(idle) => tokio::time::timeout(idle, read).await.unwrap_or(false),
                        None => read.await,
                    };
                    if !got || s.write_all(OK).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// A GET on a kept-alive client connection; the status.
async fn get(s: &mut TcpStream, path: &str) -> u16 {
    request(
        s,
        format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes(),
    )
    .await
}

/// One request, as `raw`, on a kept-alive client connection; the status.
async fn request(s: &mut TcpStream, raw: &[u8]) -> u16 {
    s.write_all(raw).await.unwrap();
    let head = read_until(s, b"\r\n\r\n").await;
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    head[9..12].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_reuse_pooled_upstream_connections() {
    let (up, accepted) = upstream(None).await;
    let b = berth(&config(&route("app.test", &[up], "")));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;

    // 200 requests on one client connection: one upstream connection.
    let mut s = TcpStream::connect(b.http).await.unwrap();
    for i in 0..200 {
        assert_eq!(get(&mut s, &format!("/{i}")).await, 200);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    drop(s);

    // 100 client connections, one after another, each for a few requests: their threads'
    // pools hold at most one upstream connection each.
    for i in 0..100 {
        let mut s = TcpStream::connect(b.http).await.unwrap();
        for j in 0..3 {
            assert_eq!(get(&mut s, &format!("/{i}/{j}")).await, 200);
        }
    }
    let opened = accepted.load(Ordering::SeqCst);
    assert!(
        opened <= threads,
        "{opened} upstream connections for 100 client connections one after another \
         ({threads} threads)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_closing_an_idle_pooled_connection_never_fails_a_request() {
    // The upstream closes each connection 30 ms after its last answer; the client's pauses
    // sweep across that moment, so that some reuses meet a connection closing as berth takes
    // it from the pool.
    let idle = Duration::from_millis(30);
    let (up, _) = upstream(Some(idle)).await;
    let b = berth(&config(&route("app.test", &[up], "")));
    let mut s = TcpStream::connect(b.http).await.unwrap();
    for i in 0..300u64 {
        let status = get(&mut s, &format!("/{i}")).await;
        assert_eq!(status, 200, "request {i}\n{}", b.log());
        tokio::time::sleep(Duration::from_micros(20_000 + (i % 40) * 500)).await;
    }
}

/// An upstream that answers the first request of each connection and, on the second, reads it
/// and closes without a word — as an upstream does whose idle timeout ends the very moment a
/// pooled connection is reused. Counts the requests it answered.
async fn closes_on_reuse() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(AtomicU64::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for request in 0..2 {
                    if !next_head(&mut s, &mut buf).await || request == 1 {
                        return;
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    if s.write_all(OK).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, answered)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reused_connection_closed_by_the_upstream_is_retried_for_idempotent_requests_only() {
    let (up, answered) = closes_on_reuse().await;
    let b = berth(&config(&route("app.test", &[up], "")));
    let mut s = TcpStream::connect(b.http).await.unwrap();
    // Every GET after the first meets a pooled connection that closes: each is sent again on
    // a new connection to the same (only) upstream.
    for i in 0..20 {
        assert_eq!(
            get(&mut s, &format!("/{i}")).await,
            200,
            "GET {i}\n{}",
            b.log()
        );
    }
    assert_eq!(answered.load(Ordering::SeqCst), 20);
    // A POST may have been acted on: not sent again.
    s.write_all(b"POST /form HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2\r\n\r\nhi")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 502", "{}", b.log());
    assert_eq!(answered.load(Ordering::SeqCst), 20);
}

/// `n` GETs at once, each on its own client connection, all answered 200; the connections,
/// kept open.
async fn gets_at_once(b: &BerthProcess, n: usize) -> Vec<TcpStream> {
    let http = b.http;
    let gets: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(async move {
                let mut s = TcpStream::connect(http).await.unwrap();
                let status = get(&mut s, &format!("/{i}")).await;
                (status, s)
            })
        })
        .collect();
    let mut clients = Vec::new();
    for answer in gets {
        let (status, s) = answer.await.unwrap();
        assert_eq!(status, 200, "{}", b.log());
        clients.push(s);
    }
    clients
}

/// Waits (10 s at most) until `done` holds, off the test's runtime, whose tasks are the upstream.
fn until(b: &BerthProcess, what: &str, done: impl FnMut() -> bool) {
    tokio::task::block_in_place(|| wait_until(Duration::from_secs(10), what, done, || b.log()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pooled_connection_the_upstream_closed_is_never_used_for_a_post() {
    // The upstream closes each connection 30 ms after its answer; each POST comes 150 ms after
    // the last answer, after the close and (usually) before the pool's next sweep. A POST is
    // not sent again after a failure on a reused connection: only the check when a pooled
    // connection is taken keeps it off the closed one (else 502).
    let (up, _) = upstream(Some(Duration::from_millis(30))).await;
    let b = berth(&config(&route("app.test", &[up], "")));
    let mut s = TcpStream::connect(b.http).await.unwrap();
    assert_eq!(get(&mut s, "/").await, 200);
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let post = b"POST /form HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(request(&mut s, post).await, 200, "POST {i}\n{}", b.log());
    }
}

/// An upstream that answers one request per connection and half-closes it 300 ms later.
/// Counts the connections it accepted, and those whose other end (berth) then closed.
async fn half_closing() -> (SocketAddr, Arc<AtomicU64>, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicU64::new(0));
    let (accepts, closes) = (accepted.clone(), closed.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            accepts.fetch_add(1, Ordering::SeqCst);
            let closes = closes.clone();
            tokio::spawn(async move {
                if !next_head(&mut s, &mut Vec::new()).await || s.write_all(OK).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = s.shutdown().await;
                until_closed(&mut s).await;
                closes.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, accepted, closed)
}

#[tokio::test(flavor = "multi_thread")]
async fn berth_closes_its_end_of_a_pooled_connection_the_upstream_closed() {
    // Nothing asks for these connections again: berth must notice the upstream's close by
    // itself and close its end, not hold it until a request comes.
    let (up, accepted, closed) = half_closing().await;
    let b = berth(&config(&route("app.test", &[up], "")));
    let _clients = gets_at_once(&b, 8).await;
    until(
        &b,
        "berth closes every connection the upstream closed",
        || {
            let accepted = accepted.load(Ordering::SeqCst);
            accepted > 0 && closed.load(Ordering::SeqCst) == accepted
        },
    );
}

/// An upstream that holds the first request of every connection until `n` have come in,
/// answers them all, and keeps the connections open. Counts the connections berth closed.
async fn gathering(n: usize) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let closed = Arc::new(AtomicU64::new(0));
    let count = closed.clone();
    let all_in = Arc::new(tokio::sync::Barrier::new(n));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (count, all_in) = (count.clone(), all_in.clone());
            tokio::spawn(async move {
                if !next_head(&mut s, &mut Vec::new()).await {
                    return;
                }
                all_in.wait().await;
                if s.write_all(OK).await.is_err() {
                    return;
                }
                until_closed(&mut s).await;
                count.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, closed)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thread_keeps_exactly_its_pool_size_of_idle_connections() {
    // Pingora's `upstream_keepalive_pool_size`, which berth leaves at its default: per thread.
    // berth runs on one CPU, so with one thread: of n connections released together, exactly
    // n - 128 are closed.
    const POOL: usize = 128;
    let dir = tempfile::tempdir().unwrap();
    let one_cpu = dir.path().join("berth-on-one-cpu");
    std::fs::write(
        &one_cpu,
        format!(
            "#!/bin/sh\nexec taskset -c 0 {} \"$@\"\n",
            env!("CARGO_BIN_EXE_berth")
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &one_cpu,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let n = POOL + 40;
    let (up, closed) = gathering(n).await;
    let b = BerthProcess::start(&one_cpu, &config(&route("app.test", &[up], ""))).unwrap();
    // n requests at once: n upstream connections, all released together.
    let _clients = gets_at_once(&b, n).await;
    until(
        &b,
        "berth closes the 40 idle connections over its pool size",
        || closed.load(Ordering::SeqCst) >= 40,
    );
    // and no more: nothing else closes them (an absence, so a pause rather than a signal)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(closed.load(Ordering::SeqCst), 40, "{}", b.log());
}

/// A TLS upstream (a certificate for `tls.test` from `ca`) that answers `ok` to every request
/// and keeps connections alive. Counts the TLS handshakes it completed.
async fn tls_upstream(ca: &berth_testkit::tls::TestCa) -> (SocketAddr, Arc<AtomicU64>) {
    let pem = ca.issue(&["tls.test"]);
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.cert.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = rustls_pemfile::private_key(&mut pem.key.as_bytes())
        .unwrap()
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicU64::new(0));
    let count = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(s).await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let mut buf = Vec::new();
                while next_head(&mut s, &mut buf).await {
                    if s.write_all(OK).await.is_err() || s.flush().await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, handshakes)
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_to_one_tls_upstream_share_pooled_connections_only_if_they_trust_the_same_cas() {
    use berth_testkit::tls::TestCa;
    let (ca, other_ca) = (TestCa::new("upstream CA"), TestCa::new("some other CA"));
    let (up, handshakes) = tls_upstream(&ca).await;
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, other_file) = (dir.path().join("ca.pem"), dir.path().join("other.pem"));
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&other_file, other_ca.pem()).unwrap();
    let tls = |file: &std::path::Path| {
        format!(
            "proto = \"https\"\nupstream-sni = \"tls.test\"\nupstream-ca-file = \"{}\"",
            file.display()
        )
    };
    let b = berth(&config(
        &[
            route("trusted.test", &[up], &tls(&ca_file)),
            route("also-trusted.test", &[up], &tls(&ca_file)),
            route("other.test", &[up], &tls(&other_file)),
        ]
        .concat(),
    ));
    // One client connection, so one berth thread and one pool: the connection verified for
    // trusted.test is idle in it when each next request comes. (berth closes a client
    // connection after a 502, so the refused route comes last.)
    let mut s = TcpStream::connect(b.http).await.unwrap();
    let mut statuses = Vec::new();
    for host in ["trusted.test", "also-trusted.test", "other.test"] {
        let get = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        statuses.push((host, request(&mut s, get.as_bytes()).await));
    }
    assert_eq!(
        statuses,
        [
            ("trusted.test", 200),
            ("also-trusted.test", 200),
            ("other.test", 502), // its CA did not sign the upstream's certificate
        ],
        "{}",
        b.log()
    );
    // The routes that trust the same CA file shared one connection.
    assert_eq!(handshakes.load(Ordering::SeqCst), 1, "{}", b.log());
}

/// An upstream that reads one request head per connection, answers with `answer` (maybe
/// nothing, maybe the start of a response) and then says nothing more. Reports on `heads`
/// when it has read a head, and on `closed` when berth then closed the connection, with
/// whether the test had let the client go (`left`) by then.
async fn silent_after(
    answer: &'static [u8],
    left: Arc<AtomicBool>,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    tokio::sync::mpsc::UnboundedReceiver<bool>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (heads_tx, heads) = tokio::sync::mpsc::unbounded_channel();
    let (closed_tx, closed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (heads_tx, closed_tx, left) = (heads_tx.clone(), closed_tx.clone(), left.clone());
            tokio::spawn(async move {
                if next_head(&mut s, &mut Vec::new()).await {
                    let _ = heads_tx.send(());
                    let _ = s.write_all(answer).await;
                    until_closed(&mut s).await;
                    let _ = closed_tx.send(left.load(Ordering::SeqCst));
                }
            });
        }
    });
    (addr, heads, closed)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_leaving_while_its_get_waits_closes_the_upstream_side() {
    // A long poll: the upstream has not answered yet. An event stream: the upstream sent the
    // head and one event, then nothing. Either way the client goes away, and berth closes
    // the upstream connection then, not when the route's read timeout (900 s) ends.
    let stream_start = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
        Transfer-Encoding: chunked\r\n\r\n7\r\ndata: 1\r\n";
    for (case, answer) in [("long poll", &b""[..]), ("event stream", stream_start)] {
        let left = Arc::new(AtomicBool::new(false));
        let (up, mut heads, mut closed) = silent_after(answer, left.clone()).await;
        let b = berth(&config(&route("app.test", &[up], "")));
        let mut s = TcpStream::connect(b.http).await.unwrap();
        s.write_all(b"GET /wait HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await
            .unwrap();
        heads.recv().await.unwrap();
        if !answer.is_empty() {
            read_until(&mut s, b"data: 1\r\n").await;
        }
        left.store(true, Ordering::SeqCst);
        drop(s);
        let seen = tokio::time::timeout(Duration::from_secs(10), closed.recv()).await;
        assert!(
            matches!(seen, Ok(Some(true))),
            "{case}: the upstream connection was closed before the client left ({seen:?}) \
             or stayed open after\n{}",
            b.log()
        );
    }
}

/// One step of a scripted upstream connection.
#[derive(Clone, Copy)]
enum Step {
    /// Read the next request head.
    Head,
    /// Write these bytes.
    Write(&'static [u8]),
    /// Wait for the test's go (a permit of the script's semaphore).
    Go,
    /// Close the connection.
    Close,
}

/// An upstream whose `n`th connection follows `scripts[n]`, and whose later connections
/// answer `ok` to every request; counts the connections it accepted. The test gives the
/// goes with `go.add_permits(1)`.
async fn scripted(
    scripts: Vec<Vec<Step>>,
) -> (SocketAddr, Arc<AtomicU64>, Arc<tokio::sync::Semaphore>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let go = Arc::new(tokio::sync::Semaphore::new(0));
    let (count, permits) = (accepted.clone(), go.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst) as usize;
            let script = scripts.get(n).cloned();
            let go = permits.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let Some(script) = script else {
                    while next_head(&mut s, &mut buf).await {
                        if s.write_all(OK).await.is_err() {
                            return;
                        }
                    }
                    return;
                };
                for step in script {
                    match step {
                        Step::Head if !next_head(&mut s, &mut buf).await => return,
                        Step::Head => {}
                        Step::Write(bytes) if s.write_all(bytes).await.is_err() => return,
                        Step::Write(_) => {}
                        Step::Go => go.acquire().await.unwrap().forget(),
                        Step::Close => return,
                    }
                }
                until_closed(&mut s).await;
            });
        }
    });
    (addr, accepted, go)
}

/// Reads from `s` until what was read ends with `end` (10 s at most); what was read.
async fn read_until(s: &mut TcpStream, end: &[u8]) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(end) {
        let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte)).await;
        let text = String::from_utf8_lossy(&got).to_string();
        assert_eq!(
            read.expect("nothing for 10 s").unwrap(),
            1,
            "closed after {text:?}"
        );
        got.push(byte[0]);
    }
    String::from_utf8_lossy(&got).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_without_a_body_leave_the_upstream_connection_to_reuse() {
    use Step::{Head, Write};
    let (up, accepted, _) = scripted(vec![vec![
        Head,
        Write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
        Head,
        Write(b"HTTP/1.1 204 No Content\r\n\r\n"),
        Head,
        Write(b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"),
        Head,
        Write(OK),
    ]])
    .await;
    let b = berth(&config(&route("app.test", &[up], "")));
    let mut s = TcpStream::connect(b.http).await.unwrap();
    let mut heads = Vec::new();
    for (method, path) in [("HEAD", "/"), ("GET", "/204"), ("GET", "/304")] {
        s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes())
            .await
            .unwrap();
        heads.push(read_until(&mut s, b"\r\n\r\n").await[9..12].to_string());
    }
    assert_eq!(heads, ["200", "204", "304"], "{}", b.log());
    // The next answer on this client connection is the next request's, from the same
    // upstream connection.
    assert_eq!(get(&mut s, "/ok").await, 200, "{}", b.log());
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "{}", b.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_that_arrive_in_pieces_are_forwarded_whole() {
    use Step::{Go, Head, Write};
    let (up, accepted, go) = scripted(vec![vec![
        // An early hint, with the start of the final response in the same write.
        Head,
        Write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 2"),
        Go,
        Write(b"00 OK\r\nContent-Length: 2\r\n\r\nok"),
        // A chunked body whose last chunk comes later.
        Head,
        Write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n"),
        Go,
        Write(b"0\r\n\r\n"),
        Head,
        Write(OK),
    ]])
    .await;
    let b = berth(&config(&route("app.test", &[up], "")));
    let mut s = TcpStream::connect(b.http).await.unwrap();
    s.write_all(b"GET /hinted HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let hint = read_until(&mut s, b"\r\n\r\n").await;
    assert!(hint.starts_with("HTTP/1.1 103"), "{hint}\n{}", b.log());
    go.add_permits(1);
    let head = read_until(&mut s, b"\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{}", b.log());
    let mut body = [0u8; 2];
    s.read_exact(&mut body).await.unwrap();
    assert_eq!(&body, b"ok");

    s.write_all(b"GET /chunked HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut s, b"2\r\nok\r\n").await;
    go.add_permits(1);
    read_until(&mut s, b"0\r\n\r\n").await;

    assert_eq!(get(&mut s, "/after").await, 200, "{}", b.log());
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "{}", b.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_closing_mid_body_ends_that_response_only() {
    use Step::{Close, Head, Write};
    let (up, accepted, _) = scripted(vec![vec![
        Head,
        Write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"),
        Close,
    ]])
    .await;
    let b = berth(&config(&route("app.test", &[up], "")));
    let mut s = TcpStream::connect(b.http).await.unwrap();
    s.write_all(b"GET /cut HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    // The client gets what came, then the connection ends: it cannot take the response for
    // whole.
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .expect("the client connection stayed open")
        .unwrap();
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with("\r\n\r\nhalf"),
        "{got}\n{}",
        b.log()
    );
    let mut s = TcpStream::connect(b.http).await.unwrap();
    assert_eq!(get(&mut s, "/next").await, 200, "{}", b.log());
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "{}", b.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_changes_a_ca_file_stops_reuse_of_connections_it_verified() {
    use berth_testkit::tls::TestCa;
    let (ca, other_ca) = (TestCa::new("upstream CA"), TestCa::new("some other CA"));
    let (up, handshakes) = tls_upstream(&ca).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let b = berth(&config(&route(
        "trusted.test",
        &[up],
        &format!(
            "proto = \"https\"\nupstream-sni = \"tls.test\"\nupstream-ca-file = \"{}\"",
            ca_file.display()
        ),
    )));
    let mut s = TcpStream::connect(b.http).await.unwrap();
    let get = b"GET / HTTP/1.1\r\nHost: trusted.test\r\n\r\n";
    assert_eq!(request(&mut s, get).await, 200, "{}", b.log());
    // Same path, other contents: the connection verified against the old CA is idle in this
    // thread's pool, and must not serve the route any more.
    std::fs::write(&ca_file, other_ca.pem()).unwrap();
    b.signal("HUP").unwrap();
    until(&b, "the reload", || {
        let log = b.log();
        log.contains("reload: ") && log.contains(" applied (")
    });
    assert_eq!(request(&mut s, get).await, 502, "{}", b.log());
    assert_eq!(handshakes.load(Ordering::SeqCst), 1, "{}", b.log());
}
