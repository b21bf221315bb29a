//! PROXY protocol (`[listen] proxy-protocol`): the real `berth` behind Debian's HAProxy
//! (`send-proxy` and `send-proxy-v2`, TCP mode, over both listeners), and raw connections
//! for what HAProxy never sends (a header split across reads, none, one from a source that
//! is not listed).
//!
//! Addresses: HAProxy connects to berth from 127.0.0.3 (the one listed source); clients
//! connect to HAProxy from 127.0.0.2; anything else comes from 127.0.0.1.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_testkit::process::{free_port, wait_for_port};
use berth_testkit::tls::{install, TestCa};
use berth_testkit::{Origin, Seen};
use common::{berth, scrape, value};

/// HAProxy in TCP mode: four frontends, to berth's HTTP and HTTPS listeners with a v1 and a
/// v2 header each; killed when dropped.
struct Haproxy {
    child: Child,
    http_v1: SocketAddr,
    http_v2: SocketAddr,
    https_v1: SocketAddr,
    https_v2: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(http: SocketAddr, https: SocketAddr) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let port = || SocketAddr::from(([127, 0, 0, 1], free_port()));
        let (http_v1, http_v2, https_v1, https_v2) = (port(), port(), port(), port());
        let mut config = String::from(
            "global\n  maxconn 256\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
             timeout client 30s\n  timeout server 30s\n",
        );
        for (name, bind, to, send) in [
            ("h1", http_v1, http, "send-proxy"),
            ("h2", http_v2, http, "send-proxy-v2"),
            ("s1", https_v1, https, "send-proxy"),
            ("s2", https_v2, https, "send-proxy-v2"),
        ] {
            config.push_str(&format!(
                "frontend f{name}\n  bind {bind}\n  default_backend b{name}\n\
                 backend b{name}\n  server berth {to} {send} source 127.0.0.3\n"
            ));
        }
        let file = dir.path().join("haproxy.cfg");
        std::fs::write(&file, config).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy must be installed (scripts/test installs it)");
        for addr in [http_v1, http_v2, https_v1, https_v2] {
            wait_for_port(addr, Duration::from_secs(10)).unwrap();
        }
        Haproxy {
            child,
            http_v1,
            http_v2,
            https_v1,
            https_v2,
            _dir: dir,
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// curl from 127.0.0.2 to `url` (resolving `host` to `to`), with `server_ca` trusted.
fn curl(to: SocketAddr, host: &str, https: bool, server_ca: &Path) -> (String, String) {
    let scheme = if https { "https" } else { "http" };
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "--interface",
            "127.0.0.2",
            "--cacert",
        ])
        .arg(server_ca)
        .arg("--resolve")
        .arg(format!("{host}:{}:{}", to.port(), to.ip()))
        .args(["-w", "\n%{http_code}"])
        .arg(format!("{scheme}://{host}:{}/x", to.port()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    (code.to_string(), body.to_string())
}

/// A raw HTTP/1.1 exchange from `source` to `to`: `parts` written one by one, each flushed
/// (so a header can arrive split across reads); what came back (empty: closed unanswered).
async fn raw(source: [u8; 4], to: SocketAddr, parts: &[&[u8]]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    let mut stream = socket.connect(to).await.unwrap();
    stream.set_nodelay(true).unwrap();
    for (i, part) in parts.iter().enumerate() {
        stream.write_all(part).await.unwrap();
        stream.flush().await.unwrap();
        if i + 1 < parts.len() {
            // Separate segments: berth reads the first before the next is sent.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).to_string()
}

/// Writes `prefix` in the same write as the first bytes written through it.
struct Prefixed {
    prefix: Option<Vec<u8>>,
    inner: tokio::net::TcpStream,
}

impl tokio::io::AsyncRead for Prefixed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Prefixed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if let Some(prefix) = self.prefix.take() {
            // Both in one write (the socket's buffer takes them whole), counted as `buf`.
            let both = [&prefix[..], buf].concat();
            return match std::pin::Pin::new(&mut self.inner).poll_write(cx, &both) {
                std::task::Poll::Ready(Ok(n)) if n == both.len() => {
                    std::task::Poll::Ready(Ok(buf.len()))
                }
                std::task::Poll::Ready(Ok(n)) => std::task::Poll::Ready(Err(
                    std::io::Error::other(format!("short write: {n} of {}", both.len())),
                )),
                other => {
                    self.prefix = Some(prefix);
                    other
                }
            };
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A GET over TLS from 127.0.0.3 whose first segment is `header` and the ClientHello; what
/// the origin saw.
async fn tls_after_header(https: SocketAddr, ca: &TestCa, header: &[u8]) -> Seen {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from(([127, 0, 0, 3], 0))).unwrap();
    let tcp = socket.connect(https).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let stream = Prefixed {
        prefix: Some(header.to_vec()),
        inner: tcp,
    };
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(ca.client_config()));
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("pp.test").unwrap();
    let mut tls = connector.connect(name, stream).await.unwrap();
    tls.write_all(b"GET /x HTTP/1.1\r\nHost: pp.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_behind_a_proxy_protocol_balancer_is_the_client_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestCa::new("berth test server CA");
    install(dir.path(), "pp.test", &server.issue(&["pp.test"])).unwrap();
    let server_ca = dir.path().join("ca.pem");
    std::fs::write(&server_ca, server.pem()).unwrap();
    let origin = Origin::start("o");
    // Only the balancer's clients (127.0.0.2) may pass: the address must be the header's.
    let b = berth(&format!(
        "[listen]\nhttp = \"{{http}}\"\nhttps = \"{{https}}\"\nmetrics = \"{{admin}}\"\n\
         proxy-protocol = [\"127.0.0.3\"]\n\n[docker]\nenabled = false\n\n\
         [log]\naccess = \"stdout\"\n\n[limits]\nheader-timeout = \"60s\"\n\n\
         [tls]\ncerts-dir = \"{}\"\ndefault-cert = \"none\"\n\n\
         [[route]]\nhost = \"pp.test\"\nupstreams = [\"{}\"]\nhttps = \"noredirect\"\n\
         allow = [\"127.0.0.2\"]\n",
        dir.path().display(),
        origin.addr
    ));
    let haproxy = Haproxy::start(b.http, b.https.unwrap());

    for (name, at, https) in [
        ("http v1", haproxy.http_v1, false),
        ("http v2", haproxy.http_v2, false),
        ("https v1", haproxy.https_v1, true),
        ("https v2", haproxy.https_v2, true),
    ] {
        let (code, body) = tokio::task::block_in_place(|| curl(at, "pp.test", https, &server_ca));
        assert_eq!(code, "200", "{name}: {body}\n{}", b.log());
        let seen: Seen = serde_json::from_str(&body).unwrap();
        assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.2"), "{name}");
        assert_eq!(seen.header("x-real-ip"), Some("127.0.0.2"), "{name}");
    }
    // The access log names the client, and the balancer nowhere.
    let logged = || {
        b.log()
            .lines()
            .filter(|l| l.contains("\"path\":\"/x\""))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    berth_testkit::wait_until(
        Duration::from_secs(10),
        "four access log lines",
        || logged().len() == 4,
        || b.log(),
    );
    let lines = logged();
    for line in &lines {
        assert!(line.contains("\"client\":\"127.0.0.2\""), "{line}");
        assert!(line.contains("\"peer\":\"127.0.0.2\""), "{line}");
    }

    let get = b"GET /x HTTP/1.1\r\nHost: pp.test\r\nConnection: close\r\n\r\n";
    // A header split across reads, from the listed source: the client it names.
    let header = b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 80\r\n";
    let answer = raw([127, 0, 0, 3], b.http, &[&header[..9], &header[9..], get]).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("\"x-forwarded-for\",\"127.0.0.2\""),
        "{answer}"
    );
    // The header and the request in one write: what follows the header is handed on.
    let together = [&header[..], get].concat();
    let answer = raw([127, 0, 0, 3], b.http, &[&together]).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("\"x-forwarded-for\",\"127.0.0.2\""),
        "{answer}"
    );
    // The same before TLS: the header and the ClientHello in one segment.
    let seen = tls_after_header(b.https.unwrap(), &server, header).await;
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("127.0.0.2"),
        "{}",
        b.log()
    );
    // From the listed source without a header, or with a broken one: closed unanswered.
    let hits = origin.hits();
    // (At once: the header timeout is 60 s, and raw() would wait 20.)
    for parts in [
        &[&get[..]][..],
        &[b"PROXY TCP4 127.0.0.2 nowhere 1 2\r\n", get],
    ] {
        let started = std::time::Instant::now();
        let answer = raw([127, 0, 0, 3], b.http, parts).await;
        assert_eq!(answer, "", "{parts:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{parts:?}: not closed at once"
        );
    }
    // A header that names no client (HAProxy's for clients of a UNIX socket) leaves none:
    // the route's allowlist refuses, never judging the balancer's own address.
    let answer = raw([127, 0, 0, 3], b.http, &[b"PROXY UNKNOWN\r\n", get]).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // From any other source a header is never believed: its bytes are the request, and not
    // one berth takes.
    let answer = raw([127, 0, 0, 2], b.http, &[&header[..], get]).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(origin.hits(), hits);
    let m = scrape(&b).await;
    let key = "berth_connections_refused_total{listener=\"http\",reason=\"proxy_protocol\"}";
    assert_eq!(value(&m, key), 2.0, "{}", b.log());
}
