//! Request rate limits (`rate-limit = "20r/s"`, `rate-burst`, label `berth.rate-limit`):
//! a client that sends more than the rate, beyond its burst, gets `429 Too Many Requests`
//! with `Retry-After`.
//!
//! Phase: `request_filter`, before auth: a client guessing passwords is slowed before a
//! bcrypt check runs for it. The ACME challenge step runs ahead of every chain and is never
//! limited.
//!
//! Who counts as one client: the client's address ([`crate::client`]: the peer, or the last
//! address of `X-Forwarded-For` when the peer is one of `forwarded.trusted-proxies`), and for
//! IPv6 its /64. An unreadable client (a trusted proxy that names nobody) counts for the
//! proxy: whatever such requests claim, they share one allowance. On a route with basic
//! auth, a request whose credentials were already verified (or that carries a valid registry
//! token of a user) counts for its user instead, so the users behind one NAT address each
//! have their own allowance; credentials that were never verified count for the address,
//! so guessing passwords is limited there.
//!
//! The arithmetic is governor's GCRA (a token bucket without a timer). Its state lives in a
//! fixed table of [`SLOTS`] cells per route, indexed by a keyed hash of the client (the key
//! is random per route): memory stays the same however many clients there are, and a
//! scanner with a million addresses shares the cells rather than growing the table. Two
//! clients in one cell share one allowance; with a few hundred active clients that happens
//! to a few of them, and only costs them part of their burst.
//!
//! ```toml
//! [[route]]
//! host = "auth.example.com"
//! upstreams = ["127.0.0.1:9000"]
//! rate-limit = "5r/s"
//! rate-burst = 10
//! ```

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::Quota;
use http::{HeaderName, HeaderValue, StatusCode};
use pingora_error::Result;
use pingora_proxy::Session;

use super::htpasswd::{parse_basic, HtpasswdFile};
use super::registry_token::{self, bearer_value, Bearer};
use crate::client::Client;
use crate::plugin::{Flow, Plugin, Reply, RequestCtx};
use berth_core::route::RateLimit;

/// Cells of rate state per rate-limited route (8 bytes each: 128 KiB).
pub(crate) const SLOTS: usize = 1 << 14;

/// Who a request is counted for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// The effective client address; for IPv6, its /64 (what one subscriber gets), so a
    /// client cannot take a fresh allowance with each of its addresses.
    Address(IpAddr),
    /// A user whose credentials were verified before.
    User(String),
    /// Neither is known (no peer address).
    Unknown,
}

/// A fixed table of GCRA states, one `u64` per cell (0: never used; otherwise the
/// theoretical arrival time plus one), addressed by cell index.
#[derive(Debug)]
pub(crate) struct Cells {
    cells: Box<[AtomicU64]>,
}

