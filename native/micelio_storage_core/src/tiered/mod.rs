//! The tiered store: a read cache RAM -> disk -> CDN -> origin.
//!
//! Reads take the first tier that holds the object, and a hit fills the tiers
//! above it. Writes drop cached copies before and after the origin write (see
//! `write_through`), and old copies are revalidated (see `revalidate`). Concurrent
//! misses for one key share one fetch ("flight").
//!
//! Staleness is ruled out with a write log: every put or delete records the
//! key with a new epoch. A fetch notes the epoch when it starts and fills the
//! caches only if the key was not written since; the check and the fill run
//! under the key's stripe lock, as does the invalidation, so one never
//! interleaves with the other. Recently written keys also skip the CDN, which
//! may still serve the old content.

pub mod cdn;
pub mod disk;
pub mod memory;
mod write_log;

use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared};

use crate::error::StoreError;
use crate::key::{Key, Prefix};
use crate::object::{Body, BodyBuf, Deadline, NativeBody, Object, ObjectMeta};
use crate::store::{
    ByteRange, CopyOptions, DeleteManyOutcome, DeleteOptions, GetOptions, HeadOptions, ListOptions,
    PresignOptions, PutOptions, SharedStore, Store,
};
use crate::transfer::{self, ByteSource, ByteStream, Transfer};
use cdn::Cdn;
use disk::DiskTier;
use memory::MemoryTier;
use write_log::WriteLog;

/// A cached value: `Bytes` here; the NIF layer stores a BEAM-ready handle.
pub trait Value: Clone + Send + Sync + 'static {
    /// Wraps fetched bytes (no copy).
    fn from_bytes(bytes: Bytes) -> Self;
    /// The content.
    fn as_bytes(&self) -> &[u8];
    /// The value as the body of a GET answer.
    fn into_body(self) -> Body;
    /// Its length.
    fn len(&self) -> usize {
        self.as_bytes().len()
    }
    /// True when empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Value for Bytes {
    fn from_bytes(bytes: Bytes) -> Self {
        bytes
    }
    fn as_bytes(&self) -> &[u8] {
        self
    }
    fn into_body(self) -> Body {
        Body::Bytes(self)
    }
}

/// When a write hook is called: as a write starts, and once it is done
/// (applied or failed) and this node's copies are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePhase {
    Started,
    Done,
}

/// Told of the keys of every write. Called on the write's own task (a
/// tokio thread) for `Done`, on the caller's for `Started`.
pub type WriteHook = Box<dyn Fn(WritePhase, &[Key]) + Send + Sync>;

/// A cached value handed out as a body, for values that are not `Bytes`.
pub struct CachedBody<V>(pub V);

