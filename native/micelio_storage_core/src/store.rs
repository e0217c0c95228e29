//! The store contract: one async trait that every backend implements.
//!
//! Each operation takes validated keys (`Key`, `Prefix`), an option struct
//! and a `Deadline`. New options go into the structs, so adding one changes
//! no signature. The tiered store takes any `Store` as its origin, and the
//! NIF layer drives every backend through this trait alone, so a new
//! backend is one module that implements it plus a line in `registry.rs`.
//!
//! Stores whose I/O is blocking file access (local) say so with
//! `blocking()`: their futures then do all their work when first polled, so
//! the NIF layer can run them on a dirty I/O scheduler (measured ten times
//! cheaper than a trip through the async runtime), and async callers such
//! as the tiered store move them to the blocking pool with `offload`.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::attributes::Attributes;
use crate::bucket::BucketOps;
use crate::error::StoreError;
use crate::key::{Key, Prefix};
use crate::object::{vec_body, BodyAlloc, Deadline, Object, ObjectMeta};
use crate::transfer::{self, ByteSource, ByteStream, FileSource, Transfer};
// Where blocking work runs; re-exported for the backends that call it.
pub use crate::blocking::{block_on, offload};

/// The key health checks write, read and delete (a reserved prefix).
pub const HEALTH_PROBE: &str = ".micelio-health/probe";

/// The condition a put must meet before it replaces the object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PutCondition {
    /// Always write (last writer wins).
    #[default]
    Always,
    /// Write only if the key does not exist yet.
    IfNoneMatch,
    /// Write only if the current object has this ETag.
    IfMatch(String),
}

/// A byte range of an object: `length` bytes from `offset`, or to the end
/// when `length` is `None`. A range that runs past the end stops there, and
/// one that starts at or past the end is empty (on every backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// The first byte.
    pub offset: u64,
    /// How many bytes; `None`: to the end.
    pub length: Option<u64>,
}

impl ByteRange {
    /// `[start, end)` of this range within an object of `size` bytes.
    pub fn within(&self, size: u64) -> (u64, u64) {
        let start = self.offset.min(size);
        let end = match self.length {
            Some(n) => start.saturating_add(n).min(size),
            None => size,
        };
        (start, end)
    }
}

/// Options of a get.
#[derive(Debug, Clone)]
pub struct GetOptions {
    /// Only these bytes (the metadata still describes the whole object).
    pub range: Option<ByteRange>,
    /// Makes the buffer the body is read into.
    pub alloc: BodyAlloc,
    /// Answer `NotModified` instead of the content when the object still
    /// has this ETag (a cache revalidating its copy). Stores that cannot
    /// tell may send the content anyway.
    pub if_none_match: Option<String>,
}

impl Default for GetOptions {
    fn default() -> Self {
        GetOptions {
            range: None,
            alloc: vec_body,
            if_none_match: None,
        }
    }
}

/// Options of a head.
#[derive(Debug, Clone, Default)]
pub struct HeadOptions {}

/// Options of a put.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// What must hold for the put to happen.
    pub condition: PutCondition,
    /// Also fsync the file and its directory (local backends).
    pub durable: bool,
    /// Content type, headers and user metadata (validated).
    pub attributes: Attributes,
}

/// Options of a delete, and of each delete in `delete_many`.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Also fsync the directory (local backends).
    pub durable: bool,
}

/// Options of a list.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {}

/// Which page of a listing: the one after `cursor` (the previous page's
/// `next`; the first page when `None`), at most `limit` keys.
#[derive(Debug, Clone, Default)]
pub struct PageOptions {
    /// Where the previous page ended: opaque (a key, or S3's continuation
    /// token, so a server's own order is followed without gaps).
    pub cursor: Option<String>,
    /// Keys per page (at least 1).
    pub limit: usize,
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Keys in the listing's order.
    pub keys: Vec<String>,
    /// The cursor of the next page; `None` at the end.
    pub next: Option<String>,
}

/// One level of a listing, like a directory: the keys directly under the
/// prefix and the sub-prefixes (ending in `/`), both full and sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Level {
    /// Keys with no `/` after the prefix.
    pub keys: Vec<String>,
    /// `<prefix><segment>/` for every deeper key's first segment.
    pub prefixes: Vec<String>,
}

