//! ACME HTTP-01 challenges served by the real `berth` from the challenge directory: for any
//! host, ahead of HTTPS redirects, never in `nohttp`, never over HTTPS, and nothing but
//! base64url tokens.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::process::Command;

use berth_testkit::client::Request;
use berth_testkit::tls::{install, TestCa};
use berth_testkit::Origin;
use common::{berth, call, route};

const TOKEN: &str = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";

#[tokio::test(flavor = "multi_thread")]
async fn challenges_are_served_on_plain_http_before_redirects() {
    let origin = Origin::start("app");
    let work = tempfile::tempdir().unwrap();
    let certs = work.path().join("certs");
    let challenges = work.path().join("challenges");
    let tokens = challenges.join(".well-known/acme-challenge");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::create_dir_all(&tokens).unwrap();
    let key_authorization = format!("{TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI");
    std::fs::write(tokens.join(TOKEN), &key_authorization).unwrap();
    std::fs::write(challenges.join("secret"), "outside the token directory").unwrap();
    // redir.test has its own certificate, so its plain-HTTP requests are redirected.
    let ca = TestCa::new("challenge test CA");
    install(&certs, "redir.test", &ca.issue(&["redir.test"])).unwrap();

    let b = berth(&format!(
        "[listen]\nhttp = \"{{http}}\"\nhttps = \"{{https}}\"\n\n[docker]\nenabled = false\n\n\
         [tls]\ncerts-dir = \"{}\"\n\n[acme]\nchallenge-dir = \"{}\"\n\n{}{}",
        certs.display(),
        challenges.display(),
        route("redir.test", &[origin.addr], ""),
        route("closed.test", &[origin.addr], "https = \"nohttp\""),
    ));
    let path = format!("/.well-known/acme-challenge/{TOKEN}");

    // Redirect mode: everything else is redirected, the challenge is answered.
    let r = call(&b, &Request::get("redir.test", "/other")).await;
    assert_eq!(r.status, 301, "{}", r.text());
    let r = call(&b, &Request::get("redir.test", &path)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), key_authorization);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    // Any host, routed or not.
    let r = call(&b, &Request::get("not-routed-yet.test", &path)).await;
    assert_eq!((r.status, r.text()), (200, key_authorization.clone()));
    // nohttp refuses plain HTTP altogether, challenges included.
    assert_eq!(
        call(&b, &Request::get("closed.test", &path)).await.status,
        503
    );
    // Only GET and HEAD are answered; a POST goes the route's way (a 308 redirect here).
    let post = Request::new("POST", "redir.test", &path);
    assert_eq!(call(&b, &post).await.status, 308);

    // Nothing but base64url tokens.
    for bad in [
        "/.well-known/acme-challenge/../secret",
        "/.well-known/acme-challenge/..%2fsecret",
        "/.well-known/acme-challenge/%2e%2e%2fsecret",
        "/.well-known/acme-challenge/a.b",
        "/.well-known/acme-challenge/",
        "/.well-known/acme-challenge/unknown-token",
    ] {
        let r = call(&b, &Request::get("not-routed-yet.test", bad)).await;
        assert_eq!(r.status, 404, "{bad}: {}", r.text());
        assert!(!r.text().contains("outside"), "{bad}");
    }
    assert_eq!(
        origin.hits(),
        0,
        "no challenge request reached the upstream"
    );

    // Over HTTPS the path is the route's like any other: the upstream answers it.
    let https = b.https.unwrap();
    let out = Command::new("curl")
        .args(["-sk", "--resolve"])
        .arg(format!("redir.test:{}:127.0.0.1", https.port()))
        .arg(format!("https://redir.test:{}{path}", https.port()))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("\"origin\":\"app\""), "{body}");
    assert_eq!(origin.hits(), 1);
}
