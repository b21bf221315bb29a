//! The registry cache (`cache = true`, `[cache]`): the real `berth` in front of Debian's
//! `docker-registry`, pulled from by skopeo, the Docker CLI and raw requests. The registry's
//! own access log counts what reaches it.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::{Path, PathBuf};

use base64::Engine;
use berth_testkit::client::Request;
use berth_testkit::oci::{build_image, manifest_digest, Image};
use berth_testkit::registry::{skopeo, Registry, PASSWORD, USER};
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

/// Pushes the OCI layout `layout:tag` straight to the registry as `repository:tag`.
fn push_direct(registry: &Registry, layout: &Path, tag: &str, repository: &str) {
    let creds = format!("{USER}:{PASSWORD}");
    let out = tokio::task::block_in_place(|| {
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
            &format!("oci:{}:{tag}", layout.display()),
            &format!("docker://{}/{repository}:{tag}", registry.addr),
        ])
        .unwrap()
    });
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        registry.log()
    );
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

fn image(dir: &Path, sizes: &[usize], seed: u64) -> (PathBuf, Image) {
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
    let (layout, image) = image(work.path(), &[12 * MIB, 6 * MIB, 2 * MIB], 31);
    push_direct(&registry, &layout, "v1", "team/app");
    let b = berth(&cache_config(
        &cache,
        None,
        &route(
            "127.0.0.1",
            &[registry.addr],
            "profile = \"registry\"\ncache = true",
        ),
    ));
    wait_open(&b);
    let creds = format!("{USER}:{PASSWORD}");
    // The layers and the config: four blobs.
    let blobs = image.layer_digests.len() + 1;

    let before = blob_gets(&registry);
    let (ok, said) = pull(
        &b,
        "team/app",
        "v1",
        &work.path().join("cold"),
        Some(&creds),
    );
    assert!(ok, "{said}\n{}", b.log());
    assert_eq!(
        blob_gets(&registry) - before,
        blobs,
        "a cold pull fetches each blob once"
    );
    for digest in &image.layer_digests {
        assert!(entry(&cache, digest).is_file(), "{digest} kept");
    }

    let heads = registry.requests("HEAD", "/v2/team/app/blobs/");
    let (ok, said) = pull(
        &b,
        "team/app",
        "v1",
        &work.path().join("warm"),
        Some(&creds),
    );
    assert!(ok, "{said}\n{}", b.log());
    assert_eq!(
        manifest_digest(&work.path().join("warm"), "v1").unwrap(),
        image.manifest_digest
    );
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
}
