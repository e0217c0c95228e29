//! Reading HTTP bodies from peers we do not control (an S3 endpoint, a CDN,
//! a credentials endpoint). Two rules:
//! - no buffer is sized from a number the peer sent beyond the bytes that
//!   have arrived: a `Content-Length: 1073741824` followed by 10 bytes
//!   reserves 64 KiB, not 1 GiB;
//! - a body read whole to be parsed (XML answers, error documents,
//!   credential JSON) has a fixed cap; a larger one is an error, never an
//!   allocation.
//!
//! A body shorter than its `Content-Length` is a network error from hyper
//! (the connection ended before the message did).

use bytes::Bytes;

use crate::object::{vec_body, BodyAlloc, BodyBuf};

/// The largest answer read whole to be parsed.
pub const MAX_PARSED_BODY: usize = 16 << 20;

/// What is reserved before any byte arrived: enough for a small object in
/// one go, little enough that a lying length costs nothing.
const FIRST_RESERVE: usize = 64 << 10;

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// The connection failed or ended before the body did.
    Network(reqwest::Error),
    /// The body passed the cap (its value) for a parsed answer.
    TooLarge(usize),
}

/// The capacity to reserve before a body is read: the declared length, but
/// never more than `FIRST_RESERVE`.
pub fn first_capacity(declared: Option<u64>) -> usize {
    declared.map_or(0, |d| d.min(FIRST_RESERVE as u64) as usize)
}

/// The capacity to grow to when `need` bytes have to fit and `capacity` do:
/// double (amortised growth), but never past what the peer declared, and
/// always at least `need` (a peer that sends more than it declared is cut
/// off by hyper, not here).
pub fn grown_capacity(capacity: usize, need: usize, declared: Option<u64>) -> usize {
    let doubled = need.max(capacity.saturating_mul(2));
    match declared {
        Some(d) => doubled
            .min(usize::try_from(d).unwrap_or(usize::MAX))
            .max(need),
        None => doubled,
    }
}

/// Reads `resp`'s body into a buffer from `alloc`, growing it with the bytes
/// received. With `cap`, a body larger than `cap` is `TooLarge`, and so is
/// a declared length larger than `cap` (nothing is read then).
pub async fn read_body(
    resp: &mut reqwest::Response,
    alloc: BodyAlloc,
    cap: Option<usize>,
) -> Result<Box<dyn BodyBuf>, BodyError> {
    let declared = resp.content_length();
    let limit = cap.unwrap_or(usize::MAX);
    if declared.is_some_and(|d| d > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let mut capacity = first_capacity(declared);
    let mut body = alloc(capacity);
    let mut received = 0usize;
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Network)? {
        let need = received.saturating_add(chunk.len());
        if need > limit {
            return Err(BodyError::TooLarge(limit));
        }
        if need > capacity {
            capacity = grown_capacity(capacity, need, declared);
            body.reserve_total(capacity);
        }
        body.push(&chunk);
        received = need;
    }
    Ok(body)
}

/// Reads a body to be parsed, capped at `MAX_PARSED_BODY`.
pub async fn read_parsed(mut resp: reqwest::Response) -> Result<Bytes, BodyError> {
    read_body(&mut resp, vec_body, Some(MAX_PARSED_BODY))
        .await
        .map(BodyBuf::into_bytes)
}

impl BodyError {
    /// A one-line description that names no URL (URLs may hold keys).
    pub fn describe(self) -> String {
        match self {
            BodyError::Network(e) => e.without_url().to_string(),
            BodyError::TooLarge(cap) => format!(
                "the answer's body is larger than the {} MiB a parsed answer may be",
                cap >> 20
            ),
        }
    }

    /// Whether the read timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, BodyError::Network(e) if e.is_timeout())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lying_length_reserves_little() {
        assert_eq!(first_capacity(Some(1 << 30)), FIRST_RESERVE);
        assert_eq!(first_capacity(Some(10)), 10);
        assert_eq!(first_capacity(None), 0);
    }

    #[test]
    fn growth_doubles_up_to_the_declared_length() {
        assert_eq!(grown_capacity(64, 65, Some(1000)), 128);
        assert_eq!(grown_capacity(512, 600, Some(1000)), 1000);
        // More than declared: what is needed, no more.
        assert_eq!(grown_capacity(1000, 1010, Some(1000)), 1010);
        assert_eq!(grown_capacity(0, 5, None), 5);
        assert_eq!(grown_capacity(8, 9, None), 16);
    }
}
