//! Test certificates (a CA of our own, made with rcgen) and the real TLS clients the tests
//! check berth with: `openssl s_client` and `curl`.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// A certificate authority for tests.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A PEM certificate chain and key.
pub struct Pem {
    /// Leaf certificate (and nothing else: the CA is the trust anchor).
    pub cert: String,
    /// Private key.
    pub key: String,
}

impl TestCa {
    /// A new CA named `name`.
    ///
    /// # Panics
    /// If rcgen cannot make a certificate (never with these parameters).
    #[allow(clippy::unwrap_used)]
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A rustls client configuration (ring, TLS 1.2/1.3) that trusts this CA alone.
    ///
    /// # Panics
    /// If rustls refuses the CA certificate or the protocol versions (never with these).
    #[allow(clippy::unwrap_used)]
    pub fn client_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
    }

    /// A leaf for `names` (first one is also the CN), signed by this CA.
    ///
    /// # Panics
    /// If a name is not a valid DNS name for rcgen.
    #[allow(clippy::unwrap_used)]
    pub fn issue(&self, names: &[&str]) -> Pem {
        self.issue_with(names, |_| {})
    }

    /// A leaf for `names` valid from `not_before` until `not_after`.
    ///
    /// # Panics
    /// If a name is not a valid DNS name for rcgen.
    pub fn issue_valid(
        &self,
        names: &[&str],
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Pem {
        self.issue_with(names, |p| {
            p.not_before = not_before;
            p.not_after = not_after;
        })
    }

    #[allow(clippy::unwrap_used)]
    fn issue_with(
        &self,
        names: &[&str],
        adjust: impl FnOnce(&mut rcgen::CertificateParams),
    ) -> Pem {
        let owned: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(owned).unwrap();
        adjust(&mut params);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// Runs `openssl s_client` against `addr` with extra arguments and no input.
///
/// # Errors
/// When openssl cannot be run.
pub fn s_client(addr: SocketAddr, args: &[&str]) -> io::Result<Output> {
    Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(args)
        .stdin(Stdio::null())
        .output()
}

/// The subject and SANs of the certificate berth serves for `sni` (`None`: no SNI), as
/// `openssl x509 -noout -subject -ext subjectAltName` prints them; `Err` with openssl's
/// output when the handshake fails.
///
/// # Errors
/// When the handshake fails or openssl cannot be run.
pub fn served_cert(addr: SocketAddr, sni: Option<&str>) -> Result<String, String> {
    let mut args = vec!["-showcerts"];
    match sni {
        Some(name) => args.extend(["-servername", name]),
        None => args.push("-noservername"),
    }
    let out = s_client(addr, &args).map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let begin = "-----BEGIN CERTIFICATE-----";
    let end = "-----END CERTIFICATE-----";
    let (Some(b), Some(e)) = (stdout.find(begin), stdout.find(end)) else {
        return Err(format!(
            "no certificate served: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        ));
    };
    let pem = &stdout[b..e + end.len()];
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-ext", "subjectAltName"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = x509.stdin.take() {
        stdin.write_all(pem.as_bytes()).map_err(|e| e.to_string())?;
    }
    let parsed = x509.wait_with_output().map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&parsed.stdout).into_owned())
}

/// Writes a certificate pair as `<dir>/<name>.crt` and `.key`, each atomically.
///
/// # Errors
/// On file-system errors.
pub fn install(dir: &Path, name: &str, pem: &Pem) -> io::Result<()> {
    replace(&dir.join(format!("{name}.key")), pem.key.as_bytes())?;
    replace(&dir.join(format!("{name}.crt")), pem.cert.as_bytes())
}

/// Replaces a file the way certificate tools do: write a temporary file, rename it over.
///
/// # Errors
/// On file-system errors.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// An HTTPS origin: `openssl s_server -www` on a free loopback port, serving `pem` (a `GET`
/// gets `200` and a status page; it reads no server name, so what is verified is up to the
/// client). Stopped when dropped.
pub struct TlsOrigin {
    /// Where it listens.
    pub addr: SocketAddr,
    child: std::process::Child,
    _files: tempfile::TempDir,
}

impl TlsOrigin {
    /// Starts one and waits until it accepts connections.
    ///
    /// # Errors
    /// When openssl cannot be started or never listens.
    pub fn start(pem: &Pem) -> io::Result<TlsOrigin> {
        let files = tempfile::tempdir()?;
        let (cert, key) = (files.path().join("c.pem"), files.path().join("k.pem"));
        std::fs::write(&cert, &pem.cert)?;
        std::fs::write(&key, &pem.key)?;
        let port = crate::free_port();
        let mut child = Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if let Err(e) = crate::process::wait_for_port(addr, std::time::Duration::from_secs(10)) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(TlsOrigin {
            addr,
            child,
            _files: files,
        })
    }
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
