//! Request bodies: their size (`max-body`) and their pace (`min-body-rate`). Bodies are always
//! streamed, never buffered whole; these steps only refuse what the route does not allow.
//!
//! [`BodyLimit`] — phases `request_filter` (a declared `Content-Length` over the limit is
//! refused with 413 before anything goes upstream) and `request_body_filter` (a chunked body
//! is refused as soon as the bytes received cross the limit).
//!
//! [`BodyRate`] — phases `request_filter` and `request_body_filter`: from its first byte, a
//! body must arrive within a grace of 20 s plus one second per `min-body-rate` bytes received
//! (Apache's `mod_reqtimeout` rule), so a client that drips its body a byte at a time cannot
//! hold an upstream connection for long; the wait for each read is cut to what is left, so
//! silence is cut too. The first byte is waited for at most the grace from the request head
//! — reads that bring no body byte (a chunk-size line sent a character at a time) do not
//! restart it — or [`EXPECT_GRACE`] when the client sent `Expect: 100-continue`, which waits
//! for the upstream's answer first. A slower body gets 408 and its upstream connection is
//! closed.
//!
//! ```toml
//! [[route]]
//! host = "uploads.example.com"
//! upstreams = ["127.0.0.1:8000"]
//! max-body = "100MiB"        # "0" (the default) = unlimited
//! min-body-rate = "500B/s"   # the default outside the registry profile; "0" = no minimum
//! ```

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use pingora_error::Result;
use pingora_proxy::Session;

use crate::plugin::{Flow, Plugin, Reply, RequestCtx};

/// How long a client that sent `Expect: 100-continue` may take to its first body byte: it
/// waits for the upstream's `100 Continue` (Go's and Node's servers send it when the handler
/// first reads the body), so it gets longer than the grace, but never longer than this.
pub(crate) const EXPECT_GRACE: Duration = Duration::from_secs(60);

/// Refuses request bodies larger than `max` bytes.
#[derive(Debug)]
pub struct BodyLimit {
    max: u64,
}

impl BodyLimit {
    /// A limit of `max` bytes (callers leave the plugin out for "unlimited").
    pub fn new(max: u64) -> BodyLimit {
        BodyLimit { max }
    }

    fn too_large(&self) -> Flow {
        Flow::Respond(Reply::text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "request body larger than this route's limit of {} bytes",
                self.max
            ),
        ))
    }
}

#[async_trait]
impl Plugin for BodyLimit {
    fn name(&self) -> &'static str {
        "body-limit"
    }

    async fn request_filter(&self, session: &mut Session, _ctx: &mut RequestCtx) -> Result<Flow> {
        let declared = session
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        Ok(match declared {
            Some(len) if len > self.max => self.too_large(),
            _ => Flow::Continue,
        })
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Flow> {
        Ok(if ctx.body_bytes > self.max {
            self.too_large()
        } else {
            Flow::Continue
        })
    }
}

/// Refuses request bodies that arrive slower than a minimum average rate once a grace period
/// is over.
#[derive(Debug)]
pub struct BodyRate {
    /// Bytes a second, more than 0.
    rate: u64,
    grace: Duration,
    /// The route's `read-timeout`, which a read never waits longer than.
    read: Option<Duration>,
}

impl BodyRate {
    /// At least `rate` bytes a second (callers leave the plugin out for 0) once `grace` is
    /// over; no read waits longer than `read_timeout` (0 = no limit of its own).
    pub fn new(rate: u64, grace: Duration, read_timeout: Duration) -> BodyRate {
        BodyRate {
            rate: rate.max(1),
            grace,
            read: (!read_timeout.is_zero()).then_some(read_timeout),
        }
    }

    /// How long a body that has brought `bytes` may have taken, `grace` being the part
    /// that does not depend on the bytes.
    fn allowed(&self, grace: Duration, bytes: u64) -> Duration {
        grace + Duration::from_secs_f64(bytes as f64 / self.rate as f64)
    }

