//! Edges that share no filesystem with berth-acme: berth-acme serves its certificates on the
//! feed (`acme.feed`), every edge mirrors them (`tls.feed`) and answers HTTP-01 challenges
//! from the account thumbprint. Real pebble validates through one edge whose challenge
//! directory berth-acme never writes to; both edges serve the issued certificate, a renewal
//! reaches both, both keep serving while berth-acme is down, and an edge started later is
//! served within seconds. The feed refuses clients without the token.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_core::feed::FeedKeys;
use berth_testkit::pebble::Pebble;
use berth_testkit::{free_port, BerthProcess, Origin};
use common::{berth_binary, serial, served_serial, wait_for_verified_https, wait_until, Daemon};

const HOST: &str = "feed.acme.test";
const TOKEN: &str = "3f1c9a7e0b5d42c8a6e1f09b7d3c5a2e";

struct Edge {
    berth: BerthProcess,
    certs: PathBuf,
}

/// An edge with its own certs-dir and challenge-dir under `dir`, mirroring the feed.
fn edge(dir: &Path, feed: SocketAddr, token_file: &Path, route: &str) -> Edge {
    let certs = dir.join("certs");
    let berth = BerthProcess::start(
        &berth_binary(),
        &format!(
            "[listen]\nhttp = \"{{http}}\"\nhttps = \"{{https}}\"\nmetrics = \"{{admin}}\"\n\n\
             [docker]\nenabled = false\n\n\
             [tls]\ncerts-dir = \"{}\"\nfeed = \"http://{feed}\"\nfeed-token-file = \"{}\"\n\n\
             [acme]\nchallenge-dir = \"{}\"\n\n{route}",
            certs.display(),
            token_file.display(),
            dir.join("challenges").display(),
        ),
    )
    .unwrap();
    Edge { berth, certs }
}

fn metric(edge: &Edge, name: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .arg(format!("http://{}/metrics", edge.berth.admin.unwrap()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_string))
}

