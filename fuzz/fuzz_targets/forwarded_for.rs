//! `X-Forwarded-*` handling, the allowlist, the rate limit's client and the forward-auth
//! request with hostile header values: never a panic; an untrusted peer's own claims never
//! survive, never decide an allowlist, never pick a rate-limit bucket, and never reach an
//! auth service.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use arbitrary::Arbitrary;
use berth_core::route::{ForwardAuthSpec, RateLimit};
use berth_plugins::builtin::{forward_headers, Allow, ClientKey, ForwardAuth, RateLimiter};
use berth_plugins::{Downstream, RequestCtx, Scheme};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use pingora_http::RequestHeader;

#[derive(Arbitrary, Debug)]
struct Input {
    headers: Vec<(u8, Vec<u8>)>,
    peer: [u8; 4],
    trusted: bool,
    https: bool,
    authority: String,
}

const NAMES: [&str; 8] = [
    "x-forwarded-for",
    "x-real-ip",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "forwarded",
    "proxy",
    "authorization",
];

fuzz_target!(|input: Input| {
    let mut req = RequestHeader::build("GET", b"/", None).expect("request");
    let mut authorization = Vec::new();
    let mut xff = Vec::new();
    for (n, value) in &input.headers {
        let name = NAMES[*n as usize % NAMES.len()];
        if let Ok(v) = http::HeaderValue::from_bytes(value) {
            if name == "authorization" {
                authorization.push(value.clone());
            }
            if name == "x-forwarded-for" {
                if let Ok(s) = v.to_str() {
                    xff.push(s.to_string());
                }
            }
            let _ = req.append_header(name, v);
        }
    }
    let peer = IpAddr::V4(Ipv4Addr::from(input.peer));
    let original = req.clone();
    let downstream = Downstream {
        scheme: if input.https {
            Scheme::Https
        } else {
            Scheme::Http
        },
        client_ip: Some(peer),
        local_port: 443,
    };
    if http::HeaderValue::from_str(&input.authority).is_ok()
        && forward_headers(&mut req, &downstream, &input.authority, input.trusted).is_ok()
        && !input.trusted
    {
        let get = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
        assert_eq!(get("x-forwarded-for"), Some(peer.to_string().as_str()));
        assert_eq!(get("x-real-ip"), Some(peer.to_string().as_str()));
        assert!(req.headers.get("forwarded").is_none());
        assert!(req.headers.get("proxy").is_none());
    }

    // Only 10.0.0.0/8 may pass; the peer is trusted (and its X-Forwarded-For believed) only
    // when it is 192.168.0.0/16.
    let allowed: IpNet = "10.0.0.0/8".parse().expect("net");
    let trusted: Arc<[IpNet]> = vec!["192.168.0.0/16".parse().expect("net")].into();
    let allow = Allow::new(vec![allowed], trusted);
    let permitted = allow.permits(Some(peer), xff.iter().map(String::as_str));
    if input.peer[0] != 192 || input.peer[1] != 168 {
        assert_eq!(permitted, allowed.contains(&peer), "{peer} {xff:?}");
    }
    assert!(!allow.permits(None, std::iter::empty()));

    // The rate limit counts an untrusted peer as itself, whatever it claims.
    let limit = RateLimit::parse("1r/s", None).expect("rate");
    let limiter = RateLimiter::new(limit, allow_trusted(), None);
    let authorization: Vec<&[u8]> = authorization.iter().map(Vec::as_slice).collect();
    let key = limiter.key("h.test", Some(peer), xff.iter().map(String::as_str), &authorization);
    if input.peer[0] != 192 || input.peer[1] != 168 {
        assert_eq!(key, ClientKey::Address(peer), "{xff:?}");
    }

    // The forward-auth request: an untrusted peer's X-Forwarded-* are replaced by berth's.
    let spec = ForwardAuthSpec {
        url: "http://127.0.0.1:9/verify".into(),
        headers: vec!["remote-user".into()],
        cache: None,
    };
    let forward = ForwardAuth::new(&spec, Arc::from([]));
    let mut ctx = RequestCtx::new(downstream.scheme);
    ctx.downstream = downstream.clone();
    ctx.authority = input.authority.clone();
    if let Ok(asked) = forward.auth_request(&original, &ctx) {
        let get = |name: &str| asked.headers().get(name).map(|v| v.as_bytes());
        assert_eq!(get("x-forwarded-for"), Some(peer.to_string().as_bytes()));
        assert_eq!(get("x-forwarded-proto"), Some(downstream.scheme.as_str().as_bytes()));
        assert_eq!(get("x-forwarded-host"), Some(input.authority.as_bytes()));
        assert_eq!(asked.headers().get_all("x-forwarded-for").iter().count(), 1);
    }
});

fn allow_trusted() -> Arc<[IpNet]> {
    vec!["192.168.0.0/16".parse().expect("net")].into()
}
