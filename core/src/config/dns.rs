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
//! dns-names = ["*.example.com"]         # names containers may have proved with these credentials
//! ```
//!
//! Routes in the config file are the operator's own and may use DNS-01 for any name. A
//! container asks through its labels, and with DNS-01 nothing but the DNS credentials limits
//! which names it could get (HTTP-01 at least needs the name to point at this host): a
//! container's DNS-01 certificate may name only what `dns-names` allows.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::units::parse_duration;
use crate::errors::Errors;

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
    /// Names containers may ask for by DNS-01 (`example.com`, or `*.example.com` for every
    /// name below it, wildcards included); empty: none.
    pub names: Vec<String>,
}

impl DnsConfig {
    /// Whether a container may have `host` (a name or `*.name`) proved by DNS-01.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.names
            .iter()
            .any(|allowed| match allowed.strip_prefix('*') {
                Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
                None => *allowed == host,
            })
    }
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
    /// `dns-names`.
    pub names: &'a [String],
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

/// What a TSIG key file holds: the secret, and with BIND's key clause the key's name and
/// algorithm too.
#[derive(Debug, PartialEq, Eq)]
pub struct TsigFile {
    /// The decoded secret.
    pub secret: Vec<u8>,
    /// `key "<name>"`, when the file is a key clause.
    pub name: Option<String>,
    /// `algorithm <name>;`, when the file is a key clause.
    pub algorithm: Option<String>,
}

/// `text` without its comments (`#` or `//` to the end of the line), outside quoted strings
/// only: a base64 secret may hold `//`.
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let comment = !quoted && (c == '#' || (c == '/' && chars.peek() == Some(&'/')));
        if comment {
            while chars.peek().is_some_and(|&n| n != '\n') {
                chars.next();
            }
            continue;
        }
        quoted ^= c == '"';
        out.push(c);
    }
    out
}

/// The statements of a key clause (`key "n" { algorithm a; secret "s"; };`), as BIND's tools
/// write it, comments (`#`, `//`) and other clauses around it allowed: the key name, and each
/// statement's keyword with its (unquoted) value.
fn key_clause(text: &str) -> Option<(String, Vec<(String, String)>)> {
    let text = without_comments(text);
    let start = text.match_indices("key").map(|(i, _)| i).find(|&i| {
        (i == 0 || !text.as_bytes()[i - 1].is_ascii_alphanumeric())
            && text[i + 3..].starts_with(char::is_whitespace)
    })?;
    let rest = &text[start + 3..];
    let (head, body) = rest.split_once('{')?;
    let name = head
        .trim()
        .trim_matches('"')
        .trim_end_matches('.')
        .to_string();
    let body = body.split_once('}').map_or(body, |(b, _)| b);
    let statements = body
        .split(';')
        .filter_map(|st| {
            let st = st.trim();
            let (keyword, value) = st.split_once(char::is_whitespace)?;
            Some((
                keyword.to_ascii_lowercase(),
                value.trim().trim_matches('"').to_string(),
            ))
        })
        .collect();
    Some((name, statements))
}

/// Reads a TSIG key file: the bare base64 secret, or BIND's key clause as `tsig-keygen`
/// prints it (`key "name" { algorithm hmac-sha256; secret "..."; };`).
///
/// # Errors
/// A message naming the file (never its contents) when it cannot be read or decoded.
pub fn read_tsig_file(path: &std::path::Path) -> Result<TsigFile, String> {
    use base64::Engine;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read \"{}\": {e}", path.display()))?;
    let (secret, name, algorithm) = match key_clause(&text) {
        Some((name, statements)) => {
            let find = |k: &str| {
                statements
                    .iter()
                    .find(|(kw, _)| kw == k)
                    .map(|(_, v)| v.clone())
            };
            (
                find("secret").unwrap_or_default(),
                Some(name),
                find("algorithm"),
            )
        }
        None => (text.trim().to_string(), None, None),
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
    Ok(TsigFile {
        secret: bytes,
        name,
        algorithm: algorithm.map(|a| a.to_ascii_lowercase()),
    })
}

impl TsigAlgorithm {
    /// The name BIND and the RFC use.
    pub fn as_str(self) -> &'static str {
        match self {
            TsigAlgorithm::HmacSha256 => "hmac-sha256",
            TsigAlgorithm::HmacSha384 => "hmac-sha384",
            TsigAlgorithm::HmacSha512 => "hmac-sha512",
        }
    }
}

