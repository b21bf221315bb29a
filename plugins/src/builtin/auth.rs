//! Basic auth from an htpasswd file (`auth.htpasswd` on a route, `berth.auth.htpasswd` on a
//! container): a request without valid credentials gets 401 with `WWW-Authenticate: Basic`.
//!
//! Phase: `request_filter`, after the HTTPS policy and the allowlist (a redirect or a 403
//! never asks for credentials) and after the ACME challenge step, which runs ahead of every
//! chain, so certificates are issued for protected hosts too. Under the registry profile the
//! 401 carries `Docker-Distribution-Api-Version` (added to every reply berth generates), which
//! is what `docker login` looks for.
//!
//! ```toml
//! [[route]]
//! host = "registry.example.com"
//! upstreams = ["127.0.0.1:5000"]
//! profile = "registry"
//! auth.htpasswd = "/etc/berth/htpasswd/registry"   # htpasswd -B entries only
//! auth.realm = "registry"                          # optional, default "berth"
//! auth.anonymous-read = true                       # pulls open, pushes need a user
//! ```
//!
//! Which requests go without credentials ([`OpenAccess`]): none by default; with
//! `auth.methods = ["POST", "PUT", ...]` those whose method is not listed; with
//! `auth.anonymous-read` (registry profile) registry reads, recognised only when spelled as
//! the registry API spells them. A request that carries credentials has them checked all
//! the same, so a wrong password is refused even where none is needed. With
//! `auth.anonymous-read` the route also speaks the registry token flow, so the Docker CLI
//! pulls without a login ([`super::registry_token`]).
//!
//! The users come from an htpasswd file ([`super::htpasswd`]), shared with the registry
//! tokens and the rate limiter, which key requests by the same users.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use async_trait::async_trait;
use http::{HeaderName, HeaderValue, StatusCode};
use pingora_error::Result;
use pingora_proxy::Session;

use super::client_cert::ClientCert;
use super::htpasswd::{parse_basic, HtpasswdFile};
use super::registry_token::{self, bearer_value, Bearer, TOKEN_PATH};
use super::watched::Watched;
use crate::plugin::{Flow, Plugin, Reply, RequestCtx};
use berth_core::logging::shown;
use berth_core::route::{access, Access, Action, Decision, Groups, OpenAccess, Rules, Scopes};

/// The longest user name a log line shows (a client may send any length).
const MAX_SHOWN_USER: usize = 128;

/// The basic-auth step of a route.
#[derive(Debug)]
pub struct BasicAuth {
    file: Arc<HtpasswdFile>,
    realm: String,
    open: OpenAccess,
    /// Registry tokens ([`super::registry_token`]), on for `auth.anonymous-read` and rules
    /// naming `anonymous`: the secret they are signed with.
    tokens: Option<[u8; 32]>,
    /// Who may pull, push and delete which repository (`auth.repositories`).
    rules: Option<RepositoryRules>,
}

/// A registry route's repository rules, with the groups file their `@group`s come from.
#[derive(Debug)]
pub struct RepositoryRules {
    rules: Rules,
    groups: Option<Arc<Watched<Groups>>>,
}

impl RepositoryRules {
    /// `rules`, whose `@group`s are the groups of `groups` as it reads now.
    pub fn new(rules: Rules, groups: Option<Arc<Watched<Groups>>>) -> RepositoryRules {
        RepositoryRules { rules, groups }
    }

    /// What the rules decide about `access` by `user` (`None`: no credentials). While the
    /// groups file was never readable, nothing is let through: a refusal naming a group
    /// must not stop matching because its members are unknown.
    pub fn decide(&self, access: &Access, user: Option<&str>) -> Decision {
        match &self.groups {
            None => self.rules.decide(access, user, &Groups::default()),
            Some(file) => match file.get_loaded() {
                Some(groups) => self.rules.decide(access, user, &groups),
                None => Decision::Unknown,
            },
        }
    }
}

/// This step's slot in [`RequestCtx::slots`]: the action the rules refused (`unknown` for a
/// request that is not one of the registry API's).
#[derive(Debug, Clone, Copy)]
struct Denied(&'static str);

/// Why an `Authorization` header is of no use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unusable {
    /// Not a form berth reads.
    Malformed,
    /// A registry token that is forged, changed, expired, for another host or user.
    InvalidToken,
    /// A valid token whose user the repository rules refuse this request.
    InsufficientScope,
}

