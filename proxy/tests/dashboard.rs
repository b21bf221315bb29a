//! The dashboard in a real browser: Debian's chromium, headless, driven over the DevTools
//! protocol, against the real berth following the real Docker daemon.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use berth_testkit::browser::Browser;
use berth_testkit::client::{send, Request, Traffic};
use berth_testkit::docker::{require, unique, Container, BUSYBOX};
use berth_testkit::tls::{install, TestCa};
use common::{berth, call};

/// Where test artefacts go: `target/artefacts/`.
fn artefact(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/artefacts")
        .join(name)
}

/// berth-acme's `GET /certificates` (an object keyed by certificate name, as
/// `acme-worker/src/metrics.rs` writes it), answered by a stand-in on a loopback port.
async fn fake_acme() -> std::net::SocketAddr {
    let body = serde_json::json!({
        "overdue.test": {
            "hosts": ["overdue.test"], "challenge": "http-01", "source": "file",
            "state": "failed", "not_after": 1_900_000_000, "renew_at": 1_700_000_000,
            "failures": 2, "last_error": "the CA refused: rateLimited",
            "retry_at": null, "last_propagation_seconds": null
        },
        "null.test": null,
        "odd.test": { "hosts": "odd.test", "state": 3, "renew_at": "soon", "last_error": 7 },
        "pending.test": {
            "hosts": ["pending.test"], "challenge": "dns-01", "source": "container web",
            "state": "ordering", "not_after": null, "renew_at": null,
            "failures": 0, "last_error": null, "retry_at": null, "last_propagation_seconds": null
        }
    })
    .to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let body = body.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_routes_problems_certificates_and_live_traffic() {
    require();
    let certs = tempfile::tempdir().unwrap();
    let host = format!("{}.test", unique("dash"));
    let ca = TestCa::new("berth dashboard test CA");
    install(certs.path(), &host, &ca.issue(&[&host])).unwrap();
    // A certificate with 5 days left of 6 years: its renewal is overdue.
    let now = time::OffsetDateTime::now_utc();
    let overdue = ca.issue_valid(
        &["overdue.test"],
        now - time::Duration::days(6 * 365),
        now + time::Duration::days(5),
    );
    install(certs.path(), "overdue.test", &overdue).unwrap();
    let acme = fake_acme().await;
    let b = berth(&format!(
        "[listen]\nhttp = \"{{http}}\"\nhttps = \"{{https}}\"\nmetrics = \"{{admin}}\"\n\n\
         [tls]\ncerts-dir = \"{}\"\ndefault-cert = \"none\"\n\n[acme]\nmetrics = \"{acme}\"\n\n\
         [docker]\nenabled = true\n\n[[route]]\nhost = \"down.test\"\nupstreams = [\"127.0.0.1:{}\"]\n\
         https = \"noredirect\"\n",
        certs.path().display(),
        berth_testkit::free_port()
    ));
    let web = Container::run(
        "dash-web",
        &[
            "-l",
            &format!("berth.host={host}"),
            "-l",
            "berth.port=8080",
            "-l",
            "berth.https=noredirect",
            BUSYBOX,
            "sh",
            "-c",
            "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www",
        ],
    )
    .unwrap();
    let broken = Container::run(
        "dash-broken",
        &[
            "-l",
            "berth.host=broken.test",
            "-l",
            "berth.port=eighty",
            BUSYBOX,
            "sleep",
            "600",
        ],
    )
    .unwrap();

    let browser = Browser::start().expect("chromium must be installed (scripts/test installs it)");
    let admin = b.admin.unwrap();
    let mut page = browser.open(&format!("http://{admin}/")).await.unwrap();
    let wait = Duration::from_secs(20);
    let text_has = |s: &str| format!("document.body.innerText.includes({})", serde_json::json!(s));

    let row_has = |table: &str, parts: &[&str], extra: &str| {
        format!(
            "[...document.querySelectorAll('#{table} tr')].some((tr) => {}.every((p) => tr.innerText.includes(p)){extra})",
            serde_json::json!(parts)
        )
    };
    // A route from a labelled container: its host, the container behind the upstream, the
    // source and the settings the labels gave it.
    let web_upstream = format!("({})", web.name);
    let web_source = format!("container {}", web.name);
    page.wait_until(
        &row_has(
            "route-rows",
            &[&host, &web_upstream, &web_source, "https noredirect"],
            "",
        ),
        wait,
    )
    .await
    .unwrap();
    // The invalid container, marked so, with its error.
    page.wait_until(
        &row_has(
            "containers",
            &[&broken.name, "invalid port \"eighty\""],
            " && tr.querySelector('.pill.bad')?.textContent === 'invalid'",
        ),
        wait,
    )
    .await
    .unwrap();
    // The certificates: issuer, expiry, an overdue renewal marked, a fresh one not.
    page.wait_until(&text_has("berth dashboard test CA"), wait)
        .await
        .unwrap();
    page.wait_until(
        &row_has(
            "cert-rows",
            &["overdue.test", "4 days left, renewal overdue"],
            " && tr.querySelector('.pill.warn')",
        ),
        wait,
    )
    .await
    .unwrap();
    page.wait_until(
        &row_has(
            "cert-rows",
            &[&host, "days left"],
            " && tr.querySelector('.pill.ok') && !tr.innerText.includes('overdue')",
        ),
        wait,
    )
    .await
    .unwrap();
    // berth-acme's view: a failed renewal with its error, and a certificate not served yet
    // (its odd entries are shown as well as they can be, without breaking the page).
    page.wait_until(
        &row_has(
            "cert-rows",
            &["overdue.test", "the CA refused: rateLimited"],
            "",
        ),
        wait,
    )
    .await
    .unwrap();
    page.wait_until(&text_has("not served yet"), wait)
        .await
        .unwrap();
    page.wait_until(&text_has("pending.test"), wait)
        .await
        .unwrap();
    page.wait_until(
        "document.getElementById('docker').innerText.endsWith('connected') && !document.getElementById('docker').innerText.includes('disconnected')",
        wait,
    )
    .await
    .unwrap();

    // The live counter rises while requests are sent.
    let counter = "Number(document.getElementById('total-requests').dataset.value || -1)";
    page.wait_until(&format!("{counter} >= 0"), wait)
        .await
        .unwrap();
    let before = page.eval(counter).await.unwrap().as_f64().unwrap();
    for _ in 0..25 {
        let r = call(&b, &Request::get(&host, "/")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    page.wait_until(&format!("{counter} >= {}", before + 25.0), wait)
        .await
        .unwrap();
    // While traffic keeps coming (and a route with no upstream fails every request): a rate
    // above zero, the failing route's error rate, and the chart of the last minutes.
    let traffic = Traffic::start(b.http, &host);
    let failing = Traffic::start(b.http, "down.test");
    page.wait_until(
        "Number(document.getElementById('rps').textContent) > 0",
        wait,
    )
    .await
    .unwrap();
    page.wait_until(&row_has("hosts", &["down.test", "100.0 %"], ""), wait)
        .await
        .unwrap();
    let points = "document.getElementById('line').getAttribute('points').split(' ').filter(Boolean).length >= 4";
    page.wait_until(points, wait).await.unwrap();
    let (ok, failed) = traffic.stop().await;
    assert!(ok > 0 && failed.is_empty(), "{failed:?}");
    let (ok, _) = failing.stop().await;
    assert_eq!(ok, 0, "down.test has no upstream");

    let errors = page.errors().await;
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
    page.screenshot(&artefact("dashboard.png")).await.unwrap();
    assert!(std::fs::metadata(artefact("dashboard.png")).unwrap().len() > 10_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_and_its_data_answer_only_on_the_admin_listener() {
    let b =
        berth("[listen]\nhttp = \"{http}\"\nmetrics = \"{admin}\"\n\n[docker]\nenabled = false\n");
    let admin = b.admin.unwrap();
    for path in ["/", "/routes", "/certificates", "/traffic", "/status"] {
        let r = send(admin, &Request::get(&admin.to_string(), path))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "admin {path}");
        let r = call(&b, &Request::get(&admin.to_string(), path)).await;
        assert_eq!(r.status, 503, "public {path}: {}", r.text());
        let r = call(&b, &Request::get("localhost", path)).await;
        assert_ne!(r.status, 200, "public {path}");
    }
    let r = send(admin, &Request::get(&admin.to_string(), "/"))
        .await
        .unwrap();
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    let html = r.text();
    // Another name for the admin address (DNS rebinding) is refused.
    let r = send(admin, &Request::get("evil.example", "/routes"))
        .await
        .unwrap();
    assert_eq!(r.status, 421);
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page loads nothing from elsewhere"
    );
}
