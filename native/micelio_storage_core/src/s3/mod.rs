//! The S3 backend: any S3-compatible service, signed by our own SigV4 signer,
//! over one pooled keep-alive HTTP client per configured store.

pub mod config;
pub mod credentials;
pub mod error;
pub mod retry;
pub mod signer;
pub mod xml;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use md5::{Digest, Md5};
use reqwest::{Method, StatusCode};

use crate::error::StoreError;
use crate::key::{Key, Prefix};
use crate::object::{bare_etag, vec_body, Body, BodyAlloc, BodyBuf, Deadline, Object, ObjectMeta};
use crate::observe;
use crate::store::{
    CopyOptions, DeleteManyOutcome, DeleteOptions, GetOptions, HeadOptions, ListOptions,
    PresignOptions, PutCondition, PutOptions, Store,
};
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
}

/// A configured S3 store. Cheap to share; holds the connection pool.
#[derive(Debug)]
pub struct S3Store {
    bucket: String,
    /// `scheme://host[:port]` of the requests, for error messages.
    endpoint: String,
    /// Set once the bucket is known to exist (see `head`).
    bucket_seen: std::sync::atomic::AtomicBool,
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
}

/// A response that passed status checks.
struct Answer<B = Bytes> {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: B,
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
            .map_err(|e| invalid("s3_endpoint", format!("cannot build the HTTP client: {e}")))?;
        // Credential endpoints are on the local link or loopback: a short
        // bound, so a missing one fails fast instead of holding every call.
        let credentials_client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .map_err(|e| {
                invalid(
                    "s3_credentials",
                    format!("cannot build the HTTP client: {e}"),
                )
            })?;
        Ok(S3Store {
            bucket: cfg.bucket.clone(),
            endpoint: format!("{scheme}://{host}"),
            bucket_seen: std::sync::atomic::AtomicBool::new(false),
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
        })
    }

    fn full_key(&self, key: &Key) -> String {
        format!("{}{}", self.prefix, key.as_str())
    }

    fn object_path(&self, key: &Key) -> String {
        format!(
            "{}/{}",
            self.bucket_path,
            uri_encode(&self.full_key(key), true)
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
        deadline: Deadline,
    ) -> Result<Object, StoreError> {
        let path = self.object_path(key);
        let headers = match if_none_match {
            Some(etag) => vec![(
                "if-none-match".to_string(),
                format!("\"{}\"", bare_etag(etag)),
            )],
            None => vec![],
        };
        let ans = self
            .send_into(
                Method::GET,
                &path,
                vec![],
                headers,
                None,
                true,
                alloc,
                deadline,
            )
            .await?;
        let mut meta = meta_from_headers(&ans.headers);
        meta.size = ans.body.as_slice().len() as u64;
        Ok(Object {
            body: Body::Buf(ans.body),
            meta,
        })
    }

    /// Writes an object, with `If-None-Match: *` or `If-Match` when asked.
    async fn write(
        &self,
        key: &Key,
        body: Bytes,
        condition: &PutCondition,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        let path = self.object_path(key);
        let mut headers = vec![(
            "content-type".to_string(),
            "application/octet-stream".to_string(),
        )];
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
        let full_prefix = format!("{}{}", self.prefix, prefix.as_str());
        let path = self.bucket_root();
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("list-type".to_string(), "2".to_string()),
                ("prefix".to_string(), full_prefix.clone()),
                ("max-keys".to_string(), self.list_page_size.to_string()),
            ];
            if let Some(t) = &token {
                query.push(("continuation-token".to_string(), t.clone()));
            }
            let ans = self
                .send(Method::GET, &path, query, vec![], None, true, deadline)
                .await?;
            let page = xml::parse_list(&ans.body).map_err(|e| malformed(ans.status, e))?;
            keys.extend(
                page.keys
                    .into_iter()
                    .filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_string)),
            );
            match (page.is_truncated, page.next_token) {
                (true, Some(next)) => token = Some(next),
                _ => break,
            }
        }
        keys.sort_unstable();
        Ok(keys)
    }

    /// CopyObject: the server copies, nothing passes through this client.
    async fn copy_object(
        &self,
        from: &Key,
        to: &Key,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        // `x-amz-copy-source` is `/bucket/key`, each part URL-encoded (AWS
        // S3 API reference, CopyObject).
        let source = format!(
            "/{}/{}",
            uri_encode(&self.bucket, false),
            uri_encode(&self.full_key(from), true)
        );
        let headers = vec![("x-amz-copy-source".to_string(), source)];
        let ans = self
            .send(
                Method::PUT,
                &self.object_path(to),
                vec![],
                headers,
                None,
                true,
                deadline,
            )
            .await?;
        // A copy can fail after the 200 is sent: the error is then in the body.
        let failed = xml::parse_error(&ans.body);
        if failed.code.is_empty() {
            Ok(())
        } else {
            Err(error::from_code(ans.status.as_u16(), failed, &self.bucket))
        }
    }

    /// A presigned URL for `method` on `key`, valid for `expires_in` seconds
    /// from `unix_time`. Fetches credentials first if the store has none
    /// that are current.
    pub async fn presign(
        &self,
        key: &Key,
        method: &str,
        expires_in: u64,
        unix_time: i64,
    ) -> Result<String, StoreError> {
        let path = self.object_path(key);
        let date = AmzDate::from_unix(unix_time);
        let signer = self.signers.current().await?;
        let query = signer.presign_query(method, &self.host, &path, expires_in, &date);
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
                method, path, query, headers, body, idempotent, vec_body, deadline,
            )
            .await?;
        Ok(Answer {
            status: ans.status,
            headers: ans.headers,
            body: ans.body.into_bytes(),
        })
    }

    /// Like `send`, reading the body into a buffer from `alloc`. Retries
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
        deadline: Deadline,
    ) -> Result<Answer<Box<dyn BodyBuf>>, StoreError> {
        let payload_hash = match (&body, self.unsigned_payload) {
            (_, true) => UNSIGNED_PAYLOAD.to_string(),
            (Some(b), false) => payload_sha256(b).await,
            (None, false) => signer::EMPTY_SHA256.to_string(),
        };
        let query_string = signer::canonical_query(&query);
        let url = if query_string.is_empty() {
            format!("{}://{}{}", self.scheme, self.host, path)
        } else {
            format!("{}://{}{}?{}", self.scheme, self.host, path, query_string)
        };
        let mut attempt = 0;
        loop {
            let result = self
                .attempt(
                    &method,
                    &url,
                    path,
                    &query,
                    &headers,
                    &body,
                    &payload_hash,
                    alloc,
                    deadline,
                )
                .await;
            let retry = match &result {
                Ok(_) => false,
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
                    self.log_give_up(&method, path, attempt + 1);
                }
                return result.map_err(Attempt::into_error);
            }
            self.log_retry(&method, attempt + 1, &result);
            observe::retried();
            tokio::time::sleep(backoff).await;
            attempt += 1;
        }
    }

    /// Logs a retry (debug): endpoint, operation, attempt and the error's
    /// kind. The path and query are left out: they hold keys, never secrets,
    /// but keys are the app's data.
    fn log_retry(
        &self,
        method: &Method,
        attempt: u32,
        result: &Result<Answer<Box<dyn BodyBuf>>, Attempt>,
    ) {
        let why = match result {
            Err(Attempt::Connect(e)) | Err(Attempt::Failed(e)) => error_kind(e),
            Ok(_) => "ok",
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

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        method: &Method,
        url: &str,
        path: &str,
        query: &[(String, String)],
        headers: &[(String, String)],
        body: &Option<Bytes>,
        payload_hash: &str,
        alloc: BodyAlloc,
        deadline: Deadline,
    ) -> Result<Answer<Box<dyn BodyBuf>>, Attempt> {
        let left = deadline.remaining();
        if left.is_zero() {
            return Err(Attempt::Failed(StoreError::Timeout));
        }
        let mut signed = headers.to_vec();
        signed.push(("host".to_string(), self.host.clone()));
        if let Some(b) = body {
            signed.push(("content-length".to_string(), b.len().to_string()));
        }
        // Nothing was sent yet when credentials cannot be had: retried like
        // a failed connection.
        let signer = self.signers.current().await.map_err(Attempt::Connect)?;
        // One clock reading per attempt, for x-amz-date and the scope alike.
        let date = AmzDate::now();
        signer.sign_headers(
            method.as_str(),
            path,
            query,
            &mut signed,
            payload_hash,
            &date,
        );
        let mut req = self
            .client
            .request(method.clone(), url)
            .timeout(self.request_timeout.min(left));
        for (k, v) in &signed {
            if k != "host" {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        if let Some(b) = body {
            req = req.body(b.clone());
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| Attempt::from_reqwest(e, &self.endpoint))?;
        let status = resp.status();
        let resp_headers = resp.headers().clone();
        // Read into one buffer sized from Content-Length: no regrowth, and
        // `freeze` hands it on without another copy.
        let expected = resp.content_length().unwrap_or(0).min(1 << 30) as usize;
        let mut body = alloc(expected);
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| Attempt::Failed(network_error(e, &self.endpoint)))?
        {
            body.push(&chunk);
        }
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
        } else {
            Err(Attempt::Failed(error::from_response(
                status.as_u16(),
                body.as_slice(),
                &self.bucket,
            )))
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
        self.read(key, opts.alloc, opts.if_none_match.as_deref(), deadline)
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
        self.write(key, body, &opts.condition, deadline).await
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
        self.presign(key, &opts.method, opts.expires_in, opts.unix_time)
            .await
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
            Attempt::Connect(e) | Attempt::Failed(e) => e,
        }
    }
}

/// A failed connection or transfer, naming the endpoint (scheme, host and
/// port only: never a path, a query or a credential).
fn network_error(e: reqwest::Error, endpoint: &str) -> StoreError {
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

pub(crate) fn meta_from_headers(headers: &reqwest::header::HeaderMap) -> ObjectMeta {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let last_modified_ns = text("last-modified")
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i128)
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as i128)
                .unwrap_or(0)
        });
    ObjectMeta {
        size: text("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        etag: text("etag")
            .map(|e| bare_etag(e).to_string())
            .unwrap_or_default(),
        last_modified_ns,
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
