//! A real authoritative DNS server for tests: Debian's `bind9` (`named`), serving one zone
//! on port 53 of an address of its own in 127.0.53.0/24 (so its NS record can name it and
//! DNS clients find it the standard way), with a TSIG key allowed to update TXT records
//! below the zone, as a DNS-01 set-up would have. Every name in the zone resolves to
//! 127.0.0.1. `named` listens only on addresses an interface carries, so the address is
//! added to `lo` (root) for the server's life; `named` is killed and the address removed
//! when this is dropped.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use crate::process::wait_for_port;

/// The name of the TSIG key the zone accepts updates from.
pub const KEY_NAME: &str = "berth-acme";

static NEXT: AtomicU8 = AtomicU8::new(0);

/// Adds an address of 127.0.53.0/24 to `lo` that no other server holds (one another test
/// process added, or a dead run left behind, is skipped) and returns it.
fn claim_address() -> io::Result<IpAddr> {
    let start = std::process::id().wrapping_mul(7);
    for _ in 0..250 {
        let n = u32::from(NEXT.fetch_add(1, Ordering::Relaxed));
        let host = 1 + u8::try_from(start.wrapping_add(n) % 250).unwrap_or(0);
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 53, host));
        let added = Command::new("ip")
            .args(["addr", "add", &format!("{ip}/32"), "dev", "lo"])
            .output()?;
        if added.status.success() {
            return Ok(ip);
        }
        let stderr = String::from_utf8_lossy(&added.stderr);
        if !stderr.contains("File exists") {
            return Err(io::Error::other(format!(
                "ip addr add {ip}/32 dev lo: {stderr}"
            )));
        }
    }
    Err(io::Error::other("no free address left in 127.0.53.0/24"))
}

/// A running `named`.
pub struct Bind {
    child: Child,
    /// Where it answers (port 53).
    pub addr: SocketAddr,
    /// The zone it is authoritative for, e.g. `w7.test`.
    pub zone: String,
    /// The TSIG key as `tsig-keygen` wrote it (BIND's `key` clause).
    pub key_file: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Bind {
    /// Starts `named` for `zone` (`* IN A 127.0.0.1`, NS and SOA naming itself).
    ///
    /// # Errors
    /// When `named` or `tsig-keygen` cannot run (install `bind9`) or it does not answer
    /// within 20 s.
    pub fn start(zone: &str) -> io::Result<Bind> {
        let dir = tempfile::tempdir()?;
        let path = dir.path();
        let addr = SocketAddr::new(claim_address()?, 53);
        let ip = addr.ip();
        let keygen = Command::new("tsig-keygen")
            .args(["-a", "hmac-sha256", KEY_NAME])
            .output()?;
        if !keygen.status.success() {
            return Err(io::Error::other(format!(
                "tsig-keygen: {}",
                String::from_utf8_lossy(&keygen.stderr)
            )));
        }
        let key_clause = String::from_utf8_lossy(&keygen.stdout).to_string();
        if !key_clause.contains("secret \"") {
            return Err(io::Error::other("tsig-keygen printed no secret"));
        }
        let key_file = path.join("tsig.key");
        std::fs::write(&key_file, &key_clause)?;
        std::fs::write(
            path.join("zone.db"),
            format!(
                "$TTL 60\n@ IN SOA ns1.{zone}. hostmaster.{zone}. 1 60 60 600 60\n\
                 @ IN NS ns1.{zone}.\nns1 IN A {ip}\n@ IN A 127.0.0.1\n* IN A 127.0.0.1\n"
            ),
        )?;
        let dir_text = path.display();
        let conf = path.join("named.conf");
        std::fs::write(
            &conf,
            format!(
                "options {{\n  directory \"{dir_text}\";\n  pid-file \"{dir_text}/named.pid\";\n  \
                 listen-on port 53 {{ {ip}; }};\n  listen-on-v6 {{ none; }};\n  recursion no;\n  \
                 dnssec-validation no;\n  notify no;\n  allow-query {{ any; }};\n}};\n\
                 include \"{}\";\n\
                 zone \"{zone}\" {{\n  type primary;\n  file \"{dir_text}/zone.db\";\n  \
                 update-policy {{ grant {KEY_NAME} wildcard *.{zone} TXT; }};\n}};\n",
                key_file.display()
            ),
        )?;
        let log = path.join("named.log");
        let out = std::fs::File::create(&log)?;
        let child = crate::process::tied("named")
            .args(["-g", "-u", "root", "-c"])
            .arg(&conf)
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()?;
        let bind = Bind {
            child,
            addr,
            zone: zone.to_string(),
            key_file,
            log,
            _dir: dir,
        };
        if let Err(e) = wait_for_port(addr, Duration::from_secs(20)) {
            let log = bind.log();
            let tail = &log[log.len().saturating_sub(2000)..];
            return Err(io::Error::other(format!("named on {addr}: {e}\n...{tail}")));
        }
        Ok(bind)
    }

    /// Everything `named` logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The TXT values the server answers for `name`, as `dig +short` prints them (quotes
    /// removed).
    ///
    /// # Errors
    /// When `dig` cannot run or fails.
    pub fn txt(&self, name: &str) -> io::Result<Vec<String>> {
        let out = Command::new("dig")
            .args(["+short", "+time=2", "+tries=1", "-p", "53"])
            .arg(format!("@{}", self.addr.ip()))
            .args([name, "TXT"])
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "dig {name}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().trim_matches('"').to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// Adds a TXT record with the zone's key, as another client of the zone would.
    ///
    /// # Errors
    /// When `nsupdate` fails.
    pub fn add_txt(&self, name: &str, value: &str) -> io::Result<()> {
        use std::io::Write;
        let mut child = Command::new("nsupdate")
            .arg("-k")
            .arg(&self.key_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            write!(
                stdin,
                "server {} 53\nupdate add {name} 60 TXT \"{value}\"\nsend\n",
                self.addr.ip()
            )?;
        }
        let out = child.wait_with_output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "nsupdate: {}",
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }

    /// Writes a file holding `secret` as a TSIG secret (for a wrong-key test).
    ///
    /// # Errors
    /// When it cannot be written.
    pub fn write_secret(dir: &Path, secret: &str) -> io::Result<PathBuf> {
        let path = dir.join("tsig.secret");
        std::fs::write(&path, format!("{secret}\n"))?;
        Ok(path)
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args([
                "addr",
                "del",
                &format!("{}/32", self.addr.ip()),
                "dev",
                "lo",
            ])
            .output();
    }
}
