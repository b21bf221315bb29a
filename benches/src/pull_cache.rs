//! Pulls through berth's registry cache (`cache = true`, `[cache]`), one run: the same image
//! pulled by `skopeo copy` from a real registry (Debian's `docker-registry`, htpasswd auth),
//! counted at that registry (the *origin*) from its access log:
//! - direct from the origin (the baseline);
//! - through berth with a fresh cache (*cold*), again with the same cache (*warm*), and warm
//!   by 4 clients at once;
//! - the anchor: a second `docker-registry` as a pull-through cache (`proxy.remoteurl`,
//!   distribution 2.8), with a fresh storage (*cold*), then warm, then warm by 4 clients at
//!   once. Its origin is a third `docker-registry` without auth holding the same image:
//!   distribution's pull-through cache sends its `proxy.username`/`password` only in answer
//!   to a `Bearer` (token) challenge, so it cannot pull from a registry with htpasswd auth
//!   (it is answered 401, and the client 404 "manifest unknown").
//!
//! Each cold run starts a new berth (a new cache directory) and a new pull-through registry
//! (a new storage directory); their warm pulls follow against the same process. Every pull
//! goes into a new `dir:` destination on tmpfs, checked blob by blob and removed afterwards.
//!
//! The goals (issue 33): a warm pull through berth at least 2× as fast as a cold one, faster
//! than a warm pull from the pull-through registry, and no blob `GET` reaching the origin on
//! any warm pull through berth.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use berth_testkit::oci::{build_image, Image};
use berth_testkit::process::{cpu_seconds, free_port, tied, wait_for_port};
use berth_testkit::registry::{push, skopeo, Registry, PASSWORD, USER};
use berth_testkit::BerthProcess;

/// The repository the image is pushed to and pulled from.
const REPOSITORY: &str = "bench/pull-cache";
/// Its tag.
const TAG: &str = "v1";
const MIB: usize = 1 << 20;
/// Clients of the concurrent warm pulls.
const CLIENTS: usize = 4;
/// How long berth may take to open its cache.
const OPEN_LIMIT: Duration = Duration::from_secs(30);
/// How long after a cold pull a cache may take to hold every blob.
const FILL_LIMIT: Duration = Duration::from_secs(120);

/// What to run.
pub struct PullCacheBench {
    /// Cold/warm rounds (medians reported); each cold pull starts from an empty cache.
    pub runs: usize,
    /// Size of the image's four layers together, MiB.
    pub mib: u64,
    /// The berth binary.
    pub berth: PathBuf,
}

/// Requests the origin registry answered, by kind (from its access log).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// `GET /v2/<name>/blobs/<digest>`: layers and configs served by the origin.
    pub blob_gets: usize,
    /// `HEAD /v2/<name>/blobs/<digest>`: berth's read checks, existence checks.
    pub blob_heads: usize,
    /// `GET /v2/<name>/manifests/<reference>`.
    pub manifest_gets: usize,
    /// `HEAD /v2/<name>/manifests/<reference>`.
    pub manifest_heads: usize,
    /// Anything else (`GET /v2/` pings, token or catalog requests).
    pub other: usize,
}

impl Counts {
    /// Counts the access-log lines of `log`, leaving out the marks of [`Registry::settle`].
    fn of(log: &str) -> Counts {
        let mut counts = Counts::default();
        for line in log.lines() {
            let Some((method, path)) = request_of(line) else {
                continue;
            };
            if path.starts_with("/v2/?settle=") {
                continue;
            }
            let slot = match (
                method,
                path.contains("/blobs/"),
                path.contains("/manifests/"),
            ) {
                ("GET", true, _) => &mut counts.blob_gets,
                ("HEAD", true, _) => &mut counts.blob_heads,
                ("GET", _, true) => &mut counts.manifest_gets,
                ("HEAD", _, true) => &mut counts.manifest_heads,
                _ => &mut counts.other,
            };
            *slot += 1;
        }
        counts
    }

    /// What was counted since `before`.
    fn since(self, before: Counts) -> Counts {
        Counts {
            blob_gets: self.blob_gets.saturating_sub(before.blob_gets),
            blob_heads: self.blob_heads.saturating_sub(before.blob_heads),
            manifest_gets: self.manifest_gets.saturating_sub(before.manifest_gets),
            manifest_heads: self.manifest_heads.saturating_sub(before.manifest_heads),
            other: self.other.saturating_sub(before.other),
        }
    }
}

