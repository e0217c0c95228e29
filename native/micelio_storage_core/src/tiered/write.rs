//! Writes through to the origin, and the invalidations around them.

use std::future::Future;

use crate::error::StoreError;
use crate::key::Key;

use super::{lock, TieredStore, Value, WriteHook, WritePhase};

impl<V: Value> TieredStore<V> {
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

    pub(super) fn tell(&self, phase: WritePhase, keys: &[Key]) {
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
    pub(super) async fn write_through<T: Send + 'static>(
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
}
