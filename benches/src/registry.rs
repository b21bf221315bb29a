//! The registry scenarios, over TLS with the registry's own htpasswd auth, four ways in one
//! run: direct (the registry serving HTTPS itself), berth, nginx streaming and nginx with the
//! seed recipe's configuration (the last three terminate TLS in front of a plain registry):
//! - `skopeo copy` of a 3-layer 320 MiB image (`registry_push_skopeo_320mib`), seconds;
//! - blob uploads as one chunked PATCH each (`POST` → `PATCH` with `Transfer-Encoding:
//!   chunked` → `PUT ?digest=`), 512 MiB, concurrency 1 and 4, with curl over HTTP/1.1.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use berth_testkit::oci::build_image;
use berth_testkit::process::PeakRss;
use berth_testkit::registry::{skopeo_resolving, Registry, PASSWORD, USER};
use berth_testkit::tls::{install, TestCa};
use berth_testkit::BerthProcess;

use crate::report::{Against, Better, Row};
use berth_testkit::nginx::{Nginx, NginxFlavour};

/// The name every target is reached by.
const HOST: &str = "registry.bench.test";
const MIB: usize = 1 << 20;
/// Layer sizes of the pushed image (320 MiB of random data).
const LAYERS: [usize; 3] = [160 * MIB, 96 * MIB, 64 * MIB];

/// What to run.
pub struct RegistryBench {
    /// Pushes per target (median reported).
    pub push_runs: usize,
    /// MiB per blob upload.
    pub patch_mib: u64,
    /// Concurrency levels of blob uploads.
    pub patch_concurrency: Vec<usize>,
    /// Repetitions per blob scenario (median reported).
    pub patch_runs: usize,
    /// The berth binary.
    pub berth: PathBuf,
}

struct Target {
    name: &'static str,
    port: u16,
    pids: Vec<u32>,
}

/// One measurement: the figure and the target's peak RSS.
type Sample = (f64, u64);

