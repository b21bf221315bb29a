//! Forward auth and rate limits: the real `berth` in front of a recording origin, asking an
//! auth service that keeps Authelia's published forward-auth contract
//! ([`berth_testkit::auth_service`]).

#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use berth_testkit::auth_service::{AuthService, PORTAL};
use berth_testkit::client::{Body, Request};
use berth_testkit::{free_port, BerthProcess, Origin, Seen};
use common::{berth, call, route, scrape, value, wait_for};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BROWSER: &str = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8";

fn with_metrics(extra: &str) -> String {
    format!(
        "[listen]\nhttp = \"{{http}}\"\nmetrics = \"{{admin}}\"\n\n[docker]\nenabled = false\n\n{extra}"
    )
}

fn htpasswd(file: &Path, user: &str, password: &str) {
    let out = Command::new("htpasswd")
        .arg("-cbB")
        .arg(file)
        .args([user, password])
        .output()
        .expect("htpasswd must be installed (scripts/test installs apache2-utils)");
    assert!(out.status.success());
}

fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// berth with forward-auth routes (one caching decisions for a minute, one for a second)
/// and an open route.
fn forward_auth_berth(auth: &AuthService, origin: &Origin) -> BerthProcess {
    let forward = format!(
        "auth.forward = \"{}\"\nauth.forward-headers = [\"Remote-User\", \"Remote-Groups\", \"Remote-Extra\"]",
        auth.url()
    );
    berth(&with_metrics(&format!(
        "{}{}{}{}",
        route("app.test", &[origin.addr], &forward),
        route(
            "cached.test",
            &[origin.addr],
            &format!("{forward}\nauth.forward-cache = \"1m\"")
        ),
        route(
            "brief.test",
            &[origin.addr],
            &format!("{forward}\nauth.forward-cache = \"1s\"")
        ),
        route("open.test", &[origin.addr], ""),
    )))
}

