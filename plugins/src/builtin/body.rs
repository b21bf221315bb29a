//! Request body limit (`max-body`). Bodies are always streamed, never buffered whole; this
//! plugin only refuses bodies that are larger than the route allows, with 413.
//!
//! Phases: `request_filter` (a declared `Content-Length` over the limit is refused before
//! anything goes upstream) and `request_body_filter` (a chunked body is refused as soon as
//! the bytes received cross the limit).
//!
//! ```toml
//! [[route]]
//! host = "uploads.example.com"
//! upstreams = ["127.0.0.1:8000"]
//! max-body = "100MiB"   # "0" (the default) = unlimited
//! ```

use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use pingora_error::Result;
use pingora_proxy::Session;

use crate::plugin::{Flow, Plugin, Reply, RequestCtx};

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
