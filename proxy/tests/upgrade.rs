//! Zero-downtime upgrade on the real `berth`: a new process started with `--upgrade` takes
//! over the listening sockets when the running one gets SIGQUIT. An upload running through
//! the old process completes, no request meanwhile is refused, and the old process exits
//! once its last connection has closed.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use berth_testkit::client::{send, Body, Request, Traffic};
use berth_testkit::Origin;
use common::{berth, call, route};

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_in_flight_survives_an_upgrade() {
    let origin = Origin::start("app");
    let state = tempfile::tempdir().unwrap();
    let mut old = berth(&format!(
        "[listen]\nhttp = \"{{http}}\"\n\n[docker]\nenabled = false\n\n[log]\naccess = \"off\"\n\n\
         [server]\nupgrade-socket = \"{}\"\ngrace-period = \"60s\"\n\n{}",
        state.path().join("upgrade.sock").display(),
        route("app.test", &[origin.addr], "")
    ));
    let http = old.http;

    // 64 MiB at about 8 MiB/s: still running after the old process stops accepting (5 s
    // after SIGQUIT), so it has to be drained, not just handed over.
    let upload = Request::new("PUT", "app.test", "/layer").body(Body::Random {
        len: 64 << 20,
        chunked: true,
        pace: Some((512 << 10, Duration::from_millis(62))),
    });
    let started = Instant::now();
    let running = tokio::spawn(async move { send(http, &upload).await });

    // Small requests on new connections all along.
    let traffic = Traffic::start(http, "app.test");
    tokio::time::sleep(Duration::from_millis(800)).await;

    let binary = Path::new(env!("CARGO_BIN_EXE_berth"));
    let new = tokio::task::block_in_place(|| old.upgrade(binary))
        .unwrap_or_else(|e| panic!("{e}\nold berth log:\n{}", old.log()));

    // The upload finishes through the old process, every byte.
    let r = running.await.unwrap().unwrap();
    assert_eq!(r.status, 200, "{}\nold log:\n{}", r.text(), old.log());
    let seen = r.seen().unwrap();
    assert_eq!(seen.body_bytes, 64 << 20);
    assert_eq!(seen.body_sha256, r.sent_sha256);
    assert!(
        started.elapsed() > Duration::from_secs(6),
        "the upload was too short to prove anything"
    );

    // The old process exits soon after its last connection closed, not after 60 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    while old.running() {
        assert!(
            Instant::now() < deadline,
            "old berth still running:\n{}",
            old.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        old.log().contains("every connection has closed; exiting"),
        "{}",
        old.log()
    );

    // The new process serves; nothing was refused meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, errors) = traffic.stop().await;
    assert!(
        errors.is_empty(),
        "{} requests failed: {errors:?}",
        errors.len()
    );
    assert!(ok > 100, "{ok}");
    assert_eq!(
        call(&new, &Request::get("app.test", "/after")).await.status,
        200
    );
}
