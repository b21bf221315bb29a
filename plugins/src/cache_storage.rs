//! pingora-cache's storage over the [`BlobStore`]: what pingora-proxy's cache phases read and
//! write for the registry cache. The cache key's primary key is the digest the request names
//! (`sha256:<hex>`); an answer is kept only when its body hashes to that digest (the miss
//! handler's commit refuses anything else), with its headers (pingora-cache's `CacheMeta`) kept
//! beside it. A hit reads the file from disk, from any offset (a resumed pull's `Range`); a
//! hit that reads a whole entry hashes it as it goes and removes an entry that no longer
//! hashes to its digest (the client's answer is cut short, and its retry fetches it again).
//!
//! Entries being written are read as they are written (pingora's streaming partial writes):
//! the request that fetches an entry and every request for it that arrives meanwhile read the
//! same file, each at its own pace, so one upstream fetch serves them all and a slow client
//! slows no one else.
//!
//! Nothing here decides who may read an entry: the proxy checks each hit with the registry
//! before it serves it.

use std::any::Any;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::key::{CacheHashKey, CompactCacheKey, HashBinary};
use pingora_cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta, PurgeType, Storage};
use pingora_error::{Error, ErrorType, OrErr, Result};
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

use crate::blob_store::{Blob, BlobStore, BlobWriter, Digest, StoreError};

/// How much of a file a hit reads at a time.
const CHUNK: usize = 256 << 10;

/// How long an entry hashed (when written, or when read whole) is trusted before a whole read
/// hashes it again: damage to a file while berth runs is found within this time, and most
/// reads cost no hashing.
pub const REVERIFY: std::time::Duration = std::time::Duration::from_secs(3600);

/// How much of an entry being written a reader reads at a time.
const FILL_CHUNK: usize = 64 << 10;

/// Room a new entry must leave on the file system beyond its own length: an entry is not
/// started on a disk that would fill up while it is written.
pub const HEADROOM: u64 = 64 << 20;

/// Entries being written, by digest and the upstreams they come from.
type Fills = HashMap<(Digest, Box<str>), Arc<Fill>>;

/// The registry cache's storage: entries by digest, on disk.
#[derive(Debug)]
pub struct DiskStorage {
    store: BlobStore,
    /// The digests of the entries served or kept, by their key's hash (a purge names only the
    /// hash); keys that found nothing are not remembered, so requests for digests nobody
    /// stored cost no memory.
    digests: Mutex<HashMap<HashBinary, Digest>>,
    /// Entries being written, readable as they are.
    /// (Entries being written by one route's upstreams are followed only by requests of
    /// routes with the same upstreams: bytes not yet checked never cross to another registry's
    /// clients.)
    fills: Mutex<Fills>,
    /// Entries being hashed before their first use: one hash per entry, however many ask.
    verifying: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
    /// Names the fills.
    next_fill: AtomicU64,
    /// Body bytes of the entries kept since start.
    stored: AtomicU64,
    /// Hits' file reads running ([`READS_AT_ONCE`] at most).
    reads: tokio::sync::Semaphore,
    /// First-use hashes running ([`HASHES_AT_ONCE`] at most).
    hashes: tokio::sync::Semaphore,
}

impl DiskStorage {
    /// Storage over `store`.
    pub fn new(store: BlobStore) -> DiskStorage {
        DiskStorage {
            store,
            digests: Mutex::default(),
            fills: Mutex::default(),
            verifying: Mutex::default(),
            next_fill: AtomicU64::new(1),
            stored: AtomicU64::new(0),
            reads: tokio::sync::Semaphore::new(READS_AT_ONCE),
            hashes: tokio::sync::Semaphore::new(HASHES_AT_ONCE),
        }
    }

    /// The store under it.
    pub fn store(&self) -> &BlobStore {
        &self.store
    }

    /// Body bytes of the entries kept since start.
    pub fn stored_bytes(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// The digest a cache key names (its primary key).
    fn digest(key: &CacheKey) -> Option<Digest> {
        key.primary_key_str().and_then(Digest::parse)
    }

    /// Remembers the digest of `key`, an entry that exists, for purges; forgets entries the
    /// store no longer holds when the map has grown past twice the entries held.
    fn remember(&self, key: HashBinary, digest: Digest) {
        let mut digests = self.digests.lock().unwrap_or_else(|p| p.into_inner());
        digests.insert(key, digest);
        let held = self.store.usage().0;
        if digests.len() > 2 * held + 1024 {
            digests.retain(|_, d| self.store.contains(d));
        }
    }

    /// Makes sure the kept entry for `digest` hashes to it before it is served: an entry a
    /// previous run left (a file that may have been damaged while berth was not running) is
    /// hashed once, by the first request that needs it while the others wait; a damaged one
    /// is removed. `Ok(true)`: intact, or not kept (nothing to check); `Ok(false)`: damaged and
    /// removed.
    ///
    /// # Errors
    /// When the entry cannot be read (it is kept: a read error is not damage).
    pub async fn ensure_intact(
        &'static self,
        digest: Digest,
        hit: &mut HitHandler,
    ) -> std::io::Result<bool> {
        // An entry being written is checked as it is kept.
        let Some(file_hit) = hit.as_any_mut().downcast_mut::<FileHit>() else {
            return Ok(true);
        };
        let identity = file_hit.identity;
        if !(self.store.verified(&digest) && self.store.identity(&digest) == Some(identity)) {
            let gate = self
                .verifying
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(digest)
                .or_default()
                .clone();
            let turn = gate.lock_owned().await;
            // While this request waited, the entry may have been found damaged and removed, or
            // replaced: this hit's file is then not the entry any more.
            if self.store.identity(&digest) != Some(identity) {
                return Ok(false);
            }
            if !self.store.verified(&digest) {
                // The hash holds the turn until it ends, whether or not this request still
                // waits for it: one hash per entry.
                let intact = limited(&self.hashes, || {
                    move || {
                        let _turn = turn;
                        let intact = self.store.verify(&digest);
                        self.verifying
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&digest);
                        intact
                    }
                })
                .await
                .map_err(std::io::Error::other)?
                .await
                .map_err(std::io::Error::other)??;
                if !intact {
                    return Ok(false);
                }
            }
        }
        // Just hashed (or within the hour): the hit's own read need not hash it again.
        if self.store.verified_within(&digest, REVERIFY) {
            file_hit.hasher = None;
        }
        Ok(true)
    }

