//! The RAM tier: a byte-bounded S3-FIFO cache (Yang et al., SOSP '23).
//!
//! S3-FIFO keeps new entries in a small FIFO (10% of the bytes). An entry that
//! is read again while there moves to the main FIFO; one that is not is
//! dropped and only its key hash is remembered in a ghost FIFO, so a scan of
//! one-time keys passes through the small queue without flushing the hot set.
//! A hit only bumps a 2-bit counter: no list is relinked, so a hit costs a
//! hash lookup under an uncontended shard lock.
//!
//! The budget counts each entry's key, value and ETag plus `ENTRY_OVERHEAD`
//! for the map slot, queue slot and headers, and each ghost at `GHOST_OVERHEAD`.
//!
//! Keys are looked up as raw bytes: every cached key was validated when it
//! was inserted, so a hit needs no validation, and counters live in the
//! shard (under its lock) so schedulers never share a hot cache line.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use foldhash::fast::RandomState;

use super::Value;
use crate::object::ObjectMeta;

/// Bytes charged per entry beyond its key, value and ETag.
pub const ENTRY_OVERHEAD: usize = 160;
/// Bytes charged per remembered ghost key hash.
pub const GHOST_OVERHEAD: usize = 32;
/// Shards are at least this big, so large values still fit in one.
const MIN_SHARD_BYTES: usize = 8 << 20;
const MAX_SHARDS: usize = 16;
/// An entry above this share of a shard is never admitted (it would evict
/// too much), whatever the per-object limit says.
const MAX_ENTRY_SHARE: usize = 4;

/// What one entry costs against the budget.
pub fn charge(key: &str, value_len: usize, meta: &ObjectMeta) -> usize {
    key.len() + value_len + meta.etag.len() + ENTRY_OVERHEAD
}

struct Entry<V> {
    value: V,
    meta: ObjectMeta,
    /// When it was filled or last revalidated (`clock::now_ms`).
    filled_ms: u64,
    charge: usize,
    freq: u8,
    id: u64,
    in_main: bool,
}

type KeyBytes = Arc<[u8]>;

struct Shard<V> {
    map: HashMap<KeyBytes, Entry<V>, RandomState>,
    small: VecDeque<(KeyBytes, u64)>,
    main: VecDeque<(KeyBytes, u64)>,
    ghost: VecDeque<u64>,
    ghost_set: HashMap<u64, u32>,
    small_bytes: usize,
    main_bytes: usize,
    capacity: usize,
    next_id: u64,
    stats: ShardStats,
}

#[derive(Default, Clone, Copy)]
struct ShardStats {
    hits: u64,
    misses: u64,
    evictions: u64,
}

/// What the RAM tier reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub bytes: u64,
    pub entries: u64,
}

/// Hit and miss counters of the disk and CDN tiers (the RAM tier counts
/// per shard).
#[derive(Debug, Default)]
pub struct Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
}

impl Counters {
    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }
    pub fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }
}

/// The RAM tier: independent shards, each an S3-FIFO over its share of the bytes.
pub struct MemoryTier<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    hasher: RandomState,
    shard_capacity: usize,
    max_object: usize,
    /// Entries older than this must be revalidated before they are served.
    fresh_for_ms: u64,
}

impl<V: Value> MemoryTier<V> {
    /// A tier holding at most `max_bytes` (keys and bookkeeping included)
    /// and no object larger than `max_object` bytes. Shards are sized to hold
    /// at least four of the largest objects, so the limit holds up to a
    /// quarter of the budget.
    pub fn new(max_bytes: usize, max_object: usize) -> Self {
        let min_shard = MIN_SHARD_BYTES.max(max_object.saturating_mul(MAX_ENTRY_SHARE));
        let shards = (max_bytes / min_shard).clamp(1, MAX_SHARDS);
        let shard_capacity = max_bytes / shards;
        MemoryTier {
            shards: (0..shards)
                .map(|_| Mutex::new(Shard::new(shard_capacity)))
                .collect(),
            hasher: RandomState::default(),
            shard_capacity,
            max_object,
            fresh_for_ms: u64::MAX,
        }
    }

