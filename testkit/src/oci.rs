//! Builds an OCI image layout on disk: layers of random data (each a gzipped tar with one file),
//! a config and a manifest, ready for `skopeo copy oci:DIR:TAG ...`.

use std::io::{self, Write};
use std::path::Path;

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use serde_json::json;
use sha2::{Digest, Sha256};

/// What was written.
#[derive(Debug, Clone)]
pub struct Image {
    /// `sha256:...` of the manifest.
    pub manifest_digest: String,
    /// Total bytes of the layer blobs.
    pub layer_bytes: u64,
    /// `sha256:...` of each layer blob, in order.
    pub layer_digests: Vec<String>,
}

fn write_blob(dir: &Path, bytes: &[u8]) -> io::Result<(String, u64)> {
    let hex = hex::encode(Sha256::digest(bytes));
    std::fs::write(dir.join("blobs/sha256").join(&hex), bytes)?;
    Ok((format!("sha256:{hex}"), bytes.len() as u64))
}

/// Writes an image with one layer per entry of `layer_sizes` (bytes of random file data per
/// layer) into `dir`, tagged `tag`. `seed` makes the data differ between images.
///
/// # Errors
/// On file-system errors.
pub fn build_image(dir: &Path, tag: &str, layer_sizes: &[usize], seed: u64) -> io::Result<Image> {
    std::fs::create_dir_all(dir.join("blobs/sha256"))?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    let mut layer_bytes = 0;
    let mut layer_digests = Vec::new();
    for (i, size) in layer_sizes.iter().enumerate() {
        let mut data = vec![0u8; *size];
        rng.fill_bytes(&mut data);
        let mut builder = tar::Builder::new(Vec::with_capacity(size + 2048));
        let mut header = tar::Header::new_gnu();
        header.set_size(*size as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        builder.append_data(&mut header, format!("layer{i}.bin"), data.as_slice())?;
        let tarball = builder.into_inner()?;
        diff_ids.push(format!("sha256:{}", hex::encode(Sha256::digest(&tarball))));
        // gzip framing without compression (the data is random anyway): the registry
        // transport wants compressed layers, and this way skopeo sends them as they are,
        // so the manifest digest survives the round trip.
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(tarball.len() + tarball.len() / 1000 + 64),
            flate2::Compression::none(),
        );
        gz.write_all(&tarball)?;
        let (digest, len) = write_blob(dir, &gz.finish()?)?;
        layer_bytes += len;
        layer_digests.push(digest.clone());
        layers.push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest,
            "size": len,
        }));
    }
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (config_digest, config_len) = write_blob(dir, &serde_json::to_vec(&config)?)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_len,
        },
        "layers": layers,
    });
    let (manifest_digest, manifest_len) = write_blob(dir, &serde_json::to_vec(&manifest)?)?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_len,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    let mut f = std::fs::File::create(dir.join("index.json"))?;
    f.write_all(&serde_json::to_vec(&index)?)?;
    Ok(Image {
        manifest_digest,
        layer_bytes,
        layer_digests,
    })
}

/// The manifest digest an OCI layout's index records for `tag`.
///
/// # Errors
/// When the index cannot be read or has no such tag.
pub fn manifest_digest(dir: &Path, tag: &str) -> io::Result<String> {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json"))?)?;
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .and_then(|m| m["digest"].as_str())
        .map(str::to_string)
        .ok_or_else(|| io::Error::other(format!("no tag {tag} in {}", dir.display())))
}
