//! `[tls]`: where berth's certificates live, what unknown SNI names get, and, on an edge that
//! shares no filesystem with `berth-acme`, the certificate feed it mirrors
//! ([`crate::feed`]).
//!
//! ```toml
//! [tls]
//! certs-dir = "/var/lib/berth/certs"
//! default-cert = "generate"                  # generate | none
//! feed = "http://berth-acme:9182"            # several hosts: mirror berth-acme's certificates
//! feed-token-file = "/run/secrets/berth-feed-token"
//! ```

use std::path::PathBuf;

use serde::Deserialize;

use crate::contract::CertDir;
use crate::errors::Errors;
use crate::feed::DEFAULT_FEED_PORT;

/// Where certificates live when `tls.certs-dir` is not set.
pub const DEFAULT_CERTS_DIR: &str = "berth-state/certs";

/// `[tls]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RawTls {
    /// Directory of `<host>.crt` / `<host>.key` pairs.
    pub certs_dir: Option<String>,
    /// `generate` or `none`.
    pub default_cert: Option<String>,
    /// `http://host:port` of berth-acme's certificate feed.
    pub feed: Option<String>,
    /// File holding the feed's bearer token.
    pub feed_token_file: Option<String>,
}

/// What to serve to a client whose SNI name has no certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultCert {
    /// `default.crt` from certs-dir, generated (self-signed) on first start if missing.
    Generate,
    /// `default.crt` if present, else the handshake is refused.
    None,
}

/// Where an edge mirrors its certificates from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFeed {
    /// `host:port` of berth-acme's feed listener (a name is resolved on every connection,
    /// so a Swarm service name follows the task wherever it runs).
    pub authority: String,
    /// The token file, read at start.
    pub token_file: PathBuf,
}

/// Validated `[tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Directory of certificates, acme-companion layout.
    pub certs_dir: CertDir,
    /// Default-certificate policy.
    pub default_cert: DefaultCert,
    /// The certificate feed to mirror, on an edge of several.
    pub feed: Option<CertFeed>,
}

/// Parses `http://host[:port]` (no path) into `host:port`.
///
/// # Errors
/// A message naming the value otherwise.
pub fn parse_feed_url(value: &str) -> Result<String, String> {
    let bad = |why: &str| format!("invalid feed URL \"{value}\": {why}");
    let v = value.trim();
    let rest = match v.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(bad(&format!(
                "scheme {scheme} is not served; the feed speaks http:// on an overlay network \
                 created with --opt encrypted"
            )))
        }
        None => return Err(bad("expected http://host:port")),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad(
            "expected http://host:port, with no path or credentials",
        ));
    }
    let with_port = match authority.rsplit_once(':') {
        _ if authority.starts_with('[') && authority.ends_with(']') => {
            format!("{authority}:{DEFAULT_FEED_PORT}")
        }
        Some((host, port)) if !host.ends_with(']') && host.contains(':') => {
            // A bare IPv6 address: no port given.
            return Err(bad(&format!(
                "write an IPv6 address in brackets: http://[{host}:{port}]:{DEFAULT_FEED_PORT}"
            )));
        }
        Some((host, port)) => match port.parse::<u16>() {
            Ok(p) if p > 0 && !host.is_empty() => authority.to_string(),
            _ => return Err(bad("invalid port")),
        },
        None => format!("{authority}:{DEFAULT_FEED_PORT}"),
    };
    Ok(with_port)
}

impl RawTls {
    pub(super) fn validate(&self, errors: &mut Errors) -> TlsConfig {
        let certs_dir = match self.certs_dir.as_deref().map(str::trim) {
            None => DEFAULT_CERTS_DIR.into(),
            Some("") => {
                errors.push("tls.certs-dir", "empty; name a directory");
                DEFAULT_CERTS_DIR.into()
            }
            Some(dir) => PathBuf::from(dir),
        };
        let certs_dir = CertDir::new(certs_dir);
        let default_cert = match self.default_cert.as_deref().map(str::trim) {
            None | Some("generate") => DefaultCert::Generate,
            Some("none") => DefaultCert::None,
            Some(other) => {
                errors.push(
                    "tls.default-cert",
                    format!("invalid value \"{other}\": expected \"generate\" or \"none\""),
                );
                DefaultCert::Generate
            }
        };
        let non_empty = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let feed = super::units::with_token_file(
            errors,
            "tls.feed",
            non_empty(&self.feed).as_deref(),
            non_empty(&self.feed_token_file).as_deref(),
            parse_feed_url,
        )
        .map(|(authority, token_file)| CertFeed {
            authority,
            token_file,
        });
        TlsConfig {
            certs_dir,
            default_cert,
            feed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_urls() {
        assert_eq!(
            parse_feed_url("http://berth-acme:9182").as_deref(),
            Ok("berth-acme:9182")
        );
        assert_eq!(
            parse_feed_url("http://berth-acme/").as_deref(),
            Ok("berth-acme:9182")
        );
        assert_eq!(
            parse_feed_url("http://[::1]:7000").as_deref(),
            Ok("[::1]:7000")
        );
        assert_eq!(parse_feed_url("http://[::1]").as_deref(), Ok("[::1]:9182"));
        for (bad, why) in [
            ("https://x:1", "scheme https"),
            ("berth-acme:9182", "expected http://"),
            ("http://x:1/feed", "no path"),
            ("http://u:p@x:1", "no path or credentials"),
            ("http://x:0", "invalid port"),
            ("http://x:port", "invalid port"),
            ("http://:9182", "invalid port"),
            ("http://", "expected http://host:port"),
        ] {
            let e = parse_feed_url(bad).expect_err(bad);
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn a_feed_needs_a_readable_token() {
        let dir = tempfile::tempdir().expect("dir");
        let token = dir.path().join("token");
        std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").expect("write");
        let validate = |feed: Option<&str>, file: Option<&std::path::Path>| {
            let mut errors = Errors::default();
            let tls = RawTls {
                feed: feed.map(str::to_string),
                feed_token_file: file.map(|p| p.display().to_string()),
                ..RawTls::default()
            }
            .validate(&mut errors);
            let errors: Vec<String> = errors.into_inner().iter().map(|e| e.to_string()).collect();
            (tls.feed, errors)
        };
        let (feed, errors) = validate(Some("http://acme:9182"), Some(&token));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            feed,
            Some(CertFeed {
                authority: "acme:9182".into(),
                token_file: token.clone()
            })
        );
        let (feed, errors) = validate(Some("http://acme:9182"), None);
        assert!(feed.is_none() && errors[0].starts_with("tls.feed-token-file: required"));
        let (_, errors) = validate(None, Some(&token));
        assert!(errors[0].starts_with("tls.feed:"), "{errors:?}");
        let (feed, errors) = validate(Some("http://acme"), Some(&dir.path().join("missing")));
        assert!(
            feed.is_none() && errors[0].contains("cannot read"),
            "{errors:?}"
        );
        assert_eq!(validate(None, None), (None, Vec::new()));
    }
}
