//! The tiered store: a read cache RAM -> disk -> CDN -> origin.
//!
//! Reads take the first tier that holds the object, and a hit fills the tiers
//! above it. Writes go to the origin, then invalidate RAM and disk. Concurrent
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
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared};

use crate::error::StoreError;
use crate::key::{Key, Prefix};
use crate::local::LocalStore;
use crate::object::{Deadline, ObjectMeta, PutOptions};
use crate::s3::S3Store;
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
}

/// Where the truth lives.
pub enum Origin {
    Local(Arc<LocalStore>),
    S3(Arc<S3Store>),
}

/// Runs blocking file I/O off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Panic(e.to_string()))?
}

impl Origin {
    async fn get(&self, key: &str, timeout: Duration) -> Result<(Bytes, ObjectMeta), StoreError> {
        match self {
            Origin::Local(store) => {
                let (store, key) = (store.clone(), key.to_string());
                blocking(move || {
                    let (body, meta) =
                        store.get(Key::parse(key.as_bytes())?, Deadline::after(timeout))?;
                    Ok((Bytes::from(body), meta))
                })
                .await
            }
            Origin::S3(store) => store.get(Key::parse(key.as_bytes())?).await,
        }
    }

    async fn head(&self, key: &str, timeout: Duration) -> Result<ObjectMeta, StoreError> {
        match self {
            Origin::Local(store) => {
                let (store, key) = (store.clone(), key.to_string());
                blocking(move || store.head(Key::parse(key.as_bytes())?, Deadline::after(timeout)))
                    .await
            }
            Origin::S3(store) => store.head(Key::parse(key.as_bytes())?).await,
        }
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        opts: PutOptions,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        match self {
            Origin::Local(store) => {
                let (store, key) = (store.clone(), key.to_string());
                blocking(move || {
                    let key = Key::parse(key.as_bytes())?;
                    store.put(key, &body, &opts, Deadline::after(timeout))
                })
                .await
            }
            Origin::S3(store) => {
                store
                    .put(Key::parse(key.as_bytes())?, body, &opts.condition)
                    .await
            }
        }
    }

    async fn delete(&self, key: &str, durable: bool, timeout: Duration) -> Result<(), StoreError> {
        match self {
            Origin::Local(store) => {
                let (store, key) = (store.clone(), key.to_string());
                blocking(move || {
                    store.delete(
                        Key::parse(key.as_bytes())?,
                        durable,
                        Deadline::after(timeout),
                    )
                })
                .await
            }
            Origin::S3(store) => store.delete(Key::parse(key.as_bytes())?).await,
        }
    }

    async fn list(&self, prefix: &str, timeout: Duration) -> Result<Vec<String>, StoreError> {
        match self {
            Origin::Local(store) => {
                let (store, prefix) = (store.clone(), prefix.to_string());
                blocking(move || {
                    store.list(Prefix::parse(prefix.as_bytes())?, Deadline::after(timeout))
                })
                .await
            }
            Origin::S3(store) => store.list(Prefix::parse(prefix.as_bytes())?).await,
        }
    }
}

/// The cache settings; a zero budget turns a tier off.
#[derive(Debug, Clone)]
pub struct TieredConfig {
    pub memory_max_bytes: u64,
    pub disk_path: PathBuf,
    pub disk_max_bytes: u64,
    pub cdn_base_url: Option<String>,
    pub cdn_timeout: Duration,
}

type Found<V> = (V, ObjectMeta);
type Flight<V> = Shared<BoxFuture<'static, Result<Found<V>, StoreError>>>;

const STRIPES: usize = 64;

