//! The S3 backend: any S3-compatible service, signed by our own SigV4 signer,
//! over one pooled keep-alive HTTP client per configured store.

pub mod config;
pub mod credentials;
pub mod error;
mod multipart;
pub mod retry;
pub mod signer;
pub mod xml;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use md5::{Digest, Md5};
use reqwest::{Method, StatusCode};

use crate::attributes::Attributes;
use crate::error::StoreError;
use crate::http::body::{read_body, BodyError, MAX_PARSED_BODY};
pub(crate) use crate::http::headers::meta_from_headers;
use crate::key::{Key, Prefix};
use crate::object::{bare_etag, vec_body, Body, BodyAlloc, BodyBuf, Deadline, Object, ObjectMeta};
use crate::observe;
use crate::store::{
    ByteRange, CopyOptions, DeleteManyOutcome, DeleteOptions, GetOptions, HeadOptions, ListOptions,
    PresignOptions, PutCondition, PutOptions, Store,
};
use crate::transfer::{crc32_header, ByteSource, ByteStream, Transfer};
use credentials::{CredentialSource, Signers};
use retry::RetryPolicy;
use signer::{sha256_hex, uri_encode, AmzDate, UNSIGNED_PAYLOAD};

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
    /// Server-side encryption asked on every write.
    pub sse: Option<Sse>,
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
    /// `scheme://host[:port]` of the requests, for error messages.
    endpoint: String,
    /// Set once the bucket is known to exist (see `head`).
    bucket_seen: std::sync::atomic::AtomicBool,
    /// How far the server's clock is ahead of ours, in seconds (negative:
    /// behind), learned from a skew answer; added to every signing time.
    clock_offset: std::sync::atomic::AtomicI64,
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
    sse: Option<Sse>,
}

/// S3's smallest part (but the last) and largest part count.
const MIN_PART: u64 = 5 << 20;
const MAX_PARTS: u64 = 10_000;

/// A response that passed status checks.
struct Answer<B = Bytes> {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: B,
}

impl Answer<Box<dyn BodyBuf>> {
    /// The answer with its body as `Bytes`, for parsing.
    fn into_bytes(self) -> Answer {
        Answer {
            status: self.status,
            headers: self.headers,
            body: self.body.into_bytes(),
        }
    }
}

/// Keys per DeleteObjects request: the API's limit.
const DELETE_BATCH: usize = 1000;

