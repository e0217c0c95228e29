//! Entry points of the fuzz targets (`native/fuzz`, run by `bin/fuzz`):
//! each takes arbitrary bytes from a peer or a disk and must not panic,
//! hang, or allocate what the input claims. Not part of the API.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::key::{broken_rule, Key, Prefix};
use crate::s3::{credentials, xml};

/// Every parser of S3's XML answers.
pub fn xml_answers(data: &[u8]) {
    let _ = xml::parse_list(data);
    let _ = xml::parse_error(data);
    let _ = xml::parse_endpoint(data);
    let _ = xml::parse_upload_id(data);
    let _ = xml::parse_complete(data);
    let _ = xml::parse_uploads(data);
    let _ = xml::parse_delete_result(data);
    let _ = xml::parse_sts_credentials(data);
    let _ = xml::parse_sts_error_code(data);
    for root in ["CopyObjectResult", "CompleteMultipartUploadResult"] {
        let _ = xml::expect_document(data, root);
    }
}

/// The header values the engine reads, each taken from a line of `data`.
pub fn header_values(data: &[u8]) {
    const NAMES: [&str; 8] = [
        "content-range",
        "etag",
        "x-amz-checksum-crc32",
        "x-amz-checksum-type",
        "date",
        "content-length",
        "last-modified",
        "x-amz-meta-fuzz",
    ];
    let mut headers = HeaderMap::new();
    for (name, value) in NAMES.iter().zip(data.split(|&b| b == b'\n')) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    let _ = crate::http::headers::meta_from_headers(&headers);
    let _ = crate::s3::content_range_total(&headers);
    let _ = crate::s3::full_object_crc32(&headers);
    if let Some(date) = headers.get("date").and_then(|v| v.to_str().ok()) {
        let _ = httpdate::parse_http_date(date);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::object::bare_etag(text);
    }
}

/// The key and prefix rules: a key parses exactly when no rule is broken,
/// and a parsed key keeps its bytes.
pub fn key_rules(data: &[u8]) {
    let parsed = Key::parse(data);
    assert_eq!(parsed.is_ok(), broken_rule(data).is_none());
    if let Ok(key) = parsed {
        assert_eq!(key.as_str().as_bytes(), data);
        assert!(Prefix::parse(data).is_ok(), "a valid key is a valid prefix");
    }
    let _ = Prefix::parse(data);
}

/// A disk-tier cache file, for a key taken from its first bytes.
pub fn cache_file(data: &[u8]) {
    let (key, file) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&b"k"[..], data),
    };
    let key = String::from_utf8_lossy(key);
    let _ = crate::tiered::disk::parse_cache_file(file, &key);
}

/// The credential endpoints' JSON answers and their timestamps.
pub fn credential_answers(data: &[u8]) {
    let _ = credentials::parse_credentials(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = credentials::parse_rfc3339(text);
    }
}