/// The tiered store.
pub struct TieredStore<V: Value> {
    memory: Option<MemoryTier<V>>,
    disk: Option<Arc<DiskTier>>,
    cdn: Option<Cdn>,
    origin: Origin,
    writes: Mutex<WriteLog>,
    stripes: Box<[Mutex<()>]>,
    stripe_hasher: std::collections::hash_map::RandomState,
    flights: Mutex<HashMap<String, (u64, Flight<V>)>>,
    next_flight: AtomicU64,
    origin_fetches: AtomicU64,
    merged: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<V: Value> TieredStore<V> {
    /// Builds the tiers (the disk tier scans its directory).
    pub fn new(cfg: TieredConfig, origin: Origin) -> Result<Self, StoreError> {
        let memory =
            (cfg.memory_max_bytes > 0).then(|| MemoryTier::new(cfg.memory_max_bytes as usize));
        let disk = if cfg.disk_max_bytes > 0 {
            Some(DiskTier::open(&cfg.disk_path, cfg.disk_max_bytes)?)
        } else {
            None
        };
        let cdn = match &cfg.cdn_base_url {
            Some(url) => Some(Cdn::new(url, cfg.cdn_timeout)?),
            None => None,
        };
        Ok(TieredStore {
            memory,
            disk,
            cdn,
            origin,
            writes: Mutex::new(WriteLog::new(write_log::CAPACITY)),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            stripe_hasher: Default::default(),
            flights: Mutex::new(HashMap::new()),
            next_flight: AtomicU64::new(0),
            origin_fetches: AtomicU64::new(0),
            merged: AtomicU64::new(0),
        })
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

    /// A disk hit read straight into `buf`: returns the epoch noted before
    /// reading (for `fill_memory`) and the metadata. Blocking file I/O.
    pub fn get_disk_into<B: crate::local::ReadBuf>(
        &self,
        key: &str,
        buf: &mut B,
    ) -> Option<(u64, ObjectMeta)> {
        let disk = self.disk.as_ref()?;
        let start = lock(&self.writes).epoch();
        let meta = disk.get_into(key, buf)?;
        Some((start, meta))
    }

    /// True when the RAM tier is on.
    pub fn has_memory(&self) -> bool {
        self.memory.is_some()
    }

    /// Puts a value read from disk into RAM, unless written since `start`.
    pub fn fill_memory(&self, key: &str, start: u64, value: V, meta: ObjectMeta) {
        self.fill(key, start, value, meta, false);
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
        key: &str,
        timeout: Duration,
    ) -> Result<ObjectMeta, StoreError> {
        if let Some(cdn) = self.cdn_for(key) {
            if let Some(meta) = cdn.head(key).await {
                return Ok(meta);
            }
        }
        self.origin.head(key, timeout).await
    }

    fn cdn_for(&self, key: &str) -> Option<&Cdn> {
        let cdn = self.cdn.as_ref()?;
        (!lock(&self.writes).contains(key)).then_some(cdn)
    }

    /// A miss in RAM and disk: the CDN or the origin, one flight per key.
    pub async fn fetch(
        self: &Arc<Self>,
        key: &str,
        timeout: Duration,
    ) -> Result<Found<V>, StoreError> {
        let flight = {
            let mut flights = lock(&self.flights);
            match flights.get(key) {
                Some((_, flight)) => {
                    self.merged.fetch_add(1, Ordering::Relaxed);
                    flight.clone()
                }
                None => {
                    let id = self.next_flight.fetch_add(1, Ordering::Relaxed);
                    let flight = self.start_flight(key.to_string(), id, timeout);
                    flights.insert(key.to_string(), (id, flight.clone()));
                    flight
                }
            }
        };
        flight.await
    }

    /// The fetch runs in its own task: a caller that gives up or dies does
    /// not cancel it for the others waiting on it.
    fn start_flight(self: &Arc<Self>, key: String, id: u64, timeout: Duration) -> Flight<V> {
        let store = self.clone();
        let task = tokio::spawn(async move {
            let result = tokio::time::timeout(timeout, store.fetch_uncached(&key, timeout))
                .await
                .unwrap_or(Err(StoreError::Timeout));
            let mut flights = lock(&store.flights);
            if matches!(flights.get(&key), Some((fid, _)) if *fid == id) {
                flights.remove(&key);
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
        key: &str,
        timeout: Duration,
    ) -> Result<Found<V>, StoreError> {
        let start = lock(&self.writes).epoch();
        // A flight that starts just after another ended finds its fill here,
        // so merged misses never reach the origin twice.
        if let Some((value, Some(meta))) = self
            .memory
            .as_ref()
            .and_then(|m| m.lookup(key, true, false))
        {
            return Ok((value, meta));
        }
        if self.disk.is_some() {
            let (store, k) = (self.clone(), key.to_string());
            if let Ok(Some(found)) =
                tokio::task::spawn_blocking(move || store.read_disk(&k, false)).await
            {
                return Ok(found);
            }
        }
        let from_cdn = match self.cdn_for(key) {
            Some(cdn) => cdn.get(key).await,
            None => None,
        };
        let (bytes, meta) = match from_cdn {
            Some(found) => found,
            None => {
                self.origin_fetches.fetch_add(1, Ordering::Relaxed);
                self.origin.get(key, timeout).await?
            }
        };
        let value = V::from_bytes(bytes);
        let store = self.clone();
        let (k, v, m) = (key.to_string(), value.clone(), meta.clone());
        // The disk write is file I/O: off the async workers.
        let _ = tokio::task::spawn_blocking(move || store.fill(&k, start, v, m, true)).await;
        Ok((value, meta))
    }

    /// Puts `value` in RAM (and on disk when `to_disk`) unless the key was
    /// written since `start`.
    fn fill(&self, key: &str, start: u64, value: V, meta: ObjectMeta, to_disk: bool) {
        let staged = match (&self.disk, to_disk) {
            (Some(disk), true) => disk.stage(key, value.as_bytes(), &meta),
            _ => None,
        };
        let _stripe = self.stripe(key);
        if lock(&self.writes).written_since(key, start) {
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

    /// Writes to the origin, then invalidates the caches (also after an
    /// error: the write may have happened).
    pub async fn put(
        &self,
        key: &str,
        body: Bytes,
        opts: PutOptions,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let result = self.origin.put(key, body, opts, timeout).await;
        if !matches!(result, Err(StoreError::PreconditionFailed)) {
            self.invalidate(key);
        }
        result
    }

    /// Deletes at the origin, then invalidates the caches.
    pub async fn delete(
        &self,
        key: &str,
        durable: bool,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let result = self.origin.delete(key, durable, timeout).await;
        self.invalidate(key);
        result
    }

    /// Lists at the origin.
    pub async fn list(&self, prefix: &str, timeout: Duration) -> Result<Vec<String>, StoreError> {
        self.origin.list(prefix, timeout).await
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
