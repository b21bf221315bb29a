//! The `[limits]` section: what one client may cost berth on the downstream side, so that a
//! slow or greedy client cannot hurt the others. Applied per connection by the proxy before
//! Pingora parses a request; swapped live on reload.
//!
//! ```toml
//! [limits]
//! header-timeout = "15s"       # a request head (request line + headers) must arrive in this time
//! max-header-size = "64KiB"    # a larger request head gets 431
//! max-connections = 16384      # open client connections per listener; more are refused
//! keepalive-timeout = "75s"    # idle time allowed between two requests on a connection
//! h2-stall-timeout = "60s"     # an HTTP/2 stream whose client window stays shut this long is reset
//! ```
//!
//! None of these limit a request *body*: uploads are bounded only by the routes' idle
//! `read-timeout` and `max-body`.

use std::time::Duration;

use serde::Deserialize;

use super::units::{parse_duration, parse_size};
use crate::errors::Errors;

/// `[limits]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RawLimits {
    /// Time allowed for a request head to arrive.
    pub header_timeout: Option<String>,
    /// Largest request head.
    pub max_header_size: Option<String>,
    /// Open connections per listener.
    pub max_connections: Option<u64>,
    /// Idle time between requests on a keep-alive connection.
    pub keepalive_timeout: Option<String>,
    /// How long an HTTP/2 stream may wait for its client's flow-control window.
    pub h2_stall_timeout: Option<String>,
}

/// Validated `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From the first byte of a request (from the accept, for a connection's first request)
    /// until its head is complete.
    pub header_timeout: Duration,
    /// Bytes of request line and headers, the final empty line included.
    pub max_header_size: usize,
    /// Open client connections per listener.
    pub max_connections: usize,
    /// Idle time between requests; `0` closes after every response.
    pub keepalive_timeout: Duration,
    /// How long an HTTP/2 stream may wait for room in its client's flow-control window before
    /// it is reset (and its upstream connection closed); shorter than a route's
    /// `write-timeout` wins. `0`: the route's `write-timeout` alone.
    pub h2_stall_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(15),
            max_header_size: 64 << 10,
            max_connections: 16384,
            keepalive_timeout: Duration::from_secs(75),
            h2_stall_timeout: Duration::from_secs(60),
        }
    }
}

/// The largest `max-header-size`. Pingora refuses (with its own 400) whatever berth hands it
/// beyond 1 MiB − 1 byte, head and body bytes that came with it together; berth's head plus
/// one read of at most [`HEAD_READ_CHUNK`] stays well below that.
pub const MAX_HEADER_SIZE_CEILING: usize = 512 << 10;

/// The most berth reads at once while waiting for a request head.
pub const HEAD_READ_CHUNK: usize = 16 << 10;

impl RawLimits {
    /// Converts into [`Limits`], recording every problem in `errors`.
    pub fn validate(&self, errors: &mut Errors) -> Limits {
        let mut limits = Limits::default();
        if let Some(v) = &self.header_timeout {
            match parse_duration(v) {
                Ok(d) if d.is_zero() => errors.push(
                    "limits.header-timeout",
                    "must be more than 0; a client that never finishes its headers would hold \
                     its connection forever",
                ),
                Ok(d) => limits.header_timeout = d,
                Err(e) => errors.push("limits.header-timeout", e),
            }
        }
        if let Some(v) = &self.max_header_size {
            match parse_size(v) {
                Ok(n) if n < 1024 || n > MAX_HEADER_SIZE_CEILING as u64 => errors.push(
                    "limits.max-header-size",
                    format!("{v} is out of range: from 1KiB to 512KiB"),
                ),
                Ok(n) => limits.max_header_size = n as usize,
                Err(e) => errors.push("limits.max-header-size", e),
            }
        }
        if let Some(n) = self.max_connections {
            if n == 0 {
                errors.push("limits.max-connections", "must be at least 1");
            } else {
                limits.max_connections = usize::try_from(n).unwrap_or(usize::MAX);
            }
        }
        if let Some(v) = &self.keepalive_timeout {
            match parse_duration(v) {
                Ok(d) => limits.keepalive_timeout = d,
                Err(e) => errors.push("limits.keepalive-timeout", e),
            }
        }
        if let Some(v) = &self.h2_stall_timeout {
            match parse_duration(v) {
                Ok(d) => limits.h2_stall_timeout = d,
                Err(e) => errors.push("limits.h2-stall-timeout", e),
            }
        }
        limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(raw: RawLimits) -> Result<Limits, Vec<String>> {
        let mut errors = Errors::default();
        let limits = raw.validate(&mut errors);
        if errors.is_empty() {
            Ok(limits)
        } else {
            Err(errors
                .into_inner()
                .iter()
                .map(ToString::to_string)
                .collect())
        }
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(validate(RawLimits::default()), Ok(Limits::default()));
        let l = validate(RawLimits {
            header_timeout: Some("2s".into()),
            max_header_size: Some("8KiB".into()),
            max_connections: Some(100),
            keepalive_timeout: Some("0".into()),
            h2_stall_timeout: Some("5s".into()),
        })
        .expect("valid");
        assert_eq!(l.h2_stall_timeout, Duration::from_secs(5));
        assert_eq!(l.header_timeout, Duration::from_secs(2));
        assert_eq!(l.max_header_size, 8192);
        assert_eq!(l.max_connections, 100);
        assert_eq!(l.keepalive_timeout, Duration::ZERO);
    }

    #[test]
    fn bad_values_are_named() {
        let errors = validate(RawLimits {
            header_timeout: Some("0".into()),
            max_header_size: Some("2MiB".into()),
            max_connections: Some(0),
            keepalive_timeout: Some("soon".into()),
            h2_stall_timeout: Some("never".into()),
        })
        .expect_err("invalid");
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(errors[4].starts_with("limits.h2-stall-timeout: invalid duration"));
        assert!(errors[0].starts_with("limits.header-timeout: must be more than 0"));
        assert!(errors[1].starts_with("limits.max-header-size: 2MiB is out of range"));
        assert!(errors[2].starts_with("limits.max-connections: must be at least 1"));
        assert!(errors[3].starts_with("limits.keepalive-timeout: invalid duration"));
    }
}
