//! Path-scoped protections against upstreams that read paths their own way: a real servlet
//! container (Debian's Tomcat, which removes `;parameters` from each segment) and a real Node
//! app (which routes on the WHATWG reading: `\` as `/`, a leading `//` as an authority), each
//! behind an open route `/` and a protected route `/admin` (basic auth, an allowlist, forward
//! auth), over HTTP/1.1 and HTTP/2.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use berth_testkit::auth_service::AuthService;
use berth_testkit::path_apps::PathApp;
use berth_testkit::tls::{install, TestCa};
use common::{berth, route};

/// `curl --path-as-is` over HTTPS (HTTP/1.1 or HTTP/2): the status, the HTTP version and the
/// body.
fn get(https: SocketAddr, ca: &Path, host: &str, path: &str, version: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--path-as-is", version])
        .args(["-w", "\n%{http_version} %{http_code}"])
        .arg("--cacert")
        .arg(ca)
        .args(["--resolve", &format!("{host}:{}:127.0.0.1", https.port())])
        .arg(format!("https://{host}:{}{path}", https.port()))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {path}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.to_string(), body.to_string())
}

/// The same request straight to the app, to show what its reading of `path` serves.
fn direct(app: SocketAddr, path: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--path-as-is"])
        .arg(format!("http://{app}{path}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn protected_prefixes_hold_against_servlet_and_whatwg_readings() {
    let tomcat = PathApp::tomcat().unwrap();
    let node = PathApp::node().unwrap();
    let auth = AuthService::start();
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let out = Command::new("htpasswd")
        .arg("-cbB")
        .arg(&htpasswd)
        .args(["alice", "correct horse"])
        .output()
        .expect("htpasswd must be installed (scripts/test installs apache2-utils)");
    assert!(out.status.success());

    // The probes, each with the app whose reading turns it into /admin/secret.txt.
    let probes: [(&str, &PathApp, &[&str]); 2] = [
        (
            "tomcat",
            &tomcat,
            &[
                "/;/admin/secret.txt",
                "/;x/admin/secret.txt",
                "/index.txt/..;/admin/secret.txt",
            ],
        ),
        (
            "node",
            &node,
            &[
                "/public\\..\\admin/secret.txt",
                "//evil.test/admin/secret.txt",
                "/\\evil.test/admin/secret.txt",
            ],
        ),
    ];
    let protections = [
        (
            "basic",
            format!("auth.htpasswd = \"{}\"", htpasswd.display()),
            "401",
        ),
        // The test client is 127.0.0.1.
        ("allow", "allow = [\"10.0.0.0/8\"]".to_string(), "403"),
        (
            "forward",
            format!("auth.forward = \"{}\"", auth.url()),
            "401",
        ),
    ];

    let ca = TestCa::new("path readings test CA");
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let mut routes = String::new();
    let mut hosts = Vec::new();
    for (app_name, app, _) in &probes {
        for (kind, protection, _) in &protections {
            let host = format!("{kind}-{app_name}.test");
            install(&certs, &host, &ca.issue(&[&host])).unwrap();
            routes.push_str(&route(&host, &[app.addr], ""));
            routes.push_str(&route(
                &host,
                &[app.addr],
                &format!("path = \"/admin\"\n{protection}"),
            ));
            hosts.push(host);
        }
    }
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let b = berth(&format!(
        "[listen]\nhttp = \"{{http}}\"\nhttps = \"{{https}}\"\n\n[docker]\nenabled = false\n\n\
         [tls]\ncerts-dir = \"{}\"\ndefault-cert = \"none\"\n\n{routes}",
        certs.display()
    ));
    let https = b.https.unwrap();

    for (app_name, app, spellings) in &probes {
        for spelling in *spellings {
            assert_eq!(
                direct(app.addr, spelling),
                "admin secret",
                "{app_name} reads {spelling:?} as /admin/secret.txt\n{}",
                app.log()
            );
        }
        for (kind, _, refused) in &protections {
            let host = format!("{kind}-{app_name}.test");
            for version in ["--http1.1", "--http2"] {
                let v = if version == "--http2" { "2" } else { "1.1" };
                let (status, body) = get(https, &ca_file, &host, "/admin/secret.txt", version);
                assert_eq!(status, format!("{v} {refused}"), "{host} /admin: {body}");
                let (status, body) = get(https, &ca_file, &host, "/index.txt", version);
                assert_eq!(
                    (status.as_str(), body.as_str()),
                    (format!("{v} 200").as_str(), "public page"),
                    "{host} open route"
                );
                for spelling in *spellings {
                    let (status, body) = get(https, &ca_file, &host, spelling, version);
                    assert_eq!(
                        status,
                        format!("{v} 400"),
                        "{host} {spelling:?} over {version}: {body}\nberth log:\n{}",
                        b.log()
                    );
                    assert!(
                        body.contains("ambiguous path"),
                        "{host} {spelling:?}: {body}"
                    );
                }
            }
        }
    }
    assert!(hosts.len() == 6);
}
