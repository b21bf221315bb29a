//! berth-acme against Debian's pebble with real HTTP-01 validation through the real berth:
//! certificates issued, installed in certs-dir, served by berth without a restart and
//! verified with curl against pebble's issuing root; no new order when nothing is due;
//! renewal when the window is reached.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common;

use common::{berth_acme, berth_binary, serial, text, wait_for_verified_https, Daemon};

use berth_testkit::pebble::Pebble;
use berth_testkit::{BerthProcess, Origin};

/// Tests whose berth-acme follows the Docker daemon take this: each would otherwise see the
/// other's containers (and order their certificates).
static DOCKER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn docker_alone() -> std::sync::MutexGuard<'static, ()> {
    DOCKER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Stack {
    pebble: Pebble,
    berth: BerthProcess,
    config: PathBuf,
    certs: PathBuf,
    _work: tempfile::TempDir,
}

/// berth (HTTP + HTTPS), then pebble validating through berth's HTTP port, and the config
/// file berth-acme reads: the same certs-dir, challenge-dir and routes, plus `[acme]`.
fn stack(acme_extra: &str, routes: &str) -> Stack {
    stack_with(acme_extra, routes, false)
}

/// [`stack`], with pebble requiring external account binding when `eab` is true.
fn stack_with(acme_extra: &str, routes: &str, eab: bool) -> Stack {
    let work = tempfile::tempdir().unwrap();
    let certs = work.path().join("certs");
    let challenges = work.path().join("challenges");
    let accounts = work.path().join("accounts");
    let common = format!(
        "[docker]\nenabled = false\n\n[tls]\ncerts-dir = \"{}\"\n\n{routes}",
        certs.display()
    );
    let berth = BerthProcess::start(
        &berth_binary(),
        &format!(
            "[listen]\nhttp = \"{{http}}\"\nhttps = \"{{https}}\"\n\n[acme]\nchallenge-dir = \"{}\"\n\n{common}",
            challenges.display()
        ),
    )
    .unwrap();
    let pebble = Pebble::start(berth.http.port(), eab).unwrap();
    let config = work.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\nhttp = \"{}\"\n\n[acme]\nchallenge-dir = \"{}\"\naccount-dir = \"{}\"\n\
             directory = \"{}\"\nca-bundle = \"{}\"\nemail = \"ops@example.test\"\n{acme_extra}\n\n{common}",
            berth.http,
            challenges.display(),
            accounts.display(),
            pebble.directory,
            pebble.tls_ca.display(),
        ),
    )
    .unwrap();
    Stack {
        pebble,
        berth,
        config,
        certs,
        _work: work,
    }
}

/// `curl` through berth's HTTPS listener to `host`, verifying against `root`.
fn curl_verified(s: &Stack, host: &str, root: &Path) -> Output {
    let https = s.berth.https.unwrap();
    Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(root)
        .arg("--resolve")
        .arg(format!("{host}:{}:127.0.0.1", https.port()))
        .arg(format!("https://{host}:{}/", https.port()))
        .output()
        .unwrap()
}

