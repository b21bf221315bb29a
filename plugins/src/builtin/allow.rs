//! Client allowlist (`allow`, or nginx-proxy's `NETWORK_ACCESS=internal`): requests from
//! addresses outside the listed CIDRs get 403.
//!
//! Phase: `request_filter`. The client is the TCP peer; when the peer is one of
//! `forwarded.trusted-proxies`, the client is the last address in its `X-Forwarded-For` (the
//! one that proxy saw: `203.0.113.7`, `203.0.113.7:5123`, `2001:db8::7`, `[2001:db8::7]` or
//! `[2001:db8::7]:443`), so a trusted load balancer in front of berth does not open the route
//! to everyone. A trusted proxy that names no usable client is refused: judging the request
//! by the proxy's own address would let everyone in whenever the proxy sits inside the
//! allowed range.
//!
//! ```toml
//! [[route]]
//! host = "registry.internal.example.com"
//! upstreams = ["127.0.0.1:5000"]
//! allow = ["10.0.0.0/8", "192.168.0.0/16"]
//! ```

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use http::StatusCode;
use ipnet::IpNet;
use pingora_error::Result;
use pingora_proxy::Session;

use crate::plugin::{Flow, Plugin, Reply, RequestCtx};

/// Refuses clients outside a set of networks.
#[derive(Debug)]
pub struct Allow {
    allowed: Vec<IpNet>,
    trusted: Arc<[IpNet]>,
}

impl Allow {
    /// Allows `allowed`; `trusted` are the peers whose `X-Forwarded-For` names the client.
    pub fn new(allowed: Vec<IpNet>, trusted: Arc<[IpNet]>) -> Allow {
        Allow { allowed, trusted }
    }

    /// Whether a request from `peer` with these `X-Forwarded-For` values may pass.
    pub fn permits<'a>(
        &self,
        peer: Option<IpAddr>,
        forwarded_for: impl Iterator<Item = &'a str>,
    ) -> bool {
        let client = if super::forwarded::trusted_peer(&self.trusted, peer) {
            super::forwarded::effective_client(forwarded_for)
        } else {
            peer
        };
        client.is_some_and(|ip| self.allowed.iter().any(|n| n.contains(&ip)))
    }
}

#[async_trait]
impl Plugin for Allow {
    fn name(&self) -> &'static str {
        "allow"
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Flow> {
        // A value that is not text at all makes the whole header unusable, rather than being
        // skipped: the address behind it could be the one a proxy appended.
        let xff: Option<Vec<&str>> = session
            .req_header()
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().ok())
            .collect();
        let unreadable = ["(unreadable)"];
        let values = match &xff {
            Some(v) => v.as_slice(),
            None => &unreadable[..],
        };
        Ok(
            if self.permits(ctx.downstream.client_ip, values.iter().copied()) {
                Flow::Continue
            } else {
                Flow::Respond(Reply::text(
                    StatusCode::FORBIDDEN,
                    "this route does not accept requests from your address",
                ))
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().expect(s)).collect()
    }

    #[test]
    fn peers_inside_and_outside() {
        let allow = Allow::new(
            nets(&berth_core::labels::INTERNAL_NETWORKS),
            Arc::from(Vec::new()),
        );
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect(s));
        assert!(allow.permits(ip("10.1.2.3"), std::iter::empty()));
        assert!(allow.permits(ip("::1"), std::iter::empty()));
        assert!(allow.permits(ip("172.31.0.1"), std::iter::empty()));
        assert!(!allow.permits(ip("172.32.0.1"), std::iter::empty()));
        assert!(!allow.permits(ip("203.0.113.9"), std::iter::empty()));
        assert!(!allow.permits(None, std::iter::empty()));
        // An untrusted peer cannot claim to be internal.
        assert!(!allow.permits(ip("203.0.113.9"), ["10.0.0.1"].into_iter()));
    }

    #[test]
    fn trusted_proxy_speaks_for_the_client() {
        let allow = Allow::new(nets(&["192.168.0.0/16"]), Arc::from(nets(&["10.0.0.1/32"])));
        let lb = Some("10.0.0.1".parse::<IpAddr>().expect("ip"));
        assert!(allow.permits(lb, ["203.0.113.1, 192.168.1.5"].into_iter()));
        assert!(!allow.permits(lb, ["192.168.1.5", "203.0.113.1"].into_iter()));
        // Proxies' ways of writing the client.
        assert!(allow.permits(lb, ["192.168.1.5:5123"].into_iter()));
        let v6 = Allow::new(nets(&["fd00::/8"]), Arc::from(nets(&["10.0.0.1/32"])));
        for form in ["fd00::7", "[fd00::7]", "[fd00::7]:443", " fd00::7 "] {
            assert!(v6.permits(lb, [form].into_iter()), "{form}");
        }
        assert!(!v6.permits(lb, ["[fd00::7"].into_iter()));
    }

    #[test]
    fn a_trusted_proxy_that_names_no_client_is_refused_even_inside_the_range() {
        // The proxy itself is inside the allowed range: judging by its address would let
        // everyone in.
        let allow = Allow::new(nets(&["10.0.0.0/8"]), Arc::from(nets(&["10.0.0.1/32"])));
        let lb = Some("10.0.0.1".parse::<IpAddr>().expect("ip"));
        assert!(allow.permits(lb, ["10.9.9.9"].into_iter()));
        assert!(!allow.permits(lb, std::iter::empty()));
        assert!(!allow.permits(lb, ["garbage"].into_iter()));
        assert!(!allow.permits(lb, ["unknown"].into_iter()));
        assert!(!allow.permits(lb, [""].into_iter()));
        // An untrusted peer inside the range is judged by its own address, as always.
        let peer = Some("10.0.0.2".parse::<IpAddr>().expect("ip"));
        assert!(allow.permits(peer, std::iter::empty()));
    }
}
