//! The real registry (Debian's docker-registry, distribution 2.8, htpasswd auth) behind
//! berth, driven by the real client (skopeo).

#![allow(clippy::unwrap_used)]

use crate::common;

use berth_testkit::client::Request;
use berth_testkit::oci::{build_image, manifest_digest};
use berth_testkit::registry::{pull, push, Registry};
use common::{berth, call, config, route};

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_pushes_and_pulls_a_multi_layer_image_through_berth() {
    let registry =
        Registry::start().expect("docker-registry must be installed (scripts/test does)");
    // skopeo names the registry by address, so the route's host is the loopback address.
    let b = berth(&config(&route(
        "127.0.0.1",
        &[registry.addr],
        "profile = \"registry\"",
    )));
    let authority = b.http.to_string();

    // Unauthenticated: the registry's 401 and its challenge come through intact.
    let r = call(&b, &Request::get(&authority, "/v2/")).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"berth-test\"")
    );
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );

    // A 3-layer image of 120 MiB of random data.
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("image");
    let mib = 1 << 20;
    let image = build_image(&layout, "v1", &[64 * mib, 40 * mib, 16 * mib], 7).unwrap();
    assert!(image.layer_bytes >= 100 * mib as u64);

    let (auth, lay) = (authority.clone(), layout.clone());
    tokio::task::spawn_blocking(move || push(&lay, "v1", &auth, "berth/test", &[]))
        .await
        .unwrap()
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nberth log:\n{}\nregistry log:\n{}",
                b.log(),
                registry.log()
            )
        });

    let back = work.path().join("pulled");
    let auth = authority.clone();
    let back_dir = back.clone();
    tokio::task::spawn_blocking(move || pull(&auth, "berth/test", "v1", &back_dir, &[]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(manifest_digest(&back, "v1").unwrap(), image.manifest_digest);
}
