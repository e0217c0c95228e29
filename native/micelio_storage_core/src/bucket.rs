//! What a store can do to its bucket (container) and to the provider-side
//! data of its objects, beyond the `Store` contract: creating the bucket,
//! its CORS and lifecycle rules, object tags.
//!
//! Only some backends have a bucket, so these live in a trait of their
//! own, reached through `Store::bucket()`. A backend without one inherits
//! `None` and every such call is `Unsupported`; the tiered cache hands out
//! its origin's, so it forwards whatever is added here without a line of
//! its own. Adding an operation of this kind touches this trait, the
//! backends that have it, the NIF request and the Elixir call.

use async_trait::async_trait;

use crate::error::StoreError;
use crate::key::Key;
use crate::object::Deadline;
use crate::store::Store;

/// One CORS rule of a bucket: which origins may send which requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsRule {
    /// `https://app.example.com`, or `*`.
    pub allowed_origins: Vec<String>,
    /// `GET`, `PUT`, `POST`, `DELETE`, `HEAD`.
    pub allowed_methods: Vec<String>,
    /// Request headers the browser may send (`*` for any).
    pub allowed_headers: Vec<String>,
    /// Response headers the page may read (`ETag`).
    pub expose_headers: Vec<String>,
    /// How long a browser may cache the preflight answer.
    pub max_age_seconds: Option<u64>,
}

/// The operations on a store's bucket.
#[async_trait]
pub trait BucketOps: Send + Sync {
    /// Creates the bucket (container) the store writes to, and returns its
    /// name; one that exists and is ours is fine.
    async fn create_bucket(&self, deadline: Deadline) -> Result<String, StoreError>;

    /// Replaces the bucket's CORS rules.
    async fn put_cors(&self, rules: &[CorsRule], deadline: Deadline) -> Result<(), StoreError>;

    /// The bucket's CORS rules (none set: empty).
    async fn get_cors(&self, deadline: Deadline) -> Result<Vec<CorsRule>, StoreError>;

    /// A lifecycle rule that aborts multipart uploads left incomplete for
    /// `days` days (it replaces the bucket's lifecycle configuration).
    async fn put_lifecycle_abort_incomplete(
        &self,
        days: u32,
        deadline: Deadline,
    ) -> Result<(), StoreError>;

    /// Replaces the tags of `key` with `tags` (none: removes them all).
    /// A missing key is `NotFound`.
    async fn put_tags(
        &self,
        key: &Key,
        tags: &[(String, String)],
        deadline: Deadline,
    ) -> Result<(), StoreError>;

    /// The tags of `key`, sorted by name.
    async fn get_tags(
        &self,
        key: &Key,
        deadline: Deadline,
    ) -> Result<Vec<(String, String)>, StoreError>;
}

/// The bucket operations of `store`, or the error that says it has none:
/// `what` names the feature asked for (`"object tags"`).
pub fn bucket_of<'s>(store: &'s dyn Store, what: &str) -> Result<&'s dyn BucketOps, StoreError> {
    store.bucket().ok_or_else(|| {
        StoreError::Unsupported(format!(
            "{what} need the s3 backend, not {}",
            store.backend()
        ))
    })
}