/// The method and path of an access-log line (`... "GET /v2/x HTTP/1.1" 200 ...`).
fn request_of(line: &str) -> Option<(&str, &str)> {
    const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
    METHODS.iter().find_map(|m| {
        let start = line.find(&format!("\"{m} /"))? + m.len() + 2;
        let path = line[start..].split(' ').next()?;
        Some((*m, path))
    })
}

/// One scenario: every run's wall time and what reached the origin during it.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Stable name, `pull_cache_berth_warm_256mib`.
    pub name: String,
    /// What it is, for the table.
    pub label: &'static str,
    /// skopeo pulls at once.
    pub clients: usize,
    /// Wall time of each run, seconds (all clients' pulls, start to last end).
    pub secs: Vec<f64>,
    /// Origin requests of each run.
    pub counts: Vec<Counts>,
    /// For a cold pull: how long after the pull the cache held every blob, seconds.
    pub stored_after: Vec<f64>,
    /// CPU time of the origin registry in each run, seconds.
    pub origin_cpu: Vec<f64>,
    /// CPU time of berth or the pull-through registry in each run, seconds (none for direct).
    pub cache_cpu: Vec<f64>,
    /// CPU time of the skopeo processes in each run, seconds.
    pub client_cpu: Vec<f64>,
}

impl Scenario {
    fn new(label: &'static str, key: &str, clients: usize, mib: u64) -> Scenario {
        Scenario {
            name: format!("pull_cache_{key}_{mib}mib"),
            label,
            clients,
            secs: Vec::new(),
            counts: Vec::new(),
            stored_after: Vec::new(),
            origin_cpu: Vec::new(),
            cache_cpu: Vec::new(),
            client_cpu: Vec::new(),
        }
    }

    /// The median wall time, seconds.
    pub fn median_secs(&self) -> f64 {
        median(&self.secs)
    }

    /// Aggregate throughput of the median run, MB/s (10^6 bytes) of layer and config data.
    pub fn mb_per_s(&self, bytes: u64) -> f64 {
        let secs = self.median_secs();
        if secs > 0.0 {
            (bytes * self.clients as u64) as f64 / secs / 1e6
        } else {
            0.0
        }
    }

    /// One count over the runs: the figure when every run agrees, `min–max` otherwise.
    fn count(&self, field: fn(&Counts) -> usize) -> String {
        let values: Vec<usize> = self.counts.iter().map(field).collect();
        match (values.iter().min(), values.iter().max()) {
            (Some(lo), Some(hi)) if lo == hi => lo.to_string(),
            (Some(lo), Some(hi)) => format!("{lo}–{hi}"),
            _ => "—".to_string(),
        }
    }

    /// The most blob GETs any run let through to the origin.
    pub fn max_blob_gets(&self) -> usize {
        self.counts.iter().map(|c| c.blob_gets).max().unwrap_or(0)
    }
}

/// What a run measured.
pub struct Outcome {
    /// The scenarios, in table order (see [`Outcome::get`] for the keys).
    pub scenarios: Vec<Scenario>,
    /// Bytes of one pull: the layers and the config.
    pub bytes: u64,
    /// Layer sizes, MiB.
    pub layers_mib: Vec<u64>,
    /// Rounds run.
    pub runs: usize,
}

/// Where each scenario sits in [`Outcome::scenarios`].
#[derive(Debug, Clone, Copy)]
pub enum Key {
    /// Straight from the origin.
    Direct = 0,
    /// Through berth, empty cache.
    BerthCold,
    /// Through berth, cache filled.
    BerthWarm,
    /// Through berth, cache filled, [`CLIENTS`] at once.
    BerthWarmConcurrent,
    /// From the pull-through registry, empty storage.
    ThroughCold,
    /// From the pull-through registry, storage filled.
    ThroughWarm,
    /// From the pull-through registry, storage filled, [`CLIENTS`] at once.
    ThroughWarmConcurrent,
}

impl Outcome {
    /// The scenario of `key`.
    pub fn get(&self, key: Key) -> &Scenario {
        &self.scenarios[key as usize]
    }
}

