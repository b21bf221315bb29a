//! Who the client is, worked out once per request, before routing: the TCP peer, whether it
//! is one of `forwarded.trusted-proxies`, and the effective client address — the peer, or
//! for a trusted peer the last address of its `X-Forwarded-For` — or "unreadable".
//!
//! The trusted proxies are swapped with the route table ([`crate::chain::Served`]), so a
//! request is judged by the routes and the trusted proxies of one configuration. Every step
//! that asks who the client is reads the one [`Client`] in
//! [`crate::Downstream`]: the allowlist, the rate limit, basic auth (whose realm believes a
//! trusted peer's `X-Forwarded-Proto`), forward auth and the forwarding headers, and the
//! access log. What each does with an unreadable client is its own choice, stated where it
//! is made: the allowlist refuses it, the rate limit counts it for the peer.
//!
//! ```toml
//! [forwarded]
//! trusted-proxies = ["10.0.0.0/8"]
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The peers whose forwarding headers are believed (`forwarded.trusted-proxies`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl TrustedProxies {
    /// Trusts peers inside `nets`.
    pub fn new(nets: impl Into<Arc<[IpNet]>>) -> TrustedProxies {
        TrustedProxies(nets.into())
    }

    /// Whether `peer` may speak for its client (an IPv4-mapped IPv6 address is judged as
    /// its IPv4 address).
    pub fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|ip| {
            let ip = ip.to_canonical();
            self.0.iter().any(|net| net.contains(&ip))
        })
    }

    /// The client of a request from `peer` with these request headers. Addresses are
    /// canonical: an IPv4-mapped IPv6 address is its IPv4 address.
    pub fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Client {
        let peer = peer.map(|ip| ip.to_canonical());
        let trusted = self.trusts(peer);
        let address = if trusted { named_client(headers) } else { peer };
        Client {
            peer,
            trusted,
            address,
        }
    }
}

/// Who sent a request, as berth judges it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Client {
    /// The TCP peer: the client itself, or a proxy in front of berth.
    pub peer: Option<IpAddr>,
    /// Whether the peer is a trusted proxy, whose `X-Forwarded-*` headers are believed.
    pub trusted: bool,
    /// The client's address: the peer's own, or the one a trusted peer names. `None` is
    /// "unreadable": no peer address, or a trusted peer whose `X-Forwarded-For` is absent or
    /// ends in something that is not an address.
    pub address: Option<IpAddr>,
}

impl Client {
    /// The `X-Forwarded-For` berth sends on: a trusted peer's list (in `headers`, as it
    /// came, bytes that are not text included) with the peer appended, or the peer alone.
    pub fn forwarded_for(&self, headers: &HeaderMap) -> HeaderValue {
        let peer = self.peer.map(|ip| ip.to_string()).unwrap_or_default();
        let prior = headers.get_all(X_FORWARDED_FOR);
        if !self.trusted || prior.iter().next().is_none() {
            return HeaderValue::from_str(&peer).unwrap_or(HeaderValue::from_static(""));
        }
        let mut list = Vec::new();
        for value in prior {
            list.extend_from_slice(value.as_bytes());
            list.extend_from_slice(b", ");
        }
        list.extend_from_slice(peer.as_bytes());
        // Each part was a header value and the peer is an address: never fails.
        HeaderValue::from_bytes(&list).unwrap_or(HeaderValue::from_static(""))
    }

    /// The `X-Real-IP` berth sends: the client's address; none when it is unreadable (the
    /// proxy's own address would pass it off as the client).
    pub fn real_ip(&self) -> Option<String> {
        self.address.map(|ip| ip.to_string())
    }
}

/// `203.0.113.7`, `203.0.113.7 via 10.0.0.1` (named by a trusted proxy) or
/// `unreadable via 10.0.0.1`: for log lines.
impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.address, self.peer) {
            (Some(ip), _) if !self.trusted => write!(f, "{ip}"),
            (Some(ip), Some(peer)) => write!(f, "{ip} via {peer}"),
            (None, Some(peer)) => write!(f, "unreadable via {peer}"),
            (Some(ip), None) => write!(f, "{ip}"),
            (None, None) => f.write_str("unknown"),
        }
    }
}

