//! Stopping the real `berth`: SIGTERM (`docker stop`) drains — an upload in flight completes
//! and the process exits as soon as its last connection has closed — and SIGINT (Ctrl-C)
//! stops it at once.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{Duration, Instant};

use berth_testkit::client::{send, Body, Request};
use berth_testkit::Origin;
use common::{berth, route};

#[tokio::test(flavor = "multi_thread")]
async fn a_terminate_lets_the_upload_in_flight_finish_then_exits() {
    let origin = Origin::start("app");
    let mut b = berth(&common::config(&format!(
        "[server]\ngrace-period = \"60s\"\n\n{}",
        route("app.test", &[origin.addr], "")
    )));
    let http = b.http;
    // 24 MiB at about 8 MiB/s: still running when SIGTERM comes.
    let upload = Request::new("PUT", "app.test", "/layer").body(Body::Random {
        len: 24 << 20,
        chunked: true,
        pace: Some((512 << 10, Duration::from_millis(62))),
    });
    let running = tokio::spawn(async move { send(http, &upload).await });
    // SIGTERM once the upload is under way at the origin.
    let deadline = Instant::now() + Duration::from_secs(10);
    while origin.bytes_received() == 0 {
        assert!(
            Instant::now() < deadline,
            "the upload never reached the origin"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    b.signal("TERM").unwrap();

    let r = running.await.unwrap().unwrap();
    assert_eq!(r.status, 200, "{}\nlog:\n{}", r.text(), b.log());
    let seen = r.seen().unwrap();
    assert_eq!(seen.body_bytes, 24 << 20);
    assert_eq!(seen.body_sha256, r.sent_sha256);
    // Then it exits by itself, long before the 60 s grace period.
    let status = tokio::task::block_in_place(|| b.wait_exit(Duration::from_secs(20)));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", b.log());
    assert!(
        b.log().contains("every connection has closed; exiting"),
        "{}",
        b.log()
    );
}

/// Ctrl-C (SIGINT) stops berth at once, with an idle client connection open: Pingora's own
/// fast shutdown left its accept loops spinning on errors, logging hundreds of thousands of
/// lines a second and never exiting.
#[test]
fn an_interrupt_stops_berth_at_once() {
    let origin = Origin::start("app");
    let mut b = berth(&common::config(&route("app.test", &[origin.addr], "")));
    let idle = std::net::TcpStream::connect(b.http).unwrap();
    b.signal("INT").unwrap();
    let status = b.wait_exit(Duration::from_secs(10));
    let log = b.log();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(130),
        "berth's exit after SIGINT: {status:?}; {} lines of log",
        log.lines().count()
    );
    let errors = log.matches("Accept() failed").count();
    assert!(errors < 10_000, "{errors} accept errors logged");
    drop(idle);
}
