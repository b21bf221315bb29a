//! Multi-GiB uploads stream through berth byte-exact, in both framings, without berth's
//! memory growing with the body.

#![allow(clippy::unwrap_used)]

use crate::common;

use berth_testkit::client::{Body, Request};
use berth_testkit::process::{memory_kib, PeakRss};
use berth_testkit::Origin;
use common::{berth, call, config, route};

const GIB: u64 = 1 << 30;
const RSS_LIMIT_KIB: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn two_gib_uploads_arrive_byte_exact_with_berth_under_64_mib() {
    let origin = Origin::start("sink");
    let b = berth(&config(&route("up.test", &[origin.addr], "")));
    let pid = b.pid();
    let sampler = PeakRss::start(vec![pid]);
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
    let (_, hwm) = memory_kib(pid).unwrap();
    let peak = sampler.stop().max(hwm);
    eprintln!("berth peak RSS during 2 x 2 GiB: {peak} KiB");
    assert!(
        peak > 0 && peak < RSS_LIMIT_KIB,
        "berth peak RSS {peak} KiB"
    );
}
