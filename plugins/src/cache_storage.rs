//! pingora-cache's storage over the [`BlobStore`]: what pingora-proxy's cache phases read and
//! write for the registry cache. The cache key's primary key is the digest the request names
//! (`sha256:<hex>`); an answer is kept only when its body hashes to that digest (the miss
//! handler's commit refuses anything else), with its headers (pingora-cache's `CacheMeta`) kept
//! beside it. A hit reads the file from disk, from any offset (a resumed pull's `Range`).
//!
//! Nothing here decides who may read an entry: the proxy checks each hit with the registry
//! before it serves it.

use std::any::Any;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::key::{CacheHashKey, CompactCacheKey, HashBinary};
use pingora_cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta, PurgeType, Storage};
use pingora_error::{Error, ErrorType, OrErr, Result};

use crate::blob_store::{Blob, BlobStore, BlobWriter, Digest};

/// How much of a file a hit reads at a time.
const CHUNK: usize = 256 << 10;

/// The registry cache's storage: entries by digest, on disk.
#[derive(Debug)]
pub struct DiskStorage {
    store: BlobStore,
    /// The digests of the keys seen, by their hash (a purge names only the hash).
    digests: Mutex<HashMap<HashBinary, Digest>>,
}

impl DiskStorage {
    /// Storage over `store`.
    pub fn new(store: BlobStore) -> DiskStorage {
        DiskStorage {
            store,
            digests: Mutex::default(),
        }
    }

    /// The store under it.
    pub fn store(&self) -> &BlobStore {
        &self.store
    }

    /// The digest a cache key names (its primary key), remembered for purges.
    fn digest(&self, key: &CacheKey) -> Option<Digest> {
        let digest = key.primary_key_str().and_then(Digest::parse)?;
        self.digests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.primary_bin(), digest);
        Some(digest)
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

#[async_trait]
impl Storage for DiskStorage {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(digest) = self.digest(key) else {
            return Ok(None);
        };
        let store = &self.store;
        let found = tokio::task::spawn_blocking(move || {
            let blob = store.get(&digest)?;
            match store.meta(&digest).as_deref().and_then(decode) {
                Some(meta) => Some((meta, blob)),
                None => {
                    tracing::warn!(%digest, "cache: an entry without readable headers; removed");
                    store.remove(&digest);
                    None
                }
            }
        })
        .await
        .or_err(ErrorType::InternalError, "cache lookup")?;
        Ok(found.map(|(meta, blob)| {
            let hit: HitHandler = Box::new(FileHit::new(blob));
            (meta, hit)
        }))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let digest = self
            .digest(key)
            .ok_or_else(|| internal("cache: a key that names no digest".into()))?;
        let meta = encode(meta)?;
        let writer = self
            .store
            .writer(digest)
            .or_err(ErrorType::InternalError, "cache: cannot start a write")?;
        Ok(Box::new(FileMiss {
            writer: Some(writer),
            meta,
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
        let Some(digest) = self.digest(key) else {
            return Ok(false);
        };
        let bytes = encode(meta)?;
        self.store
            .set_meta(&digest, &bytes)
            .or_err(ErrorType::InternalError, "cache: cannot write the headers")
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// A hit: the entry's file, read from `next` up to `end`.
struct FileHit {
    file: Option<std::fs::File>,
    size: u64,
    next: u64,
    end: u64,
    seek_to: Option<u64>,
}

impl FileHit {
    fn new(blob: Blob) -> FileHit {
        FileHit {
            file: Some(blob.file),
            size: blob.size,
            next: 0,
            end: blob.size,
            seek_to: None,
        }
    }
}

#[async_trait]
impl HandleHit for FileHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.next >= self.end {
            return Ok(None);
        }
        let Some(mut file) = self.file.take() else {
            return Ok(None);
        };
        let want = usize::try_from((self.end - self.next).min(CHUNK as u64)).unwrap_or(CHUNK);
        let seek_to = self.seek_to.take();
        let (file, chunk) = tokio::task::spawn_blocking(move || {
            if let Some(at) = seek_to {
                file.seek(SeekFrom::Start(at))?;
            }
            let mut buf = vec![0u8; want];
            file.read_exact(&mut buf)?;
            Ok::<_, std::io::Error>((file, buf))
        })
        .await
        .or_err(ErrorType::InternalError, "cache read")?
        .or_err(ErrorType::ReadError, "cache: the entry's file ended early")?;
        self.file = Some(file);
        self.next += chunk.len() as u64;
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
        self.seek_to = Some(start);
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

/// A miss being written: the body through the store's writer, the headers kept at commit.
struct FileMiss {
    writer: Option<BlobWriter<'static>>,
    meta: Vec<u8>,
}

#[async_trait]
impl HandleMiss for FileMiss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        let Some(mut writer) = self.writer.take() else {
            return Error::e_explain(ErrorType::InternalError, "cache: write after an error");
        };
        let writer = tokio::task::spawn_blocking(move || writer.write(&data).map(|()| writer))
            .await
            .or_err(ErrorType::InternalError, "cache write")?
            .map_err(|e| internal(format!("cache: {e}")))?;
        self.writer = Some(writer);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        let writer = self
            .writer
            .take()
            .ok_or_else(|| internal("cache: finished after an error".into()))?;
        let meta = std::mem::take(&mut self.meta);
        let size = tokio::task::spawn_blocking(move || writer.commit_with(Some(&meta)))
            .await
            .or_err(ErrorType::InternalError, "cache commit")?
            .map_err(|e| internal(format!("cache: {e}")))?;
        Ok(MissFinishType::Created(
            usize::try_from(size).unwrap_or(usize::MAX),
        ))
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

    fn meta(content_type: &str) -> CacheMeta {
        let mut header = ResponseHeader::build(200, None).unwrap_or_else(|e| panic!("{e}"));
        header
            .insert_header("content-type", content_type)
            .unwrap_or_else(|e| panic!("{e}"));
        let now = SystemTime::now();
        CacheMeta::new(now + Duration::from_secs(3600), now, 0, 0, header)
    }

    async fn fill(s: &'static DiskStorage, key: &CacheKey, body: &[u8]) -> Result<MissFinishType> {
        let mut miss = s
            .get_miss_handler(key, &meta("application/octet-stream"), &span())
            .await?;
        for chunk in body.chunks(5) {
            miss.write_body(Bytes::copy_from_slice(chunk), false)
                .await?;
        }
        miss.finish().await
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
            .get_miss_handler(&path, &meta("text/plain"), &span())
            .await
            .is_err());
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
}
