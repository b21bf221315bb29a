//! Who the client is, and what every step that asks makes of it — `X-Forwarded-*` handling,
//! the allowlist, the rate limit's client and the forward-auth request — with hostile header
//! values and peers of every kind: never a panic; the client is the one the input was
//! written to name (the peer, or for a trusted peer the last hop of its last
//! `X-Forwarded-For`), and every step agrees: X-Real-IP names it, the allowlist judges it,
//! the rate limit counts it, the upstream and the auth service get the same chain.
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
    peer: Peer,
    trusted: bool,
    https: bool,
    authority: String,
}

/// The TCP peer.
#[derive(Arbitrary, Debug)]
enum Peer {
    V4([u8; 4]),
    V6([u8; 16]),
    /// An IPv4 address as an IPv6 listener sees it (`::ffff:a.b.c.d`).
    Mapped([u8; 4]),
}

impl Peer {
    /// The address as berth judges it: a mapped one is its IPv4 address.
    fn address(&self) -> IpAddr {
        match self {
            Peer::V4(a) | Peer::Mapped(a) => Ipv4Addr::from(*a).into(),
            Peer::V6(a) => Ipv6Addr::from(*a).to_canonical(),
        }
    }

    /// The address as the listener reports it.
    fn raw(&self) -> IpAddr {
        match self {
            Peer::V4(a) => Ipv4Addr::from(*a).into(),
            Peer::Mapped(a) => Ipv4Addr::from(*a).to_ipv6_mapped().into(),
            Peer::V6(a) => Ipv6Addr::from(*a).into(),
        }
    }
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
    // The X-Forwarded-For values as sent, and the address the last hop of the last one
    // names (`Some(None)`: that hop is not written as an address, whatever it says).
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut named: Option<Option<IpAddr>> = None;
    for hops in &input.forwarded_for {
        let value: Vec<u8> = hops.iter().map(Hop::bytes).collect::<Vec<_>>().join(&b", "[..]);
        if let Ok(v) = http::HeaderValue::from_bytes(&value) {
            let _ = req.append_header("x-forwarded-for", v);
            sent.push(value);
            named = Some(hops.last().and_then(Hop::address));
        }
    }
    let peer = input.peer.address();
    let original = req.clone();
    // Peers in 192.168.0.0/16 are trusted proxies (or every peer, with `trusted`).
    let nets: Vec<IpNet> = if input.trusted {
        vec!["0.0.0.0/0".parse().expect("net"), "::/0".parse().expect("net")]
    } else {
        vec!["192.168.0.0/16".parse().expect("net")]
    };
    let client = TrustedProxies::new(nets).client(Some(input.peer.raw()), &req.headers);
    let inside = matches!(peer, IpAddr::V4(v4) if v4.octets()[..2] == [192, 168]);
    let untrusted = !input.trusted && !inside;
    assert_eq!(client.trusted, !untrusted, "{peer}");
    assert_eq!(client.peer, Some(peer));
    // Who the client is, worked out here from how the input was written.
    let expected = if untrusted {
        Some(Some(peer))
    } else {
        match named {
            None => Some(None),
            Some(Some(ip)) => Some(Some(ip.to_canonical())),
            Some(None) => None, // not written as an address: nothing to expect
        }
    };
    if let Some(address) = expected {
        assert_eq!(client.address, address, "{input:?}");
    }
    // The X-Forwarded-For berth sends on: a trusted peer's values as they came, then the
    // peer; anyone else's replaced by the peer.
    let chain = if untrusted || sent.is_empty() {
        peer.to_string().into_bytes()
    } else {
        let mut list = sent.join(&b", "[..]);
        list.extend_from_slice(format!(", {peer}").as_bytes());
        list
    };

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
        let get = |name: &str| req.headers.get(name).map(|v| v.as_bytes().to_vec());
        assert_eq!(get("x-forwarded-for"), Some(chain.clone()));
        assert_eq!(req.headers.get_all("x-forwarded-for").iter().count(), 1);
        if let Some(address) = expected {
            assert_eq!(
                get("x-real-ip"),
                address.map(|ip| ip.to_string().into_bytes()),
                "X-Real-IP is always berth's"
            );
        }
        if untrusted {
            assert!(req.headers.get("forwarded").is_none());
        }
        assert!(req.headers.get("proxy").is_none());
    }

    // Only 10.0.0.0/8 may pass: the client as worked out above, never an unreadable one.
    let allowed: IpNet = "10.0.0.0/8".parse().expect("net");
    let allow = Allow::new(vec![allowed]);
    let permitted = allow.permits(&client);
    if let Some(address) = expected {
        assert_eq!(permitted, address.is_some_and(|ip| allowed.contains(&ip)));
    }

    // The rate limit counts the client's IPv4 address, an unreadable client as its proxy.
    let limit = RateLimit::parse("1r/s", None).expect("rate");
    let limiter = RateLimiter::new(limit, None);
    let authorization: Vec<&[u8]> = authorization.iter().map(Vec::as_slice).collect();
    let key = limiter.key("h.test", &client, &authorization);
    match expected {
        Some(Some(ip @ IpAddr::V4(_))) => assert_eq!(key, ClientKey::Address(ip)),
        Some(None) if peer.is_ipv4() => assert_eq!(key, ClientKey::Address(peer)),
        _ => {}
    }

    // The forward-auth request tells the service what the upstream is told.
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
        assert_eq!(get("x-forwarded-for"), Some(chain.as_slice()));
        assert_eq!(asked.headers().get_all("x-forwarded-for").iter().count(), 1);
        if untrusted {
            assert_eq!(get("x-forwarded-proto"), Some(downstream.scheme.as_str().as_bytes()));
            assert_eq!(get("x-forwarded-host"), Some(input.authority.as_bytes()));
        }
    }
});
