//! Load-balancing policies (`lb`): round robin, least-conn, ip-hash on the effective client
//! address, and the sticky cookie — against real origins, each answering with its name.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use berth_testkit::client::{send, Request, Response};
use berth_testkit::Origin;
use common::{berth, call, route};

fn origin_of(r: &Response) -> String {
    r.seen()
        .unwrap_or_else(|e| panic!("{e}: {} {}", r.status, r.text()))
        .origin
}

fn origins() -> Vec<Origin> {
    ["a", "b", "c"].iter().map(|n| Origin::start(n)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_least_conn_and_ip_hash_choose_as_documented() {
    let o = origins();
    let addrs: Vec<_> = o.iter().map(|o| o.addr).collect();
    // Least-conn has origins of its own: which one is busy is read from their counts.
    let lc = [Origin::start("a"), Origin::start("b")];
    let routes = [
        route("rr.test", &addrs, ""),
        route("lc.test", &[lc[0].addr, lc[1].addr], "lb = \"least-conn\""),
        route("ip.test", &addrs, "lb = \"ip-hash\""),
    ]
    .concat();
    let b = berth(&common::config(&format!(
        "[forwarded]\ntrusted-proxies = [\"127.0.0.1\"]\n\n{routes}"
    )));

    // Round robin: each in turn.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..6 {
        let r = call(&b, &Request::get("rr.test", "/")).await;
        *seen.entry(origin_of(&r)).or_default() += 1;
    }
    assert_eq!(
        seen.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{seen:?}"
    );

    // Least-conn: while one upstream holds a slow request, the others go to the other one.
    let slow = tokio::spawn({
        let addr = b.http;
        async move { send(addr, &Request::get("lc.test", "/silent/3")).await }
    });
    let started = std::time::Instant::now();
    let busy = loop {
        if let Some(busy) = lc.iter().position(|o| o.in_flight() == 1) {
            break busy;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the slow request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    for _ in 0..4 {
        let r = call(&b, &Request::get("lc.test", "/")).await;
        assert_eq!(
            origin_of(&r),
            ["a", "b"][1 - busy],
            "least-conn chose the busy upstream"
        );
    }
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(origin_of(&slow), ["a", "b"][busy]);
    // Nothing in flight: both are used again.
    let mut after = HashSet::new();
    for _ in 0..4 {
        after.insert(origin_of(&call(&b, &Request::get("lc.test", "/")).await));
    }
    assert_eq!(after.len(), 2, "{after:?}");

    // ip-hash: the effective client (a trusted proxy's X-Forwarded-For) keeps its upstream;
    // different clients spread.
    let mut chosen = HashSet::new();
    for i in 1..=24 {
        let client = format!("192.0.2.{i}");
        let first = origin_of(
            &call(
                &b,
                &Request::get("ip.test", "/").header("X-Forwarded-For", &client),
            )
            .await,
        );
        for _ in 0..3 {
            let r = call(
                &b,
                &Request::get("ip.test", "/").header("X-Forwarded-For", &client),
            )
            .await;
            assert_eq!(origin_of(&r), first, "{client} moved");
        }
        chosen.insert(first);
    }
    assert_eq!(chosen.len(), 3, "24 clients all hashed onto {chosen:?}");
}

/// The `Set-Cookie` of a response, if any.
fn set_cookie(r: &Response) -> Option<String> {
    r.header("set-cookie").map(str::to_string)
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sticky_cookie_keeps_a_client_on_its_upstream_while_it_is_there() {
    let mut o = origins();
    let addrs: Vec<_> = o.iter().map(|o| o.addr).collect();
    let b = berth(&common::config(&route(
        "ck.test",
        &addrs,
        "lb = \"cookie\"\npath = \"/app\"",
    )));

    let first = call(&b, &Request::get("ck.test", "/app/")).await;
    let set = set_cookie(&first).expect("the first answer sets the cookie");
    let attrs: Vec<&str> = set.split(';').map(str::trim).collect();
    assert!(attrs[0].starts_with("berth_upstream="), "{set}");
    for attr in ["Path=/", "HttpOnly", "SameSite=Lax"] {
        assert!(attrs.contains(&attr), "{set}");
    }
    assert!(
        !attrs.contains(&"Secure"),
        "Secure over plain HTTP would be dropped: {set}"
    );
    assert!(
        !set.contains(&o[0].addr.to_string()),
        "the cookie names no address: {set}"
    );
    let home = origin_of(&first);
    let cookie = cookie_value(&set);
    for _ in 0..6 {
        let r = call(
            &b,
            &Request::get("ck.test", "/app/x").header("Cookie", &format!("theme=dark; {cookie}")),
        )
        .await;
        assert_eq!(origin_of(&r), home);
        assert_eq!(set_cookie(&r), None, "a valid cookie is not set again");
        // berth's cookie stays with berth; the others reach the upstream.
        let seen = r.seen().unwrap();
        assert_eq!(
            seen.header("cookie"),
            Some("theme=dark"),
            "{:?}",
            seen.headers
        );
    }
    // Without it, or with a forged value, round robin, and a cookie is set.
    let mut spread = HashSet::new();
    for value in ["", "berth_upstream=forged", "berth_upstream=127.0.0.1:1"] {
        for _ in 0..3 {
            let mut req = Request::get("ck.test", "/app/");
            if !value.is_empty() {
                req = req.header("Cookie", value);
            }
            let r = call(&b, &req).await;
            assert!(set_cookie(&r).is_some(), "{value}");
            spread.insert(origin_of(&r));
        }
    }
    assert_eq!(spread.len(), 3, "{spread:?}");

    // Its upstream gone: the next one serves, and the cookie moves there.
    let gone = ["a", "b", "c"].iter().position(|n| *n == home).unwrap();
    drop(o.remove(gone));
    let r = call(
        &b,
        &Request::get("ck.test", "/app/").header("Cookie", &cookie),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_ne!(origin_of(&r), home);
    let moved = cookie_value(&set_cookie(&r).expect("a new cookie for the new upstream"));
    assert_ne!(moved, cookie);
    let again = call(
        &b,
        &Request::get("ck.test", "/app/").header("Cookie", &moved),
    )
    .await;
    assert_eq!(origin_of(&again), origin_of(&r));
}
