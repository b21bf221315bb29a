//! Routing, forwarding headers, body limits, load balancing and timeouts, through the real
//! `berth` binary to real origins on loopback.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use berth_testkit::client::{send_raw, Body, Request};
use berth_testkit::Origin;
use common::{berth, call, config, route};

#[tokio::test(flavor = "multi_thread")]
async fn host_patterns_and_paths_route_in_documented_order() {
    let names = ["exact", "exact-v2", "wild", "trailing", "regex"];
    let origins: Vec<Origin> = names.iter().map(|n| Origin::start(n)).collect();
    let o = |i: usize| [origins[i].addr];
    let cfg = config(
        &[
            route("~^reg[0-9]+\\\\.example\\\\.com$", &o(4), ""),
            route("*.example.com", &o(2), ""),
            route("api.example.com", &o(0), ""),
            route("api.example.com", &o(1), "path = \"/v2\""),
            route("www.example.*", &o(3), ""),
        ]
        .concat(),
    );
    let b = berth(&cfg);
    let cases = [
        ("api.example.com", "/", Some("exact")),
        ("API.Example.com:8080", "/v2/x", Some("exact-v2")),
        ("reg1.example.com", "/", Some("wild")), // wildcard beats regex
        ("x.y.example.com", "/v2", Some("wild")),
        ("www.example.org", "/", Some("trailing")),
        ("reg7.example.com.", "/", Some("wild")),
        ("unknown.test", "/", None),
    ];
    for (host, path, expected) in cases {
        let r = call(&b, &Request::get(host, path)).await;
        match expected {
            Some(name) => {
                assert_eq!(r.status, 200, "{host}{path}: {}", r.text());
                assert_eq!(r.seen().unwrap().origin, name, "{host}{path}");
            }
            None => {
                assert_eq!(r.status, 503, "{host}{path}");
                assert!(r.text().contains("no route"), "{}", r.text());
            }
        }
    }
    // A regex route is reached when nothing more specific matches.
    let b2 = berth(&config(&route(
        "~^reg[0-9]+\\\\.example\\\\.com$",
        &o(4),
        "",
    )));
    let r = call(&b2, &Request::get("reg42.example.com", "/")).await;
    assert_eq!(r.seen().unwrap().origin, "regex");
    let r = call(&b2, &Request::get("regx.example.com", "/")).await;
    assert_eq!(r.status, 503);
}

