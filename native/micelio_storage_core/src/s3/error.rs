//! From an HTTP status and S3's `<Code>` to an error kind and a retry verdict.

use crate::error::StoreError;
use crate::s3::xml::{parse_error, ErrorBody};

/// The error for a non-success response from `bucket`.
pub fn from_response(status: u16, body: &[u8], bucket: &str) -> StoreError {
    from_code(status, parse_error(body), bucket)
}

/// The error for a status and a parsed `<Error>`. A status of 0 means the
/// code came without one (a per-key error in a DeleteObjects result): the
/// status is then inferred from the code.
pub fn from_code(status: u16, parsed: ErrorBody, bucket: &str) -> StoreError {
    let status = if status == 0 {
        status_of_code(&parsed.code)
    } else {
        status
    };
    let code = if parsed.code.is_empty() {
        default_code(status).to_string()
    } else {
        parsed.code
    };
    match (status, code.as_str()) {
        (_, "NoSuchBucket") => StoreError::NoSuchBucket(bucket.to_string()),
        // Only a missing key is "not found": a 404 NoSuchUpload (an aborted
        // multipart upload) or a 404 page from something that is not S3
        // must not read as "the key does not exist".
        (_, "NoSuchKey") => StoreError::NotFound,
        (412, _) => StoreError::PreconditionFailed,
        // AWS answers 409 to the losers of a race between conditional writes.
        (409, "ConditionalRequestConflict") => StoreError::PreconditionFailed,
        (403, _) => StoreError::Forbidden(code),
        _ => service_error(status, code, parsed.message),
    }
}

/// An S3 error answer no other kind covers, its code and message kept.
pub fn service_error(status: u16, code: String, message: String) -> StoreError {
    StoreError::Service {
        service: "s3",
        status,
        code,
        message,
    }
}

/// A 3xx answer: S3 asks for another endpoint or region (PermanentRedirect,
/// TemporaryRedirect). It is not followed; the error names where it points.
pub fn redirect(status: u16, headers: &reqwest::header::HeaderMap, body: &[u8]) -> StoreError {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut endpoint = String::new();
    if let Ok(found) = crate::s3::xml::parse_endpoint(body) {
        endpoint = found;
    }
    let parsed = parse_error(body);
    let code = if parsed.code.is_empty() {
        match status {
            301 | 308 => "PermanentRedirect",
            _ => "TemporaryRedirect",
        }
        .to_string()
    } else {
        parsed.code
    };
    let mut target = Vec::new();
    if let Some(location) = header("location") {
        target.push(format!("location {location}"));
    }
    if !endpoint.is_empty() {
        target.push(format!("endpoint {endpoint}"));
    }
    if let Some(region) = header("x-amz-bucket-region") {
        target.push(format!("region {region}"));
    }
    let asked = if target.is_empty() {
        "another endpoint".to_string()
    } else {
        target.join(", ")
    };
    service_error(
        status,
        code,
        format!(
            "the server redirects to {asked}; redirects are not followed: set s3_endpoint or s3_region to match"
        ),
    )
}

/// The HTTP status S3 gives with a `<Code>` (AWS S3 API reference, Error
/// responses), for codes reported without one.
fn status_of_code(code: &str) -> u16 {
    match code {
        "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" => 403,
        "NoSuchKey" | "NoSuchBucket" | "NoSuchUpload" => 404,
        "PreconditionFailed" => 412,
        "InternalError" => 500,
        "SlowDown" | "ServiceUnavailable" => 503,
        _ => 400,
    }
}

/// HEAD answers carry no body; name the error after the status.
fn default_code(status: u16) -> &'static str {
    match status {
        400 => "BadRequest",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        412 => "PreconditionFailed",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        _ => "Unknown",
    }
}

/// Whether the server said it did not apply the request (503, `SlowDown`,
/// 429): safe to retry even for requests that must not be replayed once
/// applied, such as conditional puts.
pub fn not_applied(err: &StoreError) -> bool {
    match err {
        StoreError::Service { status, code, .. } => {
            *status == 503 || *status == 429 || code == "SlowDown"
        }
        _ => false,
    }
}

/// Whether an error response is worth retrying: 5xx, 429 and `SlowDown`.
pub fn is_retryable(err: &StoreError) -> bool {
    match err {
        // 501 NotImplemented (GCS's DeleteObjects) will not change on a
        // retry: the caller falls back at once.
        StoreError::Service { status, code, .. } => {
            (*status >= 500 && *status != 501 && code != "NotImplemented")
                || *status == 429
                || code == "SlowDown"
        }
        StoreError::Network(_) | StoreError::Timeout => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_status_and_code() {
        let no_key = b"<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>";
        assert_eq!(from_response(404, no_key, "b"), StoreError::NotFound);
        let no_upload = b"<Error><Code>NoSuchUpload</Code><Message>aborted</Message></Error>";
        assert_eq!(
            from_response(404, no_upload, "b"),
            StoreError::Service {
                service: "s3",
                status: 404,
                code: "NoSuchUpload".into(),
                message: "aborted".into()
            }
        );
        // A 404 page with no S3 code is not a missing key either.
        assert!(matches!(
            from_response(404, b"<html>not here</html>", "b"),
            StoreError::Service { status: 404, .. }
        ));
        assert_eq!(from_response(412, b"", "b"), StoreError::PreconditionFailed);
        let denied = b"<Error><Code>SignatureDoesNotMatch</Code><Message>no</Message></Error>";
        assert_eq!(
            from_response(403, denied, "b"),
            StoreError::Forbidden("SignatureDoesNotMatch".into())
        );
        assert_eq!(
            from_response(403, b"", "b"),
            StoreError::Forbidden("Forbidden".into())
        );
        let slow = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
        let err = from_response(503, slow, "b");
        assert_eq!(
            err,
            StoreError::Service {
                service: "s3",
                status: 503,
                code: "SlowDown".into(),
                message: "Please reduce your request rate.".into()
            }
        );
        assert!(is_retryable(&err));
        assert!(!is_retryable(&from_response(400, b"", "b")));
        assert!(is_retryable(&from_response(429, b"", "b")));
        assert!(!is_retryable(&StoreError::NotFound));
        assert!(not_applied(&from_response(429, b"", "b")));
        assert!(!not_applied(&from_response(500, b"", "b")));
        let missing = b"<Error><Code>NoSuchBucket</Code><Message>gone</Message></Error>";
        assert_eq!(
            from_response(404, missing, "photos"),
            StoreError::NoSuchBucket("photos".into())
        );
    }
}
