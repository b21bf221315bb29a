//! Content-addressed files on disk, for the registry cache: a blob or manifest is stored under
//! its sha256 digest only when its bytes hash to that digest, the store holds at most
//! `max-size` bytes (least recently used entries go first), and what is on disk is what the
//! store holds after a restart (the index is rebuilt from the files).
//!
//! Layout under the directory: `sha256/<64 hex digits>` for each entry, `meta/<64 hex digits>`
//! for what a user of the store keeps beside an entry (the registry cache: the answer's
//! headers), `tmp/` for writes in progress (emptied when the store is opened). A write goes to `tmp/` while its hash is
//! computed, and is renamed into place only once the whole body hashed to its digest; a file
//! that is there is therefore complete, and one that was damaged later is found by
//! [`BlobStore::verify`] (or by a reader that hashes what it served) and removed.
//!
//! The I/O is blocking (`std::fs`); async callers run it on a blocking thread.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// The most metadata kept beside an entry.
pub const MAX_META: u64 = 64 << 10;

/// A sha256 digest, as the registry API writes it: `sha256:<64 lowercase hex digits>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// Parses `sha256:<64 lowercase hex digits>`; anything else (another algorithm, upper
    /// case, a wrong length) is `None`.
    pub fn parse(text: &str) -> Option<Digest> {
        let hex = text.strip_prefix("sha256:")?;
        Digest::from_hex(hex)
    }

    fn from_hex(hex: &str) -> Option<Digest> {
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Digest(out))
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The digest whose hash is `hash`.
    pub fn from_bytes(hash: [u8; 32]) -> Digest {
        Digest(hash)
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

/// Why a write was not stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The bytes hash to another digest: nothing was stored.
    #[error("the body hashes to {got}, not {expected}: not stored")]
    Mismatch {
        /// The digest the entry was written under.
        expected: Digest,
        /// The digest of what arrived.
        got: Digest,
    },
    /// The entry alone is larger than the store may hold.
    #[error("{size} bytes is more than the cache's max-size ({max})")]
    TooLarge {
        /// Bytes written so far.
        size: u64,
        /// The store's limit.
        max: u64,
    },
    /// More bytes than the entry announced.
    #[error("{size} bytes is more than the {announced} announced")]
    Longer {
        /// Bytes written so far.
        size: u64,
        /// The length announced when the write began.
        announced: u64,
    },
    /// No room for an entry of this length: the store is full of entries being written, or
    /// the disk refused to set the space aside.
    #[error("no room for {length} bytes: {why}")]
    NoRoom {
        /// The entry's length.
        length: u64,
        /// Why.
        why: String,
    },
    /// The disk refused (full, unwritable, gone).
    #[error("{0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, Default)]
struct Index {
    /// Each entry's size and the tick of its last use.
    entries: HashMap<Digest, (u64, u64)>,
    /// Entries by the tick of their last use, oldest first.
    by_use: BTreeMap<u64, Digest>,
    tick: u64,
    total: u64,
    /// Bytes set aside for entries being written with a known length.
    reserved: u64,
    /// Entries known to hash to their digest: written by this process, or hashed since it
    /// started.
    verified: HashMap<Digest, Instant>,
}

impl Index {
    fn touch(&mut self, digest: Digest) {
        self.tick += 1;
        let tick = self.tick;
        if let Some((_, used)) = self.entries.get_mut(&digest) {
            self.by_use.remove(used);
            *used = tick;
            self.by_use.insert(tick, digest);
        }
    }

    fn insert(&mut self, digest: Digest, size: u64) {
        self.forget(&digest);
        self.tick += 1;
        self.entries.insert(digest, (size, self.tick));
        self.by_use.insert(self.tick, digest);
        self.total += size;
    }

    /// Forgets the least recently used entry; its digest.
    fn pop_least_recent(&mut self) -> Option<Digest> {
        let digest = *self.by_use.values().next()?;
        self.forget(&digest);
        Some(digest)
    }

    fn forget(&mut self, digest: &Digest) -> bool {
        self.verified.remove(digest);
        match self.entries.remove(digest) {
            Some((size, used)) => {
                self.by_use.remove(&used);
                self.total -= size;
                true
            }
            None => false,
        }
    }
}

/// Content-addressed files under one directory, at most `max_size` bytes of them.
#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
    max_size: u64,
    index: Mutex<Index>,
    /// Names temporary files uniquely.
    writes: AtomicU64,
}

