//! A real ACME server for tests: Debian's `pebble`, with `pebble-challtestsrv` as its only
//! DNS server (every name resolves to 127.0.0.1), so HTTP-01 validation connects to the
//! `http_port` it is given — berth's plain HTTP listener. Pebble's own TLS certificate comes
//! from a test CA made here; the root that signs issued certificates is read from pebble's
//! management API.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::{free_port, wait_for_port};
use crate::tls::TestCa;

/// A running pebble and its DNS server; both killed when dropped.
pub struct Pebble {
    pebble: Option<Child>,
    /// pebble-challtestsrv, unless pebble asks another DNS server.
    dns: Option<Child>,
    /// The ACME directory URL.
    pub directory: String,
    /// PEM of the CA that signed pebble's own TLS certificate (for `acme.ca-bundle`).
    pub tls_ca: PathBuf,
    /// Pebble's listener.
    pub addr: SocketAddr,
    /// Pebble's management listener (`/roots/0`).
    pub management: SocketAddr,
    dns_addr: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    dir: tempfile::TempDir,
}

/// External account binding keys pebble is told to require, `(kid, base64url HMAC key)`.
pub const EAB: (&str, &str) = (
    "kid-berth",
    "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W",
);

impl Pebble {
    /// Starts pebble validating HTTP-01 on `http_port`; with `require_eab`, accounts need the
    /// [`EAB`] binding.
    ///
    /// # Errors
    /// When pebble or its DNS server cannot be started (install `pebble`).
    pub fn start(http_port: u16, require_eab: bool) -> io::Result<Pebble> {
        Pebble::start_at(
            std::net::IpAddr::from([127, 0, 0, 1]),
            std::net::IpAddr::from([127, 0, 0, 1]),
            http_port,
            require_eab,
            None,
        )
    }

