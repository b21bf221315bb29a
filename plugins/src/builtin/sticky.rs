//! `lb = "cookie"`: sticky sessions. The first answer to a client sets a cookie naming the
//! upstream that served it; later requests carrying it go to that upstream while the route
//! has it (else to the next in turn, and the cookie is set anew).
//! Phases: `request_filter` (reads the cookie), `response_filter` (sets it).
//!
//! The cookie (`berth_upstream`) holds no address: it is an HMAC, under a key berth draws at
//! start, of the route's host, path and the upstream's address, so it names no address and a
//! client returns only to upstreams it was sent to (one that collects the cookies of several
//! answers can choose among those, as with any sticky cookie). It is `HttpOnly`,
//! `SameSite=Lax`, `Path=/`, and `Secure` on HTTPS (a `Secure` cookie set over plain HTTP
//! would be dropped by browsers); it is never sent on to the upstream. A restart draws a new
//! key: clients are balanced afresh once.
//! Phases: also `upstream_request_filter` (the cookie is removed).

use std::net::SocketAddr;
use std::sync::OnceLock;

use async_trait::async_trait;
use base64::Engine as _;
use http::header::{COOKIE, SET_COOKIE};
use http::HeaderValue;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use berth_core::route::{HostPattern, Upstream};

use crate::plugin::{Flow, Plugin, RequestCtx, Scheme};

/// The cookie's name.
pub const COOKIE_NAME: &str = "berth_upstream";

/// Sets and reads the sticky cookie of one route.
#[derive(Debug)]
pub struct Sticky {
    /// Each upstream's address and cookie value.
    upstreams: Vec<(SocketAddr, String)>,
}

/// The upstream index the request's cookie named (a slot of [`RequestCtx::slots`]).
#[derive(Clone, Copy)]
struct Named(usize);

fn key() -> &'static ring::hmac::Key {
    static KEY: OnceLock<ring::hmac::Key> = OnceLock::new();
    KEY.get_or_init(|| {
        let rng = ring::rand::SystemRandom::new();
        ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
            // The system's generator failed (it does not on Linux); the standard library's
            // randomly seeded hasher keys stand in, never anything a client could compute.
            use std::hash::{BuildHasher, Hasher};
            let mut seed = Vec::new();
            for _ in 0..4 {
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u64(0);
                seed.extend_from_slice(&h.finish().to_le_bytes());
            }
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &seed)
        })
    })
}

impl Sticky {
    /// The cookie of the route for `host` and `path` over `upstreams`.
    pub fn new(host: &HostPattern, path: &str, upstreams: &[Upstream]) -> Sticky {
        let upstreams = upstreams
            .iter()
            .map(|u| {
                let text = format!("{host}\0{path}\0{}", u.addr);
                let tag = ring::hmac::sign(key(), text.as_bytes());
                let value =
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag.as_ref()[..16]);
                (u.addr, value)
            })
            .collect();
        Sticky { upstreams }
    }

    /// The upstream index the request's sticky cookie named, if it named one of the route's.
    pub fn named(ctx: &RequestCtx) -> Option<usize> {
        ctx.slots.get::<Named>().map(|n| n.0)
    }

    /// The index of the upstream whose value `cookies` (a `Cookie` header) carries.
    fn find(&self, cookies: &[u8]) -> Option<usize> {
        let text = std::str::from_utf8(cookies).ok()?;
        text.split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(name, _)| *name == COOKIE_NAME)
            .find_map(|(_, value)| self.upstreams.iter().position(|(_, v)| v == value.trim()))
    }
}

#[async_trait]
impl Plugin for Sticky {
    fn name(&self) -> &'static str {
        "sticky"
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Flow> {
        let named = session
            .req_header()
            .headers
            .get_all(COOKIE)
            .iter()
            .find_map(|v| self.find(v.as_bytes()));
        if let Some(i) = named {
            ctx.slots.insert(Named(i));
        }
        Ok(Flow::Continue)
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        // The cookie is berth's: the upstream is not sent it (other cookies pass as they were).
        let values: Vec<HeaderValue> = upstream_request
            .headers
            .get_all(COOKIE)
            .iter()
            .cloned()
            .collect();
        if !values
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.contains(COOKIE_NAME)))
        {
            return Ok(());
        }
        upstream_request.remove_header(&COOKIE);
        for value in values {
            let Ok(text) = value.to_str() else {
                upstream_request.append_header(COOKIE, value)?;
                continue;
            };
            let kept: Vec<&str> = text
                .split(';')
                .map(str::trim)
                .filter(|pair| {
                    !pair.is_empty()
                        && pair.split_once('=').map_or(*pair, |(n, _)| n).trim() != COOKIE_NAME
                })
                .collect();
            if !kept.is_empty() {
                upstream_request.append_header(COOKIE, kept.join("; "))?;
            }
        }
        Ok(())
    }

    fn response_filter(
        &self,
        _session: &Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Not on berth's own answers, nor on an interim 1xx (the final answer carries it).
        if ctx.generated || response.status.is_informational() {
            return Ok(());
        }
        let Some(served) = ctx
            .upstream
            .and_then(|addr| self.upstreams.iter().position(|(a, _)| *a == addr))
        else {
            return Ok(());
        };
        if Sticky::named(ctx) == Some(served) {
            return Ok(());
        }
        let secure = if ctx.downstream.scheme == Scheme::Https {
            "; Secure"
        } else {
            ""
        };
        // Path=/: a route's path is a prefix (`/app` also serves `/apple`), which a cookie
        // path is not; the value is bound to its route by the HMAC.
        let cookie = format!(
            "{COOKIE_NAME}={}; Path=/; HttpOnly; SameSite=Lax{secure}",
            self.upstreams[served].1
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            response.append_header(SET_COOKIE, v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_names_an_upstream_of_its_own_route_only() {
        let ups: Vec<Upstream> = ["10.0.0.1:80", "10.0.0.2:80"]
            .iter()
            .map(|a| Upstream {
                addr: a.parse().unwrap_or_else(|e| panic!("{e}")),
                container: None,
            })
            .collect();
        let host = HostPattern::parse("a.test").unwrap_or_else(|e| panic!("{e}"));
        let other = HostPattern::parse("b.test").unwrap_or_else(|e| panic!("{e}"));
        let a = Sticky::new(&host, "/", &ups);
        let b = Sticky::new(&other, "/", &ups);
        let second = &a.upstreams[1].1;
        assert_eq!(
            a.find(format!("x=1; {COOKIE_NAME}={second}").as_bytes()),
            Some(1)
        );
        assert_eq!(
            a.find(format!("{COOKIE_NAME}={}", a.upstreams[0].1).as_bytes()),
            Some(0)
        );
        // Another route's value, a forged one, an address: nothing.
        assert_eq!(
            a.find(format!("{COOKIE_NAME}={}", b.upstreams[1].1).as_bytes()),
            None
        );
        assert_eq!(
            a.find(format!("{COOKIE_NAME}=10.0.0.2:80").as_bytes()),
            None
        );
        assert_eq!(a.find(format!("{COOKIE_NAME}=1").as_bytes()), None);
        let other_path = Sticky::new(&host, "/app", &ups);
        let elsewhere = format!("{COOKIE_NAME}={}", other_path.upstreams[1].1);
        assert_eq!(a.find(elsewhere.as_bytes()), None);
        assert_ne!(a.upstreams[0].1, a.upstreams[1].1);
    }
}
