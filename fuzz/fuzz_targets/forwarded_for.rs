//! `X-Forwarded-*` handling and the allowlist with hostile header values: never a panic; an
//! untrusted peer's own claims never survive, and never decide an allowlist.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use arbitrary::Arbitrary;
use berth_plugins::builtin::{forward_headers, Allow};
use berth_plugins::{Downstream, Scheme};
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

const NAMES: [&str; 7] = [
    "x-forwarded-for",
    "x-real-ip",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "forwarded",
    "proxy",
];

fuzz_target!(|input: Input| {
    let mut req = RequestHeader::build("GET", b"/", None).expect("request");
    let mut xff = Vec::new();
    for (n, value) in &input.headers {
        let name = NAMES[*n as usize % NAMES.len()];
        if let Ok(v) = http::HeaderValue::from_bytes(value) {
            if name == "x-forwarded-for" {
                if let Ok(s) = v.to_str() {
                    xff.push(s.to_string());
                }
            }
            let _ = req.append_header(name, v);
        }
    }
    let peer = IpAddr::V4(Ipv4Addr::from(input.peer));
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
});