    /// Entries older than `ms` are not served until revalidated.
    pub fn with_freshness(mut self, ms: u64) -> Self {
        self.fresh_for_ms = ms;
        self
    }

    fn fresh(&self, e: &Entry<V>) -> bool {
        self.fresh_for_ms == u64::MAX
            || crate::clock::now_ms().saturating_sub(e.filled_ms) < self.fresh_for_ms
    }

    /// The entry of `key` even when it is due for revalidation (not counted).
    pub fn lookup_any(&self, key: &str) -> Option<(V, ObjectMeta)> {
        let shard = self.shard(key.as_bytes());
        shard
            .map
            .get(key.as_bytes())
            .map(|e| (e.value.clone(), e.meta.clone()))
    }

    /// Marks the entry of `key` as just revalidated.
    pub fn touch(&self, key: &str) {
        let mut shard = self.shard(key.as_bytes());
        if let Some(e) = shard.map.get_mut(key.as_bytes()) {
            e.filled_ms = crate::clock::now_ms();
        }
    }

    /// The largest object admitted, in bytes.
    pub fn max_object(&self) -> usize {
        self.max_object.min(self.shard_capacity / MAX_ENTRY_SHARE)
    }

    /// The byte budget.
    pub fn capacity(&self) -> usize {
        self.shard_capacity * self.shards.len()
    }

    fn shard(&self, key: &[u8]) -> MutexGuard<'_, Shard<V>> {
        let idx = (self.hasher.hash_one(key) >> 32) as usize % self.shards.len();
        // A poisoned shard is still consistent enough to serve: every
        // mutation keeps its byte counts in step with the map.
        self.shards[idx].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value (and metadata when asked) of `key`, counting a hit or a miss.
    pub fn get(&self, key: &str, with_meta: bool) -> Option<(V, Option<ObjectMeta>)> {
        self.lookup(key, with_meta, true)
    }

    /// Like `get`, but a miss is not counted (a re-check, not a read).
    pub fn lookup(
        &self,
        key: &str,
        with_meta: bool,
        count_miss: bool,
    ) -> Option<(V, Option<ObjectMeta>)> {
        self.get_with(key.as_bytes(), count_miss, |v, m| {
            (v.clone(), with_meta.then(|| m.clone()))
        })
    }

    /// Calls `f` on the entry of `key` while the shard is locked, so the
    /// caller can build its answer without cloning the value.
    pub fn get_with<R>(
        &self,
        key: &[u8],
        count_miss: bool,
        f: impl FnOnce(&V, &ObjectMeta) -> R,
    ) -> Option<R> {
        let mut guard = self.shard(key);
        let shard = &mut *guard;
        let fresh_for = self.fresh_for_ms;
        match shard.map.get_mut(key) {
            Some(e)
                if fresh_for == u64::MAX
                    || crate::clock::now_ms().saturating_sub(e.filled_ms) < fresh_for =>
            {
                e.freq = (e.freq + 1).min(3);
                shard.stats.hits += 1;
                Some(f(&e.value, &e.meta))
            }
            _ => {
                if count_miss {
                    shard.stats.misses += 1;
                }
                None
            }
        }
    }

    /// The metadata of `key`, without counting (heads are not reads).
    pub fn head(&self, key: &str) -> Option<ObjectMeta> {
        let shard = self.shard(key.as_bytes());
        shard
            .map
            .get(key.as_bytes())
            .filter(|e| self.fresh(e))
            .map(|e| e.meta.clone())
    }

    /// Inserts or replaces `key`; returns false if the value is too big to admit.
    pub fn insert(&self, key: &str, value: V, meta: ObjectMeta) -> bool {
        let charge = charge(key, value.len(), &meta);
        let key = key.as_bytes();
        let mut shard = self.shard(key);
        if value.len() > self.max_object || charge > self.shard_capacity / MAX_ENTRY_SHARE {
            shard.remove(key);
            return false;
        }
        shard.insert(key, value, meta, charge);
        true
    }

