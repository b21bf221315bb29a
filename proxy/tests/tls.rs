//! HTTPS: certificates per SNI from certs-dir (acme-companion layout), the generated
//! default, hot reload without disturbing open connections, bad files refused, TLS
//! versions and ALPN — checked with real clients (openssl s_client, curl).

#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_testkit::tls::{install, replace, s_client, served_cert, TestCa};
use berth_testkit::{BerthProcess, Origin};
use common::{berth, call, route};

fn tls_config(certs: &Path, default_cert: &str, routes: &str) -> String {
    format!(
        "[listen]\nhttp = \"{{http}}\"\nhttps = \"{{https}}\"\n\n[docker]\nenabled = false\n\n[tls]\ncerts-dir = \"{}\"\ndefault-cert = \"{default_cert}\"\n\n{routes}",
        certs.display()
    )
}

fn https(b: &BerthProcess) -> SocketAddr {
    b.https.unwrap()
}

/// Waits until the certificate served for `sni` satisfies `check`, up to `limit`.
fn wait_for_cert(
    addr: SocketAddr,
    sni: &str,
    limit: Duration,
    check: impl Fn(&str) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(text) = served_cert(addr, Some(sni)) {
            if check(&text) {
                return start.elapsed();
            }
        }
        assert!(
            start.elapsed() < limit,
            "certificate for {sni} did not change within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `curl` over HTTPS with the test CA trusted and `host` resolved to 127.0.0.1.
fn curl(addr: SocketAddr, host: &str, ca: &Path, extra: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "60", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{host}:{}:127.0.0.1", addr.port()))
        .args(extra)
        .arg(format!("https://{host}:{}/", addr.port()))
        .output()
        .unwrap()
}

/// A certs-dir with a certificate from a test CA for each host, and the CA's file beside it.
struct Pki {
    ca: TestCa,
    dir: tempfile::TempDir,
    certs: std::path::PathBuf,
    ca_file: std::path::PathBuf,
}

fn pki(hosts: &[&str]) -> Pki {
    let ca = TestCa::new("berth test CA");
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    for host in hosts {
        install(&certs, host, &ca.issue(&[host])).unwrap();
    }
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    Pki {
        ca,
        dir,
        certs,
        ca_file,
    }
}

#[test]
fn certificates_are_chosen_per_sni() {
    let ca = TestCa::new("berth test CA");
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path();
    install(certs, "a.test", &ca.issue(&["a.test"])).unwrap();
    install(
        certs,
        "example.test",
        &ca.issue(&["example.test", "*.example.test"]),
    )
    .unwrap();
    install(certs, "multi", &ca.issue(&["m1.test", "m2.test"])).unwrap();
    // acme-companion's layout: symlinks into a per-host directory.
    std::fs::create_dir(certs.join("s.test")).unwrap();
    let s = ca.issue(&["s.test"]);
    std::fs::write(certs.join("s.test/fullchain.pem"), &s.cert).unwrap();
    std::fs::write(certs.join("s.test/key.pem"), &s.key).unwrap();
    std::os::unix::fs::symlink("./s.test/fullchain.pem", certs.join("s.test.crt")).unwrap();
    std::os::unix::fs::symlink("./s.test/key.pem", certs.join("s.test.key")).unwrap();
    // A certificate stored under a name it does not cover is never served for that name.
    install(certs, "liar.test", &ca.issue(&["someone-else.test"])).unwrap();

    let origin = Origin::start("o");
    let routes = [
        route("m2.test", &[origin.addr], "cert-name = \"multi\""),
        route("m3.test", &[origin.addr], "cert-name = \"multi\""),
    ]
    .concat();
    let b = berth(&tls_config(certs, "generate", &routes));
    let addr = https(&b);
    let cases = [
        (Some("a.test"), "CN = a.test"),
        (Some("A.Test"), "CN = a.test"),
        (Some("x.example.test"), "CN = example.test"),
        (Some("example.test"), "CN = example.test"),
        (Some("m2.test"), "CN = m1.test"), // cert-name, covered
        (Some("m3.test"), "berth default certificate"), // cert-name, not covered
        (Some("s.test"), "CN = s.test"),   // symlinked layout
        (Some("liar.test"), "berth default certificate"), // SANs do not cover it
        (Some("y.x.example.test"), "berth default certificate"), // wildcard is one label
        (Some("unknown.test"), "berth default certificate"),
        (None, "berth default certificate"),
    ];
    for (sni, expected) in cases {
        let got = served_cert(addr, sni).unwrap_or_else(|e| panic!("{sni:?}: {e}\n{}", b.log()));
        assert!(
            got.contains(expected),
            "{sni:?}: expected {expected:?}, got {got}"
        );
    }
    // The generated default stays in certs-dir for the next start.
    assert!(certs.join("default.crt").exists() && certs.join("default.key").exists());
}

#[test]
fn without_a_default_unknown_names_are_refused() {
    let ca = TestCa::new("berth test CA");
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "a.test", &ca.issue(&["a.test"])).unwrap();
    let b = berth(&tls_config(dir.path(), "none", ""));
    assert!(served_cert(https(&b), Some("a.test"))
        .unwrap()
        .contains("CN = a.test"));
    let refused = served_cert(https(&b), Some("unknown.test"));
    assert!(refused.is_err(), "{refused:?}");
    assert!(!dir.path().join("default.crt").exists());
}

#[test]
fn tls_versions_and_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let b = berth(&tls_config(dir.path(), "generate", ""));
    let addr = https(&b);
    for (version, ok) in [
        ("-tls1", false),
        ("-tls1_1", false),
        ("-tls1_2", true),
        ("-tls1_3", true),
    ] {
        let out = s_client(
            addr,
            &[
                version,
                "-cipher",
                "DEFAULT@SECLEVEL=0",
                "-servername",
                "x.test",
            ],
        )
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let negotiated =
            text.contains("-----BEGIN CERTIFICATE-----") || text.contains("Server certificate");
        assert_eq!(negotiated, ok, "{version}: {text}");
    }
    for (offer, expected) in [
        ("h2,http/1.1", "ALPN protocol: h2"),
        ("http/1.1", "ALPN protocol: http/1.1"),
    ] {
        let out = s_client(addr, &["-alpn", offer, "-servername", "x.test"]).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(expected), "{offer}: {text}");
    }
}