/// `curl` the feed with `auth` as the Authorization header (none when empty): status and body.
fn ask_feed(feed: SocketAddr, auth: &str) -> (String, Vec<u8>) {
    let work = tempfile::tempdir().unwrap();
    let body = work.path().join("body");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", "-w", "%{http_code}", "-o"])
        .arg(&body);
    if !auth.is_empty() {
        cmd.args(["-H", &format!("Authorization: {auth}")]);
    }
    let out = cmd
        .arg(format!(
            "http://{feed}/v1/certificates?nonce=00112233445566778899aabbccddeeff"
        ))
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout).to_string();
    (code, std::fs::read(&body).unwrap_or_default())
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn edges_without_a_shared_filesystem_serve_mirror_and_outlive_the_certificate_writer() {
    let work = tempfile::tempdir().unwrap();
    let origin = Origin::start("fed");
    let route = format!(
        "[[route]]\nhost = \"{HOST}\"\nupstreams = [\"{}\"]\nacme = true\n",
        origin.addr
    );
    let token_file = work.path().join("feed-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let feed = SocketAddr::from(([127, 0, 0, 1], free_port()));

    // Two edges, each with its own directories; pebble validates through edge A's port.
    let edge_a = edge(&work.path().join("edge-a"), feed, &token_file, &route);
    let edge_b = edge(&work.path().join("edge-b"), feed, &token_file, &route);
    let pebble = Pebble::start(edge_a.berth.http.port(), false).unwrap();
    let acme_dir = work.path().join("acme");
    let acme_certs = acme_dir.join("certs");
    let config = work.path().join("acme.toml");
    // The edges learn the account's thumbprint from the feed a moment after it starts; an order
    // validated before an edge has it fails, and is tried again after `retry-after`.
    let acme_config = |extra: &str| {
        format!(
            "[listen]\nhttp = \"127.0.0.1:1\"\n\n[docker]\nenabled = false\n\n\
             [tls]\ncerts-dir = \"{}\"\n\n\
             [acme]\nchallenge-dir = \"{}\"\naccount-dir = \"{}\"\ndirectory = \"{}\"\n\
             ca-bundle = \"{}\"\nemail = \"ops@example.test\"\nmetrics = \"\"\n\
             feed = \"{feed}\"\nfeed-token-file = \"{}\"\nretry-after = \"2s\"\n{extra}\n\n{route}",
            acme_certs.display(),
            acme_dir.join("challenges").display(),
            acme_dir.join("accounts").display(),
            pebble.directory,
            pebble.tls_ca.display(),
            token_file.display(),
        )
    };
    std::fs::write(&config, acme_config("")).unwrap();
    let daemon = Daemon::start(&config, work.path().join("acme-1.log"));
    let logs = || {
        format!(
            "berth-acme:\n{}\nedge A:\n{}\nedge B:\n{}\npebble:\n{}",
            std::fs::read_to_string(work.path().join("acme-1.log")).unwrap_or_default(),
            edge_a.berth.log(),
            edge_b.berth.log(),
            pebble.log()
        )
    };

    // Both edges serve the certificate pebble issued once, verified against pebble's root.
    let root = pebble.issuing_root().unwrap();
    for e in [&edge_a, &edge_b] {
        let out = wait_for_verified_https(
            e.berth.https.unwrap(),
            HOST,
            "/",
            &root,
            |o| o.contains("\"origin\":\"fed\""),
            logs,
        );
        assert!(out.starts_with("HTTP/"), "{out}");
    }
    assert_eq!(pebble.issued(), 1, "{}", pebble.log());
    let issued = serial(&acme_certs.join(format!("{HOST}.crt")));
    for e in [&edge_a, &edge_b] {
        assert_eq!(serial(&e.certs.join(format!("{HOST}.crt"))), issued);
        use std::os::unix::fs::PermissionsExt;
        let key = e.certs.join(format!("{HOST}.key"));
        assert_eq!(key.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(metric(e, "berth_cert_feed_connected").as_deref(), Some("1"));
    }
    // The validation was answered statelessly: berth-acme's challenge directory is its own,
    // and edge B answers any token with the account's thumbprint.
    let thumbprint = daemon
        .log()
        .lines()
        .find_map(|l| {
            l.split("thumbprint=")
                .nth(1)
                .map(|t| t.split_whitespace().next().unwrap_or("").to_string())
        })
        .expect("berth-acme logs the thumbprint it publishes");
    let challenge = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .arg(format!(
            "http://{}/.well-known/acme-challenge/tok-123_x",
            edge_b.berth.http
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&challenge.stdout),
        format!("tok-123_x.{thumbprint}")
    );
    // Pebble's validation request reached edge A, which has no token file (nothing writes
    // its challenge-dir): the 200 it got was the stateless answer. (That pebble accepted it
    // is what proves the thumbprint is the account's.)
    let validated = edge_a.berth.log().lines().any(|l| {
        l.contains("\"path\":\"/.well-known/acme-challenge/") && l.contains("\"status\":200")
    });
    assert!(validated, "{}", edge_a.berth.log());
    assert!(!work.path().join("edge-a/challenges").exists());

    // No credential, a wrong one, another scheme, the token itself (only the bearer derived
    // from it is accepted: the token never crosses the network): 401.
    let keys = FeedKeys::derive(TOKEN);
    let bearer = keys.authorization();
    for auth in [
        "",
        "Bearer 3f1c9a7e0b5d42c8a6e1f09b7d3c5a2f",
        &format!("Basic {}", bearer.trim_start_matches("Bearer ")),
        &format!("{bearer}x"),
        &format!("Bearer {TOKEN}"),
    ] {
        let (code, body) = ask_feed(feed, auth);
        assert_eq!(code, "401", "{auth:?}: {}", String::from_utf8_lossy(&body));
    }
    // Without the token, a request asking to wait is refused at once, with no tag.
    let refused = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-D",
            "-",
            "-H",
            "If-None-Match: \"x\"",
        ])
        .arg(format!("http://{feed}/v1/certificates?wait=60"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&refused.stdout).to_ascii_lowercase();
    assert!(
        refused.status.success() && head.starts_with("http/1.1 401"),
        "{head}"
    );
    assert!(!head.contains("etag"), "{head}");
    // With the bearer: the document, sealed. Only the token opens it; it answers this request.
    let (code, body) = ask_feed(feed, &bearer);
    assert_eq!(code, "200");
    assert!(!contains(&body, "PRIVATE KEY") && !contains(&body, &thumbprint));
    let doc = keys.open(&body).expect("opens with the token");
    assert_eq!(doc.thumbprint.as_deref(), Some(thumbprint.as_str()));
    assert_eq!(
        doc.request_nonce.as_deref(),
        Some("00112233445566778899aabbccddeeff")
    );
    assert!(doc
        .certificates
        .iter()
        .any(|c| c.name == HOST && c.key.contains("PRIVATE KEY")));
    assert!(FeedKeys::derive("another-token-0123456789")
        .open(&body)
        .is_err());
    // Asked with the document's tag: "unchanged", proven for this request and this tag, with
    // nothing another token or another request could use.
    let etag = doc.etag();
    let nonce = "ffeeddccbbaa99887766554433221100";
    let unchanged = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-D", "-", "-o", "/dev/null"])
        .args(["-H", &format!("Authorization: {bearer}")])
        .args(["-H", &format!("If-None-Match: {etag}")])
        .arg(format!(
            "http://{feed}/v1/certificates?wait=0&nonce={nonce}"
        ))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&unchanged.stdout).to_string();
    assert!(head.starts_with("HTTP/1.1 304"), "{head}");
    let proof = head
        .lines()
        .find_map(|l| l.strip_prefix("berth-feed-proof: "))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no proof: {head}"));
    assert!(keys.unchanged_proven(proof, nonce, &etag));
    assert!(!keys.unchanged_proven(proof, "00112233445566778899aabbccddeeff", &etag));
    assert!(!FeedKeys::derive("another-token-0123456789").unchanged_proven(proof, nonce, &etag));

    // A renewal (berth-acme restarted with --force-renewal) reaches both edges without a
    // restart.
    drop(daemon);
    let daemon = Daemon::start_with(
        &config,
        work.path().join("acme-2.log"),
        &["--force-renewal"],
    );
    wait_until(
        Duration::from_secs(60),
        "berth-acme never renewed",
        || serial(&acme_certs.join(format!("{HOST}.crt"))) != issued,
        || daemon.log(),
    );
    let renewed = serial(&acme_certs.join(format!("{HOST}.crt")));
    for e in [&edge_a, &edge_b] {
        let took = wait_until(
            Duration::from_secs(10),
            "an edge never served the renewed certificate",
            || served_serial(e.berth.https.unwrap(), HOST) == renewed,
            || format!("{}\n{}", daemon.log(), e.berth.log()),
        );
        eprintln!("renewal served by an edge {took:?} after berth-acme wrote it");
    }

    // berth-acme gone: both edges say so and keep serving the certificate.
    drop(daemon);
    for e in [&edge_a, &edge_b] {
        wait_until(
            Duration::from_secs(20),
            "the feed's loss never showed in berth_cert_feed_connected",
            || metric(e, "berth_cert_feed_connected").as_deref() == Some("0"),
            || e.berth.log(),
        );
        wait_for_verified_https(
            e.berth.https.unwrap(),
            HOST,
            "/",
            &root,
            |o| o.contains("\"origin\":\"fed\""),
            || e.berth.log(),
        );
        assert_eq!(served_serial(e.berth.https.unwrap(), HOST), renewed);
        assert!(
            e.berth
                .log()
                .contains("serving the certificates this edge has and retrying"),
            "{}",
            e.berth.log()
        );
    }

    // berth-acme back (nothing due now), and a new edge: served within seconds of its start.
    std::fs::write(&config, acme_config("")).unwrap();
    let daemon = Daemon::start(&config, work.path().join("acme-3.log"));
    let edge_c = edge(&work.path().join("edge-c"), feed, &token_file, &route);
    let took = wait_until(
        Duration::from_secs(10),
        "a new edge was not served",
        || served_serial(edge_c.berth.https.unwrap(), HOST) == renewed,
        || format!("{}\n{}", daemon.log(), edge_c.berth.log()),
    );
    eprintln!("a new edge served the certificate {took:?} after it listened");
    assert_eq!(pebble.issued(), 2, "{}", pebble.log());
    for e in [&edge_a, &edge_b] {
        wait_until(
            Duration::from_secs(15),
            "an edge never reconnected to the feed",
            || metric(e, "berth_cert_feed_connected").as_deref() == Some("1"),
            || e.berth.log(),
        );
        assert!(
            e.berth.log().contains("reachable again"),
            "{}",
            e.berth.log()
        );
    }
}
