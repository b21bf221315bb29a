//! Client allowlist (`allow`, or nginx-proxy's `NETWORK_ACCESS=internal`): requests from
//! addresses outside the listed CIDRs get 403.
//!
//! Phase: `request_filter`. The client is the effective address ([`crate::client`]): the
//! TCP peer, or the address a peer in `forwarded.trusted-proxies` names in `X-Forwarded-For`,
//! so a trusted load balancer in front of berth does not open the route to everyone. An
//! unreadable client (a trusted proxy that names no usable address) is refused: judging the
//! request by the proxy's own address would let everyone in whenever the proxy sits inside
//! the allowed range.
//!
//! ```toml
//! [[route]]
//! host = "registry.internal.example.com"
//! upstreams = ["127.0.0.1:5000"]
//! allow = ["10.0.0.0/8", "192.168.0.0/16"]
//! ```

use async_trait::async_trait;
use http::StatusCode;
use ipnet::IpNet;
use pingora_error::Result;
use pingora_proxy::Session;

use crate::client::Client;
use crate::plugin::{Flow, Plugin, Reply, RequestCtx};

/// Refuses clients outside a set of networks.
#[derive(Debug)]
pub struct Allow {
    allowed: Vec<IpNet>,
}

impl Allow {
    /// Allows clients inside `allowed`.
    pub fn new(allowed: Vec<IpNet>) -> Allow {
        Allow { allowed }
    }

    /// Whether a request from `client` may pass: its address is known and allowed.
    pub fn permits(&self, client: &Client) -> bool {
        client
            .address
            .is_some_and(|ip| self.allowed.iter().any(|n| n.contains(&ip)))
    }
}

#[async_trait]
impl Plugin for Allow {
    fn name(&self) -> &'static str {
        "allow"
    }

    async fn request_filter(&self, _session: &mut Session, ctx: &mut RequestCtx) -> Result<Flow> {
        Ok(if self.permits(&ctx.downstream.client) {
            Flow::Continue
        } else {
            Flow::Respond(Reply::text(
                StatusCode::FORBIDDEN,
                "this route does not accept requests from your address",
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::client_of;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().expect(s)).collect()
    }

    #[test]
    fn peers_inside_and_outside() {
        let allow = Allow::new(nets(&berth_core::labels::INTERNAL_NETWORKS));
        let permits = |peer: Option<&str>, xff: &[&str]| allow.permits(&client_of(&[], peer, xff));
        assert!(permits(Some("10.1.2.3"), &[]));
        assert!(permits(Some("::1"), &[]));
        assert!(permits(Some("172.31.0.1"), &[]));
        assert!(!permits(Some("172.32.0.1"), &[]));
        assert!(!permits(Some("203.0.113.9"), &[]));
        assert!(!permits(None, &[]));
        // An untrusted peer cannot claim to be internal.
        assert!(!permits(Some("203.0.113.9"), &["10.0.0.1"]));
    }

    #[test]
    fn a_trusted_proxy_speaks_for_the_client_and_one_that_names_nobody_is_refused() {
        // The proxy itself is inside the allowed range: judging by its address would let
        // everyone in.
        let allow = Allow::new(nets(&["10.0.0.0/8"]));
        let permits =
            |peer: &str, xff: &[&str]| allow.permits(&client_of(&["10.0.0.1/32"], Some(peer), xff));
        assert!(permits("10.0.0.1", &["203.0.113.1, 10.9.9.9"]));
        assert!(!permits("10.0.0.1", &["10.9.9.9", "203.0.113.1"]));
        assert!(!permits("10.0.0.1", &[]));
        assert!(!permits("10.0.0.1", &["unknown"]));
        // An untrusted peer inside the range is judged by its own address, as always.
        assert!(permits("10.0.0.2", &[]));
        assert!(permits("10.0.0.2", &["203.0.113.1"]));
    }
}