/// Runs the registry scenarios and returns their rows.
///
/// # Errors
/// When a server does not start or a push or upload fails.
pub fn run(bench: &RegistryBench) -> Result<Vec<Row>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ca = TestCa::new("bench registry CA");
    let leaf = ca.issue(&[HOST]);
    let certs = dir.path().join("certs");
    let trust = dir.path().join("trust");
    for d in [&certs, &trust] {
        std::fs::create_dir(d).map_err(|e| e.to_string())?;
    }
    install(&certs, HOST, &leaf).map_err(|e| e.to_string())?;
    std::fs::write(trust.join("ca.crt"), ca.pem()).map_err(|e| e.to_string())?;
    let (cert, key) = (
        certs.join(format!("{HOST}.crt")),
        certs.join(format!("{HOST}.key")),
    );

    let direct = Registry::start_tls(&cert, &key).map_err(|e| format!("registry: {e}"))?;
    let behind = Registry::start().map_err(|e| format!("registry: {e}"))?;
    let config = format!(
        "[listen]\nhttp = \"{{http}}\"\nhttps = \"{{https}}\"\n[docker]\nenabled = false\n[tls]\ncerts-dir = \"{}\"\n\
         [[route]]\nhost = \"{HOST}\"\nupstreams = [\"{}\"]\nprofile = \"registry\"\n",
        certs.display(),
        behind.addr
    );
    let berth = BerthProcess::start(&bench.berth, &config).map_err(|e| e.to_string())?;
    let tls = Some((cert.as_path(), key.as_path()));
    let streaming = Nginx::start_with_tls(NginxFlavour::Streaming, behind.addr, tls)
        .map_err(|e| format!("nginx: {e}"))?;
    let seed = Nginx::start_with_tls(NginxFlavour::SeedRecipe, behind.addr, tls)
        .map_err(|e| format!("nginx: {e}"))?;
    let targets = [
        Target {
            name: "direct",
            port: direct.addr.port(),
            pids: Vec::new(),
        },
        Target {
            name: "berth",
            port: berth.https.ok_or("berth has no HTTPS listener")?.port(),
            pids: vec![berth.pid()],
        },
        Target {
            name: "nginx streaming",
            port: streaming.addr.port(),
            pids: streaming.pids(),
        },
        Target {
            name: "nginx seed recipe",
            port: seed.addr.port(),
            pids: seed.pids(),
        },
    ];

    let mut rows = Vec::new();
    // Every push is a new image, so nothing is skipped as already there (and skopeo's blob
    // cache has nothing to mount); the targets take turns so that drift hits all alike.
    let mut pushes: Vec<Vec<Sample>> = vec![Vec::new(); targets.len()];
    for run in 0..bench.push_runs.max(1) {
        for (i, t) in targets.iter().enumerate() {
            let seed = (run * targets.len() + i) as u64 + 1000;
            let sample = push(t, dir.path(), &trust, seed)?;
            eprintln!(
                "registry_push_skopeo_320mib {:>17}: {:.2} s",
                t.name, sample.0
            );
            pushes[i].push(sample);
        }
    }
    rows.push(
        row(
            "registry_push_skopeo_320mib".to_string(),
            "s",
            Better::Lower,
            &pushes,
        )
        .goal(Against::Direct, 1.05),
    );

    let blob = dir.path().join("blob");
    let digest = random_file(&blob, bench.patch_mib << 20)?;
    let ca_file = trust.join("ca.crt");
    for &c in &bench.patch_concurrency {
        let scenario = format!("registry_blob_patch_chunked_c{c}_{}mib", bench.patch_mib);
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); targets.len()];
        for _ in 0..bench.patch_runs.max(1) {
            for (i, t) in targets.iter().enumerate() {
                let sample = blob_uploads(t, c, &blob, &digest, &ca_file, bench.patch_mib)?;
                eprintln!("{scenario} {:>17}: {:.0} MB/s", t.name, sample.0);
                samples[i].push(sample);
            }
        }
        rows.push(row(scenario, "MB/s", Better::Higher, &samples).goal(Against::Direct, 0.95));
    }
    Ok(rows)
}