impl S3Store {
    /// Builds the store and its HTTP client (no request is sent).
    pub fn new(cfg: S3Config) -> Result<Self, StoreError> {
        let invalid = |setting, msg: String| StoreError::InvalidConfig(setting, msg);
        if cfg.bucket.is_empty() {
            return Err(invalid("s3_bucket", "must not be empty".into()));
        }
        let endpoint = cfg
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", cfg.region));
        let url = reqwest::Url::parse(&endpoint)
            .map_err(|e| invalid("s3_endpoint", format!("{endpoint:?}: {e}")))?;
        let scheme = url.scheme().to_string();
        let host_only = url
            .host_str()
            .ok_or_else(|| invalid("s3_endpoint", format!("{endpoint:?} has no host")))?;
        let host = match url.port() {
            Some(port) => format!("{host_only}:{port}"),
            None => host_only.to_string(),
        };
        let style = cfg
            .url_style
            .unwrap_or(if host_only.ends_with("amazonaws.com") {
                UrlStyle::Virtual
            } else {
                UrlStyle::Path
            });
        if cfg.unsigned_payload && scheme != "https" {
            return Err(invalid(
                "s3_unsigned_payload",
                "is only allowed over https".into(),
            ));
        }
        let (host, bucket_path) = match style {
            UrlStyle::Virtual => (format!("{}.{host}", cfg.bucket), String::new()),
            UrlStyle::Path => (host, format!("/{}", uri_encode(&cfg.bucket, false))),
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder();
        if let Some(path) = &cfg.ca_cert_file {
            builder = add_ca_certs(builder, path)?;
        }
        // S3 clients never follow redirects: a 301 or 307 names another
        // endpoint or region, and following it would send the request to a
        // host nobody configured.
        let client = builder
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.request_timeout)
            .pool_max_idle_per_host(cfg.pool_size)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| client_build_error("s3_endpoint", e))?;
        // Credential endpoints are on the local link or loopback: a short
        // bound, so a missing one fails fast instead of holding every call.
        let credentials_client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .map_err(|e| client_build_error("s3_credentials", e))?;
        if cfg.part_size < MIN_PART || cfg.part_size > (5 << 30) {
            return Err(invalid(
                "s3_part_size",
                format!("must be 5 MiB to 5 GiB, got {}", cfg.part_size),
            ));
        }
        if cfg.parts_in_flight == 0 {
            return Err(invalid("s3_parts_in_flight", "must be at least 1".into()));
        }
        Ok(S3Store(std::sync::Arc::new(S3Inner {
            bucket: cfg.bucket.clone(),
            endpoint: format!("{scheme}://{host}"),
            bucket_seen: std::sync::atomic::AtomicBool::new(false),
            clock_offset: std::sync::atomic::AtomicI64::new(0),
            skew_logged: std::sync::atomic::AtomicBool::new(false),
            scheme,
            host,
            bucket_path,
            prefix: cfg.prefix,
            signers: Signers::new(cfg.credentials, &cfg.region, "s3", credentials_client),
            client,
            policy: RetryPolicy {
                max_retries: cfg.max_retries,
                ..RetryPolicy::default()
            },
            unsigned_payload: cfg.unsigned_payload,
            list_page_size: cfg.list_page_size.clamp(1, 1000),
            request_timeout: cfg.request_timeout,
            multipart_threshold: cfg.multipart_threshold.max(MIN_PART),
            part_size: cfg.part_size,
            parts_in_flight: cfg.parts_in_flight,
            sse: cfg.sse,
        })))
    }

    /// The headers a write sends for `attributes` (the content type guessed
    /// from the key when none is given) and the store's encryption.
    fn object_headers(&self, key: &Key, attributes: &Attributes) -> Vec<(String, String)> {
        let attributes = attributes.clone().for_key(key.as_str());
        let mut headers = Vec::new();
        for (name, value) in [
            ("content-type", attributes.content_type),
            ("cache-control", attributes.cache_control),
            ("content-disposition", attributes.content_disposition),
            ("content-encoding", attributes.content_encoding),
        ] {
            if let Some(v) = value {
                headers.push((name.to_string(), v));
            }
        }
        for (name, value) in attributes.metadata {
            headers.push((format!("x-amz-meta-{name}"), value));
        }
        match &self.sse {
            None => {}
            Some(Sse::Aes256) => {
                headers.push(("x-amz-server-side-encryption".into(), "AES256".into()))
            }
            Some(Sse::Kms(key_id)) => {
                headers.push(("x-amz-server-side-encryption".into(), "aws:kms".into()));
                if let Some(id) = key_id {
                    headers.push((
                        "x-amz-server-side-encryption-aws-kms-key-id".into(),
                        id.clone(),
                    ));
                }
            }
        }
        headers
    }

    fn full_key(&self, key: &Key) -> String {
        format!("{}{}", self.prefix, key.as_str())
    }

    fn object_path(&self, key: &Key) -> String {
        self.object_path_of(key.as_str())
    }

    /// The path of a key given as text (one a listing returned, which may
    /// not pass our key rules), under the store's prefix.
    fn object_path_of(&self, key: &str) -> String {
        format!(
            "{}/{}",
            self.bucket_path,
            uri_encode(&format!("{}{}", self.prefix, key), true)
        )
    }

    fn bucket_root(&self) -> String {
        if self.bucket_path.is_empty() {
            "/".to_string()
        } else {
            self.bucket_path.clone()
        }
    }

    /// Reads an object into a buffer from `alloc`; with `if_none_match`,
    /// a 304 is `NotModified`.
    async fn read(
        &self,
        key: &Key,
        alloc: BodyAlloc,
        if_none_match: Option<&str>,
        range: Option<ByteRange>,
        deadline: Deadline,
    ) -> Result<Object, StoreError> {
        let path = self.object_path(key);
        let mut headers = match if_none_match {
            Some(etag) => vec![(
                "if-none-match".to_string(),
                format!("\"{}\"", bare_etag(etag)),
            )],
            None => vec![],
        };
        match range {
            // Nothing to read: only whether the object exists.
            Some(ByteRange {
                length: Some(0), ..
            }) => {
                let meta = self.head(key, &HeadOptions::default(), deadline).await?;
                return Ok(Object {
                    body: Body::Buf(alloc(0)),
                    meta,
                });
            }
            Some(r) => headers.push(("range".into(), range_header(r))),
            None => headers.push(("x-amz-checksum-mode".into(), "ENABLED".into())),
        }
        let ans = match self
            .send_into(
                Method::GET,
                &path,
                vec![],
                headers,
                None,
                true,
                alloc,
                true,
                deadline,
            )
            .await
        {
            // A range that starts past the end: empty, as on every backend.
            Err(StoreError::S3 { status: 416, .. }) if range.is_some() => {
                let meta = self.head(key, &HeadOptions::default(), deadline).await?;
                return Ok(Object {
                    body: Body::Buf(alloc(0)),
                    meta,
                });
            }
            other => other?,
        };
        let mut meta = meta_from_headers(&ans.headers);
        if ans.status == StatusCode::PARTIAL_CONTENT {
            meta.size = content_range_total(&ans.headers).unwrap_or(meta.size);
        } else {
            meta.size = ans.body.as_slice().len() as u64;
        }
        let body = if range.is_none() {
            verify_whole(&ans.headers, ans.body).await?
        } else {
            ans.body
        };
        Ok(Object {
            body: Body::Buf(body),
            meta,
        })
    }

    /// Writes an object, with `If-None-Match: *` or `If-Match` when asked.
    async fn write(
        &self,
        key: &Key,
        body: Bytes,
        opts: &PutOptions,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        let path = self.object_path(key);
        let condition = &opts.condition;
        let mut headers = self.object_headers(key, &opts.attributes);
        // The server checks it and refuses a body damaged on the way.
        headers.push((
            "x-amz-checksum-crc32".into(),
            crc32_header(crc32_of(&body).await),
        ));
        match condition {
            PutCondition::Always => {}
            PutCondition::IfNoneMatch => headers.push(("if-none-match".into(), "*".into())),
            PutCondition::IfMatch(etag) => {
                headers.push(("if-match".into(), format!("\"{}\"", bare_etag(etag))))
            }
        }
        // A conditional put that reached the server must not be replayed: a
        // lost answer would turn its own success into a 412.
        let idempotent = *condition == PutCondition::Always;
        self.send(
            Method::PUT,
            &path,
            vec![],
            headers,
            Some(body),
            idempotent,
            deadline,
        )
        .await
        .map(|_| ())
    }

    /// Every key under `prefix`, following continuation tokens, sorted.
    async fn list_all(
        &self,
        prefix: &Prefix,
        deadline: Deadline,
    ) -> Result<Vec<String>, StoreError> {
        let mut keys = self.list_pages(prefix, false, deadline).await?.keys;
        keys.sort_unstable();
        Ok(keys)
    }

    /// Every page of a ListObjectsV2 under `prefix` (one level with
    /// `delimited`), keys and prefixes without the store's prefix.
    async fn list_pages(
        &self,
        prefix: &Prefix,
        delimited: bool,
        deadline: Deadline,
    ) -> Result<crate::store::Level, StoreError> {
        let mut all = crate::store::Level::default();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .list_request(
                    prefix,
                    delimited,
                    None,
                    token.as_deref(),
                    self.list_page_size,
                    deadline,
                )
                .await?;
            all.keys.extend(page.keys);
            all.prefixes.extend(page.prefixes);
            match (page.is_truncated, page.next_token) {
                (true, Some(next)) => token = Some(next),
                _ => break,
            }
        }
        Ok(all)
    }

    /// One ListObjectsV2 request; keys and prefixes come back without the
    /// store's prefix.
    async fn list_request(
        &self,
        prefix: &Prefix,
        delimited: bool,
        start_after: Option<&str>,
        token: Option<&str>,
        max_keys: u32,
        deadline: Deadline,
    ) -> Result<xml::ListPage, StoreError> {
        let full_prefix = format!("{}{}", self.prefix, prefix.as_str());
        let mut query = vec![
            ("list-type".to_string(), "2".to_string()),
            ("prefix".to_string(), full_prefix),
            ("max-keys".to_string(), max_keys.to_string()),
        ];
        if delimited {
            query.push(("delimiter".to_string(), "/".to_string()));
        }
        if let Some(after) = start_after {
            query.push(("start-after".to_string(), format!("{}{after}", self.prefix)));
        }
        if let Some(t) = token {
            query.push(("continuation-token".to_string(), t.to_string()));
        }
        let ans = self
            .send(
                Method::GET,
                &self.bucket_root(),
                query,
                vec![],
                None,
                true,
                deadline,
            )
            .await?;
        let mut page = xml::parse_list(&ans.body).map_err(|e| malformed(ans.status, e))?;
        let strip = |v: Vec<String>| -> Vec<String> {
            v.into_iter()
                .filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_string))
                .collect()
        };
        // Only keys this library can name: a folder marker (`dir/`, or the
        // store's prefix itself, which SeaweedFS lists as an empty key once
        // the folder's last object is deleted) is no object, and handing
        // it out would give callers a key every call rejects.
        page.keys = strip(std::mem::take(&mut page.keys))
            .into_iter()
            .filter(|k| Key::parse(k.as_bytes()).is_ok())
            .collect();
        page.prefixes = strip(std::mem::take(&mut page.prefixes));
        Ok(page)
    }

    /// CopyObject: the server copies, nothing passes through this client.
    async fn copy_object(
        &self,
        from: &Key,
        to: &Key,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        // S3 refuses to copy an object onto itself unchanged (400
        // InvalidRequest); every other backend answers with the object as
        // it was. The object is already where it should be: check that it
        // exists, as a copy would.
        if from == to {
            return self
                .head(from, &HeadOptions::default(), deadline)
                .await
                .map(|_| ());
        }
        // `x-amz-copy-source` is `/bucket/key`, each part URL-encoded (AWS
        // S3 API reference, CopyObject).
        let source = format!(
            "/{}/{}",
            uri_encode(&self.bucket, false),
            uri_encode(&self.full_key(from), true)
        );
        let headers = vec![("x-amz-copy-source".to_string(), source)];
        // A copy can fail after the 200 is sent: the error is then in the
        // body, and a body that is not a CopyObjectResult copied nothing
        // we can vouch for.
        self.send_document(
            Method::PUT,
            &self.object_path(to),
            vec![],
            headers,
            None,
            true,
            "CopyObjectResult",
            deadline,
        )
        .await
        .map(|_| ())
    }

    /// A presigned URL for `method` on `key`, valid for `expires_in` seconds
    /// from `unix_time`. Fetches credentials first if the store has none
    /// that are current.
    pub async fn presign(&self, key: &Key, opts: &PresignOptions) -> Result<String, StoreError> {
        let path = self.object_path(key);
        let date = AmzDate::from_unix(opts.unix_time.unwrap_or_else(|| self.now_unix()));
        let signer = self.signers.current().await?;
        let mut query = Vec::new();
        if let Some(v) = &opts.response_content_type {
            query.push(("response-content-type".to_string(), v.clone()));
        }
        if let Some(v) = &opts.response_content_disposition {
            query.push(("response-content-disposition".to_string(), v.clone()));
        }
        let mut headers = Vec::new();
        if let Some(v) = &opts.content_type {
            headers.push(("content-type".to_string(), v.clone()));
        }
        let query = signer.presign_query(
            &opts.method,
            &self.host,
            &path,
            opts.expires_in,
            &date,
            &query,
            &headers,
        );
        Ok(format!("{}://{}{}?{}", self.scheme, self.host, path, query))
    }

    /// Whether the bucket exists: HEAD on the bucket. A yes is remembered;
    /// a no is asked again next time (the bucket may be created).
    async fn bucket_exists(&self, deadline: Deadline) -> Result<bool, StoreError> {
        use std::sync::atomic::Ordering;
        if self.bucket_seen.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let root = self.bucket_root();
        let exists = match self
            .send(Method::HEAD, &root, vec![], vec![], None, true, deadline)
            .await
        {
            Ok(_) => true,
            Err(StoreError::NotFound) | Err(StoreError::NoSuchBucket(_)) => false,
            // Refused to say: it exists, or we could not tell a key from it.
            Err(StoreError::Forbidden(_)) => true,
            Err(e) => return Err(e),
        };
        if exists {
            self.bucket_seen.store(true, Ordering::Relaxed);
        }
        Ok(exists)
    }

    /// One DeleteObjects request for up to 1,000 keys.
    async fn delete_batch(
        &self,
        keys: &[Key],
        deadline: Deadline,
        outcome: &mut DeleteManyOutcome,
    ) {
        let full: Vec<String> = keys.iter().map(|k| self.full_key(k)).collect();
        let body = Bytes::from(xml::delete_request(full.iter().map(String::as_str)));
        // DeleteObjects requires an integrity header; Content-MD5 is the
        // one every S3-compatible server takes.
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body));
        let headers = vec![
            ("content-md5".to_string(), md5),
            ("content-type".to_string(), "application/xml".to_string()),
        ];
        let query = vec![("delete".to_string(), String::new())];
        let answer = self
            .send(
                Method::POST,
                &self.bucket_root(),
                query,
                headers,
                Some(body),
                true,
                deadline,
            )
            .await;
        let failures = answer.and_then(|ans| {
            xml::parse_delete_result(&ans.body).map_err(|e| malformed(ans.status, e))
        });
        match failures {
            Err(e) => {
                for key in keys {
                    outcome.record(key.clone(), Err(e.clone()));
                }
            }
            Ok(failures) => {
                for (key, full) in keys.iter().zip(&full) {
                    // A missing key counts as deleted, as with `delete`.
                    let failure = failures
                        .iter()
                        .find(|f| &f.key == full && f.code != "NoSuchKey");
                    let result = match failure {
                        None => Ok(()),
                        Some(f) => Err(error::from_code(
                            0,
                            xml::ErrorBody {
                                code: f.code.clone(),
                                message: f.message.clone(),
                            },
                            &self.bucket,
                        )),
                    };
                    outcome.record(key.clone(), result);
                }
            }
        }
    }

    /// Sends one signed request, retrying what is safe to retry.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: Vec<(String, String)>,
        headers: Vec<(String, String)>,
        body: Option<Bytes>,
        idempotent: bool,
        deadline: Deadline,
    ) -> Result<Answer, StoreError> {
        let ans = self
            .send_into(
                method, path, query, headers, body, idempotent, vec_body, false, deadline,
            )
            .await?;
        Ok(ans.into_bytes())
    }

    /// Like `send`, for requests whose success answer must be one whole
    /// `<root>` document (CopyObject, CompleteMultipartUpload). A 200 that
    /// carries an `<Error>` is that error, retried as its code would be
    /// with its own status (InternalError as a 500, SlowDown as a 503); a
    /// 200 with anything else is `MalformedXML`.
    #[allow(clippy::too_many_arguments)]
    async fn send_document(
        &self,
        method: Method,
        path: &str,
        query: Vec<(String, String)>,
        headers: Vec<(String, String)>,
        body: Option<Bytes>,
        idempotent: bool,
        root: &'static str,
        deadline: Deadline,
    ) -> Result<Answer, StoreError> {
        let request = Request::new(self, method, path, query, headers, body).await;
        let ans = self
            .retrying(&request, idempotent, deadline, || async {
                let resp = self.start_attempt(&request, deadline).await?;
                let ans = self.finish_attempt(&request, resp, vec_body, false).await?;
                match xml::expect_document(ans.body.as_slice(), root) {
                    Ok(()) => Ok(ans),
                    Err(e) if e.code == "MalformedXML" => {
                        Err(Attempt::Failed(malformed(ans.status, e.message)))
                    }
                    // Status 0: the status is the one S3 gives the code.
                    Err(e) => Err(Attempt::Failed(error::from_code(0, e, &self.bucket))),
                }
            })
            .await?;
        Ok(ans.into_bytes())
    }

    /// Like `send`, reading the body into a buffer from `alloc`; a
    /// `whole_body` (an object's content) is not held to the cap on parsed
    /// answers when it is a success. Retries
    /// stop at the deadline: no backoff sleeps past it.
    #[allow(clippy::too_many_arguments)]
    async fn send_into(
        &self,
        method: Method,
        path: &str,
        query: Vec<(String, String)>,
        headers: Vec<(String, String)>,
        body: Option<Bytes>,
        idempotent: bool,
        alloc: BodyAlloc,
        whole_body: bool,
        deadline: Deadline,
    ) -> Result<Answer<Box<dyn BodyBuf>>, StoreError> {
        let request = Request::new(self, method, path, query, headers, body).await;
        self.retrying(&request, idempotent, deadline, || async {
            let resp = self.start_attempt(&request, deadline).await?;
            self.finish_attempt(&request, resp, alloc, whole_body).await
        })
        .await
    }

    /// Sends a GET whose body the caller reads as it arrives: the response
    /// once its status is a success (errors are read and mapped). Retried
    /// like `send` until then.
    async fn open_body(
        &self,
        path: &str,
        headers: Vec<(String, String)>,
        deadline: Deadline,
    ) -> Result<reqwest::Response, StoreError> {
        let request = Request::new(self, Method::GET, path, vec![], headers, None).await;
        self.retrying(&request, true, deadline, || async {
            let resp = self.start_attempt(&request, deadline).await?;
            if resp.status().is_success() {
                Ok(resp)
            } else {
                self.finish_attempt(&request, resp, vec_body, false)
                    .await
                    .map(|_| unreachable!("finish_attempt fails on a status that is not a success"))
            }
        })
        .await
    }

    /// The retry loop around one request's attempts.
    async fn retrying<T, F, Fut>(
        &self,
        request: &Request,
        idempotent: bool,
        deadline: Deadline,
        attempt_once: F,
    ) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, Attempt>>,
    {
        let method = &request.method;
        let mut attempt = 0;
        let mut skew_retried = false;
        loop {
            let result = attempt_once().await;
            if let Err(Attempt::Skewed(_)) = &result {
                if !skew_retried {
                    // Signed again with the corrected clock, at once: the
                    // server refused the time, not the request.
                    skew_retried = true;
                    continue;
                }
            }
            let retry = match &result {
                Ok(_) | Err(Attempt::Skewed(_)) => false,
                // Nothing reached the server: always safe to try again.
                Err(Attempt::Connect(_)) => true,
                // A 503 or 429 was not applied: safe to send again even
                // when the request must not be replayed once applied.
                Err(Attempt::Failed(e)) => {
                    (idempotent && error::is_retryable(e)) || error::not_applied(e)
                }
            };
            let backoff = self.policy.backoff(attempt);
            if !retry || attempt >= self.policy.max_retries || backoff >= deadline.remaining() {
                if retry && attempt > 0 {
                    self.log_give_up(method, &request.path, attempt + 1);
                }
                return result.map_err(Attempt::into_error);
            }
            if let Err(e) = &result {
                self.log_retry(method, attempt + 1, e);
            }
            observe::retried();
            tokio::time::sleep(backoff).await;
            attempt += 1;
        }
    }

    /// Logs a retry (debug): endpoint, operation, attempt and the error's
    /// kind. The path and query are left out: they hold keys, never secrets,
    /// but keys are the app's data.
    fn log_retry(&self, method: &Method, attempt: u32, failed: &Attempt) {
        let why = match failed {
            Attempt::Connect(e) | Attempt::Failed(e) | Attempt::Skewed(e) => error_kind(e),
        };
        observe::log(
            observe::Level::Debug,
            format!("S3 {method} failed ({why}), retrying"),
            vec![
                ("endpoint", self.endpoint.clone()),
                ("operation", method.to_string()),
                ("attempt", attempt.to_string()),
            ],
        );
    }

    /// Logs a give-up after the last retry (warning).
    fn log_give_up(&self, method: &Method, _path: &str, attempts: u32) {
        observe::log(
            observe::Level::Warning,
            format!("S3 {method} gave up after {attempts} attempts"),
            vec![
                ("endpoint", self.endpoint.clone()),
                ("operation", method.to_string()),
                ("attempt", attempts.to_string()),
            ],
        );
    }

    /// Signs and sends one attempt; the response is not read yet.
    async fn start_attempt(
        &self,
        request: &Request,
        deadline: Deadline,
    ) -> Result<reqwest::Response, Attempt> {
        let left = deadline.remaining();
        if left.is_zero() {
            return Err(Attempt::Failed(StoreError::Timeout));
        }
        let mut signed = request.headers.clone();
        signed.push(("host".to_string(), self.host.clone()));
        if let Some(b) = &request.body {
            signed.push(("content-length".to_string(), b.len().to_string()));
        }
        // Nothing was sent yet when credentials cannot be had: retried like
        // a failed connection.
        let signer = self.signers.current().await.map_err(Attempt::Connect)?;
        // One clock reading per attempt, for x-amz-date and the scope alike,
        // corrected by what the server told us of its clock.
        let date = AmzDate::from_unix(self.now_unix());
        signer.sign_headers(
            request.method.as_str(),
            &request.path,
            &request.query,
            &mut signed,
            &request.payload_hash,
            &date,
        );
        let mut req = self
            .client
            .request(request.method.clone(), &request.url)
            .timeout(self.request_timeout.min(left));
        for (k, v) in &signed {
            if k != "host" {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        if let Some(b) = &request.body {
            req = req.body(b.clone());
        }
        req.send()
            .await
            .map_err(|e| Attempt::from_reqwest(e, &self.endpoint))
    }

    /// Reads a response's body into a buffer from `alloc` and checks its status.
    async fn finish_attempt(
        &self,
        request: &Request,
        mut resp: reqwest::Response,
        alloc: BodyAlloc,
        whole_body: bool,
    ) -> Result<Answer<Box<dyn BodyBuf>>, Attempt> {
        let status = resp.status();
        let resp_headers = resp.headers().clone();
        // Only an object's content may be larger than what a parser takes.
        let cap = if whole_body && status.is_success() {
            None
        } else {
            Some(MAX_PARSED_BODY)
        };
        let body = read_body(&mut resp, alloc, cap)
            .await
            .map_err(|e| match e {
                BodyError::Network(e) => Attempt::Failed(network_error(e, &self.endpoint)),
                BodyError::TooLarge(cap) => Attempt::Failed(StoreError::Network(format!(
                    "{}: the answer's body is larger than the {} MiB a parsed answer may be",
                    self.endpoint,
                    cap >> 20
                ))),
            })?;
        if status.is_success() {
            Ok(Answer {
                status,
                headers: resp_headers,
                body,
            })
        } else if status == StatusCode::NOT_MODIFIED {
            Err(Attempt::Failed(StoreError::NotModified))
        } else if status.is_redirection() {
            Err(Attempt::Failed(error::redirect(
                status.as_u16(),
                &resp_headers,
                body.as_slice(),
            )))
        } else if let Some(err) = self.learn_skew(request, status, &resp_headers, body.as_slice()) {
            Err(Attempt::Skewed(err))
        } else if status == StatusCode::NOT_FOUND && request.method == Method::HEAD {
            // A HEAD answer has no body to name a code: its 404 is the
            // object's (or the bucket's, which callers check apart).
            Err(Attempt::Failed(StoreError::NotFound))
        } else {
            Err(Attempt::Failed(error::from_response(
                status.as_u16(),
                body.as_slice(),
                &self.bucket,
            )))
        }
    }
}

/// A server clock further than this from ours, told by a 403 to a HEAD
/// (which has no body to say RequestTimeTooSkewed), is taken for skew.
const SKEW_TOLERANCE_SECS: i64 = 300;

impl S3Inner {
    /// Now in unix seconds, on the server's clock as far as we know it.
    fn now_unix(&self) -> i64 {
        let ours = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        ours + self.clock_offset.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// When an answer says our clock is off (403 RequestTimeTooSkewed, or a
    /// 403 to a HEAD whose `Date` is more than 5 minutes away), learns the
    /// offset from its `Date` and returns the error to retry once with.
    /// The AWS SDKs correct skew the same way.
    fn learn_skew(
        &self,
        request: &Request,
        status: StatusCode,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
    ) -> Option<StoreError> {
        if status != StatusCode::FORBIDDEN {
            return None;
        }
        let server = headers
            .get("date")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)?;
        let ours = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let offset = server - ours;
        let code = xml::parse_error(body).code;
        let skewed = code == "RequestTimeTooSkewed"
            || (request.method == Method::HEAD && offset.abs() > SKEW_TOLERANCE_SECS);
        if !skewed {
            return None;
        }
        self.clock_offset
            .store(offset, std::sync::atomic::Ordering::Relaxed);
        if !self
            .skew_logged
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            observe::log(
                observe::Level::Warning,
                format!(
                    "the clock of the S3 server at {} is {offset} s from ours; requests and presigned URLs are now signed with its time",
                    self.endpoint
                ),
                vec![
                    ("endpoint", self.endpoint.clone()),
                    ("skew_seconds", offset.to_string()),
                ],
            );
        }
        let code = if code.is_empty() {
            "RequestTimeTooSkewed".to_string()
        } else {
            code
        };
        Some(StoreError::Forbidden(code))
    }
}

