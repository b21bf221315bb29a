//! The dashboard in a real browser: Debian's chromium, headless, driven over the DevTools
//! protocol, against the real berth following the real Docker daemon.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use berth_testkit::browser::Browser;
use berth_testkit::client::{send, Request, Traffic};
use berth_testkit::docker::{unique, Container, BUSYBOX};
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
    serve_json(serde_json::json!({
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
    }))
    .await
}

/// Answers every request with `value` as JSON, on a loopback port.
async fn serve_json(value: serde_json::Value) -> std::net::SocketAddr {
    let body = value.to_string();
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
    let _daemon = berth_testkit::docker::shared().await;
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
    let files = tempfile::tempdir().unwrap();
    let (client_ca, htpasswd, groups) = (
        files.path().join("clients.pem"),
        files.path().join("htpasswd"),
        files.path().join("groups"),
    );
    std::fs::write(&client_ca, TestCa::new("clients").pem()).unwrap();
    std::fs::write(&htpasswd, "").unwrap();
    std::fs::write(&groups, "team-a: alice\n").unwrap();
    let b = berth(&format!(
        "[listen]\nhttp = \"{{http}}\"\nhttps = \"{{https}}\"\nmetrics = \"{{admin}}\"\n\n\
         [tls]\ncerts-dir = \"{}\"\ndefault-cert = \"none\"\n\n[acme]\nmetrics = \"{acme}\"\n\n\
         [docker]\nenabled = true\n\n[[route]]\nhost = \"down.test\"\nupstreams = [\"127.0.0.1:{}\"]\n\
         https = \"noredirect\"\nhealth-check = \"/\"\nhealth-interval = \"1s\"\nhealth-fails = 1\n\n[[route]]\nhost = \"rules.test\"\nupstreams = [\"127.0.0.1:{}\"]\n\
         profile = \"registry\"\nclient-ca = \"{}\"\nclient-auth = \"optional\"\nauth.htpasswd = \"{}\"\n\
         auth.groups = \"{}\"\nauth.repositories = [\n\
           {{ repositories = [\"team-a/*\"], users = [\"@team-a\", \"cert:ci\"], allow = [\"pull\", \"push\"] }},\n\
           {{ repositories = [\"secret/*\"], users = [\"*\"], allow = [] }},\n\
         ]\n",
        certs.path().display(),
        berth_testkit::free_port(),
        berth_testkit::free_port(),
        client_ca.display(),
        htpasswd.display(),
        groups.display(),
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
            "-l",
            "berth.health-check=/index.html",
            "-l",
            "berth.health-interval=1s",
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
    // Health checks: the container's upstream passes its checks (set by labels), the file
    // route's upstream, where nothing listens, is marked down.
    let web_up = format!("({}) up", web.name);
    page.wait_until(
        &row_has(
            "route-rows",
            &[&host, &web_up, "health check /index.html every 1s"],
            " && tr.querySelector('.pill.ok') !== null",
        ),
        wait,
    )
    .await
    .unwrap();
    page.wait_until(
        &row_has(
            "route-rows",
            &["down.test", " down", "health check / every 1s"],
            " && tr.querySelector('.pill.bad') !== null",
        ),
        wait,
    )
    .await
    .unwrap();
    // A registry route's rules in short, in order, and its client certificates.
    page.wait_until(
        &row_has(
            "route-rows",
            &[
                "rules.test",
                "team-a/*: @team-a cert:ci → pull, push",
                "secret/*: * → nothing",
                "client certificate optional",
            ],
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

/// The certificate table follows berth-acme's renewal date where it disagrees with the
/// default rule, one row that cannot be drawn leaves the others standing, Trusted Types keep
/// strings out of HTML sinks, and no secret in a URL reaches the page.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_follows_berth_acme_keeps_rows_apart_and_shows_no_secrets() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("berth dashboard test CA");
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    // early.test: 300 of 365 days left, which the default rule calls fine, but berth-acme
    // renews it at a date already past. late.test: 5 days left of 6 years, which the
    // default rule calls overdue, but berth-acme renews it in two days.
    let early = ca.issue_valid(&["early.test"], now - day * 65, now + day * 300);
    let late = ca.issue_valid(&["late.test"], now - day * (6 * 365), now + day * 5);
    install(certs.path(), "early.test", &early).unwrap();
    install(certs.path(), "late.test", &late).unwrap();
    let unix = now.unix_timestamp();
    let acme = serve_json(serde_json::json!({
        "early.test": {
            "hosts": ["early.test"], "state": "valid", "not_after": unix + 300 * 86400,
            "renew_at": unix - 86400, "failures": 0,
            "last_error": "order at https://ca.test/acme/order/1?token=s3cret failed"
        },
        "late.test": {
            "hosts": ["late.test"], "state": "valid", "not_after": unix + 5 * 86400,
            "renew_at": unix + 2 * 86400, "failures": 0, "last_error": null
        }
    }))
    .await;
    let b = berth(&format!(
        "[listen]\nhttp = \"{{http}}\"\nhttps = \"{{https}}\"\nmetrics = \"{{admin}}\"\n\n\
         [tls]\ncerts-dir = \"{}\"\ndefault-cert = \"none\"\n\n[acme]\nmetrics = \"{acme}\"\n\n\
         [docker]\nenabled = false\n\n[[route]]\nhost = \"sso.test\"\nupstreams = [\"127.0.0.1:9\"]\n\
         auth.forward = \"http://127.0.0.1:9/api/verify?key=s3cret#s3cret\"\n",
        certs.path().display(),
    ));
    let admin = b.admin.unwrap();
    // The endpoints the page reads carry no secret.
    for path in ["/routes", "/certificates"] {
        let r = send(admin, &Request::get(&admin.to_string(), path))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{path}");
        let text = r.text();
        assert!(!text.contains("s3cret"), "{path}: {text}");
        assert!(
            text.contains("api/verify?…") || text.contains("acme/order/1?…"),
            "{path} shows the URL, cut: {text}"
        );
    }

    let browser = Browser::start().expect("chromium must be installed (scripts/test installs it)");
    let mut page = browser.open(&format!("http://{admin}/")).await.unwrap();
    let wait = Duration::from_secs(20);
    let row = |name: &str| {
        format!(
            "(([...document.querySelectorAll('#cert-rows tr')].find((tr) => tr.innerText.startsWith({})) || {{}}).innerText || '')",
            serde_json::json!(name)
        )
    };
    page.wait_until(
        &format!("{}.includes('renewal overdue')", row("early.test")),
        wait,
    )
    .await
    .unwrap();
    page.wait_until(&format!("{}.includes('days left')", row("late.test")), wait)
        .await
        .unwrap();
    let late = page.eval(&row("late.test")).await.unwrap();
    assert!(
        !late.as_str().unwrap().contains("overdue"),
        "berth-acme renews late.test in two days: {late}"
    );
    assert!(!page
        .eval("document.body.innerText")
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .contains("s3cret"));
    let errors = page.errors().await;
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");

    // One row that cannot be drawn (its renewal cell fails) is shown as such; the table and
    // the rows that can be drawn stay.
    page.eval("renewalCell = (x) => { if (x.renew_at > Date.now() / 1000) throw new Error('boom'); return document.createElement('span'); }; true")
        .await
        .unwrap();
    page.wait_until(
        &format!("{}.includes('cannot show: boom')", row("late.test")),
        wait,
    )
    .await
    .unwrap();
    page.wait_until(
        &format!("{}.includes('renewal overdue')", row("early.test")),
        wait,
    )
    .await
    .unwrap();

    // Trusted Types: a string assigned to an HTML sink is refused, even by script that runs
    // in the page.
    let sink = page
        .eval("try { document.getElementById('cert-rows').innerHTML = '<img src=x>'; 'assigned' } catch (e) { e.name }")
        .await
        .unwrap();
    assert_eq!(sink, serde_json::json!("TypeError"));
}
