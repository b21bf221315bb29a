//! ACME HTTP-01 challenges: `GET /.well-known/acme-challenge/<token>` on plain HTTP is
//! answered from `acme.challenge-dir`, where `berth-acme` writes the key authorizations.
//! On an edge of several (no shared challenge directory) a token with no file is answered
//! statelessly, `<token>.<thumbprint>`, from the ACME account's thumbprint
//! (`acme.account-thumbprint`, or the one the certificate feed carries): a key authorization
//! is the token and that thumbprint, whichever edge the CA reaches.
//!
//! Phase: `request_filter`, ahead of every route's chain (so before HTTPS redirects and
//! auth) and for any host, routed or not — a certificate is often wanted before its route
//! is. Not on HTTPS (HTTP-01 is plain HTTP by definition) and not for a route in `nohttp`
//! mode, which refuses plain HTTP altogether. Only base64url tokens are looked up; anything
//! else (`..`, `/`, `%2e`, an empty token) is a 404 without touching the file system.
//!
//! ```toml
//! [acme]
//! challenge-dir = "/var/lib/berth/challenges"
//! account-thumbprint = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"   # optional
//! ```

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use pingora_error::Result;
use pingora_proxy::Session;

use berth_core::contract::{ChallengeDir, CHALLENGE_PREFIX};

use crate::plugin::{Flow, Page, Plugin, Reply, RequestCtx, Scheme};
use berth_core::route::HttpsMode;

/// Longest key authorization served (a real one is under 100 bytes).
const MAX_KEY_AUTHORIZATION: u64 = 4096;

/// The ACME account's thumbprint, when an edge knows it; replaced whole when it changes.
pub type SharedThumbprint = Arc<ArcSwapOption<String>>;

/// Serves challenge files from a directory, else stateless answers from the thumbprint.
#[derive(Debug, Clone)]
pub struct AcmeChallenge {
    dir: ChallengeDir,
    thumbprint: SharedThumbprint,
}

impl AcmeChallenge {
    /// Serves `<challenge-dir>/.well-known/acme-challenge/<token>`, and `<token>.<thumbprint>`
    /// for a token without a file while `thumbprint` holds one.
    pub fn new(challenge_dir: ChallengeDir, thumbprint: SharedThumbprint) -> AcmeChallenge {
        AcmeChallenge {
            dir: challenge_dir,
            thumbprint,
        }
    }

    /// The answer for a challenge path (`None`: not a challenge request at all).
    pub async fn answer(&self, path: &str) -> Option<Reply> {
        let token = path.strip_prefix(CHALLENGE_PREFIX)?;
        let Some(file) = self.dir.token(token) else {
            return Some(not_found());
        };
        let small = tokio::fs::metadata(&file)
            .await
            .is_ok_and(|m| m.is_file() && m.len() <= MAX_KEY_AUTHORIZATION);
        if !small {
            return Some(self.stateless(token));
        }
        match tokio::fs::read(&file).await {
            Ok(body) => Some(Reply {
                status: StatusCode::OK,
                headers: Vec::new(),
                body: Bytes::from(body),
                page: Page::Status,
            }),
            Err(_) => Some(not_found()),
        }
    }
}

impl AcmeChallenge {
    /// `<token>.<thumbprint>` when the thumbprint is known, else a 404.
    fn stateless(&self, token: &str) -> Reply {
        match self.thumbprint.load().as_deref() {
            Some(thumbprint) => Reply {
                status: StatusCode::OK,
                headers: Vec::new(),
                body: Bytes::from(format!("{token}.{thumbprint}")),
                page: Page::Status,
            },
            None => not_found(),
        }
    }
}

fn not_found() -> Reply {
    Reply::text(StatusCode::NOT_FOUND, "no such challenge")
}

#[async_trait]
impl Plugin for AcmeChallenge {
    fn name(&self) -> &'static str {
        "acme-challenge"
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Flow> {
        if ctx.downstream.scheme != Scheme::Http {
            return Ok(Flow::Continue);
        }
        if let Some(route) = &ctx.route {
            if route.spec.settings.https == HttpsMode::NoHttp {
                return Ok(Flow::Continue);
            }
        }
        let method = &session.req_header().method;
        if method != http::Method::GET && method != http::Method::HEAD {
            return Ok(Flow::Continue);
        }
        let path = session.req_header().uri.path().to_string();
        // Replies are text/plain, which is what a key authorization is.
        Ok(match self.answer(&path).await {
            Some(reply) => Flow::Respond(reply),
            None => Flow::Continue,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_tokens_and_nothing_else() {
        let root = std::env::temp_dir().join(format!("berth-challenge-{}", std::process::id()));
        let dir = root.join(".well-known/acme-challenge");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("tok_EN-1"), "tok_EN-1.thumbprint").expect("write");
        std::fs::write(root.join("secret"), "do not serve").expect("write");
        let thumbprint = SharedThumbprint::default();
        let plugin = AcmeChallenge::new(ChallengeDir::new(&root), thumbprint.clone());
        let ok = plugin.answer("/.well-known/acme-challenge/tok_EN-1").await;
        assert_eq!(
            ok.map(|r| (r.status, r.body)),
            Some((StatusCode::OK, Bytes::from("tok_EN-1.thumbprint")))
        );
        for path in [
            "/.well-known/acme-challenge/missing",
            "/.well-known/acme-challenge/../../secret",
            "/.well-known/acme-challenge/%2e%2e%2fsecret",
            "/.well-known/acme-challenge/",
        ] {
            let r = plugin.answer(path).await.map(|r| r.status);
            assert_eq!(r, Some(StatusCode::NOT_FOUND), "{path}");
        }
        assert!(plugin.answer("/other").await.is_none());

        // Stateless: a token without a file is answered from the thumbprint; the file still
        // wins, and invalid tokens stay 404s.
        thumbprint.store(Some(Arc::new("THUMB".to_string())));
        let reply = |path: &'static str| {
            let plugin = plugin.clone();
            async move { plugin.answer(path).await.map(|r| (r.status, r.body)) }
        };
        assert_eq!(
            reply("/.well-known/acme-challenge/other_tok").await,
            Some((StatusCode::OK, Bytes::from("other_tok.THUMB")))
        );
        assert_eq!(
            reply("/.well-known/acme-challenge/tok_EN-1").await,
            Some((StatusCode::OK, Bytes::from("tok_EN-1.thumbprint")))
        );
        for path in [
            "/.well-known/acme-challenge/../../secret",
            "/.well-known/acme-challenge/%2e%2e",
            "/.well-known/acme-challenge/",
        ] {
            let r = plugin.answer(path).await.map(|r| r.status);
            assert_eq!(r, Some(StatusCode::NOT_FOUND), "{path}");
        }
        let _ = std::fs::remove_dir_all(root);
    }
}
