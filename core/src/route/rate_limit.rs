//! Rate limits: `rate-limit = "20r/s"` and `rate-burst`, per client.

use std::time::Duration;

use serde::Serialize;

use super::settings::ser_duration;
use crate::errors::Errors;

/// A route's request rate limit (`rate-limit = "20r/s"`, `rate-burst`), per client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    /// Requests allowed per `per`.
    pub requests: u32,
    /// The period `requests` are counted over: one second, minute or hour.
    #[serde(serialize_with = "ser_duration")]
    pub per: Duration,
    /// Requests a client may send at once before the rate applies.
    pub burst: u32,
}

impl RateLimit {
    /// Parses `"<n>r/s"`, `"<n>r/m"` or `"<n>r/h"` (nginx's spelling), with `burst` or, by
    /// default, a burst of `n`.
    ///
    /// # Errors
    /// A message naming the value when it is not a rate (1 to 1000000 requests), or the
    /// burst is not 1 to 1000000.
    pub fn parse(rate: &str, burst: Option<u32>) -> Result<RateLimit, String> {
        let bad = || {
            format!(
                "invalid rate-limit \"{rate}\": expected requests per second, minute or hour, \
                 e.g. \"20r/s\", \"100r/m\""
            )
        };
        let (n, unit) = rate.trim().split_once("r/").ok_or_else(bad)?;
        let per = match unit {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        let requests: u32 = n
            .parse()
            .ok()
            .filter(|n| (1..=1_000_000).contains(n))
            .ok_or_else(bad)?;
        let burst = match burst {
            Some(0) => {
                return Err("rate-burst 0 would refuse every request: use 1 or more".to_string())
            }
            Some(b) if b > 1_000_000 => return Err(format!("rate-burst {b} is more than 1000000")),
            Some(b) => b,
            None => requests,
        };
        Ok(RateLimit {
            requests,
            per,
            burst,
        })
    }

    /// The time one request's allowance takes to come back.
    pub fn interval(&self) -> Duration {
        self.per / self.requests.max(1)
    }

    /// Validates a route's `rate-limit` and `rate-burst`; `key` names a key in errors.
    pub fn validate(
        rate: Option<&str>,
        burst: Option<u32>,
        key: &dyn Fn(&str) -> String,
        errors: &mut Errors,
    ) -> Option<RateLimit> {
        match (rate, burst) {
            (Some(rate), burst) => errors.check(&key("rate-limit"), RateLimit::parse(rate, burst)),
            (None, Some(_)) => {
                errors.push(
                    key("rate-burst"),
                    "needs rate-limit, the rate it adds a burst to",
                );
                None
            }
            (None, None) => None,
        }
    }
}