#[tokio::test(flavor = "multi_thread")]
async fn berth_is_not_an_open_proxy() {
    let origin = Origin::start("o");
    let b = berth(&config(&route("known.test", &[origin.addr], "")));
    // CONNECT is refused.
    let raw = send_raw(
        b.http,
        b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n",
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert!(raw.starts_with("HTTP/1.1 405"), "{raw}");
    // Absolute-form for a foreign host: refused (Pingora answers 400 when Host disagrees
    // with the target; berth answers 503 when they agree on a host it has no route for).
    for (request, status) in [
        (
            &b"GET http://evil.test/steal HTTP/1.1\r\nHost: known.test\r\n\r\n"[..],
            "400",
        ),
        (
            &b"GET http://evil.test/steal HTTP/1.1\r\nHost: evil.test\r\n\r\n"[..],
            "503",
        ),
    ] {
        let raw = send_raw(b.http, request, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(raw.starts_with(&format!("HTTP/1.1 {status}")), "{raw}");
    }
    // Absolute-form for a known host is served, in origin form, with that Host.
    let r = call(
        &b,
        &Request::get("known.test:81", "http://known.test:81/path?q=1"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.seen().unwrap();
    assert_eq!(seen.target, "/path?q=1");
    assert_eq!(seen.header("host"), Some("known.test:81"));
    assert_eq!(origin.hits(), 1, "nothing else reached the origin");
    // No Host at all.
    let raw = send_raw(b.http, b"GET / HTTP/1.1\r\n\r\n", Duration::from_secs(2))
        .await
        .unwrap();
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_headers_from_an_untrusted_client_are_overwritten() {
    let origin = Origin::start("o");
    let b = berth(&config(&route("reg.test", &[origin.addr], "")));
    let req = Request::get("reg.test:8443", "/v2/")
        .header("X-Real-IP", "6.6.6.6")
        .header("X-Forwarded-For", "6.6.6.6")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "evil.test")
        .header("X-Forwarded-Port", "1")
        .header("Forwarded", "for=6.6.6.6")
        .header("Proxy", "http://evil.test:3128")
        .header("X-Original-URL", "/admin")
        .header("X-Rewrite-URL", "/admin")
        .header("X-Forwarded-Scheme", "https")
        .header("X-Forwarded-Prefix", "/admin")
        .header("True-Client-IP", "6.6.6.6")
        .header("X-Client-IP", "6.6.6.6")
        .header("CF-Connecting-IP", "6.6.6.6")
        .header("X-Forwarded-URI", "/admin")
        .header("X-Original-URI", "/admin")
        .header("X-Forwarded-Path", "/admin")
        .header("X-Envoy-Original-Path", "/admin")
        .header("X-Original-Host", "evil.test")
        .header("X-Host", "evil.test")
        .header("X-Forwarded-Server", "evil.test")
        .header("X-HTTP-Method-Override", "DELETE")
        .header("X-HTTP-Method", "DELETE")
        .header("X-Method-Override", "DELETE")
        .header("Client-IP", "6.6.6.6")
        .header("X-Cluster-Client-IP", "6.6.6.6")
        .header("Fastly-Client-IP", "6.6.6.6")
        .header("X-Forwarded-Protocol", "https")
        .header("X-Url-Scheme", "https")
        .header("Front-End-Https", "on")
        .header("X-Original-Method", "DELETE")
        .header("X-Forwarded-Method", "DELETE")
        .header("X_Forwarded_For", "6.6.6.6")
        .header("X_Original_URL", "/admin");
    let seen = call(&b, &req).await.seen().unwrap();
    let port = b.http.port().to_string();
    let expected = [
        ("host", Some("reg.test:8443")),
        ("x-real-ip", Some("127.0.0.1")),
        ("x-forwarded-for", Some("127.0.0.1")),
        ("x-forwarded-proto", Some("http")),
        ("x-forwarded-host", Some("reg.test:8443")),
        ("x-forwarded-port", Some(port.as_str())),
        ("forwarded", None),
        ("proxy", None),
        ("x-original-url", None),
        ("x-rewrite-url", None),
        ("x-forwarded-scheme", None),
        ("x-forwarded-prefix", None),
        ("true-client-ip", None),
        ("x-client-ip", None),
        ("cf-connecting-ip", None),
        ("x-forwarded-uri", None),
        ("x-original-uri", None),
        ("x-forwarded-path", None),
        ("x-envoy-original-path", None),
        ("x-original-host", None),
        ("x-host", None),
        ("x-forwarded-server", None),
        ("x-http-method-override", None),
        ("x-http-method", None),
        ("x-method-override", None),
        ("client-ip", None),
        ("x-cluster-client-ip", None),
        ("fastly-client-ip", None),
        ("x-forwarded-protocol", None),
        ("x-url-scheme", None),
        ("front-end-https", None),
        ("x-original-method", None),
        ("x-forwarded-method", None),
        ("x_forwarded_for", None),
        ("x_original_url", None),
    ];
    for (name, value) in expected {
        assert_eq!(seen.header(name), value, "{name}");
    }
    assert_eq!(seen.header_all("x-forwarded-for").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_headers_from_a_trusted_proxy_are_kept_and_appended() {
    let origin = Origin::start("o");
    let b = berth(&config(&format!(
        "[forwarded]\ntrusted-proxies = [\"127.0.0.0/8\"]\n\n{}",
        route("reg.test", &[origin.addr], "")
    )));
    let req = Request::get("reg.test", "/")
        .header("X-Real-IP", "203.0.113.9")
        .header("X-Forwarded-For", "203.0.113.9, 10.0.0.2")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "registry.example.com")
        .header("X-Forwarded-Port", "443")
        .header("Proxy", "http://evil.test:3128");
    let seen = call(&b, &req).await.seen().unwrap();
    let expected = [
        // Always berth's: the client the proxy appended, not the X-Real-IP it passed on.
        ("x-real-ip", Some("10.0.0.2")),
        ("x-forwarded-for", Some("203.0.113.9, 10.0.0.2, 127.0.0.1")),
        ("x-forwarded-proto", Some("https")),
        ("x-forwarded-host", Some("registry.example.com")),
        ("x-forwarded-port", Some("443")),
        ("proxy", None),
    ];
    for (name, value) in expected {
        assert_eq!(seen.header(name), value, "{name}");
    }
    // Without client headers, a trusted peer still gets berth's own.
    let seen = call(&b, &Request::get("reg.test", "/"))
        .await
        .seen()
        .unwrap();
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    // ... but no X-Real-IP: a trusted proxy that names no client is not the client.
    assert_eq!(seen.header("x-real-ip"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn body_limit_answers_413_and_default_is_unlimited() {
    let origin = Origin::start("o");
    let b = berth(&config(
        &[
            route("small.test", &[origin.addr], "max-body = \"1MiB\""),
            route("free.test", &[origin.addr], ""),
        ]
        .concat(),
    ));
    let mib = 1 << 20;
    // Declared length over the limit: refused before anything goes upstream.
    let r = call(
        &b,
        &Request::new("PUT", "small.test", "/").body(Body::random(mib + 1, false)),
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.text());
    // With Expect: 100-continue the client is refused before sending anything.
    let r = call(
        &b,
        &Request::new("PUT", "small.test", "/")
            .body(Body::random(64 * mib, false))
            .expect_continue(),
    )
    .await;
    assert_eq!(
        (r.status, r.got_continue, r.sent_bytes),
        (413, false, 0),
        "{}",
        r.text()
    );
    assert_eq!(
        origin.hits(),
        0,
        "a body refused by its declared length reached the origin"
    );
    // Chunked over the limit: refused as the limit is crossed; what went upstream is cut
    // off, so the origin never sees a complete body.
    let r = call(
        &b,
        &Request::new("PATCH", "small.test", "/").body(Body::random(8 * mib, true)),
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.text());
    // (hits count every answered request, broken ones after their breakage is counted)
    let answered = origin.hits();
    assert!(
        answered <= origin.broken_bodies(),
        "a refused chunked body reached the origin complete"
    );
    // Exactly at the limit, both framings pass.
    for chunked in [false, true] {
        let r = call(
            &b,
            &Request::new("PUT", "small.test", "/").body(Body::random(mib, chunked)),
        )
        .await;
        let seen = r.seen().unwrap();
        assert_eq!(
            (seen.body_bytes, seen.body_sha256),
            (mib, r.sent_sha256.clone())
        );
    }
    // Unlimited by default.
    let r = call(
        &b,
        &Request::new("PUT", "free.test", "/").body(Body::random(300 * mib, true)),
    )
    .await;
    let seen = r.seen().unwrap();
    assert_eq!(seen.body_bytes, 300 * mib);
    assert_eq!(seen.body_sha256, r.sent_sha256);
}

#[tokio::test(flavor = "multi_thread")]
async fn expect_continue_is_relayed() {
    let origin = Origin::start("o");
    let b = berth(&config(&route("up.test", &[origin.addr], "")));
    let r = call(
        &b,
        &Request::new("PUT", "up.test", "/blob")
            .body(Body::random(5 << 20, false))
            .expect_continue(),
    )
    .await;
    assert!(r.got_continue, "no 100 Continue came back");
    let seen = r.seen().unwrap();
    assert_eq!(
        (seen.body_bytes, &seen.body_sha256),
        (5 << 20, &r.sent_sha256)
    );
    assert_eq!(seen.header("expect"), Some("100-continue"));
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_skips_dead_upstreams_and_502_when_all_are_dead() {
    let a = Origin::start("a");
    let c = Origin::start("c");
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], berth_testkit::free_port()));
    let b = berth(&config(
        &[
            route("rr.test", &[a.addr, c.addr], ""),
            route("half.test", &[dead, a.addr], ""),
            route("dead.test", &[dead], ""),
        ]
        .concat(),
    ));
    let mut order = Vec::new();
    for _ in 0..6 {
        order.push(
            call(&b, &Request::get("rr.test", "/"))
                .await
                .seen()
                .unwrap()
                .origin,
        );
    }
    for pair in order.windows(2) {
        assert_ne!(pair[0], pair[1], "requests must alternate: {order:?}");
    }
    let before = a.hits();
    for _ in 0..4 {
        let r = call(
            &b,
            &Request::new("POST", "half.test", "/").body(Body::Bytes(b"x".to_vec())),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(a.hits() - before, 4);
    let r = call(&b, &Request::get("dead.test", "/")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        !r.text().contains("127.0.0.1"),
        "upstream address leaked: {}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_upstream_gives_504_but_a_flowing_upload_outlives_the_read_timeout() {
    let origin = Origin::start("o");
    let b = berth(&config(&route(
        "t.test",
        &[origin.addr],
        "read-timeout = \"1s\"",
    )));
    let r = call(&b, &Request::get("t.test", "/silent/3")).await;
    assert_eq!(r.status, 504, "{}", r.text());
    // 4 s of upload, a piece every 200 ms: never idle for 1 s, so never cut.
    let slow = Body::Random {
        len: 20 * 64 * 1024,
        chunked: true,
        pace: Some((64 * 1024, Duration::from_millis(200))),
    };
    let started = std::time::Instant::now();
    let r = call(&b, &Request::new("PATCH", "t.test", "/").body(slow)).await;
    assert!(started.elapsed() > Duration::from_secs(3));
    let seen = r.seen().unwrap();
    assert_eq!(
        (seen.body_bytes, seen.body_sha256),
        (20 * 64 * 1024, r.sent_sha256)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_profile_rewrites_locations_and_marks_its_own_errors() {
    let origin = Origin::start("registry");
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], berth_testkit::free_port()));
    let b = berth(&config(
        &[
            route("reg.test", &[origin.addr], "profile = \"registry\""),
            route("deadreg.test", &[dead], "profile = \"registry\""),
            route("plain.test", &[origin.addr], ""),
        ]
        .concat(),
    ));
    let to = format!("http://{}/v2/x/blobs/uploads/1?_state=s", origin.addr);
    let r = call(
        &b,
        &Request::new("POST", "reg.test:8088", &format!("/location?to={to}")),
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        r.header("location"),
        Some("http://reg.test:8088/v2/x/blobs/uploads/1?_state=s")
    );
    // Not under the profile: left alone.
    let r = call(
        &b,
        &Request::new("POST", "plain.test", &format!("/location?to={to}")),
    )
    .await;
    assert_eq!(r.header("location"), Some(to.as_str()));
    // berth's own error under the profile carries the registry API header.
    let r = call(&b, &Request::get("deadreg.test", "/v2/")).await;
    assert_eq!(r.status, 502);
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    // The upstream's own response is passed as is.
    let r = call(&b, &Request::get("reg.test", "/status/404")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("docker-distribution-api-version"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn https_upstreams_are_verified_unless_dangerously_told_not_to() {
    use berth_testkit::tls::TestCa;
    // A TLS origin (openssl s_server) with a certificate for tls.test from our own CA.
    let ca = TestCa::new("upstream CA");
    let other_ca = TestCa::new("some other CA");
    let dir = tempfile::tempdir().unwrap();
    let server = berth_testkit::tls::TlsOrigin::start(&ca.issue(&["tls.test"])).unwrap();
    let addr = server.addr;
    let (ca_file, other_file) = (dir.path().join("ca.pem"), dir.path().join("other.pem"));
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&other_file, other_ca.pem()).unwrap();
    let (ca_path, other_path) = (ca_file.display(), other_file.display());
    let https = "proto = \"https\"";
    let b = berth(&config(
        &[
            route("tls.test", &[addr], https),
            route(
                "trusted.test",
                &[addr],
                &format!("{https}\nupstream-ca-file = \"{ca_path}\"\nupstream-sni = \"tls.test\""),
            ),
            route(
                "wrongname.test",
                &[addr],
                &format!("{https}\nupstream-ca-file = \"{ca_path}\""),
            ),
            route(
                "wrongca.test",
                &[addr],
                &format!(
                    "{https}\nupstream-ca-file = \"{other_path}\"\nupstream-sni = \"tls.test\""
                ),
            ),
            route(
                "skip.test",
                &[addr],
                &format!("{https}\ndangerous-skip-verify = true"),
            ),
        ]
        .concat(),
    ));
    let mut results = Vec::new();
    for host in [
        "tls.test",
        "trusted.test",
        "wrongname.test",
        "wrongca.test",
        "skip.test",
    ] {
        results.push((host, call(&b, &Request::get(host, "/")).await.status));
    }
    // The CA file replaced and berth told to reload: the route verifies with the new file.
    std::fs::write(&other_file, ca.pem()).unwrap();
    b.signal("HUP").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !b.log().contains("reload: ") || !b.log().contains(" applied (") {
        assert!(
            std::time::Instant::now() < deadline,
            "never reloaded:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after_reload = call(&b, &Request::get("wrongca.test", "/")).await.status;
    let log = b.log();
    drop(server);
    assert_eq!(
        after_reload, 200,
        "the replaced CA file is read on reload:\n{log}"
    );
    assert_eq!(
        results,
        [
            ("tls.test", 502),       // nothing vouches for the certificate
            ("trusted.test", 200),   // the route's CA file does
            ("wrongname.test", 502), // right CA, but the name asked for is not on it
            ("wrongca.test", 502),   // a CA that did not sign it
            ("skip.test", 200),      // dangerous-skip-verify
        ],
        "{log}"
    );
    assert!(
        log.to_ascii_lowercase().contains("certificate"),
        "the refusals name the certificate problem:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn allowlists_refuse_other_clients_with_403() {
    let origin = Origin::start("inside");
    let o = [origin.addr];
    let cfg = config(
        &[
            route("private.test", &o, "allow = [\"10.0.0.0/8\"]"),
            route("loopback.test", &o, "allow = [\"127.0.0.0/8\", \"::1\"]"),
            // A trusted proxy speaks for the client: berth judges the address it forwarded.
            route("behind.test", &o, "allow = [\"192.168.0.0/16\"]"),
        ]
        .concat(),
    )
    .replace(
        "[docker]",
        "[forwarded]\ntrusted-proxies = [\"127.0.0.1\"]\n\n[docker]",
    );
    let b = berth(&cfg);
    let r = call(&b, &Request::get("private.test", "/")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(origin.hits(), 0);
    // The peer (127.0.0.1) is a trusted proxy inside loopback.test's range, but it names no
    // client: refused, rather than judged by the proxy's own address (which would let every
    // client of that proxy in).
    assert_eq!(
        call(&b, &Request::get("loopback.test", "/")).await.status,
        403
    );
    let via = |host: &str, ip: &str| Request::get(host, "/").header("x-forwarded-for", ip);
    for client in ["127.0.0.5", "127.0.0.5:41000", "[::1]", "[::1]:443", "::1"] {
        assert_eq!(
            call(&b, &via("loopback.test", client)).await.status,
            200,
            "{client}"
        );
    }
    assert_eq!(call(&b, &via("loopback.test", "unknown")).await.status, 403);
    assert_eq!(
        call(&b, &via("behind.test", "192.168.7.7")).await.status,
        200
    );
    assert_eq!(
        call(&b, &via("behind.test", "203.0.113.7")).await.status,
        403
    );
    assert_eq!(origin.hits(), 6);
}

/// A path-scoped protection cannot be walked around by spelling the path differently, in
/// either direction: a path whose spelling as sent and normalised take different routes is
/// refused (upstreams disagree on how to read it), and the others are forwarded as sent.
#[tokio::test(flavor = "multi_thread")]
async fn paths_that_spell_a_protected_prefix_differently_never_reach_the_open_route() {
    let open = Origin::start("open");
    let admin = Origin::start("admin");
    let cfg = config(
        &[
            route("app.test", &[open.addr], ""),
            // Only 10.0.0.0/8 may reach /admin; the test client is 127.0.0.1.
            route(
                "app.test",
                &[admin.addr],
                "path = \"/admin\"\nallow = [\"10.0.0.0/8\"]",
            ),
        ]
        .concat(),
    );
    let b = berth(&cfg);
    let r = call(&b, &Request::get("app.test", "/admin")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    for spelling in [
        // Into /admin from outside (nginx, Go and Python resolve these to /admin)...
        "//admin",
        "/./admin",
        "/x/../admin",
        "/%61dmin",
        "/%2e%2e/admin/x",
        "/%2fadmin",
        "///x/./../admin?q=1",
        // ...and out of /admin (Flask or Express keep these under /admin).
        "/admin/../public",
        "/admin/%2e%2e/x",
        "/admin//../secret",
        "/admin/x%2F..%2F..%2Fpublic",
    ] {
        let r = call(&b, &Request::get("app.test", spelling)).await;
        assert_eq!(r.status, 400, "{spelling}: {}", r.text());
        assert!(r.text().contains("ambiguous path"), "{spelling}");
    }
    // A path over 8 KiB that reads several ways is refused unjudged.
    let long = format!("/;/admin/{}", "x".repeat(9 << 10));
    let r = call(&b, &Request::get("app.test", &long)).await;
    assert_eq!(r.status, 414, "{}", r.text());
    assert_eq!(open.hits() + admin.hits(), 0);
    // Spellings that agree reach the open route, exactly as sent.
    for (spelling, seen) in [
        ("/x/../public", "/x/../public"),
        ("/%2e/public?a=b", "/%2e/public?a=b"),
        ("/adm%69n2/../other", "/adm%69n2/../other"),
    ] {
        let r = call(&b, &Request::get("app.test", spelling)).await;
        assert_eq!(r.status, 200, "{spelling}: {}", r.text());
        assert_eq!(r.seen().unwrap().target, seen);
    }
    assert_eq!(open.hits(), 3);
    // As long a path that reads one way is routed.
    let r = call(
        &b,
        &Request::get("app.test", &format!("/{}", "x".repeat(9 << 10))),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}
