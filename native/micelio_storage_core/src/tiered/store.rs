//! The `Store` contract over the tiers.

use async_trait::async_trait;
use bytes::Bytes;

use crate::bucket::BucketOps;
use crate::error::StoreError;
use crate::key::{Key, Prefix};
use crate::object::{Body, Deadline, Object, ObjectMeta};
use crate::store::{
    ByteRange, Capabilities, CopyOptions, DeleteManyOutcome, DeleteOptions, GetOptions,
    HeadOptions, ListOptions, PostPolicyOptions, PresignOptions, PresignedPost, PutOptions, Store,
};
use crate::transfer::{self, ByteSource, ByteStream, Transfer};

use super::{TieredStore, Value};

/// Writes go through `write_through`: this node's copies are dropped before
/// and after the origin write (also after an error, since the write may have
/// happened), and the write finishes even if its caller is gone.
#[async_trait]
impl<V: Value> Store for TieredStore<V> {
    fn backend(&self) -> &'static str {
        "tiered"
    }

    /// The origin's, with the cache; a CDN adds public URLs.
    /// The origin's bucket: the cache keeps nothing of what these change.
    fn bucket(&self) -> Option<&dyn BucketOps> {
        self.origin.bucket()
    }

    fn capabilities(&self) -> Capabilities {
        let origin = self.origin.capabilities();
        Capabilities {
            public_urls: origin.public_urls || self.cdn.is_some(),
            read_cache: true,
            ..origin
        }
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

    async fn presigned_post(
        &self,
        key_or_prefix: &str,
        opts: &PostPolicyOptions,
        deadline: Deadline,
    ) -> Result<PresignedPost, StoreError> {
        self.origin
            .presigned_post(key_or_prefix, opts, deadline)
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
