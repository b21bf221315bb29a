//! Error and maintenance pages (`error-pages`, `maintenance`, `maintenance-reads`): berth's
//! own answers as browsers, JSON clients, curl and the Docker CLI read them, the upstream's
//! own errors untouched, pages and maintenance switched by a reload; a registry in maintenance
//! refusing the real Docker CLI's push with a message it prints, and serving its pull.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use berth_testkit::client::{send, Request, Response};
use berth_testkit::oci::build_image;
use berth_testkit::registry::{skopeo, Registry};
use berth_testkit::{BerthProcess, Origin};
use common::{berth, call, config, docker_cli, files_below, route};

const BROWSER: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

fn get(host: &str, path: &str, accept: &str) -> Request {
    let r = Request::get(host, path);
    if accept.is_empty() {
        r
    } else {
        r.header("Accept", accept)
    }
}

fn content_type(r: &Response) -> &str {
    r.header("content-type").unwrap_or("")
}

fn write_pages(dir: &Path, pages: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, body) in pages {
        std::fs::write(dir.join(name), body).unwrap();
    }
}

/// A config whose routes are those given, with `[defaults] error-pages = pages`.
fn with_pages(pages: &Path, routes: &str) -> String {
    config(&format!(
        "[defaults]\nerror-pages = \"{}\"\n\n{routes}",
        pages.display()
    ))
}

