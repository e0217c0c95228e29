//! The S3 backend: any S3-compatible service, signed by our own SigV4 signer,
//! over one pooled keep-alive HTTP client per configured store.

mod bucket;
mod client;
pub mod config;
pub mod credentials;
mod download;
pub mod error;
mod objects;
mod post_policy;
pub mod provider;
mod requests;
mod response;
pub mod retry;
mod send;
pub mod signer;
mod store;
mod upload;
pub mod xml;

use std::time::Duration;

use credentials::{CredentialSource, Signers};
use retry::RetryPolicy;

/// Bucket addressing: `bucket.host/key` or `host/bucket/key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlStyle {
    /// `https://bucket.s3.region.amazonaws.com/key`
    Virtual,
    /// `https://host/bucket/key`
    Path,
}

/// Everything needed to build an S3 store.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// The signing region (`us-east-1`, `auto` for R2, ...).
    pub region: String,
    /// `http(s)://host[:port]`; `None` means AWS in `region`.
    pub endpoint: Option<String>,
    /// `None`: virtual on AWS, path on a custom endpoint.
    pub url_style: Option<UrlStyle>,
    /// Prepended to every key.
    pub prefix: String,
    /// Where the credentials come from.
    pub credentials: CredentialSource,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of one attempt.
    pub request_timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Idle keep-alive connections kept per host.
    pub pool_size: usize,
    /// Send `UNSIGNED-PAYLOAD` instead of hashing bodies (https only).
    pub unsigned_payload: bool,
    /// `max-keys` of each ListObjectsV2 page.
    pub list_page_size: u32,
    /// A PEM file of extra root certificates (a private CA).
    pub ca_cert_file: Option<std::path::PathBuf>,
    /// Uploads from this size on are multipart.
    pub multipart_threshold: u64,
    /// The size of each part (and of each ranged GET of a download).
    pub part_size: u64,
    /// Parts (or ranges) sent at once.
    pub parts_in_flight: usize,
    /// Copies of objects larger than this go in parts (UploadPartCopy);
    /// 5 GiB, CopyObject's limit, unless lowered (tests).
    pub copy_multipart_threshold: u64,
    /// Server-side encryption asked on every write.
    pub sse: Option<Sse>,
    /// What the provider does differently (its profile, and the switches
    /// set alone).
    pub switches: provider::Switches,
}

/// Server-side encryption of written objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// `AES256`: keys managed by S3.
    Aes256,
    /// `aws:kms`, with this key (the account's default key when `None`).
    Kms(Option<String>),
}

/// A configured S3 store. Cheap to clone: clones share the connection pool
/// (a detached task, such as the abort of a failed upload, holds one).
#[derive(Debug, Clone)]
pub struct S3Store(std::sync::Arc<S3Inner>);

impl std::ops::Deref for S3Store {
    type Target = S3Inner;
    fn deref(&self) -> &S3Inner {
        &self.0
    }
}

/// The state of an S3 store.
#[derive(Debug)]
pub struct S3Inner {
    bucket: String,
    /// The signing region, which a created bucket is placed in.
    region: String,
    /// `scheme://host[:port]` of the requests, for error messages.
    endpoint: String,
    /// Set once the bucket is known to exist (see `head`).
    bucket_seen: std::sync::atomic::AtomicBool,
    /// How far the server's clock is ahead of ours, in seconds (negative:
    /// behind), learned from a skew answer; added to every signing time.
    clock_offset: std::sync::atomic::AtomicI64,
    /// Set once the service answered DeleteObjects with NotImplemented.
    no_delete_objects: std::sync::atomic::AtomicBool,
    /// Whether the skew was logged (once per store).
    skew_logged: std::sync::atomic::AtomicBool,
    scheme: String,
    host: String,
    bucket_path: String,
    prefix: String,
    signers: Signers,
    client: reqwest::Client,
    policy: RetryPolicy,
    unsigned_payload: bool,
    list_page_size: u32,
    request_timeout: Duration,
    multipart_threshold: u64,
    part_size: u64,
    parts_in_flight: usize,
    copy_multipart_threshold: u64,
    sse: Option<Sse>,
    /// The provider's switches (checksum headers, DeleteObjects batches,
    /// POST uploads).
    switches: provider::Switches,
}

/// S3's smallest part (but the last) and largest part count.
const MIN_PART: u64 = 5 << 20;
const MAX_PARTS: u64 = 10_000;

// Shared with the sibling modules (and `fuzzing`) by their old paths.
pub(crate) use crate::http::headers::meta_from_headers;
use response::malformed;
pub(crate) use response::{content_range_total, full_object_crc32};
use send::network_error;
