//! Metrics, the access log and the health endpoint, through the real `berth` binary: known
//! traffic goes in, `/metrics` is scraped with a real HTTP client and parsed with a real
//! exposition-format parser, and the values must be exact.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{Duration, Instant};

use berth_testkit::client::{send, Body, Request};
use berth_testkit::Origin;
use common::{berth, call, route, scrape, value, wait_for};
use tokio::io::AsyncWriteExt;

fn observed(routes: &str, log: &str) -> String {
    format!(
        "[listen]\nhttp = \"{{http}}\"\nmetrics = \"{{admin}}\"\n\n[docker]\nenabled = false\n\n\
         [log]\naccess = \"{log}\"\n\n{routes}"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_codes_and_bytes_are_counted_exactly() {
    let origin = Origin::start("app");
    let b = berth(&observed(
        &[
            route("app.test", &[origin.addr], ""),
            route("*.wild.test", &[origin.addr], ""),
        ]
        .concat(),
        "off",
    ));
    let admin = b.admin.unwrap();
    let health = send(admin, &Request::get(&admin.to_string(), "/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status, 200);

    for _ in 0..3 {
        assert_eq!(call(&b, &Request::get("app.test", "/")).await.status, 200);
    }
    for _ in 0..2 {
        let r = call(&b, &Request::get("app.test", "/status/404")).await;
        assert_eq!(r.status, 404);
    }
    let upload = Request::new("POST", "app.test", "/upload").body(Body::Random {
        len: 1_000_000,
        chunked: true,
        pace: None,
    });
    assert_eq!(call(&b, &upload).await.status, 200);
    assert_eq!(
        call(&b, &Request::get("a.wild.test", "/")).await.status,
        200
    );
    assert_eq!(
        call(&b, &Request::get("b.wild.test", "/")).await.status,
        200
    );
    for _ in 0..2 {
        assert_eq!(
            call(&b, &Request::get("nobody.test", "/")).await.status,
            503
        );
    }

    let m = wait_for(
        &b,
        r#"berth_requests_total{code="503",host="_unknown",method="GET"}"#,
        2.0,
    )
    .await;
    // Requests were answered in order, so once the last is counted the others are too.
    assert_eq!(
        value(
            &m,
            r#"berth_requests_total{code="200",host="*.wild.test",method="GET"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            r#"berth_requests_total{code="200",host="app.test",method="GET"}"#
        ),
        3.0
    );
    assert_eq!(
        value(
            &m,
            r#"berth_requests_total{code="404",host="app.test",method="GET"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            r#"berth_requests_total{code="200",host="app.test",method="POST"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&m, r#"berth_request_body_bytes_total{host="app.test"}"#),
        1_000_000.0
    );
    assert_eq!(
        value(&m, r#"berth_request_body_bytes_total{host="_unknown"}"#),
        0.0
    );
    assert_eq!(
        value(
            &m,
            r#"berth_request_duration_seconds_count{host="app.test"}"#
        ),
        6.0
    );
    assert_eq!(
        value(&m, r#"berth_request_duration_seconds{host="app.test"}"#),
        6.0
    );
    assert!(
        value(
            &m,
            r#"berth_upstream_connect_seconds_count{host="app.test"}"#
        ) >= 1.0
    );
    assert!(value(&m, r#"berth_response_body_bytes_total{host="app.test"}"#) > 0.0);
    assert_eq!(value(&m, r#"berth_routes{source="file"}"#), 2.0);
    assert_eq!(value(&m, r#"berth_routes{source="docker"}"#), 0.0);

    // A thousand random Host headers: counted, under `_unknown`, without a single new series.
    let series_before = m.len();
    for i in 0..1000 {
        let host = format!("scan-{i}-{}.example", i * 7919 % 1013);
        let r = call(&b, &Request::get(&host, "/")).await;
        assert_eq!(r.status, 503);
    }
    let m = wait_for(
        &b,
        r#"berth_requests_total{code="503",host="_unknown",method="GET"}"#,
        1002.0,
    )
    .await;
    assert_eq!(m.len(), series_before, "new series appeared");
}

#[tokio::test(flavor = "multi_thread")]
async fn open_connections_follow_clients() {
    let origin = Origin::start("app");
    let b = berth(&observed(&route("app.test", &[origin.addr], ""), "off"));
    let key = r#"berth_open_connections{listener="http"}"#;
    wait_for(&b, key, 0.0).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(b.http).await.unwrap());
    }
    wait_for(&b, key, 3.0).await;
    drop(idle);
    wait_for(&b, key, 0.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_blob_uploads_are_counted_by_result() {
    let origin = Origin::start("registry");
    let dead = berth_testkit::free_port();
    let b = berth(&observed(
        &[
            route("reg.test", &[origin.addr], "profile = \"registry\""),
            route(
                "down.test",
                &[std::net::SocketAddr::from(([127, 0, 0, 1], dead))],
                "profile = \"registry\"",
            ),
        ]
        .concat(),
        "off",
    ));
    // A completed chunk upload of 2 MiB.
    let patch = |host: &str| {
        Request::new("PATCH", host, "/v2/app/blobs/uploads/7a1c").body(Body::Random {
            len: 2 << 20,
            chunked: true,
            pace: None,
        })
    };
    assert_eq!(call(&b, &patch("reg.test")).await.status, 200);
    // The registry is down: an upstream error.
    assert_eq!(call(&b, &patch("down.test")).await.status, 502);
    // Not an upload: a manifest read.
    assert_eq!(
        call(&b, &Request::get("reg.test", "/v2/app/manifests/v1"))
            .await
            .status,
        200
    );
    // The client goes away after 64 KiB of a declared 1 MiB.
    let mut sock = tokio::net::TcpStream::connect(b.http).await.unwrap();
    sock.write_all(
        b"PATCH /v2/app/blobs/uploads/9d2e HTTP/1.1\r\nHost: reg.test\r\nContent-Length: 1048576\r\n\r\n",
    )
    .await
    .unwrap();
    let before = origin.bytes_received();
    sock.write_all(&vec![7u8; 65536]).await.unwrap();
    sock.flush().await.unwrap();
    // Gone once the 64 KiB have reached the registry (so they were counted as sent on).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while origin.bytes_received() < before + 65536 {
        assert!(
            std::time::Instant::now() < deadline,
            "the 64 KiB never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(sock);

    let m = wait_for(
        &b,
        r#"berth_registry_blob_uploads_total{host="reg.test",result="client_aborted"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        value(
            &m,
            r#"berth_registry_blob_uploads_total{host="reg.test",result="completed"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"berth_registry_blob_uploads_total{host="down.test",result="upstream_error"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"berth_registry_blob_upload_bytes_total{host="reg.test"}"#
        ),
        (2 << 20) as f64 + 65536.0
    );
    assert_eq!(
        value(
            &m,
            r#"berth_requests_total{code="499",host="reg.test",method="PATCH"}"#
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn access_log_has_one_json_line_per_request() {
    let origin = Origin::start("app");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let b = berth(&observed(
        &route("app.test", &[origin.addr], ""),
        &file.display().to_string(),
    ));
    let upload = Request::new("PUT", "app.test", "/files/a?token=secret").body(Body::Random {
        len: 300_000,
        chunked: false,
        pace: None,
    });
    assert_eq!(call(&b, &upload).await.status, 200);
    assert_eq!(
        call(&b, &Request::get("nobody.test", "/x")).await.status,
        503
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if lines.len() >= 2 {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "access log has {} lines",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(lines.len(), 2);
    // A line is written when its request ends, after the answer went out: the client may
    // already have sent the next request, so the two lines can come in either order.
    let by_method = |m: &str| {
        lines
            .iter()
            .find(|l| l["method"] == m)
            .unwrap_or_else(|| panic!("no {m} line in {lines:?}"))
    };
    let put = by_method("PUT");
    assert_eq!(put["host"], "app.test");
    assert_eq!(put["path"], "/files/a", "the query string is not logged");
    assert_eq!(put["status"], 200);
    assert_eq!(put["bytes_in"], 300_000);
    assert!(put["bytes_out"].as_u64().unwrap() > 0);
    assert_eq!(put["client"], "127.0.0.1");
    assert_eq!(put["peer"], "127.0.0.1");
    assert_eq!(put["upstream"], origin.addr.to_string());
    assert_eq!(put["route"], "file");
    assert!(put["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(put["time"].as_str().unwrap().ends_with('Z'));
    let miss = by_method("GET");
    assert_eq!(
        (miss["status"].as_u64(), miss["host"].as_str()),
        (Some(503), Some("nobody.test"))
    );
    assert!(miss["route"].is_null() && miss["upstream"].is_null());
    assert!(!std::fs::read_to_string(&file).unwrap().contains("secret"));
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_expiry_and_reloads_are_exported() {
    use berth_testkit::tls::{install, TestCa};
    let certs = tempfile::tempdir().unwrap();
    let b = berth(&format!(
        "[listen]\nhttp = \"{{http}}\"\nhttps = \"{{https}}\"\nmetrics = \"{{admin}}\"\n\n\
         [docker]\nenabled = false\n\n[log]\naccess = \"off\"\n\n[tls]\ncerts-dir = \"{}\"\n",
        certs.path().display()
    ));
    let m = wait_for(&b, r#"berth_cert_reloads_total{result="ok"}"#, 1.0).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(value(&m, r#"berth_tls_cert_not_after_seconds{cert="default"}"#) > now);

    let ca = TestCa::new("metrics test CA");
    install(certs.path(), "app.test", &ca.issue(&["app.test"])).unwrap();
    // The count goes up as the file is read, the store a moment later: wait for both.
    let mut m = wait_for(&b, r#"berth_cert_reloads_total{result="ok"}"#, 2.0).await;
    let key = r#"berth_tls_cert_not_after_seconds{cert="app.test"}"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !m.contains_key(key) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        m = scrape(&b).await;
    }
    assert!(value(&m, key) > now);

    std::fs::write(certs.path().join("broken.test.key"), "not a key").unwrap();
    std::fs::write(certs.path().join("broken.test.crt"), "not a certificate").unwrap();
    let m = wait_for(&b, r#"berth_cert_reloads_total{result="error"}"#, 1.0).await;
    assert!(!m.contains_key(r#"berth_tls_cert_not_after_seconds{cert="broken.test"}"#));
}