impl<V: Value> NativeBody for CachedBody<V> {
    fn as_slice(&self) -> &[u8] {
        self.0.as_bytes()
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

/// The cache settings; a zero budget turns a tier off.
#[derive(Debug, Clone)]
pub struct TieredConfig {
    /// `cache_memory_max_bytes`.
    pub memory_max_bytes: u64,
    /// `cache_memory_max_object_bytes`.
    pub memory_max_object_bytes: u64,
    /// `cache_disk_path`.
    pub disk_path: PathBuf,
    /// `cache_disk_max_bytes`.
    pub disk_max_bytes: u64,
    /// `cache_disk_max_object_bytes`.
    pub disk_max_object_bytes: u64,
    /// `cdn_base_url`.
    pub cdn_base_url: Option<String>,
    /// `cdn_timeout_ms`.
    pub cdn_timeout: Duration,
    /// `cache_revalidate_after_ms`: older copies are checked with the
    /// origin before they are served (`None`: never).
    pub revalidate_after: Option<Duration>,
}

impl TieredConfig {
    /// Reads the cache settings.
    pub fn from_settings(s: &crate::settings::Settings) -> Result<Self, StoreError> {
        Ok(TieredConfig {
            memory_max_bytes: s.int("cache_memory_max_bytes")?,
            memory_max_object_bytes: s.int("cache_memory_max_object_bytes")?,
            disk_path: s.path("cache_disk_path")?,
            disk_max_bytes: s.int("cache_disk_max_bytes")?,
            disk_max_object_bytes: s.int("cache_disk_max_object_bytes")?,
            cdn_base_url: s.text("cdn_base_url")?,
            cdn_timeout: s.millis("cdn_timeout_ms")?,
            revalidate_after: Some(s.millis("cache_revalidate_after_ms")?),
        })
    }
}

type Found<V> = (V, ObjectMeta);

/// Proof of when a read began (its write epoch), for the fill that follows
/// it. Opaque: the epoch protocol stays inside this module.
#[derive(Debug, Clone, Copy)]
pub struct FillTicket(u64);
type Flight<V> = Shared<BoxFuture<'static, Result<Found<V>, StoreError>>>;

const STRIPES: usize = 64;

/// The tiered store.
pub struct TieredStore<V: Value> {
    me: Weak<TieredStore<V>>,
    memory: Option<MemoryTier<V>>,
    disk: Option<Arc<DiskTier>>,
    cdn: Option<Cdn>,
    origin: SharedStore,
    writes: Mutex<WriteLog>,
    stripes: Box<[Mutex<()>]>,
    stripe_hasher: std::collections::hash_map::RandomState,
    flights: Mutex<HashMap<String, (u64, Flight<V>)>>,
    /// Keys with a write in flight: no fill may cache them meanwhile.
    pending: Mutex<HashMap<String, u32>>,
    /// Told of every write, when it starts and when it is done (cross-node
    /// invalidation listens here).
    write_hook: std::sync::RwLock<Option<WriteHook>>,
    next_flight: AtomicU64,
    origin_fetches: AtomicU64,
    /// Revalidations asked of the origin, and those that found no change.
    revalidations: AtomicU64,
    unchanged: AtomicU64,
    merged: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<V: Value> TieredStore<V> {
    /// Builds the tiers (the disk tier scans its directory) over any origin.
    pub fn new(cfg: TieredConfig, origin: SharedStore) -> Result<Arc<Self>, StoreError> {
        let fresh_for_ms = cfg
            .revalidate_after
            .map_or(u64::MAX, |d| d.as_millis() as u64);
        let memory = (cfg.memory_max_bytes > 0).then(|| {
            MemoryTier::new(
                cfg.memory_max_bytes as usize,
                cfg.memory_max_object_bytes as usize,
            )
            .with_freshness(fresh_for_ms)
        });
        let disk = if cfg.disk_max_bytes > 0 {
            Some(DiskTier::open(
                &cfg.disk_path,
                cfg.disk_max_bytes,
                cfg.disk_max_object_bytes,
            )?)
        } else {
            None
        };
        if let Some(disk) = &disk {
            disk.set_freshness(fresh_for_ms);
        }
        let cdn = match &cfg.cdn_base_url {
            Some(url) => Some(Cdn::new(url, cfg.cdn_timeout)?),
            None => None,
        };
        Ok(Arc::new_cyclic(|me| TieredStore {
            me: me.clone(),
            memory,
            disk,
            cdn,
            origin,
            writes: Mutex::new(WriteLog::new(write_log::CAPACITY)),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            stripe_hasher: Default::default(),
            flights: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            write_hook: std::sync::RwLock::new(None),
            next_flight: AtomicU64::new(0),
            origin_fetches: AtomicU64::new(0),
            revalidations: AtomicU64::new(0),
            unchanged: AtomicU64::new(0),
            merged: AtomicU64::new(0),
        }))
    }

    fn shared(&self) -> Arc<Self> {
        self.me
            .upgrade()
            .expect("a tiered store is only used through its Arc")
    }

    fn stripe(&self, key: &str) -> MutexGuard<'_, ()> {
        let i = self.stripe_hasher.hash_one(key) as usize % STRIPES;
        lock(&self.stripes[i])
    }

    /// A RAM hit, or `None`. Never blocks on I/O.
    pub fn get_memory(&self, key: &str, with_meta: bool) -> Option<(V, Option<ObjectMeta>)> {
        self.memory.as_ref()?.get(key, with_meta)
    }

    /// A RAM hit handed to `f` under the shard lock (no clone of the value).
    /// `key` is raw bytes: only valid keys are ever cached, so a hit needs
    /// no validation, and a miss tells nothing about validity.
    pub fn get_memory_with<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(&V, &ObjectMeta) -> R,
    ) -> Option<R> {
        self.memory.as_ref()?.get_with(key, true, f)
    }

    /// A disk hit (which fills RAM), or `None`. Blocking file I/O.
    pub fn get_disk(&self, key: &str) -> Option<Found<V>> {
        self.read_disk(key, true)
    }

    /// A disk hit read straight into `buf`: the metadata, and the ticket
    /// that lets `fill_memory` put the value in RAM unless the key was
    /// written meanwhile. Blocking file I/O.
    pub fn get_disk_into<B: BodyBuf + ?Sized>(
        &self,
        key: &str,
        buf: &mut B,
    ) -> Option<(FillTicket, ObjectMeta)> {
        let disk = self.disk.as_ref()?;
        let start = lock(&self.writes).epoch();
        let meta = disk.get_into(key, buf)?;
        Some((FillTicket(start), meta))
    }

    /// True when the RAM tier is on.
    pub fn has_memory(&self) -> bool {
        self.memory.is_some()
    }

    /// Puts a value read from disk into RAM, unless the key was written
    /// since the read that gave `ticket`.
    pub fn fill_memory(&self, key: &str, ticket: FillTicket, value: V, meta: ObjectMeta) {
        self.fill(key, ticket.0, value, meta, false);
    }

    fn read_disk(&self, key: &str, count_miss: bool) -> Option<Found<V>> {
        let disk = self.disk.as_ref()?;
        let start = lock(&self.writes).epoch();
        let (bytes, meta) = if count_miss {
            disk.get(key)?
        } else {
            disk.probe(key)?
        };
        let value = V::from_bytes(bytes);
        self.fill(key, start, value.clone(), meta.clone(), false);
        Some((value, meta))
    }

    /// Metadata from RAM or disk, or `None`. Blocking file I/O.
    pub fn head_local(&self, key: &str) -> Option<ObjectMeta> {
        if let Some(meta) = self.memory.as_ref().and_then(|m| m.head(key)) {
            return Some(meta);
        }
        self.disk.as_ref()?.head(key)
    }

    /// Metadata from the CDN, else the origin.
    pub async fn head_remote(
        &self,
        key: &Key,
        deadline: Deadline,
    ) -> Result<ObjectMeta, StoreError> {
        if let Some(cdn) = self.cdn_for(key.as_str()) {
            if let Some(meta) = cdn.head(key.as_str()).await {
                return Ok(meta);
            }
        }
        self.origin
            .head(key, &HeadOptions::default(), deadline)
            .await
    }

    fn cdn_for(&self, key: &str) -> Option<&Cdn> {
        let cdn = self.cdn.as_ref()?;
        (!lock(&self.writes).contains(key)).then_some(cdn)
    }

    /// A miss in RAM and disk: the CDN or the origin, one flight per key.
    pub async fn fetch(&self, key: &Key, deadline: Deadline) -> Result<Found<V>, StoreError> {
        let flight = {
            let mut flights = lock(&self.flights);
            match flights.get(key.as_str()) {
                Some((_, flight)) => {
                    self.merged.fetch_add(1, Ordering::Relaxed);
                    flight.clone()
                }
                None => {
                    let id = self.next_flight.fetch_add(1, Ordering::Relaxed);
                    let flight = self.start_flight(key.clone(), id, deadline);
                    flights.insert(key.as_str().to_string(), (id, flight.clone()));
                    flight
                }
            }
        };
        flight.await
    }

    /// The fetch runs in its own task: a caller that gives up or dies does
    /// not cancel it for the others waiting on it.
    fn start_flight(&self, key: Key, id: u64, deadline: Deadline) -> Flight<V> {
        let store = self.shared();
        let task = tokio::spawn(async move {
            let result =
                tokio::time::timeout(deadline.remaining(), store.fetch_uncached(&key, deadline))
                    .await
                    .unwrap_or(Err(StoreError::Timeout));
            let mut flights = lock(&store.flights);
            if matches!(flights.get(key.as_str()), Some((fid, _)) if *fid == id) {
                flights.remove(key.as_str());
            }
            result
        });
        async move {
            task.await
                .unwrap_or_else(|e| Err(StoreError::Panic(e.to_string())))
        }
        .boxed()
        .shared()
    }

    async fn fetch_uncached(
        self: &Arc<Self>,
        key: &Key,
        deadline: Deadline,
    ) -> Result<Found<V>, StoreError> {
        let key_str = key.as_str();
        let start = lock(&self.writes).epoch();
        // A flight that starts just after another ended finds its fill here,
        // so merged misses never reach the origin twice.
        if let Some((value, Some(meta))) = self
            .memory
            .as_ref()
            .and_then(|m| m.lookup(key_str, true, false))
        {
            return Ok((value, meta));
        }
        if self.disk.is_some() {
            let (store, k) = (self.clone(), key_str.to_string());
            if let Ok(Some(found)) =
                tokio::task::spawn_blocking(move || store.read_disk(&k, false)).await
            {
                return Ok(found);
            }
        }
        if let Some(found) = self.revalidate(key, start, deadline).await? {
            return Ok(found);
        }
        let from_cdn = match self.cdn_for(key_str) {
            Some(cdn) => cdn.get(key_str).await,
            None => None,
        };
        let (bytes, meta) = match from_cdn {
            Some(found) => found,
            None => {
                self.origin_fetches.fetch_add(1, Ordering::Relaxed);
                self.origin
                    .get(key, &GetOptions::default(), deadline)
                    .await?
                    .into_bytes()
            }
        };
        let value = V::from_bytes(bytes);
        let store = self.clone();
        let (k, v, m) = (key_str.to_string(), value.clone(), meta.clone());
        // The disk write is file I/O: off the async workers.
        let _ = tokio::task::spawn_blocking(move || store.fill(&k, start, v, m, true)).await;
        Ok((value, meta))
    }

    /// A copy past `cache_revalidate_after_ms`: asks the origin whether it
    /// changed (`If-None-Match` with its ETag on S3, a stat on local). An
    /// unchanged copy is served and kept, its age reset; a changed one is
    /// replaced. `None` when there is no such copy.
    async fn revalidate(
        self: &Arc<Self>,
        key: &Key,
        start: u64,
        deadline: Deadline,
    ) -> Result<Option<Found<V>>, StoreError> {
        let key_str = key.as_str();
        let mut stale = self.memory.as_ref().and_then(|m| m.lookup_any(key_str));
        if stale.is_none() && self.disk.is_some() {
            let (store, k) = (self.clone(), key_str.to_string());
            stale = tokio::task::spawn_blocking(move || {
                let (bytes, meta) = store.disk.as_ref()?.probe_any(&k)?;
                Some((V::from_bytes(bytes), meta))
            })
            .await
            .ok()
            .flatten();
        }
        let Some((value, meta)) = stale else {
            return Ok(None);
        };
        let opts = GetOptions {
            if_none_match: Some(meta.etag.clone()),
            ..GetOptions::default()
        };
        self.revalidations.fetch_add(1, Ordering::Relaxed);
        match self.origin.get(key, &opts, deadline).await {
            Err(StoreError::NotModified) => {
                self.unchanged.fetch_add(1, Ordering::Relaxed);
                let (store, k) = (self.clone(), key_str.to_string());
                let _ = tokio::task::spawn_blocking(move || store.refresh(&k, start)).await;
                Ok(Some((value, meta)))
            }
            Ok(object) => {
                self.origin_fetches.fetch_add(1, Ordering::Relaxed);
                let (bytes, meta) = object.into_bytes();
                let value = V::from_bytes(bytes);
                let store = self.clone();
                let (k, v, m) = (key_str.to_string(), value.clone(), meta.clone());
                let _ =
                    tokio::task::spawn_blocking(move || store.fill(&k, start, v, m, true)).await;
                Ok(Some((value, meta)))
            }
            Err(StoreError::NotFound) => {
                self.invalidate(key_str);
                Err(StoreError::NotFound)
            }
            Err(e) => Err(e),
        }
    }

    /// Resets the age of the copies of `key` after a revalidation, unless
    /// the key was written meanwhile.
    fn refresh(&self, key: &str, start: u64) {
        let _stripe = self.stripe(key);
        if lock(&self.pending).contains_key(key) || lock(&self.writes).written_since(key, start) {
            return;
        }
        if let Some(memory) = &self.memory {
            memory.touch(key);
        }
        if let Some(disk) = &self.disk {
            disk.touch_fresh(key);
        }
    }

    /// Puts `value` in RAM (and on disk when `to_disk`) unless the key was
    /// written since `start`.
    fn fill(&self, key: &str, start: u64, value: V, meta: ObjectMeta, to_disk: bool) {
        let staged = match (&self.disk, to_disk) {
            (Some(disk), true) => disk.stage(key, value.as_bytes(), &meta),
            _ => None,
        };
        let _stripe = self.stripe(key);
        let writing = lock(&self.pending).contains_key(key);
        if writing || lock(&self.writes).written_since(key, start) {
            if let (Some(disk), Some(s)) = (&self.disk, staged) {
                disk.discard(s);
            }
            return;
        }
        if let Some(memory) = &self.memory {
            memory.insert(key, value, meta);
        }
        if let (Some(disk), Some(s)) = (&self.disk, staged) {
            disk.commit(s);
        }
    }

    /// Forgets every cached copy of `key` and any flight reading it.
    ///
    /// The write is recorded last: a reader that notes the new epoch must
    /// not be able to find the old copy any more. (Readers note the epoch
    /// without the stripe lock; fills check it under the lock.)
    pub fn invalidate(&self, key: &str) {
        let _stripe = self.stripe(key);
        if let Some(memory) = &self.memory {
            memory.remove(key);
        }
        if let Some(disk) = &self.disk {
            disk.remove(key);
        }
        lock(&self.flights).remove(key);
        lock(&self.writes).record(key);
    }

    /// Forgets every cached copy, for a node that was cut off from the
    /// others and may have missed their invalidations. Fills of reads in
    /// flight are refused too.
    pub fn invalidate_all(&self) {
        let _stripes: Vec<_> = self.stripes.iter().map(lock).collect();
        if let Some(memory) = &self.memory {
            memory.clear();
        }
        if let Some(disk) = &self.disk {
            disk.clear();
        }
        lock(&self.flights).clear();
        lock(&self.writes).record_all();
    }

    /// Sets the hook told of every write (see `WriteHook`).
    pub fn set_write_hook(&self, hook: WriteHook) {
        *self.write_hook.write().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    fn tell(&self, phase: WritePhase, keys: &[Key]) {
        let hook = self.write_hook.read().unwrap_or_else(|p| p.into_inner());
        if let Some(hook) = hook.as_ref() {
            hook(phase, keys);
        }
    }

    /// Runs an origin write so that no cached copy outlives it, whatever
    /// happens to the caller:
    /// - before the write, every copy of `keys` is dropped and the keys are
    ///   marked as being written, so no fill caches them until it is done (a
    ///   crash at any moment leaves no old copy on disk);
    /// - the write and the invalidation after it run in their own task: a
    ///   caller that times out or dies does not stop them.
    async fn write_through<T: Send + 'static>(
        &self,
        keys: Vec<Key>,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        for key in &keys {
            *lock(&self.pending)
                .entry(key.as_str().to_string())
                .or_insert(0) += 1;
            self.invalidate(key.as_str());
        }
        self.tell(WritePhase::Started, &keys);
        let store = self.shared();
        let task = tokio::spawn(async move {
            let result = work.await;
            for key in &keys {
                store.invalidate(key.as_str());
                let mut pending = lock(&store.pending);
                if let Some(n) = pending.get_mut(key.as_str()) {
                    *n -= 1;
                    if *n == 0 {
                        pending.remove(key.as_str());
                    }
                }
            }
            store.tell(WritePhase::Done, &keys);
            result
        });
        task.await
            .unwrap_or_else(|e| Err(StoreError::Panic(e.to_string())))
    }

    /// A stream of the object from the first tier that holds it: RAM, the
    /// disk tier (its CRC checked at the end), else the origin. A whole
    /// object small enough for the disk tier fills it as it streams.
    async fn stream(
        &self,
        key: &Key,
        opts: &GetOptions,
        xfer: &Transfer,
    ) -> Result<(ObjectMeta, ByteStream), StoreError> {
        let within = |meta: &ObjectMeta| {
            opts.range
                .unwrap_or(ByteRange {
                    offset: 0,
                    length: None,
                })
                .within(meta.size)
        };
        if let Some((value, Some(meta))) = self
            .memory
            .as_ref()
            .and_then(|m| m.lookup(key.as_str(), true, false))
        {
            let (start, end) = within(&meta);
            let body = Bytes::copy_from_slice(&value.as_bytes()[start as usize..end as usize]);
            return Ok((meta, transfer::chunked(body)));
        }
        let start_epoch = lock(&self.writes).epoch();
        if let Some(disk) = &self.disk {
            let (disk2, k) = (disk.clone(), key.as_str().to_string());
            let opened = tokio::task::spawn_blocking(move || disk2.open_body(&k))
                .await
                .ok()
                .flatten();
            if let Some((file, offset, meta, crc)) = opened {
                let range = within(&meta);
                let whole = range == (0, meta.size);
                let stream = disk_stream(
                    disk.clone(),
                    key.clone(),
                    file,
                    offset,
                    range,
                    whole.then_some(crc),
                );
                return Ok((meta, stream));
            }
        }
        self.origin_fetches.fetch_add(1, Ordering::Relaxed);
        let (meta, stream) = self.origin.get_stream(key, opts, xfer).await?;
        let fillable = opts.range.is_none()
            && self.disk.as_ref().is_some_and(|d| d.accepts(meta.size))
            && !lock(&self.pending).contains_key(key.as_str());
        if !fillable {
            return Ok((meta, stream));
        }
        let disk = self.disk.clone().expect("checked above");
        let (k, m) = (key.as_str().to_string(), meta.clone());
        let stage = tokio::task::spawn_blocking(move || disk.stage_stream(&k, &m))
            .await
            .ok()
            .flatten();
        let Some(stage) = stage else {
            return Ok((meta, stream));
        };
        Ok((meta, self.teeing(key.clone(), start_epoch, stream, stage)))
    }

    /// Passes `stream` on while writing it to a disk-tier stage, committed
    /// at the end unless the key was written since `start`.
    fn teeing(
        &self,
        key: Key,
        start: u64,
        stream: ByteStream,
        stage: disk::StreamStage,
    ) -> ByteStream {
        let store = self.shared();
        let state = (stream, Some(stage), store, key);
        Box::pin(futures_util::stream::unfold(
            state,
            move |(mut stream, stage, store, key)| async move {
                use futures_util::StreamExt;
                match stream.next().await {
                    Some(Ok(chunk)) => {
                        let stage = match stage {
                            Some(mut st) => {
                                let c = chunk.clone();
                                tokio::task::spawn_blocking(move || st.write(&c).then_some(st))
                                    .await
                                    .ok()
                                    .flatten()
                            }
                            None => None,
                        };
                        Some((Ok(chunk), (stream, stage, store, key)))
                    }
                    Some(Err(e)) => Some((Err(e), (stream, None, store, key))),
                    None => {
                        if let Some(st) = stage {
                            let (s2, k) = (store.clone(), key.clone());
                            let _ = tokio::task::spawn_blocking(move || {
                                if let Some(staged) = st.finish() {
                                    s2.fill_disk(k.as_str(), start, staged);
                                }
                            })
                            .await;
                        }
                        None
                    }
                }
            },
        ))
    }

    /// Commits a staged disk copy unless the key was written since `start`.
    fn fill_disk(&self, key: &str, start: u64, staged: disk::Staged) {
        let Some(disk) = &self.disk else { return };
        let _stripe = self.stripe(key);
        let writing = lock(&self.pending).contains_key(key);
        if writing || lock(&self.writes).written_since(key, start) {
            disk.discard(staged);
        } else {
            disk.commit(staged);
        }
    }

    /// Counters per tier: `(tier, [(name, value)])`.
    pub fn stats(&self) -> Vec<(&'static str, Vec<(&'static str, u64)>)> {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = Vec::new();
        if let Some(m) = &self.memory {
            let st = m.stats();
            out.push((
                "memory",
                vec![
                    ("hits", st.hits),
                    ("misses", st.misses),
                    ("evictions", st.evictions),
                    ("bytes", st.bytes),
                    ("entries", st.entries),
                    ("max_bytes", m.capacity() as u64),
                ],
            ));
        }
        if let Some(d) = &self.disk {
            out.push((
                "disk",
                vec![
                    ("hits", load(&d.counters.hits)),
                    ("misses", load(&d.counters.misses)),
                    ("evictions", load(&d.counters.evictions)),
                    ("bytes", d.bytes()),
                    ("entries", d.entries()),
                    ("max_bytes", d.capacity()),
                    ("corrupt", load(&d.corrupt)),
                ],
            ));
        }
        if let Some(cdn) = &self.cdn {
            out.push((
                "cdn",
                vec![
                    ("hits", load(&cdn.counters.hits)),
                    ("misses", load(&cdn.counters.misses)),
                    ("errors", load(&cdn.errors)),
                ],
            ));
        }
        out.push((
            "origin",
            vec![
                ("fetches", load(&self.origin_fetches)),
                ("revalidations", load(&self.revalidations)),
                ("revalidated_unchanged", load(&self.unchanged)),
                ("merged_waits", load(&self.merged)),
            ],
        ));
        out
    }

