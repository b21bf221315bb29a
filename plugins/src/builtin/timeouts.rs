//! Per-route timeouts, applied to both sides of the proxy.
//!
//! Phases: `request_filter` sets the client connection's read and write timeouts (Pingora's
//! HTTP/1 default of 60 s would cut a client that pauses mid-layer); `upstream_peer` sets the
//! upstream connect, read and write timeouts. A read timeout is the longest *idle* time
//! between two reads, never a deadline for the whole request: an upload that keeps flowing
//! for hours is never cut. An upstream that stays silent longer than `read-timeout` gives the
//! client 504. A value of `0` means no timeout.
//!
//! ```toml
//! [defaults]
//! connect-timeout = "10s"
//! read-timeout = "900s"
//! write-timeout = "900s"
//! ```

use std::time::Duration;

use async_trait::async_trait;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_proxy::Session;

use crate::plugin::{Flow, Plugin, RequestCtx};
use berth_core::route::RouteSettings;

/// Applies a route's connect / read / write timeouts.
#[derive(Debug)]
pub struct Timeouts {
    connect: Option<Duration>,
    read: Option<Duration>,
    write: Option<Duration>,
}

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

impl Timeouts {
    /// Takes the timeouts from a route's settings.
    pub fn new(settings: &RouteSettings) -> Timeouts {
        Timeouts {
            connect: nonzero(settings.connect_timeout),
            read: nonzero(settings.read_timeout),
            write: nonzero(settings.write_timeout),
        }
    }
}

#[async_trait]
impl Plugin for Timeouts {
    fn name(&self) -> &'static str {
        "timeouts"
    }

    async fn request_filter(&self, session: &mut Session, _ctx: &mut RequestCtx) -> Result<Flow> {
        session.set_read_timeout(self.read);
        session.set_write_timeout(self.write);
        Ok(Flow::Continue)
    }

    fn upstream_peer(&self, peer: &mut HttpPeer, _ctx: &RequestCtx) {
        peer.options.connection_timeout = self.connect;
        peer.options.read_timeout = self.read;
        peer.options.write_timeout = self.write;
    }
}
