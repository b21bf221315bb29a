//! Moving an nginx-proxy + acme-companion stack to berth, as
//! `docs/migrate-from-nginx-proxy.md` describes it. The application services of
//! `configs/migrate/nginx-proxy.yml` run exactly as written there (Docker Compose; only their
//! images are built locally, since nothing can be pulled here), beside a certificate volume
//! laid out the way acme-companion lays it out (`<host>.crt -> ./<host>/fullchain.pem`).
//! berth, with that volume as its certs-dir and following Docker, serves both sites over
//! verified HTTPS, `skopeo` pushes and pulls through it with the registry's own credentials,
//! and `berth-acme once` finds nothing to order. `configs/migrate/berth.yml` keeps the
//! application services as they were.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use berth_testkit::docker::{docker, unique, BUSYBOX, REGISTRY};
use berth_testkit::oci::{build_image, manifest_digest};
use berth_testkit::registry::{skopeo_resolving, PASSWORD, USER};
use berth_testkit::tls::TestCa;
use berth_testkit::BerthProcess;
use common::berth;

const REGISTRY_HOST: &str = "registry.example.com";
const WEB_HOST: &str = "www.example.com";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The before-stack's application services under Docker Compose; `down -v` when dropped.
struct Stack {
    project: String,
    dir: tempfile::TempDir,
}

impl Stack {
    fn compose(&self, args: &[&str]) -> Output {
        let file = repo().join("configs/migrate/nginx-proxy.yml");
        let images = self.dir.path().join("local-images.yml");
        let mut full = vec![
            "-p",
            self.project.as_str(),
            "--project-directory",
            self.dir.path().to_str().unwrap(),
            "-f",
            file.to_str().unwrap(),
            "-f",
            images.to_str().unwrap(),
        ];
        full.extend_from_slice(args);
        run("docker-compose", &full)
    }

    /// `docker-compose up -d` of the application services (not nginx-proxy and
    /// acme-companion: berth and berth-acme take their place).
    fn up() -> Stack {
        let stack = Stack {
            project: unique("migrate").replace('-', ""),
            dir: tempfile::tempdir().unwrap(),
        };
        // The same programs as registry:2 and busybox, imported locally.
        std::fs::write(
            stack.dir.path().join("local-images.yml"),
            format!(
                "services:\n  registry:\n    image: {REGISTRY}\n  web:\n    image: {BUSYBOX}\n"
            ),
        )
        .unwrap();
        let htpasswd = ok(run("htpasswd", &["-Bbn", USER, PASSWORD]), "htpasswd");
        std::fs::write(stack.dir.path().join("registry.htpasswd"), htpasswd).unwrap();
        ok(
            stack.compose(&["up", "-d", "registry", "web"]),
            "docker-compose up",
        );
        stack
    }

    fn volume(&self, name: &str) -> String {
        format!("{}_{name}", self.project)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--remove-orphans", "-t", "1"]);
        let _ = docker(&["volume", "rm", "-f", &self.volume("certs")]);
    }
}

