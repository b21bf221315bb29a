//! Who the client is, and what every step that asks makes of it — `X-Forwarded-*` handling,
//! the allowlist, the rate limit's client and the forward-auth request — with hostile header
//! values: never a panic; an untrusted peer is its own client and its claims never survive,
//! never decide an allowlist, never pick a rate-limit bucket, and never reach an auth
//! service; an unreadable client never passes an allowlist.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use berth_core::route::{ForwardAuthSpec, RateLimit};
use berth_plugins::builtin::{forward_headers, Allow, ClientKey, ForwardAuth, RateLimiter};
use berth_plugins::{Downstream, RequestCtx, Scheme, TrustedProxies};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use pingora_http::RequestHeader;

#[derive(Arbitrary, Debug)]
struct Input {
    headers: Vec<(u8, Vec<u8>)>,
    /// `X-Forwarded-For` headers, each a list of hops.
    forwarded_for: Vec<Vec<Hop>>,
    peer: [u8; 4],
    trusted: bool,
    https: bool,
    authority: String,
}

/// One entry of an `X-Forwarded-For` list: an address in each of the ways proxies write
/// one, or anything at all.
#[derive(Arbitrary, Debug)]
enum Hop {
    V4([u8; 4]),
    V4Port([u8; 4], u16),
    V6([u8; 16]),
    V6Bracketed([u8; 16]),
    V6Port([u8; 16], u16),
    Text(String),
    Bytes(Vec<u8>),
}

impl Hop {
    /// The address this hop names, as a reader that knows how it was written sees it.
    fn address(&self) -> Option<IpAddr> {
        match self {
            Hop::V4(a) | Hop::V4Port(a, _) => Some(Ipv4Addr::from(*a).into()),
            Hop::V6(a) | Hop::V6Bracketed(a) | Hop::V6Port(a, _) => {
                Some(Ipv6Addr::from(*a).into())
            }
            Hop::Text(_) | Hop::Bytes(_) => None,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Hop::V4(a) => Ipv4Addr::from(*a).to_string().into_bytes(),
            Hop::V4Port(a, p) => format!("{}:{p}", Ipv4Addr::from(*a)).into_bytes(),
            Hop::V6(a) => Ipv6Addr::from(*a).to_string().into_bytes(),
            Hop::V6Bracketed(a) => format!("[{}]", Ipv6Addr::from(*a)).into_bytes(),
            Hop::V6Port(a, p) => format!("[{}]:{p}", Ipv6Addr::from(*a)).into_bytes(),
            Hop::Text(t) => t.clone().into_bytes(),
            Hop::Bytes(b) => b.clone(),
        }
    }
}

/// Other headers (`X-Forwarded-For` comes from [`Input::forwarded_for`]).
const NAMES: [&str; 7] = [
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
    for (n, value) in &input.headers {
        let name = NAMES[*n as usize % NAMES.len()];
        if let Ok(v) = http::HeaderValue::from_bytes(value) {
            if name == "authorization" {
                authorization.push(value.clone());
            }
            let _ = req.append_header(name, v);
        }
    }
    // Every hop an address, every header text: the last address is the one a trusted peer
    // names.
    let mut named = None;
    let mut readable = true;
    for hops in &input.forwarded_for {
        let value: Vec<u8> = hops.iter().map(Hop::bytes).collect::<Vec<_>>().join(&b", "[..]);
        if let Ok(v) = http::HeaderValue::from_bytes(&value) {
            readable &= v.to_str().is_ok();
            let _ = req.append_header("x-forwarded-for", v);
            named = hops.last().map(Hop::address);
        }
    }
    let peer = IpAddr::V4(Ipv4Addr::from(input.peer));
    let original = req.clone();
    // Peers in 192.168.0.0/16 are trusted proxies (or every peer, with `trusted`).
    let nets: Vec<IpNet> = if input.trusted {
        vec!["0.0.0.0/0".parse().expect("net")]
    } else {
        vec!["192.168.0.0/16".parse().expect("net")]
    };
    let client = TrustedProxies::new(nets).client(Some(peer), &req.headers);
    let untrusted = !input.trusted && (input.peer[0] != 192 || input.peer[1] != 168);
    assert_eq!(client.trusted, !untrusted, "{peer}");
    if untrusted {
        assert_eq!(client.address, Some(peer), "an untrusted peer is its own client");
    }
    let only_addresses = input
        .forwarded_for
        .iter()
        .flatten()
        .all(|h| h.address().is_some());
    if !untrusted && readable && only_addresses {
        assert_eq!(client.address, named.flatten(), "{input:?}");
    }
    let downstream = Downstream {
        scheme: if input.https {
            Scheme::Https
        } else {
            Scheme::Http
        },
        client,
        local_port: 443,
    };
    if http::HeaderValue::from_str(&input.authority).is_ok()
        && forward_headers(&mut req, &downstream, &input.authority).is_ok()
    {
        let get = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
        if untrusted {
            assert_eq!(get("x-forwarded-for"), Some(peer.to_string().as_str()));
            assert_eq!(get("x-real-ip"), Some(peer.to_string().as_str()));
            assert!(req.headers.get("forwarded").is_none());
        }
        assert!(req.headers.get("proxy").is_none());
        assert_eq!(req.headers.get_all("x-forwarded-for").iter().count(), 1);
    }

    // Only 10.0.0.0/8 may pass: an untrusted peer is judged by its own address, and an
    // unreadable client never passes.
    let allowed: IpNet = "10.0.0.0/8".parse().expect("net");
    let allow = Allow::new(vec![allowed]);
    let permitted = allow.permits(&client);
    if untrusted {
        assert_eq!(permitted, allowed.contains(&peer), "{peer}");
    }
    if client.address.is_none() {
        assert!(!permitted);
    }

    // The rate limit counts an untrusted peer as itself, whatever it claims, and an
    // unreadable client as its proxy.
    let limit = RateLimit::parse("1r/s", None).expect("rate");
    let limiter = RateLimiter::new(limit, None);
    let authorization: Vec<&[u8]> = authorization.iter().map(Vec::as_slice).collect();
    let key = limiter.key("h.test", &client, &authorization);
    if untrusted || client.address.is_none() {
        assert_eq!(key, ClientKey::Address(peer));
    }

    // The forward-auth request: an untrusted peer's X-Forwarded-* are replaced by berth's,
    // and its X-Forwarded-For is the one the upstream gets.
    let spec = ForwardAuthSpec {
        url: "http://127.0.0.1:9/verify".into(),
        headers: vec!["remote-user".into()],
        cache: None,
    };
    let forward = ForwardAuth::new(&spec);
    let mut ctx = RequestCtx::new(downstream.scheme);
    ctx.downstream = downstream.clone();
    ctx.authority = input.authority.clone();
    if let Ok(asked) = forward.auth_request(&original, &ctx) {
        let get = |name: &str| asked.headers().get(name).map(|v| v.as_bytes());
        assert_eq!(
            get("x-forwarded-for"),
            Some(client.forwarded_for(&original.headers).as_bytes())
        );
        if untrusted {
            assert_eq!(get("x-forwarded-for"), Some(peer.to_string().as_bytes()));
            assert_eq!(get("x-forwarded-proto"), Some(downstream.scheme.as_str().as_bytes()));
            assert_eq!(get("x-forwarded-host"), Some(input.authority.as_bytes()));
        }
        assert_eq!(asked.headers().get_all("x-forwarded-for").iter().count(), 1);
    }
});