#[test]
fn a_static_route_gets_a_certificate_berth_serves_and_it_is_renewed_only_when_due() {
    let origin = Origin::start("app");
    let s = stack(
        "",
        &format!(
            "[[route]]\nhost = \"app.acme.test\"\nupstreams = [\"{}\"]\nacme = true\n",
            origin.addr
        ),
    );
    let out = berth_acme(&s.config, &["once"]);
    assert!(
        out.status.success(),
        "{}\npebble log:\n{}\nberth log:\n{}",
        text(&out),
        s.pebble.log(),
        s.berth.log()
    );
    assert!(text(&out).contains("1 issued, 0 failed"), "{}", text(&out));
    let crt = s.certs.join("app.acme.test.crt");
    let key = s.certs.join("app.acme.test.key");
    assert!(crt.exists() && key.exists());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(key.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    // The challenge files are gone once validated.
    let tokens = s
        .config
        .parent()
        .unwrap()
        .join("challenges/.well-known/acme-challenge");
    assert_eq!(
        std::fs::read_dir(&tokens).map(|d| d.count()).unwrap_or(0),
        0
    );

    // berth picked it up without a restart; curl verifies the chain against pebble's root.
    let root = s.pebble.issuing_root().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = curl_verified(&s, "app.acme.test", &root);
        if r.status.success() {
            assert!(String::from_utf8_lossy(&r.stdout).contains("\"origin\":\"app\""));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "berth never served the issued certificate: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // Nothing is due: no order at all, and the account is reused.
    let orders = s.pebble.orders();
    assert_eq!(orders, 1, "pebble saw one order:\n{}", s.pebble.log());
    let out = berth_acme(&s.config, &["once"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("0 issued, 0 failed"), "{}", text(&out));
    assert_eq!(
        s.pebble.orders(),
        orders,
        "a valid certificate was ordered again"
    );
    assert!(!text(&out).contains("account registered"), "{}", text(&out));
    // pebble has no renewalInfo (ARI): the worker asked, and fell back to the fixed window.
    assert!(
        text(&out).contains("publishes no renewal information"),
        "{}",
        text(&out)
    );

    // A fixed window not shorter than the certificate's life would make it due at every
    // run: it renews as with "auto" instead, and says so.
    let fixed = std::fs::read_to_string(&s.config).unwrap().replace(
        "email = \"ops@example.test\"",
        "email = \"ops@example.test\"\nrenew-before = \"36500d\"",
    );
    let fixed_config = s.config.with_file_name("fixed.toml");
    std::fs::write(&fixed_config, fixed).unwrap();
    let out = berth_acme(&fixed_config, &["once"]);
    assert!(text(&out).contains("0 issued, 0 failed"), "{}", text(&out));
    assert!(
        text(&out).contains("is not shorter than this certificate's lifetime"),
        "{}",
        text(&out)
    );
    assert_eq!(s.pebble.orders(), orders);

    // --force-renewal renews what is not due, and berth serves the new certificate.
    let before = serial(&crt);
    let out = berth_acme(&s.config, &["once", "--force-renewal"]);
    assert!(text(&out).contains("1 issued, 0 failed"), "{}", text(&out));
    let after = serial(&crt);
    assert_ne!(before, after);
    common::wait_until(
        std::time::Duration::from_secs(10),
        "the renewed certificate was not served",
        || common::served_serial(s.berth.https.unwrap(), "app.acme.test") == after,
        || s.berth.log(),
    );
}

#[test]
fn the_seed_recipe_container_gets_its_certificate_live_and_a_restart_orders_nothing() {
    use berth_testkit::docker::{require, Container, BUSYBOX};
    let _alone = docker_alone();
    require();
    let s = stack("metrics = \"{metrics}\"", "");
    // Both follow Docker for this test.
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], berth_testkit::free_port()));
    let config = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("[docker]\nenabled = false", "[docker]\nenabled = true")
        .replace("{metrics}", &metrics.to_string());
    std::fs::write(&s.config, &config).unwrap();
    let berth = BerthProcess::start(
        &berth_binary(),
        &format!(
            "[listen]\nhttp = \"{{http}}\"\nhttps = \"{{https}}\"\n\n[docker]\nenabled = true\n\n\
             [tls]\ncerts-dir = \"{}\"\n\n[acme]\nchallenge-dir = \"{}\"\n",
            s.certs.display(),
            s.config.parent().unwrap().join("challenges").display()
        ),
    )
    .unwrap();
    // pebble validates through the first berth's port; this second berth follows Docker and
    // serves the same certs-dir and challenge-dir, so both see the new certificate.
    let work = s.config.parent().unwrap().to_path_buf();
    let daemon = Daemon::start(&s.config, work.join("acme-1.log"));
    let host = "seed.acme.test";
    let container = Container::run(
        "seed",
        &[
            "-e",
            &format!("VIRTUAL_HOST={host}"),
            "-e",
            &format!("LETSENCRYPT_HOST={host}"),
            "-e",
            "LETSENCRYPT_EMAIL=seed@example.test",
            BUSYBOX,
        ],
    )
    .unwrap();
    let root = s.pebble.issuing_root().unwrap();
    let https = berth.https.unwrap();
    wait_for_verified_https(
        https,
        host,
        "/",
        &root,
        |out| out.contains("busybox"),
        || {
            format!(
                "berth-acme log:\n{}\npebble log:\n{}",
                daemon.log(),
                s.pebble.log()
            )
        },
    );
    let scraped = Command::new("curl")
        .args(["-sS", &format!("http://{metrics}/metrics")])
        .output()
        .unwrap();
    let scraped = String::from_utf8_lossy(&scraped.stdout).to_string();
    assert!(
        scraped.contains("berth_acme_orders_total{challenge=\"http-01\",result=\"ok\"} 1"),
        "{scraped}"
    );
    assert!(
        scraped.contains(&format!(
            "berth_acme_cert_not_after_seconds{{host=\"{host}\"}}"
        )),
        "{scraped}"
    );
    assert!(
        scraped.contains(&format!(
            "berth_acme_next_renewal_seconds{{host=\"{host}\"}}"
        )),
        "{scraped}"
    );

    // A restart finds the certificate valid: no new order.
    let orders = s.pebble.orders();
    drop(daemon);
    let daemon = Daemon::start(&s.config, work.join("acme-2.log"));
    // The new daemon has judged the container's certificate once it publishes when it will
    // renew it (only a pass that saw the container and found nothing due does that).
    let judged = format!("berth_acme_next_renewal_seconds{{host=\"{host}\"}}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let page = Command::new("curl")
            .args(["-sS", &format!("http://{metrics}/metrics")])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&page.stdout).contains(&judged) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted daemon never judged {host}:\n{}",
            daemon.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        s.pebble.orders(),
        orders,
        "restart ordered again:\n{}",
        daemon.log()
    );
    assert!(!daemon.log().contains("ordering"), "{}", daemon.log());
    drop(container);
}