/// Fills the `certs` volume as acme-companion does: per host a folder with `cert.pem`,
/// `chain.pem`, `fullchain.pem` and `key.pem`, and beside it the symlinks nginx-proxy reads
/// (`<host>.crt`, `<host>.key`, `<host>.chain.pem`, `<host>.dhparam.pem`), plus nginx-proxy's
/// `default.crt`/`default.key` and `dhparam.pem`. Returns the volume's directory on the host.
fn acme_companion_volume(stack: &Stack, ca: &TestCa) -> PathBuf {
    let pki = stack.dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let mut script = String::from("set -e; cd /etc/nginx/certs; cp /pki/dhparam.pem .; ");
    std::fs::write(pki.join("dhparam.pem"), "not read by berth\n").unwrap();
    let default = ca.issue(&["nginx-proxy-default"]);
    std::fs::write(pki.join("default.crt"), &default.cert).unwrap();
    std::fs::write(pki.join("default.key"), &default.key).unwrap();
    script.push_str("cp /pki/default.crt /pki/default.key .; ");
    for host in [REGISTRY_HOST, WEB_HOST] {
        let pem = ca.issue(&[host]);
        let dir = pki.join(host);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), &pem.cert).unwrap();
        std::fs::write(dir.join("chain.pem"), ca.pem()).unwrap();
        std::fs::write(
            dir.join("fullchain.pem"),
            format!("{}{}", pem.cert, ca.pem()),
        )
        .unwrap();
        std::fs::write(dir.join("key.pem"), &pem.key).unwrap();
        script.push_str(&format!(
            "mkdir {host}; cp /pki/{host}/*.pem {host}/; touch {host}/.companion; \
             chmod 600 {host}/key.pem; \
             ln -s ./{host}/fullchain.pem {host}.crt; ln -s ./{host}/key.pem {host}.key; \
             ln -s ./{host}/chain.pem {host}.chain.pem; ln -s ./dhparam.pem {host}.dhparam.pem; "
        ));
    }
    let volume = format!("{}:/etc/nginx/certs", stack.volume("certs"));
    let bind = format!("{}:/pki:ro", pki.display());
    docker(&[
        "run", "--rm", "-v", &volume, "-v", &bind, BUSYBOX, "sh", "-c", &script,
    ])
    .unwrap();
    let mountpoint = docker(&[
        "volume",
        "inspect",
        "--format",
        "{{.Mountpoint}}",
        &stack.volume("certs"),
    ])
    .unwrap();
    let dir = PathBuf::from(mountpoint);
    let link = std::fs::read_link(dir.join(format!("{REGISTRY_HOST}.crt"))).unwrap();
    assert_eq!(link, Path::new(&format!("./{REGISTRY_HOST}/fullchain.pem")));
    dir
}