#[test]
fn requests_over_https_reach_the_upstream_as_https() {
    let ca = TestCa::new("berth test CA");
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "a.test", &ca.issue(&["a.test"])).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let origin = Origin::start("o");
    let b = berth(&tls_config(
        dir.path(),
        "generate",
        &route("a.test", &[origin.addr], ""),
    ));
    let addr = https(&b);
    for version in ["--http1.1", "--http2"] {
        let out = curl(
            addr,
            "a.test",
            &ca_file,
            &[version, "-w", "\n%{http_version}"],
        );
        assert!(
            out.status.success(),
            "{version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let (json, http_version) = text.rsplit_once('\n').unwrap();
        let seen: berth_testkit::Seen = serde_json::from_str(json).unwrap();
        assert_eq!(seen.header("x-forwarded-proto"), Some("https"), "{version}");
        assert_eq!(seen.header("x-forwarded-ssl"), Some("on"));
        assert_eq!(
            seen.header("host"),
            Some(format!("a.test:{}", addr.port()).as_str())
        );
        let expected = if version == "--http2" { "2" } else { "1.1" };
        assert_eq!(http_version, expected);
    }
}

#[test]
fn certificates_reload_live_and_bad_files_keep_the_previous_one() {
    let Pki {
        ca,
        dir,
        certs,
        ca_file,
    } = pki(&["a.test"]);
    let origin = Origin::start("sink");
    let b = berth(&tls_config(
        &certs,
        "generate",
        &route("a.test", &[origin.addr], ""),
    ));
    let addr = https(&b);
    let before = served_cert(addr, Some("a.test")).unwrap();
    assert!(
        before.contains("DNS:a.test") && !before.contains("renewed"),
        "{before}"
    );

    // A 1 GiB upload over TLS, slowed so that it is still running during the swap.
    let body = dir.path().join("body");
    std::fs::File::create(&body)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let upload = Command::new("curl")
        .args(["-sS", "--max-time", "120", "--limit-rate", "150M", "-T"])
        .arg(&body)
        .arg("--cacert")
        .arg(&ca_file)
        .arg("--resolve")
        .arg(format!("a.test:{}:127.0.0.1", addr.port()))
        .arg(format!("https://a.test:{}/upload", addr.port()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut upload = upload;
    // The upload is under way: the origin has started receiving it.
    let start = Instant::now();
    while origin.bytes_received() == 0 {
        assert!(
            upload.try_wait().unwrap().is_none(),
            "the upload ended early"
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the upload never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Renewed: same name, new SAN list, renamed into place (key, then certificate). New
    // handshakes get it within a second, as documented.
    install(&certs, "a.test", &ca.issue(&["a.test", "renewed.a.test"])).unwrap();
    let took = wait_for_cert(addr, "a.test", Duration::from_secs(1), |t| {
        t.contains("renewed.a.test")
    });
    eprintln!("new certificate served {took:?} after the rename");
    // ...while the upload over the old certificate is still running.
    assert!(
        upload.try_wait().unwrap().is_none(),
        "the upload was over before the new certificate was served: nothing was proven"
    );

    let out = upload.wait_with_output().unwrap();
    assert!(out.status.success(), "upload failed during the swap");
    let seen: berth_testkit::Seen = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen.body_bytes, 1 << 30);
    // SHA-256 of 1 GiB of zeros.
    assert_eq!(
        seen.body_sha256,
        "49bc20df15e412a64472421e13fe86ff1c5165e18b2afccf160d4dc19fe68a14"
    );

    // Garbage in place of the certificate: the renewed one keeps serving.
    replace(
        &certs.join("a.test.crt"),
        b"-----BEGIN CERTIFICATE-----\nnot a certificate\n",
    )
    .unwrap();
    // A key that does not belong to its certificate: refused too.
    let other = ca.issue(&["b.test"]);
    install(
        &certs,
        "b.test",
        &berth_testkit::tls::Pem {
            cert: other.cert,
            key: ca.issue(&["b.test"]).key,
        },
    )
    .unwrap();
    let start = Instant::now();
    while !(b.log().contains("a.test.crt") && b.log().contains("does not match")) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "errors not logged:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(served_cert(addr, Some("a.test"))
        .unwrap()
        .contains("renewed.a.test"));
    assert!(served_cert(addr, Some("b.test"))
        .unwrap()
        .contains("berth default certificate"));

    // Removed: falls back along the selection order (here, to the default).
    std::fs::remove_file(certs.join("a.test.crt")).unwrap();
    wait_for_cert(addr, "a.test", Duration::from_secs(5), |t| {
        t.contains("berth default certificate")
    });
}

/// Status and lowercase headers of an HTTPS request made with curl.
fn curl_head(addr: SocketAddr, host: &str, ca: &Path, path: &str) -> (u16, Vec<(String, String)>) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "--cacert",
        ])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{host}:{}:127.0.0.1", addr.port()))
        .arg(format!("https://{host}:{}{path}", addr.port()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {host}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread")]
async fn https_modes_redirect_and_hsts() {
    use berth_testkit::client::{Body, Request};
    let Pki {
        certs,
        ca_file,
        dir: _dir, // the certificates live there: keep it
        ..
    } = pki(&[
        "a.test",
        "reg.test",
        "nohttp.test",
        "nohttps.test",
        "nr.test",
        "dead.test",
    ]);
    let origin = Origin::start("o");
    let o = [origin.addr];
    let dead = [SocketAddr::from((
        [127, 0, 0, 1],
        berth_testkit::free_port(),
    ))];
    let routes = [
        route("a.test", &o, ""),
        route("fresh.test", &o, ""), // no certificate of its own yet
        route("reg.test", &o, "profile = \"registry\""),
        route("nohttp.test", &o, "https = \"nohttp\""),
        route("nohttps.test", &o, "https = \"nohttps\""),
        route("nr.test", &o, "https = \"noredirect\""),
        route("dead.test", &dead, ""),
    ]
    .concat();
    let b = berth(&tls_config(&certs, "generate", &routes));
    let (http_port, tls) = (b.http.port(), https(&b));
    let authority = |h: &str| format!("{h}:{http_port}");
    let expected_location = |h: &str| format!("https://{h}:{}/v2/x?n=1", tls.port());

    // Plain HTTP: redirect codes per method, location keeps host, mapped port, path, query.
    for (host, method, code) in [
        ("a.test", "GET", 301),
        ("a.test", "HEAD", 301),
        ("a.test", "POST", 308),
        ("a.test", "PUT", 308),
        ("a.test", "PATCH", 308),
        ("a.test", "DELETE", 308),
        ("reg.test", "GET", 301),
        ("reg.test", "HEAD", 308),
        ("reg.test", "PATCH", 308),
    ] {
        let mut req = Request::new(method, &authority(host), "/v2/x?n=1");
        if method != "GET" && method != "HEAD" && method != "DELETE" {
            req = req.body(Body::Bytes(b"payload".to_vec()));
        }
        let r = call(&b, &req).await;
        assert_eq!(r.status, code, "{method} {host}");
        assert_eq!(
            r.header("location"),
            Some(expected_location(host).as_str()),
            "{method} {host}"
        );
        assert_eq!(
            r.header("strict-transport-security"),
            None,
            "no HSTS over plain HTTP"
        );
    }
    let r = call(&b, &Request::get(&authority("reg.test"), "/v2/x?n=1")).await;
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    assert_eq!(
        origin.hits(),
        0,
        "redirected requests never reach the upstream"
    );

    // Served on plain HTTP: a host without its own certificate, noredirect, nohttps.
    for host in ["fresh.test", "nr.test", "nohttps.test"] {
        let r = call(&b, &Request::get(&authority(host), "/")).await;
        assert_eq!(r.status, 200, "{host} over HTTP");
    }
    let r = call(&b, &Request::get(&authority("nohttp.test"), "/")).await;
    assert_eq!(r.status, 503, "nohttp over HTTP");

    // HTTPS: HSTS on the route's responses, upstream errors included; not under noredirect.
    let hsts = Some("max-age=31536000");
    for (host, status, expect_hsts) in [
        ("a.test", 200, hsts),
        ("reg.test", 200, hsts),
        ("nohttp.test", 200, hsts),
        ("nr.test", 200, None),
        ("nohttps.test", 503, None),
        ("dead.test", 502, hsts),
    ] {
        let (code, headers) = curl_head(tls, host, &ca_file, "/");
        assert_eq!(code, status, "{host} over HTTPS");
        assert_eq!(
            header(&headers, "strict-transport-security"),
            expect_hsts,
            "{host}"
        );
    }
}

#[test]
fn one_gib_uploads_over_h2_and_h1_arrive_byte_exact() {
    let Pki {
        dir,
        certs,
        ca_file,
        ..
    } = pki(&["a.test"]);
    let origin = Origin::start("sink");
    let b = berth(&tls_config(
        &certs,
        "generate",
        &route("a.test", &[origin.addr], "profile = \"registry\""),
    ));
    let body = dir.path().join("body");
    std::fs::File::create(&body)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    for version in ["--http2", "--http1.1"] {
        let out = curl(
            https(&b),
            "a.test",
            &ca_file,
            &[
                version,
                "-T",
                body.to_str().unwrap(),
                "-w",
                "\n%{http_version}",
            ],
        );
        assert!(
            out.status.success(),
            "{version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let (json, http_version) = text.rsplit_once('\n').unwrap();
        assert_eq!(http_version, if version == "--http2" { "2" } else { "1.1" });
        let seen: berth_testkit::Seen = serde_json::from_str(json).unwrap();
        assert_eq!(seen.body_bytes, 1 << 30, "{version}");
        // SHA-256 of 1 GiB of zeros.
        assert_eq!(
            seen.body_sha256,
            "49bc20df15e412a64472421e13fe86ff1c5165e18b2afccf160d4dc19fe68a14"
        );
    }
}

/// `docker push` sends several layers at once over one HTTP/2 connection: four uploads,
/// each larger than the connection's flow-control window, multiplexed on one connection,
/// proxied at the same time and every one arriving byte-exact at its own request.
#[test]
fn concurrent_uploads_on_one_h2_connection_arrive_byte_exact() {
    use sha2::Digest as _;
    const LAYER: usize = 48 << 20;
    const _: () = assert!(LAYER > berth_proxy::server::H2_CONNECTION_WINDOW as usize);
    let Pki {
        dir,
        certs,
        ca_file,
        ..
    } = pki(&["a.test"]);
    let origin = Origin::start("sink");
    let b = berth(&tls_config(
        &certs,
        "none",
        &route("a.test", &[origin.addr], "profile = \"registry\""),
    ));
    let port = https(&b).port();
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "120", "--http2", "-Z", "--cacert"])
        .arg(&ca_file)
        .arg("--resolve")
        .arg(format!("a.test:{port}:127.0.0.1"))
        .args(["-w", "%{url} %{http_version} %{num_connects}\\n"]);
    let mut want = Vec::new();
    for i in 0u8..4 {
        // 48 MiB each, a different byte pattern per upload: a mix-up changes a digest.
        let body: Vec<u8> = (0..LAYER as u32).map(|n| (n % 251) as u8 ^ i).collect();
        let file = dir.path().join(format!("layer{i}"));
        std::fs::write(&file, &body).unwrap();
        want.push((
            format!("/layer{i}"),
            hex::encode(sha2::Sha256::digest(&body)),
        ));
        cmd.arg("-T")
            .arg(&file)
            .arg("-o")
            .arg(dir.path().join(format!("answer{i}")))
            .arg(format!("https://a.test:{port}/layer{i}"));
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 4, "{report}");
    assert!(
        lines.iter().all(|l| l.contains(" 2 ")),
        "not all over HTTP/2: {report}"
    );
    // One connection for all four: the first transfer opened it, the others were multiplexed.
    let connects: u32 = lines
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u32>().unwrap())
        .sum();
    assert_eq!(connects, 1, "{report}");
    for (i, (path, digest)) in want.iter().enumerate() {
        let answer = std::fs::read(dir.path().join(format!("answer{i}"))).unwrap();
        let seen: berth_testkit::Seen = serde_json::from_slice(&answer).unwrap();
        assert_eq!(&seen.target, path);
        assert_eq!(seen.body_bytes, LAYER as u64, "{path}");
        assert_eq!(&seen.body_sha256, digest, "{path}");
    }
    // The four went to the origin at the same time, not one after another.
    assert_eq!(origin.peak_concurrent_requests(), 4);
}