/// A registry in pull-through mode (distribution 2.8's `proxy` section) in front of an
/// origin without auth (see the module's doc for why), with no auth of its own, its storage
/// in a directory of its own; killed when dropped.
struct PullThrough {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl PullThrough {
    /// Starts one with empty storage. Call from the thread that runs the benchmark (the
    /// process is tied to it).
    fn start(origin: SocketAddr) -> Result<PullThrough, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("pull-through registry: {e}"))?;
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).map_err(|e| format!("pull-through registry: {e}"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {addr}\n  secret: berth-bench-secret\n\
             proxy:\n  remoteurl: http://{origin}\n",
            storage.display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).map_err(|e| format!("pull-through registry: {e}"))?;
        let log = std::fs::File::create(dir.path().join("registry.log"))
            .and_then(|f| Ok((f.try_clone()?, f)))
            .map_err(|e| format!("pull-through registry: {e}"))?;
        let child = tied("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.0)
            .stderr(log.1)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("docker-registry: {e} (apt-get install docker-registry)"))?;
        let through = PullThrough { child, addr, dir };
        wait_for_port(addr, Duration::from_secs(20)).map_err(|e| {
            format!(
                "the pull-through registry did not start: {e}\n{}",
                through.log()
            )
        })?;
        Ok(through)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Whether its storage holds every blob whole and linked into the repository (it stores
    /// a blob it has not got by fetching it once more from the origin in the background,
    /// beside the copy it streams to the client, and serves it locally only once both are
    /// written).
    fn holds(&self, blobs: &[(String, u64)]) -> bool {
        let root = self.dir.path().join("storage/docker/registry/v2");
        let layers = root
            .join("repositories")
            .join(REPOSITORY)
            .join("_layers/sha256");
        blobs.iter().all(|(hex, len)| {
            has_file(
                &root
                    .join("blobs/sha256")
                    .join(hex.get(..2).unwrap_or_default())
                    .join(hex)
                    .join("data"),
                Some(*len),
            ) && has_file(&layers.join(hex).join("link"), None)
        })
    }
}

impl Drop for PullThrough {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// berth with a fresh cache in front of the origin; both go when dropped (berth first).
struct CachedBerth {
    berth: BerthProcess,
    cache: tempfile::TempDir,
}

impl CachedBerth {
    /// Starts berth on an empty cache directory and waits until its cache is open. Call from
    /// the thread that runs the benchmark (the process is tied to it).
    fn start(binary: &Path, origin: SocketAddr) -> Result<CachedBerth, String> {
        let cache = tempfile::tempdir().map_err(|e| format!("cache dir: {e}"))?;
        let config = format!(
            "[listen]\nhttp = \"{{http}}\"\n[docker]\nenabled = false\n\
             [cache]\ndir = \"{}\"\nmax-size = \"20GiB\"\n\
             [[route]]\nhost = \"127.0.0.1\"\nupstreams = [\"{origin}\"]\nprofile = \"registry\"\n\
             cache = true\n",
            cache.path().display()
        );
        let berth = BerthProcess::start(binary, &config).map_err(|e| format!("berth: {e}"))?;
        let started = Instant::now();
        while !berth.log().contains("registry cache open") {
            if started.elapsed() > OPEN_LIMIT {
                return Err(format!(
                    "berth's registry cache did not open within {OPEN_LIMIT:?}; its log:\n{}",
                    tail(&berth.log())
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(CachedBerth { berth, cache })
    }

    /// Whether the cache holds every blob whole, with its metadata beside it.
    fn holds(&self, blobs: &[(String, u64)]) -> bool {
        let dir = self.cache.path();
        blobs.iter().all(|(hex, len)| {
            has_file(&dir.join("sha256").join(hex), Some(*len))
                && has_file(&dir.join("meta").join(hex), None)
        })
    }
}

/// Whether `path` is a file (of `len` bytes, when given).
fn has_file(path: &Path, len: Option<u64>) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && len.is_none_or(|l| m.len() == l))
}

/// Runs the pulls and returns what they measured.
///
/// # Errors
/// When a registry or berth does not start, a pull fails, or a pulled blob is not whole.
pub fn run(bench: &PullCacheBench) -> Result<Outcome, String> {
    if bench.mib < 8 {
        return Err(format!(
            "--mib {}: the image needs at least 8 MiB for its four layers",
            bench.mib
        ));
    }
    let runs = bench.runs.max(1);
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    // The pulled copies go to tmpfs, so that the client's disk writes do not blur the
    // comparison (the caches and registries keep theirs on disk).
    let shm = Path::new("/dev/shm");
    let dest = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("berth-pull-cache-")
            .tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .map_err(|e| format!("destination dir: {e}"))?;

    let origin = Registry::start().map_err(|e| format!("origin registry: {e}"))?;
    let open_origin = Registry::start_open().map_err(|e| format!("open origin registry: {e}"))?;
    let total = (bench.mib as usize) * MIB;
    let layers = [total * 3 / 8, total / 4, total / 4];
    let layers = [
        layers[0],
        layers[1],
        layers[2],
        total - layers.iter().sum::<usize>(),
    ];
    let layout = work.path().join("image");
    let image = build_image(&layout, TAG, &layers, 33).map_err(|e| format!("image: {e}"))?;
    for o in [&origin, &open_origin] {
        push(&layout, TAG, &o.addr.to_string(), REPOSITORY, &[])
            .map_err(|e| format!("push to the origin at {}: {e}", o.addr))?;
    }
    let _ = std::fs::remove_dir_all(&layout);
    let blobs = expected_blobs(&origin, &image)?;
    let bytes = blobs.iter().map(|(_, len)| len).sum::<u64>();

    let mib = bench.mib;
    let mut scenarios = vec![
        Scenario::new("direct from the origin", "direct", 1, mib),
        Scenario::new("berth, cold cache", "berth_cold", 1, mib),
        Scenario::new("berth, warm cache", "berth_warm", 1, mib),
        Scenario::new(
            "berth, warm cache, 4 clients",
            "berth_warm_c4",
            CLIENTS,
            mib,
        ),
        Scenario::new("pull-through registry, cold", "pull_through_cold", 1, mib),
        Scenario::new("pull-through registry, warm", "pull_through_warm", 1, mib),
        Scenario::new(
            "pull-through registry, warm, 4 clients",
            "pull_through_warm_c4",
            CLIENTS,
            mib,
        ),
    ];
    let (origin_pid, open_origin_pid) = (registry_pid(&origin), registry_pid(&open_origin));
    let mut pulls = Pulls {
        dest: dest.path(),
        blobs: &blobs,
        next: 0,
    };
    for run in 0..runs {
        let direct = Target {
            origin: &origin,
            origin_pid,
            addr: origin.addr,
            cache_pid: None,
        };
        pulls.measure(&mut scenarios[Key::Direct as usize], &direct, None)?;

        let cached = CachedBerth::start(&bench.berth, origin.addr)?;
        let target = Target {
            origin: &origin,
            origin_pid,
            addr: cached.berth.http,
            cache_pid: Some(cached.berth.pid()),
        };
        let berth_log = || format!("berth's log:\n{}", tail(&cached.berth.log()));
        let filled = || cached.holds(&blobs);
        for (key, fill) in [
            (Key::BerthCold, Some(&filled as &dyn Fn() -> bool)),
            (Key::BerthWarm, None),
            (Key::BerthWarmConcurrent, None),
        ] {
            pulls
                .measure(&mut scenarios[key as usize], &target, fill)
                .map_err(|e| format!("{e}\n{}", berth_log()))?;
        }
        drop(cached);

        let through = PullThrough::start(open_origin.addr)?;
        let target = Target {
            origin: &open_origin,
            origin_pid: open_origin_pid,
            addr: through.addr,
            cache_pid: Some(through.child.id()),
        };
        let through_log = || format!("the pull-through registry's log:\n{}", tail(&through.log()));
        let filled = || through.holds(&blobs);
        for (key, fill) in [
            (Key::ThroughCold, Some(&filled as &dyn Fn() -> bool)),
            (Key::ThroughWarm, None),
            (Key::ThroughWarmConcurrent, None),
        ] {
            pulls
                .measure(&mut scenarios[key as usize], &target, fill)
                .map_err(|e| format!("{e}\n{}", through_log()))?;
        }
        drop(through);
        eprintln!("pull_cache: run {} of {runs} done", run + 1);
    }
    Ok(Outcome {
        scenarios,
        bytes,
        layers_mib: layers.iter().map(|l| (l / MIB) as u64).collect(),
        runs,
    })
}

/// The blobs one pull fetches, `(hex digest, length)`: the layers and the config, read from
/// the manifest the origin serves.
fn expected_blobs(origin: &Registry, image: &Image) -> Result<Vec<(String, u64)>, String> {
    let creds = format!("{USER}:{PASSWORD}");
    let src = format!("docker://{}/{REPOSITORY}:{TAG}", origin.addr);
    let out = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &creds,
        &src,
    ])
    .map_err(|e| format!("skopeo: {e} (apt-get install skopeo)"))?;
    if !out.status.success() {
        return Err(format!(
            "skopeo inspect {src}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("the origin's manifest is not JSON: {e}"))?;
    let mut blobs = Vec::new();
    let described = std::iter::once(&manifest["config"]).chain(
        manifest["layers"]
            .as_array()
            .map(|l| l.iter())
            .into_iter()
            .flatten(),
    );
    for d in described {
        let (Some(digest), Some(size)) = (d["digest"].as_str(), d["size"].as_u64()) else {
            return Err(format!("a descriptor without digest or size: {d}"));
        };
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("not a sha256 digest: {digest}"))?;
        blobs.push((hex.to_string(), size));
    }
    let layers: Vec<&str> = blobs.iter().skip(1).map(|(h, _)| h.as_str()).collect();
    let built: Vec<&str> = image
        .layer_digests
        .iter()
        .filter_map(|d| d.strip_prefix("sha256:"))
        .collect();
    if layers != built {
        return Err(format!(
            "the origin's manifest names layers {layers:?}, the image built has {built:?}"
        ));
    }
    Ok(blobs)
}

/// The last lines of a log, for an error message.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Where a scenario pulls from, and whose work is counted.
struct Target<'a> {
    /// The registry the bytes come from.
    origin: &'a Registry,
    /// Its process, for its CPU time.
    origin_pid: Option<u32>,
    /// What skopeo pulls from.
    addr: SocketAddr,
    /// berth or the pull-through registry (none for direct), for its CPU time.
    cache_pid: Option<u32>,
}

/// The process of a testkit registry: the `docker-registry` whose command line names its
/// config file (beside its storage directory).
fn registry_pid(registry: &Registry) -> Option<u32> {
    let config = registry.storage().parent()?.join("config.yml");
    let config = config.to_str()?;
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let entry = entry.ok()?;
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let mut args = cmdline.split(|b| *b == 0).map(String::from_utf8_lossy);
        let program = args.next()?;
        (program.ends_with("docker-registry") && args.any(|a| a == config)).then_some(pid)
    })
}

/// CPU time of this process's children that have ended and been waited for, seconds
/// (`cutime` + `cstime`, fields 16 and 17 of /proc/self/stat, in USER_HZ = 100 ticks): during
/// a scenario the only children that end are its skopeo processes.
fn children_cpu() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Field 3 is the first after the command name's closing parenthesis.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let cutime: u64 = fields.get(16 - 3)?.parse().ok()?;
    let cstime: u64 = fields.get(17 - 3)?.parse().ok()?;
    Some((cutime + cstime) as f64 / 100.0)
}