impl Level {
    /// Folds a sorted key listing into one level under `prefix`.
    pub fn of(prefix: &str, keys: impl IntoIterator<Item = String>) -> Self {
        let mut level = Level::default();
        for key in keys {
            let Some(rest) = key.strip_prefix(prefix) else {
                continue;
            };
            match rest.find('/') {
                None => level.keys.push(key),
                Some(i) => {
                    let sub = &key[..prefix.len() + i + 1];
                    if level.prefixes.last().map(String::as_str) != Some(sub) {
                        level.prefixes.push(sub.to_string());
                    }
                }
            }
        }
        level.keys.sort();
        level.prefixes.sort();
        level.prefixes.dedup();
        level
    }
}

/// Options of a copy.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Also fsync the new file and its directory (local backends).
    pub durable: bool,
    /// Copy only when the destination does not exist, atomically: an
    /// existing destination is `PreconditionFailed` and stays as it was.
    pub if_absent: bool,
}

/// Options of a presigned URL.
#[derive(Debug, Clone)]
pub struct PresignOptions {
    /// `GET`, `PUT`, `HEAD` or `DELETE`.
    pub method: String,
    /// Seconds the URL stays valid.
    pub expires_in: u64,
    /// When the validity starts, in Unix seconds; `None`: now, on the
    /// server's clock as far as the store knows it (see clock skew).
    pub unix_time: Option<i64>,
    /// A PUT URL that only accepts this `Content-Type` (it is signed).
    pub content_type: Option<String>,
    /// A GET URL whose answer carries this `Content-Type`.
    pub response_content_type: Option<String>,
    /// A GET URL whose answer carries this `Content-Disposition`.
    pub response_content_disposition: Option<String>,
}

/// The conditions of a browser upload by HTML form (an S3 POST policy).
#[derive(Debug, Clone, Default)]
pub struct PostPolicyOptions {
    /// The form's `key` may be any key under the given prefix (S3's
    /// `${filename}` names it after the uploaded file by default).
    pub key_starts_with: bool,
    /// The smallest and largest upload accepted, in bytes.
    pub content_length_range: Option<(u64, u64)>,
    /// The exact `Content-Type` the upload must have.
    pub content_type: Option<String>,
    /// A prefix the upload's `Content-Type` must start with.
    pub content_type_starts_with: Option<String>,
    /// The status a successful upload answers (`"201"` gives an XML body).
    pub success_action_status: Option<u16>,
    /// `x-amz-meta-*` fields the upload must carry, as given.
    pub metadata: Vec<(String, String)>,
    /// The `Cache-Control` the stored object gets.
    pub cache_control: Option<String>,
    /// Seconds the policy stays valid.
    pub expires_in: u64,
    /// When the validity starts, in Unix seconds; `None`: now (on the
    /// server's clock as far as the store knows it).
    pub unix_time: Option<i64>,
}

/// A signed POST policy: the form's action URL and its fields, the file
/// field coming last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedPost {
    /// Where the form is posted.
    pub url: String,
    /// The form fields, in the order they are sent.
    pub fields: Vec<(String, String)>,
}

/// What `delete_many` did: every key is either deleted or failed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeleteManyOutcome {
    /// Keys now absent (missing keys count: delete is idempotent).
    pub deleted: Vec<Key>,
    /// Keys that could not be deleted, each with its reason.
    pub failed: Vec<(Key, StoreError)>,
}

impl DeleteManyOutcome {
    /// Records one delete's result.
    pub fn record(&mut self, key: Key, result: Result<(), StoreError>) {
        match result {
            Ok(()) => self.deleted.push(key),
            Err(e) => self.failed.push((key, e)),
        }
    }
}

/// What a backend does beyond the operations every store has (get, head,
/// put and conditional puts, delete, list, copy, streams, files). The
/// facade reports it (`Micelio.Storage.capabilities/1`) and the README's
/// backend table is checked against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// `presigned_url` grants access without credentials.
    pub presigned_urls: bool,
    /// `public_url` names a URL a browser can fetch.
    pub public_urls: bool,
    /// Multipart uploads left behind can be listed and aborted.
    pub incomplete_uploads: bool,
    /// `copy` happens on the server, without the bytes passing through us.
    pub server_side_copy: bool,
    /// Reads are served from a cache in front of the store.
    pub read_cache: bool,
    /// Writes take a storage class, a canned ACL and tags;
    /// `BucketOps::get_tags` reads the tags.
    pub object_tags: bool,
}

