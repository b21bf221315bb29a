//! Downstream limits (`[limits]`) on the real `berth`: slowloris clients cut after the header
//! timeout while a normal client is served, 431 for oversized heads, the per-listener
//! connection limit, and the keep-alive idle timeout. Raw TCP clients, so the test says
//! exactly what went on the wire.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{Duration, Instant};

use berth_testkit::client::Request;
use berth_testkit::Origin;
use common::{berth, call, route, value, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn limited(limits: &str, routes: &str) -> String {
    format!(
        "[listen]\nhttp = \"{{http}}\"\nmetrics = \"{{admin}}\"\n\n[docker]\nenabled = false\n\n\
         [log]\naccess = \"off\"\n\n[limits]\n{limits}\n\n{routes}"
    )
}

/// Reads until the peer closes (or `limit` passes); returns what arrived and whether the
/// connection was closed. Plain TCP or TLS.
async fn read_to_close<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into(), false),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slowloris_clients_are_cut_and_do_not_stop_others() {
    let origin = Origin::start("app");
    let b = berth(&limited(
        "header-timeout = \"4s\"",
        &route("app.test", &[origin.addr], ""),
    ));
    let addr = b.http;

    // 500 clients that start a request and then send one header byte a second.
    let started = Instant::now();
    let mut slow = Vec::new();
    for i in 0..500 {
        slow.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Slow: ")
                .await
                .unwrap();
            let mut byte = 0u8;
            loop {
                tokio::time::sleep(Duration::from_millis(1000 + (i % 10) * 10)).await;
                byte = byte.wrapping_add(1);
                if s.write_all(&[b'a' + byte % 26]).await.is_err() {
                    break;
                }
                let mut probe = [0u8; 1];
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(1), s.peek(&mut probe)).await
                {
                    if n > 0 {
                        break;
                    }
                }
            }
            let (answer, closed) = read_to_close(&mut s, Duration::from_secs(10)).await;
            (answer, closed, started.elapsed())
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Meanwhile a normal client is served, promptly, again and again.
    for i in 0..20 {
        let t = Instant::now();
        let r = call(&b, &Request::get("app.test", &format!("/{i}"))).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "request {i} took {:?}",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every slow client got 408 and a closed connection, about when the timeout said.
    for task in slow {
        let (answer, closed, at) = task.await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{answer}"
        );
        assert!(answer.contains("limits.header-timeout"), "{answer}");
        assert!(closed);
        assert!(
            at >= Duration::from_secs(3) && at < Duration::from_secs(10),
            "cut after {at:?}"
        );
    }
    let m = wait_for(
        &b,
        "berth_connections_refused_total{listener=\"http\",reason=\"header_timeout\"}",
        500.0,
    )
    .await;
    assert_eq!(value(&m, "berth_open_connections{listener=\"http\"}"), 0.0);
    assert_eq!(origin.hits(), 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_heads_get_431() {
    let origin = Origin::start("app");
    let b = berth(&limited(
        "max-header-size = \"16KiB\"",
        &route("app.test", &[origin.addr], ""),
    ));
    // Just under the limit: served, and the origin sees the whole header.
    let fits = "x".repeat(15 << 10);
    let r = call(&b, &Request::get("app.test", "/").header("X-Big", &fits)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.seen().unwrap().header("x-big").map(str::len),
        Some(fits.len())
    );

    // Over it, in one header or in many: 431 and the connection closed.
    for head in [
        format!(
            "GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: {}\r\n\r\n",
            "x".repeat(17 << 10)
        ),
        format!(
            "GET / HTTP/1.1\r\nHost: app.test\r\n{}\r\n",
            (0..200)
                .map(|i| format!("X-H{i}: {}\r\n", "y".repeat(100)))
                .collect::<String>()
        ),
        // A head that never ends.
        format!(
            "GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: {}",
            "z".repeat(64 << 10)
        ),
    ] {
        let mut s = TcpStream::connect(b.http).await.unwrap();
        // The server may close before it has read everything; a write error is fine.
        let _ = s.write_all(head.as_bytes()).await;
        let (answer, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
        assert!(
            answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{answer}"
        );
        assert!(closed);
    }
    wait_for(
        &b,
        "berth_connections_refused_total{listener=\"http\",reason=\"header_too_large\"}",
        3.0,
    )
    .await;
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_limit_are_refused() {
    let origin = Origin::start("app");
    let b = berth(&limited(
        "max-connections = 5\nheader-timeout = \"60s\"",
        &route("app.test", &[origin.addr], ""),
    ));
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(TcpStream::connect(b.http).await.unwrap());
    }
    wait_for(&b, "berth_open_connections{listener=\"http\"}", 5.0).await;

    // The sixth is closed without an answer.
    let mut sixth = TcpStream::connect(b.http).await.unwrap();
    let _ = sixth
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    let (answer, closed) = read_to_close(&mut sixth, Duration::from_secs(5)).await;
    assert_eq!((answer.as_str(), closed), ("", true));
    wait_for(
        &b,
        "berth_connections_refused_total{listener=\"http\",reason=\"max_connections\"}",
        1.0,
    )
    .await;

    // One of the five is used and let go: there is room again.
    let mut first = held.remove(0);
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_to_close(&mut first, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(first);
    wait_for(&b, "berth_open_connections{listener=\"http\"}", 4.0).await;
    let r = call(&b, &Request::get("app.test", "/")).await;
    assert_eq!(r.status, 200);
    assert!(b.log().contains("refusing more"), "{}", b.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_keepalive_connections_are_closed() {
    let origin = Origin::start("app");
    let b = berth(&limited(
        "keepalive-timeout = \"1s\"",
        &route("app.test", &[origin.addr], ""),
    ));
    let mut s = TcpStream::connect(b.http).await.unwrap();
    let get = b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n";
    // Two requests on one connection, 300 ms apart: the connection is kept.
    for _ in 0..2 {
        s.write_all(get).await.unwrap();
        let mut buf = vec![0u8; 65536];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(origin.hits(), 2);
    // Then idle: closed by berth within about a second.
    let t = Instant::now();
    let (rest, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed && rest.is_empty(), "{rest}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_handshake_on_the_plain_port_is_answered_at_once() {
    let origin = Origin::start("app");
    let b = berth(&limited("", &route("app.test", &[origin.addr], "")));
    // The start of a ClientHello, as a client that tries HTTPS first sends it (skopeo does,
    // with --tls-verify=false): no head will ever complete, so waiting for one would cost
    // the client the whole header timeout.
    let mut s = TcpStream::connect(b.http).await.unwrap();
    s.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        .await
        .unwrap();
    let t = Instant::now();
    let (answer, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(closed);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

/// A request line Pingora repairs by escaping (`GET /a b HTTP/1.1`) gets the same deadline
/// and size limit as any other head; bytes that are no head at all get 400 at once.
#[tokio::test(flavor = "multi_thread")]
async fn heads_with_an_illegal_request_line_are_held_to_the_same_limits() {
    let origin = Origin::start("app");
    let b = berth(&limited(
        "header-timeout = \"2s\"\nmax-header-size = \"4KiB\"",
        &route("app.test", &[origin.addr], ""),
    ));

    // Slowloris behind a space in the target: one header byte every 300 ms.
    let started = Instant::now();
    let mut s = TcpStream::connect(b.http).await.unwrap();
    s.write_all(b"GET /a b HTTP/1.1\r\nHost: app.test\r\nX-Slow: ")
        .await
        .unwrap();
    let drip = async {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if s.write_all(b"a").await.is_err() {
                break;
            }
            let mut probe = [0u8; 1];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), s.peek(&mut probe)).await
            {
                if n > 0 {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), drip)
        .await
        .expect("berth never answered the dripping client");
    let (answer, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(closed);
    let at = started.elapsed();
    assert!(
        at >= Duration::from_millis(1900) && at < Duration::from_secs(4),
        "cut after {at:?}"
    );

    // The same head growing past max-header-size: 431, not read on to Pingora's 1 MiB.
    let mut s = TcpStream::connect(b.http).await.unwrap();
    let mut head = b"GET /a b HTTP/1.1\r\nHost: app.test\r\n".to_vec();
    for i in 0..100 {
        head.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "p".repeat(64)).as_bytes());
    }
    let _ = s.write_all(&head).await;
    let (answer, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert!(closed);

    // Completed, it is served (Pingora escapes the target): these heads are not refused.
    let mut s = TcpStream::connect(b.http).await.unwrap();
    s.write_all(b"GET /a b HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(
        answer.contains("/a%20b"),
        "the origin saw the escaped target: {answer}"
    );

    // Bytes that are no request head: berth's own 400, at once.
    let t = Instant::now();
    let mut s = TcpStream::connect(b.http).await.unwrap();
    s.write_all(b"GET /a b HTTP/x\r\n").await.unwrap();
    let (answer, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("not an HTTP/1.1 request head"), "{answer}");
    assert!(closed && t.elapsed() < Duration::from_secs(1));

    let m = common::scrape(&b).await;
    for reason in ["header_timeout", "header_too_large", "bad_request"] {
        let key =
            format!("berth_connections_refused_total{{listener=\"http\",reason=\"{reason}\"}}");
        assert_eq!(value(&m, &key), 1.0, "{key}");
    }
    assert_eq!(origin.hits(), 1);
}

/// An HTTPS listener with a certificate for app.test, and a TLS client trusting its CA.
struct Tls {
    _dir: tempfile::TempDir,
    certs: std::path::PathBuf,
    ca_file: std::path::PathBuf,
    connector: tokio_rustls::TlsConnector,
}

fn tls(alpn: &[&[u8]]) -> Tls {
    let ca = berth_testkit::tls::TestCa::new("limits test CA");
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    berth_testkit::tls::install(&certs, "app.test", &ca.issue(&["app.test"])).unwrap();
    let mut config = ca.client_config();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    Tls {
        _dir: dir,
        certs,
        ca_file,
        connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
    }
}

impl Tls {
    fn config(&self, limits: &str, routes: &str) -> String {
        format!(
            "[listen]\nhttp = \"{{http}}\"\nhttps = \"{{https}}\"\nmetrics = \"{{admin}}\"\n\n\
             [docker]\nenabled = false\n\n[log]\naccess = \"off\"\n\n\
             [tls]\ncerts-dir = \"{}\"\ndefault-cert = \"none\"\n\n[limits]\n{limits}\n\n{routes}",
            self.certs.display()
        )
    }

    async fn connect(
        &self,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("app.test").unwrap();
        self.connector.connect(name, tcp).await
    }
}

/// Over HTTPS the same limits hold, and the TLS handshake itself is under them: a client that
/// never finishes its handshake is cut at header-timeout and holds one of max-connections
/// meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn limits_hold_over_https_and_bound_the_tls_handshake() {
    let origin = Origin::start("app");
    let t = tls(&[b"http/1.1"]);
    let b = berth(&t.config(
        "header-timeout = \"2s\"\nmax-header-size = \"4KiB\"\nmax-connections = 3",
        &route("app.test", &[origin.addr], ""),
    ));
    let https = b.https.unwrap();

    // Served normally.
    let mut s = t.connect(https).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");

    // A slowloris client over TLS: 408 at header-timeout.
    let started = Instant::now();
    let mut s = t.connect(https).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Slow: ")
        .await
        .unwrap();
    let (answer, closed) = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if s.write_all(b"a").await.is_err() || started.elapsed() > Duration::from_secs(2) {
            break read_to_close(&mut s, Duration::from_secs(5)).await;
        }
    };
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(closed);

    // An oversized head over TLS: 431.
    let mut s = t.connect(https).await.unwrap();
    let big = format!(
        "GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: {}\r\n\r\n",
        "x".repeat(5000)
    );
    let _ = s.write_all(big.as_bytes()).await;
    let (answer, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");

    // Three connections that never start their handshake fill max-connections...
    let started = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(https).await.unwrap());
    }
    common::wait_for(&b, "berth_open_connections{listener=\"https\"}", 3.0).await;
    // ...so a fourth, real, client is refused before its handshake...
    assert!(
        t.connect(https).await.is_err(),
        "a fourth connection got through"
    );
    // ...until header-timeout cuts them, about 2 s after they were accepted.
    for s in &mut idle {
        let (_, closed) = read_to_close(s, Duration::from_secs(5)).await;
        assert!(closed);
    }
    let at = started.elapsed();
    assert!(
        at >= Duration::from_millis(1900) && at < Duration::from_secs(4),
        "cut after {at:?}"
    );
    let mut s = t
        .connect(https)
        .await
        .expect("room again after the idle ones were cut");
    s.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");

    let m = common::scrape(&b).await;
    let refused = |reason: &str| {
        value(
            &m,
            &format!("berth_connections_refused_total{{listener=\"https\",reason=\"{reason}\"}}"),
        )
    };
    // The slowloris client and the three silent handshakes.
    assert_eq!(refused("header_timeout"), 4.0);
    assert_eq!(refused("header_too_large"), 1.0);
    assert_eq!(refused("max_connections"), 1.0);
}

/// Over HTTP/2, max-header-size limits the header block (431), max-connections counts
/// connections as for HTTP/1, and a client that completes TLS but never sends the HTTP/2
/// preface is cut at header-timeout.
#[tokio::test(flavor = "multi_thread")]
async fn limits_hold_over_http2() {
    let origin = Origin::start("app");
    let t = tls(&[b"h2"]);
    let b = berth(&t.config(
        "max-header-size = \"4KiB\"\nmax-connections = 2\nheader-timeout = \"2s\"",
        &route("app.test", &[origin.addr], ""),
    ));
    let https = b.https.unwrap();
    let curl = |header: &str| {
        std::process::Command::new("curl")
            .args([
                "-sS",
                "--http2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
            ])
            .arg("--cacert")
            .arg(&t.ca_file)
            .args(["--resolve", &format!("app.test:{}:127.0.0.1", https.port())])
            .args(["-H", header])
            .arg(format!("https://app.test:{}/", https.port()))
            .output()
            .unwrap()
    };
    let fits = curl(&format!("X-Small: {}", "s".repeat(1000)));
    assert_eq!(String::from_utf8_lossy(&fits.stdout), "2 200", "{fits:?}");
    let over = curl(&format!("X-Big: {}", "b".repeat(5000)));
    assert_eq!(String::from_utf8_lossy(&over.stdout), "2 431", "{over:?}");
    assert_eq!(
        origin.hits(),
        1,
        "the oversized request never reached the origin"
    );

    // Two idle but proper HTTP/2 connections (preface and SETTINGS sent) fill
    // max-connections; a third is refused.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = t.connect(https).await.unwrap();
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        held.push(s);
    }
    common::wait_for(&b, "berth_open_connections{listener=\"https\"}", 2.0).await;
    assert!(
        t.connect(https).await.is_err(),
        "a third connection got through"
    );
    // They stay past header-timeout: only keep-alive (75 s) bounds an idle HTTP/2 connection.
    let mut buf = [0u8; 256];
    let mut first = held.remove(0);
    let idle = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match first.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // the server's SETTINGS and its ACK
            }
        }
    })
    .await;
    assert!(
        idle.is_err(),
        "a proper idle HTTP/2 connection was cut early"
    );
    drop((first, held));
    common::wait_for(&b, "berth_open_connections{listener=\"https\"}", 0.0).await;

    // A client that completes TLS with ALPN h2 and then sends nothing: cut at header-timeout.
    let started = Instant::now();
    let mut silent = t.connect(https).await.unwrap();
    let (_, closed) = read_to_close(&mut silent, Duration::from_secs(6)).await;
    assert!(closed, "a silent HTTP/2 client was never cut");
    let at = started.elapsed();
    assert!(
        at >= Duration::from_millis(1900) && at < Duration::from_secs(4),
        "cut after {at:?}"
    );
    let again = curl("X-Small: s");
    assert_eq!(String::from_utf8_lossy(&again.stdout), "2 200", "{again:?}");
}

/// The largest allowed head, sent in one write with a body behind it, is served: what berth
/// hands Pingora (head and the body bytes read with it) stays under Pingora's own ceiling.
#[tokio::test(flavor = "multi_thread")]
async fn the_largest_allowed_head_with_a_body_behind_it_is_served() {
    let origin = Origin::start("app");
    let b = berth(&limited(
        "max-header-size = \"512KiB\"",
        &route("app.test", &[origin.addr], ""),
    ));
    let body = vec![b'b'; 600 << 10];
    let mut head = String::from("POST / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n");
    head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    for i in 0.. {
        if head.len() + 4100 > 512 << 10 {
            break;
        }
        head.push_str(&format!("X-Pad-{i}: {}\r\n", "p".repeat(4000)));
    }
    head.push_str("\r\n");
    assert!(head.len() <= 512 << 10);
    let mut s = TcpStream::connect(b.http).await.unwrap();
    let mut all = head.into_bytes();
    all.extend_from_slice(&body);
    s.write_all(&all).await.unwrap();
    let (answer, _) = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(
        answer.starts_with("HTTP/1.1 200 "),
        "{}",
        &answer[..answer.len().min(300)]
    );
    assert!(answer.contains(&format!("\"body_bytes\":{}", body.len())));
}

/// Sends a request head for a `len`-byte body, then one byte every `every`, until the
/// connection is closed or the answer comes; returns the answer and when it came.
async fn drip(
    addr: std::net::SocketAddr,
    host: &str,
    len: usize,
    every: Duration,
) -> (String, Duration) {
    let head = format!("POST /form HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len}\r\n\r\n");
    drip_raw(addr, head, b"x", len, every).await
}

/// Sends `head`, then `byte` every `every`, `times` times, until berth answers; returns the
/// answer and when it came.
async fn drip_raw(
    addr: std::net::SocketAddr,
    head: String,
    byte: &'static [u8],
    times: usize,
    every: Duration,
) -> (String, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 4096];
    for _ in 0..times {
        match tokio::time::timeout(every, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::new(), started.elapsed()),
            Ok(Ok(n)) => {
                let (mut text, _) = read_to_close(&mut s, Duration::from_secs(2)).await;
                text.insert_str(0, &String::from_utf8_lossy(&buf[..n]));
                return (text, started.elapsed());
            }
            Err(_) => {}
        }
        if s.write_all(byte).await.is_err() {
            break;
        }
    }
    let (text, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
    (text, started.elapsed())
}

