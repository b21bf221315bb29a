//! The `dns-*` keys of `[acme]`: how berth-acme publishes DNS-01 challenge records and how it
//! knows they are out.
//!
//! ```toml
//! [acme]
//! dns-provider = "rfc2136"              # rfc2136 | exec
//! dns-server = "ns1.example.com:53"     # rfc2136: the primary that takes dynamic updates
//! dns-tsig-key = "berth-acme"           # rfc2136: TSIG key name
//! dns-tsig-algorithm = "hmac-sha256"    # hmac-sha256 | hmac-sha384 | hmac-sha512
//! dns-tsig-secret-file = "/run/secrets/berth-tsig"  # base64 secret, or tsig-keygen's output
//! dns-exec = "/usr/local/bin/dns-hook"  # exec: run as `CMD present|cleanup FQDN VALUE`
//! dns-propagation-timeout = "2m"        # wait this long for every authoritative server
//! dns-resolvers = ["1.1.1.1:53"]        # find zones and their servers (default: resolv.conf)
//! dns-nameservers = []                  # servers to wait for (default: the zone's NS, port 53)
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::errors::Errors;
use super::units::parse_duration;

/// Default `acme.dns-propagation-timeout`.
pub const DEFAULT_PROPAGATION_TIMEOUT: Duration = Duration::from_secs(120);

/// A TSIG algorithm berth-acme signs updates with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsigAlgorithm {
    /// `hmac-sha256` (the default, and `tsig-keygen`'s).
    HmacSha256,
    /// `hmac-sha384`.
    HmacSha384,
    /// `hmac-sha512`.
    HmacSha512,
}

/// Where challenge records are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsProvider {
    /// RFC 2136 dynamic updates signed with TSIG (BIND, Knot, PowerDNS, Technitium, Windows).
    Rfc2136 {
        /// The primary server: host name or IP address, and port.
        server: (String, u16),
        /// TSIG key name.
        key_name: String,
        /// TSIG algorithm.
        algorithm: TsigAlgorithm,
        /// File holding the secret (read by berth-acme at each use, never logged).
        secret_file: PathBuf,
    },
    /// A program run as `CMD present|cleanup FQDN VALUE`.
    Exec {
        /// The program.
        command: PathBuf,
    },
}

/// Validated DNS-01 settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Where records go.
    pub provider: DnsProvider,
    /// Longest wait for every authoritative server to answer a record.
    pub propagation_timeout: Duration,
    /// Recursive resolvers for finding a name's zone and its servers; empty: the system's.
    pub resolvers: Vec<SocketAddr>,
    /// Authoritative servers to wait for; empty: the addresses of the zone's NS records.
    pub nameservers: Vec<SocketAddr>,
}

/// The `dns-*` keys as written.
#[derive(Debug, Default)]
pub struct RawDns<'a> {
    /// `dns-provider`.
    pub provider: Option<&'a str>,
    /// `dns-server`.
    pub server: Option<&'a str>,
    /// `dns-tsig-key`.
    pub tsig_key: Option<&'a str>,
    /// `dns-tsig-algorithm`.
    pub tsig_algorithm: Option<&'a str>,
    /// `dns-tsig-secret-file`.
    pub tsig_secret_file: Option<&'a str>,
    /// `dns-exec`.
    pub exec: Option<&'a str>,
    /// `dns-propagation-timeout`.
    pub propagation_timeout: Option<&'a str>,
    /// `dns-resolvers`.
    pub resolvers: &'a [String],
    /// `dns-nameservers`.
    pub nameservers: &'a [String],
}

/// Parses `host`, `host:port`, `IP`, `IP:port` or `[IPv6]:port` (port 53 by default).
///
/// # Errors
/// A message naming the value otherwise.
pub fn parse_server(value: &str) -> Result<(String, u16), String> {
    let v = value.trim();
    if let Ok(addr) = v.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), addr.port()));
    }
    if let Ok(ip) = v.parse::<std::net::IpAddr>() {
        return Ok((ip.to_string(), 53));
    }
    let (host, port) = match v.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("invalid port in \"{value}\""))?,
        ),
        None => (v, 53),
    };
    let name_ok = !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if name_ok && port != 0 {
        Ok((host.to_ascii_lowercase(), port))
    } else {
        Err(format!(
            "invalid server \"{value}\": expected a host name or IP address, with an optional \
             port (ns1.example.com:53, 192.0.2.53, [2001:db8::53]:53)"
        ))
    }
}

