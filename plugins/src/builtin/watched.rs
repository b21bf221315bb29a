//! A file a route names and berth keeps reading — an htpasswd file, a groups file, a
//! `client-ca` file: read
//! when the route is built, re-read by a watcher whenever it changes
//! ([`AuthFiles::refresh`]). A version that cannot be
//! read or holds a bad line keeps the previous contents and logs each problem; a file that
//! was never readable holds the empty contents (for htpasswd: nobody gets in).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use berth_core::route::{parse_groups, Groups};
use berth_core::sync::lock;

/// The largest groups file berth reads.
pub const GROUPS_LIMIT: u64 = 4 << 20;

impl Contents for Groups {
    const WHAT: &'static str = "groups";
    const ENTRIES: &'static str = "groups";

    fn read(path: &Path) -> Result<Groups, Vec<String>> {
        let bytes = berth_core::files::read_regular(path, GROUPS_LIMIT).map_err(|e| vec![e])?;
        let text = String::from_utf8(bytes).map_err(|_| vec!["not UTF-8 text".to_string()])?;
        parse_groups(&text)
    }

    fn entries(&self) -> usize {
        self.len()
    }
}

/// What a watched file holds.
pub trait Contents: Default + Send + Sync + 'static {
    /// What the file is, for log lines (`htpasswd`, `groups`).
    const WHAT: &'static str;
    /// What its entries are, for log lines (`users`, `groups`).
    const ENTRIES: &'static str;

    /// Reads the file.
    ///
    /// # Errors
    /// One message per problem.
    fn read(path: &Path) -> Result<Self, Vec<String>>;

    /// The number of entries, for log lines.
    fn entries(&self) -> usize;
}

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    device: u64,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
        device: meta.dev(),
    })
}

/// What a (re)load of a watched file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The file has not changed since the last look.
    Unchanged,
    /// New contents are in effect, with this many entries.
    Loaded(usize),
    /// The file could not be used; the previous contents stay. One message per problem.
    Kept(Vec<String>),
}

/// One watched file with its live contents.
#[derive(Debug)]
pub struct Watched<T> {
    path: PathBuf,
    value: ArcSwap<T>,
    /// Whether a version of the file was ever read.
    loaded: std::sync::atomic::AtomicBool,
    /// The last look: `None` before the first, `Some(None)` when the file was missing.
    seen: Mutex<Option<Option<Stamp>>>,
}

impl<T: Contents> Watched<T> {
    /// Reads `path` now, logging any problem.
    pub fn open(path: &Path) -> Watched<T> {
        let file = Watched {
            path: path.to_path_buf(),
            value: ArcSwap::from_pointee(T::default()),
            loaded: std::sync::atomic::AtomicBool::new(false),
            seen: Mutex::new(None),
        };
        file.log(&file.reload());
        file
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The contents in effect.
    pub fn get(&self) -> Arc<T> {
        self.value.load_full()
    }

    /// The contents in effect, or `None` while no version of the file was ever read (for
    /// what must fail closed: a rule about a group must not stop matching because its file
    /// was never there).
    pub fn get_loaded(&self) -> Option<Arc<T>> {
        self.loaded
            .load(std::sync::atomic::Ordering::Acquire)
            .then(|| self.value.load_full())
    }

    /// Re-reads the file if it changed since the last look. Blocking file I/O: call it from
    /// a background task.
    pub fn reload(&self) -> Reload {
        let mut seen = lock(&self.seen);
        let now = match stamp(&self.path) {
            Ok(s) => s,
            Err(e) => {
                // Report a missing file once, not on every look.
                return if seen.replace(None) == Some(None) {
                    Reload::Unchanged
                } else {
                    Reload::Kept(vec![format!("cannot read: {e}")])
                };
            }
        };
        if *seen == Some(Some(now)) {
            return Reload::Unchanged;
        }
        *seen = Some(Some(now));
        match T::read(&self.path) {
            Ok(value) => {
                let n = value.entries();
                self.value.store(Arc::new(value));
                self.loaded
                    .store(true, std::sync::atomic::Ordering::Release);
                Reload::Loaded(n)
            }
            Err(errors) => Reload::Kept(errors),
        }
    }

    /// Logs what a reload did.
    pub fn log(&self, outcome: &Reload) {
        let path = self.path.display();
        let what = T::WHAT;
        match outcome {
            Reload::Unchanged => {}
            Reload::Loaded(n) => {
                tracing::info!(file = %path, entries = n, "{what} loaded: {n} {}", T::ENTRIES);
            }
            Reload::Kept(errors) => {
                for e in errors {
                    tracing::error!(file = %path, "{what} {path}: {e}");
                }
                tracing::error!(
                    file = %path,
                    "{what} {path} not used; the previous {} stay in effect ({})",
                    T::ENTRIES,
                    self.value.load().entries()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_groups_file_is_read_kept_when_bad_and_reread_when_changed() {
        let dir = std::env::temp_dir().join(format!("berth-groups-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("groups");
        std::fs::write(&path, "# teams\nteam-a: alice carol\n\nteam-b:bob\n").expect("write");
        let file: Watched<Groups> = Watched::open(&path);
        let groups = file.get();
        assert!(groups.has("team-a", "carol") && groups.has("team-b", "bob"));
        assert!(!groups.has("team-a", "bob"));
        assert_eq!(file.reload(), Reload::Unchanged);
        // A bad line: the previous groups stay.
        std::fs::write(&path, "team-a alice\n").expect("write");
        assert!(matches!(file.reload(), Reload::Kept(e) if e[0].starts_with("line 1")));
        assert!(file.get().has("team-a", "alice"));
        std::fs::write(&path, "team-a: bob\n").expect("write");
        assert_eq!(file.reload(), Reload::Loaded(1));
        assert!(file.get().has("team-a", "bob") && !file.get().has("team-a", "alice"));
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
