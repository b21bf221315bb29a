//! Active health checks: `health-check` names a path berth asks each upstream for on its
//! interval; an upstream that fails `health-fails` checks in a row (connections the
//! requests could not make count too) is taken out of the rotation, and comes back after
//! `health-passes` checks in a row succeed.
//!
//! ```toml
//! [[route]]
//! host = "app.example.com"
//! upstreams = ["10.0.0.5:8080", "10.0.0.6:8080"]
//! health-check = "/healthz"   # "" = off (default)
//! health-interval = "5s"
//! health-timeout = "3s"
//! health-fails = 3
//! health-passes = 2
//! ```

use std::time::Duration;

use serde::Serialize;

use super::settings::ser_duration;
use crate::errors::Errors;
use crate::units::parse_duration;

/// `health-interval` when the route sets none.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// `health-timeout` when the route sets none (or the interval, when that is shorter).
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// `health-fails` when the route sets none.
pub(crate) const DEFAULT_FAILS: u32 = 3;
/// `health-passes` when the route sets none.
pub(crate) const DEFAULT_PASSES: u32 = 2;
/// The shortest interval: a check a second per upstream is already more than most services
/// need, and a shorter one turns the checks into load.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The longest interval and timeout.
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// The most checks in a row `health-fails` and `health-passes` may ask for.
pub(crate) const MAX_IN_A_ROW: u32 = 100;
/// The longest `health-check` path, query included.
pub(crate) const MAX_PATH: usize = 1024;

/// A route's health check, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    /// The path (and query) asked for with `GET`.
    pub path: String,
    /// Time from one check of an upstream to its next.
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
    /// Time a check may take, connection included; never longer than the interval.
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// Failures in a row that take a healthy upstream out.
    pub fails: u32,
    /// Successes in a row that bring an upstream that was out back.
    pub passes: u32,
}

/// A route's health-check keys as written.
#[derive(Debug, Default, Clone, Copy)]
pub struct RawHealth<'a> {
    /// `health-check`.
    pub check: Option<&'a str>,
    /// `health-interval`.
    pub interval: Option<&'a str>,
    /// `health-timeout`.
    pub timeout: Option<&'a str>,
    /// `health-fails`.
    pub fails: Option<u32>,
    /// `health-passes`.
    pub passes: Option<u32>,
}

impl RawHealth<'_> {
    /// Validates the keys; `key` names a key in errors. `None`: no checks (no
    /// `health-check`, or an empty one).
    pub fn validate(
        &self,
        key: &dyn Fn(&str) -> String,
        errors: &mut Errors,
    ) -> Option<HealthCheck> {
        let path = self.check.map(str::trim).filter(|p| !p.is_empty());
        let Some(path) = path else {
            let others = [
                ("health-interval", self.interval.is_some()),
                ("health-timeout", self.timeout.is_some()),
                ("health-fails", self.fails.is_some()),
                ("health-passes", self.passes.is_some()),
            ];
            for (name, set) in others {
                if set {
                    errors.push(key(name), "needs health-check (the path to check)");
                }
            }
            return None;
        };
        let path = errors.check(&key("health-check"), check_path(path));
        let interval = self
            .interval
            .map(|v| errors.check(&key("health-interval"), bounded(v, MIN_INTERVAL)))
            .unwrap_or(Some(DEFAULT_INTERVAL));
        let timeout = self
            .timeout
            .map(|v| errors.check(&key("health-timeout"), bounded(v, Duration::from_millis(1))))
            .unwrap_or(None);
        let fails = in_a_row(self.fails, DEFAULT_FAILS, &key("health-fails"), errors);
        let passes = in_a_row(self.passes, DEFAULT_PASSES, &key("health-passes"), errors);
        let interval = interval?;
        let timeout = match (self.timeout, timeout) {
            (None, _) => DEFAULT_TIMEOUT.min(interval),
            (Some(_), Some(t)) if t > interval => {
                errors.push(
                    key("health-timeout"),
                    format!(
                        "{} is longer than health-interval ({}): a check must end before the next begins",
                        humantime::format_duration(t),
                        humantime::format_duration(interval)
                    ),
                );
                return None;
            }
            (Some(_), Some(t)) => t,
            (Some(_), None) => return None,
        };
        Some(HealthCheck {
            path: path?,
            interval,
            timeout,
            fails: fails?,
            passes: passes?,
        })
    }
}

/// A path to ask for: absolute, printable ASCII without spaces, as a request line carries it.
fn check_path(path: &str) -> Result<String, String> {
    let shown: String = path.chars().take(64).collect();
    if !path.starts_with('/') {
        return Err(format!(
            "\"{}\" is not a path; write e.g. \"/healthz\"",
            shown.escape_debug()
        ));
    }
    if path.len() > MAX_PATH {
        return Err(format!("longer than {MAX_PATH} bytes"));
    }
    if path.bytes().any(|b| !b.is_ascii_graphic()) || path.contains('#') {
        return Err(format!(
            "\"{}\" has a space, a control character, a `#` or a byte outside ASCII; escape them as %XX",
            shown.escape_debug()
        ));
    }
    http::uri::PathAndQuery::try_from(path)
        .map(|_| path.to_string())
        .map_err(|e| format!("\"{}\" is not a request path ({e})", shown.escape_debug()))
}

