//! An edge's certificate feed mirror (`tls.feed`) against feeds of the test's making: one
//! that seals with another token (an impostor on the network, posing as berth-acme), one that
//! replays an answer made for another request, one that answers "unchanged" (304) without
//! proof, and the genuine article. The edge takes only the genuine document — certificates and
//! the thumbprint it answers HTTP-01 with — and an "unchanged" proven for its own request, and
//! says why it refused the others; it reports itself connected only after an authenticated
//! answer.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_core::feed::{FeedCert, FeedDocument, FeedKeys};
use berth_testkit::BerthProcess;

const TOKEN: &str = "9c2e51b7a04d4f6e8a13c5d7e9f0b2a4";
const THUMBPRINT: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
const CRT: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n";

/// How a fake feed answers.
#[derive(Clone, Copy)]
enum Answer {
    /// Sealed with another token.
    OtherToken,
    /// Sealed with the right token, for a nonce the edge never sent.
    Replayed,
    /// Sealed with the right token, for this request.
    Genuine,
    /// `304 Not Modified`, without a proof, to every request (an impostor freezing the edge).
    Unproven304,
    /// The genuine document, then to every request naming it a `304` with the proof a
    /// berth-acme makes, or (`false`) with none, as a berth-acme older than the edge.
    GenuineThen304(bool),
}

type Counter = std::sync::Arc<std::sync::atomic::AtomicUsize>;

/// A feed answering every request as `answer` says, until the test ends. Returns its address
/// and a counter of the requests it saw that carried the derived bearer.
fn fake_feed(answer: Answer) -> (SocketAddr, Counter) {
    let (addr, seen, _) = fake_feed_counting(answer);
    (addr, seen)
}

/// [`fake_feed`], also counting the requests whose `If-None-Match` named the document.
fn fake_feed_counting(answer: Answer) -> (SocketAddr, Counter, Counter) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    let conditionals = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let conditional = conditionals.clone();
    std::thread::spawn(move || {
        let right = FeedKeys::derive(TOKEN);
        let wrong = FeedKeys::derive("an-impostor-knows-another-token");
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_string();
            if head.contains(&right.authorization()) {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            let nonce = head
                .split_whitespace()
                .nth(1)
                .and_then(|target| target.split("nonce=").nth(1))
                .map(|n| n.split('&').next().unwrap_or("").to_string());
            let asked = head
                .lines()
                .find_map(|l| l.strip_prefix("if-none-match: "))
                .map(str::to_string);
            let doc = |nonce: Option<String>| FeedDocument {
                request_nonce: nonce,
                thumbprint: Some(THUMBPRINT.into()),
                certificates: vec![FeedCert {
                    name: "fed.test".into(),
                    crt: CRT.into(),
                    key: KEY.into(),
                }],
            };
            // The document's own tag: a feed answers `304` only to a request naming it, as
            // berth-acme does. The `ETag` header below says something else (as anyone on the
            // path could make it say): the edge must ask with the document's tag regardless.
            let current = doc(None).etag();
            if let Some(asked) = asked.as_ref().filter(|a| **a == current) {
                conditional.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if let Answer::GenuineThen304(prove) = answer {
                    let proof = if prove {
                        let nonce = nonce.clone().unwrap_or_default();
                        format!(
                            "berth-feed-proof: {}\r\n",
                            right.prove_unchanged(&nonce, asked).unwrap()
                        )
                    } else {
                        String::new()
                    };
                    let _ = stream.write_all(
                        format!("HTTP/1.1 304 Not Modified\r\nETag: {asked}\r\n{proof}Connection: close\r\n\r\n")
                            .as_bytes(),
                    );
                    continue;
                }
            }
            if let Answer::Unproven304 = answer {
                let _ = stream.write_all(
                    b"HTTP/1.1 304 Not Modified\r\nETag: \"same\"\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let body = match answer {
                Answer::OtherToken => wrong.seal(&doc(nonce)).unwrap(),
                Answer::Replayed => right
                    .seal(&doc(Some("00000000000000000000000000000000".into())))
                    .unwrap(),
                Answer::Genuine | Answer::GenuineThen304(_) | Answer::Unproven304 => {
                    right.seal(&doc(nonce)).unwrap()
                }
            };
            let _ = stream.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                     Content-Length: {}\r\nETag: \"same\"\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            let _ = stream.write_all(&body);
        }
    });
    (addr, seen, conditionals)
}

fn edge(feed: SocketAddr, dir: &std::path::Path) -> BerthProcess {
    edge_with(feed, dir, "")
}

/// [`edge`], with more `[acme]` keys.
fn edge_with(feed: SocketAddr, dir: &std::path::Path, acme: &str) -> BerthProcess {
    let token = dir.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    BerthProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_berth")),
        &format!(
            "[listen]\nhttp = \"{{http}}\"\nmetrics = \"{{admin}}\"\n\n[docker]\nenabled = false\n\n\
             [tls]\ncerts-dir = \"{}\"\nfeed = \"http://{feed}\"\nfeed-token-file = \"{}\"\n\n\
             [acme]\nchallenge-dir = \"{}\"\n{acme}\n",
            dir.join("certs").display(),
            token.display(),
            dir.join("challenges").display()
        ),
    )
    .unwrap()
}

