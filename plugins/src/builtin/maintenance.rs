//! Maintenance (`maintenance = true`): requests are answered by berth instead of the upstream,
//! `503` with `Retry-After` and the operator's maintenance page ([`crate::pages`]). With
//! `maintenance-reads = true`, reads pass: `GET` and `HEAD`, and on the registry profile the
//! registry's reads (pulls, tags, the catalog, the API's version check `/v2/`).
//!
//! On the registry profile a refused write is a `405` with the registry's `UNSUPPORTED` error
//! and a message naming the maintenance, as the registry's own read-only mode answers: the
//! Docker CLI prints the message of a 4xx, never of a 5xx. Nothing of a refused request
//! reaches the registry, so a push is refused before it starts (its `POST`) or, if it was
//! under way when maintenance began, at its next request, with no manifest written.
//! Phases: `request_filter`.

use async_trait::async_trait;
use http::{HeaderValue, Method, StatusCode};
use pingora_error::Result;
use pingora_proxy::Session;

use berth_core::route::{access, Access, Action};

use crate::plugin::{Flow, Page, Plugin, Reply, RequestCtx};

/// How long clients are told to wait before trying again.
pub const RETRY_AFTER_SECS: u64 = 120;

/// Answers requests while the route is in maintenance.
#[derive(Debug)]
pub struct Maintenance {
    reads: bool,
    registry: bool,
}

impl Maintenance {
    /// Maintenance for a route; `reads`: let reads through; `registry`: the registry profile.
    pub fn new(reads: bool, registry: bool) -> Maintenance {
        Maintenance { reads, registry }
    }

    /// The answer to a request, unless it may pass; `sends` says the request carries a body
    /// or asks for an upgrade (then it is no read, whatever its method).
    fn refusal(
        &self,
        method: &Method,
        path_and_query: &str,
        host: &str,
        sends: bool,
    ) -> Option<Reply> {
        if !self.registry {
            let read = (*method == Method::GET || *method == Method::HEAD) && !sends;
            if self.reads && read {
                return None;
            }
            return Some(self.reply(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{host} is in maintenance; try again later"),
            ));
        }
        let read = !sends
            && match access(method.as_str(), path_and_query) {
                Access::Base | Access::Catalog => true,
                Access::Repository { action, .. } => action == Action::Pull,
                _ => false,
            };
        if self.reads && read {
            return None;
        }
        if self.reads {
            return Some(self.reply(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("{host} is in maintenance: pushes and deletes are refused until it ends; pulls work"),
            ));
        }
        Some(self.reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("{host} is in maintenance; try again later"),
        ))
    }

    fn reply(&self, status: StatusCode, detail: &str) -> Reply {
        let mut reply = Reply::text(status, detail);
        reply.page = Page::Maintenance;
        reply.headers.push((
            http::header::RETRY_AFTER,
            HeaderValue::from(RETRY_AFTER_SECS),
        ));
        reply
    }
}

#[async_trait]
impl Plugin for Maintenance {
    fn name(&self) -> &'static str {
        "maintenance"
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Flow> {
        let body = !session.as_downstream_mut().is_body_empty();
        let req = session.req_header();
        let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let sends = body
            || req.headers.contains_key(http::header::UPGRADE)
            || req.headers.contains_key(http::header::TRANSFER_ENCODING);
        Ok(match self.refusal(&req.method, target, &ctx.host, sends) {
            Some(reply) => Flow::Respond(reply),
            None => Flow::Continue,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_passes_and_what_is_refused() {
        let digest = "sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945";
        let manifest = "/v2/team/app/manifests/v1".to_string();
        let blob = format!("/v2/team/app/blobs/{digest}");
        let upload = "/v2/team/app/blobs/uploads/".to_string();
        let status = |m: &Maintenance, method: Method, path: &str| {
            m.refusal(&method, path, "r.test", false)
                .map(|r| r.status.as_u16())
        };
        let off_reads = Maintenance::new(false, true);
        let reads = Maintenance::new(true, true);
        let web = Maintenance::new(true, false);
        let web_all = Maintenance::new(false, false);
        assert_eq!(status(&off_reads, Method::GET, &manifest), Some(503));
        assert_eq!(status(&off_reads, Method::GET, "/v2/"), Some(503));
        assert_eq!(status(&reads, Method::GET, &manifest), None);
        assert_eq!(status(&reads, Method::HEAD, &blob), None);
        assert_eq!(status(&reads, Method::GET, "/v2/"), None);
        assert_eq!(status(&reads, Method::GET, "/v2/_catalog"), None);
        assert_eq!(status(&reads, Method::POST, &upload), Some(405));
        assert_eq!(status(&reads, Method::PUT, &manifest), Some(405));
        assert_eq!(status(&reads, Method::DELETE, &manifest), Some(405));
        // A GET that is not a registry read (an upload's status, an odd spelling) is no pull.
        assert_eq!(
            status(&reads, Method::GET, "/v2/team/app/blobs/uploads/x"),
            Some(405)
        );
        assert_eq!(
            status(&reads, Method::GET, "/v2/team/../app/manifests/v1"),
            Some(405)
        );
        assert_eq!(status(&web, Method::GET, "/"), None);
        assert_eq!(status(&web, Method::POST, "/form"), Some(503));
        assert_eq!(status(&web_all, Method::GET, "/"), Some(503));
        // A GET that carries a body or asks for an upgrade is no read.
        assert!(web.refusal(&Method::GET, "/form", "w.test", true).is_some());
        assert!(reads
            .refusal(&Method::GET, &manifest, "r.test", true)
            .is_some());
        let reply = reads
            .refusal(&Method::POST, &upload, "r.test", false)
            .unwrap_or_else(|| panic!("refused"));
        assert_eq!(reply.page, Page::Maintenance);
        assert!(reply
            .headers
            .iter()
            .any(|(n, v)| n == http::header::RETRY_AFTER && v == "120"));
    }
}
