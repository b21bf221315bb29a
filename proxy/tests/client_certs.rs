//! Client certificates (`client-ca`, `client-auth`): the real `berth` with curl and openssl
//! as clients, certificates from test CAs of our own.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_testkit::tls::{install, replace, s_client, TestCa};
use berth_testkit::{BerthProcess, Origin, Seen};
use common::{berth, route, scrape, value};

/// A client's certificate and key as files.
struct ClientFiles {
    cert: PathBuf,
    key: PathBuf,
}

fn client_files(dir: &Path, name: &str, ca: &TestCa, cn: &str) -> ClientFiles {
    pair_files(dir, name, &ca.issue(&[cn]))
}

/// `pem` as a client's certificate and key files.
fn pair_files(dir: &Path, name: &str, pem: &berth_testkit::tls::Pem) -> ClientFiles {
    let files = ClientFiles {
        cert: dir.join(format!("{name}.cert")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&files.cert, &pem.cert).unwrap();
    std::fs::write(&files.key, &pem.key).unwrap();
    files
}

/// curl over HTTPS to `host` (resolved to berth), SNI `host`, with `cert` if any and extra
/// arguments; `Err` with curl's words when no HTTP answer came (a refused handshake).
fn get(
    https: SocketAddr,
    server_ca: &Path,
    host: &str,
    cert: Option<&ClientFiles>,
    extra: &[&str],
) -> Result<(u16, String), String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--cacert"])
        .arg(server_ca)
        .arg("--resolve")
        .arg(format!("{host}:{}:127.0.0.1", https.port()))
        .args(["-w", "\n%{http_code}"]);
    if let Some(c) = cert {
        cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
    }
    let out = cmd
        .args(extra)
        .arg(format!("https://{host}:{}/x", https.port()))
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    Ok((code.parse().unwrap(), body.to_string()))
}

fn subject_seen(body: &str) -> Option<String> {
    let seen: Seen = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let all = seen.header_all("x-client-cert-subject");
    assert!(all.len() <= 1, "{all:?}");
    all.first().map(|s| s.to_string())
}

/// An htpasswd file in `dir` with alice (password `alice-pw`).
fn htpasswd_with_alice(dir: &Path) -> PathBuf {
    let htpasswd = dir.join("htpasswd");
    let out = Command::new("htpasswd")
        .args(["-cbB"])
        .arg(&htpasswd)
        .args(["alice", "alice-pw"])
        .output()
        .unwrap();
    assert!(out.status.success());
    htpasswd
}

struct Setup {
    b: BerthProcess,
    server_ca: PathBuf,
    client_ca: PathBuf,
    dir: tempfile::TempDir,
    _origin: Origin,
}

