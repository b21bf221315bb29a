//! Response compression (`compress`), with real parts: Debian's nginx serving files (its
//! own ETags, ranges and types, and gzip of its own on one location), curl decoding gzip, br
//! and zstd over HTTP/1.1 and HTTP/2, and chromium loading a page.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_testkit::nginx::Nginx;
use berth_testkit::tls::{install, TestCa};
use berth_testkit::BerthProcess;
use common::{berth, route};

/// The files nginx serves: two compressible pages, a short one, an image, and a page under
/// `/pre/`, where nginx compresses with gzip itself.
struct Site {
    dir: tempfile::TempDir,
    html: Vec<u8>,
    json: Vec<u8>,
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let html: Vec<u8> = (0..2000)
        .map(|i| format!("<p>row {i}: the quick brown fox jumps over the lazy dog</p>\n"))
        .collect::<String>()
        .into_bytes();
    let json = serde_json::to_vec(
        &(0..500)
            .map(|i| serde_json::json!({"id": i, "name": format!("item {i}"), "tags": ["a", "b"]}))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let files: [(&str, &[u8]); 5] = [
        ("index.html", &html),
        ("data.json", &json),
        ("small.txt", b"short and not worth it\n"),
        ("image.png", &[7u8; 40_000]),
        ("pre/index.html", &html),
    ];
    for (name, bytes) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    Site { dir, html, json }
}

fn nginx(site: &Site) -> Nginx {
    Nginx::static_files(
        site.dir.path(),
        &format!(
            "location /pre/ {{ gzip on; gzip_min_length 1; gzip_types *; }}\n        \
             location /whole/ {{ max_ranges 0; alias {}/; }}",
            site.dir.path().display()
        ),
    )
    .unwrap_or_else(|e| panic!("nginx: {e}"))
}

/// One exchange as curl saw it: the status, the headers (lower-cased names) and the body,
/// decoded by curl when `decode` is set.
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    version: String,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// `curl` to `url` with `host` resolved to 127.0.0.1 at `port`, `extra` arguments first.
fn curl(url: &str, extra: &[&str]) -> Got {
    let dir = tempfile::tempdir().unwrap();
    let (head, body) = (dir.path().join("head"), dir.path().join("body"));
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code} %{http_version}"])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {url} {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = String::from_utf8_lossy(&out.stdout).to_string();
    let (status, version) = written.split_once(' ').unwrap();
    let head = std::fs::read_to_string(&head).unwrap();
    // With redirects or 100-continue there could be several heads: the last one counts.
    let last = head.trim_end().rsplit("\r\n\r\n").next().unwrap_or("");
    let headers = last
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Got {
        status: status.parse().unwrap(),
        headers,
        body: std::fs::read(&body).unwrap_or_default(),
        version: version.to_string(),
    }
}

fn plain(b: &BerthProcess, host: &str, path: &str) -> String {
    format!("http://{host}:{}{path}", b.http.port())
}

fn resolve(host: &str, addr: SocketAddr) -> String {
    format!("{host}:{}:127.0.0.1", addr.port())
}

fn vary_names_accept_encoding(got: &Got) -> bool {
    got.headers_named("vary").iter().any(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("accept-encoding"))
    })
}

