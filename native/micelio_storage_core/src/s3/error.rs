//! From an HTTP status and S3's `<Code>` to an error kind and a retry verdict.

use crate::error::StoreError;
use crate::s3::xml::{parse_error, ErrorBody};

/// The error for a non-success response.
pub fn from_response(status: u16, body: &[u8]) -> StoreError {
    from_code(status, parse_error(body))
}

/// The error for a status and a parsed `<Error>`. A status of 0 means the
/// code came without one (a per-key error in a DeleteObjects result): the
/// status is then inferred from the code.
pub fn from_code(status: u16, parsed: ErrorBody) -> StoreError {
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
        (404, _) => StoreError::NotFound,
        (412, _) => StoreError::PreconditionFailed,
        // AWS answers 409 to the losers of a race between conditional writes.
        (409, "ConditionalRequestConflict") => StoreError::PreconditionFailed,
        (403, _) => StoreError::Forbidden(code),
        _ => StoreError::S3 {
            status,
            code,
            message: parsed.message,
        },
    }
}

/// The HTTP status S3 gives with a `<Code>` (AWS S3 API reference, Error
/// responses), for codes reported without one.
fn status_of_code(code: &str) -> u16 {
    match code {
        "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" => 403,
        "NoSuchKey" | "NoSuchBucket" => 404,
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

/// Whether an error response is worth retrying: 5xx, 429 and `SlowDown`.
pub fn is_retryable(err: &StoreError) -> bool {
    match err {
        StoreError::S3 { status, code, .. } => {
            *status >= 500 || *status == 429 || code == "SlowDown"
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
        assert_eq!(from_response(404, b""), StoreError::NotFound);
        assert_eq!(from_response(412, b""), StoreError::PreconditionFailed);
        let denied = b"<Error><Code>SignatureDoesNotMatch</Code><Message>no</Message></Error>";
        assert_eq!(
            from_response(403, denied),
            StoreError::Forbidden("SignatureDoesNotMatch".into())
        );
        assert_eq!(
            from_response(403, b""),
            StoreError::Forbidden("Forbidden".into())
        );
        let slow = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
        let err = from_response(503, slow);
        assert_eq!(
            err,
            StoreError::S3 {
                status: 503,
                code: "SlowDown".into(),
                message: "Please reduce your request rate.".into()
            }
        );
        assert!(is_retryable(&err));
        assert!(!is_retryable(&from_response(400, b"")));
        assert!(is_retryable(&from_response(429, b"")));
        assert!(!is_retryable(&StoreError::NotFound));
    }
}