    /// How long the next read may wait, `elapsed` into a body that has brought `bytes`;
    /// `None` when the body is already too slow.
    fn next_wait(&self, elapsed: Duration, bytes: u64) -> Option<Duration> {
        self.wait_with(self.grace, elapsed, bytes)
    }

    fn wait_with(&self, grace: Duration, elapsed: Duration, bytes: u64) -> Option<Duration> {
        let left = self.allowed(grace, bytes).checked_sub(elapsed)?;
        Some(self.read.map_or(left, |read| read.min(left)))
    }

    /// How long a request may wait for its body's first byte: the grace, or
    /// [`EXPECT_GRACE`] (when longer) for a client waiting on `100 Continue`.
    fn first_byte_grace(&self, session: &Session) -> Duration {
        let expects_continue = session
            .req_header()
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if expects_continue {
            self.grace.max(EXPECT_GRACE)
        } else {
            self.grace
        }
    }

    fn too_slow(&self) -> Flow {
        Flow::Respond(Reply::text(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "request body arrived slower than this route's minimum of {} bytes a second",
                self.rate
            ),
        ))
    }
}

#[async_trait]
impl Plugin for BodyRate {
    fn name(&self) -> &'static str {
        "body-rate"
    }

    async fn request_filter(&self, session: &mut Session, _ctx: &mut RequestCtx) -> Result<Flow> {
        // Runs after the timeouts step: the first body read waits at most the first byte's
        // grace, counted from when every request filter has passed (`body_wait_began`).
        if let Some(wait) = self.wait_with(self.first_byte_grace(session), Duration::ZERO, 0) {
            session.set_read_timeout(Some(wait));
        }
        Ok(Flow::Continue)
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Flow> {
        if end_of_stream {
            return Ok(Flow::Continue);
        }
        // Before the first byte, the clock runs from the request head: reads that bring no
        // byte (part of a chunk-size line) only shorten the next wait.
        let wait = match (ctx.body_started, ctx.body_wait_began) {
            (Some(started), _) => self.next_wait(started.elapsed(), ctx.body_bytes),
            (None, Some(began)) => {
                self.wait_with(self.first_byte_grace(session), began.elapsed(), 0)
            }
            (None, None) => return Ok(Flow::Continue),
        };
        Ok(match wait {
            Some(wait) => {
                session.set_read_timeout(Some(wait));
                Flow::Continue
            }
            None => self.too_slow(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_may_take_the_grace_plus_a_second_per_rate_bytes() {
        let rate = BodyRate::new(500, Duration::from_secs(20), Duration::from_secs(900));
        let s = Duration::from_secs;
        // Nothing yet: the grace alone.
        assert_eq!(rate.next_wait(s(0), 0), Some(s(20)));
        assert_eq!(rate.next_wait(s(19), 0), Some(s(1)));
        assert_eq!(rate.next_wait(s(21), 0), None);
        // A byte every 3 s is far below 500 B/s: cut once the grace is over.
        assert_eq!(rate.next_wait(s(21), 7), None);
        // 500 B/s exactly keeps the grace ahead of it for ever.
        assert_eq!(rate.next_wait(s(100), 50_000), Some(s(20)));
        // A fast body: the read timeout still bounds a single wait.
        let short = BodyRate::new(500, Duration::from_secs(20), Duration::from_secs(5));
        assert_eq!(short.next_wait(s(0), 1 << 20), Some(s(5)));
        let unlimited = BodyRate::new(500, Duration::from_secs(20), Duration::ZERO);
        assert_eq!(unlimited.next_wait(s(0), 0), Some(s(20)));
        // Before the first byte, a client waiting on `100 Continue` has EXPECT_GRACE; the
        // route's read-timeout still bounds each wait.
        assert_eq!(rate.wait_with(EXPECT_GRACE, s(30), 0), Some(s(30)));
        assert_eq!(rate.wait_with(EXPECT_GRACE, s(61), 0), None);
        assert_eq!(short.wait_with(EXPECT_GRACE, s(0), 0), Some(s(5)));
    }
}
