//! Zero-downtime upgrade on the real `berth`: a new process started with `--upgrade` takes
//! over the listening sockets when the running one gets SIGQUIT. An upload running through
//! the old process completes, no request meanwhile is refused, and the old process exits
//! once its last connection has closed.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_testkit::client::{send, Body, Request};
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
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let traffic = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match send(http, &Request::get("app.test", "/ping")).await {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        errors.push(format!("{other:?}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            errors
        })
    };
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
    stop.store(true, Ordering::Relaxed);
    let errors = traffic.await.unwrap();
    assert!(
        errors.is_empty(),
        "{} requests failed: {errors:?}",
        errors.len()
    );
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "{}",
        ok.load(Ordering::Relaxed)
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert_eq!(
        call(&new, &Request::get("app.test", "/after")).await.status,
        200
    );
}
