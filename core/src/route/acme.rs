//! Certificates a route asks berth-acme for: `acme = true` and `acme-challenge`.

use serde::Serialize;

use super::host::HostPattern;
use crate::errors::Errors;

/// How berth-acme proves control of a name to the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Challenge {
    /// `http-01`: a token served by berth on plain HTTP port 80 (the default).
    #[serde(rename = "http-01")]
    Http01,
    /// `dns-01`: a TXT record at `_acme-challenge.<name>`, published through
    /// `acme.dns-provider`; the only way to a wildcard certificate.
    #[serde(rename = "dns-01")]
    Dns01,
}

impl Challenge {
    /// Parses `http-01` or `dns-01` (any case: acme-companion's `ACME_CHALLENGE` says
    /// `DNS-01`).
    ///
    /// # Errors
    /// A message naming the value otherwise.
    pub fn parse(value: &str) -> Result<Challenge, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "http-01" => Ok(Challenge::Http01),
            "dns-01" => Ok(Challenge::Dns01),
            _ => Err(format!(
                "invalid challenge \"{value}\": expected http-01 or dns-01"
            )),
        }
    }

    /// The name the CA and the RFC use.
    pub fn as_str(self) -> &'static str {
        match self {
            Challenge::Http01 => "http-01",
            Challenge::Dns01 => "dns-01",
        }
    }

    /// The challenge for a certificate naming `hosts`: the one asked for, else `dns-01` when
    /// a name is a wildcard (nothing else can prove it), else `http-01`.
    ///
    /// # Errors
    /// `http-01` asked for a wildcard, with the fix.
    pub fn effective(asked: Option<Challenge>, hosts: &[String]) -> Result<Challenge, String> {
        let wildcard = hosts.iter().find(|h| h.starts_with("*."));
        match (asked, wildcard) {
            (Some(Challenge::Http01), Some(w)) => Err(format!(
                "\"{w}\" is a wildcard, and a wildcard certificate can only be proved with \
                 dns-01: ask for acme-challenge dns-01 (label berth.acme.challenge=dns-01, or \
                 ACME_CHALLENGE=DNS-01) and set acme.dns-provider"
            )),
            (Some(c), _) => Ok(c),
            (None, Some(_)) => Ok(Challenge::Dns01),
            (None, None) => Ok(Challenge::Http01),
        }
    }
}

impl std::fmt::Display for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Validates a route's `acme` and `acme-challenge` for its host; `key` names a key in errors.
/// Returns the challenge asked for, if any.
pub fn validate(
    acme: Option<bool>,
    challenge: Option<&str>,
    host: Option<&HostPattern>,
    key: &dyn Fn(&str) -> String,
    errors: &mut Errors,
) -> Option<Challenge> {
    let asked = match challenge.map(str::trim) {
        None | Some("") => None,
        Some(v) => errors.check(&key("acme-challenge"), Challenge::parse(v)),
    };
    if acme == Some(true) {
        match host.map(HostPattern::certificate_name) {
            Some(Some(name)) => {
                if let Err(e) =
                    crate::contract::check_cert_name(name.strip_prefix("*.").unwrap_or(&name))
                {
                    errors.push(key("acme"), e);
                }
                if let Err(e) = Challenge::effective(asked, &[name]) {
                    errors.push(key("acme-challenge"), e);
                }
            }
            Some(None) => errors.push(
                key("acme"),
                "needs a plain host name or a leading wildcard (*.example.com): a \
                 certificate cannot name a regex or a trailing wildcard",
            ),
            None => {}
        }
    }
    asked
}
