//! The certificate the benchmarks' proxies serve: a test CA and a leaf for `bench.test`,
//! installed in a berth certs-dir and written as files for nginx, HAProxy and Caddy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use berth_testkit::tls::{install, TestCa};

/// The CA and where the leaf lies.
pub struct BenchPki {
    /// The CA that issued the leaf (for clients, and for renewals).
    pub ca: TestCa,
    /// berth's `tls.certs-dir`, with the leaf installed for `bench.test`.
    pub certs: PathBuf,
    /// The leaf's certificate and key as PEM files.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Certificate and key in one PEM file (HAProxy's `crt`).
    pub combined: PathBuf,
}

impl BenchPki {
    /// Issues a leaf for `names` (the first is the one berth installs) under `dir`.
    ///
    /// # Errors
    /// When a file cannot be written.
    pub fn new(dir: &Path, names: &[&str]) -> Result<BenchPki, String> {
        let certs = dir.join("certs");
        std::fs::create_dir(&certs).map_err(|e| e.to_string())?;
        let ca = TestCa::new("bench CA");
        let leaf = ca.issue(names);
        install(
            &certs,
            names.first().copied().unwrap_or("bench.test"),
            &leaf,
        )
        .map_err(|e| e.to_string())?;
        let (cert, key, combined) = (
            dir.join("leaf.crt"),
            dir.join("leaf.key"),
            dir.join("leaf.pem"),
        );
        std::fs::write(&cert, &leaf.cert).map_err(|e| e.to_string())?;
        std::fs::write(&key, &leaf.key).map_err(|e| e.to_string())?;
        std::fs::write(&combined, format!("{}{}", leaf.cert, leaf.key))
            .map_err(|e| e.to_string())?;
        Ok(BenchPki {
            ca,
            certs,
            cert,
            key,
            combined,
        })
    }

    /// A berth config serving `bench.test` over HTTPS (no redirect) from this certs-dir,
    /// with the registry profile in front of `upstream`; `settings` (TOML tables) goes
    /// before the route.
    pub fn berth_config(&self, upstream: SocketAddr, settings: &str) -> String {
        format!(
            "[listen]\nhttp = \"{{http}}\"\nhttps = \"{{https}}\"\n[docker]\nenabled = false\n\
             [tls]\ncerts-dir = \"{}\"\n{settings}\
             [[route]]\nhost = \"bench.test\"\nupstreams = [\"{upstream}\"]\nprofile = \"registry\"\nhttps = \"noredirect\"\n",
            self.certs.display(),
        )
    }
}
