//! DNS-01 against real parts: Debian's `bind9` authoritative for a test zone (TSIG-signed
//! dynamic updates allowed for TXT records), Debian's `pebble` validating through it, and
//! the real berth serving what berth-acme obtains. Pebble's HTTP-01 port is closed in the
//! DNS-01 cases, so nothing but DNS can prove the names.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common;

use common::{berth_acme, berth_binary, text, wait_for_verified_https, wait_until, Daemon};

use berth_testkit::bind::{Bind, KEY_NAME};
use berth_testkit::pebble::Pebble;
use berth_testkit::{free_port, BerthProcess, Origin};

struct Stack {
    bind: Bind,
    pebble: Pebble,
    berth: BerthProcess,
    origin: Origin,
    work: tempfile::TempDir,
    certs: PathBuf,
    challenges: PathBuf,
}

/// bind9 for `zone`, pebble asking it (validating HTTP-01 on berth's port when `http`, on a
/// closed port otherwise), berth with `routes` (`{origin}` stands for a test upstream).
fn stack(zone: &str, routes: &str, http: bool, validity: Option<u64>) -> Stack {
    let bind = Bind::start(zone).unwrap();
    let origin = Origin::start("app");
    let work = tempfile::tempdir().unwrap();
    let certs = work.path().join("certs");
    let challenges = work.path().join("challenges");
    let routes = routes.replace("{origin}", &origin.addr.to_string());
    let berth = BerthProcess::start(
        &berth_binary(),
        &format!(
            "[listen]\nhttp = \"{{http}}\"\nhttps = \"{{https}}\"\n\n[docker]\nenabled = false\n\n\
             [tls]\ncerts-dir = \"{}\"\n\n[acme]\nchallenge-dir = \"{}\"\n\
             dns-provider = \"exec\"\ndns-exec = \"/bin/true\"\n\n{routes}",
            certs.display(),
            challenges.display()
        ),
    )
    .unwrap();
    let http_port = if http { berth.http.port() } else { free_port() };
    let pebble = Pebble::start_with_dns(bind.addr, http_port, validity).unwrap();
    Stack {
        bind,
        pebble,
        berth,
        origin,
        work,
        certs,
        challenges,
    }
}

impl Stack {
    /// berth-acme's config: the same routes and directories, `[acme]` with `acme`.
    fn config(&self, acme: &str, routes: &str) -> PathBuf {
        let path = self.work.path().join("berth-acme.toml");
        std::fs::write(
            &path,
            format!(
                "[listen]\nhttp = \"{}\"\n\n[docker]\nenabled = false\n\n[tls]\ncerts-dir = \"{}\"\n\n\
                 [acme]\nchallenge-dir = \"{}\"\naccount-dir = \"{}\"\ndirectory = \"{}\"\n\
                 ca-bundle = \"{}\"\nemail = \"ops@example.test\"\n{acme}\n\n{}",
                self.berth.http,
                self.certs.display(),
                self.challenges.display(),
                self.work.path().join("accounts").display(),
                self.pebble.directory,
                self.pebble.tls_ca.display(),
                routes.replace("{origin}", &self.origin.addr.to_string()),
            ),
        )
        .unwrap();
        path
    }

    /// `[acme]` keys for the rfc2136 provider against this stack's bind9, with `secret_file`.
    fn rfc2136(&self, secret_file: &Path) -> String {
        format!(
            "dns-provider = \"rfc2136\"\ndns-server = \"{}\"\ndns-tsig-key = \"{KEY_NAME}\"\n\
             dns-tsig-secret-file = \"{}\"\ndns-resolvers = [\"{}\"]\ndns-propagation-timeout = \"20s\"",
            self.bind.addr,
            secret_file.display(),
            self.bind.addr
        )
    }

    /// A script for the exec provider: it records each call in `calls`, and publishes
    /// through `nsupdate` with the zone's key unless `publish` is false.
    fn hook(&self, publish: bool) -> (PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let calls = self.work.path().join("calls");
        let script = self.work.path().join("dns-hook");
        let update = if publish {
            format!(
                "case \"$1\" in present) verb=add;; cleanup) verb=delete;; *) exit 2;; esac\n\
                 nsupdate -k {} <<EOF\nserver {} 53\nupdate $verb $2 60 TXT \"$3\"\nsend\nEOF\n",
                self.bind.key_file.display(),
                self.bind.addr.ip()
            )
        } else {
            String::new()
        };
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nset -e\necho \"$1 $2 $3\" >> {}\n{update}",
                calls.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        (script, calls)
    }

