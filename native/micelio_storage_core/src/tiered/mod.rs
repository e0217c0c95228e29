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
mod fetch;
pub mod memory;
mod stats;
mod store;
mod stream;
mod write;
mod write_log;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{BoxFuture, Shared};

use crate::error::StoreError;
use crate::key::Key;
use crate::object::{Body, BodyBuf, Deadline, NativeBody, ObjectMeta};
use crate::settings::Setting;
use crate::store::{HeadOptions, SharedStore};
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
            memory_max_bytes: s.int(Setting::CacheMemoryMaxBytes)?,
            memory_max_object_bytes: s.int(Setting::CacheMemoryMaxObjectBytes)?,
            disk_path: s.path(Setting::CacheDiskPath)?,
            disk_max_bytes: s.int(Setting::CacheDiskMaxBytes)?,
            disk_max_object_bytes: s.int(Setting::CacheDiskMaxObjectBytes)?,
            cdn_base_url: s.text(Setting::CdnBaseUrl)?,
            cdn_timeout: s.millis(Setting::CdnTimeoutMs)?,
            revalidate_after: Some(s.millis(Setting::CacheRevalidateAfterMs)?),
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

    /// A disk hit as a file to send as it is (see `DiskTier::link_for_sending`).
    pub fn disk_file(&self, key: &str) -> Option<(std::path::PathBuf, u64, ObjectMeta)> {
        self.disk.as_ref()?.link_for_sending(key)
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
}