    /// Bytes the RAM tier charges now, ghosts included (for budget tests).
    pub fn memory_charged_bytes(&self) -> u64 {
        self.memory.as_ref().map_or(0, |m| m.charged_bytes() as u64)
    }
}

/// Writes go through `write_through`: this node's copies are dropped before
/// and after the origin write (also after an error, since the write may have
/// happened), and the write finishes even if its caller is gone.
#[async_trait]
impl<V: Value> Store for TieredStore<V> {
    fn backend(&self) -> &'static str {
        "tiered"
    }

    async fn get(
        &self,
        key: &Key,
        opts: &GetOptions,
        deadline: Deadline,
    ) -> Result<Object, StoreError> {
        if let Some(range) = opts.range {
            // A range is cut from a RAM copy, else asked of the origin.
            let hit = self
                .memory
                .as_ref()
                .and_then(|m| m.lookup(key.as_str(), true, false));
            if let Some((value, Some(meta))) = hit {
                let (start, end) = range.within(meta.size);
                let body = Bytes::copy_from_slice(&value.as_bytes()[start as usize..end as usize]);
                return Ok(Object {
                    body: Body::Bytes(body),
                    meta,
                });
            }
            return self.origin.get(key, opts, deadline).await;
        }
        // A miss is not counted here: the NIF layer's inline RAM read, in
        // front of this call, already counted it.
        let hit = self
            .memory
            .as_ref()
            .and_then(|m| m.lookup(key.as_str(), true, false));
        let (value, meta) = match hit {
            Some((value, Some(meta))) => (value, meta),
            _ => self.fetch(key, deadline).await?,
        };
        Ok(Object {
            body: value.into_body(),
            meta,
        })
    }

    async fn head(
        &self,
        key: &Key,
        _opts: &HeadOptions,
        deadline: Deadline,
    ) -> Result<ObjectMeta, StoreError> {
        let (store, k) = (self.shared(), key.as_str().to_string());
        let local = tokio::task::spawn_blocking(move || store.head_local(&k))
            .await
            .map_err(|e| StoreError::Panic(e.to_string()))?;
        match local {
            Some(meta) => Ok(meta),
            None => self.head_remote(key, deadline).await,
        }
    }

    async fn put(
        &self,
        key: &Key,
        body: Bytes,
        opts: &PutOptions,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        let (origin, k, opts) = (self.origin.clone(), key.clone(), opts.clone());
        self.write_through(vec![key.clone()], async move {
            origin.put(&k, body, &opts, deadline).await
        })
        .await
    }

    async fn list_page(
        &self,
        prefix: &Prefix,
        opts: &crate::store::PageOptions,
        deadline: Deadline,
    ) -> Result<crate::store::Page, StoreError> {
        self.origin.list_page(prefix, opts, deadline).await
    }

    async fn list_level(
        &self,
        prefix: &Prefix,
        deadline: Deadline,
    ) -> Result<crate::store::Level, StoreError> {
        self.origin.list_level(prefix, deadline).await
    }

    /// The CDN's URL when one is configured, else the origin's.
    fn public_url(&self, key: &Key) -> Result<String, StoreError> {
        match &self.cdn {
            Some(cdn) => Ok(cdn.url(key.as_str())),
            None => self.origin.public_url(key),
        }
    }

    async fn incomplete_uploads(
        &self,
        deadline: Deadline,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.origin.incomplete_uploads(deadline).await
    }

    fn check_key(&self, key: &Key) -> Result<(), StoreError> {
        self.origin.check_key(key)
    }

    async fn abort_incomplete_uploads(
        &self,
        prefix: &Prefix,
        older_than: std::time::Duration,
        deadline: Deadline,
    ) -> Result<u64, StoreError> {
        self.origin
            .abort_incomplete_uploads(prefix, older_than, deadline)
            .await
    }

    async fn put_stream(
        &self,
        key: &Key,
        source: Box<dyn ByteSource>,
        opts: &PutOptions,
        xfer: &Transfer,
    ) -> Result<(), StoreError> {
        let (origin, k, opts, x) = (self.origin.clone(), key.clone(), opts.clone(), xfer.clone());
        self.write_through(vec![key.clone()], async move {
            origin.put_stream(&k, source, &opts, &x).await
        })
        .await
    }

    async fn put_file(
        &self,
        key: &Key,
        path: &std::path::Path,
        opts: &PutOptions,
        xfer: &Transfer,
    ) -> Result<(), StoreError> {
        let (origin, k, opts, x) = (self.origin.clone(), key.clone(), opts.clone(), xfer.clone());
        let path = path.to_path_buf();
        self.write_through(vec![key.clone()], async move {
            origin.put_file(&k, &path, &opts, &x).await
        })
        .await
    }

    async fn get_stream(
        &self,
        key: &Key,
        opts: &GetOptions,
        xfer: &Transfer,
    ) -> Result<(ObjectMeta, ByteStream), StoreError> {
        self.stream(key, opts, xfer).await
    }

    /// Cached copies and objects the disk tier takes are streamed (filling
    /// it); larger ones go straight from the origin (in parallel ranges on S3).
    async fn get_file(
        &self,
        key: &Key,
        path: &std::path::Path,
        opts: &GetOptions,
        xfer: &Transfer,
    ) -> Result<ObjectMeta, StoreError> {
        let cached = self
            .memory
            .as_ref()
            .is_some_and(|m| m.head(key.as_str()).is_some());
        if !cached && opts.range.is_none() {
            let (store, k) = (self.shared(), key.as_str().to_string());
            let on_disk = tokio::task::spawn_blocking(move || {
                store.disk.as_ref().and_then(|d| d.head(&k)).is_some()
            })
            .await
            .unwrap_or(false);
            if !on_disk {
                let meta = self
                    .origin
                    .head(key, &HeadOptions::default(), xfer.step())
                    .await?;
                if !self.disk.as_ref().is_some_and(|d| d.accepts(meta.size)) {
                    return self.origin.get_file(key, path, opts, xfer).await;
                }
            }
        }
        let (meta, stream) = self.stream(key, opts, xfer).await?;
        let (start, end) = opts
            .range
            .unwrap_or(ByteRange {
                offset: 0,
                length: None,
            })
            .within(meta.size);
        transfer::stream_to_file(stream, path, Some(end - start), xfer).await?;
        Ok(meta)
    }

    async fn delete(
        &self,
        key: &Key,
        opts: &DeleteOptions,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        let (origin, k, opts) = (self.origin.clone(), key.clone(), opts.clone());
        self.write_through(vec![key.clone()], async move {
            origin.delete(&k, &opts, deadline).await
        })
        .await
    }

    async fn list(
        &self,
        prefix: &Prefix,
        opts: &ListOptions,
        deadline: Deadline,
    ) -> Result<Vec<String>, StoreError> {
        self.origin.list(prefix, opts, deadline).await
    }

    async fn copy(
        &self,
        from: &Key,
        to: &Key,
        opts: &CopyOptions,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        let (origin, f, t, opts) = (self.origin.clone(), from.clone(), to.clone(), opts.clone());
        self.write_through(vec![to.clone()], async move {
            origin.copy(&f, &t, &opts, deadline).await
        })
        .await
    }

    async fn delete_many(
        &self,
        keys: &[Key],
        opts: &DeleteOptions,
        deadline: Deadline,
    ) -> Result<DeleteManyOutcome, StoreError> {
        let (origin, ks, opts) = (self.origin.clone(), keys.to_vec(), opts.clone());
        self.write_through(keys.to_vec(), async move {
            origin.delete_many(&ks, &opts, deadline).await
        })
        .await
    }

    async fn presigned_url(
        &self,
        key: &Key,
        opts: &PresignOptions,
        deadline: Deadline,
    ) -> Result<String, StoreError> {
        self.origin.presigned_url(key, opts, deadline).await
    }

    /// The origin, the disk tier and the CDN (when set) each answer.
    async fn health(&self, deadline: Deadline) -> Result<(), StoreError> {
        self.origin.health(deadline).await?;
        if let Some(disk) = &self.disk {
            let disk = disk.clone();
            tokio::task::spawn_blocking(move || disk.health())
                .await
                .map_err(|e| StoreError::Panic(e.to_string()))??;
        }
        if let Some(cdn) = &self.cdn {
            cdn.health().await?;
        }
        Ok(())
    }
}