/// One request, ready to be signed and sent (again, on a retry).
struct Request {
    method: Method,
    path: String,
    url: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Option<Bytes>,
    payload_hash: String,
}

impl Request {
    async fn new(
        store: &S3Inner,
        method: Method,
        path: &str,
        query: Vec<(String, String)>,
        headers: Vec<(String, String)>,
        body: Option<Bytes>,
    ) -> Self {
        let payload_hash = match (&body, store.unsigned_payload) {
            (_, true) => UNSIGNED_PAYLOAD.to_string(),
            (Some(b), false) => payload_sha256(b).await,
            (None, false) => signer::EMPTY_SHA256.to_string(),
        };
        let query_string = signer::canonical_query(&query);
        let url = if query_string.is_empty() {
            format!("{}://{}{}", store.scheme, store.host, path)
        } else {
            format!("{}://{}{}?{}", store.scheme, store.host, path, query_string)
        };
        Request {
            method,
            path: path.to_string(),
            url,
            query,
            headers,
            body,
            payload_hash,
        }
    }
}

/// Hashing 8 MiB takes milliseconds: large bodies are hashed off the I/O
/// workers so other requests keep moving.
async fn payload_sha256(body: &Bytes) -> String {
    if body.len() < 256 * 1024 {
        return sha256_hex(body);
    }
    let owned = body.clone();
    tokio::task::spawn_blocking(move || sha256_hex(&owned))
        .await
        .unwrap_or_else(|_| sha256_hex(body))
}

