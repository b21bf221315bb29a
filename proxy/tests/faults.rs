//! Faults in the middle of uploads, on the real `berth`: the upstream process killed while a
//! 1 GiB blob upload streams through (Debian's docker-registry, SIGKILL), and a client that
//! goes away mid-upload. Each time only that request fails, berth stays up, other routes are
//! served meanwhile, and the metrics say what happened.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{Duration, Instant};

use berth_testkit::client::{send, Body, Request, Traffic};
use berth_testkit::registry::Registry;
use berth_testkit::Origin;
use common::{berth, call, route, value, wait_for};
use tokio::io::AsyncWriteExt;

fn observed(routes: &str) -> String {
    format!(
        "[listen]\nhttp = \"{{http}}\"\nmetrics = \"{{admin}}\"\n\n[docker]\nenabled = false\n\n\
         [log]\naccess = \"off\"\n\n{routes}"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_killed_mid_upload_fails_only_that_upload() {
    let mut registry = Registry::start_open().expect("docker-registry (scripts/test installs it)");
    let other = Origin::start("other");
    let b = berth(&observed(
        &[
            route("reg.test", &[registry.addr], "profile = \"registry\""),
            route("other.test", &[other.addr], ""),
        ]
        .concat(),
    ));

    // Start a blob upload session, then stream 1 GiB into it with one chunked PATCH.
    let start = call(
        &b,
        &Request::new("POST", "reg.test", "/v2/faults/blobs/uploads/"),
    )
    .await;
    assert_eq!(start.status, 202, "{}", start.text());
    let location = start.header("location").unwrap().to_string();
    let path = location
        .split_once("reg.test")
        .map_or(location.as_str(), |(_, p)| p)
        .to_string();
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    let http = b.http;
    let upload = tokio::spawn(async move {
        let patch = Request::new("PATCH", "reg.test", &path)
            .header("Content-Type", "application/octet-stream")
            .body(Body::random(1 << 30, true));
        send(http, &patch).await
    });

    let traffic = Traffic::start(b.http, "other.test");

    // Kill the registry once the upload is well under way (the registry takes ~150 MB/s
    // here, so 1 GiB needs several seconds).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if upload.is_finished() {
        let r = upload.await.unwrap();
        panic!("the upload ended before the registry was killed: {r:?}");
    }
    registry.kill();

    // That upload fails: an error status or a broken connection, never a success.
    match upload.await.unwrap() {
        Ok(r) => assert!(r.status >= 500, "status {}: {}", r.status, r.text()),
        Err(e) => eprintln!("upload broke off as expected: {e}"),
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failed) = traffic.stop().await;
    assert!(
        failed.is_empty(),
        "other route failed meanwhile: {failed:?}"
    );
    assert!(ok > 10, "{ok}");

    // berth is up, counted the upstream error, and still serves.
    let m = wait_for(
        &b,
        r#"berth_registry_blob_uploads_total{host="reg.test",result="upstream_error"}"#,
        1.0,
    )
    .await;
    assert!(
        value(
            &m,
            r#"berth_registry_blob_upload_bytes_total{host="reg.test"}"#
        ) > (64 << 20) as f64
    );
    assert_eq!(
        call(&b, &Request::get("other.test", "/after")).await.status,
        200
    );
    assert_eq!(
        call(&b, &Request::get("reg.test", "/v2/")).await.status,
        502
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_leaving_mid_upload_closes_the_upstream_side() {
    let origin = Origin::start("reg");
    let b = berth(&observed(&route(
        "reg.test",
        &[origin.addr],
        "profile = \"registry\"",
    )));
    let traffic = Traffic::start(b.http, "reg.test");

    // 8 MiB of a declared 1 GiB, then the client is gone.
    let mut sock = tokio::net::TcpStream::connect(b.http).await.unwrap();
    sock.write_all(
        b"PATCH /v2/app/blobs/uploads/5f1a HTTP/1.1\r\nHost: reg.test\r\nContent-Length: 1073741824\r\n\r\n",
    )
    .await
    .unwrap();
    let chunk = vec![42u8; 1 << 20];
    for _ in 0..8 {
        sock.write_all(&chunk).await.unwrap();
    }
    sock.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(sock);

    // The origin sees its side of the upload break off.
    let deadline = Instant::now() + Duration::from_secs(10);
    while origin.broken_bodies() == 0 {
        assert!(
            Instant::now() < deadline,
            "the origin never saw the upload end:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = wait_for(
        &b,
        r#"berth_registry_blob_uploads_total{host="reg.test",result="client_aborted"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        value(
            &m,
            r#"berth_requests_total{code="499",host="reg.test",method="PATCH"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"berth_registry_blob_upload_bytes_total{host="reg.test"}"#
        ),
        (8 << 20) as f64
    );
    let (ok, failed) = traffic.stop().await;
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 5);
}