/// What a request's `Authorization` header says.
enum Credentials {
    /// None (or `Basic` with an empty user and password, or an anonymous token).
    Nothing,
    /// A user, with the password to check.
    Basic(String, Vec<u8>),
    /// A valid token: of this user of the file (`None`: anonymous), granting these scopes.
    Token(Option<String>, Scopes),
    /// A header berth cannot use.
    Unusable(Unusable),
}

impl BasicAuth {
    /// Checks requests against `file`, naming `realm` in the challenge; requests `open` lets
    /// through pass without credentials (credentials they carry are checked all the same).
    /// With `tokens` (the secret they are signed with), the route speaks the registry token
    /// flow too.
    pub fn new(
        file: Arc<HtpasswdFile>,
        realm: &str,
        open: OpenAccess,
        tokens: Option<[u8; 32]>,
    ) -> BasicAuth {
        BasicAuth {
            file,
            realm: realm.to_string(),
            tokens,
            rules: None,
            open,
        }
    }

    /// Judges registry requests by `rules` (a route without them lets every user do
    /// everything).
    pub fn with_rules(mut self, rules: Option<RepositoryRules>) -> BasicAuth {
        self.rules = rules;
        self
    }

    /// The action the repository rules refused this request, if they did (for
    /// `berth_registry_denied_total`).
    pub fn denied(ctx: &RequestCtx) -> Option<&'static str> {
        ctx.slots.get::<Denied>().map(|d| d.0)
    }

    /// The key tokens are signed with now (it changes with the file).
    fn token_key(&self, secret: &[u8; 32]) -> [u8; 32] {
        registry_token::token_key(secret, self.file.users().entries_digest())
    }

    /// The 401 reply with its challenge: `Basic`, or on a token route `Bearer` with the
    /// realm of the token endpoint on the host the client asked for.
    fn unauthorized(&self, session: &Session, ctx: &RequestCtx, why: Option<Unusable>) -> Reply {
        let challenge = if self.tokens.is_some() {
            let error = match why {
                Some(Unusable::InvalidToken) => ",error=\"invalid_token\"",
                Some(Unusable::InsufficientScope) => ",error=\"insufficient_scope\"",
                _ => "",
            };
            // Behind a trusted proxy that terminates TLS, the client's scheme is the proxy's
            // word: an http:// realm would have clients send passwords in the clear.
            let forwarded = ctx
                .downstream
                .client
                .trusted
                .then(|| session.req_header().headers.get("x-forwarded-proto"))
                .flatten()
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|p| *p == "https" || *p == "http");
            format!(
                "Bearer realm=\"{}://{}{TOKEN_PATH}\",service=\"{}\"{error}",
                forwarded.unwrap_or(ctx.downstream.scheme.as_str()),
                ctx.authority,
                ctx.host
            )
        } else {
            format!("Basic realm=\"{}\"", self.realm)
        };
        let mut reply = Reply::text(StatusCode::UNAUTHORIZED, "authentication required");
        reply.headers.push((
            HeaderName::from_static("www-authenticate"),
            HeaderValue::from_str(&challenge)
                .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"berth\"")),
        ));
        reply
    }

    /// What `value` (the request's `Authorization`) says on `host`; `cert`: the user of the
    /// request's verified client certificate, whose tokens are valid on its connections.
    fn credentials(
        &self,
        value: Option<&HeaderValue>,
        host: &str,
        cert: Option<&str>,
    ) -> Credentials {
        let Some(value) = value else {
            return Credentials::Nothing;
        };
        if let Some(secret) = &self.tokens {
            if let Some(token) = bearer_value(value.as_bytes()) {
                let key = self.token_key(secret);
                return match registry_token::verify(&key, token, host, SystemTime::now()) {
                    Some((Bearer::Anonymous, scopes)) => Credentials::Token(None, scopes),
                    Some((Bearer::User(user), scopes))
                        if self.file.users().hash_of(&user).is_some()
                            || cert == Some(user.as_str()) =>
                    {
                        Credentials::Token(Some(user), scopes)
                    }
                    _ => Credentials::Unusable(Unusable::InvalidToken),
                };
            }
        }
        match parse_basic(value.as_bytes()) {
            // Empty user and password (`Basic Og==`) is what registry clients send when
            // they have no login for a host that challenged them: no credentials at all.
            Some((user, password)) if user.is_empty() && password.is_empty() => {
                Credentials::Nothing
            }
            Some((user, password)) => Credentials::Basic(user, password),
            None => Credentials::Unusable(Unusable::Malformed),
        }
    }

    /// Whether `user` (`None`: no credentials) may do `action` on `repository` (`None`: read
    /// the catalog), as the rules decide now; without rules, a user may do everything and
    /// nobody else more than `auth.anonymous-read` opens.
    fn may(&self, user: Option<&str>, repository: Option<&str>, action: Action) -> bool {
        let access = match repository {
            Some(name) => Access::Repository {
                name: name.to_string(),
                action,
                mount_from: None,
            },
            None => Access::Catalog,
        };
        match &self.rules {
            Some(rules) => rules.decide(&access, user) == Decision::Allow,
            None => {
                user.is_some() || (self.open == OpenAccess::RegistryReads && action == Action::Pull)
            }
        }
    }

    /// The token endpoint: a token for the user of valid `Basic` credentials, an anonymous
    /// one without credentials, 401 for wrong ones. The token grants what the request's
    /// `scope` parameters ask and the rules allow (the Docker token specification's
    /// intersection); nothing it was not asked for.
    async fn token_endpoint(&self, session: &Session, ctx: &RequestCtx) -> Reply {
        let head = session.req_header();
        if head.method != http::Method::GET {
            let mut reply = Reply::text(StatusCode::METHOD_NOT_ALLOWED, "use GET");
            reply
                .headers
                .push((http::header::ALLOW, HeaderValue::from_static("GET")));
            return reply;
        }
        let cert = ClientCert::user(ctx);
        let user = match self.credentials(
            head.headers.get(http::header::AUTHORIZATION),
            &ctx.host,
            cert,
        ) {
            Credentials::Nothing => cert.map(str::to_string),
            Credentials::Basic(user, password) => {
                if !self.file.verify(&user, &password).await {
                    tracing::info!(
                        host = %ctx.host,
                        user = %shown(&user, MAX_SHOWN_USER),
                        client = %ctx.downstream.client,
                        "registry token: wrong user or password"
                    );
                    return self.token_refused();
                }
                Some(user)
            }
            Credentials::Token(..) | Credentials::Unusable(_) => return self.token_refused(),
        };
        let asked = Scopes::asked(head.uri.query().unwrap_or_default());
        let granted =
            asked.grant(|repository, action| self.may(user.as_deref(), repository, action));
        let Some(secret) = &self.tokens else {
            return self.token_refused();
        };
        let now = SystemTime::now();
        let key = self.token_key(secret);
        let token = registry_token::mint(&key, &ctx.host, user.as_deref(), &granted, now);
        let mut reply = Reply::text(StatusCode::OK, "");
        reply.body = Bytes::from(registry_token::token_json(&token, now));
        reply.headers.push((
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ));
        reply
    }

    /// The token endpoint's refusal: a registry-style 401 with a `Basic` challenge, which is
    /// what `docker login` reports as a wrong user or password.
    fn token_refused(&self) -> Reply {
        let mut reply = Reply::text(StatusCode::UNAUTHORIZED, "");
        reply.body = Bytes::from_static(
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"incorrect username or password"}]}"#,
        );
        reply.headers.push((
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ));
        reply.headers.push((
            HeaderName::from_static("www-authenticate"),
            HeaderValue::from_str(&format!("Basic realm=\"{}\"", self.realm))
                .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"berth\"")),
        ));
        reply
    }
}