/// The secret of `path` for the key `key_name` with `algorithm`: a key clause that names
/// another key or algorithm is refused, with both named, rather than sent to the server to
/// come back as BADKEY.
///
/// # Errors
/// As [`read_tsig_file`], or the mismatch.
pub fn read_tsig_secret(
    path: &std::path::Path,
    key_name: &str,
    algorithm: TsigAlgorithm,
) -> Result<Vec<u8>, String> {
    let file = read_tsig_file(path)?;
    let key_name = key_name.trim_end_matches('.');
    if let Some(name) = file
        .name
        .as_deref()
        .filter(|n| !n.eq_ignore_ascii_case(key_name))
    {
        return Err(format!(
            "\"{}\" holds the key \"{name}\", and acme.dns-tsig-key is \"{key_name}\"",
            path.display()
        ));
    }
    if let Some(a) = file
        .algorithm
        .as_deref()
        .filter(|a| *a != algorithm.as_str())
    {
        return Err(format!(
            "\"{}\" holds a {a} key, and acme.dns-tsig-algorithm is {}",
            path.display(),
            algorithm.as_str()
        ));
    }
    Ok(file.secret)
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
                    ("acme.dns-names", !self.names.is_empty()),
                    ("acme.dns-nameservers", !self.nameservers.is_empty()),
                    ("acme.dns-resolvers", !self.resolvers.is_empty()),
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
        let names = self
            .names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let key = format!("acme.dns-names[{i}]");
                match crate::route::HostPattern::parse(n).map(|p| p.certificate_name()) {
                    Ok(Some(name)) => Some(name),
                    Ok(None) => {
                        errors.push(
                            key,
                            format!("\"{n}\": write a name or *.name (no regex, no trailing *)"),
                        );
                        None
                    }
                    Err(e) => {
                        errors.push(key, e);
                        None
                    }
                }
            })
            .collect();
        Some(DnsConfig {
            provider,
            propagation_timeout,
            resolvers: list("acme.dns-resolvers", self.resolvers, errors),
            nameservers: list("acme.dns-nameservers", self.nameservers, errors),
            names,
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
        let sha256 = TsigAlgorithm::HmacSha256;
        let bare = dir.path().join("bare");
        std::fs::write(&bare, "c2VjcmV0\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            read_tsig_secret(&bare, "k", sha256).as_deref(),
            Ok(&b"secret"[..])
        );
        // A key whose name holds the word "secret" is read by its statements, not by a search.
        let clause = dir.path().join("clause");
        std::fs::write(
            &clause,
            "key \"acme-secret\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0\";\n};\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            read_tsig_secret(&clause, "acme-secret.", sha256).as_deref(),
            Ok(&b"secret"[..])
        );
        let e = read_tsig_secret(&clause, "other", sha256).expect_err("name");
        assert!(
            e.contains("holds the key \"acme-secret\", and acme.dns-tsig-key is \"other\""),
            "{e}"
        );
        let e =
            read_tsig_secret(&clause, "acme-secret", TsigAlgorithm::HmacSha512).expect_err("alg");
        assert!(
            e.contains("holds a hmac-sha256 key, and acme.dns-tsig-algorithm is hmac-sha512"),
            "{e}"
        );
        // ddns-confgen's output: comments around the clause, and another clause after it.
        let confgen = dir.path().join("confgen");
        std::fs::write(
            &confgen,
            "# To activate this key, place the following in named.conf:\n\
             key \"ddns-key.example.com\" {\n\talgorithm hmac-sha256;\n\
             \tsecret \"c2VjcmV0\"; // the secret\n};\n\
             # zone \"example.com\" { update-policy { grant ddns-key.example.com zonesub ANY; }; };\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            read_tsig_secret(&confgen, "ddns-key.example.com", sha256).as_deref(),
            Ok(&b"secret"[..])
        );
        // A secret holding "//" (base64 of 0xff bytes) is no comment inside its quotes.
        let slashes = dir.path().join("slashes");
        std::fs::write(
            &slashes,
            "key \"acme-secret\" {\n\talgorithm hmac-sha256;\n\tsecret \"////AQID\"; // note\n};\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            read_tsig_secret(&slashes, "acme-secret", sha256).as_deref(),
            Ok(&[0xff, 0xff, 0xff, 1, 2, 3][..])
        );
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "not base64 at all!").unwrap_or_else(|e| panic!("{e}"));
        let e = read_tsig_secret(&bad, "k", sha256).expect_err("bad");
        assert!(e.contains("holds no base64"), "{e}");
        assert!(
            !e.contains("not base64 at all"),
            "the file's text is not quoted: {e}"
        );
    }

    #[test]
    fn containers_may_use_dns_01_for_the_allowed_names_only() {
        let names = vec!["*.apps.example.com".to_string(), "Example.com".to_string()];
        let exec = "/bin/hook";
        let (c, e) = validate(&RawDns {
            provider: Some("exec"),
            exec: Some(exec),
            names: &names,
            ..RawDns::default()
        });
        assert!(e.is_empty(), "{e:?}");
        let c = c.unwrap_or_else(|| panic!("config"));
        for (host, allowed) in [
            ("a.apps.example.com", true),
            ("*.apps.example.com", true),
            ("x.y.apps.example.com", true),
            ("apps.example.com", false),
            ("evilapps.example.com", false),
            ("example.com", true),
            ("EXAMPLE.com", true),
            ("*.example.com", false),
            ("mail.example.com", false),
        ] {
            assert_eq!(c.allows(host), allowed, "{host}");
        }
        let bad = vec!["~^a$".to_string()];
        let (_, e) = validate(&RawDns {
            provider: Some("exec"),
            exec: Some(exec),
            names: &bad,
            ..RawDns::default()
        });
        assert!(e[0].starts_with("acme.dns-names[0]: \"~^a$\""), "{e:?}");
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
        // berth validates the same file and need not read the secret: a file it cannot
        // read is berth-acme's business, at use.
        let (c, e) = validate(&RawDns {
            provider: Some("rfc2136"),
            server: Some("127.0.0.1"),
            tsig_key: Some("k"),
            tsig_secret_file: Some("/run/secrets/not-here"),
            ..RawDns::default()
        });
        assert!(c.is_some() && e.is_empty(), "{e:?}");

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
        let (c, e) = validate(&RawDns {
            provider: Some("exec"),
            exec: Some("/bin/hook"),
            propagation_timeout: Some("0s"),
            ..RawDns::default()
        });
        assert!(c.is_none());
        assert!(
            e[0].starts_with("acme.dns-propagation-timeout: must be at least 1s"),
            "{e:?}"
        );
        let (_, e) = validate(&RawDns {
            provider: Some("exec"),
            exec: Some("dns-hook"),
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
