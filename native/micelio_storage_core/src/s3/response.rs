//! What comes back: answers that passed status checks, response headers
//! (sizes, checksums) and the CRC-32 checks of bodies.

use bytes::Bytes;
use reqwest::StatusCode;

use super::S3Store;
use crate::error::StoreError;
use crate::object::BodyBuf;
use crate::transfer::crc32_header;

/// A response that passed status checks.
pub(super) struct Answer<B = Bytes> {
    pub(super) status: StatusCode,
    pub(super) headers: reqwest::header::HeaderMap,
    pub(super) body: B,
}

impl Answer<Box<dyn BodyBuf>> {
    /// The answer with its body as `Bytes`, for parsing.
    pub(super) fn into_bytes(self) -> Answer {
        Answer {
            status: self.status,
            headers: self.headers,
            body: self.body.into_bytes(),
        }
    }
}

/// A 200 whose body is not the document the request calls for.
pub(super) fn malformed(status: StatusCode, message: String) -> StoreError {
    super::error::service_error(status.as_u16(), "MalformedXML".into(), message)
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

impl S3Store {
    /// The header that lets the server refuse a body damaged on the way:
    /// its CRC-32 where the provider takes checksum headers, else its
    /// Content-MD5 (which every S3-compatible service checks).
    pub(super) async fn integrity_header(&self, body: &Bytes) -> (String, String) {
        if self.switches.checksum_headers {
            return (
                "x-amz-checksum-crc32".into(),
                crc32_header(crc32_of(body).await),
            );
        }
        let md5 = |b: &[u8]| {
            use base64::Engine;
            use md5::Digest;
            base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(b))
        };
        let digest = if body.len() < 256 * 1024 {
            md5(body)
        } else {
            let owned = body.clone();
            tokio::task::spawn_blocking(move || md5(&owned))
                .await
                .unwrap_or_else(|_| md5(body))
        };
        ("content-md5".into(), digest)
    }

    /// Whether reads ask for the server's checksum (`x-amz-checksum-mode`).
    pub(super) fn asks_checksums(&self) -> bool {
        self.switches.checksum_headers
    }
}

/// CRC-32 of a body, off the I/O workers when it is large.
pub(super) async fn crc32_of(body: &Bytes) -> u32 {
    if body.len() < 256 * 1024 {
        return crc32fast::hash(body);
    }
    let owned = body.clone();
    tokio::task::spawn_blocking(move || crc32fast::hash(&owned))
        .await
        .unwrap_or_else(|_| crc32fast::hash(body))
}

/// Checks a whole object's body against the server's CRC-32, if it gave one.
pub(super) async fn verify_whole(
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