/// Parses an IP address with an optional port (53 by default).
fn parse_ip_port(value: &str) -> Result<SocketAddr, String> {
    let v = value.trim();
    v.parse::<SocketAddr>()
        .or_else(|_| {
            v.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .map_err(|_| {
            format!("invalid address \"{value}\": expected an IP address with an optional port")
        })
}

/// Reads a TSIG secret: the bare base64 secret, or BIND's key clause as `tsig-keygen` prints
/// it (`key "name" { algorithm hmac-sha256; secret "..."; };`). Returns the decoded bytes.
///
/// # Errors
/// A message naming the file (never its contents) when it cannot be read or decoded.
pub fn read_tsig_secret(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read \"{}\": {e}", path.display()))?;
    let secret = match text.find("secret") {
        Some(at) if text.contains('{') => text[at + "secret".len()..]
            .split('"')
            .nth(1)
            .unwrap_or_default()
            .to_string(),
        _ => text.trim().to_string(),
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(secret.trim())
        .map_err(|_| {
            format!(
                "\"{}\" holds no base64 TSIG secret (write the secret alone, or tsig-keygen's \
                 key clause)",
                path.display()
            )
        })?;
    if bytes.is_empty() {
        return Err(format!("\"{}\" holds an empty TSIG secret", path.display()));
    }
    Ok(bytes)
}

impl RawDns<'_> {
    /// Converts into [`DnsConfig`] (`None` without `dns-provider`), recording problems under
    /// `acme.dns-*`.
    pub fn validate(&self, errors: &mut Errors) -> Option<DnsConfig> {
        let provider = match self.provider {
            None => {
                for (key, set) in [
                    ("acme.dns-server", self.server.is_some()),
                    ("acme.dns-tsig-key", self.tsig_key.is_some()),
                    ("acme.dns-tsig-secret-file", self.tsig_secret_file.is_some()),
                    ("acme.dns-exec", self.exec.is_some()),
                ] {
                    if set {
                        errors.push(key, "set, but acme.dns-provider is not");
                    }
                }
                return None;
            }
            Some("rfc2136") => self.rfc2136(errors)?,
            Some("exec") => {
                let Some(command) = self.exec else {
                    errors.push(
                        "acme.dns-exec",
                        "required with dns-provider = \"exec\": the program to run",
                    );
                    return None;
                };
                let path = PathBuf::from(command);
                if !path.is_absolute() {
                    errors.push(
                        "acme.dns-exec",
                        format!("\"{command}\": write the program's absolute path"),
                    );
                    return None;
                }
                DnsProvider::Exec { command: path }
            }
            Some(other) => {
                errors.push(
                    "acme.dns-provider",
                    format!("unknown provider \"{other}\": expected rfc2136 or exec"),
                );
                return None;
            }
        };
        let propagation_timeout = match self.propagation_timeout {
            None => DEFAULT_PROPAGATION_TIMEOUT,
            Some(v) => match errors.check("acme.dns-propagation-timeout", parse_duration(v)) {
                Some(d) if d >= Duration::from_secs(1) => d,
                Some(_) => {
                    errors.push("acme.dns-propagation-timeout", "must be at least 1s");
                    return None;
                }
                None => return None,
            },
        };
        let list = |key: &str, values: &[String], errors: &mut Errors| -> Vec<SocketAddr> {
            values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| errors.check(&format!("{key}[{i}]"), parse_ip_port(v)))
                .collect()
        };
        Some(DnsConfig {
            provider,
            propagation_timeout,
            resolvers: list("acme.dns-resolvers", self.resolvers, errors),
            nameservers: list("acme.dns-nameservers", self.nameservers, errors),
        })
    }

    fn rfc2136(&self, errors: &mut Errors) -> Option<DnsProvider> {
        let mut missing = false;
        for (key, set, what) in [
            (
                "acme.dns-server",
                self.server.is_some(),
                "the primary server",
            ),
            (
                "acme.dns-tsig-key",
                self.tsig_key.is_some(),
                "the TSIG key name",
            ),
            (
                "acme.dns-tsig-secret-file",
                self.tsig_secret_file.is_some(),
                "the file holding the TSIG secret",
            ),
        ] {
            if !set {
                errors.push(
                    key,
                    format!("required with dns-provider = \"rfc2136\": {what}"),
                );
                missing = true;
            }
        }
        if self.exec.is_some() {
            errors.push("acme.dns-exec", "set, but acme.dns-provider is rfc2136");
        }
        let server = errors.check("acme.dns-server", parse_server(self.server.unwrap_or("")));
        let algorithm = match self.tsig_algorithm.map(str::to_ascii_lowercase).as_deref() {
            None | Some("hmac-sha256") => Some(TsigAlgorithm::HmacSha256),
            Some("hmac-sha384") => Some(TsigAlgorithm::HmacSha384),
            Some("hmac-sha512") => Some(TsigAlgorithm::HmacSha512),
            Some(other) => {
                errors.push(
                    "acme.dns-tsig-algorithm",
                    format!(
                        "unsupported algorithm \"{other}\": expected hmac-sha256, hmac-sha384 or \
                         hmac-sha512"
                    ),
                );
                None
            }
        };
        let key_name = self.tsig_key.map(|k| k.trim_end_matches('.').to_string());
        // Read at each use, by berth-acme only: berth reads this file too, and the secret
        // is mounted where berth-acme runs, not necessarily where berth does.
        let secret_file = self.tsig_secret_file.map(PathBuf::from);
        if missing {
            return None;
        }
        Some(DnsProvider::Rfc2136 {
            server: server?,
            key_name: key_name?,
            algorithm: algorithm?,
            secret_file: secret_file?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(raw: &RawDns<'_>) -> (Option<DnsConfig>, Vec<String>) {
        let mut errors = Errors::default();
        let c = raw.validate(&mut errors);
        (
            c,
            errors
                .into_inner()
                .iter()
                .map(ToString::to_string)
                .collect(),
        )
    }

    #[test]
    fn servers() {
        assert_eq!(
            parse_server("ns1.example.com"),
            Ok(("ns1.example.com".into(), 53))
        );
        assert_eq!(
            parse_server("NS1.example.com:5353"),
            Ok(("ns1.example.com".into(), 5353))
        );
        assert_eq!(parse_server("192.0.2.1"), Ok(("192.0.2.1".into(), 53)));
        assert_eq!(
            parse_server("[2001:db8::1]:54"),
            Ok(("2001:db8::1".into(), 54))
        );
        for bad in ["", "ns1..example.com", "ns1:x", "a b", "ns1.example.com:0"] {
            assert!(parse_server(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tsig_secrets_bare_or_as_tsig_keygen_prints_them() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let bare = dir.path().join("bare");
        std::fs::write(&bare, "c2VjcmV0\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_tsig_secret(&bare).as_deref(), Ok(&b"secret"[..]));
        let clause = dir.path().join("clause");
        std::fs::write(
            &clause,
            "key \"berth\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0\";\n};\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_tsig_secret(&clause).as_deref(), Ok(&b"secret"[..]));
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "not base64 at all!").unwrap_or_else(|e| panic!("{e}"));
        let e = read_tsig_secret(&bad).expect_err("bad");
        assert!(
            e.contains("holds no base64") && !e.contains("not base64 at all"),
            "{e}"
        );
    }

    #[test]
    fn providers_and_their_keys() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let secret = dir.path().join("tsig");
        std::fs::write(&secret, "c2VjcmV0").unwrap_or_else(|e| panic!("{e}"));
        let secret_path = secret.display().to_string();
        let (c, e) = validate(&RawDns {
            provider: Some("rfc2136"),
            server: Some("127.0.0.1:5354"),
            tsig_key: Some("berth-acme."),
            tsig_secret_file: Some(&secret_path),
            ..RawDns::default()
        });
        assert!(e.is_empty(), "{e:?}");
        let c = c.unwrap_or_else(|| panic!("config"));
        assert_eq!(
            c.provider,
            DnsProvider::Rfc2136 {
                server: ("127.0.0.1".into(), 5354),
                key_name: "berth-acme".into(),
                algorithm: TsigAlgorithm::HmacSha256,
                secret_file: secret.clone(),
            }
        );
        assert_eq!(c.propagation_timeout, DEFAULT_PROPAGATION_TIMEOUT);

        let (c, e) = validate(&RawDns {
            provider: Some("rfc2136"),
            tsig_algorithm: Some("hmac-md5"),
            ..RawDns::default()
        });
        assert!(c.is_none());
        for key in [
            "acme.dns-server: required",
            "acme.dns-tsig-key: required",
            "acme.dns-tsig-secret-file: required",
            "acme.dns-tsig-algorithm: unsupported algorithm \"hmac-md5\"",
        ] {
            assert!(e.iter().any(|m| m.starts_with(key)), "{key} in {e:?}");
        }

        let resolvers = vec!["192.0.2.1".to_string(), "x".to_string()];
        let (_, e) = validate(&RawDns {
            provider: Some("exec"),
            exec: Some("dns-hook"),
            propagation_timeout: Some("0s"),
            resolvers: &resolvers,
            ..RawDns::default()
        });
        let key = "acme.dns-exec: \"dns-hook\": write the program's absolute path";
        assert!(e.iter().any(|m| m.starts_with(key)), "{key} in {e:?}");
        let (c, e) = validate(&RawDns {
            provider: Some("exec"),
            exec: Some("/bin/hook"),
            propagation_timeout: Some("30s"),
            resolvers: &resolvers,
            ..RawDns::default()
        });
        assert!(
            e.iter()
                .any(|m| m.starts_with("acme.dns-resolvers[1]: invalid address \"x\"")),
            "{e:?}"
        );
        let c = c.unwrap_or_else(|| panic!("config"));
        assert_eq!(
            c.resolvers,
            vec!["192.0.2.1:53".parse().unwrap_or_else(|e| panic!("{e}"))]
        );
        assert_eq!(c.propagation_timeout, Duration::from_secs(30));

        let (c, e) = validate(&RawDns {
            provider: Some("route53"),
            ..RawDns::default()
        });
        assert!(
            c.is_none() && e[0].contains("unknown provider \"route53\""),
            "{e:?}"
        );
        let (_, e) = validate(&RawDns {
            server: Some("127.0.0.1"),
            ..RawDns::default()
        });
        assert!(
            e[0].starts_with("acme.dns-server: set, but acme.dns-provider is not"),
            "{e:?}"
        );
    }
}