    /// An entry whose headers cannot be read (`why`): removed, if it is still the file
    /// `identity` names (a good copy written since stays); never a hit.
    async fn unreadable<T>(
        &'static self,
        digest: Digest,
        identity: (u64, u64),
        why: &str,
    ) -> Result<Option<T>> {
        tracing::warn!(%digest, why, "cache: an entry without readable headers; removed");
        tokio::task::spawn_blocking(move || self.store.remove_if(&digest, identity))
            .await
            .or_err(ErrorType::InternalError, "cache: removing an entry")?;
        Ok(None)
    }

    fn fills(&self) -> std::sync::MutexGuard<'_, Fills> {
        self.fills.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry being written for `digest` from `origin` (with `tag`: that write only), as a
    /// hit.
    fn fill_hit(
        &'static self,
        digest: &Digest,
        origin: &str,
        tag: Option<u64>,
    ) -> Option<(CacheMeta, HitHandler)> {
        let fill = self.fills().get(&(*digest, origin.into())).cloned()?;
        if tag.is_some_and(|t| t != fill.tag) {
            return None;
        }
        let meta = decode(&fill.meta)?;
        let hit: HitHandler = Box::new(FillHit {
            progress: fill.progress.subscribe(),
            fill,
            next: 0,
            end: None,
            read_size: FILL_CHUNK as u64,
            reads: &self.reads,
            read: PendingRead::new(),
        });
        Some((meta, hit))
    }
}

/// Makes `hit` (a hit of this storage) read `bytes` at a time: a client whose HTTP/2 window
/// admits little at once holds no more than that in berth while it waits.
pub fn set_read_size(hit: &mut HitHandler, bytes: usize) {
    let bytes = bytes.max(1) as u64;
    let any = hit.as_any_mut();
    if let Some(file) = any.downcast_mut::<FileHit>() {
        file.read_size = bytes;
    } else if let Some(fill) = any.downcast_mut::<FillHit>() {
        fill.read_size = bytes;
    }
}

/// The headers of an answer, as kept beside its entry: the lengths of pingora-cache's two
/// serialised parts, then the parts.
fn encode(meta: &CacheMeta) -> Result<Vec<u8>> {
    let (internal, header) = meta.serialize()?;
    let mut out = Vec::with_capacity(8 + internal.len() + header.len());
    out.extend_from_slice(&(internal.len() as u32).to_be_bytes());
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(&internal);
    out.extend_from_slice(&header);
    Ok(out)
}

fn decode(bytes: &[u8]) -> Option<CacheMeta> {
    let len = |at: usize| -> Option<usize> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        usize::try_from(u32::from_be_bytes(b)).ok()
    };
    let (a, b) = (len(0)?, len(4)?);
    let internal = bytes.get(8..8 + a)?;
    let header = bytes.get(8 + a..8 + a + b)?;
    if 8 + a + b != bytes.len() {
        return None;
    }
    CacheMeta::deserialize(internal, header).ok()
}

fn internal(context: String) -> Box<Error> {
    Error::explain(ErrorType::InternalError, context)
}

/// The `Content-Length` of an answer, when it has one.
fn content_length(meta: &CacheMeta) -> Option<u64> {
    meta.headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The most reads of the cache's files that run at once on blocking threads.
const READS_AT_ONCE: usize = 8;

/// The most entries hashed at once before their first use (each on a blocking thread; the
/// hashing is bound by the CPU).
const HASHES_AT_ONCE: usize = 2;

/// Runs the job `make` returns on a blocking thread once `limit` has a permit (`make` runs
/// then, on the caller's thread: what it allocates is the caller's). The job holds the permit
/// until it ends, whether or not its caller still waits.
async fn limited<T, J>(
    limit: &'static tokio::sync::Semaphore,
    make: impl FnOnce() -> J,
) -> Result<tokio::task::JoinHandle<T>>
where
    T: Send + 'static,
    J: FnOnce() -> T + Send + 'static,
{
    let permit = limit
        .acquire()
        .await
        .or_err(ErrorType::InternalError, "cache: the read limit is closed")?;
    let job = make();
    Ok(tokio::task::spawn_blocking(move || {
        let _permit = permit;
        job()
    }))
}

/// A hit's read of the cache's files, at most [`READS_AT_ONCE`] at once, that survives its
/// caller giving up: a `read_body` dropped mid-read (pingora races a fetching client's read
/// against the upstream's next chunk) takes the same read up again on its next call.
///
/// Bounded because berth's allocator (mimalloc) keeps a heap per thread, and a block freed
/// by another thread goes back to its own thread's heap only when that thread next
/// allocates: a crowd of hits starting at once, spread over a blocking thread each, left
/// every one of those threads' pages pinned by the few blocks the hits kept (about 1 MiB per
/// HTTP/2 stream whose client window stays shut). So the reads share a few threads, and
/// what outlives a read (its buffer, the decoded headers) is allocated by the caller.
#[derive(Debug)]
struct PendingRead<T> {
    job: Option<tokio::task::JoinHandle<T>>,
}

impl<T: Send + 'static> PendingRead<T> {
    fn new() -> PendingRead<T> {
        PendingRead { job: None }
    }

    /// Whether a read is under way.
    fn busy(&self) -> bool {
        self.job.is_some()
    }

    /// The result of the read under way, else of the one `make` returns (within `limit`).
    async fn finish<J: FnOnce() -> T + Send + 'static>(
        &mut self,
        limit: &'static tokio::sync::Semaphore,
        make: impl FnOnce() -> J,
    ) -> Result<T> {
        let job = match self.job.as_mut() {
            Some(job) => job,
            None => self.job.insert(limited(limit, make).await?),
        };
        let done = job.await;
        self.job = None;
        done.or_err(ErrorType::InternalError, "cache read")
    }
}