#[async_trait]
impl Plugin for BasicAuth {
    fn name(&self) -> &'static str {
        "auth"
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Flow> {
        let head = session.req_header();
        // Two Authorization headers: which one counts is anybody's guess; refuse both.
        if head
            .headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .nth(1)
            .is_some()
        {
            tracing::info!(
                host = %ctx.host,
                client = %ctx.downstream.client,
                "basic auth: more than one Authorization header"
            );
            return Ok(Flow::Respond(self.unauthorized(session, ctx, None)));
        }
        if self.tokens.is_some() && head.uri.path() == TOKEN_PATH {
            return Ok(Flow::Respond(self.token_endpoint(session, ctx).await));
        }
        let cert = ClientCert::user(ctx);
        let credentials = self.credentials(
            head.headers.get(http::header::AUTHORIZATION),
            &ctx.host,
            cert,
        );
        let by_basic = matches!(credentials, Credentials::Basic(..));
        let (user, scopes) = match credentials {
            // A verified client certificate is a login when the request brings no other.
            Credentials::Nothing => (cert.map(str::to_string), None),
            Credentials::Basic(user, password) => {
                if !self.file.verify(&user, &password).await {
                    tracing::info!(
                        host = %ctx.host,
                        user = %shown(&user, MAX_SHOWN_USER),
                        client = %ctx.downstream.client,
                        "basic auth: wrong user or password"
                    );
                    return Ok(Flow::Respond(self.unauthorized(session, ctx, None)));
                }
                (Some(user), None)
            }
            Credentials::Token(user, scopes) => (user, Some(scopes)),
            Credentials::Unusable(why) => {
                let what = match why {
                    Unusable::Malformed => "malformed Authorization header",
                    Unusable::InvalidToken | Unusable::InsufficientScope => {
                        "invalid or expired registry token"
                    }
                };
                tracing::info!(host = %ctx.host, client = %ctx.downstream.client, "basic auth: {what}");
                return Ok(Flow::Respond(self.unauthorized(session, ctx, Some(why))));
            }
        };
        let head = session.req_header();
        let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
        let open = self.open.lets_through(head.method.as_str(), target);
        if self.rules.is_none() && scopes.is_none() {
            return Ok(if user.is_some() || open {
                Flow::Continue
            } else {
                Flow::Respond(self.unauthorized(session, ctx, None))
            });
        }
        // The registry reads a request's parameters (an upload's `mount` and `from`) from a
        // form body too: a request with one is read two ways, and refused.
        let access = if form_body(&head.headers) {
            Access::Unknown
        } else {
            access(head.method.as_str(), target)
        };
        // A token reaches only what it grants; the rules, as they are now, decide as well
        // (a token outlives no change of them).
        let decision = if scopes.as_ref().is_some_and(|s| !s.covers(&access)) {
            match access {
                Access::Unknown => Decision::Unknown,
                _ => Decision::Deny(refused_action(&access)),
            }
        } else {
            match &self.rules {
                Some(rules) => rules.decide(&access, user.as_deref()),
                None if user.is_some() || open => Decision::Allow,
                None => Decision::Login,
            }
        };
        let refused = match decision {
            Decision::Allow => return Ok(Flow::Continue),
            // Without a user, whatever is refused is asked to log in.
            _ if user.is_none() => return Ok(Flow::Respond(self.unauthorized(session, ctx, None))),
            Decision::Deny(action) => action.as_str(),
            Decision::Login | Decision::Unknown => "unknown",
        };
        let repository = match &access {
            Access::Repository { name, .. } => name.as_str(),
            Access::Catalog => "_catalog",
            _ => "-",
        };
        tracing::info!(
            host = %ctx.host,
            user = %shown(user.as_deref().unwrap_or_default(), MAX_SHOWN_USER),
            client = %ctx.downstream.client,
            action = refused,
            repository,
            "registry: access denied"
        );
        ctx.slots.insert(Denied(refused));
        // A token's holder — or a client certificate's, on a route that speaks tokens — is
        // told its access does not reach (`insufficient_scope`, as the token specification
        // says); the Docker CLI prints `denied: requested access to the resource is denied`
        // for it at once. Basic credentials get the registry's 403.
        let mut reply = denied();
        if scopes.is_some() || (self.tokens.is_some() && !by_basic) {
            let challenge = self.unauthorized(session, ctx, Some(Unusable::InsufficientScope));
            reply.status = StatusCode::UNAUTHORIZED;
            reply.headers.extend(challenge.headers);
        }
        Ok(Flow::Respond(reply))
    }
}

/// The action a token that does not cover `access` lacks: the request's own, or `pull` for
/// a mount's source or the catalog.
fn refused_action(access: &Access) -> Action {
    match access {
        Access::Repository { action, .. } => *action,
        _ => Action::Pull,
    }
}

/// Whether a `Content-Type` of the request is a form (`application/x-www-form-urlencoded`
/// or `multipart/form-data`, in any case, with any parameters), whose fields Go's
/// `FormValue` reads before the query's.
fn form_body(headers: &http::HeaderMap) -> bool {
    headers.get_all(http::header::CONTENT_TYPE).iter().any(|v| {
        let media = v
            .as_bytes()
            .split(|b| *b == b';')
            .next()
            .unwrap_or_default();
        let media = media.trim_ascii();
        media.eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
            || media.eq_ignore_ascii_case(b"multipart/form-data")
    })
}

/// The registry's refusal of an action (`403 DENIED`), which the Docker CLI prints as
/// `denied: requested access to the resource is denied`.
fn denied() -> Reply {
    let mut reply = Reply::text(StatusCode::FORBIDDEN, "");
    reply.body = Bytes::from_static(
        br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#,
    );
    reply.headers.push((
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    ));
    reply
}
