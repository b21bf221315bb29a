//! Who the client is, worked out once per request, before routing: the TCP peer, whether it
//! is one of `forwarded.trusted-proxies`, and the effective client address — the peer, or
//! for a trusted peer the last address of its `X-Forwarded-For` — or "unreadable".
//!
//! Every step that asks who the client is reads the one [`Client`] in
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

use arc_swap::ArcSwap;
use http::HeaderMap;
use ipnet::IpNet;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The peers whose forwarding headers are believed (`forwarded.trusted-proxies`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Arc<[IpNet]>);

/// The trusted proxies in force, swapped whole by a reload; each request reads them once.
pub type SharedTrust = Arc<ArcSwap<TrustedProxies>>;

impl TrustedProxies {
    /// Trusts peers inside `nets`.
    pub fn new(nets: impl Into<Arc<[IpNet]>>) -> TrustedProxies {
        TrustedProxies(nets.into())
    }

    /// Whether `peer` may speak for its client.
    pub fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|ip| self.0.iter().any(|net| net.contains(&ip)))
    }

    /// The client of a request from `peer` with these request headers.
    pub fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Client {
        let trusted = self.trusts(peer);
        let address = if trusted {
            forwarded_for_values(headers).and_then(|values| last_address(values.into_iter()))
        } else {
            peer
        };
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
    /// "unreadable": no peer address, or a trusted peer whose `X-Forwarded-For` is absent,
    /// not text, or ends in something that is not an address.
    pub address: Option<IpAddr>,
}

impl Client {
    /// The `X-Forwarded-For` berth sends on: a trusted peer's list (in `headers`) with the peer
    /// appended, or the peer alone — also when a value of the list is not text, since the
    /// address behind it could be the one a proxy appended.
    pub fn forwarded_for(&self, headers: &HeaderMap) -> String {
        let peer = self.peer_text();
        if !self.trusted {
            return peer;
        }
        match forwarded_for_values(headers) {
            Some(prior) if !prior.is_empty() => format!("{}, {peer}", prior.join(", ")),
            _ => peer,
        }
    }

    /// The address for `X-Real-IP`: the client's, or the peer's when it is unreadable.
    pub fn real_ip(&self) -> String {
        match self.address {
            Some(ip) => ip.to_string(),
            None => self.peer_text(),
        }
    }

    fn peer_text(&self) -> String {
        self.peer.map(|ip| ip.to_string()).unwrap_or_default()
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

/// Every `X-Forwarded-For` value, or `None` when one of them is not text (the whole header
/// is then unusable, rather than that value skipped: the address behind it could be the one
/// a proxy appended).
fn forwarded_for_values(headers: &HeaderMap) -> Option<Vec<&str>> {
    headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .map(|v| v.to_str().ok())
        .collect()
}

/// The last address of a list of `X-Forwarded-For` values, if it parses.
fn last_address<'a>(values: impl Iterator<Item = &'a str>) -> Option<IpAddr> {
    let last = values.flat_map(|v| v.split(',')).last()?;
    address(last)
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
            // A value that is not text makes the whole header unusable, even before a good
            // one: the bad one could hide the address a proxy appended.
            (lb, &[b"\xff", b"192.168.1.5"], true, None),
            (lb, &[b"192.168.1.5", b"\xff"], true, None),
            // No peer address at all: unreadable and untrusted.
            (None, &[b"192.168.1.5"], false, None),
        ];
        for (peer, xff, trusted, address) in cases {
            let client = t.client(*peer, &headers(xff));
            assert_eq!(
                client,
                Client {
                    peer: *peer,
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
        let h = headers(&[b"203.0.113.1", b"192.168.1.5"]);
        let lb = t.client(ip("10.0.0.1"), &h);
        assert_eq!(lb.forwarded_for(&h), "203.0.113.1, 192.168.1.5, 10.0.0.1");
        assert_eq!(lb.real_ip(), "192.168.1.5");
        let outsider = t.client(ip("203.0.113.9"), &h);
        assert_eq!(outsider.forwarded_for(&h), "203.0.113.9");
        assert_eq!(outsider.real_ip(), "203.0.113.9");
        // Unreadable: the peer alone, in both.
        let bad = headers(&[b"\xff", b"192.168.1.5"]);
        let lb = t.client(ip("10.0.0.1"), &bad);
        assert_eq!(lb.forwarded_for(&bad), "10.0.0.1");
        assert_eq!(lb.real_ip(), "10.0.0.1");
        let none = HeaderMap::new();
        assert_eq!(
            t.client(ip("10.0.0.1"), &none).forwarded_for(&none),
            "10.0.0.1"
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