/// The contract every backend implements.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The backend's name (`"local"`, `"s3"`, `"tiered"`).
    fn backend(&self) -> &'static str;

    /// What this store does beyond the core operations; a backend that
    /// adds one declares it here, and the defaults below say "not here".
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// The operations on this store's bucket, when it has one (S3); the
    /// default has none, and each of them is then `Unsupported`.
    fn bucket(&self) -> Option<&dyn BucketOps> {
        None
    }

    /// True when the store's futures do blocking file I/O and complete on
    /// their first poll (see the module doc).
    fn blocking(&self) -> bool {
        false
    }

    /// The content and metadata of `key`, read in one consistent step.
    async fn get(
        &self,
        key: &Key,
        opts: &GetOptions,
        deadline: Deadline,
    ) -> Result<Object, StoreError>;

    /// The metadata of `key` without its content.
    async fn head(
        &self,
        key: &Key,
        opts: &HeadOptions,
        deadline: Deadline,
    ) -> Result<ObjectMeta, StoreError>;

    /// Writes `body` under `key` atomically, if the condition holds.
    async fn put(
        &self,
        key: &Key,
        body: Bytes,
        opts: &PutOptions,
        deadline: Deadline,
    ) -> Result<(), StoreError>;

    /// Removes `key`; a missing key is not an error.
    async fn delete(
        &self,
        key: &Key,
        opts: &DeleteOptions,
        deadline: Deadline,
    ) -> Result<(), StoreError>;

    /// Writes what `source` yields under `key`, holding a bounded part of it
    /// in memory at a time (backends that keep objects in memory anyway use
    /// this default, which gathers it). `xfer` bounds each step and reports
    /// progress.
    async fn put_stream(
        &self,
        key: &Key,
        mut source: Box<dyn ByteSource>,
        opts: &PutOptions,
        xfer: &Transfer,
    ) -> Result<(), StoreError> {
        let body = transfer::gather(&mut *source, xfer).await?;
        let len = body.len() as u64;
        self.put(key, body, opts, xfer.step()).await?;
        xfer.report(len, Some(len));
        Ok(())
    }

    /// Writes the file at `path` under `key` (see `put_stream`).
    async fn put_file(
        &self,
        key: &Key,
        path: &std::path::Path,
        opts: &PutOptions,
        xfer: &Transfer,
    ) -> Result<(), StoreError> {
        let source = FileSource::open(path).await?;
        self.put_stream(key, Box::new(source), opts, xfer).await
    }

    /// The object's metadata and a stream of its content (of `opts.range`
    /// when set), read a part at a time. The default reads it whole first.
    async fn get_stream(
        &self,
        key: &Key,
        opts: &GetOptions,
        xfer: &Transfer,
    ) -> Result<(ObjectMeta, ByteStream), StoreError> {
        let (body, meta) = self.get(key, opts, xfer.step()).await?.into_bytes();
        Ok((meta, transfer::chunked(body)))
    }

    /// Writes the object (or `opts.range` of it) to `path`: the file appears
    /// whole, or not at all. The default writes `get_stream`'s chunks.
    async fn get_file(
        &self,
        key: &Key,
        path: &std::path::Path,
        opts: &GetOptions,
        xfer: &Transfer,
    ) -> Result<ObjectMeta, StoreError> {
        let (meta, stream) = self.get_stream(key, opts, xfer).await?;
        let total = match opts.range {
            Some(r) => r.within(meta.size),
            None => (0, meta.size),
        };
        transfer::stream_to_file(stream, path, Some(total.1 - total.0), xfer).await?;
        Ok(meta)
    }

    /// Every key under `prefix`, recursively, sorted.
    async fn list(
        &self,
        prefix: &Prefix,
        opts: &ListOptions,
        deadline: Deadline,
    ) -> Result<Vec<String>, StoreError>;

    /// One page of the keys under `prefix`, in `list`'s order. The default
    /// lists everything and cuts; backends that page natively override it.
    async fn list_page(
        &self,
        prefix: &Prefix,
        opts: &PageOptions,
        deadline: Deadline,
    ) -> Result<Page, StoreError> {
        let all = self.list(prefix, &ListOptions::default(), deadline).await?;
        let start = match &opts.cursor {
            Some(after) => all.partition_point(|k| k.as_str() <= after.as_str()),
            None => 0,
        };
        let end = (start + opts.limit.max(1)).min(all.len());
        let keys = all[start..end].to_vec();
        Ok(Page {
            next: (end < all.len()).then(|| keys.last().cloned()).flatten(),
            keys,
        })
    }

    /// One level under `prefix` (S3's delimiter `/`).
    async fn list_level(&self, prefix: &Prefix, deadline: Deadline) -> Result<Level, StoreError> {
        let all = self.list(prefix, &ListOptions::default(), deadline).await?;
        Ok(Level::of(prefix.as_str(), all))
    }

    /// The URL a browser can fetch `key` at without credentials (a public
    /// bucket, a CDN); backends that have none say so.
    fn public_url(&self, _key: &Key) -> Result<String, StoreError> {
        Err(StoreError::Unsupported(format!(
            "public URLs need the s3 backend or a cdn_base_url, not {}",
            self.backend()
        )))
    }

    /// Copies `from` to `to`: the destination appears whole or not at all.
    /// A missing source is `NotFound`. The default reads and writes through
    /// this store; backends that can copy in place override it.
    async fn copy(
        &self,
        from: &Key,
        to: &Key,
        opts: &CopyOptions,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        let (body, meta) = self
            .get(from, &GetOptions::default(), deadline)
            .await?
            .into_bytes();
        let put = PutOptions {
            condition: if opts.if_absent {
                PutCondition::IfNoneMatch
            } else {
                PutCondition::Always
            },
            durable: opts.durable,
            attributes: meta.attributes,
        };
        self.put(to, body, &put, deadline).await
    }

    /// Deletes every key, reporting each one; `Err` only when the call as a
    /// whole failed before any key was tried. The default deletes one at a
    /// time; backends with a batch API override it.
    async fn delete_many(
        &self,
        keys: &[Key],
        opts: &DeleteOptions,
        deadline: Deadline,
    ) -> Result<DeleteManyOutcome, StoreError> {
        let mut outcome = DeleteManyOutcome::default();
        for key in keys {
            let result = match deadline.check() {
                Ok(()) => self.delete(key, opts, deadline).await,
                Err(e) => Err(e),
            };
            outcome.record(key.clone(), result);
        }
        Ok(outcome)
    }

    /// Checks that the store works, by a real round trip (each backend says
    /// which). The default asks for a probe key's metadata: a store that
    /// answers, even "not found", is reachable.
    async fn health(&self, deadline: Deadline) -> Result<(), StoreError> {
        let probe = Key::parse(HEALTH_PROBE.as_bytes()).expect("a valid key");
        match self.head(&probe, &HeadOptions::default(), deadline).await {
            Ok(_) | Err(StoreError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Multipart uploads started and never completed nor aborted, as
    /// `(key, upload id)` (S3; other backends have none).
    async fn incomplete_uploads(
        &self,
        _deadline: Deadline,
    ) -> Result<Vec<(String, String)>, StoreError> {
        Ok(Vec::new())
    }

    /// Checks what only this store knows about a key, before any request
    /// (S3: its `s3_prefix` counts against the 1024-byte key limit).
    fn check_key(&self, _key: &Key) -> Result<(), StoreError> {
        Ok(())
    }

    /// Aborts the multipart uploads under `prefix` that were started more
    /// than `older_than` ago; returns how many (S3; other backends have
    /// none to abort).
    async fn abort_incomplete_uploads(
        &self,
        _prefix: &Prefix,
        _older_than: std::time::Duration,
        _deadline: Deadline,
    ) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// A signed POST policy for a browser upload to `key` (or, with
    /// `key_starts_with`, to any key under it as a prefix).
    async fn presigned_post(
        &self,
        _key_or_prefix: &str,
        _opts: &PostPolicyOptions,
        _deadline: Deadline,
    ) -> Result<PresignedPost, StoreError> {
        Err(StoreError::Unsupported(format!(
            "POST policies need the s3 backend, not {}",
            self.backend()
        )))
    }

    /// A URL that grants `opts.method` on `key` without credentials.
    async fn presigned_url(
        &self,
        _key: &Key,
        _opts: &PresignOptions,
        _deadline: Deadline,
    ) -> Result<String, StoreError> {
        Err(StoreError::Unsupported(format!(
            "presigned URLs need the s3 backend, not {}",
            self.backend()
        )))
    }
}

/// Refuses what a backend cannot keep (a storage class, an ACL or tags on
/// a store without them) instead of dropping it silently.
pub fn check_object_options(store: &dyn Store, attributes: &Attributes) -> Result<(), StoreError> {
    if attributes.has_object_store_options() && !store.capabilities().object_tags {
        return Err(StoreError::Unsupported(format!(
            "storage_class, acl and tags need the s3 backend, not {}",
            store.backend()
        )));
    }
    Ok(())
}

/// A store shared by tasks, tiers and NIF resources.
pub type SharedStore = Arc<dyn Store>;
