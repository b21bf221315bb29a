//! Host patterns: how a route's `host` is written, parsed and matched, and which patterns a
//! container may claim (`docker.allowed-hosts`).

use std::fmt;

use regex::Regex;
use serde::Serialize;

/// How a route's host is matched against the request's host name.
///
/// Lookup order (see [`crate::table::RouteTable`]): exact names, then leading wildcards
/// (longest suffix first), then trailing wildcards (longest prefix first), then regular
/// expressions in the order they were declared — the order nginx uses for `server_name`.
#[derive(Debug, Clone)]
pub enum HostPattern {
    /// `registry.example.com` (stored lowercase).
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com`, at any depth; stores `.example.com`.
    LeadingWildcard(String),
    /// `www.example.*`: any name starting with `www.example.`; stores `www.example.`.
    TrailingWildcard(String),
    /// `~^reg[0-9]+\.example\.com$`: a regular expression matched against the lowercase host
    /// name (unanchored unless the pattern anchors itself, like nginx).
    Regex(Regex),
}

impl HostPattern {
    /// The name a certificate carries for this pattern: the host, or `*.example.com` for a
    /// leading wildcard; `None` for patterns no certificate can name.
    pub fn certificate_name(&self) -> Option<String> {
        match self {
            HostPattern::Exact(h) => Some(h.clone()),
            HostPattern::LeadingWildcard(base) => Some(format!("*{base}")),
            HostPattern::TrailingWildcard(_) | HostPattern::Regex(_) => None,
        }
    }

    /// Parses a host pattern as written in the config or a label.
    ///
    /// # Errors
    /// Returns a message naming the pattern when it is empty, has a port, has a wildcard in
    /// the middle, has characters a host name cannot have, or is an invalid regex.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let text = text.trim();
        if let Some(re) = text.strip_prefix('~') {
            return Regex::new(re)
                .map(HostPattern::Regex)
                .map_err(|e| format!("invalid host regex \"{text}\": {e}"));
        }
        let lower = text.to_ascii_lowercase();
        if lower.is_empty() {
            return Err("empty host".to_string());
        }
        let (kind, name) = if let Some(rest) = lower.strip_prefix("*.") {
            ('l', rest)
        } else if let Some(rest) = lower.strip_suffix(".*") {
            ('t', rest)
        } else {
            ('e', lower.as_str())
        };
        let valid_label = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || !name.split('.').all(valid_label) {
            return Err(format!(
                "invalid host \"{text}\": expected a name like \"registry.example.com\", \
                 \"*.example.com\", \"www.example.*\" or \"~regex\" (no port, no scheme)"
            ));
        }
        Ok(match kind {
            'l' => HostPattern::LeadingWildcard(format!(".{name}")),
            't' => HostPattern::TrailingWildcard(format!("{name}.")),
            _ => HostPattern::Exact(name.to_string()),
        })
    }

    /// Whether `host` (lowercase, without port) matches this pattern.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host == name,
            HostPattern::LeadingWildcard(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
            HostPattern::TrailingWildcard(prefix) => {
                host.len() > prefix.len() && host.starts_with(prefix.as_str())
            }
            HostPattern::Regex(re) => re.is_match(host),
        }
    }

    /// Whether every name `other` matches, this pattern matches too (as far as can be told:
    /// a regular expression covers only the same expression, and is covered by nothing else).
    pub fn covers(&self, other: &HostPattern) -> bool {
        match other {
            HostPattern::Exact(name) => self.matches(name),
            HostPattern::LeadingWildcard(suffix) => match self {
                HostPattern::LeadingWildcard(mine) => suffix.ends_with(mine.as_str()),
                _ => false,
            },
            HostPattern::TrailingWildcard(prefix) => match self {
                HostPattern::TrailingWildcard(mine) => prefix.starts_with(mine.as_str()),
                _ => false,
            },
            HostPattern::Regex(re) => {
                matches!(self, HostPattern::Regex(mine) if mine.as_str() == re.as_str())
            }
        }
    }
}

/// `docker.allowed-hosts`: the hosts and host patterns containers may claim. Empty: any.
///
/// Whether a container may claim `claimed`.
pub fn may_claim(allowed: &[HostPattern], claimed: &HostPattern) -> bool {
    allowed.is_empty() || allowed.iter().any(|a| a.covers(claimed))
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::LeadingWildcard(suffix) => write!(f, "*{suffix}"),
            HostPattern::TrailingWildcard(prefix) => write!(f, "{prefix}*"),
            HostPattern::Regex(re) => write!(f, "~{}", re.as_str()),
        }
    }
}

impl Serialize for HostPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The host name of an authority (`Host` header value): lowercase, port and trailing dot
/// removed; `None` when it is empty or has characters no host name has.
pub fn host_of(authority: &str) -> Option<String> {
    if authority.contains('@') {
        return None;
    }
    let name = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let rest = &authority[end + 1..];
        if !(rest.is_empty() || rest.strip_prefix(':').is_some_and(valid_port)) {
            return None;
        }
        &authority[..=end]
    } else {
        match authority.rsplit_once(':') {
            Some((name, port)) if valid_port(port) => name,
            Some(_) => return None,
            None => authority,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    // No empty label (`a..b`, `.a`), as nginx: such a name matches no pattern as written.
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b));
    ok.then_some(name)
}

fn valid_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}