    /// Drops every entry (counters are kept).
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let stats = shard.stats;
            *shard = Shard::new(self.shard_capacity);
            shard.stats = stats;
        }
    }

    /// Drops `key` if present.
    pub fn remove(&self, key: &str) {
        self.shard(key.as_bytes()).remove(key.as_bytes());
    }

    /// Counters summed over the shards.
    pub fn stats(&self) -> MemoryStats {
        let mut out = MemoryStats::default();
        for s in self.shards.iter() {
            let s = s.lock().unwrap_or_else(|p| p.into_inner());
            out.hits += s.stats.hits;
            out.misses += s.stats.misses;
            out.evictions += s.stats.evictions;
            out.bytes += (s.small_bytes + s.main_bytes) as u64;
            out.entries += s.map.len() as u64;
        }
        out
    }

    /// Bytes charged now, ghosts included (for tests of the budget).
    pub fn charged_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(|p| p.into_inner());
                s.small_bytes + s.main_bytes + s.ghost.len() * GHOST_OVERHEAD
            })
            .sum()
    }
}

impl<V> Shard<V> {
    fn new(capacity: usize) -> Self {
        Shard {
            map: HashMap::default(),
            small: VecDeque::new(),
            main: VecDeque::new(),
            ghost: VecDeque::new(),
            ghost_set: HashMap::new(),
            small_bytes: 0,
            main_bytes: 0,
            capacity,
            next_id: 0,
            stats: ShardStats::default(),
        }
    }

    fn used(&self) -> usize {
        self.small_bytes + self.main_bytes + self.ghost.len() * GHOST_OVERHEAD
    }

    fn insert(&mut self, key: &[u8], value: V, meta: ObjectMeta, charge: usize) {
        let replaced = self.remove(key).is_some();
        // A key seen recently (a ghost) or being replaced goes straight to main.
        let to_main = replaced || self.forget_ghost(ghost_hash(key));
        while self.used() + charge > self.capacity {
            match self.evict_one() {
                Some(_) => self.stats.evictions += 1,
                None if self.pop_ghost() => {}
                None => break,
            }
        }
        let key: KeyBytes = Arc::from(key);
        let id = self.next_id;
        self.next_id += 1;
        if to_main {
            self.main.push_back((key.clone(), id));
            self.main_bytes += charge;
        } else {
            self.small.push_back((key.clone(), id));
            self.small_bytes += charge;
        }
        self.map.insert(
            key,
            Entry {
                value,
                meta,
                filled_ms: crate::clock::now_ms(),
                charge,
                freq: 0,
                id,
                in_main: to_main,
            },
        );
        self.compact();
    }

    fn remove(&mut self, key: &[u8]) -> Option<usize> {
        let e = self.map.remove(key)?;
        if e.in_main {
            self.main_bytes -= e.charge;
        } else {
            self.small_bytes -= e.charge;
        }
        Some(e.charge)
    }

    /// Evicts one entry, returning its charge; `None` if both queues are empty.
    fn evict_one(&mut self) -> Option<usize> {
        loop {
            if self.small.is_empty() && self.main.is_empty() {
                return None;
            }
            let from_small = self.main.is_empty()
                || (!self.small.is_empty()
                    && (self.small_bytes > self.capacity / 10 || self.main_bytes == 0));
            let queue = if from_small {
                &mut self.small
            } else {
                &mut self.main
            };
            let (key, id) = queue.pop_front().expect("checked non-empty");
            let live = matches!(self.map.get(&key), Some(e) if e.id == id);
            if !live {
                continue;
            }
            let e = self.map.get_mut(&key).expect("checked live");
            if from_small {
                if e.freq > 0 {
                    // Read again while new: promote.
                    e.freq = 0;
                    e.in_main = true;
                    self.small_bytes -= e.charge;
                    self.main_bytes += e.charge;
                    self.main.push_back((key, id));
                    continue;
                }
                let e = self.map.remove(&key).expect("checked live");
                self.small_bytes -= e.charge;
                self.remember_ghost(&key);
                return Some(e.charge);
            }
            if e.freq > 0 {
                // Second chance in main, as in CLOCK.
                e.freq -= 1;
                self.main.push_back((key, id));
                continue;
            }
            let e = self.map.remove(&key).expect("checked live");
            self.main_bytes -= e.charge;
            return Some(e.charge);
        }
    }