#[test]
fn responses_are_compressed_as_clients_accept_and_arrive_byte_exact() {
    let site = site();
    let nginx = nginx(&site);
    let ca = TestCa::new("berth test CA");
    let work = tempfile::tempdir().unwrap();
    let certs = work.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    install(&certs, "app.test", &ca.issue(&["app.test"])).unwrap();
    let ca_file = work.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let routes = [
        route("app.test", &[nginx.addr], "https = \"noredirect\""),
        route("off.test", &[nginx.addr], "compress = false"),
        route("reg.test", &[nginx.addr], "profile = \"registry\""),
    ]
    .concat();
    let b = berth(&format!(
        "[listen]\nhttp = \"{{http}}\"\nhttps = \"{{https}}\"\n\n[docker]\nenabled = false\n\n\
         [tls]\ncerts-dir = \"{}\"\n\n{routes}",
        certs.display()
    ));
    let https = b.https.unwrap();
    let resolved = [
        "--resolve".to_string(),
        resolve("app.test", b.http),
        "--resolve".to_string(),
        resolve("off.test", b.http),
        "--resolve".to_string(),
        resolve("reg.test", b.http),
        "--resolve".to_string(),
        resolve("app.test", https),
        "--cacert".to_string(),
        ca_file.display().to_string(),
    ];
    let args = |extra: &[&str]| -> Vec<String> {
        resolved
            .iter()
            .cloned()
            .chain(extra.iter().map(|s| (*s).to_string()))
            .collect()
    };
    let get = |url: &str, extra: &[&str]| {
        let a = args(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        curl(url, &a)
    };
    let strong_etag = get(
        &plain(&b, "app.test", "/index.html"),
        &["-H", "Accept-Encoding: identity"],
    );
    let etag = strong_etag.header("etag").unwrap().to_string();
    assert!(etag.starts_with('"'), "nginx's ETag is strong: {etag}");
    let urls = [
        ("1.1", plain(&b, "app.test", "/index.html")),
        ("2", format!("https://app.test:{}/index.html", https.port())),
    ];

    // Each coding, asked for alone and chosen among others by q-value, decoded by curl.
    for (version, url) in &urls {
        let http = if *version == "2" {
            "--http2"
        } else {
            "--http1.1"
        };
        for (accept, coding) in [
            ("gzip", "gzip"),
            ("br", "br"),
            ("zstd", "zstd"),
            ("gzip, deflate, br, zstd", "zstd"),
            ("zstd;q=0.5, br;q=0.9, gzip;q=0.8", "br"),
            ("br;q=0, zstd;q=0, *", "gzip"),
        ] {
            let got = get(
                url,
                &[
                    http,
                    "--compressed",
                    "-H",
                    &format!("Accept-Encoding: {accept}"),
                ],
            );
            let what = format!("HTTP/{version} {accept:?}");
            assert_eq!(got.status, 200, "{what}\n{}", b.log());
            assert_eq!(got.version, *version, "{what}");
            assert_eq!(got.header("content-encoding"), Some(coding), "{what}");
            assert_eq!(got.header("content-length"), None, "{what}");
            assert_eq!(got.header("accept-ranges"), None, "{what}");
            assert_eq!(
                got.header("etag"),
                Some(format!("W/{etag}").as_str()),
                "{what}"
            );
            assert!(
                vary_names_accept_encoding(&got),
                "{what}: {:?}",
                got.headers
            );
            assert!(got.body == site.html, "{what}: the decoded body differs");
        }
        // Nothing acceptable, or nothing asked: the file as nginx sent it, still varying.
        for accept in [
            &["-H", "Accept-Encoding: identity"][..],
            &["-H", "Accept-Encoding: gzip;q=0, deflate"],
            &[],
        ] {
            let got = get(url, &[&[http][..], accept].concat());
            assert_eq!(got.header("content-encoding"), None, "{accept:?}");
            assert_eq!(got.header("etag"), Some(etag.as_str()), "{accept:?}");
            assert_eq!(
                got.header("content-length"),
                Some(site.html.len().to_string().as_str()),
                "{accept:?}"
            );
            assert!(vary_names_accept_encoding(&got), "{accept:?}");
            assert!(got.body == site.html);
        }
    }
    let json = get(
        &plain(&b, "app.test", "/data.json"),
        &["--compressed", "-H", "Accept-Encoding: gzip"],
    );
    assert_eq!(json.header("content-encoding"), Some("gzip"));
    assert!(json.body == site.json);

    // Never compressed: short bodies, images, ranges, HEAD, what nginx compressed itself,
    // a route with compress = false and the registry profile.
    let all = ["--compressed", "-H", "Accept-Encoding: gzip, br, zstd"];
    let app = |p: &str| plain(&b, "app.test", p);
    for (url, extra, why) in [
        (app("/small.txt"), &[][..], "short"),
        (app("/image.png"), &[], "an image"),
        (
            app("/index.html"),
            &["-H", "Range: bytes=100-199"][..],
            "a range",
        ),
        (
            app("/whole/index.html"),
            &["-H", "Range: bytes=100-199"][..],
            "a range the upstream ignores",
        ),
        (app("/index.html"), &["-I"][..], "HEAD"),
        (
            app("/index.html"),
            &["-H", "Cache-Control: no-transform"][..],
            "a request saying no-transform",
        ),
        (
            plain(&b, "off.test", "/index.html"),
            &[],
            "compress = false",
        ),
        (
            plain(&b, "reg.test", "/data.json"),
            &[],
            "the registry profile",
        ),
    ] {
        let got = get(&url, &[&all[..], extra].concat());
        assert_eq!(
            got.header("content-encoding"),
            None,
            "{why}: {:?}",
            got.headers
        );
        let expect_vary = [
            "HEAD",
            "a range the upstream ignores",
            "a request saying no-transform",
        ]
        .contains(&why);
        assert_eq!(
            vary_names_accept_encoding(&got),
            expect_vary,
            "{why}: {:?}",
            got.headers
        );
        if why == "a range" {
            assert_eq!(got.status, 206);
            assert!(got.body == site.html[100..200]);
        }
        if why == "a range the upstream ignores" {
            assert_eq!(got.status, 200);
            assert!(got.body == site.html);
        }
    }
    // A 304 carries the Vary and the weak ETag of the 200 it stands for.
    let not_modified = get(
        &app("/index.html"),
        &[
            "-H",
            "Accept-Encoding: gzip",
            "-H",
            &format!("If-None-Match: {etag}"),
        ],
    );
    assert_eq!(not_modified.status, 304);
    assert_eq!(
        not_modified.header("etag"),
        Some(format!("W/{etag}").as_str())
    );
    assert!(
        vary_names_accept_encoding(&not_modified),
        "{:?}",
        not_modified.headers
    );
    assert_eq!(not_modified.header("content-encoding"), None);
    let pre = get(&app("/pre/index.html"), &all);
    assert_eq!(
        pre.headers_named("content-encoding"),
        ["gzip"],
        "nginx's own gzip passes as it is: {:?}",
        pre.headers
    );
    assert!(pre.body == site.html);
}

/// chromium loads a page through berth, decodes whatever coding it was sent (it asks for
/// gzip, deflate, br and zstd) and renders every row.
#[tokio::test(flavor = "multi_thread")]
async fn a_browser_renders_a_compressed_page() {
    let site = site();
    let nginx = nginx(&site);
    let b = berth(&common::config(&route("127.0.0.1", &[nginx.addr], "")));
    let browser = berth_testkit::browser::Browser::start()
        .expect("chromium must be installed (scripts/test installs it)");
    let mut page = browser
        .open(&format!("http://127.0.0.1:{}/index.html", b.http.port()))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.log()));
    let rows = page
        .eval("document.querySelectorAll('p').length")
        .await
        .unwrap();
    assert_eq!(rows, serde_json::json!(2000), "{}", b.log());
    let sizes = page
        .eval(
            "(() => { const n = performance.getEntriesByType('navigation')[0]; \
             return [n.encodedBodySize, n.decodedBodySize]; })()",
        )
        .await
        .unwrap();
    let sizes: Vec<u64> = serde_json::from_value(sizes).unwrap();
    assert_eq!(sizes[1], site.html.len() as u64);
    assert!(sizes[0] * 5 < sizes[1], "sent compressed: {sizes:?}");
    let coding = page
        .eval("fetch('/index.html').then((r) => r.headers.get('content-encoding'))")
        .await
        .unwrap();
    let coding = coding.as_str().unwrap_or_default().to_string();
    assert!(
        ["gzip", "br", "zstd"].contains(&coding.as_str()),
        "{coding}"
    );
    eprintln!("chromium was sent {coding}");
}