/// An entry opened for reading.
#[derive(Debug)]
pub struct Blob {
    /// The file, at its start.
    pub file: File,
    /// Its length in bytes.
    pub size: u64,
}

impl BlobStore {
    /// Opens (creating it if need be) the store in `dir`: writes a previous run left
    /// unfinished are removed, the entries on disk are indexed (oldest modification first in
    /// the eviction order), and the oldest go until the store fits `max_size`.
    ///
    /// # Errors
    /// When the directory cannot be created or read.
    pub fn open(dir: &Path, max_size: u64) -> io::Result<BlobStore> {
        let (blobs, tmp) = (dir.join("sha256"), dir.join("tmp"));
        std::fs::create_dir_all(&blobs)?;
        std::fs::create_dir_all(dir.join("meta"))?;
        std::fs::create_dir_all(&tmp)?;
        for leftover in std::fs::read_dir(&tmp)? {
            let _ = std::fs::remove_file(leftover?.path());
        }
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&blobs)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            let name = entry.file_name();
            let digest = name.to_str().and_then(Digest::from_hex);
            match digest {
                Some(digest) if meta.is_file() => {
                    let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                    found.push((modified, digest, meta.len()));
                }
                // Not ours: left alone, never served.
                _ => tracing::warn!(
                    file = %berth_core::logging::shown(&entry.path().display().to_string(), 300),
                    "cache: a file that is no entry of the cache; ignored"
                ),
            }
        }
        found.sort();
        let mut index = Index::default();
        for (_, digest, size) in found {
            index.insert(digest, size);
        }
        let store = BlobStore {
            dir: dir.to_path_buf(),
            max_size,
            index: Mutex::new(index),
            writes: AtomicU64::new(0),
        };
        store.evict();
        Ok(store)
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("sha256").join(digest.hex())
    }

    fn meta_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("meta").join(digest.hex())
    }

    /// What was kept beside the entry for `digest` ([`BlobWriter::commit_with`],
    /// [`BlobStore::set_meta`]); `Ok(None)` without an entry.
    ///
    /// # Errors
    /// The file's error when it cannot be read (`NotFound`: nothing was kept), and
    /// `InvalidData` when it is larger than anything berth keeps there.
    pub fn meta(&self, digest: &Digest) -> io::Result<Option<Vec<u8>>> {
        if !self.contains(digest) {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        File::open(self.meta_path(digest))?
            .take(MAX_META + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_META {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "larger than any headers kept",
            ));
        }
        Ok(Some(bytes))
    }

    /// Replaces what is kept beside the entry for `digest`; `false` when there is no entry.
    ///
    /// # Errors
    /// When the disk refuses.
    pub fn set_meta(&self, digest: &Digest, meta: &[u8]) -> io::Result<bool> {
        if !self.contains(digest) {
            return Ok(false);
        }
        self.write_meta(digest, meta)?;
        Ok(true)
    }

    /// Writes `meta` beside `digest`'s entry, atomically (a temporary file renamed).
    fn write_meta(&self, digest: &Digest, meta: &[u8]) -> io::Result<()> {
        if meta.len() as u64 > MAX_META {
            return Err(io::Error::other(format!(
                "{} bytes of metadata, more than {MAX_META}",
                meta.len()
            )));
        }
        let n = self.writes.fetch_add(1, Ordering::Relaxed);
        let temp =
            self.dir
                .join("tmp")
                .join(format!("{}.meta.{}.{n}", digest.hex(), std::process::id()));
        std::fs::write(&temp, meta)?;
        std::fs::rename(&temp, self.meta_path(digest)).inspect_err(|_| {
            let _ = std::fs::remove_file(&temp);
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry for `digest`, opened, and now the most recently used; `None` when there is
    /// none (or its file is gone, or no longer the length it was stored with).
    pub fn get(&self, digest: &Digest) -> Option<Blob> {
        let size = self.index().entries.get(digest).map(|e| e.0)?;
        let file = match File::open(self.path(digest)) {
            Ok(file) => Some(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            // Out of file descriptors, say: not damage; the entry stays.
            Err(e) => {
                tracing::warn!(%digest, error = %e, "cache: cannot open an entry");
                return None;
            }
        };
        let length = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.len());
        match (file, length) {
            (Some(file), Some(len)) if len == size => {
                self.index().touch(*digest);
                Some(Blob { file, size })
            }
            _ => {
                tracing::warn!(%digest, "cache: an entry's file is gone or cut short; removed");
                self.remove(digest);
                None
            }
        }
    }

    /// Whether the store holds `digest` (without counting it as a use).
    pub fn contains(&self, digest: &Digest) -> bool {
        self.index().entries.contains_key(digest)
    }

    /// Starts writing the entry for `digest`, `length` bytes long, with its room set aside
    /// first: in the store (least recently used entries go until the entries, those being
    /// written included, fit `max-size` with it) and on the disk (the file's blocks are
    /// allocated before a byte is written), so the write does not run out of room halfway.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`] for an entry larger than the store, [`StoreError::NoRoom`]
    /// when the entries being written leave too little room or the disk refuses the blocks,
    /// [`StoreError::Io`] when the file cannot be created.
    pub fn sized_writer(&self, digest: Digest, length: u64) -> Result<BlobWriter<'_>, StoreError> {
        if length > self.max_size {
            return Err(StoreError::TooLarge {
                size: length,
                max: self.max_size,
            });
        }
        self.reserve(length)?;
        // From here the reservation is the writer's: dropped with it if anything fails.
        let mut writer = self.start(digest, length).inspect_err(|_| {
            self.index().reserved -= length;
        })?;
        if length > 0 {
            match nix::fcntl::posix_fallocate(
                &writer.file,
                0,
                i64::try_from(length).unwrap_or(i64::MAX),
            ) {
                Ok(()) => writer.allocated = true,
                // A file system that cannot allocate ahead: written as it comes.
                Err(nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::EINVAL) => {}
                Err(e) => {
                    return Err(StoreError::NoRoom {
                        length,
                        why: format!("the disk refused the space ({e})"),
                    })
                }
            }
        }
        Ok(writer)
    }

    /// Sets `length` bytes aside for a write: refused at once when the writes in progress
    /// leave too little room (no entry could make it), else least recently used entries go
    /// until it fits; the check and the reservation are made under one lock.
    fn reserve(&self, length: u64) -> Result<(), StoreError> {
        loop {
            let victim = {
                let mut index = self.index();
                if index.reserved + length > self.max_size {
                    return Err(StoreError::NoRoom {
                        length,
                        why: format!(
                            "{} bytes of max-size ({}) are entries being written",
                            index.reserved, self.max_size
                        ),
                    });
                }
                if index.total + index.reserved + length <= self.max_size {
                    index.reserved += length;
                    return Ok(());
                }
                let Some(digest) = index.pop_least_recent() else {
                    // Unreachable: with no entry left, total is 0 and the first check held.
                    return Err(StoreError::NoRoom {
                        length,
                        why: "nothing left to evict".into(),
                    });
                };
                digest
            };
            self.remove_files(&victim);
        }
    }

    /// The identity (device and inode) of the file the entry for `digest` is now, if any.
    pub fn identity(&self, digest: &Digest) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(self.path(digest))
            .ok()
            .map(|m| (m.dev(), m.ino()))
    }

    /// Removes the entry for `digest` if it is still the file `identity` names (a reader
    /// that found its file damaged must not remove a good copy written since).
    pub fn remove_if(&self, digest: &Digest, identity: (u64, u64)) {
        if self.identity(digest) == Some(identity) {
            self.remove(digest);
        }
    }

    fn start(&self, digest: Digest, length: u64) -> io::Result<BlobWriter<'_>> {
        let n = self.writes.fetch_add(1, Ordering::Relaxed);
        let temp =
            self.dir
                .join("tmp")
                .join(format!("{}.{}.{n}", digest.hex(), std::process::id()));
        // Readable too: readers follow an entry as it is written (`BlobWriter::reader`).
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp)?;
        Ok(BlobWriter {
            store: self,
            digest,
            temp: Some(temp),
            file,
            hasher: Sha256::new(),
            size: 0,
            length: Some(length),
            allocated: false,
        })
    }

    /// Removes the entry for `digest` (a reader found it damaged, say).
    pub fn remove(&self, digest: &Digest) {
        if self.index().forget(digest) {
            self.remove_files(digest);
        }
    }

    /// Removes an entry's files (the index has forgotten it). A reader that has the file open
    /// reads on; the name is gone.
    fn remove_files(&self, digest: &Digest) {
        let _ = std::fs::remove_file(self.path(digest));
        let _ = std::fs::remove_file(self.meta_path(digest));
    }

    /// Whether the entry for `digest` is known to hash to it: written by this process, or
    /// hashed ([`BlobStore::verify`]) since it started. Entries a previous run left are not,
    /// until hashed.
    pub fn verified(&self, digest: &Digest) -> bool {
        self.index().verified.contains_key(digest)
    }

    /// Whether the entry for `digest` was found to hash to it within `age` (written, or
    /// hashed again since).
    pub fn verified_within(&self, digest: &Digest, age: Duration) -> bool {
        self.index()
            .verified
            .get(digest)
            .is_some_and(|at| at.elapsed() < age)
    }

    /// Makes the last hash of `digest` look `by` older (tests of what a later read checks).
    #[cfg(test)]
    pub(crate) fn age_verified(&self, digest: &Digest, by: Duration) {
        if let Some(at) = self.index().verified.get_mut(digest) {
            *at = at.checked_sub(by).unwrap_or(*at);
        }
    }

    /// The entry for `digest` was read whole and hashed to it just now.
    pub fn mark_verified(&self, digest: &Digest) {
        let mut index = self.index();
        if index.entries.contains_key(digest) {
            index.verified.insert(*digest, Instant::now());
        }
    }

    /// Hashes the entry for `digest` again: `true` when it is intact; a damaged one is
    /// removed.
    ///
    /// # Errors
    /// When it cannot be read.
    pub fn verify(&self, digest: &Digest) -> io::Result<bool> {
        let mut file = File::open(self.path(digest))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(buf.get(..n).unwrap_or_default());
        }
        let intact = Digest(hasher.finalize().into()) == *digest;
        if intact {
            let mut index = self.index();
            if index.entries.contains_key(digest) {
                index.verified.insert(*digest, Instant::now());
            }
        } else {
            tracing::warn!(%digest, "cache: an entry no longer hashes to its digest; removed");
            self.remove(digest);
        }
        Ok(intact)
    }

    /// Entries held and their bytes together.
    pub fn usage(&self) -> (usize, u64) {
        let index = self.index();
        (index.entries.len(), index.total)
    }

    /// The directory the store keeps its files in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The store's limit, in bytes.
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// The bytes the file system under the store has left for it; `None` when it cannot say.
    pub fn available(&self) -> Option<u64> {
        let stat = nix::sys::statvfs::statvfs(&self.dir).ok()?;
        Some(stat.blocks_available().saturating_mul(stat.fragment_size()))
    }

    /// Removes least recently used entries until the store fits its limit.
    fn evict(&self) {
        loop {
            let victim = {
                let mut index = self.index();
                if index.total + index.reserved <= self.max_size {
                    return;
                }
                let Some(digest) = index.pop_least_recent() else {
                    return;
                };
                digest
            };
            self.remove_files(&victim);
        }
    }
}