#[test]
fn external_account_binding_is_refused_without_the_key_and_works_with_it() {
    let origin = Origin::start("app");
    let route = format!(
        "[[route]]\nhost = \"eab.acme.test\"\nupstreams = [\"{}\"]\nacme = true\n",
        origin.addr
    );
    let s = stack_with("", &route, true);
    let out = berth_acme(&s.config, &["once"]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains("0 issued, 1 failed"), "{said}");
    assert!(said.contains("externalAccountRequired"), "{said}");

    let (kid, key) = berth_testkit::pebble::EAB;
    let with_key = std::fs::read_to_string(&s.config).unwrap().replace(
        "email = \"ops@example.test\"",
        &format!("email = \"ops@example.test\"\neab-kid = \"{kid}\"\neab-hmac-key = \"{key}\""),
    );
    std::fs::write(&s.config, with_key).unwrap();
    let out = berth_acme(&s.config, &["once"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("1 issued, 0 failed"), "{}", text(&out));
    assert!(
        !text(&out).contains(key),
        "the HMAC key must never be logged"
    );
}

#[test]
fn one_failing_host_does_not_hold_up_the_others() {
    let origin = Origin::start("app");
    // nohttp refuses plain HTTP, challenges included: that host cannot validate.
    let routes = format!(
        "[[route]]\nhost = \"good.acme.test\"\nupstreams = [\"{0}\"]\nacme = true\n\n\
         [[route]]\nhost = \"closed.acme.test\"\nupstreams = [\"{0}\"]\nacme = true\nhttps = \"nohttp\"\n",
        origin.addr
    );
    let s = stack("", &routes);
    let out = berth_acme(&s.config, &["once"]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("1 issued, 1 failed"), "{said}");
    assert!(
        said.contains("closed.acme.test") && said.contains("order failed"),
        "{said}"
    );
    assert!(s.certs.join("good.acme.test.crt").exists());
    assert!(!s.certs.join("closed.acme.test.crt").exists());
}

#[test]
fn the_worker_backs_off_while_the_ca_is_down_and_succeeds_when_it_returns() {
    let origin = Origin::start("app");
    let route = format!(
        "[[route]]\nhost = \"later.acme.test\"\nupstreams = [\"{}\"]\nacme = true\n",
        origin.addr
    );
    let mut s = stack("retry-after = \"1s\"", &route);
    s.pebble.stop();
    let work = s.config.parent().unwrap().to_path_buf();
    let mut daemon = Daemon::start(&s.config, work.join("acme.log"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while daemon.log().matches("order failed").count() < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", daemon.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        daemon.0.try_wait().unwrap().is_none(),
        "the worker exited:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(
        log.contains("retry_in_secs=1") && log.contains("retry_in_secs=2"),
        "{log}"
    );

    s.pebble.resume().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // The file is renamed into place just before the line is logged: wait for both.
    while !(s.certs.join("later.acme.test.crt").exists()
        && daemon.log().contains("certificate installed"))
    {
        assert!(std::time::Instant::now() < deadline, "{}", daemon.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn rsa_keys_by_option() {
    let origin = Origin::start("app");
    let route = format!(
        "[[route]]\nhost = \"rsa.acme.test\"\nupstreams = [\"{}\"]\nacme = true\n",
        origin.addr
    );
    let s = stack("key-type = \"rsa2048\"", &route);
    let out = berth_acme(&s.config, &["once"]);
    assert!(out.status.success(), "{}", text(&out));
    let key = std::fs::read_to_string(s.certs.join("rsa.acme.test.key")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    let described = Command::new("openssl")
        .args(["pkey", "-noout", "-text", "-in"])
        .arg(s.certs.join("rsa.acme.test.key"))
        .output()
        .unwrap();
    let described = String::from_utf8_lossy(&described.stdout);
    assert!(described.contains("Private-Key: (2048 bit"), "{described}");
    let cert = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(s.certs.join("rsa.acme.test.crt"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&cert.stdout).contains("rsaEncryption"));
}

/// A certificate renewed by berth-acme while `skopeo` pushes through berth over HTTPS
/// (verified against pebble's root): the push, on the connections it opened with the old
/// certificate and the ones it opens after, does not fail; berth serves the new one after.
#[test]
fn a_renewal_during_a_push_fails_nothing() {
    use berth_testkit::oci::{build_image, manifest_digest};
    use berth_testkit::registry::{skopeo_resolving, Registry};
    let registry = Registry::start_open().expect("docker-registry (scripts/test installs it)");
    let host = "push.acme.test";
    let s = stack(
        "",
        &format!(
            "[[route]]\nhost = \"{host}\"\nupstreams = [\"{}\"]\nacme = true\nprofile = \"registry\"\n",
            registry.addr
        ),
    );
    let out = berth_acme(&s.config, &["once"]);
    assert!(out.status.success(), "{}", text(&out));
    let crt = s.certs.join(format!("{host}.crt"));
    let first = serial(&crt);

    // skopeo trusts pebble's root for this registry, and nothing else.
    let work = tempfile::tempdir().unwrap();
    let cert_dir = work.path().join("certs.d");
    std::fs::create_dir_all(&cert_dir).unwrap();
    std::fs::copy(s.pebble.issuing_root().unwrap(), cert_dir.join("ca.crt")).unwrap();
    let mib = 1 << 20;
    let layout = work.path().join("image");
    let image = build_image(&layout, "v1", &[128 * mib, 128 * mib, 128 * mib], 5).unwrap();
    let authority = format!("{host}:{}", s.berth.https.unwrap().port());
    let dst = format!("docker://{authority}/renewal/test:v1");
    let src = format!("oci:{}:v1", layout.display());
    let cert_dir_arg = cert_dir.display().to_string();
    let push = {
        let (dst, src, cert_dir_arg) = (dst.clone(), src.clone(), cert_dir_arg.clone());
        std::thread::spawn(move || {
            skopeo_resolving(
                &[host],
                &["copy", "--dest-cert-dir", &cert_dir_arg, &src, &dst],
            )
            .unwrap()
        })
    };

    // Renew in the middle of it (--force-renewal: it is not due).
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let out = berth_acme(&s.config, &["once", "--force-renewal"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("1 issued, 0 failed"), "{}", text(&out));
    assert_ne!(serial(&crt), first);
    assert!(
        !push.is_finished(),
        "the push ended before the renewal; nothing was proved"
    );

    let out = push.join().unwrap();
    assert!(
        out.status.success(),
        "push failed across the renewal: {}\nberth log:\n{}",
        text(&out),
        s.berth.log()
    );
    // Pulled back over a new connection, which gets the new certificate.
    let back = work.path().join("back");
    let back_ref = format!("oci:{}:v1", back.display());
    let out = skopeo_resolving(
        &[host],
        &["copy", "--src-cert-dir", &cert_dir_arg, &dst, &back_ref],
    )
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(manifest_digest(&back, "v1").unwrap(), image.manifest_digest);
    let served = Command::new("sh")
        .arg("-c")
        .arg(
            format!(
                "openssl s_client -connect {authority} -servername {host} </dev/null 2>/dev/null \
             | openssl x509 -noout -serial",
            )
            .replace(&format!("{host}:"), "127.0.0.1:"),
        )
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&served.stdout).trim(), serial(&crt));
}

/// The whole story, all real: dockerd; a registry container with htpasswd auth and exactly
/// the seed recipe's variables; berth following Docker; berth-acme following Docker against
/// pebble. The certificate arrives, a 3-layer 320 MiB image is pushed over verified HTTPS
/// with credentials and pulled back with the same digest, an anonymous request gets the
/// registry's 401, the metrics count the bytes under that host; then a second registry for
/// a second host joins while a push to the first is running, and both work.
#[test]
fn the_seed_recipe_end_to_end_over_https() {
    use berth_testkit::docker::{docker, require, run_seed_registry};
    use berth_testkit::oci::{build_image, manifest_digest};
    use berth_testkit::registry::{skopeo_resolving, PASSWORD, USER};
    let _alone = docker_alone();
    require();
    let work = tempfile::tempdir().unwrap();
    let (certs, challenges) = (work.path().join("certs"), work.path().join("challenges"));
    let berth = BerthProcess::start(
        &berth_binary(),
        &format!(
            "[listen]\nhttp = \"{{http}}\"\nhttps = \"{{https}}\"\nmetrics = \"{{admin}}\"\n\n\
             [docker]\nenabled = true\n\n[log]\naccess = \"off\"\n\n[tls]\ncerts-dir = \"{}\"\n\n\
             [acme]\nchallenge-dir = \"{}\"\n",
            certs.display(),
            challenges.display()
        ),
    )
    .unwrap();
    let pebble = Pebble::start(berth.http.port(), false).unwrap();
    let config = work.path().join("acme.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\nhttp = \"{}\"\n\n[docker]\nenabled = true\n\n[tls]\ncerts-dir = \"{}\"\n\n\
             [acme]\nchallenge-dir = \"{}\"\naccount-dir = \"{}\"\ndirectory = \"{}\"\n\
             ca-bundle = \"{}\"\n",
            berth.http,
            certs.display(),
            challenges.display(),
            work.path().join("accounts").display(),
            pebble.directory,
            pebble.tls_ca.display(),
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&config, work.path().join("acme.log"));
    let https = berth.https.unwrap();
    let root = pebble.issuing_root().unwrap();
    let cert_dir = work.path().join("certs.d");
    std::fs::create_dir_all(&cert_dir).unwrap();
    std::fs::copy(&root, cert_dir.join("ca.crt")).unwrap();
    let cert_dir = cert_dir.display().to_string();
    let creds = format!("{USER}:{PASSWORD}");
    let (first, second) = ("registry.e2e.test", "second.e2e.test");
    let seed = |host: &str| run_seed_registry("seed-registry", host).unwrap();
    // Waits until `host` answers over HTTPS verified against pebble's root: its certificate
    // was issued, installed and hot-loaded, and its route is live.
    let wait_for_https = |host: &str| -> String {
        wait_for_verified_https(
            https,
            host,
            "/v2/",
            &root,
            |out| out.starts_with("HTTP/2 401"),
            || {
                format!(
                    "berth-acme log:\n{}\nberth log:\n{}",
                    daemon.log(),
                    berth.log()
                )
            },
        )
    };
    let push = |host: &str, layout: &Path, tag: &str| {
        skopeo_resolving(
            &[first, second],
            &[
                "copy",
                "--dest-cert-dir",
                &cert_dir,
                "--dest-creds",
                &creds,
                &format!("oci:{}:{tag}", layout.display()),
                &format!("docker://{host}:{}/seed/app:{tag}", https.port()),
            ],
        )
        .unwrap()
    };

    let registry = seed(first);
    // Anonymous: the registry's own 401 and challenge, over verified TLS.
    let head = wait_for_https(first).to_ascii_lowercase();
    assert!(
        head.contains("www-authenticate: basic realm=\"berth-test\""),
        "{head}"
    );

    let mib = 1 << 20;
    let layout = work.path().join("image");
    let image = build_image(&layout, "v1", &[160 * mib, 96 * mib, 64 * mib], 21).unwrap();
    assert!(image.layer_bytes >= 300 * mib as u64);
    let out = push(first, &layout, "v1");
    assert!(
        out.status.success(),
        "push failed: {}\nberth log:\n{}\nregistry log:\n{}",
        text(&out),
        berth.log(),
        docker(&["logs", &registry.name]).unwrap_or_default()
    );
    let back = work.path().join("back");
    let out = skopeo_resolving(
        &[first],
        &[
            "copy",
            "--src-cert-dir",
            &cert_dir,
            "--src-creds",
            &creds,
            &format!("docker://{first}:{}/seed/app:v1", https.port()),
            &format!("oci:{}:v1", back.display()),
        ],
    )
    .unwrap();
    assert!(out.status.success(), "pull failed: {}", text(&out));
    assert_eq!(manifest_digest(&back, "v1").unwrap(), image.manifest_digest);

    // The metrics count the uploaded bytes under the registry's host.
    let scraped = Command::new("curl")
        .args(["-sS", &format!("http://{}/metrics", berth.admin.unwrap())])
        .output()
        .unwrap();
    let scraped = String::from_utf8_lossy(&scraped.stdout).to_string();
    let key = format!("berth_request_body_bytes_total{{host=\"{first}\"}} ");
    let bytes: f64 = scraped
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("no {key}in:\n{scraped}"))
        .trim()
        .parse()
        .unwrap();
    assert!(
        bytes >= image.layer_bytes as f64,
        "{bytes} < {}",
        image.layer_bytes
    );

    // A second registry joins while a new image is being pushed to the first.
    let layout2 = work.path().join("image2");
    build_image(&layout2, "v2", &[128 * mib, 64 * mib], 22).unwrap();
    let running = {
        let layout2 = layout2.clone();
        let (cert_dir, creds) = (cert_dir.clone(), creds.clone());
        let port = https.port();
        std::thread::spawn(move || {
            skopeo_resolving(
                &[first, second],
                &[
                    "copy",
                    "--dest-cert-dir",
                    &cert_dir,
                    "--dest-creds",
                    &creds,
                    &format!("oci:{}:v2", layout2.display()),
                    &format!("docker://{first}:{port}/seed/app:v2"),
                ],
            )
            .unwrap()
        })
    };
    let registry2 = seed(second);
    wait_for_https(second);
    let small = work.path().join("small");
    build_image(&small, "v1", &[8 * mib], 23).unwrap();
    let out = push(second, &small, "v1");
    assert!(
        out.status.success(),
        "push to {second} failed: {}",
        text(&out)
    );
    let out = running.join().unwrap();
    assert!(
        out.status.success(),
        "push to {first} during the join failed: {}\nberth log:\n{}",
        text(&out),
        berth.log()
    );
    drop((registry, registry2));
}
