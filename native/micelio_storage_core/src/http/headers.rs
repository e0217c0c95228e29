//! Object metadata from HTTP answer headers (S3 and the CDN tier alike).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::attributes::Attributes;
use crate::object::{bare_etag, ObjectMeta};

/// The metadata an answer's headers give: size, ETag (bare), last
/// modified, the four content headers and `x-amz-meta-*`.
pub fn meta_from_headers(headers: &reqwest::header::HeaderMap) -> ObjectMeta {
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
    let mut metadata: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(name, value)| {
            let name = name.as_str().strip_prefix("x-amz-meta-")?;
            Some((name.to_string(), value.to_str().ok()?.to_string()))
        })
        .collect();
    metadata.sort();
    let owned = |name: &str| text(name).map(str::to_string);
    ObjectMeta {
        size: text("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        etag: text("etag")
            .map(|e| bare_etag(e).to_string())
            .unwrap_or_default(),
        last_modified_ns,
        attributes: Attributes {
            content_type: owned("content-type"),
            cache_control: owned("cache-control"),
            content_disposition: owned("content-disposition"),
            content_encoding: owned("content-encoding"),
            metadata,
            storage_class: owned("x-amz-storage-class"),
            ..Attributes::default()
        },
    }
}
