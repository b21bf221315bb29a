//! Active health checks (`health-check`, `health-interval`, `health-timeout`, `health-fails`,
//! `health-passes`): against real origins whose check path can be made to fail, a TLS origin
//! (openssl) checked over the route's own TLS options, and an origin that goes away between
//! checks (a connection a request could not make counts as a failed check).

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use berth_testkit::client::{send, Request};
use berth_testkit::{BerthProcess, Origin};
use common::{call, route, scrape, value};
use serde_json::Value;

fn config(extra: &str) -> String {
    format!(
        "[listen]\nhttp = \"{{http}}\"\nmetrics = \"{{admin}}\"\n\n[docker]\nenabled = false\n\n{extra}"
    )
}

async fn routes(b: &BerthProcess) -> Value {
    let admin = b.admin.unwrap();
    let r = send(admin, &Request::get(&admin.to_string(), "/routes"))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    serde_json::from_str(&r.text()).unwrap()
}

/// The health `/routes` shows for `upstream` of the route of `host`.
async fn health(b: &BerthProcess, host: &str, upstream: SocketAddr) -> Value {
    let all = routes(b).await;
    let route = all["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["host"] == host)
        .unwrap_or_else(|| panic!("no route {host} in {all}"))
        .clone();
    route["health"]
        .as_array()
        .unwrap_or_else(|| panic!("no health in {route}"))
        .iter()
        .find(|h| h["upstream"] == upstream.to_string())
        .unwrap_or_else(|| panic!("no health for {upstream} in {route}"))
        .clone()
}

/// Polls `/routes` until the health of `upstream` satisfies `done` (the checks run on their
/// own clock; what they found is read where berth publishes it).
async fn wait_health(
    b: &BerthProcess,
    host: &str,
    upstream: SocketAddr,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let h = health(b, host, upstream).await;
        if done(&h) {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "{upstream} never {what}: {h}\nberth log:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(h: &Value, key: &str) -> u64 {
    h[key].as_u64().unwrap_or_else(|| panic!("no {key} in {h}"))
}

async fn answered_by(b: &BerthProcess, host: &str, n: usize) -> Vec<String> {
    let mut by = Vec::new();
    for _ in 0..n {
        let r = call(b, &Request::get(host, "/")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        by.push(r.seen().unwrap().origin);
    }
    by
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_fails_its_checks_is_taken_out_and_brought_back() {
    let (a, b_origin) = (Origin::start("a"), Origin::start("b"));
    let pages = tempfile::tempdir().unwrap();
    std::fs::write(pages.path().join("503.html"), "<h1>all down</h1>").unwrap();
    let checked = format!(
        "health-check = \"/healthz\"\nhealth-interval = \"1s\"\nhealth-fails = 2\n\
         health-passes = 2\nerror-pages = \"{}\"",
        pages.path().display()
    );
    let b = common::berth(&config(&route(
        "hc.test",
        &[a.addr, b_origin.addr],
        &checked,
    )));

    // Both are checked at once, with the route's host, the path and berth's User-Agent.
    for o in [&a, &b_origin] {
        wait_health(&b, "hc.test", o.addr, "checked", |h| {
            count(h, "checks_ok") >= 1
        })
        .await;
        let check = o.last_health_check().unwrap();
        assert_eq!(check.method, "GET");
        assert_eq!(check.target, "/healthz");
        assert_eq!(check.header("host"), Some("hc.test"));
        assert_eq!(check.header("user-agent"), Some("berth-health-check"));
        assert_eq!(check.header("connection"), Some("close"));
    }

    // a's checks fail: after two in a row it is out, and every request goes to b.
    a.set_health(500);
    let down = wait_health(&b, "hc.test", a.addr, "taken out", |h| {
        h["healthy"] == false
    })
    .await;
    assert!(count(&down, "checks_failed") >= 2, "{down}");
    assert!(
        down["last_error"].as_str().unwrap().contains("500"),
        "{down}"
    );
    let hits = a.hits();
    let by = answered_by(&b, "hc.test", 6).await;
    assert!(by.iter().all(|o| o == "b"), "{by:?}");
    assert_eq!(
        a.hits(),
        hits,
        "no request reached the upstream that is out"
    );
    let m = scrape(&b).await;
    let series = |o: &Origin| format!("host=\"hc.test\",path=\"/\",upstream=\"{}\"", o.addr);
    assert_eq!(
        value(&m, &format!("berth_upstream_healthy{{{}}}", series(&a))),
        0.0
    );
    assert_eq!(
        value(
            &m,
            &format!("berth_upstream_healthy{{{}}}", series(&b_origin))
        ),
        1.0
    );
    assert!(
        value(
            &m,
            &format!(
                "berth_health_checks_total{{host=\"hc.test\",path=\"/\",result=\"failed\",upstream=\"{}\"}}",
                a.addr
            )
        ) >= 2.0
    );

    // A reload that rebuilds the route keeps what the checks found.
    b.rewrite_config(&config(&format!(
        "{}{}",
        route(
            "hc.test",
            &[a.addr, b_origin.addr],
            &format!("{checked}\nmax-body = \"1g\"")
        ),
        route("other.test", &[a.addr], "")
    )))
    .unwrap();
    b.signal("HUP").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while routes(&b).await["routes"].as_array().unwrap().len() != 2 {
        assert!(Instant::now() < deadline, "never reloaded:\n{}", b.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = health(&b, "hc.test", a.addr).await;
    assert_eq!(after["healthy"], false, "{after}");
    assert!(count(&after, "checks_failed") >= count(&down, "checks_failed"));

    // a passes again: back after two passes in a row, and requests reach both.
    a.set_health(200);
    wait_health(&b, "hc.test", a.addr, "brought back", |h| {
        h["healthy"] == true
    })
    .await;
    let by: HashSet<String> = answered_by(&b, "hc.test", 4).await.into_iter().collect();
    assert_eq!(by, HashSet::from(["a".to_string(), "b".to_string()]));

    // Both out — a never answers its checks, b answers 404: berth answers 503 with the
    // operator's page, and no upstream is asked.
    a.set_health(0);
    b_origin.set_health(404);
    for o in [&a, &b_origin] {
        wait_health(&b, "hc.test", o.addr, "taken out", |h| {
            h["healthy"] == false
        })
        .await;
    }
    let hung = health(&b, "hc.test", a.addr).await;
    assert!(
        hung["last_error"]
            .as_str()
            .unwrap()
            .contains("no answer within 1s"),
        "{hung}"
    );
    let hits = (a.hits(), b_origin.hits());
    let r = call(
        &b,
        &Request::get("hc.test", "/").header("accept", "text/html"),
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "<h1>all down</h1>");
    assert_eq!(
        r.header("retry-after"),
        Some("2"),
        "two passes, a second apart"
    );
    assert_eq!((a.hits(), b_origin.hits()), hits);
    let log = b.log();
    assert!(
        log.contains("upstream unhealthy") && log.contains("upstream healthy again"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_a_request_could_not_make_counts_as_a_failed_check() {
    let (a, b_origin) = (Origin::start("a"), Origin::start("b"));
    let a_addr = a.addr;
    // One check at start, then none for an hour: only requests can find a gone.
    let b = common::berth(&config(&route(
        "passive.test",
        &[a_addr, b_origin.addr],
        "health-check = \"/healthz?token=s3cret\"\nhealth-interval = \"1h\"\nhealth-fails = 2",
    )));
    wait_health(&b, "passive.test", a_addr, "checked", |h| {
        count(h, "checks_ok") == 1
    })
    .await;
    // The check's query (which may carry a token) is not shown.
    let shown = routes(&b).await.to_string();
    assert!(
        !shown.contains("s3cret") && shown.contains("/healthz?…"),
        "{shown}"
    );
    drop(a);
    // Round robin: half the requests try a first, are refused, and go on to b.
    let by = answered_by(&b, "passive.test", 4).await;
    assert!(by.iter().all(|o| o == "b"), "{by:?}");
    let down = health(&b, "passive.test", a_addr).await;
    assert_eq!(down["healthy"], false, "{down}");
    assert_eq!(count(&down, "connect_failures"), 2, "{down}");
    assert_eq!(count(&down, "checks_failed"), 0, "no check ran: {down}");
    assert!(
        down["last_error"]
            .as_str()
            .unwrap()
            .contains("could not connect"),
        "{down}"
    );
    // Out of the rotation: no request tries it any more.
    answered_by(&b, "passive.test", 4).await;
    let still = health(&b, "passive.test", a_addr).await;
    assert_eq!(count(&still, "connect_failures"), 2, "{still}");
    let log = b.log();
    assert!(
        log.contains("upstream unhealthy") && !log.contains("s3cret"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn checks_connect_as_the_routes_requests_do() {
    use berth_testkit::tls::TestCa;
    // A TLS origin (openssl s_server -www answers GET / with 200) whose certificate our own
    // CA signed for tls.test: the route that trusts that CA finds it healthy, the one that
    // trusts another CA does not.
    let ca = TestCa::new("upstream CA");
    let other_ca = TestCa::new("some other CA");
    let dir = tempfile::tempdir().unwrap();
    let server = berth_testkit::tls::TlsOrigin::start(&ca.issue(&["tls.test"])).unwrap();
    let addr = server.addr;
    let (ca_file, other_file) = (dir.path().join("ca.pem"), dir.path().join("other.pem"));
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&other_file, other_ca.pem()).unwrap();
    let tls = |file: &std::path::Path| {
        format!(
            "proto = \"https\"\nupstream-ca-file = \"{}\"\nupstream-sni = \"tls.test\"\n\
             health-check = \"/\"\nhealth-interval = \"1s\"\nhealth-fails = 1",
            file.display()
        )
    };
    let b = common::berth(&config(
        &[
            route("trusted.test", &[addr], &tls(&ca_file)),
            route("untrusted.test", &[addr], &tls(&other_file)),
            route(
                "wrongname.test",
                &[addr],
                &tls(&ca_file).replace(
                    "upstream-sni = \"tls.test\"",
                    "upstream-sni = \"other.test\"",
                ),
            ),
        ]
        .concat(),
    ));
    let trusted = wait_health(&b, "trusted.test", addr, "checked", |h| {
        count(h, "checks_ok") >= 2
    })
    .await;
    let untrusted = wait_health(&b, "untrusted.test", addr, "taken out", |h| {
        h["healthy"] == false
    })
    .await;
    // The name the checks verify is upstream-sni's.
    let wrongname = wait_health(&b, "wrongname.test", addr, "taken out", |h| {
        h["healthy"] == false
    })
    .await;
    drop(server);
    assert_eq!(count(&wrongname, "checks_ok"), 0, "{wrongname}");
    assert_eq!(trusted["healthy"], true, "{trusted}");
    assert_eq!(count(&trusted, "checks_failed"), 0, "{trusted}");
    assert_eq!(count(&untrusted, "checks_ok"), 0, "{untrusted}");
}