/// `curl` over HTTPS to berth, verifying against `ca`; returns the status line's code,
/// the headers and the body.
fn curl(b: &BerthProcess, ca: &Path, url_host: &str, scheme: &str) -> (u16, String, String) {
    let port = match scheme {
        "https" => b.https.unwrap().port(),
        _ => b.http.port(),
    };
    let resolve = format!("{url_host}:{port}:127.0.0.1");
    let url = format!("{scheme}://{url_host}:{port}/v2/");
    let url = if url_host == WEB_HOST {
        url.replace("/v2/", "/")
    } else {
        url
    };
    let out = run(
        "curl",
        &[
            "-sS",
            "-D",
            "-",
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            &resolve,
            "--max-time",
            "10",
            &url,
        ],
    );
    let text = ok(out, &format!("curl {url}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn an_nginx_proxy_stack_is_served_by_berth_without_edits() {
    let _daemon = berth_testkit::docker::shared_blocking();
    let stack = Stack::up();
    let ca = TestCa::new("migrate test CA");
    let certs = acme_companion_volume(&stack, &ca);
    let ca_file = stack.dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    // berth as configs/migrate/berth.toml sets it up, on test ports and directories; the
    // ACME directory is a port nothing listens on, so any order berth-acme tried would fail.
    let state = stack.dir.path();
    let config = format!(
        "[listen]\nhttp = \"{{http}}\"\nhttps = \"{{https}}\"\nmetrics = \"{{admin}}\"\n\n\
         [tls]\ncerts-dir = \"{}\"\ndefault-cert = \"generate\"\n\n\
         [docker]\nenabled = true\n\n\
         [acme]\nchallenge-dir = \"{}/challenges\"\naccount-dir = \"{}/acme\"\n\
         directory = \"https://127.0.0.1:9/directory\"\nemail = \"ops@example.com\"\n",
        certs.display(),
        state.display(),
        state.display()
    );
    let b = berth(&config);

    // Both application containers become routes from their nginx-proxy variables.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, head, _) = curl(&b, &ca_file, REGISTRY_HOST, "https");
        let (web, _, _) = curl(&b, &ca_file, WEB_HOST, "https");
        if code == 401 && web == 200 {
            // The registry's own challenge (REGISTRY_AUTH_HTPASSWD_REALM), over a certificate
            // from the volume that curl verified against its CA.
            assert!(
                head.contains("www-authenticate: basic realm=\"registry\""),
                "{head}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not routed: registry {code}, web {web}\nberth log:\n{}\ncompose ps:\n{}",
            b.log(),
            String::from_utf8_lossy(&stack.compose(&["ps"]).stdout)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _, body) = curl(&b, &ca_file, WEB_HOST, "https");
    assert_eq!((code, body.trim()), (200, "hello from web"));
    // The web site has its own certificate, so plain HTTP redirects (nginx-proxy's default).
    let (code, head, _) = curl(&b, &ca_file, WEB_HOST, "http");
    assert_eq!(code, 301, "{head}");
    let https_port = b.https.unwrap().port();
    assert!(
        head.contains(&format!("location: https://{WEB_HOST}:{https_port}/")),
        "{head}"
    );

    // docker push as a user would do it: skopeo over verified TLS, the registry's credentials.
    let certs_d = stack.dir.path().join("certs.d");
    std::fs::create_dir_all(&certs_d).unwrap();
    std::fs::write(certs_d.join("ca.crt"), ca.pem()).unwrap();
    let layout = stack.dir.path().join("image");
    let image = build_image(&layout, "v1", &[8 << 20, 4 << 20], 7).unwrap();
    let creds = format!("{USER}:{PASSWORD}");
    let remote = format!("docker://{REGISTRY_HOST}:{https_port}/migrated/app:v1");
    let cert_dir = certs_d.to_str().unwrap();
    let src = format!("oci:{}:v1", layout.display());
    let pushed = skopeo_resolving(
        &[REGISTRY_HOST],
        &[
            "copy",
            "--dest-cert-dir",
            cert_dir,
            "--dest-creds",
            &creds,
            &src,
            &remote,
        ],
    )
    .unwrap();
    ok(pushed, "skopeo push through berth");
    let back = stack.dir.path().join("pulled");
    let dst = format!("oci:{}:v1", back.display());
    let pulled = skopeo_resolving(
        &[REGISTRY_HOST],
        &[
            "copy",
            "--src-cert-dir",
            cert_dir,
            "--src-creds",
            &creds,
            &remote,
            &dst,
        ],
    )
    .unwrap();
    ok(pulled, "skopeo pull through berth");
    assert_eq!(manifest_digest(&back, "v1").unwrap(), image.manifest_digest);

    // berth-acme, on the same file, reads acme-companion's certificates as its own: both
    // LETSENCRYPT_HOST containers are covered, so it orders nothing (an order would fail).
    let berth_acme = Path::new(env!("CARGO_BIN_EXE_berth")).with_file_name("berth-acme");
    assert!(
        berth_acme.exists(),
        "{} missing: build the workspace",
        berth_acme.display()
    );
    let out = Command::new(&berth_acme)
        .arg("--config")
        .arg(b.config_path())
        .arg("once")
        .output()
        .unwrap();
    let said = ok(out, "berth-acme once");
    assert!(said.contains("0 issued, 0 failed"), "{said}");
}

#[test]
fn the_berth_stack_keeps_the_application_services_as_they_were() {
    let config = |file: &str| {
        let path = repo().join("configs/migrate").join(file);
        ok(
            Command::new("docker-compose")
                .args(["-f", path.to_str().unwrap(), "config"])
                .env("DOCKER_GID", "999")
                .output()
                .expect("docker-compose is missing (scripts/test installs it)"),
            &format!("docker-compose config {file}"),
        )
    };
    let before = config("nginx-proxy.yml");
    let after = config("berth.yml");
    // `docker-compose config` prints each service as a block indented under `services:`.
    let service = |text: &str, name: &str| -> String {
        let header = format!("  {name}:");
        let mut lines = text.lines().skip_while(|l| *l != header);
        let first = lines
            .next()
            .unwrap_or_else(|| panic!("no service {name} in:\n{text}"));
        let body: Vec<&str> = lines.take_while(|l| l.starts_with("    ")).collect();
        format!("{first}\n{}", body.join("\n"))
    };
    for name in ["registry", "web"] {
        assert_eq!(
            service(&before, name),
            service(&after, name),
            "service {name}"
        );
    }
    for name in ["nginx-proxy", "acme-companion"] {
        assert!(
            !after.contains(&format!("\n  {name}:\n")),
            "{name} still in berth.yml"
        );
    }
    // The certificate volume acme-companion filled is berth's certs-dir, in both services.
    for name in ["berth", "berth-acme"] {
        let block = service(&after, name);
        assert!(block.contains("- certs:/var/lib/berth/certs"), "{block}");
    }
    assert!(service(&before, "nginx-proxy").contains("- certs:/etc/nginx/certs"));
    let check = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["check", "--config"])
        .arg(repo().join("configs/migrate/berth.toml"))
        .output()
        .unwrap();
    ok(check, "berth check configs/migrate/berth.toml");
}