/// A short name of an error's kind, for logs.
fn error_kind(e: &StoreError) -> &'static str {
    match e {
        StoreError::Timeout => "timeout",
        StoreError::Network(_) => "network",
        StoreError::S3 { status: 503, .. } => "503",
        StoreError::S3 { status: 429, .. } => "429",
        StoreError::S3 { .. } => "server error",
        StoreError::Credentials(_) => "credentials",
        _ => "error",
    }
}

/// A 200 whose body is not the document the request calls for.
/// Why an HTTP client could not be built. Running out of descriptors or
/// memory is what it is (`{:io, :emfile}`), not a configuration error: the
/// store is built again on a later call, when the load has dropped.
pub(crate) fn client_build_error(setting: &'static str, e: reqwest::Error) -> StoreError {
    if let Some(code) = exhaustion_errno(&e).or_else(descriptors_exhausted) {
        return StoreError::Io(code);
    }
    StoreError::InvalidConfig(setting, format!("cannot build the HTTP client: {e}"))
}

/// EMFILE or ENFILE when the process cannot open one more descriptor now.
/// The TLS setup behind reqwest's builder reads certificate files and
/// reports a failure without its I/O cause ("builder error"); asking the
/// kernel tells whether running out of descriptors is why.
fn descriptors_exhausted() -> Option<i32> {
    use rustix::io::Errno;
    match rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        Ok(_fd) => None,
        Err(e) if e == Errno::MFILE || e == Errno::NFILE => Some(e.raw_os_error()),
        Err(_) => None,
    }
}