/// SNI picks the certificate, `Host` picks the route (as nginx does); a port in `Host` other
/// than the listener's does not change either, and reaches the upstream as the client sent it.
#[tokio::test(flavor = "multi_thread")]
async fn sni_picks_the_certificate_and_host_picks_the_route() {
    let Pki {
        certs,
        ca_file,
        dir: _dir,
        ..
    } = pki(&["a.test", "b.test"]);
    let (a, b_origin) = (Origin::start("a"), Origin::start("b"));
    let b = berth(&tls_config(
        &certs,
        "none",
        &[
            route("a.test", &[a.addr], "https = \"noredirect\""),
            route("b.test", &[b_origin.addr], "https = \"noredirect\""),
        ]
        .concat(),
    ));
    let seen = |out: std::process::Output| -> berth_testkit::Seen {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // SNI a.test (verified against a.test's certificate), Host b.test:9999.
    let s = seen(curl(
        https(&b),
        "a.test",
        &ca_file,
        &["-H", "Host: b.test:9999"],
    ));
    assert_eq!(s.origin, "b");
    assert_eq!(s.header("host"), Some("b.test:9999"));
    assert_eq!(s.header("x-forwarded-proto"), Some("https"));
    // Same name, another port: the same route.
    let s = seen(curl(
        https(&b),
        "a.test",
        &ca_file,
        &["-H", "Host: a.test:1"],
    ));
    assert_eq!(
        (s.origin.as_str(), s.header("host")),
        ("a", Some("a.test:1"))
    );
    // A Host no route has: 503, whatever the SNI.
    let out = curl(
        https(&b),
        "a.test",
        &ca_file,
        &[
            "-H",
            "Host: nobody.test",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "503");
}

/// A renewal written in the documented order (key renamed into place, then the certificate)
/// is never an error, even when berth looks between the two renames; a key that keeps not
/// matching is, once, after the settle time, and the previous pair keeps serving.
#[test]
fn renewals_log_no_error_between_key_and_certificate_and_a_lasting_mismatch_does() {
    let Pki {
        ca,
        dir: _dir,
        certs,
        ca_file,
    } = pki(&["a.test"]);
    let origin = Origin::start("sink");
    let b = berth(&tls_config(
        &certs,
        "generate",
        &route("a.test", &[origin.addr], ""),
    ));
    let addr = https(&b);
    let waiting = "waiting for the other half";
    for round in 1..=3 {
        let name = format!("r{round}.a.test");
        let next = ca.issue(&["a.test", &name]);
        replace(&certs.join("a.test.key"), next.key.as_bytes()).unwrap();
        // berth has seen the new key beside the old certificate...
        let start = Instant::now();
        while b.log().matches(waiting).count() < round {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "round {round}: berth never looked between the renames:\n{}",
                b.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // ...and still serves the old pair.
        let served = served_cert(addr, Some("a.test")).unwrap();
        assert!(!served.contains(&name), "{served}");
        replace(&certs.join("a.test.crt"), next.cert.as_bytes()).unwrap();
        wait_for_cert(addr, "a.test", Duration::from_secs(1), |t| {
            t.contains(&name)
        });
        let ok = curl(
            addr,
            "a.test",
            &ca_file,
            &["-o", "/dev/null", "-w", "%{http_code}"],
        );
        assert_eq!(String::from_utf8_lossy(&ok.stdout), "200");
    }
    assert!(
        !b.log().contains("ERROR"),
        "a renewal in the documented order logged an error:\n{}",
        b.log()
    );

    // A key that never gets its certificate: one ERROR after the settle time, and the last
    // good pair keeps serving.
    let stray = ca.issue(&["a.test"]);
    replace(&certs.join("a.test.key"), stray.key.as_bytes()).unwrap();
    let start = Instant::now();
    while !b.log().contains("has not matched") {
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "a lasting mismatch was never reported:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "reported before the settle time"
    );
    let log = b.log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("a.test.key"), "{}", errors[0]);
    assert!(served_cert(addr, Some("a.test"))
        .unwrap()
        .contains("r3.a.test"));
}
