//! The `[server]` section: how a running berth hands over to a new binary and how it stops.
//!
//! ```toml
//! [server]
//! upgrade-socket = "berth-state/upgrade.sock"   # where `berth --upgrade` takes the listeners over
//! grace-period = "30s"                          # after SIGTERM or an upgrade, in-flight requests get this long
//! ```
//!
//! An upgrade: start the new binary with `--upgrade` and the same config, then send the
//! running one `SIGQUIT`; the new process receives the listening sockets over
//! `upgrade-socket`, so no connection is refused, and the old one finishes what it has in
//! flight (up to `grace-period`) and exits as soon as its last connection closes.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::units::parse_duration;
use crate::errors::Errors;

/// Where the upgrade socket lives when `server.upgrade-socket` is not set.
pub const DEFAULT_UPGRADE_SOCKET: &str = "berth-state/upgrade.sock";
/// In-flight requests' time to finish when `server.grace-period` is not set.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);

/// `[server]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RawServer {
    /// Unix socket the listeners are handed over on.
    pub upgrade_socket: Option<String>,
    /// Longest wait for in-flight requests when stopping or handing over.
    pub grace_period: Option<String>,
}

/// Validated `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Unix socket the listeners are handed over on.
    pub upgrade_socket: PathBuf,
    /// Longest wait for in-flight requests when stopping or handing over.
    pub grace_period: Duration,
}

impl RawServer {
    /// Converts into [`ServerSettings`], recording every problem in `errors`.
    pub fn validate(&self, errors: &mut Errors) -> ServerSettings {
        let upgrade_socket = match self.upgrade_socket.as_deref().map(str::trim) {
            None => DEFAULT_UPGRADE_SOCKET.into(),
            Some("") => {
                errors.push("server.upgrade-socket", "empty; name a socket path");
                DEFAULT_UPGRADE_SOCKET.into()
            }
            // A Unix socket path has room for 107 bytes.
            Some(p) if p.len() > 100 => {
                errors.push(
                    "server.upgrade-socket",
                    format!("\"{p}\" is too long for a Unix socket (at most 100 bytes)"),
                );
                DEFAULT_UPGRADE_SOCKET.into()
            }
            Some(p) => p.into(),
        };
        let grace_period = match self.grace_period.as_deref() {
            None => DEFAULT_GRACE_PERIOD,
            Some(v) => match parse_duration(v) {
                Ok(d) => d,
                Err(e) => {
                    errors.push("server.grace-period", e);
                    DEFAULT_GRACE_PERIOD
                }
            },
        };
        ServerSettings {
            upgrade_socket,
            grace_period,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_values_and_errors() {
        let mut errors = Errors::default();
        let s = RawServer::default().validate(&mut errors);
        assert_eq!(s.upgrade_socket, PathBuf::from(DEFAULT_UPGRADE_SOCKET));
        assert_eq!(s.grace_period, DEFAULT_GRACE_PERIOD);
        let s = RawServer {
            upgrade_socket: Some("/run/berth/upgrade.sock".into()),
            grace_period: Some("15m".into()),
        }
        .validate(&mut errors);
        assert_eq!(s.grace_period, Duration::from_secs(900));
        assert!(errors.is_empty());
        RawServer {
            upgrade_socket: Some(format!("/{}", "x".repeat(120))),
            grace_period: Some("later".into()),
        }
        .validate(&mut errors);
        let errors: Vec<String> = errors
            .into_inner()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            errors[0].starts_with("server.upgrade-socket: "),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("server.grace-period: invalid duration"),
            "{errors:?}"
        );
    }
}