/// A disk-tier copy read in chunks from `offset` (where its content starts);
/// with `crc`, the whole content is checked at the end and a bad copy is
/// dropped and reported `Corrupt`.
fn disk_stream(
    disk: Arc<DiskTier>,
    key: Key,
    file: std::fs::File,
    offset: u64,
    (start, end): (u64, u64),
    crc: Option<u32>,
) -> ByteStream {
    let file = Arc::new(file);
    let state = (start, crc32fast::Hasher::new());
    Box::pin(futures_util::stream::try_unfold(
        state,
        move |(at, mut hasher)| {
            let (file, disk, key) = (file.clone(), disk.clone(), key.clone());
            async move {
                if at >= end {
                    if let Some(expected) = crc {
                        if hasher.finalize() != expected {
                            let k = key.as_str().to_string();
                            let _ = tokio::task::spawn_blocking(move || disk.drop_key(&k)).await;
                            return Err(StoreError::Corrupt);
                        }
                    }
                    return Ok(None);
                }
                let want = ((end - at) as usize).min(transfer::CHUNK);
                let chunk = crate::store::offload(move || {
                    use std::os::unix::fs::FileExt;
                    let mut buf = bytes::BytesMut::zeroed(want);
                    file.read_exact_at(&mut buf, offset + at)
                        .map_err(|_| StoreError::Corrupt)?;
                    Ok(buf.freeze())
                })
                .await?;
                hasher.update(&chunk);
                let next = at + chunk.len() as u64;
                Ok(Some((chunk, (next, hasher))))
            }
        },
    ))
}
