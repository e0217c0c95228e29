//! The memory backend: objects in a map in RAM, for tests and ephemeral
//! data. Bounded by a byte budget (a put that would exceed it fails with
//! `{:io, :enospc}`, like a full disk), isolated per store instance, and
//! otherwise behaving like every other backend: it passes the same
//! conformance suite.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use crate::attributes::Attributes;
use crate::error::StoreError;
use crate::key::{Key, Prefix};
use crate::object::{bare_etag, Body, Deadline, Object, ObjectMeta};
use crate::settings::{Setting, Settings};
use crate::store::{
    Capabilities, CopyOptions, DeleteOptions, GetOptions, HeadOptions, ListOptions, PutCondition,
    PutOptions, Store,
};

/// A store in RAM.
#[derive(Debug)]
pub struct MemoryStore {
    objects: RwLock<Objects>,
    max_bytes: u64,
    next_etag: AtomicU64,
}

/// The map, and the bytes its contents take (kept in step under the lock).
#[derive(Debug, Default)]
struct Objects {
    map: BTreeMap<String, (Bytes, ObjectMeta)>,
    used: u64,
}

impl MemoryStore {
    /// An empty store holding at most `max_bytes` of content.
    pub fn new(max_bytes: u64) -> Self {
        MemoryStore {
            objects: RwLock::new(Objects::default()),
            max_bytes,
            next_etag: AtomicU64::new(1),
        }
    }

    /// Reads `memory_max_bytes` (`memory_name` only tells stores apart).
    pub fn from_settings(s: &Settings) -> Result<Self, StoreError> {
        Ok(MemoryStore::new(s.int(Setting::MemoryMaxBytes)?))
    }

    fn meta(&self, size: u64, attributes: Attributes) -> ObjectMeta {
        let n = self.next_etag.fetch_add(1, Ordering::Relaxed);
        ObjectMeta {
            size,
            etag: format!("{n:016x}"),
            last_modified_ns: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i128),
            attributes,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Objects> {
        self.objects.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Objects> {
        self.objects.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Inserts under the write lock, checking the condition and the budget.
    fn insert(
        &self,
        key: &Key,
        body: Bytes,
        condition: &PutCondition,
        attributes: Attributes,
    ) -> Result<(), StoreError> {
        let mut objects = self.write();
        let current = objects.map.get(key.as_str());
        match (condition, current) {
            (PutCondition::Always, _) => {}
            (PutCondition::IfNoneMatch, None) => {}
            (PutCondition::IfMatch(etag), Some((_, meta))) if meta.etag == bare_etag(etag) => {}
            _ => return Err(StoreError::PreconditionFailed),
        }
        let replaced = current.map_or(0, |(b, _)| b.len() as u64);
        let used = objects.used - replaced + body.len() as u64;
        if used > self.max_bytes {
            return Err(StoreError::Io(rustix::io::Errno::NOSPC.raw_os_error()));
        }
        let meta = self.meta(body.len() as u64, attributes);
        objects.map.insert(key.as_str().to_string(), (body, meta));
        objects.used = used;
        Ok(())
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            server_side_copy: true,
            ..Capabilities::default()
        }
    }

    // Every operation is a map access: done on the first poll.
    fn blocking(&self) -> bool {
        true
    }

    async fn get(
        &self,
        key: &Key,
        opts: &GetOptions,
        deadline: Deadline,
    ) -> Result<Object, StoreError> {
        deadline.check()?;
        let (body, meta) = self
            .read()
            .map
            .get(key.as_str())
            .cloned()
            .ok_or(StoreError::NotFound)?;
        if opts.if_none_match.as_deref().map(bare_etag) == Some(meta.etag.as_str()) {
            return Err(StoreError::NotModified);
        }
        let body = match opts.range {
            Some(range) => {
                let (start, end) = range.within(body.len() as u64);
                body.slice(start as usize..end as usize)
            }
            None => body,
        };
        Ok(Object {
            body: Body::Bytes(body),
            meta,
        })
    }

    async fn head(
        &self,
        key: &Key,
        _opts: &HeadOptions,
        deadline: Deadline,
    ) -> Result<ObjectMeta, StoreError> {
        deadline.check()?;
        self.read()
            .map
            .get(key.as_str())
            .map(|(_, meta)| meta.clone())
            .ok_or(StoreError::NotFound)
    }

    async fn put(
        &self,
        key: &Key,
        body: Bytes,
        opts: &PutOptions,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        deadline.check()?;
        // The caller's bytes may be a view into a BEAM binary: keep a copy
        // of our own, so the store never pins the caller's memory.
        let attributes = opts.attributes.clone().for_key(key.as_str());
        self.insert(
            key,
            Bytes::copy_from_slice(&body),
            &opts.condition,
            attributes,
        )
    }

    async fn delete(
        &self,
        key: &Key,
        _opts: &DeleteOptions,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        deadline.check()?;
        let mut objects = self.write();
        if let Some((body, _)) = objects.map.remove(key.as_str()) {
            objects.used -= body.len() as u64;
        }
        Ok(())
    }

    async fn list(
        &self,
        prefix: &Prefix,
        _opts: &ListOptions,
        deadline: Deadline,
    ) -> Result<Vec<String>, StoreError> {
        deadline.check()?;
        let objects = self.read();
        let start = prefix.as_str();
        Ok(objects
            .map
            .range(start.to_string()..)
            .take_while(|(k, _)| k.starts_with(start))
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn list_page(
        &self,
        prefix: &Prefix,
        opts: &crate::store::PageOptions,
        deadline: Deadline,
    ) -> Result<crate::store::Page, StoreError> {
        use std::ops::Bound;
        deadline.check()?;
        let objects = self.read();
        let start = prefix.as_str();
        let from = match &opts.cursor {
            Some(after) if after.as_str() >= start => Bound::Excluded(after.clone()),
            _ => Bound::Included(start.to_string()),
        };
        let limit = opts.limit.max(1);
        let mut keys: Vec<String> = objects
            .map
            .range((from, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(start))
            .take(limit + 1)
            .map(|(k, _)| k.clone())
            .collect();
        let more = keys.len() > limit;
        keys.truncate(limit);
        let next = more.then(|| keys.last().cloned()).flatten();
        Ok(crate::store::Page { keys, next })
    }

    async fn health(&self, deadline: Deadline) -> Result<(), StoreError> {
        deadline.check()
    }

    async fn copy(
        &self,
        from: &Key,
        to: &Key,
        opts: &CopyOptions,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        deadline.check()?;
        let condition = if opts.if_absent {
            PutCondition::IfNoneMatch
        } else {
            PutCondition::Always
        };
        let (body, meta) = self
            .read()
            .map
            .get(from.as_str())
            .cloned()
            .ok_or(StoreError::NotFound)?;
        self.insert(to, body, &condition, meta.attributes)
    }
}