/// berth with `req.test` (client-auth require), `opt.test` (optional, behind basic auth)
/// and `open.test` (no client-ca), all to one origin; the client CA file holds `clients`.
fn setup(clients: &TestCa) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let server = TestCa::new("berth test server CA");
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    for host in [
        "req.test",
        "opt.test",
        "open.test",
        "b.test",
        "open.wild.test",
    ] {
        install(&certs, host, &server.issue(&[host])).unwrap();
    }
    install(&certs, "wild.test", &server.issue(&["*.wild.test"])).unwrap();
    let server_ca = dir.path().join("server-ca.pem");
    std::fs::write(&server_ca, server.pem()).unwrap();
    let client_ca = dir.path().join("clients-ca.pem");
    std::fs::write(&client_ca, clients.pem()).unwrap();
    let b_ca = dir.path().join("b-ca.pem");
    std::fs::write(&b_ca, TestCa::new("b's clients CA").pem()).unwrap();
    let htpasswd = htpasswd_with_alice(dir.path());
    let origin = Origin::start("o");
    let ca = format!(
        "client-ca = \"{}\"\nhttps = \"noredirect\"",
        client_ca.display()
    );
    let routes = [
        route("req.test", &[origin.addr], &ca),
        route(
            "opt.test",
            &[origin.addr],
            &format!(
                "{ca}\nclient-auth = \"optional\"\nauth.htpasswd = \"{}\"",
                htpasswd.display()
            ),
        ),
        route("open.test", &[origin.addr], "https = \"noredirect\""),
        // A wildcard that asks, and one of its names, more specific, that does not.
        route("*.wild.test", &[origin.addr], &ca),
        route("open.wild.test", &[origin.addr], "https = \"noredirect\""),
        route(
            "b.test",
            &[origin.addr],
            &format!(
                "client-ca = \"{}\"\nclient-auth = \"optional\"\nhttps = \"noredirect\"",
                b_ca.display()
            ),
        ),
    ]
    .join("\n");
    let b = berth(&format!(
        "[listen]\nhttp = \"{{http}}\"\nhttps = \"{{https}}\"\nmetrics = \"{{admin}}\"\n\n\
         [docker]\nenabled = false\n\n[tls]\ncerts-dir = \"{}\"\ndefault-cert = \"none\"\n\n{routes}",
        certs.display()
    ));
    Setup {
        b,
        server_ca,
        client_ca,
        dir,
        _origin: origin,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_are_asked_for_verified_and_forwarded_per_host() {
    let clients = TestCa::new("berth test clients CA");
    let other = TestCa::new("another CA");
    let s = setup(&clients);
    let https = s.b.https.unwrap();
    let ci = client_files(s.dir.path(), "ci", &clients, "ci-runner");
    let forged = client_files(s.dir.path(), "forged", &other, "ci-runner");
    let get = |host: &str, cert: Option<&ClientFiles>, extra: &[&str]| {
        tokio::task::block_in_place(|| get(https, &s.server_ca, host, cert, extra))
    };

    // Only hosts with client-ca ask for a certificate, naming the CA.
    for (host, asks) in [
        ("req.test", true),
        ("opt.test", true),
        ("open.test", false),
        ("x.wild.test", true),
        ("open.wild.test", false),
    ] {
        let out = s_client(https, &["-servername", host]).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.contains("Acceptable client certificate CA names"),
            asks,
            "{host}: {text}"
        );
        if asks {
            assert!(text.contains("CN = berth test clients CA"), "{text}");
        }
    }

    // require: no certificate or one of another CA, no handshake; the right one is a
    // connection whose subject the upstream sees, and only berth's word for it.
    assert!(get("req.test", None, &[]).is_err());
    assert!(get("req.test", Some(&forged), &[]).is_err());
    let spoof = [
        "-H",
        "X-Client-Cert-Subject: CN=admin",
        "-H",
        "X-Client_Cert_Subject: CN=admin",
    ];
    let (code, body) = get("req.test", Some(&ci), &spoof).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(subject_seen(&body).as_deref(), Some("CN=ci-runner"));
    let seen: Seen = serde_json::from_str(&body).unwrap();
    assert!(seen.header("x-client_cert_subject").is_none(), "{body}");

    // optional: a verified certificate is a login; without one, basic auth asks; one of
    // another CA, no handshake.
    let (code, body) = get("opt.test", None, &spoof).unwrap();
    assert_eq!(code, 401, "{body}");
    let (code, body) = get(
        "opt.test",
        None,
        &[
            "-u",
            "alice:alice-pw",
            "-H",
            "X-Client-Cert-Subject: CN=admin",
        ],
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        subject_seen(&body),
        None,
        "a client's own header went upstream"
    );
    let (code, body) = get("opt.test", Some(&ci), &spoof).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(subject_seen(&body).as_deref(), Some("CN=ci-runner"));
    assert!(get("opt.test", Some(&forged), &[]).is_err());

    // A host without client-ca: nothing asked, a client's header never passes.
    let (code, body) = get("open.test", None, &spoof).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(subject_seen(&body), None);

    // A connection made for another host is not this host's: 421 sends the client to a
    // connection of its own.
    for (sni, cert) in [("open.test", None), ("opt.test", None)] {
        let (code, body) = get(sni, cert, &["-H", "Host: req.test"]).unwrap();
        assert_eq!(code, 421, "SNI {sni}: {body}");
    }
    // A certificate verified for opt.test (same CA) does log in on req.test; one verified
    // by req.test's CA is no login on b.test, whose CA is another.
    let (code, _) = get("opt.test", Some(&ci), &["-H", "Host: req.test"]).unwrap();
    assert_eq!(code, 200);
    let (code, body) = get("req.test", Some(&ci), &["-H", "Host: b.test"]).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(subject_seen(&body), None, "{body}");

    // Each refusal is counted (openssl's look at req.test above, without a certificate,
    // was one); each is logged once per client, host and reason.
    assert!(get("req.test", None, &[]).is_err());
    let m = scrape(&s.b).await;
    for (host, reason, n) in [
        ("req.test", "missing", 3.0),
        ("req.test", "unknown-ca", 1.0),
        ("opt.test", "unknown-ca", 1.0),
    ] {
        let key = format!("berth_client_cert_errors_total{{host=\"{host}\",reason=\"{reason}\"}}");
        assert_eq!(value(&m, &key), n, "{key}\n{}", s.b.log());
    }
    let log = s.b.log();
    let lines = |host: &str, reason: &str| {
        log.lines()
            .filter(|l| l.contains("client certificate refused"))
            .filter(|l| {
                l.contains(&format!("host=\"{host}\""))
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .count()
    };
    assert_eq!(lines("req.test", "missing"), 1, "{log}");
    assert_eq!(lines("opt.test", "unknown-ca"), 1, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_client_ca_file_is_in_force_from_the_next_handshake() {
    let clients = TestCa::new("berth test clients CA");
    let next = TestCa::new("next clients CA");
    let s = setup(&clients);
    let https = s.b.https.unwrap();
    let old = client_files(s.dir.path(), "old", &clients, "ci-runner");
    let new = client_files(s.dir.path(), "new", &next, "ci-runner");
    let get = |cert: &ClientFiles| {
        tokio::task::block_in_place(|| get(https, &s.server_ca, "req.test", Some(cert), &[]))
    };
    assert_eq!(get(&old).unwrap().0, 200);
    assert!(get(&new).is_err());
    replace(&s.client_ca, next.pem().as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&new).is_err() {
        assert!(Instant::now() < deadline, "{}", s.b.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(get(&old).is_err());
    // A file that is not a CA keeps the CAs in force.
    replace(&s.client_ca, b"not a certificate\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.b.log().contains("client-ca") || !s.b.log().contains("not used") {
        assert!(Instant::now() < deadline, "{}", s.b.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(&new).unwrap().0, 200);
}

/// A registry host's `certs.d` directory of the Docker daemon; removed when dropped.
struct CertsD(PathBuf);

impl CertsD {
    fn new(authority: &str, server_ca: &str) -> CertsD {
        let dir = Path::new("/etc/docker/certs.d").join(authority);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.crt"), server_ca).unwrap();
        CertsD(dir)
    }

    /// Puts (or with `None`, takes away) the client certificate and key.
    fn client(&self, pem: Option<&berth_testkit::tls::Pem>) {
        let (cert, key) = (self.0.join("client.cert"), self.0.join("client.key"));
        match pem {
            Some(p) => {
                std::fs::write(cert, &p.cert).unwrap();
                std::fs::write(key, &p.key).unwrap();
            }
            None => {
                let _ = std::fs::remove_file(cert);
                let _ = std::fs::remove_file(key);
            }
        }
    }
}

impl Drop for CertsD {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_docker_cli_pushes_with_a_client_certificate_and_no_login() {
    use berth_testkit::docker::{bridge_gateway, HostsEntries};
    use berth_testkit::oci::build_image;
    use berth_testkit::registry::{skopeo, Registry};
    use common::docker_cli;

    let _daemon = berth_testkit::docker::shared().await;
    // dockerd reads no client certificates for a registry whose name resolves to a loopback
    // address (it counts those as insecure registries): berth listens on the daemon's own
    // bridge address, on this machine, under names the test adds to /etc/hosts.
    let bridge = bridge_gateway().expect("the Docker daemon's bridge network");
    let tag = std::process::id();
    let (opt, req) = (format!("opt-{tag}.cc.test"), format!("req-{tag}.cc.test"));
    let _hosts = HostsEntries::add(&bridge, &[&opt, &req]).unwrap();

    let work = tempfile::tempdir().unwrap();
    let registry = Registry::start_open().expect("docker-registry (scripts/test installs it)");
    let server = TestCa::new("berth test server CA");
    let clients = TestCa::new("berth test clients CA");
    let other = TestCa::new("another CA");
    let certs = work.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    for host in [&opt, &req] {
        install(&certs, host, &server.issue(&[host])).unwrap();
    }
    let client_ca = work.path().join("clients-ca.pem");
    std::fs::write(&client_ca, clients.pem()).unwrap();
    let htpasswd = htpasswd_with_alice(work.path());
    let ca = format!(
        "client-ca = \"{}\"\nprofile = \"registry\"",
        client_ca.display()
    );
    let routes = [
        route(
            &opt,
            &[registry.addr],
            &format!(
                "{ca}\nclient-auth = \"optional\"\nauth.htpasswd = \"{}\"\n\
                 auth.repositories = [\n\
                   {{ repositories = [\"ci/*\"], users = [\"cert:ci-runner\"], allow = [\"pull\", \"push\"] }},\n\
                   {{ repositories = [\"*\"], users = [\"*\"], allow = [\"pull\"] }},\n\
                 ]",
                htpasswd.display()
            ),
        ),
        route(&req, &[registry.addr], &ca),
    ]
    .join("\n");
    let config = format!(
        "[listen]\nhttp = \"{{http}}\"\nhttps = \"{{https}}\"\n\n[docker]\nenabled = false\n\n\
         [tls]\ncerts-dir = \"{}\"\ndefault-cert = \"none\"\n\n{routes}",
        certs.display()
    );
    let b = BerthProcess::start_with_https_on(
        Path::new(env!("CARGO_BIN_EXE_berth")),
        &config,
        &[],
        bridge.parse().unwrap(),
    )
    .unwrap();
    let port = b.https.unwrap().port();
    let (opt_at, req_at) = (format!("{opt}:{port}"), format!("{req}:{port}"));

    // An image in the registry, put there directly.
    let layout = work.path().join("image");
    build_image(&layout, "v1", &[1 << 20], 41).unwrap();
    let out = tokio::task::block_in_place(|| {
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{}/base/img:v1", registry.addr),
        ])
        .unwrap()
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let cli = work.path().join("docker-config");
    std::fs::create_dir_all(&cli).unwrap();
    let opt_dir = CertsD::new(&opt_at, &server.pem());
    let ci = clients.issue(&["ci-runner"]);
    opt_dir.client(Some(&ci));

    // ci-runner's certificate: a pull, and a push to ci/* with no docker login.
    let base = format!("{opt_at}/base/img:v1");
    // The daemon reads /etc/hosts again within seconds; until then the name is unknown.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (ok, said) = loop {
        let (ok, said) = docker_cli(&cli, &["pull", &base]);
        if ok || !said.contains("no such host") || Instant::now() > deadline {
            break (ok, said);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(ok, "pull with the certificate: {said}\n{}", b.log());
    let pushed = format!("{opt_at}/ci/app:v1");
    docker_cli(&cli, &["tag", &base, &pushed]);
    let (ok, said) = docker_cli(&cli, &["push", &pushed]);
    assert!(ok, "push with the certificate: {said}\n{}", b.log());
    assert!(registry
        .storage()
        .join("docker/registry/v2/repositories/ci/app/_manifests/tags/v1")
        .exists());
    // The rules still decide: ci-runner may not push elsewhere.
    let elsewhere = format!("{opt_at}/team/app:v1");
    docker_cli(&cli, &["tag", &base, &elsewhere]);
    let (ok, said) = docker_cli(&cli, &["push", &elsewhere]);
    assert!(!ok, "{said}\n{}", b.log());
    assert!(
        said.contains("denied: requested access to the resource is denied"),
        "{said}\n{}",
        b.log()
            .lines()
            .filter(|l| l.contains("team/app"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    // A token fetched with the certificate is that identity's on its connections only.
    let cert_files = pair_files(work.path(), "ci", &ci);
    let server_ca = work.path().join("server-ca.pem");
    std::fs::write(&server_ca, server.pem()).unwrap();
    let via_bridge = |cert: Option<&ClientFiles>, extra: &[&str], target: &str| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "20", "--cacert"])
            .arg(&server_ca)
            .arg("--resolve")
            .arg(format!("{opt}:{port}:{bridge}"))
            .args(["-w", "\n%{http_code}"]);
        if let Some(c) = cert {
            cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
        }
        let out = cmd
            .args(extra)
            .arg(format!("https://{opt_at}{target}"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_string(), body.to_string())
    };
    let (code, body) = via_bridge(
        Some(&cert_files),
        &[],
        "/v2/_berth/token?service=x&scope=repository:ci/app:pull",
    );
    assert_eq!(code, "200", "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let bearer = format!("Authorization: Bearer {}", json["token"].as_str().unwrap());
    let tags = "/v2/ci/app/tags/list";
    let (code, body) = via_bridge(Some(&cert_files), &["-H", &bearer], tags);
    assert_eq!(code, "200", "with the certificate: {body}");
    let (code, body) = via_bridge(None, &["-H", &bearer], tags);
    assert_eq!(code, "401", "without it: {body}");

    // Without the files, no login at all: 401.
    opt_dir.client(None);
    let (ok, said) = docker_cli(&cli, &["push", &pushed]);
    assert!(!ok, "{said}");
    assert!(
        said.contains("unauthorized: authentication required"),
        "{said}"
    );

    // require: the handshake needs the certificate, and one from this CA.
    let req_dir = CertsD::new(&req_at, &server.pem());
    let from_req = format!("{req_at}/base/img:v1");
    let (ok, said) = docker_cli(&cli, &["pull", &from_req]);
    assert!(
        !ok,
        "pull from a require host without a certificate: {said}"
    );
    req_dir.client(Some(&other.issue(&["ci-runner"])));
    let (ok, said) = docker_cli(&cli, &["pull", &from_req]);
    assert!(!ok, "pull with another CA's certificate: {said}");
    req_dir.client(Some(&ci));
    let (ok, said) = docker_cli(&cli, &["pull", &from_req]);
    assert!(ok, "pull with the certificate: {said}\n{}", b.log());
    for image in [&base, &pushed, &elsewhere, &from_req] {
        docker_cli(&cli, &["rmi", image]);
    }
}