    /// Starts pebble listening on `listen` (its directory and management API), with every
    /// name resolving to `validate_at`, where it validates HTTP-01 on `http_port` (e.g. a
    /// Swarm node's address, from a berth-acme that runs on that node); certificates valid for
    /// `validity_secs` when given (pebble's default is five years).
    ///
    /// # Errors
    /// When pebble or its DNS server cannot be started (install `pebble`).
    pub fn start_at(
        listen: std::net::IpAddr,
        validate_at: std::net::IpAddr,
        http_port: u16,
        require_eab: bool,
        validity_secs: Option<u64>,
    ) -> io::Result<Pebble> {
        let dir = tempfile::tempdir()?;
        let dns_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let dns_log = std::fs::File::create(dir.path().join("challtestsrv.log"))?;
        let dns = crate::process::tied("pebble-challtestsrv")
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args([
                "-dns01",
                &dns_addr.to_string(),
                "-defaultIPv4",
                &validate_at.to_string(),
            ])
            .args(["-defaultIPv6", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .stdout(dns_log.try_clone()?)
            .stderr(dns_log)
            .stdin(Stdio::null())
            .spawn()?;
        Pebble::start_in(
            dir,
            listen,
            (Some(dns), dns_addr),
            http_port,
            require_eab,
            validity_secs,
        )
    }

    /// Starts pebble on 127.0.0.1 asking `dns` (e.g. a [`crate::bind::Bind`]) for every name:
    /// HTTP-01 validates on `http_port` of the address it answers, DNS-01 reads its TXT
    /// records; certificates valid for `validity_secs` when given.
    ///
    /// # Errors
    /// When pebble cannot be started.
    pub fn start_with_dns(
        dns: SocketAddr,
        http_port: u16,
        validity_secs: Option<u64>,
    ) -> io::Result<Pebble> {
        Pebble::start_in(
            tempfile::tempdir()?,
            std::net::IpAddr::from([127, 0, 0, 1]),
            (None, dns),
            http_port,
            false,
            validity_secs,
        )
    }

    fn start_in(
        dir: tempfile::TempDir,
        listen: std::net::IpAddr,
        (dns, dns_addr): (Option<Child>, SocketAddr),
        http_port: u16,
        require_eab: bool,
        validity_secs: Option<u64>,
    ) -> io::Result<Pebble> {
        let ca = TestCa::new("pebble test CA");
        let listen_name = listen.to_string();
        let pem = ca.issue(&["localhost", "127.0.0.1", &listen_name]);
        let tls_ca = dir.path().join("pebble-ca.pem");
        std::fs::write(&tls_ca, ca.pem())?;
        let cert = dir.path().join("pebble.crt");
        let key = dir.path().join("pebble.key");
        std::fs::write(&cert, &pem.cert)?;
        std::fs::write(&key, &pem.key)?;

        let addr = SocketAddr::new(listen, free_port());
        let management = SocketAddr::new(listen, free_port());
        let eab = if require_eab {
            format!(
                ",\n    \"externalAccountBindingRequired\": true,\n    \"externalAccountMACKeys\": {{\"{}\": \"{}\"}}",
                EAB.0, EAB.1
            )
        } else {
            ",\n    \"externalAccountBindingRequired\": false".to_string()
        };
        let validity = validity_secs
            .map(|v| format!(",\n    \"certificateValidityPeriod\": {v}"))
            .unwrap_or_default();
        let config = dir.path().join("pebble.json");
        std::fs::write(
            &config,
            format!(
                "{{\"pebble\": {{\n    \"listenAddress\": \"{addr}\",\n    \"managementListenAddress\": \"{management}\",\n    \
                 \"certificate\": \"{}\",\n    \"privateKey\": \"{}\",\n    \"httpPort\": {http_port},\n    \
                 \"tlsPort\": {},\n    \"ocspResponderURL\": \"\"{eab}{validity}\n}}}}\n",
                cert.display(),
                key.display(),
                free_port()
            ),
        )?;
        let log = dir.path().join("pebble.log");
        let mut pebble = Pebble {
            pebble: None,
            dns,
            directory: format!("https://{addr}/dir"),
            tls_ca,
            addr,
            management,
            dns_addr,
            config,
            log,
            dir,
        };
        pebble.resume()?;
        Ok(pebble)
    }

    /// Starts (again) the pebble process, e.g. after [`Pebble::stop`].
    ///
    /// # Errors
    /// When it cannot be started or does not listen within 20 s.
    pub fn resume(&mut self) -> io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = crate::process::tied("pebble")
            .arg("-config")
            .arg(&self.config)
            .args(["-dnsserver", &self.dns_addr.to_string()])
            // Validate at once rather than after pebble's random 0-15 s sleep.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()?;
        self.pebble = Some(child);
        wait_for_port(self.addr, Duration::from_secs(20))?;
        wait_for_port(self.management, Duration::from_secs(20))
    }

    /// Stops the pebble process (its DNS server keeps running).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.pebble.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Writes the root that signs issued certificates to a file and returns its path. Pebble
    /// makes a new root each time it starts.
    ///
    /// # Errors
    /// When the management API does not answer.
    pub fn issuing_root(&self) -> io::Result<PathBuf> {
        let out = Command::new("curl")
            .args(["-sSf", "--cacert"])
            .arg(&self.tls_ca)
            .arg(format!("https://{}/roots/0", self.management))
            .output()?;
        if !out.status.success() || !out.stdout.starts_with(b"-----BEGIN CERTIFICATE-----") {
            return Err(io::Error::other(format!(
                "pebble /roots/0: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let path = self.dir.path().join("issuing-root.pem");
        std::fs::write(&path, &out.stdout)?;
        Ok(path)
    }

    /// Everything pebble has logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Orders pebble has accepted (`Added order` lines in its log).
    pub fn orders(&self) -> usize {
        // Orders pebble accepted: a POST refused for a stale nonce (pebble refuses 5 % on
        // purpose) and retried is one order, not two.
        self.log().matches("Added order \"").count()
    }

    /// Certificates pebble has issued (`Issued certificate serial` lines in its log). An order
    /// that failed its validation and was placed again counts twice in [`Pebble::orders`], once
    /// here.
    pub fn issued(&self) -> usize {
        self.log().matches("Issued certificate serial ").count()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        if let Some(dns) = self.dns.as_mut() {
            let _ = dns.kill();
            let _ = dns.wait();
        }
    }
}