fn bounded(value: &str, min: Duration) -> Result<Duration, String> {
    let d = parse_duration(value)?;
    if d < min || d > MAX_INTERVAL {
        return Err(format!(
            "\"{value}\" is out of range: between {} and {}",
            humantime::format_duration(min),
            humantime::format_duration(MAX_INTERVAL)
        ));
    }
    Ok(d)
}

fn in_a_row(value: Option<u32>, default: u32, key: &str, errors: &mut Errors) -> Option<u32> {
    match value {
        None => Some(default),
        Some(n) if (1..=MAX_IN_A_ROW).contains(&n) => Some(n),
        Some(n) => {
            errors.push(
                key,
                format!("{n} is out of range: between 1 and {MAX_IN_A_ROW}"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(raw: RawHealth<'_>) -> Result<Option<HealthCheck>, Vec<String>> {
        let mut errors = Errors::default();
        let check = raw.validate(&|k| format!("route[0].{k}"), &mut errors);
        let errors: Vec<String> = errors
            .into_inner()
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        if errors.is_empty() {
            Ok(check)
        } else {
            Err(errors)
        }
    }

    #[test]
    fn defaults_and_off() {
        assert_eq!(validate(RawHealth::default()), Ok(None));
        let off = RawHealth {
            check: Some(" "),
            ..RawHealth::default()
        };
        assert_eq!(validate(off), Ok(None));
        let on = RawHealth {
            check: Some("/healthz?full=1"),
            ..RawHealth::default()
        };
        assert_eq!(
            validate(on),
            Ok(Some(HealthCheck {
                path: "/healthz?full=1".into(),
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(3),
                fails: 3,
                passes: 2,
            }))
        );
        let short = RawHealth {
            check: Some("/"),
            interval: Some("1s"),
            ..RawHealth::default()
        };
        let check = validate(short).ok().flatten().map(|c| c.timeout);
        assert_eq!(
            check,
            Some(Duration::from_secs(1)),
            "the timeout fits the interval"
        );
    }

    #[test]
    fn a_pattern_host_checked_over_https_needs_upstream_sni() {
        let text = |extra: &str| {
            format!(
                "[listen]\nhttp = \"127.0.0.1:1\"\n[docker]\nenabled = false\n[[route]]\n\
                 host = \"*.a.test\"\nupstreams = [\"127.0.0.1:1\"]\nproto = \"https\"\n\
                 health-check = \"/\"\n{extra}"
            )
        };
        let e = crate::config::parse_config(&text(""))
            .expect_err("no upstream-sni")
            .to_string();
        assert!(
            e.contains("route[0].health-check: a wildcard or regex host's https upstreams"),
            "{e}"
        );
        assert!(crate::config::parse_config(&text("upstream-sni = \"b.a.test\"")).is_ok());
    }

    #[test]
    fn bad_values_are_named() {
        let cases: [(RawHealth<'_>, &str); 9] = [
            (
                RawHealth {
                    interval: Some("5s"),
                    ..RawHealth::default()
                },
                "route[0].health-interval: needs health-check",
            ),
            (
                RawHealth {
                    check: Some("healthz"),
                    ..RawHealth::default()
                },
                "route[0].health-check: \"healthz\" is not a path",
            ),
            (
                RawHealth {
                    check: Some("/a b"),
                    ..RawHealth::default()
                },
                "route[0].health-check: \"/a b\" has a space",
            ),
            (
                RawHealth {
                    check: Some("/caf\u{e9}"),
                    ..RawHealth::default()
                },
                "route[0].health-check: \"/caf\u{e9}\" has a space",
            ),
            (
                RawHealth {
                    check: Some("/"),
                    interval: Some("100ms"),
                    ..RawHealth::default()
                },
                "route[0].health-interval: \"100ms\" is out of range",
            ),
            (
                RawHealth {
                    check: Some("/"),
                    interval: Some("2s"),
                    timeout: Some("3s"),
                    ..RawHealth::default()
                },
                "route[0].health-timeout: 3s is longer than health-interval (2s)",
            ),
            (
                RawHealth {
                    check: Some("/"),
                    fails: Some(0),
                    ..RawHealth::default()
                },
                "route[0].health-fails: 0 is out of range",
            ),
            (
                RawHealth {
                    check: Some("/"),
                    passes: Some(101),
                    ..RawHealth::default()
                },
                "route[0].health-passes: 101 is out of range",
            ),
            (
                RawHealth {
                    check: Some("/"),
                    timeout: Some("soon"),
                    ..RawHealth::default()
                },
                "route[0].health-timeout: invalid duration \"soon\"",
            ),
        ];
        for (raw, expected) in cases {
            let errors = validate(raw).expect_err(expected);
            assert!(
                errors.iter().any(|e| e.starts_with(expected)),
                "{expected}: {errors:?}"
            );
        }
    }
}