    fn remember_ghost(&mut self, key: &[u8]) {
        let h = ghost_hash(key);
        self.ghost.push_back(h);
        *self.ghost_set.entry(h).or_insert(0) += 1;
        // Remember about as many ghosts as main holds entries.
        let limit = self.map.len().max(16);
        while self.ghost.len() > limit {
            self.pop_ghost();
        }
    }

    /// True if `hash` was a ghost (it is forgotten now: the key is back).
    fn forget_ghost(&mut self, hash: u64) -> bool {
        self.ghost_set.remove(&hash).is_some()
    }

    fn pop_ghost(&mut self) -> bool {
        let Some(h) = self.ghost.pop_front() else {
            return false;
        };
        if let Some(n) = self.ghost_set.get_mut(&h) {
            *n -= 1;
            if *n == 0 {
                self.ghost_set.remove(&h);
            }
        }
        true
    }

    /// Drops stale queue slots left by removals once they outnumber live ones.
    fn compact(&mut self) {
        let live = self.map.len();
        if self.small.len() + self.main.len() <= 2 * live + 1024 {
            return;
        }
        let map = &self.map;
        let keep = |(k, id): &(KeyBytes, u64)| matches!(map.get(k), Some(e) if e.id == *id);
        self.small.retain(keep);
        self.main.retain(keep);
    }
}

fn ghost_hash(key: &[u8]) -> u64 {
    // Fixed seed: ghosts must be found again by the same key.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn meta(n: usize) -> ObjectMeta {
        ObjectMeta {
            size: n as u64,
            etag: "etag".into(),
            last_modified_ns: 1,
            attributes: Default::default(),
        }
    }

    fn put(t: &MemoryTier<Bytes>, key: &str, n: usize) -> bool {
        t.insert(key, Bytes::from(vec![0u8; n]), meta(n))
    }

    #[test]
    fn get_insert_remove() {
        let t = MemoryTier::<Bytes>::new(1 << 20, usize::MAX);
        assert!(t.get("a", false).is_none());
        assert!(put(&t, "a", 10));
        let (v, m) = t.get("a", true).unwrap();
        assert_eq!((v.len(), m.unwrap().size), (10, 10));
        assert!(put(&t, "a", 20), "replacing works");
        assert_eq!(t.get("a", false).unwrap().0.len(), 20);
        t.remove("a");
        assert!(t.get("a", false).is_none());
        let st = t.stats();
        assert_eq!((st.bytes, st.entries, st.hits, st.misses), (0, 0, 2, 2));
        assert!(
            !put(&t, "huge", 1 << 20),
            "an entry above a quarter of a shard is refused"
        );
    }

    #[test]
    fn budget_holds_under_random_sizes() {
        let cap = 256 * 1024;
        let t = MemoryTier::<Bytes>::new(cap, usize::MAX);
        let mut seed = 7u64;
        for i in 0..20_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = (seed >> 33) as usize % 20_000;
            put(&t, &format!("key-{}", (seed >> 20) % 3000), n);
            if i % 3 == 0 {
                t.get(&format!("key-{}", (seed >> 40) % 3000), false);
            }
            assert!(
                t.charged_bytes() <= cap,
                "charged {} > {cap}",
                t.charged_bytes()
            );
        }
        let counted = t.stats().bytes as usize;
        let ghosts = t.charged_bytes() - counted;
        assert!(ghosts.is_multiple_of(GHOST_OVERHEAD));
        assert!(t.stats().evictions > 0);
    }

    #[test]
    fn a_scan_does_not_flush_the_hot_set() {
        let t = MemoryTier::<Bytes>::new(200 * (1000 + ENTRY_OVERHEAD + 16), usize::MAX);
        for round in 0..3 {
            for k in 0..100 {
                let key = format!("hot-{k}");
                if t.get(&key, false).is_none() {
                    put(&t, &key, 1000);
                }
            }
            let _ = round;
        }
        for k in 0..5_000 {
            put(&t, &format!("scan-{k}"), 1000);
        }
        let hot = (0..100)
            .filter(|k| t.get(&format!("hot-{k}"), false).is_some())
            .count();
        assert!(hot >= 90, "only {hot} of 100 hot keys survived a scan");
    }
}