/// An entry being written; stored by [`BlobWriter::commit`] only if its bytes hash to its
/// digest, and removed if dropped before.
#[derive(Debug)]
pub struct BlobWriter<'a> {
    store: &'a BlobStore,
    digest: Digest,
    temp: Option<PathBuf>,
    file: File,
    hasher: Sha256,
    size: u64,
    /// The length announced at the start, whose room is set aside ([`BlobStore::sized_writer`])
    /// until the entry is kept or dropped (`None` then: the room is given back once).
    length: Option<u64>,
    /// The file's blocks were allocated ahead (its length is `length` until commit).
    allocated: bool,
}

impl BlobWriter<'_> {
    /// The file being written, for reading what is written so far (at explicit offsets:
    /// the handle shares the writer's position).
    ///
    /// # Errors
    /// When the handle cannot be duplicated.
    pub fn reader(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Appends `bytes`.
    ///
    /// # Errors
    /// When the disk refuses, or the entry grows longer than announced (so never larger than
    /// the store may be).
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.size += bytes.len() as u64;
        if let Some(announced) = self.length.filter(|&l| self.size > l) {
            return Err(StoreError::Longer {
                size: self.size,
                announced,
            });
        }
        self.hasher.update(bytes);
        self.file.write_all(bytes)?;
        Ok(())
    }

    /// Stores the entry if what was written hashes to its digest, then evicts what no longer
    /// fits; returns its size.
    ///
    /// # Errors
    /// A mismatch (nothing is stored), or the disk refused.
    pub fn commit(self) -> Result<u64, StoreError> {
        self.commit_with(None)
    }

    /// As [`BlobWriter::commit`], keeping `meta` beside the entry (written before the entry
    /// appears, so an entry that has metadata never lacks it).
    ///
    /// # Errors
    /// As [`BlobWriter::commit`].
    pub fn commit_with(mut self, meta: Option<&[u8]>) -> Result<u64, StoreError> {
        let got = Digest(std::mem::take(&mut self.hasher).finalize().into());
        if got != self.digest {
            return Err(StoreError::Mismatch {
                expected: self.digest,
                got,
            });
        }
        if self.allocated {
            // The blocks set aside past what arrived (a body shorter than announced).
            self.file.set_len(self.size)?;
        }
        // Not synced: an entry a crash cut short or damaged is found when it is first used
        // after the restart (every entry a previous run left is hashed then).
        if let Some(meta) = meta {
            self.store.write_meta(&self.digest, meta)?;
        }
        let Some(temp) = self.temp.take() else {
            return Err(StoreError::Io(io::Error::other("written twice")));
        };
        if let Err(e) = std::fs::rename(&temp, self.store.path(&self.digest)) {
            let _ = std::fs::remove_file(&temp);
            return Err(e.into());
        }
        {
            let mut index = self.store.index();
            index.reserved -= self.length.take().unwrap_or(0);
            index.insert(self.digest, self.size);
            index.verified.insert(self.digest, Instant::now());
        }
        self.store.evict();
        Ok(self.size)
    }
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        if let Some(length) = self.length.take() {
            self.store.index().reserved -= length;
        }
        if let Some(temp) = self.temp.take() {
            let _ = std::fs::remove_file(temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path, max: u64) -> BlobStore {
        BlobStore::open(dir, max).unwrap_or_else(|e| panic!("{e}"))
    }

    fn put(store: &BlobStore, bytes: &[u8]) -> Digest {
        let digest = Digest::of(bytes);
        let mut w = store
            .sized_writer(digest, bytes.len() as u64)
            .unwrap_or_else(|e| panic!("{e}"));
        for chunk in bytes.chunks(7) {
            w.write(chunk).unwrap_or_else(|e| panic!("{e}"));
        }
        w.commit().unwrap_or_else(|e| panic!("{e}"));
        digest
    }

    fn read(store: &BlobStore, digest: &Digest) -> Option<Vec<u8>> {
        let mut blob = store.get(digest)?;
        let mut out = Vec::new();
        blob.file
            .read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.len() as u64, blob.size);
        Some(out)
    }

    fn tmp_files(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("tmp")).map_or(0, |d| d.count())
    }

    #[test]
    fn digests_are_read_as_the_registry_writes_them() {
        let hex = "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945";
        let d = Digest::parse(&format!("sha256:{hex}")).unwrap_or_else(|| panic!("valid"));
        assert_eq!(d.hex(), hex);
        assert_eq!(d.to_string(), format!("sha256:{hex}"));
        for bad in [
            hex.to_string(),
            format!("sha512:{hex}"),
            format!("sha256:{}", hex.to_uppercase()),
            format!("sha256:{}", &hex[1..]),
            format!("sha256:{hex}0"),
            format!("sha256:{}g", &hex[1..]),
            format!("sha256:../{}", &hex[3..]),
        ] {
            assert_eq!(Digest::parse(&bad), None, "{bad}");
        }
        assert_eq!(
            Digest::of(b"").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn an_entry_is_stored_only_when_it_hashes_to_its_digest() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = store(dir.path(), 1 << 20);
        let d = put(&s, b"layer one");
        assert_eq!(read(&s, &d).as_deref(), Some(&b"layer one"[..]));

        let claimed = Digest::of(b"what the client asked for");
        let mut w = s
            .sized_writer(claimed, 14)
            .unwrap_or_else(|e| panic!("{e}"));
        w.write(b"something else").unwrap_or_else(|e| panic!("{e}"));
        let e = w.commit().expect_err("a mismatch");
        assert!(matches!(e, StoreError::Mismatch { .. }), "{e}");
        assert!(!s.contains(&claimed) && read(&s, &claimed).is_none());
        assert_eq!(tmp_files(dir.path()), 0, "nothing left behind");

        // A write dropped half way (the upstream went away) leaves nothing either.
        let mut w = s
            .sized_writer(Digest::of(b"never finished"), 5)
            .unwrap_or_else(|e| panic!("{e}"));
        w.write(b"never").unwrap_or_else(|e| panic!("{e}"));
        drop(w);
        assert_eq!(tmp_files(dir.path()), 0);
        assert_eq!(s.usage(), (1, 9));
    }

    #[test]
    fn a_restart_keeps_the_entries_and_drops_unfinished_writes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = {
            let s = store(dir.path(), 1 << 20);
            let a = put(&s, b"aaaa");
            let b = put(&s, b"bbbbbb");
            let mut w = s
                .sized_writer(Digest::of(b"cut"), 1)
                .unwrap_or_else(|e| panic!("{e}"));
            w.write(b"c").unwrap_or_else(|e| panic!("{e}"));
            std::mem::forget(w); // as a crash would leave it
            (a, b)
        };
        assert_eq!(tmp_files(dir.path()), 1);
        std::fs::write(dir.path().join("sha256").join("README"), "not an entry")
            .unwrap_or_else(|e| panic!("{e}"));
        let s = store(dir.path(), 1 << 20);
        assert_eq!(tmp_files(dir.path()), 0);
        assert_eq!(s.usage(), (2, 10));
        assert_eq!(read(&s, &a).as_deref(), Some(&b"aaaa"[..]));
        assert_eq!(read(&s, &b).as_deref(), Some(&b"bbbbbb"[..]));
    }

    #[test]
    fn the_least_recently_used_go_first_and_max_size_holds() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = store(dir.path(), 100);
        let blobs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 30]).collect();
        let a = put(&s, &blobs[0]);
        let b = put(&s, &blobs[1]);
        let c = put(&s, &blobs[2]);
        assert!(read(&s, &a).is_some(), "a used: b is now the oldest");
        let d = put(&s, &blobs[3]);
        assert_eq!(s.usage(), (3, 90));
        assert!(!s.contains(&b), "the least recently used went");
        assert!(
            !dir.path().join("sha256").join(b.hex()).exists(),
            "and its file"
        );
        for kept in [a, c, d] {
            assert!(s.contains(&kept));
        }
        for blob in &blobs {
            put(&s, blob);
            assert!(s.usage().1 <= 100, "{:?}", s.usage());
        }
        // One entry larger than the whole store is never written in full.
        let big = vec![9u8; 101];
        let Err(e) = s.sized_writer(Digest::of(&big), big.len() as u64) else {
            panic!("an entry larger than the store was started");
        };
        assert!(
            matches!(
                e,
                StoreError::TooLarge {
                    size: 101,
                    max: 100
                }
            ),
            "{e}"
        );
        // A smaller limit at the next start evicts down to it.
        drop(s);
        let s = store(dir.path(), 60);
        assert!(s.usage().1 <= 60, "{:?}", s.usage());
    }

    #[test]
    fn metadata_is_kept_beside_its_entry_and_goes_with_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = store(dir.path(), 100);
        let body = vec![1u8; 30];
        let a = Digest::of(&body);
        let mut w = s.sized_writer(a, 30).unwrap_or_else(|e| panic!("{e}"));
        w.write(&body).unwrap_or_else(|e| panic!("{e}"));
        w.commit_with(Some(b"headers"))
            .unwrap_or_else(|e| panic!("{e}"));
        let meta = |d: &Digest| s.meta(d).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(meta(&a).as_deref(), Some(&b"headers"[..]));
        assert!(s
            .set_meta(&a, b"new headers")
            .unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(meta(&a).as_deref(), Some(&b"new headers"[..]));
        let unknown = Digest::of(b"unknown");
        assert!(!s.set_meta(&unknown, b"x").unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(meta(&unknown), None);
        // Evicted: its metadata goes too.
        for i in 2..6u8 {
            put(&s, &[i; 30]);
        }
        assert!(!s.contains(&a));
        assert!(!dir.path().join("meta").join(a.hex()).exists());
        assert_eq!(meta(&a), None);
    }

    #[test]
    fn a_damaged_entry_is_found_and_removed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = store(dir.path(), 1 << 20);
        let a = put(&s, b"the original bytes");
        let b = put(&s, b"more original bytes");
        assert!(s.verify(&a).unwrap_or_else(|e| panic!("{e}")));
        // Same length, other bytes: only hashing finds it.
        std::fs::write(
            dir.path().join("sha256").join(a.hex()),
            b"the 0riginal bytes",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!s.verify(&a).unwrap_or_else(|e| panic!("{e}")));
        assert!(!s.contains(&a) && read(&s, &a).is_none());
        // Cut short: found when opened.
        std::fs::write(dir.path().join("sha256").join(b.hex()), b"more")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(read(&s, &b).is_none());
        assert!(!s.contains(&b));
        assert_eq!(s.usage(), (0, 0));
    }

    #[test]
    fn an_unwritable_directory_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").unwrap_or_else(|e| panic!("{e}"));
        assert!(BlobStore::open(&file.join("cache"), 1 << 20).is_err());
    }

    #[test]
    fn sized_writes_set_their_room_aside_first() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = store(dir.path(), 100);
        let old = put(&s, &[1u8; 30]);
        let (a, b) = (vec![2u8; 40], vec![3u8; 40]);
        // Two writes in progress take 80 of the 100: the oldest entry goes to make room.
        let mut wa = s
            .sized_writer(Digest::of(&a), 40)
            .unwrap_or_else(|e| panic!("{e}"));
        let wb = s
            .sized_writer(Digest::of(&b), 40)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!s.contains(&old), "evicted for the writes in progress");
        // A third does not fit beside them: refused before a byte is written.
        let refused = s.sized_writer(Digest::of(b"c"), 30);
        assert!(
            matches!(refused, Err(StoreError::NoRoom { length: 30, .. })),
            "{refused:?}"
        );
        assert!(matches!(
            s.sized_writer(Digest::of(b"d"), 101),
            Err(StoreError::TooLarge {
                size: 101,
                max: 100
            })
        ));
        // The blocks are set aside on disk.
        let temp = wa.temp.clone().unwrap_or_default();
        assert_eq!(std::fs::metadata(&temp).map(|m| m.len()).ok(), Some(40));
        // More than announced is refused.
        wa.write(&a).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            wa.write(b"x"),
            Err(StoreError::Longer {
                size: 41,
                announced: 40
            })
        ));
        drop(wa);
        // A dropped writer gives its room back.
        let c = vec![4u8; 30];
        let mut wc = s
            .sized_writer(Digest::of(&c), 30)
            .unwrap_or_else(|e| panic!("{e}"));
        wc.write(&c).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(wc.commit().unwrap_or_else(|e| panic!("{e}")), 30);
        drop(wb);
        assert_eq!(s.usage(), (1, 30));
        assert_eq!(s.index().reserved, 0);
        // A body shorter than announced that still hashes to its digest is kept at its length.
        let short = vec![5u8; 10];
        let mut ws = s
            .sized_writer(Digest::of(&short), 20)
            .unwrap_or_else(|e| panic!("{e}"));
        ws.write(&short).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ws.commit().unwrap_or_else(|e| panic!("{e}")), 10);
        assert_eq!(read(&s, &Digest::of(&short)), Some(short));
    }

    #[test]
    fn a_write_that_cannot_fit_beside_those_in_progress_evicts_nothing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = store(dir.path(), 100);
        let kept = put(&s, &[1u8; 30]);
        let _writing = s
            .sized_writer(Digest::of(b"a"), 60)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            s.sized_writer(Digest::of(b"b"), 50),
            Err(StoreError::NoRoom { length: 50, .. })
        ));
        assert!(
            s.contains(&kept),
            "no entry went for a write that could not fit anyway"
        );
    }
}