fn challenge(edge: &BerthProcess) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-w", " %{http_code}"])
        .arg(format!(
            "http://{}/.well-known/acme-challenge/tok-1",
            edge.http
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn wait_for_log(edge: &BerthProcess, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !edge.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no \"{needle}\" in the log:\n{}",
            edge.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_edge_takes_only_documents_sealed_with_its_token_for_its_own_request() {
    for (answer, refusal) in [
        (Answer::OtherToken, "does not authenticate"),
        (Answer::Replayed, "not to this request"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (feed, seen) = fake_feed(answer);
        let b = edge(feed, dir.path());
        wait_for_log(&b, refusal);
        assert!(seen.load(std::sync::atomic::Ordering::SeqCst) >= 1);
        assert!(!b.log().contains(TOKEN), "the token is never logged");
        assert!(!b.log().contains("BBBB"), "no key material in the log");
        assert!(challenge(&b).ends_with(" 404"), "{}", b.log());
        assert!(
            !dir.path().join("certs/fed.test.key").exists(),
            "nothing written from a refused document"
        );
    }

    // The genuine feed, made the same way: taken (so the refusals above were the seal's).
    let dir = tempfile::tempdir().unwrap();
    let (feed, _) = fake_feed(Answer::Genuine);
    let b = edge(feed, dir.path());
    wait_for_log(&b, "certificates written to certs-dir");
    assert_eq!(challenge(&b), format!("tok-1.{THUMBPRINT} 200"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("certs/fed.test.key")).unwrap(),
        KEY
    );
}

#[test]
fn a_configured_account_thumbprint_wins_over_the_feeds() {
    const CONFIGURED: &str = "ujvCEy_fJLaiSv5sV7kiO0_G05dxuKqbq_jlTxcDKVE";
    let dir = tempfile::tempdir().unwrap();
    let (feed, _) = fake_feed(Answer::Genuine);
    let b = edge_with(
        feed,
        dir.path(),
        &format!("account-thumbprint = \"{CONFIGURED}\""),
    );
    wait_for_log(&b, "differs from acme.account-thumbprint");
    // The certificates are still taken; the thumbprint is not.
    wait_for_log(&b, "certificates written to certs-dir");
    assert_eq!(challenge(&b), format!("tok-1.{CONFIGURED} 200"));
}

/// `berth_cert_feed_connected` from the edge's `/metrics`.
fn connected(edge: &BerthProcess) -> String {
    let admin = edge.admin.unwrap();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .arg(format!("http://{admin}/metrics"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("berth_cert_feed_connected "))
        .unwrap_or("no berth_cert_feed_connected")
        .to_string()
}

#[test]
fn unchanged_counts_only_when_proven_for_the_edges_own_request() {
    // An impostor that answers "unchanged" to everything, first request included: refused,
    // nothing mirrored, and the edge never reports itself connected.
    let dir = tempfile::tempdir().unwrap();
    let (feed, seen, _) = fake_feed_counting(Answer::Unproven304);
    let b = edge(feed, dir.path());
    wait_for_log(&b, "to a request that named no document");
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.load(std::sync::atomic::Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "the edge stopped asking");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(connected(&b), "berth_cert_feed_connected 0");
    assert!(!dir.path().join("certs/fed.test.crt").exists());

    // The genuine document, then proven "unchanged" answers: taken, connected, and the edge
    // keeps asking with the tag.
    let dir = tempfile::tempdir().unwrap();
    let (feed, _, conditionals) = fake_feed_counting(Answer::GenuineThen304(true));
    let b = edge(feed, dir.path());
    wait_for_log(&b, "certificates written to certs-dir");
    let deadline = Instant::now() + Duration::from_secs(10);
    while conditionals.load(std::sync::atomic::Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "{}", b.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(connected(&b), "berth_cert_feed_connected 1");
    assert!(!b.log().contains("without a proof"), "{}", b.log());

    // "Unchanged" without the proof (an impostor after the first document, or a berth-acme
    // older than the edge): refused, and the edge asks for the whole document again.
    let dir = tempfile::tempdir().unwrap();
    let (feed, seen, conditionals) = fake_feed_counting(Answer::GenuineThen304(false));
    let b = edge(feed, dir.path());
    wait_for_log(&b, "without a proof that opens with this token");
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.load(std::sync::atomic::Ordering::SeqCst)
        <= conditionals.load(std::sync::atomic::Ordering::SeqCst) + 1
    {
        assert!(Instant::now() < deadline, "{}", b.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_certificate_that_could_not_be_written_is_fetched_and_written_again() {
    // The certificate's file name is taken by a directory: the write fails. The feed then
    // answers "unchanged" (with the proof) to whoever names the document; the edge must not
    // name it until the write has succeeded.
    let dir = tempfile::tempdir().unwrap();
    let blocked = dir.path().join("certs/fed.test.crt");
    std::fs::create_dir_all(&blocked).unwrap();
    let (feed, _, _) = fake_feed_counting(Answer::GenuineThen304(true));
    let b = edge(feed, dir.path());
    wait_for_log(&b, "certificate feed: not written");
    std::fs::remove_dir(&blocked).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !blocked.is_file() {
        assert!(
            Instant::now() < deadline,
            "the certificate was never written again\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(std::fs::read_to_string(&blocked).unwrap(), CRT);
}
