//! Multi-GiB uploads stream through berth byte-exact, in both framings, without berth's
//! memory growing with the body.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_testkit::client::{Body, Request};
use berth_testkit::process::memory_kib;
use berth_testkit::Origin;
use common::{berth, call, config, route};

const GIB: u64 = 1 << 30;
const RSS_LIMIT_KIB: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn two_gib_uploads_arrive_byte_exact_with_berth_under_64_mib() {
    let origin = Origin::start("sink");
    let b = berth(&config(&route("up.test", &[origin.addr], "")));
    let pid = b.pid();
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if let Some((rss, _)) = memory_kib(pid) {
                    peak.fetch_max(rss, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    for chunked in [true, false] {
        let req = Request::new("PATCH", "up.test", "/v2/big/blobs/uploads/1")
            .body(Body::random(2 * GIB, chunked));
        let r = call(&b, &req).await;
        let seen = r.seen().unwrap();
        assert_eq!(seen.body_bytes, 2 * GIB, "chunked={chunked}");
        assert_eq!(seen.body_sha256, r.sent_sha256, "chunked={chunked}");
        let framing = if chunked {
            "transfer-encoding"
        } else {
            "content-length"
        };
        assert!(
            seen.header(framing).is_some(),
            "framing kept: {:?}",
            seen.headers
        );
    }
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let (_, hwm) = memory_kib(pid).unwrap();
    let peak = peak.load(Ordering::SeqCst).max(hwm);
    eprintln!("berth peak RSS during 2 x 2 GiB: {peak} KiB");
    assert!(
        peak > 0 && peak < RSS_LIMIT_KIB,
        "berth peak RSS {peak} KiB"
    );
}