/// Times pulls and counts what reached their origin during them.
struct Pulls<'a> {
    dest: &'a Path,
    blobs: &'a [(String, u64)],
    /// Number of the next destination directory.
    next: usize,
}

impl Pulls<'_> {
    /// `origin`'s counts so far, every request it answered included.
    fn counts(origin: &Registry) -> Result<Counts, String> {
        origin
            .settle()
            .map_err(|e| format!("origin registry: {e}"))?;
        Ok(Counts::of(&origin.log()))
    }

    /// The scenario's pulls (as many at once as it has clients) from `addr`; adds the wall
    /// time and what reached `origin` to `scenario`. With `filled`, waits after the pulls until
    /// it holds (the cache has stored every blob) and adds how long that took; the counts
    /// include what reached the origin meanwhile.
    fn measure(
        &mut self,
        scenario: &mut Scenario,
        target: &Target<'_>,
        filled: Option<&dyn Fn() -> bool>,
    ) -> Result<(), String> {
        let (origin, addr) = (target.origin, target.addr);
        let cpu = |pid: Option<u32>| pid.and_then(cpu_seconds);
        let cpu_before = (cpu(target.origin_pid), cpu(target.cache_pid));
        let client_before = children_cpu();
        let dirs: Vec<PathBuf> = (0..scenario.clients)
            .map(|i| self.dest.join(format!("pull-{}", self.next + i)))
            .collect();
        self.next += scenario.clients;
        let before = Pulls::counts(origin)?;
        let started = Instant::now();
        let outcomes: Vec<Result<(), String>> = std::thread::scope(|s| {
            let handles: Vec<_> = dirs.iter().map(|d| s.spawn(|| pull(addr, d))).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("pull thread panicked".into()))
                })
                .collect()
        });
        let secs = started.elapsed().as_secs_f64();
        if let (Some(after), Some(before)) = (children_cpu(), client_before) {
            scenario.client_cpu.push(after - before);
        }
        let checked = outcomes
            .into_iter()
            .zip(&dirs)
            .try_for_each(|(o, d)| o.and_then(|()| self.check(d)));
        for d in &dirs {
            let _ = std::fs::remove_dir_all(d);
        }
        checked.map_err(|e| format!("{}: {e}", scenario.name))?;
        if let Some(filled) = filled {
            let pulled = Instant::now();
            while !filled() {
                if pulled.elapsed() > FILL_LIMIT {
                    return Err(format!(
                        "{}: the cache did not hold every blob {FILL_LIMIT:?} after the pull",
                        scenario.name
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            scenario.stored_after.push(pulled.elapsed().as_secs_f64());
        }
        let counts = Pulls::counts(origin)?.since(before);
        if let (Some(after), Some(before)) = (cpu(target.origin_pid), cpu_before.0) {
            scenario.origin_cpu.push(after - before);
        }
        if let (Some(after), Some(before)) = (cpu(target.cache_pid), cpu_before.1) {
            scenario.cache_cpu.push(after - before);
        }
        eprintln!(
            "{:>36}: {secs:6.2} s, origin blob GETs {}, blob HEADs {}, manifest GETs {}",
            scenario.name, counts.blob_gets, counts.blob_heads, counts.manifest_gets
        );
        scenario.secs.push(secs);
        scenario.counts.push(counts);
        Ok(())
    }

    /// Every blob of the image is in the pulled directory, whole (skopeo has checked the
    /// digests as it wrote them).
    fn check(&self, dir: &Path) -> Result<(), String> {
        for (hex, len) in self.blobs {
            let path = dir.join(hex);
            let got = std::fs::metadata(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .len();
            if got != *len {
                return Err(format!("{}: {got} bytes, want {len}", path.display()));
            }
        }
        Ok(())
    }
}

/// `skopeo copy` of the image from the registry at `addr` (plain HTTP, the origin's
/// credentials) into a `dir:` layout at `into`.
fn pull(addr: SocketAddr, into: &Path) -> Result<(), String> {
    let creds = format!("{USER}:{PASSWORD}");
    let src = format!("docker://{addr}/{REPOSITORY}:{TAG}");
    let dst = format!("dir:{}", into.display());
    let out = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &src,
        &dst,
    ])
    .map_err(|e| format!("skopeo: {e} (apt-get install skopeo)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "skopeo copy {src}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The median with two decimals, or a dash when there are no samples.
fn median_or_dash(samples: &[f64]) -> String {
    if samples.is_empty() {
        "—".to_string()
    } else {
        format!("{:.2}", median(samples))
    }
}

fn median(samples: &[f64]) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// How the pulls were made, for the report.
pub fn method(outcome: &Outcome) -> String {
    let layers: Vec<String> = outcome
        .layers_mib
        .iter()
        .map(|l| format!("{l} MiB"))
        .collect();
    format!(
        "One image of {} layers ({}) of random, incompressible data plus its config, \
         {:.1} MB in all, pushed once to the *origin*: Debian's `docker-registry` with htpasswd \
         (bcrypt) auth and filesystem storage, plain HTTP on 127.0.0.1. Every pull is `skopeo \
         copy --src-tls-verify=false --src-creds USER:PASSWORD docker://ADDR/{REPOSITORY}:{TAG} \
         dir:DEST` (the time of the whole skopeo process, start to exit), into a new `dir:` \
         destination on tmpfs (`/dev/shm`), so that the client's own disk writes stay out of the \
         figures (an `oci:` layout on disk would add its write time to every row alike); each \
         pulled blob is checked for its length, and skopeo checks digests.\n\n\
         - **direct**: from the origin itself.\n\
         - **berth**: berth in front of the origin, route `profile = \"registry\"`, `cache = \
         true`, `[cache] max-size = \"20GiB\"`, the cache directory on disk. *cold*: a new berth \
         with an empty cache directory, started for each run (the pulls wait for its log's \
         \"registry cache open\"); *warm*: the same berth and cache again; *4 \
         clients*: four skopeo pulls at once, wall time until the last ends. Before a hit is \
         served berth asks the origin with a `HEAD` of the blob carrying the client's own \
         credentials: those are the blob HEADs counted on warm pulls.\n\
         - **pull-through registry** (the anchor): a second `docker-registry` configured as a \
         pull-through cache (`proxy: remoteurl: http://ORIGIN`), no auth of its own, its storage \
         on disk; a new one with empty storage for each run's cold pull, then warm and warm with \
         4 clients against the same process. Its origin is a third `docker-registry`, *without* \
         auth, holding the same image (same digests): distribution's pull-through cache (2.8, \
         and 3.0 alike) hands its `proxy.username`/`password` only to a `Bearer` token realm, \
         never in answer to a `Basic` challenge, so against the htpasswd origin every request it \
         makes is refused (401) and the client gets \"manifest unknown\". Its origin counts are \
         that open origin's. It checks neither the client's credentials nor the origin on a \
         blob it holds; it asks the origin for the tag's manifest (a `HEAD`) on every pull.\n\n\
         After each cold pull the warm ones wait until the cache holds every blob whole (berth: \
         the entry and its metadata; the pull-through registry: the blob's data and its link in \
         the repository): *stored after* is how long after the cold pull's end that was (the \
         median), and the origin requests of a cold row include those made meanwhile. The \
         pull-through registry stores a blob it has not got by fetching it from the origin a \
         second time in the background, beside the copy it streams to the client; berth stores \
         the one copy it streams.\n\n\
         Each of {} runs does every scenario once, in table order; the table shows medians of \
         the wall time, MB/s from that median (MB = 10^6 bytes of layers and config per pull, \
         times the clients), and the requests the origin's access log shows during each \
         scenario (as one figure when every run agrees, min–max otherwise). *other* is mostly \
         skopeo's `GET /v2/` pings. *origin CPU* and *cache CPU* are the user + system time \
         (from /proc, 10 ms ticks) of the origin registry and of berth or the pull-through \
         registry during the scenario, and *skopeo CPU* that of the scenario's skopeo processes \
         together (medians); the machine has 2 cores, so a 4-client row is bounded by about \
         2 CPU-seconds per wall second in all. The caches, the registries' storage and the image all fit \
         in the page cache (24 GiB of memory): disk reads play no part, as on a warm edge.",
        outcome.layers_mib.len(),
        layers.join(", "),
        outcome.bytes as f64 / 1e6,
        outcome.runs,
    )
}

/// The scenarios as a markdown table, and the ratios below it.
pub fn markdown(outcome: &Outcome) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario | clients | seconds ↓ (median) | MB/s ↑ | every run, s | stored after, s | \
         origin blob GETs | origin blob HEADs | origin manifest GETs | origin manifest HEADs | \
         other origin requests | origin CPU, s | cache CPU, s | skopeo CPU, s |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for s in &outcome.scenarios {
        let runs: Vec<String> = s.secs.iter().map(|v| format!("{v:.2}")).collect();
        let _ = writeln!(
            out,
            "| {} (`{}`) | {} | {:.2} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.label,
            s.name,
            s.clients,
            s.median_secs(),
            s.mb_per_s(outcome.bytes),
            runs.join(", "),
            median_or_dash(&s.stored_after),
            s.count(|c| c.blob_gets),
            s.count(|c| c.blob_heads),
            s.count(|c| c.manifest_gets),
            s.count(|c| c.manifest_heads),
            s.count(|c| c.other),
            median_or_dash(&s.origin_cpu),
            median_or_dash(&s.cache_cpu),
            median_or_dash(&s.client_cpu),
        );
    }
    let quotient = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let ratio =
        |a: Key, b: Key| quotient(outcome.get(a).median_secs(), outcome.get(b).median_secs());
    let cpu_ratio = |a: Key, b: Key| {
        quotient(
            median(&outcome.get(a).cache_cpu),
            median(&outcome.get(b).cache_cpu),
        )
    };
    let _ = write!(
        out,
        "\nRatios of median wall times (above 1.00× the second is faster):\n\n\
         - berth cold ÷ berth warm: **{:.2}×**\n\
         - pull-through warm ÷ berth warm: **{:.2}×**; with 4 clients: **{:.2}×**\n\
         - pull-through cold ÷ berth cold: {:.2}×\n\
         - direct ÷ berth warm: {:.2}×; direct ÷ pull-through warm: {:.2}×\n\
         - berth cold ÷ direct: {:.2}×: what berth cold ÷ berth warm would be if a warm pull \
         were exactly as fast as a direct pull from the origin (which shares the machine and \
         serves from the page cache); the 2× goal asks a warm pull to beat that\n\
         - skopeo's CPU per single-client pull: {:.2} s direct, {:.2} s through berth warm, over \
         wall times of {:.2} s and {:.2} s\n\
         - cache CPU per warm pull, berth ÷ pull-through registry: {:.2}× with 1 client, {:.2}× \
         with 4\n",
        ratio(Key::BerthCold, Key::BerthWarm),
        ratio(Key::ThroughWarm, Key::BerthWarm),
        ratio(Key::ThroughWarmConcurrent, Key::BerthWarmConcurrent),
        ratio(Key::ThroughCold, Key::BerthCold),
        ratio(Key::Direct, Key::BerthWarm),
        ratio(Key::Direct, Key::ThroughWarm),
        ratio(Key::BerthCold, Key::Direct),
        median(&outcome.get(Key::Direct).client_cpu),
        median(&outcome.get(Key::BerthWarm).client_cpu),
        outcome.get(Key::Direct).median_secs(),
        outcome.get(Key::BerthWarm).median_secs(),
        cpu_ratio(Key::BerthWarm, Key::ThroughWarm),
        cpu_ratio(Key::BerthWarmConcurrent, Key::ThroughWarmConcurrent),
    );
    out
}

/// The goals of issue 33 and whether this run met them.
pub fn goals(outcome: &Outcome) -> Vec<(String, bool)> {
    let cold = outcome.get(Key::BerthCold).median_secs();
    let warm = outcome.get(Key::BerthWarm).median_secs();
    let through = outcome.get(Key::ThroughWarm).median_secs();
    let speedup = if warm > 0.0 { cold / warm } else { 0.0 };
    let gets: Vec<usize> = [Key::BerthWarm, Key::BerthWarmConcurrent]
        .iter()
        .map(|k| outcome.get(*k).max_blob_gets())
        .collect();
    vec![
        (
            format!(
                "a warm pull through berth at least 2× as fast as a cold one: {cold:.2} s cold, \
                 {warm:.2} s warm, {speedup:.2}×"
            ),
            speedup >= 2.0,
        ),
        (
            format!(
                "a warm pull through berth faster than a warm pull from the pull-through \
                 registry: {warm:.2} s against {through:.2} s"
            ),
            warm < through,
        ),
        (
            format!(
                "no blob GET reaches the registry on a warm pull through berth: at most {} on \
                 one client's pulls, {} on 4 clients' pulls, over {} runs",
                gets[0], gets[1], outcome.runs
            ),
            gets.iter().all(|g| *g == 0),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::{request_of, Counts};

    #[test]
    fn access_log_lines_are_counted_by_kind() {
        let log = "\
127.0.0.1 - - [06/Dec/2026:05:00:00 +0000] \"GET /v2/ HTTP/1.1\" 401 87 \"\" \"skopeo\"
127.0.0.1 - - [06/Dec/2026:05:00:00 +0000] \"GET /v2/b/p/manifests/v1 HTTP/1.1\" 200 9 \"\" \"skopeo\"
127.0.0.1 - - [06/Dec/2026:05:00:00 +0000] \"HEAD /v2/b/p/manifests/v1 HTTP/1.1\" 200 0 \"\" \"x\"
127.0.0.1 - - [06/Dec/2026:05:00:00 +0000] \"GET /v2/b/p/blobs/sha256:ab HTTP/1.1\" 200 9 \"\" \"x\"
127.0.0.1 - - [06/Dec/2026:05:00:00 +0000] \"HEAD /v2/b/p/blobs/sha256:ab HTTP/1.1\" 200 0 \"\" \"x\"
127.0.0.1 - - [06/Dec/2026:05:00:00 +0000] \"HEAD /v2/b/p/blobs/sha256:cd HTTP/1.1\" 200 0 \"\" \"x\"
127.0.0.1 - - [06/Dec/2026:05:00:00 +0000] \"GET /v2/?settle=3 HTTP/1.0\" 200 2 \"\" \"\"
time=\"2026-12-06T05:00:00Z\" level=warning msg=\"something\" http.request.method=GET
";
        assert_eq!(
            Counts::of(log),
            Counts {
                blob_gets: 1,
                blob_heads: 2,
                manifest_gets: 1,
                manifest_heads: 1,
                other: 1,
            }
        );
        assert_eq!(
            request_of("x \"PUT /v2/a/blobs/uploads/1?digest=d HTTP/1.1\" 201"),
            Some(("PUT", "/v2/a/blobs/uploads/1?digest=d"))
        );
        let more = Counts {
            blob_gets: 3,
            ..Counts::default()
        };
        assert_eq!(more.since(Counts::default()).blob_gets, 3);
        assert_eq!(Counts::default().since(more).blob_gets, 0);
    }
}
