//! The CDN tier: a plain HTTP GET (or HEAD) of `<base>/<url-encoded key>`.
//!
//! Every failure is a miss: a 404, any other status, a refused connection or
//! the timeout. The whole request, body included, is bounded by the timeout,
//! so a slow or dead CDN costs at most that much before the origin is asked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::memory::Counters;
use crate::error::StoreError;
use crate::http::body::{read_body, BodyError};
use crate::http::encode::uri_encode;
use crate::http::headers::meta_from_headers;
use crate::object::{vec_body, ObjectMeta};

/// A CDN in front of the origin.
pub struct Cdn {
    base: String,
    client: reqwest::Client,
    pub counters: Counters,
    /// Requests that failed (not 404): errors, timeouts, 5xx.
    pub errors: AtomicU64,
}

impl Cdn {
    /// A client for `base` (an http or https URL without a trailing slash).
    pub fn new(base: &str, timeout: Duration) -> Result<Self, StoreError> {
        let url = reqwest::Url::parse(base)
            .map_err(|e| StoreError::InvalidConfig("cdn_base_url", format!("{base:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(StoreError::InvalidConfig(
                "cdn_base_url",
                format!("{base:?} is not an http(s) URL"),
            ));
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| {
                StoreError::InvalidConfig("cdn_base_url", format!("cannot build a client: {e}"))
            })?;
        Ok(Cdn {
            base: base.trim_end_matches('/').to_string(),
            client,
            counters: Counters::default(),
            errors: AtomicU64::new(0),
        })
    }

    /// Whether the CDN answers at all: any HTTP answer to its base URL.
    pub async fn health(&self) -> Result<(), StoreError> {
        match self.client.head(format!("{}/", self.base)).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.is_timeout() => Err(StoreError::Timeout),
            Err(e) => Err(StoreError::Network(format!(
                "CDN {}: {}",
                self.base,
                e.without_url()
            ))),
        }
    }

    /// The URL of `key`: each segment percent-encoded, slashes kept.
    pub fn url(&self, key: &str) -> String {
        format!("{}/{}", self.base, uri_encode(key, true))
    }

    /// The object, or `None` on any miss or failure.
    pub async fn get(&self, key: &str) -> Option<(Bytes, ObjectMeta)> {
        let result = async {
            let mut resp = self.client.get(self.url(key)).send().await?;
            if !resp.status().is_success() {
                return Ok::<_, reqwest::Error>(Err(resp.status()));
            }
            let mut meta = meta_from_headers(resp.headers());
            // Grown with the bytes received, never sized from the CDN's word.
            let body = match read_body(&mut resp, vec_body, None).await {
                Ok(body) => body.into_bytes(),
                Err(BodyError::Network(e)) => return Err(e),
                Err(BodyError::TooLarge(_)) => unreachable!("no cap was given"),
            };
            meta.size = body.len() as u64;
            Ok(Ok((body, meta)))
        }
        .await;
        self.outcome(result)
    }

    /// The metadata from a HEAD, or `None` on any miss or failure. An answer
    /// without an ETag is a miss: conditional puts need the origin's tag.
    pub async fn head(&self, key: &str) -> Option<ObjectMeta> {
        let result = async {
            let resp = self.client.head(self.url(key)).send().await?;
            if !resp.status().is_success() {
                return Ok(Err(resp.status()));
            }
            Ok(Ok(meta_from_headers(resp.headers())))
        }
        .await;
        self.outcome(result).filter(|m| !m.etag.is_empty())
    }

    fn outcome<T>(
        &self,
        result: Result<Result<T, reqwest::StatusCode>, reqwest::Error>,
    ) -> Option<T> {
        match result {
            Ok(Ok(found)) => {
                self.counters.hit();
                Some(found)
            }
            Ok(Err(status)) => {
                if status != reqwest::StatusCode::NOT_FOUND {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                }
                self.counters.miss();
                None
            }
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.counters.miss();
                None
            }
        }
    }
}