impl Cells {
    /// A table of `n` cells (at least one).
    pub(crate) fn new(n: usize) -> Cells {
        Cells {
            cells: (0..n.max(1)).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl StateStore for Cells {
    type Key = usize;

    fn measure_and_replace<T, F, E>(&self, key: &usize, f: F) -> std::result::Result<T, E>
    where
        F: Fn(Option<Nanos>) -> std::result::Result<(T, Nanos), E>,
    {
        let cell = &self.cells[*key % self.cells.len()];
        let mut seen = cell.load(Ordering::Acquire);
        loop {
            let previous = seen.checked_sub(1).map(Nanos::from);
            let (outcome, next) = f(previous)?;
            let stored = next.as_u64().saturating_add(1);
            match cell.compare_exchange_weak(seen, stored, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(outcome),
                Err(now) => seen = now,
            }
        }
    }
}

type Limiter = governor::RateLimiter<usize, Cells, DefaultClock, NoOpMiddleware>;

/// This step's slot in [`RequestCtx::slots`]: present when it refused the request.
#[derive(Debug, Clone, Copy)]
struct Refused;

/// The rate-limit step of a route.
pub struct RateLimiter {
    limit: RateLimit,
    limiter: Limiter,
    clock: DefaultClock,
    hasher: RandomState,
    cells: usize,
    users: Option<Arc<HtpasswdFile>>,
    token_secret: Option<[u8; 32]>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// Limits each client to `limit`; `users`: the route's htpasswd file, whose verified
    /// users count apart.
    pub fn new(limit: RateLimit, users: Option<Arc<HtpasswdFile>>) -> RateLimiter {
        RateLimiter::with_cells(limit, users, SLOTS)
    }

    /// Counts the users of valid registry tokens signed with `secret` apart too.
    pub fn with_token_secret(mut self, secret: Option<[u8; 32]>) -> RateLimiter {
        self.token_secret = secret;
        self
    }

    /// As [`RateLimiter::new`], with `cells` cells of state.
    pub fn with_cells(
        limit: RateLimit,
        users: Option<Arc<HtpasswdFile>>,
        cells: usize,
    ) -> RateLimiter {
        let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(limit.interval())
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        let clock = DefaultClock::default();
        let cells = cells.max(1);
        RateLimiter {
            limit,
            limiter: governor::RateLimiter::new(quota, Cells::new(cells), clock.clone()),
            clock,
            hasher: RandomState::new(),
            cells,
            users,
            token_secret: None,
        }
    }

    /// Who a request from `client` with these `Authorization` values counts for.
    pub fn key(&self, host: &str, client: &Client, authorization: &[&[u8]]) -> ClientKey {
        if let (Some(users), [value]) = (&self.users, authorization) {
            if let Some(user) = verified_user(users, self.token_secret.as_ref(), value, host) {
                return ClientKey::User(user);
            }
        }
        // An unreadable client counts for the proxy that sent it.
        client
            .address
            .or(client.peer)
            .map_or(ClientKey::Unknown, |ip| ClientKey::Address(network_of(ip)))
    }

    /// Whether this step refused the request (for `berth_rate_limited_total`).
    pub fn refused(ctx: &RequestCtx) -> bool {
        ctx.slots.get::<Refused>().is_some()
    }

    /// Counts one request for `key`: `Ok` when it may pass, else how long until it would.
    pub fn check(&self, key: &ClientKey) -> std::result::Result<(), std::time::Duration> {
        let cell = (self.hasher.hash_one(key) % self.cells as u64) as usize;
        self.limiter
            .check_key(&cell)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// The 429 reply: `Retry-After` in whole seconds, rounded up.
    fn too_many(wait: std::time::Duration) -> Reply {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut reply = Reply::text(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests from your address or user; slow down",
        );
        reply.headers.push((
            HeaderName::from_static("retry-after"),
            HeaderValue::from(seconds.max(1)),
        ));
        reply
    }
}

/// An IPv4 address as it is; an IPv6 address as its /64 (an IPv4-mapped one as IPv4).
fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// The user of an `Authorization` value whose credentials were verified before (a lookup,
/// never a bcrypt check), or of a valid registry token for `host`.
fn verified_user(
    users: &HtpasswdFile,
    token_secret: Option<&[u8; 32]>,
    value: &[u8],
    host: &str,
) -> Option<String> {
    if let (Some(secret), Some(token)) = (token_secret, bearer_value(value)) {
        let file = users.users();
        let key = registry_token::token_key(secret, file.entries_digest());
        return match registry_token::verify(&key, token, host, SystemTime::now()) {
            Some((Bearer::User(user), _)) if file.hash_of(&user).is_some() => Some(user),
            _ => None,
        };
    }
    let (user, password) = parse_basic(value)?;
    users.known(&user, &password).then_some(user)
}

#[async_trait]
impl Plugin for RateLimiter {
    fn name(&self) -> &'static str {
        "rate-limit"
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Flow> {
        let head = session.req_header();
        let authorization: Vec<&[u8]> = head
            .headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        let key = self.key(&ctx.host, &ctx.downstream.client, &authorization);
        match self.check(&key) {
            Ok(()) => Ok(Flow::Continue),
            Err(wait) => {
                ctx.slots.insert(Refused);
                Ok(Flow::Respond(RateLimiter::too_many(wait)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::client_of;
    use std::time::Duration;

    fn limit(rate: &str, burst: Option<u32>) -> RateLimit {
        RateLimit::parse(rate, burst).expect("rate")
    }

    fn addr(s: &str) -> ClientKey {
        ClientKey::Address(s.parse().expect("address"))
    }

    #[test]
    fn a_burst_then_refusals_with_the_wait() {
        let l = RateLimiter::new(limit("1r/m", Some(3)), None);
        let a = addr("192.0.2.1");
        for i in 0..3 {
            assert_eq!(l.check(&a), Ok(()), "request {i} is within the burst");
        }
        let wait = l.check(&a).expect_err("the fourth is over");
        assert!(
            wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        // Other clients have their own allowance (three of them: any one could share the
        // first one's cell, all three together practically never).
        let others = ["192.0.2.2", "192.0.2.3", "192.0.2.4"];
        assert!(others.iter().any(|o| l.check(&addr(o)).is_ok()));
        let reply = RateLimiter::too_many(Duration::from_millis(1500));
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            reply.headers[0],
            (
                HeaderName::from_static("retry-after"),
                HeaderValue::from(2u64)
            )
        );
        let reply = RateLimiter::too_many(Duration::from_millis(10));
        assert_eq!(
            reply.headers[0].1,
            HeaderValue::from(1u64),
            "never Retry-After: 0"
        );
    }

    #[test]
    fn the_allowance_comes_back_at_the_rate() {
        let l = RateLimiter::new(limit("50r/s", Some(1)), None);
        let a = addr("192.0.2.1");
        assert_eq!(l.check(&a), Ok(()));
        let wait = l.check(&a).expect_err("burst of one");
        assert!(wait <= Duration::from_millis(20), "{wait:?}");
        std::thread::sleep(wait + Duration::from_millis(2));
        assert_eq!(l.check(&a), Ok(()), "one request's allowance came back");
    }

    #[test]
    fn a_million_clients_fit_in_the_same_cells() {
        // Each of a million addresses gets its first request through or shares a cell
        // with others; the state is the same fixed table throughout.
        let l = RateLimiter::with_cells(limit("1r/h", Some(1)), None, 1024);
        let mut refused = 0;
        for i in 0..1_000_000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            if l.check(&ClientKey::Address(ip.into())).is_err() {
                refused += 1;
            }
        }
        // With 1024 cells and a burst of one an hour, all but the first in each cell wait.
        assert_eq!(refused, 1_000_000 - 1024);
    }

    #[test]
    fn who_a_request_counts_for() {
        let l = RateLimiter::new(limit("1r/s", None), None);
        let key = |peer: Option<&str>, xff: &[&str]| {
            l.key("h.test", &client_of(&["10.0.0.0/8"], peer, xff), &[])
        };
        assert_eq!(
            key(Some("10.1.1.1"), &["198.51.100.1, 198.51.100.7"]),
            addr("198.51.100.7"),
            "a trusted proxy names the client"
        );
        assert_eq!(
            key(Some("203.0.113.9"), &["198.51.100.7"]),
            addr("203.0.113.9"),
            "anyone else's X-Forwarded-For is ignored"
        );
        assert_eq!(
            key(Some("10.1.1.1"), &["garbage"]),
            addr("10.1.1.1"),
            "a trusted proxy naming nobody counts as itself"
        );
        assert_eq!(key(None, &[]), ClientKey::Unknown);
        // IPv6: one /64 is one client; an IPv4-mapped address is its IPv4 address.
        let v6 = |s: &str| key(Some(s), &[]);
        assert_eq!(v6("2001:db8:1:2::1"), v6("2001:db8:1:2:ffff:1:2:3"));
        assert_eq!(v6("2001:db8:1:2::1"), addr("2001:db8:1:2::"));
        assert_ne!(v6("2001:db8:1:2::1"), v6("2001:db8:1:3::1"));
        assert_eq!(v6("::ffff:192.0.2.7"), addr("192.0.2.7"));
    }

    #[tokio::test]
    async fn verified_users_and_token_holders_count_apart() {
        // `htpasswd -nbB alice secret` (cost 5).
        let line = "alice:$2y$05$1nL5FI/UUYxJTje7P22Sge0bXeZRJhcHOG1EkNC6BPEyU8hlr0nle\n";
        let dir = std::env::temp_dir().join(format!("berth-rl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("htpasswd");
        std::fs::write(&path, line).expect("write");
        let users = Arc::new(HtpasswdFile::open(&path));
        let secret = [5u8; 32];
        let l = RateLimiter::new(limit("1r/s", None), Some(users.clone()))
            .with_token_secret(Some(secret));
        let peer = client_of(&[], Some("192.0.2.9"), &[]);
        let key = |host: &str, auth: &[u8]| l.key(host, &peer, &[auth]);

        // Basic: the address until the password has been verified once, then the user.
        let basic = b"Basic YWxpY2U6c2VjcmV0"; // alice:secret
        assert_eq!(key("h.test", basic), addr("192.0.2.9"));
        assert!(users.verify("alice", b"secret").await);
        assert_eq!(key("h.test", basic), ClientKey::User("alice".into()));
        assert_eq!(
            key("h.test", b"Basic YWxpY2U6d3Jvbmc="),
            addr("192.0.2.9"),
            "alice:wrong"
        );

        // A registry token: its user on its own host, the address anywhere else.
        let signing = registry_token::token_key(&secret, users.users().entries_digest());
        let token = registry_token::mint(
            &signing,
            "h.test",
            Some("alice"),
            &Default::default(),
            SystemTime::now(),
        );
        let bearer = format!("Bearer {token}");
        assert_eq!(
            key("h.test", bearer.as_bytes()),
            ClientKey::User("alice".into())
        );
        assert_eq!(key("other.test", bearer.as_bytes()), addr("192.0.2.9"));
        let anonymous = registry_token::mint(
            &signing,
            "h.test",
            None,
            &Default::default(),
            SystemTime::now(),
        );
        assert_eq!(
            key("h.test", format!("Bearer {anonymous}").as_bytes()),
            addr("192.0.2.9")
        );
        let without = RateLimiter::new(limit("1r/s", None), Some(users));
        assert_eq!(
            without.key("h.test", &peer, &[bearer.as_bytes()]),
            addr("192.0.2.9"),
            "no tokens on the route, none counted"
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
