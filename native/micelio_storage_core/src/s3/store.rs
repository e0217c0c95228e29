//! The `Store` contract implemented over the S3 calls.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::Method;

use crate::bucket::BucketOps;
use crate::error::StoreError;
use crate::http::headers::meta_from_headers;
use crate::key::{Key, Prefix};
use crate::object::{Deadline, Object, ObjectMeta};
use crate::store::{
    Capabilities, CopyOptions, DeleteManyOutcome, DeleteOptions, GetOptions, HeadOptions,
    ListOptions, PostPolicyOptions, PresignOptions, PresignedPost, PutOptions, Store,
};
use crate::transfer::{ByteSource, ByteStream, Transfer};

use super::objects::DELETE_BATCH;
use super::S3Store;

#[async_trait]
impl Store for S3Store {
    fn backend(&self) -> &'static str {
        "s3"
    }

    fn bucket(&self) -> Option<&dyn BucketOps> {
        Some(self)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            presigned_urls: true,
            public_urls: true,
            incomplete_uploads: true,
            server_side_copy: true,
            read_cache: false,
            object_tags: true,
        }
    }

    async fn get(
        &self,
        key: &Key,
        opts: &GetOptions,
        deadline: Deadline,
    ) -> Result<Object, StoreError> {
        self.read(
            key,
            opts.alloc,
            opts.if_none_match.as_deref(),
            opts.range,
            deadline,
        )
        .await
    }

    async fn head(
        &self,
        key: &Key,
        _opts: &HeadOptions,
        deadline: Deadline,
    ) -> Result<ObjectMeta, StoreError> {
        let path = self.object_path(key);
        match self
            .send(Method::HEAD, &path, vec![], vec![], None, true, deadline)
            .await
        {
            Ok(ans) => Ok(meta_from_headers(&ans.headers)),
            // A HEAD 404 has no body to tell a missing key from a missing
            // bucket: ask about the bucket (once per store, while it exists).
            Err(StoreError::NotFound) => match self.bucket_exists(deadline).await? {
                true => Err(StoreError::NotFound),
                false => Err(StoreError::NoSuchBucket(self.bucket.clone())),
            },
            Err(e) => Err(e),
        }
    }

    async fn put(
        &self,
        key: &Key,
        body: Bytes,
        opts: &PutOptions,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        if body.len() as u64 > 5 << 30 {
            // Above S3's single-PUT limit: in parts.
            let source = crate::transfer::ChunksSource::new(vec![body]);
            let xfer = Transfer::new(deadline.remaining(), Some(deadline.remaining()));
            return self.upload(key, Box::new(source), opts, &xfer).await;
        }
        self.write(key, body, opts, deadline).await
    }

    async fn list_page(
        &self,
        prefix: &Prefix,
        opts: &crate::store::PageOptions,
        deadline: Deadline,
    ) -> Result<crate::store::Page, StoreError> {
        let limit = opts.limit.clamp(1, 1000) as u32;
        // Continuation tokens follow the server's own order without gaps
        // (SeaweedFS lists directory by directory, not in byte order).
        let page = self
            .list_request(prefix, false, None, opts.cursor.as_deref(), limit, deadline)
            .await?;
        Ok(crate::store::Page {
            next: page.next_token.filter(|_| page.is_truncated),
            keys: page.keys,
        })
    }

    async fn list_level(
        &self,
        prefix: &Prefix,
        deadline: Deadline,
    ) -> Result<crate::store::Level, StoreError> {
        let mut level = self.list_pages(prefix, true, deadline).await?;
        level.keys.sort();
        level.prefixes.sort();
        Ok(level)
    }

    /// The object's URL on the endpoint: readable by a browser when the
    /// bucket (or the object) is public.
    fn public_url(&self, key: &Key) -> Result<String, StoreError> {
        Ok(format!(
            "{}://{}{}",
            self.scheme,
            self.host,
            self.object_path(key)
        ))
    }

    async fn incomplete_uploads(
        &self,
        deadline: Deadline,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.list_uploads(deadline).await
    }

    fn check_key(&self, key: &Key) -> Result<(), StoreError> {
        if self.prefix.len() + key.as_str().len() > crate::key::MAX_KEY_BYTES {
            return Err(StoreError::InvalidKey(key.as_str().as_bytes().to_vec()));
        }
        Ok(())
    }

    async fn abort_incomplete_uploads(
        &self,
        prefix: &Prefix,
        older_than: Duration,
        deadline: Deadline,
    ) -> Result<u64, StoreError> {
        self.abort_uploads_older_than(prefix.as_str(), older_than, deadline)
            .await
    }

    async fn put_stream(
        &self,
        key: &Key,
        source: Box<dyn ByteSource>,
        opts: &PutOptions,
        xfer: &Transfer,
    ) -> Result<(), StoreError> {
        self.upload(key, source, opts, xfer).await
    }

    async fn get_stream(
        &self,
        key: &Key,
        opts: &GetOptions,
        xfer: &Transfer,
    ) -> Result<(ObjectMeta, ByteStream), StoreError> {
        self.download_stream(key, opts, xfer).await
    }

    async fn get_file(
        &self,
        key: &Key,
        path: &std::path::Path,
        opts: &GetOptions,
        xfer: &Transfer,
    ) -> Result<ObjectMeta, StoreError> {
        self.download_file(key, path, opts, xfer).await
    }

    async fn delete(
        &self,
        key: &Key,
        _opts: &DeleteOptions,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        let path = self.object_path(key);
        match self
            .send(Method::DELETE, &path, vec![], vec![], None, true, deadline)
            .await
        {
            Ok(_) | Err(StoreError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn list(
        &self,
        prefix: &Prefix,
        _opts: &ListOptions,
        deadline: Deadline,
    ) -> Result<Vec<String>, StoreError> {
        self.list_all(prefix, deadline).await
    }

    async fn copy(
        &self,
        from: &Key,
        to: &Key,
        opts: &CopyOptions,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        self.copy_object(from, to, opts.if_absent, deadline).await
    }

    async fn delete_many(
        &self,
        keys: &[Key],
        _opts: &DeleteOptions,
        deadline: Deadline,
    ) -> Result<DeleteManyOutcome, StoreError> {
        let mut outcome = DeleteManyOutcome::default();
        let answered_not_implemented = self
            .no_delete_objects
            .load(std::sync::atomic::Ordering::Relaxed);
        if !self.switches.delete_objects || answered_not_implemented {
            self.delete_each(keys, deadline, &mut outcome).await;
            return Ok(outcome);
        }
        for batch in keys.chunks(self.switches.delete_batch.clamp(1, DELETE_BATCH)) {
            self.delete_batch(batch, deadline, &mut outcome).await;
        }
        Ok(outcome)
    }

    async fn presigned_post(
        &self,
        key_or_prefix: &str,
        opts: &PostPolicyOptions,
        _deadline: Deadline,
    ) -> Result<PresignedPost, StoreError> {
        self.presign_post(key_or_prefix, opts).await
    }

    async fn presigned_url(
        &self,
        key: &Key,
        opts: &PresignOptions,
        _deadline: Deadline,
    ) -> Result<String, StoreError> {
        self.presign(key, opts).await
    }

    /// HEAD of the bucket: the endpoint answers, the credentials are
    /// accepted (403 otherwise) and the bucket exists.
    async fn health(&self, deadline: Deadline) -> Result<(), StoreError> {
        let root = self.bucket_root();
        match self
            .send(Method::HEAD, &root, vec![], vec![], None, true, deadline)
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::NotFound) => Err(StoreError::NoSuchBucket(self.bucket.clone())),
            Err(e) => Err(e),
        }
    }
}
