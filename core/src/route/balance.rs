//! `lb`: how a route with several upstreams chooses one for each request.
//!
//! ```toml
//! [[route]]
//! host = "app.example.com"
//! upstreams = ["10.0.0.5:8080", "10.0.0.6:8080"]
//! lb = "cookie"      # round-robin (default) | least-conn | ip-hash | cookie
//! ```

use serde::Serialize;

/// A load-balancing policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lb {
    /// Each request to the next upstream in turn.
    #[default]
    RoundRobin,
    /// The upstream with the fewest requests in flight through this berth.
    LeastConn,
    /// The same upstream for the same client address (the effective client: the PROXY
    /// protocol's or a trusted proxy's, where configured).
    IpHash,
    /// The upstream a signed cookie names, set on the first answer.
    Cookie,
}

impl Lb {
    /// Parses `round-robin`, `least-conn`, `ip-hash` or `cookie` (absent or empty: round
    /// robin).
    ///
    /// # Errors
    /// A message naming the value otherwise.
    pub fn parse(value: Option<&str>) -> Result<Lb, String> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("round-robin") => Ok(Lb::RoundRobin),
            Some("least-conn") => Ok(Lb::LeastConn),
            Some("ip-hash") => Ok(Lb::IpHash),
            Some("cookie") => Ok(Lb::Cookie),
            Some(_) => Err(format!(
                "invalid lb \"{}\": expected round-robin, least-conn, ip-hash or cookie",
                value.unwrap_or_default()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_by_name() {
        assert_eq!(Lb::parse(None), Ok(Lb::RoundRobin));
        assert_eq!(Lb::parse(Some(" Least-Conn ")), Ok(Lb::LeastConn));
        assert_eq!(Lb::parse(Some("ip-hash")), Ok(Lb::IpHash));
        assert_eq!(Lb::parse(Some("cookie")), Ok(Lb::Cookie));
        let e = Lb::parse(Some("random")).expect_err("random");
        assert!(e.starts_with("invalid lb \"random\""), "{e}");
    }
}