/// A streaming upstream: its first chunk reaches the client, decoded, while the upstream
/// still holds the rest back until the test sees it.
#[test]
fn a_streamed_response_is_compressed_chunk_by_chunk() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
            line.clear();
        }
        let chunk = |text: &str| format!("{:x}\r\n{text}\r\n", text.len());
        let first = "<p>first part</p>\n".repeat(100);
        write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            chunk(&first)
        )
        .unwrap();
        conn.flush().unwrap();
        release_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        write!(conn, "{}0\r\n\r\n", chunk("<p>the end</p>\n")).unwrap();
        conn.flush().unwrap();
    });
    let b = berth(&common::config(&route("s.test", &[upstream], "")));
    let mut child = Command::new("curl")
        .args([
            "-sS",
            "-N",
            "--max-time",
            "30",
            "--compressed",
            "-H",
            "Accept-Encoding: gzip",
            "-D",
            "/dev/stderr",
        ])
        .arg("--resolve")
        .arg(resolve("s.test", b.http))
        .arg(plain(&b, "s.test", "/"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // The first part, decoded, while the upstream waits for the signal below.
    while seen.len() < 1800 {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended before its first part arrived");
        seen.extend_from_slice(&buf[..n]);
    }
    assert_eq!(seen, "<p>first part</p>\n".repeat(100).as_bytes());
    release_tx.send(()).unwrap();
    out.read_to_end(&mut seen).unwrap();
    let status = child.wait_with_output().unwrap();
    let head = String::from_utf8_lossy(&status.stderr).to_ascii_lowercase();
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(seen.ends_with(b"<p>the end</p>\n"));
    server.join().unwrap();
}

/// An HTTP/1.0 upstream's answer, compressed, reaches the client as HTTP/1.1 with chunked
/// framing (HTTP/1.0 has no chunked encoding: a browser would read until the connection
/// closes, and berth keeps it open); one of known length is compressed in the encoder's own
/// blocks.
#[tokio::test(flavor = "multi_thread")]
async fn an_http_1_0_upstreams_answer_is_framed_as_http_1_1_when_compressed() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap();
    let page = "<p>an old server</p>\n".repeat(200);
    let served = page.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(2) {
            let mut conn = conn.unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                line.clear();
            }
            write!(
                conn,
                "HTTP/1.0 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{served}",
                served.len()
            )
            .unwrap();
        }
    });
    let b = berth(&common::config(&route("old.test", &[upstream], "")));
    let raw = berth_testkit::client::send_raw(
        b.http,
        b"GET / HTTP/1.1\r\nHost: old.test\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let (head, _) = raw.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(head.contains("content-encoding: gzip"), "{head}");
    let got = curl(
        &plain(&b, "old.test", "/"),
        &[
            "--resolve",
            &resolve("old.test", b.http),
            "--compressed",
            "-H",
            "Accept-Encoding: gzip",
        ],
    );
    assert_eq!(got.body, page.as_bytes());
}
