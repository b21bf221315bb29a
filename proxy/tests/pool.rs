//! Upstream connections are pooled and reused: many requests, on one client connection or on
//! many, open at most one upstream connection per berth thread; an upstream that closes an
//! idle pooled connection — at any moment, the moment berth reuses it included — never fails
//! a request, and berth lets go of its end; a thread's pool keeps at most
//! `upstream_keepalive_pool_size` idle connections.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_testkit::process::{wait_until, BerthProcess};
use common::{berth, config, route};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An HTTP/1.1 upstream that answers `ok` to every request, keeps connections alive, and
/// closes a connection `idle` after its last answer (`None`: never). Counts the connections
/// it accepted, and those it closed.
async fn upstream(idle: Option<Duration>) -> (SocketAddr, Arc<AtomicU64>, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let hung_up = Arc::new(AtomicU64::new(0));
    let (count, hang_ups) = (accepted.clone(), hung_up.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let hang_ups = hang_ups.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let read = async {
                        let mut chunk = [0u8; 4096];
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return false,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        true
                    };
                    let got = match idle {
                        Some(idle) => match tokio::time::timeout(idle, read).await {
                            Ok(got) => got,
                            Err(_) => {
                                drop(s);
                                hang_ups.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        },
                        None => read.await,
                    };
                    if !got {
                        return;
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted, hung_up)
}

/// One request on a kept-alive client connection; the status.
async fn get(s: &mut TcpStream, path: &str) -> u16 {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "connection closed");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
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
    let (up, accepted, _) = upstream(None).await;
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
    let (up, _, _) = upstream(Some(idle)).await;
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
                let mut chunk = [0u8; 4096];
                for request in 0..2 {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    if request == 1 {
                        return;
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if s.write_all(answer).await.is_err() {
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

/// Waits (10 s at most) until `done` holds, off the test's runtime, whose tasks are the upstream.
fn until(b: &BerthProcess, what: &str, done: impl FnMut() -> bool) {
    tokio::task::block_in_place(|| wait_until(Duration::from_secs(10), what, done, || b.log()));
}

/// Sockets on this machine connected to `port` in CLOSE_WAIT: closed by the other end, not yet
/// by their owner.
fn close_waits_to(port: u16) -> usize {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    tcp.lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields[2].rsplit(':').next().unwrap();
            u16::from_str_radix(remote_port, 16).unwrap() == port && fields[3] == "08"
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn berth_closes_its_end_of_a_pooled_connection_the_upstream_closed() {
    // The upstream hangs up on each connection 300 ms after its answer, and nothing asks for
    // these connections again: berth must notice the close by itself, not leave its ends of
    // them in CLOSE_WAIT until a request comes.
    let (up, accepted, hung_up) = upstream(Some(Duration::from_millis(300))).await;
    let b = berth(&config(&route("app.test", &[up], "")));
    let http = b.http;
    let gets: Vec<_> = (0..8)
        .map(|i| {
            tokio::spawn(async move {
                let mut s = TcpStream::connect(http).await.unwrap();
                get(&mut s, &format!("/{i}")).await
            })
        })
        .collect();
    for answer in gets {
        assert_eq!(answer.await.unwrap(), 200);
    }
    until(&b, "the upstream hangs up on every idle connection", || {
        hung_up.load(Ordering::SeqCst) == accepted.load(Ordering::SeqCst)
    });
    until(
        &b,
        "berth lets go of the connections the upstream closed",
        || close_waits_to(up.port()) == 0,
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
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                all_in.wait().await;
                let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                if s.write_all(answer).await.is_err() {
                    return;
                }
                while let Ok(n) = s.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, closed)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_thread_keeps_at_most_its_pool_size_of_idle_connections() {
    // Pingora's `upstream_keepalive_pool_size`, which berth leaves at its default: per thread.
    const POOL: usize = 128;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let n = POOL * threads + 40;
    let (up, closed) = gathering(n).await;
    let b = berth(&config(&route("app.test", &[up], "")));
    let http = b.http;
    // n requests at once: n upstream connections, all released together.
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
    let least = (n - POOL * threads) as u64;
    until(
        &b,
        &format!("berth closes at least {least} of {n} idle upstream connections"),
        || closed.load(Ordering::SeqCst) >= least,
    );
}
