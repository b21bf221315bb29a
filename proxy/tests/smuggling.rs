//! Request smuggling probes against the real `berth` in front of a recording origin: every
//! ambiguous framing is refused with 400 before anything reaches the origin, or normalised
//! so that the origin sees exactly one unambiguous request.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use berth_testkit::client::send_raw;
use berth_testkit::{Origin, Seen};
use common::{berth, config, route};

/// Status code of the first response in `raw`.
fn status(raw: &str) -> u16 {
    raw.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The origin's echo in the (single) response.
fn seen(raw: &str) -> Seen {
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {raw}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn ambiguous_framing_is_refused_or_normalised() {
    let origin = Origin::start("app");
    // The oversized-chunk probe goes to its own origin: its head may reach an origin after the
    // client already has its 400, which must not blur the counts of the probes after it.
    let cut_origin = Origin::start("cut");
    let b = berth(&config(
        &[
            route("app.test", &[origin.addr], ""),
            route("cut.test", &[cut_origin.addr], ""),
        ]
        .concat(),
    ));
    let wait = Duration::from_secs(2);

    // Refused outright: 400, nothing forwarded.
    let refused: [(&str, &[u8]); 14] = [
        ("two different Content-Lengths", b"POST /a HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nContent-Length: 30\r\n\r\nhelloGET /smuggled HTTP/1.1\r\n\r\n"),
        ("a Content-Length list", b"POST /a HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5, 5\r\n\r\nhello"),
        ("obs-fold", b"GET /a HTTP/1.1\r\nHost: app.test\r\nX-Folded: one\r\n two\r\n\r\n"),
        ("obs-fold hiding Transfer-Encoding", b"POST /a HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n\r\nhello"),
        ("a coding other than chunked", b"POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: gzip\r\n\r\nhello"),
        ("chunked not last", b"POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
        ("xchunked beside Content-Length", b"POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\nhello"),
        ("space before the colon", b"POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
        ("two Transfer-Encodings", b"POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n"),
        ("negative Content-Length", b"POST /a HTTP/1.1\r\nHost: app.test\r\nContent-Length: -1\r\n\r\nhello"),
        ("signed Content-Length", b"POST /a HTTP/1.1\r\nHost: app.test\r\nContent-Length: +5\r\n\r\nhello"),
        ("HTTP/1.0 with Transfer-Encoding", b"POST /a HTTP/1.0\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("two Host headers", b"GET /a HTTP/1.1\r\nHost: app.test\r\nHost: evil.test\r\n\r\n"),
        ("a bare CR", b"GET /a HTTP/1.1\rHost: app.test\r\n\r\n"),
    ];
    for (name, probe) in refused {
        let raw = send_raw(b.http, probe, wait).await.unwrap();
        assert_eq!(status(&raw), 400, "{name}: {raw}");
        assert_eq!(origin.hits(), 0, "{name} reached the origin");
    }
    let raw = send_raw(
        b.http,
        b"POST /a HTTP/1.1\r\nHost: cut.test\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n",
        wait,
    )
    .await
    .unwrap();
    assert_eq!(status(&raw), 400, "oversized chunk size: {raw}");
    // The head may have gone upstream before the bad chunk arrived: then the origin saw that
    // request's body break off, and the upstream connection was closed, never reused. That
    // is checked at the end of this test, when it has had time to happen.

    // Content-Length and Transfer-Encoding together: chunked wins (RFC 9112), the length is
    // dropped, the connection is closed after the response, and what follows the chunked
    // body is never read as a request.
    let raw = send_raw(
        b.http,
        b"POST /a HTTP/1.1\r\nHost: app.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n",
        wait,
    )
    .await
    .unwrap();
    assert_eq!(raw.matches("HTTP/1.1 ").count(), 1, "{raw}");
    let s = seen(&raw);
    assert_eq!((s.target.as_str(), s.body_bytes), ("/a", 0));
    assert_eq!(s.header("content-length"), None);
    assert_eq!(s.header("transfer-encoding"), Some("chunked"));
    let raw = send_raw(
        b.http,
        b"POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
        wait,
    )
    .await
    .unwrap();
    let s = seen(&raw);
    assert_eq!(s.body_bytes, 8);
    assert_eq!(s.header("content-length"), None);

    // The same length twice is one length.
    let raw = send_raw(
        b.http,
        b"POST /a HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        wait,
    )
    .await
    .unwrap();
    let s = seen(&raw);
    assert_eq!(s.header_all("content-length"), ["5"]);
    assert_eq!(s.body_bytes, 5);
    assert_eq!(origin.hits(), 3);

    // Two requests in one write: each answered on its own, in order, none merged into the
    // other's body.
    let raw = send_raw(
        b.http,
        b"GET /one HTTP/1.1\r\nHost: app.test\r\n\r\nGET /two HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        wait,
    )
    .await
    .unwrap();
    let targets: Vec<String> = raw
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|r| seen(&format!("HTTP/1.1 {r}")).target)
        .collect();
    assert!(
        targets == ["/one", "/two"] || targets == ["/one"],
        "{targets:?}: {raw}"
    );
    assert_eq!(origin.broken_bodies(), 0);

    // Whatever of the oversized-chunk request reached its origin broke off there, and the
    // upstream connection it went on was not reused: the next request to that origin is
    // answered whole, on its own.
    let raw = send_raw(
        b.http,
        b"GET /b HTTP/1.1\r\nHost: cut.test\r\nConnection: close\r\n\r\n",
        wait,
    )
    .await
    .unwrap();
    assert_eq!(status(&raw), 200, "{raw}");
    assert_eq!(seen(&raw).target, "/b");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cut_origin.in_flight() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the origin of the oversized-chunk request is still receiving it"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (broken, hits) = (cut_origin.broken_bodies(), cut_origin.hits());
    assert!(
        broken <= 1,
        "{broken} requests with the oversized chunk reached the origin"
    );
    assert_eq!(
        hits,
        broken + 1,
        "the origin completed a request with the oversized chunk"
    );
}
