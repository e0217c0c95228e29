//! Request building, kept apart from sending: paths, object headers,
//! ranges, and the `Request` a retry signs again.

use bytes::Bytes;
use reqwest::Method;

use super::signer::{sha256_hex, uri_encode, UNSIGNED_PAYLOAD};
use crate::attributes::Attributes;
use crate::key::Key;
use crate::store::ByteRange;

use super::response::PAYLOAD_HASH_HEADER;
use super::{signer, S3Inner, S3Store, Sse};

impl S3Store {
    /// The headers a write sends for `attributes` (the content type guessed
    /// from the key when none is given) and the store's encryption.
    pub(super) fn object_headers(
        &self,
        key: &Key,
        attributes: &Attributes,
    ) -> Vec<(String, String)> {
        let attributes = attributes.clone().for_key(key.as_str());
        let mut headers = Vec::new();
        for (name, value) in [
            ("content-type", attributes.content_type),
            ("cache-control", attributes.cache_control),
            ("content-disposition", attributes.content_disposition),
            ("content-encoding", attributes.content_encoding),
            ("x-amz-storage-class", attributes.storage_class),
            ("x-amz-acl", attributes.acl),
        ] {
            if let Some(v) = value {
                headers.push((name.to_string(), v));
            }
        }
        for (name, value) in attributes.metadata {
            headers.push((format!("x-amz-meta-{name}"), value));
        }
        if !attributes.tags.is_empty() {
            // `x-amz-tagging` is a URL query string of the tags.
            let tagging: Vec<String> = attributes
                .tags
                .iter()
                .map(|(k, v)| format!("{}={}", uri_encode(k, false), uri_encode(v, false)))
                .collect();
            headers.push(("x-amz-tagging".into(), tagging.join("&")));
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

    pub(super) fn full_key(&self, key: &Key) -> String {
        format!("{}{}", self.prefix, key.as_str())
    }

    pub(super) fn object_path(&self, key: &Key) -> String {
        self.object_path_of(key.as_str())
    }

    /// The path of a key given as text (one a listing returned, which may
    /// not pass our key rules), under the store's prefix.
    pub(super) fn object_path_of(&self, key: &str) -> String {
        format!(
            "{}/{}",
            self.bucket_path,
            uri_encode(&format!("{}{}", self.prefix, key), true)
        )
    }

    pub(super) fn bucket_root(&self) -> String {
        if self.bucket_path.is_empty() {
            "/".to_string()
        } else {
            self.bucket_path.clone()
        }
    }
}

/// One request, ready to be signed and sent (again, on a retry).
pub(super) struct Request {
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) url: String,
    pub(super) query: Vec<(String, String)>,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Option<Bytes>,
    pub(super) payload_hash: String,
}

impl Request {
    pub(super) async fn new(
        store: &S3Inner,
        method: Method,
        path: &str,
        query: Vec<(String, String)>,
        mut headers: Vec<(String, String)>,
        body: Option<Bytes>,
    ) -> Self {
        // A hash computed with the body's other digests is taken, not
        // computed again; the signer adds the header back.
        let given = headers
            .iter()
            .position(|(name, _)| name == PAYLOAD_HASH_HEADER)
            .map(|i| headers.remove(i).1);
        let payload_hash = match (&body, store.unsigned_payload, given) {
            (_, true, _) => UNSIGNED_PAYLOAD.to_string(),
            (_, false, Some(hash)) => hash,
            (Some(b), false, None) => payload_sha256(b).await,
            (None, false, None) => signer::EMPTY_SHA256.to_string(),
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
pub(super) async fn payload_sha256(body: &Bytes) -> String {
    if body.len() < 256 * 1024 {
        return sha256_hex(body);
    }
    let owned = body.clone();
    tokio::task::spawn_blocking(move || sha256_hex(&owned))
        .await
        .unwrap_or_else(|_| sha256_hex(body))
}

/// `bytes=start-end` (inclusive) of a range; `bytes=start-` to the end.
pub(super) fn range_header(r: ByteRange) -> String {
    match r.length {
        Some(n) => format!("bytes={}-{}", r.offset, r.offset.saturating_add(n) - 1),
        None => format!("bytes={}-", r.offset),
    }
}