/// The row of one scenario from every target's samples: medians, and the largest peak RSS.
fn row(scenario: String, unit: &'static str, better: Better, samples: &[Vec<Sample>]) -> Row {
    let median = |s: &[Sample]| {
        let mut v: Vec<f64> = s.iter().map(|s| s.0).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let peak = |s: &[Sample]| s.iter().map(|s| s.1).max();
    Row {
        section: "Registry over TLS with htpasswd auth",
        scenario,
        unit,
        better,
        direct: Some(median(&samples[0])),
        berth: median(&samples[1]),
        nginx_streaming: Some(median(&samples[2])),
        nginx_seed: Some(median(&samples[3])),
        berth_rss_kib: peak(&samples[1]),
        nginx_rss_kib: peak(&samples[2]),
        chart: true,
        ..Row::default()
    }
}

/// Builds a new image and times `skopeo copy` of it to the target, verifying TLS.
fn push(t: &Target, work: &Path, trust: &Path, seed: u64) -> Result<Sample, String> {
    let layout = work.join(format!("image-{seed}"));
    build_image(&layout, "v1", &LAYERS, seed).map_err(|e| e.to_string())?;
    let src = format!("oci:{}:v1", layout.display());
    let dst = format!("docker://{HOST}:{}/bench/push-{seed}:v1", t.port);
    let creds = format!("{USER}:{PASSWORD}");
    let sampler = PeakRss::start(t.pids.clone());
    let started = Instant::now();
    let out = skopeo_resolving(
        &[HOST],
        &[
            "copy",
            "--dest-cert-dir",
            &trust.display().to_string(),
            "--dest-creds",
            &creds,
            &src,
            &dst,
        ],
    )
    .map_err(|e| format!("skopeo: {e}"))?;
    let secs = started.elapsed().as_secs_f64();
    let peak = sampler.stop();
    let _ = std::fs::remove_dir_all(&layout);
    if !out.status.success() {
        return Err(format!(
            "skopeo push through {}: {}",
            t.name,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok((secs, peak))
}

/// Writes `len` bytes that do not compress (xorshift) and returns their `sha256:` digest.
fn random_file(path: &Path, len: u64) -> Result<String, String> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| e.to_string())?);
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut block = vec![0u8; MIB];
    for _ in 0..len.div_ceil(MIB as u64) {
        for word in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        f.write_all(&block).map_err(|e| e.to_string())?;
    }
    f.flush().map_err(|e| e.to_string())?;
    drop(f);
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .map_err(|e| e.to_string())?;
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .map_err(|e| format!("sha256sum: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().next().unwrap_or_default();
    if hex.len() != 64 {
        return Err(format!("sha256sum printed {text:?}"));
    }
    Ok(format!("sha256:{hex}"))
}

/// `c` blob uploads at once, each into its own repository; aggregate MB/s of the whole
/// sequence (POST, PATCH, PUT) and the target's peak RSS.
fn blob_uploads(
    t: &Target,
    c: usize,
    blob: &Path,
    digest: &str,
    ca: &Path,
    mib: u64,
) -> Result<Sample, String> {
    let sampler = PeakRss::start(t.pids.clone());
    let started = Instant::now();
    let outcomes: Vec<Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..c)
            .map(|i| s.spawn(move || blob_upload(t, i, blob, digest, ca)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("upload thread panicked".into()))
            })
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let peak = sampler.stop();
    for o in outcomes {
        o.map_err(|e| format!("blob upload through {}: {e}", t.name))?;
    }
    Ok(((mib << 20) as f64 * c as f64 / secs / 1e6, peak))
}

fn blob_upload(t: &Target, i: usize, blob: &Path, digest: &str, ca: &Path) -> Result<(), String> {
    let base = format!("https://{HOST}:{}", t.port);
    let start = curl(
        t,
        ca,
        &[
            "-X",
            "POST",
            &format!("{base}/v2/bench/patch-{i}/blobs/uploads/"),
        ],
        202,
    )?;
    let patched = curl(
        t,
        ca,
        &[
            "-X",
            "PATCH",
            "-T",
            &blob.display().to_string(),
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "Content-Type: application/octet-stream",
            &absolute(&base, &start)?,
        ],
        202,
    )?;
    let location = absolute(&base, &patched)?;
    let sep = if location.contains('?') { '&' } else { '?' };
    curl(
        t,
        ca,
        &["-X", "PUT", &format!("{location}{sep}digest={digest}")],
        201,
    )
    .map(|_| ())
}

/// The Location the registry answered with, made absolute.
fn absolute(base: &str, headers: &str) -> Result<String, String> {
    let location = headers
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(n, _)| n.eq_ignore_ascii_case("location"))
                .map(|(_, v)| v.trim().to_string())
        })
        .ok_or_else(|| format!("no Location in {headers:?}"))?;
    Ok(if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location
    })
}

/// One curl call over HTTP/1.1 with the registry credentials, verifying TLS against the
/// bench CA; returns the response headers when the final status is `want`.
fn curl(t: &Target, ca: &Path, args: &[&str], want: u16) -> Result<String, String> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--http1.1",
            "--max-time",
            "900",
            "-o",
            "/dev/null",
            "-D",
            "-",
        ])
        .arg("--cacert")
        .arg(ca)
        .args(["-u", &format!("{USER}:{PASSWORD}")])
        .args(["--resolve", &format!("{HOST}:{}:127.0.0.1", t.port)])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    let headers = String::from_utf8_lossy(&out.stdout).to_string();
    // The last status line is the final answer (after any 100 Continue).
    let status = headers
        .lines()
        .rfind(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok());
    if status == Some(want) {
        Ok(headers)
    } else {
        Err(format!(
            "{} {:?} answered {status:?}, wanted {want}: {headers}{}",
            args.first().copied().unwrap_or_default(),
            args.last().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