#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_passes_the_contract_headers_and_the_services_answers() {
    let origin = Origin::start("app");
    let auth = AuthService::start();
    let b = forward_auth_berth(&auth, &origin);
    let host = format!("app.test:{}", b.http.port());
    let wait = Duration::from_secs(5);

    // A browser without a session: the service's 302 to its portal comes back as it was
    // sent, with its cookie and its HTML; nothing reaches the origin.
    let r = call(
        &b,
        &Request::get(&host, "/private/page?x=1&y=%2F")
            .header("Accept", BROWSER)
            .header("User-Agent", "Mozilla/5.0 (test)")
            .header("X-Forwarded-For", "6.6.6.6")
            .header("X-Forwarded-Host", "evil.test")
            .header("X-Forwarded-Proto", "https"),
    )
    .await;
    assert_eq!(r.status, 302, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("{PORTAL}?rd=http://{host}/private/page?x=1&y=%2F").as_str())
    );
    assert_eq!(
        r.header("set-cookie"),
        Some("flow=started; Path=/; HttpOnly")
    );
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(r.text().starts_with("<a href="), "{}", r.text());
    assert_eq!(origin.hits(), 0);
    let asked = auth.next(wait).expect("the service was asked");
    assert_eq!(asked.method, "GET");
    assert_eq!(asked.target, "/api/authz/forward-auth");
    assert_eq!(asked.header("x-forwarded-method"), Some("GET"));
    assert_eq!(
        asked.header("x-forwarded-proto"),
        Some("http"),
        "the client's is not trusted"
    );
    assert_eq!(asked.header("x-forwarded-host"), Some(host.as_str()));
    assert_eq!(
        asked.header("x-forwarded-uri"),
        Some("/private/page?x=1&y=%2F")
    );
    assert_eq!(asked.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(asked.header("accept"), Some(BROWSER));
    assert_eq!(asked.header("user-agent"), Some("Mozilla/5.0 (test)"));
    assert_eq!(asked.header("cookie"), None);
    assert_eq!(asked.header("host"), Some(auth.addr.to_string().as_str()));

    // A script without a session: the 401, its JSON body and its challenge.
    let r = call(
        &b,
        &Request::new("DELETE", &host, "/api/items/7").header("X-Requested-With", "XMLHttpRequest"),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.text(), "{\"status\":\"KO\"}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"Authelia\"")
    );
    let asked = auth.next(wait).unwrap();
    assert_eq!(asked.header("x-forwarded-method"), Some("DELETE"));
    assert_eq!(asked.header("x-requested-with"), Some("XMLHttpRequest"));
    // A browser's POST without a session gets the service's 303.
    let r = call(
        &b,
        &Request::new("POST", &host, "/form")
            .header("Accept", BROWSER)
            .body(Body::Bytes(b"a=1".to_vec())),
    )
    .await;
    assert_eq!(r.status, 303);
    auth.next(wait).unwrap();
    assert_eq!(origin.hits(), 0);

    // With a session: the request goes through with the user the service named, and the
    // user names the client sent itself are gone; headers not listed are not copied.
    let r = call(
        &b,
        &Request::get(&host, "/private/page")
            .header("Cookie", "theme=dark; session=alice")
            .header("Remote-User", "mallory")
            .header("Remote_User", "mallory")
            .header("remote-groups", "root")
            .header("Remote-Extra", "forged")
            .header("remote_extra", "forged")
            .header("Remote-Email", "mallory@example.test"),
    )
    .await;
    let seen: Seen = r.seen().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(seen.header_all("remote-user"), ["alice"]);
    assert_eq!(seen.header_all("remote-groups"), ["admins,dev"]);
    assert_eq!(
        seen.header_all("remote_user"),
        Vec::<&str>::new(),
        "the `_` spelling too"
    );
    assert_eq!(
        seen.header_all("remote-extra"),
        Vec::<&str>::new(),
        "a listed header the service did not send is not the client's to send"
    );
    assert_eq!(seen.header_all("remote_extra"), Vec::<&str>::new());
    assert_eq!(
        seen.header_all("remote-email"),
        ["mallory@example.test"],
        "a header not in auth.forward-headers is neither copied nor removed"
    );
    assert_eq!(seen.header_all("remote-name"), Vec::<&str>::new());
    assert_eq!(seen.header("cookie"), Some("theme=dark; session=alice"));
    let asked = auth.next(wait).unwrap();
    assert_eq!(asked.header("cookie"), Some("theme=dark; session=alice"));
    // Credentials in Authorization are passed too.
    let r = call(
        &b,
        &Request::get(&host, "/api").header("Authorization", &basic("alice", "secret")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.seen().unwrap().header_all("remote-user"), ["alice"]);
    let asked = auth.next(wait).unwrap();
    assert_eq!(
        asked.header("authorization"),
        Some(basic("alice", "secret").as_str())
    );
    // A route without forward auth is not asked about.
    let before = auth.count();
    let r = call(&b, &Request::get("open.test", "/")).await;
    assert_eq!(r.status, 200);
    assert!(auth.next(Duration::from_millis(300)).is_none());
    assert_eq!(auth.count(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_decides_before_the_body_is_read() {
    let origin = Origin::start("app");
    let auth = AuthService::start();
    let b = forward_auth_berth(&auth, &origin);
    let host = format!("app.test:{}", b.http.port());

    // An upload without a user, announced with Expect: 100-continue: refused before the
    // client is asked for the body.
    let r = call(
        &b,
        &Request::new("PUT", &host, "/upload")
            .body(Body::random(8 << 20, false))
            .expect_continue(),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(!r.got_continue);
    assert_eq!(origin.hits(), 0);
    assert_eq!(origin.bytes_received(), 0);
    auth.next(Duration::from_secs(5)).unwrap();

    // An upload with a session: the service is asked while the body has not been sent
    // (the client holds it back until then), and the body then streams through whole.
    let len = 4 << 20;
    let mut stream = tokio::net::TcpStream::connect(b.http).await.unwrap();
    let head = format!(
        "PUT /upload HTTP/1.1\r\nHost: {host}\r\nCookie: session=alice\r\n\
         Content-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let asked = auth
        .next(Duration::from_secs(5))
        .expect("the service is asked before any body byte is sent");
    assert_eq!(asked.header("x-forwarded-method"), Some("PUT"));
    let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    stream.write_all(&body).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let json = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let seen: Seen = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(seen.body_bytes, len as u64);
    assert_eq!(seen.body_sha256, hex::encode(Sha256::digest(&body)));
    assert_eq!(seen.header_all("remote-user"), ["alice"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_caches_an_allowed_decision_for_the_very_same_question_only() {
    let origin = Origin::start("app");
    let auth = AuthService::start();
    let b = forward_auth_berth(&auth, &origin);
    let cached = format!("cached.test:{}", b.http.port());
    let plain = format!("app.test:{}", b.http.port());
    let alice = |host: &str, path: &str| Request::get(host, path).header("Cookie", "session=alice");
    let asked = |n: usize, why: &str| assert_eq!(auth.count(), n, "{why}");

    for _ in 0..3 {
        let r = call(&b, &alice(&cached, "/a")).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.seen().unwrap().header_all("remote-user"),
            ["alice"],
            "from the cache too"
        );
    }
    asked(1, "one decision for three requests");
    call(&b, &alice(&cached, "/b")).await;
    asked(2, "another path is another question");
    call(
        &b,
        &Request::new("POST", &cached, "/a").header("Cookie", "session=alice"),
    )
    .await;
    asked(3, "another method is another question");
    call(
        &b,
        &Request::get(&cached, "/a").header("Cookie", "session=alice; x=1"),
    )
    .await;
    asked(4, "other credentials are another question");
    let basic = || Request::get(&cached, "/a").header("Authorization", &basic("alice", "secret"));
    for _ in 0..2 {
        assert_eq!(call(&b, &basic()).await.status, 200);
    }
    asked(5, "Authorization alone is credentials, and cached");

    // A decision for an open path is not one for another path, whatever the cookie.
    let junk = |path: &str| Request::get(&cached, path).header("Cookie", "j=1");
    assert_eq!(call(&b, &junk("/public/x")).await.status, 200);
    asked(6, "asked about /public/x");
    let r = call(&b, &junk("/admin")).await;
    assert_eq!(r.status, 401, "{}", r.text());
    asked(
        7,
        "asked about /admin, not answered from /public/x's decision",
    );

    for _ in 0..2 {
        assert_eq!(call(&b, &Request::get(&cached, "/a")).await.status, 401);
    }
    asked(9, "requests without credentials are always asked about");
    for _ in 0..2 {
        assert_eq!(call(&b, &alice(&plain, "/a")).await.status, 200);
    }
    asked(
        11,
        "without auth.forward-cache, every request is asked about",
    );

    // A decision lives as long as auth.forward-cache says.
    let brief = format!("brief.test:{}", b.http.port());
    assert_eq!(call(&b, &alice(&brief, "/a")).await.status, 200);
    assert_eq!(call(&b, &alice(&brief, "/a")).await.status, 200);
    asked(12, "within the second: cached");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(call(&b, &alice(&brief, "/a")).await.status, 200);
    asked(13, "after the second: asked again");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_services_odd_answers_reach_the_client_framed_by_berth() {
    let origin = Origin::start("app");
    let auth = AuthService::start();
    let b = forward_auth_berth(&auth, &origin);
    // A chunked answer with Connection: close comes back with berth's own framing.
    let r = call(
        &b,
        &Request::get("app.test", "/").header("Cookie", "session=chunked"),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.text(), "sent in chunks");
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.header("content-length"), Some("14"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    // An answer too large to pass on is the service failing.
    let r = call(
        &b,
        &Request::get("app.test", "/").header("Cookie", "session=big"),
    )
    .await;
    assert_eq!(r.status, 503, "{} bytes", r.body.len());
    // The service judges the path the upstream serves: escapes of unreserved characters
    // are decoded for it, and a path that upstreams read in different ways is refused.
    while auth.next(Duration::ZERO).is_some() {}
    let r = call(&b, &Request::get("app.test", "/%70ublic/ok?x=..")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        auth.next(Duration::from_secs(5))
            .unwrap()
            .header("x-forwarded-uri"),
        Some("/public/ok?x=..")
    );
    for target in [
        "/admin/../public/x",
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/admin%2F..%2Fpublic",
        "/public//x",
        "/public/..;/admin",
        "/admin;x/secret",
        "/public\\..\\admin",
        "/public/%5C../admin",
    ] {
        let before = auth.count();
        let r = call(
            &b,
            &Request::get("app.test", target).header("Cookie", "j=1"),
        )
        .await;
        assert_eq!(r.status, 400, "{target}: {}", r.text());
        assert_eq!(auth.count(), before, "{target} was asked about");
    }
    assert_eq!(origin.hits(), 1);

    // A refused upload's body is never read as a request of its own.
    let smuggled = "GET /secret HTTP/1.1\r\nHost: app.test\r\nCookie: session=alice\r\n\r\n";
    let wire = format!(
        "POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let mut stream = tokio::net::TcpStream::connect(b.http).await.unwrap();
    stream.write_all(wire.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        read.is_ok(),
        "berth kept the connection open after the refusal: {text}"
    );
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert_eq!(origin.hits(), 1, "the smuggled request reached the origin");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_or_silent_auth_service_is_a_503_never_a_pass() {
    let origin = Origin::start("app");
    let auth = AuthService::start();
    let closed = free_port();
    let b = berth(&with_metrics(&format!(
        "{}{}",
        route(
            "app.test",
            &[origin.addr],
            &format!("auth.forward = \"{}\"", auth.url())
        ),
        route(
            "down.test",
            &[origin.addr],
            &format!("auth.forward = \"http://127.0.0.1:{closed}/verify?token=s3cret\"")
        ),
    )));

    let r = call(
        &b,
        &Request::get("down.test", "/").header("Cookie", "session=alice"),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("authentication service is unavailable"));

    let started = Instant::now();
    let r = call(
        &b,
        &Request::get("app.test", "/").header("Cookie", "session=hang"),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(auth.count(), 1);
    assert_eq!(origin.hits(), 0);
    let log = b.log();
    assert!(
        log.contains("forward auth: the auth service failed"),
        "{log}"
    );
    assert!(log.contains(&format!("127.0.0.1:{closed}")), "{log}");
    assert!(log.contains("no answer within 10 s"), "{log}");
    assert!(
        !log.contains("s3cret"),
        "the service URL's query is logged: {log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_count_per_client_and_per_verified_user_before_auth() {
    let origin = Origin::start("app");
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("htpasswd");
    htpasswd(&file, "alice", "correct horse");
    let b = berth(&with_metrics(&format!(
        "[forwarded]\ntrusted-proxies = [\"127.0.0.1/32\"]\n\n{}{}{}",
        route(
            "limited.test",
            &[origin.addr],
            "rate-limit = \"1r/m\"\nrate-burst = 3"
        ),
        route(
            "login.test",
            &[origin.addr],
            &format!(
                "rate-limit = \"1r/m\"\nrate-burst = 2\nauth.htpasswd = \"{}\"",
                file.display()
            )
        ),
        route("open.test", &[origin.addr], ""),
    )));
    let from = |ip: &str| Request::get("limited.test", "/").header("X-Forwarded-For", ip);

    // Three at once (the burst), then 429 with the time to wait.
    for _ in 0..3 {
        assert_eq!(call(&b, &from("198.51.100.1")).await.status, 200);
    }
    let r = call(&b, &from("198.51.100.1")).await;
    assert_eq!(r.status, 429, "{}", r.text());
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(origin.hits(), 3);
    // Other clients behind the same trusted proxy have their own allowance; a route without
    // a limit has none.
    // (Three of them: any one could share the first one's cell of state, all three together
    // practically never.)
    let mut others = 0;
    for ip in ["198.51.100.2", "198.51.100.3", "198.51.100.4"] {
        others += usize::from(call(&b, &from(ip)).await.status == 200);
    }
    assert!(others >= 1, "another client was refused");
    for _ in 0..5 {
        assert_eq!(call(&b, &Request::get("open.test", "/")).await.status, 200);
    }

    // On an authenticated route a verified user counts apart from the address, and a
    // client guessing passwords is refused before its guesses are checked.
    let alice = || {
        Request::get("login.test", "/").header("Authorization", &basic("alice", "correct horse"))
    };
    let mallory =
        || Request::get("login.test", "/").header("Authorization", &basic("alice", "guess"));
    assert_eq!(
        call(&b, &alice()).await.status,
        200,
        "counted for the address: not verified yet"
    );
    assert_eq!(call(&b, &alice()).await.status, 200, "counted for alice");
    assert_eq!(call(&b, &alice()).await.status, 200, "counted for alice");
    assert_eq!(
        call(&b, &alice()).await.status,
        429,
        "alice's burst is spent"
    );
    assert_eq!(
        call(&b, &mallory()).await.status,
        401,
        "the address's second request"
    );
    let r = call(&b, &mallory()).await;
    assert_eq!(
        r.status,
        429,
        "refused before the password is checked: {}",
        r.text()
    );

    wait_for(&b, "berth_rate_limited_total{host=\"login.test\"}", 2.0).await;
    let m = scrape(&b).await;
    assert_eq!(
        value(&m, "berth_rate_limited_total{host=\"limited.test\"}"),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "berth_requests_total{code=\"429\",host=\"limited.test\",method=\"GET\"}"
        ),
        1.0
    );
}
