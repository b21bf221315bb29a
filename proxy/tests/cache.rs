//! The registry cache (`cache = true`, `[cache]`): the real `berth` in front of Debian's
//! `docker-registry`, pulled from by skopeo, the Docker CLI and raw requests. The registry's
//! own access log counts what reaches it.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest as _;

use base64::Engine;
use berth_testkit::client::Request;
use berth_testkit::oci::{build_image, manifest_digest, Image};
use berth_testkit::process::memory_kib;
use berth_testkit::registry::{push, skopeo, Registry, PASSWORD, USER};
use berth_testkit::tls::{install, TestCa};
use berth_testkit::BerthProcess;
use common::{berth, call, route, scrape, value};

const MIB: usize = 1 << 20;

fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// A config with an HTTP and a metrics listener, the cache in `cache_dir` (`max-size` when
/// given), and `routes`.
fn cache_config(cache_dir: &Path, max_size: Option<&str>, routes: &str) -> String {
    let max = max_size.map_or(String::new(), |m| format!("max-size = \"{m}\"\n"));
    format!(
        "[listen]\nhttp = \"{{http}}\"\nmetrics = \"{{admin}}\"\n\n[docker]\nenabled = false\n\n\
         [cache]\ndir = \"{}\"\n{max}\n{routes}",
        cache_dir.display()
    )
}

/// berth with the cache in `cache` (`max-size` when given) in front of `registry` on the
/// loopback address, its cache open.
fn caching_berth(cache: &Path, max_size: Option<&str>, registry: &Registry) -> BerthProcess {
    let b = berth(&cache_config(
        cache,
        max_size,
        &route(
            "127.0.0.1",
            &[registry.addr],
            "profile = \"registry\"\ncache = true",
        ),
    ));
    wait_open(&b);
    b
}

/// Waits until berth says its cache is open (it is opened in the background).
fn wait_open(b: &BerthProcess) {
    berth_testkit::process::wait_until(
        std::time::Duration::from_secs(20),
        "the registry cache never opened",
        || b.log().contains("registry cache open"),
        || b.log(),
    );
}