/// Sends requests until `done` holds for the answer: a reload has been taken in.
async fn wait_for(b: &BerthProcess, req: &Request, done: impl Fn(&Response) -> bool) -> Response {
    let started = std::time::Instant::now();
    loop {
        let r = call(b, req).await;
        if done(&r) {
            return r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not taken in within 10 s: {} {}\n{}",
            r.status,
            r.text(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn berths_own_answers_are_the_operators_pages_in_the_form_the_client_reads() {
    let work = tempfile::tempdir().unwrap();
    let pages = work.path().join("errors");
    write_pages(
        &pages,
        &[
            ("502.html", "<h1>our 502</h1>"),
            ("502.json", "{\"ours\": 502}"),
            ("503.html", "<h1>our 503</h1>"),
            ("maintenance.html", "<h1>back soon</h1>"),
            ("429.html", "<h1>our 429</h1>"),
        ],
    );
    let origin = Origin::start("up");
    let down: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let routes = |maintenance: bool| {
        [
            route("down.test", &[down], ""),
            route("up.test", &[origin.addr], ""),
            route(
                "maint.test",
                &[origin.addr],
                &format!("maintenance = {maintenance}"),
            ),
            route(
                "reads.test",
                &[origin.addr],
                "maintenance = true\nmaintenance-reads = true",
            ),
            route("reg.test", &[down], "profile = \"registry\""),
            route(
                "rate.test",
                &[origin.addr],
                "rate-limit = \"1r/m\"\nerror-pages = \"\"",
            ),
        ]
        .concat()
    };
    let b = berth(&with_pages(&pages, &routes(true)));

    // An unreachable upstream: the operator's 502 page for a browser, its JSON for a JSON
    // client, berth's line of text for curl.
    let html = call(&b, &get("down.test", "/", BROWSER)).await;
    assert_eq!(html.status, 502);
    assert_eq!(html.text(), "<h1>our 502</h1>");
    assert!(
        content_type(&html).starts_with("text/html"),
        "{:?}",
        html.headers
    );
    let json = call(&b, &get("down.test", "/", "application/json")).await;
    assert_eq!(
        (json.status, json.text().as_str()),
        (502, "{\"ours\": 502}")
    );
    assert_eq!(content_type(&json), "application/json");
    for accept in ["*/*", ""] {
        let text = call(&b, &get("down.test", "/", accept)).await;
        assert!(
            text.text().starts_with("502 Bad Gateway: "),
            "{accept:?}: {}",
            text.text()
        );
    }
    // No route: the [defaults] pages.
    let none = call(&b, &get("nowhere.test", "/", BROWSER)).await;
    assert_eq!(
        (none.status, none.text().as_str()),
        (503, "<h1>our 503</h1>")
    );
    // The upstream's own error passes as it is (the origin's JSON of what it saw).
    let upstream = call(&b, &get("up.test", "/status/502", BROWSER)).await;
    assert_eq!(upstream.status, 502);
    assert!(
        upstream.text().contains("\"origin\":\"up\""),
        "{}",
        upstream.text()
    );
    // Maintenance: 503, Retry-After and the maintenance page; with maintenance-reads, GET
    // passes and POST does not.
    let maint = call(&b, &get("maint.test", "/", BROWSER)).await;
    assert_eq!(
        (maint.status, maint.text().as_str()),
        (503, "<h1>back soon</h1>")
    );
    assert_eq!(maint.header("retry-after"), Some("120"));
    assert_eq!(
        origin.hits(),
        1,
        "a request in maintenance reached the upstream"
    );
    let read = call(&b, &get("reads.test", "/", BROWSER)).await;
    assert_eq!(read.status, 200);
    let with_body = call(
        &b,
        &Request::get("reads.test", "/form")
            .header("Accept", BROWSER)
            .body(berth_testkit::client::Body::random(100, false)),
    )
    .await;
    assert_eq!(with_body.status, 503, "a GET with a body is no read");
    let write = call(
        &b,
        &Request::new("POST", "reads.test", "/form").header("Accept", BROWSER),
    )
    .await;
    assert_eq!(
        (write.status, write.text().as_str()),
        (503, "<h1>back soon</h1>")
    );
    assert_eq!(origin.hits(), 2);
    // The registry profile: the registry's error JSON, whatever the client accepts.
    let reg = call(&b, &get("reg.test", "/v2/", BROWSER)).await;
    assert_eq!(reg.status, 502);
    let errors: serde_json::Value = serde_json::from_str(&reg.text()).unwrap();
    assert_eq!(errors["errors"][0]["code"], "UNAVAILABLE", "{errors}");
    assert_eq!(content_type(&reg), "application/json");
    assert_eq!(
        reg.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    // Without pages of its own (`error-pages = ""`, though [defaults] has a 429.html), a
    // browser gets berth's page.
    call(&b, &get("rate.test", "/", "")).await;
    let limited = call(&b, &get("rate.test", "/", BROWSER)).await;
    assert_eq!(limited.status, 429);
    assert!(
        limited.text().starts_with("<!doctype html>"),
        "{}",
        limited.text()
    );
    assert!(limited.text().contains("<h1>429 Too Many Requests</h1>"));

    // A reload reads the pages again and switches maintenance off.
    write_pages(
        &pages,
        &[
            ("502.html", "<h1>our new 502</h1>"),
            ("503.html", "<h1>our new 503</h1>"),
        ],
    );
    b.rewrite_config(&with_pages(&pages, &routes(false)))
        .unwrap();
    b.signal("HUP").unwrap();
    wait_for(&b, &get("down.test", "/", BROWSER), |r| {
        r.text() == "<h1>our new 502</h1>"
    })
    .await;
    let none = call(&b, &get("nowhere.test", "/", BROWSER)).await;
    assert_eq!(
        none.text(),
        "<h1>our new 503</h1>",
        "the [defaults] pages were not read again"
    );
    let back = call(&b, &get("maint.test", "/", BROWSER)).await;
    assert_eq!(back.status, 200, "{}", back.text());
}

async fn status_of(addr: SocketAddr, req: &Request) -> u16 {
    send(addr, req).await.map_or(0, |r| r.status)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_in_maintenance_refuses_the_docker_clis_push_and_serves_its_pull() {
    let _daemon = berth_testkit::docker::shared().await;
    let registry = Registry::start_open().expect("docker-registry (scripts/test installs it)");
    let work = tempfile::tempdir().unwrap();
    let registry_route = |extra: &str| {
        config(&route(
            "127.0.0.1",
            &[registry.addr],
            &format!("profile = \"registry\"\n{extra}"),
        ))
    };
    let b = berth(&registry_route(""));
    let authority = b.http.to_string();
    let layout = work.path().join("image");
    let image = build_image(&layout, "v1", &[2 << 20, 1 << 20], 31).unwrap();
    let app = format!("{authority}/berth/app:v1");
    let copied = tokio::task::block_in_place(|| {
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{app}"),
        ])
        .unwrap()
    });
    assert!(copied.status.success(), "{copied:?}");

    // Maintenance with reads, switched on by a reload.
    b.rewrite_config(&registry_route(
        "maintenance = true\nmaintenance-reads = true",
    ))
    .unwrap();
    b.signal("HUP").unwrap();
    // (Polled on a repository of its own: the polls before the reload start uploads.)
    let probe = Request::new("POST", "127.0.0.1", "/v2/berth/probe/blobs/uploads/");
    wait_for(&b, &probe, |r| r.status == 405).await;

    let cli = work.path().join("docker-config");
    std::fs::create_dir_all(&cli).unwrap();
    let (ok, said) = docker_cli(&cli, &["pull", &app]);
    assert!(ok, "docker pull in maintenance: {said}\n{}", b.log());
    assert!(said.contains(&image.manifest_digest), "{said}");
    let new = format!("{authority}/berth/new:v1");
    let (ok, said) = docker_cli(&cli, &["tag", &app, &new]);
    assert!(ok, "{said}");
    let (ok, said) = docker_cli(&cli, &["push", &new]);
    assert!(!ok, "a push went through in maintenance: {said}");
    assert!(
        said.contains("unsupported: 127.0.0.1 is in maintenance: pushes and deletes are refused"),
        "{said}"
    );
    let stored = files_below(&registry.storage());
    assert!(
        !stored
            .iter()
            .any(|p| p.to_string_lossy().contains("repositories/berth/new")),
        "{stored:?}"
    );

    // Without reads: pulls are refused too, with 503 and Retry-After.
    b.rewrite_config(&registry_route("maintenance = true"))
        .unwrap();
    b.signal("HUP").unwrap();
    let manifest = Request::get("127.0.0.1", "/v2/berth/app/manifests/v1")
        .header("Accept", "application/vnd.oci.image.manifest.v1+json");
    let refused = wait_for(&b, &manifest, |r| r.status == 503).await;
    assert_eq!(refused.header("retry-after"), Some("120"));
    assert!(
        refused.text().contains("\"UNAVAILABLE\""),
        "{}",
        refused.text()
    );

    // Maintenance over: the same push goes through.
    b.rewrite_config(&registry_route("")).unwrap();
    b.signal("HUP").unwrap();
    wait_for(&b, &manifest, |r| r.status == 200).await;
    assert_eq!(status_of(b.http, &probe).await, 202);
    let (ok, said) = docker_cli(&cli, &["push", &new]);
    assert!(ok, "docker push after maintenance: {said}\n{}", b.log());
    for image in [&app, &new] {
        docker_cli(&cli, &["rmi", image]);
    }
}
