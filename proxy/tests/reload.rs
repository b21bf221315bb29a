//! SIGHUP reload on the real `berth`: a valid file swaps routes, defaults, limits and trusted
//! proxies in live (a request already running finishes where it started); an invalid one is
//! logged with every error and the running configuration keeps serving.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{Duration, Instant};

use berth_testkit::client::{send, Body, Request};
use berth_testkit::{BerthProcess, Origin};
use common::{berth, call, route, wait_for};

fn config(limits: &str, routes: &str) -> String {
    format!(
        "[listen]\nhttp = \"{{http}}\"\nmetrics = \"{{admin}}\"\n\n[docker]\nenabled = false\n\n\
         [log]\naccess = \"off\"\n\n[limits]\n{limits}\n\n{routes}"
    )
}

async fn origin_of(b: &BerthProcess, host: &str) -> String {
    let r = call(b, &Request::get(host, "/")).await;
    match r.seen() {
        Ok(seen) => seen.origin,
        Err(_) => format!("status {}", r.status),
    }
}

async fn wait_until_log(b: &BerthProcess, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.log().contains(text) {
        assert!(
            Instant::now() < deadline,
            "never logged {text:?}:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_swaps_a_valid_config_and_keeps_the_old_one_on_errors() {
    let (a, b_origin) = (Origin::start("a"), Origin::start("b"));
    let mut b = berth(&config("", &route("app.test", &[a.addr], "")));
    assert_eq!(origin_of(&b, "app.test").await, "a");
    assert_eq!(origin_of(&b, "new.test").await, "status 503");

    // A slow upload to a, started before the reload: 4 MiB in 64 KiB steps every 40 ms.
    let slow = Request::new("PUT", "app.test", "/slow").body(Body::Random {
        len: 4 << 20,
        chunked: false,
        pace: Some((64 << 10, Duration::from_millis(40))),
    });
    let http = b.http;
    let upload = tokio::spawn(async move { send(http, &slow).await });
    // Under way at a before the file changes.
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.bytes_received() == 0 {
        assert!(Instant::now() < deadline, "the upload never reached a");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The new file: app.test moves to b, new.test appears, heads over 2 KiB are refused.
    b.rewrite_config(&config(
        "max-header-size = \"2KiB\"",
        &[
            route("app.test", &[b_origin.addr], ""),
            route("new.test", &[a.addr], ""),
        ]
        .concat(),
    ))
    .unwrap();
    b.signal("HUP").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while origin_of(&b, "app.test").await != "b" {
        assert!(Instant::now() < deadline, "never reloaded:\n{}", b.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(origin_of(&b, "new.test").await, "a");
    let big = Request::get("app.test", "/").header("X-Big", &"x".repeat(3000));
    assert_eq!(call(&b, &big).await.status, 431);
    wait_for(&b, "berth_config_reloads_total{result=\"ok\"}", 1.0).await;

    // The upload that was running went on to the origin it started with, whole.
    let r = upload.await.unwrap().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.seen().unwrap();
    assert_eq!((seen.origin.as_str(), seen.body_bytes), ("a", 4 << 20));
    assert_eq!(seen.body_sha256, r.sent_sha256);

    // An invalid file: every error logged with its key path; nothing changes.
    std::fs::write(
        b.config_path(),
        "[listen]\nhtp = \"x\"\n\n[[route]]\nhost = \"app.test\"\nupstreams = [\"x:y\"]\n",
    )
    .unwrap();
    b.signal("HUP").unwrap();
    wait_until_log(&b, "the running configuration stays").await;
    let log = b.log();
    assert!(log.contains("listen.htp: unknown key"), "{log}");
    assert!(
        log.contains("route[0].upstreams[0]: invalid socket address \"x:y\""),
        "{log}"
    );
    wait_for(&b, "berth_config_reloads_total{result=\"error\"}", 1.0).await;
    assert_eq!(origin_of(&b, "app.test").await, "b");
    assert_eq!(origin_of(&b, "new.test").await, "a");

    // A valid file naming an htpasswd file that does not exist is refused too.
    b.rewrite_config(&config(
        "",
        &route(
            "app.test",
            &[a.addr],
            "auth.htpasswd = \"/nonexistent/htpasswd\"",
        ),
    ))
    .unwrap();
    b.signal("HUP").unwrap();
    wait_for(&b, "berth_config_reloads_total{result=\"error\"}", 2.0).await;
    assert!(b
        .log()
        .contains("route[0].auth.htpasswd: /nonexistent/htpasswd: cannot read"));
    assert_eq!(origin_of(&b, "app.test").await, "b");

    // A change that needs a restart is named; the rest of the file still applies.
    b.rewrite_config(
        &config("", &route("app.test", &[a.addr], ""))
            .replace("access = \"off\"", "access = \"stdout\""),
    )
    .unwrap();
    b.signal("HUP").unwrap();
    wait_for(&b, "berth_config_reloads_total{result=\"ok\"}", 2.0).await;
    assert!(b
        .log()
        .contains("reload: log.access changed; that takes a restart or an upgrade"));
    assert_eq!(origin_of(&b, "app.test").await, "a");
    assert_eq!(origin_of(&b, "new.test").await, "status 503");
    assert!(b.running(), "SIGHUP must never end berth");
}

/// The access log's lines so far, once there are at least `n`.
async fn access_lines(file: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(Instant::now() < deadline, "{} access lines", lines.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Who the client is is worked out once, by one rule, and every step reads the same answer:
/// the allowlist, the rate limit, the forwarding headers and the access log agree, for a
/// client a trusted proxy names, for one it names unreadably, and after a reload that stops
/// trusting it.
#[tokio::test(flavor = "multi_thread")]
async fn the_trusted_proxies_decide_who_the_client_is_for_every_step_and_reload_live() {
    let origin = Origin::start("o");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let file = |trusted: &str| {
        config(
            "",
            &[
                route(
                    "inside.test",
                    &[origin.addr],
                    "allow = [\"192.168.0.0/16\"]",
                ),
                route("open.test", &[origin.addr], ""),
                route(
                    "limited.test",
                    &[origin.addr],
                    "rate-limit = \"1r/m\"\nrate-burst = 1",
                ),
            ]
            .concat(),
        )
        .replace(
            "access = \"off\"",
            &format!("access = \"{}\"", log.display()),
        )
        .replace(
            "[docker]",
            &format!("[forwarded]\ntrusted-proxies = [{trusted}]\n\n[docker]"),
        )
    };
    let b = berth(&file("\"127.0.0.1\""));
    // The client's own claims come first (a load balancer appends what it saw); its
    // X-Real-IP is its own claim too.
    let named = |host: &str| {
        Request::get(host, &format!("/{host}"))
            .header("X-Forwarded-For", "203.0.113.1, 192.168.7.7")
            .header("X-Real-IP", "10.1.1.1")
    };
    let via = |host: &str, ip: &str| {
        Request::get(host, &format!("/{host}/{ip}")).header("X-Forwarded-For", ip)
    };

    // The peer 127.0.0.1 is trusted: the client is the address it names.
    let r = call(&b, &named("inside.test")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.seen().unwrap();
    assert_eq!(seen.header("x-real-ip"), Some("192.168.7.7"));
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.1, 192.168.7.7, 127.0.0.1")
    );
    // Named unreadably: refused by the allowlist; elsewhere no X-Real-IP at all (the
    // proxy's own address would pass it off as the client).
    let unreadable = |host: &str| {
        Request::get(host, &format!("/{host}/u"))
            .header("X-Forwarded-For", "unknown")
            .header("X-Real-IP", "10.1.1.1")
    };
    assert_eq!(call(&b, &unreadable("inside.test")).await.status, 403);
    let seen = call(&b, &unreadable("open.test")).await.seen().unwrap();
    assert_eq!(seen.header("x-real-ip"), None);
    assert_eq!(seen.header("x-forwarded-for"), Some("unknown, 127.0.0.1"));
    // The rate limit counts the clients the proxy names apart.
    assert_eq!(
        call(&b, &via("limited.test", "192.168.7.1")).await.status,
        200
    );
    assert_eq!(
        call(&b, &via("limited.test", "192.168.7.1")).await.status,
        429
    );
    assert_eq!(
        call(&b, &via("limited.test", "192.168.7.2")).await.status,
        200
    );

    // No longer trusted after a reload: the same request is judged by its peer.
    b.rewrite_config(&file("")).unwrap();
    b.signal("HUP").unwrap();
    wait_for(&b, "berth_config_reloads_total{result=\"ok\"}", 1.0).await;
    assert_eq!(call(&b, &named("inside.test")).await.status, 403);
    let seen = call(&b, &named("open.test")).await.seen().unwrap();
    assert_eq!(seen.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    // ... and counted as its peer: a client it names has no allowance of its own.
    assert_eq!(
        call(&b, &via("limited.test", "192.168.7.3")).await.status,
        200
    );
    assert_eq!(
        call(&b, &via("limited.test", "192.168.7.4")).await.status,
        429
    );

    // The access log names the same client as every step did, and the peer beside it.
    let lines = access_lines(&log, 10).await;
    let line = |path: &str, status: u64| {
        lines
            .iter()
            .find(|l| l["path"] == path && l["status"] == status)
            .unwrap_or_else(|| panic!("no {path} {status} in {lines:?}"))
    };
    let who = |l: &serde_json::Value| (l["client"].clone(), l["peer"].clone());
    let ip = |s: &str| serde_json::Value::from(s);
    let null = serde_json::Value::Null;
    assert_eq!(
        who(line("/inside.test", 200)),
        (ip("192.168.7.7"), ip("127.0.0.1"))
    );
    assert_eq!(
        who(line("/inside.test/u", 403)),
        (null.clone(), ip("127.0.0.1"))
    );
    assert_eq!(who(line("/open.test/u", 200)), (null, ip("127.0.0.1")));
    assert_eq!(
        who(line("/inside.test", 403)),
        (ip("127.0.0.1"), ip("127.0.0.1"))
    );
}