/// Outside the registry profile a request body must keep to `min-body-rate` (500 B/s by
/// default) once 20 s have passed: clients that drip their body, or send none, are answered
/// 408 and their upstream connections closed at 20 s; a slow but steady upload passes; a
/// registry route lets a crawling layer go on.
#[tokio::test(flavor = "multi_thread")]
async fn bodies_slower_than_the_minimum_rate_are_cut_outside_the_registry_profile() {
    let open = Origin::start("open");
    let registry = Origin::start("registry");
    let h2_origin = Origin::start("h2");
    let slow_continue = slow_continue_upstream(Duration::from_secs(25)).await;
    let t = tls(&[b"h2"]);
    let b = berth(
        &t.config(
            "",
            &[
                route("open.test", &[open.addr], ""),
                route("reg.test", &[registry.addr], "profile = \"registry\""),
                route("app.test", &[h2_origin.addr], ""),
                route("continue.test", &[slow_continue], ""),
            ]
            .concat(),
        ),
    );
    let http = b.http;
    // Over HTTP/2, a body that never comes: curl waits for its standard input.
    let https = b.https.unwrap();
    let mut silent_h2 = tokio::process::Command::new("curl")
        .args(["-sS", "--http2", "-X", "POST", "-T", "-", "-o", "/dev/null"])
        .args(["-w", "%{http_version} %{http_code}"])
        .arg("--cacert")
        .arg(&t.ca_file)
        .args(["--resolve", &format!("app.test:{}:127.0.0.1", https.port())])
        .arg(format!("https://app.test:{}/up", https.port()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let held_stdin = silent_h2.stdin.take();
    let silent_h2 = tokio::spawn(async move {
        let started = Instant::now();
        let out = silent_h2.wait_with_output().await.unwrap();
        (
            String::from_utf8_lossy(&out.stdout).to_string(),
            started.elapsed(),
        )
    });
    // A client that waits for the upstream's `100 Continue`, which comes after 25 s (Go's
    // server sends it only once the handler reads the body): the wait is not the client's.
    let expecting = tokio::spawn(async move {
        let mut s = TcpStream::connect(http).await.unwrap();
        s.write_all(
            b"POST /form HTTP/1.1\r\nHost: continue.test\r\nContent-Length: 10\r\n\
              Expect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(40), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let interim = String::from_utf8_lossy(&buf[..n]).to_string();
        if !interim.starts_with("HTTP/1.1 100") {
            return interim;
        }
        s.write_all(b"0123456789").await.unwrap();
        let (answer, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
        answer
    });
    let second = Duration::from_secs(1);
    let mut drips = Vec::new();
    for _ in 0..4 {
        drips.push(tokio::spawn(drip(http, "open.test", 1000, 2 * second)));
    }
    // Headers and then nothing at all.
    drips.push(tokio::spawn(drip(
        http,
        "open.test",
        1,
        Duration::from_secs(60),
    )));
    // A chunk-size line a space at a time: reads that bring no body byte.
    drips.push(tokio::spawn(drip_raw(
        http,
        "POST /form HTTP/1.1\r\nHost: open.test\r\nTransfer-Encoding: chunked\r\n\r\n1".to_string(),
        b" ",
        40,
        2 * second,
    )));
    // `Expect: 100-continue`, the upstream's `100 Continue` at once, and then no body: the
    // first byte's wait is longer for such a client, and still bounded.
    let expecting_silent = tokio::spawn(async move {
        let started = Instant::now();
        let mut s = TcpStream::connect(http).await.unwrap();
        s.write_all(
            b"POST /form HTTP/1.1\r\nHost: open.test\r\nContent-Length: 10\r\n\
              Expect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
        let (text, _) = read_to_close(&mut s, Duration::from_secs(90)).await;
        (text, started.elapsed())
    });
    // 24 KiB at 1 KiB/s: slow, but twice the minimum.
    let steady = tokio::spawn(async move {
        let req = Request::new("POST", "open.test", "/steady").body(berth_testkit::Body::Random {
            len: 24 << 10,
            chunked: false,
            pace: Some((1024, second)),
        });
        berth_testkit::client::send(http, &req).await
    });
    let crawling = tokio::spawn(drip(http, "reg.test", 1000, 2 * second));

    // Every one of them reached its upstream.
    let deadline = Instant::now() + Duration::from_secs(10);
    while open.in_flight() != 8 || registry.in_flight() != 1 || h2_origin.in_flight() != 1 {
        assert!(
            Instant::now() < deadline,
            "{} and {} requests reached the upstreams",
            open.in_flight(),
            registry.in_flight()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for d in drips {
        let (answer, after) = tokio::time::timeout(Duration::from_secs(40), d)
            .await
            .unwrap_or_else(|_| panic!("a dripping client was not cut\n{}", b.log()))
            .unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "{answer:?}\n{}",
            b.log()
        );
        assert!(
            after >= Duration::from_secs(19) && after < Duration::from_secs(27),
            "{after:?}"
        );
    }
    let r = steady.await.unwrap().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.seen().unwrap().body_bytes, 24 << 10);
    // Only the registry's crawling upload and the client waiting on `100 Continue` still
    // hold upstream connections (the upstream sees the others end a moment after berth).
    let deadline = Instant::now() + Duration::from_secs(5);
    while open.in_flight() != 1 {
        assert!(
            Instant::now() < deadline,
            "{} requests still upstream",
            open.in_flight()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(registry.in_flight(), 1);
    assert!(!crawling.is_finished());
    crawling.abort();
    // The silent HTTP/2 body's upstream connection went with the dripping ones; curl, which
    // would go on waiting to upload, is told 408 once its input ends.
    assert_eq!(h2_origin.in_flight(), 0, "a silent HTTP/2 body was not cut");
    drop(held_stdin);
    let (status, _) = tokio::time::timeout(Duration::from_secs(20), silent_h2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, "2 408", "{}", b.log());
    // The silent client that was told `100 Continue` is cut at EXPECT_GRACE (60 s).
    let (answer, after) = expecting_silent.await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 100") && answer.contains("HTTP/1.1 408"),
        "{answer:?}\n{}",
        b.log()
    );
    assert!(
        after >= Duration::from_secs(59) && after < Duration::from_secs(67),
        "{after:?}"
    );
    // Its upstream connection is closed with it (the upstream sees it a moment later).
    let deadline = Instant::now() + Duration::from_secs(5);
    while open.in_flight() != 0 {
        assert!(
            Instant::now() < deadline,
            "the upstream request was not ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = expecting.await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{answer:?}\n{}",
        b.log()
    );
}

/// An upstream that answers `Expect: 100-continue` only after `delay`, then reads the body
/// and says 200.
async fn slow_continue_upstream(delay: Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                tokio::time::sleep(delay).await;
                let _ = s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
                let mut body = [0u8; 10];
                if s.read_exact(&mut body).await.is_ok() {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await;
                }
            });
        }
    });
    addr
}
