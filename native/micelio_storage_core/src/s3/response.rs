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

/// What a body is sent with: its CRC-32 and the headers of its digests.
pub(super) struct BodyDigests {
    pub(super) crc: u32,
    pub(super) headers: Vec<(String, String)>,
}

/// The header a signed payload's SHA-256 travels in.
pub(super) const PAYLOAD_HASH_HEADER: &str = "x-amz-content-sha256";

/// CRC-32, and SHA-256 (hex) and MD5 (base64) when asked, in one pass.
fn digests(body: &[u8], sha256: bool, md5: bool) -> (u32, Option<String>, Option<String>) {
    use base64::Engine;
    use md5::Digest;
    let mut crc = crc32fast::Hasher::new();
    let mut sha = sha256.then(sha2::Sha256::new);
    let mut md = md5.then(md5::Md5::new);
    for slice in body.chunks(64 * 1024) {
        crc.update(slice);
        if let Some(sha) = &mut sha {
            sha.update(slice);
        }
        if let Some(md) = &mut md {
            md.update(slice);
        }
    }
    (
        crc.finalize(),
        sha.map(|sha| hex::encode(sha.finalize())),
        md.map(|md| base64::engine::general_purpose::STANDARD.encode(md.finalize())),
    )
}

impl S3Store {
    /// Every digest a body is sent with, from one pass over it (off the
    /// I/O workers when it is large): its CRC-32, which multipart uploads
    /// combine; the header that lets the server refuse a body damaged on
    /// the way (the CRC-32 where the provider takes checksum headers, else
    /// Content-MD5, which every S3-compatible service checks); and the
    /// payload's SHA-256 when it is signed, as `x-amz-content-sha256`
    /// (which `Request::new` then signs instead of hashing the body again).
    /// One pass, a 64 KiB slice at a time, reads each byte from memory
    /// once: three passes over 8 MiB parts cost about a fifth more CPU per
    /// uploaded GiB.
    pub(super) async fn body_digests(&self, body: &Bytes) -> BodyDigests {
        let sha256 = !self.unsigned_payload;
        let md5 = !self.switches.checksum_headers;
        let (crc, sha256, md5) = if body.len() < 256 * 1024 {
            digests(body, sha256, md5)
        } else {
            let owned = body.clone();
            match tokio::task::spawn_blocking(move || digests(&owned, sha256, md5)).await {
                Ok(sums) => sums,
                Err(_) => digests(body, sha256, md5),
            }
        };
        let mut headers = vec![match md5 {
            Some(md5) => ("content-md5".to_string(), md5),
            None => ("x-amz-checksum-crc32".to_string(), crc32_header(crc)),
        }];
        if let Some(sha256) = sha256 {
            headers.push((PAYLOAD_HASH_HEADER.to_string(), sha256));
        }
        BodyDigests { crc, headers }
    }

    /// Whether reads ask for the server's checksum (`x-amz-checksum-mode`).
    pub(super) fn asks_checksums(&self) -> bool {
        self.switches.checksum_headers
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_gives_the_digests_of_separate_passes() {
        use base64::Engine;
        use md5::Digest;
        // Over several 64 KiB slices and a ragged end.
        let body: Vec<u8> = (0..200_003u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let (crc, sha, md5) = digests(&body, true, true);
        assert_eq!(crc, crc32fast::hash(&body));
        assert_eq!(
            sha.as_deref(),
            Some(super::super::signer::sha256_hex(&body).as_str())
        );
        let separate = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
        assert_eq!(md5, Some(separate));
        assert_eq!(digests(&body, false, false), (crc, None, None));
        assert_eq!(digests(b"", true, false).0, 0);
    }
}