/// The client a trusted proxy names: the last item of its last `X-Forwarded-For` value —
/// the one it appended — if that is an address. What comes before (the client's own claims,
/// which may be anything, bytes that are not text included) is never read.
fn named_client(headers: &HeaderMap) -> Option<IpAddr> {
    let last = headers.get_all(X_FORWARDED_FOR).iter().next_back()?;
    let item = last.as_bytes().rsplit(|b| *b == b',').next()?;
    address(std::str::from_utf8(item).ok()?).map(|ip| ip.to_canonical())
}

/// An address as proxies write it in `X-Forwarded-For`: bare, with a port, or bracketed
/// IPv6 with or without a port.
fn address(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| text.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

/// The client of a request from `peer` with these `X-Forwarded-For` values, when `trusted`
/// are the trusted proxies: for plugins' tests.
#[cfg(test)]
pub(crate) fn client_of(trusted: &[&str], peer: Option<&str>, xff: &[&str]) -> Client {
    let nets: Vec<IpNet> = trusted.iter().map(|n| n.parse().expect(n)).collect();
    let mut headers = HeaderMap::new();
    for v in xff {
        headers.append(X_FORWARDED_FOR, http::HeaderValue::from_str(v).expect(v));
    }
    TrustedProxies::new(nets).client(peer.map(|p| p.parse().expect(p)), &headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn trust(nets: &[&str]) -> TrustedProxies {
        let nets: Vec<IpNet> = nets.iter().map(|n| n.parse().expect(n)).collect();
        TrustedProxies::new(nets)
    }

    fn headers(xff: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append(X_FORWARDED_FOR, HeaderValue::from_bytes(v).expect("value"));
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect(s))
    }

    #[test]
    fn the_client_of_every_kind_of_request() {
        let t = trust(&["10.0.0.0/8"]);
        let lb = ip("10.0.0.1");
        let outsider = ip("203.0.113.9");
        // (peer, X-Forwarded-For values, trusted, address)
        type Case<'a> = (Option<IpAddr>, &'a [&'a [u8]], bool, Option<IpAddr>);
        let cases: &[Case] = &[
            // An untrusted peer is its own client, whatever it claims.
            (outsider, &[], false, outsider),
            (outsider, &[b"10.9.9.9"], false, outsider),
            (outsider, &[b"\xff"], false, outsider),
            // A trusted peer names the client: the last address it forwarded.
            (lb, &[b"203.0.113.1, 192.168.1.5"], true, ip("192.168.1.5")),
            (
                lb,
                &[b"192.168.1.5", b"203.0.113.1"],
                true,
                ip("203.0.113.1"),
            ),
            (lb, &[b"192.168.1.5:5123"], true, ip("192.168.1.5")),
            (lb, &[b"fd00::7"], true, ip("fd00::7")),
            (lb, &[b"[fd00::7]"], true, ip("fd00::7")),
            (lb, &[b"[fd00::7]:443"], true, ip("fd00::7")),
            (lb, &[b" fd00::7 "], true, ip("fd00::7")),
            // ... or names nobody: unreadable, never the proxy itself.
            (lb, &[], true, None),
            (lb, &[b""], true, None),
            (lb, &[b"unknown"], true, None),
            (lb, &[b"garbage"], true, None),
            (lb, &[b"[fd00::7"], true, None),
            (lb, &[b"192.168.1.5, "], true, None),
            // Only the last item of the last value counts: it is the one the proxy appended.
            // Whatever the client put before it, bytes that are not text included, is never
            // read.
            (lb, &[b"\xff", b"192.168.1.5"], true, ip("192.168.1.5")),
            (lb, &[b"6.6.6.\xff, 192.168.1.5"], true, ip("192.168.1.5")),
            (lb, &[b"192.168.1.5", b"\xff"], true, None),
            (lb, &[b"192.168.1.5", b"1.2.3.\xff"], true, None),
            // IPv4-mapped addresses are their IPv4 address, as peers and as named clients.
            (
                ip("::ffff:10.0.0.1"),
                &[b"::ffff:192.168.1.5"],
                true,
                ip("192.168.1.5"),
            ),
            (
                ip("::ffff:203.0.113.9"),
                &[b"10.9.9.9"],
                false,
                ip("203.0.113.9"),
            ),
            // A numeric zone is part of a socket address; a named one is not an address.
            (lb, &[b"[fe80::1%2]:80"], true, ip("fe80::1")),
            (lb, &[b"fe80::1%eth0"], true, None),
            // No peer address at all: unreadable and untrusted.
            (None, &[b"192.168.1.5"], false, None),
        ];
        for (peer, xff, trusted, address) in cases {
            let client = t.client(*peer, &headers(xff));
            assert_eq!(
                client,
                Client {
                    peer: peer.map(|p| p.to_canonical()),
                    trusted: *trusted,
                    address: *address
                },
                "{peer:?} {xff:?}"
            );
        }
        assert!(!TrustedProxies::default().trusts(lb));
    }

    #[test]
    fn trust_is_by_cidr() {
        let t = trust(&["10.0.0.0/8", "::1/128"]);
        for (peer, trusted) in [
            ("10.1.2.3", true),
            ("11.0.0.1", false),
            ("::1", true),
            ("::2", false),
        ] {
            assert_eq!(t.trusts(ip(peer)), trusted, "{peer}");
        }
        assert!(!t.trusts(None));
    }

    #[test]
    fn forwarded_for_appends_the_peer_to_a_trusted_list_only() {
        let t = trust(&["10.0.0.0/8"]);
        let sent = |h: &HeaderMap, peer: &str| {
            let client = t.client(ip(peer), h);
            (client.forwarded_for(h), client.real_ip())
        };
        let h = headers(&[b"203.0.113.1", b"192.168.1.5"]);
        assert_eq!(
            sent(&h, "10.0.0.1"),
            (
                HeaderValue::from_static("203.0.113.1, 192.168.1.5, 10.0.0.1"),
                Some("192.168.1.5".to_string())
            )
        );
        assert_eq!(
            sent(&h, "203.0.113.9"),
            (
                HeaderValue::from_static("203.0.113.9"),
                Some("203.0.113.9".to_string())
            )
        );
        // A list with bytes that are not text goes on as it came; the client is the one the
        // proxy appended.
        let odd = headers(&[b"6.6.6.\xff", b"192.168.1.5"]);
        let (list, real) = sent(&odd, "10.0.0.1");
        assert_eq!(list.as_bytes(), b"6.6.6.\xff, 192.168.1.5, 10.0.0.1");
        assert_eq!(real.as_deref(), Some("192.168.1.5"));
        // Unreadable: the list and the peer, and no X-Real-IP.
        let bad = headers(&[b"unknown"]);
        assert_eq!(
            sent(&bad, "10.0.0.1"),
            (HeaderValue::from_static("unknown, 10.0.0.1"), None)
        );
        let none = HeaderMap::new();
        assert_eq!(
            sent(&none, "10.0.0.1"),
            (HeaderValue::from_static("10.0.0.1"), None)
        );
    }

    #[test]
    fn log_lines_say_who_spoke_for_the_client() {
        let t = trust(&["10.0.0.0/8"]);
        let shown = |peer: &str, xff: &[&[u8]]| t.client(ip(peer), &headers(xff)).to_string();
        assert_eq!(shown("203.0.113.9", &[b"1.2.3.4"]), "203.0.113.9");
        assert_eq!(shown("10.0.0.1", &[b"1.2.3.4"]), "1.2.3.4 via 10.0.0.1");
        assert_eq!(shown("10.0.0.1", &[]), "unreadable via 10.0.0.1");
        assert_eq!(Client::default().to_string(), "unknown");
    }
}