/// The errno of a resource exhaustion (EMFILE, ENFILE, ENOMEM) anywhere in
/// an error's chain of sources.
pub(crate) fn exhaustion_errno(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    use rustix::io::Errno;
    let exhausted = [Errno::MFILE, Errno::NFILE, Errno::NOMEM].map(|e| e.raw_os_error());
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(code) = io.raw_os_error().filter(|c| exhausted.contains(c)) {
                return Some(code);
            }
        }
        cause = err.source();
    }
    None
}

fn malformed(status: StatusCode, message: String) -> StoreError {
    StoreError::S3 {
        status: status.as_u16(),
        code: "MalformedXML".into(),
        message,
    }
}

#[async_trait]
impl Store for S3Store {
    fn backend(&self) -> &'static str {
        "s3"
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
        _opts: &CopyOptions,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        self.copy_object(from, to, deadline).await
    }

    async fn delete_many(
        &self,
        keys: &[Key],
        _opts: &DeleteOptions,
        deadline: Deadline,
    ) -> Result<DeleteManyOutcome, StoreError> {
        let mut outcome = DeleteManyOutcome::default();
        for batch in keys.chunks(DELETE_BATCH) {
            self.delete_batch(batch, deadline, &mut outcome).await;
        }
        Ok(outcome)
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

enum Attempt {
    /// The connection was never made; the request was not sent.
    Connect(StoreError),
    /// The request may have reached the server.
    Failed(StoreError),
    /// The server refused our clock (RequestTimeTooSkewed, or a 403 to a
    /// HEAD with its `Date` far from ours); the offset is learned already.
    Skewed(StoreError),
}

impl Attempt {
    fn from_reqwest(e: reqwest::Error, endpoint: &str) -> Self {
        if e.is_connect() {
            Attempt::Connect(network_error(e, endpoint))
        } else {
            Attempt::Failed(network_error(e, endpoint))
        }
    }

    fn into_error(self) -> StoreError {
        match self {
            Attempt::Connect(e) | Attempt::Failed(e) | Attempt::Skewed(e) => e,
        }
    }
}

/// A failed connection or transfer, naming the endpoint (scheme, host and
/// port only: never a path, a query or a credential).
pub(super) fn network_error(e: reqwest::Error, endpoint: &str) -> StoreError {
    if e.is_timeout() {
        return StoreError::Timeout;
    }
    let e = e.without_url();
    let mut msg = format!("{endpoint}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    StoreError::Network(msg)
}

/// `bytes=start-end` (inclusive) of a range; `bytes=start-` to the end.
fn range_header(r: ByteRange) -> String {
    match r.length {
        Some(n) => format!("bytes={}-{}", r.offset, r.offset.saturating_add(n) - 1),
        None => format!("bytes={}-", r.offset),
    }
}

/// The object size a 206 names in `Content-Range: bytes a-b/size`.
pub(crate) fn content_range_total(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    let v = headers.get("content-range")?.to_str().ok()?;
    v.rsplit_once('/')?.1.parse().ok()
}

/// The whole-object CRC-32 the server holds, when it gives one: composite
/// checksums of multipart uploads (`...-N`) cover parts, not the content.
pub(crate) fn full_object_crc32(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let v = headers.get("x-amz-checksum-crc32")?.to_str().ok()?;
    let composite = v.contains('-')
        || headers
            .get("x-amz-checksum-type")
            .is_some_and(|t| t.as_bytes().eq_ignore_ascii_case(b"COMPOSITE"));
    (!composite).then(|| v.to_string())
}

/// CRC-32 of a body, off the I/O workers when it is large.
async fn crc32_of(body: &Bytes) -> u32 {
    if body.len() < 256 * 1024 {
        return crc32fast::hash(body);
    }
    let owned = body.clone();
    tokio::task::spawn_blocking(move || crc32fast::hash(&owned))
        .await
        .unwrap_or_else(|_| crc32fast::hash(body))
}

/// Checks a whole object's body against the server's CRC-32, if it gave one.
async fn verify_whole(
    headers: &reqwest::header::HeaderMap,
    body: Box<dyn BodyBuf>,
) -> Result<Box<dyn BodyBuf>, StoreError> {
    let Some(expected) = full_object_crc32(headers) else {
        return Ok(body);
    };
    let (crc, body) = if body.as_slice().len() < 256 * 1024 {
        (crc32fast::hash(body.as_slice()), body)
    } else {
        tokio::task::spawn_blocking(move || (crc32fast::hash(body.as_slice()), body))
            .await
            .map_err(|e| StoreError::Panic(e.to_string()))?
    };
    let got = crc32_header(crc);
    if got == expected {
        Ok(body)
    } else {
        Err(StoreError::ChecksumMismatch(expected, got))
    }
}

/// Trusts the certificates of a PEM bundle as roots, beside the defaults.
fn add_ca_certs(
    builder: reqwest::ClientBuilder,
    path: &std::path::Path,
) -> Result<reqwest::ClientBuilder, StoreError> {
    let invalid = |msg: String| StoreError::InvalidConfig("s3_ca_cert_file", msg);
    let pem = std::fs::read(path).map_err(|e| invalid(format!("cannot read {path:?}: {e}")))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| invalid(format!("{path:?} is not a PEM bundle: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(format!("{path:?} holds no certificate")));
    }
    Ok(certs
        .into_iter()
        .fold(builder, |b, cert| b.add_root_certificate(cert)))
}