    fn logs(&self) -> String {
        format!(
            "--- pebble\n{}\n--- named\n{}\n--- berth\n{}",
            self.pebble.log(),
            self.bind.log(),
            self.berth.log()
        )
    }
}

/// The DNS names on a PEM certificate, as openssl prints them.
fn sans(crt: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(crt)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn get(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A wildcard and its base name (one file: `wild.test.crt`), and a name of the zone.
const WILDCARD_ROUTES: &str =
    "[[route]]\nhost = \"*.wild.test\"\nupstreams = [\"{origin}\"]\nacme = true\n\n\
     [[route]]\nhost = \"wild.test\"\nupstreams = [\"{origin}\"]\nacme = true\n\n\
     [[route]]\nhost = \"plain.wild.test\"\nupstreams = [\"{origin}\"]\nacme = true\n\
     acme-challenge = \"dns-01\"\n";

#[test]
fn rfc2136_obtains_a_wildcard_berth_serves_for_two_names_and_removes_its_records() {
    let s = stack("wild.test", WILDCARD_ROUTES, false, None);
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = s.config(
        &format!("{}\nmetrics = \"{metrics}\"", s.rfc2136(&s.bind.key_file)),
        WILDCARD_ROUTES,
    );
    // Someone else's record at the name both of the wildcard's values go to: it stays.
    s.bind
        .add_txt("_acme-challenge.wild.test", "not-ours")
        .unwrap();
    let daemon = Daemon::start(&config, s.work.path().join("acme.log"));
    let wild = s.certs.join("wild.test.crt");
    let plain = s.certs.join("plain.wild.test.crt");
    wait_until(
        Duration::from_secs(60),
        "berth-acme never installed both certificates",
        || wild.exists() && plain.exists(),
        // berth-acme's log first: it says why an order failed (the rest is long).
        || format!("--- berth-acme\n{}\n{}", daemon.log(), s.logs()),
    );
    // The wildcard and its base share one certificate, kept under the base name.
    let names = |crt: &Path| -> String {
        let text = sans(crt);
        text.lines().nth(1).unwrap_or_default().trim().to_string()
    };
    assert_eq!(
        names(&wild),
        "DNS:*.wild.test, DNS:wild.test",
        "{}",
        sans(&wild)
    );
    assert_eq!(names(&plain), "DNS:plain.wild.test", "{}", sans(&plain));

    // berth serves the wildcard for two names, verified against pebble's root.
    let root = s.pebble.issuing_root().unwrap();
    for host in ["a.wild.test", "registry.wild.test", "wild.test"] {
        let out = wait_for_verified_https(
            s.berth.https.unwrap(),
            host,
            "/",
            &root,
            |o| o.contains("\"origin\":\"app\""),
            || s.logs(),
        );
        assert!(
            out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/2 200"),
            "{out}"
        );
    }

    // The challenge records are gone from the zone; the record that was not ours stays.
    assert!(s
        .bind
        .txt("_acme-challenge.plain.wild.test")
        .unwrap()
        .is_empty());
    assert_eq!(
        s.bind.txt("_acme-challenge.wild.test").unwrap(),
        ["not-ours"],
        "{}",
        daemon.log()
    );
    // Pebble validated, and never over HTTP (its HTTP port is closed anyway).
    assert!(s
        .pebble
        .log()
        .contains("Pulled a task from the Tasks queue"));
    assert!(
        !s.pebble.log().contains("Attempting to validate w/ HTTP"),
        "{}",
        s.pebble.log()
    );

    // Counted by challenge type, with the propagation time; the status names both.
    let text = get(&format!("http://{metrics}/metrics"));
    assert_eq!(
        metric(
            &text,
            "berth_acme_orders_total{challenge=\"dns-01\",result=\"ok\"}"
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "berth_acme_orders_total{challenge=\"http-01\",result=\"ok\"}"
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "berth_acme_dns_propagation_seconds_count"),
        Some(2.0),
        "{text}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&get(&format!("http://{metrics}/certificates"))).unwrap();
    assert_eq!(status["wild.test"]["hosts"][0], "*.wild.test", "{status}");
    assert_eq!(status["wild.test"]["hosts"][1], "wild.test", "{status}");
    assert_eq!(status["wild.test"]["challenge"], "dns-01", "{status}");
    assert_eq!(status["wild.test"]["state"], "valid", "{status}");
    assert!(
        status["wild.test"]["last_propagation_seconds"]
            .as_f64()
            .is_some(),
        "{status}"
    );
    assert!(
        status["plain.wild.test"]["renew_at"].as_i64().is_some(),
        "{status}"
    );
}

#[test]
fn a_wrong_tsig_secret_fails_that_certificate_alone_and_says_why() {
    let routes = "[[route]]\nhost = \"dns.tsig.test\"\nupstreams = [\"{origin}\"]\nacme = true\n\
                  acme-challenge = \"dns-01\"\n\n\
                  [[route]]\nhost = \"http.tsig.test\"\nupstreams = [\"{origin}\"]\nacme = true\n";
    let s = stack("tsig.test", routes, true, None);
    let wrong = "d3JvbmctYnV0LXdlbGwtZm9ybWVkLXNlY3JldC0wMTIzNDU2Nzg5YWI=";
    let secret = Bind::write_secret(s.work.path(), wrong).unwrap();
    let out = berth_acme(&s.config(&s.rfc2136(&secret), routes), &["once"]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("1 issued, 1 failed"), "{said}\n{}", s.logs());
    assert!(s.certs.join("http.tsig.test.crt").exists(), "{said}");
    assert!(!s.certs.join("dns.tsig.test.crt").exists(), "{said}");
    let line = said
        .lines()
        .find(|l| l.contains("order failed"))
        .unwrap_or_else(|| panic!("no failure line: {said}"));
    assert!(
        line.contains("dns.tsig.test")
            && line.contains("publishing _acme-challenge.dns.tsig.test.")
            && line.contains("acme.dns-tsig-secret-file"),
        "{line}"
    );
    // The server took nothing from the wrong key.
    assert!(s
        .bind
        .txt("_acme-challenge.dns.tsig.test")
        .unwrap()
        .is_empty());
}

#[test]
fn the_exec_provider_publishes_and_removes_through_a_script() {
    let routes = "[[route]]\nhost = \"app.exec.test\"\nupstreams = [\"{origin}\"]\nacme = true\n\
                  acme-challenge = \"dns-01\"\n";
    let s = stack("exec.test", routes, false, None);
    let (hook, calls) = s.hook(true);
    let out = berth_acme(
        &s.config(
            &format!(
                "dns-provider = \"exec\"\ndns-exec = \"{}\"\ndns-resolvers = [\"{}\"]",
                hook.display(),
                s.bind.addr
            ),
            routes,
        ),
        &["once"],
    );
    assert!(out.status.success(), "{}\n{}", text(&out), s.logs());
    assert!(s.certs.join("app.exec.test.crt").exists());
    // present, then cleanup, of the same record and value, with lego's arguments.
    let calls = std::fs::read_to_string(calls).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(lines.len(), 2, "{calls}");
    let present = lines[0].strip_prefix("present _acme-challenge.app.exec.test. ");
    let cleanup = lines[1].strip_prefix("cleanup _acme-challenge.app.exec.test. ");
    assert!(present.is_some() && present == cleanup, "{calls}");
    assert_eq!(
        present.unwrap().len(),
        43,
        "a SHA-256 digest, base64url: {calls}"
    );
    assert!(s
        .bind
        .txt("_acme-challenge.app.exec.test")
        .unwrap()
        .is_empty());
}

#[test]
fn a_record_that_never_shows_times_out_cleans_up_and_abandons_the_order() {
    let routes = "[[route]]\nhost = \"app.silent.test\"\nupstreams = [\"{origin}\"]\nacme = true\n\
                  acme-challenge = \"dns-01\"\n";
    let s = stack("silent.test", routes, false, None);
    // The script says it published, and did not.
    let (hook, calls) = s.hook(false);
    let out = berth_acme(
        &s.config(
            &format!(
                "dns-provider = \"exec\"\ndns-exec = \"{}\"\ndns-resolvers = [\"{}\"]\n\
             dns-propagation-timeout = \"3s\"",
                hook.display(),
                s.bind.addr
            ),
            routes,
        ),
        &["once"],
    );
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("did not reach every authoritative server within 3s")
            && said.contains(&format!(
                "{} for _acme-challenge.app.silent.test.",
                s.bind.addr
            )),
        "{said}"
    );
    assert!(said.contains("authorization deactivated"), "{said}");
    let calls = std::fs::read_to_string(calls).unwrap();
    assert!(
        calls.starts_with("present ")
            && calls
                .lines()
                .nth(1)
                .is_some_and(|l| l.starts_with("cleanup ")),
        "{calls}"
    );
    // The CA took the order, and was never asked to validate: the challenge was not set
    // ready.
    assert!(s.pebble.log().contains("Added order"), "{}", s.pebble.log());
    assert!(
        !s.pebble
            .log()
            .contains("Pulled a task from the Tasks queue"),
        "{}",
        s.pebble.log()
    );
}

#[test]
fn short_lived_certificates_renew_on_time_with_auto_and_orders_are_throttled() {
    // Pebble issues 24-second certificates: with renew-before = "auto" each renews when
    // half of its life is left (lifetimes under 10 days), 12 s after it was issued.
    let routes = "[[route]]\nhost = \"a.short.test\"\nupstreams = [\"{origin}\"]\nacme = true\n\n\
                  [[route]]\nhost = \"b.short.test\"\nupstreams = [\"{origin}\"]\nacme = true\n";
    let s = stack("short.test", routes, true, Some(24));
    // One order a minute: the second certificate waits for the first to leave the window.
    let throttled = s.config(
        "max-orders-per-minute = 1\nprofile = \"shortlived\"",
        routes,
    );
    let out = berth_acme(&throttled, &["once"]);
    let said = text(&out);
    assert!(
        said.contains("1 issued, 0 failed, 1 put off by acme.max-orders-per-minute"),
        "{said}\n{}",
        s.logs()
    );
    assert!(said.contains("this one waits"), "{said}");
    // Pebble offers no profiles: said, and ordered without.
    assert!(
        said.contains("the CA offers no certificate profiles"),
        "{said}"
    );

    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = s.config(&format!("metrics = \"{metrics}\""), routes);
    let daemon = Daemon::start(&config, s.work.path().join("acme.log"));
    let crt = s.certs.join("a.short.test.crt");
    let status = || -> serde_json::Value {
        serde_json::from_str(&get(&format!("http://{metrics}/certificates"))).unwrap_or_default()
    };
    wait_until(
        Duration::from_secs(30),
        "b.short.test was never issued",
        || s.certs.join("b.short.test.crt").exists(),
        || daemon.log(),
    );
    let first = common::serial(&crt);
    let dates = |path: &Path| -> (i64, i64) {
        let e = berth_acme::wanted::read_leaf(&std::fs::read(path).unwrap()).unwrap();
        (e.not_before, e.not_after)
    };
    let (not_before, not_after) = dates(&crt);
    let lifetime = not_after - not_before;
    wait_until(
        Duration::from_secs(10),
        "no renewal time in /certificates",
        || status()["a.short.test"]["renew_at"].as_i64().is_some(),
        || daemon.log(),
    );
    let renew_at = status()["a.short.test"]["renew_at"].as_i64().unwrap();
    assert_eq!(renew_at, not_after - lifetime / 2, "{}", status());
    // The daemon renews by itself, after the renewal time and before the expiry.
    wait_until(
        Duration::from_secs(lifetime.unsigned_abs() + 10),
        "the certificate was not renewed",
        || common::serial(&crt) != first,
        || daemon.log(),
    );
    let renewed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let renewed_at = i64::try_from(renewed_at).unwrap();
    assert!(
        renewed_at >= renew_at && renewed_at < not_after,
        "renewed at {renewed_at}, window {renew_at}..{not_after}\n{}",
        daemon.log()
    );
    let (_, next_after) = dates(&crt);
    assert!(next_after > not_after);

    // A fixed window longer than these certificates' life would make each due at every
    // run: they renew as with "auto" instead, and the log says so. The one just renewed is
    // left alone.
    drop(daemon);
    let renewed = common::serial(&crt);
    let fixed = s.config("renew-before = \"30d\"", routes);
    let out = berth_acme(&fixed, &["once"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("acme.renew-before (30 days before expiry) is not shorter than this certificate's lifetime"),
        "{said}"
    );
    assert_eq!(common::serial(&crt), renewed, "{said}");
}

#[test]
fn every_authoritative_server_must_answer_not_just_one() {
    let routes = "[[route]]\nhost = \"app.two.test\"\nupstreams = [\"{origin}\"]\nacme = true\n\
                  acme-challenge = \"dns-01\"\n";
    let s = stack("two.test", routes, false, None);
    // A second server for the zone that never gets the update (a secondary lagging behind).
    let lagging = Bind::start("two.test").unwrap();
    let out = berth_acme(
        &s.config(
            &format!(
                "{}\ndns-nameservers = [\"{}\", \"{}\"]",
                s.rfc2136(&s.bind.key_file).replace(
                    "dns-propagation-timeout = \"20s\"",
                    "dns-propagation-timeout = \"3s\""
                ),
                s.bind.addr,
                lagging.addr
            ),
            routes,
        ),
        &["once"],
    );
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    let line = said
        .lines()
        .find(|l| l.contains("did not reach every authoritative server within 3s"))
        .unwrap_or_else(|| panic!("no timeout line: {said}"));
    assert!(
        line.contains(&format!(
            "{} for _acme-challenge.app.two.test.",
            lagging.addr
        )) && !line.contains(&format!("{} for", s.bind.addr)),
        "{line}"
    );
    // The record did reach the primary (else it would be named too), and was removed.
    assert!(s
        .bind
        .txt("_acme-challenge.app.two.test")
        .unwrap()
        .is_empty());
}

#[test]
fn containers_get_dns_01_certificates_only_for_the_names_the_operator_allows() {
    use berth_testkit::docker::{require, Container, BUSYBOX};
    require();
    let s = stack("lab.test", "", false, None);
    let wild = Container::run("dns-wild", &["-e", "LETSENCRYPT_HOST=*.lab.test", BUSYBOX]).unwrap();
    let evil = Container::run(
        "dns-evil",
        &[
            "--label",
            "berth.acme.challenge=dns-01",
            "-e",
            "LETSENCRYPT_HOST=lab.test",
            BUSYBOX,
        ],
    )
    .unwrap();
    let config = s.config(
        &format!(
            "{}\ndns-names = [\"*.lab.test\"]",
            s.rfc2136(&s.bind.key_file)
        ),
        "",
    );
    let config_text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[docker]\nenabled = false", "[docker]\nenabled = true");
    std::fs::write(&config, config_text).unwrap();
    let out = berth_acme(&config, &["once"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}\n{}", s.logs());
    assert!(said.contains("1 issued, 0 failed"), "{said}");
    assert!(s.certs.join("lab.test.crt").exists(), "{said}");
    // The wildcard alone: the apex, which the evil container asked for, is not on it.
    assert_eq!(
        sans(&s.certs.join("lab.test.crt"))
            .lines()
            .nth(1)
            .map(str::trim),
        Some("DNS:*.lab.test")
    );
    assert!(
        said.contains(&format!(
            "container {}: lab.test would be proved with dns-01, and acme.dns-names does not allow it",
            evil.name
        )),
        "{said}"
    );
    drop((wild, evil));
}

#[test]
fn a_failed_present_is_cleaned_up_and_its_stderr_stays_in_the_log() {
    use std::os::unix::fs::PermissionsExt;
    let routes = "[[route]]\nhost = \"app.fail.test\"\nupstreams = [\"{origin}\"]\nacme = true\n\
                  acme-challenge = \"dns-01\"\n";
    let s = stack("fail.test", routes, false, None);
    // An API that refuses the record, and says so with a token in its output.
    let calls = s.work.path().join("calls");
    let hook = s.work.path().join("dns-hook");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$1 $2 $3\" >> {}\n\
             [ \"$1\" = present ] && {{ echo 'refused for token tkn-0123456789' >&2; exit 3; }}\n\
             exit 0\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = s.config(
        &format!(
            "dns-provider = \"exec\"\ndns-exec = \"{}\"\ndns-resolvers = [\"{}\"]\n\
             metrics = \"{metrics}\"",
            hook.display(),
            s.bind.addr
        ),
        routes,
    );
    let daemon = Daemon::start(&config, s.work.path().join("acme.log"));
    let status = || -> serde_json::Value {
        serde_json::from_str(&get(&format!("http://{metrics}/certificates"))).unwrap_or_default()
    };
    wait_until(
        Duration::from_secs(30),
        "the order never failed",
        || status()["app.fail.test"]["state"] == "failed",
        || daemon.log(),
    );
    // The record that may have gone out is removed all the same.
    let calls = std::fs::read_to_string(&calls).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(lines.len(), 2, "{calls}");
    assert!(
        lines[0].starts_with("present _acme-challenge.app.fail.test. ")
            && lines[1].starts_with("cleanup _acme-challenge.app.fail.test. "),
        "{calls}"
    );
    // The log has the program's stderr; /certificates has the status only.
    let error = status()["app.fail.test"]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("exit status: 3"), "{error}");
    assert!(!error.contains("tkn-0123456789"), "{error}");
    assert!(
        daemon
            .log()
            .contains("stderr: refused for token tkn-0123456789"),
        "{}",
        daemon.log()
    );
}
