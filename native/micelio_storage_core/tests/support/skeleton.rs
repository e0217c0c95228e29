//! A skeleton backend: the least a new backend writes to pass the whole
//! conformance suite. It implements the trait's five required operations
//! (get, head, put, delete, list) over a map; copies, batch deletes,
//! streams, files, pages, levels, health and presigning come from the
//! contract's defaults. A real backend adds its constructor from
//! `Settings`, one arm in `registry::open` and a settings block in
//! `Micelio.Storage.Settings` (see the README's "Adding a backend").

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use micelio_storage_core::error::StoreError;
use micelio_storage_core::key::{Key, Prefix};
use micelio_storage_core::object::{bare_etag, Body, Deadline, Object, ObjectMeta};
use micelio_storage_core::store::{
    DeleteOptions, GetOptions, HeadOptions, ListOptions, PutCondition, PutOptions, Store,
};

#[derive(Default)]
pub struct SkeletonStore {
    objects: Mutex<BTreeMap<String, (Bytes, ObjectMeta)>>,
    writes: Mutex<u64>,
}

impl SkeletonStore {
    fn found(&self, key: &Key) -> Result<(Bytes, ObjectMeta), StoreError> {
        let objects = self.objects.lock().unwrap();
        objects
            .get(key.as_str())
            .cloned()
            .ok_or(StoreError::NotFound)
    }
}

#[async_trait]
impl Store for SkeletonStore {
    fn backend(&self) -> &'static str {
        "skeleton"
    }

    async fn get(&self, key: &Key, opts: &GetOptions, _: Deadline) -> Result<Object, StoreError> {
        let (body, meta) = self.found(key)?;
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
        _: &HeadOptions,
        _: Deadline,
    ) -> Result<ObjectMeta, StoreError> {
        Ok(self.found(key)?.1)
    }

    async fn put(
        &self,
        key: &Key,
        body: Bytes,
        opts: &PutOptions,
        _: Deadline,
    ) -> Result<(), StoreError> {
        let mut objects = self.objects.lock().unwrap();
        let current = objects.get(key.as_str()).map(|(_, meta)| meta.etag.clone());
        match (&opts.condition, current) {
            (PutCondition::Always, _) | (PutCondition::IfNoneMatch, None) => {}
            (PutCondition::IfMatch(etag), Some(now)) if now == bare_etag(etag) => {}
            _ => return Err(StoreError::PreconditionFailed),
        }
        let mut writes = self.writes.lock().unwrap();
        *writes += 1;
        let meta = ObjectMeta {
            size: body.len() as u64,
            etag: format!("{:08x}", *writes),
            last_modified_ns: 0,
            attributes: opts.attributes.clone().for_key(key.as_str()),
        };
        objects.insert(
            key.as_str().to_string(),
            (Bytes::copy_from_slice(&body), meta),
        );
        Ok(())
    }

    async fn delete(&self, key: &Key, _: &DeleteOptions, _: Deadline) -> Result<(), StoreError> {
        self.objects.lock().unwrap().remove(key.as_str());
        Ok(())
    }

    async fn list(
        &self,
        prefix: &Prefix,
        _: &ListOptions,
        _: Deadline,
    ) -> Result<Vec<String>, StoreError> {
        let objects = self.objects.lock().unwrap();
        Ok(objects
            .keys()
            .filter(|k| k.starts_with(prefix.as_str()))
            .cloned()
            .collect())
    }
}