#[async_trait]
impl Storage for DiskStorage {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(digest) = Self::digest(key) else {
            return Ok(None);
        };
        // Only a digest the store holds is read (a miss waits for no read), on a blocking
        // thread; the headers are decoded here: what a hit keeps for its whole life is
        // allocated on the thread that serves it (see `PendingRead`).
        let found = if self.store.contains(&digest) {
            limited(&self.reads, || {
                move || {
                    use std::os::unix::fs::MetadataExt;
                    let blob = self.store.get(&digest)?;
                    let identity = blob.file.metadata().ok().map(|m| (m.dev(), m.ino()))?;
                    Some((blob, identity, self.store.meta(&digest)))
                }
            })
            .await?
            .await
            .or_err(ErrorType::InternalError, "cache lookup")?
        } else {
            None
        };
        let found = match found {
            Some((blob, identity, Ok(Some(bytes)))) => match decode(&bytes) {
                Some(meta) => Some((meta, blob, identity)),
                None => self.unreadable(digest, identity, "undecodable").await?,
            },
            // Gone since (evicted, removed): not kept.
            Some((_, _, Ok(None))) => None,
            Some((_, identity, Err(e)))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidData
                ) =>
            {
                self.unreadable(digest, identity, &e.to_string()).await?
            }
            // Out of file descriptors, say: not damage; the entry stays.
            Some((_, _, Err(e))) => {
                tracing::warn!(%digest, error = %e, "cache: cannot read an entry's headers");
                None
            }
            None => None,
        };
        Ok(match found {
            Some((meta, blob, identity)) => {
                self.remember(key.primary_bin(), digest);
                let hit: HitHandler = Box::new(FileHit::new(self, digest, blob, identity));
                Some((meta, hit))
            }
            // Not kept yet, perhaps being written: read as it is.
            None => self.fill_hit(&digest, key.user_tag(), None),
        })
    }

    async fn lookup_streaming_write(
        &'static self,
        key: &CacheKey,
        streaming_write_tag: Option<&[u8]>,
        trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let tag = streaming_write_tag
            .and_then(|t| <[u8; 8]>::try_from(t).ok())
            .map(u64::from_be_bytes);
        match (Self::digest(key), tag) {
            (Some(digest), Some(tag)) => Ok(self.fill_hit(&digest, key.user_tag(), Some(tag))),
            _ => self.lookup(key, trace).await,
        }
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let digest = Self::digest(key)
            .ok_or_else(|| internal("cache: a key that names no digest".into()))?;
        let dir = berth_core::logging::shown(&self.store.dir().display().to_string(), 300);
        // Its length first: the room for it is set aside before a byte is written.
        let Some(length) = content_length(meta) else {
            return Error::e_explain(
                ErrorType::InternalError,
                "cache: an answer without Content-Length; passed through, not kept",
            );
        };
        if let Some(free) = self.store.available() {
            if free < length.saturating_add(HEADROOM) {
                tracing::warn!(
                    %digest,
                    free,
                    %dir,
                    "cache: not enough room on the cache's file system for an entry of {length} \
                     bytes; passed through, not kept"
                );
                return Error::e_explain(ErrorType::InternalError, "cache: file system full");
            }
        }
        let encoded = encode(meta)?;
        // Eviction and the disk's allocation block: off the runtime's threads.
        let store = &self.store;
        let started = tokio::task::spawn_blocking(move || store.sized_writer(digest, length))
            .await
            .or_err(ErrorType::InternalError, "cache: starting a write")?;
        let writer = started.map_err(|e| {
            match &e {
                StoreError::Io(_) => tracing::warn!(
                    %digest,
                    error = %e,
                    %dir,
                    "cache: cannot write in the cache's directory; passed through, not kept"
                ),
                _ => tracing::info!(%digest, error = %e, "cache: passed through, not kept"),
            }
            internal(format!("cache: cannot start a write: {e}"))
        })?;
        let file = writer.reader().or_err(
            ErrorType::InternalError,
            "cache: cannot read what is written",
        )?;
        let tag = self.next_fill.fetch_add(1, Ordering::Relaxed);
        let (progress, _) = watch::channel(Progress::default());
        let fill = Arc::new(Fill {
            tag,
            length,
            meta: encoded.clone(),
            file,
            progress,
        });
        let origin: Box<str> = key.user_tag().into();
        self.fills().insert((digest, origin.clone()), fill.clone());
        Ok(Box::new(FileMiss {
            storage: self,
            digest,
            writer: Some(writer),
            meta: encoded,
            fill,
            tag: tag.to_be_bytes(),
            key: key.primary_bin(),
            origin,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let compact: &CompactCacheKey = match target {
            PurgeTarget::Active(key) => key,
            PurgeTarget::Exact(entry) => entry.key(),
        };
        let digest = self
            .digests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&compact.primary)
            .copied();
        match digest {
            Some(d) if self.store.contains(&d) => {
                self.store.remove(&d);
                Ok(PurgeOutcome::Purged(None))
            }
            _ => Ok(PurgeOutcome::NotFound),
        }
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let Some(digest) = Self::digest(key) else {
            return Ok(false);
        };
        let bytes = encode(meta)?;
        self.store
            .set_meta(&digest, &bytes)
            .or_err(ErrorType::InternalError, "cache: cannot write the headers")
    }

    fn support_streaming_partial_write(&self) -> bool {
        true
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// A hit: the entry's file, read from `next` up to `end`; a read of the whole entry is hashed
/// as it goes.
struct FileHit {
    storage: &'static DiskStorage,
    digest: Digest,
    /// Read at offsets (a read under way has its own handle).
    file: Arc<File>,
    size: u64,
    next: u64,
    end: u64,
    /// The hash of what was read, while the read is of the whole entry from its start.
    hasher: Option<Sha256>,
    /// Bytes read at a time.
    read_size: u64,
    /// The file's device and inode: the entry it was opened as.
    identity: (u64, u64),
    /// The read under way.
    read: PendingRead<std::io::Result<FileRead>>,
}

/// What a kept entry's read gives back: what was read, the hash so far.
type FileRead = (Vec<u8>, Option<Sha256>);

impl FileHit {
    fn new(
        storage: &'static DiskStorage,
        digest: Digest,
        blob: Blob,
        identity: (u64, u64),
    ) -> FileHit {
        FileHit {
            identity,
            storage,
            digest,
            file: Arc::new(blob.file),
            size: blob.size,
            next: 0,
            end: blob.size,
            hasher: (!storage.store.verified_within(&digest, REVERIFY)).then(Sha256::new),
            read_size: CHUNK as u64,
            read: PendingRead::new(),
        }
    }
}

#[async_trait]
impl HandleHit for FileHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.next >= self.end {
            return Ok(None);
        }
        let want = usize::try_from((self.end - self.next).min(self.read_size)).unwrap_or(CHUNK);
        let (file, at, hasher) = (&self.file, self.next, &mut self.hasher);
        let (chunk, hasher) = self
            .read
            .finish(&self.storage.reads, || {
                let (file, mut hasher) = (file.clone(), hasher.take());
                let mut buf = vec![0u8; want];
                move || {
                    file.read_exact_at(&mut buf, at)?;
                    if let Some(h) = hasher.as_mut() {
                        h.update(&buf);
                    }
                    Ok((buf, hasher))
                }
            })
            .await?
            .or_err(ErrorType::ReadError, "cache: the entry's file ended early")?;
        self.next += chunk.len() as u64;
        self.hasher = hasher;
        if self.next == self.size {
            if let Some(h) = self.hasher.take() {
                if Digest::from_bytes(h.finalize().into()) != self.digest {
                    // The last bytes are held back: the client sees a cut answer, not a
                    // complete wrong one, and its retry fetches the entry again.
                    tracing::warn!(
                        digest = %self.digest,
                        "cache: an entry no longer hashes to its digest; removed (the client's \
                         answer was cut short)"
                    );
                    self.storage.store.remove_if(&self.digest, self.identity);
                    return Error::e_explain(
                        ErrorType::ReadError,
                        "cache: the entry no longer hashes to its digest",
                    );
                }
                if self.storage.store.identity(&self.digest) == Some(self.identity) {
                    self.storage.store.mark_verified(&self.digest);
                }
            }
        }
        Ok(Some(Bytes::from(chunk)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let start = start as u64;
        let end = end.map_or(self.size, |e| e as u64);
        if start > end || end > self.size {
            return Error::e_explain(
                ErrorType::InternalError,
                format!(
                    "cache: range {start}-{end} outside an entry of {}",
                    self.size
                ),
            );
        }
        self.next = start;
        self.end = end;
        // A read under way was for another offset.
        self.read = PendingRead::new();
        // Part of the entry: nothing to hash it against.
        self.hasher = None;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        usize::try_from(self.size).unwrap_or(usize::MAX)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// How far an entry being written has got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Progress {
    /// Bytes written.
    written: u64,
    /// `Some(true)`: complete and kept; `Some(false)`: failed (nothing kept).
    done: Option<bool>,
}

/// An entry being written, readable as it is.
#[derive(Debug)]
struct Fill {
    tag: u64,
    /// The entry's length, as its answer announced it.
    length: u64,
    /// The answer's headers, encoded.
    meta: Vec<u8>,
    /// The file being written (read at explicit offsets).
    file: File,
    progress: watch::Sender<Progress>,
}

/// A hit on an entry being written: reads what is written, waits for more, ends when the
/// write ends (an error if it failed).
struct FillHit {
    fill: Arc<Fill>,
    progress: watch::Receiver<Progress>,
    next: u64,
    end: Option<u64>,
    /// Bytes read at a time.
    read_size: u64,
    /// The storage's read limit.
    reads: &'static tokio::sync::Semaphore,
    /// The read under way.
    read: PendingRead<std::io::Result<Vec<u8>>>,
}

#[async_trait]
impl HandleHit for FillHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        loop {
            let now = *self.progress.borrow_and_update();
            let end = self.end.unwrap_or(u64::MAX);
            if self.next >= end {
                return Ok(None);
            }
            // What may be read now: never the entry's last byte before it is kept — so no
            // client gets a whole answer whose bytes turn out not to hash to the digest (a
            // range short of the end is served as the bytes arrive, as the registry would).
            let readable = match now.done {
                Some(true) => now.written,
                _ => now.written.min(self.fill.length.saturating_sub(1)),
            };
            // A read a dropped call left under way is taken up first (it is at `next`).
            if self.read.busy() || self.next < readable {
                let want = (readable.min(end).saturating_sub(self.next)).min(self.read_size);
                let (fill, at) = (&self.fill, self.next);
                let chunk = self
                    .read
                    .finish(self.reads, || {
                        let fill = fill.clone();
                        let mut buf = vec![0u8; usize::try_from(want).unwrap_or(CHUNK)];
                        move || fill.file.read_exact_at(&mut buf, at).map(|()| buf)
                    })
                    .await?
                    .or_err(
                        ErrorType::ReadError,
                        "cache: cannot read an entry being written",
                    )?;
                self.next += chunk.len() as u64;
                return Ok(Some(Bytes::from(chunk)));
            }
            match now.done {
                Some(true) if self.end.is_none_or(|e| e <= now.written) => return Ok(None),
                Some(true) => {
                    return Error::e_explain(
                        ErrorType::ReadError,
                        "cache: a range past the end of the entry",
                    )
                }
                Some(false) => {
                    return Error::e_explain(
                        ErrorType::ReadError,
                        "cache: the upstream fetch this answer followed failed",
                    )
                }
                None => {
                    if self.progress.changed().await.is_err() {
                        // The writer went away without a word: it failed.
                        let last = *self.progress.borrow();
                        if last.done != Some(true) {
                            return Error::e_explain(
                                ErrorType::ReadError,
                                "cache: the upstream fetch this answer followed stopped",
                            );
                        }
                    }
                }
            }
        }
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let (start, end) = (start as u64, end.map(|e| e as u64));
        if end.is_some_and(|e| start > e) {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("cache: range {start}-{end:?} ends before it starts"),
            );
        }
        self.next = start;
        self.end = end;
        // A read under way was for another offset.
        self.read = PendingRead::new();
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// A miss being written: the body through the store's writer, the headers kept at commit;
/// readers of the fill follow its progress.
struct FileMiss {
    storage: &'static DiskStorage,
    digest: Digest,
    writer: Option<BlobWriter<'static>>,
    meta: Vec<u8>,
    fill: Arc<Fill>,
    tag: [u8; 8],
    /// The hash of the entry's key, remembered for purges once the entry is kept.
    key: HashBinary,
    /// The upstreams it is fetched from (the key's user tag).
    origin: Box<str>,
}

impl FileMiss {
    fn failed(&self) {
        self.fill.progress.send_modify(|p| p.done = Some(false));
    }
}

#[async_trait]
impl HandleMiss for FileMiss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        let Some(mut writer) = self.writer.take() else {
            return Error::e_explain(ErrorType::InternalError, "cache: write after an error");
        };
        let len = data.len() as u64;
        let written = tokio::task::spawn_blocking(move || writer.write(&data).map(|()| writer))
            .await
            .or_err(ErrorType::InternalError, "cache write")?;
        match written {
            Ok(writer) => {
                self.writer = Some(writer);
                self.fill.progress.send_modify(|p| p.written += len);
                Ok(())
            }
            Err(e) => {
                self.failed();
                tracing::warn!(digest = %self.digest, error = %e, "cache: a write failed; not kept");
                Err(internal(format!("cache: {e}")))
            }
        }
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        let Some(writer) = self.writer.take() else {
            self.failed();
            return Err(internal("cache: finished after an error".into()));
        };
        let meta = std::mem::take(&mut self.meta);
        let committed = tokio::task::spawn_blocking(move || writer.commit_with(Some(&meta)))
            .await
            .or_err(ErrorType::InternalError, "cache commit")?;
        match committed {
            Ok(size) => {
                self.fill.progress.send_modify(|p| p.done = Some(true));
                self.storage.stored.fetch_add(size, Ordering::Relaxed);
                self.storage.remember(self.key, self.digest);
                Ok(MissFinishType::Created(
                    usize::try_from(size).unwrap_or(usize::MAX),
                ))
            }
            Err(e) => {
                self.failed();
                tracing::warn!(digest = %self.digest, error = %e, "cache: an answer not kept");
                Err(internal(format!("cache: {e}")))
            }
        }
    }

    fn streaming_write_tag(&self) -> Option<&[u8]> {
        Some(&self.tag)
    }
}

impl Drop for FileMiss {
    fn drop(&mut self) {
        // Not kept (an error, a panic, a request that went away): readers learn it failed.
        if self.fill.progress.borrow().done.is_none() {
            self.failed();
        }
        let mut fills = self.storage.fills();
        let at = (self.digest, self.origin.clone());
        if fills.get(&at).is_some_and(|f| f.tag == self.fill.tag) {
            fills.remove(&at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_http::ResponseHeader;
    use std::time::{Duration, SystemTime};

    fn span() -> SpanHandle {
        pingora_cache::trace::Span::inactive().handle()
    }

    fn storage(dir: &std::path::Path) -> &'static DiskStorage {
        let store = BlobStore::open(dir, 1 << 20).unwrap_or_else(|e| panic!("{e}"));
        Box::leak(Box::new(DiskStorage::new(store)))
    }

    fn meta(content_type: &str, length: Option<usize>) -> CacheMeta {
        let mut header = ResponseHeader::build(200, None).unwrap_or_else(|e| panic!("{e}"));
        header
            .insert_header("content-type", content_type)
            .unwrap_or_else(|e| panic!("{e}"));
        if let Some(length) = length {
            header
                .insert_header("content-length", length.to_string())
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let now = SystemTime::now();
        CacheMeta::new(now + Duration::from_secs(3600), now, 0, 0, header)
    }

    async fn fill(s: &'static DiskStorage, key: &CacheKey, body: &[u8]) -> Result<MissFinishType> {
        let mut miss = s
            .get_miss_handler(
                key,
                &meta("application/octet-stream", Some(body.len())),
                &span(),
            )
            .await?;
        for chunk in body.chunks(5) {
            miss.write_body(Bytes::copy_from_slice(chunk), false)
                .await?;
        }
        miss.finish().await
    }

    /// Starts writing the entry for `key`, `len` bytes long, and opens the writer's own
    /// reader (found by its tag, as pingora finds it).
    async fn start_fill(
        s: &'static DiskStorage,
        key: &CacheKey,
        len: usize,
    ) -> (MissHandler, HitHandler) {
        let miss = s
            .get_miss_handler(key, &meta("application/octet-stream", Some(len)), &span())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let tag = miss.streaming_write_tag().map(<[u8]>::to_vec);
        let (_, reader) = s
            .lookup_streaming_write(key, tag.as_deref(), &span())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("the writer's reader"));
        (miss, reader)
    }

    async fn read_all(hit: &mut HitHandler) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(b) = hit.read_body().await.unwrap_or_else(|e| panic!("{e}")) {
            out.extend_from_slice(&b);
        }
        out
    }

    #[tokio::test]
    async fn an_answer_is_kept_by_its_digest_only_when_it_hashes_to_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = storage(dir.path());
        let body = b"a layer's bytes, as the registry sent them";
        let key = CacheKey::new(Digest::of(body).to_string(), "");
        assert!(s
            .lookup(&key, &span())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none());
        assert!(
            matches!(fill(s, &key, body).await, Ok(MissFinishType::Created(n)) if n == body.len())
        );
        let (kept, mut hit) = s
            .lookup(&key, &span())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("a hit"));
        assert_eq!(
            kept.headers().get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/octet-stream"[..])
        );
        assert_eq!(read_all(&mut hit).await, body);

        // Bytes that hash to something else under this digest are refused and not kept.
        let other = CacheKey::new(Digest::of(b"what was asked for").to_string(), "");
        let Err(e) = fill(s, &other, b"something else").await else {
            panic!("a mismatch was kept");
        };
        assert!(e.to_string().contains("not stored"), "{e}");
        assert!(s
            .lookup(&other, &span())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none());
        // A key that names no digest is neither looked up nor written.
        let path = CacheKey::new("/v2/x/manifests/latest", "");
        assert!(s
            .lookup(&path, &span())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none());
        assert!(s
            .get_miss_handler(&path, &meta("text/plain", Some(1)), &span())
            .await
            .is_err());
    }

    #[tokio::test]
    async fn an_entry_whose_headers_cannot_be_read_is_removed_and_missed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = storage(dir.path());
        let body = b"a layer whose headers file is damaged";
        let digest = Digest::of(body);
        let key = CacheKey::new(digest.to_string(), "");
        fill(s, &key, body).await.unwrap_or_else(|e| panic!("{e}"));
        let meta_file = dir.path().join("meta").join(digest.hex());
        std::fs::write(&meta_file, b"\xffnot headers").unwrap_or_else(|e| panic!("{e}"));
        assert!(s
            .lookup(&key, &span())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none());
        assert!(!s.store().contains(&digest));
        assert!(!dir.path().join("sha256").join(digest.hex()).exists());
        assert!(!meta_file.exists());
    }

    #[tokio::test]
    async fn an_entry_replaced_since_its_headers_were_read_stays() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = storage(dir.path());
        let body = b"a layer written again while a reader found its headers unreadable";
        let digest = Digest::of(body);
        fill(s, &CacheKey::new(digest.to_string(), ""), body)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // The file the reader had is not the entry's file now.
        let other = (u64::MAX, u64::MAX);
        assert!(s
            .unreadable::<()>(digest, other, "test")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none());
        assert!(
            s.store().contains(&digest),
            "a good copy written since was removed"
        );
        let now = s
            .store()
            .identity(&digest)
            .unwrap_or_else(|| panic!("kept"));
        let _ = s.unreadable::<()>(digest, now, "test").await;
        assert!(!s.store().contains(&digest));
    }

    #[tokio::test]
    async fn headers_that_cannot_be_read_for_now_are_not_damage() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = storage(dir.path());
        let body = b"a layer whose headers cannot be read at the moment";
        let digest = Digest::of(body);
        let key = CacheKey::new(digest.to_string(), "");
        fill(s, &key, body).await.unwrap_or_else(|e| panic!("{e}"));
        // A read that fails with an error other than "not there" or "not headers" (here: a
        // directory where the file was; out of file descriptors, say, in life).
        let meta_file = dir.path().join("meta").join(digest.hex());
        let kept = std::fs::read(&meta_file).unwrap_or_else(|e| panic!("{e}"));
        std::fs::remove_file(&meta_file).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir(&meta_file).unwrap_or_else(|e| panic!("{e}"));
        assert!(s
            .lookup(&key, &span())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none());
        assert!(
            s.store().contains(&digest),
            "an entry removed for a read error"
        );
        std::fs::remove_dir(&meta_file).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&meta_file, kept).unwrap_or_else(|e| panic!("{e}"));
        let (_, mut hit) = s
            .lookup(&key, &span())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("a hit once the headers read again"));
        assert_eq!(read_all(&mut hit).await, body);
    }

    /// Reads `hit` to its end, polling each read once and dropping it when it is not done, as
    /// pingora drops a read that loses a race (the storage's read limit is its own, so a read
    /// not done at once is under way); what was read, and how many reads were dropped.
    async fn read_with_drops(hit: &mut HitHandler) -> (Vec<u8>, usize) {
        use std::future::Future;
        use std::task::Poll;
        let (mut got, mut dropped) = (Vec::new(), 0);
        loop {
            let at_once = {
                let mut read = std::pin::pin!(hit.read_body());
                std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await
            };
            let next = match at_once {
                Poll::Ready(done) => done,
                Poll::Pending => {
                    dropped += 1;
                    hit.read_body().await
                }
            };
            match next.unwrap_or_else(|e| panic!("{e}")) {
                Some(b) => got.extend_from_slice(&b),
                None => return (got, dropped),
            }
        }
    }

    #[tokio::test]
    async fn a_read_dropped_half_way_is_taken_up_again() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = storage(dir.path());
        let body: Vec<u8> = (0..(CHUNK * 3 + 7)).map(|i| (i % 241) as u8).collect();
        let key = CacheKey::new(Digest::of(&body).to_string(), "");

        // An entry being written, read by a client whose reads are dropped now and then.
        let (mut miss, mut follower) = start_fill(s, &key, body.len()).await;
        miss.write_body(Bytes::copy_from_slice(&body), false)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        miss.finish().await.unwrap_or_else(|e| panic!("{e}"));
        let (got, dropped) = read_with_drops(&mut follower).await;
        let first_wrong = got.iter().zip(&body).position(|(a, b)| a != b);
        assert!(
            got == body,
            "the entry being written: {} bytes of {}, first wrong at {first_wrong:?}",
            got.len(),
            body.len()
        );
        assert!(dropped > 0, "no read was dropped half-way");

        // A kept entry, whole (hashed as it is read: its last hash made old) and from an
        // offset; read again until a read was dropped half-way (one may be done at once).
        let digest = Digest::of(&body);
        for start in [0, 100] {
            let mut dropped = 0;
            for _ in 0..50 {
                s.store().age_verified(&digest, REVERIFY * 2);
                let (_, mut hit) = s
                    .lookup(&key, &span())
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
                    .unwrap_or_else(|| panic!("a hit"));
                if start > 0 {
                    hit.seek(start, None).unwrap_or_else(|e| panic!("{e}"));
                }
                let got;
                (got, dropped) = read_with_drops(&mut hit).await;
                let want = body.get(start..).unwrap_or_default();
                let first_wrong = got.iter().zip(want).position(|(a, b)| a != b);
                assert!(
                    got == want,
                    "from {start}: {} bytes of {}, first wrong at {first_wrong:?}",
                    got.len(),
                    want.len()
                );
                assert_eq!(
                    s.store().verified_within(&digest, REVERIFY),
                    start == 0,
                    "the whole read hashed every byte once, in order; a part hashes nothing"
                );
                if dropped > 0 {
                    break;
                }
            }
            assert!(dropped > 0, "no read was dropped half-way from {start}");
        }
    }

    #[tokio::test]
    async fn a_hit_reads_any_range_and_a_restart_keeps_the_entries() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let body: Vec<u8> = (0..(CHUNK * 2 + 100)).map(|i| (i % 251) as u8).collect();
        let key = CacheKey::new(Digest::of(&body).to_string(), "");
        let s = storage(dir.path());
        fill(s, &key, &body).await.unwrap_or_else(|e| panic!("{e}"));
        // Another storage over the same directory: a restart.
        let s = storage(dir.path());
        for (start, end) in [
            (0, None),
            (10, Some(20)),
            (CHUNK - 1, Some(CHUNK + 2)),
            (body.len() - 1, None),
        ] {
            let (_, mut hit) = s
                .lookup(&key, &span())
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("a hit"));
            hit.seek(start, end).unwrap_or_else(|e| panic!("{e}"));
            let want = body
                .get(start..end.unwrap_or(body.len()))
                .unwrap_or_default();
            assert_eq!(read_all(&mut hit).await, want, "{start}-{end:?}");
        }
        let (_, mut hit) = s
            .lookup(&key, &span())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("a hit"));
        assert!(hit.seek(5, Some(body.len() + 1)).is_err(), "past the end");
        // Purged by the key's hash, as pingora names it.
        let outcome = s
            .purge(
                PurgeTarget::Active(&key.to_compact()),
                PurgeType::Invalidation,
                &span(),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(outcome, PurgeOutcome::Purged(None)));
        assert!(s
            .lookup(&key, &span())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none());
    }

    #[tokio::test]
    async fn readers_follow_an_entry_as_it_is_written() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = storage(dir.path());
        let body: Vec<u8> = (0..(CHUNK + 1000)).map(|i| (i % 253) as u8).collect();
        let key = CacheKey::new(Digest::of(&body).to_string(), "");
        // The writer's own reader, by its tag, and one that looks the digest up meanwhile.
        let (mut miss, mut own) = start_fill(s, &key, body.len()).await;
        miss.write_body(Bytes::copy_from_slice(&body[..100]), false)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (_, mut other) = s
            .lookup(&key, &span())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("a reader of the entry being written"));
        other.seek(50, None).unwrap_or_else(|e| panic!("{e}"));
        let first = own.read_body().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.as_deref(), Some(&body[..100]));
        // Nothing more written yet: the readers wait, and go on as it comes.
        let readers = tokio::spawn(async move {
            let mut rest = first.map(|b| b.to_vec()).unwrap_or_default();
            rest.extend(read_all(&mut own).await);
            (rest, read_all(&mut other).await)
        });
        tokio::task::yield_now().await;
        for chunk in body[100..].chunks(4096) {
            miss.write_body(Bytes::copy_from_slice(chunk), false)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        miss.finish().await.unwrap_or_else(|e| panic!("{e}"));
        let (own, other) = readers.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(own, body);
        assert_eq!(other, &body[50..]);
        assert_eq!(s.stored_bytes(), body.len() as u64);
        assert!(s.fills().is_empty(), "a finished fill is forgotten");
    }

    #[tokio::test]
    async fn readers_of_a_failed_write_get_an_error_not_an_end() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = storage(dir.path());
        for finish in [true, false] {
            let key = CacheKey::new(Digest::of(b"all of it").to_string(), "");
            let mut miss = s
                .get_miss_handler(&key, &meta("text/plain", Some(b"all of it".len())), &span())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            miss.write_body(Bytes::from_static(b"not it"), false)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let (_, mut reader) = s
                .lookup(&key, &span())
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("a reader"));
            assert_eq!(
                reader.read_body().await.ok().flatten().as_deref(),
                Some(&b"not it"[..])
            );
            if finish {
                // The bytes hash to something else: the commit refuses them.
                assert!(miss.finish().await.is_err());
            } else {
                // The upstream went away: the handler is dropped unfinished.
                drop(miss);
            }
            assert!(reader.read_body().await.is_err(), "finish: {finish}");
            assert!(s.lookup(&key, &span()).await.ok().flatten().is_none());
        }
    }

    #[tokio::test]
    async fn a_damaged_entry_is_cut_short_and_removed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = storage(dir.path());
        let body: Vec<u8> = (0..(CHUNK + 10)).map(|i| (i % 7) as u8).collect();
        let digest = Digest::of(&body);
        let key = CacheKey::new(digest.to_string(), "");
        fill(s, &key, &body).await.unwrap_or_else(|e| panic!("{e}"));
        // One byte changed on disk, the length kept.
        let path = dir.path().join("sha256").join(digest.hex());
        let mut damaged = body.clone();
        damaged[3] ^= 1;
        std::fs::write(&path, &damaged).unwrap_or_else(|e| panic!("{e}"));
        // Hashed when written, and trusted for REVERIFY: a read now is not hashed again.
        let (_, mut hit) = s
            .lookup(&key, &span())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("a hit"));
        assert_eq!(read_all(&mut hit).await, damaged);
        s.store().age_verified(&digest, REVERIFY);
        // A range is not checked (nothing to check it against) ...
        let (_, mut hit) = s
            .lookup(&key, &span())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("a hit"));
        hit.seek(0, Some(10)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_all(&mut hit).await, &damaged[..10]);
        // ... a whole read is: its first chunk goes out, its last is held back.
        let (_, mut hit) = s
            .lookup(&key, &span())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("a hit"));
        assert_eq!(
            hit.read_body().await.ok().flatten().map(|b| b.len()),
            Some(CHUNK)
        );
        assert!(hit.read_body().await.is_err());
        assert!(
            s.lookup(&key, &span()).await.ok().flatten().is_none(),
            "removed"
        );
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn an_answer_larger_than_the_cache_is_not_started() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = storage(dir.path());
        let key = CacheKey::new(Digest::of(b"x").to_string(), "");
        let big = meta("application/octet-stream", Some(2 << 20));
        let Err(e) = s.get_miss_handler(&key, &big, &span()).await else {
            panic!("started an entry larger than max-size");
        };
        assert!(
            e.to_string().contains("more than the cache's max-size"),
            "{e}"
        );
        // An answer that does not say its length: its room cannot be set aside.
        let unsized_answer = meta("application/octet-stream", None);
        let Err(e) = s.get_miss_handler(&key, &unsized_answer, &span()).await else {
            panic!("started an entry of unknown length");
        };
        assert!(e.to_string().contains("without Content-Length"), "{e}");
        assert!(s.fills().is_empty());
    }

    #[tokio::test]
    async fn an_entry_left_by_a_previous_run_is_hashed_before_it_is_served() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (good, bad) = (b"kept intact".to_vec(), b"damaged on disk".to_vec());
        let s = storage(dir.path());
        for body in [&good, &bad] {
            let key = CacheKey::new(Digest::of(body).to_string(), "");
            fill(s, &key, body).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let path = dir.path().join("sha256").join(Digest::of(&bad).hex());
        std::fs::write(&path, b"damaged on dusk").unwrap_or_else(|e| panic!("{e}"));
        // A restart: nothing is known to be intact.
        let s = storage(dir.path());
        let key = |b: &[u8]| CacheKey::new(Digest::of(b).to_string(), "");
        assert!(!s.store().verified(&Digest::of(&good)));
        let hit = |b: Vec<u8>| async move {
            s.lookup(&key(&b), &span())
                .await
                .ok()
                .flatten()
                .unwrap_or_else(|| panic!("a hit"))
                .1
        };
        let mut intact = hit(good.clone()).await;
        let hashing = |h: &HitHandler| {
            h.as_any()
                .downcast_ref::<FileHit>()
                .is_some_and(|f| f.hasher.is_some())
        };
        assert!(
            hashing(&intact),
            "a hit of an entry not hashed since start hashes its read"
        );
        assert!(s
            .ensure_intact(Digest::of(&good), &mut intact)
            .await
            .unwrap_or(false));
        assert!(s.store().verified(&Digest::of(&good)));
        assert!(!hashing(&intact), "hashed twice on its first use");
        assert_eq!(read_all(&mut intact).await, good);
        // Two readers of the damaged entry: the first hashes it and finds the damage, the
        // second (opened before) is not served the file either.
        let (mut first, mut second) = (hit(bad.clone()).await, hit(bad.clone()).await);
        assert!(!s
            .ensure_intact(Digest::of(&bad), &mut first)
            .await
            .unwrap_or(true));
        assert!(!s
            .ensure_intact(Digest::of(&bad), &mut second)
            .await
            .unwrap_or(true));
        assert!(s.lookup(&key(&bad), &span()).await.ok().flatten().is_none());
        assert!(!path.exists(), "the damaged entry is removed");
    }

    #[tokio::test]
    async fn lookups_of_digests_nobody_stored_cost_no_memory() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = storage(dir.path());
        let remembered = || s.digests.lock().map(|d| d.len()).unwrap_or(usize::MAX);
        for i in 0..100u32 {
            let key = CacheKey::new(Digest::of(&i.to_be_bytes()).to_string(), "");
            assert!(s.lookup(&key, &span()).await.ok().flatten().is_none());
        }
        assert_eq!(remembered(), 0);
        let key = CacheKey::new(Digest::of(b"kept").to_string(), "");
        fill(s, &key, b"kept")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(remembered(), 1, "a kept entry is remembered for purges");
    }

    #[tokio::test]
    async fn the_last_byte_waits_until_the_entry_is_kept() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = storage(dir.path());
        let body = b"twenty bytes of body".to_vec();
        let key = CacheKey::new(Digest::of(&body).to_string(), "");
        let mut miss = s
            .get_miss_handler(&key, &meta("text/plain", Some(body.len())), &span())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        miss.write_body(Bytes::copy_from_slice(&body), false)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let reader = || async {
            s.lookup(&key, &span())
                .await
                .ok()
                .flatten()
                .unwrap_or_else(|| panic!("a reader"))
                .1
        };
        let (mut whole, mut short, mut to_end) = (reader().await, reader().await, reader().await);
        short.seek(0, Some(5)).unwrap_or_else(|e| panic!("{e}"));
        to_end.seek(15, None).unwrap_or_else(|e| panic!("{e}"));
        let first = whole.read_body().await.ok().flatten().unwrap_or_default();
        assert_eq!(first, body[..body.len() - 1], "all but the last byte");
        assert_eq!(
            read_all(&mut short).await,
            &body[..5],
            "a range short of the end"
        );
        let wait = std::time::Duration::from_millis(200);
        assert!(
            tokio::time::timeout(wait, whole.read_body()).await.is_err(),
            "the last byte waits"
        );
        let part = to_end.read_body().await.ok().flatten().unwrap_or_default();
        assert_eq!(part, body[15..body.len() - 1]);
        assert!(
            tokio::time::timeout(wait, to_end.read_body())
                .await
                .is_err(),
            "so does a range's, when it is the entry's"
        );
        miss.finish().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_all(&mut whole).await, &body[body.len() - 1..]);
        assert_eq!(read_all(&mut to_end).await, &body[body.len() - 1..]);
    }
}
