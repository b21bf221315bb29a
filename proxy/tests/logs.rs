//! What berth writes to its log when requests fail: never a query string (a registry's upload
//! `_state` token travels in one), an upstream failure as a warning naming the request, and a
//! client that leaves as nothing above debug. An ERROR line must mean an operator should act.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use berth_testkit::client::Request;
use berth_testkit::Origin;
use common::{call, config, route, wait_for};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "_state=SECRET-UPLOAD-TOKEN";

#[tokio::test(flavor = "multi_thread")]
async fn failed_requests_are_logged_without_their_query_and_at_the_right_level() {
    // An upstream that refuses connections (502), one that accepts and never answers (504),
    // and a live one that a client abandons mid-upload (499).
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    // And one that answers with a broken head that quotes the upload token (502).
    let broken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broken_addr = broken.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = broken.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
                let head = format!(
                    "HTTP/1.1 202 Accepted\r\nLocation: /v2/app/blobs/uploads/u1?{SECRET}\r\n\
                     X-Bad\x01: y\r\nContent-Length: 0\r\n\r\n"
                );
                let _ = s.write_all(head.as_bytes()).await;
            });
        }
    });
    let origin = Origin::start("sink");
    let cfg = config(
        &[
            route("dead.test", &[dead], ""),
            route("silent.test", &[silent_addr], "read-timeout = \"500ms\""),
            route("broken.test", &[broken_addr], ""),
            route("live.test", &[origin.addr], ""),
        ]
        .concat(),
    )
    .replace("[listen]\n", "[listen]\nmetrics = \"{admin}\"\n")
    .replace("[docker]", "[log]\naccess = \"stdout\"\n\n[docker]");
    // Every level, debug included, must be free of query strings.
    let b = berth_testkit::BerthProcess::start_with_env(
        std::path::Path::new(env!("CARGO_BIN_EXE_berth")),
        &cfg,
        &[("BERTH_LOG", "debug")],
    )
    .unwrap();

    let target = format!("/v2/app/blobs/uploads/7a1c?{SECRET}");
    let r = call(&b, &Request::get("dead.test", &target)).await;
    assert_eq!(r.status, 502);
    let r = call(&b, &Request::new("PATCH", "silent.test", &target)).await;
    assert_eq!(r.status, 504);
    let r = call(&b, &Request::new("PUT", "broken.test", &target)).await;
    assert_eq!(r.status, 502);
    // A client that sends half of a 64 MiB body, then leaves.
    let mut s = TcpStream::connect(b.http).await.unwrap();
    let head = format!(
        "PATCH {target} HTTP/1.1\r\nHost: live.test\r\nContent-Length: {}\r\n\r\n",
        64 << 20
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![0u8; 32 << 20]).await.unwrap();
    while origin.bytes_received() < 1 << 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(s);
    let m = wait_for(
        &b,
        "berth_requests_total{code=\"499\",host=\"live.test\",method=\"PATCH\"}",
        1.0,
    )
    .await;
    drop(m);
    // Requests the admin listener's HTTP parser refuses: two Host headers, user information
    // in the target. Clients' mistakes, so no ERROR.
    let admin = b.admin.unwrap();
    for head in [
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.test\r\n\r\n".to_string(),
        format!("GET http://u:p@{admin}/metrics HTTP/1.1\r\nHost: {admin}\r\n\r\n"),
    ] {
        let answer =
            berth_testkit::client::send_raw(admin, head.as_bytes(), Duration::from_secs(2))
                .await
                .unwrap();
        assert!(!answer.contains("200 OK"), "{answer}");
    }
    // The access log (written every 50 ms) has all three, by status, without the query.
    let access_line = |log: &str, status: &str| {
        log.lines().any(|l| {
            l.contains(&format!("\"status\":{status}"))
                && l.contains("\"path\":\"/v2/app/blobs/uploads/7a1c\"")
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !["502", "504", "499"]
        .iter()
        .all(|s| access_line(&b.log(), s))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "access-log lines missing:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let log = b.log();
    assert!(
        !log.contains("SECRET"),
        "a query string reached the log:\n{log}"
    );
    // The failures were logged (the check above saw lines, not silence): as warnings that
    // name the request and the upstream, not as errors.
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ")).collect();
    for (host, upstream) in [
        ("dead.test", dead),
        ("silent.test", silent_addr),
        ("broken.test", broken_addr),
    ] {
        assert!(
            warnings.iter().any(|l| l.contains(&format!("Host: {host}"))
                && l.contains("/v2/app/blobs/uploads/7a1c")
                && l.contains(&upstream.to_string())),
            "no warning for {host}:\n{log}"
        );
    }
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}