/// skopeo copies `docker://{berth}/{repository}:{tag}` into a new OCI layout under `into`,
/// with `creds` (`None`: none); whether it succeeded, and what it said.
fn pull(
    b: &BerthProcess,
    repository: &str,
    tag: &str,
    into: &Path,
    creds: Option<&str>,
) -> (bool, String) {
    let mut args = vec!["copy".to_string(), "--src-tls-verify=false".to_string()];
    match creds {
        Some(c) => {
            args.push("--src-creds".into());
            args.push(c.into());
        }
        None => args.push("--src-no-creds".into()),
    }
    args.push(format!("docker://{}/{repository}:{tag}", b.http));
    args.push(format!("oci:{}:{tag}", into.display()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tokio::task::block_in_place(|| skopeo(&args).unwrap());
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Pulls `repository:v1` of `image` into `into` with `creds`, which must succeed and bring the
/// image back whole.
fn pull_image(b: &BerthProcess, repository: &str, into: &Path, creds: &str, image: &Image) {
    let (ok, said) = pull(b, repository, "v1", into, Some(creds));
    assert!(ok, "{repository}: {said}\n{}", b.log());
    assert_eq!(manifest_digest(into, "v1").unwrap(), image.manifest_digest);
}

/// Pushes the OCI layout `layout:tag` straight to the registry as `repository:tag`.
fn push_direct(registry: &Registry, layout: &Path, tag: &str, repository: &str) {
    let to = registry.addr.to_string();
    tokio::task::block_in_place(|| push(layout, tag, &to, repository, &[]))
        .unwrap_or_else(|e| panic!("{e}\n{}", registry.log()));
}

/// Logs the Docker CLI in to `b` as `user` and pulls `reference` from it, which must be served
/// from the cache: no blob `GET` reaches `registry`.
fn docker_pull_from_cache(
    b: &BerthProcess,
    registry: &Registry,
    dir: &Path,
    (user, password): (&str, &str),
    reference: &str,
) {
    let cli = dir.join("docker-config");
    std::fs::create_dir_all(&cli).unwrap();
    let host = b.http.to_string();
    let (ok, said) = common::docker_cli(&cli, &["login", "-u", user, "-p", password, &host]);
    assert!(ok, "{said}\n{}", b.log());
    let gets = blob_gets(registry);
    let reference = format!("{host}/{reference}");
    let (ok, said) = common::docker_cli(&cli, &["pull", &reference]);
    assert!(ok, "{said}\n{}", b.log());
    assert_eq!(
        blob_gets(registry),
        gets,
        "docker pull was served from the cache"
    );
    common::docker_cli(&cli, &["rmi", &reference]);
}

/// The blob `GET`s the registry answered so far (all of them: it is settled first).
fn blob_gets(registry: &Registry) -> usize {
    tokio::task::block_in_place(|| registry.settle()).unwrap();
    registry
        .log()
        .lines()
        .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
        .count()
}

/// The cache's file for `digest`.
fn entry(cache: &Path, digest: &str) -> PathBuf {
    cache
        .join("sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

fn build(dir: &Path, sizes: &[usize], seed: u64) -> (PathBuf, Image) {
    let layout = dir.join(format!("image-{seed}"));
    let image = build_image(&layout, "v1", sizes, seed).unwrap();
    (layout, image)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_pull_is_served_from_the_cache_after_the_registrys_own_read_check() {
    let registry =
        Registry::start().expect("docker-registry must be installed (scripts/test does)");
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let (layout, image) = build(work.path(), &[12 * MIB, 6 * MIB, 2 * MIB], 31);
    push_direct(&registry, &layout, "v1", "team/app");
    let b = caching_berth(&cache, None, &registry);
    let creds = format!("{USER}:{PASSWORD}");
    // The layers and the config: four blobs.
    let blobs = image.layer_digests.len() + 1;

    let before = blob_gets(&registry);
    pull_image(&b, "team/app", &work.path().join("cold"), &creds, &image);
    assert_eq!(
        blob_gets(&registry) - before,
        blobs,
        "a cold pull fetches each blob once"
    );
    for digest in &image.layer_digests {
        assert!(entry(&cache, digest).is_file(), "{digest} kept");
    }

    let heads = registry.requests("HEAD", "/v2/team/app/blobs/");
    pull_image(&b, "team/app", &work.path().join("warm"), &creds, &image);
    assert_eq!(
        blob_gets(&registry) - before,
        blobs,
        "no blob GET reached the registry"
    );
    // Each hit was asked about, with the client's credentials.
    assert_eq!(
        registry.requests("HEAD", "/v2/team/app/blobs/") - heads,
        blobs,
        "{}",
        registry.log()
    );
    let m = scrape(&b).await;
    let count = |result: &str| {
        value(
            &m,
            &format!("berth_cache_requests_total{{host=\"127.0.0.1\",result=\"{result}\"}}"),
        )
    };
    assert_eq!(count("hit"), blobs as f64);
    assert_eq!(count("miss"), blobs as f64);
    assert!(count("bypass") >= 2.0, "the tags and /v2/: {m:?}");
    let layer_bytes = image.layer_bytes as f64;
    assert!(value(&m, "berth_cache_served_bytes_total{host=\"127.0.0.1\"}") > layer_bytes);
    assert!(value(&m, "berth_cache_stored_bytes_total{}") > layer_bytes);
    assert_eq!(value(&m, "berth_cache_entries{}"), blobs as f64);

    // The dashboard shows the hit ratio: as many hits as misses.
    let browser = berth_testkit::browser::Browser::start()
        .expect("chromium must be installed (scripts/test installs it)");
    let mut page = browser
        .open(&format!("http://{}/", b.admin.unwrap()))
        .await
        .unwrap();
    let wait = std::time::Duration::from_secs(20);
    page.wait_until(
        "document.getElementById('cache-ratio').textContent === '50.0 %'",
        wait,
    )
    .await
    .unwrap();
    page.wait_until(
        "[...document.querySelectorAll('#route-rows tr')].some((tr) => tr.innerText.includes('registrycache'))",
        wait,
    )
    .await
    .unwrap();
    page.wait_until(
        "[...document.querySelectorAll('#hosts tr')].some((tr) => tr.innerText.includes('127.0.0.1') && tr.innerText.trim().endsWith('50.0 %'))",
        wait,
    )
    .await
    .unwrap();

    // A client the registry does not let in gets its 401, not a byte of the cached blob:
    // no credentials, a wrong password, a HEAD, a range.
    let layer = &image.layer_digests[0];
    let path = format!("/v2/team/app/blobs/{layer}");
    let host = b.http.to_string();
    let gets = blob_gets(&registry);
    for req in [
        Request::get(&host, &path),
        Request::get(&host, &path).header("authorization", &basic(USER, "wrong")),
        Request::new("HEAD", &host, &path),
        Request::get(&host, &path).header("range", "bytes=0-9"),
    ] {
        let r = call(&b, &req).await;
        assert_eq!(r.status, 401, "{} {}", req.method, r.text());
        assert!(r.body.len() < 1000, "an error body, not the layer");
        assert!(r.header("www-authenticate").is_some());
    }
    // The registry answered them (the GETs went on to it as misses); none was a hit.
    let m = scrape(&b).await;
    let hits = "berth_cache_requests_total{host=\"127.0.0.1\",result=\"hit\"}";
    assert_eq!(value(&m, hits), blobs as f64);
    assert_eq!(blob_gets(&registry), gets + 3);

    // With the credentials: a resumed pull's range, and a HEAD, from the cache.
    let auth = basic(USER, PASSWORD);
    let gets = blob_gets(&registry);
    let r = call(
        &b,
        &Request::get(&host, &path)
            .header("authorization", &auth)
            .header("range", "bytes=100-199"),
    )
    .await;
    assert_eq!(r.status, 206, "{}", r.text());
    assert_eq!(r.body.len(), 100);
    let file = std::fs::read(entry(&cache, layer)).unwrap();
    assert_eq!(r.body, &file[100..200]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 100-199/{}", file.len()).as_str())
    );
    let r = call(
        &b,
        &Request::new("HEAD", &host, &path).header("authorization", &auth),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-content-digest"), Some(layer.as_str()));
    assert_eq!(
        r.header("content-length"),
        Some(file.len().to_string().as_str())
    );
    assert_eq!(blob_gets(&registry), gets, "served from the cache");

    // The Docker CLI, logged in with the registry's own credentials, pulls from the cache.
    let _daemon = berth_testkit::docker::shared().await;
    docker_pull_from_cache(&b, &registry, work.path(), (USER, PASSWORD), "team/app:v1");
}

const USERS: [(&str, &str); 2] = [("alice", "alice-pw"), ("bob", "bob-pw")];

/// berth with its own users and repository rules (alice reads and writes team-a/*, bob
/// team-b/*) and the cache, in front of a registry without auth of its own.
fn berth_with_rules(dir: &Path, registry: &Registry) -> BerthProcess {
    let htpasswd = dir.join("htpasswd");
    for (i, (user, pw)) in USERS.iter().enumerate() {
        let mut cmd = std::process::Command::new("htpasswd");
        if i == 0 {
            cmd.arg("-c");
        }
        let out = cmd
            .arg("-bB")
            .arg(&htpasswd)
            .args([user, pw])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let rules = format!(
        "profile = \"registry\"\ncache = true\nauth.htpasswd = \"{}\"\n\
         auth.repositories = [\n\
           {{ repositories = [\"team-a/*\"], users = [\"alice\"], allow = [\"pull\", \"push\"] }},\n\
           {{ repositories = [\"team-b/*\"], users = [\"bob\"], allow = [\"pull\", \"push\"] }},\n\
         ]",
        htpasswd.display()
    );
    let b = berth(&cache_config(
        &dir.join("cache"),
        None,
        &route("127.0.0.1", &[registry.addr], &rules),
    ));
    wait_open(&b);
    b
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_never_gets_a_cached_layer_of_a_repository_they_may_not_read() {
    let registry =
        Registry::start_open().expect("docker-registry must be installed (scripts/test does)");
    let work = tempfile::tempdir().unwrap();
    // One image in team-a/app and team-b/app; another in team-a/other.
    let (layout, image) = build(work.path(), &[3 * MIB, MIB], 41);
    let (other_layout, _) = build(work.path(), &[MIB], 42);
    push_direct(&registry, &layout, "v1", "team-a/app");
    push_direct(&registry, &layout, "v1", "team-b/app");
    push_direct(&registry, &other_layout, "v1", "team-a/other");
    let b = berth_with_rules(work.path(), &registry);
    let blobs = image.layer_digests.len() + 1;

    // alice fills the cache from team-a/app; bob's pull of team-b/app is served from it,
    // each hit asked of the registry about team-b/app.
    let before = blob_gets(&registry);
    pull_image(
        &b,
        "team-a/app",
        &work.path().join("a"),
        "alice:alice-pw",
        &image,
    );
    assert_eq!(blob_gets(&registry) - before, blobs);
    let heads = registry.requests("HEAD", "/v2/team-b/app/blobs/");
    pull_image(
        &b,
        "team-b/app",
        &work.path().join("b"),
        "bob:bob-pw",
        &image,
    );
    assert_eq!(
        blob_gets(&registry) - before,
        blobs,
        "bob's pull was served from the cache"
    );
    assert_eq!(
        registry.requests("HEAD", "/v2/team-b/app/blobs/") - heads,
        blobs
    );

    let layer = &image.layer_digests[0];
    let host = b.http.to_string();
    let bob = basic("bob", "bob-pw");
    let alice = basic("alice", "alice-pw");
    let asked = registry.log().lines().count();
    // bob asks for the same layer in team-a/app, which he may not read: berth's rules
    // refuse him before the cache or the registry is asked.
    for method in ["GET", "HEAD"] {
        let r = call(
            &b,
            &Request::new(method, &host, &format!("/v2/team-a/app/blobs/{layer}"))
                .header("authorization", &bob),
        )
        .await;
        assert_eq!(r.status, 403, "{method} {}", r.text());
        assert!(r.body.len() < 1000);
    }
    // Nobody at all.
    let r = call(
        &b,
        &Request::get(&host, &format!("/v2/team-b/app/blobs/{layer}")),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(r.body.len() < 1000);
    tokio::task::block_in_place(|| registry.settle()).unwrap();
    assert_eq!(
        registry.log().lines().count(),
        asked + 1,
        "only the settle request reached the registry:\n{}",
        registry.log()
    );
    // alice may read team-a/*, but team-a/other does not hold the layer: the registry says
    // so to the read check, and its 404 is the answer, not the cached bytes.
    for range in [None, Some("bytes=0-99")] {
        let mut req = Request::get(&host, &format!("/v2/team-a/other/blobs/{layer}"))
            .header("authorization", &alice);
        if let Some(r) = range {
            req = req.header("range", r);
        }
        let r = call(&b, &req).await;
        assert_eq!(r.status, 404, "{range:?}: {}", r.text());
        assert!(r.text().contains("BLOB_UNKNOWN"), "{}", r.text());
    }
    let r = call(
        &b,
        &Request::new("HEAD", &host, &format!("/v2/team-a/other/blobs/{layer}"))
            .header("authorization", &alice),
    )
    .await;
    assert_eq!(r.status, 404);

    // The Docker CLI, logged in as bob, pulls team-b/app from the cache.
    let _daemon = berth_testkit::docker::shared().await;
    docker_pull_from_cache(
        &b,
        &registry,
        work.path(),
        ("bob", "bob-pw"),
        "team-b/app:v1",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_the_cache_and_a_damaged_entry_is_fetched_again() {
    let registry =
        Registry::start().expect("docker-registry must be installed (scripts/test does)");
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let (layout, image) = build(work.path(), &[4 * MIB, 2 * MIB, MIB], 51);
    push_direct(&registry, &layout, "v1", "team/app");
    let config = cache_config(
        &cache,
        None,
        &route(
            "127.0.0.1",
            &[registry.addr],
            "profile = \"registry\"\ncache = true",
        ),
    );
    let creds = format!("{USER}:{PASSWORD}");
    let blobs = image.layer_digests.len() + 1;
    let b = berth(&config);
    wait_open(&b);
    pull_image(&b, "team/app", &work.path().join("first"), &creds, &image);
    drop(b);

    // One layer damaged while berth was down: one byte changed, the length kept.
    let damaged = &image.layer_digests[1];
    let file = entry(&cache, damaged);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[1000] ^= 0x55;
    std::fs::write(&file, &bytes).unwrap();

    let b = berth(&config);
    wait_open(&b);
    assert!(
        b.log().contains(&format!("entries={blobs}")),
        "the entries found at start:\n{}",
        b.log()
    );
    let gets = blob_gets(&registry);
    pull_image(&b, "team/app", &work.path().join("second"), &creds, &image);
    // Only the damaged layer was fetched again; the rest came from the kept cache.
    assert_eq!(blob_gets(&registry) - gets, 1, "{}", registry.log());
    assert_eq!(
        registry.requests("GET", &format!("/v2/team/app/blobs/{damaged}")),
        2
    );
    assert!(
        b.log().contains("no longer hashes to its digest"),
        "{}",
        b.log()
    );
    let again = std::fs::read(&file).unwrap();
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&again)),
        damaged.strip_prefix("sha256:").unwrap(),
        "kept again, intact"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_holds_max_size_and_passes_through_what_it_cannot_keep() {
    let registry =
        Registry::start().expect("docker-registry must be installed (scripts/test does)");
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    // Four layers of 6 MiB (and a config) through a cache of 16 MiB; then a layer of 20 MiB.
    let (layout, image) = build(work.path(), &[6 * MIB, 6 * MIB, 6 * MIB, 6 * MIB], 61);
    let (big_layout, big) = build(work.path(), &[20 * MIB], 62);
    push_direct(&registry, &layout, "v1", "team/app");
    push_direct(&registry, &big_layout, "v1", "team/big");
    let b = caching_berth(&cache, Some("16MiB"), &registry);
    let creds = format!("{USER}:{PASSWORD}");
    // The layers one after another, each read twice (the second from the cache), then the
    // image by skopeo (layers at once: one whose room is taken by writes in progress passes
    // through), then the large one.
    let (host, auth) = (b.http.to_string(), basic(USER, PASSWORD));
    for layer in &image.layer_digests {
        for _ in 0..2 {
            let r = call(
                &b,
                &Request::get(&host, &format!("/v2/team/app/blobs/{layer}"))
                    .header("authorization", &auth),
            )
            .await;
            assert_eq!(r.status, 200);
            assert_eq!(
                r.body.len(),
                std::fs::metadata(
                    layout
                        .join("blobs/sha256")
                        .join(layer.strip_prefix("sha256:").unwrap())
                )
                .unwrap()
                .len() as usize
            );
        }
    }
    let m = scrape(&b).await;
    let stored = value(&m, "berth_cache_stored_bytes_total{}");
    assert!(
        stored >= (24 * MIB) as f64,
        "{stored}: every layer was kept in turn"
    );
    assert_eq!(
        value(
            &m,
            "berth_cache_requests_total{host=\"127.0.0.1\",result=\"hit\"}"
        ),
        4.0
    );
    // Room for the last two: the least recently used went as the others came.
    let kept: Vec<bool> = image
        .layer_digests
        .iter()
        .map(|d| entry(&cache, d).exists())
        .collect();
    assert_eq!(kept, [false, false, true, true]);
    pull_image(&b, "team/app", &work.path().join("app"), &creds, &image);
    let (ok, said) = pull(&b, "team/big", "v1", &work.path().join("big"), Some(&creds));
    assert!(ok, "{said}\n{}", b.log());
    let on_disk: u64 = std::fs::read_dir(cache.join("sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(on_disk <= 16 * MIB as u64, "{on_disk} bytes kept");
    assert!(value(&scrape(&b).await, "berth_cache_size_bytes{}") <= (16 * MIB) as f64);
    assert!(
        !entry(&cache, &big.layer_digests[0]).exists(),
        "larger than the whole cache"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_cache_passes_every_pull_through_and_says_why() {
    let registry =
        Registry::start().expect("docker-registry must be installed (scripts/test does)");
    let work = tempfile::tempdir().unwrap();
    let (layout, image) = build(work.path(), &[2 * MIB], 71);
    push_direct(&registry, &layout, "v1", "team/app");
    let creds = format!("{USER}:{PASSWORD}");
    let routes = route(
        "127.0.0.1",
        &[registry.addr],
        "profile = \"registry\"\ncache = true",
    );
    // A file where the directory should be.
    let not_a_dir = work.path().join("not-a-dir");
    std::fs::write(&not_a_dir, "").unwrap();
    // A file system with less room than any entry needs (a full disk).
    let full = work.path().join("full");
    std::fs::create_dir_all(&full).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&full)
        .status()
        .expect("mount (the tests run as root)");
    assert!(mounted.success(), "mounting a tmpfs needs root");
    let _unmount = Unmount(full.clone());
    for (dir, said) in [
        (not_a_dir, "cannot use the cache directory"),
        (full.clone(), "not enough room on the cache's file system"),
    ] {
        let b = berth(&cache_config(&dir, None, &routes));
        for round in 0..2 {
            let into = work
                .path()
                .join(format!("{}-{round}", dir.display().to_string().len()));
            let gets = blob_gets(&registry);
            let (ok, out) = pull(&b, "team/app", "v1", &into, Some(&creds));
            assert!(ok, "{dir:?}: {out}\n{}", b.log());
            assert_eq!(blob_gets(&registry) - gets, image.layer_digests.len() + 1);
        }
        berth_testkit::process::wait_until(
            std::time::Duration::from_secs(10),
            "the log says why nothing is kept",
            || b.log().contains(said),
            || b.log(),
        );
    }
    assert_eq!(
        std::fs::read_dir(full.join("sha256")).unwrap().count(),
        0,
        "nothing kept on the full file system"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_directory_is_made_only_once_a_route_caches() {
    let registry =
        Registry::start().expect("docker-registry must be installed (scripts/test does)");
    let work = tempfile::tempdir().unwrap();
    let (layout, image) = build(work.path(), &[2 * MIB], 75);
    push_direct(&registry, &layout, "v1", "team/app");
    let creds = format!("{USER}:{PASSWORD}");
    let dir = work.path().join("cache");
    let routes = |extra: &str| route("127.0.0.1", &[registry.addr], extra);
    let b = berth(&cache_config(&dir, None, &routes("profile = \"registry\"")));
    pull_image(&b, "team/app", &work.path().join("plain"), &creds, &image);
    assert!(!dir.exists(), "no route caches, yet {dir:?} was made");
    assert!(!b.log().contains("registry cache open"), "{}", b.log());

    // A reload gives the route cache = true: its first request opens the cache.
    b.rewrite_config(&cache_config(
        &dir,
        None,
        &routes("profile = \"registry\"\ncache = true"),
    ))
    .unwrap();
    b.signal("HUP").unwrap();
    berth_testkit::process::wait_until(
        std::time::Duration::from_secs(10),
        "the reload was never applied",
        || b.log().contains(" applied ("),
        || b.log(),
    );
    pull_image(&b, "team/app", &work.path().join("opens"), &creds, &image);
    wait_open(&b);
    pull_image(&b, "team/app", &work.path().join("fills"), &creds, &image);
    let gets = blob_gets(&registry);
    pull_image(&b, "team/app", &work.path().join("cached"), &creds, &image);
    assert_eq!(blob_gets(&registry), gets, "{}", registry.log());
    assert!(dir.join("sha256").is_dir());
}

/// Unmounts a file system when dropped.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_of_one_image_fetch_each_blob_once() {
    let registry =
        Registry::start().expect("docker-registry must be installed (scripts/test does)");
    let work = tempfile::tempdir().unwrap();
    let (layout, image) = build(work.path(), &[24 * MIB, 8 * MIB], 81);
    push_direct(&registry, &layout, "v1", "team/app");
    let b = caching_berth(&work.path().join("cache"), None, &registry);
    let creds = format!("{USER}:{PASSWORD}");
    let before = blob_gets(&registry);
    let results: Vec<(bool, String)> = std::thread::scope(|s| {
        let pulls: Vec<_> = (0..4)
            .map(|i| {
                let (b, creds, into) = (&b, &creds, work.path().join(format!("pull-{i}")));
                s.spawn(move || {
                    let rt = tokio::runtime::Builder::new_multi_thread().build().unwrap();
                    rt.block_on(async { pull(b, "team/app", "v1", &into, Some(creds)) })
                })
            })
            .collect();
        pulls.into_iter().map(|p| p.join().unwrap()).collect()
    });
    for (ok, said) in &results {
        assert!(ok, "{said}\n{}", b.log());
    }
    for i in 0..4 {
        assert_eq!(
            manifest_digest(&work.path().join(format!("pull-{i}")), "v1").unwrap(),
            image.manifest_digest
        );
    }
    assert_eq!(
        blob_gets(&registry) - before,
        image.layer_digests.len() + 1,
        "one upstream fetch per blob:\n{}",
        registry.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cold_range_request_fetches_the_whole_blob_once_and_gets_its_range() {
    let registry =
        Registry::start().expect("docker-registry must be installed (scripts/test does)");
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let (layout, image) = build(work.path(), &[4 * MIB], 91);
    push_direct(&registry, &layout, "v1", "team/app");
    let b = caching_berth(&cache, None, &registry);
    let layer = &image.layer_digests[0];
    let bytes = std::fs::read(
        layout
            .join("blobs/sha256")
            .join(layer.strip_prefix("sha256:").unwrap()),
    )
    .unwrap();
    let (host, auth) = (b.http.to_string(), basic(USER, PASSWORD));
    let path = format!("/v2/team/app/blobs/{layer}");
    let gets = blob_gets(&registry);
    for (range, start, end) in [
        ("bytes=1000-1999", 1000, 2000),
        ("bytes=-10", bytes.len() - 10, bytes.len()),
    ] {
        let r = call(
            &b,
            &Request::get(&host, &path)
                .header("authorization", &auth)
                .header("range", range),
        )
        .await;
        assert_eq!(r.status, 206, "{range}: {}", r.text());
        assert_eq!(r.body, &bytes[start..end], "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {start}-{}/{}", end - 1, bytes.len()).as_str())
        );
    }
    assert_eq!(
        blob_gets(&registry) - gets,
        1,
        "the whole blob, fetched once"
    );
    // Kept whole (the fetch goes on after the first client has its range).
    berth_testkit::process::wait_until(
        std::time::Duration::from_secs(10),
        "the blob a range asked for was never kept",
        || entry(&cache, layer).is_file(),
        || b.log(),
    );
    assert_eq!(std::fs::read(entry(&cache, layer)).unwrap(), bytes);
}

#[tokio::test(flavor = "multi_thread")]
async fn manifests_by_digest_are_cached_and_served_with_their_own_headers() {
    let registry =
        Registry::start().expect("docker-registry must be installed (scripts/test does)");
    let work = tempfile::tempdir().unwrap();
    let (layout, image) = build(work.path(), &[MIB], 95);
    push_direct(&registry, &layout, "v1", "team/app");
    let b = caching_berth(&work.path().join("cache"), None, &registry);
    let creds = format!("{USER}:{PASSWORD}");
    let manifest = &image.manifest_digest;
    let manifest_gets = || {
        tokio::task::block_in_place(|| registry.settle()).unwrap();
        registry.requests("GET", &format!("/v2/team/app/manifests/{manifest}"))
    };
    // skopeo pulls by digest: the manifest is fetched by its digest, then from the cache.
    let by_digest = |into: &str| {
        let out = tokio::task::block_in_place(|| {
            skopeo(&[
                "copy",
                "--src-tls-verify=false",
                "--src-creds",
                &creds,
                &format!("docker://{}/team/app@{manifest}", b.http),
                &format!("dir:{}", work.path().join(into).display()),
            ])
            .unwrap()
        });
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            b.log()
        );
    };
    by_digest("cold");
    assert_eq!(manifest_gets(), 1);
    by_digest("warm");
    assert_eq!(manifest_gets(), 1, "the manifest came from the cache");

    // The manifest's bytes pushed as a blob to another repository, and fetched as one: kept
    // as a blob (with a blob's headers) ...
    let raw = std::fs::read(
        layout
            .join("blobs/sha256")
            .join(manifest.strip_prefix("sha256:").unwrap()),
    )
    .unwrap();
    let registry_host = registry.addr.to_string();
    let auth = basic(USER, PASSWORD);
    let start = berth_testkit::client::send(
        registry.addr,
        &Request::new("POST", &registry_host, "/v2/team/evil/blobs/uploads/")
            .header("authorization", &auth),
    )
    .await
    .unwrap();
    assert_eq!(start.status, 202, "{}", start.text());
    let location = start.header("location").unwrap().to_string();
    let location = location
        .strip_prefix(&format!("http://{registry_host}"))
        .unwrap_or(&location)
        .to_string();
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = berth_testkit::client::send(
        registry.addr,
        &Request::new(
            "PUT",
            &registry_host,
            &format!("{location}{sep}digest={manifest}"),
        )
        .header("authorization", &auth)
        .body(berth_testkit::client::Body::Bytes(raw.clone())),
    )
    .await
    .unwrap();
    assert_eq!(put.status, 201, "{}", put.text());
    let host = b.http.to_string();
    let r = call(
        &b,
        &Request::get(&host, &format!("/v2/team/evil/blobs/{manifest}"))
            .header("authorization", &auth),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, raw);
    assert_ne!(
        r.header("content-type"),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    // ... and a pull of the manifest still gets a manifest's headers, from the registry.
    for _ in 0..2 {
        let r = call(
            &b,
            &Request::get(&host, &format!("/v2/team/app/manifests/{manifest}"))
                .header("authorization", &auth)
                .header("accept", "application/vnd.oci.image.manifest.v1+json"),
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, raw);
        assert_eq!(
            r.header("content-type"),
            Some("application/vnd.oci.image.manifest.v1+json")
        );
        assert_eq!(r.header("docker-content-digest"), Some(manifest.as_str()));
    }
    by_digest("after");
}

/// berth with an HTTPS listener (`app.test`, a certificate from `ca`) caching `registry` in
/// `dir/cache`, its cache open.
fn caching_berth_over_https(dir: &Path, ca: &TestCa, registry: &Registry) -> BerthProcess {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    install(&certs, "app.test", &ca.issue(&["app.test"])).unwrap();
    let b = berth(&format!(
        "[listen]\nhttp = \"{{http}}\"\nhttps = \"{{https}}\"\n\n[docker]\nenabled = false\n\n\
         [log]\naccess = \"off\"\n\n[tls]\ncerts-dir = \"{}\"\ndefault-cert = \"none\"\n\n\
         [cache]\ndir = \"{}\"\n\n{}",
        certs.display(),
        dir.join("cache").display(),
        route(
            "app.test",
            &[registry.addr],
            "profile = \"registry\"\ncache = true"
        )
    ));
    wait_open(&b);
    b
}

/// Sends `method` for `path` with the registry's credentials on `client`; the answer's head.
async fn h2_ask(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    https: std::net::SocketAddr,
    method: &str,
    path: &str,
) -> h2::client::ResponseFuture {
    let req = http::Request::builder()
        .method(method)
        .uri(format!("https://app.test:{}{path}", https.port()))
        .header("authorization", basic(USER, PASSWORD))
        .body(())
        .unwrap();
    *client = client.clone().ready().await.unwrap();
    client.send_request(req, true).unwrap().0
}

/// Reads a whole HTTP/2 answer body; its length.
async fn drain(resp: h2::client::ResponseFuture) -> usize {
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        got += chunk.len();
        body.flow_control().release_capacity(chunk.len()).unwrap();
    }
    got
}

/// Streams of a cached blob that the client never lets berth write hold little each: a hit
/// reads the cache's files on a few shared threads and keeps nothing they allocated.
#[tokio::test(flavor = "multi_thread")]
async fn http2_streams_whose_window_stays_shut_on_a_cached_blob_cost_little() {
    let registry =
        Registry::start().expect("docker-registry must be installed (scripts/test does)");
    let work = tempfile::tempdir().unwrap();
    let (layout, image) = build(work.path(), &[16 * MIB], 95);
    push_direct(&registry, &layout, "v1", "team/app");
    let ca = TestCa::new("cache h2 test CA");
    let b = caching_berth_over_https(work.path(), &ca, &registry);
    let https = b.https.unwrap();
    let path = format!("/v2/team/app/blobs/{}", image.layer_digests[0]);

    // The blob kept, then warm-up: whole hits on connections open at once (every berth thread
    // has every buffer a hit needs), and 100 HEADs at once on the connection the streams will
    // use (the read checks' connections, that connection's thread; HEADs need no window).
    let mut first = crate::h2_streams::connect(https, &ca, 1 << 20).await;
    let size = drain(h2_ask(&mut first, https, "GET", &path).await).await;
    assert!(size > 16 * MIB, "{size}");
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut warm = Vec::new();
    for _ in 0..threads * 3 {
        warm.push(crate::h2_streams::connect(https, &ca, 1 << 20).await);
    }
    for client in &mut warm {
        let resp = h2_ask(client, https, "GET", &path).await;
        assert_eq!(drain(resp).await, size);
    }
    let mut shut = crate::h2_streams::connect(https, &ca, 0).await;
    let mut heads = Vec::new();
    for _ in 0..100 {
        heads.push(h2_ask(&mut shut, https, "HEAD", &path).await);
    }
    for head in heads {
        assert_eq!(head.await.unwrap().status(), 200);
    }
    drop(warm);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let gets = blob_gets(&registry);
    let (before, _) = memory_kib(b.pid()).unwrap();
    let threads_before = thread_count(b.pid());

    // 100 streams of the cached blob, none of which the client lets berth write.
    let mut waiting = Vec::new();
    for _ in 0..100 {
        waiting.push(h2_ask(&mut shut, https, "GET", &path).await);
    }
    let mut bodies = Vec::new();
    for resp in waiting {
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        bodies.push(resp.into_body());
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let (during, _) = memory_kib(b.pid()).unwrap();
    let grown = during.saturating_sub(before);
    assert_eq!(blob_gets(&registry), gets, "served from the cache");
    assert!(
        grown < 12 << 10,
        "100 streams with a shut window on a cached blob grew berth by {grown} KiB (threads: \
         {threads_before} before, {} now)",
        thread_count(b.pid())
    );
    drop(bodies);
}

/// How many threads process `pid` runs.
fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}
