//! Reads through the tiers: one flight per key fetches from the CDN or the
//! origin, revalidates old copies, and fills the tiers above the hit.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::future::FutureExt;

use super::cdn::Cdn;
use crate::error::StoreError;
use crate::key::Key;
use crate::object::{Deadline, ObjectMeta};
use crate::store::GetOptions;

use super::{lock, Flight, Found, TieredStore, Value};

impl<V: Value> TieredStore<V> {
    pub(super) fn cdn_for(&self, key: &str) -> Option<&Cdn> {
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
    pub(super) fn start_flight(&self, key: Key, id: u64, deadline: Deadline) -> Flight<V> {
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

    pub(super) async fn fetch_uncached(
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
    pub(super) async fn revalidate(
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
    pub(super) fn refresh(&self, key: &str, start: u64) {
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
    pub(super) fn fill(&self, key: &str, start: u64, value: V, meta: ObjectMeta, to_disk: bool) {
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
}
