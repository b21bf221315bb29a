//! Every file the routes' auth names — htpasswd, groups and `client-ca` files — each opened
//! once per path, held by the routes that use it, and re-read by the watcher when it changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use super::client_cert::ClientCa;
use super::htpasswd::HtpasswdFile;
use super::watched::Watched;
use berth_core::route::Groups;
use berth_core::sync::lock;

/// Files opened once per path. Routes hold the files; this only remembers them, so a file
/// no route uses any more is forgotten.
#[derive(Debug)]
struct Opened<F>(Mutex<HashMap<PathBuf, Weak<F>>>);

impl<F> Default for Opened<F> {
    fn default() -> Self {
        Opened(Mutex::new(HashMap::new()))
    }
}

impl<F> Opened<F> {
    fn get(&self, path: &Path, open: impl FnOnce(&Path) -> F) -> Arc<F> {
        if let Some(file) = lock(&self.0).get(path).and_then(Weak::upgrade) {
            return file;
        }
        // Read without the lock: a TLS handshake looking up an open file must never wait
        // for a disk read of another.
        let file = Arc::new(open(path));
        let mut files = lock(&self.0);
        if let Some(first) = files.get(path).and_then(Weak::upgrade) {
            return first;
        }
        files.insert(path.to_path_buf(), Arc::downgrade(&file));
        file
    }

    fn live(&self) -> Vec<Arc<F>> {
        let mut files = lock(&self.0);
        files.retain(|_, f| f.strong_count() > 0);
        files.values().filter_map(Weak::upgrade).collect()
    }
}

/// Every file the routes' auth names, htpasswd and groups files, each opened once per path
/// and watched for changes.
#[derive(Debug, Default)]
pub struct AuthFiles {
    htpasswd: Opened<HtpasswdFile>,
    groups: Opened<Watched<Groups>>,
    client_cas: Opened<Watched<ClientCa>>,
}

impl AuthFiles {
    /// The htpasswd file at `path`, opened (read) on first use.
    pub fn get(&self, path: &Path) -> Arc<HtpasswdFile> {
        self.htpasswd.get(path, HtpasswdFile::open)
    }

    /// The groups file at `path`, opened (read) on first use.
    pub fn groups(&self, path: &Path) -> Arc<Watched<Groups>> {
        self.groups.get(path, Watched::open)
    }

    /// The `client-ca` file at `path`, opened (read) on first use.
    pub fn client_ca(&self, path: &Path) -> Arc<Watched<ClientCa>> {
        self.client_cas.get(path, Watched::open)
    }

    /// The `client-ca` file at `path` if a route holds it open; never reads a file (for
    /// the TLS handshake, which must not block on the disk).
    pub fn client_ca_open(&self, path: &Path) -> Option<Arc<Watched<ClientCa>>> {
        lock(&self.client_cas.0).get(path).and_then(Weak::upgrade)
    }

    /// Re-reads every file in use that changed, logging what happened. Blocking file I/O.
    pub fn refresh(&self) {
        for file in self.htpasswd.live() {
            file.log(&file.reload());
        }
        for file in self.groups.live() {
            file.log(&file.reload());
        }
        for file in self.client_cas.live() {
            file.log(&file.reload());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_shared_and_forgotten() {
        let files = AuthFiles::default();
        let a = files.get(Path::new("/nonexistent/a"));
        let b = files.get(Path::new("/nonexistent/a"));
        assert!(Arc::ptr_eq(&a, &b));
        let g = files.groups(Path::new("/nonexistent/g"));
        assert!(Arc::ptr_eq(&g, &files.groups(Path::new("/nonexistent/g"))));
        drop((a, b, g));
        files.refresh();
        assert!(lock(&files.htpasswd.0).is_empty());
        assert!(lock(&files.groups.0).is_empty());
    }
}
